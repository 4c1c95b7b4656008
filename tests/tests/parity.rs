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
use predictive_e2e::cmd::{Output, run_cmd, wait_until};
use predictive_e2e::kubelet;
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

/// Writes `spec` for container `id` into the test's directory; the file's path.
fn spec_file(c: &Containerd, id: &str, spec: &Value) -> PathBuf {
    let file = c.dir.join(format!("{id}.json"));
    std::fs::write(&file, spec.to_string()).expect("writing the spec");
    file
}

/// `ctr run --rm --config FILE ID`: the whole spec is the test's.
fn run_spec(c: &Containerd, id: &str, spec: &Value) -> Output {
    let file = spec_file(c, id, spec);
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

/// `ctr run -d --null-io --config FILE ID`: the test's whole spec, detached.
fn run_spec_detached(c: &Containerd, id: &str, spec: &Value) -> Output {
    let file = spec_file(c, id, spec);
    c.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        c.runtime(),
        "--config",
        &file.to_string_lossy(),
        id,
    ])
}

/// Output of a run that must succeed, trimmed.
fn ok_stdout(out: Output, what: &str) -> String {
    out.expect_ok(what).stdout.trim().to_owned()
}

/// SIGKILL to container `id`'s init (to all its processes with `all`), then its removal once it has stopped.
fn kill_and_remove(c: &Containerd, id: &str, all: bool) {
    let kill: &[&str] = if all {
        &["t", "kill", "-a", "-s", "SIGKILL", id]
    } else {
        &["t", "kill", "-s", "SIGKILL", id]
    };
    c.ctr(kill).expect_ok("SIGKILL");
    c.wait_status(id, "STOPPED", Duration::from_secs(10));
    c.remove(id);
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
    kill_and_remove(&c, &id, false);
    c.finish();
}

/// A SIGKILL to one exec of a paused container leaves the user's pause in place: the init stays frozen (its counter
/// does not move, the task stays PAUSED) and the exec ends by the resume at the latest. Before 2026-12-06 ours
/// thawed the whole container for it and called it RUNNING; runc's shim signals only the exec.
#[test]
fn a_kill_of_an_exec_leaves_the_users_pause_in_place() {
    let Some(c) = start("a_kill_of_an_exec_leaves_the_users_pause_in_place") else {
        return;
    };
    let id = c.id("pause-exec");
    let count = c.run_counter(&id);
    c.ctr(&["t", "exec", "-d", "--exec-id", "e1", &id, "sleep", "1002"])
        .expect_ok("exec -d");
    let exec_listed = || {
        c.ctr(&["t", "ps", &id])
            .stdout
            .lines()
            .any(|l| l.contains("e1"))
    };
    wait_until(Duration::from_secs(10), || exec_listed().then_some(()))
        .expect("ctr t ps lists the exec");
    c.ctr(&["t", "pause", &id]).expect_ok("pause");
    c.wait_status(&id, "PAUSED", Duration::from_secs(10));
    c.ctr(&["t", "kill", "-s", "SIGKILL", "--exec-id", "e1", &id])
        .expect_ok("SIGKILL to the exec");
    let paused_at = count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        count(),
        paused_at,
        "the paused init ran after an exec's kill"
    );
    assert_eq!(
        c.status(&id).as_deref(),
        Some("PAUSED"),
        "an exec's kill undid the user's pause"
    );
    c.ctr(&["t", "resume", &id]).expect_ok("resume");
    c.wait_status(&id, "RUNNING", Duration::from_secs(10));
    wait_until(Duration::from_secs(10), || (!exec_listed()).then_some(()))
        .expect("the killed exec is gone after the resume");
    let before = count().unwrap_or(0);
    wait_until(Duration::from_secs(10), || {
        count().filter(|n| *n > before + 2)
    })
    .expect("the counter runs again after the resume");
    kill_and_remove(&c, &id, true);
    c.finish();
}

