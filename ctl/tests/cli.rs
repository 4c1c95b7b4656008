//! The `predictivectl` binary's exit statuses and messages without a broker: help, a usage error, no broker at the
//! socket. Its commands against a live `predictived` are tested with the daemon, in broker/tests/ctl.rs.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_predictivectl"))
        .args(args)
        .output()
        .expect("run predictivectl")
}

fn failed(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "stderr should name {needle:?}: {err}");
    assert!(err.starts_with("predictivectl: "), "{err}");
}

#[test]
fn help_prints_usage_and_succeeds() {
    let o = run(&["--help"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Usage: predictivectl"), "{out}");
    for command in ["status", "models", "explain", "report", "export"] {
        assert!(out.contains(command), "help lacks {command}: {out}");
    }
}

#[test]
fn usage_errors_exit_2_naming_the_argument() {
    failed(&run(&["--frobnicate", "status"]), 2, "--frobnicate");
    failed(&run(&["frobnicate"]), 2, "frobnicate");
    failed(&run(&["explain"]), 2, "<CONTAINER>");
    failed(&run(&["--limit", "0", "explain", "c1"]), 2, "--limit");
}

#[test]
fn no_broker_exits_1_naming_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    let o = run(&["--socket", sock.to_str().expect("utf-8"), "status"]);
    failed(&o, 1, &format!("no broker at {}", sock.display()));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
}
