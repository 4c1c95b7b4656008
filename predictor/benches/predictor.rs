//! Criterion benchmarks of the predictor (figures in docs/benchmarks/predictor.md).
//!
//! - `predict/known_task_10k_types`: one prediction for a known task type with 10,000 task types stored and
//!   trained (target: p99 < 200 µs). Criterion reports the mean; a separate timed loop prints p50/p99/max.
//! - `retrain/100k_runs`: a full retrain over 100,000 stored runs of 1,000 task types (target: < 10 s).
//!
//! `cargo bench -p predictor --bench predictor` (set `PREDICTOR_BENCH_QUICK=1` for smaller stores).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use predictor::synth::{SynthConfig, generate};
use predictor::{Predictor, PredictorConfig, RunFeatures};

fn quick() -> bool {
    std::env::var_os("PREDICTOR_BENCH_QUICK").is_some()
}

fn store_with(
    task_types: usize,
    runs_per_task: usize,
) -> (tempfile::TempDir, Predictor, Vec<predictor::RunSummary>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p =
        Predictor::open(&dir.path().join("bench.redb"), PredictorConfig::default()).expect("open");
    let runs = generate(&SynthConfig {
        task_types,
        runs_per_task,
        ..SynthConfig::default()
    });
    let t = Instant::now();
    for chunk in runs.chunks(20_000) {
        p.record_runs(chunk).expect("record");
    }
    println!(
        "setup: recorded {} runs of {task_types} task types in {:.2} s",
        runs.len(),
        t.elapsed().as_secs_f64()
    );
    (dir, p, runs)
}

fn bench_predict(c: &mut Criterion) {
    let types = if quick() { 1_000 } else { 10_000 };
    let (_dir, p, runs) = store_with(types, 8);
    let rep = p.retrain(1).expect("retrain");
    println!(
        "setup: retrained {} task types ({} runs) in {:.2} s",
        rep.task_types,
        rep.runs,
        rep.elapsed.as_secs_f64()
    );
    let run = &runs[runs.len() / 2];
    let key = run.task_key.clone();
    let features = RunFeatures::from_metadata(&run.meta, run.started_at_ms);
    assert!(!p.predict(&key, &features).is_cold_start());

    // Tail latency: criterion reports means, the target is a p99.
    let mut lat: Vec<Duration> = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        black_box(p.predict(black_box(&key), black_box(&features)));
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "predict with {types} task types: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?} (100,000 calls)",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        lat[lat.len() - 1]
    );

    c.bench_function(
        &format!("predict/known_task_{}k_types", types / 1000),
        |b| b.iter(|| black_box(p.predict(black_box(&key), black_box(&features)))),
    );
}

fn bench_retrain(c: &mut Criterion) {
    let (types, per) = if quick() { (100, 100) } else { (1_000, 100) };
    let (_dir, p, _runs) = store_with(types, per);
    let mut group = c.benchmark_group("retrain");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(format!("{}k_runs", types * per / 1000), |b| {
        let mut now = 1;
        b.iter(|| {
            now += 1;
            let rep = p.retrain(now).expect("retrain");
            black_box(rep.task_types)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_predict, bench_retrain);
criterion_main!(benches);
