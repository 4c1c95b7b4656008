//! What the broker remembers about each container for `predictivectl status`/`report` and the metrics: its task
//! type and prediction from Register, its usage and allocation observed every tick, and counters of the decisions
//! made about it. Kept in memory only (the store has the runs and the decision log; this is the live view).
//!
//! Limits: at most [`MAX_POINTS`] points per container (when full, every other point is dropped, so a long run
//! keeps its whole lifetime at a coarser step) and the last [`MAX_FINISHED`] finished containers; a broker
//! restart starts empty (a task type's report then reads its latest recorded run from the store).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use predictor::{DecisionQuery, Directive as D, Predictor, RunFeatures, TaskKey};

use crate::api::{
    ErrorCode, ErrorReply, History, HistoryPoint, HistoryQuery, Registered, Status, TaskPrediction,
};
use crate::controller::Mode;

/// Most containers an ambiguous bare id's error lists.
const NAMED_AT_MOST: usize = 8;
/// Most points kept per container.
pub const MAX_POINTS: usize = 1024;
/// Finished containers kept for `report`.
pub const MAX_FINISHED: usize = 64;
/// Observations a live container may be missing from the controller before it counts as gone (forgotten by
/// the controller without a Finish).
const MISSING_FOR_GONE: u8 = 3;

/// Decision counters of one container (monotonic for as long as the broker remembers the container).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// CPU allocation lowered (throttling an over-consumer or taking back a lease).
    pub cpu_lowered: u64,
    /// CPU allocation raised.
    pub cpu_raised: u64,
    /// Memory allocation lowered.
    pub memory_lowered: u64,
    /// Memory allocation raised.
    pub memory_raised: u64,
    /// Paused by the controller.
    pub pauses: u64,
    /// Resumed by the controller.
    pub thaws: u64,
    /// CPU leases granted to or from it.
    pub leases_granted: u64,
    /// CPU leases revoked or ended.
    pub leases_revoked: u64,
    /// Changes that were wanted but not possible.
    pub holds: u64,
}

#[derive(Debug, Default)]
struct Track {
    task_key: String,
    started_at_ms: u64,
    prediction: Option<predictive_api::prediction::Prediction>,
    points: Vec<HistoryPoint>,
    live: bool,
    missing: u8,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Inner {
    tracks: HashMap<String, Track>,
    finished: VecDeque<String>,
    requests: BTreeMap<&'static str, u64>,
    decisions: BTreeMap<(String, &'static str), u64>,
    registered: u64,
    finished_total: u64,
    batched_reports: u64,
    pokes: u64,
}

/// One container's numbers for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCounters {
    /// Container id.
    pub container_id: String,
    /// Task type.
    pub task_key: String,
    /// Registered now.
    pub live: bool,
    /// The prediction's CPU and memory estimates, when warm.
    pub prediction: Option<TaskPrediction>,
    /// Decision counters.
    pub counters: Counters,
}

/// Broker-wide counters for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrokerCounters {
    /// Requests served, by `type`.
    pub requests: BTreeMap<&'static str, u64>,
    /// Decisions recorded, by resource and directive.
    pub decisions: BTreeMap<(String, &'static str), u64>,
    /// Successful Registers.
    pub registered: u64,
    /// Successful Finishes.
    pub finished: u64,
    /// Container reports that came as entries of a batch (`reports`; the batches are `requests["reports"]`).
    pub batched_reports: u64,
    /// Pokes sent (a connection told its shim has directives waiting, `server/pokes.rs`).
    pub pokes: u64,
}

/// The tracker; shared by the broker's threads.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
}

fn directive_name(d: D) -> &'static str {
    match d {
        D::Initial => "initial",
        D::Raise => "raise",
        D::Lower => "lower",
        D::Hold => "hold",
        D::Fallback => "fallback",
    }
}

fn task_prediction(id: &str, t: &Track) -> TaskPrediction {
    let p = t.prediction.as_ref();
    TaskPrediction {
        container_id: id.to_owned(),
        task_key: t.task_key.clone(),
        started_at_ms: t.started_at_ms,
        cpu_cores: p.map(|p| p.cpu_cores),
        memory_bytes: p.map(|p| p.memory_bytes),
        duration_s: p.map(|p| p.duration_s),
        net_tx_bytes_per_s: p.map(|p| p.net_tx_bytes_per_s).filter(|e| e.kind.is_some()),
        net_rx_bytes_per_s: p.map(|p| p.net_rx_bytes_per_s).filter(|e| e.kind.is_some()),
    }
}

