//! The workload suite on real containers (issue 6, "Effectiveness"): a pipeline of real programs (stress-ng CPU
//! and memory phases, a build-like job, data jobs whose memory grows with their input, a busybox httpd whose p99
//! is measured while the others run) on a private containerd through our shim, under three policies on the same
//! host capacity:
//!
//! - **static**: the limits a careful user would set (known peak x 1.5), `io.predictive.mode=off`;
//! - **vpa-like**: P90 + 15% of the task type's history as measured by this suite (peak working set per run;
//!   CPU usage samples), set at start, no live changes (mode off);
//! - **ours**: mode enforce, spec limits = static's (the user's ceiling); the broker predicts and adjusts live.
//!
//! First `PREDICTIVE_SUITE_HISTORY` rounds run with static limits in mode observe, so the broker records runs
//! and trains models and the suite records VPA-like's history; then each of `PREDICTIVE_SUITE_ROUNDS` rounds
//! runs the same pipeline once per policy (the order rotates each round). Prints figures per policy and ratios
//! against static and VPA-like, and writes `target/bench/suite-<policy>.svg` (allocation and usage summed over
//! the policy's containers in its last round). Figures, not pass/fail.
//!
//! Env: PREDICTIVE_SUITE_QUICK=1 (3 measured rounds, durations and inputs x0.5), PREDICTIVE_SUITE_HISTORY (3),
//! PREDICTIVE_SUITE_ROUNDS (2), PREDICTIVE_SUITE_SCALE (1.0; x0.5 quick), PREDICTIVE_SUITE_CPUS (2.0),
//! PREDICTIVE_SUITE_MEMORY_MIB (1536), PREDICTIVE_SUITE_CRITICAL_WEIGHT (the broker's critical-path CPU weight;
//! 1, the default, is off), PREDICTIVE_SUITE_ADMIT_IDLE_CPU (unset: admission by allocation; a number of cores:
//! usage-based admission for every policy's measured rounds, [`runner::Env::admit_idle_cpu`]), plus the harness's
//! PREDICTIVE_E2E_CONTAINERD / PREDICTIVE_E2E_SHIM_DIR.

#[path = "suite/metrics.rs"]
mod metrics;
#[path = "suite/runner.rs"]
mod runner;
#[path = "suite/workload.rs"]
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use broker::api::History;
use broker::client::Client;
use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;

use metrics::Weighted;
use runner::{Env, Limits, Policy, Recorded, RunResult};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Figures of one policy over its measured rounds.
#[derive(Default)]
struct Summary {
    makespans: Vec<f64>,
    mem: Weighted,
    cpu: Weighted,
    oom_kills: usize,
    throttled_s: f64,
    latencies: Vec<f64>,
    request_errors: usize,
    limit_changes: usize,
    decisions: usize,
    failed: Vec<String>,
    peak_alloc_mem: u64,
}

impl Summary {
    fn add(&mut self, r: &RunResult) {
        self.makespans.push(r.makespan_s);
        for a in &r.attempts {
            self.mem.add(a.mem);
            self.cpu.add(a.cpu);
            self.oom_kills += usize::from(a.oom);
            self.throttled_s += a.throttled_s;
            self.limit_changes += a.limit_changes;
        }
        self.latencies.extend(&r.latencies_ms);
        self.request_errors += r.request_errors;
        self.decisions += r.decisions;
        self.failed.extend(r.failed.iter().cloned());
        self.peak_alloc_mem = self.peak_alloc_mem.max(
            r.points
                .iter()
                .filter_map(|p| p.memory_alloc_bytes)
                .max()
                .unwrap_or(0),
        );
    }

    fn makespan(&self) -> Option<f64> {
        metrics::spread(&self.makespans).map(|s| s.0)
    }

