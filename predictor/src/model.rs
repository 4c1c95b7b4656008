//! Per-task-type models and the [`Prediction`] they produce.
//!
//! For each task type and each target — duration, CPU (p95 cores), memory (peak bytes), IO (mean bytes/s) — two
//! candidates are trained on the task type's runs:
//! - **baseline**: the weighted median of a [`DecayingHistogram`] (half-life [`TrainConfig::half_life_ms`]);
//! - **regression**: a ridge regression ([`LinearModel`], smartcore) on the run's features (input bytes, dependency
//!   count, requested CPU and memory, host load, start time — the last lets it follow drift), tried only with at
//!   least [`TrainConfig::min_regression_runs`] runs.
//!
//! Both are scored by K-fold cross-validation (out-of-fold predictions of every run) on the mean absolute log
//! ratio `|ln(actual / predicted)|`; the regression is chosen only when it beats the baseline by 3%. The chosen
//! model's out-of-fold ratios `actual / predicted` are the conformal scores: the central interval at
//! [`TrainConfig::level`] takes their finite-sample-corrected quantiles, and the one-sided `limit` (what the broker
//! should allocate) takes the [`TrainConfig::limit_quantile`] quantile, or — when there are too few runs for that
//! quantile to exist — the larger of the largest ratio and a log-normal tail fitted to the ratios. Finally the chosen
//! model is refitted on all runs. This is CV+-style split-free conformal: coverage is approximately, not exactly,
//! the stated level (the final fit has seen more data than the fold fits, which makes it slightly conservative).
//!
//! The lifetime profile is the decay-weighted mean of the runs' normalised profiles (fraction of peak per bucket),
//! scaled by each target's estimate.
//!
//! Limits: runs killed by the OOM killer report a peak that is a lower bound of the need; they are inflated by
//! [`TrainConfig::oom_inflation`]. Fewer than [`TrainConfig::min_runs`] runs give a cold-start prediction.

use serde::{Deserialize, Serialize};

use crate::histogram::DecayingHistogram;
use crate::key::TaskKey;
use crate::regression::{LinearModel, N_FEATURES};
use crate::types::{BUCKETS, Profile, RunFeatures, RunSummary};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Lifetime, seconds.
    Duration,
    /// p95 CPU usage, cores.
    Cpu,
    /// Peak memory, bytes.
    Memory,
    /// Mean IO rate, bytes per second.
    Io,
}

impl Resource {
    /// All targets, in storage order.
    pub const ALL: [Resource; 4] = [
        Resource::Duration,
        Resource::Cpu,
        Resource::Memory,
        Resource::Io,
    ];

    /// The target's value in a finished run.
    pub fn of(self, run: &RunSummary, oom_inflation: f64) -> f64 {
        let o = &run.outcome;
        match self {
            Resource::Duration => o.duration_s,
            Resource::Cpu => o.cpu_p95_cores,
            Resource::Memory => {
                let peak = o.peak_memory_bytes as f64;
                if o.oom_killed {
                    peak * oom_inflation
                } else {
                    peak
                }
            }
            Resource::Io => {
                if o.duration_s > 0.0 {
                    o.io_bytes as f64 / o.duration_s
                } else {
                    0.0
                }
            }
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Duration => "duration",
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }
}

/// Which candidate a target model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Decaying-histogram median.
    Baseline,
    /// Ridge regression on run features.
    Regression,
}

impl ModelKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Baseline => "baseline",
            ModelKind::Regression => "regression",
        }
    }
}

/// How much history stands behind a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Cold start: no usable history. Every estimate is 0; fall back to the spec's limits.
    None,
    /// Fewer than 15 runs.
    Low,
    /// 15 to 49 runs.
    Medium,
    /// 50 runs or more.
    High,
}

