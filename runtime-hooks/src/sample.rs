//! What a container's cgroup yields: the [`Sample`] (and the [`Probe`] a monitor reads at every wake-up), and the
//! crate-private [`Controller`] trait the v1 and v2 per-controller files implement to fill it. A leaf: the
//! backends ([`crate::v1`], [`crate::v2`]), [`crate::cgroup`] and [`crate::pacing`] all build on it, and it on none
//! of them. The public paths are [`crate::cgroup`]'s and [`crate::pacing`]'s re-exports.

use std::path::Path;

use crate::parse::{Files, NetDevTotals, Pressure};

/// The files of one controller in one cgroup directory.
pub(crate) trait Controller {
    /// Fills the fields of `sample` that this controller's files in `dir` carry.
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample);
}

/// CPU figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuSample {
    /// Total CPU time used, nanoseconds.
    pub usage_ns: Option<u64>,
    /// Enforcement periods elapsed while the cgroup had runnable tasks.
    pub nr_periods: Option<u64>,
    /// Periods in which the quota ran out.
    pub nr_throttled: Option<u64>,
    /// Total time throttled, nanoseconds.
    pub throttled_ns: Option<u64>,
}

/// Memory figures, bytes unless said otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemorySample {
    /// Charged memory (`memory.usage_in_bytes` / `memory.current`).
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages (what kubelet calls the working set).
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory (`rss` / `anon`).
    pub rss_bytes: Option<u64>,
    /// Page cache (`cache` / `file`).
    pub cache_bytes: Option<u64>,
    /// Highest usage seen (`memory.max_usage_in_bytes` / `memory.peak`, Linux >= 5.19 on v2).
    pub peak_bytes: Option<u64>,
    /// The hard limit; `None` when unlimited or unknown.
    pub limit_bytes: Option<u64>,
    /// Times usage hit the limit (`memory.failcnt` / `max` in `memory.events`).
    pub limit_hits: Option<u64>,
    /// OOM situations (`oom` in v2 `memory.events`; v1 keeps no counter: see `under_oom` and `oom_kills`).
    pub oom_events: Option<u64>,
    /// Tasks are waiting on an OOM with the OOM killer disabled (v1 `under_oom`).
    pub under_oom: Option<bool>,
    /// Processes killed by the OOM killer (`oom_kill`).
    pub oom_kills: Option<u64>,
}

/// Pressure-stall information, from the cgroup2 directory (v2 or hybrid hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PressureSample {
    /// `cpu.pressure`.
    pub cpu: Option<Pressure>,
    /// `memory.pressure`.
    pub memory: Option<Pressure>,
    /// `io.pressure`.
    pub io: Option<Pressure>,
}

/// Block IO totals over all devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoSample {
    /// Bytes read.
    pub read_bytes: Option<u64>,
    /// Bytes written.
    pub write_bytes: Option<u64>,
    /// Read operations.
    pub read_ops: Option<u64>,
    /// Write operations.
    pub write_ops: Option<u64>,
}

/// Process counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PidsSample {
    /// Tasks in the cgroup (`pids.current`).
    pub current: Option<u64>,
    /// `pids.max`; `None` when unlimited or unknown.
    pub limit: Option<u64>,
}

/// One timestamped reading of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Wall clock, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds: use this for rates.
    pub monotonic_ns: u64,
    /// CPU.
    pub cpu: CpuSample,
    /// Memory.
    pub memory: MemorySample,
    /// Pressure stall information.
    pub pressure: PressureSample,
    /// Block IO.
    pub io: IoSample,
    /// Network counters of the container's network namespace (non-loopback interfaces).
    pub net: Option<NetDevTotals>,
    /// Processes.
    pub pids: PidsSample,
    /// Whether the cgroup is frozen.
    pub frozen: Option<bool>,
}

/// Which parts of a [`Sample`] to read. Pressure (3 files) and network counters (`/proc/<pid>/net/dev`)
/// are about a third of the kernel's cost of a sample; a monitor can read them at a lower rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleScope {
    /// Read `cpu.pressure`, `memory.pressure`, `io.pressure`.
    pub pressure: bool,
    /// Read the network counters.
    pub net: bool,
}

impl SampleScope {
    /// Everything.
    pub const ALL: Self = Self {
        pressure: true,
        net: true,
    };
    /// CPU, memory, block IO, pids and freezer state only.
    pub const CORE: Self = Self {
        pressure: false,
        net: false,
    };
}

/// The two figures read at every wake-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    /// Wall clock, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub monotonic_ns: u64,
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Charged memory, bytes.
    pub memory_bytes: Option<u64>,
}

impl Probe {
    /// `full` (the last full sample) with this probe's time, CPU and memory: what a report carries for a
    /// wake-up whose other files were not read (their counters stand still while the container is idle).
    pub fn onto(&self, full: &Sample) -> Sample {
        let mut s = full.clone();
        s.unix_ns = self.unix_ns;
        s.monotonic_ns = self.monotonic_ns;
        s.cpu.usage_ns = self.cpu_usage_ns;
        s.memory.usage_bytes = self.memory_bytes;
        s
    }

    /// CPU cores used between `earlier` and this probe; `None` when either has no CPU figure or no time passed.
    pub fn cores_since(&self, earlier: &Probe) -> Option<f64> {
        let dt = self.monotonic_ns.checked_sub(earlier.monotonic_ns)?;
        if dt == 0 {
            return None;
        }
        let used = self.cpu_usage_ns?.saturating_sub(earlier.cpu_usage_ns?);
        Some(used as f64 / dt as f64)
    }
}
