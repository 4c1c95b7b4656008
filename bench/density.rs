//! Churn and density benchmark (issue 14), through a private containerd with our shim and its broker.
//!
//! 1. Churn: `PREDICTIVE_DENSITY_CHURN` containers (default 500) created, run (`/bin/true`) and deleted with
//!    `ctr run --rm`, `PREDICTIVE_DENSITY_PARALLEL` at a time (default 8);
//!    `PREDICTIVE_DENSITY_REGISTER_BUDGET_MS` sets the shims' `register_budget_ms` (default 50) to make Registers
//!    time out on purpose. Then, against a baseline taken after one warm-up container: cgroups of the churned
//!    containers in every hierarchy (each v1 controller, the named systemd one and the cgroup2 `unified` tree), mounts, processes (shims, zygotes, container processes), the
//!    broker's connected sockets and fds (`/proc/<broker>/fd`), its registered tasks, and its store size.
//! 2. Density: `PREDICTIVE_DENSITY_SLEEPERS` sleeping containers (default 1,000) started the same way and held
//!    `PREDICTIVE_DENSITY_HOLD_SECS` (default 70, longer than the broker's 60-tick window) before reading the
//!    broker's VmRSS, fds and threads and its metrics: Register p50/p99/max (as the broker serves it, group commit
//!    included) and the commit wait inside it, tick p50/p99/max over the last 60 ticks (all at full density).
//!    The broker is restarted between the phases so its Register window holds only this phase's Registers.
//!
//! Prints figures, never judges speed. Exit 2 when anything leaked or a container failed (a leak is a bug,
//! not a slow machine); 0 otherwise (also when not root: SKIPPED).
//!
//! Host limits: raises `kernel.pid_max` to 131,072, `fs.inotify.max_user_instances` to 8,192 and
//! `max_user_watches` to 524,288 when lower (each shim watches its container's OOM events), and its own
//! `RLIMIT_NOFILE` soft limit to the hard one (containerd inherits it); prints what it changed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::settings::PREDICTIVE_RUNTIME;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raises a sysctl to at least `want`; returns a line saying what it did.
fn raise_sysctl(path: &str, want: u64) -> String {
    let now: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if now >= want {
        return format!("{path} = {now} (kept)");
    }
    match std::fs::write(path, want.to_string()) {
        Ok(()) => format!("{path}: {now} -> {want} (raised)"),
        Err(e) => format!("{path} = {now}; raising to {want} failed: {e}"),
    }
}

fn raise_nofile() -> String {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return "RLIMIT_NOFILE unreadable".into();
    }
    let before = l.rlim_cur;
    l.rlim_cur = l.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } == 0;
    format!(
        "RLIMIT_NOFILE soft {before} -> {} (hard {}){}",
        if ok { l.rlim_max } else { before },
        l.rlim_max,
        if ok { "" } else { ": raising failed" }
    )
}

fn status_field(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// (fds, socket fds) of a process.
fn fds(pid: i32) -> (usize, usize) {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let (mut all, mut sockets) = (0, 0);
    for e in rd.flatten() {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (all, sockets)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Container cgroup dirs under `<hierarchy>/<ns>/` in every hierarchy mounted under /sys/fs/cgroup (v1
/// controllers, named ones, `unified`), and in the root on a pure v2 host: (hierarchy, child) pairs.
fn container_cgroups(ns: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut bases = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        bases.extend(
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    let mut out = Vec::new();
    for b in bases {
        if let Ok(rd) = std::fs::read_dir(b.join(ns)) {
            out.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Mount points under the containerd's dir or naming one of `ids`.
fn mounts(dir: &Path, ids: &[String]) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.starts_with(&dir) || ids.iter().any(|id| mp.contains(id.as_str())))
        .map(str::to_string)
        .collect()
}

/// Processes in the namespace's cgroups (the containers' own) or naming one of `ids` on their command line.
fn container_processes(ns: &str, ids: &[String]) -> Vec<i32> {
    let in_ns = format!(":/{ns}/");
    predictive_e2e::clean::processes_matching(|cmdline, cgroup| {
        cgroup.contains(&in_ns)
            || cmdline
                .split_whitespace()
                .any(|w| ids.iter().any(|id| w == id))
    })
}

/// One GET /metrics over the broker's metrics socket: the body.
fn scrape(sock: &Path) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    raw.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .ok_or_else(|| format!("no HTTP head in {} bytes", raw.len()))
}

/// Every unlabelled or quantile sample of the scrape: `name` or `name{quantile="q"}` -> value.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect()
}

fn ms(m: &BTreeMap<String, f64>, name: &str, q: &str) -> String {
    m.get(&format!("{name}{{quantile=\"{q}\"}}"))
        .map(|v| format!("{:.2}", v * 1000.0))
        .unwrap_or_else(|| "n/a".into())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    predictor::percentile(v, p).unwrap_or(0.0)
}

/// Runs `job(i)` for i in 0..n on `parallel` threads; returns (elapsed, per-job seconds of the successes, failures).
fn in_parallel(
    n: usize,
    parallel: usize,
    job: &(dyn Fn(usize) -> Result<(), String> + Sync),
) -> (Duration, Vec<f64>, Vec<String>) {
    let next = AtomicUsize::new(0);
    let times = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    match job(i) {
                        Ok(()) => times.lock().expect("times").push(t.elapsed().as_secs_f64()),
                        Err(e) => failures.lock().expect("failures").push(e),
                    }
                }
            });
        }
    });
    (
        t0.elapsed(),
        times.into_inner().expect("times"),
        failures.into_inner().expect("failures"),
    )
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join(" / ")
}