/// A request's wire `type`, for the request counters.
pub fn request_kind(r: &crate::api::Request) -> &'static str {
    use crate::api::Request as R;
    match r {
        R::Register(_) => "register",
        R::Report(_) => "report",
        R::Reports(_) => "reports",
        R::Finish(_) => "finish",
        R::Update(_) => "update",
        R::Status(_) => "status",
        R::Models(_) => "models",
        R::Explain(_) => "explain",
        R::History(_) => "history",
        R::Export(_) => "export",
    }
}

fn push_point(points: &mut Vec<HistoryPoint>, p: HistoryPoint) {
    if points.last().is_some_and(|l| l.at_ms >= p.at_ms) {
        return;
    }
    if points.len() >= MAX_POINTS {
        let mut i = 0;
        points.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
    points.push(p);
}

fn internal(what: &str, e: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, format!("{what}: {e}"))
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain counters and vectors: a panic elsewhere leaves them usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request of `kind` (its wire `type`).
    pub fn request(&self, kind: &'static str) {
        *self.lock().requests.entry(kind).or_default() += 1;
    }

    /// A batch of `n` container reports came in.
    pub fn batched_reports(&self, n: usize) {
        self.lock().batched_reports += n as u64;
    }

    /// `n` pokes were sent.
    pub fn poked(&self, n: usize) {
        if n > 0 {
            self.lock().pokes += n as u64;
        }
    }

    /// A Register succeeded at `now_ms`.
    pub fn registered(&self, container_id: &str, r: &Registered, now_ms: u64) {
        if r.mode == Mode::Off {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.registered += 1;
        inner.finished.retain(|c| c != container_id);
        let t = inner.tracks.entry(container_id.to_owned()).or_default();
        t.task_key = r.task_key.clone();
        t.started_at_ms = now_ms;
        t.prediction = r.prediction.clone().filter(|p| !p.is_cold_start());
        t.points.clear();
        t.live = true;
        t.missing = 0;
    }

    /// A Finish succeeded.
    pub fn finished(&self, container_id: &str) {
        let mut g = self.lock();
        g.finished_total += 1;
        Self::retire(&mut g, container_id);
    }

    fn retire(g: &mut Inner, container_id: &str) {
        if let Some(t) = g.tracks.get_mut(container_id) {
            t.live = false;
        }
        g.finished.retain(|c| c != container_id);
        g.finished.push_back(container_id.to_owned());
        while g.finished.len() > MAX_FINISHED {
            if let Some(old) = g.finished.pop_front() {
                g.tracks.remove(&old);
            }
        }
    }

    /// Counts decisions as they are recorded.
    pub fn decided(&self, ds: &[predictor::Decision]) {
        let mut g = self.lock();
        for d in ds {
            *g.decisions
                .entry((d.resource.clone(), directive_name(d.directive)))
                .or_default() += 1;
            let t = g
                .tracks
                .entry(d.container_id.clone())
                .or_insert_with(|| Track {
                    task_key: d.task_key.to_string(),
                    started_at_ms: d.at_ms,
                    live: true,
                    ..Track::default()
                });
            let c = &mut t.counters;
            match (d.resource.as_str(), d.directive) {
                (_, D::Hold) => c.holds += 1,
                ("cpu", D::Lower) => c.cpu_lowered += 1,
                ("cpu", D::Raise) => c.cpu_raised += 1,
                ("memory", D::Lower) => c.memory_lowered += 1,
                ("memory", D::Raise) => c.memory_raised += 1,
                ("freezer", D::Lower) => c.pauses += 1,
                ("freezer", D::Raise) => c.thaws += 1,
                ("cpu-lease", D::Raise) => c.leases_granted += 1,
                ("cpu-lease", D::Lower) => c.leases_revoked += 1,
                _ => {}
            }
        }
    }

    /// Records the usage and allocation of every registered task (called once per tick).
    pub fn observe(&self, status: &Status) {
        let mut g = self.lock();
        let mut seen = HashSet::new();
        for task in &status.tasks {
            seen.insert(task.container_id.as_str());
            let t = g.tracks.entry(task.container_id.clone()).or_default();
            t.live = true;
            t.missing = 0;
            let Some(u) = task.usage else { continue };
            push_point(
                &mut t.points,
                HistoryPoint {
                    at_ms: u.at_ms,
                    cpu_cores: u.cpu_cores,
                    memory_bytes: u.memory_bytes,
                    cpu_alloc_cores: task.allocation.cpu_cores,
                    memory_alloc_bytes: task.allocation.memory_bytes,
                    cpu_throttled_fraction: u.cpu_throttled_fraction,
                    frozen: task.frozen,
                },
            );
        }
        let gone: Vec<String> = g
            .tracks
            .iter_mut()
            .filter(|(id, t)| t.live && !seen.contains(id.as_str()))
            .filter_map(|(id, t)| {
                t.missing += 1;
                (t.missing >= MISSING_FOR_GONE).then(|| id.clone())
            })
            .collect();
        for id in gone {
            Self::retire(&mut g, &id);
        }
    }

    /// What was predicted for each live task.
    pub fn predictions(&self) -> Vec<TaskPrediction> {
        let g = self.lock();
        let mut v: Vec<TaskPrediction> = g
            .tracks
            .iter()
            .filter(|(_, t)| t.live)
            .map(|(id, t)| task_prediction(id, t))
            .collect();
        v.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        v
    }

    /// Per-container and broker-wide counters.
    pub fn counters(&self) -> (Vec<TaskCounters>, BrokerCounters) {
        let g = self.lock();
        let mut tasks: Vec<TaskCounters> = g
            .tracks
            .iter()
            .map(|(id, t)| TaskCounters {
                container_id: id.clone(),
                task_key: t.task_key.clone(),
                live: t.live,
                prediction: t.prediction.is_some().then(|| task_prediction(id, t)),
                counters: t.counters,
            })
            .collect();
        tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        let b = BrokerCounters {
            requests: g.requests.clone(),
            decisions: g.decisions.clone(),
            registered: g.registered,
            finished: g.finished_total,
            batched_reports: g.batched_reports,
            pokes: g.pokes,
        };
        (tasks, b)
    }

    /// Answers a History request.
    pub fn history(
        &self,
        q: &HistoryQuery,
        predictor: &Predictor,
        now_ms: u64,
    ) -> Result<History, ErrorReply> {
        match (&q.container_id, &q.task_key) {
            (Some(c), None) => self.of_container(c),
            (None, Some(k)) => self.of_task_type(k, predictor, now_ms),
            _ => Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "history needs exactly one of `container_id` and `task_key`",
            )),
        }
    }

    /// The container `query` names ([`named`]), its history.
    fn of_container(&self, query: &str) -> Result<History, ErrorReply> {
        let g = self.lock();
        let (id, t) = named(&g.tracks, query)?;
        Ok(History {
            task_key: t.task_key.clone(),
            container_id: Some(id.clone()),
            live: t.live,
            started_at_ms: Some(t.started_at_ms),
            points: t.points.clone(),
            prediction: t.prediction.clone(),
            total_points: None,
            next_offset: None,
        })
    }

    /// The latest recorded run with samples, its allocation from the decision log, and the prediction now; a
    /// type with no recorded run but a tracked container answers with that container's history.
    fn of_task_type(
        &self,
        key: &str,
        predictor: &Predictor,
        now_ms: u64,
    ) -> Result<History, ErrorReply> {
        let tk = TaskKey::new(key);
        let runs = predictor
            .store()
            .runs_of(&tk)
            .map_err(|e| internal("reading runs", e))?;
        let mut latest = None;
        for run in runs.iter().rev() {
            let samples = predictor
                .store()
                .samples(run.run_id)
                .map_err(|e| internal("reading samples", e))?;
            if !samples.is_empty() {
                latest = Some((run, samples));
                break;
            }
        }
        let Some((run, samples)) = latest else {
            let newest = {
                let g = self.lock();
                g.tracks
                    .iter()
                    .filter(|(_, t)| t.task_key == key)
                    .max_by_key(|(_, t)| t.started_at_ms)
                    .map(|(id, _)| id.clone())
            };
            if let Some(h) = newest.and_then(|id| self.of_container(&id).ok()) {
                return Ok(h);
            }
            return Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!(
                    "task type {key} has no recorded run with samples and no container the broker knows ({} runs recorded)",
                    runs.len()
                ),
            ));
        };
        // The run's container: the one whose first decision was made at the run's start (Register uses one clock
        // reading for both).
        let decisions = predictor
            .decisions(&DecisionQuery {
                task_key: Some(tk.clone()),
                since_ms: Some(run.started_at_ms),
                ..DecisionQuery::default()
            })
            .map_err(|e| internal("reading decisions", e))?;
        let container = decisions
            .iter()
            .find(|d| {
                d.at_ms == run.started_at_ms && matches!(d.directive, D::Initial | D::Fallback)
            })
            .map(|d| d.container_id.clone());
        let end = run.started_at_ms + (run.outcome.duration_s * 1000.0) as u64;
        let mut cpu_alloc = None;
        let mut mem_alloc = None;
        let mut ds = decisions
            .iter()
            .filter(|d| Some(&d.container_id) == container.as_ref() && d.at_ms <= end)
            .peekable();
        let mut points = Vec::with_capacity(samples.len());
        for s in &samples {
            while let Some(d) = ds.next_if(|d| d.at_ms <= s.ts_ms) {
                match (d.resource.as_str(), d.directive) {
                    (_, D::Hold) => {}
                    ("cpu", _) => cpu_alloc = d.new_value,
                    ("memory", _) => mem_alloc = d.new_value.map(|v| v as u64),
                    _ => {}
                }
            }
            points.push(HistoryPoint {
                at_ms: s.ts_ms,
                cpu_cores: s.cpu_cores,
                memory_bytes: s.memory_bytes,
                cpu_alloc_cores: cpu_alloc,
                memory_alloc_bytes: mem_alloc,
                cpu_throttled_fraction: 0.0,
                frozen: false,
            });
        }
        let prediction = predictor.predict(&tk, &RunFeatures::from_metadata(&run.meta, now_ms));
        Ok(History {
            task_key: key.to_owned(),
            container_id: container,
            live: false,
            started_at_ms: Some(run.started_at_ms),
            points,
            prediction: (!prediction.is_cold_start())
                .then(|| crate::convert::prediction(&prediction)),
            total_points: None,
            next_offset: None,
        })
    }
}

