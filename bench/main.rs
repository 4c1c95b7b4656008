//! End-to-end benchmark: our shim against Debian's runc v2 shim, measured in the same run.
//!
//! - start time: 30 sequential `ctr run --rm <image> /bin/true` per runtime, the two runtimes
//!   interleaved (run i alternates which goes first) to cancel drift; median and p90. Each run's time ends
//!   when `ctr` exits (a pidfd wakes the wait; the harness polled every 10 ms before 2026-12-02).
//! - memory: VmRSS (/proc/PID/status) and Pss, Pss_Anon (/proc/PID/smaps_rollup) of one shim process
//!   holding one sleeping container.
//!
//! - idle CPU: N containers (default 100) running `sleep` through each runtime at the same time, then the
//!   CPU time of every shim process of each runtime over one window (default 30 s), plus our broker
//!   (`predictived`, started by our first shim, mode enforce, 1 s tick), as % of one core. Both runtimes are
//!   measured over the same window, two ways: the scheduler's runtime of every thread (`sum_exec_runtime`,
//!   nanoseconds, the first field of /proc/PID/task/TID/schedstat; a thread that exits within the window loses
//!   its share, which none of these processes does while idle), the headline; and utime + stime from
//!   /proc/PID/stat (clock ticks of 10 ms: a process using under 10 ms in the window mostly shows 0).
//!
//! - exec: `ctr task exec ... /bin/true` into one sleeping container per runtime, interleaved: each exec's time and
//!   the CPU per exec of the runtime's shim processes with the children they reaped, plus our broker's
//!   (`exec.rs`): what an exec probe costs each time it fires.
//!
//! - start with the systemd cgroup driver, on a host booted with systemd on cgroup v2 (else SKIPPED): the start figure
//!   with a `system.slice:pbench:<id>` cgroupsPath and `SystemdCgroup` for both runtimes, as a Kubernetes node runs
//!   every container (`PREDICTIVE_BENCH_SYSTEMD_RUNS`, default 10; 0 skips it).
//!
//! - start with a stalled broker: `ctr run --rm` as above with our broker stopped (SIGSTOP) all along, against
//!   runc in the same runs, interleaved: what a hung broker costs each container (its Register budget).
//!
//! Prints each figure and the ratio ours / runc. If our shim is missing or fails, its side is
//! reported as SKIPPED with the reason and runc's figures are still printed. Never fails on a slow
//! machine: exit code 1 only when runc itself cannot be measured.
//!
//! Env: PREDICTIVE_BENCH_RUNS (default 30), PREDICTIVE_BENCH_IDLE (containers per runtime for the CPU
//! figure, default 100; 0 skips it), PREDICTIVE_BENCH_IDLE_SECS (window, default 30),
//! PREDICTIVE_BENCH_MEM_SECS (how long after start the memory is read, default 2), PREDICTIVE_BENCH_STALLED_RUNS
//! (runs per runtime with our broker stopped, default 10; 0 skips them), PREDICTIVE_BENCH_EXECS (execs per
//! runtime, default 50; 0 skips them), PREDICTIVE_BENCH_POD
//! (the idle containers in pods of this many, one `io.kubernetes.cri.sandbox-id` and so one shim each, for
//! both runtimes; default 1: a shim per container),
//! PREDICTIVE_BENCH_MOUNTS (extra tmpfs mounts on the host for the run, default 0: a node with a few hundred pods
//! has thousands; `mounts.rs`), PREDICTIVE_BENCH_CGROUP_MOUNT (1: every start mounts cgroupfs at `/sys/fs/cgroup`
//! as Docker's and Kubernetes' containers do; default 0, `ctr`'s spec), PREDICTIVE_E2E_CONTAINERD (default 1.6),
//! PREDICTIVE_E2E_SHIM_DIR (default target/release).

use std::time::Duration;

mod exec;
mod mounts;

use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::settings::{
    IMAGE, PREDICTIVE_RUNTIME, PREDICTIVE_SHIM_BINARY, RUNC_RUNTIME, Settings,
};

