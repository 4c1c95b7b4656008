//! Drop-in parity with runc (issue 13) for the specs and Task API calls real clients produce: each test passes
//! under `PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2` (the reference) and under our shim. Where the two refuse
//! the same input with different words, the test checks the refusal and what both name. Root only; `SKIPPED:`
//! otherwise.
//!
//! Specs that `ctr run`'s flags cannot express are written whole and run with `ctr run --config FILE ID` (the
//! default spec of this containerd's `ctr oci spec`, edited), on a busybox rootfs directory made by the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use predictive_e2e::Containerd;
use predictive_e2e::cmd::{Output, run_cmd};
use predictive_e2e::settings::IMAGE;
use serde_json::{Value, json};

fn start(test: &str) -> Option<Containerd> {
    Containerd::start(test)
}

/// A busybox-static rootfs under the test's directory (what `ctr run --rootfs` users bring).
fn busybox_rootfs(c: &Containerd) -> PathBuf {
    let root = c.dir.join("bb-rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dirs");
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static is installed (scripts/deps.sh)");
    std::fs::copy(bb, root.join("bin/busybox")).expect("copying busybox");
    let list = run_cmd(
        {
            let mut c = Command::new(bb);
            c.arg("--list");
            c
        },
        Duration::from_secs(10),
    )
    .expect_ok("busybox --list");
    for applet in list.stdout.lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nwheel:x:10:\nnogroup:x:65534:\n",
    )
    .expect("group");
    root
}

/// This containerd's default spec (`ctr oci spec`) for container `id` on `rootfs`, running `args` with
/// `PATH=/bin`, in the cgroup the harness checks (`/<ns>/<id>`).
fn spec(c: &Containerd, rootfs: &Path, id: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(&c.ctr_bin);
    cmd.args(["oci", "spec"]);
    let out = run_cmd(cmd, Duration::from_secs(10)).expect_ok("ctr oci spec");
    let mut s: Value = serde_json::from_str(&out.stdout).expect("ctr oci spec prints JSON");
    s["root"] = json!({"path": rootfs});
    s["process"]["args"] = json!(args);
    s["process"]["env"] = json!(["PATH=/bin"]);
    s["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", c.ns));
    s
}

/// `ctr run --rm --config FILE ID`: the whole spec is the test's.
fn run_spec(c: &Containerd, id: &str, spec: &Value) -> Output {
    let file = c.dir.join(format!("{id}.json"));
    std::fs::write(&file, spec.to_string()).expect("writing the spec");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        c.runtime(),
        "--config",
        &file.to_string_lossy(),
        id,
    ]);
    let _ = std::fs::remove_file(&file);
    c.remove(id);
    out
}

/// Output of a run that must succeed, trimmed.
fn ok_stdout(out: Output, what: &str) -> String {
    out.expect_ok(what).stdout.trim().to_owned()
}

/// A refusal that names `needle` (in stdout or stderr).
fn refused(out: &Output, needle: &str, what: &str) {
    assert!(!out.ok(), "{what}: accepted: {out}");
    assert!(!out.timed_out, "{what}: hung: {out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(needle),
        "{what}: the error does not say `{needle}`: {out}"
    );
}

