//! Offline evaluation: replay a trace of runs and score allocation policies (`--example evaluate`).
//!
//! # Trace format (JSON lines)
//! One [`RunSummary`] per line, in any order (the replay sorts by `started_at_ms`, then `run_id`):
//!
//! ```json
//! {"run_id":1,"task_key":"etl","started_at_ms":1767225600000,
//!  "meta":{"image":"reg/etl:1","command":["/bin/etl"],"input_bytes":52428800,"dependencies":2,
//!          "requested_cpu_cores":2.0,"requested_memory_bytes":4294967296,"host_load":0.4},
//!  "outcome":{"duration_s":312.5,"peak_memory_bytes":734003200,"cpu_seconds":410.0,"cpu_p50_cores":1.2,
//!             "cpu_p95_cores":1.6,"io_bytes":60000000,"exit_code":0,"oom_killed":false,"throttled_s":0.0},
//!  "profile":{"cpu":[..20 floats..],"memory":[..20..],"io":[..20..]}}
//! ```
//! `meta` fields and `profile` may be omitted; `outcome` needs at least `duration_s` and `peak_memory_bytes`
//! (`net_tx_bytes_per_s` and `net_tx_peak_bytes_per_s`, egress in bytes/s, and `net_rx_bytes_per_s` and
//! `net_rx_peak_bytes_per_s`, ingress, are optional: each network model is trained on the runs that have its
//! direction, and not scored here).
//! Blank lines and lines starting with `#` are skipped.
//!
//! # Replay
//! Runs are visited in order of start. A run joins its task type's history when it **ends** (start + duration),
//! so a run never sees the outcome of a run that was still going when it started. Before a run, every policy
//! sizes it from the finished runs of its task type:
//! - **ours**: the task model ([`train_task_pooled`], with one [`ScorePool`] for the whole trace, fed each
//!   refitted type's newest scores and peak ratios as the engine does) refitted whenever the task type has
//!   [`EvalConfig::retrain_every`] new finished runs (default 1: after every finished run, as the product does);
//!   allocation = the estimate's `limit` (memory 99.8%, CPU and duration 95%), interval = `[lower, upper]`;
//! - **vpa-like**: VPA's recommender: a histogram whose weights halve every 24 h of age
//!   ([`EvalConfig::vpa_half_life_ms`]), P90 x 1.15;
//! - **autopilot-like**: P98 x 1.10 of the runs that ended in the last 24 h ([`EvalConfig::window_ms`]; at least
//!   the last [`EvalConfig::min_history`] runs);
//!
//! both baselines recomputed at every run, with interval `[P5, P95]` of their own history.
//!
//! A run whose task type has fewer than [`EvalConfig::min_history`] finished runs is cold for every policy (the
//! broker would use the spec's limits) and is only counted. Per policy and resource: under-prediction rate
//! (usage above the allocation), mean relative slack `(allocation - usage) / allocation` over the runs that were not
//! under-predicted (a run with 0 usage and 0 allocation is left out of the slack), coverage of the interval.
//!
//! # Equal risk
//! One point per policy says little: a policy can buy less slack with more under-prediction. So the replay also
//! sweeps ours over the level of its limit ([`OUR_LEVELS`]), and the **history-quantile family** — quantiles
//! [`FAMILY_QUANTILES`] x margins [`FAMILY_MARGINS`] of three histories: VPA's 24 h-decayed one, the whole history,
//! and the 24 h window — and reports, for ours at each level, the least slack any member of the family reaches at
//! the same or a lower under-prediction rate ([`ResourceReport::best_baseline`]). A CPU window limit is swept
//! through its price, scaled by the odds `q / (1 - q)` of the level against those of the default quantile.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::key::TaskKey;
use crate::model::{
    ForwardScores, Resource, TaskModel, TrainConfig, YOUNG_LIMIT_CAP, central_ranks_exist,
    conformal_bound, finished_at_ms, peak_multiplier, priced_margin, train_task_pooled,
};
use crate::pool::ScorePool;
use crate::types::{RunFeatures, RunSummary};

