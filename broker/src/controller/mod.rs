//! The allocation controller: pure logic, no kernel, no I/O, no clock (but [`io::host_devices`], which the broker
//! calls to read the block devices' schedulers). The broker feeds it registrations,
//! usage and ticks and turns its [`Directive`]s into cgroup writes (through the shim) and decision records.
//!
//! Rules, in the order a [`Controller::tick`] applies them:
//! 1. **Expiry**: a lease whose holder has not reported for `stale_after_ms` is ended; the lender gets it back.
//!    **Ancestors**: leases held under a limited ancestor cgroup whose tasks hold more than its limit end.
//! 2. **Revocation**: a lender under CPU pressure (as in 4, or a CPU PSI stall over its last report's interval
//!    alone: PSI's 10 s average follows a lender that turns busy seconds late), or whose predicted profile says
//!    the next `lookahead_buckets` need more than it kept, gets its leases back in this tick (CPU at once).
//! 3. **Release**: a holder that no longer needs a lease gives it back.
//! 4. **CPU borrowing**: a task under CPU pressure (throttled, at its quota, or CPU PSI stall) borrows from the
//!    host's unallocated CPU and from idle lenders (lowest priority first; a lender under pressure as in 2 lends
//!    nothing) as leases, highest priority first, up to its per-task maximum and never above its user limit.
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
//! One file per rule: [`allocation`] (Register), [`leases`] (rules 1-3), [`cpu`] (rule 4), [`memory`] (rule 5),
//! [`pipeline`] (the critical path in the priority), [`resize`] (a user's update), [`io`] (disk I/O priority at
//! Register); this file holds the task table and the entry points.
//!
//! Limits: memory is not lent through leases (it grows from the free pool and from paused tasks' unused
//! allocation); a running task's memory allocation shrinks only by right-sizing (confident prediction) or
//! at a pause.

mod allocation;
mod cpu;
pub mod io;
mod leases;
mod memory;
pub mod net;
mod pipeline;
mod resize;

use std::collections::{BTreeMap, HashMap};

pub use allocation::initial_allocation;
use allocation::tightest;
pub use io::{io_class, io_weight};
use memory::memory_directive;
use pipeline::Group;

use predictor::{BUCKETS, Confidence, Prediction, YOUNG_LIMIT_CAP};
use serde::{Deserialize, Serialize};

pub use predictive_api::types::{
    Action, Allocation, CgroupKind, Directive, HostCapacity, IoDevice, Lease, Mode, ResourceKind,
    SpecLimits, TaskView, Usage,
};

/// Tuning of the controller; the defaults are documented per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// CPU never handed out (default 0.5 cores).
    pub host_reserve_cpu: f64,
    /// Memory never handed out (default 256 MiB; at most half the host's).
    pub host_reserve_memory_bytes: u64,
    /// Smallest CPU allocation (default 0.05 cores); a task whose CPU limit is smaller gets its limit.
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
    /// CPU PSI `some avg10` (percent) at which a task is under CPU pressure (default 20); a lender also when its
    /// last report's interval alone stalled this much.
    pub cpu_psi_avg10: f64,
    /// A borrower asks for this share of its current quota per tick (default 0.5).
    pub borrow_step: f64,
    /// Smallest lease worth granting (default 0.05 cores).
    pub min_lease_cpu: f64,
    /// Most a task may borrow unless its annotation says otherwise (default: unlimited).
    pub max_borrow_cpu: Option<f64>,
    /// A lease ends when its holder has not reported for this long (default 5 s).
    pub stale_after_ms: u64,
    /// The heartbeat asked of a shim that takes pokes (the broker tells it when it has directives for it), whose
    /// tasks are then trusted for two heartbeats and a tick; 0 (or at most half of `stale_after_ms`): the
    /// heartbeat is half of `stale_after_ms`, as for other shims (default 10 s).
    pub idle_heartbeat_ms: u64,
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
    /// A task on its pipeline's critical path (the chain of live members with the longest predicted remaining
    /// duration) gets its CPU weight (shares) multiplied by this while it is on it, so it wins the CPU its siblings
    /// under the same parent cgroup also want; 1 = never (default 1: the quick suite showed no makespan gain at 4,
    /// docs/BENCHMARKS.md). Only where the weight is the broker's (not in a Kubernetes pod), never below the spec's.
    pub critical_path_cpu_weight: f64,
}

impl ControllerConfig {
    /// The memory kept back on a host of `host_memory_bytes`: [`Self::host_reserve_memory_bytes`], at most half the
    /// host (a reserve as large as a small node would leave every container without a memory limit a `memory.max`
    /// of 0).
    pub fn memory_reserve(&self, host_memory_bytes: u64) -> u64 {
        self.host_reserve_memory_bytes.min(host_memory_bytes / 2)
    }

