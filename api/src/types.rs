//! The controller's data types that travel on the wire: what a container asked for ([`SpecLimits`]), what it
//! got ([`Allocation`]), what to do to it ([`Directive`]) and the snapshots `status` shows ([`TaskView`],
//! [`Lease`], [`HostCapacity`]). The broker's controller computes with these same types; changing one changes
//! the protocol (docs/BROKER-API.md), which the tests in [`crate::wire`] pin.

use serde::{Deserialize, Serialize};

/// Whether the broker may change a task's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Never contact the broker; the spec's limits stand.
    Off,
    /// Predict, decide and record, but change nothing.
    Observe,
    /// Predict, decide and apply.
    #[default]
    Enforce,
}

/// Which cgroup interface the task's directives target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupKind {
    /// v1 (or hybrid): `memory.limit_in_bytes` with the OOM killer disabled below the user's limit.
    V1,
    /// v2: `memory.high` with `memory.max` at the user's limit.
    #[default]
    V2,
}

/// The limits and requests the user put in the spec. `None` = not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpecLimits {
    /// CPU limit (quota / period), cores.
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// CPU request (from shares or a CRI annotation), cores.
    #[serde(default)]
    pub cpu_request_cores: Option<f64>,
    /// Memory limit, bytes.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Memory request (reservation), bytes.
    #[serde(default)]
    pub memory_request_bytes: Option<u64>,
}

/// What the host can give to the tasks the broker manages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostCapacity {
    /// CPUs.
    pub cpu_cores: f64,
    /// Memory, bytes.
    pub memory_bytes: u64,
}

/// The latest usage of a task, already turned into rates by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// When it was measured, ms.
    pub at_ms: u64,
    /// CPU used over the last interval, cores.
    pub cpu_cores: f64,
    /// Share of CFS periods throttled over the last interval (0..=1).
    pub cpu_throttled_fraction: f64,
    /// CPU PSI `some avg10`, percent.
    pub cpu_psi_avg10: Option<f64>,
    /// CPU PSI `some` over the last interval alone (from the stall total), percent: `avg10` lags a step by
    /// seconds (`None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_psi_recent: Option<f64>,
    /// Memory PSI `some avg10`, percent.
    pub memory_psi_avg10: Option<f64>,
    /// Charged memory, bytes.
    pub memory_bytes: u64,
    /// Working set, bytes (`None`: use `memory_bytes`).
    pub working_set_bytes: Option<u64>,
    /// Tasks wait on an OOM (v1 `under_oom`, or an OOM notification since the last report).
    pub under_oom: bool,
    /// Bytes sent over the non-loopback interfaces of its network namespace, per second (`None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes_per_sec: Option<f64>,
    /// Bytes received over them, per second (`None`: not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes_per_sec: Option<f64>,
}

/// A current allocation. `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// CPU quota, cores.
    pub cpu_cores: Option<f64>,
    /// Memory allocation (v2 `memory.high`, v1 `memory.limit_in_bytes`), bytes.
    pub memory_bytes: Option<u64>,
    /// The hard ceiling (v2 `memory.max`): the user's limit or the host's grantable memory.
    pub memory_max_bytes: Option<u64>,
}

/// A resource the controller allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// CPU, cores.
    Cpu,
    /// Memory, bytes.
    Memory,
}

/// CPU lent by one lender (or the host's unallocated pool) to one holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Id, unique within one broker run.
    pub id: u64,
    /// What is lent.
    pub resource: ResourceKind,
    /// The borrower.
    pub holder: String,
    /// The lender; `None` = the host's unallocated capacity.
    pub lender: Option<String>,
    /// Amount (cores).
    pub amount: f64,
    /// Granted at, ms.
    pub granted_at_ms: u64,
    /// Ends at, ms, unless renewed (every tick its holder reports).
    pub expires_at_ms: u64,
}

/// What to do to a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Set the CPU quota (`None` = unlimited).
    SetCpu {
        /// Cores.
        cores: Option<f64>,
    },
    /// cgroup v2: `memory.high` = `high_bytes`, `memory.max` = `max_bytes` (`None` = max).
    SetMemoryHigh {
        /// Reclaim threshold.
        high_bytes: Option<u64>,
        /// Hard limit.
        max_bytes: Option<u64>,
    },
    /// cgroup v1: `memory.limit_in_bytes` = `limit_bytes`, and the OOM killer off below the user's limit.
    SetMemoryLimit {
        /// Limit.
        limit_bytes: Option<u64>,
        /// Whether `memory.oom_control` disables the OOM killer.
        oom_kill_disabled: bool,
    },
    /// Freeze (pause) the container.
    Freeze,
    /// Thaw it.
    Thaw,
    /// A lease was granted to this container (informational: the matching `set_cpu` comes with it).
    LeaseGranted {
        /// The lease.
        lease: Lease,
    },
    /// A lease held by this container ended.
    LeaseRevoked {
        /// The lease.
        lease: Lease,
    },
    /// Disk I/O priority: a weight in OCI units (10..=1000; v1 `blkio.weight`, v2 `io.weight` after conversion),
    /// written where the cgroup has the file, and the threads' `ioprio` class where given.
    SetIoWeight {
        /// Weight.
        weight: u16,
        /// The `ioprio` class and level for every thread of the container (absent from older brokers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ioprio: Option<IoPrio>,
    },
    /// CPU weight, in OCI shares (2..=262144; v1 `cpu.shares`, v2 `cpu.weight` after conversion): how the kernel
    /// splits CPU between this container and its siblings under the same parent cgroup when both want more.
    SetCpuWeight {
        /// Shares.
        shares: u64,
    },
    /// Network egress: a token-bucket limit on every non-loopback interface of the container's own network
    /// namespace, `None` = no limit (the limit set earlier is removed). Bounded by [`MIN_NET_EGRESS`] and
    /// [`MAX_NET_EGRESS`]; a container that shares the host's network namespace is left alone.
    SetNetEgress {
        /// Bytes per second.
        rate_bytes_per_sec: Option<u64>,
    },
    /// Network ingress: a token-bucket limit on what the container receives, set as the egress limit of the
    /// host-side veth peer of each of its interfaces, `None` = no limit. Same bounds as [`Action::SetNetEgress`]
    /// ([`MIN_NET_EGRESS`]..=[`MAX_NET_EGRESS`]); a container that shares the host's network namespace, or whose
    /// interfaces have no veth peer in the shim's namespace, is left alone. Sent only to a shim that says it
    /// applies it (Register `net_ingress`): older shims fail to parse an action they do not know.
    SetNetIngress {
        /// Bytes per second.
        rate_bytes_per_sec: Option<u64>,
    },
    /// Nothing changes, for the record (e.g. no room to grow).
    Hold {
        /// Which resource.
        resource: ResourceKind,
    },
    /// An action this side does not know (from a newer peer): read so the other directives of the same reply
    /// still apply, then logged and skipped. Never sent.
    #[serde(other)]
    Unknown,
}