/// Training parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Half-life of a run's weight in the baseline histogram and the profile.
    pub half_life_ms: u64,
    /// Coverage of the central interval `[lower, upper]`.
    pub level: f64,
    /// One-sided quantile for `limit`, per target in [`Resource::ALL`] order.
    pub limit_quantile: [f64; 4],
    /// Below this many runs a task type is cold.
    pub min_runs: usize,
    /// The regression is tried from this many runs on.
    pub min_regression_runs: usize,
    /// Below `min_regression_runs`, a regression on the input size alone is tried from this many runs on, when
    /// the runs' input sizes differ (a data job's memory follows its input from its first few runs).
    #[serde(default = "default_min_input_regression_runs")]
    pub min_input_regression_runs: usize,
    /// Cross-validation folds.
    pub folds: usize,
    /// Ridge penalty (standardised units).
    pub ridge_alpha: f64,
    /// Factor applied to the peak memory of OOM-killed runs.
    pub oom_inflation: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            half_life_ms: 7 * 24 * 3_600_000,
            level: 0.9,
            limit_quantile: [0.95, 0.95, 0.998, 0.95],
            min_runs: 5,
            min_regression_runs: 12,
            min_input_regression_runs: default_min_input_regression_runs(),
            folds: 5,
            ridge_alpha: 0.01,
            oom_inflation: 1.25,
        }
    }
}

fn default_min_input_regression_runs() -> usize {
    4
}

/// Conformal multipliers applied to a point estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Lower bound of the central interval, as a factor of the point estimate.
    pub lower: f64,
    /// Upper bound of the central interval.
    pub upper: f64,
    /// One-sided limit.
    pub limit: f64,
}

/// The trained model of one target of one task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetModel {
    /// The chosen candidate.
    pub kind: ModelKind,
    /// Baseline point estimate (decayed median).
    pub baseline: f64,
    /// The regression, when chosen.
    pub linear: Option<LinearModel>,
    /// Smallest value a regression may predict (half the smallest observed value).
    pub floor: f64,
    /// Largest value a regression may predict (twice the largest observed value).
    pub ceiling: f64,
    /// Conformal multipliers.
    pub calibration: Calibration,
    /// Cross-validated mean |ln(actual/predicted)| of the chosen candidate.
    pub error: f64,
    /// The same for the baseline (for reports).
    pub baseline_error: f64,
    /// The same for the regression, when it was tried.
    pub regression_error: Option<f64>,
}

impl TargetModel {
    /// Point estimate for a run with these features.
    pub fn point(&self, x: &[f64; N_FEATURES]) -> f64 {
        match (&self.kind, &self.linear) {
            (ModelKind::Regression, Some(m)) => m.predict(x).clamp(self.floor, self.ceiling),
            _ => self.baseline,
        }
    }

    /// The estimate for a run with these features.
    pub fn estimate(&self, x: &[f64; N_FEATURES]) -> Estimate {
        let point = self.point(x);
        Estimate {
            point,
            lower: point * self.calibration.lower,
            upper: point * self.calibration.upper,
            limit: point * self.calibration.limit,
            kind: Some(self.kind),
        }
    }
}

/// The trained model of one task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskModel {
    /// Runs the model was trained on.
    pub runs: u64,
    /// Training time, ms.
    pub trained_at_ms: u64,
    /// Start of the newest training run, ms.
    pub newest_run_ms: u64,
    /// Coverage of the central intervals.
    pub level: f64,
    /// Duration model.
    pub duration: TargetModel,
    /// CPU model.
    pub cpu: TargetModel,
    /// Memory model.
    pub memory: TargetModel,
    /// IO model.
    pub io: TargetModel,
    /// Mean normalised lifetime profile.
    pub shape: Profile,
}

impl TaskModel {
    /// The target model for `r`.
    pub fn target(&self, r: Resource) -> &TargetModel {
        match r {
            Resource::Duration => &self.duration,
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
            Resource::Io => &self.io,
        }
    }

    /// Confidence implied by the number of training runs.
    pub fn confidence(&self) -> Confidence {
        match self.runs {
            0..=14 => Confidence::Low,
            15..=49 => Confidence::Medium,
            _ => Confidence::High,
        }
    }