/// What the leak checks look at, at one moment.
struct Snapshot {
    broker: Option<i32>,
    broker_fds: usize,
    broker_sockets: usize,
    broker_rss_kb: u64,
    broker_threads: u64,
    broker_tasks: Option<u64>,
    /// The first few registered tasks' ids.
    task_ids: Vec<String>,
    store_bytes: u64,
    shim_processes: usize,
    cgroups: usize,
    mounts: usize,
    processes: usize,
}

fn snapshot(c: &Containerd, ids: &[String]) -> Snapshot {
    let broker = c.broker_pid();
    let (broker_fds, broker_sockets) = broker.map(fds).unwrap_or((0, 0));
    let status = broker::client::Client::new(c.broker_socket(), Duration::from_secs(10))
        .status()
        .ok();
    let broker_tasks = status
        .as_ref()
        .map(|s| s.total_tasks.unwrap_or(s.tasks.len() as u64));
    let task_ids = status
        .map(|s| {
            s.tasks
                .into_iter()
                .take(5)
                .map(|t| t.container_id)
                .collect()
        })
        .unwrap_or_default();
    Snapshot {
        broker,
        broker_fds,
        broker_sockets,
        broker_rss_kb: broker.map(|p| status_field(p, "VmRSS:")).unwrap_or(0),
        broker_threads: broker.map(|p| status_field(p, "Threads:")).unwrap_or(0),
        broker_tasks,
        task_ids,
        store_bytes: file_size(&c.dir.join("broker/predictor.redb")),
        shim_processes: c.shim_processes().len(),
        cgroups: container_cgroups(c.cgroup_name()).len(),
        mounts: mounts(&c.dir, ids).len(),
        processes: container_processes(c.cgroup_name(), ids).len(),
    }
}

/// Raises the host limits a thousand containers need, printing what it did.
fn print_host_limits() {
    println!("density: host limits:");
    for line in [
        raise_sysctl("/proc/sys/kernel/pid_max", 131_072),
        raise_sysctl("/proc/sys/fs/inotify/max_user_instances", 8192),
        raise_sysctl("/proc/sys/fs/inotify/max_user_watches", 524_288),
        raise_nofile(),
    ] {
        println!("  {line}");
    }
}