/// An exec into a container whose init has exited is refused at Exec, as runc's shim refuses it, and containerd
/// never hears of it (no `/tasks/exec-added` for a process that cannot start).
#[test]
fn an_exec_into_a_stopped_container_is_refused_at_exec() {
    let Some(c) = start("an_exec_into_a_stopped_container_is_refused_at_exec") else {
        return;
    };
    let events = c.events();
    let id = c.id("stopped-exec");
    c.run_detached_try(&id, &[], &["sh", "-c", "exit 3"])
        .expect_ok("run");
    c.wait_status(&id, "STOPPED", Duration::from_secs(10));
    let out = c.ctr(&["t", "exec", "--exec-id", "late", &id, "true"]);
    refused(
        &out,
        "cannot exec in a stopped state",
        "exec into a stopped container",
    );
    c.ctr(&["t", "rm", &id]).expect_ok("ctr t rm");
    let deleted = wait_until(Duration::from_secs(10), || {
        events
            .stdout()
            .lines()
            .any(|l| l.contains("/tasks/delete") && l.contains(id.as_str()))
            .then_some(())
    });
    let seen = events.kill().stdout;
    assert!(deleted.is_some(), "no /tasks/delete for {id}:\n{seen}");
    let added: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains("/tasks/exec-added") && l.contains(id.as_str()))
        .collect();
    assert!(added.is_empty(), "a refused exec was announced: {added:?}");
    c.remove(&id);
    c.finish();
}

/// A container's locked-memory limit (`RLIMIT_MEMLOCK`, which its spec does not set) is the one containerd runs
/// with, in its init and in an exec, as under runc. On cgroup v2 libcgroups raised the init's to 128 MiB (soft and
/// hard) to load the device program, and the init kept it: until 2026-12-06 a container on a v2 node got 128 MiB
/// where runc's got containerd's (8 MiB under systemd's default, or unlimited where the node raised it).
#[test]
fn a_containers_locked_memory_limit_is_containerds() {
    let Some(c) = start("a_containers_locked_memory_limit_is_containerds") else {
        return;
    };
    let line = |limits: &str| {
        limits
            .lines()
            .find(|l| l.starts_with("Max locked memory"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let containerd = line(
        &std::fs::read_to_string(format!("/proc/{}/limits", c.pid)).expect("containerd's limits"),
    );
    assert!(
        !containerd.is_empty(),
        "no locked-memory line for containerd"
    );
    let id = c.id("memlock");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    let init = line(
        &std::fs::read_to_string(format!("/proc/{}/limits", c.task_pid(&id)))
            .expect("the init's limits"),
    );
    let exec = line(
        &c.ctr(&[
            "t",
            "exec",
            "--exec-id",
            "limits",
            &id,
            "cat",
            "/proc/self/limits",
        ])
        .expect_ok("exec cat /proc/self/limits")
        .stdout,
    );
    assert_eq!(init, containerd, "the init's locked-memory limit");
    assert_eq!(exec, containerd, "an exec's locked-memory limit");
    println!("containerd, the init and an exec: {containerd}");
    kill_and_remove(&c, &id, false);
    c.finish();
}

/// A device given to a container in a directory below `/dev` (`--device /dev/net/tun`, as Docker's `--device` and
/// Kubernetes device plugins give one; every host device of a privileged container) sits in a directory the
/// container's users cannot write, as under runc (0755): before 2026-12-06 libcontainer's made it 0777, and a user
/// in the container could delete `/dev/net/tun` or put a file of its own there.
#[test]
fn a_devices_directory_is_not_world_writable() {
    let Some(c) = start("a_devices_directory_is_not_world_writable") else {
        return;
    };
    if !Path::new("/dev/net/tun").exists() {
        testkit::skip(
            "a_devices_directory_is_not_world_writable",
            "no /dev/net/tun on this host",
        );
        return;
    }
    let id = c.id("device-dir");
    c.run_detached(&id, &["--device", "/dev/net/tun"], &["sleep", "1000"]);
    let out = c
        .ctr(&[
            "t",
            "exec",
            "--exec-id",
            "st",
            &id,
            "stat",
            "-c",
            "%a %U %F",
            "/dev/net",
            "/dev/net/tun",
        ])
        .expect_ok("stat /dev/net");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("755 root directory"), "{out}");
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.ends_with("character special file")),
        "/dev/net/tun is not the device: {out}"
    );
    let rm = c.ctr(&[
        "t",
        "exec",
        "--exec-id",
        "rm",
        "--user",
        "1000",
        &id,
        "rm",
        "-f",
        "/dev/net/tun",
    ]);
    assert!(!rm.ok(), "a user removed /dev/net/tun: {rm}");
    c.ctr(&[
        "t",
        "exec",
        "--exec-id",
        "again",
        &id,
        "test",
        "-c",
        "/dev/net/tun",
    ])
    .expect_ok("/dev/net/tun is still the device");
    kill_and_remove(&c, &id, false);
    c.finish();
}

