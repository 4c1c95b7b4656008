//! The daemon: owns the predictor, serves the [`crate::api`] protocol on the Unix socket, runs the controller
//! every tick, records every decision, and retrains in the background.
//!
//! Threads: one accepting connections, one per connection (a shim keeps one open), one ticking the
//! controller, one retraining, one recorder. Every store write goes through the [`crate::journal`]: the recorder
//! commits whatever is queued in one transaction, and a write request is answered once its records are committed
//! (acknowledged means durable, also under `kill -9`). SIGTERM drains the journal before exit.
//!
//! Who may connect: root, the broker's own uid, and `allowed_gid` (checked with SO_PEERCRED on every
//! connection; the socket is mode 0600, or 0660 owned by that group).
//!
//! Restarts: registrations live in memory, so a restarted broker answers a Report for an unknown container
//! with `not_found` and the shim registers again with `adopt` (its allocation in force), which changes no
//! limit and carries on the run the store holds open for it. Leases are written to `leases.json` in the state directory after each tick that changed them and
//! restored at start; a restored lease waits `stale_after_ms` for its holder to come back. The store keeps
//! every committed record.

mod pokes;
mod reports;
mod runs;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use predictor::{
    BatchOp, DecisionQuery, Predictor, PredictorConfig, RunFeatures, RunMetadata, RunOutcome,
    RunSummary, TaskKey,
};

use crate::annotations::Annotations;
use crate::api::{
    self, Decisions, Directives, ErrorCode, ErrorReply, Finish, Finished, Models, ParentLimit,
    Register, Registered, Report, Request, Response, Status, Update,
};
use crate::clock::{steady_ms, wall_ms};
use crate::config::Config;
use crate::controller::io;
use crate::controller::{
    Action, Allocation, Ancestor, CgroupKind, Controller, Directive, HostCapacity, Mode, TaskSpec,
    Usage,
};
use runs::Registering;

/// A task that has neither reported nor finished for this long is forgotten (its shim is gone).
const FORGET_AFTER_MS: u64 = 10 * 60_000;

/// How long a Finish for a run the broker does not have registered waits for that run's Register, and how long a
/// run's Finish refuses a Register of that run (`server/runs.rs`): a shim whose Register got no answer in its
/// budget drops the connection and sends the Finish on a new one, which can overtake the Register still on its way
/// (or waiting for the state lock); without this, that Register would leave a task registered that nobody finishes.
const EARLY_FINISH_MS: u64 = 60_000;

/// Most early Finishes and ended runs remembered at once (oldest forgotten first): a peer cannot grow the sets
/// without bound.
const MAX_EARLY_FINISHES: usize = 4096;
/// Most runs kept for their Finish after a later run of their container replaced them (each holds its stats).
const MAX_REPLACED: usize = 64;
/// Most directives kept for a container that does not collect them.
const MAX_PENDING: usize = 1024;
/// Most decision log lines per tick; the rest are counted.
const MAX_LOGS_PER_TICK: usize = 64;
/// Records queued for the recorder before connections that write wait for it.
const JOURNAL_CAP: usize = 65_536;
/// Longest a write request waits for its records to be committed before it is answered with an error.
const DURABLE_WITHIN: Duration = Duration::from_secs(30);
/// Most CPU readings kept per run for its p50/p95.
const MAX_CPU_READINGS: usize = 100_000;

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating a directory failed.
    #[error("creating directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the lock file failed.
    #[error("opening lock file {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another broker holds the lock.
    #[error("another predictived holds {path}")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Binding or securing the socket failed.
    #[error("binding socket {path}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A damaged store could not be set aside.
    #[error("setting aside the damaged predictor store {path}")]
    SetAside {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The predictor's store could not be opened.
    #[error("opening the predictor store")]
    Predictor(#[from] predictor::PredictorError),
    /// The predictor's store could not be read at start.
    #[error("reading the predictor store")]
    Store(#[from] predictor::StoreError),
    /// A thread could not be started.
    #[error("starting the {what} thread")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not start.
    #[error("starting the metrics endpoint")]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A file to import at start was refused.
    #[error("importing run history at start")]
    Import(#[from] crate::transfer::TransferError),
}

/// Host CPUs and memory, read once at start.
pub fn detect_host() -> HostCapacity {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30);
    HostCapacity {
        cpu_cores: cpu,
        memory_bytes: mem,
    }
}

fn host_load(cpus: f64) -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|l| l / cpus.max(1.0))
        .unwrap_or(0.0)
}

/// The limited ancestors a shim sent, checked: at most [`api::MAX_PARENTS`], absolute printable paths of at most
/// 4096 bytes, limits that are positive numbers.
fn ancestors(parents: &[ParentLimit]) -> Result<Vec<Ancestor>, ErrorReply> {
    let bad = |m: String| Err(ErrorReply::new(ErrorCode::InvalidRequest, m));
    if parents.len() > api::MAX_PARENTS {
        return bad(format!(
            "field `parents` has {} entries; at most {} are accepted",
            parents.len(),
            api::MAX_PARENTS
        ));
    }
    let mut out = Vec::with_capacity(parents.len());
    for p in parents {
        if !p.path.starts_with('/') || p.path.len() > 4096 || p.path.chars().any(char::is_control) {
            return bad(format!(
                "field `parents`: path {:?} is not an absolute cgroup path",
                p.path.chars().take(128).collect::<String>()
            ));
        }
        if p.cpu_limit_cores
            .is_some_and(|c| !c.is_finite() || c <= 0.0)
        {
            return bad(format!(
                "field `parents`: {}: cpu_limit_cores must be a positive number",
                p.path
            ));
        }
        if p.memory_limit_bytes == Some(0) {
            return bad(format!(
                "field `parents`: {}: memory_limit_bytes must be positive",
                p.path
            ));
        }
        out.push(Ancestor {
            path: p.path.clone(),
            cpu_cores: p.cpu_limit_cores,
            memory_bytes: p.memory_limit_bytes,
        });
    }
    Ok(out)
}