    /// Predicts a run of this task type. Allocation-light: one `Vec` of [`BUCKETS`] profile points.
    pub fn predict(&self, key: &TaskKey, features: &RunFeatures, model_version: u64) -> Prediction {
        let x = features_of(features);
        let duration = self.duration.estimate(&x);
        let cpu = self.cpu.estimate(&x);
        let memory = self.memory.estimate(&x);
        let io = self.io.estimate(&x);
        let profile = (0..BUCKETS)
            .map(|b| ProfilePoint {
                cpu_cores: Band::scaled(&cpu, self.shape.cpu.get(b).copied().unwrap_or(1.0)),
                memory_bytes: Band::scaled(
                    &memory,
                    self.shape.memory.get(b).copied().unwrap_or(1.0),
                ),
                io_bytes_per_s: Band::scaled(&io, self.shape.io.get(b).copied().unwrap_or(1.0)),
            })
            .collect();
        Prediction {
            task_key: key.clone(),
            confidence: self.confidence(),
            level: self.level,
            model_version,
            runs: self.runs,
            duration_s: duration,
            cpu_cores: cpu,
            memory_bytes: memory,
            io_bytes_per_s: io,
            profile,
        }
    }
}

/// An estimate of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Point estimate.
    pub point: f64,
    /// Lower bound of the central interval at [`Prediction::level`].
    pub lower: f64,
    /// Upper bound of the central interval at [`Prediction::level`].
    pub upper: f64,
    /// One-sided upper bound at the target's limit quantile (memory: 99.8%): what to allocate.
    pub limit: f64,
    /// Model behind the estimate (`None` on cold start).
    pub kind: Option<ModelKind>,
}

/// One value with its bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Point estimate.
    pub point: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

impl Band {
    fn scaled(e: &Estimate, f: f32) -> Self {
        let f = f64::from(f);
        Self {
            point: e.point * f,
            lower: e.lower * f,
            upper: e.upper * f,
        }
    }
}

/// Predicted usage in one normalised lifetime bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePoint {
    /// CPU, cores.
    pub cpu_cores: Band,
    /// Memory, bytes.
    pub memory_bytes: Band,
    /// IO, bytes per second.
    pub io_bytes_per_s: Band,
}

/// What the predictor says about a run about to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Task type.
    pub task_key: TaskKey,
    /// [`Confidence::None`] means cold start: ignore the estimates, use the spec's limits.
    pub confidence: Confidence,
    /// Coverage of every `[lower, upper]` interval (e.g. 0.9).
    pub level: f64,
    /// Version of the model set that answered (0 on cold start).
    pub model_version: u64,
    /// Runs behind the model.
    pub runs: u64,
    /// Lifetime, seconds.
    pub duration_s: Estimate,
    /// p95 CPU, cores.
    pub cpu_cores: Estimate,
    /// Peak memory, bytes.
    pub memory_bytes: Estimate,
    /// Mean IO rate, bytes/s.
    pub io_bytes_per_s: Estimate,
    /// Usage over [`BUCKETS`] normalised lifetime buckets (empty on cold start).
    pub profile: Vec<ProfilePoint>,
}

impl Prediction {
    /// The cold-start answer.
    pub fn cold(key: &TaskKey) -> Self {
        Self {
            task_key: key.clone(),
            confidence: Confidence::None,
            level: 0.0,
            model_version: 0,
            runs: 0,
            duration_s: Estimate::default(),
            cpu_cores: Estimate::default(),
            memory_bytes: Estimate::default(),
            io_bytes_per_s: Estimate::default(),
            profile: Vec::new(),
        }
    }

    /// Whether this is a cold start (the caller falls back to the spec's limits).
    pub fn is_cold_start(&self) -> bool {
        self.confidence == Confidence::None
    }

    /// The estimate for `r`.
    pub fn estimate(&self, r: Resource) -> &Estimate {
        match r {
            Resource::Duration => &self.duration_s,
            Resource::Cpu => &self.cpu_cores,
            Resource::Memory => &self.memory_bytes,
            Resource::Io => &self.io_bytes_per_s,
        }
    }
}

