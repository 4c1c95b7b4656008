//! [`Predictor`]: the object the broker owns — the store plus the in-memory model set that answers predictions.
//!
//! Predictions never touch the database: they read the current [`ModelSet`] behind an `RwLock<Arc<_>>` (a pointer
//! copy under a read lock), so they stay fast while training runs. Two kinds of training make new versions:
//!
//! - **Refit** ([`Predictor::refit_pending`]), per task type, as soon as a type has enough new finished runs: its
//!   first fit when it reaches [`TrainConfig::min_runs`] runs, then whenever its new runs reach
//!   [`RetrainPolicy::refit_growth`] of the runs its model was fitted on (every run at first, every 10th run at 100
//!   runs, with the default 0.1). It reads only those types' runs, writes only their models
//!   ([`crate::Store::update_models`]) and swaps in a set that shares every other type's model. The broker calls it
//!   after a Finish is committed and before it answers, so the next Create of that type is predicted.
//! - **Full retrain** ([`Predictor::retrain`], from [`Predictor::maybe_retrain`] on a timer): every task type from
//!   one snapshot, for drift and decay ([`RetrainPolicy::interval_ms`], [`RetrainPolicy::new_runs`]). It trains
//!   without holding the swap lock; when it swaps, a type refitted after its snapshot keeps the newer refit.
//!
//! Swap semantics, both kinds: the new version is written and made current in one store transaction, and only then
//! is the in-memory pointer swapped; until the swap every prediction is answered by the old version, versions never
//! go backwards, and if training or the write fails the old version stays. Swaps are serialised by one lock; one
//! full retrain runs at a time.
//!
//! Limits: the whole model set is held in memory (a few KB per task type); a refit of a type costs a training over
//! its stored runs (at most `max_runs_per_task`), amortised to about 1/[`RetrainPolicy::refit_growth`] runs' worth
//! of training per finished run.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::key::TaskKey;
use crate::model::{ModelKind, Prediction, Resource, TaskModel, TrainConfig, train_task_pooled};
use crate::pool::ScorePool;
use crate::store::{
    DecisionQuery, ImportReport, PortableRun, RetentionPolicy, RetentionReport, Store, StoreError,
};
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
    /// Refit a task type with a model when its new runs reach this share of the runs the model was fitted on (at
    /// least one run); a type without a model is fitted as soon as it has `min_runs`. 0 turns refits off (only the
    /// full retrain then fits, also a new type's first model).
    pub refit_growth: f64,
}