/// Errors reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The trace file could not be read.
    #[error("reading trace {path}")]
    Read {
        /// Trace path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid run summary.
    #[error("parsing trace {path} line {line}")]
    Parse {
        /// Trace path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing a trace failed.
    #[error("writing trace")]
    Write(#[source] std::io::Error),
    /// Creating or renaming a trace file failed.
    #[error("writing trace {path}")]
    Save {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Serialising a run failed.
    #[error("encoding run {run_id}")]
    Encode {
        /// The run.
        run_id: u64,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines trace.
pub fn read_trace(path: &Path) -> Result<Vec<RunSummary>, TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        out.push(serde_json::from_str(t).map_err(|source| TraceError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?);
    }
    Ok(out)
}

/// Writes runs as a JSON-lines trace.
pub fn write_trace(mut w: impl Write, runs: &[RunSummary]) -> Result<(), TraceError> {
    for r in runs {
        let line = serde_json::to_string(r).map_err(|source| TraceError::Encode {
            run_id: r.run_id,
            source,
        })?;
        writeln!(w, "{line}").map_err(TraceError::Write)?;
    }
    w.flush().map_err(TraceError::Write)
}

/// Writes runs as a JSON-lines trace file at `out`, through a temporary file renamed into place, so a reader
/// never sees half a trace.
pub fn write_trace_file(out: &Path, runs: &[RunSummary]) -> Result<(), TraceError> {
    let tmp = out.with_extension("jsonl.partial");
    let file = std::fs::File::create(&tmp).map_err(|source| TraceError::Save {
        path: tmp.clone(),
        source,
    })?;
    write_trace(std::io::BufWriter::new(file), runs)?;
    std::fs::rename(&tmp, out).map_err(|source| TraceError::Save {
        path: out.to_path_buf(),
        source,
    })
}

/// Replay parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Training parameters of our models.
    pub train: TrainConfig,
    /// Refit a task type's model after this many new finished runs of it.
    pub retrain_every: usize,
    /// Finished runs of a task type needed before any policy predicts it.
    pub min_history: usize,
    /// Half-life of the VPA-like histogram's weights.
    pub vpa_half_life_ms: u64,
    /// Window of the Autopilot-like policy.
    pub window_ms: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            retrain_every: 1,
            min_history: 5,
            vpa_half_life_ms: 24 * 3_600_000,
            window_ms: 24 * 3_600_000,
        }
    }
}

/// Scores of one policy on one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Runs scored.
    pub runs: u64,
    /// Runs whose usage exceeded the allocation.
    pub under: u64,
    /// Sum of relative slack over runs not under-predicted.
    slack_sum: f64,
    /// Runs in the slack mean (not under-predicted, not 0 usage at 0 allocation).
    slack_runs: u64,
    /// Runs whose usage fell inside the interval.
    pub covered: u64,
}

impl Score {
    fn add(&mut self, alloc: f64, lower: f64, upper: f64, usage: f64) {
        self.runs += 1;
        if usage > alloc {
            self.under += 1;
        } else if alloc > 0.0 {
            self.slack_sum += (alloc - usage) / alloc;
            self.slack_runs += 1;
        }
        if usage >= lower && usage <= upper {
            self.covered += 1;
        }
    }

    /// Fraction of runs under-predicted.
    pub fn under_rate(&self) -> f64 {
        self.under as f64 / self.runs.max(1) as f64
    }

    /// Mean relative slack over the runs that were not under-predicted.
    pub fn mean_slack(&self) -> f64 {
        self.slack_sum / self.slack_runs.max(1) as f64
    }

    /// Fraction of runs inside the interval.
    pub fn coverage(&self) -> f64 {
        self.covered as f64 / self.runs.max(1) as f64
    }
}

/// Ours' limit at `level` as a multiple of the point: the conformal bound of its own scores, a young type's from
/// the pool, or a window limit's margin at its price scaled by the odds of `level` against the default's.
fn limit_at(
    t: &crate::model::TargetModel,
    scores: &ForwardScores,
    pool: &ScorePool,
    slot: usize,
    level: f64,
    cfg: &EvalConfig,
) -> f64 {
    let point = t.point(&[0.0; crate::regression::N_FEATURES]);
    if let Some(price) = pool
        .window_price()
        .filter(|_| t.window_limit().is_some() && point > 0.0)
    {
        let odds = |q: f64| q / (1.0 - q).max(1e-9);
        let price = price * odds(level) / odds(cfg.train.limit_quantile[slot]);
        if let Some(m) = priced_margin(&scores.window, price) {
            return t.window_base * m / point;
        }
    }
    let own = &scores[slot];
    let mult = conformal_bound(own, level);
    if central_ranks_exist(own.len(), cfg.train.level) {
        return mult;
    }
    peak_multiplier(t, pool, slot, level)
        .unwrap_or_else(|| pool.blend(slot, own.len(), mult, level))
}

