//! What the predictor says, as it travels on the wire: a [`Prediction`] (in `registered`, `history` and, per
//! estimate, `status`), a [`TaskTypeSummary`] (`models`) and a [`Decision`] (`explain`).
//!
//! These are the protocol's own types, not the predictor's: the broker converts its `predictor` values into them
//! (`From` impls in `broker::convert`), so a change to the predictor's internals cannot change the JSON
//! unnoticed. The JSON shape is the one docs/BROKER-API.md documents; the broker's conversion tests pin it
//! against the predictor's own serialisation.

use serde::{Deserialize, Serialize};

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
    /// Mean network egress, bytes per second (listed only for a type whose runs measured it).
    Net,
    /// Mean network ingress, bytes per second (listed only for a type whose runs measured it).
    #[serde(rename = "net-rx")]
    NetRx,
}

/// Which candidate a target model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Median of the task type's recent window.
    Baseline,
    /// Ridge regression on run features.
    Regression,
    /// Median of the same hour of day over the last week.
    Seasonal,
    /// The latest run's value (persistence).
    Last,
    /// Exponentially weighted mean of the runs.
    Ewma,
    /// The largest of the latest few runs.
    RecentMax,
}

impl ModelKind {
    /// Lower-case name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Baseline => "baseline",
            ModelKind::Regression => "regression",
            ModelKind::Seasonal => "seasonal",
            ModelKind::Last => "last",
            ModelKind::Ewma => "ewma",
            ModelKind::RecentMax => "recent-max",
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

/// What the predictor said about a run as it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Task type.
    pub task_key: String,
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
    /// Mean network egress, bytes/s: the broker's egress share of a task without an egress annotation. All 0 with
    /// `kind: null` when the task type's runs never measured egress; absent from an older broker (then the default).
    #[serde(default)]
    pub net_tx_bytes_per_s: Estimate,
    /// Mean network ingress, bytes/s: the broker's ingress share of a task without an ingress annotation. All 0
    /// with `kind: null` when the task type's runs never measured ingress; absent from an older broker.
    #[serde(default)]
    pub net_rx_bytes_per_s: Estimate,
    /// Usage over normalised lifetime buckets (empty on cold start).
    pub profile: Vec<ProfilePoint>,
}

impl Prediction {
    /// Whether this is a cold start (no usable history: the spec's limits apply).
    pub fn is_cold_start(&self) -> bool {
        self.confidence == Confidence::None
    }
}

/// One line of `predictivectl models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeSummary {
    /// Task type.
    pub task_key: String,
    /// Runs recorded.
    pub runs_seen: u64,
    /// Image of the latest run.
    pub image: String,
    /// Version of the model in force, if any.
    pub model_version: Option<u64>,
    /// Per target: model kind and forward-validated mean |ln(actual/predicted)|.
    pub targets: Vec<TargetSummary>,
}

/// Model kind and error of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// Target.
    pub resource: Resource,
    /// Chosen model.
    pub kind: ModelKind,
    /// Forward-validated mean |ln(actual/predicted)| (0.05 ≈ 5% typical error).
    pub error: f64,
}

/// What the broker did to a container's limits, in a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// Initial limits set at create time.
    Initial,
    /// A limit was raised.
    Raise,
    /// A limit was lowered.
    Lower,
    /// The container was left as it was despite a signal (for the record).
    Hold,
    /// Fell back to the spec's limits (cold start or predictor unavailable).
    Fallback,
}

/// One entry of the decision log: a limit change the broker made, with the reason and the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Sequence number in the broker's store.
    #[serde(default)]
    pub seq: u64,
    /// When the decision was made, ms since the epoch.
    pub at_ms: u64,
    /// Container id.
    pub container_id: String,
    /// Task type of the container.
    pub task_key: String,
    /// What was done.
    pub directive: DecisionKind,
    /// Which resource (`"memory"`, `"cpu"`, `"io"`, `"freezer"`, `"net"`, `"net-ingress"`).
    pub resource: String,
    /// Why, in words.
    pub reason: String,
    /// The limit before, if any.
    #[serde(default)]
    pub old_value: Option<f64>,
    /// The limit after.
    #[serde(default)]
    pub new_value: Option<f64>,
    /// Model version behind the decision, when a prediction was used.
    #[serde(default)]
    pub model_version: Option<u64>,
}
