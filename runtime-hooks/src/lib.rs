//! runtime-hooks: per-container telemetry and live limit rewriting on cgroup v1, v2 and hybrid hosts,
//! a network egress limit, and the `predictive-hook` OCI hook.
//!
//! The shim and the broker hold one [`ContainerCgroup`] per container:
//! - find it with [`ContainerCgroup::discover`] (from the OCI `linux.cgroupsPath`) or
//!   [`ContainerCgroup::from_pid`] (from `/proc/<pid>/cgroup`), with [`HostRoots::default`] on a real host;
//! - read it with [`ContainerCgroup::sampler`] then [`Sampler::sample`] (files kept open; or one-off
//!   [`ContainerCgroup::sample`]), which never fails: absent or malformed data is `None`; a monitor reads
//!   [`Sampler::probe`] (CPU and memory only) at every wake-up and lets a [`Pacer`] say when to report;
//! - rewrite it with `set_cpu_limit`, `set_cpu_shares`, `set_memory_limit`, `set_memory_high`,
//!   `set_oom_kill_disabled`, `set_io_weight`, `set_pids_limit`, `freeze`, `thaw`: each write is read back
//!   and every kernel refusal is an [`ActuateError`] naming the file and the value;
//! - apply a whole OCI `LinuxResources` as `runc update` does with [`ContainerCgroup::update_resources`];
//! - read the limits of the cgroups above a container with [`ancestors::ancestor_limits`];
//! - put a container's init where runc's cgroupfs driver also puts it (`name=systemd`, a hybrid host's cgroup2
//!   tree) with [`companions::join_companions`], and remove what was made with [`companions::remove_dirs`].
//!
//! Wake on a stall instead of on the clock: [`PressureTriggers::arm`] writes PSI triggers into a container's
//! `cpu.pressure` and `memory.pressure`, and one [`TriggerSet`] (an epoll fd) watches many containers' triggers.
//! On cgroup v1, [`MemoryThreshold::arm`] registers an eventfd the kernel signals when a container's memory usage
//! crosses a level (growth that does not stall); the set watches it with [`TriggerSet::arm_readable`]. On cgroup v2,
//! which has no usage thresholds, [`ChangeFile::memory_events`] keeps `memory.events` open: it changes when usage
//! passes `memory.high` or `memory.max`, and the set watches it with [`TriggerSet::arm_priority`].
//!
//! A disk I/O priority is the cgroup weight plus the threads' `ioprio` class
//! ([`ContainerCgroup::set_io_priority`]); [`io::detect`] says per device which of them the scheduler honours.
//!
//! Network egress is limited per network namespace with [`net::set_egress_limit`], ingress on the host-side veth
//! peer with [`net::set_ingress_limit`]. A daemon that must leave its
//! starter's cgroup gets its own at every hierarchy's root with [`daemon::make_daemon_cgroups`].
//!
//! Why not youki's `libcgroups` for this: its managers apply a whole `LinuxResources` and neither read
//! back nor refuse a memory limit below usage; its layout detection (`get_cgroup_setup_with_root`) needs
//! `statfs` on a real cgroupfs, so it cannot run on a fake tree; and its `psi_stats` drops `total` and
//! slices lines without a length check. The shim still creates cgroups through libcontainer (which uses
//! libcgroups); this crate only reads and rewrites files in them, in the same v1/v2, one-file-per-controller
//! shape.

pub mod actuate;
pub mod ancestors;
pub mod cgroup;
mod chain;
pub mod changes;
pub mod companions;
pub mod daemon;
pub mod discovery;
pub mod hook;
pub mod io;
pub mod ioprio;
pub mod net;
pub mod pacing;
mod parse;
mod pids;
pub mod placement;
pub mod resources;
mod sample;
pub mod subtree;
pub mod threshold;
pub mod trigger;
pub mod v1;
pub mod v2;
mod walk;

#[cfg(test)]
mod fake_tests;
#[cfg(test)]
mod root_tests;
#[cfg(test)]
pub(crate) mod testutil;
#[cfg(test)]
mod threshold_root_tests;

pub use actuate::{ActuateError, CpuLimit, MemoryLimitPolicy};
pub use ancestors::{AncestorLimit, ancestor_limits};
pub use cgroup::{
    CgroupDirs, CgroupVersion, ContainerCgroup, CpuSample, IoApplied, IoSample, MemorySample,
    NetDevTotals, PidsSample, Pressure, PressureSample, PsiLine, Sample, SampleScope, Sampler,
};
pub use chain::error_chain;
pub use changes::ChangeFile;
pub use discovery::{DiscoveryError, HostRoots};
pub use pacing::{Pacer, Pacing, Probe, Why};
pub use threshold::{MemoryThreshold, ThresholdError};
pub use trigger::{PressureTriggers, TriggerError, TriggerSet, TriggerWindow};