/// The resources scored.
pub const SCORED: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Duration];
/// Levels of our limit swept for the risk/slack curve.
pub const OUR_LEVELS: [f64; 11] = [
    0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.995, 0.998, 0.999,
];
/// Quantiles of the history-quantile family.
pub const FAMILY_QUANTILES: [f64; 8] = [0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0];
/// Margins of the history-quantile family.
pub const FAMILY_MARGINS: [f64; 13] = [
    1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0,
];

/// A history a baseline takes quantiles of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Every finished run, weights halving every [`EvalConfig::vpa_half_life_ms`] (VPA).
    Decayed,
    /// Every finished run, equal weights.
    All,
    /// Runs that ended within [`EvalConfig::window_ms`], at least the last [`EvalConfig::min_history`] (Autopilot).
    Window,
}

impl History {
    const ALL: [History; 3] = [History::Decayed, History::All, History::Window];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            History::Decayed => "decayed-24h",
            History::All => "all-history",
            History::Window => "window-24h",
        }
    }
}

/// One member of the history-quantile family.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyPoint {
    /// Which history.
    pub history: History,
    /// Quantile taken.
    pub quantile: f64,
    /// Margin applied.
    pub margin: f64,
    /// Its scores.
    pub score: Score,
}

/// Everything measured on one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceReport {
    /// The resource.
    pub resource: Resource,
    /// Ours at its default level (the estimate's `limit`), with the coverage of `[lower, upper]`.
    pub ours: Score,
    /// Ours with the limit at each of [`OUR_LEVELS`] (coverage not filled).
    pub ours_curve: Vec<(f64, Score)>,
    /// Memory only: ours as the broker allocates it at Create ([`crate::Estimate::allocation`]: the `limit`, capped
    /// at [`crate::YOUNG_LIMIT_CAP`] x `upper` below medium confidence; coverage not filled).
    pub ours_broker: Score,
    /// VPA-like (decayed history, P90 x 1.15), coverage of its `[P5, P95]`.
    pub vpa: Score,
    /// Autopilot-like (24 h window, P98 x 1.10), coverage of its `[P5, P95]`.
    pub autopilot: Score,
    /// The history-quantile family.
    pub family: Vec<FamilyPoint>,
}

impl ResourceReport {
    fn new(resource: Resource) -> Self {
        let mut family = Vec::new();
        for history in History::ALL {
            for quantile in FAMILY_QUANTILES {
                for margin in FAMILY_MARGINS {
                    family.push(FamilyPoint {
                        history,
                        quantile,
                        margin,
                        score: Score::default(),
                    });
                }
            }
        }
        Self {
            resource,
            ours: Score::default(),
            ours_curve: OUR_LEVELS.iter().map(|&l| (l, Score::default())).collect(),
            ours_broker: Score::default(),
            vpa: Score::default(),
            autopilot: Score::default(),
            family,
        }
    }

    /// The family member with the least slack among those under-predicting at most `under_rate` of the runs.
    pub fn best_baseline(&self, under_rate: f64) -> Option<&FamilyPoint> {
        self.family
            .iter()
            .filter(|p| p.score.under_rate() <= under_rate + 1e-12)
            .min_by(|a, b| a.score.mean_slack().total_cmp(&b.score.mean_slack()))
    }

    /// `1 - ours' slack / best baseline's slack` at ours' default level (positive: ours wastes less), with the
    /// baseline; `None` when no family member is as safe as ours.
    pub fn slack_reduction(&self) -> Option<(f64, &FamilyPoint)> {
        let best = self.best_baseline(self.ours.under_rate())?;
        Some((1.0 - self.ours.mean_slack() / best.score.mean_slack(), best))
    }
}