struct Side {
    runtime: &'static str,
    times_ms: Vec<f64>,
    error: Option<String>,
    mem: Option<Mem>,
}

impl Side {
    fn new(runtime: &'static str) -> Self {
        Side {
            runtime,
            times_ms: Vec::new(),
            error: None,
            mem: None,
        }
    }
}

#[derive(Clone, Copy)]
struct Mem {
    rss_kb: u64,
    pss_kb: u64,
    pss_anon_kb: u64,
    /// Summed over the shim and its long-lived helper processes (our zygote), and how many there are:
    /// Pss (shared pages split fairly) and Uss (Private_Clean + Private_Dirty, what only they hold).
    total_pss_kb: u64,
    total_uss_kb: u64,
    procs: usize,
}

/// Nearest-rank percentile of a side's times (a side has at least one).
fn percentile(v: &[f64], p: f64) -> f64 {
    predictor::percentile(v, p).unwrap_or(f64::NAN)
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// How a run's container gets its cgroup.
#[derive(Clone, Copy)]
enum Driver<'a> {
    /// ctr's default: a cgroupfs path (`/<namespace>/<id>`).
    Cgroupfs,
    /// The systemd driver, as a Kubernetes node on cgroup v2 runs containers: a `slice:prefix:name` path in
    /// `system.slice`, runc with `SystemdCgroup` (`--runc-systemd-cgroup`), ours with the same option in the runtime
    /// options file at this path (`--runtime-config-path`).
    Systemd(&'a str),
}

/// With `1`, every start mounts cgroupfs read-only at `/sys/fs/cgroup`, as Docker's, nerdctl's and the CRI plugin's
/// specs do (`ctr`'s has no such mount).
const CGROUP_MOUNT_ENV: &str = "PREDICTIVE_BENCH_CGROUP_MOUNT";
const CGROUP_MOUNT: &str =
    "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec";

fn run_once_with(c: &Containerd, runtime: &str, driver: Driver) -> Result<f64, String> {
    let id = c.id("bench");
    let mut args = vec![
        "run".to_owned(),
        "--rm".into(),
        "--runtime".into(),
        runtime.into(),
    ];
    if let Driver::Systemd(options) = driver {
        args.extend(["--cgroup".into(), format!("system.slice:pbench:{id}")]);
        if runtime == RUNC_RUNTIME {
            args.push("--runc-systemd-cgroup".into());
        } else {
            args.extend(["--runtime-config-path".into(), options.to_owned()]);
        }
    }
    if std::env::var_os(CGROUP_MOUNT_ENV).is_some_and(|v| v == "1") {
        args.extend(["--mount".into(), CGROUP_MOUNT.into()]);
    }
    args.extend([IMAGE.into(), id.clone(), "/bin/true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    if !out.ok() {
        let _ = c.ctr(&["t", "rm", "-f", &id]);
        let _ = c.ctr(&["c", "rm", &id]);
        return Err(out.to_string());
    }
    Ok(out.elapsed.as_secs_f64() * 1000.0)
}

/// `ctr run -d` of a container that sleeps until it is killed.
fn run_sleeper(c: &Containerd, runtime: &str, id: &str) -> predictive_e2e::cmd::Output {
    run_sleeper_in(c, runtime, id, None)
}

/// [`run_sleeper`] in a pod: containers with one `io.kubernetes.cri.sandbox-id` share one shim (both runtimes).
fn run_sleeper_in(
    c: &Containerd,
    runtime: &str,
    id: &str,
    pod: Option<&str>,
) -> predictive_e2e::cmd::Output {
    let ann = pod.map(|p| format!("io.kubernetes.cri.sandbox-id={p}"));
    let mut args = vec!["run", "-d", "--null-io", "--runtime", runtime];
    if let Some(a) = &ann {
        args.extend(["--annotation", a.as_str()]);
    }
    args.extend([IMAGE, id, "sleep", "100000"]);
    c.ctr(&args)
}

fn measure_memory(c: &Containerd, runtime: &str) -> Result<Mem, String> {
    let before = c.shim_processes();
    let id = c.id("mem");
    let out = run_sleeper(c, runtime, &id);
    if !out.ok() {
        return Err(out.to_string());
    }
    let shim = wait_until(Duration::from_secs(10), || {
        let new: Vec<i32> = c
            .shim_pids()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        (new.len() == 1).then(|| new[0])
    });
    let all: Vec<i32> = c
        .shim_processes()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    // Let the shim settle (lazy allocations after start) before reading.
    std::thread::sleep(Duration::from_secs(env_or(
        "PREDICTIVE_BENCH_MEM_SECS",
        2u64,
    )));
    let mem = shim
        .ok_or_else(|| "no single new shim process found".to_string())
        .and_then(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| e.to_string())?;
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .map_err(|e| e.to_string())?;
            let rollups: Vec<String> = all
                .iter()
                .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
                .collect();
            for (p, r) in all.iter().zip(&rollups) {
                println!(
                    "bench: {runtime} shim process {p}: Rss {} kB, Pss {} kB, Pss_Anon {} kB, Private {} kB",
                    kb_field(r, "Rss:").unwrap_or(0),
                    kb_field(r, "Pss:").unwrap_or(0),
                    kb_field(r, "Pss_Anon:").unwrap_or(0),
                    kb_field(r, "Private_Clean:").unwrap_or(0)
                        + kb_field(r, "Private_Dirty:").unwrap_or(0)
                );
            }
            let total_pss_kb = rollups.iter().filter_map(|r| kb_field(r, "Pss:")).sum();
            let total_uss_kb = rollups
                .iter()
                .map(|r| {
                    kb_field(r, "Private_Clean:").unwrap_or(0)
                        + kb_field(r, "Private_Dirty:").unwrap_or(0)
                })
                .sum();
            Ok(Mem {
                total_pss_kb,
                total_uss_kb,
                procs: all.len(),
                rss_kb: kb_field(&status, "VmRSS:").unwrap_or(0),
                pss_kb: kb_field(&rollup, "Pss:").unwrap_or(0),
                pss_anon_kb: kb_field(&rollup, "Pss_Anon:").unwrap_or(0),
            })
        });
    let _ = c.ctr(&["t", "rm", "-f", &id]);
    let _ = c.ctr(&["c", "rm", &id]);
    mem
}

