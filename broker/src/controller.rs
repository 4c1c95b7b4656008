//! The allocation controller: pure logic, no kernel, no I/O, no clock. The broker feeds it registrations,
//! usage and ticks and turns its [`Directive`]s into cgroup writes (through the shim) and decision records.
//!
//! Rules, in the order a [`Controller::tick`] applies them:
//! 1. **Expiry**: a lease whose holder has not reported for `stale_after_ms` is ended; the lender gets it back.
//!    **Ancestors**: leases held under a limited ancestor cgroup whose tasks hold more than its limit end.
//! 2. **Revocation**: a lender whose usage nears what it kept, or whose predicted profile says the next
//!    `lookahead_buckets` need more than it kept, gets its leases back in this tick (CPU at once).
//! 3. **Release**: a holder that no longer needs a lease gives it back.
//! 4. **CPU borrowing**: a task under CPU pressure (throttled, at its quota, or CPU PSI stall) borrows from the
//!    host's unallocated CPU and from idle lenders (lowest priority first) as leases, highest priority first, up
//!    to its per-task maximum and never above its user limit.
//! 5. **Memory**: a task near its memory allocation (or waiting on an OOM with the killer disabled) is grown
//!    from the host's free memory; with no room, the lowest-priority running task below it is paused (frozen)
//!    and its unused allocation returned to the pool. Under host memory pressure one lowest-priority task is
//!    paused per tick; paused tasks are thawed, highest priority first, once pressure has passed. A task not
//!    near its allocation whose prediction is confident (medium or high) is right-sized: shrunk to what its
//!    predicted profile says it needs around now (never below its usage over `memory_grow_at` + 5%). A task that
//!    waits on memory with no room to grow for `memory_stall_ms` is lifted to its ceiling (its limit, or none).
//!
//! Outside the tick: [`Controller::register`] allocates (a request is a floor on any host; no quota without a CPU
//! limit unless `quota_unlimited_cpu`; within every limited ancestor's room), and [`Controller::update`] makes a
//! user's resize the task's limits at once. The tasks under one limited ancestor (a pod's containers) share its
//! limit in every rule that hands out CPU or memory; a lender never lends below its request.
//!
//! A memory allocation never makes an OOM kill likelier than the user's limit: on cgroup v2 it is
//! `memory.high` with `memory.max` at the user's limit (or the host ceiling); on v1 it is
//! `memory.limit_in_bytes` with the OOM killer disabled until the allocation reaches the user's limit.
//!
//! Priority is `(user priority, on its pipeline's critical path)`, compared in that order. Tasks in mode
//! `observe` get directives marked `applied: false` and never lend to, borrow from or get paused for tasks in
//! mode `enforce` (nothing would actually change on the host).
//!
//! Limits: memory is not lent through leases (it grows from the free pool and from paused tasks' unused
//! allocation); a running task's memory allocation shrinks only by right-sizing (confident prediction) or
//! at a pause; IO weight is not set.

use std::collections::{BTreeMap, HashMap};

use predictor::{BUCKETS, Confidence, Prediction, YOUNG_LIMIT_CAP};
use serde::{Deserialize, Serialize};

pub use predictive_api::types::{
    Action, Allocation, CgroupKind, Directive, HostCapacity, Lease, Mode, ResourceKind, SpecLimits,
    TaskView, Usage,
};

/// Tuning of the controller; the defaults are documented per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// CPU never handed out (default 0.5 cores).
    pub host_reserve_cpu: f64,
    /// Memory never handed out (default 256 MiB).
    pub host_reserve_memory_bytes: u64,
    /// Smallest CPU allocation (default 0.05 cores).
    pub min_cpu_cores: f64,
    /// Smallest memory allocation (default 16 MiB).
    pub min_memory_bytes: u64,
    /// Lifetime buckets whose CPU p90 sets the initial CPU allocation (default 5 of 20).
    pub initial_cpu_buckets: usize,
    /// A run whose predicted duration (its upper bound) is at most this starts at its predicted CPU upper bound
    /// instead of the first buckets' p90: it ends before the controller could grow it (a 0.5 s tick sees a few
    /// samples of it, and growth takes a tick per step). 0 = never (default 10 s).
    pub short_run_ms: u64,
    /// Buckets ahead a lender's profile is read to revoke before it needs its CPU (default 1).
    pub lookahead_buckets: usize,
    /// Usage is multiplied by this to get what a task needs to keep (default 1.25).
    pub headroom: f64,
    /// Share of periods throttled above which a task is under CPU pressure (default 0.10).
    pub throttled_fraction: f64,
    /// Usage over effective quota at which a task is under CPU pressure (default 0.90).
    pub busy_fraction: f64,
    /// CPU PSI `some avg10` (percent) at which a task is under CPU pressure (default 20).
    pub cpu_psi_avg10: f64,
    /// A borrower asks for this share of its current quota per tick (default 0.5).
    pub borrow_step: f64,
    /// Smallest lease worth granting (default 0.05 cores).
    pub min_lease_cpu: f64,
    /// Most a task may borrow unless its annotation says otherwise (default: unlimited).
    pub max_borrow_cpu: Option<f64>,
    /// A lease ends when its holder has not reported for this long (default 5 s).
    pub stale_after_ms: u64,
    /// How long a lease lasts without renewal; renewed every tick its holder reports (default 10 s).
    pub lease_ttl_ms: u64,
    /// Usage over allocation at which memory is grown (default 0.90).
    pub memory_grow_at: f64,
    /// Growth factor of a memory allocation (default 1.25).
    pub memory_grow_factor: f64,
    /// Memory PSI `some avg10` (percent) at which a task using at least 3/4 of its allocation is grown: on v2
    /// this is the stall `memory.high` reclaim causes (default 20).
    pub memory_psi_avg10: f64,
    /// A running task whose prediction has at least medium confidence is right-sized to its predicted profile
    /// when what it needs (the profile's upper bound scaled to the 99.8% limit, one bucket back to
    /// `lookahead_buckets` ahead, and never less than its usage over `memory_grow_at` plus 5%) is below this share
    /// of its allocation; 0 = never shrink (default 0.95).
    pub memory_shrink_at: f64,
    /// Host memory usage over grantable memory at which the lowest-priority task is paused (default 0.95).
    pub pause_at: f64,
    /// Host memory usage over grantable memory below which paused tasks are thawed (default 0.85).
    pub thaw_below: f64,
    /// Give a container whose spec has no CPU limit a CFS quota (its predicted CPU, and leases) (default false:
    /// it keeps no quota, as runc would run it; it neither lends nor borrows).
    pub quota_unlimited_cpu: bool,
    /// A task that waits on memory (v1 OOM wait with the killer off, or a v2 `memory.high` stall) and cannot be
    /// grown for this long gets its allocation lifted to its ceiling (the user's limit, or none) with the kernel's
    /// OOM policy back on: it never waits on the broker indefinitely (default 10 s).
    pub memory_stall_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            host_reserve_cpu: 0.5,
            host_reserve_memory_bytes: 256 << 20,
            min_cpu_cores: 0.05,
            min_memory_bytes: 16 << 20,
            initial_cpu_buckets: 5,
            short_run_ms: 10_000,
            lookahead_buckets: 1,
            headroom: 1.25,
            throttled_fraction: 0.10,
            busy_fraction: 0.90,
            cpu_psi_avg10: 20.0,
            borrow_step: 0.5,
            min_lease_cpu: 0.05,
            max_borrow_cpu: None,
            stale_after_ms: 5_000,
            lease_ttl_ms: 10_000,
            memory_grow_at: 0.90,
            memory_grow_factor: 1.25,
            memory_psi_avg10: 20.0,
            memory_shrink_at: 0.95,
            pause_at: 0.95,
            thaw_below: 0.85,
            quota_unlimited_cpu: false,
            memory_stall_ms: 10_000,
        }
    }
}

/// A cgroup above a task with a hard limit (its pod's, `kubepods`'): the tasks under it share the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ancestor {
    /// The cgroup path, from the hierarchy root.
    pub path: String,
    /// CPU quota, cores.
    #[serde(default)]
    pub cpu_cores: Option<f64>,
    /// Memory limit, bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

impl Ancestor {
    /// `kubepods` itself (cgroupfs `/kubepods`, systemd `/kubepods.slice`): node allocatable.
    pub fn is_kubepods(&self) -> bool {
        matches!(self.path.as_str(), "/kubepods" | "/kubepods.slice")
    }
}

/// One task as the controller sees it at registration.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Container id (unique among running tasks).
    pub container_id: String,
    /// Mode (a task in mode off is not registered).
    pub mode: Mode,
    /// The cgroup interface.
    pub cgroup: CgroupKind,
    /// User priority, higher first (annotation `io.predictive.priority`, default 0).
    pub priority: i32,
    /// Container ids this task waits on (annotation `io.predictive.depends-on`).
    pub depends_on: Vec<String>,
    /// Pipeline id (annotation `io.predictive.pipeline`).
    pub pipeline: Option<String>,
    /// Most this task may borrow, cores (annotation `io.predictive.max-borrow`).
    pub max_borrow_cpu: Option<f64>,
    /// The user allows allocations below the spec's requests (annotation `io.predictive.allow-below-request`).
    pub allow_below_request: bool,
    /// The spec's limits and requests.
    pub limits: SpecLimits,
    /// Limited cgroups above the task, nearest first.
    pub parents: Vec<Ancestor>,
    /// The prediction (`None` or cold: the spec's limits stand).
    pub prediction: Option<Prediction>,
    /// Start time, ms.
    pub started_at_ms: u64,
}