impl Default for RetrainPolicy {
    fn default() -> Self {
        Self {
            interval_ms: 10 * 60_000,
            new_runs: 200,
            refit_growth: 0.1,
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

/// One immutable version of all task models. Versions share the models of the task types a refit did not touch.
#[derive(Debug, Default)]
pub struct ModelSet {
    /// Version (0 = never trained).
    pub version: u64,
    /// Model per task type.
    pub models: HashMap<TaskKey, Arc<TaskModel>>,
    /// Per task type, the version that fitted its model (at most `version`; unknown after a restart: `version`).
    pub fitted_in: HashMap<TaskKey, u64>,
}

/// What a retrain or a refit did.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainReport {
    /// The new current version.
    pub version: u64,
    /// Task types (re)fitted with a model.
    pub task_types: usize,
    /// Task types trained that have too few runs for a model (cold).
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

/// The predictor: store + current models. Share it as `Arc<Predictor>`; every method takes `&self`.
#[derive(Debug)]
pub struct Predictor {
    store: Store,
    config: PredictorConfig,
    current: RwLock<Arc<ModelSet>>,
    /// One full retrain at a time.
    retraining: Mutex<()>,
    /// Held while a new version is made (a whole refit; a full retrain's merge, write and swap).
    swap: Mutex<()>,
    /// Per task type, finished runs committed since its model was last fitted (or since start).
    new_runs: Mutex<Pending>,
    runs_since_train: AtomicU64,
    last_train_ms: AtomicU64,
    /// Forward scores pooled across task types (a young type's limit leans on them); written with each retrain.
    pool: Mutex<ScorePool>,
}

/// New runs per task type, and the types that got one since a refit last looked at them: a refit examines only
/// those, so a node with thousands of task types below `min_runs` pays nothing for them at each Finish.
#[derive(Debug, Default)]
struct Pending {
    counts: HashMap<TaskKey, u64>,
    dirty: HashSet<TaskKey>,
}

impl Pending {
    fn subtract(&mut self, done: impl IntoIterator<Item = (TaskKey, u64)>) {
        for (key, n) in done {
            if let Some(left) = self.counts.get_mut(&key) {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    self.counts.remove(&key);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Predictor {
    /// Opens the database at `path` (creating it) and loads the current model version.
    pub fn open(path: &Path, config: PredictorConfig) -> Result<Self, PredictorError> {
        let store = Store::open_with(path, &config.store)?;
        let version = store.current_model_version()?;
        let models: HashMap<TaskKey, Arc<TaskModel>> = if version > 0 {
            store
                .load_current_models()?
                .into_iter()
                .map(|(k, m)| (k, Arc::new(m)))
                .collect()
        } else {
            HashMap::new()
        };
        let pool = store.load_score_pool()?.unwrap_or_default();
        let trained_at = models.values().map(|m| m.trained_at_ms).max().unwrap_or(0);
        let fitted_in = models.keys().map(|k| (k.clone(), version)).collect();
        Ok(Self {
            store,
            config,
            current: RwLock::new(Arc::new(ModelSet {
                version,
                models,
                fitted_in,
            })),
            retraining: Mutex::new(()),
            swap: Mutex::new(()),
            new_runs: Mutex::new(Pending::default()),
            // Unknown after a restart: count as due so the first maybe_retrain trains.
            runs_since_train: AtomicU64::new(u64::from(version == 0)),
            last_train_ms: AtomicU64::new(trained_at),
            pool: Mutex::new(pool),
        })
    }

    /// The forward scores pooled across task types (a copy).
    pub fn score_pool(&self) -> ScorePool {
        lock(&self.pool).clone()
    }

    /// Trains one type with the pool as it was (`pool`), adding its newest scores to `fresh`: those of the runs
    /// since its model in `old` (all of them for a type that had none).
    fn train_pooled(
        &self,
        runs: &[RunSummary],
        now_ms: u64,
        old: Option<&TaskModel>,
        pool: &ScorePool,
        fresh: &mut ScorePool,
    ) -> Option<TaskModel> {
        let (m, scores) = train_task_pooled(runs, now_ms, &self.config.train, Some(pool))?;
        scores.add_to(fresh, m.runs.saturating_sub(old.map_or(0, |o| o.runs)));
        Some(m)
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
        self.pool_window_outcomes([run]);
        self.runs_since_train.fetch_add(1, Ordering::Relaxed);
        self.mark_new_runs([(&run.task_key, 1)]);
        Ok(())
    }

    /// Pools how each finished run's CPU would have been sized by the limit its type's model gives and by that
    /// model's window limit at each price ([`crate::model::TaskModel::window_outcome`]): what decides whether the
    /// node's types use the window limit ([`ScorePool::window_price`]). Runs of types without a window base add
    /// nothing.
    fn pool_window_outcomes<'a>(&self, runs: impl IntoIterator<Item = &'a RunSummary>) {
        let set = self.models();
        let outcomes: Vec<_> = runs
            .into_iter()
            .filter_map(|r| set.models.get(&r.task_key)?.window_outcome(r))
            .collect();
        if !outcomes.is_empty() {
            let mut pool = lock(&self.pool);
            outcomes.iter().for_each(|o| pool.add_window_outcome(o));
        }
    }

    fn mark_new_runs<'a>(&self, keys: impl IntoIterator<Item = (&'a TaskKey, u64)>) {
        let mut pending = lock(&self.new_runs);
        for (key, n) in keys {
            *pending.counts.entry(key.clone()).or_default() += n;
            pending.dirty.insert(key.clone());
        }
    }

    /// Records many finished runs in one transaction.
    pub fn record_runs(&self, runs: &[RunSummary]) -> Result<(), PredictorError> {
        self.store.record_runs(runs)?;
        self.pool_window_outcomes(runs);
        self.runs_since_train
            .fetch_add(runs.len() as u64, Ordering::Relaxed);
        self.mark_new_runs(runs.iter().map(|r| (&r.task_key, 1)));
        Ok(())
    }

    /// Commits a batch in one transaction (the broker's group commit); its finished runs count towards retraining.
    pub fn commit(&self, batch: &crate::store::Batch) -> Result<(), PredictorError> {
        self.store.commit(batch)?;
        let finished: Vec<&RunSummary> = batch
            .ops
            .iter()
            .filter_map(|o| match o {
                crate::store::BatchOp::Run { run, .. } => Some(&**run),
                _ => None,
            })
            .collect();
        self.pool_window_outcomes(finished.iter().copied());
        let keys: Vec<&TaskKey> = finished.iter().map(|r| &r.task_key).collect();
        self.runs_since_train
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.mark_new_runs(keys.into_iter().map(|k| (k, 1)));
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

    /// Retrains if due, else refits the task types that are due (a backstop for refits nobody asked for, e.g.
    /// after a restart); `Ok(None)` when nothing was due or another retrain is running.
    pub fn maybe_retrain(&self, now_ms: u64) -> Result<Option<RetrainReport>, PredictorError> {
        if !self.retrain_due(now_ms) {
            return self.refit_pending(now_ms);
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
        let new_before = lock(&self.new_runs).counts.clone();
        let snapshot = self.models();
        let snapshot_version = snapshot.version;
        let pool = self.score_pool();
        let seed = pool.targets.iter().all(|t| t.total() <= 0.0);
        let mut fresh = ScorePool::default();
        let mut models = HashMap::new();
        let mut cold = 0;
        let mut runs = 0u64;
        self.store.for_each_task_runs(|key, task_runs| {
            runs += task_runs.len() as u64;
            // An empty pool (a store from before it, or a lost one) is seeded with every type's scores.
            let old = snapshot.models.get(key).map(|m| &**m).filter(|_| !seed);
            match self.train_pooled(&task_runs, now_ms, old, &pool, &mut fresh) {
                Some(m) => {
                    models.insert(key.clone(), Arc::new(m));
                }
                None => cold += 1,
            }
        })?;
        let _swap = lock(&self.swap);
        let old = self.models();
        let version = self.store.current_model_version()?.max(old.version) + 1;
        let mut fitted_in: HashMap<TaskKey, u64> =
            models.keys().map(|k| (k.clone(), version)).collect();
        // A type refitted after the snapshot keeps its refit: it saw runs this retrain did not.
        for (key, &v) in &old.fitted_in {
            if v > snapshot_version {
                match old.models.get(key) {
                    Some(m) => {
                        models.insert(key.clone(), Arc::clone(m));
                        fitted_in.insert(key.clone(), version);
                    }
                    None => {
                        models.remove(key);
                        fitted_in.remove(key);
                    }
                }
            }
        }
        let pool = {
            let mut p = lock(&self.pool).clone();
            p.merge(&fresh);
            p
        };
        self.store.save_models_and_pool(
            version,
            models.iter().map(|(k, m)| (k, &**m)),
            1,
            Some(&pool),
        )?;
        // Merged into the live pool only now that it is written (refits may have added to it meanwhile).
        lock(&self.pool).merge(&fresh);
        let report = RetrainReport {
            version,
            task_types: models.len(),
            cold,
            runs,
            elapsed: started.elapsed(),
        };
        self.swap_in(ModelSet {
            version,
            models,
            fitted_in,
        });
        self.runs_since_train
            .fetch_sub(pending_before, Ordering::Relaxed);
        lock(&self.new_runs).subtract(new_before);
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

    fn swap_in(&self, set: ModelSet) {
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// Whether a task type with `new` runs since its fit is due for a refit (`fitted`: runs its model saw).
    fn refit_due(
        &self,
        key: &TaskKey,
        new: u64,
        fitted: Option<u64>,
    ) -> Result<bool, PredictorError> {
        let growth = self.config.retrain.refit_growth;
        if growth.is_nan() || growth <= 0.0 || new == 0 {
            return Ok(false);
        }
        Ok(match fitted {
            Some(n) => new as f64 >= (n as f64 * growth).ceil().max(1.0),
            // Cold: its first fit once the store holds enough runs (some may predate this process).
            None => self.store.run_count_of(key)? >= self.config.train.min_runs.max(2) as u64,
        })
    }

    /// Refits every task type that has enough new runs since its last fit ([`RetrainPolicy::refit_growth`]) and
    /// swaps the new version in; `Ok(None)` when none is due. Waits for a refit or a swap in progress, so when it
    /// returns, every run committed before the call that made a type due is in the model set in force.
    pub fn refit_pending(&self, now_ms: u64) -> Result<Option<RetrainReport>, PredictorError> {
        let _swap = lock(&self.swap);
        let started = std::time::Instant::now();
        let old = self.models();
        let candidates: Vec<(TaskKey, u64)> = {
            let mut p = lock(&self.new_runs);
            let dirty = std::mem::take(&mut p.dirty);
            dirty
                .into_iter()
                .filter_map(|k| p.counts.get(&k).map(|n| (k, *n)))
                .collect()
        };
        let result = self.refit_candidates(&old, &candidates, now_ms, started);
        if result.is_err() {
            // Looked at again by the next call (the retrain thread's at the latest).
            lock(&self.new_runs)
                .dirty
                .extend(candidates.into_iter().map(|(k, _)| k));
        }
        result
    }

    fn refit_candidates(
        &self,
        old: &ModelSet,
        candidates: &[(TaskKey, u64)],
        now_ms: u64,
        started: std::time::Instant,
    ) -> Result<Option<RetrainReport>, PredictorError> {
        let mut due = Vec::new();
        for (key, n) in candidates {
            if self.refit_due(key, *n, old.models.get(key).map(|m| m.runs))? {
                due.push((key.clone(), *n));
            }
        }
        if due.is_empty() {
            return Ok(None);
        }
        let version = self.store.current_model_version()?.max(old.version) + 1;
        let mut models = old.models.clone();
        let mut fitted_in = old.fitted_in.clone();
        let mut fitted = Vec::new();
        let mut removed = Vec::new();
        let mut runs = 0u64;
        let pool = self.score_pool();
        let mut fresh = ScorePool::default();
        for (key, _) in &due {
            let task_runs = self.store.runs_of(key)?;
            runs += task_runs.len() as u64;
            let prev = old.models.get(key).map(|m| &**m);
            match self.train_pooled(&task_runs, now_ms, prev, &pool, &mut fresh) {
                Some(m) => {
                    let m = Arc::new(m);
                    models.insert(key.clone(), Arc::clone(&m));
                    fitted_in.insert(key.clone(), version);
                    fitted.push((key.clone(), m));
                }
                None => {
                    if models.remove(key).is_some() {
                        removed.push(key.clone());
                    }
                    fitted_in.insert(key.clone(), version);
                }
            }
        }
        self.store
            .update_models(version, fitted.iter().map(|(k, m)| (k, &**m)), &removed)?;
        // In memory only: the next full retrain writes the pool (a crash loses the scores pooled since).
        lock(&self.pool).merge(&fresh);
        let report = RetrainReport {
            version,
            task_types: fitted.len(),
            cold: due.len() - fitted.len(),
            runs,
            elapsed: started.elapsed(),
        };
        self.swap_in(ModelSet {
            version,
            models,
            fitted_in,
        });
        lock(&self.new_runs).subtract(due);
        tracing::debug!(
            version,
            task_types = report.task_types,
            runs,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "predictor task types refitted"
        );
        Ok(Some(report))
    }

    /// This node's id in exported runs (see [`crate::store`]).
    pub fn node_id(&self) -> Result<u64, PredictorError> {
        Ok(self.store.node_id()?)
    }

    /// Merges runs recorded on other nodes ([`Store::import_runs`]: a run already known is skipped) and refits the
    /// task types that are due. Returns what was imported and the refit, if any.
    pub fn import_runs(
        &self,
        runs: &[PortableRun],
        now_ms: u64,
    ) -> Result<(ImportReport, Option<RetrainReport>), PredictorError> {
        let report = self.store.import_runs(runs)?;
        if report.imported == 0 {
            return Ok((report, None));
        }
        // Count per type what was added: a type learned elsewhere is fitted now, not at the next retrain.
        let mut added: HashMap<&TaskKey, u64> = HashMap::new();
        let known: HashSet<&TaskKey> = report.task_types.iter().collect();
        for r in runs {
            if known.contains(&r.run.task_key) {
                *added.entry(&r.run.task_key).or_default() += 1;
            }
        }
        self.mark_new_runs(added);
        self.runs_since_train
            .fetch_add(report.imported, Ordering::Relaxed);
        let refit = self.refit_pending(now_ms)?;
        Ok((report, refit))
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
                    model_version: model
                        .map(|_| set.fitted_in.get(&key).copied().unwrap_or(set.version)),
                    targets: model
                        .map(|m| {
                            Resource::ALL
                                .iter()
                                .filter_map(|&r| {
                                    m.target(r).map(|t| TargetSummary {
                                        resource: r,
                                        kind: t.kind,
                                        error: t.error,
                                    })
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

    /// A VM's day: 2 cores with a 1.4x spike every tenth day and a little noise.
    fn vm_day(key: &str, i: u64) -> RunSummary {
        let spike = if i % 10 == 9 { 1.4 } else { 1.0 };
        RunSummary {
            run_id: i + 1,
            task_key: TaskKey::new(key),
            started_at_ms: 1_767_225_600_000 + i * 86_400_000,
            meta: crate::types::RunMetadata::default(),
            outcome: crate::types::RunOutcome {
                duration_s: 86_400.0,
                peak_memory_bytes: 1 << 30,
                cpu_p95_cores: 2.0 * spike * (1.0 + 0.01 * ((i * 37 % 11) as f64 - 5.0)),
                ..crate::types::RunOutcome::default()
            },
            profile: None,
        }
    }

    #[test]
    fn a_finished_run_is_pooled_against_the_limits_its_types_model_gave() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let days: Vec<RunSummary> = (0..60).map(|i| vm_day("vm", i)).collect();
        p.record_runs(&days).expect("record");
        assert_eq!(
            p.score_pool().window.runs,
            0.0,
            "no model yet: nothing to score a run against"
        );
        p.retrain(1).expect("retrain");
        let model = p
            .models()
            .models
            .get(&TaskKey::new("vm"))
            .cloned()
            .expect("a model");
        assert!(model.cpu.window_base > 0.0, "{:?}", model.cpu.kind);
        let next = vm_day("vm", 60);
        p.record_run(&next).expect("record");
        let pool = p.score_pool();
        assert_eq!(pool.window.runs, 1.0);
        let o = model.window_outcome(&next).expect("a window base");
        assert_eq!(
            pool.window.point_under,
            if o.point > 1.0 { 1.0 } else { 0.0 }
        );
        // Through the broker's group commit too; a type without a model adds nothing.
        let batch = crate::store::Batch {
            ops: vec![
                crate::store::BatchOp::Run {
                    container_id: Some("c1".to_owned()),
                    run: Box::new(vm_day("vm", 61)),
                },
                crate::store::BatchOp::Run {
                    container_id: Some("c2".to_owned()),
                    run: Box::new(RunSummary {
                        run_id: 1_000,
                        ..vm_day("new-type", 0)
                    }),
                },
            ],
        };
        p.commit(&batch).expect("commit");
        assert_eq!(p.score_pool().window.runs, 2.0);
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
    fn scores_are_pooled_once_per_run_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = trace();
        let memory = Resource::ALL
            .iter()
            .position(|&r| r == Resource::Memory)
            .expect("memory");
        let mut cfg = PredictorConfig::default();
        // A refit after each new run.
        cfg.retrain.refit_growth = 0.01;
        let pooled = {
            let p = open(&dir, cfg.clone());
            assert_eq!(p.score_pool(), ScorePool::default());
            p.record_runs(&runs[..60]).expect("record");
            p.retrain(1).expect("retrain");
            // At most one forward score per run past each type's first two (which have no forecast).
            let t0 = p.score_pool().targets[memory].total();
            assert!(t0 > 0.0 && t0 <= 54.0, "{t0}");
            // Another retrain with no new run pools nothing more.
            p.retrain(2).expect("retrain");
            assert_eq!(p.score_pool().targets[memory].total(), t0);
            // One more run of a type: its refit pools that run's score once.
            let key = runs[60].task_key.clone();
            let next = runs[60..]
                .iter()
                .find(|r| r.task_key == key)
                .expect("a run");
            p.record_runs(std::slice::from_ref(next)).expect("record");
            p.refit_pending(3).expect("refit").expect("refitted");
            assert_eq!(p.score_pool().targets[memory].total(), t0 + 1.0);
            p.retrain(4).expect("retrain");
            p.score_pool()
        };
        let p = open(&dir, cfg);
        assert_eq!(
            p.score_pool(),
            pooled,
            "written with the retrain, read at open"
        );
        assert_eq!(p.store().load_score_pool().expect("load"), Some(pooled));
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
                // This test is about the timer; refits have their own tests.
                refit_growth: 0.0,
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
        assert_eq!(trained.targets.len(), 6, "with the two network targets");
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

    #[test]
    fn a_type_is_fitted_at_min_runs_and_refitted_as_its_runs_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let runs = trace();
        let (a, b): (Vec<_>, Vec<_>) = runs
            .iter()
            .filter(|r| r.task_key.as_str() != "synth-0002")
            .cloned()
            .partition(|r| r.task_key.as_str() == "synth-0000");
        let key = a[0].task_key.clone();
        let min_runs = p.config().train.min_runs;
        // Another type is already predicted; its model must be shared, not retrained, by refits of `key`.
        p.record_runs(&b).expect("record");
        assert!(p.refit_pending(1).expect("refit").is_some());
        let other = Arc::clone(&p.models().models[&b[0].task_key]);
        let mut refits = Vec::new();
        for (i, run) in a.iter().enumerate() {
            p.record_run(run).expect("record");
            let rep = p.refit_pending(run.started_at_ms).expect("refit");
            let pred = p.predict(&key, &RunFeatures::default());
            if i + 1 < min_runs {
                assert!(rep.is_none(), "run {}: {rep:?}", i + 1);
                assert!(pred.is_cold_start(), "run {}", i + 1);
            } else {
                assert!(
                    !pred.is_cold_start(),
                    "run {}: predicted from then on",
                    i + 1
                );
            }
            if let Some(rep) = rep {
                assert_eq!((rep.task_types, rep.cold), (1, 0), "only {key} refitted");
                refits.push((i + 1, p.models().models[&key].runs));
            }
        }
        // Fitted at min_runs, then at every run while 10% of its runs is at most one, then every 2nd, 3rd run.
        let at: Vec<usize> = refits.iter().map(|(n, _)| *n).collect();
        assert_eq!(&at[..7], &[5, 6, 7, 8, 9, 10, 11], "{at:?}");
        assert!(at.windows(2).all(|w| w[1] > w[0]));
        assert!(
            at.len() < a.len() - min_runs + 1,
            "fewer refits than runs later: {at:?}"
        );
        assert!(
            refits.iter().all(|(n, seen)| *n as u64 == *seen),
            "{refits:?}"
        );
        assert!(Arc::ptr_eq(&p.models().models[&b[0].task_key], &other));
        // The refits are stored: a restarted predictor answers with the same set.
        let version = p.model_version();
        let runs_fitted = p.models().models[&key].runs;
        drop(p);
        let p = open(&dir, PredictorConfig::default());
        assert_eq!(p.model_version(), version);
        assert_eq!(p.models().models[&key].runs, runs_fitted);
        assert!(p.models().models.contains_key(&b[0].task_key));
    }

    #[test]
    fn refits_off_leaves_a_new_type_cold_until_the_retrain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = PredictorConfig::default();
        cfg.retrain.refit_growth = 0.0;
        let p = open(&dir, cfg);
        let runs: Vec<RunSummary> = trace()
            .into_iter()
            .filter(|r| r.task_key.as_str() == "synth-0000")
            .take(10)
            .collect();
        p.record_runs(&runs).expect("record");
        assert_eq!(p.refit_pending(1).expect("refit"), None);
        assert!(
            p.predict(&runs[0].task_key, &RunFeatures::default())
                .is_cold_start()
        );
        p.retrain(2).expect("retrain");
        assert!(
            !p.predict(&runs[0].task_key, &RunFeatures::default())
                .is_cold_start()
        );
    }

    #[test]
    fn a_retrain_after_refits_keeps_every_model_and_goes_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let runs = trace();
        for r in &runs[..40] {
            p.record_run(r).expect("record");
            p.refit_pending(r.started_at_ms).expect("refit");
        }
        let before = p.models();
        let rep = p.retrain(2).expect("retrain");
        assert!(rep.version > before.version);
        let after = p.models();
        let mut keys: Vec<_> = after.models.keys().cloned().collect();
        keys.sort();
        let mut had: Vec<_> = before.models.keys().cloned().collect();
        had.sort();
        assert_eq!(keys, had);
        assert!(after.fitted_in.values().all(|v| *v == rep.version));
        // Nothing was left pending by runs the retrain saw.
        assert_eq!(p.refit_pending(3).expect("refit"), None);
    }

    #[test]
    fn imported_runs_predict_on_another_node_and_count_once() {
        let (da, db) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (a, b) = (
            open(&da, PredictorConfig::default()),
            open(&db, PredictorConfig::default()),
        );
        let (na, nb) = (a.node_id().expect("id"), b.node_id().expect("id"));
        assert!(na != 0 && nb != 0 && na != nb, "{na} {nb}");
        let runs = trace();
        let key = runs[0].task_key.clone();
        a.record_runs(&runs).expect("record");
        let (page, next) = a.store().export_page(None, 1_000, 10_000).expect("export");
        assert_eq!((page.len(), next), (90, None));
        assert!(page.iter().all(|r| r.origin_node == na));
        assert!(b.predict(&key, &RunFeatures::default()).is_cold_start());
        let (rep, refit) = b.import_runs(&page, 1).expect("import");
        assert_eq!((rep.imported, rep.duplicates, rep.own), (90, 0, 0));
        assert_eq!(refit.map(|r| r.task_types), Some(3));
        let pred = b.predict(&key, &RunFeatures::default());
        assert!(!pred.is_cold_start());
        assert_eq!(b.models().models[&key].runs, 30);
        // Twice: nothing added, nothing refitted.
        let version = b.model_version();
        let (rep, refit) = b.import_runs(&page, 2).expect("import again");
        assert_eq!((rep.imported, rep.duplicates), (0, 90));
        assert_eq!(refit, None);
        assert_eq!(b.store().run_count().expect("count"), 90);
        assert_eq!(b.model_version(), version);
        // B's export keeps A's identities; back on A they are A's own runs, and on a third node they are
        // duplicates of what A sent it directly.
        let (from_b, _) = b.store().export_page(None, 1_000, 10_000).expect("export");
        assert!(from_b.iter().all(|r| r.origin_node == na));
        let (rep, _) = a.import_runs(&from_b, 3).expect("import home");
        assert_eq!((rep.imported, rep.own), (0, 90));
        let dc = tempfile::tempdir().expect("tempdir");
        let c = open(&dc, PredictorConfig::default());
        c.import_runs(&page[..45], 4).expect("import half");
        let (rep, _) = c.import_runs(&from_b, 5).expect("import via b");
        assert_eq!((rep.imported, rep.duplicates), (45, 45));
        assert_eq!(c.store().run_count().expect("count"), 90);
    }

    #[test]
    fn export_pages_resume_and_keep_the_newest_runs_per_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(&dir, PredictorConfig::default());
        let runs = trace();
        p.record_runs(&runs).expect("record");
        let mut all = Vec::new();
        let mut after: Option<(TaskKey, RunId)> = None;
        loop {
            let (page, next) = p
                .store()
                .export_page(after.as_ref().map(|(k, i)| (k, *i)), 10, 7)
                .expect("page");
            assert!(page.len() <= 7);
            all.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(all.len(), 30, "10 newest of each of 3 types");
        let mut ids: Vec<RunId> = all.iter().map(|r| r.origin_run).collect();
        ids.dedup();
        assert_eq!(ids.len(), 30, "no run twice across pages");
        for key in ["synth-0000", "synth-0001", "synth-0002"] {
            let mut stored: Vec<RunId> = p
                .store()
                .runs_of(&TaskKey::new(key))
                .expect("runs")
                .iter()
                .map(|r| r.run_id)
                .collect();
            let newest = stored.split_off(stored.len() - 10);
            let got: Vec<RunId> = all
                .iter()
                .filter(|r| r.run.task_key.as_str() == key)
                .map(|r| r.origin_run)
                .collect();
            assert_eq!(got, newest, "{key}");
        }
    }
}