/// Phase 1, churn: `churn` containers run and removed, `parallel` at a time, then what they left behind against a
/// baseline taken before them. Adds what leaked or failed to `bad`.
fn churn_phase(c: &Containerd, churn: usize, parallel: usize, bad: &mut Vec<String>) {
    let ids: Vec<String> = (0..churn).map(|_| c.id("churn")).collect();
    let before = snapshot(c, &ids);

    // 1. Churn.
    let (took, times, failures) = in_parallel(churn, parallel, &|i| {
        let out = c.run(&ids[i], &[], &["/bin/true"]);
        if out.ok() {
            Ok(())
        } else {
            Err(format!("{}: {}", ids[i], first_lines(&out.to_string(), 4)))
        }
    });
    // Shims exit once their last task is deleted; the broker forgets a finished task at once.
    let _ = wait_until(Duration::from_secs(60), || {
        c.shim_processes().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = snapshot(c, &ids);
    let state = predictive_e2e::clean::state_leaks(&c.leak_scope(), &ids);
    println!();
    println!(
        "churn: {} containers ({} ok, {} failed) in {:.1} s, {:.1}/s; `ctr run --rm` p50 {:.0} ms, p99 {:.0} ms",
        churn,
        times.len(),
        failures.len(),
        took.as_secs_f64(),
        times.len() as f64 / took.as_secs_f64(),
        percentile(&times, 0.5) * 1000.0,
        percentile(&times, 0.99) * 1000.0
    );
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    if !failures.is_empty() {
        bad.push(format!("{} churned containers failed", failures.len()));
    }
    if after.broker != before.broker {
        bad.push(format!(
            "the broker changed during the churn: {:?} -> {:?}",
            before.broker, after.broker
        ));
    }
    print_churn_table(churn, &before, &after, &state, bad);
}

/// The churn's before/after table; a figure that must not grow and did is added to `bad`.
fn print_churn_table(
    churn: usize,
    before: &Snapshot,
    after: &Snapshot,
    state: &[String],
    bad: &mut Vec<String>,
) {
    println!("| after {churn} churned containers | before | after | leaked |");
    println!("| --- | --- | --- | --- |");
    let mut row = |what: &str, b: u64, a: u64, must_not_grow: bool| {
        let leaked = a.saturating_sub(b);
        println!("| {what} | {b} | {a} | {leaked} |");
        if must_not_grow && leaked > 0 {
            bad.push(format!("{what}: {b} -> {a}"));
        }
    };
    row(
        "container cgroups (every hierarchy)",
        before.cgroups as u64,
        after.cgroups as u64,
        true,
    );
    row("mounts", before.mounts as u64, after.mounts as u64, true);
    row(
        "shim + zygote processes",
        before.shim_processes as u64,
        after.shim_processes as u64,
        true,
    );
    row(
        "container processes",
        before.processes as u64,
        after.processes as u64,
        true,
    );
    row(
        "broker fds",
        before.broker_fds as u64,
        after.broker_fds as u64,
        true,
    );
    row(
        "broker sockets (connections + listeners)",
        before.broker_sockets as u64,
        after.broker_sockets as u64,
        true,
    );
    row(
        "broker registered tasks",
        before.broker_tasks.unwrap_or(u64::MAX),
        after.broker_tasks.unwrap_or(u64::MAX),
        true,
    );
    row(
        "state files naming a container",
        0,
        state.len() as u64,
        true,
    );
    row(
        "broker VmRSS kB",
        before.broker_rss_kb,
        after.broker_rss_kb,
        false,
    );
    // Informational: a connection's thread ends just after its socket closes; connections are counted by the
    // socket fds above.
    row(
        "broker threads",
        before.broker_threads,
        after.broker_threads,
        false,
    );
    row(
        "store bytes (predictor.redb)",
        before.store_bytes,
        after.store_bytes,
        false,
    );
    println!(
        "store: {:.0} bytes per churned container",
        after.store_bytes.saturating_sub(before.store_bytes) as f64 / churn.max(1) as f64
    );
    for l in state.iter().take(5) {
        println!("  {l}");
    }
    if !after.task_ids.is_empty() {
        println!("  still registered: {:?}", after.task_ids);
    }
}

/// Phase 2, density: a fresh broker (so its Register window holds this phase only), `sleepers` sleeping containers
/// started `parallel` at a time and held `hold`, then the broker's and containerd's figures and the broker's
/// metrics. Returns the sleepers' ids.
fn density_phase(
    c: &Containerd,
    sleepers: usize,
    parallel: usize,
    hold: Duration,
    metrics_sock: &Path,
    bad: &mut Vec<String>,
) -> Vec<String> {
    c.stop_broker();
    let sleeper_ids: Vec<String> = (0..sleepers).map(|_| c.id("sleep")).collect();
    let (took, times, failures) = in_parallel(sleepers, parallel, &|i| {
        let out = c.run_detached_try(&sleeper_ids[i], &[], &["sleep", "100000"]);
        if out.ok() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}",
                sleeper_ids[i],
                first_lines(&out.to_string(), 4)
            ))
        }
    });
    println!();
    println!(
        "density: {} sleepers started ({} failed) in {:.1} s, {:.1}/s; `ctr run -d` p50 {:.0} ms, p99 {:.0} ms",
        times.len(),
        failures.len(),
        took.as_secs_f64(),
        times.len() as f64 / took.as_secs_f64(),
        percentile(&times, 0.5) * 1000.0,
        percentile(&times, 0.99) * 1000.0
    );
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    if !failures.is_empty() {
        bad.push(format!("{} sleepers failed to start", failures.len()));
    }
    let fresh_rss = c
        .broker_pid()
        .map(|p| status_field(p, "VmRSS:"))
        .unwrap_or(0);
    std::thread::sleep(hold);
    let full = snapshot(c, &sleeper_ids);
    let body = scrape(metrics_sock);
    let running = c.tasks().iter().filter(|t| t.2 == "RUNNING").count();
    println!(
        "| at {sleepers} sleepers (held {} s) | figure |\n| --- | --- |",
        hold.as_secs()
    );
    println!("| tasks RUNNING (ctr t ls) | {running} |");
    println!(
        "| broker registered tasks | {} |",
        full.broker_tasks
            .map(|n| n.to_string())
            .unwrap_or_else(|| "status failed".into())
    );
    println!(
        "| broker VmRSS | {} kB (right after the starts: {fresh_rss} kB) |",
        full.broker_rss_kb
    );
    println!(
        "| broker fds / threads | {} / {} |",
        full.broker_fds, full.broker_threads
    );
    println!("| shim + zygote processes | {} |", full.shim_processes);
    println!(
        "| containerd VmRSS | {} kB |",
        status_field(c.pid, "VmRSS:")
    );
    print_metrics(&body);
    sleeper_ids
}