#[derive(Debug, Clone)]
struct Task {
    spec: TaskSpec,
    base_cpu: Option<f64>,
    /// The CPU quota last directed (base - lent + borrowed).
    cpu: Option<f64>,
    memory: Option<u64>,
    memory_max: Option<u64>,
    /// Allocation to restore at thaw.
    frozen_memory: Option<Option<u64>>,
    usage: Option<Usage>,
    last_report_ms: u64,
    holding_memory: bool,
    /// Since when the task has waited on memory with no room to grow.
    stalled_since_ms: Option<u64>,
    critical: bool,
    /// Its owner is stopping it: never paused again.
    stopping: bool,
}

impl Task {
    /// A task just registered (or adopted) with `alloc` in force and `base_cpu` its own CPU before leases.
    fn new(spec: TaskSpec, base_cpu: Option<f64>, alloc: Allocation, now_ms: u64) -> Self {
        Self {
            base_cpu,
            cpu: alloc.cpu_cores,
            memory: alloc.memory_bytes,
            memory_max: alloc.memory_max_bytes,
            frozen_memory: None,
            usage: None,
            last_report_ms: now_ms,
            holding_memory: false,
            stalled_since_ms: None,
            critical: false,
            stopping: false,
            spec,
        }
    }

    fn rank(&self) -> (i32, bool) {
        (self.spec.priority, self.critical)
    }

    fn frozen(&self) -> bool {
        self.frozen_memory.is_some()
    }

    fn enforce(&self) -> bool {
        self.spec.mode == Mode::Enforce
    }

    fn mem_used(&self) -> u64 {
        self.usage
            .map(|u| {
                u.working_set_bytes
                    .unwrap_or(u.memory_bytes)
                    .max(u.memory_bytes)
            })
            .unwrap_or(0)
    }

    /// The lifetime bucket the task is in at `now_ms`, when its duration is predicted.
    fn bucket(&self, now_ms: u64) -> Option<usize> {
        let p = self
            .spec
            .prediction
            .as_ref()
            .filter(|p| !p.is_cold_start())?;
        let dur_ms = p.duration_s.point * 1000.0;
        if dur_ms.is_nan() || dur_ms <= 0.0 || p.profile.len() != BUCKETS {
            return None;
        }
        let elapsed = now_ms.saturating_sub(self.spec.started_at_ms) as f64;
        Some(((elapsed / dur_ms * BUCKETS as f64) as usize).min(BUCKETS - 1))
    }

    /// Predicted CPU (point) over the current and next `ahead` buckets.
    fn predicted_cpu(&self, now_ms: u64, ahead: usize) -> f64 {
        let (Some(b), Some(p)) = (self.bucket(now_ms), self.spec.prediction.as_ref()) else {
            return 0.0;
        };
        p.profile[b..(b + ahead + 1).min(BUCKETS)]
            .iter()
            .map(|pp| pp.cpu_cores.point)
            .fold(0.0, f64::max)
    }

    /// The predicted memory upper bound over the buckets from one before the current one (a task that was
    /// throttled or waited is behind the clock) to `ahead` after it, when the prediction is confident enough
    /// (medium or high) to size a running task by its profile.
    fn predicted_memory_window(&self, now_ms: u64, ahead: usize) -> Option<u64> {
        let p = self
            .spec
            .prediction
            .as_ref()
            .filter(|p| p.confidence >= Confidence::Medium)?;
        let b = self.bucket(now_ms)?;
        let hi = p.profile[b.saturating_sub(1)..=(b + ahead).min(BUCKETS - 1)]
            .iter()
            .map(|pp| pp.memory_bytes.upper)
            .fold(0.0, f64::max);
        Some((hi * memory_limit_ratio(p)).max(0.0) as u64)
    }

    fn predicted_memory_upper(&self, now_ms: u64) -> u64 {
        let (Some(b), Some(p)) = (self.bucket(now_ms), self.spec.prediction.as_ref()) else {
            return 0;
        };
        (p.profile[b].memory_bytes.upper * memory_limit_ratio(p)).max(0.0) as u64
    }
}

/// How far memory's one-sided `limit` (99.8%, what a task is allocated and what the evaluator scores) lies above
/// its central interval's `upper`: the profile's buckets carry only the interval, so a running task sized by its
/// profile is sized at the bucket's `upper` scaled by this ratio, never back down to the 95% bound. 1 below medium
/// confidence, where the task starts at `upper` (see [`initial_allocation`]).
fn memory_limit_ratio(p: &Prediction) -> f64 {
    let e = &p.memory_bytes;
    if p.confidence >= Confidence::Medium && e.upper > 0.0 && e.limit > e.upper {
        e.limit / e.upper
    } else {
        1.0
    }
}

/// Per resource, the room left under the tightest limited ancestor, with that ancestor's index.
type AncestorRoom = (Option<(usize, f64)>, Option<(usize, u64)>);

/// A task's slot in the controller: stable while the task is registered, reused after it leaves.
type Key = usize;

/// A lease with its holder and lender resolved to task keys (`None`: not registered, or the host's pool).
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    holder: Option<Key>,
    lender: Option<Key>,
}

/// Pipelines up to this many live tasks get their critical path recomputed as soon as a member comes or goes;
/// larger ones at the next tick.
const CRITICAL_PATH_AT_ONCE: usize = 512;

/// The live members of one pipeline and, once resolved, their dependencies among each other.
#[derive(Debug, Clone, Default)]
struct Group {
    members: Vec<Key>,
    /// Per member (in container id order), the members it depends on; `None` after the membership changed.
    ups: Option<Vec<Vec<usize>>>,
}

/// The `set_cpu` reasons collected during one step, by task key.
type Reasons = Vec<Option<String>>;

/// Why a task is under CPU pressure; put into words only for a directive that is emitted.
#[derive(Debug, Clone, Copy)]
enum Pressure {
    Throttled(f64),
    Busy { used: f64, quota: f64 },
    Stall(f64),
}

impl std::fmt::Display for Pressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Pressure::Throttled(share) => {
                write!(f, "throttled in {:.0}% of periods", share * 100.0)
            }
            Pressure::Busy { used, quota } => write!(f, "using {used:.2} of {quota:.2} cores"),
            Pressure::Stall(p) => write!(f, "CPU stall {p:.0}%"),
        }
    }
}

/// The controller's state: registered tasks and live leases.
///
/// Tasks live in slots addressed by an integer key; the container id is looked up once at the API boundary
/// (`observe`, `unregister`, ...) and every per-tick pass works on keys, with the position in container id
/// order as the tie-break wherever an order needs one.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: ControllerConfig,
    host: HostCapacity,
    /// Tasks by key; `None` = a free slot.
    slots: Vec<Option<Task>>,
    free: Vec<Key>,
    /// Container id -> key, in container id order.
    index: BTreeMap<String, Key>,
    /// Position of each live key in container id order.
    ord: Vec<u32>,
    /// `ord` is stale.
    ord_dirty: bool,
    /// Live tasks by pipeline, for the critical path.
    pipelines: HashMap<String, Group>,
    leases: BTreeMap<u64, Held>,
    next_lease: u64,
    /// Until then a restored lease whose holder has not registered again is kept (broker restart).
    restore_grace_until_ms: u64,
    /// Take the pool from a `kubepods` ancestor's limits when a task reports one.
    kube_pool: bool,
    /// The pool is `kubepods`' (node allocatable) rather than the host's.
    pool_from_kubepods: bool,
}

