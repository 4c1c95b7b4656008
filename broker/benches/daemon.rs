//! The broker as a shim sees it, over its real socket (issue 7's benchmark):
//!
//! 1. Create-time cost of the prediction: `register` round trips (p50/p99) against a broker with trained
//!    models for 20 task types, next to the cheapest round trip the same broker serves (`status` with no
//!    task) as the baseline, so the ratio shows what predicting and allocating add.
//! 2. Broker CPU with 100 registered containers at a 1 s tick: `predictived`'s utime+stime from
//!    /proc/<pid>/stat over 30 s while 100 connections report every second, against the same broker idle
//!    (no container) over the same time. Goal: under 1% of one core.
//!
//! `cargo bench -p broker --bench daemon` (part of `make bench`). Prints figures; never fails on a slow machine.

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Daemon, now_ms, short_tempdir};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use broker::annotations;
use broker::api::{Finish, Register, Report};
use broker::client::Client;
use broker::controller::SpecLimits;
use predictor::{
    Predictor, PredictorConfig, Profile, RunMetadata, RunOutcome, RunSummary, TaskKey,
};
use runtime_hooks::{CpuSample, MemorySample, Sample};

const TYPES: usize = 20;
const REGISTERS: usize = 2000;
const CONTAINERS: usize = 100;
const WINDOW: Duration = Duration::from_secs(30);

/// Ten finished runs of each of [`TYPES`] task types, then a retrain: every Register below is warm.
fn seed(state: &Path) {
    std::fs::create_dir_all(state).expect("state dir");
    let mut cfg = PredictorConfig::default();
    cfg.train.min_runs = 3;
    let p = Predictor::open(&state.join("predictor.redb"), cfg).expect("open store");
    let now = now_ms();
    for t in 0..TYPES {
        for i in 0..10u64 {
            let id = p.allocate_run_id().expect("run id");
            p.record_run(&RunSummary {
                run_id: id,
                task_key: TaskKey::new(format!("type{t}")),
                started_at_ms: now - 3_600_000 + i * 60_000,
                meta: RunMetadata {
                    image: "busybox".to_owned(),
                    command: vec![format!("job{t}")],
                    input_bytes: (i + 1) << 20,
                    ..RunMetadata::default()
                },
                outcome: RunOutcome {
                    duration_s: 20.0 + (i % 4) as f64,
                    peak_memory_bytes: ((50 + t as u64 * 10) + i * 2) << 20,
                    cpu_seconds: 10.0,
                    cpu_p50_cores: 0.3,
                    cpu_p95_cores: 0.4 + 0.01 * i as f64,
                    ..RunOutcome::default()
                },
                profile: Some(Profile::flat()),
            })
            .expect("record run");
        }
    }
    p.retrain(now).expect("retrain");
}