/// The decisions recording what the policy capped in a Register's annotations.
fn capped_decisions(
    capped: Vec<(&'static str, f64, f64, String)>,
    container_id: &str,
    key: &TaskKey,
    now: u64,
    model_version: Option<u64>,
) -> Vec<predictor::Decision> {
    capped
        .into_iter()
        .map(|(what, old, new, reason)| predictor::Decision {
            seq: 0,
            at_ms: now,
            container_id: container_id.to_owned(),
            task_key: key.clone(),
            directive: predictor::Directive::Lower,
            resource: what.to_owned(),
            reason,
            old_value: Some(old),
            new_value: Some(new),
            model_version,
        })
        .collect()
}

/// Applies the operator's `[policy]` to the annotations of a Kubernetes pod's container: its priority and
/// its borrowing maximum are capped, and its pipeline is its namespace's (a pod cannot join another tenant's
/// pipeline to move its critical path). Returns, per capped value, the decision-log entry (resource, asked,
/// granted, reason).
fn apply_policy(
    cfg: &Config,
    annotations: &std::collections::BTreeMap<String, String>,
    ann: &mut Annotations,
) -> Vec<(&'static str, f64, f64, String)> {
    let pod = annotations.contains_key(predictor::CRI_CONTAINER_TYPE_ANNOTATION)
        || annotations.contains_key(predictor::CRI_SANDBOX_NAMESPACE_ANNOTATION);
    if !pod {
        return Vec::new();
    }
    if let (Some(ns), Some(p)) = (
        annotations.get(predictor::CRI_SANDBOX_NAMESPACE_ANNOTATION),
        ann.pipeline.as_mut(),
    ) {
        *p = format!("{ns}/{p}");
    }
    let policy = &cfg.policy;
    let mut out = Vec::new();
    if ann.priority > policy.max_priority {
        out.push((
            "priority",
            f64::from(ann.priority),
            f64::from(policy.max_priority),
            format!(
                "policy: {} {} capped at {} ([policy] max_priority)",
                crate::annotations::PRIORITY,
                ann.priority,
                policy.max_priority
            ),
        ));
        ann.priority = policy.max_priority;
    }
    if let Some(cap) = policy.max_borrow_cpu.or(cfg.controller.max_borrow_cpu) {
        match ann.max_borrow_cpu {
            Some(asked) if asked > cap => {
                out.push((
                    "cpu-borrow",
                    asked,
                    cap,
                    format!(
                        "policy: {} {asked} capped at {cap} cores ([policy] max_borrow_cpu)",
                        crate::annotations::MAX_BORROW
                    ),
                ));
                ann.max_borrow_cpu = Some(cap);
            }
            Some(_) => {}
            None => ann.max_borrow_cpu = Some(cap),
        }
    }
    out
}

/// A container's dependencies and pipeline are its containerd namespace's: named by bare id and name in its
/// annotations, they are qualified as its own id is ([`api::broker_id`]): `a/web` depends on `a/db`, not on `b/db`
/// or `db`, and its pipeline `etl` is `a/etl`.
fn qualify_references(container_id: &str, ann: &mut Annotations) {
    let ns = api::namespace_prefix(container_id);
    if ns.is_empty() {
        return;
    }
    for d in &mut ann.depends_on {
        *d = format!("{ns}{d}");
    }
    if let Some(p) = ann.pipeline.as_mut() {
        *p = format!("{ns}{p}");
    }
}

#[derive(Debug, Default)]
struct RunStats {
    cpu: Vec<f64>,
    peak_memory: u64,
    cpu_seconds: f64,
    io_bytes: u64,
    throttled_s: f64,
    samples: u64,
    /// The task shares the host's network namespace: its counters are the host's, not its own traffic.
    host_network: bool,
    /// Egress (sent bytes) and ingress (received bytes) over the intervals that measured them.
    net_tx: NetTally,
    net_rx: NetTally,
}

/// One network direction of a run: bytes over the sampled intervals that measured it, those intervals' seconds
/// and the largest rate of one interval.
#[derive(Debug, Default)]
struct NetTally {
    bytes: f64,
    seconds: f64,
    peak: Option<f64>,
}

impl NetTally {
    /// Adds an interval of `dt` seconds at `rate` bytes/s (nothing when the rate was not measured).
    fn add(&mut self, rate: Option<f64>, dt: f64) {
        if let Some(rate) = rate {
            self.bytes += rate * dt;
            self.seconds += dt;
            self.peak = Some(self.peak.map_or(rate, |p| p.max(rate)));
        }
    }

    /// The run's mean rate and peak (`None`: no interval measured it).
    fn mean_and_peak(&self) -> (Option<f64>, Option<f64>) {
        (
            (self.seconds > 0.0).then(|| self.bytes / self.seconds),
            self.peak,
        )
    }
}

#[derive(Debug)]
struct Running {
    run_id: u64,
    task_key: TaskKey,
    meta: RunMetadata,
    /// Wall clock: what the run's record says.
    started_at_ms: u64,
    /// Steady clock (`clock.rs`): what its duration is measured from.
    started_steady_ms: u64,
    /// Steady clock.
    last_seen_ms: u64,
    model_version: Option<u64>,
    prev: Option<runtime_hooks::Sample>,
    pending: Vec<Directive>,
    stats: RunStats,
    /// How the shim is told of `pending` between its reports (`pokes.rs`).
    pokes: pokes::Pokes,
    /// Its shim's name for the run (`Register::created_ns`; `runs.rs`).
    created_ns: Option<u64>,
}

struct State {
    controller: Controller,
    /// Network egress shares and loans (`[network]`).
    net: crate::controller::net::NetShaper,
    /// Ingress, by the same rules (`[network] ingress_budget_bytes_per_sec`).
    net_in: crate::controller::net::NetShaper,
    running: HashMap<String, Running>,
    /// The next run id to hand out (ahead of every id the store holds).
    next_run: u64,
    /// Runs the previous broker process had open, by container id: a shim that registers again with `adopt`
    /// carries its run on; the rest are closed once [`FORGET_AFTER_MS`] passed without it.
    orphans: HashMap<String, predictor::OpenRun>,
    /// The Finishes that came while their runs were not registered, and the runs that ended (`runs.rs`).
    ends: runs::Ends,
    /// Runs that a later run of the same container replaced before their Finish came, by container and
    /// `created_ns`, with when ([`EARLY_FINISH_MS`]): their Finish still records them.
    replaced: HashMap<(String, u64), (u64, Running)>,
    started_ms: u64,
    /// Containers to poke: directives were queued for them since their latest report (`pokes.rs`).
    to_poke: Vec<String>,
}

impl State {
    /// Queues a directive for its container's next report (the oldest dropped past [`MAX_PENDING`]); a container
    /// whose shim takes pokes is listed for [`Broker::poke_pending`] once per report.
    fn push_pending(&mut self, d: Directive) {
        let Some(r) = self.running.get_mut(&d.container_id) else {
            return;
        };
        if r.pending.len() >= MAX_PENDING {
            r.pending.remove(0);
        }
        if r.pokes.ask() {
            self.to_poke.push(d.container_id.clone());
        }
        r.pending.push(d);
    }

    /// Which run a Register is of (`runs.rs`): `Some` when its Finish came first (with a run id for the run it
    /// ends, how long ago, and the Finish), an error when it must not be registered (its run ended already, or
    /// an older run than the one registered, or a repeat of a Register already taken, or its pipeline is full),
    /// `None` to register it. An older run is kept aside for its Finish, which records it.
    fn which_run(
        &mut self,
        r: &Register,
        (key, meta, model_version, pipeline): (&TaskKey, &RunMetadata, Option<u64>, Option<&str>),
        (now, wall): (u64, u64),
    ) -> Result<Option<(u64, u64, Finish)>, ErrorReply> {
        let id = &r.container_id;
        let registered = self.running.get(id).map(|x| x.created_ns);
        if let Some((ago, f)) = self.ends.take_early(id, r.created_ns, registered, now) {
            self.ends.ended(id, r.created_ns, now);
            let run_id = self.next_run;
            self.next_run += 1;
            return Ok(Some((run_id, ago, f)));
        }
        let why = match self
            .ends
            .registering(id, r.created_ns, registered, r.adopt.is_some(), now)
        {
            Registering::New | Registering::Same => {
                return self.admits(id, pipeline).map(|()| None);
            }
            Registering::Ended => {
                "its run ended already (the Finish came first: a retry that queued up behind it)"
            }
            Registering::Older => {
                if let Some(c) = r.created_ns
                    && !self.replaced.contains_key(&(id.clone(), c))
                {
                    let run_id = self.next_run;
                    self.next_run += 1;
                    let what = (key, meta.clone(), model_version);
                    self.set_aside(id, c, running(r, what, (now, wall), (run_id, wall)), now);
                }
                "a later run of the container is registered (this one ended; its Finish records it)"
            }
            Registering::Repeated => {
                "its run is registered already, with the limits in force adopted"
            }
        };
        Err(ErrorReply::new(
            ErrorCode::NotFound,
            format!(
                "container {:?} not registered: {why}",
                crate::validate::shown(id, 128)
            ),
        ))
    }

    /// Keeps `run` (run `created` of `id`, not registered) for its Finish, which records it ([`MAX_REPLACED`]).
    fn set_aside(&mut self, id: &str, created: u64, run: Running, now: u64) {
        let key = (id.to_owned(), created);
        runs::insert_bounded(
            &mut self.replaced,
            MAX_REPLACED,
            key,
            (now, run),
            now,
            |(at, _)| *at,
        );
    }

    /// Refuses a Register whose pipeline is full.
    fn admits(&mut self, container_id: &str, pipeline: Option<&str>) -> Result<(), ErrorReply> {
        if let Some(p) = pipeline
            && !self.running.contains_key(container_id)
            && self.controller.pipeline_size(p) >= crate::validate::MAX_PIPELINE_TASKS
        {
            return Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                format!(
                    "annotation `{}`: pipeline {:?} already has {} running tasks, the most one pipeline may have",
                    crate::annotations::PIPELINE,
                    crate::validate::shown(p, 128),
                    crate::validate::MAX_PIPELINE_TASKS
                ),
            ));
        }
        Ok(())
    }

    /// Opens (or, for a shim registering again with `adopt`, carries on) the container's run at `now` (steady)
    /// and `wall`: the store's ops go to `ops`.
    fn open_run(
        &mut self,
        r: &Register,
        key: &TaskKey,
        meta: RunMetadata,
        model_version: Option<u64>,
        (now, wall): (u64, u64),
        ops: &mut Vec<BatchOp>,
    ) {
        // The run registered already, registering again (`runs.rs`): it carries on.
        if let Some(run) = self.running.get_mut(&r.container_id)
            && r.created_ns.is_some()
            && run.created_ns == r.created_ns
        {
            run.last_seen_ms = now;
            return;
        }
        // A run the previous broker process had open carries on when its shim registers again with `adopt`.
        let carried = match (r.adopt.is_some(), self.orphans.remove(&r.container_id)) {
            (true, Some(o)) if o.task_key == *key => Some(o),
            (_, Some(o)) => {
                ops.push(BatchOp::Close(o.container_id, o.run_id));
                None
            }
            _ => None,
        };
        let (run_id, started_at_ms, meta) = match carried {
            Some(o) => (o.run_id, o.started_at_ms, o.meta),
            None => {
                let id = self.next_run;
                self.next_run += 1;
                (id, wall, meta)
            }
        };
        ops.push(BatchOp::Open(Box::new(predictor::OpenRun {
            container_id: r.container_id.clone(),
            run_id,
            task_key: key.clone(),
            started_at_ms,
            meta: meta.clone(),
            model_version,
        })));
        let running = running(
            r,
            (key, meta, model_version),
            (now, wall),
            (run_id, started_at_ms),
        );
        let Some(old) = self.running.insert(r.container_id.clone(), running) else {
            return;
        };
        if old.run_id == run_id {
            return;
        }
        let shown = crate::validate::shown(&r.container_id, 253);
        // The store's open run of the container is the new one now (`BatchOp::Open`).
        match old.created_ns {
            // Its Finish is on its way (the container ended before this one could be created): it records the run.
            Some(c) => {
                tracing::info!(container = %shown, run = old.run_id, "a later run registered: the earlier one is recorded when its Finish comes");
                self.set_aside(&r.container_id, c, old, now);
            }
            None => {
                tracing::warn!(container = %shown, run = old.run_id, "registered again; the earlier run is dropped")
            }
        }
    }
}

/// A run that `r` opens as `run_id`, started at `started_at_ms` on the wall clock, at `now` (steady) and `wall`.
fn running(
    r: &Register,
    (key, meta, model_version): (&TaskKey, RunMetadata, Option<u64>),
    (now, wall): (u64, u64),
    (run_id, started_at_ms): (u64, u64),
) -> Running {
    // A carried run started before this process: as long ago on the steady clock as on the wall clock.
    let started_steady_ms = now.saturating_sub(wall.saturating_sub(started_at_ms));
    Running {
        run_id,
        task_key: key.clone(),
        meta,
        started_at_ms,
        started_steady_ms,
        last_seen_ms: now,
        model_version,
        prev: None,
        pending: Vec::new(),
        stats: RunStats {
            host_network: r.own_netns == Some(false),
            ..RunStats::default()
        },
        pokes: pokes::Pokes::default(),
        created_ns: r.created_ns,
    }
}

/// The broker's shared core: everything a connection or the tick thread touches.
pub struct Broker {
    cfg: Config,
    predictor: Arc<Predictor>,
    state: Mutex<State>,
    /// Per-container history and counters (`predictivectl`, metrics).
    tracker: crate::history::Tracker,
    journal: Arc<crate::journal::Journal>,
    default_cgroup: CgroupKind,
    stop: AtomicBool,
    /// The lease set last written to disk.
    persisted: Mutex<Option<Vec<crate::controller::Lease>>>,
    /// Connections being served.
    conns: std::sync::atomic::AtomicUsize,
    /// Most connections served at once since memory was last handed back ([`Broker::release_memory`]).
    conns_peak: std::sync::atomic::AtomicUsize,
    /// When a rate-limited warning was last logged, ms.
    last_warning_ms: std::sync::atomic::AtomicU64,
    /// Register and tick latencies (metrics).
    latencies: crate::metrics::Latencies,
}

