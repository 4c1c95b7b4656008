//! [`Predictor`]: the object the broker owns — the store plus the in-memory model set that answers predictions.
//!
//! Predictions never touch the database: they read the current [`ModelSet`] behind an `RwLock<Arc<_>>` (a pointer
//! copy under a read lock), so they stay fast while a retrain runs. [`Predictor::retrain`] is meant for a background
//! thread: it reads all runs from one snapshot, trains every task type, writes the new version and makes it current
//! in one transaction, and only then swaps the in-memory pointer. Until the swap every prediction is answered by the
//! old version; if training or the write fails the old version stays. One retrain runs at a time.
//!
//! Limits: a retrain retrains every task type (100,000 runs take well under the 10 s budget, see
//! docs/benchmarks/predictor.md); the whole model set is held in memory (a few KB per task type).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::key::TaskKey;
use crate::model::{ModelKind, Prediction, Resource, TaskModel, TrainConfig, train_task};
use crate::store::{DecisionQuery, RetentionPolicy, RetentionReport, Store, StoreError};
use crate::types::{Decision, RunFeatures, RunId, RunSummary, Sample};

/// Errors of the predictor facade.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another retrain is running.
    #[error("a retrain is already running")]
    RetrainBusy,
}

/// When [`Predictor::maybe_retrain`] retrains.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainPolicy {
    /// Retrain when this long has passed since the last training and there is at least one new run.
    pub interval_ms: u64,
    /// Retrain when this many runs were recorded since the last training.
    pub new_runs: u64,
}

impl Default for RetrainPolicy {
    fn default() -> Self {
        Self {
            interval_ms: 10 * 60_000,
            new_runs: 200,
        }
    }
}

/// Everything configurable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictorConfig {
    /// Model training.
    pub train: TrainConfig,
    /// Retraining cadence.
    pub retrain: RetrainPolicy,
    /// Telemetry retention.
    pub retention: RetentionPolicy,
    /// How the store file is opened (redb's cache size).
    pub store: crate::store::StoreOptions,
}

/// One immutable version of all task models.
#[derive(Debug, Default)]
pub struct ModelSet {
    /// Version (0 = never trained).
    pub version: u64,
    /// Model per task type.
    pub models: HashMap<TaskKey, TaskModel>,
}

/// What a retrain did.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainReport {
    /// The new current version.
    pub version: u64,
    /// Task types with a model.
    pub task_types: usize,
    /// Task types with too few runs for a model (cold).
    pub cold: usize,
    /// Runs read.
    pub runs: u64,
    /// Wall time of the whole retrain.
    pub elapsed: std::time::Duration,
}

/// One line of `predictivectl models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeSummary {
    /// Task type.
    pub task_key: TaskKey,
    /// Runs recorded.
    pub runs_seen: u64,
    /// Image of the latest run.
    pub image: String,
    /// Version of the model in force, if any.
    pub model_version: Option<u64>,
    /// Per target: model kind and cross-validated mean |ln(actual/predicted)|.
    pub targets: Vec<TargetSummary>,
}

/// Model kind and error of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    /// Target.
    pub resource: Resource,
    /// Chosen model.
    pub kind: ModelKind,
    /// Cross-validated mean |ln(actual/predicted)| (0.05 ≈ 5% typical error).
    pub error: f64,
}

/// The predictor: store + current models. Share it as `Arc<Predictor>`; every method takes `&self`.
#[derive(Debug)]
pub struct Predictor {
    store: Store,
    config: PredictorConfig,
    current: RwLock<Arc<ModelSet>>,
    retraining: Mutex<()>,
    runs_since_train: AtomicU64,
    last_train_ms: AtomicU64,
}

impl Predictor {
    /// Opens the database at `path` (creating it) and loads the current model version.
    pub fn open(path: &Path, config: PredictorConfig) -> Result<Self, PredictorError> {
        let store = Store::open_with(path, &config.store)?;
        let version = store.current_model_version()?;
        let models = if version > 0 {
            store.load_models(version)?
        } else {
            HashMap::new()
        };
        let trained_at = models.values().map(|m| m.trained_at_ms).max().unwrap_or(0);
        Ok(Self {
            store,
            config,
            current: RwLock::new(Arc::new(ModelSet { version, models })),
            retraining: Mutex::new(()),
            // Unknown after a restart: count as due so the first maybe_retrain trains.
            runs_since_train: AtomicU64::new(u64::from(version == 0)),
            last_train_ms: AtomicU64::new(trained_at),
        })
    }