/// The regression's feature vector: input bytes, dependencies, requested CPU, requested memory, host load, days
/// since the epoch.
pub fn features(f: &RunFeatures) -> [f64; N_FEATURES] {
    features_of(f)
}

/// Column of the input size in [`features`].
const INPUT_BYTES: usize = 0;

fn features_of(f: &RunFeatures) -> [f64; N_FEATURES] {
    [
        f.input_bytes as f64,
        f64::from(f.dependencies),
        f.requested_cpu_cores,
        f.requested_memory_bytes,
        f.host_load,
        f.at_ms as f64 / 86_400_000.0,
    ]
}

/// Trains the model of one task type from its runs (any order). `None` when there are fewer than
/// [`TrainConfig::min_runs`] runs.
pub fn train_task(runs: &[RunSummary], now_ms: u64, cfg: &TrainConfig) -> Option<TaskModel> {
    if runs.len() < cfg.min_runs.max(2) {
        return None;
    }
    let mut sorted: Vec<&RunSummary> = runs.iter().collect();
    sorted.sort_by_key(|r| (r.started_at_ms, r.run_id));
    let newest = sorted.last().map_or(0, |r| r.started_at_ms);
    let weights: Vec<f64> = sorted
        .iter()
        .map(|r| DecayingHistogram::decay_weight(newest - r.started_at_ms, cfg.half_life_ms))
        .collect();
    let x: Vec<[f64; N_FEATURES]> = sorted
        .iter()
        .map(|r| features_of(&RunFeatures::from_metadata(&r.meta, r.started_at_ms)))
        .collect();
    let target = |res: Resource| -> TargetModel {
        let y: Vec<f64> = sorted
            .iter()
            .map(|r| res.of(r, cfg.oom_inflation))
            .collect();
        let q = cfg.limit_quantile[Resource::ALL.iter().position(|&r| r == res).unwrap_or(0)];
        train_target(&x, &y, &weights, cfg, q)
    };
    Some(TaskModel {
        runs: sorted.len() as u64,
        trained_at_ms: now_ms,
        newest_run_ms: newest,
        level: cfg.level,
        duration: target(Resource::Duration),
        cpu: target(Resource::Cpu),
        memory: target(Resource::Memory),
        io: target(Resource::Io),
        shape: mean_shape(&sorted, &weights),
    })
}

fn baseline_median(y: &[f64], w: &[f64], skip: Option<(usize, usize)>) -> f64 {
    let mut h = DecayingHistogram::new();
    for (i, (&v, &wi)) in y.iter().zip(w).enumerate() {
        if skip.is_some_and(|(k, folds)| i % folds == k) {
            continue;
        }
        h.add(v, wi);
    }
    h.quantile(0.5).unwrap_or(0.0)
}

