//! cgroup v2: one file per controller, each a unit struct implementing [`Controller`] over the
//! container's single directory. `pids` uses the same files as v1 ([`crate::v1::pids`]).

pub(crate) mod cpu;
pub(crate) mod freezer;
pub(crate) mod io;
pub(crate) mod memory;
pub(crate) mod psi;

use std::path::PathBuf;

use crate::cgroup::{Controller, Sample};

/// A container's cgroup2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The directory.
    pub dir: PathBuf,
}

pub(crate) fn sample(dirs: &Dirs, sample: &mut Sample) {
    let d = &dirs.dir;
    cpu::Cpu::sample(d, sample);
    memory::Memory::sample(d, sample);
    io::Io::sample(d, sample);
    crate::v1::pids::Pids::sample(d, sample);
    freezer::Freezer::sample(d, sample);
    psi::Psi::sample(d, sample);
}