/// The tracked container `query` names: its own name, else the one container of that bare id in some namespace
/// ([`predictor::names_container`]); none, or several (listed, at most [`NAMED_AT_MOST`]), is an error.
fn named<'a>(
    tracks: &'a HashMap<String, Track>,
    query: &str,
) -> Result<(&'a String, &'a Track), ErrorReply> {
    if let Some(hit) = tracks.get_key_value(query) {
        return Ok(hit);
    }
    let mut named: Vec<_> = tracks
        .iter()
        .filter(|(id, _)| predictor::names_container(query, id))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    match named.as_slice() {
        [one] => Ok(*one),
        [] => Err(ErrorReply::new(
            ErrorCode::NotFound,
            format!(
                "container {query} is not known to the broker (neither running nor among the last {MAX_FINISHED} finished)"
            ),
        )),
        many => {
            // The first few are enough to say which name to use; the error stays short however many.
            let mut ids: Vec<&str> = many
                .iter()
                .take(NAMED_AT_MOST)
                .map(|(id, _)| id.as_str())
                .collect();
            if many.len() > NAMED_AT_MOST {
                ids.push("…");
            }
            Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                format!(
                    "container {query} is in {} namespaces ({}): name it as <namespace>/{query}",
                    many.len(),
                    ids.join(", ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{Allocation, HostCapacity, TaskView, Usage};

    fn status(tasks: &[(&str, u64, f64)]) -> Status {
        Status {
            total_tasks: None,
            next_offset: None,
            broker_version: String::new(),
            tick_ms: 1000,
            host: HostCapacity {
                cpu_cores: 2.0,
                memory_bytes: 1 << 30,
            },
            model_version: 0,
            tasks: tasks
                .iter()
                .map(|(id, at, cpu)| TaskView {
                    container_id: (*id).to_owned(),
                    mode: Mode::Enforce,
                    priority: 0,
                    critical: false,
                    allocation: Allocation {
                        cpu_cores: Some(1.0),
                        memory_bytes: Some(100),
                        memory_max_bytes: None,
                    },
                    base_cpu_cores: Some(1.0),
                    frozen: false,
                    stopping: false,
                    usage: Some(Usage {
                        at_ms: *at,
                        cpu_cores: *cpu,
                        memory_bytes: 50,
                        ..Usage::default()
                    }),
                    limits: Default::default(),
                    max_borrow_cpu: None,
                    io: None,
                    net: None,
                    net_ingress: None,
                })
                .collect(),
            leases: Vec::new(),
            predictions: Vec::new(),
            pool: String::new(),
        }
    }

    fn registered(key: &str) -> Registered {
        Registered {
            task_key: key.to_owned(),
            mode: Mode::Enforce,
            cold_start: true,
            allocation: Allocation::default(),
            directives: Vec::new(),
            prediction: None,
            heartbeat_ms: None,
        }
    }

    #[test]
    fn points_are_kept_in_order_and_downsampled_when_full() {
        let t = Tracker::default();
        t.registered("c", &registered("k"), 0);
        for i in 1..=(MAX_POINTS as u64 + 10) {
            t.observe(&status(&[("c", i, 0.5)]));
            t.observe(&status(&[("c", i, 0.5)])); // same reading twice: one point
        }
        let h = t.of_container("c").expect("tracked");
        assert!(h.points.len() <= MAX_POINTS && h.points.len() > MAX_POINTS / 2);
        assert!(h.points.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert_eq!(
            h.points.last().map(|p| p.at_ms),
            Some(MAX_POINTS as u64 + 10)
        );
        assert_eq!(h.points[0].at_ms, 1, "the start of the run is kept");
        assert_eq!(h.points[0].cpu_alloc_cores, Some(1.0));
    }

    #[test]
    fn finished_containers_are_kept_up_to_a_bound() {
        let t = Tracker::default();
        for i in 0..(MAX_FINISHED + 5) {
            let id = format!("c{i}");
            t.registered(&id, &registered("k"), i as u64);
            t.finished(&id);
        }
        assert!(t.of_container("c0").is_err());
        let h = t
            .of_container(&format!("c{}", MAX_FINISHED + 4))
            .expect("recent");
        assert!(!h.live);
        assert!(t.predictions().is_empty());
    }

    #[test]
    fn a_bare_id_finds_its_one_container_and_names_the_namespaces_of_several() {
        let t = Tracker::default();
        for id in ["a/web", "b/web", "a/db", "web2"] {
            t.registered(id, &registered("k"), 0);
        }
        let of = |q: &str| {
            t.of_container(q)
                .map(|h| h.container_id.unwrap_or_default())
        };
        assert_eq!(of("a/web").as_deref(), Ok("a/web"));
        assert_eq!(of("db").as_deref(), Ok("a/db"), "one namespace has it");
        assert_eq!(of("web2").as_deref(), Ok("web2"));
        let e = of("web").expect_err("two namespaces have it");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("a/web, b/web"), "{}", e.message);
        assert_eq!(of("c/web").map_err(|e| e.code), Err(ErrorCode::NotFound));
        for i in 0..20 {
            t.registered(&format!("n{i:02}/many"), &registered("k"), 0);
        }
        let e = of("many").expect_err("twenty namespaces");
        assert!(
            e.message
                .starts_with("container many is in 20 namespaces (n00/many, ")
                && e.message.contains("n07/many, …)")
                && !e.message.contains("n08/many"),
            "{}",
            e.message
        );
        assert_eq!(of("eb").map_err(|e| e.code), Err(ErrorCode::NotFound));
    }

    #[test]
    fn a_task_missing_from_the_controller_is_retired_after_a_few_ticks() {
        let t = Tracker::default();
        t.registered("c", &registered("k"), 0);
        for _ in 0..MISSING_FOR_GONE {
            assert_eq!(t.predictions().len(), 1);
            t.observe(&status(&[]));
        }
        assert!(t.predictions().is_empty());
    }

    #[test]
    fn decisions_are_counted_per_container_and_kind() {
        let t = Tracker::default();
        let d = |resource: &str, directive| predictor::Decision {
            seq: 0,
            at_ms: 1,
            container_id: "c".to_owned(),
            task_key: TaskKey::new("k"),
            directive,
            resource: resource.to_owned(),
            reason: String::new(),
            old_value: None,
            new_value: None,
            model_version: None,
        };
        t.decided(&[
            d("cpu", D::Lower),
            d("cpu", D::Lower),
            d("freezer", D::Lower),
            d("cpu-lease", D::Raise),
            d("memory", D::Hold),
        ]);
        let (tasks, b) = t.counters();
        let c = tasks[0].counters;
        assert_eq!(
            (c.cpu_lowered, c.pauses, c.leases_granted, c.holds),
            (2, 1, 1, 1)
        );
        assert_eq!(b.decisions.get(&("cpu".to_owned(), "lower")), Some(&2));
    }
}