fn train_target(
    x: &[[f64; N_FEATURES]],
    y: &[f64],
    w: &[f64],
    cfg: &TrainConfig,
    limit_q: f64,
) -> TargetModel {
    let n = y.len();
    let folds = cfg.folds.clamp(2, n.max(2));
    let min_y = y
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max_y = y.iter().copied().fold(0.0, f64::max);
    let floor = if min_y.is_finite() { min_y * 0.5 } else { 0.0 };
    let ceiling = (max_y * 2.0).max(floor);

    // Out-of-fold predictions of both candidates.
    let mut base_oof = vec![0.0; n];
    // The candidate regression: on every feature with enough runs, on the input size alone with a few.
    let columns: &[usize] = if n >= cfg.min_regression_runs {
        &[0, 1, 2, 3, 4, 5]
    } else {
        &[INPUT_BYTES]
    };
    let mut reg_oof: Option<Vec<f64>> =
        (n >= cfg.min_regression_runs.min(cfg.min_input_regression_runs)).then(|| vec![0.0; n]);
    for k in 0..folds {
        let b = baseline_median(y, w, Some((k, folds)));
        for i in (k..n).step_by(folds) {
            base_oof[i] = b;
        }
        if let Some(oof) = reg_oof.as_mut() {
            let (tx, ty): (Vec<[f64; N_FEATURES]>, Vec<f64>) = (0..n)
                .filter(|i| i % folds != k)
                .map(|i| (x[i], y[i]))
                .unzip();
            match LinearModel::fit_on(&tx, &ty, cfg.ridge_alpha, columns) {
                Ok(m) => {
                    for i in (k..n).step_by(folds) {
                        oof[i] = m.predict(&x[i]).clamp(floor, ceiling);
                    }
                }
                Err(_) => {
                    reg_oof = None;
                }
            }
        }
    }
    let baseline_error = log_error(y, &base_oof);
    let regression_error = reg_oof.as_ref().map(|p| log_error(y, p));
    let use_regression = regression_error.is_some_and(|e| e < baseline_error * 0.97);
    let linear = if use_regression {
        LinearModel::fit_on(x, y, cfg.ridge_alpha, columns).ok()
    } else {
        None
    };
    let (kind, oof, error) = match (&linear, reg_oof) {
        (Some(_), Some(oof)) => (
            ModelKind::Regression,
            oof,
            regression_error.unwrap_or(baseline_error),
        ),
        _ => (ModelKind::Baseline, base_oof, baseline_error),
    };
    let ratios: Vec<f64> = y
        .iter()
        .zip(&oof)
        .map(|(&a, &p)| {
            if p > 0.0 {
                a / p
            } else if a > 0.0 {
                f64::INFINITY
            } else {
                1.0
            }
        })
        .collect();
    TargetModel {
        kind,
        baseline: baseline_median(y, w, None),
        linear,
        floor,
        ceiling,
        calibration: calibrate(&ratios, cfg.level, limit_q),
        error,
        baseline_error,
        regression_error,
    }
}

fn log_error(y: &[f64], p: &[f64]) -> f64 {
    let n = y.len().max(1) as f64;
    y.iter()
        .zip(p)
        .map(|(&a, &b)| ((a.max(1e-12)) / (b.max(1e-12))).ln().abs())
        .sum::<f64>()
        / n
}

/// Conformal multipliers from out-of-fold ratios `actual / predicted`.
pub fn calibrate(ratios: &[f64], level: f64, limit_q: f64) -> Calibration {
    let mut r: Vec<f64> = ratios
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    if r.is_empty() {
        return Calibration {
            lower: 1.0,
            upper: 1.0,
            limit: 1.0,
        };
    }
    r.sort_by(f64::total_cmp);
    let n = r.len();
    let alpha = (1.0 - level).clamp(0.0, 1.0);
    // Finite-sample conformal ranks: the ceil((n+1)(1-a/2))-th smallest for the upper bound.
    let hi_rank = ((n as f64 + 1.0) * (1.0 - alpha / 2.0) - 1e-9).ceil() as usize;
    let lo_rank = ((n as f64 + 1.0) * (alpha / 2.0) + 1e-9).floor() as usize;
    let upper = r[hi_rank.clamp(1, n) - 1];
    let lower = if lo_rank == 0 {
        r[0] * 0.9
    } else {
        r[lo_rank.min(n) - 1]
    };
    let lim_rank = ((n as f64 + 1.0) * limit_q - 1e-9).ceil() as usize;
    let empirical = r[lim_rank.clamp(1, n) - 1];
    let limit = if lim_rank > n {
        // The quantile does not exist at this sample size: take the larger of the maximum and a log-normal tail.
        let logs: Vec<f64> = r.iter().map(|v| v.max(1e-12).ln()).collect();
        let mean = logs.iter().sum::<f64>() / n as f64;
        let sd =
            (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64).sqrt();
        // Student-t predictive bound: the sd itself is estimated from few ratios.
        let t = student_t_quantile(limit_q, (n.max(2) - 1) as f64);
        empirical.max((mean + t * sd * (1.0 + 1.0 / n as f64).sqrt()).exp())
    } else {
        empirical
    };
    Calibration {
        lower,
        upper,
        limit: limit.max(upper),
    }
}