/// Environment variable `key` as a number, else `default`.
fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Start times: a warm-up (page cache, the image's snapshot, the first shim exec), then `runs` runs per side,
/// interleaved (run i alternates which side goes first) to cancel drift. A side's first failure ends its runs.
fn measure_start(c: &Containerd, runs: usize, runc: &mut Side, ours: &mut Side) {
    measure_start_with(c, runs, runc, ours, Driver::Cgroupfs)
}

fn measure_start_with(
    c: &Containerd,
    runs: usize,
    runc: &mut Side,
    ours: &mut Side,
    driver: Driver,
) {
    for side in [&mut *runc, &mut *ours] {
        if side.error.is_none() {
            for _ in 0..2 {
                if let Err(e) = run_once_with(c, side.runtime, driver) {
                    side.error = Some(format!("warm-up run failed: {e}"));
                    break;
                }
            }
        }
    }
    for i in 0..runs {
        let order: [&mut Side; 2] = if i % 2 == 0 {
            [&mut *runc, &mut *ours]
        } else {
            [&mut *ours, &mut *runc]
        };
        for side in order {
            if side.error.is_some() {
                continue;
            }
            match run_once_with(c, side.runtime, driver) {
                Ok(ms) => side.times_ms.push(ms),
                Err(e) => side.error = Some(format!("run {i} failed: {e}")),
            }
        }
    }
}

/// [`measure_start`] with our broker stopped (SIGSTOP) for the whole measurement: (runc's, ours). The broker is
/// continued, and the shims that held their runs' summaries for it are waited for, before this returns.
fn measure_stalled(c: &Containerd, runs: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let broker = c
        .broker_pid()
        .ok_or("no broker running (our shim starts one at its first run)")?;
    let (mut runc, mut ours) = (Side::new(RUNC_RUNTIME), Side::new(PREDICTIVE_RUNTIME));
    // SAFETY: stopping the broker our shims started for this benchmark's containerd; continued below.
    unsafe { libc::kill(broker, libc::SIGSTOP) };
    measure_start(c, runs, &mut runc, &mut ours);
    // SAFETY: as above.
    unsafe { libc::kill(broker, libc::SIGCONT) };
    let settled = wait_until(Duration::from_secs(15), || {
        c.shim_processes().is_empty().then_some(())
    });
    for side in [&runc, &ours] {
        if let Some(e) = &side.error {
            return Err(format!("{}: {e}", side.runtime));
        }
    }
    settled.ok_or("shims still running 15 s after the broker went on")?;
    Ok((runc.times_ms, ours.times_ms))
}

/// Start times with the systemd cgroup driver (runc's and ours), on a host booted with systemd on cgroup v2 only:
/// what a Kubernetes 1.35 node does at each container start (a transient scope per container over D-Bus).
fn measure_systemd(c: &Containerd, runs: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    if !predictive_e2e::kubelet::systemd_v2_host() {
        return Err("not a host booted with systemd on cgroup v2 (the guest lane is one)".into());
    }
    let options = c.dir.join("systemd-driver.toml");
    std::fs::write(&options, "SystemdCgroup = true\n")
        .map_err(|e| format!("writing {}: {e}", options.display()))?;
    let options = options.to_string_lossy().into_owned();
    let (mut runc, mut ours) = (Side::new(RUNC_RUNTIME), Side::new(PREDICTIVE_RUNTIME));
    measure_start_with(c, runs, &mut runc, &mut ours, Driver::Systemd(&options));
    for side in [&runc, &ours] {
        if let Some(e) = &side.error {
            return Err(format!("{}: {e}", side.runtime));
        }
    }
    Ok((runc.times_ms, ours.times_ms))
}

fn print_systemd(systemd: &Result<(Vec<f64>, Vec<f64>), String>) {
    print_start_pair(
        "with the systemd cgroup driver",
        "system.slice:pbench:<id>",
        systemd,
    )
}

fn print_stalled(stalled: &Result<(Vec<f64>, Vec<f64>), String>) {
    print_start_pair("with our broker stopped", "SIGSTOP", stalled)
}

/// One line for a start phase measured apart (runc's times, ours), or why it was skipped.
fn print_start_pair(what: &str, detail: &str, pair: &Result<(Vec<f64>, Vec<f64>), String>) {
    match pair {
        Ok((runc, ours)) => println!(
            "start {what} ({detail}), {} runs each: ours median {:.1} ms p90 {:.1} ms, runc median {:.1} ms p90 {:.1} ms; ratio ours/runc: median {}  p90 {}",
            ours.len(),
            percentile(ours, 0.5),
            percentile(ours, 0.9),
            percentile(runc, 0.5),
            percentile(runc, 0.9),
            ratio(percentile(ours, 0.5), percentile(runc, 0.5)),
            ratio(percentile(ours, 0.9), percentile(runc, 0.9))
        ),
        Err(e) => println!("start {what}: SKIPPED: {e}"),
    }
}

/// The start-time and memory table, one row per side (SKIPPED with its reason where it failed).
fn print_table(runc: &Side, ours: &Side) {
    println!();
    println!(
        "| runtime | start median ms | start p90 ms | shim VmRSS kB | shim Pss kB | shim Pss_Anon kB | Pss kB, all shim processes | Private kB, all shim processes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for side in [runc, ours] {
        if let Some(e) = &side.error {
            println!("| {} | SKIPPED | | | | | | |", side.runtime);
            println!(
                "SKIPPED: {}: {}",
                side.runtime,
                e.lines().take(12).collect::<Vec<_>>().join("\n    ")
            );
            continue;
        }
        let m = side.mem.expect("memory measured when no error");
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} ({} processes) | {} |",
            side.runtime,
            percentile(&side.times_ms, 0.5),
            percentile(&side.times_ms, 0.9),
            m.rss_kb,
            m.pss_kb,
            m.pss_anon_kb,
            m.total_pss_kb,
            m.procs,
            m.total_uss_kb
        );
    }
}

