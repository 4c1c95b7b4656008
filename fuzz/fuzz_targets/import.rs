//! Another node's run history, as `predictived --import` reads it, through training to a Register's initial
//! allocation. Values a file may hold (every field in range) are trusted by the import, so what is checked here is
//! what the node does with them: no panic while parsing, merging, refitting or predicting, every estimate of a
//! fitted type finite and at least 0, and the allocation the broker derives from it finite and inside the spec's
//! limits. An input is up to three files imported in turn into a new store: a quarter are raw bytes for the parser,
//! the rest well-formed files whose numbers come from the input (edge values: 0, the accepted minima and maxima,
//! raw bit patterns cut to the accepted range), which the import must accept.
#![no_main]

use broker::controller::{
    CgroupKind, ControllerConfig, HostCapacity, Mode, SpecLimits, TaskSpec, initial_allocation,
};
use broker::transfer;
use broker::validate::MAX_BYTES;
use libfuzzer_sys::fuzz_target;

mod common;
use common::Bytes;
use predictor::{Predictor, PredictorConfig, RunFeatures, TaskKey};

/// The importing node's clock.
const NOW_MS: u64 = 1_800_000_000_000;

/// A positive value below `min` (a duration shorter than any broker records, refused by the import) raised to it.
fn at_least(v: f64, min: f64) -> f64 {
    if v == 0.0 { 0.0 } else { v.max(min) }
}