/// A spec with no device rules (a hand-written one: containerd's, Docker's and the CRI plugin's always list a
/// "deny everything" first) gets runc's: runc builds a container's rules from "deny everything", then the spec's,
/// then its defaults (`/dev/null`, `/dev/zero`, the pts and a few more), so a node made with `mknod` for FUSE
/// (`c 10:229`, which needs no capability to open) or for the host's disk cannot be opened (made in the
/// container's `/dev`: the test's rootfs may sit on a `nodev` mount, which would refuse it for another reason). On cgroup v1 a new
/// cgroup starts with its parent's rules (usually "allow everything"); before 2026-12-06 ours added its defaults to
/// those, and such a container opened both (the disk where the host lets root read it: this repository's VM does
/// not, the v2 guest does).
#[test]
fn a_spec_without_device_rules_denies_other_devices() {
    let Some(c) = start("a_spec_without_device_rules_denies_other_devices") else {
        return;
    };
    let (major, minor) = predictive_e2e::root_disk();
    let rootfs = busybox_rootfs(&c);
    let id = c.id("no-dev-rules");
    let script = format!(
        "for n in 'c 10 229' 'b {major} {minor}'; do \
           rm -f /dev/node; mknod /dev/node $n && echo MADE; \
           if (exec 3< /dev/node); then echo \"OPENED $n\"; else echo \"DENIED $n\"; fi; \
         done; head -c 4 /dev/zero | wc -c"
    );
    let mut s = spec(&c, &rootfs, &id, &["sh", "-c", &script]);
    let resources = s["linux"]["resources"]
        .as_object_mut()
        .expect("ctr oci spec has linux.resources");
    assert!(
        resources.remove("devices").is_some(),
        "ctr oci spec lists no device rules: the test would prove nothing"
    );
    let out = run_spec(&c, &id, &s);
    println!("{out}");
    assert_eq!(
        out.stdout.matches("MADE").count(),
        2,
        "mknod must succeed, or the test proves nothing: {out}"
    );
    assert!(
        !out.stdout.contains("OPENED"),
        "a container whose spec lists no device rules opened a device runc's rules deny: {out}"
    );
    assert!(
        out.stderr.matches("Operation not permitted").count() >= 2,
        "the opens must fail with EPERM: {out}"
    );
    assert_eq!(
        out.stdout.lines().last().map(str::trim),
        Some("4"),
        "runc's default devices (/dev/zero) stay readable: {out}"
    );
    c.finish();
}

