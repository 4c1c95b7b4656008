//! `predictivectl` and the metrics endpoint against a live `predictived` on a temp socket and state dir: the
//! store is seeded with runs of one task type (so it has a model), two containers are registered and report
//! through `broker::client::Client`, then the CLI's commands run as the real binary. Runs as root and non-root.

mod common;
use common::{Daemon, now_ms, predictivectl, short_tempdir};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use broker::api::{HistoryQuery, Register, Report, Request, Response};
use broker::client::Client;
use broker::controller::SpecLimits;
use predictor::{
    Predictor, PredictorConfig, Profile, RunMetadata, RunOutcome, RunSummary, Sample, TaskKey,
};
use runtime_hooks::{CpuSample, MemorySample};

const WAIT: Duration = Duration::from_secs(20);

/// The metrics endpoint's socket.
fn metrics(d: &Daemon) -> PathBuf {
    d.dir.join("metrics.sock")
}

/// Eight finished runs of `etl` (20 s, ~0.5 cores, ~100 MiB), the last with samples.
fn seed(state: &Path) {
    let mut cfg = PredictorConfig::default();
    cfg.train.min_runs = 3;
    let p = Predictor::open(&state.join("predictor.redb"), cfg).expect("open store");
    let now = now_ms();
    let key = TaskKey::new("etl");
    let mut last = 0;
    for i in 0..8u64 {
        let id = p.allocate_run_id().expect("run id");
        let started = now - 3_600_000 + i * 60_000;
        if i == 7 {
            let samples: Vec<Sample> = (0..20u64)
                .map(|s| Sample {
                    ts_ms: started + s * 1000,
                    cpu_cores: 0.3 + 0.02 * s as f64,
                    memory_bytes: (60 + 2 * s) << 20,
                    io_bytes: 0,
                    count: 1,
                })
                .collect();
            p.append_samples(id, &samples).expect("samples");
        }
        p.record_run(&RunSummary {
            run_id: id,
            task_key: key.clone(),
            started_at_ms: started,
            meta: RunMetadata {
                image: "docker.io/library/busybox:latest".to_owned(),
                command: vec!["etl".to_owned()],
                ..RunMetadata::default()
            },
            outcome: RunOutcome {
                duration_s: 20.0 + (i % 3) as f64,
                peak_memory_bytes: (100 + i * 3) << 20,
                cpu_seconds: 10.0,
                cpu_p50_cores: 0.4,
                cpu_p95_cores: 0.5 + 0.01 * i as f64,
                ..RunOutcome::default()
            },
            profile: Some(Profile::flat()),
        })
        .expect("record run");
        last = id;
    }
    let r = p.retrain(now).expect("retrain");
    assert!(last > 0 && r.version > 0 && r.task_types == 1, "{r:?}");
}

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = short_tempdir();
    let d = dir.path().to_owned();
    seed(&d.join("state"));
    let config = format!(
        "tick_ms = 50\nretrain_check_ms = 60000\nhost_cpu_cores = 2.0\nhost_memory_bytes = 4294967296\n\
         cgroup = \"v2\"\n[retrain]\nmin_runs = 3\n[metrics]\nlisten = \"{}\"\n",
        d.join("metrics.sock").display()
    );
    let daemon = Daemon::start_with(&d, &config, &[], |c| {
        c.env_remove("RUST_LOG");
    });
    (dir, daemon)
}

fn register(id: &str, task_type: &str) -> Register {
    Register {
        container_id: id.to_owned(),
        namespace: "default".to_owned(),
        annotations: BTreeMap::from([("io.predictive.task-type".to_owned(), task_type.to_owned())]),
        image: "docker.io/library/busybox:latest".to_owned(),
        command: vec![task_type.to_owned()],
        limits: SpecLimits {
            cpu_limit_cores: Some(1.5),
            memory_limit_bytes: Some(1 << 30),
            ..SpecLimits::default()
        },
        cgroup_path: format!("/default/{id}"),
        ..Register::default()
    }
}

/// A raw sample at `t_ns` after a fixed origin with `usage_ns` of CPU used so far.
fn sample(
    origin_ns: u64,
    t_ns: u64,
    usage_ns: u64,
    periods: u64,
    throttled: u64,
    mem: u64,
) -> runtime_hooks::Sample {
    runtime_hooks::Sample {
        unix_ns: origin_ns + t_ns,
        monotonic_ns: t_ns,
        cpu: CpuSample {
            usage_ns: Some(usage_ns),
            nr_periods: Some(periods),
            nr_throttled: Some(throttled),
            throttled_ns: Some(0),
        },
        memory: MemorySample {
            usage_bytes: Some(mem),
            ..MemorySample::default()
        },
        ..runtime_hooks::Sample::default()
    }
}

