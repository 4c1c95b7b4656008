//! A dense, hostile node (issue 14), against a real `predictived` process on a temp socket and state dir: a flood
//! of idle connections under a 1,024 soft fd limit, a 20,000-task chain, the connection cap, the read-only group,
//! and `kill -9` in the middle of a burst of finishes. Nothing here asserts a duration: the figures (fds, RSS,
//! seconds) are printed for docs/BENCHMARKS.md; every wait is a poll with a generous bound.

mod common;
use common::{Daemon, predictivectl, short_tempdir};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::annotations;
use broker::api::{ErrorCode, Finish, Register};
use broker::client::{Client, ClientError};
use broker::controller::SpecLimits;

const WAIT: Duration = Duration::from_secs(60);

/// Starts predictived with `extra` config lines and an open-file soft limit of `nofile` (None: inherited).
fn start(dir: &Path, extra: &str, nofile: Option<u64>) -> Daemon {
    let config = format!(
        "tick_ms = 1000\nhost_cpu_cores = 64.0\nhost_memory_bytes = 274877906944\ncgroup = \"v2\"\n{extra}"
    );
    Daemon::start_with(dir, &config, &[], |cmd| {
        cmd.env("RUST_LOG", "warn");
        if let Some(soft) = nofile {
            // SAFETY: only async-signal-safe calls (getrlimit, setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut l = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    l.rlim_cur = soft.min(l.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    })
}

fn raise_own_nofile(want: u64) -> bool {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return false;
        }
        if l.rlim_cur >= want {
            return true;
        }
        if l.rlim_max < want {
            return false;
        }
        l.rlim_cur = want;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0
    }
}

fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

fn register(id: &str, task_type: &str, extra: &[(&str, String)]) -> Register {
    let mut ann = BTreeMap::from([(annotations::TASK_TYPE.to_owned(), task_type.to_owned())]);
    for (k, v) in extra {
        ann.insert((*k).to_owned(), v.clone());
    }
    Register {
        container_id: id.to_owned(),
        namespace: "dense".to_owned(),
        annotations: ann,
        image: "busybox".to_owned(),
        command: vec!["sleep".to_owned(), "1".to_owned()],
        limits: SpecLimits {
            cpu_limit_cores: Some(1.0),
            memory_limit_bytes: Some(1 << 28),
            ..SpecLimits::default()
        },
        cgroup_path: format!("/dense/{id}"),
        pid: Some(1),
        cgroup: None,
        adopt: None,
        parents: Vec::new(),
        own_netns: None,
        net_ingress: None,
        pokes: None,
        created_ns: None,
    }
}

fn raw_call(s: &mut UnixStream, line: &str) -> String {
    // A refused connection may be answered and closed before the request is written (EPIPE): the answer is
    // still there to read.
    let sent = s
        .write_all(line.as_bytes())
        .and_then(|()| s.write_all(b"\n"));
    if let Err(e) = &sent
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("send: {e}");
    }
    let mut r = BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out).expect("reply");
    out
}

