//! Plain data shared by the store, the models and the broker: what a run looked like before it started
//! ([`RunMetadata`]), how it ended ([`RunOutcome`]), the telemetry it produced ([`Sample`]) and the limit changes the
//! broker made ([`Decision`]).
//!
//! Everything here is `serde`-serialisable; the store keeps these as JSON values so that adding a field with
//! `#[serde(default)]` needs no migration. Times are milliseconds since the Unix epoch (`*_ms`), durations seconds.

use serde::{Deserialize, Serialize};

use crate::key::TaskKey;

/// Number of normalised lifetime buckets in a profile: bucket `i` covers `[i/20, (i+1)/20)` of the run's duration.
pub const BUCKETS: usize = 20;

/// Identifier of one run (one container start), allocated by [`crate::Store::allocate_run_id`].
pub type RunId = u64;

/// What is known about a run before it starts: the inputs of the regression models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// Image reference the container was created from.
    #[serde(default)]
    pub image: String,
    /// The process args.
    #[serde(default)]
    pub command: Vec<String>,
    /// Size of the task's input data in bytes (annotation `io.predictive.input-bytes` or 0 when unknown).
    #[serde(default)]
    pub input_bytes: u64,
    /// Number of declared dependencies (upstream tasks, mounted datasets).
    #[serde(default)]
    pub dependencies: u32,
    /// CPU limit requested in the spec, in cores.
    #[serde(default)]
    pub requested_cpu_cores: Option<f64>,
    /// Memory limit requested in the spec, in bytes.
    #[serde(default)]
    pub requested_memory_bytes: Option<u64>,
    /// Host load at start (1-minute load average divided by the number of CPUs).
    #[serde(default)]
    pub host_load: f64,
}

/// How a run ended: the targets the models learn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Wall-clock lifetime in seconds.
    pub duration_s: f64,
    /// Peak memory (cgroup `memory.peak` or the maximum sample), bytes.
    pub peak_memory_bytes: u64,
    /// Total CPU time consumed, seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Median CPU usage over the samples, cores.
    #[serde(default)]
    pub cpu_p50_cores: f64,
    /// 95th percentile CPU usage over the samples, cores. This is what the CPU model predicts.
    #[serde(default)]
    pub cpu_p95_cores: f64,
    /// Bytes read plus written.
    #[serde(default)]
    pub io_bytes: u64,
    /// Exit code of the init process.
    #[serde(default)]
    pub exit_code: i32,
    /// Whether the kernel OOM killer fired in the cgroup. Such a run's peak is a lower bound of its need.
    #[serde(default)]
    pub oom_killed: bool,
    /// Time throttled by the CPU controller, seconds.
    #[serde(default)]
    pub throttled_s: f64,
    /// Mean network egress over the run's samples, bytes/s (`None`: not measured — a task in the host's network
    /// namespace, a run with no sample, or a record written before this field existed). The network model learns
    /// this.
    #[serde(default)]
    pub net_tx_bytes_per_s: Option<f64>,
    /// Largest egress rate of one sampling interval, bytes/s (`None`: not measured).
    #[serde(default)]
    pub net_tx_peak_bytes_per_s: Option<f64>,
    /// Mean network ingress over the run's samples, bytes/s (`None`: not measured, as for egress). The
    /// received-bytes model learns this.
    #[serde(default)]
    pub net_rx_bytes_per_s: Option<f64>,
    /// Largest ingress rate of one sampling interval, bytes/s (`None`: not measured).
    #[serde(default)]
    pub net_rx_peak_bytes_per_s: Option<f64>,
}

/// The shape of a run over its normalised lifetime: per bucket, usage as a fraction of the run's peak (0..=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// CPU cores per bucket over the run's CPU peak.
    pub cpu: Vec<f32>,
    /// Memory per bucket over the run's memory peak.
    pub memory: Vec<f32>,
    /// IO rate per bucket over the run's IO-rate peak.
    pub io: Vec<f32>,
}

impl Profile {
    /// A flat profile (every bucket at the peak): the conservative shape used when nothing better is known.
    pub fn flat() -> Self {
        Self {
            cpu: vec![1.0; BUCKETS],
            memory: vec![1.0; BUCKETS],
            io: vec![1.0; BUCKETS],
        }
    }