/// The ratios ours / runc of the table's figures.
fn print_ratios(runc: &Side, ours: &Side) {
    if ours.error.is_none() {
        let (o, r) = (ours.mem.expect("measured"), runc.mem.expect("measured"));
        println!(
            "ratio ours/runc: start median {}  start p90 {}  shim VmRSS {}  shim Pss {}  all-process Pss {}  all-process Private {}   (targets: start median <= 0.5, p90 <= 0.55, all-process Pss <= 0.5)",
            ratio(
                percentile(&ours.times_ms, 0.5),
                percentile(&runc.times_ms, 0.5)
            ),
            ratio(
                percentile(&ours.times_ms, 0.9),
                percentile(&runc.times_ms, 0.9)
            ),
            ratio(o.rss_kb as f64, r.rss_kb as f64),
            ratio(o.pss_kb as f64, r.pss_kb as f64),
            ratio(o.total_pss_kb as f64, r.total_pss_kb as f64),
            ratio(o.total_uss_kb as f64, r.total_uss_kb as f64)
        );
    } else {
        println!("ratio ours/runc: not available (our side SKIPPED, see above)");
    }
}

/// The idle-CPU table and its ratio, or why it was skipped.
fn print_idle_cpu(idle_cpu: Result<IdleCpu, String>) {
    match idle_cpu {
        Ok(cpu) => {
            let ours_total = cpu.our_shims.1 + cpu.broker.unwrap_or(0.0);
            println!();
            println!(
                "idle CPU, {} sleeping containers per runtime (running at the same time), {:.0} s window, % of one core (the scheduler's runtime of every thread):",
                cpu.containers, cpu.secs
            );
            println!(
                "| runtime | shim processes | shims % | broker % | total % |\n| --- | --- | --- | --- | --- |"
            );
            println!(
                "| {RUNC_RUNTIME} | {} | {:.2} | - | {:.2} |",
                cpu.runc_shims.0, cpu.runc_shims.1, cpu.runc_shims.1
            );
            println!(
                "| {PREDICTIVE_RUNTIME} | {} | {:.2} | {} | {:.2} |",
                cpu.our_shims.0,
                cpu.our_shims.1,
                cpu.broker
                    .map(|b| format!("{b:.2}"))
                    .unwrap_or_else(|| "no broker found".into()),
                ours_total
            );
            println!(
                "ratio ours/runc: idle CPU (shims + broker) {}",
                ratio(ours_total, cpu.runc_shims.1)
            );
            let (runc_t, ours_t, broker_t) = cpu.ticks;
            let ours_t_total = ours_t + broker_t.unwrap_or(0.0);
            println!(
                "the same window by utime + stime (10 ms ticks): runc {runc_t:.2}%, ours {ours_t:.2}% + broker {}%: {}",
                broker_t.map_or_else(|| "-".to_owned(), |b| format!("{b:.2}")),
                ratio(ours_t_total, runc_t)
            );
        }
        Err(e) => println!(
            "SKIPPED: idle CPU: {}",
            e.lines().take(12).collect::<Vec<_>>().join("\n    ")
        ),
    }
}

