//! One container's cgroup: the backend enum, the [`Sample`] it yields and the limits it takes.
//!
//! [`ContainerCgroup`] is what the shim and the broker hold per container. It dispatches on
//! [`CgroupDirs`] (v1/hybrid or v2) to the per-controller files in [`crate::v1`] and [`crate::v2`].
//! Sampling never fails: a missing or malformed file leaves its field `None`. Actuation returns
//! [`ActuateError`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actuate::{ActuateError, CpuLimit, MemoryLimitPolicy};
use crate::ioprio::{self, IoPriority, Sweep};
use crate::parse::Files;
pub use crate::parse::{NetDevTotals, Pressure, PsiLine};
use crate::sample::Probe;
pub use crate::sample::{
    CpuSample, IoSample, MemorySample, PidsSample, PressureSample, Sample, SampleScope,
};
use crate::{parse, pids, v1, v2};

/// What [`ContainerCgroup::set_io_priority`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoApplied {
    /// The weight file existed and holds the weight.
    pub weight_written: bool,
    /// Threads given the `ioprio`.
    pub threads: Sweep,
}

/// How long [`ContainerCgroup::freeze`] and [`ContainerCgroup::thaw`] wait for the kernel.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend: where the container's controllers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    /// cgroup v1, with the hybrid host's cgroup2 directory when there is one.
    V1(v1::Dirs),
    /// cgroup v2.
    V2(v2::Dirs),
}

/// The cgroup version of a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// v1 controllers only.
    V1,
    /// v1 controllers plus a cgroup2 directory (pressure files).
    Hybrid,
    /// cgroup v2.
    V2,
}

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; the clock ids used are always available on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A container's cgroup on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    dirs: CgroupDirs,
    proc_root: PathBuf,
    net_pid: Option<i32>,
}

impl ContainerCgroup {
    /// Wraps known directories; `proc_root` is normally `/proc`.
    pub fn new(dirs: CgroupDirs, proc_root: PathBuf) -> Self {
        Self {
            dirs,
            proc_root,
            net_pid: None,
        }
    }

    /// The directories.
    pub fn dirs(&self) -> &CgroupDirs {
        &self.dirs
    }

    /// v1, hybrid or v2.
    pub fn version(&self) -> CgroupVersion {
        match &self.dirs {
            CgroupDirs::V1(d) if d.unified.is_some() => CgroupVersion::Hybrid,
            CgroupDirs::V1(_) => CgroupVersion::V1,
            CgroupDirs::V2(_) => CgroupVersion::V2,
        }
    }

    /// The process whose `/proc/<pid>/net/dev` gives the network counters; by default the first process
    /// listed in the cgroup.
    pub fn set_net_pid(&mut self, pid: Option<i32>) {
        self.net_pid = pid;
    }