/// Turns a pair of raw samples into the controller's usage and the predictor's sample.
fn rates(
    prev: &runtime_hooks::Sample,
    s: &runtime_hooks::Sample,
    oom: bool,
) -> Option<(Usage, predictor::Sample, f64)> {
    let dt_ns = s
        .monotonic_ns
        .checked_sub(prev.monotonic_ns)
        .filter(|d| *d > 0)?;
    // A container's counters are its shim's reading, not a promise: a jump by 2^64 ns in 1 ns is no CPU rate.
    let cpu = match (prev.cpu.usage_ns, s.cpu.usage_ns) {
        (Some(a), Some(b)) => {
            (b.saturating_sub(a) as f64 / dt_ns as f64).min(crate::validate::MAX_CORES)
        }
        _ => 0.0,
    };
    let throttled = match (
        prev.cpu.nr_periods,
        s.cpu.nr_periods,
        prev.cpu.nr_throttled,
        s.cpu.nr_throttled,
    ) {
        (Some(p0), Some(p1), Some(t0), Some(t1)) if p1 > p0 => {
            (t1.saturating_sub(t0) as f64 / (p1 - p0) as f64).min(1.0)
        }
        _ => 0.0,
    };
    let throttled_s = match (prev.cpu.throttled_ns, s.cpu.throttled_ns) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
        _ => 0.0,
    };
    // The share of the interval in which some task of the container waited for a CPU: PSI's own `avg10` takes
    // seconds to follow a step (a lender that starts spinning on a busy host: 4.6-8.8 s to cross 20%).
    let cpu_psi_recent = match (prev.pressure.cpu, s.pressure.cpu) {
        (Some(a), Some(b)) => Some(
            (b.some.total_us.saturating_sub(a.some.total_us) as f64 * 1e5 / dt_ns as f64)
                .min(100.0),
        ),
        _ => None,
    };
    let io = |x: &runtime_hooks::Sample| {
        x.io.read_bytes
            .unwrap_or(0)
            .saturating_add(x.io.write_bytes.unwrap_or(0))
    };
    let mem = s.memory.usage_bytes.unwrap_or(0);
    // Bytes/s of one network counter between the two samples (None when either lacks the counters).
    let net_rate = |bytes: fn(&runtime_hooks::NetDevTotals) -> u64| {
        let (a, b) = (prev.net.as_ref()?, s.net.as_ref()?);
        Some(
            (bytes(b).saturating_sub(bytes(a)) as f64 * 1e9 / dt_ns as f64)
                .min(crate::transfer::MAX_NET_RATE),
        )
    };
    let net_tx = net_rate(|n| n.tx_bytes);
    let net_rx = net_rate(|n| n.rx_bytes);
    let usage = Usage {
        at_ms: s.unix_ns / 1_000_000,
        cpu_cores: cpu,
        cpu_throttled_fraction: throttled,
        cpu_psi_avg10: s.pressure.cpu.map(|p| p.some.avg10),
        cpu_psi_recent,
        memory_psi_avg10: s.pressure.memory.map(|p| p.some.avg10),
        memory_bytes: mem,
        working_set_bytes: s.memory.working_set_bytes,
        under_oom: oom || s.memory.under_oom == Some(true),
        net_tx_bytes_per_sec: net_tx,
        net_rx_bytes_per_sec: net_rx,
    };
    let sample = predictor::Sample {
        ts_ms: usage.at_ms,
        cpu_cores: cpu,
        memory_bytes: mem,
        io_bytes: io(s).saturating_sub(io(prev)),
        count: 1,
    };
    Some((usage, sample, throttled_s))
}

/// How a run ended: `f` (its shim's figures) over `stats` (what its reports showed). Its duration is the shim's
/// (`ran_ms`: from Create to exit, whenever the broker took the Register), else `measured_s`, the broker's own
/// from the Register it took to `f`.
fn outcome(f: &Finish, stats: &RunStats, measured_s: f64) -> RunOutcome {
    // Over the sampled intervals that measured each direction (none for a task in the host's network).
    let (net_tx_bytes_per_s, net_tx_peak_bytes_per_s) = stats.net_tx.mean_and_peak();
    let (net_rx_bytes_per_s, net_rx_peak_bytes_per_s) = stats.net_rx.mean_and_peak();
    crate::transfer::recordable(RunOutcome {
        duration_s: f.ran_ms.map_or(measured_s, |ms| ms as f64 / 1000.0),
        peak_memory_bytes: f.peak_memory_bytes.unwrap_or(0).max(stats.peak_memory),
        // The cgroup's own total when the shim read it: a run shorter than a tick has few or no samples.
        cpu_seconds: f.cpu_seconds.unwrap_or(0.0).max(stats.cpu_seconds),
        cpu_p50_cores: predictor::percentile(&stats.cpu, 0.5).unwrap_or(0.0),
        cpu_p95_cores: predictor::percentile(&stats.cpu, 0.95).unwrap_or(0.0),
        io_bytes: stats.io_bytes,
        exit_code: f.exit_code,
        oom_killed: f.oom_killed,
        throttled_s: stats.throttled_s,
        net_tx_bytes_per_s,
        net_tx_peak_bytes_per_s,
        net_rx_bytes_per_s,
        net_rx_peak_bytes_per_s,
    })
}

/// The decision-log entry of a directive.
fn decision(d: &Directive, r: &Running, at_ms: u64, initial: Option<bool>) -> predictor::Decision {
    use predictor::Directive as D;
    let grew = |new: Option<f64>| match (d.old_value, new) {
        (Some(o), Some(n)) if n < o => D::Lower,
        (Some(_), None) | (None, None) => D::Raise,
        (Some(o), Some(n)) if n > o => D::Raise,
        (Some(_), Some(_)) => D::Hold,
        (None, Some(_)) => D::Raise,
    };
    let (resource, directive, new_value) = match &d.action {
        Action::SetCpu { cores } => ("cpu", grew(*cores), *cores),
        Action::SetMemoryHigh { high_bytes: m, .. }
        | Action::SetMemoryLimit { limit_bytes: m, .. } => {
            let v = m.map(|b| b as f64);
            ("memory", grew(v), v)
        }
        Action::SetIoWeight { weight, .. } => {
            tracing::info!(container = %d.container_id, reason = %d.reason, "disk I/O priority");
            ("io", D::Raise, Some(f64::from(*weight)))
        }
        Action::SetCpuWeight { shares } => {
            let v = Some(*shares as f64);
            ("cpu-weight", grew(v), v)
        }
        Action::SetNetEgress { rate_bytes_per_sec } => {
            let v = rate_bytes_per_sec.map(|r| r as f64);
            ("net", grew(v), v)
        }
        Action::SetNetIngress { rate_bytes_per_sec } => {
            let v = rate_bytes_per_sec.map(|r| r as f64);
            ("net-ingress", grew(v), v)
        }
        Action::Unknown => ("unknown", D::Hold, None),
        Action::Freeze => ("freezer", D::Lower, Some(1.0)),
        Action::Thaw => ("freezer", D::Raise, Some(0.0)),
        Action::LeaseGranted { lease } => ("cpu-lease", D::Raise, Some(lease.amount)),
        Action::LeaseRevoked { lease } => ("cpu-lease", D::Lower, Some(lease.amount)),
        Action::Hold { resource } => (
            match resource {
                crate::controller::ResourceKind::Cpu => "cpu",
                crate::controller::ResourceKind::Memory => "memory",
            },
            D::Hold,
            None,
        ),
    };
    let directive = match initial {
        Some(true) => D::Fallback,
        Some(false) => D::Initial,
        None => directive,
    };
    let what = match &d.action {
        Action::LeaseGranted { lease } | Action::LeaseRevoked { lease } => format!(
            "lease {} ({:.2} cores from {}): ",
            lease.id,
            lease.amount,
            lease.lender.as_deref().unwrap_or("host")
        ),
        Action::Freeze => "paused: ".to_owned(),
        Action::Thaw => "thawed: ".to_owned(),
        _ => String::new(),
    };
    predictor::Decision {
        seq: 0,
        at_ms,
        container_id: d.container_id.clone(),
        task_key: r.task_key.clone(),
        directive,
        resource: resource.to_owned(),
        reason: format!(
            "{what}{}{}",
            d.reason,
            if d.applied {
                ""
            } else {
                " [observe: not applied]"
            }
        ),
        old_value: d.old_value,
        new_value,
        model_version: r.model_version,
    }
}

/// Most decisions one `explain` examines (a rare container's page may come back short, with `next_before_seq`).
const EXPLAIN_SCAN: usize = 100_000;

/// `(offset, count)` of a page: `limit` defaults to and is capped at `max`.
fn page_bounds(offset: Option<u64>, limit: Option<u64>, max: u64) -> (u64, u64) {
    (offset.unwrap_or(0), limit.unwrap_or(max).clamp(1, max))
}

/// One page of a history's points.
fn page_history(mut h: api::History, q: &api::HistoryQuery) -> api::History {
    let total = h.points.len() as u64;
    let (from, n) = page_bounds(q.offset, q.limit, api::MAX_HISTORY_POINTS as u64);
    h.points = h
        .points
        .into_iter()
        .skip(from as usize)
        .take(n as usize)
        .collect();
    h.total_points = Some(total);
    h.next_offset = (from + n < total).then_some(from + n);
    h
}

impl Broker {
    /// Runs `log` at most once a second: what a peer can trigger must not flood the log.
    fn log_limited(&self, log: impl FnOnce()) {
        let now = steady_ms();
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log();
        }
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves plain data; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues decisions (and `more` records) for the recorder; returns the journal's sequence number.
    fn record_decisions(&self, ds: Vec<predictor::Decision>, more: Vec<BatchOp>) -> u64 {
        self.tracker.decided(&ds);
        let total = ds.len();
        let mut ops = Vec::with_capacity(total + 1);
        for (i, d) in ds.into_iter().enumerate() {
            if i < MAX_LOGS_PER_TICK {
                tracing::info!(
                    container = %d.container_id,
                    resource = %d.resource,
                    directive = ?d.directive,
                    old = ?d.old_value,
                    new = ?d.new_value,
                    reason = %d.reason,
                    "decision"
                );
            } else if i == MAX_LOGS_PER_TICK {
                tracing::info!(
                    suppressed = total - MAX_LOGS_PER_TICK,
                    "more decisions this tick, recorded but not logged"
                );
            }
            ops.push(BatchOp::Decision(d));
        }
        ops.extend(more);
        self.journal.submit(ops)
    }

    /// Serves one request.
    pub fn handle(&self, req: Request) -> Response {
        self.handle_on(req, None)
    }