    /// Builds the profile from a run's samples, which must be sorted by time. Returns `None` when there are no
    /// samples inside `[start_ms, start_ms + duration_ms]`.
    pub fn from_samples(samples: &[Sample], start_ms: u64, duration_ms: u64) -> Option<Self> {
        let duration_ms = duration_ms.max(1);
        let mut cpu = [0.0f64; BUCKETS];
        let mut mem = [0.0f64; BUCKETS];
        let mut io = [0.0f64; BUCKETS];
        let mut seen = [false; BUCKETS];
        let mut prev_ts = start_ms;
        for s in samples {
            if s.ts_ms < start_ms || s.ts_ms > start_ms + duration_ms {
                continue;
            }
            let bucket = |ts: u64| {
                let pos = (ts - start_ms) as f64 / duration_ms as f64;
                ((pos * BUCKETS as f64) as usize).min(BUCKETS - 1)
            };
            let b = bucket(s.ts_ms);
            let dt = (s.ts_ms.saturating_sub(prev_ts)).max(1) as f64 / 1000.0;
            // A CPU sample is the mean over the interval since the previous one (the first: since the start),
            // so it stands for every bucket of that interval, not only the one it was taken in.
            for c in &mut cpu[bucket(prev_ts)..=b] {
                *c = c.max(s.cpu_cores);
            }
            prev_ts = s.ts_ms;
            mem[b] = mem[b].max(s.memory_bytes as f64);
            io[b] = io[b].max(s.io_bytes as f64 / dt);
            seen[b] = true;
        }
        if !seen.iter().any(|&x| x) {
            return None;
        }
        // Buckets before the first sample take its value (a short run's first sample may come several buckets
        // in; zeros there would predict no CPU at all for the run's start), and buckets without a sample inherit
        // the previous one's value: sampling is coarser than the bucket.
        if let Some(first) = seen.iter().position(|&x| x) {
            for b in 0..first {
                cpu[b] = cpu[b].max(cpu[first]);
                mem[b] = mem[first];
                io[b] = io[first];
            }
        }
        for b in 1..BUCKETS {
            if !seen[b] {
                cpu[b] = cpu[b - 1];
                mem[b] = mem[b - 1];
                io[b] = io[b - 1];
            }
        }
        Some(Self {
            cpu: normalise(&cpu),
            memory: normalise(&mem),
            io: normalise(&io),
        })
    }

    /// Whether every series has [`BUCKETS`] entries.
    pub fn is_well_formed(&self) -> bool {
        self.cpu.len() == BUCKETS && self.memory.len() == BUCKETS && self.io.len() == BUCKETS
    }
}

fn normalise(v: &[f64; BUCKETS]) -> Vec<f32> {
    let peak = v.iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        return vec![0.0; BUCKETS];
    }
    v.iter().map(|x| (x / peak) as f32).collect()
}

/// One finished run, as the broker records it when the container exits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Unique id of the run; samples appended under the same id belong to it.
    pub run_id: RunId,
    /// Task type of the run.
    pub task_key: TaskKey,
    /// Start time, ms since the epoch.
    pub started_at_ms: u64,
    /// Inputs known at start.
    pub meta: RunMetadata,
    /// Measured outcome.
    pub outcome: RunOutcome,
    /// Lifetime profile; when `None`, [`crate::Store::record_run`] derives it from the run's stored samples.
    #[serde(default)]
    pub profile: Option<Profile>,
}

impl RunSummary {
    /// When the run ended, ms since the epoch: its start plus its duration.
    pub fn ended_at_ms(&self) -> u64 {
        // `as` saturates: a duration past u64's milliseconds (none passes the checks) ends at the last one.
        self.started_at_ms
            .saturating_add((self.outcome.duration_s * 1000.0) as u64)
    }
}

/// One telemetry sample of a running container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Sample time, ms since the epoch.
    pub ts_ms: u64,
    /// CPU usage over the interval since the previous sample, cores.
    pub cpu_cores: f64,
    /// Memory usage at the sample time, bytes.
    pub memory_bytes: u64,
    /// Bytes read plus written since the previous sample.
    pub io_bytes: u64,
    /// How many raw samples this one stands for (1 unless downsampled).
    pub count: u32,
}