    fn p99(&self) -> Option<f64> {
        metrics::percentile(&self.latencies, 0.99)
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// `mean (min-max)` of `v` with `digits` decimals, or `-`.
fn spread_text(v: &[f64], digits: usize) -> String {
    match metrics::spread(v) {
        None => "-".to_owned(),
        Some((m, lo, hi)) if v.len() == 1 || lo == hi => format!("{m:.digits$}"),
        Some((m, lo, hi)) => format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})"),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

fn print_run(r: &RunResult) {
    let mut mem = Weighted::default();
    let mut cpu = Weighted::default();
    for a in &r.attempts {
        mem.add(a.mem);
        cpu.add(a.cpu);
    }
    let ooms = r.attempts.iter().filter(|a| a.oom).count();
    println!(
        "  round {} {}: makespan {:.1} s, memory slack {}, CPU slack {}, OOM kills {ooms}, throttled {:.1} s, \
         p99 {} ms ({} requests, {} failed), limit changes {}, broker decisions {}{}",
        r.round,
        r.policy.name(),
        r.makespan_s,
        pct(mem.slack()),
        pct(cpu.slack()),
        r.attempts.iter().map(|a| a.throttled_s).sum::<f64>(),
        opt(metrics::percentile(&r.latencies_ms, 0.99), 1),
        r.latencies_ms.len(),
        r.request_errors,
        r.attempts.iter().map(|a| a.limit_changes).sum::<usize>(),
        r.decisions,
        if r.failed.is_empty() {
            String::new()
        } else {
            format!(", FAILED: {}", r.failed.join(", "))
        }
    );
    for a in &r.attempts {
        println!(
            "    {:<7} {:<13} {:>5.1}-{:>5.1} s ({:>4.1} s, up {}, CPU {:>4.1} s)  limits {:.2} cores / {:>4} MiB  initial {}  peak {:>4} MiB  throttled {:>5.1} s  changes {:>3}  exit {}{}",
            a.name,
            a.task_type,
            a.start_s,
            a.start_s + a.secs,
            a.secs,
            a.up_s.map_or("-".to_owned(), |u| format!("{u:.1} s")),
            a.cpu_s,
            a.limits.cpu,
            a.limits.mem >> 20,
            a.initial.map_or("-".to_owned(), |i| format!(
                "{:.2} cores / {:>4} MiB",
                i.cpu,
                i.mem >> 20
            )),
            a.peak_ws >> 20,
            a.throttled_s,
            a.limit_changes,
            a.code,
            if a.oom { " OOM" } else { "" }
        );
    }
}

fn write_svg(dir: &Path, r: &RunResult) -> std::io::Result<std::path::PathBuf> {
    let h = History {
        task_key: format!(
            "suite {} (sum over the pipeline's containers, round {})",
            r.policy.name(),
            r.round
        ),
        container_id: None,
        live: false,
        started_at_ms: Some(r.started_ms),
        points: r.points.clone(),
        prediction: None,
        total_points: None,
        next_offset: None,
    };
    // The chart is `predictivectl report`'s, titled for a task type; a policy's sum has no predicted band.
    let svg = predictivectl::svg(&h, "")
        .replace("task type suite ", "workload suite, policy ")
        .replace("; cold start: no prediction", "; no predicted band (a sum)");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("suite-{}.svg", r.policy.name()));
    std::fs::write(&path, svg)?;
    Ok(path)
}

fn main() {
    let quick = std::env::var("PREDICTIVE_SUITE_QUICK").is_ok_and(|v| v == "1");
    let history: usize = env_or("PREDICTIVE_SUITE_HISTORY", 3);
    // Quick runs have short pipelines whose makespan moves with the load: three rounds, so each policy runs once
    // in each position of the rotating order.
    let rounds: usize = env_or("PREDICTIVE_SUITE_ROUNDS", if quick { 3 } else { 2 });
    let scale: f64 = env_or("PREDICTIVE_SUITE_SCALE", if quick { 0.5 } else { 1.0 });
    let cap = Limits {
        cpu: env_or("PREDICTIVE_SUITE_CPUS", 2.0),
        mem: env_or::<u64>("PREDICTIVE_SUITE_MEMORY_MIB", 1536) << 20,
    };
    let admission = match std::env::var("PREDICTIVE_SUITE_ADMIT_IDLE_CPU") {
        Err(_) => None,
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(c) if c.is_finite() && (0.0..=cap.cpu).contains(&c) => Some(c),
            _ => {
                eprintln!(
                    "suite: PREDICTIVE_SUITE_ADMIT_IDLE_CPU={v:?} is not a number of cores from 0 to {}",
                    cap.cpu
                );
                std::process::exit(2);
            }
        },
    };
    if Containerd::cgroup_v2_host() {
        println!("SKIPPED: suite: reads cgroup v1 files; this host is cgroup v2 only");
        return;
    }
    if !Path::new("/usr/bin/stress-ng").is_file() {
        println!("SKIPPED: suite: /usr/bin/stress-ng not found (apt-get install stress-ng)");
        return;
    }
    // The broker's pool is the runner's capacity: no reserve, a short tick, a model after 3 runs.
    let toml = format!(
        "tick_ms = 500\nretrain_check_ms = 200\nhost_cpu_cores = {:.2}\nhost_memory_bytes = {}\n\
         [controller]\nhost_reserve_cpu = 0.0\nhost_reserve_memory_bytes = 0\ncritical_path_cpu_weight = {}\n\
         [retrain]\nnew_runs = 1\nmin_runs = 3\n",
        cap.cpu,
        cap.mem,
        // An A/B of the critical path's CPU weight (1 = off); the broker's default otherwise.
        env_or::<f64>("PREDICTIVE_SUITE_CRITICAL_WEIGHT", 1.0)
    );
    let Some(c) = Containerd::start_with_broker("suite", &toml) else {
        return;
    };
    if !c.settings.is_predictive() {
        println!("SKIPPED: suite: runtime {} has no broker", c.runtime());
        c.finish();
        return;
    }
    let total_rounds = history + rounds;
    let began = Instant::now();
    println!(
        "suite: containerd {} ({}), capacity {:.2} cores / {} MiB, {history} history rounds + {rounds} measured \
         rounds x 3 policies, scale {scale}, admission {}",
        c.settings.containerd,
        c.dir.display(),
        cap.cpu,
        cap.mem >> 20,
        admission.map_or("by allocation".to_owned(), |c| format!(
            "by use (a task starts while {c:.2} cores are idle)"
        ))
    );
    let env = Env {
        c: &c,
        cap,
        interval: Duration::from_millis(250),
        task_timeout: Duration::from_secs_f64(240.0 * scale.max(0.5)),
        admit_idle_cpu: admission,
    };
    let mut expect: HashMap<String, Limits> = HashMap::new();
    let mut recorded = Recorded::default();
    for round in 0..history {
        let port = runner::free_port();
        let defs = workload::pipeline(round, total_rounds, scale, port);
        let r = runner::run_pipeline(
            &env,
            Policy::History,
            round,
            &defs,
            port,
            &mut expect,
            &recorded,
        );
        print_run(&r);
        recorded.add_run(&r);
    }
    // Wait for the broker's models (3 runs of each task type, retrained after each run).
    let mut client = Client::new(c.broker_socket(), Duration::from_secs(5));
    let types = [
        "suite-web",
        "suite-phases",
        "suite-build",
        "suite-etl",
        "suite-report",
    ];
    let modelled = wait_until(Duration::from_secs(20), || {
        let m = client.models().ok()?;
        let have: Vec<String> = m
            .task_types
            .iter()
            .filter(|t| t.model_version.is_some())
            .map(|t| t.task_key.clone())
            .collect();
        types
            .iter()
            .all(|t| have.iter().any(|h| h == t))
            .then_some(have)
    });
    match modelled {
        Some(h) => println!("suite: broker has models for {h:?}"),
        None => println!(
            "suite: WARNING: not every task type has a model yet: {:?}",
            client.models().ok()
        ),
    }
    let policies = [Policy::Static, Policy::Vpa, Policy::Ours];
    let mut results: BTreeMap<Policy, Vec<RunResult>> = BTreeMap::new();
    for j in 0..rounds {
        let round = history + j;
        for k in 0..3 {
            let policy = policies[(j + k) % 3];
            let port = runner::free_port();
            let defs = workload::pipeline(round, total_rounds, scale, port);
            if policy == Policy::Vpa {
                for d in &defs {
                    if let Some(l) = recorded.vpa(d.task_type) {
                        println!(
                            "  vpa-like {}: {:.2} cores / {} MiB (static {:.2} / {} MiB)",
                            d.name,
                            l.cpu,
                            l.mem >> 20,
                            d.static_cpu,
                            d.static_mem >> 20
                        );
                    }
                }
            }
            let r = runner::run_pipeline(&env, policy, round, &defs, port, &mut expect, &recorded);
            print_run(&r);
            results.entry(policy).or_default().push(r);
        }
        // VPA-like learns a round's runs once the round is over: no policy sees its own round's inputs.
        for rs in results.values() {
            if let Some(r) = rs.last() {
                recorded.add_run(r);
            }
        }
    }
    let out_dir = c.settings.workspace.join("target/bench");
    let leaks = c.finish_report();
    for l in &leaks {
        println!("WARNING: left on the host after the suite (scrubbed): {l}");
    }

