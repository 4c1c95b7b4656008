//! predictor: the telemetry and model store that predicts a container's resource profile from the history of its
//! task type. The broker daemon owns one [`Predictor`] (one redb file); the shim never opens the file.
//!
//! Flow: the broker derives a [`TaskKey`] from the container's annotations, image and command
//! ([`TaskKey::derive`]), asks [`Predictor::predict`] before start (a cold start says so and the broker uses the
//! spec's limits), streams [`Sample`]s with [`Predictor::append_samples`] while it runs, records a [`RunSummary`]
//! when it exits, logs every limit change with [`Predictor::record_decision`], and calls
//! [`Predictor::maybe_retrain`] and [`Predictor::apply_retention`] from a background thread. A task type is refitted
//! on its own as soon as it has enough new runs ([`Predictor::refit_pending`], which the broker calls after each
//! committed Finish), and runs recorded on other nodes are merged with [`Predictor::import_runs`] (run identity:
//! origin node id + run id, see [`store`]).
//!
//! Modules: [`key`] (task identity), [`store`] (redb tables, schema, retention), [`histogram`] (decaying
//! quantile baseline), [`percentile`](mod@percentile) (the workspace's one percentile, nearest rank),
//! [`regression`] (smartcore ridge), [`model`] (training, selection, conformal calibration,
//! [`Prediction`]), [`pool`] (conformal scores pooled across task types for young types' limits), [`engine`] (the [`Predictor`] facade, atomic model swap), [`eval`] (trace format and offline
//! replay), [`synth`] (synthetic traces).
//!
//! Limits: one process owns the file (redb takes an exclusive lock); the model set is held in memory; the models
//! are per task type, so a task type needs [`TrainConfig::min_runs`] runs before it gets predictions.

pub mod engine;
pub mod eval;
pub mod histogram;
pub mod key;
pub mod model;
pub mod percentile;
pub mod pool;
pub mod regression;
pub mod store;
pub mod synth;
pub mod types;

pub use engine::{
    ModelSet, Predictor, PredictorConfig, PredictorError, RetrainPolicy, RetrainReport,
    TargetSummary, TaskTypeSummary,
};
pub use key::{
    CRI_CONTAINER_NAME_ANNOTATION, CRI_CONTAINER_TYPE_ANNOTATION, CRI_IMAGE_NAME_ANNOTATION,
    CRI_SANDBOX_NAME_ANNOTATION, CRI_SANDBOX_NAMESPACE_ANNOTATION, TASK_TYPE_ANNOTATION, TaskKey,
    workload_name,
};
pub use model::{
    Band, Confidence, Estimate, ModelKind, Prediction, ProfilePoint, Resource, TaskModel,
    TrainConfig, YOUNG_LIMIT_CAP,
};
pub use percentile::percentile;
pub use store::{
    Batch, BatchOp, DecisionQuery, ImportReport, OpenRun, PortableRun, RetentionPolicy,
    RetentionReport, Store, StoreError, StoreOptions, TaskTypeRecord, names_container,
};
pub use types::{
    BUCKETS, Decision, Directive, Profile, RunFeatures, RunId, RunMetadata, RunOutcome, RunSummary,
    Sample,
};