/// p90 (nearest rank) of `v`; 0 when empty.
fn p90(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((0.9 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

const EPS: f64 = 1e-6;

/// The tightest CPU and memory limits among a task's ancestors, with the cgroup that sets each.
type Tightest<'a> = (Option<(&'a str, f64)>, Option<(&'a str, u64)>);

fn tightest(parents: &[Ancestor]) -> Tightest<'_> {
    let mut cpu: Option<(&str, f64)> = None;
    let mut mem: Option<(&str, u64)> = None;
    for a in parents {
        if let Some(c) = a.cpu_cores.filter(|c| cpu.is_none_or(|(_, x)| *c < x)) {
            cpu = Some((a.path.as_str(), c));
        }
        if let Some(m) = a.memory_bytes.filter(|m| mem.is_none_or(|(_, x)| *m < x)) {
            mem = Some((a.path.as_str(), m));
        }
    }
    (cpu, mem)
}

/// The initial allocation of a task: the spec on a cold start; otherwise memory at the prediction's `limit`
/// (99.8%; below medium confidence, where that tail is not calibrated yet, at most 1.5x its `upper`) and CPU at the p90 of the
/// predicted profile over the first `initial_cpu_buckets` (a run predicted to end within `short_run_ms`: its
/// predicted CPU upper bound, if higher), never above a user limit,
/// never below a user request (unless allowed; not even on a host smaller than the request), within the host's
/// grantable capacity and every limited ancestor's limit. A spec with no CPU limit keeps no quota unless
/// `quota_unlimited_cpu` is on. Returns the allocation and the reasons per resource.
pub fn initial_allocation(
    spec: &TaskSpec,
    host: &HostCapacity,
    cfg: &ControllerConfig,
) -> (Allocation, String, String) {
    let grant_mem = host
        .memory_bytes
        .saturating_sub(cfg.host_reserve_memory_bytes);
    let grant_cpu = (host.cpu_cores - cfg.host_reserve_cpu).max(cfg.min_cpu_cores);
    let l = &spec.limits;
    let (anc_cpu, anc_mem) = tightest(&spec.parents);
    let memory_max = match (l.memory_limit_bytes, anc_mem) {
        (Some(lim), Some((_, a))) => Some(lim.min(a)),
        (Some(lim), None) => Some(lim),
        (None, Some((_, a))) => Some(a.min(grant_mem)),
        (None, None) => Some(grant_mem),
    };
    let cap_cpu = |c: f64, reason: &mut String| match anc_cpu {
        Some((path, a)) if c > a => {
            *reason = format!("{reason}, capped at the {a:.2}-core limit of {path}");
            a.max(cfg.min_cpu_cores)
        }
        _ => c,
    };
    let cap_mem = |m: u64, reason: &mut String| match anc_mem {
        Some((path, a)) if m > a => {
            *reason = format!("{reason}, capped at the {a}-byte limit of {path}");
            a.max(cfg.min_memory_bytes)
        }
        _ => m,
    };
    let Some(p) = spec.prediction.as_ref().filter(|p| !p.is_cold_start()) else {
        let mut cpu_reason = "cold start: the spec's CPU limit".to_owned();
        let mut mem_reason = "cold start: the spec's memory limit".to_owned();
        let cpu = l.cpu_limit_cores.map(|c| cap_cpu(c, &mut cpu_reason));
        let mem = l.memory_limit_bytes.map(|m| cap_mem(m, &mut mem_reason));
        return (
            Allocation {
                cpu_cores: cpu,
                memory_bytes: mem,
                memory_max_bytes: memory_max,
            },
            cpu_reason,
            mem_reason,
        );
    };
    let request = l
        .cpu_request_cores
        .filter(|_| !spec.allow_below_request)
        .unwrap_or(0.0);
    let cpu = if l.cpu_limit_cores.is_none() && !cfg.quota_unlimited_cpu {
        (
            None,
            "no CPU limit in the spec: no quota (controller.quota_unlimited_cpu is off)".to_owned(),
        )
    } else {
        let mut cpu_reason;
        let mut cpu = if p.profile.len() == BUCKETS {
            let k = cfg.initial_cpu_buckets.clamp(1, BUCKETS);
            let mut first: Vec<f64> = p.profile[..k].iter().map(|pp| pp.cpu_cores.point).collect();
            cpu_reason = format!("predicted p90 over the first {k} lifetime buckets");
            p90(&mut first)
        } else {
            cpu_reason = "predicted p95".to_owned();
            p.cpu_cores.point
        };
        let short =
            p.duration_s.upper > 0.0 && p.duration_s.upper * 1000.0 <= cfg.short_run_ms as f64;
        if short && p.cpu_cores.upper > cpu {
            cpu = p.cpu_cores.upper;
            cpu_reason = format!(
                "predicted CPU upper bound (a short run: at most {:.1} s predicted)",
                p.duration_s.upper
            );
        }
        if cpu < request {
            cpu = request;
            cpu_reason =
                format!("the spec's CPU request of {request:.2} cores (prediction below it)");
        }
        if let Some(lim) = l.cpu_limit_cores.filter(|lim| cpu > *lim) {
            cpu = lim;
            cpu_reason = "the spec's CPU limit (prediction above it)".to_owned();
        }
        // A small host cuts a prediction, never a request.
        let cpu = cpu.clamp(
            cfg.min_cpu_cores,
            grant_cpu.max(request).max(cfg.min_cpu_cores),
        );
        (Some(cap_cpu(cpu, &mut cpu_reason)), cpu_reason)
    };
    let (cpu, cpu_reason) = cpu;

    // The one-sided 99.8% limit needs a calibrated tail: on a young type (low confidence, a few runs) it rests on a
    // handful of residuals and a Student-t with one or two degrees of freedom, so it is capped (`Estimate::allocation`).
    let mem = p.memory_bytes.allocation(p.confidence);
    let mut mem_reason = if p.confidence >= Confidence::Medium {
        "predicted memory limit (its one-sided 99.8% bound)".to_owned()
    } else {
        format!(
            "predicted memory limit, at most {YOUNG_LIMIT_CAP}x its upper bound at level {} (few runs: the 99.8% tail \
             is not calibrated yet)",
            p.level
        )
    };
    let mut mem = mem.max(0.0) as u64;
    if let Some(req) = l
        .memory_request_bytes
        .filter(|r| mem < *r && !spec.allow_below_request)
    {
        mem = req;
        mem_reason = "the spec's memory request (prediction below it)".to_owned();
    }
    if let Some(lim) = l.memory_limit_bytes.filter(|lim| mem > *lim) {
        mem = lim;
        mem_reason = "the spec's memory limit (prediction above it)".to_owned();
    }
    let mem =
        cap_mem(mem.max(cfg.min_memory_bytes), &mut mem_reason).min(memory_max.unwrap_or(u64::MAX));
    (
        Allocation {
            cpu_cores: cpu,
            memory_bytes: Some(mem),
            memory_max_bytes: memory_max,
        },
        cpu_reason,
        mem_reason,
    )
}

impl Controller {
    /// A controller for a host with `host` capacity.
    pub fn new(cfg: ControllerConfig, host: HostCapacity) -> Self {
        Self {
            cfg,
            host,
            slots: Vec::new(),
            free: Vec::new(),
            index: BTreeMap::new(),
            ord: Vec::new(),
            ord_dirty: false,
            pipelines: HashMap::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            restore_grace_until_ms: 0,
            kube_pool: false,
            pool_from_kubepods: false,
        }
    }

    fn key(&self, id: &str) -> Option<Key> {
        self.index.get(id).copied()
    }

    fn task(&self, k: Key) -> &Task {
        self.slots[k]
            .as_ref()
            .expect("a key from the index or a lease names a live slot")
    }

    fn task_mut(&mut self, k: Key) -> &mut Task {
        self.slots[k]
            .as_mut()
            .expect("a key from the index or a lease names a live slot")
    }

    #[cfg(test)]
    fn by_id(&self, id: &str) -> &Task {
        self.task(self.key(id).expect("registered"))
    }

    #[cfg(test)]
    fn by_id_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.key(id).map(|k| self.task_mut(k))
    }

    /// Live tasks in container id order.
    fn live(&self) -> impl Iterator<Item = (Key, &Task)> + '_ {
        self.index.values().map(|&k| (k, self.task(k)))
    }

    /// Puts a task in a slot and resolves the leases that name it.
    fn insert(&mut self, task: Task) -> Key {
        let id = task.spec.container_id.clone();
        let k = match self.free.pop() {
            Some(k) => {
                self.slots[k] = Some(task);
                k
            }
            None => {
                self.slots.push(Some(task));
                self.slots.len() - 1
            }
        };
        for h in self.leases.values_mut() {
            if h.lease.holder == id {
                h.holder = Some(k);
            }
            if h.lease.lender.as_deref() == Some(id.as_str()) {
                h.lender = Some(k);
            }
        }
        if let Some(p) = &self.task(k).spec.pipeline {
            let g = self.pipelines.entry(p.clone()).or_default();
            g.members.push(k);
            g.ups = None;
        }
        self.index.insert(id, k);
        self.reindex();
        k
    }

    /// Frees a task's slot (its leases have ended).
    fn remove(&mut self, k: Key) {
        if let Some(t) = self.slots[k].take() {
            self.index.remove(&t.spec.container_id);
            self.free.push(k);
            if let Some(p) = &t.spec.pipeline
                && let Some(g) = self.pipelines.get_mut(p)
            {
                g.members.retain(|&m| m != k);
                g.ups = None;
                if g.members.is_empty() {
                    self.pipelines.remove(p);
                }
            }
        }
        for h in self.leases.values_mut() {
            if h.holder == Some(k) {
                h.holder = None;
            }
            if h.lender == Some(k) {
                h.lender = None;
            }
        }
        self.reindex();
    }

    /// The order changed: `ord` is rebuilt before the next tick reads it (not at every Register, which made
    /// registering n tasks O(n²)).
    fn reindex(&mut self) {
        self.ord_dirty = true;
    }

    fn ensure_ord(&mut self) {
        if !self.ord_dirty {
            return;
        }
        self.ord_dirty = false;
        self.ord.clear();
        self.ord.resize(self.slots.len(), u32::MAX);
        for (i, &k) in self.index.values().enumerate() {
            self.ord[k] = i as u32;
        }
    }

    /// Restores the leases a previous broker run persisted. They wait for their holders and lenders to register
    /// again (with [`Controller::adopt`]) until `stale_after_ms` after `now_ms`; a lease whose holder has not
    /// come back by then ends as usual.
    pub fn restore_leases(&mut self, leases: Vec<Lease>, now_ms: u64) {
        for l in leases {
            self.next_lease = self.next_lease.max(l.id + 1);
            let holder = self.key(&l.holder);
            let lender = l.lender.as_deref().and_then(|id| self.key(id));
            self.leases.insert(
                l.id,
                Held {
                    lease: l,
                    holder,
                    lender,
                },
            );
        }
        self.restore_grace_until_ms = now_ms + self.cfg.stale_after_ms;
    }

    /// Takes over a task that already runs with `current` (its shim registered again after a broker restart, or
    /// late): no directive changes its limits (only the priority's IO weight is sent again). Its own CPU before leases is `current` less what it borrows plus
    /// what it lends under restored leases.
    pub fn adopt(&mut self, spec: TaskSpec, current: Allocation, now_ms: u64) -> Vec<Directive> {
        let mut out = Vec::new();
        if self.index.contains_key(&spec.container_id) {
            out.extend(self.unregister(&spec.container_id, now_ms));
        }
        self.learn_pool(&spec.parents);
        let id = spec.container_id.as_str();
        let lent: f64 = self
            .leases
            .values()
            .filter(|h| h.lease.lender.as_deref() == Some(id))
            .map(|h| h.lease.amount)
            .sum();
        let borrowed: f64 = self
            .leases
            .values()
            .filter(|h| h.lease.holder == id)
            .map(|h| h.lease.amount)
            .sum();
        let base_cpu = current
            .cpu_cores
            .map(|c| (c - borrowed + lent).max(self.cfg.min_cpu_cores));
        let memory_max = current
            .memory_max_bytes
            .or(spec.limits.memory_limit_bytes)
            .or(Some(self.grantable_memory()));
        let alloc = Allocation {
            memory_max_bytes: memory_max,
            ..current
        };
        let k = self.insert(Task::new(spec, base_cpu, alloc, now_ms));
        // The priority's IO weight is no limit the shim reports in force (a shim that registers late started
        // without it): sent again, the same value as at any Register.
        let task = self.task(k);
        if let Some(weight) = io_weight(task.spec.priority) {
            out.push(Directive {
                container_id: task.spec.container_id.clone(),
                action: Action::SetIoWeight { weight },
                reason: format!("priority {}", task.spec.priority),
                applied: task.enforce(),
                old_value: None,
            });
        }
        let pipeline = task.spec.pipeline.clone();
        self.update_critical_path(now_ms, pipeline.as_deref());
        out
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Host capacity.
    /// On a Kubernetes node the pool is `kubepods`' own limits (node allocatable) once a task under it reports
    /// them (CPU and memory each, when set), with no host reserve (kubelet has subtracted kube- and
    /// system-reserved already). Off when the operator sized the host in the config.
    pub fn use_kubepods_pool(&mut self, on: bool) {
        self.kube_pool = on;
    }

    /// Where the pool comes from: `"kubepods"` or `"host"`.
    pub fn pool_source(&self) -> &'static str {
        if self.pool_from_kubepods {
            "kubepods"
        } else {
            "host"
        }
    }

    fn learn_pool(&mut self, parents: &[Ancestor]) {
        if !self.kube_pool {
            return;
        }
        for a in parents.iter().filter(|a| a.is_kubepods()) {
            if let Some(c) = a.cpu_cores {
                self.host.cpu_cores = c;
                self.cfg.host_reserve_cpu = 0.0;
                self.pool_from_kubepods = true;
            }
            if let Some(m) = a.memory_bytes {
                self.host.memory_bytes = m;
                self.cfg.host_reserve_memory_bytes = 0;
                self.pool_from_kubepods = true;
            }
        }
    }

    /// The CPU a task counts for under an ancestor: its quota, or its request when it has none.
    fn cpu_share(t: &Task) -> f64 {
        t.cpu.or(t.spec.limits.cpu_request_cores).unwrap_or(0.0)
    }

    /// The tightest room under the limited ancestors in `parents`: per ancestor its limit less what the live
    /// tasks under it (all but `except`) hold. With the index of the ancestor that sets it.
    fn ancestor_room(&self, parents: &[Ancestor], except: Option<Key>) -> AncestorRoom {
        let mut cpu: Option<(usize, f64)> = None;
        let mut mem: Option<(usize, u64)> = None;
        for (i, a) in parents.iter().enumerate() {
            if a.cpu_cores.is_none() && a.memory_bytes.is_none() {
                continue;
            }
            let (mut c, mut m) = (0.0, 0u64);
            for (k, t) in self.live() {
                if Some(k) != except && t.spec.parents.iter().any(|p| p.path == a.path) {
                    c += Self::cpu_share(t);
                    m = m.saturating_add(Self::pool_share(t));
                }
            }
            if let Some(l) = a.cpu_cores {
                let room = (l - c).max(0.0);
                if cpu.is_none_or(|(_, r)| room < r) {
                    cpu = Some((i, room));
                }
            }
            if let Some(l) = a.memory_bytes {
                let room = l.saturating_sub(m);
                if mem.is_none_or(|(_, r)| room < r) {
                    mem = Some((i, room));
                }
            }
        }
        (cpu, mem)
    }

    pub fn host(&self) -> HostCapacity {
        self.host
    }

    fn grantable_memory(&self) -> u64 {
        self.host
            .memory_bytes
            .saturating_sub(self.cfg.host_reserve_memory_bytes)
    }

    fn grantable_cpu(&self) -> f64 {
        (self.host.cpu_cores - self.cfg.host_reserve_cpu).max(0.0)
    }

    /// Registers a task and returns its initial directives (CPU and memory) and allocation. A task already
    /// registered under the id is replaced (its leases end).
    pub fn register(&mut self, spec: TaskSpec, now_ms: u64) -> (Allocation, Vec<Directive>) {
        let mut out = Vec::new();
        if self.index.contains_key(&spec.container_id) {
            out.extend(self.unregister(&spec.container_id, now_ms));
        }
        self.learn_pool(&spec.parents);
        let (mut alloc, mut cpu_reason, mut mem_reason) =
            initial_allocation(&spec, &self.host, &self.cfg);
        // Siblings under a limited ancestor (the containers of one pod) share its limit.
        let (cpu_room, mem_room) = self.ancestor_room(&spec.parents, None);
        if let (Some(c), Some((i, room))) = (alloc.cpu_cores, cpu_room)
            && c > room + EPS
        {
            alloc.cpu_cores = Some(room.max(self.cfg.min_cpu_cores));
            cpu_reason = format!(
                "{cpu_reason}, capped at the {room:.2} cores {} has left",
                spec.parents[i].path
            );
        }
        if let (Some(m), Some((i, room))) = (alloc.memory_bytes, mem_room)
            && m > room
        {
            alloc.memory_bytes = Some(room.max(self.cfg.min_memory_bytes));
            mem_reason = format!(
                "{mem_reason}, capped at the {room} bytes {} has left",
                spec.parents[i].path
            );
        }
        let id = spec.container_id.clone();
        let task = Task::new(spec, alloc.cpu_cores, alloc, now_ms);
        out.push(Directive {
            container_id: id.clone(),
            action: Action::SetCpu {
                cores: alloc.cpu_cores,
            },
            reason: cpu_reason,
            applied: task.enforce(),
            old_value: task.spec.limits.cpu_limit_cores,
        });
        out.push(memory_directive(
            &task,
            mem_reason,
            task.spec.limits.memory_limit_bytes,
        ));
        if let Some(weight) = io_weight(task.spec.priority) {
            out.push(Directive {
                container_id: id,
                action: Action::SetIoWeight { weight },
                reason: format!("priority {}", task.spec.priority),
                applied: task.enforce(),
                old_value: None,
            });
        }
        let pipeline = task.spec.pipeline.clone();
        self.insert(task);
        self.update_critical_path(now_ms, pipeline.as_deref());
        (alloc, out)
    }

    /// Live tasks in pipeline `name` (for the broker's cap on pipeline size).
    pub fn pipeline_size(&self, name: &str) -> usize {
        self.pipelines.get(name).map_or(0, |g| g.members.len())
    }

    /// Live tasks.
    pub fn task_count(&self) -> usize {
        self.index.len()
    }

    /// Whether `container_id` is registered.
    pub fn is_registered(&self, container_id: &str) -> bool {
        self.index.contains_key(container_id)
    }

    /// Records the latest usage of a task; `false` when it is not registered.
    pub fn observe(&mut self, container_id: &str, usage: Usage) -> bool {
        match self.key(container_id) {
            Some(k) => {
                let t = self.task_mut(k);
                t.usage = Some(usage);
                t.last_report_ms = t.last_report_ms.max(usage.at_ms);
                true
            }
            None => false,
        }
    }

    /// The user resized a running task (CRI `UpdateContainerResources`, `docker update`): `limits` become its
    /// limits and requests at once — the ceiling of its allocation, growth and borrowing, and the floor of its
    /// allocation and of what it may lend — and, when given, `parents` its limited ancestors. The allocation is
    /// derived again (a cold start follows the new limits; a predicted one keeps its allocation within them),
    /// leases it holds above the new ceiling and leases it lends below the new floor end, newest first. Returns
    /// the directives, its own CPU and memory ones always (the shim wrote the user's values over the cgroup);
    /// `None` when the task is not registered.
    pub fn update(
        &mut self,
        container_id: &str,
        limits: SpecLimits,
        parents: Option<Vec<Ancestor>>,
        now_ms: u64,
    ) -> Option<Vec<Directive>> {
        let k = self.key(container_id)?;
        if let Some(p) = &parents {
            self.learn_pool(p);
        }
        let before: Vec<Option<f64>> = self
            .slots
            .iter()
            .map(|s| s.as_ref().and_then(|t| t.cpu))
            .collect();
        let (old_limits, old_cpu, old_memory) = {
            let t = self.task_mut(k);
            let old = t.spec.limits;
            t.spec.limits = limits;
            if let Some(p) = parents {
                t.spec.parents = p;
            }
            (old, t.cpu, t.memory)
        };
        let why = format!(
            "resized by the user: {}",
            describe_resize(&old_limits, &limits)
        );
        let grant_mem = self.grantable_memory();
        let grant_cpu = self.grantable_cpu();
        let (cfg, min_cpu) = (&self.cfg, self.cfg.min_cpu_cores);
        let t = self.task(k);
        let cold = t.spec.prediction.as_ref().is_none_or(|p| p.is_cold_start());
        let (anc_cpu, anc_mem) = tightest(&t.spec.parents);
        let anc_cpu = anc_cpu.map_or(f64::INFINITY, |(_, c)| c);
        let cpu_request = limits
            .cpu_request_cores
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0.0);
        let cpu_cap = limits.cpu_limit_cores.unwrap_or(f64::INFINITY).min(anc_cpu);
        let base: Option<f64> = if limits.cpu_limit_cores.is_none() && !cfg.quota_unlimited_cpu {
            None
        } else if cold {
            limits.cpu_limit_cores.map(|c| c.min(anc_cpu).max(min_cpu))
        } else {
            let start = t.base_cpu.unwrap_or_else(|| {
                initial_allocation(&t.spec, &self.host, cfg)
                    .0
                    .cpu_cores
                    .unwrap_or(cpu_request)
            });
            Some(
                start
                    .max(cpu_request)
                    .min(cpu_cap)
                    .min(grant_cpu.max(cpu_request))
                    .max(min_cpu),
            )
        };
        let ceiling = limits
            .memory_limit_bytes
            .unwrap_or(grant_mem)
            .min(anc_mem.map_or(u64::MAX, |(_, m)| m));
        let memory_max = Some(ceiling);
        let mem_request = limits
            .memory_request_bytes
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0);
        let memory = if cold {
            limits.memory_limit_bytes.map(|m| m.min(ceiling))
        } else {
            let cur = old_memory.unwrap_or(ceiling);
            Some(
                cur.max(mem_request)
                    .max(self.cfg.min_memory_bytes)
                    .min(ceiling),
            )
        };

        // Leases re-checked against the new ceiling (held) and floor (lent).
        let mut reasons: Reasons = vec![None; self.slots.len()];
        let mut out = Vec::new();
        let mut held: Vec<(u64, f64)> = Vec::new();
        let mut lent: Vec<(u64, f64)> = Vec::new();
        for h in self.leases.values() {
            if h.holder == Some(k) {
                held.push((h.lease.id, h.lease.amount));
            }
            if h.lender == Some(k) {
                lent.push((h.lease.id, h.lease.amount));
            }
        }
        let mut held_sum: f64 = held.iter().map(|(_, a)| a).sum();
        let mut lent_sum: f64 = lent.iter().map(|(_, a)| a).sum();
        let floor = cpu_request.max(min_cpu);
        for (id, amount) in held.iter().rev() {
            if base.is_some_and(|b| b + held_sum <= cpu_cap + EPS) {
                break;
            }
            self.end_lease(*id, &why, &mut reasons, &mut out);
            held_sum -= amount;
        }
        for (id, amount) in lent.iter().rev() {
            if base.is_some_and(|b| b - lent_sum + EPS >= floor) {
                break;
            }
            self.end_lease(*id, &why, &mut reasons, &mut out);
            lent_sum -= amount;
        }
        let t = self.task_mut(k);
        t.base_cpu = base;
        t.cpu = base.map(|b| (b + held_sum.max(0.0) - lent_sum.max(0.0)).max(min_cpu));
        t.memory = memory;
        t.memory_max = memory_max;
        if let Some(restore) = &mut t.frozen_memory {
            *restore = restore.map(|m| m.min(ceiling));
        }
        t.stalled_since_ms = None;
        t.holding_memory = false;
        reasons[k] = None;
        out.extend(
            self.cpu_directives(reasons, Some(&before))
                .into_iter()
                .filter(|d| d.container_id != container_id),
        );
        let t = self.task(k);
        out.push(Directive {
            container_id: container_id.to_owned(),
            action: Action::SetCpu { cores: t.cpu },
            reason: why.clone(),
            applied: t.enforce(),
            old_value: old_cpu,
        });
        out.push(memory_directive(t, why, old_memory));
        let pipeline = t.spec.pipeline.clone();
        self.update_critical_path(now_ms, pipeline.as_deref());
        Some(out)
    }

    /// The task's owner is stopping it or acting on it (a signal, an exec, a delete: Report `stopping`, with
    /// `why`): it is never paused again. A pause in force ends, as its shim has thawed it already: the allocation
    /// held at the pause is restored when the pool has room (else the task keeps what it has). Returns the
    /// directives to record and deliver (the restore, and a Thaw for the record); none when the task was marked
    /// already or is not registered.
    pub fn stopping(&mut self, container_id: &str, why: &str) -> Vec<Directive> {
        let Some(k) = self.key(container_id) else {
            return Vec::new();
        };
        if self.task(k).stopping {
            return Vec::new();
        }
        let room = self.memory_room();
        let t = self.task_mut(k);
        t.stopping = true;
        let Some(restore) = t.frozen_memory.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let now = t.memory;
        let extra = restore.unwrap_or(0).saturating_sub(now.unwrap_or(0));
        if extra <= room {
            t.memory = restore.or(t.memory);
            let t = self.task(k);
            if t.memory != now {
                out.push(memory_directive(
                    t,
                    format!("restored: stopping ({why})"),
                    now,
                ));
            }
        }
        let t = self.task(k);
        out.push(Directive {
            container_id: t.spec.container_id.clone(),
            action: Action::Thaw,
            reason: format!("stopping ({why}): its shim thawed it, never paused again"),
            applied: t.enforce(),
            old_value: None,
        });
        out
    }

    /// Removes a task; its leases end and lenders get their CPU back.
    pub fn unregister(&mut self, container_id: &str, now_ms: u64) -> Vec<Directive> {
        let mut reasons: Reasons = vec![None; self.slots.len()];
        let ids: Vec<u64> = self
            .leases
            .values()
            .filter(|h| {
                h.lease.holder == container_id || h.lease.lender.as_deref() == Some(container_id)
            })
            .map(|h| h.lease.id)
            .collect();
        let mut out = Vec::new();
        let why = format!("{container_id} finished");
        for id in ids {
            self.end_lease(id, &why, &mut reasons, &mut out);
        }
        let mut pipeline = None;
        if let Some(k) = self.key(container_id) {
            pipeline = self.task(k).spec.pipeline.clone();
            self.remove(k);
        }
        out.extend(self.cpu_directives(reasons, None));
        self.update_critical_path(now_ms, pipeline.as_deref());
        out
    }

    /// Current allocation of a task.
    pub fn allocation(&self, container_id: &str) -> Option<Allocation> {
        self.key(container_id).map(|k| {
            let t = self.task(k);
            Allocation {
                cpu_cores: t.cpu,
                memory_bytes: t.memory,
                memory_max_bytes: t.memory_max,
            }
        })
    }

    /// Live leases.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases.values().map(|h| h.lease.clone()).collect()
    }

    /// Registered tasks, in container id order.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.live()
            .map(|(_, t)| TaskView {
                container_id: t.spec.container_id.clone(),
                mode: t.spec.mode,
                priority: t.spec.priority,
                critical: t.critical,
                allocation: Allocation {
                    cpu_cores: t.cpu,
                    memory_bytes: t.memory,
                    memory_max_bytes: t.memory_max,
                },
                base_cpu_cores: t.base_cpu,
                frozen: t.frozen(),
                stopping: t.stopping,
                usage: t.usage,
                limits: t.spec.limits,
                max_borrow_cpu: t.spec.max_borrow_cpu.or(self.cfg.max_borrow_cpu),
            })
            .collect()
    }

    /// Marks the tasks on the critical path of every pipeline, or only of pipeline `only` (after a task of it
    /// came or went): the dependency chain with the longest predicted remaining duration (1 s per task when
    /// unknown).
    fn update_critical_path(&mut self, now_ms: u64, only: Option<&str>) {
        let mut path = Vec::new();
        match only {
            None => {
                for t in self.slots.iter_mut().flatten() {
                    t.critical = false;
                }
                for g in self.pipelines.values_mut() {
                    critical_path(g, &self.slots, &self.index, now_ms, &mut path);
                }
            }
            Some(p) => {
                let Some(g) = self.pipelines.get_mut(p) else {
                    return;
                };
                // A large pipeline's path is left to the next tick (which recomputes every pipeline): recomputing
                // it at each Register of a 20,000-task pipeline made registration quadratic.
                if g.members.len() > CRITICAL_PATH_AT_ONCE {
                    return;
                }
                for &k in &g.members {
                    if let Some(t) = self.slots[k].as_mut() {
                        t.critical = false;
                    }
                }
                critical_path(g, &self.slots, &self.index, now_ms, &mut path);
            }
        }
        for k in path {
            if let Some(t) = self.slots[k].as_mut() {
                t.critical = true;
            }
        }
    }

    /// What a task needs to keep at `now_ms`: usage with headroom, or what its profile predicts next.
    fn cpu_need(&self, t: &Task, now_ms: u64) -> f64 {
        let used = t.usage.map(|u| u.cpu_cores).unwrap_or(0.0) * self.cfg.headroom;
        used.max(t.predicted_cpu(now_ms, self.cfg.lookahead_buckets))
            .max(self.cfg.min_cpu_cores)
    }

    /// The least CPU a task keeps: its request (unless it allows less), and the smallest allocation.
    fn cpu_floor(t: &Task) -> f64 {
        t.spec
            .limits
            .cpu_request_cores
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0.0)
    }

    fn cpu_pressure(&self, t: &Task) -> Option<Pressure> {
        let u = t.usage?;
        let quota = t.cpu?;
        if u.cpu_throttled_fraction >= self.cfg.throttled_fraction {
            return Some(Pressure::Throttled(u.cpu_throttled_fraction));
        }
        if u.cpu_cores >= quota * self.cfg.busy_fraction {
            return Some(Pressure::Busy {
                used: u.cpu_cores,
                quota,
            });
        }
        match u.cpu_psi_avg10 {
            Some(p) if p >= self.cfg.cpu_psi_avg10 => Some(Pressure::Stall(p)),
            _ => None,
        }
    }

    fn end_lease(&mut self, id: u64, why: &str, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let Some(h) = self.leases.remove(&id) else {
            return;
        };
        let min_cpu = self.cfg.min_cpu_cores;
        if let Some(k) = h.holder
            && let Some(t) = self.slots[k].as_mut()
        {
            t.cpu = t.cpu.map(|c| (c - h.lease.amount).max(min_cpu));
            reasons[k] = Some(format!("lease {id} ended: {why}"));
            out.push(Directive {
                container_id: h.lease.holder.clone(),
                action: Action::LeaseRevoked {
                    lease: h.lease.clone(),
                },
                reason: why.to_owned(),
                applied: t.enforce(),
                old_value: None,
            });
        }
        if let Some(k) = h.lender
            && let Some(l) = self.slots[k].as_mut()
        {
            l.cpu = l.cpu.map(|c| c + h.lease.amount);
            reasons[k] = Some(format!("lease {id} returned: {why}"));
        }
    }

    /// Emits `set_cpu`, in container id order, for every task with a reason; with `before`, only where the
    /// quota differs from it (and with it as the old value).
    fn cpu_directives(
        &self,
        mut reasons: Reasons,
        before: Option<&[Option<f64>]>,
    ) -> Vec<Directive> {
        let mut out = Vec::new();
        for (k, t) in self.live() {
            let Some(reason) = reasons.get_mut(k).and_then(Option::take) else {
                continue;
            };
            let old_value = match before.and_then(|b| b.get(k)) {
                Some(old) => {
                    if (t.cpu.unwrap_or(0.0) - old.unwrap_or(0.0)).abs() <= EPS {
                        continue;
                    }
                    *old
                }
                None => None,
            };
            out.push(Directive {
                container_id: t.spec.container_id.clone(),
                action: Action::SetCpu { cores: t.cpu },
                reason,
                applied: t.enforce(),
                old_value,
            });
        }
        out
    }

    /// One control step at `now_ms` over the usage observed since the last one.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Directive> {
        self.ensure_ord();
        self.update_critical_path(now_ms, None);
        let before: Vec<Option<f64>> = self
            .slots
            .iter()
            .map(|s| s.as_ref().and_then(|t| t.cpu))
            .collect();
        let mut reasons: Reasons = vec![None; self.slots.len()];
        let mut out = Vec::new();
        self.expire_and_renew(now_ms, &mut reasons, &mut out);
        self.fit_ancestors(&mut reasons, &mut out);
        // A lender that had to take CPU back this tick does not lend again in the same tick.
        let took_back = self.revoke(now_ms, &mut reasons, &mut out);
        self.release(&mut reasons, &mut out);
        self.borrow_cpu(now_ms, &took_back, &mut reasons, &mut out);
        out.extend(self.cpu_directives(reasons, Some(&before)));
        self.memory(now_ms, &mut out);
        out
    }

    /// Ends leases held under a limited ancestor whose tasks hold more CPU than its limit (its limit was lowered,
    /// a sibling registered, a resize), newest first, until they fit again.
    fn fit_ancestors(&mut self, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let mut limited: Vec<(String, f64)> = Vec::new();
        for (_, t) in self.live() {
            for a in &t.spec.parents {
                if let Some(c) = a.cpu_cores
                    && !limited.iter().any(|(p, _)| *p == a.path)
                {
                    limited.push((a.path.clone(), c));
                }
            }
        }
        for (path, limit) in limited {
            let under = |t: &Task| t.spec.parents.iter().any(|a| a.path == path);
            let mut sum: f64 = self
                .live()
                .filter(|(_, t)| under(t))
                .map(|(_, t)| Self::cpu_share(t))
                .sum();
            if sum <= limit + EPS {
                continue;
            }
            let ids: Vec<(u64, f64)> = self
                .leases
                .values()
                .rev()
                .filter(|h| {
                    h.holder
                        .and_then(|k| self.slots[k].as_ref())
                        .is_some_and(&under)
                        && !h
                            .lender
                            .and_then(|k| self.slots[k].as_ref())
                            .is_some_and(&under)
                })
                .map(|h| (h.lease.id, h.lease.amount))
                .collect();
            let why = format!(
                "{path}'s limit of {limit:.2} cores is exceeded ({sum:.2} allocated under it)"
            );
            for (id, amount) in ids {
                if sum <= limit + EPS {
                    break;
                }
                self.end_lease(id, &why, reasons, out);
                sum -= amount;
            }
        }
    }

    fn expire_and_renew(&mut self, now_ms: u64, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let stale = self.cfg.stale_after_ms;
        let ttl = self.cfg.lease_ttl_ms;
        let mut ended = Vec::new();
        for h in self.leases.values_mut() {
            let holder = h.holder.and_then(|k| self.slots[k].as_ref());
            if now_ms < self.restore_grace_until_ms && holder.is_none() {
                continue;
            }
            let fresh = holder.is_some_and(|t| now_ms.saturating_sub(t.last_report_ms) < stale);
            let l = &mut h.lease;
            if fresh {
                l.expires_at_ms = l.expires_at_ms.max(now_ms + ttl);
            }
            if !fresh || now_ms >= l.expires_at_ms {
                ended.push(l.id);
            }
        }
        for id in ended {
            self.end_lease(id, "expired: its holder stopped reporting", reasons, out);
        }
    }

    /// Ends the leases of lenders that need their CPU back; returns, by key, who took some back.
    fn revoke(
        &mut self,
        now_ms: u64,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) -> Vec<bool> {
        let mut took_back = vec![false; self.slots.len()];
        let mut by_lender: HashMap<Key, Vec<u64>> = HashMap::new();
        for h in self.leases.values() {
            if let Some(k) = h.lender {
                by_lender.entry(k).or_default().push(h.lease.id);
            }
        }
        let mut lenders: Vec<(Key, Vec<u64>)> = by_lender.into_iter().collect();
        lenders.sort_by_key(|(k, _)| self.ord[*k]);
        for (k, mut ids) in lenders {
            let t = self.task(k);
            let (Some(base), Some(kept)) = (t.base_cpu, t.cpu) else {
                continue;
            };
            let predicted = t.predicted_cpu(now_ms, self.cfg.lookahead_buckets);
            let busy = self.cpu_pressure(t).is_some();
            if !busy && predicted <= kept + EPS {
                continue;
            }
            // Busy: its real need is hidden by the reduced quota, so everything comes back.
            let need = if busy {
                base
            } else {
                self.cpu_need(t, now_ms).max(Self::cpu_floor(t)).min(base)
            };
            let mut why: Option<String> = None;
            ids.reverse();
            for id in ids {
                let t = self.task(k);
                if t.cpu.unwrap_or(base) + EPS >= need {
                    break;
                }
                let why = why.get_or_insert_with(|| {
                    let lender = &t.spec.container_id;
                    if busy {
                        let used = t.usage.map(|u| u.cpu_cores).unwrap_or(0.0);
                        format!(
                            "lender {lender} needs it back (using {used:.2} of the {kept:.2} cores it kept)"
                        )
                    } else {
                        format!("lender {lender}'s profile predicts {predicted:.2} cores next")
                    }
                });
                self.end_lease(id, why, reasons, out);
                took_back[k] = true;
            }
        }
        took_back
    }

    fn release(&mut self, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let ids: Vec<u64> = self.leases.keys().rev().copied().collect();
        for id in ids {
            let Some(h) = self.leases.get(&id) else {
                continue;
            };
            let Some(t) = h.holder.and_then(|k| self.slots[k].as_ref()) else {
                continue;
            };
            let (Some(u), Some(cpu)) = (t.usage, t.cpu) else {
                continue;
            };
            if self.cpu_pressure(t).is_none()
                && u.cpu_cores * self.cfg.headroom <= cpu - h.lease.amount
            {
                let why = format!(
                    "{} no longer needs it (using {:.2} cores)",
                    h.lease.holder, u.cpu_cores
                );
                self.end_lease(id, &why, reasons, out);
            }
        }
    }

    /// Grants leases to tasks under CPU pressure, highest priority first, from the host's unallocated CPU and
    /// then from idle lenders. The lenders are found once per tick (lowest priority, then most spare, first)
    /// and drawn down in that order.
    fn borrow_cpu(
        &mut self,
        now_ms: u64,
        took_back: &[bool],
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) {
        let stale = self.cfg.stale_after_ms;
        let fresh = |t: &Task| now_ms.saturating_sub(t.last_report_ms) < stale;
        let mut borrowers: Vec<(Key, Pressure)> = self
            .live()
            .filter(|(_, t)| !t.frozen() && t.base_cpu.is_some() && fresh(t))
            .filter_map(|(k, t)| self.cpu_pressure(t).map(|why| (k, why)))
            .collect();
        if borrowers.is_empty() {
            return;
        }
        borrowers.sort_by(|a, b| {
            self.task(b.0)
                .rank()
                .cmp(&self.task(a.0).rank())
                .then(self.ord[a.0].cmp(&self.ord[b.0]))
        });
        let n = self.slots.len();
        let mut lending = vec![false; n];
        // Who holds a lease (a borrower does not lend).
        let mut holding = vec![false; n];
        for h in self.leases.values() {
            if let Some(k) = h.lender {
                lending[k] = true;
            }
            if let Some(k) = h.holder.filter(|_| h.lease.amount > EPS) {
                holding[k] = true;
            }
        }
        let mut lenders: Vec<(Key, f64)> = self
            .live()
            .filter(|(k, t)| !t.frozen() && !took_back[*k] && !holding[*k] && fresh(t))
            .filter(|(_, t)| t.usage.is_some() && self.cpu_pressure(t).is_none())
            .filter_map(|(k, t)| {
                // A lender keeps what it needs and never goes below its request.
                let spare = t.cpu? - self.cpu_need(t, now_ms).max(Self::cpu_floor(t));
                (spare >= self.cfg.min_lease_cpu).then_some((k, spare))
            })
            .collect();
        lenders.sort_by(|a, b| {
            self.task(a.0)
                .rank()
                .cmp(&self.task(b.0).rank())
                .then(b.1.total_cmp(&a.1))
        });
        let grantable = self.grantable_cpu();
        let mut allocated: f64 = self.live().filter_map(|(_, t)| t.cpu).sum();
        let mut first_lender = 0;
        for (k, why) in borrowers {
            if lending[k] {
                continue; // a lender under pressure gets its own back first (revoke)
            }
            let t = self.task(k);
            let (Some(base), Some(cpu)) = (t.base_cpu, t.cpu) else {
                continue;
            };
            let max_borrow = t
                .spec
                .max_borrow_cpu
                .or(self.cfg.max_borrow_cpu)
                .unwrap_or(f64::INFINITY);
            // Never above the user's limit, and never past the room its limited ancestors have left.
            let (anc_room, _) = self.ancestor_room(&t.spec.parents, None);
            let cap = t
                .spec
                .limits
                .cpu_limit_cores
                .unwrap_or(f64::INFINITY)
                .min(base + max_borrow)
                .min(grantable)
                .min(anc_room.map_or(f64::INFINITY, |(_, r)| cpu + r));
            let mut want = (cpu * self.cfg.borrow_step)
                .max(self.cfg.min_lease_cpu)
                .min(cap - cpu);
            if want < self.cfg.min_lease_cpu - EPS {
                continue;
            }
            let mode = t.spec.mode;
            // The host's unallocated CPU first, then lenders in their order.
            let mut sources: Vec<(Option<usize>, f64)> = Vec::new();
            let pool = grantable - allocated;
            if pool >= self.cfg.min_lease_cpu {
                sources.push((None, pool));
            }
            // Lenders are drawn down from the front: skip the ones already exhausted.
            while lenders
                .get(first_lender)
                .is_some_and(|(_, spare)| *spare < self.cfg.min_lease_cpu)
            {
                first_lender += 1;
            }
            let mut taken = 0.0;
            for (i, (l, spare)) in lenders.iter().enumerate().skip(first_lender) {
                if taken >= want - EPS {
                    break;
                }
                if *l != k && *spare >= self.cfg.min_lease_cpu && self.task(*l).spec.mode == mode {
                    sources.push((Some(i), *spare));
                    taken += spare;
                }
            }
            for (lender, spare) in sources {
                if want < self.cfg.min_lease_cpu - EPS {
                    break;
                }
                let amount = spare.min(want);
                want -= amount;
                let lender_key = lender.map(|i| {
                    lenders[i].1 -= amount;
                    lenders[i].0
                });
                let lease = Lease {
                    id: self.next_lease,
                    resource: ResourceKind::Cpu,
                    holder: self.task(k).spec.container_id.clone(),
                    lender: lender_key.map(|l| self.task(l).spec.container_id.clone()),
                    amount,
                    granted_at_ms: now_ms,
                    expires_at_ms: now_ms + self.cfg.lease_ttl_ms,
                };
                self.next_lease += 1;
                match lender_key {
                    Some(l) => {
                        let lt = self.task_mut(l);
                        lt.cpu = lt.cpu.map(|c| c - amount);
                        reasons[l] = Some(format!(
                            "lent {amount:.2} cores to {} (lease {})",
                            lease.holder, lease.id
                        ));
                    }
                    None => allocated += amount,
                }
                let from = lease.lender.as_deref().unwrap_or("the host's free CPU");
                reasons[k] = Some(format!(
                    "{why}: borrowed {amount:.2} cores from {from} (lease {})",
                    lease.id
                ));
                let h = self.task_mut(k);
                h.cpu = h.cpu.map(|c| c + amount);
                out.push(Directive {
                    container_id: lease.holder.clone(),
                    action: Action::LeaseGranted {
                        lease: lease.clone(),
                    },
                    reason: why.to_string(),
                    applied: h.enforce(),
                    old_value: None,
                });
                self.leases.insert(
                    lease.id,
                    Held {
                        lease,
                        holder: Some(k),
                        lender: lender_key,
                    },
                );
            }
        }
    }

    /// What a task counts for in the memory pool: its allocation, or its usage when unlimited.
    fn pool_share(t: &Task) -> u64 {
        t.memory.unwrap_or_else(|| t.mem_used())
    }

    fn memory(&mut self, now_ms: u64, out: &mut Vec<Directive>) {
        let grantable = self.grantable_memory();
        let mut froze_this_tick = false;
        let mut order: Vec<Key> = self.index.values().copied().collect();
        order.sort_by(|&a, &b| {
            self.task(b)
                .rank()
                .cmp(&self.task(a).rank())
                .then(self.ord[a].cmp(&self.ord[b]))
        });
        // Pause candidates: lowest rank first, then the last in container id order.
        let mut victims = order.clone();
        victims.reverse();
        let mut allocated: u64 = self.live().map(|(_, t)| Self::pool_share(t)).sum();
        for &k in &order {
            let t = self.task(k);
            if t.frozen() {
                continue;
            }
            let (Some(alloc), Some(u)) = (t.memory, t.usage) else {
                continue;
            };
            let used = t.mem_used();
            let stalled = u
                .memory_psi_avg10
                .is_some_and(|p| p >= self.cfg.memory_psi_avg10)
                && used as f64 >= alloc as f64 * 0.75;
            let near =
                used as f64 >= alloc as f64 * self.cfg.memory_grow_at || u.under_oom || stalled;
            if !near {
                let need = self.right_size(t, now_ms);
                if t.holding_memory || t.stalled_since_ms.is_some() {
                    let t = self.task_mut(k);
                    t.holding_memory = false;
                    t.stalled_since_ms = None;
                }
                if let Some(need) = need
                    && (need as f64) < alloc as f64 * self.cfg.memory_shrink_at
                {
                    let reason = format!(
                        "using {used} of {alloc} bytes, {need} needed by its predicted profile: right-sized"
                    );
                    self.task_mut(k).memory = Some(need);
                    allocated -= alloc - need;
                    out.push(memory_directive(self.task(k), reason, Some(alloc)));
                }
                continue;
            }
            let cap = t.memory_max.unwrap_or(grantable);
            if alloc >= cap {
                self.hold(
                    k,
                    "at its memory limit: the kernel's normal OOM policy applies",
                    out,
                );
                continue;
            }
            // A task sized by its profile grows to what the profile and its usage say (it would be shrunk back
            // from more); any other by the growth factor.
            let by_usage = (used as f64 * self.cfg.headroom) as u64;
            let target = match t.predicted_memory_window(now_ms, self.cfg.lookahead_buckets) {
                Some(window) if self.cfg.memory_shrink_at > 0.0 && by_usage.max(window) > alloc => {
                    by_usage.max(window)
                }
                _ => ((alloc as f64 * self.cfg.memory_grow_factor) as u64)
                    .max(by_usage)
                    .max(t.predicted_memory_upper(now_ms)),
            }
            .min(cap);
            // The room in the pool, and under every limited ancestor (its own allocation counted there).
            let anc_room = self
                .ancestor_room(&t.spec.parents, None)
                .1
                .map_or(u64::MAX, |(_, r)| r);
            let mut room = grantable.saturating_sub(allocated).min(anc_room);
            if room < target - alloc {
                // No room: pause the lowest-priority running task ranked below this one.
                let (rank, mode) = (t.rank(), t.spec.mode);
                let victim = victims
                    .iter()
                    .copied()
                    .take_while(|&v| self.task(v).rank() < rank)
                    .find(|&v| {
                        let t = self.task(v);
                        !t.frozen() && !t.stopping && t.spec.mode == mode
                    });
                if let Some(v) = victim {
                    let why = format!(
                        "no memory for {} (higher priority) to grow",
                        t.spec.container_id
                    );
                    let share = Self::pool_share(self.task(v));
                    self.freeze(v, &why, out);
                    allocated = allocated - share + Self::pool_share(self.task(v));
                    froze_this_tick = true;
                    room = grantable.saturating_sub(allocated).min(anc_room);
                }
            }
            let grow = (target - alloc).min(room);
            if grow == 0 || room == 0 {
                // Waiting (v1 OOM wait, v2 reclaim stall) is bounded: past memory_stall_ms the allocation is
                // lifted and the kernel's policy applies, as it would without the broker.
                if u.under_oom || stalled {
                    let since = *self.task_mut(k).stalled_since_ms.get_or_insert(now_ms);
                    let waited = now_ms.saturating_sub(since);
                    if waited >= self.cfg.memory_stall_ms {
                        let old_share = Self::pool_share(self.task(k));
                        self.lift(k, waited, out);
                        allocated = allocated - old_share + Self::pool_share(self.task(k));
                        continue;
                    }
                } else {
                    self.task_mut(k).stalled_since_ms = None;
                }
                self.hold(
                    k,
                    "no room to grow: waits at its allocation (reclaim or v1 OOM wait), never OOM-killed below its limit",
                    out,
                );
                continue;
            }
            let reason = format!(
                "using {used} of {alloc} bytes{}: grown while the host has room",
                if u.under_oom { " (waiting on OOM)" } else { "" }
            );
            let t = self.task_mut(k);
            t.memory = Some(alloc + grow);
            t.holding_memory = false;
            t.stalled_since_ms = None;
            allocated += grow;
            out.push(memory_directive(self.task(k), reason, Some(alloc)));
        }
        // Host memory pressure: pause the lowest-priority running task; thaw once it has passed.
        let total: u64 = self.live().map(|(_, t)| t.mem_used()).sum();
        let running = self.live().filter(|(_, t)| !t.frozen()).count();
        if !froze_this_tick && total as f64 >= grantable as f64 * self.cfg.pause_at && running > 1 {
            let top = self
                .live()
                .filter(|(_, t)| !t.frozen())
                .map(|(_, t)| t.rank())
                .max();
            let victim = victims.iter().copied().find(|&v| {
                let t = self.task(v);
                !t.frozen() && !t.stopping && t.enforce() && Some(t.rank()) < top
            });
            if let Some(v) = victim {
                let why = format!("host memory pressure: {total} of {grantable} bytes in use");
                self.freeze(v, &why, out);
                froze_this_tick = true;
            }
        }
        if !froze_this_tick && (total as f64) < grantable as f64 * self.cfg.thaw_below {
            // The highest rank first, then the first in container id order.
            let thaw = order
                .iter()
                .copied()
                .find(|&k| self.task(k).frozen())
                .map(|k| {
                    let t = self.task(k);
                    (k, t.frozen_memory.flatten(), t.memory)
                });
            if let Some((k, restore, now)) = thaw {
                let extra = restore.unwrap_or(0).saturating_sub(now.unwrap_or(0));
                if self.memory_room() >= extra {
                    let why =
                        format!("memory pressure passed: {total} of {grantable} bytes in use");
                    let t = self.task_mut(k);
                    t.frozen_memory = None;
                    t.memory = restore.or(t.memory);
                    let t = self.task(k);
                    out.push(memory_directive(t, format!("restored at thaw: {why}"), now));
                    out.push(Directive {
                        container_id: t.spec.container_id.clone(),
                        action: Action::Thaw,
                        reason: why,
                        applied: t.enforce(),
                        old_value: None,
                    });
                }
            }
        }
    }

    /// What a running task sized by its profile needs now: the profile's window, never below its usage over
    /// `memory_grow_at` (+5%, so that it is not grown again at once), the spec's request (unless allowed) or
    /// the smallest allocation, never above its ceiling. `None`: not sized by its profile.
    fn right_size(&self, t: &Task, now_ms: u64) -> Option<u64> {
        if self.cfg.memory_shrink_at <= 0.0 {
            return None;
        }
        let u = t.usage?;
        if u.under_oom {
            return None;
        }
        let window = t.predicted_memory_window(now_ms, self.cfg.lookahead_buckets)?;
        let floor = (t.mem_used() as f64 / self.cfg.memory_grow_at.max(0.5) * 1.05) as u64;
        let request = t
            .spec
            .limits
            .memory_request_bytes
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0);
        let need = window
            .max(floor)
            .max(request)
            .max(self.cfg.min_memory_bytes);
        Some(need.min(t.memory_max.unwrap_or(u64::MAX)))
    }

    /// Grantable memory not allocated (unlimited tasks count with their usage).
    fn memory_room(&self) -> u64 {
        let allocated: u64 = self.live().map(|(_, t)| Self::pool_share(t)).sum();
        self.grantable_memory().saturating_sub(allocated)
    }

    fn hold(&mut self, k: Key, why: &str, out: &mut Vec<Directive>) {
        let t = self.task_mut(k);
        if !t.holding_memory {
            t.holding_memory = true;
            out.push(Directive {
                container_id: t.spec.container_id.clone(),
                action: Action::Hold {
                    resource: ResourceKind::Memory,
                },
                reason: why.to_owned(),
                applied: t.enforce(),
                old_value: None,
            });
        }
    }

    /// Lifts the allocation of a task that waited `waited_ms` on memory with no room to grow to its ceiling: the
    /// user's limit (the kernel OOM-kills at it, as it would have without the broker), or none at all.
    fn lift(&mut self, k: Key, waited_ms: u64, out: &mut Vec<Directive>) {
        let t = self.task_mut(k);
        let old = t.memory;
        t.memory = t.spec.limits.memory_limit_bytes.and(t.memory_max);
        t.stalled_since_ms = None;
        t.holding_memory = false;
        let to = t.memory.map_or_else(
            || "no limit".to_owned(),
            |m| format!("its limit of {m} bytes"),
        );
        let reason = format!(
            "waited on memory for {:.1} s with no room to grow (memory_stall_ms): lifted to {to}, the kernel's \
             OOM policy applies",
            waited_ms as f64 / 1000.0
        );
        out.push(memory_directive(self.task(k), reason, old));
    }

    /// Freezes a task and shrinks its allocation to what it uses, returning the rest to the pool.
    fn freeze(&mut self, k: Key, why: &str, out: &mut Vec<Directive>) {
        let min = self.cfg.min_memory_bytes;
        let t = self.task_mut(k);
        let old = t.memory;
        t.frozen_memory = Some(old);
        let used = t.mem_used().max(min);
        let shrunk = old.map(|a| a.min(used));
        t.memory = shrunk.or(Some(used));
        let t = self.task(k);
        out.push(Directive {
            container_id: t.spec.container_id.clone(),
            action: Action::Freeze,
            reason: why.to_owned(),
            applied: t.enforce(),
            old_value: None,
        });
        if shrunk != old {
            out.push(memory_directive(
                t,
                format!("paused: allocation held at usage ({why})"),
                old,
            ));
        }
    }
}