    /// Serves one request that came on `peer` (where a shim that takes pokes is poked).
    fn handle_on(&self, req: Request, peer: Option<&Arc<pokes::Peer>>) -> Response {
        let started = Instant::now();
        self.tracker.request(crate::history::request_kind(&req));
        if let Err(e) = crate::validate::request(&req) {
            return Response::Error(e);
        }
        let writes = req.writes();
        let registering = matches!(req, Request::Register(_));
        let finish = matches!(req, Request::Finish(_));
        if writes {
            // Back-pressure: a burst waits for the recorder instead of growing its queue.
            self.journal.room(DURABLE_WITHIN);
        }
        let submitted_before = self.journal.submitted();
        let r = match req {
            Request::Register(r) => {
                let id = r.container_id.clone();
                let takes_pokes = r.pokes == Some(true);
                self.register(r, peer)
                    .map(|x| self.with_heartbeat(x, takes_pokes))
                    .inspect(|x| self.tracker.registered(&id, x, wall_ms()))
                    .map(Response::Registered)
            }
            Request::Report(r) => self.report(r, peer).map(Response::Directives),
            Request::Reports(b) => Ok(Response::Reports(self.reports(b, peer))),
            Request::Update(u) => self.update(u).map(Response::Directives),
            Request::Finish(f) => {
                let id = f.container_id.clone();
                self.finish(f)
                    .inspect(|_| self.tracker.finished(&id))
                    .map(Response::Finished)
            }
            Request::History(q) => self
                .tracker
                .history(&q, &self.predictor, wall_ms())
                .map(|h| page_history(h, &q))
                .map(Response::History),
            Request::Status(p) => Ok(Response::Status(self.status(Some(&p)))),
            Request::Models(p) => self.models(&p).map(Response::Models),
            Request::Explain(e) => self
                .predictor
                .store()
                .decisions_page(&DecisionQuery {
                    container_id: e.container_id,
                    limit: e.limit.unwrap_or(100).min(api::MAX_PAGE),
                    before_seq: e.before_seq,
                    scan_budget: EXPLAIN_SCAN,
                    ..DecisionQuery::default()
                })
                .map(|(decisions, next_before_seq)| {
                    Response::Decisions(Decisions {
                        decisions: decisions.iter().map(crate::convert::decision).collect(),
                        next_before_seq,
                    })
                })
                .map_err(|e| {
                    ErrorReply::new(ErrorCode::Internal, format!("reading decisions: {e}"))
                }),
            Request::Export(q) => {
                crate::transfer::export_page(&self.predictor, &q).map(Response::Export)
            }
        };
        // Acknowledged means durable: what this request wrote, and every decision queued before it (the
        // directives it carries among them), is committed before the peer hears of it. An error that wrote (a
        // Register overtaken by its Finish records the run it refuses; found by the `server` fuzz target: the
        // refusal said "recorded" before the run was) waits too.
        let durable = || {
            self.journal
                .wait(self.journal.submitted(), DURABLE_WITHIN)
                .map_err(|e| {
                    ErrorReply::new(
                        ErrorCode::Internal,
                        format!("recording the request: {}", crate::error_chain(&e)),
                    )
                })
        };
        let r = r.map_err(|e| {
            if writes && self.journal.submitted() != submitted_before {
                durable().err().unwrap_or(e)
            } else {
                e
            }
        });
        let r = r.and_then(|resp| {
            if writes {
                let waiting = Instant::now();
                durable()?;
                if registering {
                    self.latencies
                        .register_commit_wait
                        .observe(waiting.elapsed());
                }
            }
            if finish {
                // The run is committed: refit its task type now if it is due, so the next Create is predicted.
                if let Err(e) = self.predictor.refit_pending(wall_ms()) {
                    tracing::error!(error = %crate::error_chain(&e), "refitting after a finish");
                }
            }
            Ok(resp)
        });
        if registering && r.is_ok() {
            self.latencies.register.observe(started.elapsed());
        }
        r.unwrap_or_else(Response::Error)
    }

    fn register(
        &self,
        r: Register,
        peer: Option<&Arc<pokes::Peer>>,
    ) -> Result<Registered, ErrorReply> {
        reject_sandbox(&r)?;
        let mut ann = Annotations::parse(&r.annotations)
            .map_err(|e| ErrorReply::new(ErrorCode::InvalidAnnotation, e.to_string()))?;
        let parents = ancestors(&r.parents)?;
        let key = task_key(&r);
        if ann.mode == Mode::Off {
            return Ok(unmanaged(&r, &key));
        }
        let (now, wall) = (steady_ms(), wall_ms());
        let (host, task_stale_ms) = {
            let st = self.lock();
            let takes_pokes = r.pokes == Some(true);
            let (_, stale) =
                pokes::heartbeat(st.controller.config(), self.cfg.tick_ms, takes_pokes);
            (st.controller.host(), stale)
        };
        let meta = RunMetadata {
            image: r.image.clone(),
            // The pod's command line, recorded with each run for display: at most 1 KiB of it.
            command: api::bounded_command(&r.command, api::RECORDED_COMMAND_BYTES).into_owned(),
            input_bytes: ann.input_bytes,
            dependencies: ann.depends_on.len() as u32,
            requested_cpu_cores: r.limits.cpu_limit_cores,
            requested_memory_bytes: r.limits.memory_limit_bytes,
            host_load: host_load(host.cpu_cores),
        };
        let prediction = self
            .predictor
            .predict(&key, &RunFeatures::from_metadata(&meta, wall));
        let capped = apply_policy(&self.cfg, &r.annotations, &mut ann);
        qualify_references(&r.container_id, &mut ann);
        let cold = prediction.is_cold_start();
        let model_version = (!cold).then_some(prediction.model_version);
        let spec = TaskSpec {
            container_id: r.container_id.clone(),
            mode: ann.mode,
            cgroup: r.cgroup.unwrap_or(self.default_cgroup),
            priority: ann.priority,
            depends_on: ann.depends_on,
            pipeline: ann.pipeline,
            max_borrow_cpu: ann.max_borrow_cpu,
            allow_below_request: ann.allow_below_request,
            limits: r.limits,
            cpu_shares: own_cpu_shares(&r),
            parents,
            prediction: (!cold).then(|| prediction.clone()),
            started_at_ms: now,
            stale_after_ms: task_stale_ms,
        };
        let mut ops = Vec::new();
        // The block devices' schedulers (a few sysfs reads), only for a task with an I/O priority, and before the
        // lock: every Register and Report waits on it.
        let io_devices = (spec.priority != 0).then(io::host_devices);
        let (allocation, directives, records) = {
            let mut st = self.lock();
            let run = (&key, &meta, model_version, spec.pipeline.as_deref());
            if let Some((run_id, ago, f)) = st.which_run(&r, run, (now, wall))? {
                drop(st);
                return Err(self.overtaken(run_id, key, meta, (wall, ago), f));
            }
            st.controller.refresh_io_devices(io_devices);
            let (allocation, mut directives) = match r.adopt {
                Some(current) => {
                    tracing::info!(container = %r.container_id, ?current, "registered again while running: allocation adopted");
                    (current, st.controller.adopt(spec, current, now))
                }
                None => st.controller.register(spec, now),
            };
            let warm = (!cold).then_some(&prediction);
            let ask = st.net.ask(ann.egress_bytes_per_sec, warm);
            directives.extend(st.net.register_ask(
                &r.container_id,
                ask,
                ann.mode,
                r.own_netns.unwrap_or(true),
            ));
            let ask = st.net_in.ask(ann.ingress_bytes_per_sec, warm);
            directives.extend(st.net_in.register_ask(
                &r.container_id,
                ask,
                ann.mode,
                r.own_netns.unwrap_or(true) && r.net_ingress == Some(true),
            ));
            st.open_run(&r, &key, meta, model_version, (now, wall), &mut ops);
            if let Some(run) = st.running.get_mut(&r.container_id) {
                run.pokes = pokes::Pokes::new(r.pokes == Some(true), peer);
            }
            let mut records = capped_decisions(capped, &r.container_id, &key, wall, model_version);
            for d in &directives {
                let ours = d.container_id == r.container_id;
                if let Some(run) = st.running.get(&d.container_id) {
                    records.push(decision(d, run, wall, ours.then_some(cold)));
                }
            }
            (allocation, directives, records)
        };
        self.record_decisions(records, ops);
        let (own, others): (Vec<Directive>, Vec<Directive>) = directives
            .into_iter()
            .partition(|d| d.container_id == r.container_id);
        self.queue(others);
        Ok(Registered {
            task_key: key.to_string(),
            mode: ann.mode,
            cold_start: cold,
            allocation,
            directives: own,
            prediction: (!cold).then(|| crate::convert::prediction(&prediction)),
            heartbeat_ms: None,
        })
    }

