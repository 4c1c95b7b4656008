//! Learning with real `predictived` processes: a new task type is predicted from the Create after the Finish that
//! gives it `min_runs` runs, with the shipped configuration (packaging/predictived.toml); and a task type learned on
//! one node predicts on another after `predictivectl export` / import (two brokers, two state dirs, two sockets),
//! without counting a run twice. Every wait is a poll with a generous bound, never a fixed sleep.

mod common;
use common::{Daemon, now_ns, predictivectl, short_tempdir};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broker::api::{Finish, Register, Registered, Report};
use broker::controller::SpecLimits;
use runtime_hooks::{CpuSample, MemorySample, Sample};

const WAIT: Duration = Duration::from_secs(30);
const GIB: u64 = 1 << 30;
const PEAK: u64 = 120 << 20;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the broker crate sits in the workspace")
        .to_owned()
}

/// The shipped configuration, with `replace` applied (pairs of exact text and its replacement) and `extra` appended.
fn shipped_config(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text = std::fs::read_to_string(workspace().join("packaging/predictived.toml"))
        .expect("packaging/predictived.toml");
    for (from, to) in replace {
        assert!(text.contains(from), "the shipped config has {from:?}");
        text = text.replace(from, to);
    }
    text.push('\n');
    text.push_str(extra);
    text
}

/// A node: one `predictived` with its own state dir and socket.
type Node = Daemon;

fn start_node(dir: &Path, config: &str, extra_args: &[&str]) -> Node {
    Daemon::start_with(dir, config, extra_args, |_| {})
}

/// Runs of `task` the broker's store holds (`predictivectl models`), 0 when it does not know the type.
fn runs_seen(node: &Node, task: &str) -> u64 {
    node.client()
        .models()
        .expect("models")
        .task_types
        .iter()
        .find(|t| t.task_key.as_str() == task)
        .map_or(0, |t| t.runs_seen)
}

fn register(node: &Node, id: &str, task: &str) -> Registered {
    node.client()
        .register(&Register {
            container_id: id.to_owned(),
            namespace: "default".to_owned(),
            annotations: BTreeMap::from([("io.predictive.task-type".to_owned(), task.to_owned())]),
            image: "docker.io/library/busybox:latest".to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), "work".to_owned()],
            limits: SpecLimits {
                cpu_limit_cores: Some(2.0),
                memory_limit_bytes: Some(GIB),
                ..SpecLimits::default()
            },
            cgroup_path: format!("/default/{id}"),
            ..Register::default()
        })
        .expect("register")
}

/// One whole run, as a shim sends it: Register, a Report of two samples (0.5 cores, `PEAK` bytes), Finish.
fn run_once(node: &Node, id: &str, task: &str) -> Registered {
    let reg = register(node, id, task);
    let t = now_ns();
    let sample = |dt: u64, usage: u64| Sample {
        unix_ns: t + dt,
        monotonic_ns: t + dt,
        cpu: CpuSample {
            usage_ns: Some(usage),
            nr_periods: Some(10),
            nr_throttled: Some(0),
            throttled_ns: Some(0),
        },
        memory: MemorySample {
            usage_bytes: Some(PEAK),
            ..MemorySample::default()
        },
        ..Sample::default()
    };
    node.client()
        .report(&Report {
            container_id: id.to_owned(),
            samples: vec![sample(0, 0), sample(100_000_000, 50_000_000)],
            ..Report::default()
        })
        .expect("report");
    node.client()
        .finish(&Finish {
            container_id: id.to_owned(),
            exit_code: 0,
            oom_killed: false,
            peak_memory_bytes: Some(PEAK),
            cpu_seconds: None,
            ran_ms: None,
            created_ns: None,
        })
        .expect("finish");
    reg
}

/// What a user checks: the container started on predicted limits, not on its spec's.
fn assert_predicted(r: &Registered, what: &str) {
    assert!(!r.cold_start, "{what}: cold start");
    let p = r.prediction.as_ref().expect("a prediction");
    assert!(
        p.model_version > 0,
        "{what}: model version {}",
        p.model_version
    );
    let mem = r.allocation.memory_bytes.expect("a memory allocation");
    assert!(
        (PEAK..GIB).contains(&mem),
        "{what}: memory allocation {mem} is the predicted peak's, not the spec's 1 GiB"
    );
}

fn wait_for(what: &str, node: &Node, mut done: impl FnMut() -> bool) {
    node.wait_for(what, WAIT, || done().then_some(()));
}

#[test]
fn with_the_shipped_defaults_the_run_after_min_runs_runs_is_predicted() {
    let dir = short_tempdir();
    // The shipped file as is (min_runs 5, retrain every 10 min or 200 runs); only the paths are this test's.
    let node = start_node(dir.path(), &shipped_config(&[], ""), &[]);
    for i in 0..5 {
        let r = run_once(&node, &format!("c{i}"), "etl");
        assert!(r.cold_start, "run {} of a new type has no history", i + 1);
    }
    // The Create right after the 5th Finish (not 10 minutes later).
    let sixth = register(&node, "c5", "etl");
    assert_predicted(&sixth, "the 6th run");
    assert_eq!(runs_seen(&node, "etl"), 5);
}

#[test]
fn without_refits_the_run_after_min_runs_runs_waits_for_the_retrain() {
    let dir = short_tempdir();
    let node = start_node(
        dir.path(),
        &shipped_config(&[("refit_growth = 0.1", "refit_growth = 0.0")], ""),
        &[],
    );
    for i in 0..5 {
        run_once(&node, &format!("c{i}"), "etl");
    }
    assert!(
        register(&node, "c5", "etl").cold_start,
        "refits off: only the 10-minute retrain would fit it"
    );
}