    /// The underlying store (for reads the facade does not wrap).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    /// The model set in force (cheap: an `Arc` clone). Holding it keeps that version alive across a swap.
    pub fn models(&self) -> Arc<ModelSet> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            // A panic while holding the lock cannot leave the Arc half-written: use it.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Version of the model set in force.
    pub fn model_version(&self) -> u64 {
        self.models().version
    }

    /// Predicts a run of `key` with `features`. Never fails: no model means [`Prediction::is_cold_start`].
    pub fn predict(&self, key: &TaskKey, features: &RunFeatures) -> Prediction {
        let set = self.models();
        match set.models.get(key) {
            Some(m) => m.predict(key, features, set.version),
            None => Prediction::cold(key),
        }
    }

    /// Allocates a run id for a container about to start (its samples and summary use it).
    pub fn allocate_run_id(&self) -> Result<RunId, PredictorError> {
        Ok(self.store.allocate_run_id()?)
    }

    /// Records a finished run.
    pub fn record_run(&self, run: &RunSummary) -> Result<(), PredictorError> {
        self.store.record_run(run)?;
        self.runs_since_train.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records many finished runs in one transaction.
    pub fn record_runs(&self, runs: &[RunSummary]) -> Result<(), PredictorError> {
        self.store.record_runs(runs)?;
        self.runs_since_train
            .fetch_add(runs.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Commits a batch in one transaction (the broker's group commit); its finished runs count towards retraining.
    pub fn commit(&self, batch: &crate::store::Batch) -> Result<(), PredictorError> {
        self.store.commit(batch)?;
        let runs = batch
            .ops
            .iter()
            .filter(|o| matches!(o, crate::store::BatchOp::Run { .. }))
            .count();
        self.runs_since_train
            .fetch_add(runs as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Appends telemetry samples of a running run.
    pub fn append_samples(&self, run_id: RunId, samples: &[Sample]) -> Result<(), PredictorError> {
        Ok(self.store.append_samples(run_id, samples)?)
    }

    /// Logs a limit change; returns its sequence number.
    pub fn record_decision(&self, decision: &Decision) -> Result<u64, PredictorError> {
        Ok(self.store.record_decision(decision)?)
    }

    /// Logs several limit changes in one transaction; returns their sequence numbers.
    pub fn record_decisions(&self, decisions: &[Decision]) -> Result<Vec<u64>, PredictorError> {
        Ok(self.store.record_decisions(decisions)?)
    }

    /// Appends telemetry samples of several runs in one transaction.
    pub fn append_samples_many(
        &self,
        batches: &[(RunId, Vec<Sample>)],
    ) -> Result<(), PredictorError> {
        Ok(self.store.append_samples_many(batches)?)
    }

    /// Reads the decision log.
    pub fn decisions(&self, q: &DecisionQuery) -> Result<Vec<Decision>, PredictorError> {
        Ok(self.store.decisions(q)?)
    }

    /// Applies the configured retention policy.
    pub fn apply_retention(&self, now_ms: u64) -> Result<RetentionReport, PredictorError> {
        Ok(self.store.apply_retention(now_ms, &self.config.retention)?)
    }

    /// Whether [`RetrainPolicy`] says a retrain is due at `now_ms`.
    pub fn retrain_due(&self, now_ms: u64) -> bool {
        let new_runs = self.runs_since_train.load(Ordering::Relaxed);
        let last = self.last_train_ms.load(Ordering::Relaxed);
        new_runs >= self.config.retrain.new_runs.max(1)
            || (new_runs > 0 && now_ms.saturating_sub(last) >= self.config.retrain.interval_ms)
    }

    /// Retrains if due; `Ok(None)` when not due or another retrain is running.
    pub fn maybe_retrain(&self, now_ms: u64) -> Result<Option<RetrainReport>, PredictorError> {
        if !self.retrain_due(now_ms) {
            return Ok(None);
        }
        match self.retrain(now_ms) {
            Ok(r) => Ok(Some(r)),
            Err(PredictorError::RetrainBusy) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Retrains every task type from the stored runs and swaps the new version in. Call it off the hot path.
    pub fn retrain(&self, now_ms: u64) -> Result<RetrainReport, PredictorError> {
        let _guard = match self.retraining.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => return Err(PredictorError::RetrainBusy),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let started = std::time::Instant::now();
        let pending_before = self.runs_since_train.load(Ordering::Relaxed);
        let cfg = &self.config.train;
        let mut models = HashMap::new();
        let mut cold = 0;
        let mut runs = 0u64;
        self.store.for_each_task_runs(|key, task_runs| {
            runs += task_runs.len() as u64;
            match train_task(&task_runs, now_ms, cfg) {
                Some(m) => {
                    models.insert(key.clone(), m);
                }
                None => cold += 1,
            }
        })?;
        let version = self
            .store
            .current_model_version()?
            .max(self.model_version())
            + 1;
        self.store.save_models(version, models.iter(), 1)?;
        let report = RetrainReport {
            version,
            task_types: models.len(),
            cold,
            runs,
            elapsed: started.elapsed(),
        };
        let new_set = Arc::new(ModelSet { version, models });
        match self.current.write() {
            Ok(mut g) => *g = new_set,
            Err(poisoned) => *poisoned.into_inner() = new_set,
        }
        self.runs_since_train
            .fetch_sub(pending_before, Ordering::Relaxed);
        self.last_train_ms.store(now_ms, Ordering::Relaxed);
        tracing::info!(
            version,
            task_types = report.task_types,
            runs,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "predictor models retrained"
        );
        Ok(report)
    }

    /// Every known task type with its runs and the current model's kind and error per target.
    pub fn task_types(&self) -> Result<Vec<TaskTypeSummary>, PredictorError> {
        let set = self.models();
        let out = self
            .store
            .task_types()?
            .into_iter()
            .map(|(key, rec)| {
                let model = set.models.get(&key);
                TaskTypeSummary {
                    runs_seen: rec.runs_seen,
                    image: rec.image,
                    model_version: model.map(|_| set.version),
                    targets: model
                        .map(|m| {
                            Resource::ALL
                                .iter()
                                .map(|&r| TargetSummary {
                                    resource: r,
                                    kind: m.target(r).kind,
                                    error: m.target(r).error,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    task_key: key,
                }
            })
            .collect();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Confidence;
    use crate::synth::{SynthConfig, generate};

    fn trace() -> Vec<RunSummary> {
        generate(&SynthConfig {
            task_types: 3,
            runs_per_task: 30,
            ..SynthConfig::default()
        })
    }

    fn open(dir: &tempfile::TempDir, cfg: PredictorConfig) -> Predictor {
        Predictor::open(&dir.path().join("p.redb"), cfg).expect("open")
    }

    #[test]
    fn predictor_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Predictor>();
    }

    #[test]
    fn cold_start_then_prediction_after_retrain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let runs = trace();
        let key = runs[0].task_key.clone();
        let features = RunFeatures::from_metadata(&runs[0].meta, runs[0].started_at_ms);
        let cold = p.predict(&key, &features);
        assert!(cold.is_cold_start());
        assert_eq!(cold.model_version, 0);
        p.record_runs(&runs).expect("record");
        let rep = p.retrain(1).expect("retrain");
        assert_eq!(
            (rep.version, rep.task_types, rep.cold, rep.runs),
            (1, 3, 0, 90)
        );
        let pred = p.predict(&key, &features);
        assert!(!pred.is_cold_start());
        assert_eq!(pred.confidence, Confidence::Medium);
        assert_eq!(pred.model_version, 1);
        assert_eq!(pred.profile.len(), crate::types::BUCKETS);
        let actual = runs[0].outcome.peak_memory_bytes as f64;
        assert!(
            (pred.memory_bytes.point / actual - 1.0).abs() < 0.5,
            "{} vs {actual}",
            pred.memory_bytes.point
        );
        assert!(
            p.predict(&TaskKey::new("unknown"), &features)
                .is_cold_start()
        );
    }

    #[test]
    fn retrain_swaps_atomically_and_old_version_stays_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Arc::new(open(&dir, PredictorConfig::default()));
        let runs = trace();
        let key = runs[0].task_key.clone();
        p.record_runs(&runs[..45]).expect("record");
        p.retrain(1).expect("retrain v1");
        let old = p.models();
        assert_eq!(old.version, 1);
        p.record_runs(&runs[45..]).expect("record");
        // Predictions during a retrain are answered by v1 or v2, never cold, never going backwards.
        let reader = {
            let p = Arc::clone(&p);
            let key = key.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..2_000 {
                    let pr = p.predict(&key, &RunFeatures::default());
                    seen.push(pr.model_version);
                }
                seen
            })
        };
        let rep = p.retrain(2).expect("retrain v2");
        let seen = reader.join().expect("reader thread");
        assert_eq!(rep.version, 2);
        assert!(seen.iter().all(|v| *v == 1 || *v == 2), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        // The old set is intact for whoever still holds it, and still stored until the next swap.
        assert_eq!(old.version, 1);
        assert!(old.models.contains_key(&key));
        assert_eq!(p.store().model_versions().expect("versions"), vec![1, 2]);
        assert_eq!(p.model_version(), 2);
        assert_eq!(p.models().models.get(&key).map(|m| m.runs), Some(30));
        // A reopened predictor comes back with the current version.
        drop(old);
        let p = Arc::into_inner(p).expect("sole owner");
        drop(p);
        let p = open(&dir, PredictorConfig::default());
        assert_eq!(p.model_version(), 2);
        assert_eq!(p.predict(&key, &RunFeatures::default()).model_version, 2);
    }

    #[test]
    fn retrain_policy_by_run_count_and_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = PredictorConfig {
            retrain: RetrainPolicy {
                interval_ms: 1_000,
                new_runs: 10,
            },
            ..PredictorConfig::default()
        };
        let p = open(&dir, cfg);
        let runs = trace();
        assert!(!p.retrain_due(0));
        assert_eq!(p.maybe_retrain(0).expect("maybe"), None);
        p.record_runs(&runs[..10]).expect("record");
        assert!(p.retrain_due(0), "10 new runs");
        assert!(p.maybe_retrain(0).expect("maybe").is_some());
        assert!(!p.retrain_due(500));
        p.record_run(&runs[10]).expect("record");
        assert!(!p.retrain_due(500), "one run, interval not elapsed");
        assert!(p.retrain_due(1_000), "interval elapsed with a new run");
        assert_eq!(
            p.maybe_retrain(1_000).expect("maybe").map(|r| r.version),
            Some(2)
        );
        assert!(!p.retrain_due(10_000), "no new run since");
    }

    #[test]
    fn task_types_list_models_and_decisions_pass_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let runs = trace();
        p.record_runs(&runs).expect("record");
        p.record_run(&RunSummary {
            run_id: 10_000,
            task_key: TaskKey::new("lonely"),
            ..runs[0].clone()
        })
        .expect("record");
        p.retrain(5).expect("retrain");
        let list = p.task_types().expect("list");
        assert_eq!(list.len(), 4);
        let lonely = list
            .iter()
            .find(|t| t.task_key.as_str() == "lonely")
            .expect("listed");
        assert_eq!((lonely.runs_seen, lonely.model_version), (1, None));
        assert!(lonely.targets.is_empty());
        let trained = list
            .iter()
            .find(|t| t.task_key.as_str() == "synth-0000")
            .expect("listed");
        assert_eq!((trained.runs_seen, trained.model_version), (30, Some(1)));
        assert_eq!(trained.targets.len(), 4);
        assert!(
            trained
                .targets
                .iter()
                .all(|t| t.error.is_finite() && t.error >= 0.0)
        );
        let seq = p
            .record_decision(&Decision {
                seq: 0,
                at_ms: 1,
                container_id: "c1".to_owned(),
                task_key: TaskKey::new("lonely"),
                directive: crate::types::Directive::Fallback,
                resource: "memory".to_owned(),
                reason: "cold start".to_owned(),
                old_value: None,
                new_value: Some(1e9),
                model_version: None,
            })
            .expect("decision");
        assert_eq!(seq, 1);
        assert_eq!(
            p.decisions(&DecisionQuery::default()).expect("read").len(),
            1
        );
        let id = p.allocate_run_id().expect("id");
        p.append_samples(id, &[]).expect("no samples is fine");
        assert_eq!(
            p.apply_retention(0).expect("retention"),
            RetentionReport::default()
        );
    }
}
