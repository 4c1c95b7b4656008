//! Scale by simulation (issue 6): replays a trace of pipelines of tasks through the broker's own
//! [`Controller`] with the cgroup layer replaced by a simulated kernel, under three policies on the same host and
//! the same trace, and prints makespan, slack, OOM kills, throttling, limit changes and the controller's decision
//! time per tick.
//!
//! `cargo run --release -p broker --example simulate -- [--tasks N] [--concurrency N] [--quick] [--seed S]
//!  [--tick-ms MS] [--host-fraction F] [--history-per-type N] [--task-types N]`
//!
//! The trace: `predictor::synth` with its default parameters (50 task types, per-type memory shape, memory linear in
//! a log-normal input size, 1-5% noise, drift, memory outliers x1.3 at 0.1%) generates `history-per-type` runs per
//! type followed by `tasks` more; the earlier runs are the history (the predictor is trained on them, the static
//! and VPA-like limits are computed from them), the last `tasks` runs are replayed. Each replayed run is a true
//! usage curve: memory = its peak times the type's lifetime shape, CPU = its p95 times the run's CPU profile, and
//! `duration` seconds of work at full CPU. Replayed tasks are cut into pipelines of 5-15 consecutive tasks; each
//! task after the first depends on one or two earlier tasks of its pipeline (80%) or none.
//!
//! The simulated kernel, every tick: a task gets `min(demand, quota)` CPU, scaled down when the host's cores are
//! oversubscribed; its progress is the CPU it got over the CPU it wanted, so throttling stretches its duration.
//! Memory follows the curve at the task's progress; over a v1 limit with the OOM killer disabled the task waits
//! (no progress, `under_oom`) until the limit grows; over a limit with the OOM killer on it is OOM-killed and
//! restarts from scratch with its limits x1.2 (VPA's OOM bump), failing for good after 3 kills (its dependents
//! are skipped). A frozen task makes no progress. A task starts only when its dependencies have finished, fewer
//! than `concurrency` tasks run, and the sum of allocations plus its initial allocation fits the host's grantable
//! capacity (the controller's: host less its reserve), for CPU and memory.
//!
//! Policies: `static` (per task type: the history's max + 20%, CPU and memory, no live change), `vpa-like` (P90
//! of the history + 15%, memory limit = recommendation, no live change), `ours` (the [`Controller`] in mode
//! enforce on cgroup v1, predictions from a [`Predictor`] trained on the history in a temp redb, the user's limits
//! = the static ones; its directives are applied every tick).
//!
//! Limits of the model: see docs/BENCHMARKS.md, "Simulation (issue 6)".

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use broker::controller::{
    Action, CgroupKind, Controller, ControllerConfig, Directive, HostCapacity, Mode, SpecLimits,
    TaskSpec, Usage, initial_allocation,
};
use predictor::synth::{Rng, SynthConfig, generate};
use predictor::{
    BUCKETS, Prediction, Predictor, PredictorConfig, RunFeatures, RunSummary, TaskKey,
};

/// Simulation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Replayed tasks.
    pub tasks: usize,
    /// Most tasks running at once.
    pub concurrency: usize,
    /// History runs per task type (training and baselines).
    pub history_per_type: usize,
    /// Task types.
    pub task_types: usize,
    /// Seed of the trace and the pipelines.
    pub seed: u64,
    /// Controller tick and kernel step, ms.
    pub tick_ms: u64,
    /// Host capacity as a share of `concurrency` x the replay's mean peak memory and mean p95 CPU.
    pub host_fraction: f64,
}

impl SimConfig {
    /// The full run (issue 6): 10,000 tasks, up to 1,000 at once.
    pub fn full() -> Self {
        Self {
            tasks: 10_000,
            concurrency: 1_000,
            history_per_type: 200,
            task_types: 50,
            seed: 42,
            tick_ms: 5_000,
            host_fraction: 1.0,
        }
    }

    /// A run of seconds, for the test.
    pub fn quick() -> Self {
        Self {
            tasks: 300,
            concurrency: 60,
            history_per_type: 30,
            task_types: 10,
            ..Self::full()
        }
    }
}

/// Which allocation policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// History max + 20%, no live change.
    Static,
    /// P90 of history + 15%, no live change.
    VpaLike,
    /// The controller, mode enforce.
    Ours,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Static => "static",
            Policy::VpaLike => "vpa-like",
            Policy::Ours => "ours",
        }
    }
}