/// An exec into a container with a seccomp profile (`ctr run --seccomp`: containerd's default, Docker's and a
/// RuntimeDefault pod's) runs under the filter with the capabilities and bounding set of the container's init, and
/// without no_new_privs, as under runc: its spec does not ask for it, so setuid programs and file capabilities
/// (`sudo`, `su`, `ping`) work in `docker exec` and `kubectl exec` as in the container. Before 2026-12-06 the exec
/// got no_new_privs to install the filter after libcontainer had dropped its capabilities. A user's exec gets
/// that user's home directory, `/` when the image's `/etc/passwd` does not name it, as runc's.
#[test]
fn an_exec_under_a_seccomp_profile_keeps_the_inits_privileges() {
    let Some(c) = start("an_exec_under_a_seccomp_profile_keeps_the_inits_privileges") else {
        return;
    };
    // containerd's default profile (`ctr run --seccomp`'s), in a spec that leaves no_new_privs off (ctr's turns it
    // on, Docker's and the CRI plugin's do not).
    let probe = c.id("seccomp-profile");
    c.ctr(&["c", "create", "--seccomp", IMAGE, &probe, "true"])
        .expect_ok("ctr c create --seccomp");
    let info: Value =
        serde_json::from_str(&c.ctr(&["c", "info", &probe]).expect_ok("ctr c info").stdout)
            .expect("c info prints JSON");
    c.ctr(&["c", "rm", &probe]).expect_ok("ctr c rm");
    let profile = info["Spec"]["linux"]["seccomp"].clone();
    assert!(profile.is_object(), "no seccomp profile in {info}");
    let id = c.id("seccomp-exec");
    let mut s = spec(&c, &busybox_rootfs(&c), &id, &["sleep", "1000"]);
    s["linux"]["seccomp"] = profile;
    s["process"]["noNewPrivileges"] = json!(false);
    run_spec_detached(&c, &id, &s).expect_ok("ctr run -d --config");
    let fields = |status: &str| -> Vec<String> {
        status
            .lines()
            .filter(|l| {
                ["Seccomp:", "NoNewPrivs:", "CapEff:", "CapPrm:", "CapBnd:"]
                    .iter()
                    .any(|f| l.starts_with(f))
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let init = fields(
        &std::fs::read_to_string(format!("/proc/{}/status", c.task_pid(&id)))
            .expect("the init's status"),
    );
    assert!(
        init.contains(&"Seccomp: 2".to_owned()) && init.contains(&"NoNewPrivs: 0".to_owned()),
        "the init is not filtered without no_new_privs, the test proves nothing: {init:?}"
    );
    let exec = |exec_id: &str, user: Option<&str>, cmd: &[&str]| {
        let mut args = vec!["t", "exec", "--exec-id", exec_id];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.push(&id);
        args.extend(cmd);
        c.ctr(&args)
    };
    let root = exec("status", None, &["cat", "/proc/self/status"]).expect_ok("exec cat status");
    assert_eq!(
        fields(&root.stdout),
        init,
        "an exec's filter and privileges"
    );
    // The filter is in: containerd's profile refuses a user namespace without CAP_SYS_ADMIN, which the
    // container's capabilities do not have.
    let unshare = exec("unshare", None, &["unshare", "-U", "true"]);
    assert!(
        !unshare.ok() && unshare.stderr.contains("Operation not permitted"),
        "unshare in an exec under the profile: {unshare}"
    );
    let user = exec(
        "user",
        Some("1000"),
        &[
            "sh",
            "-c",
            "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; echo HOME=$HOME",
        ],
    )
    .expect_ok("a user's exec");
    assert_eq!(
        user.stdout.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "0", "Seccomp:", "2", "HOME=/"],
        "a user's exec: {user}"
    );
    kill_and_remove(&c, &id, false);
    c.finish();
}

/// A container whose spec sets no `oomScoreAdj` (ctr's, nerdctl's) has containerd's score plus one, its shim's, in
/// every start, as under runc. Before 2026-12-06 the `start` action raised our server's score only once the server
/// served, and a zygote forked before that kept containerd's: 1 container in 10 had 0 here.
#[test]
fn a_containers_oom_score_is_one_above_containerds() {
    let Some(c) = start("a_containers_oom_score_is_one_above_containerds") else {
        return;
    };
    let containerd: i32 = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", c.pid))
        .expect("containerd's oom_score_adj")
        .trim()
        .parse()
        .expect("a number");
    let want = (containerd + 1).min(1000).to_string();
    let seen: Vec<String> = (0..12)
        .map(|i| {
            let id = c.id(&format!("oom-score-{i}"));
            c.run(&id, &[], &["cat", "/proc/self/oom_score_adj"])
                .expect_ok("cat /proc/self/oom_score_adj")
                .stdout
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        seen.iter().all(|s| *s == want),
        "containerd's oom_score_adj is {containerd}; the containers had {seen:?}"
    );
    c.finish();
}

/// `ctr task ps` names an exec's process by its exec id (Task.Pids' `info`), the init's and what it started by
/// nothing, and the exec's process is in every cgroup the init is in, as with runc's shim.
#[test]
fn task_ps_names_an_execs_process() {
    let Some(c) = start("task_ps_names_an_execs_process") else {
        return;
    };
    let id = c.id("ps");
    c.run_detached(&id, &[], &["sh", "-c", "sleep 1000 & exec sleep 1001"]);
    c.ctr(&[
        "t",
        "exec",
        "-d",
        "--exec-id",
        "watcher",
        &id,
        "sleep",
        "1002",
    ])
    .expect_ok("exec -d");
    let init = c.task_pid(&id);
    let ps = wait_until(Duration::from_secs(10), || {
        let out = c.ctr(&["t", "ps", &id]);
        let rows: Vec<(i32, String)> = out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (pid, info) = l.trim().split_once(char::is_whitespace)?;
                Some((pid.parse().ok()?, info.trim().to_owned()))
            })
            .collect();
        (rows.len() == 3).then_some((rows, out.stdout))
    });
    let (rows, text) = ps.unwrap_or_else(|| {
        panic!(
            "ctr t ps never listed the init, its child and the exec: {}",
            c.ctr(&["t", "ps", &id])
        )
    });
    let named: Vec<&(i32, String)> = rows.iter().filter(|(_, i)| i.contains("watcher")).collect();
    assert_eq!(named.len(), 1, "one process named by its exec id:\n{text}");
    assert_ne!(named[0].0, init, "the init is not the exec:\n{text}");
    // As runc's exec: the exec's process is in every cgroup its init is in, `name=systemd` and a hybrid host's
    // cgroup2 tree included (there the container's PSI files count it; before 2026-12-04 ours stayed in the shim's).
    let exec = named[0].0;
    let (theirs, its_init) = (kubelet::cgroups_of(exec), kubelet::cgroups_of(init));
    assert!(!its_init.is_empty(), "no cgroups for the init {init}");
    assert_eq!(
        theirs, its_init,
        "the exec {exec} and the init {init}, per hierarchy"
    );
    for (pid, info) in rows.iter().filter(|(_, i)| !i.contains("watcher")) {
        assert_eq!(info, "-", "pid {pid} is no exec's:\n{text}");
    }
    kill_and_remove(&c, &id, true);
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
                "createRuntime": [hook("createRuntime")],
                "poststart": [hook("poststart")],
                "poststop": [hook("poststop")]
            })
        },
        "echo ran",
        "ran",
    );
    // createRuntime is where nerdctl's network hook runs: it finds the container's network namespace by the
    // state's pid.
    for h in ["prestart", "createRuntime", "poststart", "poststop"] {
        let state = std::fs::read_to_string(hooks.join(h))
            .unwrap_or_else(|e| panic!("the {h} hook did not run: {e}"));
        let v: Value = serde_json::from_str(&state)
            .unwrap_or_else(|e| panic!("the {h} hook got no state JSON ({e}): {state}"));
        println!("{}: the {h} hook's state: {v}", c.runtime());
        assert!(
            v["id"].as_str().is_some_and(|i| i.contains("hooks")),
            "{h}: {v}"
        );
        if h != "poststop" {
            assert!(
                v["pid"].as_i64().is_some_and(|p| p > 0),
                "{h}: no pid in {v}"
            );
        }
    }
    c.finish();
}