/// utime + stime of the daemon, seconds.
fn cpu_s(d: &Daemon) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).expect("daemon stat");
    let after = &stat[stat.rfind(')').expect("stat comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn register(id: &str, t: usize) -> Register {
    Register {
        container_id: id.to_owned(),
        namespace: "bench".to_owned(),
        annotations: BTreeMap::from([
            (annotations::TASK_TYPE.to_owned(), format!("type{t}")),
            (annotations::INPUT_BYTES.to_owned(), "4194304".to_owned()),
        ]),
        image: "busybox".to_owned(),
        command: vec![format!("job{t}")],
        limits: SpecLimits {
            cpu_limit_cores: Some(2.0),
            memory_limit_bytes: Some(1 << 30),
            ..SpecLimits::default()
        },
        cgroup_path: format!("/bench/{id}"),
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

fn sample(t0: Instant, cpu_ns: u64, mem: u64) -> Sample {
    let mono = t0.elapsed().as_nanos() as u64 + 1;
    Sample {
        unix_ns: now_ms() * 1_000_000,
        monotonic_ns: mono,
        cpu: CpuSample {
            usage_ns: Some(cpu_ns),
            nr_periods: Some(mono / 100_000_000),
            nr_throttled: Some(0),
            throttled_ns: Some(0),
        },
        memory: MemorySample {
            usage_bytes: Some(mem),
            working_set_bytes: Some(mem),
            ..MemorySample::default()
        },
        ..Sample::default()
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that does not match skips us.
    if let Some(f) = std::env::args().skip(1).find(|a| !a.starts_with('-'))
        && !"daemon".contains(&f)
    {
        return;
    }
    let dir = short_tempdir();
    seed(&dir.path().join("state"));
    let d = Daemon::start(
        dir.path(),
        "tick_ms = 1000\nhost_cpu_cores = 64.0\nhost_memory_bytes = 274877906944\n[retrain]\nmin_runs = 3\n",
    );

    // 1. Create-time cost.
    let mut c = Client::new(d.socket(), Duration::from_secs(5));
    let mut base = Vec::with_capacity(REGISTERS);
    for _ in 0..REGISTERS {
        let t = Instant::now();
        c.status().expect("status");
        base.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut reg = Vec::with_capacity(REGISTERS);
    let mut cold = 0;
    for i in 0..REGISTERS {
        let id = format!("r{i}");
        let t = Instant::now();
        let r = c.register(&register(&id, i % TYPES)).expect("register");
        reg.push(t.elapsed().as_secs_f64() * 1e6);
        cold += usize::from(r.cold_start);
        c.finish(&Finish {
            container_id: id,
            ..Finish::default()
        })
        .expect("finish");
    }
    let (b50, b99) = (pct(&mut base, 0.5), pct(&mut base, 0.99));
    let (r50, r99) = (pct(&mut reg, 0.5), pct(&mut reg, 0.99));
    println!("daemon/register ({REGISTERS} warm Registers, {TYPES} task types, {cold} cold)");
    println!("  register round trip: p50 {r50:.0} us, p99 {r99:.0} us (shim budget 50000 us)");
    println!("  baseline (status, no tasks): p50 {b50:.0} us, p99 {b99:.0} us");
    println!(
        "  ratio: p50 {:.2}x, p99 {:.2}x; prediction + allocation adds {:.0} us at p50",
        r50 / b50,
        r99 / b99,
        r50 - b50
    );

    // 2. CPU: idle window, then 100 containers reporting every second.
    std::thread::sleep(Duration::from_secs(2));
    let idle0 = cpu_s(&d);
    std::thread::sleep(WINDOW);
    let idle = cpu_s(&d) - idle0;

    let t0 = Instant::now();
    let mut clients: Vec<(String, Client)> = (0..CONTAINERS)
        .map(|i| {
            let id = format!("live{i}");
            let mut c = Client::new(d.socket(), Duration::from_secs(5));
            c.register(&register(&id, i % TYPES))
                .expect("register live");
            (id, c)
        })
        .collect();
    let mut cpu_ns = vec![0u64; CONTAINERS];
    let mut report = |clients: &mut Vec<(String, Client)>| {
        for (i, (id, c)) in clients.iter_mut().enumerate() {
            cpu_ns[i] += 300_000_000 + (i as u64 % 7) * 10_000_000;
            let s = sample(t0, cpu_ns[i], (60 + i as u64) << 20);
            c.report(&Report {
                container_id: id.clone(),
                samples: vec![s],
                oom_events: 0,
                ..Report::default()
            })
            .expect("report");
        }
    };
    report(&mut clients);
    std::thread::sleep(Duration::from_secs(1));
    let busy0 = cpu_s(&d);
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < WINDOW {
        next += Duration::from_secs(1);
        report(&mut clients);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let busy = cpu_s(&d) - busy0;
    if let Ok(keep) = std::env::var("PREDICTIVE_BENCH_KEEP_LOG") {
        let _ = std::fs::copy(dir.path().join("stderr.log"), keep);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "daemon/cpu ({CONTAINERS} containers reporting every 1 s, tick 1 s, {:.0} s window)",
        secs
    );
    println!(
        "  predictived: {:.3}% of one core with {CONTAINERS} containers, {:.3}% idle (goal < 1%)",
        busy / secs * 100.0,
        idle / WINDOW.as_secs_f64() * 100.0
    );
    println!(
        "  ratio busy/idle: {:.1}x",
        if idle > 0.0 {
            busy / idle
        } else {
            f64::INFINITY
        }
    );
}