/// The issue's own example: `ctr run --rootfs DIR ID /bin/echo` (no image config, so no PATH in the spec) runs;
/// a bare name without PATH is refused as runc refuses it.
#[test]
fn absolute_command_needs_no_path() {
    let Some(c) = start("absolute_command_needs_no_path") else {
        return;
    };
    let rootfs = busybox_rootfs(&c);
    let root = rootfs.to_string_lossy().into_owned();
    let id = c.id("nopath");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        c.runtime(),
        "--rootfs",
        &root,
        &id,
        "/bin/echo",
        "hello",
    ]);
    c.remove(&id);
    assert_eq!(ok_stdout(out, "/bin/echo without PATH"), "hello");
    let id = c.id("nopath-bare");
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        c.runtime(),
        "--rootfs",
        &root,
        &id,
        "echo",
        "hello",
    ]);
    c.remove(&id);
    refused(
        &out,
        "executable file not found in $PATH",
        "a bare name without PATH",
    );
    // An executable whose only execute bit is the owner's (0700) runs, as under runc.
    std::fs::write(rootfs.join("bin/mine"), "#!/bin/sh\necho mine\n").expect("script");
    std::fs::set_permissions(
        rootfs.join("bin/mine"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let id = c.id("owner-x");
    let out = run_spec(&c, &id, &spec(&c, &rootfs, &id, &["/bin/mine"]));
    assert_eq!(ok_stdout(out, "a 0700 executable"), "mine");
    c.finish();
}

/// process.cwd: a missing one is created (in the rootfs), a relative or empty one is refused; an exec's missing
/// or relative cwd is refused naming it.
#[test]
fn working_directory_as_runc() {
    let Some(c) = start("working_directory_as_runc") else {
        return;
    };
    let id = c.id("cwd-made");
    let out = c.run(&id, &["--cwd", "/made/here"], &["pwd"]);
    assert_eq!(ok_stdout(out, "a missing cwd"), "/made/here");
    let rootfs = busybox_rootfs(&c);
    let id = c.id("cwd-rel");
    let mut s = spec(&c, &rootfs, &id, &["pwd"]);
    s["process"]["cwd"] = json!("tmp");
    refused(&run_spec(&c, &id, &s), "absolute path", "a relative cwd");
    let id = c.id("cwd-empty");
    let mut s = spec(&c, &rootfs, &id, &["pwd"]);
    s["process"]["cwd"] = json!("");
    refused(&run_spec(&c, &id, &s), "must not be empty", "an empty cwd");

    let id = c.id("cwd-exec");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    let out = c.ctr(&["t", "exec", "--exec-id", "e1", "--cwd", "/tmp", &id, "pwd"]);
    assert_eq!(ok_stdout(out, "exec in /tmp"), "/tmp");
    let out = c.ctr(&[
        "t",
        "exec",
        "--exec-id",
        "e2",
        "--cwd",
        "/nonexistent",
        &id,
        "pwd",
    ]);
    refused(
        &out,
        "chdir to cwd (\"/nonexistent\")",
        "an exec's missing cwd",
    );
    let out = c.ctr(&["t", "exec", "--exec-id", "e3", "--cwd", "tmp", &id, "pwd"]);
    refused(&out, "absolute path", "an exec's relative cwd");
    assert_eq!(c.status(&id).as_deref(), Some("RUNNING"));
    c.remove(&id);
    c.finish();
}

/// The environment in the spec's order (each variable where it first appears, with its last value), HOME added
/// last from /etc/passwd when missing.
#[test]
fn environment_in_the_specs_order() {
    let Some(c) = start("environment_in_the_specs_order") else {
        return;
    };
    let id = c.id("env");
    let out = c.run(&id, &["--env", "A=1", "--env", "B=2"], &["env"]);
    let env = ok_stdout(out, "env");
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1",
            "B=2",
            "HOME=/root"
        ],
        "{env}"
    );
    let rootfs = busybox_rootfs(&c);
    let id = c.id("env-dup");
    let mut s = spec(&c, &rootfs, &id, &["env"]);
    s["process"]["env"] = json!(["PATH=/bin", "Z=1", "A=2", "Z=3"]);
    s["process"]["user"] = json!({"uid": 65534, "gid": 65534});
    let env = ok_stdout(run_spec(&c, &id, &s), "duplicate variables");
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        ["PATH=/bin", "Z=3", "A=2", "HOME=/nonexistent"],
        "{env}"
    );
    c.finish();
}

