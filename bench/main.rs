//! End-to-end benchmark: our shim against Debian's runc v2 shim, measured in the same run.
//!
//! - start time: 30 sequential `ctr run --rm <image> /bin/true` per runtime, the two runtimes
//!   interleaved (run i alternates which goes first) to cancel drift; median and p90.
//! - memory: VmRSS (/proc/PID/status) and Pss, Pss_Anon (/proc/PID/smaps_rollup) of one shim process
//!   holding one sleeping container.
//!
//! Prints each figure and the ratio ours / runc. If our shim is missing or fails, its side is
//! reported as SKIPPED with the reason and runc's figures are still printed. Never fails on a slow
//! machine: exit code 1 only when runc itself cannot be measured.
//!
//! Env: PREDICTIVE_BENCH_RUNS (default 30), PREDICTIVE_E2E_CONTAINERD (default 1.6),
//! PREDICTIVE_E2E_SHIM_DIR (default target/release).

use std::time::Duration;

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

#[derive(Clone, Copy)]
struct Mem {
    rss_kb: u64,
    pss_kb: u64,
    pss_anon_kb: u64,
    /// Pss summed over the shim and its helper processes (our zygote), and how many there are.
    total_pss_kb: u64,
    procs: usize,
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (p * (s.len() as f64 - 1.0)).round() as usize;
    s[rank.min(s.len() - 1)]
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn run_once(c: &Containerd, runtime: &str) -> Result<f64, String> {
    let id = c.id("bench");
    let out = c.ctr(&["run", "--rm", "--runtime", runtime, IMAGE, &id, "/bin/true"]);
    if !out.ok() {
        let _ = c.ctr(&["t", "rm", "-f", &id]);
        let _ = c.ctr(&["c", "rm", &id]);
        return Err(out.to_string());
    }
    Ok(out.elapsed.as_secs_f64() * 1000.0)
}

fn measure_memory(c: &Containerd, runtime: &str) -> Result<Mem, String> {
    let before = c.shim_processes();
    let id = c.id("mem");
    let out = c.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        runtime,
        IMAGE,
        &id,
        "sleep",
        "100000",
    ]);
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
    std::thread::sleep(Duration::from_secs(2));
    let mem = shim
        .ok_or_else(|| "no single new shim process found".to_string())
        .and_then(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| e.to_string())?;
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .map_err(|e| e.to_string())?;
            let total_pss_kb = all
                .iter()
                .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
                .filter_map(|r| kb_field(&r, "Pss:"))
                .sum();
            Ok(Mem {
                total_pss_kb,
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

fn ratio(ours: f64, runc: f64) -> String {
    if runc > 0.0 {
        format!("{:.2}", ours / runc)
    } else {
        "n/a".into()
    }
}

fn main() {
    let runs: usize = std::env::var("PREDICTIVE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
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

    let mut runc = Side {
        runtime: RUNC_RUNTIME,
        times_ms: Vec::new(),
        error: None,
        mem: None,
    };
    let mut ours = Side {
        runtime: PREDICTIVE_RUNTIME,
        times_ms: Vec::new(),
        error: None,
        mem: None,
    };
    if !ours_bin.is_file() {
        ours.error = Some(format!("{} not found (make build)", ours_bin.display()));
    }

    // Warm-up: page cache, snapshot of the image, first shim exec.
    for side in [&mut runc, &mut ours] {
        if side.error.is_none() {
            for _ in 0..2 {
                if let Err(e) = run_once(&c, side.runtime) {
                    side.error = Some(format!("warm-up run failed: {e}"));
                    break;
                }
            }
        }
    }
    for i in 0..runs {
        let order: [&mut Side; 2] = if i % 2 == 0 {
            [&mut runc, &mut ours]
        } else {
            [&mut ours, &mut runc]
        };
        for side in order {
            if side.error.is_some() {
                continue;
            }
            match run_once(&c, side.runtime) {
                Ok(ms) => side.times_ms.push(ms),
                Err(e) => side.error = Some(format!("run {i} failed: {e}")),
            }
        }
    }
    for side in [&mut runc, &mut ours] {
        if side.error.is_none() {
            match measure_memory(&c, side.runtime) {
                Ok(m) => side.mem = Some(m),
                Err(e) => side.error = Some(format!("memory measurement failed: {e}")),
            }
        }
    }
    for leak in c.finish_report() {
        println!("WARNING: left on the host after the benchmark (scrubbed): {leak}");
    }

    println!();
    println!(
        "| runtime | start median ms | start p90 ms | shim VmRSS kB | shim Pss kB | shim Pss_Anon kB | Pss kB, all shim processes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for side in [&runc, &ours] {
        if let Some(e) = &side.error {
            println!("| {} | SKIPPED | | | | | |", side.runtime);
            println!(
                "SKIPPED: {}: {}",
                side.runtime,
                e.lines().take(12).collect::<Vec<_>>().join("\n    ")
            );
            continue;
        }
        let m = side.mem.expect("memory measured when no error");
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} ({} processes) |",
            side.runtime,
            percentile(&side.times_ms, 0.5),
            percentile(&side.times_ms, 0.9),
            m.rss_kb,
            m.pss_kb,
            m.pss_anon_kb,
            m.total_pss_kb,
            m.procs
        );
    }
    println!();
    if runc.error.is_some() {
        println!("bench: runc v2 could not be measured; no ratios");
        std::process::exit(1);
    }
    if ours.error.is_none() {
        let (o, r) = (ours.mem.expect("measured"), runc.mem.expect("measured"));
        println!(
            "ratio ours/runc: start median {}  start p90 {}  shim VmRSS {}  shim Pss {}  all-process Pss {}   (target <= 0.6)",
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
            ratio(o.total_pss_kb as f64, r.total_pss_kb as f64)
        );
    } else {
        println!("ratio ours/runc: not available (our side SKIPPED, see above)");
    }
    println!(
        "command: make bench   (PREDICTIVE_BENCH_RUNS={runs}, containerd {})",
        settings.containerd
    );
}