/// Result of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Runs in the trace.
    pub runs: u64,
    /// Runs skipped as cold (too little finished history).
    pub cold: u64,
    /// Task types in the trace.
    pub task_types: usize,
    /// Level of our intervals.
    pub level: f64,
    /// Model fits done by the replay.
    pub fits: u64,
    /// One report per resource in [`SCORED`] order.
    pub resources: Vec<ResourceReport>,
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

impl EvalReport {
    /// The report of `r`.
    pub fn resource(&self, r: Resource) -> Option<&ResourceReport> {
        self.resources.iter().find(|x| x.resource == r)
    }

    /// Markdown tables: the policies at their defaults, the headline at equal risk, and the curves.
    pub fn table(&self) -> String {
        let mut s = format!(
            "runs: {}, task types: {}, cold (skipped, < min history): {}, interval level: {:.0}%, model fits: {}\n\n",
            self.runs,
            self.task_types,
            self.cold,
            self.level * 100.0,
            self.fits
        );
        s.push_str(
            "| policy | resource | runs | under-prediction | mean slack | interval coverage |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|\n");
        for (name, pick) in [
            ("ours", 0usize),
            ("vpa-like (decayed P90 x 1.15)", 1),
            ("autopilot-like (window P98 x 1.10)", 2),
        ] {
            for rr in &self.resources {
                let sc = match pick {
                    0 => &rr.ours,
                    1 => &rr.vpa,
                    _ => &rr.autopilot,
                };
                s.push_str(&format!(
                    "| {name} | {} | {} | {} | {:.1}% | {:.1}% |\n",
                    rr.resource.name(),
                    sc.runs,
                    pct(sc.under_rate()),
                    sc.mean_slack() * 100.0,
                    sc.coverage() * 100.0
                ));
            }
        }
        if let Some(rr) = self.resource(Resource::Memory) {
            let b = &rr.ours_broker;
            s.push_str(&format!(
                "\nMemory as the broker allocates it (the limit; below medium confidence at most {YOUNG_LIMIT_CAP} x upper): {} runs, \
                 under-prediction {}, mean slack {:.1}%; at no more under-prediction the best family member {}\n",
                b.runs,
                pct(b.under_rate()),
                b.mean_slack() * 100.0,
                rr.best_baseline(b.under_rate()).map_or("none".to_owned(), |f| format!(
                    "({} P{} x {:.2}) has {:.1}% slack",
                    f.history.name(),
                    f.quantile * 100.0,
                    f.margin,
                    f.score.mean_slack() * 100.0
                ))
            ));
        }
        s.push_str("\nSlack at equal under-prediction (ours at its default level against the best member of the history-quantile family that under-predicts no more):\n\n");
        s.push_str("| resource | ours under | ours slack | best baseline | its under | its slack | slack reduction |\n");
        s.push_str("|---|---:|---:|---|---:|---:|---:|\n");
        for rr in &self.resources {
            match rr.slack_reduction() {
                Some((gain, b)) => s.push_str(&format!(
                    "| {} | {} | {:.1}% | {} P{} x {:.2} | {} | {:.1}% | {:.1}% |\n",
                    rr.resource.name(),
                    pct(rr.ours.under_rate()),
                    rr.ours.mean_slack() * 100.0,
                    b.history.name(),
                    b.quantile * 100.0,
                    b.margin,
                    pct(b.score.under_rate()),
                    b.score.mean_slack() * 100.0,
                    gain * 100.0
                )),
                None => s.push_str(&format!(
                    "| {} | {} | {:.1}% | none as safe | - | - | - |\n",
                    rr.resource.name(),
                    pct(rr.ours.under_rate()),
                    rr.ours.mean_slack() * 100.0
                )),
            }
        }
        s.push_str("\nRisk/slack curves (ours swept over the level of its limit; best family member at no more under-prediction):\n\n");
        s.push_str("| resource | level | ours under | ours slack | best baseline slack | slack reduction |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|\n");
        for rr in &self.resources {
            for (level, sc) in &rr.ours_curve {
                let best = rr.best_baseline(sc.under_rate());
                s.push_str(&format!(
                    "| {} | {} | {} | {:.1}% | {} | {} |\n",
                    rr.resource.name(),
                    level,
                    pct(sc.under_rate()),
                    sc.mean_slack() * 100.0,
                    best.map_or("-".to_owned(), |b| format!(
                        "{:.1}%",
                        b.score.mean_slack() * 100.0
                    )),
                    best.map_or("-".to_owned(), |b| format!(
                        "{:.1}%",
                        (1.0 - sc.mean_slack() / b.score.mean_slack()) * 100.0
                    )),
                ));
            }
        }
        s
    }
}