/// The broker's Register and tick latencies from one metrics scrape.
fn print_metrics(body: &Result<String, String>) {
    match body {
        Ok(body) => {
            let m = samples(body);
            let n = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            println!(
                "| Register, broker-side (ms): p50 / p99 / max, of {} | {} / {} / {} |",
                n("predictive_register_seconds_count"),
                ms(&m, "predictive_register_seconds", "0.5"),
                ms(&m, "predictive_register_seconds", "0.99"),
                ms(&m, "predictive_register_seconds", "1"),
            );
            println!(
                "| its group-commit wait (ms): p50 / p99 / max | {} / {} / {} |",
                ms(&m, "predictive_register_commit_wait_seconds", "0.5"),
                ms(&m, "predictive_register_commit_wait_seconds", "0.99"),
                ms(&m, "predictive_register_commit_wait_seconds", "1"),
            );
            println!(
                "| tick (ms), last 60 ticks at full density: p50 / p99 / max | {} / {} / {} |",
                ms(&m, "predictive_tick_seconds", "0.5"),
                ms(&m, "predictive_tick_seconds", "0.99"),
                ms(&m, "predictive_tick_seconds", "1"),
            );
            println!(
                "| one metrics scrape | {} bytes, {} tasks omitted |",
                body.len(),
                n("predictive_metrics_tasks_omitted")
            );
        }
        Err(e) => println!("| metrics | scrape failed: {e} |"),
    }
}