#[test]
fn a_flood_of_2000_idle_connections_under_a_1024_fd_soft_limit_leaves_status_answering() {
    // PREDICTIVE_DENSE_FLOOD=5000 measures a larger flood (docs/BENCHMARKS.md); the test uses 2,000.
    let flood: usize = std::env::var("PREDICTIVE_DENSE_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    if !raise_own_nofile(flood as u64 + 512) {
        testkit::skip(
            "a_flood_of_2000_idle_connections_under_a_1024_fd_soft_limit_leaves_status_answering",
            "this test process cannot hold 2,500 fds (hard RLIMIT_NOFILE too low)",
        );
        return;
    }
    let dir = short_tempdir();
    let d = start(dir.path(), "", Some(1024));
    let before_rss = proc_status(d.pid(), "VmRSS:");
    let mut idle = Vec::with_capacity(flood);
    for i in 0..flood {
        match UnixStream::connect(d.socket()) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {i} of the flood refused: {e}\n{}", d.stderr()),
        }
    }
    // Every one of them is served (the broker raised its own limit): a status on each of a sample answers.
    for s in idle.iter_mut().step_by(97) {
        let reply = raw_call(s, r#"{"version":1,"type":"status","limit":1}"#);
        assert!(reply.contains(r#""type":"status""#), "{reply}");
    }
    let st = Client::new(d.socket(), Duration::from_secs(10))
        .status()
        .unwrap_or_else(|e| panic!("status while flooded: {e:?}\n{}", d.stderr()));
    assert_eq!(st.tasks.len(), 0);
    let fds = proc_fds(d.pid());
    let threads = proc_status(d.pid(), "Threads:");
    let rss = proc_status(d.pid(), "VmRSS:");
    println!(
        "flood: {flood} idle connections, broker fds {fds}, threads {threads}, VmRSS {before_rss} before -> {rss}"
    );
    assert!(
        fds < flood + 64,
        "one fd per connection: {fds} fds for {flood} connections"
    );
    drop(idle);
    // The connections' threads end and their fds close.
    let until = Instant::now() + WAIT;
    while proc_fds(d.pid()) > 64 {
        assert!(
            Instant::now() < until,
            "fds not released: {}",
            proc_fds(d.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "flood over: broker fds {}, VmRSS {}",
        proc_fds(d.pid()),
        proc_status(d.pid(), "VmRSS:")
    );
}

#[test]
fn the_connection_cap_answers_a_clear_error_and_idle_clients_are_closed() {
    let dir = short_tempdir();
    let d = start(
        dir.path(),
        "max_connections = 20\nidle_timeout_ms = 0\n",
        None,
    );
    // Connections until one is refused; each proves itself served by answering a status.
    let mut held = Vec::new();
    let refusal = loop {
        let mut s = UnixStream::connect(d.socket()).expect("connect");
        let reply = raw_call(&mut s, r#"{"version":1,"type":"status","limit":1}"#);
        if reply.contains("too_many_connections") {
            break reply;
        }
        assert!(reply.contains(r#""type":"status""#), "{reply}");
        held.push(s);
        assert!(held.len() <= 100, "never refused");
    };
    assert!(refusal.contains("max_connections"), "{refusal}");
    // We are the broker's uid: 20, and the 32 kept for root and the broker's uid past the cap.
    assert_eq!(held.len(), 20 + 32);
    drop(held);
    let until = Instant::now() + WAIT;
    while Client::new(d.socket(), Duration::from_secs(10))
        .status()
        .is_err()
    {
        assert!(
            Instant::now() < until,
            "room again once the connections closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(d);

    // Idle clients are closed; a shim (it registered) never is.
    let dir = short_tempdir();
    let d = start(dir.path(), "idle_timeout_ms = 300\n", None);
    let mut shim = Client::new(d.socket(), Duration::from_secs(10));
    shim.register(&register("shim-1", "t", &[]))
        .expect("register");
    let mut client = UnixStream::connect(d.socket()).expect("connect");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = Vec::new();
    let n = client.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle client gets EOF, no data");
    shim.finish(&Finish {
        container_id: "shim-1".to_owned(),
        ..Finish::default()
    })
    .expect("the shim's connection outlived the idle timeout");
}

#[test]
fn a_20000_task_chain_registers_and_status_pages_through_it() {
    const N: usize = 20_000;
    const THREADS: usize = 8;
    let dir = short_tempdir();
    let d = start(dir.path(), "", None);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (sock, next) = (d.socket(), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut c = Client::new(&sock, Duration::from_secs(60));
                let mut took = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= N {
                        return took;
                    }
                    let t0 = Instant::now();
                    let mut extra = vec![(annotations::PIPELINE, "chain".to_owned())];
                    if i > 0 {
                        extra.push((annotations::DEPENDS_ON, format!("chain-{}", i - 1)));
                    }
                    c.register(&register(&format!("chain-{i}"), "chain", &extra))
                        .unwrap_or_else(|e| panic!("register chain-{i}: {e:?}"));
                    took.push(t0.elapsed());
                }
            })
        })
        .collect();
    let mut lat: Vec<Duration> = Vec::with_capacity(N);
    for w in workers {
        lat.extend(w.join().expect("worker"));
    }
    let took = started.elapsed();
    lat.sort();
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    // A few ticks over the whole chain (its critical path is recomputed every tick, iteratively).
    let until = Instant::now() + WAIT;
    let st = loop {
        let st = Client::new(d.socket(), Duration::from_secs(60))
            .status()
            .unwrap_or_else(|e| panic!("status: {e:?}\n{}", d.stderr()));
        if st.tasks.iter().filter(|t| t.critical).count() == N {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the chain never became the critical path: {} of {N} critical\n{}",
            st.tasks.iter().filter(|t| t.critical).count(),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(st.tasks.len(), N, "every page was read");
    assert_eq!(st.total_tasks, Some(N as u64));
    println!(
        "chain: {N} registers over {THREADS} connections in {:.2} s ({:.0}/s; Register p50 {:.2} ms, p99 {:.2} ms), \
         broker VmRSS {}",
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        proc_status(d.pid(), "VmRSS:")
    );
    // predictivectl pages too.
    let out = predictivectl(vec![
        "--socket".to_owned(),
        d.socket().display().to_string(),
        "status".to_owned(),
    ]);
    assert!(
        out.status.success(),
        "predictivectl status at {N} tasks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chain-19999"), "the last page is shown");
    const { assert!(broker::validate::MAX_PIPELINE_TASKS > N) };
}

/// The read-only group's client (run as uid 65534 by the test below): prints one reply line per request.
#[test]
fn read_only_client_helper() {
    let Ok(sock) = std::env::var("PREDICTIVE_DENSE_RO_SOCKET") else {
        return;
    };
    let mut s = UnixStream::connect(sock).expect("connect as the read-only group");
    for line in [
        r#"{"version":1,"type":"register","container_id":"fake-1000","annotations":{"io.predictive.priority":"1000"}}"#,
        r#"{"version":1,"type":"report","container_id":"root-owned","samples":[]}"#,
        r#"{"version":1,"type":"finish","container_id":"root-owned"}"#,
        r#"{"version":1,"type":"status"}"#,
    ] {
        let reply = raw_call(&mut s, line);
        println!("REPLY {}", reply.trim());
    }
}

#[test]
fn the_read_only_group_cannot_register_report_or_finish() {
    if !testkit::require_root(
        "the_read_only_group_cannot_register_report_or_finish",
        "to run a client as another uid",
    ) {
        return;
    }
    const GID: u32 = 4242;
    let dir = short_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = start(dir.path(), &format!("allowed_gid = {GID}\n"), None);
    let mut root = Client::new(d.socket(), Duration::from_secs(10));
    root.register(&register("root-owned", "t", &[]))
        .expect("root registers");
    let meta = std::fs::metadata(d.socket()).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "read_only_client_helper", "--nocapture"])
        .env("PREDICTIVE_DENSE_RO_SOCKET", d.socket())
        .uid(65534)
        .gid(GID)
        .output()
        .expect("run the read-only client");
    let text = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("REPLY "))
        .collect();
    assert_eq!(
        replies.len(),
        4,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in &replies[..3] {
        assert!(
            r.contains("permission_denied") && r.contains("read-only"),
            "{r}"
        );
    }
    assert!(
        replies[3].contains(r#""type":"status""#),
        "reads are allowed: {}",
        replies[3]
    );
    // Nothing changed: root's container is still registered and no fake one appeared.
    let st = root.status().expect("status");
    let ids: Vec<&str> = st.tasks.iter().map(|t| t.container_id.as_str()).collect();
    assert_eq!(ids, vec!["root-owned"]);
}

#[test]
fn state_dir_and_store_are_private_whatever_the_umask_and_a_symlinked_lock_is_refused() {
    let dir = short_tempdir();
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let d = start(dir.path(), "", None);
    nix::sys::stat::umask(old);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&dir.path().join("state/predictor.redb")), 0o600);
    assert_eq!(mode(&d.socket()), 0o600);
    drop(d);
    // A lock file that is a symlink is not followed (its target is not truncated).
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("victim");
    let lock = dir.path().join("state/predictived.lock");
    std::fs::remove_file(&lock).expect("remove lock");
    std::os::unix::fs::symlink(&victim, &lock).expect("symlink");
    let status = Command::new(env!("CARGO_BIN_EXE_predictived"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("run/broker.sock"))
        .stderr(Stdio::piped())
        .output()
        .expect("predictived");
    assert!(
        !status.status.success(),
        "a symlinked lock file must be refused"
    );
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious"
    );
}

#[test]
fn kill_9_during_a_burst_of_finishes_loses_no_acknowledged_run_or_decision() {
    const ROUNDS: usize = 5;
    const THREADS: usize = 4;
    /// Acknowledged finishes per round before the kill (the burst goes on while the kill lands).
    const KILL_AFTER: usize = 400;
    let dir = short_tempdir();
    let mut acked_registers: Vec<(String, String)> = Vec::new();
    let mut acked_finishes: Vec<(String, String)> = Vec::new();
    let mut total_sent = 0usize;
    for round in 0..ROUNDS {
        let mut d = start(dir.path(), "", None);
        let regs = Arc::new(Mutex::new(Vec::new()));
        let fins = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let sock = d.socket();
                let (regs, fins, stop, sent) =
                    (regs.clone(), fins.clone(), stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut c = Client::new(&sock, Duration::from_secs(30));
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // One task type per container: its run is found by its key alone.
                        let id = format!("r{round}-t{t}-{i}");
                        sent.fetch_add(1, Ordering::Relaxed);
                        let key = match c.register(&register(&id, &id, &[])) {
                            Ok(r) => r.task_key,
                            Err(_) => return,
                        };
                        regs.lock().expect("lock").push((id.clone(), key.clone()));
                        match c.finish(&Finish {
                            container_id: id.clone(),
                            exit_code: 0,
                            ..Finish::default()
                        }) {
                            Ok(_) => fins.lock().expect("lock").push((id, key)),
                            Err(ClientError::Broker(e)) if e.code == ErrorCode::Internal => return,
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        let until = Instant::now() + WAIT;
        while fins.lock().expect("lock").len() < KILL_AFTER {
            assert!(Instant::now() < until, "the burst stalled: {}", d.stderr());
            std::thread::sleep(Duration::from_millis(1));
        }
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("worker");
        }
        total_sent += sent.load(Ordering::Relaxed);
        acked_registers.extend(regs.lock().expect("lock").drain(..));
        acked_finishes.extend(fins.lock().expect("lock").drain(..));
        // What the dead broker acknowledged is in its store.
        let store = predictor::Store::open(&dir.path().join("state/predictor.redb"))
            .expect("open the store after kill -9");
        let mut lost_runs = 0;
        for (id, key) in &acked_finishes {
            let runs = store.runs_of(&predictor::TaskKey::new(key)).expect("runs");
            if runs.is_empty() {
                lost_runs += 1;
                eprintln!("lost run of {id}");
            }
        }
        let decided: HashSet<String> = store
            .decisions(&predictor::DecisionQuery::default())
            .expect("decisions")
            .into_iter()
            .map(|d| d.container_id)
            .collect();
        let lost_decisions = acked_registers
            .iter()
            .filter(|(id, _)| !decided.contains(id))
            .count();
        println!(
            "round {round}: {} registers and {} finishes acknowledged so far ({total_sent} sent), lost runs {lost_runs}, \
             containers without their decisions {lost_decisions}",
            acked_registers.len(),
            acked_finishes.len()
        );
        assert_eq!(
            lost_runs, 0,
            "acknowledged finishes lost after kill -9 in round {round}"
        );
        assert_eq!(
            lost_decisions, 0,
            "acknowledged decisions lost after kill -9 in round {round}"
        );
    }
}