/// utime + stime of a process, in clock ticks (`None` once it is gone).
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the last ')' start at field 3 (state): utime and stime are fields 14 and 15.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The scheduler's runtime of every thread of a process, nanoseconds (`None` once it is gone).
fn thread_runtime_ns(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(|t| {
                let text = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                text.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum(),
    )
}

/// The shim processes of `c` whose binary name contains `binary`.
fn shims_of(c: &Containerd, binary: &str) -> Vec<i32> {
    c.shim_processes()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .ok()
                .and_then(|raw| {
                    raw.split(|b| *b == 0)
                        .next()
                        .map(|a| String::from_utf8_lossy(a).contains(binary))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// CPU of the long-lived processes behind idle containers, per runtime, as % of one core: by the scheduler's
/// runtime of their threads and, in `ticks`, by utime + stime.
struct IdleCpu {
    containers: usize,
    secs: f64,
    runc_shims: (usize, f64),
    our_shims: (usize, f64),
    broker: Option<f64>,
    ticks: (f64, f64, Option<f64>),
}

/// Starts `n` sleeping containers per runtime (both runtimes at once), measures the CPU time of every shim
/// process (and our broker) over `window`, and removes the containers.
/// With `per_pod` above 1, the containers come in pods of that many (one shim each, per runtime).
fn measure_idle_cpu(
    c: &Containerd,
    n: usize,
    per_pod: usize,
    window: Duration,
) -> Result<IdleCpu, String> {
    let mut ids = Vec::new();
    let mut result = Ok(());
    let pods: Vec<[String; 2]> = (0..n.div_ceil(per_pod.max(1)))
        .map(|_| [c.id("podr"), c.id("podp")])
        .collect();
    'start: for i in 0..n {
        for (k, runtime) in [RUNC_RUNTIME, PREDICTIVE_RUNTIME].into_iter().enumerate() {
            let id = c.id("idle");
            let pod = (per_pod > 1).then(|| pods[i / per_pod][k].as_str());
            let out = run_sleeper_in(c, runtime, &id, pod);
            ids.push(id);
            if !out.ok() {
                result = Err(format!("starting idle container {}: {out}", ids.len()));
                break 'start;
            }
        }
    }
    let measured = result.map(|()| {
        // Let the last starts settle (workers exit, first ticks pass).
        std::thread::sleep(Duration::from_secs(3));
        let hz = {
            // SAFETY: sysconf reads a constant.
            let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            if v > 0 { v as f64 } else { 100.0 }
        };
        let runc = shims_of(c, "containerd-shim-runc-v2");
        let ours = shims_of(c, "containerd-shim-predictive-v2");
        let broker = c.broker_pid();
        let sum = |pids: &[i32], f: fn(i32) -> Option<u64>| {
            pids.iter().filter_map(|p| f(*p)).sum::<u64>()
        };
        let snap = |f: fn(i32) -> Option<u64>| (sum(&runc, f), sum(&ours, f), broker.and_then(f));
        let before = (snap(thread_runtime_ns), snap(cpu_ticks));
        let t0 = std::time::Instant::now();
        std::thread::sleep(window);
        let after = (snap(thread_runtime_ns), snap(cpu_ticks));
        let secs = t0.elapsed().as_secs_f64();
        let ns = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e9 / secs * 100.0;
        let ticks = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz / secs * 100.0;
        let opt = |a: Option<u64>, b: Option<u64>, f: &dyn Fn(u64, u64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            _ => None,
        };
        IdleCpu {
            containers: n,
            secs,
            runc_shims: (runc.len(), ns(after.0.0, before.0.0)),
            our_shims: (ours.len(), ns(after.0.1, before.0.1)),
            broker: opt(after.0.2, before.0.2, &ns),
            ticks: (
                ticks(after.1.0, before.1.0),
                ticks(after.1.1, before.1.1),
                opt(after.1.2, before.1.2, &ticks),
            ),
        }
    });
    for id in &ids {
        let _ = c.ctr(&["t", "rm", "-f", id]);
        let _ = c.ctr(&["c", "rm", id]);
    }
    measured
}

fn ratio(ours: f64, runc: f64) -> String {
    if runc > 0.0 {
        format!("{:.2}", ours / runc)
    } else {
        "n/a".into()
    }
}

fn main() {
    let runs: usize = env_or("PREDICTIVE_BENCH_RUNS", 30);
    let mut settings = Settings::from_env();
    // The harness checks for our binary only when it is the runtime under test; here we decide ourselves.
    settings.runtime = RUNC_RUNTIME.to_string();
    let ours_bin = settings.shim_dir.join(PREDICTIVE_SHIM_BINARY);
    let Some(c) = Containerd::start_with("bench", settings.clone()) else {
        std::process::exit(0);
    };
    println!(
        "bench: containerd {} (private, {}), {} runs per runtime, interleaved",
        settings.containerd,
        c.dir.display(),
        runs
    );

    let extra_mounts: usize = env_or("PREDICTIVE_BENCH_MOUNTS", 0);
    let mounts = (extra_mounts > 0).then(|| match mounts::ExtraMounts::make(extra_mounts) {
        Ok(m) => m,
        Err(e) => {
            println!("bench: could not make {extra_mounts} extra mounts: {e}");
            std::process::exit(1);
        }
    });
    if mounts.is_some() {
        println!(
            "bench: {extra_mounts} extra tmpfs mounts for this run: /proc/self/mountinfo has {} lines",
            mounts::ExtraMounts::mountinfo_lines()
        );
    }

    let mut runc = Side::new(RUNC_RUNTIME);
    let mut ours = Side::new(PREDICTIVE_RUNTIME);
    if !ours_bin.is_file() {
        ours.error = Some(format!("{} not found (make build)", ours_bin.display()));
    }

    measure_start(&c, runs, &mut runc, &mut ours);
    let stalled_runs: usize = env_or("PREDICTIVE_BENCH_STALLED_RUNS", 10);
    let stalled = (stalled_runs > 0 && runc.error.is_none() && ours.error.is_none())
        .then(|| measure_stalled(&c, stalled_runs));
    let systemd_runs: usize = env_or("PREDICTIVE_BENCH_SYSTEMD_RUNS", 10);
    let systemd = (systemd_runs > 0 && runc.error.is_none() && ours.error.is_none())
        .then(|| measure_systemd(&c, systemd_runs));
    for side in [&mut runc, &mut ours] {
        if side.error.is_none() {
            match measure_memory(&c, side.runtime) {
                Ok(m) => side.mem = Some(m),
                Err(e) => side.error = Some(format!("memory measurement failed: {e}")),
            }
        }
    }
    let execs: usize = env_or("PREDICTIVE_BENCH_EXECS", 50);
    let exec = (execs > 0 && runc.error.is_none() && ours.error.is_none())
        .then(|| exec::measure(&c, execs));
    let idle: usize = env_or("PREDICTIVE_BENCH_IDLE", 100);
    let idle_secs: u64 = env_or("PREDICTIVE_BENCH_IDLE_SECS", 30);
    let per_pod: usize = env_or("PREDICTIVE_BENCH_POD", 1);
    let idle_cpu = if idle > 0 && runc.error.is_none() && ours.error.is_none() {
        Some(measure_idle_cpu(
            &c,
            idle,
            per_pod,
            Duration::from_secs(idle_secs),
        ))
    } else {
        None
    };
    for leak in c.finish_report() {
        println!("WARNING: left on the host after the benchmark (scrubbed): {leak}");
    }
    drop(mounts);

    print_table(&runc, &ours);
    println!();
    if runc.error.is_some() {
        println!("bench: runc v2 could not be measured; no ratios");
        std::process::exit(1);
    }
    print_ratios(&runc, &ours);
    if let Some(stalled) = &stalled {
        print_stalled(stalled);
    }
    if let Some(systemd) = &systemd {
        print_systemd(systemd);
    }
    if let Some(exec) = &exec {
        exec::print(exec, execs);
    }
    if let Some(cpu) = idle_cpu {
        print_idle_cpu(cpu);
    }
    println!(
        "command: make bench   (PREDICTIVE_BENCH_RUNS={runs}, PREDICTIVE_BENCH_EXECS={execs}, PREDICTIVE_BENCH_MOUNTS={extra_mounts}, PREDICTIVE_BENCH_IDLE={idle}, PREDICTIVE_BENCH_POD={per_pod}, PREDICTIVE_BENCH_IDLE_SECS={idle_secs}, PREDICTIVE_BENCH_MEM_SECS={}, PREDICTIVE_BENCH_STALLED_RUNS={stalled_runs}, PREDICTIVE_BENCH_SYSTEMD_RUNS={systemd_runs}, PREDICTIVE_BENCH_CGROUP_MOUNT={}, containerd {})",
        env_or("PREDICTIVE_BENCH_MEM_SECS", 2u64),
        env_or(CGROUP_MOUNT_ENV, 0u8),
        settings.containerd
    );
}