/// The features the regression models use, taken from a run's [`RunMetadata`] at prediction time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFeatures {
    /// Input data size in bytes.
    pub input_bytes: u64,
    /// Number of dependencies.
    pub dependencies: u32,
    /// Requested CPU limit, cores (0 when none).
    pub requested_cpu_cores: f64,
    /// Requested memory limit, bytes (0 when none).
    pub requested_memory_bytes: f64,
    /// Host load at start.
    pub host_load: f64,
    /// Prediction or start time, ms since the epoch (lets a regression follow drift).
    pub at_ms: u64,
}

impl RunFeatures {
    /// Features of a run about to start at `at_ms`.
    pub fn from_metadata(meta: &RunMetadata, at_ms: u64) -> Self {
        Self {
            input_bytes: meta.input_bytes,
            dependencies: meta.dependencies,
            requested_cpu_cores: meta.requested_cpu_cores.unwrap_or(0.0),
            requested_memory_bytes: meta.requested_memory_bytes.unwrap_or(0) as f64,
            host_load: meta.host_load,
            at_ms,
        }
    }
}

/// What the broker did to a container's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Directive {
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

/// One entry of the decision log: every limit change the broker makes, with the reason and the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Sequence number assigned by the store (ignored on write).
    #[serde(default)]
    pub seq: u64,
    /// When the decision was made, ms since the epoch.
    pub at_ms: u64,
    /// Container id.
    pub container_id: String,
    /// Task type of the container.
    pub task_key: TaskKey,
    /// What was done.
    pub directive: Directive,
    /// Which resource (`"memory"`, `"cpu"`, `"io"`).
    pub resource: String,
    /// Why, in words (`"predicted p99.8 peak"`, `"memory pressure at 92%"`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: u64, cpu: f64, mem: u64) -> Sample {
        Sample {
            ts_ms: ts,
            cpu_cores: cpu,
            memory_bytes: mem,
            io_bytes: 0,
            count: 1,
        }
    }

    #[test]
    fn profile_from_sparse_samples_fills_gaps_and_normalises() {
        // Two samples over a 20 s run: buckets between them inherit the earlier value, the bucket before the
        // first takes the first's.
        let p = Profile::from_samples(&[s(1_000, 2.0, 50), s(15_000, 1.0, 100)], 0, 20_000)
            .expect("samples in range");
        assert!(p.is_well_formed());
        assert_eq!(
            p.memory[0], 0.5,
            "before the first sample: the first's value"
        );
        assert_eq!(p.memory[1], 0.5);
        assert_eq!(p.memory[14], 0.5);
        assert_eq!(p.memory[15], 1.0);
        assert_eq!(p.memory[19], 1.0);
        assert_eq!(p.cpu[0], 1.0);
        assert_eq!(p.cpu[1], 1.0);
        // The second CPU sample is the mean over 1..15 s: it does not lower the first's buckets.
        assert_eq!(p.cpu[14], 1.0);
        assert_eq!(p.cpu[15], 0.5);
        assert!(p.io.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn short_run_profile_has_cpu_from_its_start() {
        // A 2 s run sampled every 500 ms from 600 ms on (the first report has no previous sample to rate from):
        // one busy core all along. Every bucket says one core, the first ones included.
        let samples: Vec<Sample> = (0..3).map(|i| s(600 + 500 * i, 1.0, 10)).collect();
        let p = Profile::from_samples(&samples, 0, 2_000).expect("samples in range");
        assert!(p.cpu.iter().all(|c| *c == 1.0), "{:?}", p.cpu);
        assert!(p.memory.iter().all(|m| *m == 1.0), "{:?}", p.memory);
    }

    #[test]
    fn profile_needs_a_sample_inside_the_run() {
        assert!(Profile::from_samples(&[], 0, 1_000).is_none());
        assert!(Profile::from_samples(&[s(5_000, 1.0, 1)], 0, 1_000).is_none());
    }

    #[test]
    fn features_default_missing_limits_to_zero() {
        let f = RunFeatures::from_metadata(&RunMetadata::default(), 7);
        assert_eq!(
            (f.requested_cpu_cores, f.requested_memory_bytes, f.at_ms),
            (0.0, 0.0, 7)
        );
    }
}
