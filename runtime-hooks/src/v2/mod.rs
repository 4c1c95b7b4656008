//! cgroup v2: one file per controller, each a unit struct implementing the crate-private `Controller` trait over the
//! container's single directory. `pids` uses the same files as v1 (`crate::pids`).

pub(crate) mod cpu;
pub(crate) mod freezer;
pub(crate) mod io;
pub(crate) mod memory;
pub(crate) mod psi;

use std::path::PathBuf;

use crate::parse::Files;
use crate::pids;
use crate::sample::{Controller, Sample, SampleScope};

/// A container's cgroup2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The directory.
    pub dir: PathBuf,
}

pub(crate) fn sample(dirs: &Dirs, files: &mut Files, scope: SampleScope, sample: &mut Sample) {
    let d = &dirs.dir;
    cpu::Cpu::sample(d, files, sample);
    memory::Memory::sample(d, files, sample);
    io::Io::sample(d, files, sample);
    pids::Pids::sample(d, files, sample);
    freezer::Freezer::sample(d, files, sample);
    if scope.pressure {
        psi::Psi::sample(d, files, sample);
    }
}