/// The logging binary the output tests use: writes its arguments (`DIR.args`), its environment (`DIR/env`) and
/// what it reads on descriptors 3 (stdout) and 4 (stderr) into the directory `--dir` names, says it is ready
/// by closing descriptor 5, and writes `done` once both streams have ended.
const LOGGER: &str = r#"#!/bin/sh
dir=; prev=
for a in "$@"; do [ "$prev" = --dir ] && dir="$a"; prev="$a"; done
mkdir -p "$dir"
: > "$dir.args"
while [ $# -ge 2 ]; do printf '%s=%s\n' "$1" "$2" >> "$dir.args"; shift 2; done
tr '\0' '\n' < /proc/$$/environ | sort > "$dir/env"
cat <&3 5>&- > "$dir/stdout" &
cat <&4 5>&- > "$dir/stderr" &
exec 5>&-
wait
echo done > "$dir/done"
"#;

/// `%`-escapes what a URI's path or query value may not hold as is.
fn uri_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The logger's file `name` in `dir` once it holds `want` (at most 10 s), else what it held.
fn logged(dir: &Path, name: &str, want: &str) -> String {
    let read = || std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    wait_until(Duration::from_secs(10), || (read() == want).then_some(()))
        .map_or_else(read, |_| want.into())
}

/// The logger writing into `dir` got both streams of `sh -c 'echo to-stdout; echo to-stderr >&2'` and only
/// `CONTAINER_ID=id` and `CONTAINER_NAMESPACE=ns` in its environment.
fn check_logger(dir: &Path, id: &str, ns: &str) {
    assert_eq!(logged(dir, "stdout", "to-stdout\n"), "to-stdout\n");
    assert_eq!(logged(dir, "stderr", "to-stderr\n"), "to-stderr\n");
    let env = std::fs::read_to_string(dir.join("env")).expect("the logger's env");
    assert_eq!(
        env,
        format!("CONTAINER_ID={id}\nCONTAINER_NAMESPACE={ns}\n"),
        "the logger's environment"
    );
}

/// Waits (at most 15 s) until no process runs `program`; panics naming `when` otherwise.
fn gone(program: &Path, when: &str) {
    assert!(
        wait_until(Duration::from_secs(15), || running(program)
            .is_empty()
            .then_some(()))
        .is_some(),
        "the logger still runs {when}: {:?}",
        running(program)
    );
}

/// Pids of processes running `program` (its path in their command line).
fn running(program: &Path) -> Vec<i32> {
    let needle = program.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// `ctr run --log-uri` and `ctr t exec --log-uri`, what nerdctl's detached containers use: stdout and stderr go to
/// a logging binary (`binary://PATH?QUERY`: the query as its arguments, only `CONTAINER_ID` and
/// `CONTAINER_NAMESPACE` in its environment, the streams on descriptors 3 and 4, ready when it closes 5) or are
/// appended to a file (`file://PATH`, made with its directory); the logger is gone once the run is; a logger that
/// is not there, or a scheme neither knows, is refused naming it.
#[test]
fn output_to_a_logging_binary_or_a_file() {
    let Some(c) = start("output_to_a_logging_binary_or_a_file") else {
        return;
    };
    let logger = c.dir.join("log ger.sh");
    std::fs::write(&logger, LOGGER).expect("writing the logger");
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the logger");
    let binary = |dir: &Path| {
        format!(
            "binary://{}?--dir={}&--tag=a+b%26c",
            uri_escape(&logger.to_string_lossy()),
            uri_escape(&dir.to_string_lossy())
        )
    };
    let two_streams = ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"];

    // The container's own output to a logging binary.
    let dir = c.dir.join("run out");
    let id = c.id("binlog");
    let out = c.run(&id, &["--log-uri", &binary(&dir)], &two_streams);
    assert_eq!(out.code, 3, "the run's exit code: {out}");
    assert!(
        !out.stdout.contains("to-stdout"),
        "the output went to ctr as well: {out}"
    );
    check_logger(&dir, &id, &c.ns);
    // runc's shim passes the query in Go's map order (none), ours in the URI's.
    let mut args: Vec<String> = std::fs::read_to_string(dir.with_extension("args"))
        .expect("the logger's arguments")
        .lines()
        .map(str::to_owned)
        .collect();
    if !c.settings.is_predictive() {
        args.sort();
    }
    assert_eq!(
        args,
        [format!("--dir={}", dir.display()), "--tag=a b&c".to_owned()]
    );
    gone(&logger, "after the run ended");
    if c.settings.is_predictive() {
        // Ours lets it drain its input and end by itself; runc's sends SIGTERM as the streams end.
        assert_eq!(logged(&dir, "done", "done\n"), "done\n");
    }

    // An exec's output to a logging binary of its own, in a detached container.
    let id = c.id("execlog");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    let edir = c.dir.join("exec-out");
    let out = c.ctr(&[
        "t",
        "exec",
        "--exec-id",
        "e1",
        "--log-uri",
        &binary(&edir),
        &id,
        two_streams[0],
        two_streams[1],
        two_streams[2],
    ]);
    assert_eq!(out.code, 3, "the exec's exit code: {out}");
    // Named by the exec's id, as runc's shim names it.
    check_logger(&edir, "e1", &c.ns);
    c.remove(&id);
    gone(&logger, "after its container was removed");

    // A file, made with its directory, appended to by each run.
    let file = c.dir.join("logs/new dir/out.log");
    let uri = format!("file://{}", uri_escape(&file.to_string_lossy()));
    for round in 0..2 {
        let id = c.id("filelog");
        let out = c.run(&id, &["--log-uri", &uri], &two_streams);
        assert_eq!(out.code, 3, "round {round}: {out}");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        let want: Vec<&str> = ["to-stderr", "to-stdout"]
            .iter()
            .flat_map(|l| vec![*l; round + 1])
            .collect();
        assert_eq!(lines, want, "round {round}: the file holds {text:?}");
    }

    // Refusals that name what was wrong.
    let missing = c.dir.join("no-such-logger");
    let out = c.run(
        &c.id("nologger"),
        &["--log-uri", &format!("binary://{}", missing.display())],
        &["true"],
    );
    refused(
        &out,
        &missing.to_string_lossy(),
        "a logger that is not there",
    );
    let out = c.run(
        &c.id("badscheme"),
        &["--log-uri", "syslog://host/x"],
        &["true"],
    );
    refused(&out, "syslog", "an unknown scheme");
    c.finish();
}

/// A container in another's pid namespace (a pod with `shareProcessNamespace`, `kubectl debug --target`, `ctr run
/// --with-ns pid:...`): when its init exits, what it started is killed at once, as runc's shim does; in a private
/// pid namespace the kernel does that itself. Checked while the exited task is not yet deleted.
#[test]
fn a_shared_pid_namespace_containers_processes_end_with_its_init() {
    let Some(c) = start("a_shared_pid_namespace_containers_processes_end_with_its_init") else {
        return;
    };
    let host = c.id("pidhost");
    c.run_detached(&host, &[], &["sleep", "1000"]);
    let ns = format!("pid:/proc/{}/ns/pid", c.task_pid(&host));
    let guest = c.id("pidguest");
    // The init starts a child that would outlive it, then exits once the child is surely running.
    c.run_detached(
        &guest,
        &["--with-ns", &ns],
        &["sh", "-c", "sleep 1000 & sleep 1; exit 0"],
    );
    c.wait_status(&guest, "STOPPED", Duration::from_secs(20));
    let procs = c.cgroup_dir("memory", &guest).join("cgroup.procs");
    let left = || std::fs::read_to_string(&procs).unwrap_or_default();
    let seen = Instant::now();
    let ended = wait_until(Duration::from_secs(5), || {
        left().trim().is_empty().then_some(())
    });
    println!(
        "{}: the child was gone {:?} after the exit was seen",
        c.runtime(),
        seen.elapsed()
    );
    assert!(
        ended.is_some(),
        "{}: the exited init's child still runs in {}: {:?}",
        c.runtime(),
        procs.display(),
        left()
    );
    // The host container, whose namespace it was, is untouched.
    assert_eq!(c.status(&host).as_deref(), Some("RUNNING"));
    c.remove(&guest);
    c.remove(&host);
    c.finish();
}

/// A container's exit is the last one announced: the exits of its execs come before it, also in a shared pid
/// namespace, where its end does not end them (the shim kills them). Docker follows `docker exec` by these events
/// (containerd#9719: an exec's exit after its container's hung `docker exec`); a Wait on the init returns only then.
#[test]
fn an_exec_exits_before_its_containers_exit_is_announced() {
    let Some(c) = start("an_exec_exits_before_its_containers_exit_is_announced") else {
        return;
    };
    let events = c.events();
    let host = c.id("pidhost");
    c.run_detached(&host, &[], &["sleep", "1000"]);
    let ns = format!("pid:/proc/{}/ns/pid", c.task_pid(&host));
    let guest = c.id("pidguest");
    c.run_detached(&guest, &["--with-ns", &ns], &["sleep", "1001"]);
    for exec in ["held-1", "held-2", "held-3"] {
        c.ctr(&[
            "t",
            "exec",
            "-d",
            "--exec-id",
            exec,
            &guest,
            "sleep",
            "4321",
        ])
        .expect_ok("exec -d");
    }
    wait_until(Duration::from_secs(10), || {
        let sleeps =
            predictive_e2e::clean::processes_matching(|cmd, _| cmd.starts_with("sleep 4321"));
        (sleeps.len() == 3).then_some(())
    })
    .expect("the execs' sleeps run");
    c.ctr(&["t", "kill", "-s", "SIGKILL", &guest])
        .expect_ok("kill the init");
    c.wait_status(&guest, "STOPPED", Duration::from_secs(20));
    let exits = wait_until(Duration::from_secs(10), || {
        let out = events.stdout();
        let exits: Vec<String> = out
            .lines()
            .filter(|l| {
                l.contains("/tasks/exit") && l.contains(&format!("\"container_id\":\"{guest}\""))
            })
            .map(|l| {
                if l.contains("\"id\":\"held-") {
                    "exec".to_owned()
                } else {
                    "init".to_owned()
                }
            })
            .collect();
        (exits.len() == 4).then_some(exits)
    });
    let ev = events.kill();
    let want = Some(["exec", "exec", "exec", "init"].map(str::to_owned).to_vec());
    // runc v2's shim has this order since containerd 1.6.31 / 1.7.14 (containerd#9828); Debian's 1.6.20 has not:
    // printed for it, not asserted.
    if c.settings.is_predictive() {
        assert_eq!(exits, want, "the order of the exits:\n{}", ev.stdout);
    } else if exits != want {
        println!("{}: the exits came as {exits:?}", c.runtime());
    }
    c.remove(&guest);
    c.remove(&host);
    c.finish();
}

/// Docker's `--oom-kill-disable` (cgroup v1: `linux.resources.memory.disableOOMKiller`) stands as runc leaves
/// it: at the start, after an Update of the memory limit (`docker update --memory`, which does not repeat the
/// flag), and after such an Update while no broker answers. cgroup v2 has no OOM killer switch.
#[test]
fn the_users_disabled_oom_killer_stays_disabled() {
    let Some(c) = start("the_users_disabled_oom_killer_stays_disabled") else {
        return;
    };
    let rootfs = busybox_rootfs(&c);
    let id = c.id("oomoff");
    let mut s = spec(&c, &rootfs, &id, &["sleep", "1000"]);
    s["linux"]["resources"]["memory"] = json!({"limit": 64u64 << 20, "disableOOMKiller": true});
    run_spec_detached(&c, &id, &s).expect_ok("starting a container with the OOM killer disabled");
    c.wait_status(&id, "RUNNING", Duration::from_secs(20));
    if Containerd::cgroup_v2_host() {
        println!(
            "{}: cgroup v2 has no OOM killer switch; nothing to check",
            c.runtime()
        );
        c.remove(&id);
        c.finish();
        return;
    }
    let disabled = || {
        c.cg_file(&id, ("memory", "memory.oom_control"), "")
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill_disable ").map(str::to_owned))
            })
            .unwrap_or_default()
    };
    let sock = predictive_e2e::clean::shim_socket(&c.leak_scope(), &id);
    // The harness's Task.Update speaks task API v3, which runc's shim serves only on containerd 2.x.
    let update = |limit: u64| match predictive_e2e::ttrpc::update_task(
        &c.bundle(&id),
        Some(&sock),
        &id,
        &json!({"memory": {"limit": limit}}),
    ) {
        Ok(()) => true,
        Err(e) if !c.settings.is_predictive() && e.contains("UNIMPLEMENTED") => false,
        Err(e) => panic!("Task.Update: {e}"),
    };
    // Two broker ticks each time, so whatever the broker decides is applied.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(disabled(), "1", "{}: at the start", c.runtime());
    if !update(96 << 20) {
        println!(
            "{}: no task API v3 here; the Updates are not checked",
            c.runtime()
        );
        c.remove(&id);
        c.finish();
        return;
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        disabled(),
        "1",
        "{}: after an Update of the memory limit",
        c.runtime()
    );
    c.stop_broker();
    assert!(update(80 << 20));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        disabled(),
        "1",
        "{}: after an Update with no broker",
        c.runtime()
    );
    c.remove(&id);
    c.finish();
}