/// Waits until the broker's history of `id` holds `n` points: its tick has observed `n` of the container's reports
/// (a tick records a point when a report newer than the last one arrived).
fn wait_points(c: &mut Client, id: &str, n: usize) {
    let until = Instant::now() + WAIT;
    loop {
        let q = HistoryQuery {
            container_id: Some(id.to_owned()),
            ..HistoryQuery::default()
        };
        let points = match c.call(&Request::History(q)) {
            Ok(Response::History(h)) => h.points.len(),
            other => panic!("history of {id}: {other:?}"),
        };
        if points >= n {
            return;
        }
        assert!(
            Instant::now() < until,
            "{id}: {points} history points after {WAIT:?}, want {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Registers `c1` (etl: warm) and `c2` (web: cold) and reports a few times, each observed by a tick before the next,
/// so the history has a point per report.
fn populate(d: &Daemon) {
    let mut c = Client::new(d.socket(), Duration::from_secs(5));
    let r1 = c.register(&register("c1", "etl")).expect("register c1");
    assert!(!r1.cold_start, "the seeded model predicts etl: {r1:?}");
    let r2 = c.register(&register("c2", "web")).expect("register c2");
    assert!(r2.cold_start);
    let origin = now_ms() * 1_000_000;
    for i in 0..6u64 {
        let t = i * 100_000_000;
        for (id, cores, mem) in [("c1", 0.4, 80u64 << 20), ("c2", 0.1, 20 << 20)] {
            c.report(&Report {
                container_id: id.to_owned(),
                samples: vec![sample(
                    origin,
                    t,
                    (t as f64 * cores) as u64,
                    i * 10,
                    i,
                    mem + i * (1 << 20),
                )],
                oom_events: 0,
                ..Report::default()
            })
            .expect("report");
        }
        // A point per report from the second on (usage is a rate between two samples).
        for id in ["c1", "c2"] {
            wait_points(&mut c, id, i as usize);
        }
    }
}

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["--socket".to_owned(), d.socket().display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    predictivectl(all)
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "predictivectl failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("--json prints JSON")
}

fn failed(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "stderr should name {needle:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// The SVG parses as XML and has the named series with at least `min_points` coordinate pairs.
fn check_svg(path: &Path, series: &[(&str, usize)]) {
    let text = std::fs::read_to_string(path).expect("svg written");
    let doc = roxmltree::Document::parse(&text).expect("the SVG is valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for (id, min_points) in series {
        let el = doc
            .descendants()
            .find(|n| n.attribute("id") == Some(*id))
            .unwrap_or_else(|| panic!("no element with id {id} in {}", path.display()));
        let pairs = el
            .attribute("points")
            .unwrap_or("")
            .split_whitespace()
            .count();
        assert!(
            pairs >= *min_points,
            "{id}: {pairs} points, want >= {min_points}"
        );
    }
}

#[test]
fn predictivectl_against_a_live_broker() {
    let (_dir, d) = start();
    populate(&d);

    let table = ok(&ctl(&d, &["status"]));
    for needle in [
        "host pool: 2.00 CPUs",
        "CONTAINER",
        "c1",
        "c2",
        "etl",
        "web",
        "cold",
        "LENT",
        "BORROWED",
    ] {
        assert!(table.contains(needle), "status lacks {needle:?}:\n{table}");
    }
    let s = json(&ctl(&d, &["--json", "status"]));
    assert_eq!(s["tasks"].as_array().map(Vec::len), Some(2), "{s}");
    let p1 = s["predictions"]
        .as_array()
        .and_then(|v| v.iter().find(|p| p["container_id"] == "c1"))
        .expect("c1's prediction");
    assert_eq!(p1["task_key"], "etl");
    assert!(
        p1["cpu_cores"]["upper"].as_f64().is_some_and(|u| u > 0.0),
        "{p1}"
    );

    let models = ok(&ctl(&d, &["models"]));
    assert!(
        models.contains("etl") && models.contains("RUNS"),
        "{models}"
    );
    let m = json(&ctl(&d, &["models", "--json"]));
    let etl = m["task_types"]
        .as_array()
        .and_then(|v| v.iter().find(|t| t["task_key"] == "etl"))
        .expect("etl listed");
    assert_eq!(etl["runs_seen"], 8);

    let ex = ok(&ctl(&d, &["explain", "c1"]));
    assert!(
        ex.contains("initial") && ex.contains("cpu") && ex.contains("memory"),
        "{ex}"
    );
    let e = json(&ctl(&d, &["--json", "explain", "c1"]));
    let ds = e["decisions"].as_array().expect("decisions");
    assert!(
        !ds.is_empty()
            && ds
                .iter()
                .all(|x| x["container_id"] == "c1" && x["reason"].is_string())
    );

    let svg = d.dir.join("c1.svg");
    let out = ok(&ctl(
        &d,
        &["report", "c1", "-o", svg.to_str().expect("utf-8")],
    ));
    assert!(out.contains("with the predicted band"), "{out}");
    check_svg(
        &svg,
        &[
            ("cpu-usage", 3),
            ("cpu-allocation", 3),
            ("cpu-predicted-band", 4),
            ("memory-usage", 3),
            ("memory-allocation", 3),
            ("memory-predicted-band", 4),
        ],
    );
    let h = json(&ctl(&d, &["--json", "report", "c2", "--container"]));
    assert_eq!(
        (h["live"].as_bool(), h["prediction"].is_null()),
        (Some(true), true),
        "{h}"
    );
    assert!(h["points"].as_array().is_some_and(|p| p.len() >= 3), "{h}");

    // A task type: its latest recorded run (20 seeded samples) and the prediction now.
    let svg = d.dir.join("etl.svg");
    ok(&ctl(
        &d,
        &["report", "etl", "-o", svg.to_str().expect("utf-8")],
    ));
    check_svg(
        &svg,
        &[
            ("cpu-usage", 20),
            ("memory-usage", 20),
            ("cpu-predicted-band", 4),
        ],
    );

    failed(&ctl(&d, &["explain", "nope"]), 1, "unknown container");
    failed(
        &ctl(&d, &["report", "nope"]),
        1,
        "neither a container nor a task type",
    );
    failed(
        &ctl(&d, &["report", "nope", "--container"]),
        1,
        "container nope is not known",
    );
    failed(
        &ctl(&d, &["--frobnicate", "status"]),
        2,
        "unexpected argument '--frobnicate'",
    );
    let o = predictivectl(
        ["--socket", "/tmp/no-such-predictived.sock", "status"]
            .map(str::to_owned)
            .to_vec(),
    );
    failed(&o, 1, "no broker at /tmp/no-such-predictived.sock");
}

fn scrape(path: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the metrics socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn metrics_endpoint_serves_named_series() {
    let (_dir, d) = start();
    populate(&d);
    let until = Instant::now() + WAIT;
    while !metrics(&d).exists() {
        assert!(Instant::now() < until, "no metrics socket: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = scrape(&metrics(&d), "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for needle in [
        "predictive_tasks 2\n",
        "predictive_host_cpu_cores 2\n",
        "# TYPE predictive_task_cpu_usage_cores gauge",
        "predictive_task_cpu_usage_cores{container=\"c1\",task_type=\"etl\"} ",
        "predictive_task_memory_usage_bytes{container=\"c2\",task_type=\"web\"} ",
        "predictive_task_cpu_allocation_cores{container=\"c1\",task_type=\"etl\"} ",
        "predictive_task_memory_allocation_bytes{container=\"c1\",task_type=\"etl\"} ",
        "predictive_task_cpu_predicted_cores{container=\"c1\",task_type=\"etl\",bound=\"upper\"} ",
        "predictive_task_memory_predicted_bytes{container=\"c1\",task_type=\"etl\",bound=\"lower\"} ",
        "predictive_task_leases_lent{container=\"c1\",task_type=\"etl\"} ",
        "predictive_task_leases_borrowed{container=\"c2\",task_type=\"web\"} ",
        "# TYPE predictive_task_throttles_total counter",
        "predictive_task_pauses_total{container=\"c1\",task_type=\"etl\"} 0\n",
        "predictive_requests_total{type=\"register\"} 2\n",
        "predictive_decisions_total{resource=\"cpu\",directive=\"initial\"} ",
        "predictive_registrations_total 2\n",
    ] {
        assert!(body.contains(needle), "metrics lack {needle:?}:\n{body}");
    }
    assert!(
        !body.contains("predictive_task_cpu_predicted_cores{container=\"c2\""),
        "a cold start has no prediction bounds"
    );
    let r = scrape(&metrics(&d), "GET /other HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.0 404"), "{r}");
    let r = scrape(&metrics(&d), "POST /metrics HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.0 405"), "{r}");
}
