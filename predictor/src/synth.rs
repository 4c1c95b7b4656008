//! Synthetic run traces for offline evaluation, tests and benchmarks (`--example gen_trace`).
//!
//! Each task type gets its own hidden parameters: a base memory (64 MiB – 4 GiB), a dependence of memory, CPU,
//! duration and IO on the input size (which is log-normal per run; about a third of the task types ignore input
//! size), a lifetime shape (memory ramping to a peak at the end, steady, peaking mid-run, or peaking early), per-task
//! multiplicative noise (1–5% on memory), host-load dependence of duration, a linear drift of memory over time
//! (-0.2% to +1% per day) and rare outliers (memory x1.3 at [`SynthConfig::outlier_rate`]).
//!
//! The generator is deterministic for a given [`SynthConfig::seed`] (its own SplitMix64, no external RNG), so tests
//! and the recorded benchmark figures can be reproduced exactly.
//!
//! Limits: it is a model of the workloads we expect, not a recording of real ones; the figures it yields say how
//! the policies compare under these assumptions, nothing more.

use crate::key::TaskKey;
use crate::types::{BUCKETS, Profile, RunMetadata, RunOutcome, RunSummary};

/// A small, fast, seedable PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Log-uniform in `[lo, hi)`.
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        self.range(lo.ln(), hi.ln()).exp()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Integer in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Generator parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Seed.
    pub seed: u64,
    /// Number of task types.
    pub task_types: usize,
    /// Runs per task type.
    pub runs_per_task: usize,
    /// Time span of the trace, days.
    pub days: f64,
    /// Start of the trace, ms since the epoch.
    pub start_ms: u64,
    /// Scales every task's drift (0 = no drift).
    pub drift_scale: f64,
    /// Probability that a run is an outlier.
    pub outlier_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            task_types: 50,
            runs_per_task: 200,
            days: 30.0,
            start_ms: 1_767_225_600_000, // 2026-01-01
            drift_scale: 1.0,
            outlier_rate: 0.001,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    RampToEnd,
    Steady,
    PeakMiddle,
    EarlyPeak,
}

impl Shape {
    fn memory(self, pos: f64) -> f64 {
        match self {
            Shape::RampToEnd => 0.2 + 0.8 * pos,
            Shape::Steady => (pos * 10.0).clamp(0.3, 1.0),
            Shape::PeakMiddle => 0.3 + 0.7 * (1.0 - (2.0 * pos - 1.0).abs()),
            Shape::EarlyPeak => {
                if pos < 0.2 {
                    0.4 + 3.0 * pos
                } else {
                    1.0 - 0.5 * (pos - 0.2)
                }
            }
        }
    }
}

struct TaskParams {
    key: TaskKey,
    image: String,
    command: Vec<String>,
    shape: Shape,
    base_mem: f64,
    mem_per_input: f64,
    input_median: f64,
    input_sigma: f64,
    uses_input: bool,
    mem_noise: f64,
    cpu_base: f64,
    cpu_noise: f64,
    dur_base: f64,
    deps: u32,
    drift_per_day: f64,
    req_cpu: f64,
    req_mem: u64,
}

impl TaskParams {
    fn new(i: usize, rng: &mut Rng, cfg: &SynthConfig) -> Self {
        let base_mem = rng.log_range(64.0 * MIB, 4096.0 * MIB);
        let input_median = rng.log_range(10e6, 10e9);
        let uses_input = rng.f64() > 0.33;
        let mem_per_input = if uses_input {
            base_mem * rng.range(0.2, 1.5) / input_median
        } else {
            0.0
        };
        let shape = match rng.below(4) {
            0 => Shape::RampToEnd,
            1 => Shape::Steady,
            2 => Shape::PeakMiddle,
            _ => Shape::EarlyPeak,
        };
        Self {
            key: TaskKey::new(format!("synth-{i:04}")),
            image: format!("registry.invalid/team{}/job{i}:v1", i % 7),
            command: vec!["/bin/job".to_owned(), format!("--task={i}")],
            shape,
            base_mem,
            mem_per_input,
            input_median,
            input_sigma: rng.range(0.2, 0.8),
            uses_input,
            mem_noise: rng.range(0.01, 0.05),
            cpu_base: rng.log_range(0.2, 4.0),
            cpu_noise: rng.range(0.03, 0.12),
            dur_base: rng.log_range(30.0, 7200.0),
            deps: rng.below(5) as u32,
            drift_per_day: rng.range(-0.002, 0.01) * cfg.drift_scale,
            req_cpu: 2.0,
            req_mem: (base_mem * 3.0) as u64,
        }
    }