    /// The processes in the cgroup (`cgroup.procs` of the memory, pids or cpu directory).
    pub fn procs(&self) -> Vec<i32> {
        self.procs_file()
            .and_then(|f| parse::read(&f))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The processes in the cgroup, as [`Self::procs`], but a missing or unreadable `cgroup.procs` is an error
    /// naming the file (what the shim's `Pids` answers).
    pub fn try_procs(&self) -> Result<Vec<i32>, ActuateError> {
        let file = self.procs_file().ok_or(ActuateError::NoController {
            controller: "memory, pids, cpu or freezer",
        })?;
        let text = std::fs::read_to_string(&file).map_err(|source| ActuateError::Read {
            path: file.clone(),
            source,
        })?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// The processes in the cgroup and in every cgroup below it (a container may make cgroups of its own and move
    /// processes there: `runc ps` lists them too), as [`Self::try_procs`] for the cgroup itself; a cgroup below
    /// that goes meanwhile is skipped.
    pub fn try_procs_all(&self) -> Result<Vec<i32>, ActuateError> {
        let mut out = self.try_procs()?;
        let Some(dir) = self
            .procs_file()
            .and_then(|f| f.parent().map(Path::to_path_buf))
        else {
            return Ok(out);
        };
        for d in crate::walk::dirs_below(&dir).0 {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        Ok(out)
    }

    fn procs_file(&self) -> Option<PathBuf> {
        let dir = match &self.dirs {
            CgroupDirs::V2(d) => Some(&d.dir),
            CgroupDirs::V1(d) => d
                .memory
                .as_ref()
                .or(d.pids.as_ref())
                .or(d.cpu.as_ref())
                .or(d.freezer.as_ref()),
        };
        dir.map(|d| d.join("cgroup.procs"))
    }

    /// Reads every figure the host has for this cgroup, opening each file. For periodic sampling hold a
    /// [`Sampler`] instead: it keeps the files open and costs a fraction of this.
    pub fn sample(&self) -> Sample {
        self.sample_with(
            &mut Files::uncached(),
            &mut NetSource::default(),
            SampleScope::ALL,
        )
    }

    /// A sampler that keeps this cgroup's files open between samples.
    pub fn sampler(&self) -> Sampler {
        Sampler {
            cgroup: self.clone(),
            files: Files::cached(),
            net: NetSource::default(),
        }
    }

    fn sample_with(&self, files: &mut Files, net: &mut NetSource, scope: SampleScope) -> Sample {
        let mut sample = Sample {
            unix_ns: now_ns(libc::CLOCK_REALTIME),
            monotonic_ns: now_ns(libc::CLOCK_MONOTONIC),
            ..Sample::default()
        };
        match &self.dirs {
            CgroupDirs::V1(d) => v1::sample(d, files, scope, &mut sample),
            CgroupDirs::V2(d) => v2::sample(d, files, scope, &mut sample),
        }
        if !scope.net {
            return sample;
        }
        if net.skip > 0 {
            net.skip -= 1;
            return sample;
        }
        if net.pid.is_none() {
            net.pid = self
                .net_pid
                .or_else(|| parse::first_line(&self.procs_file()?)?.trim().parse().ok());
        }
        if let Some(pid) = net.pid {
            let path = self.proc_root.join(pid.to_string()).join("net/dev");
            sample.net = files.read(&path).and_then(parse::net_dev);
            net.oversized = files.oversized();
            if net.oversized {
                net.skip = OVERSIZED_NET_SKIP;
            } else if sample.net.is_none() {
                // The process may have exited: pick another next time.
                files.forget(&path);
                net.pid = None;
            }
        }
        sample
    }

    /// Sets CPU bandwidth (quota, period, burst).
    pub fn set_cpu_limit(&self, limit: &CpuLimit) -> Result<(), ActuateError> {
        if !(1000..=1_000_000).contains(&limit.period_us) {
            return Err(ActuateError::OutOfRange {
                what: "cpu period (us)",
                value: limit.period_us,
                range: "1000..=1000000",
            });
        }
        match &self.dirs {
            CgroupDirs::V1(d) => v1::cpu::Cpu::set_limit(need(&d.cpu, "cpu")?, limit),
            CgroupDirs::V2(d) => v2::cpu::Cpu::set_limit(&d.dir, limit),
        }
    }

    /// Sets the CPU weight, in OCI shares (2..=262144); converted to `cpu.weight` on v2.
    pub fn set_cpu_shares(&self, shares: u64) -> Result<(), ActuateError> {
        if !(2..=262_144).contains(&shares) {
            return Err(ActuateError::OutOfRange {
                what: "cpu shares",
                value: shares,
                range: "2..=262144",
            });
        }
        match &self.dirs {
            CgroupDirs::V1(d) => v1::cpu::Cpu::set_shares(need(&d.cpu, "cpu")?, shares),
            CgroupDirs::V2(d) => {
                v2::cpu::Cpu::set_weight(&d.dir, crate::actuate::shares_to_weight(shares))
            }
        }
    }

    /// Sets the hard memory limit (`None` = unlimited). Refuses a limit below current usage unless
    /// `policy` is [`MemoryLimitPolicy::AllowBelowUsage`].
    pub fn set_memory_limit(
        &self,
        limit: Option<u64>,
        policy: MemoryLimitPolicy,
    ) -> Result<(), ActuateError> {
        match &self.dirs {
            CgroupDirs::V1(d) => {
                v1::memory::Memory::set_limit(need(&d.memory, "memory")?, limit, policy)
            }
            CgroupDirs::V2(d) => v2::memory::Memory::set_limit(&d.dir, limit, policy),
        }
    }

    /// Sets the reclaim threshold: `memory.high` on v2, `memory.soft_limit_in_bytes` on v1 (`None` = none).
    pub fn set_memory_high(&self, high: Option<u64>) -> Result<(), ActuateError> {
        match &self.dirs {
            CgroupDirs::V1(d) => {
                v1::memory::Memory::set_soft_limit(need(&d.memory, "memory")?, high)
            }
            CgroupDirs::V2(d) => v2::memory::Memory::set_high(&d.dir, high),
        }
    }

    /// Disables (or re-enables) the OOM killer: v1 `memory.oom_control`. With it disabled, tasks over the
    /// limit wait instead of dying (`under_oom` in the sample) so the broker can lend memory. cgroup v2 has
    /// no such knob ([`ActuateError::Unsupported`]).
    pub fn set_oom_kill_disabled(&self, disabled: bool) -> Result<(), ActuateError> {
        match &self.dirs {
            CgroupDirs::V1(d) => {
                v1::memory::Memory::set_oom_kill_disabled(need(&d.memory, "memory")?, disabled)
            }
            CgroupDirs::V2(_) => Err(ActuateError::Unsupported {
                what: "disabling the OOM killer",
                version: "v2",
            }),
        }
    }

    /// Sets the IO weight in OCI units (10..=1000); converted to `io.weight` on v2.
    pub fn set_io_weight(&self, weight: u16) -> Result<(), ActuateError> {
        if !(10..=1000).contains(&weight) {
            return Err(ActuateError::OutOfRange {
                what: "io weight",
                value: weight.into(),
                range: "10..=1000",
            });
        }
        match &self.dirs {
            CgroupDirs::V1(d) => v1::blkio::Blkio::set_weight(need(&d.blkio, "blkio")?, weight),
            CgroupDirs::V2(d) => {
                v2::io::Io::set_weight(&d.dir, crate::actuate::blkio_weight_to_io_weight(weight))
            }
        }
    }

    /// A disk I/O priority, both ways at once (which one the device's scheduler honours is
    /// [`crate::io::detect`]'s business): the weight (as [`Self::set_io_weight`]) where the cgroup has a weight
    /// file, and `ioprio` on every thread the cgroup lists now (v1 `tasks`, v2 `cgroup.threads`); threads
    /// forked later inherit it.
    pub fn set_io_priority(
        &self,
        weight: u16,
        ioprio: Option<IoPriority>,
    ) -> Result<IoApplied, ActuateError> {
        let weight_written = match self.set_io_weight(weight) {
            Ok(()) => true,
            Err(ActuateError::Unsupported { .. }) => false,
            Err(e) => return Err(e),
        };
        let threads = match ioprio {
            None => Sweep::default(),
            Some(p) => {
                let file = match &self.dirs {
                    CgroupDirs::V1(d) => [&d.pids, &d.cpu, &d.memory, &d.freezer, &d.blkio]
                        .into_iter()
                        .flatten()
                        .next()
                        .ok_or(ActuateError::NoController { controller: "any" })?
                        .join("tasks"),
                    CgroupDirs::V2(d) => d.dir.join("cgroup.threads"),
                };
                ioprio::sweep(&file, p)?
            }
        };
        Ok(IoApplied {
            weight_written,
            threads,
        })
    }

    /// Sets the maximum number of tasks (`None` = unlimited).
    pub fn set_pids_limit(&self, limit: Option<u64>) -> Result<(), ActuateError> {
        let dir = match &self.dirs {
            CgroupDirs::V1(d) => need(&d.pids, "pids")?,
            CgroupDirs::V2(d) => &d.dir,
        };
        pids::Pids::set_limit(dir, limit)
    }

    /// Freezes every task and waits (up to [`FREEZE_TIMEOUT`]) until the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), ActuateError> {
        self.set_frozen(true)
    }

    /// Thaws the cgroup and waits until the kernel reports it running.
    pub fn thaw(&self) -> Result<(), ActuateError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), ActuateError> {
        match &self.dirs {
            CgroupDirs::V1(d) => {
                v1::freezer::Freezer::set(need(&d.freezer, "freezer")?, frozen, FREEZE_TIMEOUT)
            }
            CgroupDirs::V2(d) => v2::freezer::Freezer::set(&d.dir, frozen, FREEZE_TIMEOUT),
        }
    }
}

/// Samples one container repeatedly with its cgroup files kept open (`pread` from offset 0): what the
/// per-task monitor should hold. Recreate it if the container's cgroup is recreated.
#[derive(Debug)]
pub struct Sampler {
    cgroup: ContainerCgroup,
    files: Files,
    net: NetSource,
}

/// Where a sampler reads the network counters.
#[derive(Debug, Default)]
struct NetSource {
    /// The process whose `/proc/<pid>/net/dev` is read; `None` picks one at the next sample.
    pid: Option<i32>,
    /// That file was over [`parse::MAX_FILE_BYTES`] when last read.
    oversized: bool,
    /// Samples left that do not read it again.
    skip: u32,
}

/// Samples that leave out the network counters after `/proc/<pid>/net/dev` was found over the bound: each look
/// costs the kernel ~2 ms of listing interfaces, so it is taken once a minute at a monitor's tick, not each one.
const OVERSIZED_NET_SKIP: u32 = 59;

impl Sampler {
    /// Reads every figure the host has for the cgroup.
    pub fn sample(&mut self) -> Sample {
        self.sample_scope(SampleScope::ALL)
    }