#[derive(Default)]
struct TaskState {
    history: Vec<RunSummary>,
    /// End time of each finished run, in the order they joined.
    ends: Vec<u64>,
    /// Usage of each finished run, per resource in [`SCORED`] order.
    values: [Vec<f64>; 3],
    model: Option<(TaskModel, ForwardScores)>,
    trained_at: usize,
}

/// Weighted quantiles of `(value, weight)` pairs, sorted by value in place; one answer per `qs` entry.
fn weighted_quantiles(pairs: &mut [(f64, f64)], qs: &[f64]) -> Vec<f64> {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|p| p.1).sum();
    qs.iter()
        .map(|&q| {
            let target = q * total * (1.0 - 1e-12);
            let mut acc = 0.0;
            for &(v, w) in pairs.iter() {
                acc += w;
                if acc >= target && w > 0.0 {
                    return v;
                }
            }
            pairs.last().map_or(0.0, |p| p.0)
        })
        .collect()
}

/// Quantiles (5%, 95% and the family's) of one history at time `now`.
fn history_quantiles(st: &TaskState, r: usize, h: History, now: u64, cfg: &EvalConfig) -> Vec<f64> {
    let n = st.values[r].len();
    let keep_last = cfg.min_history.max(1);
    let mut pairs: Vec<(f64, f64)> = (0..n)
        .filter_map(|i| {
            let v = st.values[r][i];
            let age = now.saturating_sub(st.ends[i]);
            let w = match h {
                History::All => 1.0,
                History::Decayed => {
                    crate::histogram::DecayingHistogram::decay_weight(age, cfg.vpa_half_life_ms)
                }
                History::Window => {
                    if age <= cfg.window_ms || i + keep_last >= n {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            (w > 0.0).then_some((v, w))
        })
        .collect();
    let mut qs = vec![0.05, 0.95];
    qs.extend(FAMILY_QUANTILES);
    weighted_quantiles(&mut pairs, &qs)
}

/// Replays `runs` and scores the policies.
pub fn evaluate(runs: &[RunSummary], cfg: &EvalConfig) -> EvalReport {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| (runs[i].started_at_ms, runs[i].run_id));
    let mut tasks: HashMap<TaskKey, TaskState> = HashMap::new();
    let mut pool = ScorePool::default();
    let mut running: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut report = EvalReport {
        runs: runs.len() as u64,
        cold: 0,
        task_types: 0,
        level: cfg.train.level,
        fits: 0,
        resources: SCORED.iter().map(|&r| ResourceReport::new(r)).collect(),
    };
    let oom = cfg.train.oom_inflation;
    let slot = |res: Resource| Resource::ALL.iter().position(|&r| r == res).unwrap_or(0);
    let vpa_q = FAMILY_QUANTILES.iter().position(|&q| q == 0.9).unwrap_or(0) + 2;
    let ap_q = FAMILY_QUANTILES
        .iter()
        .position(|&q| q == 0.98)
        .unwrap_or(0)
        + 2;
    for idx in order {
        let run = &runs[idx];
        let now = run.started_at_ms;
        while let Some(Reverse((end, j))) = running.peek().copied() {
            if end > now {
                break;
            }
            running.pop();
            let done = &runs[j];
            let st = tasks.entry(done.task_key.clone()).or_default();
            // As the engine does when a run finishes: how its type's model (the one in force now) sized it.
            if let Some(o) = st.model.as_ref().and_then(|(m, _)| m.window_outcome(done)) {
                pool.add_window_outcome(&o);
            }
            for (r, res) in SCORED.iter().enumerate() {
                st.values[r].push(res.of(done, oom));
            }
            st.ends.push(end);
            st.history.push(done.clone());
        }
        running.push(Reverse((finished_at_ms(run), idx)));
        let st = tasks.entry(run.task_key.clone()).or_default();
        let n = st.history.len();
        if n < cfg.min_history.max(1) {
            report.cold += 1;
            continue;
        }
        if st.model.is_none() || n - st.trained_at >= cfg.retrain_every.max(1) {
            st.model = train_task_pooled(&st.history, now, &cfg.train, Some(&pool));
            let new_runs = if st.trained_at == 0 {
                n
            } else {
                n - st.trained_at
            };
            st.trained_at = n;
            report.fits += 1;
            if let Some((_, scores)) = &st.model {
                scores.add_to(&mut pool, new_runs as u64);
            }
        }
        let features = RunFeatures::from_metadata(&run.meta, now);
        let x = crate::model::features(&features);
        for (r, res) in SCORED.iter().enumerate() {
            let usage = res.of(run, 1.0);
            let rr = &mut report.resources[r];
            if let Some((m, scores)) = &st.model
                && let Some(t) = m.target(*res)
            {
                let e = t.estimate(&x);
                rr.ours.add(e.limit, e.lower, e.upper, usage);
                if *res == Resource::Memory {
                    rr.ours_broker
                        .add(e.allocation(m.confidence()), 0.0, 0.0, usage);
                }
                let floor = t.history_floor(x[0]);
                let point = t.point(&x);
                for (level, sc) in rr.ours_curve.iter_mut() {
                    let lim = limit_at(t, scores, &pool, slot(*res), *level, cfg) * point;
                    sc.add(lim.max(floor), 0.0, 0.0, usage);
                }
            }
            for h in History::ALL {
                let q = history_quantiles(st, r, h, now, cfg);
                let (p5, p95) = (q[0], q[1]);
                if h == History::Decayed {
                    rr.vpa.add(q[vpa_q] * 1.15, p5, p95, usage);
                }
                if h == History::Window {
                    rr.autopilot.add(q[ap_q] * 1.10, p5, p95, usage);
                }
                for p in rr.family.iter_mut().filter(|p| p.history == h) {
                    let qi = FAMILY_QUANTILES
                        .iter()
                        .position(|&fq| fq == p.quantile)
                        .unwrap_or(0)
                        + 2;
                    p.score.add(q[qi] * p.margin, 0.0, 0.0, usage);
                }
            }
        }
    }
    report.task_types = runs
        .iter()
        .map(|r| &r.task_key)
        .collect::<std::collections::HashSet<_>>()
        .len();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthConfig, generate};

    #[test]
    fn trace_round_trips_through_json_lines() {
        let runs = generate(&SynthConfig {
            task_types: 2,
            runs_per_task: 5,
            ..SynthConfig::default()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let mut buf = b"# comment\n\n".to_vec();
        write_trace(&mut buf, &runs).expect("write");
        std::fs::write(&path, buf).expect("write file");
        assert_eq!(read_trace(&path).expect("read"), runs);
        std::fs::write(&path, "{\"run_id\":1}\n").expect("write file");
        assert!(matches!(
            read_trace(&path),
            Err(TraceError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            read_trace(&dir.path().join("missing")),
            Err(TraceError::Read { .. })
        ));
    }

    #[test]
    fn replay_scores_every_policy_on_the_same_runs() {
        let runs = generate(&SynthConfig {
            task_types: 3,
            runs_per_task: 40,
            ..SynthConfig::default()
        });
        let rep = evaluate(&runs, &EvalConfig::default());
        assert_eq!(rep.runs, 120);
        let mem = rep.resource(Resource::Memory).expect("memory scored");
        let scored = rep.runs - rep.cold;
        assert!(scored > 90, "{} scored", scored);
        assert_eq!(mem.ours.runs, scored);
        assert_eq!(mem.vpa.runs, scored);
        assert_eq!(mem.autopilot.runs, scored);
        assert!(mem.family.iter().all(|p| p.score.runs == scored));
        assert!(mem.ours_curve.iter().all(|(_, s)| s.runs == scored));
        // A higher level never under-predicts more.
        let unders: Vec<u64> = mem.ours_curve.iter().map(|(_, s)| s.under).collect();
        assert!(unders.windows(2).all(|w| w[0] >= w[1]), "{unders:?}");
        let t = rep.table();
        assert!(t.contains("| ours | memory |"), "{t}");
        assert!(t.contains("Slack at equal under-prediction"), "{t}");
    }

    fn job(id: u64, start_s: u64, duration_s: f64, mem: u64) -> RunSummary {
        RunSummary {
            run_id: id,
            task_key: TaskKey::new("job"),
            started_at_ms: start_s * 1000,
            meta: crate::types::RunMetadata::default(),
            outcome: crate::types::RunOutcome {
                duration_s,
                peak_memory_bytes: mem,
                cpu_p95_cores: 1.0,
                ..crate::types::RunOutcome::default()
            },
            profile: None,
        }
    }

    #[test]
    fn a_run_joins_the_history_when_it_ends() {
        // Ten runs started a second apart, each lasting an hour: when the last one starts, none has ended, so
        // all are cold. Started an hour apart, each sees every earlier one and only the first five are cold.
        let overlapping: Vec<_> = (0..10).map(|i| job(i, i, 3600.0, 1 << 30)).collect();
        let rep = evaluate(&overlapping, &EvalConfig::default());
        assert_eq!(rep.cold, 10);
        let apart: Vec<_> = (0..10).map(|i| job(i, i * 3601, 3600.0, 1 << 30)).collect();
        let rep = evaluate(&apart, &EvalConfig::default());
        assert_eq!(rep.cold, 5);
    }

    #[test]
    fn zero_usage_at_zero_allocation_is_not_counted_as_slack() {
        let mut s = Score::default();
        s.add(0.0, 0.0, 0.0, 0.0);
        s.add(2.0, 0.0, 0.0, 1.0);
        s.add(1.0, 0.0, 0.0, 3.0);
        assert_eq!((s.runs, s.under), (3, 1));
        assert!((s.mean_slack() - 0.5).abs() < 1e-12, "{}", s.mean_slack());
    }

    #[test]
    fn best_baseline_is_the_least_slack_at_no_more_risk() {
        let mut rr = ResourceReport::new(Resource::Memory);
        let mk = |under: u64, slack: f64| {
            let mut s = Score::default();
            for i in 0..100 {
                if i < under {
                    s.add(1.0, 0.0, 0.0, 2.0);
                } else {
                    s.add(1.0, 0.0, 0.0, 1.0 - slack);
                }
            }
            s
        };
        for p in rr.family.iter_mut() {
            p.score = mk(50, 0.9);
        }
        rr.family[0].score = mk(1, 0.30);
        rr.family[1].score = mk(3, 0.10);
        rr.ours = mk(1, 0.20);
        assert_eq!(rr.best_baseline(0.01), Some(&rr.family[0]));
        let (gain, _) = rr.slack_reduction().expect("a baseline as safe");
        assert!((gain - (1.0 - 0.2 / 0.3)).abs() < 1e-9, "{gain}");
        assert!(rr.best_baseline(0.0).is_none());
    }

    #[test]
    fn vpa_like_forgets_with_a_24_hour_half_life() {
        // Twenty runs at 4 GiB, then five days later twenty at 1 GiB: the decayed P90 has forgotten the old
        // level (weights 2^-5), the whole history has not.
        let mut runs: Vec<_> = (0..20).map(|i| job(i, i * 60, 1.0, 4 << 30)).collect();
        runs.extend((0..20).map(|i| job(100 + i, 5 * 86_400 + i * 60, 1.0, 1 << 30)));
        let mut st = TaskState::default();
        for r in &runs {
            st.values[0].push(Resource::Memory.of(r, 1.0));
            st.ends.push(finished_at_ms(r));
        }
        let now = 5 * 86_400_000 + 30 * 60_000;
        let cfg = EvalConfig::default();
        let p90 = FAMILY_QUANTILES
            .iter()
            .position(|&q| q == 0.9)
            .expect("P90")
            + 2;
        let decayed = history_quantiles(&st, 0, History::Decayed, now, &cfg);
        let all = history_quantiles(&st, 0, History::All, now, &cfg);
        assert_eq!(decayed[p90], f64::from(1u32 << 30));
        assert_eq!(all[p90], 4.0 * f64::from(1u32 << 30));
    }
}