/// Appends to `path` the critical path of one pipeline's live members (none when it has fewer than two).
///
/// Iterative, never recursive: a pipeline's graph comes from its users' `depends-on` annotations, so its depth is
/// theirs to choose (a recursive walk over a 13,022-task chain overflowed the stack). Members are put in an
/// order where every dependency comes first (Kahn's algorithm over the edges that are not on a cycle; the members of
/// a cycle follow in container id order with their in-cycle edges cut), then the longest path ending at each member
/// is one pass over that order: O(members + edges).
fn critical_path(
    g: &mut Group,
    slots: &[Option<Task>],
    index: &BTreeMap<String, Key>,
    now_ms: u64,
    path: &mut Vec<Key>,
) {
    if g.members.len() < 2 {
        return;
    }
    let task = |k: Key| slots[k].as_ref().expect("a pipeline member is live");
    let ups = match &mut g.ups {
        Some(ups) => ups,
        ups @ None => {
            // Container id order: the tie-break below, and a stable order for the cached edges.
            g.members
                .sort_by(|&a, &b| task(a).spec.container_id.cmp(&task(b).spec.container_id));
            let pos: HashMap<Key, usize> =
                g.members.iter().enumerate().map(|(i, &k)| (k, i)).collect();
            ups.insert(
                g.members
                    .iter()
                    .map(|&k| {
                        let mut d: Vec<usize> = task(k)
                            .spec
                            .depends_on
                            .iter()
                            .filter_map(|d| {
                                index.get(d.as_str()).and_then(|dk| pos.get(dk).copied())
                            })
                            .collect();
                        d.sort_unstable();
                        d.dedup();
                        d
                    })
                    .collect(),
            )
        }
    };
    let n = g.members.len();
    let weights: Vec<f64> = g
        .members
        .iter()
        .map(|&k| {
            let t = task(k);
            match t.spec.prediction.as_ref().filter(|p| !p.is_cold_start()) {
                Some(p) => {
                    let elapsed = now_ms.saturating_sub(t.spec.started_at_ms) as f64 / 1000.0;
                    (p.duration_s.point - elapsed).max(1.0)
                }
                None => 1.0,
            }
        })
        .collect();
    // Topological order (dependencies first). Members left on a cycle are appended in id order; an edge from a
    // member that comes later in this order is ignored, which cuts each cycle.
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (i, us) in ups.iter().enumerate() {
        pending[i] = us.len();
        for &u in us {
            downs[u].push(i);
        }
    }
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| pending[i] == 0).collect();
    let mut placed = vec![false; n];
    let mut cursor = 0;
    loop {
        while let Some(i) = ready.pop_front() {
            placed[i] = true;
            order.push(i);
            for &d in &downs[i] {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        // A cycle: release its first member in id order and carry on.
        while cursor < n && placed[cursor] {
            cursor += 1;
        }
        if cursor == n {
            break;
        }
        pending[cursor] = 0;
        ready.push_back(cursor);
    }
    let mut rank = vec![0usize; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    // Longest path ending at each member (upstream to downstream), with its predecessor.
    let mut best: Vec<(f64, Option<usize>)> = vec![(0.0, None); n];
    for &i in &order {
        let mut up: (f64, Option<usize>) = (0.0, None);
        for &d in &ups[i] {
            if rank[d] < rank[i] && best[d].0 > up.0 {
                up = (best[d].0, Some(d));
            }
        }
        best[i] = (up.0 + weights[i], up.1);
    }
    // The longest; on a tie the first in container id order.
    let mut end = (0..n).max_by(|&a, &b| best[a].0.total_cmp(&best[b].0).then(b.cmp(&a)));
    let mut steps = 0;
    while let Some(i) = end {
        path.push(g.members[i]);
        end = best[i].1;
        steps += 1;
        if steps > n {
            break;
        }
    }
}

/// `CPU limit 2.00 -> 0.50 cores, memory limit 536870912 -> 268435456 bytes` (the fields that changed; all of them
/// when none did).
fn describe_resize(old: &SpecLimits, new: &SpecLimits) -> String {
    fn cores(v: Option<f64>) -> String {
        v.map_or_else(|| "none".to_owned(), |c| format!("{c:.2}"))
    }
    fn bytes(v: Option<u64>) -> String {
        v.map_or_else(|| "none".to_owned(), |b| b.to_string())
    }
    let fields = [
        (
            "CPU limit",
            cores(old.cpu_limit_cores),
            cores(new.cpu_limit_cores),
            "cores",
        ),
        (
            "CPU request",
            cores(old.cpu_request_cores),
            cores(new.cpu_request_cores),
            "cores",
        ),
        (
            "memory limit",
            bytes(old.memory_limit_bytes),
            bytes(new.memory_limit_bytes),
            "bytes",
        ),
        (
            "memory request",
            bytes(old.memory_request_bytes),
            bytes(new.memory_request_bytes),
            "bytes",
        ),
    ];
    let changed: Vec<String> = fields
        .iter()
        .filter(|(_, o, n, _)| o != n)
        .map(|(what, o, n, unit)| format!("{what} {o} -> {n} {unit}"))
        .collect();
    if changed.is_empty() {
        let all: Vec<String> = fields
            .iter()
            .map(|(what, _, n, unit)| format!("{what} {n} {unit}"))
            .collect();
        format!("unchanged ({})", all.join(", "))
    } else {
        changed.join(", ")
    }
}

/// The IO weight of a priority: 500 (the kernel's default) at 0, linear to 10 at -1000 and 990 at 1000; `None`
/// at 0, where nothing needs writing.
pub fn io_weight(priority: i32) -> Option<u16> {
    (priority != 0).then(|| (500 + priority.clamp(-1000, 1000) * 49 / 100).clamp(10, 1000) as u16)
}

/// The memory directive for a task's current allocation, in its cgroup version's terms.
fn memory_directive(t: &Task, reason: String, old: Option<u64>) -> Directive {
    let action = match t.spec.cgroup {
        CgroupKind::V2 => Action::SetMemoryHigh {
            high_bytes: t.memory,
            max_bytes: t.memory_max,
        },
        CgroupKind::V1 => Action::SetMemoryLimit {
            limit_bytes: t.memory,
            // At the user's own limit (or unlimited) the normal OOM killer applies again.
            oom_kill_disabled: matches!((t.memory, t.memory_max), (Some(a), Some(m)) if a < m),
        },
    };
    Directive {
        container_id: t.spec.container_id.clone(),
        action,
        reason,
        applied: t.enforce(),
        old_value: old.map(|v| v as f64),
    }
}

#[cfg(test)]
mod tests;
