//! Runs the `predictive-hook` binary the way runc does: state JSON on stdin, event as an argument.

use std::io::Write;
use std::process::{Command, Stdio};

fn run_hook(args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_predictive-hook"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn predictive-hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write state");
    child.wait_with_output().expect("hook output")
}

#[test]
fn registers_and_deregisters_this_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("records.jsonl");
    let pid = std::process::id();
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"hook-test","status":"created","pid":{pid},"bundle":"{}"}}"#,
        dir.path().display()
    );
    let out = run_hook(
        &["createRuntime"],
        &[("PREDICTIVE_HOOK_RECORD", record.to_str().expect("utf8"))],
        &state,
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = state.replace("created", "stopped");
    let out = run_hook(
        &["--record", record.to_str().expect("utf8"), "poststop"],
        &[],
        &stopped,
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = std::fs::read_to_string(&record).expect("record file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"], "register");
    assert_eq!(lines[0]["id"], "hook-test");
    assert_eq!(lines[0]["pid"], pid);
    // Our own cgroup is found from /proc/<pid>/cgroup on any host.
    assert!(
        lines[0]["cgroup"]["dirs"]
            .as_object()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["event"], "deregister");
}

#[test]
fn fails_open_unless_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("r.jsonl");
    let record = record.to_str().expect("utf8");
    let out = run_hook(&["--record", record, "register"], &[], "this is not json");
    assert!(
        out.status.success(),
        "a broken hook must not abort the container"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsing the container state JSON"));
    let out = run_hook(
        &["--record", record, "--strict", "register"],
        &[],
        "this is not json",
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run_hook(
        &["--record", record, "register"],
        &[("PREDICTIVE_HOOK_STRICT", "1")],
        "{",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!std::path::Path::new(record).exists());
}