/// `echo hello | ctr t exec ... cat`: ctr sends CloseIO as soon as its stdin ends, which can be before the
/// exec has started; cat must still see the end of its input.
#[test]
fn exec_stdin_ends_with_close_io() {
    let Some(c) = start("exec_stdin_ends_with_close_io") else {
        return;
    };
    let id = c.id("closeio");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    for i in 0..5 {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("printf 'hello\\nworld\\n' | \"$@\"")
            .arg("sh")
            .arg(&c.ctr_bin)
            .args(["-a", &c.sock.to_string_lossy(), "-n", &c.ns])
            .args(["t", "exec", "--exec-id", &format!("cat{i}"), &id, "cat"]);
        let out = run_cmd(cmd, Duration::from_secs(20));
        assert_eq!(
            ok_stdout(out, "cat in an exec"),
            "hello\nworld",
            "round {i}"
        );
    }
    // The init's stdin too (`ctr run` with input), once input that ends after the task exists, then (ours only)
    // input that ends at once: ctr sets its CloseIO callback only after Create returns, and runc's shim, which
    // opens the stdin fifo at Create, loses that race about every other time (the run waits forever); ours opens
    // it at Start.
    let mut inputs = vec![("(sleep 2; printf 'a\\nb\\nc\\n')", "late input")];
    if c.settings.is_predictive() {
        inputs.push(("printf 'a\\nb\\nc\\n'", "input ending during Create"));
    } else {
        println!(
            "{}: input ending during Create not checked: runc v2 loses ctr's race",
            c.runtime()
        );
    }
    for (input, what) in inputs {
        for round in 0..3 {
            let id2 = c.id("closeio-run");
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("{input} | \"$@\""))
                .arg("sh")
                .arg(&c.ctr_bin)
                .args(["-a", &c.sock.to_string_lossy(), "-n", &c.ns])
                .args([
                    "run",
                    "--rm",
                    "--runtime",
                    c.runtime(),
                    IMAGE,
                    &id2,
                    "wc",
                    "-l",
                ]);
            let out = run_cmd(cmd, Duration::from_secs(20));
            c.remove(&id2);
            assert_eq!(
                ok_stdout(out, &format!("wc -l in a run, {what}, round {round}")),
                "3"
            );
        }
    }
    c.remove(&id);
    c.finish();
}

/// A container the user paused: Exec fails at once (containerd's runc shim: "cannot exec in a paused state")
/// and it stays paused; SIGTERM stays pending; SIGKILL thaws it and it exits 137.
#[test]
fn a_user_paused_container_stays_paused_for_exec() {
    let Some(c) = start("a_user_paused_container_stays_paused_for_exec") else {
        return;
    };
    let id = c.id("paused");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    c.ctr(&["t", "pause", &id]).expect_ok("pause");
    assert_eq!(c.status(&id).as_deref(), Some("PAUSED"));
    let started = Instant::now();
    let out = c.ctr(&["t", "exec", "--exec-id", "e1", &id, "true"]);
    refused(
        &out,
        "cannot exec in a paused state",
        "exec into a paused container",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert_eq!(c.status(&id).as_deref(), Some("PAUSED"));
    c.ctr(&["t", "kill", "-s", "SIGTERM", &id])
        .expect_ok("SIGTERM");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.status(&id).as_deref(),
        Some("PAUSED"),
        "SIGTERM must not thaw a user's pause"
    );
    c.ctr(&["t", "kill", "-s", "SIGKILL", &id])
        .expect_ok("SIGKILL");
    c.wait_status(&id, "STOPPED", Duration::from_secs(10));
    c.remove(&id);
    c.finish();
}