    fn update(&self, u: Update) -> Result<Directives, ErrorReply> {
        let parents = u.parents.as_deref().map(ancestors).transpose()?;
        let (now, wall) = (steady_ms(), wall_ms());
        let (own, others, records) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            if !st.running.contains_key(&u.container_id) {
                return Err(ErrorReply::new(
                    ErrorCode::NotFound,
                    format!("container {} is not registered", u.container_id),
                ));
            }
            let ds = st
                .controller
                .update(&u.container_id, u.limits, parents, now)
                .ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::NotFound,
                        format!("container {} is not registered", u.container_id),
                    )
                })?;
            let records: Vec<_> = ds
                .iter()
                .filter_map(|d| {
                    st.running
                        .get(&d.container_id)
                        .map(|r| decision(d, r, wall, None))
                })
                .collect();
            let (own, others): (Vec<Directive>, Vec<Directive>) = ds
                .into_iter()
                .partition(|d| d.container_id == u.container_id);
            // Limits decided before the resize and not collected yet are stale: the reply supersedes them.
            if let Some(run) = st.running.get_mut(&u.container_id) {
                run.pending.retain(|d| {
                    !matches!(
                        d.action,
                        Action::SetCpu { .. }
                            | Action::SetMemoryHigh { .. }
                            | Action::SetMemoryLimit { .. }
                    )
                });
            }
            (own, others, records)
        };
        tracing::info!(container = %crate::validate::shown(&u.container_id, 253), limits = ?u.limits, "resized by the user");
        self.record_decisions(records, Vec::new());
        self.queue(others);
        Ok(Directives { directives: own })
    }

    fn queue(&self, ds: Vec<Directive>) {
        if ds.is_empty() {
            return;
        }
        let mut st = self.lock();
        for d in ds {
            st.push_pending(d);
        }
        drop(st);
        self.poke_pending();
    }

    fn report(
        &self,
        rep: Report,
        peer: Option<&Arc<pokes::Peer>>,
    ) -> Result<Directives, ErrorReply> {
        let mut guard = self.lock();
        let mut records = Vec::new();
        let mut samples = Vec::new();
        let r = self.take_report(&mut guard, rep, peer, &mut records, &mut samples);
        drop(guard);
        if !records.is_empty() || !samples.is_empty() {
            self.record_decisions(records, samples);
        }
        r
    }

    /// Applies one container's report under the state lock (alone or as an entry of a batch): its decisions go to
    /// `records` and its samples to `samples`, for the caller to queue in one journal submission.
    fn take_report(
        &self,
        st: &mut State,
        rep: Report,
        peer: Option<&Arc<pokes::Peer>>,
        records: &mut Vec<predictor::Decision>,
        samples: &mut Vec<BatchOp>,
    ) -> Result<Directives, ErrorReply> {
        let Some(run) = st.running.get_mut(&rep.container_id) else {
            return Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("container {} is not registered", rep.container_id),
            ));
        };
        let taken_at = steady_ms();
        run.last_seen_ms = taken_at;
        run.pokes.reported(peer);
        if let Some(why) = &rep.stopping {
            // Its owner stops it: a Freeze not yet delivered must never land, and the controller never pauses it
            // again (a pause in force ends; what that emits goes out with this reply).
            run.pending.retain(|d| d.action != Action::Freeze);
            let wall = wall_ms();
            for d in st.controller.stopping(&rep.container_id, why) {
                records.push(decision(&d, run, wall, None));
                run.pending.push(d);
            }
        }
        let mut latest = None;
        let mut fresh = Vec::new();
        let mut oom = rep.oom_events > 0;
        for s in rep.samples {
            if let Some(prev) = &run.prev
                && let Some((usage, sample, throttled_s)) = rates(prev, &s, oom)
            {
                oom = false;
                let st = &mut run.stats;
                let dt = s.monotonic_ns.saturating_sub(prev.monotonic_ns) as f64 / 1e9;
                reports::push_readings(&mut st.cpu, usage.cpu_cores, dt, self.cfg.tick_ms);
                st.cpu_seconds += usage.cpu_cores * dt;
                st.io_bytes = st.io_bytes.saturating_add(sample.io_bytes);
                st.throttled_s += throttled_s;
                st.samples += 1;
                if !st.host_network {
                    st.net_tx.add(usage.net_tx_bytes_per_sec, dt);
                    st.net_rx.add(usage.net_rx_bytes_per_sec, dt);
                }
                fresh.push(sample);
                latest = Some(usage);
            }
            let peak = s
                .memory
                .peak_bytes
                .unwrap_or(0)
                .max(s.memory.usage_bytes.unwrap_or(0));
            run.stats.peak_memory = run.stats.peak_memory.max(peak);
            run.prev = Some(s);
        }
        if let Some(mut u) = latest {
            // Fresh as of when the broker took it, on its own steady clock: never the shim's wall clock, which may
            // have stepped, or lie.
            u.at_ms = taken_at;
            st.controller.observe(&rep.container_id, u);
            st.net.observe(&rep.container_id, u.net_tx_bytes_per_sec);
            st.net_in.observe(&rep.container_id, u.net_rx_bytes_per_sec);
        }
        let directives = std::mem::take(&mut run.pending);
        if !fresh.is_empty() {
            samples.push(BatchOp::Samples(run.run_id, fresh));
        }
        Ok(Directives { directives })
    }

    fn finish(&self, f: Finish) -> Result<Finished, ErrorReply> {
        let (now, wall) = (steady_ms(), wall_ms());
        let id = &f.container_id;
        let (run, records, others) = {
            let mut st = self.lock();
            let of_this_run = match (st.running.get(id).map(|r| r.created_ns), f.created_ns) {
                (None, _) => false,
                (Some(Some(r)), Some(c)) => r == c,
                (Some(_), _) => true,
            };
            st.ends.ended(id, f.created_ns, now);
            if !of_this_run {
                // A run that a later one replaced (`runs.rs`) is recorded now.
                if let Some(c) = f.created_ns
                    && let Some((_, run)) = st.replaced.remove(&(id.clone(), c))
                {
                    drop(st);
                    return Ok(self.record_run(run, &f, now, None, Vec::new()));
                }
                st.ends.keep_early(f.clone(), now);
                return Err(ErrorReply::new(
                    ErrorCode::NotFound,
                    format!(
                        "container {:?} is not registered",
                        crate::validate::shown(id, 128)
                    ),
                ));
            }
            let run = st
                .running
                .remove(id)
                .expect("registered: looked up just now");
            let mut ds = st.controller.unregister(id, now);
            ds.extend(st.net.unregister(id));
            ds.extend(st.net_in.unregister(id));
            let records: Vec<_> = ds
                .iter()
                .filter_map(|d| {
                    st.running
                        .get(&d.container_id)
                        .map(|r| decision(d, r, wall, None))
                })
                .collect();
            (run, records, ds)
        };
        self.queue(others);
        Ok(self.record_run(run, &f, now, Some(id.clone()), records))
    }

    /// Records `run` as `f` ended it, with `records` (decisions) in the same submission; `container`: the
    /// container whose open run in the store it closes (none for a run a later one replaced).
    fn record_run(
        &self,
        run: Running,
        f: &Finish,
        now: u64,
        container: Option<String>,
        records: Vec<predictor::Decision>,
    ) -> Finished {
        let measured_s = now.saturating_sub(run.started_steady_ms) as f64 / 1000.0;
        let outcome = outcome(f, &run.stats, measured_s);
        let duration_s = outcome.duration_s;
        let samples = run.stats.samples;
        // A run ends no later than its Finish: one that says it ran longer than since its Register (registered
        // late, or again after a restart) started that much earlier.
        let started_at_ms = run
            .started_at_ms
            .min(wall_ms().saturating_sub((duration_s * 1000.0) as u64));
        let summary = RunSummary {
            run_id: run.run_id,
            task_key: run.task_key,
            started_at_ms,
            meta: run.meta,
            outcome,
            profile: None,
        };
        self.record_decisions(
            records,
            vec![BatchOp::Run {
                container_id: container,
                run: Box::new(summary),
            }],
        );
        Finished {
            duration_s,
            samples,
        }
    }

    /// The answer to a Register whose Finish (`f`, taken `ago_ms` before it) came first: a shim whose Register went
    /// unanswered in its budget (a stalled broker) sends the Finish on another connection, which the broker may
    /// read first. Nothing is registered (the answer says so); the run is recorded, as run `run_id`, from the
    /// Register (its task type and metadata) and the Finish, when the Finish says how long it ran (`ran_ms`; an
    /// older shim's does not, and its run is lost as before).
    fn overtaken(
        &self,
        run_id: u64,
        task_key: TaskKey,
        meta: RunMetadata,
        (wall, ago_ms): (u64, u64),
        f: Finish,
    ) -> ErrorReply {
        let shown = crate::validate::shown(&f.container_id, 128);
        let Some(ran_ms) = f.ran_ms else {
            return ErrorReply::new(
                ErrorCode::NotFound,
                format!(
                    "container {shown:?} already finished: its Finish came before this Register (a shim that gave \
                     up waiting); not registered"
                ),
            );
        };
        let outcome = outcome(&f, &RunStats::default(), 0.0);
        tracing::info!(container = %crate::validate::shown(&f.container_id, 253), run = run_id, "its Finish came before its Register: the run is recorded from both, not registered");
        self.record_decisions(
            Vec::new(),
            vec![BatchOp::Run {
                container_id: None,
                run: Box::new(RunSummary {
                    run_id,
                    task_key,
                    started_at_ms: wall.saturating_sub(ago_ms).saturating_sub(ran_ms),
                    meta,
                    outcome,
                    profile: None,
                }),
            }],
        );
        ErrorReply::new(
            ErrorCode::NotFound,
            format!(
                "container {shown:?} already finished: its Finish came before this Register (a shim that gave up \
                 waiting); the run is recorded from both, not registered"
            ),
        )
    }

    /// The status; one page of its tasks (in container id order) when `page` is given.
    fn status(&self, page: Option<&api::Page>) -> Status {
        let st = self.lock();
        let mut tasks = st.controller.tasks();
        for t in &mut tasks {
            t.net = st.net.view(&t.container_id);
            t.net_ingress = st.net_in.view(&t.container_id);
        }
        let total = tasks.len() as u64;
        let mut next_offset = None;
        if let Some(p) = page {
            let (from, n) = page_bounds(p.offset, p.limit, api::MAX_PAGE as u64);
            tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
            tasks = tasks
                .into_iter()
                .skip(from as usize)
                .take(n as usize)
                .collect();
            if from + n < total {
                next_offset = Some(from + n);
            }
        }
        let mut leases = st.controller.leases();
        // The controller's times are steady (`clock.rs`): shown on the wall clock.
        let wall = crate::clock::on_wall();
        for t in &mut tasks {
            if let Some(u) = &mut t.usage {
                u.at_ms = wall(u.at_ms);
            }
        }
        for l in &mut leases {
            l.granted_at_ms = wall(l.granted_at_ms);
            l.expires_at_ms = wall(l.expires_at_ms);
        }
        let mut predictions = self.tracker.predictions();
        if page.is_some() {
            // A page carries the leases held by, and the predictions of, its own tasks.
            let ids: std::collections::HashSet<&str> =
                tasks.iter().map(|t| t.container_id.as_str()).collect();
            leases.retain(|l| ids.contains(l.holder.as_str()));
            predictions.retain(|p| ids.contains(p.container_id.as_str()));
        }
        Status {
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            tick_ms: self.cfg.tick_ms,
            host: st.controller.host(),
            model_version: self.predictor.model_version(),
            tasks,
            total_tasks: Some(total),
            next_offset,
            leases,
            predictions,
            pool: st.controller.pool_source().to_owned(),
        }
    }

    fn models(&self, p: &api::Page) -> Result<Models, ErrorReply> {
        let all = self.predictor.task_types().map_err(|e| {
            ErrorReply::new(ErrorCode::Internal, format!("listing task types: {e}"))
        })?;
        let total = all.len() as u64;
        let (from, n) = page_bounds(p.offset, p.limit, api::MAX_PAGE as u64);
        Ok(Models {
            model_version: self.predictor.model_version(),
            task_types: all
                .iter()
                .skip(from as usize)
                .take(n as usize)
                .map(crate::convert::task_type)
                .collect(),
            total: Some(total),
            next_offset: (from + n < total).then_some(from + n),
        })
    }

    /// One controller step: decisions are queued for their containers, recorded and logged.
    pub fn tick(&self) {
        let started = Instant::now();
        let (now, wall) = (steady_ms(), wall_ms());
        let (records, forgotten, closes) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let forgotten: Vec<String> = st
                .running
                .iter()
                .filter(|(_, r)| now.saturating_sub(r.last_seen_ms) > FORGET_AFTER_MS)
                .map(|(k, _)| k.clone())
                .collect();
            let mut ds = Vec::new();
            let mut closes = Vec::new();
            for id in &forgotten {
                if let Some(r) = st.running.remove(id) {
                    closes.push(BatchOp::Close(id.clone(), r.run_id));
                }
                ds.extend(st.controller.unregister(id, now));
                ds.extend(st.net.unregister(id));
                ds.extend(st.net_in.unregister(id));
            }
            if !st.orphans.is_empty() && now.saturating_sub(st.started_ms) > FORGET_AFTER_MS {
                closes.extend(
                    st.orphans
                        .drain()
                        .map(|(id, o)| BatchOp::Close(id, o.run_id)),
                );
            }
            ds.extend(st.controller.tick(now));
            ds.extend(st.net.tick());
            ds.extend(st.net_in.tick());
            let mut records = Vec::new();
            for d in ds {
                if let Some(r) = st.running.get(&d.container_id) {
                    records.push(decision(&d, r, wall, None));
                }
                st.push_pending(d);
            }
            (records, forgotten, closes)
        };
        for id in forgotten {
            tracing::warn!(container = %crate::validate::shown(&id, 253), "no report for 10 minutes: forgotten");
        }
        self.record_decisions(records, closes);
        self.poke_pending();
        self.persist_leases();
        self.latencies.tick.observe(started.elapsed());
    }

    /// Writes the live leases to [`Config::leases_file`] when they changed since the last write — a lease added,
    /// ended or resized; renewals (a later `expires_at_ms`) alone do not count, a restored lease gets a fresh
    /// grace anyway. One write of the whole file to a temporary, fsync, rename: a reader sees the old or the
    /// new set, never half of one.
    pub fn persist_leases(&self) {
        let leases = self.lock().controller.leases();
        let key = |ls: &[crate::controller::Lease]| -> Vec<(u64, String, Option<String>, u64)> {
            ls.iter()
                .map(|l| {
                    (
                        l.id,
                        l.holder.clone(),
                        l.lender.clone(),
                        (l.amount * 1e6) as u64,
                    )
                })
                .collect()
        };
        let mut last = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref().map(key) == Some(key(&leases)) {
            return;
        }
        let path = self.cfg.leases_file();
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let body = serde_json::to_vec(&leases).map_err(std::io::Error::other)?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => *last = Some(leases),
            Err(e) => tracing::error!(error = %e, path = %path.display(), "persisting leases"),
        }
    }

    /// Waits until everything handed to the recorder so far is committed (or the recorder is gone).
    pub fn sync(&self) {
        let _ = self.journal.wait(self.journal.submitted(), DURABLE_WITHIN);
    }
}