/// What one policy's run measured.
#[derive(Debug, Clone, Default)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: &'static str,
    /// Time until the last task finished or failed, s.
    pub makespan_s: f64,
    /// Tasks that finished.
    pub finished: usize,
    /// Tasks that failed (OOM-killed 3 times).
    pub failed: usize,
    /// Tasks not run because a dependency failed.
    pub skipped: usize,
    /// Tasks still waiting or running when the simulation gave up (no progress for a simulated day).
    pub stuck: usize,
    /// OOM kills.
    pub oom_kills: usize,
    /// OOM kills of `ours` of a task below its user limit while the host had room (must be 0).
    pub oom_kills_within_limit_with_room: usize,
    /// Time-weighted memory slack, (allocated - used) / allocated.
    pub memory_slack: f64,
    /// Time-weighted CPU slack.
    pub cpu_slack: f64,
    /// Mean over finished tasks of (memory allocation at exit - peak usage) / allocation at exit: the slack
    /// `--example evaluate` reports, which ignores the time a task used less than its peak.
    pub peak_memory_slack: f64,
    /// Task-seconds spent throttled by a CPU quota (share of the demand not served).
    pub cpu_throttled_s: f64,
    /// Task-seconds waiting on memory (v1 OOM wait).
    pub memory_wait_s: f64,
    /// Task-seconds frozen.
    pub frozen_s: f64,
    /// Live limit changes applied (CPU and memory directives after the initial ones).
    pub limit_changes: usize,
    /// Freeze directives.
    pub freezes: usize,
    /// Mean tasks running.
    pub mean_running: f64,
    /// Most tasks running at once.
    pub max_running: usize,
    /// Controller decision time (observe of every task + tick), per tick.
    pub decision: Vec<Duration>,
    /// Running tasks at each measured tick.
    pub decision_running: Vec<usize>,
}

impl PolicyReport {
    /// Quantile `q` of the decision time, with the running-task floor `min_running`.
    pub fn decision_quantile(&self, q: f64, min_running: usize) -> Option<Duration> {
        let secs: Vec<f64> = self
            .decision
            .iter()
            .zip(&self.decision_running)
            .filter(|(_, n)| **n >= min_running)
            .map(|(d, _)| d.as_secs_f64())
            .collect();
        predictor::percentile(&secs, q).map(Duration::from_secs_f64)
    }
}

/// One replayed task: its true usage and its place in a pipeline.
#[derive(Debug, Clone)]
struct SimTask {
    id: String,
    ty: usize,
    pipeline: usize,
    deps: Vec<usize>,
    run: RunSummary,
    /// Seconds of work at full CPU.
    duration_s: f64,
    cpu_demand: [f64; BUCKETS],
    mem_curve: [f64; BUCKETS],
}

impl SimTask {
    fn bucket(p: f64) -> usize {
        ((p * BUCKETS as f64) as usize).min(BUCKETS - 1)
    }

    fn cpu_at(&self, p: f64) -> f64 {
        self.cpu_demand[Self::bucket(p)].max(0.01)
    }

    /// Memory at progress `p`, linear between bucket centres.
    fn mem_at(&self, p: f64) -> u64 {
        let x = p * BUCKETS as f64 - 0.5;
        let v = if x <= 0.0 {
            self.mem_curve[0]
        } else if x >= (BUCKETS - 1) as f64 {
            self.mem_curve[BUCKETS - 1]
        } else {
            let i = x as usize;
            let f = x - i as f64;
            self.mem_curve[i] * (1.0 - f) + self.mem_curve[i + 1] * f
        };
        v as u64
    }
}

/// Per task type limits of the two baselines.
#[derive(Debug, Clone, Copy)]
struct Limits {
    cpu: f64,
    mem: u64,
}

/// The trace, split into history and replay, with the baselines' limits and the host.
struct Workload {
    history: Vec<RunSummary>,
    tasks: Vec<SimTask>,
    static_limits: Vec<Limits>,
    vpa_limits: Vec<Limits>,
    host: HostCapacity,
}