/// Kill of a task that has exited is NotFound ("already finished"); `kill --all` of it succeeds.
#[test]
fn kill_of_a_stopped_task() {
    let Some(c) = start("kill_of_a_stopped_task") else {
        return;
    };
    let id = c.id("stopped");
    c.run_detached_try(&id, &[], &["sh", "-c", "exit 3"])
        .expect_ok("run");
    c.wait_status(&id, "STOPPED", Duration::from_secs(10));
    let out = c.ctr(&["t", "kill", "-s", "SIGTERM", &id]);
    refused(&out, "already finished", "kill of a stopped task");
    refused(&out, "not found", "kill of a stopped task");
    c.ctr(&["t", "kill", "-a", "-s", "SIGKILL", &id])
        .expect_ok("kill --all of a stopped task");
    let out = c.ctr(&["t", "rm", &id]);
    assert!(out.ok(), "{out}");
    c.remove(&id);
    c.finish();
}

/// Spec fields runc honours, each checked from inside the container: rlimits, oomScoreAdj, noNewPrivileges, user
/// with additional gids and umask, a namespaced sysctl, masked and read-only paths, a read-only rootfs, the host
/// network, and hooks (prestart, poststart, poststop) on the host.
#[test]
fn spec_fields_as_runc() {
    let Some(c) = start("spec_fields_as_runc") else {
        return;
    };
    let rootfs = busybox_rootfs(&c);
    let check = |name: &str, edit: &dyn Fn(&mut Value), cmd: &str, want: &str| {
        let id = c.id(name);
        let mut s = spec(&c, &rootfs, &id, &["sh", "-c", cmd]);
        edit(&mut s);
        let got = ok_stdout(run_spec(&c, &id, &s), name);
        assert_eq!(got, want, "{name}");
    };
    check(
        "rlimits",
        &|s| {
            s["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 512},
                {"type": "RLIMIT_NPROC", "hard": 100, "soft": 100}
            ])
        },
        "echo $(ulimit -n) $(ulimit -Hn) $(ulimit -u)",
        "512 2048 100",
    );
    check(
        "oom-score",
        &|s| s["process"]["oomScoreAdj"] = json!(500),
        "cat /proc/self/oom_score_adj",
        "500",
    );
    check(
        "nnp",
        &|s| s["process"]["noNewPrivileges"] = json!(true),
        "grep NoNewPrivs /proc/self/status | tr -d '\\t '",
        "NoNewPrivs:1",
    );
    check(
        "user",
        &|s| {
            s["process"]["user"] =
                json!({"uid": 1, "gid": 1, "additionalGids": [10, 65534], "umask": 63})
        },
        "echo $(id -u) $(id -g) $(id -G) $(umask)",
        "1 1 1 10 65534 0077",
    );
    check(
        "sysctl",
        &|s| s["linux"]["sysctl"] = json!({"net.ipv4.ip_unprivileged_port_start": "80"}),
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
        "80",
    );
    check(
        "masked",
        &|_| {},
        "cat /proc/kcore | wc -c; ls -A /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo ro",
        "0\n0\nro",
    );
    check(
        "readonly-root",
        &|s| s["root"]["readonly"] = json!(true),
        "touch /x 2>/dev/null || echo ro",
        "ro",
    );
    let host_net = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    check(
        "host-net",
        &|s| {
            let ns = s["linux"]["namespaces"].as_array_mut().expect("namespaces");
            ns.retain(|n| n["type"] != "network");
        },
        "readlink /proc/self/ns/net",
        &host_net.to_string_lossy(),
    );
    let hooks = c.dir.join("hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", hooks.display())]});
    check(
        "hooks",
        &|s| {
            s["hooks"] = json!({
                "prestart": [hook("prestart")],
                "poststart": [hook("poststart")],
                "poststop": [hook("poststop")]
            })
        },
        "echo ran",
        "ran",
    );
    for h in ["prestart", "poststart", "poststop"] {
        let state = std::fs::read_to_string(hooks.join(h))
            .unwrap_or_else(|e| panic!("the {h} hook did not run: {e}"));
        let v: Value = serde_json::from_str(&state)
            .unwrap_or_else(|e| panic!("the {h} hook got no state JSON ({e}): {state}"));
        assert!(
            v["id"].as_str().is_some_and(|i| i.contains("hooks")),
            "{h}: {v}"
        );
    }
    c.finish();
}