/// Smallest egress limit a [`Action::SetNetEgress`] may set, bytes/s: a few full-size packets per second (a TBF
/// below that starves TCP's retransmissions).
pub const MIN_NET_EGRESS: u64 = 8 * 1024;
/// Largest egress limit, bytes/s (100 GB/s: above any NIC this runs on).
pub const MAX_NET_EGRESS: u64 = 100_000_000_000;

/// A task's network egress (or ingress) for status queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetView {
    /// The limit in force (its own share, less what it lends, plus what it borrows), bytes/s.
    pub limit_bytes_per_sec: u64,
    /// Its own share of the node's link budget, bytes/s.
    pub base_bytes_per_sec: u64,
    /// Measured egress over the last report interval, bytes/s (an egress view only).
    pub tx_bytes_per_sec: Option<f64>,
    /// Measured ingress over the last report interval, bytes/s (an ingress view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes_per_sec: Option<f64>,
    /// Lent to saturated senders, bytes/s.
    pub lent_bytes_per_sec: u64,
    /// Borrowed from idle senders, bytes/s.
    pub borrowed_bytes_per_sec: u64,
    /// Why, in words.
    pub reason: String,
}

/// An I/O scheduling class (`ioprio_set(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoClass {
    /// Served before every other class.
    Realtime,
    /// The default class.
    BestEffort,
    /// Served when no other class has I/O queued.
    Idle,
}

/// An `ioprio`: class and level (0 = highest ..= 7; 0 for idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoPrio {
    /// Class.
    pub class: IoClass,
    /// Level.
    pub level: u8,
}

impl std::fmt::Display for IoPrio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.class {
            IoClass::Idle => f.write_str("idle"),
            IoClass::BestEffort => write!(f, "best-effort/{}", self.level),
            IoClass::Realtime => write!(f, "realtime/{}", self.level),
        }
    }
}

/// One block device and what carries a container's I/O priority on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoDevice {
    /// Kernel name, e.g. `vda`.
    pub device: String,
    /// Its active scheduler.
    pub scheduler: String,
    /// `weight`, `ioprio` or `none`.
    pub mechanism: String,
    /// Why, in words.
    pub why: String,
}

/// A task's disk I/O priority for status queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoView {
    /// The weight, OCI units.
    pub weight: u16,
    /// The threads' class and level.
    pub ioprio: Option<IoPrio>,
    /// Per block device of the host, which of the two takes effect.
    pub devices: Vec<IoDevice>,
}

/// One decision: an action on one container, why, and whether it is meant to be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directive {
    /// Container id.
    pub container_id: String,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// `false` in mode observe: record only.
    pub applied: bool,
    /// The value before (cores or bytes), when a limit changes.
    #[serde(default)]
    pub old_value: Option<f64>,
}

/// A snapshot of one task for status queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Container id.
    pub container_id: String,
    /// Mode.
    pub mode: Mode,
    /// User priority.
    pub priority: i32,
    /// On its pipeline's critical path.
    pub critical: bool,
    /// Current allocation.
    pub allocation: Allocation,
    /// Own CPU allocation before leases.
    pub base_cpu_cores: Option<f64>,
    /// Paused by the controller.
    pub frozen: bool,
    /// Its owner is stopping it (Report `stopping`): never paused again.
    #[serde(default)]
    pub stopping: bool,
    /// Latest usage.
    pub usage: Option<Usage>,
    /// The user's limits and requests in force (from Register, or the latest Update).
    #[serde(default)]
    pub limits: SpecLimits,
    /// Most CPU the task may borrow, cores, after the operator's policy (`None`: unlimited).
    #[serde(default)]
    pub max_borrow_cpu: Option<f64>,
    /// Its disk I/O priority and the mechanism per device (`None`: priority 0, nothing written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoView>,
    /// Its network egress limit (`None`: no `[network]` budget, or the host's network namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetView>,
    /// Its network ingress limit (`None`: no `[network] ingress_budget_bytes_per_sec`, the host's network
    /// namespace, or a shim that does not apply ingress limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ingress: Option<NetView>,
}