fn ctl(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["--socket".to_owned(), node.socket().display().to_string()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let out = predictivectl(all);
    assert!(
        out.status.success(),
        "predictivectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_type_learned_on_node_a_is_predicted_on_node_b_after_an_import_counted_once() {
    let (da, db) = (short_tempdir(), short_tempdir());
    let shared = db.path().join("import");
    std::fs::create_dir_all(&shared).expect("import dir");
    let a = start_node(da.path(), &shipped_config(&[], ""), &[]);
    // Node B watches a directory (a shared volume on Kubernetes), scanned every retrain_check_ms.
    let b = start_node(
        db.path(),
        &shipped_config(
            &[
                ("retrain_check_ms = 30000", "retrain_check_ms = 100"),
                (
                    "# dir = \"/var/lib/predictive/import\"",
                    &format!("dir = {:?}", shared.display().to_string()),
                ),
            ],
            "",
        ),
        &[],
    );
    for i in 0..5 {
        run_once(&a, &format!("a{i}"), "etl");
    }
    assert_eq!((runs_seen(&a, "etl"), runs_seen(&b, "etl")), (5, 0));

    let file = da.path().join("a.json");
    let said = ctl(&a, &["export", "-o", file.to_str().expect("utf-8 path")]);
    assert!(said.contains("5 runs of 1 task types"), "{said}");
    std::fs::copy(&file, shared.join("a.json")).expect("copy to the shared dir");
    // The import's log line comes after the refit it triggers; the runs are visible before it (store commit first).
    wait_for("node B imports and refits a.json", &b, || {
        b.stderr()
            .lines()
            .any(|l| l.contains("/a.json") && l.contains("imported=5") && l.contains("refitted=1"))
    });
    assert_eq!(runs_seen(&b, "etl"), 5);
    // B has never run the type: its first run is predicted from A's history.
    assert_predicted(&register(&b, "b0", "etl"), "node B's first run");

    // The same file again, under another name: every run is known, nothing is added.
    std::fs::copy(&file, shared.join("a-again.json")).expect("copy again");
    wait_for("node B reads a-again.json", &b, || {
        b.stderr()
            .lines()
            .any(|l| l.contains("a-again.json") && l.contains("duplicates=5"))
    });
    assert_eq!(runs_seen(&b, "etl"), 5);

    // B's own export carries A's runs under A's identity: imported back at A's start, they are A's own.
    let from_b = db.path().join("b.json");
    ctl(&b, &["export", "-o", from_b.to_str().expect("utf-8 path")]);
    drop(a);
    let a = start_node(
        da.path(),
        &shipped_config(&[], ""),
        &["--import", from_b.to_str().expect("utf-8 path")],
    );
    assert_eq!(runs_seen(&a, "etl"), 5, "{}", a.stderr());
    assert!(
        a.stderr()
            .lines()
            .any(|l| l.contains("b.json") && l.contains("own=5")),
        "{}",
        a.stderr()
    );

    // A third node started with `--import` predicts at once.
    let dc = short_tempdir();
    let c = start_node(
        dc.path(),
        &shipped_config(&[], ""),
        &["--import", file.to_str().expect("utf-8 path")],
    );
    assert_predicted(&register(&c, "c0", "etl"), "node C's first run");
}

#[test]
fn a_bad_import_file_is_refused_naming_it_and_what_was_wrong() {
    let dir = short_tempdir();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"format":"predictive-history","version":1,"node_id":"00000000000000aa","exported_at_ms":1,
            "runs":[{"node":"00000000000000aa","run":1,"task_key":"etl\u001b[2J","started_at_ms":1,
                     "duration_s":1.0,"peak_memory_bytes":1}]}"#,
    )
    .expect("write");
    // At start: the broker does not start, and says why.
    std::fs::write(dir.path().join("predictived.toml"), shipped_config(&[], "")).expect("config");
    let mut child = Daemon::command(dir.path())
        .args(["--import", bad.to_str().expect("utf-8 path")])
        .spawn()
        .expect("spawn predictived");
    let until = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < until, "predictived kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(
        log.contains("bad.json") && log.contains("run 0") && log.contains("control character"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "the hostile key is escaped: {log}");

    // In a watched directory: logged, and the broker goes on serving.
    let shared = dir.path().join("import");
    std::fs::create_dir_all(&shared).expect("import dir");
    std::fs::copy(&bad, shared.join("bad.json")).expect("copy");
    std::fs::write(shared.join("huge.json"), vec![b' '; 2048]).expect("write");
    let node = start_node(
        dir.path(),
        &shipped_config(
            &[
                ("retrain_check_ms = 30000", "retrain_check_ms = 100"),
                ("max_file_bytes = 67108864", "max_file_bytes = 1024"),
                (
                    "# dir = \"/var/lib/predictive/import\"",
                    &format!("dir = {:?}", shared.display().to_string()),
                ),
            ],
            "",
        ),
        &[],
    );
    wait_for("both files rejected", &node, || {
        let log = node.stderr();
        log.contains("import file rejected")
            && log.contains("huge.json is 2048 bytes; at most 1024")
    });
    assert!(node.client().status().is_ok());
    assert_eq!(runs_seen(&node, "etl\u{1b}[2J"), 0);
}
