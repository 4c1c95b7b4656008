//! cgroup v1: one file per controller, each a unit struct implementing the crate-private `Controller` trait over its directory.
//!
//! On a hybrid host the container's cgroup2 directory (no controllers, but pressure files and a `cpu.stat`
//! with `usage_usec`) is read too; its CPU usage is used only when `cpuacct` is absent.

pub(crate) mod blkio;
pub(crate) mod cpu;
pub(crate) mod cpuacct;
pub(crate) mod freezer;
pub(crate) mod memory;

use std::path::PathBuf;

use crate::parse::Files;
use crate::pids;
use crate::sample::{Controller, Sample, SampleScope};

/// The v1 controllers this crate reads or writes (names of their mount directories).
pub(crate) const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "blkio", "pids", "freezer"];

/// A container's directory in each v1 hierarchy; `None` where the controller is not mounted or the
/// container has no directory there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    /// `cpu` (bandwidth, shares, throttling).
    pub cpu: Option<PathBuf>,
    /// `cpuacct` (usage).
    pub cpuacct: Option<PathBuf>,
    /// `memory`.
    pub memory: Option<PathBuf>,
    /// `blkio`.
    pub blkio: Option<PathBuf>,
    /// `pids`.
    pub pids: Option<PathBuf>,
    /// `freezer`.
    pub freezer: Option<PathBuf>,
    /// `cpuset` (written by an Update only; never sampled).
    pub cpuset: Option<PathBuf>,
    /// `hugetlb` (written by an Update only; never sampled).
    pub hugetlb: Option<PathBuf>,
    /// The cgroup2 directory on a hybrid host.
    pub unified: Option<PathBuf>,
}

pub(crate) fn sample(dirs: &Dirs, files: &mut Files, scope: SampleScope, sample: &mut Sample) {
    if let Some(d) = &dirs.cpu {
        cpu::Cpu::sample(d, files, sample);
    }
    if let Some(d) = &dirs.cpuacct {
        cpuacct::CpuAcct::sample(d, files, sample);
    }
    if let Some(d) = &dirs.memory {
        memory::Memory::sample(d, files, sample);
    }
    if let Some(d) = &dirs.blkio {
        blkio::Blkio::sample(d, files, sample);
    }
    if let Some(d) = &dirs.pids {
        pids::Pids::sample(d, files, sample);
    }
    if let Some(d) = &dirs.freezer {
        freezer::Freezer::sample(d, files, sample);
    }
    if let Some(d) = &dirs.unified {
        if scope.pressure {
            crate::v2::psi::Psi::sample(d, files, sample);
        }
        if sample.cpu.usage_ns.is_none() {
            sample.cpu.usage_ns = crate::v2::cpu::usage_ns(files, d);
        }
    }
}