    let sum: BTreeMap<Policy, Summary> = results
        .iter()
        .map(|(p, rs)| {
            let mut s = Summary::default();
            for r in rs {
                s.add(r);
            }
            (*p, s)
        })
        .collect();
    println!();
    println!(
        "| policy | makespan s (mean of {rounds}, min-max) | memory slack | CPU slack | OOM kills | CPU throttled s | server p99 ms | \
         server p50 ms | requests (failed) | limit changes (cgroup files) | broker decisions | peak memory allocated MiB | failed |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for p in policies {
        let Some(s) = sum.get(&p) else { continue };
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            p.name(),
            spread_text(&s.makespans, 1),
            pct(s.mem.slack()),
            pct(s.cpu.slack()),
            s.oom_kills,
            s.throttled_s,
            opt(s.p99(), 1),
            opt(metrics::percentile(&s.latencies, 0.5), 1),
            s.latencies.len(),
            s.request_errors,
            s.limit_changes,
            s.decisions,
            s.peak_alloc_mem >> 20,
            if s.failed.is_empty() {
                "-".to_owned()
            } else {
                s.failed.join(", ")
            }
        );
    }
    println!();
    println!(
        "| ratio | makespan (ratio of means) | makespan (per-round pairs: mean, min-max) | memory slack | CPU slack | OOM kills | CPU throttled | server p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (a, b) in [
        (Policy::Ours, Policy::Static),
        (Policy::Ours, Policy::Vpa),
        (Policy::Vpa, Policy::Static),
    ] {
        let (Some(x), Some(y)) = (sum.get(&a), sum.get(&b)) else {
            continue;
        };
        println!(
            "| {} / {} | {} | {} | {} | {} | {} vs {} | {} | {} |",
            a.name(),
            b.name(),
            metrics::ratio(x.makespan(), y.makespan()),
            spread_text(&metrics::paired_ratios(&x.makespans, &y.makespans), 2),
            metrics::ratio(x.mem.slack(), y.mem.slack()),
            metrics::ratio(x.cpu.slack(), y.cpu.slack()),
            x.oom_kills,
            y.oom_kills,
            metrics::ratio(Some(x.throttled_s), Some(y.throttled_s)),
            metrics::ratio(x.p99(), y.p99()),
        );
    }
    println!();
    for p in policies {
        if let Some(r) = results.get(&p).and_then(|rs| rs.last()) {
            match write_svg(&out_dir, r) {
                Ok(path) => println!("suite: {} chart: {}", p.name(), path.display()),
                Err(e) => println!("suite: WARNING: writing the {} chart: {e}", p.name()),
            }
        }
    }
    println!(
        "suite: {:.1} min; command: PREDICTIVE_SUITE_HISTORY={history} PREDICTIVE_SUITE_ROUNDS={rounds} \
         PREDICTIVE_SUITE_SCALE={scale} {}",
        began.elapsed().as_secs_f64() / 60.0,
        std::env::args().next().unwrap_or_default()
    );
}