fn workload(cfg: &SimConfig) -> Workload {
    let runs_per_type = cfg.history_per_type + cfg.tasks.div_ceil(cfg.task_types.max(1));
    let synth = SynthConfig {
        seed: cfg.seed,
        task_types: cfg.task_types,
        runs_per_task: runs_per_type,
        days: 30.0 * runs_per_type as f64 / 200.0,
        ..SynthConfig::default()
    };
    let mut runs = generate(&synth);
    let replay = runs.split_off(runs.len().saturating_sub(cfg.tasks));
    let history = runs;
    let mut keys: Vec<TaskKey> = history.iter().map(|r| r.task_key.clone()).collect();
    keys.extend(replay.iter().map(|r| r.task_key.clone()));
    keys.sort_by_key(|k| k.to_string());
    keys.dedup();
    let ty_of: HashMap<TaskKey, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    let mut mem_hist: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
    let mut cpu_hist: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
    for r in &history {
        let t = ty_of[&r.task_key];
        mem_hist[t].push(r.outcome.peak_memory_bytes as f64);
        cpu_hist[t].push(r.outcome.cpu_p95_cores);
    }
    let static_limits = mem_hist
        .iter()
        .zip(&cpu_hist)
        .map(|(m, c)| Limits {
            cpu: c.iter().copied().fold(0.0, f64::max) * 1.2,
            mem: (m.iter().copied().fold(0.0, f64::max) * 1.2) as u64,
        })
        .collect();
    let vpa_limits = mem_hist
        .iter()
        .zip(&cpu_hist)
        .map(|(m, c)| Limits {
            cpu: predictor::percentile(c, 0.9).unwrap_or(0.0) * 1.15,
            mem: (predictor::percentile(m, 0.9).unwrap_or(0.0) * 1.15) as u64,
        })
        .collect();

    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    let mut tasks: Vec<SimTask> = Vec::with_capacity(replay.len());
    let mut pipeline = 0;
    let mut start = 0;
    let mut size = 5 + rng.below(11) as usize;
    for (i, run) in replay.into_iter().enumerate() {
        if i - start >= size {
            pipeline += 1;
            start = i;
            size = 5 + rng.below(11) as usize;
        }
        let pos = i - start;
        let mut deps = Vec::new();
        if pos > 0 && rng.f64() < 0.8 {
            for _ in 0..1 + rng.below(2) {
                let d = start + rng.below(pos as u64) as usize;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        let profile = run.profile.clone().unwrap_or_else(predictor::Profile::flat);
        let mut cpu_demand = [0.0; BUCKETS];
        let mut mem_curve = [0.0; BUCKETS];
        let peak = run.outcome.peak_memory_bytes as f64;
        let mpeak = profile
            .memory
            .iter()
            .copied()
            .fold(0.0f32, f32::max)
            .max(1e-6);
        for b in 0..BUCKETS {
            cpu_demand[b] =
                run.outcome.cpu_p95_cores * f64::from(profile.cpu.get(b).copied().unwrap_or(1.0));
            mem_curve[b] = peak * f64::from(profile.memory.get(b).copied().unwrap_or(1.0) / mpeak);
        }
        tasks.push(SimTask {
            id: format!("p{pipeline}-t{i}"),
            ty: ty_of[&run.task_key],
            pipeline,
            deps,
            duration_s: run.outcome.duration_s.max(1.0),
            cpu_demand,
            mem_curve,
            run,
        });
    }
    let n = tasks.len().max(1) as f64;
    let mean_mem = tasks
        .iter()
        .map(|t| t.run.outcome.peak_memory_bytes as f64)
        .sum::<f64>()
        / n;
    let mean_cpu = tasks
        .iter()
        .map(|t| t.run.outcome.cpu_p95_cores)
        .sum::<f64>()
        / n;
    let c = cfg.concurrency as f64 * cfg.host_fraction;
    let ccfg = ControllerConfig::default();
    let host = HostCapacity {
        cpu_cores: (c * mean_cpu).ceil() + ccfg.host_reserve_cpu,
        memory_bytes: (c * mean_mem) as u64 + ccfg.host_reserve_memory_bytes,
    };
    Workload {
        history,
        tasks,
        static_limits,
        vpa_limits,
        host,
    }
}

/// A running task in the simulated kernel.
#[derive(Debug, Clone)]
struct Running {
    progress: f64,
    cpu_quota: Option<f64>,
    /// CPU counted for admission (ours: the allocation before leases).
    base_cpu: f64,
    mem_limit: Option<u64>,
    oom_kill_disabled: bool,
    frozen: bool,
    user_mem_limit: u64,
    mem_used: u64,
    mem_peak: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running,
    Finished,
    Failed,
    Skipped,
}

struct Sim<'a> {
    w: &'a Workload,
    cfg: &'a SimConfig,
    policy: Policy,
    ctl: Option<Controller>,
    predictions: Vec<Option<Prediction>>,
    state: Vec<State>,
    attempts: Vec<u32>,
    initial_cache: Vec<Option<(u32, (f64, u64))>>,
    pending_deps: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    ready: Vec<usize>,
    running: Vec<usize>,
    slot: Vec<Option<Running>>,
    by_id: HashMap<String, usize>,
    grant_cpu: f64,
    grant_mem: u64,
    rep: PolicyReport,
    mem_alloc_s: f64,
    mem_used_s: f64,
    cpu_alloc_s: f64,
    cpu_used_s: f64,
    peak_slack_sum: f64,
}

const MAX_ATTEMPTS: u32 = 3;
const OOM_BUMP: f64 = 1.2;

impl<'a> Sim<'a> {
    fn new(
        w: &'a Workload,
        cfg: &'a SimConfig,
        policy: Policy,
        predictions: Vec<Option<Prediction>>,
    ) -> Self {
        let n = w.tasks.len();
        let mut dependents = vec![Vec::new(); n];
        let mut pending_deps = vec![0; n];
        for (i, t) in w.tasks.iter().enumerate() {
            pending_deps[i] = t.deps.len();
            for &d in &t.deps {
                dependents[d].push(i);
            }
        }
        let ccfg = ControllerConfig::default();
        let ctl = (policy == Policy::Ours).then(|| Controller::new(ccfg.clone(), w.host));
        let mut state = vec![State::Waiting; n];
        let mut ready = Vec::new();
        for i in 0..n {
            if pending_deps[i] == 0 {
                state[i] = State::Ready;
                ready.push(i);
            }
        }
        Self {
            w,
            cfg,
            policy,
            ctl,
            predictions,
            state,
            attempts: vec![0; n],
            initial_cache: vec![None; n],
            pending_deps,
            dependents,
            ready,
            running: Vec::new(),
            slot: vec![None; n],
            by_id: w
                .tasks
                .iter()
                .enumerate()
                .map(|(i, t)| (t.id.clone(), i))
                .collect(),
            grant_cpu: (w.host.cpu_cores - ccfg.host_reserve_cpu).max(0.0),
            grant_mem: w
                .host
                .memory_bytes
                .saturating_sub(ccfg.host_reserve_memory_bytes),
            rep: PolicyReport {
                policy: policy.name(),
                ..PolicyReport::default()
            },
            mem_alloc_s: 0.0,
            mem_used_s: 0.0,
            cpu_alloc_s: 0.0,
            cpu_used_s: 0.0,
            peak_slack_sum: 0.0,
        }
    }

    fn bump(&self, i: usize) -> f64 {
        OOM_BUMP.powi(self.attempts[i] as i32)
    }

    fn spec(&self, i: usize, now_ms: u64) -> TaskSpec {
        let t = &self.w.tasks[i];
        let user = self.w.static_limits[t.ty];
        TaskSpec {
            container_id: t.id.clone(),
            mode: Mode::Enforce,
            cgroup: CgroupKind::V1,
            priority: 0,
            depends_on: t.deps.iter().map(|&d| self.w.tasks[d].id.clone()).collect(),
            pipeline: Some(format!("p{}", t.pipeline)),
            max_borrow_cpu: None,
            allow_below_request: false,
            cpu_shares: None,
            limits: SpecLimits {
                cpu_limit_cores: Some(user.cpu),
                memory_limit_bytes: Some((user.mem as f64 * self.bump(i)) as u64),
                ..SpecLimits::default()
            },
            parents: Vec::new(),
            prediction: self.predictions[i].clone(),
            started_at_ms: now_ms,
            stale_after_ms: None,
        }
    }

    /// The allocation task `i` would start with: (CPU, memory). Cached per attempt (it does not depend on
    /// the time: `initial_allocation` reads only the spec's limits and prediction).
    fn initial(&mut self, i: usize, now_ms: u64) -> (f64, u64) {
        if let Some((attempt, a)) = self.initial_cache[i]
            && attempt == self.attempts[i]
        {
            return a;
        }
        let a = self.compute_initial(i, now_ms);
        self.initial_cache[i] = Some((self.attempts[i], a));
        a
    }

    fn compute_initial(&self, i: usize, now_ms: u64) -> (f64, u64) {
        let ty = self.w.tasks[i].ty;
        let bump = self.bump(i);
        match self.policy {
            Policy::Static => {
                let l = self.w.static_limits[ty];
                (l.cpu, (l.mem as f64 * bump) as u64)
            }
            Policy::VpaLike => {
                let l = self.w.vpa_limits[ty];
                (l.cpu, (l.mem as f64 * bump) as u64)
            }
            Policy::Ours => {
                let ctl = self.ctl.as_ref().expect("ours has a controller");
                let (a, _, _) =
                    initial_allocation(&self.spec(i, now_ms), &ctl.host(), ctl.config());
                (
                    a.cpu_cores.unwrap_or(self.grant_cpu),
                    a.memory_bytes.unwrap_or(self.grant_mem),
                )
            }
        }
    }

    fn committed(&self) -> (f64, u64) {
        self.running
            .iter()
            .filter_map(|&i| self.slot[i].as_ref())
            .fold((0.0, 0), |(c, m), r| {
                (c + r.base_cpu, m + r.mem_limit.unwrap_or(r.mem_used))
            })
    }

    fn admit(&mut self, now_ms: u64) {
        let (mut cpu, mut mem) = self.committed();
        let mut k = 0;
        while k < self.ready.len() && self.running.len() < self.cfg.concurrency {
            let i = self.ready[k];
            let (c, m) = self.initial(i, now_ms);
            if cpu + c > self.grant_cpu + 1e-9 || mem.saturating_add(m) > self.grant_mem {
                k += 1;
                continue;
            }
            self.ready.remove(k);
            cpu += c;
            mem += m;
            self.start(i, now_ms, c, m);
        }
    }

    fn start(&mut self, i: usize, now_ms: u64, cpu: f64, mem: u64) {
        self.state[i] = State::Running;
        self.running.push(i);
        let user_mem_limit = match self.policy {
            Policy::VpaLike => mem,
            _ => (self.w.static_limits[self.w.tasks[i].ty].mem as f64 * self.bump(i)) as u64,
        };
        self.slot[i] = Some(Running {
            progress: 0.0,
            cpu_quota: Some(cpu),
            base_cpu: cpu,
            mem_limit: Some(mem),
            oom_kill_disabled: false,
            frozen: false,
            user_mem_limit,
            mem_used: 0,
            mem_peak: 0,
        });
        if self.policy == Policy::Ours {
            let spec = self.spec(i, now_ms);
            let ctl = self.ctl.as_mut().expect("ours has a controller");
            let (_, ds) = ctl.register(spec, now_ms);
            self.apply(&ds, true);
        }
    }

    /// The simulated kernel applies the controller's directives.
    fn apply(&mut self, ds: &[Directive], initial: bool) {
        for d in ds.iter().filter(|d| d.applied) {
            let Some(&i) = self.by_id.get(&d.container_id) else {
                continue;
            };
            let Some(r) = self.slot[i].as_mut() else {
                continue;
            };
            let changed = match &d.action {
                Action::SetCpu { cores } => {
                    let c = r.cpu_quota != *cores;
                    r.cpu_quota = *cores;
                    c
                }
                Action::SetMemoryLimit {
                    limit_bytes,
                    oom_kill_disabled,
                } => {
                    let c = r.mem_limit != *limit_bytes;
                    r.mem_limit = *limit_bytes;
                    r.oom_kill_disabled = *oom_kill_disabled;
                    c
                }
                Action::SetMemoryHigh { high_bytes, .. } => {
                    // v2: over memory.high the task is throttled by reclaim, not killed (memory.max is the
                    // user's limit): modelled as the v1 wait.
                    let c = r.mem_limit != *high_bytes;
                    r.mem_limit = *high_bytes;
                    r.oom_kill_disabled = true;
                    c
                }
                Action::Freeze => {
                    r.frozen = true;
                    self.rep.freezes += 1;
                    false
                }
                Action::Thaw => {
                    r.frozen = false;
                    false
                }
                _ => false,
            };
            if changed && !initial {
                self.rep.limit_changes += 1;
            }
        }
    }

    fn end(&mut self, i: usize, now_ms: u64) {
        self.slot[i] = None;
        self.running.retain(|&j| j != i);
        if let Some(ctl) = self.ctl.as_mut() {
            let ds = ctl.unregister(&self.w.tasks[i].id, now_ms);
            self.apply(&ds, false);
        }
    }

    fn finish(&mut self, i: usize, now_ms: u64) {
        if let Some(r) = &self.slot[i] {
            let alloc = r.mem_limit.unwrap_or(r.mem_peak).max(r.mem_peak) as f64;
            self.peak_slack_sum += ratio(alloc - r.mem_peak as f64, alloc);
        }
        self.end(i, now_ms);
        self.state[i] = State::Finished;
        self.rep.finished += 1;
        for k in 0..self.dependents[i].len() {
            let j = self.dependents[i][k];
            self.pending_deps[j] -= 1;
            if self.pending_deps[j] == 0 && self.state[j] == State::Waiting {
                self.state[j] = State::Ready;
                self.ready.push(j);
            }
        }
    }

    fn oom_kill(&mut self, i: usize, now_ms: u64) {
        self.rep.oom_kills += 1;
        if self.policy == Policy::Ours
            && let Some(r) = &self.slot[i]
        {
            let (_, mem) = self.committed();
            if r.mem_used <= r.user_mem_limit && mem < self.grant_mem {
                self.rep.oom_kills_within_limit_with_room += 1;
            }
        }
        self.end(i, now_ms);
        self.attempts[i] += 1;
        if self.attempts[i] >= MAX_ATTEMPTS {
            self.state[i] = State::Failed;
            self.rep.failed += 1;
            let mut stack = self.dependents[i].clone();
            while let Some(j) = stack.pop() {
                if self.state[j] == State::Waiting {
                    self.state[j] = State::Skipped;
                    self.rep.skipped += 1;
                    stack.extend(self.dependents[j].iter().copied());
                }
            }
        } else {
            self.state[i] = State::Ready;
            self.ready.insert(0, i);
        }
    }

    /// One kernel step of `dt` seconds; returns whether any task progressed.
    fn step(&mut self, now_ms: u64, dt: f64) -> bool {
        // CPU: min(demand, quota), scaled down when the host's cores are oversubscribed.
        let mut want = 0.0;
        for &i in &self.running {
            let r = self.slot[i].as_ref().expect("running has a slot");
            if !r.frozen {
                let d = self.w.tasks[i].cpu_at(r.progress);
                want += r.cpu_quota.map_or(d, |q| d.min(q));
            }
        }
        let scale = if want > self.w.host.cpu_cores {
            self.w.host.cpu_cores / want
        } else {
            1.0
        };
        let mut progressed = false;
        let mut finished = Vec::new();
        let mut killed = Vec::new();
        let mut usages: Vec<(usize, Usage)> = Vec::with_capacity(self.running.len());
        for &i in &self.running {
            let t = &self.w.tasks[i];
            let r = self.slot[i].as_mut().expect("running has a slot");
            let demand = t.cpu_at(r.progress);
            let capped = r.cpu_quota.map_or(demand, |q| demand.min(q));
            let mut granted = 0.0;
            let mut under_oom = false;
            if !r.frozen {
                granted = capped * scale;
                let next = (r.progress + dt * granted / demand / t.duration_s).min(1.0);
                let need = t.mem_at(next);
                match r.mem_limit {
                    Some(l) if need > l && r.oom_kill_disabled => {
                        // v1 OOM wait: stalls at its limit until grown.
                        under_oom = true;
                        granted = 0.0;
                        r.mem_used = l;
                        r.mem_peak = r.mem_peak.max(l);
                        self.rep.memory_wait_s += dt;
                    }
                    Some(l) if need > l => {
                        r.mem_used = need;
                        killed.push(i);
                    }
                    _ => {
                        if capped < demand {
                            self.rep.cpu_throttled_s += dt * (demand - capped) / demand;
                        }
                        r.progress = next;
                        r.mem_used = need;
                        r.mem_peak = r.mem_peak.max(need);
                        progressed = true;
                        if next >= 1.0 {
                            finished.push(i);
                        }
                    }
                }
            } else {
                self.rep.frozen_s += dt;
            }
            let mem_alloc = r.mem_limit.unwrap_or(r.mem_used).max(r.mem_used);
            self.mem_alloc_s += mem_alloc as f64 * dt;
            self.mem_used_s += r.mem_used as f64 * dt;
            let cpu_alloc = r.cpu_quota.unwrap_or(granted).max(granted);
            self.cpu_alloc_s += cpu_alloc * dt;
            self.cpu_used_s += granted * dt;
            usages.push((
                i,
                Usage {
                    at_ms: now_ms,
                    cpu_cores: granted,
                    cpu_throttled_fraction: if capped < demand && !r.frozen {
                        (demand - capped) / demand
                    } else {
                        0.0
                    },
                    memory_bytes: r.mem_used,
                    under_oom,
                    ..Usage::default()
                },
            ));
        }
        let n = self.running.len();
        self.rep.max_running = self.rep.max_running.max(n);
        for i in killed {
            self.oom_kill(i, now_ms);
        }
        for i in finished {
            self.finish(i, now_ms);
        }
        if let Some(ctl) = self.ctl.as_mut() {
            let t0 = Instant::now();
            for (i, u) in &usages {
                if self.slot[*i].is_some() {
                    ctl.observe(&self.w.tasks[*i].id, *u);
                }
            }
            let ds = ctl.tick(now_ms);
            self.rep.decision.push(t0.elapsed());
            self.rep.decision_running.push(self.running.len());
            self.apply(&ds, false);
        }
        progressed
    }

    fn run(mut self) -> PolicyReport {
        let dt_ms = self.cfg.tick_ms;
        let dt = dt_ms as f64 / 1000.0;
        let mut now_ms = 0u64;
        let mut idle_ticks = 0u64;
        let give_up = 86_400_000 / dt_ms;
        let mut running_s = 0.0;
        let mut end_ms = 0;
        loop {
            self.admit(now_ms);
            if self.running.is_empty() && self.ready.is_empty() {
                break;
            }
            now_ms += dt_ms;
            running_s += self.running.len() as f64 * dt;
            if self.step(now_ms, dt) {
                idle_ticks = 0;
                end_ms = now_ms;
            } else {
                idle_ticks += 1;
                if idle_ticks >= give_up {
                    break;
                }
            }
        }
        let rep = &mut self.rep;
        rep.stuck = self
            .state
            .iter()
            .filter(|s| matches!(s, State::Waiting | State::Ready | State::Running))
            .count();
        rep.makespan_s = end_ms as f64 / 1000.0;
        rep.mean_running = if rep.makespan_s > 0.0 {
            running_s / (now_ms as f64 / 1000.0)
        } else {
            0.0
        };
        rep.memory_slack = ratio(self.mem_alloc_s - self.mem_used_s, self.mem_alloc_s);
        rep.cpu_slack = ratio(self.cpu_alloc_s - self.cpu_used_s, self.cpu_alloc_s);
        rep.peak_memory_slack = ratio(self.peak_slack_sum, rep.finished as f64);
        self.rep
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Everything one simulation measured.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Replayed tasks.
    pub tasks: usize,
    /// History runs.
    pub history_runs: usize,
    /// Pipelines.
    pub pipelines: usize,
    /// The simulated host.
    pub host: HostCapacity,
    /// Replayed tasks with a cold prediction.
    pub cold: usize,
    /// The longest dependency chain at full CPU, s: no policy's makespan can be shorter.
    pub critical_path_s: f64,
    /// Per policy: static, vpa-like, ours.
    pub policies: Vec<PolicyReport>,
    /// Wall time of the whole simulation.
    pub wall: Duration,
}

/// Runs the three policies on one trace.
pub fn simulate(cfg: &SimConfig) -> Result<SimReport, String> {
    let started = Instant::now();
    let w = workload(cfg);
    let dir = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
    let predictor = Predictor::open(&dir.path().join("sim.redb"), PredictorConfig::default())
        .map_err(|e| format!("opening the predictor: {}", broker::error_chain(&e)))?;
    predictor
        .record_runs(&w.history)
        .map_err(|e| format!("recording the history: {}", broker::error_chain(&e)))?;
    let trained_at = w.history.iter().map(|r| r.started_at_ms).max().unwrap_or(0) + 1;
    predictor
        .retrain(trained_at)
        .map_err(|e| format!("training: {}", broker::error_chain(&e)))?;
    let predictions: Vec<Option<Prediction>> = w
        .tasks
        .iter()
        .map(|t| {
            let p = predictor.predict(
                &t.run.task_key,
                &RunFeatures::from_metadata(&t.run.meta, t.run.started_at_ms),
            );
            (!p.is_cold_start()).then_some(p)
        })
        .collect();
    let cold = predictions.iter().filter(|p| p.is_none()).count();
    // Dependencies come earlier in the trace, so one pass finds each task's earliest finish.
    let mut earliest = vec![0.0f64; w.tasks.len()];
    for (i, t) in w.tasks.iter().enumerate() {
        let after = t.deps.iter().map(|&d| earliest[d]).fold(0.0, f64::max);
        earliest[i] = after + t.duration_s;
    }
    let critical_path_s = earliest.iter().copied().fold(0.0, f64::max);
    let mut policies = Vec::new();
    for policy in [Policy::Static, Policy::VpaLike, Policy::Ours] {
        let preds = if policy == Policy::Ours {
            predictions.clone()
        } else {
            vec![None; w.tasks.len()]
        };
        policies.push(Sim::new(&w, cfg, policy, preds).run());
    }
    Ok(SimReport {
        tasks: w.tasks.len(),
        history_runs: w.history.len(),
        pipelines: w.tasks.last().map_or(0, |t| t.pipeline + 1),
        host: w.host,
        cold,
        critical_path_s,
        policies,
        wall: started.elapsed(),
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

impl SimReport {
    /// The Markdown tables.
    pub fn table(&self) -> String {
        let mut s = format!(
            "tasks: {} in {} pipelines, history: {} runs, cold predictions: {}, host: {:.0} cores, {:.0} GiB, longest dependency chain at full CPU (no makespan can be shorter): {:.2} h\n\n",
            self.tasks,
            self.pipelines,
            self.history_runs,
            self.cold,
            self.host.cpu_cores,
            self.host.memory_bytes as f64 / (1u64 << 30) as f64,
            self.critical_path_s / 3600.0
        );
        s.push_str("| policy | makespan h | finished | failed | skipped | stuck | OOM kills | memory slack | peak memory slack | CPU slack | CPU throttled task-h | memory wait task-h | frozen task-h | limit changes | freezes | mean / max running |\n");
        s.push_str(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for p in &self.policies {
            s.push_str(&format!(
                "| {} | {:.2} | {} | {} | {} | {} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} / {} |\n",
                p.policy,
                p.makespan_s / 3600.0,
                p.finished,
                p.failed,
                p.skipped,
                p.stuck,
                p.oom_kills,
                p.memory_slack * 100.0,
                p.peak_memory_slack * 100.0,
                p.cpu_slack * 100.0,
                p.cpu_throttled_s / 3600.0,
                p.memory_wait_s / 3600.0,
                p.frozen_s / 3600.0,
                p.limit_changes,
                p.freezes,
                p.mean_running,
                p.max_running,
            ));
        }
        if let [st, vpa, ours] = &self.policies[..] {
            s.push_str("\n| ratio | makespan | memory slack | CPU slack | OOM kills | CPU throttled |\n|---|---:|---:|---:|---:|---:|\n");
            for b in [st, vpa] {
                let r = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}", a / b)
                    } else if a > 0.0 {
                        "inf".to_owned()
                    } else {
                        "-".to_owned()
                    }
                };
                s.push_str(&format!(
                    "| ours / {} | {} | {} | {} | {} ({} vs {}) | {} |\n",
                    b.policy,
                    r(ours.makespan_s, b.makespan_s),
                    r(ours.memory_slack, b.memory_slack),
                    r(ours.cpu_slack, b.cpu_slack),
                    r(ours.oom_kills as f64, b.oom_kills as f64),
                    ours.oom_kills,
                    b.oom_kills,
                    r(ours.cpu_throttled_s, b.cpu_throttled_s),
                ));
            }
            let top = ours.max_running * 9 / 10;
            s.push_str(&format!(
                "\ncontroller decision time per tick (observe every running task + tick), ms: p50 {} p99 {} max {} over {} ticks; at >= {} running tasks: p50 {} p99 {} ({} ticks)\n",
                ms(ours.decision_quantile(0.5, 0)),
                ms(ours.decision_quantile(0.99, 0)),
                ms(ours.decision_quantile(1.0, 0)),
                ours.decision.len(),
                top,
                ms(ours.decision_quantile(0.5, top)),
                ms(ours.decision_quantile(0.99, top)),
                ours.decision_running.iter().filter(|n| **n >= top).count(),
            ));
        }
        s.push_str(&format!(
            "\nsimulation took {:.1} s\n",
            self.wall.as_secs_f64()
        ));
        s
    }
}

fn parse(args: &[String]) -> Result<SimConfig, String> {
    let mut cfg = if args.iter().any(|a| a == "--quick") {
        SimConfig::quick()
    } else {
        SimConfig::full()
    };
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--quick" {
            i += 1;
            continue;
        }
        let val = args.get(i + 1).cloned().unwrap_or_default();
        let ok = match args[i].as_str() {
            "--tasks" => val.parse().map(|v| cfg.tasks = v).is_ok(),
            "--concurrency" => val.parse().map(|v| cfg.concurrency = v).is_ok(),
            "--history-per-type" => val.parse().map(|v| cfg.history_per_type = v).is_ok(),
            "--task-types" => val.parse().map(|v| cfg.task_types = v).is_ok(),
            "--seed" => val.parse().map(|v| cfg.seed = v).is_ok(),
            "--tick-ms" => val.parse().map(|v| cfg.tick_ms = v).is_ok(),
            "--host-fraction" => val.parse().map(|v| cfg.host_fraction = v).is_ok(),
            _ => false,
        };
        if !ok {
            return Err(format!("bad argument {} {val}", args[i]));
        }
        i += 2;
    }
    if cfg.tasks == 0 || cfg.concurrency == 0 || cfg.task_types == 0 || cfg.tick_ms == 0 {
        return Err("--tasks, --concurrency, --task-types and --tick-ms must be > 0".to_owned());
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    match simulate(&cfg) {
        Ok(r) => {
            print!("{}", r.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_mode_accounts_for_every_task() {
        let cfg = SimConfig::quick();
        let r = simulate(&cfg).expect("the quick simulation runs");
        assert_eq!(r.tasks, cfg.tasks);
        assert_eq!(r.policies.len(), 3);
        for p in &r.policies {
            assert_eq!(
                p.finished + p.failed + p.skipped + p.stuck,
                r.tasks,
                "{}: every task finishes or is counted",
                p.policy
            );
            assert_eq!(p.stuck, 0, "{}: no task left stuck", p.policy);
            for s in [p.memory_slack, p.cpu_slack, p.peak_memory_slack] {
                assert!((0.0..=1.0).contains(&s), "{}: slack {s}", p.policy);
            }
            assert!(p.makespan_s > 0.0);
            assert!(p.max_running <= cfg.concurrency);
        }
        let ours = &r.policies[2];
        assert_eq!(ours.policy, "ours");
        assert_eq!(
            ours.oom_kills_within_limit_with_room, 0,
            "ours OOM-killed a task below its user limit while the host had room"
        );
        assert!(ours.decision.len() as f64 >= ours.makespan_s * 1000.0 / cfg.tick_ms as f64);
        assert!(
            ours.decision_quantile(0.5, 0)
                .is_some_and(|d| d > Duration::ZERO),
            "decision time measured"
        );
        assert!(r.policies[..2].iter().all(|p| p.limit_changes == 0));
    }
}