/// Removes the sleepers, `parallel` at a time, and checks they left nothing behind; adds what did to `bad`.
fn remove_sleepers(c: &Containerd, sleeper_ids: &[String], parallel: usize, bad: &mut Vec<String>) {
    let sleepers = sleeper_ids.len();
    // Teardown, then the same leak checks for the sleepers.
    let (took, _, failures) = in_parallel(sleepers, parallel, &|i| {
        let id = &sleeper_ids[i];
        let k = c.ctr(&["t", "rm", "-f", id]);
        let r = c.ctr(&["c", "rm", id]);
        if r.ok() {
            Ok(())
        } else {
            Err(format!(
                "{id}: {} / {}",
                first_lines(&k.to_string(), 2),
                first_lines(&r.to_string(), 2)
            ))
        }
    });
    println!(
        "density: {sleepers} sleepers removed in {:.1} s ({} failed)",
        took.as_secs_f64(),
        failures.len()
    );
    if !failures.is_empty() {
        bad.push(format!("{} sleepers could not be removed", failures.len()));
    }
    let _ = wait_until(Duration::from_secs(120), || {
        c.shim_processes().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let gone = snapshot(c, sleeper_ids);
    println!(
        "after removing them: cgroups {}, mounts {}, shim processes {}, container processes {}, broker tasks {:?}, \
         broker fds {} (sockets {}), VmRSS {} kB, threads {}",
        gone.cgroups,
        gone.mounts,
        gone.shim_processes,
        gone.processes,
        gone.broker_tasks,
        gone.broker_fds,
        gone.broker_sockets,
        gone.broker_rss_kb,
        gone.broker_threads
    );
    for (what, n) in [
        ("cgroups", gone.cgroups),
        ("mounts", gone.mounts),
        ("shim processes", gone.shim_processes),
        ("container processes", gone.processes),
    ] {
        if n > 0 {
            bad.push(format!("{what} left after the sleepers' removal: {n}"));
        }
    }
    if gone.broker_tasks.is_some_and(|n| n > 0) {
        bad.push(format!(
            "broker still holds {:?} tasks, e.g. {:?}",
            gone.broker_tasks, gone.task_ids
        ));
    }
}

fn main() {
    let churn = env_or("PREDICTIVE_DENSITY_CHURN", 500);
    let parallel = env_or("PREDICTIVE_DENSITY_PARALLEL", 8);
    let sleepers = env_or("PREDICTIVE_DENSITY_SLEEPERS", 1000);
    let hold = Duration::from_secs(env_or("PREDICTIVE_DENSITY_HOLD_SECS", 70) as u64);
    if !predictive_e2e::require_root("predictive-density") {
        return;
    }
    print_host_limits();
    let metrics_sock = PathBuf::from(format!("/tmp/pdensity-{}-metrics.sock", std::process::id()));
    // PREDICTIVE_DENSITY_REGISTER_BUDGET_MS shortens the shims' wait for Register (default 50 ms) so that Registers
    // time out: the containers then start unpredicted and must still leave nothing registered.
    let budget = std::env::var("PREDICTIVE_DENSITY_REGISTER_BUDGET_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| format!("register_budget_ms = {ms}\n"))
        .unwrap_or_default();
    let broker_toml = format!(
        "tick_ms = 1000\n{budget}[metrics]\nlisten = \"{}\"\n",
        metrics_sock.display()
    );
    let Some(c) = Containerd::start_with_broker("density", &broker_toml) else {
        return;
    };
    if c.runtime() != PREDICTIVE_RUNTIME {
        println!(
            "density: runtime {} (PREDICTIVE_E2E_RUNTIME): the broker figures need ours",
            c.runtime()
        );
    }
    println!(
        "density: containerd {} (private, {}), runtime {}, {churn} churned containers {parallel} at a time, \
         {sleepers} sleepers held {} s",
        c.settings.containerd,
        c.dir.display(),
        c.runtime(),
        hold.as_secs()
    );
    let mut bad = Vec::new();

    // Warm-up: the first shim starts the broker; the image is unpacked once.
    let warm = c.id("warm");
    let out = c.run(&warm, &[], &["/bin/true"]);
    if !out.ok() {
        println!("density: warm-up container failed: {out}");
        std::process::exit(2);
    }
    let _ = wait_until(Duration::from_secs(30), || {
        c.shim_processes().is_empty().then_some(())
    });
    churn_phase(&c, churn, parallel, &mut bad);
    let sleeper_ids = density_phase(&c, sleepers, parallel, hold, &metrics_sock, &mut bad);
    remove_sleepers(&c, &sleeper_ids, parallel, &mut bad);
    let _ = std::fs::remove_file(&metrics_sock);
    for leak in c.finish_report() {
        bad.push(format!("left on the host (scrubbed): {leak}"));
    }
    println!(
        "command: make bench-density   (PREDICTIVE_DENSITY_CHURN={churn} PREDICTIVE_DENSITY_PARALLEL={parallel} \
         PREDICTIVE_DENSITY_SLEEPERS={sleepers} PREDICTIVE_DENSITY_HOLD_SECS={})",
        hold.as_secs()
    );
    if bad.is_empty() {
        println!("density: nothing leaked");
    } else {
        println!("density: FAILED:");
        for b in &bad {
            println!("  {b}");
        }
        std::process::exit(2);
    }
}