/// Read access for the metrics endpoint.
impl Broker {
    /// Per-container history and counters.
    pub fn tracker(&self) -> &crate::history::Tracker {
        &self.tracker
    }

    /// What `status` answers, every task in one.
    pub fn snapshot(&self) -> Status {
        self.status(None)
    }

    /// Hands memory freed by ended connections back to the kernel once a surge is over: when at least
    /// [`TRIM_AFTER`] fewer connections are served than at the peak since the last time. glibc keeps what a thread
    /// freed in its arena (up to 8 per core) and returns only the free top of each, so the buffers of a few thousand
    /// closed connections stayed resident (36 MB after a 5,000-connection flood, docs/BENCHMARKS.md);
    /// `malloc_trim(0)` releases the free pages of every arena. Called by the tick thread, off the state lock.
    pub fn release_memory(&self) -> bool {
        let now = self.conns.load(Ordering::Relaxed);
        let peak = self.conns_peak.load(Ordering::Relaxed);
        if peak < now + TRIM_AFTER {
            return false;
        }
        self.conns_peak.store(now, Ordering::Relaxed);
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no pointer of ours.
        unsafe {
            libc::malloc_trim(0);
        }
        true
    }

    /// Register and tick latencies, for the metrics endpoint.
    pub fn latencies(&self) -> &crate::metrics::Latencies {
        &self.latencies
    }

    /// `[metrics] max_bytes`.
    pub fn metrics_max_bytes(&self) -> usize {
        self.cfg.metrics.max_bytes
    }

    /// The daemon is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl crate::metrics::Source for Broker {
    fn stopping(&self) -> bool {
        Broker::is_stopping(self)
    }
    fn tracker(&self) -> &crate::history::Tracker {
        Broker::tracker(self)
    }
    fn snapshot(&self) -> Status {
        Broker::snapshot(self)
    }
    fn latencies(&self) -> &crate::metrics::Latencies {
        Broker::latencies(self)
    }
    fn max_bytes(&self) -> usize {
        Broker::metrics_max_bytes(self)
    }
}

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Root or the broker's own uid: every request.
    Full,
    /// A member of `allowed_gid`: reads only (`status`, `models`, `explain`, `history`).
    ReadOnly,
}

/// Who may talk to the broker.
fn peer_access(stream: &UnixStream, allowed_gid: Option<u32>) -> Result<Access, String> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| format!("reading SO_PEERCRED: {e}"))?;
    let (uid, gid) = (cred.uid(), cred.gid());
    access(uid, gid, nix::unistd::geteuid().as_raw(), allowed_gid)
        .ok_or_else(|| format!("uid {uid} gid {gid} may not use the broker"))
}

/// The SO_PEERCRED rule: root and the broker's own uid have full access, the configured group (the peer's primary
/// gid) read-only access, anyone else none.
pub fn access(uid: u32, gid: u32, own_uid: u32, allowed_gid: Option<u32>) -> Option<Access> {
    if uid == 0 || uid == own_uid {
        Some(Access::Full)
    } else if allowed_gid == Some(gid) {
        Some(Access::ReadOnly)
    } else {
        None
    }
}

/// The SO_PEERCRED rule: root, the broker's own uid, or the configured group (the peer's primary gid).
pub fn may_connect(uid: u32, gid: u32, own_uid: u32, allowed_gid: Option<u32>) -> bool {
    uid == 0 || uid == own_uid || allowed_gid == Some(gid)
}

fn write_response(mut w: &UnixStream, id: Option<u64>, resp: &Response) -> std::io::Result<()> {
    let line = api::encode_response(id, resp).unwrap_or_else(|e| {
        let err = Response::Error(ErrorReply::new(ErrorCode::Internal, e.to_string()));
        api::encode_response(id, &err).unwrap_or_else(|_| "{}\n".to_owned())
    });
    w.write_all(line.as_bytes())
}

/// Stack of a connection's thread: serving a request recurses nowhere deep (the critical path is iterative,
/// serde_json bounds nesting at 128), so 256 KiB is plenty; the default 8 MiB made 5,000 shims cost 40 GiB of
/// address space.
const CONN_STACK: usize = 256 << 10;
/// Connections fewer than the peak that make the tick thread hand freed memory back ([`Broker::release_memory`]).
const TRIM_AFTER: usize = 256;
/// Connections of root or the broker's uid served beyond `max_connections`.
const ADMIN_RESERVE: usize = 32;
/// A peer that does not read its replies is cut off after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection on one fd (reads and writes through `&UnixStream`, no `try_clone`).
fn serve_connection(broker: Arc<Broker>, stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let access = match peer_access(&stream, broker.cfg.allowed_gid) {
        Ok(a) => a,
        Err(why) => {
            broker.log_limited(|| tracing::warn!(%why, "connection refused"));
            let _ = write_response(
                &stream,
                None,
                &Response::Error(ErrorReply::new(ErrorCode::PermissionDenied, why)),
            );
            return;
        }
    };
    // Every write (a reply, a poke from the tick thread) goes through the peer; reads do not lock.
    let peer = pokes::Peer::new(stream);
    let stream = &peer.stream;
    // Until it shows itself a shim (a write request), a connection is a client with an idle timeout.
    let idle =
        (broker.cfg.idle_timeout_ms > 0).then(|| Duration::from_millis(broker.cfg.idle_timeout_ms));
    let _ = stream.set_read_timeout(idle);
    let mut shim = false;
    let mut reader = BufReader::with_capacity(4096, stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(api::MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if buf.last() != Some(&b'\n') && n >= api::MAX_LINE {
            let _ = peer.reply(
                None,
                &Response::Error(ErrorReply::new(
                    ErrorCode::TooLong,
                    format!("a line is at most {} bytes", api::MAX_LINE),
                )),
            );
            return;
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        let (id, req) = api::parse_request(&line);
        let resp = match req {
            Ok(req) if req.writes() && access == Access::ReadOnly => {
                Response::Error(ErrorReply::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "a member of allowed_gid has read-only access: {} needs root or the broker's uid",
                        crate::history::request_kind(&req)
                    ),
                ))
            }
            Ok(req) => {
                if req.writes() && !shim {
                    shim = true;
                    let _ = stream.set_read_timeout(None);
                }
                broker.handle_on(req, Some(&peer))
            }
            Err(e) => Response::Error(e),
        };
        if peer.reply(id, &resp).is_err() {
            return;
        }
    }
}

/// Serves a new connection on its own small thread, or refuses it when [`Config::max_connections`] are served.
fn accept_one(b: &Arc<Broker>, s: UnixStream) {
    let n = b.conns.fetch_add(1, Ordering::Relaxed) + 1;
    b.conns_peak.fetch_max(n, Ordering::Relaxed);
    // Past the cap, a few more connections of root or our own uid are still served: an operator's `status` gets
    // through a flood from the read-only group or strangers.
    let over = n > b.cfg.max_connections
        && (n > b.cfg.max_connections + ADMIN_RESERVE
            || peer_access(&s, b.cfg.allowed_gid) != Ok(Access::Full));
    if over {
        b.conns.fetch_sub(1, Ordering::Relaxed);
        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
        let why = format!(
            "the broker serves its maximum of {} connections (max_connections); try again later",
            b.cfg.max_connections
        );
        b.log_limited(|| {
            tracing::warn!(
                max = b.cfg.max_connections,
                "connection refused: too many connections"
            )
        });
        let _ = write_response(
            &s,
            None,
            &Response::Error(ErrorReply::new(ErrorCode::TooManyConnections, why)),
        );
        return;
    }
    let b2 = Arc::clone(b);
    let started = std::thread::Builder::new()
        .name("predictived-conn".to_owned())
        .stack_size(CONN_STACK)
        .spawn(move || {
            serve_connection(Arc::clone(&b2), s);
            b2.conns.fetch_sub(1, Ordering::Relaxed);
        });
    if let Err(e) = started {
        b.conns.fetch_sub(1, Ordering::Relaxed);
        b.log_limited(|| tracing::warn!(error = %e, "starting a connection's thread"));
    }
}

/// Most glibc malloc arenas. By default glibc gives threads up to 8 arenas per core, and what thousands of connection
/// threads freed stayed spread over them (~1.5 MB resident each, not all returned even by `malloc_trim`); two arenas
/// and [`Broker::release_memory`] bring RSS back to where it started after a 5,000-connection flood
/// (docs/BENCHMARKS.md). Connection threads spend their time waiting on sockets and the state lock, not in malloc.
const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] before the broker's threads start (a `MALLOC_ARENA_MAX` in the
/// environment wins).
fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets a glibc tunable; called before this process starts its own threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// Raises this process's open-file soft limit to its hard limit (one fd per connection); returns the new soft
/// limit.
pub fn raise_nofile() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "raising the open-file limit"
            );
            return Some(lim.rlim_cur);
        }
        return Some(lim.rlim_max);
    }
    Some(lim.rlim_cur)
}