    /// The smallest CPU allocation of a task with these limits: [`Self::min_cpu_cores`], or its CPU limit if that
    /// is smaller (a Kubernetes limit of `10m` stays 0.01 cores: no floor of ours lifts a task above its limit).
    pub fn min_cpu_for(&self, limits: &SpecLimits) -> f64 {
        limits
            .cpu_limit_cores
            .map_or(self.min_cpu_cores, |l| self.min_cpu_cores.min(l))
    }
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
            idle_heartbeat_ms: 10_000,
            lease_ttl_ms: 10_000,
            memory_grow_at: 0.90,
            memory_grow_factor: 1.25,
            memory_psi_avg10: 20.0,
            memory_shrink_at: 0.95,
            pause_at: 0.95,
            thaw_below: 0.85,
            quota_unlimited_cpu: false,
            memory_stall_ms: 10_000,
            critical_path_cpu_weight: 1.0,
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
    /// The CPU weight (OCI shares) the container started with, when the broker may raise it while the task is on
    /// its pipeline's critical path; `None` when the weight is not the broker's (a Kubernetes container: kubelet's
    /// pod and container weights stand).
    pub cpu_shares: Option<u64>,
    /// Limited cgroups above the task, nearest first.
    pub parents: Vec<Ancestor>,
    /// The prediction (`None` or cold: the spec's limits stand).
    pub prediction: Option<Prediction>,
    /// Start time, ms.
    pub started_at_ms: u64,
    /// How long its reports are trusted when longer than `stale_after_ms`: a shim the broker pokes heartbeats
    /// less often (`idle_heartbeat_ms`). `None`: `stale_after_ms`.
    pub stale_after_ms: Option<u64>,
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
    /// Its CPU weight is raised for the critical path (`critical_path_cpu_weight`).
    weight_raised: bool,
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
            weight_raised: false,
            stopping: false,
            spec,
        }
    }

    /// It reported within its staleness bound (`stale_after_ms`, or its own longer one).
    fn fresh(&self, now_ms: u64, stale_after_ms: u64) -> bool {
        let bound = self
            .spec
            .stale_after_ms
            .map_or(stale_after_ms, |s| s.max(stale_after_ms));
        now_ms.saturating_sub(self.last_report_ms) < bound
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

/// The `set_cpu` reasons collected during one step, by task key.
type Reasons = Vec<Option<String>>;

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
    /// The host's block devices and what carries an I/O priority on each (the broker detects them).
    io_devices: Vec<IoDevice>,
}

const EPS: f64 = 1e-6;

/// Sums byte counts without wrapping: each may be up to `i64::MAX` (a limit the kernel reads as "max"), so a few
/// tasks' allocations exceed `u64` (found by the `controller` fuzz target: a wrapped sum made the host's free
/// memory look large).
pub(super) fn sum_bytes(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
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
            io_devices: Vec::new(),
        }
    }

    /// The host's block devices as last detected, for the I/O priority's reason and status. The broker reads
    /// them at each Register of a task with an I/O priority (schedulers can change under a running broker); `None`
    /// keeps the last.
    pub fn refresh_io_devices(&mut self, devices: Option<Vec<IoDevice>>) {
        if let Some(d) = devices {
            self.io_devices = d;
        }
    }

    /// The I/O priority directive of a task with a priority other than 0.
    fn io_directive(&self, task: &Task) -> Option<Directive> {
        let p = task.spec.priority;
        Some(Directive {
            container_id: task.spec.container_id.clone(),
            action: Action::SetIoWeight {
                weight: io_weight(p)?,
                ioprio: io_class(p),
            },
            reason: io::reason(p, &self.io_devices),
            applied: task.enforce(),
            old_value: None,
        })
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
            .map(|c| (c - borrowed + lent).max(self.cfg.min_cpu_for(&spec.limits)));
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
        out.extend(self.io_directive(task));
        let pipeline = task.spec.pipeline.clone();
        self.update_critical_path(now_ms, pipeline.as_deref());
        self.weight_directives(pipeline.as_deref(), &mut out);
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
            .saturating_sub(self.cfg.memory_reserve(self.host.memory_bytes))
    }

    fn grantable_cpu(&self) -> f64 {
        (self.host.cpu_cores - self.cfg.host_reserve_cpu).max(0.0)
    }

    /// Registers a task and returns its initial directives (CPU and memory) and allocation. A task already
    /// registered under the id is replaced (its leases end). When the tasks then hold more CPU than the host can
    /// grant, leases of the host's free CPU end at once, newest first (the CPU was only lent).
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
            alloc.cpu_cores = Some(room.max(self.cfg.min_cpu_for(&spec.limits)));
            cpu_reason = format!(
                "{cpu_reason}, capped at the {room:.2} cores {} has left",
                spec.parents[i].path
            );
        }
        if let (Some(m), Some((i, room))) = (alloc.memory_bytes, mem_room)
            && m > room
        {
            // The smallest allocation, but never above memory.max (the user's or an ancestor's limit).
            let ceiling = alloc.memory_max_bytes.unwrap_or(u64::MAX);
            alloc.memory_bytes = Some(room.max(self.cfg.min_memory_bytes).min(ceiling));
            mem_reason = format!(
                "{mem_reason}, capped at the {room} bytes {} has left",
                spec.parents[i].path
            );
        }
        let task = Task::new(spec, alloc.cpu_cores, alloc, now_ms);
        out.push(Directive {
            container_id: task.spec.container_id.clone(),
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
        out.extend(self.io_directive(&task));
        let pipeline = task.spec.pipeline.clone();
        let id = task.spec.container_id.clone();
        self.insert(task);
        self.reclaim_host_leases(&id, &mut out);
        self.update_critical_path(now_ms, pipeline.as_deref());
        self.weight_directives(pipeline.as_deref(), &mut out);
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
            t.memory = restore;
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
        if pipeline.is_some() {
            self.weight_directives(pipeline.as_deref(), &mut out);
        }
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
                io: io::view(t.spec.priority, &self.io_devices),
                net: None,
                net_ingress: None,
            })
            .collect()
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
        self.weight_directives(None, &mut out);
        self.memory(now_ms, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
