//! The broker a shim starts, and a shim that must not start one (issue 13): an auto-started `predictived` lives in
//! its own cgroup (`predictived` at the root of every hierarchy, not containerd's; with systemd as PID 1 a
//! transient unit of its own in `system.slice`) with `oom_score_adj` 0 (not the shim's) in a session of its own;
//! with `autostart = false` and no broker, Creates never wait and the log says so once, not once per container. Root only; `SKIPPED:` otherwise. With PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2
//! there is no broker: the tests say so and pass.

use std::time::{Duration, Instant};

use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;

fn read(path: String) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .to_owned()
}

/// The cgroup path of `pid` in each hierarchy (`controllers:path` lines of /proc/PID/cgroup).
fn cgroups(pid: i32) -> Vec<(String, String)> {
    read(format!("/proc/{pid}/cgroup"))
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrl.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn an_auto_started_broker_has_its_own_cgroup_and_oom_score() {
    let Some(c) = Containerd::start_with_own_broker(
        "an_auto_started_broker_has_its_own_cgroup_and_oom_score",
        "tick_ms = 500\n",
    ) else {
        return;
    };
    let id = c.id("first");
    c.run_detached(&id, &[], &["sleep", "1000"]);
    let broker = wait_until(Duration::from_secs(10), || c.broker_pid())
        .expect("the first shim started a broker");
    let shim = c.shim_pids()[0];
    let mine = cgroups(broker);
    let theirs = cgroups(shim);
    println!("broker {broker} cgroups {mine:?}\nshim {shim} cgroups {theirs:?}");
    // With systemd as PID 1 (and `systemd-run`), systemd owns the broker's cgroup: a transient unit of its own in
    // `system.slice` (`predictived-auto-<hash of the socket>.service` for a socket other than the default one).
    let under_systemd = std::path::Path::new("/run/systemd/system").is_dir()
        && ["/usr/bin/systemd-run", "/bin/systemd-run"]
            .iter()
            .any(|p| std::path::Path::new(p).is_file());
    let own = |path: &str| {
        if under_systemd {
            path.starts_with("/system.slice/predictived-auto") && path.ends_with(".service")
        } else {
            path == "/predictived"
        }
    };
    for (ctrl, path) in &mine {
        assert!(
            own(path),
            "the broker is not in its own cgroup in hierarchy {ctrl:?} (systemd as PID 1: {under_systemd}): {mine:?}"
        );
    }
    assert!(
        theirs.iter().all(|(_, p)| !own(p)),
        "the shim moved too: {theirs:?}"
    );
    let (score, shim_score) = (
        read(format!("/proc/{broker}/oom_score_adj")),
        read(format!("/proc/{shim}/oom_score_adj")),
    );
    println!("oom_score_adj: broker {score}, shim {shim_score}");
    assert_eq!(score, "0", "the broker's oom_score_adj");
    // Its own session (setsid), its output in the state directory (under systemd, the journal).
    let stat = read(format!("/proc/{broker}/stat"));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        fields.get(3),
        Some(&broker.to_string().as_str()),
        "session: {stat}"
    );
    if under_systemd {
        // systemd keeps its output (the journal) and runs it as the unit its cgroup is named after.
        let unit = mine[0].1.rsplit('/').next().unwrap_or_default().to_owned();
        let out = std::process::Command::new("systemctl")
            .args(["is-active", &unit])
            .output()
            .expect("running systemctl");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(state, "active", "the broker's unit {unit}");
    } else {
        assert!(c.dir.join("broker/predictived.log").is_file());
    }
    // The shim's reaper does not hand the broker's exit to a container: it was detached.
    c.remove(&id);
    c.finish();
}

#[test]
fn no_broker_and_autostart_off_never_waits_and_says_so_once() {
    let Some(c) = Containerd::start_with_own_broker(
        "no_broker_and_autostart_off_never_waits_and_says_so_once",
        "autostart = false\n",
    ) else {
        return;
    };
    let mut took = Vec::new();
    for i in 0..3 {
        let id = c.id(&format!("nobroker{i}"));
        let started = Instant::now();
        c.run(&id, &[], &["true"])
            .expect_ok("a container with no broker");
        took.push(started.elapsed());
    }
    println!("ctr run --rm true with no broker: {took:?}");
    assert!(c.broker_pid().is_none(), "a shim started a broker");
    // Three containers, three shim processes: one line for the host.
    let log = c.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fail open") && l.contains("WARN"))
        .collect();
    assert_eq!(said.len(), 1, "said {} times: {said:#?}", said.len());
    assert!(said[0].contains("autostart = false"), "{}", said[0]);
    assert!(
        !log.contains("registered with the broker"),
        "registered with what?"
    );
    // A Create waits only for a broker it has just started (spawn.rs): none was.
    assert!(
        !log.contains("no broker answered: started"),
        "a shim started a broker"
    );
    c.finish();
}
