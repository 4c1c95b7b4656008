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
//! `meta` fields and `profile` may be omitted; `outcome` needs at least `duration_s` and `peak_memory_bytes`.
//! Blank lines and lines starting with `#` are skipped.
//!
//! # Replay
//! Runs are visited in time order. Before a run, each policy sizes it from the runs of its task type seen so far:
//! - **ours**: the task model ([`train_task`]) retrained every [`EvalConfig::retrain_every`] new runs of the task
//!   type; allocation = the estimate's `limit`, interval = `[lower, upper]` at the model's level;
//! - **vpa**: P90 of the history + 15%; interval = history `[P5, P95]`;
//! - **autopilot**: P98 of the history + 10%; interval = history `[P5, P95]`.
//!
//! A run whose task type has fewer than [`EvalConfig::min_history`] earlier runs is cold for every policy (the
//! broker would use the spec's limits) and is only counted. Metrics per policy and resource: under-prediction rate
//! (usage > allocation), mean relative slack `(allocation - usage) / allocation` over the runs that were not
//! under-predicted, and coverage of the interval.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::key::TaskKey;
use crate::model::{Resource, TaskModel, TrainConfig, train_task};
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

/// Replay parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Training parameters of our models.
    pub train: TrainConfig,
    /// Retrain a task type's model after this many new runs of it.
    pub retrain_every: usize,
    /// Runs of a task type needed before any policy predicts it.
    pub min_history: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            retrain_every: 5,
            min_history: 5,
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
        self.slack_sum / (self.runs - self.under).max(1) as f64
    }

    /// Fraction of runs inside the interval.
    pub fn coverage(&self) -> f64 {
        self.covered as f64 / self.runs.max(1) as f64
    }
}

/// The policies compared.
pub const POLICIES: [&str; 3] = ["ours", "vpa-like", "autopilot-like"];
/// The resources scored.
pub const SCORED: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Duration];

/// Result of a replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalReport {
    /// Runs in the trace.
    pub runs: u64,
    /// Runs skipped as cold (too little history).
    pub cold: u64,
    /// Task types in the trace.
    pub task_types: usize,
    /// Level of our intervals.
    pub level: f64,
    /// `scores[policy][resource]`, indexed like [`POLICIES`] and [`SCORED`].
    pub scores: [[Score; 3]; 3],
}

impl EvalReport {
    /// A Markdown table of the scores.
    pub fn table(&self) -> String {
        let mut s = format!(
            "runs: {}, task types: {}, cold (skipped, < min history): {}, interval level: {:.0}%\n\n",
            self.runs,
            self.task_types,
            self.cold,
            self.level * 100.0
        );
        s.push_str(
            "| policy | resource | runs | under-prediction | mean slack | interval coverage |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|\n");
        for (p, name) in POLICIES.iter().enumerate() {
            for (r, res) in SCORED.iter().enumerate() {
                let sc = &self.scores[p][r];
                s.push_str(&format!(
                    "| {name} | {} | {} | {:.2}% | {:.1}% | {:.1}% |\n",
                    res.name(),
                    sc.runs,
                    sc.under_rate() * 100.0,
                    sc.mean_slack() * 100.0,
                    sc.coverage() * 100.0
                ));
            }
        }
        s
    }
}

#[derive(Default)]
struct TaskState {
    history: Vec<RunSummary>,
    values: [Vec<f64>; 3],
    model: Option<TaskModel>,
    trained_at: usize,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Replays `runs` and scores the policies.
pub fn evaluate(runs: &[RunSummary], cfg: &EvalConfig) -> EvalReport {
    let mut order: Vec<&RunSummary> = runs.iter().collect();
    order.sort_by_key(|r| (r.started_at_ms, r.run_id));
    let mut tasks: HashMap<TaskKey, TaskState> = HashMap::new();
    let mut report = EvalReport {
        runs: runs.len() as u64,
        level: cfg.train.level,
        ..EvalReport::default()
    };
    let oom = cfg.train.oom_inflation;
    for run in order {
        let st = tasks.entry(run.task_key.clone()).or_default();
        let n = st.history.len();
        if n < cfg.min_history.max(1) {
            report.cold += 1;
        } else {
            if st.model.is_none() || n - st.trained_at >= cfg.retrain_every.max(1) {
                st.model = train_task(&st.history, run.started_at_ms, &cfg.train);
                st.trained_at = n;
            }
            let features = RunFeatures::from_metadata(&run.meta, run.started_at_ms);
            let pred = st
                .model
                .as_ref()
                .map(|m| m.predict(&run.task_key, &features, 1));
            for (r, res) in SCORED.iter().enumerate() {
                let usage = res.of(run, 1.0);
                let mut sorted = st.values[r].clone();
                sorted.sort_by(f64::total_cmp);
                let (p5, p95) = (quantile(&sorted, 0.05), quantile(&sorted, 0.95));
                if let Some(p) = &pred {
                    let e = p.estimate(*res);
                    report.scores[0][r].add(e.limit, e.lower, e.upper, usage);
                }
                report.scores[1][r].add(quantile(&sorted, 0.90) * 1.15, p5, p95, usage);
                report.scores[2][r].add(quantile(&sorted, 0.98) * 1.10, p5, p95, usage);
            }
        }
        for (r, res) in SCORED.iter().enumerate() {
            st.values[r].push(res.of(run, oom));
        }
        st.history.push(run.clone());
    }
    report.task_types = tasks.len();
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
        let cfg = EvalConfig {
            retrain_every: 10,
            ..EvalConfig::default()
        };
        let rep = evaluate(&runs, &cfg);
        assert_eq!(rep.runs, 120);
        assert_eq!(rep.cold, 15);
        for p in 0..3 {
            assert_eq!(rep.scores[p][0].runs, 105, "policy {p}");
        }
        assert!(rep.table().contains("| ours | memory |"));
    }
}