/// A well-formed export file whose runs take their values from `b`.
fn file_from(b: &mut Bytes, node: &str) -> Vec<u8> {
    let runs = usize::from(b.u8() % 48);
    let buckets = predictor::BUCKETS;
    let runs: Vec<serde_json::Value> = (0..runs)
        .map(|i| {
            let key = ["etl", "web", "a/b"][usize::from(b.u8() % 3)];
            let profile = (b.u8() % 2 == 0).then(|| {
                let mut series = || (0..buckets).map(|_| b.num(1.0)).collect::<Vec<_>>();
                serde_json::json!({"cpu": series(), "memory": series(), "io": series()})
            });
            let started = NOW_MS - b.int(400 * 86_400_000) + b.int(transfer::MAX_FUTURE_MS);
            // A run ends at most the clocks' skew ahead of the importing node (a broker records it then); 10 ms
            // spare for the sum's rounding.
            let room = (NOW_MS + transfer::MAX_FUTURE_MS - started) as f64 / 1000.0 - 0.01;
            let duration = match b.num(transfer::MAX_DURATION_S).min(room) {
                _ if room < transfer::MIN_DURATION_S => 0.0,
                d => at_least(d, transfer::MIN_DURATION_S),
            };
            serde_json::json!({
                "node": node,
                "run": i as u64 + 1,
                "task_key": key,
                "started_at_ms": started.max(1),
                "input_bytes": b.int(u64::MAX),
                "dependencies": b.u8(),
                // A request is positive when present.
                "requested_cpu_cores": (b.u8() % 2 == 0).then(|| b.num(1024.0)).filter(|c| *c > 0.0),
                "requested_memory_bytes": (b.u8() % 2 == 0).then(|| b.int(MAX_BYTES).max(1)),
                "host_load": b.num(1e6),
                "duration_s": duration,
                "peak_memory_bytes": b.int(MAX_BYTES),
                "cpu_seconds": b.num(1e6),
                "cpu_p50_cores": b.num(1024.0),
                "cpu_p95_cores": b.num(1024.0),
                "io_bytes": b.int(u64::MAX),
                "exit_code": i32::from(b.u8()) - 128,
                "oom_killed": b.u8() % 7 == 0,
                "throttled_s": b.num(1e6),
                "profile": profile,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "format": transfer::FORMAT,
        "version": transfer::FILE_VERSION,
        "node_id": node,
        "exported_at_ms": NOW_MS,
        "runs": runs,
    }))
    .expect("a JSON value serialises")
}

fn check_estimate(key: &str, what: &str, e: &predictor::Estimate) {
    for (field, v) in [
        ("point", e.point),
        ("lower", e.lower),
        ("upper", e.upper),
        ("limit", e.limit),
    ] {
        assert!(v.is_finite() && v >= 0.0, "{key}: {what}.{field} is {v}");
    }
}

/// Files one input imports, one after another, each from a node of its own.
const FILES: u8 = 3;

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = PredictorConfig::default();
    config.train.min_runs = 3;
    let p = Predictor::open(&dir.path().join("model.redb"), config).expect("opening a new store");
    for file in 0..1 + b.u8() % FILES {
        // A raw file takes the rest of the input: it is the last.
        let raw = b.u8() % 4 == 0;
        let node = format!("{:016x}", u64::from(file) + 1);
        let bytes = if raw {
            std::mem::take(&mut b.0).to_vec()
        } else {
            file_from(&mut b, &node)
        };
        match transfer::parse(&bytes, "fuzz.json", NOW_MS) {
            Ok(runs) => {
                p.import_runs(&runs, NOW_MS)
                    .expect("importing checked runs");
            }
            Err(e) => {
                let msg = broker::error_chain(&e);
                assert!(
                    !msg.chars().any(char::is_control),
                    "unescaped refusal: {msg:?}"
                );
                assert!(
                    raw,
                    "a file within every documented bound was refused: {msg}"
                );
            }
        }
    }
    let host = HostCapacity {
        cpu_cores: 4.0,
        memory_bytes: 8 << 30,
    };
    let cfg = ControllerConfig::default();
    for key in ["etl", "web", "a/b"] {
        let features = RunFeatures {
            input_bytes: b.int(u64::MAX),
            dependencies: u32::from(b.u8()),
            requested_cpu_cores: b.num(64.0),
            requested_memory_bytes: b.num(1e12),
            host_load: b.num(100.0),
            at_ms: NOW_MS,
        };
        let pred = p.predict(&TaskKey::new(key.to_owned()), &features);
        if !pred.is_cold_start() {
            check_estimate(key, "duration_s", &pred.duration_s);
            check_estimate(key, "cpu_cores", &pred.cpu_cores);
            check_estimate(key, "memory_bytes", &pred.memory_bytes);
            check_estimate(key, "io_bytes_per_s", &pred.io_bytes_per_s);
        }
        let cpu_limit = (b.u8() % 2 == 0).then(|| 0.1 + b.num(64.0));
        let memory_limit = (b.u8() % 2 == 0).then(|| (16 << 20) + b.int(64 << 30));
        let spec = TaskSpec {
            container_id: "c".to_owned(),
            mode: Mode::Enforce,
            cgroup: CgroupKind::V2,
            priority: 0,
            depends_on: Vec::new(),
            pipeline: None,
            max_borrow_cpu: None,
            allow_below_request: false,
            cpu_shares: None,
            limits: SpecLimits {
                cpu_limit_cores: cpu_limit,
                memory_limit_bytes: memory_limit,
                ..SpecLimits::default()
            },
            parents: Vec::new(),
            prediction: Some(pred.clone()),
            started_at_ms: NOW_MS,
            stale_after_ms: None,
        };
        let (a, _, _) = initial_allocation(&spec, &host, &cfg);
        if let Some(c) = a.cpu_cores {
            assert!(c.is_finite() && c > 0.0, "{key}: CPU allocation {c}");
            if let Some(l) = cpu_limit {
                assert!(
                    c <= l + 1e-9,
                    "{key}: CPU allocation {c} above the spec's {l}"
                );
            }
        }
        if !pred.is_cold_start() {
            assert!(
                a.memory_bytes.is_some(),
                "{key}: a predicted task without a memory allocation"
            );
        }
        if let (Some(m), Some(l)) = (a.memory_bytes, memory_limit) {
            assert!(m <= l, "{key}: memory allocation {m} above the spec's {l}");
        }
    }
});