/// Quantile of Student's t with `dof` degrees of freedom (Cornish–Fisher expansion around the normal quantile;
/// within 2% of the exact value from 3 degrees of freedom on, which is all a safety margin needs).
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    let z = normal_quantile(p);
    let v = dof.max(1.0);
    let z3 = z.powi(3);
    let z5 = z.powi(5);
    let z7 = z.powi(7);
    z + (z3 + z) / (4.0 * v)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v * v * v)
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

fn mean_shape(runs: &[&RunSummary], w: &[f64]) -> Profile {
    let mut acc = [[0.0f64; BUCKETS]; 3];
    let mut total = 0.0;
    for (r, &wi) in runs.iter().zip(w) {
        let Some(p) = r.profile.as_ref().filter(|p| p.is_well_formed()) else {
            continue;
        };
        for (a, series) in acc.iter_mut().zip([&p.cpu, &p.memory, &p.io]) {
            for (slot, v) in a.iter_mut().zip(series.iter()) {
                *slot += wi * f64::from(*v);
            }
        }
        total += wi;
    }
    if total <= 0.0 {
        return Profile::flat();
    }
    let norm = |a: &[f64; BUCKETS]| a.iter().map(|v| (v / total) as f32).collect();
    Profile {
        cpu: norm(&acc[0]),
        memory: norm(&acc[1]),
        io: norm(&acc[2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthConfig, generate};
    use crate::types::{RunMetadata, RunOutcome};

    fn run(i: u64, input: u64, mem: f64, profile: Option<Profile>) -> RunSummary {
        RunSummary {
            run_id: i,
            task_key: TaskKey::new("t"),
            started_at_ms: 1_000_000 + i * 60_000,
            meta: RunMetadata {
                input_bytes: input,
                host_load: 0.5,
                ..RunMetadata::default()
            },
            outcome: RunOutcome {
                duration_s: 100.0,
                peak_memory_bytes: mem as u64,
                cpu_p95_cores: 1.0,
                ..RunOutcome::default()
            },
            profile,
        }
    }

    /// Pseudo-noise in [-1, 1] without an RNG dependency.
    fn wobble(i: u64) -> f64 {
        let mut r = crate::synth::Rng::new(i);
        r.range(-1.0, 1.0)
    }

    #[test]
    fn too_few_runs_is_cold() {
        let runs: Vec<_> = (0..4).map(|i| run(i, 0, 1e9, None)).collect();
        assert!(train_task(&runs, 0, &TrainConfig::default()).is_none());
        assert!(train_task(&runs[..0], 0, &TrainConfig::default()).is_none());
    }

    #[test]
    fn baseline_wins_when_features_carry_no_information() {
        let runs: Vec<_> = (0..60)
            .map(|i| run(i, 1000 + (i % 7) * 10, 1e9 * (1.0 + 0.02 * wobble(i)), None))
            .collect();
        let m = train_task(&runs, 0, &TrainConfig::default()).expect("enough runs");
        assert_eq!(m.memory.kind, ModelKind::Baseline);
        assert!(
            (m.memory.baseline / 1e9 - 1.0).abs() < 0.02,
            "{}",
            m.memory.baseline
        );
        let p = m.predict(&TaskKey::new("t"), &RunFeatures::default(), 3);
        assert_eq!(p.model_version, 3);
        assert_eq!(p.confidence, Confidence::High);
        assert!(
            p.memory_bytes.limit >= 1.015e9,
            "limit covers the noise: {}",
            p.memory_bytes.limit
        );
        assert!(
            p.memory_bytes.limit < 1.1e9,
            "but not wastefully: {}",
            p.memory_bytes.limit
        );
        assert!(
            p.memory_bytes.lower <= p.memory_bytes.point
                && p.memory_bytes.point <= p.memory_bytes.upper
        );
    }

    #[test]
    fn regression_wins_when_memory_follows_input_size() {
        let runs: Vec<_> = (0..80)
            .map(|i| {
                let input = 1_000_000 * (1 + (i * 37) % 100);
                let mem = (2e8 + 10.0 * input as f64) * (1.0 + 0.01 * wobble(i));
                run(i, input, mem, None)
            })
            .collect();
        let m = train_task(&runs, 0, &TrainConfig::default()).expect("enough runs");
        assert_eq!(m.memory.kind, ModelKind::Regression);
        assert!(m.memory.error < m.memory.baseline_error / 3.0);
        let f = RunFeatures {
            input_bytes: 50_000_000,
            host_load: 0.5,
            at_ms: 1_000_000 + 80 * 60_000,
            ..RunFeatures::default()
        };
        let p = m.predict(&TaskKey::new("t"), &f, 1);
        let want = 2e8 + 10.0 * 50e6;
        assert!(
            (p.memory_bytes.point / want - 1.0).abs() < 0.03,
            "{} vs {want}",
            p.memory_bytes.point
        );
        assert!(p.memory_bytes.limit > want && p.memory_bytes.limit < want * 1.1);
    }

    #[test]
    fn a_few_runs_with_different_inputs_scale_memory_with_the_input() {
        // Six runs of a data job (two inputs a round over three rounds, as a pipeline feeds them): fewer than
        // min_regression_runs, so only the input size is regressed on; the bigger input gets more memory.
        let inputs = [8, 6, 11, 9, 14, 12];
        let runs: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(i, &mb)| {
                let input = mb * 1_000_000;
                let mem = (3e7 + 12.0 * input as f64) * (1.0 + 0.02 * wobble(i as u64));
                run(i as u64, input, mem, None)
            })
            .collect();
        let cfg = TrainConfig {
            min_runs: 3,
            ..TrainConfig::default()
        };
        let m = train_task(&runs, 0, &cfg).expect("enough runs");
        assert_eq!(m.memory.kind, ModelKind::Regression);
        assert_eq!(
            m.memory.linear.as_ref().map(|l| l.columns.clone()),
            Some(vec![0])
        );
        let predict = |mb: u64| {
            let f = RunFeatures {
                input_bytes: mb * 1_000_000,
                ..RunFeatures::default()
            };
            m.predict(&TaskKey::new("t"), &f, 1).memory_bytes.point
        };
        let (small, big) = (predict(9), predict(15));
        assert!(big > small * 1.4, "15 MB input {big} vs 9 MB {small}");
        let want = 3e7 + 12.0 * 15e6;
        assert!((big / want - 1.0).abs() < 0.05, "{big} vs {want}");
        // The same runs with one input size: nothing to regress on, the baseline stands.
        let same: Vec<_> = (0..6).map(|i| run(i, 5_000_000, 9e7, None)).collect();
        let m = train_task(&same, 0, &cfg).expect("enough runs");
        assert_eq!(m.memory.kind, ModelKind::Baseline);
    }

    #[test]
    fn oom_killed_runs_are_inflated() {
        let mut runs: Vec<_> = (0..10).map(|i| run(i, 0, 1e9, None)).collect();
        for r in &mut runs {
            r.outcome.oom_killed = true;
        }
        let m = train_task(&runs, 0, &TrainConfig::default()).expect("enough runs");
        assert!(m.memory.baseline >= 1.25e9 * 0.999, "{}", m.memory.baseline);
    }

    #[test]
    fn profile_keeps_a_late_peak_late() {
        let late: Vec<f32> = (0..BUCKETS)
            .map(|b| (b + 1) as f32 / BUCKETS as f32)
            .collect();
        let profile = Profile {
            cpu: vec![1.0; BUCKETS],
            memory: late,
            io: vec![0.5; BUCKETS],
        };
        let runs: Vec<_> = (0..20)
            .map(|i| run(i, 0, 4e9 * (1.0 + 0.01 * wobble(i)), Some(profile.clone())))
            .collect();
        let m = train_task(&runs, 0, &TrainConfig::default()).expect("enough runs");
        let p = m.predict(&TaskKey::new("t"), &RunFeatures::default(), 1);
        assert_eq!(p.profile.len(), BUCKETS);
        let mem: Vec<f64> = p.profile.iter().map(|b| b.memory_bytes.point).collect();
        assert!(
            mem.windows(2).all(|w| w[0] <= w[1]),
            "monotone ramp: {mem:?}"
        );
        assert!((mem[BUCKETS - 1] / p.memory_bytes.point - 1.0).abs() < 1e-6);
        assert!(mem[0] < 0.1 * p.memory_bytes.point);
        let b = p.profile[BUCKETS - 1].memory_bytes;
        assert!(b.lower <= b.point && b.point <= b.upper);
    }

    #[test]
    fn calibrate_uses_conformal_ranks_and_a_tail_for_small_samples() {
        let ratios: Vec<f64> = (1..=199)
            .map(|i| 0.9 + 0.2 * f64::from(i) / 200.0)
            .collect();
        let c = calibrate(&ratios, 0.9, 0.95);
        // ceil(200 * 0.95) = 190th smallest; floor(200 * 0.05) = 10th smallest.
        assert!((c.upper - ratios[189]).abs() < 1e-12);
        assert!((c.lower - ratios[9]).abs() < 1e-12);
        assert!((c.limit - ratios[189]).abs() < 1e-12);
        // 0.995 of 10 ratios does not exist: the limit goes beyond the largest ratio.
        let few: Vec<f64> = (0..10).map(|i| 1.0 + 0.01 * f64::from(i)).collect();
        let c = calibrate(&few, 0.9, 0.995);
        assert!(c.limit > 1.09, "{}", c.limit);
        assert_eq!(calibrate(&[], 0.9, 0.9).limit, 1.0);
    }

    #[test]
    fn quantile_functions_match_tables() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.995) - 2.575829).abs() < 1e-5);
        assert!((normal_quantile(0.01) + 2.326348).abs() < 1e-5);
        assert!((student_t_quantile(0.995, 4.0) - 4.604).abs() < 0.1);
        assert!((student_t_quantile(0.975, 10.0) - 2.228).abs() < 0.01);
        assert!((student_t_quantile(0.995, 1000.0) - 2.5808).abs() < 0.001);
    }

    /// Acceptance: a 90% interval covers 85-95% of held-out runs of a synthetic trace.
    #[test]
    fn ninety_percent_interval_covers_85_to_95_percent_of_held_out_runs() {
        let cfg = SynthConfig {
            seed: 11,
            task_types: 4,
            runs_per_task: 700,
            drift_scale: 0.0,
            outlier_rate: 0.0,
            ..SynthConfig::default()
        };
        let trace = generate(&cfg);
        let train_cfg = TrainConfig::default();
        let mut covered = [0u64; 4];
        let mut total = 0u64;
        for t in 0..cfg.task_types {
            let key = TaskKey::new(format!("synth-{t:04}"));
            let runs: Vec<RunSummary> = trace
                .iter()
                .filter(|r| r.task_key == key)
                .cloned()
                .collect();
            let (train, held_out) = runs.split_at(200);
            let m = train_task(train, 0, &train_cfg).expect("enough runs");
            for r in held_out {
                let p = m.predict(
                    &key,
                    &RunFeatures::from_metadata(&r.meta, r.started_at_ms),
                    1,
                );
                for (i, res) in Resource::ALL.iter().enumerate() {
                    let e = p.estimate(*res);
                    let v = res.of(r, 1.0);
                    covered[i] += u64::from(v >= e.lower && v <= e.upper);
                }
                total += 1;
            }
        }
        for (i, res) in Resource::ALL.iter().enumerate() {
            let cov = covered[i] as f64 / total as f64;
            assert!(
                (0.85..=0.95).contains(&cov),
                "{}: coverage {cov:.3} over {total} runs",
                res.name()
            );
        }
    }
}