    fn run(
        &self,
        rng: &mut Rng,
        run_id: u64,
        started_at_ms: u64,
        day: f64,
        cfg: &SynthConfig,
    ) -> RunSummary {
        let input = if self.uses_input || rng.f64() < 0.5 {
            self.input_median * (self.input_sigma * rng.normal()).exp()
        } else {
            0.0
        };
        let rel_input = if self.input_median > 0.0 {
            input / self.input_median
        } else {
            1.0
        };
        let deps = self.deps + u32::from(rng.f64() < 0.2);
        let host_load = rng.range(0.05, 1.2);
        let mut mem = (self.base_mem + self.mem_per_input * input + f64::from(deps) * 8.0 * MIB)
            * (1.0 + self.drift_per_day * day)
            * (self.mem_noise * rng.normal()).exp();
        if rng.f64() < cfg.outlier_rate {
            mem *= 1.3;
        }
        let input_factor = if self.uses_input { rel_input } else { 1.0 };
        let cpu = self.cpu_base
            * (0.7 + 0.3 * input_factor.sqrt())
            * (self.cpu_noise * rng.normal()).exp();
        let duration = self.dur_base
            * input_factor.powf(0.8)
            * (1.0 + 0.5 * host_load)
            * (0.1 * rng.normal()).exp();
        let io_bytes = (input * rng.range(1.0, 1.5) + 1e6 * rng.f64()) as u64;
        let shape: Vec<f32> = (0..BUCKETS)
            .map(|b| {
                let pos = (b as f64 + 0.5) / BUCKETS as f64;
                self.shape.memory(pos) as f32
            })
            .collect();
        let peak = shape.iter().copied().fold(0.0f32, f32::max).max(1e-6);
        let memory: Vec<f32> = shape.iter().map(|v| v / peak).collect();
        let cpu_profile: Vec<f32> = (0..BUCKETS)
            .map(|b| {
                if b == 0 {
                    0.5
                } else {
                    0.8 + 0.2 * ((b % 3) as f32 / 2.0)
                }
            })
            .collect();
        RunSummary {
            run_id,
            task_key: self.key.clone(),
            started_at_ms,
            meta: RunMetadata {
                image: self.image.clone(),
                command: self.command.clone(),
                input_bytes: input as u64,
                dependencies: deps,
                requested_cpu_cores: Some(self.req_cpu),
                requested_memory_bytes: Some(self.req_mem),
                host_load,
            },
            outcome: RunOutcome {
                duration_s: duration,
                peak_memory_bytes: mem as u64,
                cpu_seconds: cpu * 0.8 * duration,
                cpu_p50_cores: cpu * 0.8,
                cpu_p95_cores: cpu,
                io_bytes,
                exit_code: 0,
                oom_killed: false,
                throttled_s: (cpu - self.req_cpu).max(0.0) * duration * 0.1,
                // Egress and ingress follow the IO rate (no draw of its own: the other targets' series stay as they were).
                net_tx_bytes_per_s: Some(io_bytes as f64 / duration.max(1e-3) / 2.0),
                net_tx_peak_bytes_per_s: Some(io_bytes as f64 / duration.max(1e-3)),
                net_rx_bytes_per_s: Some(io_bytes as f64 / duration.max(1e-3) / 4.0),
                net_rx_peak_bytes_per_s: Some(io_bytes as f64 / duration.max(1e-3) / 2.0),
            },
            profile: Some(Profile {
                cpu: cpu_profile,
                memory,
                io: vec![1.0; BUCKETS],
            }),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Generates a trace, sorted by start time; run ids are 1.. in that order.
pub fn generate(cfg: &SynthConfig) -> Vec<RunSummary> {
    let mut rng = Rng::new(cfg.seed);
    let tasks: Vec<TaskParams> = (0..cfg.task_types)
        .map(|i| TaskParams::new(i, &mut rng, cfg))
        .collect();
    let span_ms = (cfg.days * 86_400_000.0) as u64;
    let mut slots: Vec<(u64, usize)> = Vec::with_capacity(cfg.task_types * cfg.runs_per_task);
    for (t, _) in tasks.iter().enumerate() {
        for _ in 0..cfg.runs_per_task {
            slots.push((cfg.start_ms + rng.below(span_ms.max(1)), t));
        }
    }
    slots.sort_unstable();
    slots
        .iter()
        .enumerate()
        .map(|(i, &(ts, t))| {
            let day = (ts - cfg.start_ms) as f64 / 86_400_000.0;
            tasks[t].run(&mut rng, i as u64 + 1, ts, day, cfg)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_sorted_and_well_formed() {
        let cfg = SynthConfig {
            task_types: 3,
            runs_per_task: 20,
            ..SynthConfig::default()
        };
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a, b);
        assert_eq!(a.len(), 60);
        assert!(
            a.windows(2)
                .all(|w| w[0].started_at_ms <= w[1].started_at_ms)
        );
        assert!(
            a.iter()
                .all(|r| r.profile.as_ref().is_some_and(Profile::is_well_formed))
        );
        assert!(
            a.iter()
                .all(|r| r.outcome.peak_memory_bytes > 0 && r.outcome.duration_s > 0.0)
        );
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / f64::from(n);
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