    /// Reads CPU time and charged memory only (two files): what a monitor reads at every wake-up
    /// ([`crate::pacing`]).
    pub fn probe(&mut self) -> Probe {
        let unix_ns = now_ns(libc::CLOCK_REALTIME);
        let monotonic_ns = now_ns(libc::CLOCK_MONOTONIC);
        let files = &mut self.files;
        let (cpu_usage_ns, memory_bytes) = match &self.cgroup.dirs {
            CgroupDirs::V1(d) => {
                let cpu = d
                    .cpuacct
                    .as_ref()
                    .and_then(|dir| files.u64(&dir.join("cpuacct.usage")))
                    .or_else(|| v2::cpu::usage_ns(files, d.unified.as_ref()?));
                let mem = d
                    .memory
                    .as_ref()
                    .and_then(|dir| files.u64(&dir.join("memory.usage_in_bytes")));
                (cpu, mem)
            }
            CgroupDirs::V2(d) => (
                v2::cpu::usage_ns(files, &d.dir),
                files.u64(&d.dir.join("memory.current")),
            ),
        };
        Probe {
            unix_ns,
            monotonic_ns,
            cpu_usage_ns,
            memory_bytes,
        }
    }

    /// Reads the parts of a sample in `scope`; the others stay `None`.
    pub fn sample_scope(&mut self, scope: SampleScope) -> Sample {
        self.cgroup
            .sample_with(&mut self.files, &mut self.net, scope)
    }

    /// Whether the latest sample left the network counters out because the network namespace lists more
    /// interfaces than [`Sampler`] reads (its `/proc/<pid>/net/dev` is over 256 KiB, about 2,000 interfaces):
    /// a container can create them, and the kernel's time to list them would be the monitor's. The file is
    /// looked at again every 60th sample.
    pub fn net_oversized(&self) -> bool {
        self.net.oversized
    }

    /// The cgroup sampled.
    pub fn cgroup(&self) -> &ContainerCgroup {
        &self.cgroup
    }
}

fn need<'a>(dir: &'a Option<PathBuf>, controller: &'static str) -> Result<&'a Path, ActuateError> {
    dir.as_deref()
        .ok_or(ActuateError::NoController { controller })
}