/// The leases a previous run persisted; none when the file is missing or unreadable (said in the log).
fn read_leases(path: &Path) -> Vec<crate::controller::Lease> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(error = %e, path = %path.display(), "ignoring an unreadable lease file");
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "reading the lease file");
            Vec::new()
        }
    }
}

/// A running daemon; [`Daemon::shutdown`] stops it and drains the recorder.
pub struct Daemon {
    broker: Arc<Broker>,
    threads: Vec<JoinHandle<()>>,
    recorder: Option<JoinHandle<()>>,
    socket: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

fn create_dir(path: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(path).map_err(|source| ServerError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` (and its parents) and makes it mode 0700 owned by us, whatever the umask; refuses a symlink.
fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    create_dir(path)?;
    let err = |source| ServerError::CreateDir {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::other("not a directory (a symlink?)")));
    }
    if meta.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Binds the API socket so that no other user ever sees it with a wider mode than the final one, and nobody else
/// can swap it: its directory must be ours (created 0755 if missing) and not writable by others; the socket is
/// bound under a temporary name with umask 0177, given its group and mode there, then renamed into place.
fn bind_socket(path: &Path, allowed_gid: Option<u32>) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::MetadataExt;
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        create_dir(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(bind_err)?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(bind_err)?;
    let me = nix::unistd::geteuid().as_raw();
    // A sticky world-writable directory (/tmp) is fine: nobody else can rename or remove our files there.
    let sticky = meta.mode() & 0o1000 != 0;
    if !meta.is_dir() || meta.uid() != me && meta.uid() != 0 || meta.mode() & 0o022 != 0 && !sticky
    {
        return Err(bind_err(std::io::Error::other(format!(
            "the socket's directory {} must be a directory owned by uid {me} or root and not writable by others",
            dir.display()
        ))));
    }
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(&tmp);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(bind_err)?;
    let secure = || -> std::io::Result<()> {
        let mode = if let Some(gid) = allowed_gid {
            nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(gid)))?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        // We hold the lock, so a socket file at `path` is a dead broker's: the rename replaces it atomically.
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = secure() {
        let _ = std::fs::remove_file(&tmp);
        return Err(bind_err(e));
    }
    Ok(listener)
}

fn spawn(
    what: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name(format!("predictived-{what}"))
        .spawn(f)
        .map_err(|source| ServerError::Spawn { what, source })
}

/// Sleeps `total`; `false` when asked to stop.
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    // Parked, not polled: an idle broker wakes once per period; `Daemon::shutdown` unparks the threads.
    let until = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match until.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => std::thread::park_timeout(left),
            _ => return true,
        }
    }
}

/// Takes the state dir's lock file (one daemon per state dir) and writes our pid into it.
fn lock_pid_file(cfg: &Config) -> Result<nix::fcntl::Flock<std::fs::File>, ServerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = cfg.lock_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(|source| ServerError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| ServerError::Locked {
            path: lock_path.clone(),
        })?;
    let _ = lock.set_len(0);
    let _ = writeln!(*lock, "{}", std::process::id());
    Ok(lock)
}

/// The predictor's settings from the daemon's config.
fn predictor_config(cfg: &Config) -> PredictorConfig {
    let mut pcfg = PredictorConfig::default();
    pcfg.retrain.interval_ms = cfg.retrain.interval_ms;
    pcfg.retrain.new_runs = cfg.retrain.new_runs;
    pcfg.retrain.refit_growth = cfg.retrain.refit_growth;
    if let Some(m) = cfg.retrain.min_runs {
        pcfg.train.min_runs = m;
    }
    const DAY_MS: u64 = 24 * 3_600_000;
    pcfg.store.cache_bytes = Some(cfg.store_cache_bytes);
    pcfg.retention.max_decisions = cfg.max_decisions;
    pcfg.retention.max_decision_age_ms = cfg.decision_retention_days.saturating_mul(DAY_MS);
    pcfg.retention.max_task_types = cfg.max_task_types;
    pcfg.retention.max_task_type_age_ms = cfg.task_type_retention_days.saturating_mul(DAY_MS);
    pcfg
}

/// The accept, tick and retrain threads.
fn spawn_workers(
    broker: &Arc<Broker>,
    listener: UnixListener,
) -> Result<Vec<std::thread::JoinHandle<()>>, ServerError> {
    let mut threads = Vec::new();
    {
        let b = Arc::clone(broker);
        threads.push(spawn("accept", move || {
            for conn in listener.incoming() {
                if b.stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn {
                    Ok(s) => accept_one(&b, s),
                    Err(e) => {
                        b.log_limited(|| tracing::warn!(error = %e, "accepting a connection"));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })?);
    }
    {
        let b = Arc::clone(broker);
        threads.push(spawn("tick", move || {
            let tick = Duration::from_millis(b.cfg.tick_ms);
            while sleep_unless_stopped(&b.stop, tick) {
                b.tick();
                b.tracker.observe(&b.snapshot());
                b.release_memory();
            }
        })?);
    }
    {
        let b = Arc::clone(broker);
        threads.push(spawn("retrain", move || {
            let every = Duration::from_millis(b.cfg.retrain_check_ms.max(1));
            let mut imports = crate::transfer::Watcher::default();
            loop {
                let now = wall_ms();
                if let Some(dir) = &b.cfg.import.dir {
                    imports.scan(&b.predictor, dir, b.cfg.import.max_file_bytes, now);
                }
                if let Err(e) = b.predictor.maybe_retrain(now) {
                    tracing::error!(error = %e, "retraining");
                }
                if let Err(e) = b.predictor.apply_retention(now) {
                    tracing::error!(error = %e, "applying retention");
                }
                if !sleep_unless_stopped(&b.stop, every) {
                    break;
                }
            }
        })?);
    }
    Ok(threads)
}

/// Opens the predictor's store. A file whose content is damaged (garbage, a truncated copy) is set aside as
/// `<file>.corrupt-<unix seconds>`, kept for whoever wants to look at it, and the broker starts on an empty store:
/// the node goes on allocating and learns again, where refusing to start would leave every container on its spec
/// limits until someone removed the file. Any other failure (permissions, I/O, a newer schema, the lock) stays an
/// error.
fn open_predictor(path: &Path, cfg: predictor::PredictorConfig) -> Result<Predictor, ServerError> {
    match Predictor::open(path, cfg.clone()) {
        Err(predictor::PredictorError::Store(e)) if e.is_corrupt() => {
            let secs = wall_ms() / 1000;
            let mut aside = path.as_os_str().to_owned();
            aside.push(format!(".corrupt-{secs}"));
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|source| ServerError::SetAside {
                path: path.to_path_buf(),
                source,
            })?;
            tracing::error!(
                file = %path.display(),
                kept_as = %aside.display(),
                error = %crate::error_chain(&e),
                "the predictor store is damaged: set aside, starting on an empty one (its history is not predicted from)"
            );
            Ok(Predictor::open(path, cfg)?)
        }
        r => Ok(r?),
    }
}

impl Daemon {
    /// Takes the lock, opens the store, binds the socket and starts every thread.
    pub fn start(cfg: Config) -> Result<Self, ServerError> {
        limit_arenas();
        let nofile = raise_nofile();
        // The state dir holds containers' command lines: ours alone, whatever the umask.
        create_private_dir(&cfg.state_dir)?;
        let lock = lock_pid_file(&cfg)?;

        let pcfg = predictor_config(&cfg);
        let predictor = Arc::new(open_predictor(&cfg.database(), pcfg)?);
        for f in &cfg.import.files {
            crate::transfer::import_file(&predictor, f, cfg.import.max_file_bytes, wall_ms())?;
        }

        let listener = bind_socket(&cfg.socket, cfg.allowed_gid)?;

        let host = {
            let d = detect_host();
            HostCapacity {
                cpu_cores: cfg.host_cpu_cores.unwrap_or(d.cpu_cores),
                memory_bytes: cfg.host_memory_bytes.unwrap_or(d.memory_bytes),
            }
        };
        let default_cgroup = cfg.cgroup.unwrap_or_else(|| {
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                CgroupKind::V2
            } else {
                CgroupKind::V1
            }
        });
        let journal = crate::journal::Journal::new(JOURNAL_CAP);
        let recorder_thread = {
            let (p, j) = (Arc::clone(&predictor), Arc::clone(&journal));
            spawn("recorder", move || j.run_recorder(&p))?
        };
        let next_run = predictor.store().next_run_id()?;
        let orphans: HashMap<String, predictor::OpenRun> = predictor
            .store()
            .open_runs()?
            .into_iter()
            .map(|o| (o.container_id.clone(), o))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                runs = orphans.len(),
                "runs of the previous process are open; they carry on when their shims register again"
            );
        }
        if cfg.controller.memory_reserve(host.memory_bytes)
            < cfg.controller.host_reserve_memory_bytes
        {
            tracing::warn!(
                reserve = cfg.controller.host_reserve_memory_bytes,
                host_memory = host.memory_bytes,
                "controller.host_reserve_memory_bytes is more than half this host's memory; half is kept back"
            );
        }
        let mut controller = Controller::new(cfg.controller.clone(), host);
        // An operator who sized the host keeps that size; otherwise a node's kubepods limits are the pool.
        controller
            .use_kubepods_pool(cfg.host_cpu_cores.is_none() && cfg.host_memory_bytes.is_none());
        let restored = read_leases(&cfg.leases_file());
        if !restored.is_empty() {
            tracing::info!(
                leases = restored.len(),
                "restored the leases of the previous run; they wait for their shims to register again"
            );
        }
        controller.restore_leases(restored.clone(), steady_ms());
        let broker = Arc::new(Broker {
            persisted: Mutex::new(Some(restored)),
            state: Mutex::new(State {
                controller,
                net: crate::controller::net::NetShaper::new(cfg.network.clone()),
                net_in: crate::controller::net::NetShaper::ingress(cfg.network.clone()),
                running: HashMap::new(),
                next_run,
                orphans,
                ends: runs::Ends::default(),
                replaced: HashMap::new(),
                started_ms: steady_ms(),
                to_poke: Vec::new(),
            }),
            cfg,
            predictor,
            journal,
            default_cgroup,
            stop: AtomicBool::new(false),
            tracker: crate::history::Tracker::default(),
            conns: std::sync::atomic::AtomicUsize::new(0),
            conns_peak: std::sync::atomic::AtomicUsize::new(0),
            last_warning_ms: std::sync::atomic::AtomicU64::new(0),
            latencies: crate::metrics::Latencies::default(),
        });
        let mut threads = spawn_workers(&broker, listener)?;
        if let Some(t) = crate::metrics::start(
            &broker.cfg.metrics,
            broker.cfg.allowed_gid,
            Arc::clone(&broker),
        )? {
            threads.push(t);
        }
        tracing::info!(
            socket = %broker.cfg.socket.display(),
            state_dir = %broker.cfg.state_dir.display(),
            cpu = host.cpu_cores,
            memory = host.memory_bytes,
            cgroup = ?default_cgroup,
            open_files = ?nofile,
            max_connections = broker.cfg.max_connections,
            "predictived serving"
        );
        Ok(Self {
            socket: broker.cfg.socket.clone(),
            broker,
            threads,
            recorder: Some(recorder_thread),
            _lock: lock,
        })
    }

    /// The shared core (for in-process use).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, flushes samples, drains the recorder and joins the threads.
    pub fn shutdown(mut self) {
        self.broker.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.socket);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.broker.sync();
        let _ = std::fs::remove_file(&self.socket);
        self.broker.journal.stop();
        if let Some(r) = self.recorder.take() {
            let _ = r.join();
        }
        tracing::info!("predictived stopped");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), ServerError> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked before any thread starts, so every thread inherits the mask and only sigwait sees them.
    if let Err(e) = set.thread_block() {
        tracing::warn!(error = %e, "blocking SIGTERM; a signal will kill without draining");
    }
    let daemon = Daemon::start(cfg)?;
    let sig = set.wait();
    tracing::info!(signal = ?sig, "stopping");
    daemon.shutdown();
    Ok(())
}

/// A pod sandbox (CRI's pause container) is never predicted or enforced: its Register is refused by name.
fn reject_sandbox(r: &Register) -> Result<(), ErrorReply> {
    if r.annotations
        .get(predictor::CRI_CONTAINER_TYPE_ANNOTATION)
        .is_some_and(|t| t == "sandbox")
    {
        return Err(ErrorReply::new(
            ErrorCode::InvalidRequest,
            format!(
                "container {:?} is a pod sandbox ({}=sandbox): a sandbox is never predicted or enforced",
                r.container_id,
                predictor::CRI_CONTAINER_TYPE_ANNOTATION
            ),
        ));
    }
    Ok(())
}

/// The CPU weight a task started with, when it is the broker's to raise: the spec's request x 1024 (what
/// `--cpu-shares` wrote), or the kernel's default 1024. `None` for a container of a Kubernetes pod: kubelet sets its
/// pod's and containers' weights from their requests (2 for a BestEffort pod), and those stand.
fn own_cpu_shares(r: &Register) -> Option<u64> {
    if r.annotations
        .contains_key(predictor::CRI_CONTAINER_TYPE_ANNOTATION)
    {
        return None;
    }
    Some(
        r.limits
            .cpu_request_cores
            .map_or(1024, |c| (c * 1024.0).round().clamp(2.0, 262_144.0) as u64),
    )
}

/// The answer for a task whose mode is `off`: its spec limits, untouched, and nothing recorded.
fn unmanaged(r: &Register, key: &TaskKey) -> Registered {
    Registered {
        task_key: key.to_string(),
        mode: Mode::Off,
        cold_start: true,
        allocation: Allocation {
            cpu_cores: r.limits.cpu_limit_cores,
            memory_bytes: r.limits.memory_limit_bytes,
            memory_max_bytes: r.limits.memory_limit_bytes,
        },
        directives: Vec::new(),
        prediction: None,
        heartbeat_ms: None,
    }
}

/// The task type of a Register: from its annotations, image and command (at most `MAX_COMMAND_BYTES` of the
/// command, the pod's to choose, as a shim sends it: any shim's Register of one command gives one task type).
fn task_key(r: &Register) -> TaskKey {
    let annotations: HashMap<String, String> = r
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    TaskKey::derive(
        &annotations,
        &r.image,
        &api::bounded_command(&r.command, api::MAX_COMMAND_BYTES),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_rule_admits_root_and_own_uid_fully_and_the_group_read_only() {
        assert_eq!(access(0, 0, 1000, None), Some(Access::Full));
        assert_eq!(access(1000, 1000, 1000, None), Some(Access::Full));
        assert_eq!(access(1001, 1001, 1000, None), None);
        assert_eq!(access(1001, 50, 1000, Some(50)), Some(Access::ReadOnly));
        assert_eq!(access(1001, 51, 1000, Some(50)), None);
    }

    fn raw(t: u64, usage_ns: u64, periods: u64, throttled: u64) -> runtime_hooks::Sample {
        runtime_hooks::Sample {
            unix_ns: 1_000_000_000 + t,
            monotonic_ns: t,
            cpu: runtime_hooks::CpuSample {
                usage_ns: Some(usage_ns),
                nr_periods: Some(periods),
                nr_throttled: Some(throttled),
                throttled_ns: Some(0),
            },
            ..runtime_hooks::Sample::default()
        }
    }

    #[test]
    fn rates_turn_counters_into_cores_and_throttled_share() {
        let (u, s, _) = rates(
            &raw(0, 0, 0, 0),
            &raw(500_000_000, 750_000_000, 10, 4),
            true,
        )
        .expect("rate");
        assert!((u.cpu_cores - 1.5).abs() < 1e-9);
        assert!((u.cpu_throttled_fraction - 0.4).abs() < 1e-9);
        assert!(u.under_oom);
        assert_eq!((s.ts_ms, u.at_ms), (1500, 1500));
        assert!(
            rates(&raw(5, 0, 0, 0), &raw(5, 10, 0, 0), false).is_none(),
            "no time passed"
        );
    }

    #[test]
    fn the_cpu_stall_of_the_interval_alone_comes_from_the_psi_totals() {
        let with_stall = |t: u64, total_us: u64, avg10: f64| {
            let mut s = raw(t, 0, 0, 0);
            s.pressure.cpu = Some(runtime_hooks::Pressure {
                some: runtime_hooks::PsiLine {
                    avg10,
                    total_us,
                    ..runtime_hooks::PsiLine::default()
                },
                full: None,
            });
            s
        };
        let usage = |a, b| rates(&a, &b, false).expect("rate").0;
        // 0.3 s stalled in a 0.5 s interval: 60%, while the 10 s average still says 4%.
        let u = usage(
            with_stall(1_000_000_000, 2_000_000, 0.0),
            with_stall(1_500_000_000, 2_300_000, 4.0),
        );
        assert_eq!(u.cpu_psi_avg10, Some(4.0));
        assert!((u.cpu_psi_recent.expect("both read") - 60.0).abs() < 1e-9);
        // A total that went back (a shim's bad reading) is no stall; one not read is none.
        let back = usage(
            with_stall(0, 9_000_000, 0.0),
            with_stall(1_000_000_000, 1_000, 0.0),
        );
        assert_eq!(back.cpu_psi_recent, Some(0.0));
        let unread = usage(raw(0, 0, 0, 0), with_stall(1_000_000_000, 1_000, 0.0));
        assert_eq!(unread.cpu_psi_recent, None);
        // More stall than time (counters from two cgroups) is capped at all of it.
        let over = usage(
            with_stall(0, 0, 0.0),
            with_stall(1_000_000_000, 5_000_000, 0.0),
        );
        assert_eq!(over.cpu_psi_recent, Some(100.0));
    }

    #[test]
    fn a_containers_dependencies_and_pipeline_stay_in_its_namespace() {
        let map: std::collections::BTreeMap<String, String> = [
            ("io.predictive.depends-on", "db,cache"),
            ("io.predictive.pipeline", "etl"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let of = |id: &str| {
            let mut ann = Annotations::parse(&map).expect("valid");
            qualify_references(id, &mut ann);
            (ann.depends_on, ann.pipeline.unwrap_or_default())
        };
        assert_eq!(
            of("a/web"),
            (
                vec!["a/db".to_owned(), "a/cache".to_owned()],
                "a/etl".to_owned()
            )
        );
        assert_eq!(
            of("web"),
            (vec!["db".to_owned(), "cache".to_owned()], "etl".to_owned()),
            "containerd's default namespace: bare names, as before"
        );
    }

    #[test]
    fn policy_caps_a_pods_annotations_and_leaves_other_containers_alone() {
        let mut cfg = Config::default();
        cfg.policy.max_priority = 5;
        cfg.policy.max_borrow_cpu = Some(1.0);
        let pod: std::collections::BTreeMap<String, String> = [
            (predictor::CRI_CONTAINER_TYPE_ANNOTATION, "container"),
            (predictor::CRI_SANDBOX_NAMESPACE_ANNOTATION, "team-a"),
            ("io.predictive.priority", "1000"),
            ("io.predictive.max-borrow", "3"),
            ("io.predictive.pipeline", "etl"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut ann = Annotations::parse(&pod).expect("valid");
        let capped = apply_policy(&cfg, &pod, &mut ann);
        assert_eq!((ann.priority, ann.max_borrow_cpu), (5, Some(1.0)));
        assert_eq!(
            ann.pipeline.as_deref(),
            Some("team-a/etl"),
            "a pod's pipeline is its namespace's"
        );
        let what: Vec<(&str, f64, f64)> = capped.iter().map(|(w, a, g, _)| (*w, *a, *g)).collect();
        assert_eq!(
            what,
            vec![("priority", 1000.0, 5.0), ("cpu-borrow", 3.0, 1.0)]
        );
        assert!(capped[0].3.contains("max_priority"), "{}", capped[0].3);
        // No annotation: the operator's maximum is the pod's.
        let mut quiet = pod.clone();
        quiet.remove("io.predictive.max-borrow");
        let mut ann = Annotations::parse(&quiet).expect("valid");
        apply_policy(&cfg, &quiet, &mut ann);
        assert_eq!(ann.max_borrow_cpu, Some(1.0));
        // Not a pod (ctr, Docker): nothing changes.
        let ctr: std::collections::BTreeMap<String, String> = pod
            .into_iter()
            .filter(|(k, _)| !k.starts_with("io.kubernetes."))
            .collect();
        let mut ann = Annotations::parse(&ctr).expect("valid");
        assert!(apply_policy(&cfg, &ctr, &mut ann).is_empty());
        assert_eq!((ann.priority, ann.pipeline.as_deref()), (1000, Some("etl")));
    }
}
