//! Runs one pipeline under one policy on the private containerd: admits tasks while the sum of allocations fits
//! the host capacity (the same rule for every policy), samples every running container's cgroup files, measures
//! the web server's latency from a client thread, retries an OOM-killed task with 1.5x its memory limit (what a
//! user, or VPA's OOM bump, would do; at most 3 attempts), and returns what it saw.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::api::{Explain, HistoryPoint};
use broker::client::Client;
use predictive_e2e::Containerd;
use predictive_e2e::cmd::{Bg, wait_until};
use predictive_e2e::settings::IMAGE;

use crate::metrics::{self, Point, Weighted};
use crate::workload::TaskDef;

/// How the limits are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// History rounds: static limits, mode observe (the broker records, changes nothing).
    History,
    /// The careful user's limits, mode off.
    Static,
    /// P90 + 15% of the task type's recorded history, set at start, mode off.
    Vpa,
    /// Mode enforce under the static limits: the broker predicts and adjusts live.
    Ours,
}

impl Policy {
    /// Name in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Policy::History => "history",
            Policy::Static => "static",
            Policy::Vpa => "vpa-like",
            Policy::Ours => "ours",
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Policy::History => "observe",
            Policy::Static | Policy::Vpa => "off",
            Policy::Ours => "enforce",
        }
    }
}

/// CPU cores and memory bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub mem: u64,
}

impl Limits {
    fn fits_with(self, other: Limits, cap: Limits) -> bool {
        self.cpu + other.cpu <= cap.cpu + 1e-6 && self.mem + other.mem <= cap.mem
    }
}

/// What the suite knows of each task type from the runs it measured: VPA-like's input.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Per task type: peak working set of each run (an OOM-killed run counts as 1.2x its limit, VPA's bump).
    peaks: HashMap<String, Vec<f64>>,
    /// Per task type: every CPU usage sample, cores.
    cpu: HashMap<String, Vec<f64>>,
}

impl Recorded {
    /// Adds every attempt of a run: its peak (an OOM-killed attempt as 1.2x its limit, VPA's OOM bump) and its
    /// CPU samples.
    pub fn add_run(&mut self, r: &RunResult) {
        for a in &r.attempts {
            let peak = if a.oom {
                a.limits.mem as f64 * 1.2
            } else {
                a.peak_ws as f64
            };
            self.peaks
                .entry(a.task_type.clone())
                .or_default()
                .push(peak);
            self.cpu
                .entry(a.task_type.clone())
                .or_default()
                .extend(&a.cpu_samples);
        }
    }

    /// VPA's initial recommendation: P90 + 15% of the history (memory: peaks; CPU: usage samples), with the
    /// broker's floors (16 MiB, 0.05 cores). `None` without history.
    pub fn vpa(&self, task_type: &str) -> Option<Limits> {
        let mem = metrics::percentile(self.peaks.get(task_type)?, 0.9)? * 1.15;
        let cpu = metrics::percentile(self.cpu.get(task_type)?, 0.9)? * 1.15;
        let mib = (1u64 << 20) as f64;
        Some(Limits {
            cpu: ((cpu * 100.0).ceil() / 100.0).max(0.05),
            mem: ((mem / mib).ceil() * mib).max(16.0 * mib) as u64,
        })
    }
}

/// One read of a container's v1 cgroup files.
#[derive(Debug, Clone, Copy)]
struct Probe {
    t: f64,
    /// usage_in_bytes less inactive file pages (the working set, as the kubelet counts it).
    ws: u64,
    mem_limit: u64,
    cpu_ns: u64,
    quota: i64,
    period: u64,
    throttled_ns: u64,
    oom_kills: u64,
    frozen: bool,
}

impl Probe {
    fn alloc(&self, cap: Limits) -> Limits {
        Limits {
            cpu: if self.quota > 0 && self.period > 0 {
                self.quota as f64 / self.period as f64
            } else {
                cap.cpu
            },
            mem: self.mem_limit.min(cap.mem),
        }
    }
}

fn read(c: &Containerd, ctrl: &str, id: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(c.cgroup_dir(ctrl, id).join(file)).ok()
}

fn read_num<T: std::str::FromStr>(c: &Containerd, ctrl: &str, id: &str, file: &str) -> Option<T> {
    read(c, ctrl, id, file)?.trim().parse().ok()
}

fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn probe(c: &Containerd, id: &str, t: f64) -> Option<Probe> {
    let usage: u64 = read_num(c, "memory", id, "memory.usage_in_bytes")?;
    let stat = read(c, "memory", id, "memory.stat")?;
    let inactive = field(&stat, "total_inactive_file").unwrap_or(0);
    let cpu_stat = read(c, "cpu", id, "cpu.stat").unwrap_or_default();
    Some(Probe {
        t,
        ws: usage.saturating_sub(inactive),
        mem_limit: read_num(c, "memory", id, "memory.limit_in_bytes")?,
        cpu_ns: read_num(c, "cpuacct", id, "cpuacct.usage")?,
        quota: read_num(c, "cpu", id, "cpu.cfs_quota_us").unwrap_or(-1),
        period: read_num(c, "cpu", id, "cpu.cfs_period_us").unwrap_or(100_000),
        throttled_ns: field(&cpu_stat, "throttled_time").unwrap_or(0),
        oom_kills: read(c, "memory", id, "memory.oom_control")
            .and_then(|s| field(&s, "oom_kill"))
            .unwrap_or(0),
        frozen: read(c, "freezer", id, "freezer.state").is_some_and(|s| s.trim() == "FROZEN"),
    })
}

/// One attempt of one task, as measured.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Task type.
    pub task_type: String,
    /// Pipeline name (`etl-a`).
    pub name: String,
    /// Exit code of `ctr run` (the container's).
    pub code: i32,
    /// Killed by the kernel's OOM killer.
    pub oom: bool,
    /// Limits given at start.
    pub limits: Limits,
    /// Allocation at its first sample (for ours: the broker's initial allocation).
    pub initial: Option<Limits>,
    /// Seconds from spawn to exit.
    pub secs: f64,
    /// Spawn, seconds since the pipeline's start.
    pub start_s: f64,
    /// Spawn to the first sample of its cgroup, seconds (`ctr run`, containerd, the shim's Create).
    pub up_s: Option<f64>,
    /// CPU time used, seconds (cpuacct.usage at the last sample).
    pub cpu_s: f64,
    /// Peak working set sampled.
    pub peak_ws: u64,
    /// CPU throttled time, seconds (cpu.stat throttled_time at the last sample).
    pub throttled_s: f64,
    /// Limit file changes observed (memory limit, CPU quota, freezer state).
    pub limit_changes: usize,
    /// Time-weighted memory allocation and use.
    pub mem: Weighted,
    /// Time-weighted CPU allocation and use.
    pub cpu: Weighted,
    /// CPU usage samples, cores.
    pub cpu_samples: Vec<f64>,
}

/// What one pipeline run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The policy.
    pub policy: Policy,
    /// Round (0-based, history rounds first).
    pub round: usize,
    /// First batch start to last batch exit, seconds.
    pub makespan_s: f64,
    /// Every attempt, server included.
    pub attempts: Vec<Attempt>,
    /// Request latencies to the server while the batch ran, ms (a failed request counts as its timeout).
    pub latencies_ms: Vec<f64>,
    /// Failed requests.
    pub request_errors: usize,
    /// Broker decisions about this run's containers (ours), from `explain`.
    pub decisions: usize,
    /// Tasks that failed (non-zero exit after the last attempt) or were skipped.
    pub failed: Vec<String>,
    /// Sum over running containers per sample: for the SVG.
    pub points: Vec<HistoryPoint>,
    /// Start of the run, ms since the epoch.
    pub started_ms: u64,
}

/// The suite's fixed settings.
pub struct Env<'a> {
    /// The private containerd (with its broker config).
    pub c: &'a Containerd,
    /// Host capacity the runner admits against.
    pub cap: Limits,
    /// Sampling and scheduling period.
    pub interval: Duration,
    /// A task is killed after this long (and counted as failed).
    pub task_timeout: Duration,
    /// Usage-based admission, the same for every policy (`PREDICTIVE_SUITE_ADMIT_IDLE_CPU`): a ready task starts
    /// while memory fits by allocation and the running containers' measured CPU leaves at least this many cores of
    /// the capacity idle, whatever CPU its limit asks (quotas may then sum past the host, as Kubernetes limits do,
    /// and the kernel's shares divide the cores). Measured rounds only: the history rounds stay as by default.
    /// `None`: admission by allocation (the default).
    pub admit_idle_cpu: Option<f64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /` on 127.0.0.1:port every `every` until `stop`; latencies in ms (a failure counts as the timeout).
fn client(
    port: u16,
    every: Duration,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<(Vec<f64>, usize)>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let timeout = Duration::from_secs(2);
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = get(addr, timeout);
            let ms = if ok {
                start.elapsed().as_secs_f64() * 1000.0
            } else {
                timeout.as_secs_f64() * 1000.0
            };
            {
                let mut o = out.lock().expect("latencies poisoned");
                o.0.push(ms);
                if !ok {
                    o.1 += 1;
                }
            }
            std::thread::sleep(every.saturating_sub(start.elapsed()));
        }
    })
}

fn get(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut body = Vec::new();
    s.read_to_end(&mut body).is_ok() && body.starts_with(b"HTTP/1.") && body.len() > 4096
}

/// A free TCP port on 127.0.0.1 (the server binds it right after; a race with another program is unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(18_080, |a| a.port())
}

/// What is measured of one attempt while it runs.
struct Meas {
    probes: Vec<Probe>,
    spawned: Instant,
    /// Spawn, seconds since the pipeline's start.
    start_s: f64,
    limits: Limits,
    killed: bool,
}

struct Live {
    def: usize,
    bg: Bg,
    expected: Limits,
    m: Meas,
}

enum State {
    Pending,
    Running,
    Done,
    Failed,
}

/// Flags of `ctr run` for one task.
fn flags(
    def: &TaskDef,
    policy: Policy,
    pipeline: &str,
    ids: &BTreeMap<&str, String>,
    limits: Limits,
) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    let mut ann = |k: &str, v: String| {
        f.push("--annotation".to_owned());
        f.push(format!("{k}={v}"));
    };
    ann("io.predictive.mode", policy.mode().to_owned());
    ann("io.predictive.task-type", def.task_type.to_owned());
    // The server is no stage of the batch pipeline (nothing depends on it, it depends on nothing, it runs until the
    // pipeline is done): it is not a member, or its whole-pipeline lifetime would always be the critical path.
    if !def.server {
        ann("io.predictive.pipeline", pipeline.to_owned());
    }
    ann("io.predictive.priority", def.priority.to_string());
    if !def.deps.is_empty() {
        let deps: Vec<&str> = def.deps.iter().map(|d| ids[d].as_str()).collect();
        ann("io.predictive.depends-on", deps.join(","));
    }
    if let Some(b) = def.input_bytes {
        ann("io.predictive.input-bytes", b.to_string());
    }
    f.extend([
        "--cpus".to_owned(),
        format!("{:.2}", limits.cpu),
        "--memory-limit".to_owned(),
        limits.mem.to_string(),
    ]);
    if def.server {
        f.push("--net-host".to_owned());
    }
    if def.stress {
        // The host's stress-ng and the libraries it links, read-only (the image is busybox only).
        for (src, dst) in [
            ("/usr/bin/stress-ng", "/usr/bin/stress-ng"),
            ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"),
            ("/usr/lib64", "/lib64"),
        ] {
            f.push("--mount".to_owned());
            f.push(format!("type=bind,src={src},dst={dst},options=rbind:ro"));
        }
    }
    f
}

fn spawn(env: &Env, id: &str, flags: &[String], cmd: &[String]) -> Bg {
    let rt = env.c.runtime().to_owned();
    let mut args: Vec<&str> = vec!["run", "--rm", "--runtime", &rt];
    args.extend(flags.iter().map(String::as_str));
    args.extend([IMAGE, id]);
    args.extend(cmd.iter().map(String::as_str));
    Bg::spawn(env.c.ctr_cmd(&args))
}

fn finish_attempt(def: &TaskDef, live: &Meas, code: i32, cap: Limits) -> Attempt {
    let p = &live.probes;
    let oom_counter = p.last().is_some_and(|x| x.oom_kills > 0);
    let mem_points: Vec<Point> = p
        .iter()
        .map(|x| Point {
            t: x.t,
            alloc: x.alloc(cap).mem as f64,
            used: x.ws as f64,
        })
        .collect();
    let cpu_points: Vec<Point> = p
        .windows(2)
        .map(|w| Point {
            t: w[1].t,
            alloc: w[1].alloc(cap).cpu,
            used: metrics::cores(w[0].cpu_ns, w[0].t, w[1].cpu_ns, w[1].t),
        })
        .collect();
    let first_dt = |pts: &[Point], fallback: f64| {
        if pts.len() >= 2 {
            pts[1].t - pts[0].t
        } else {
            fallback
        }
    };
    let mem_limits: Vec<u64> = p.iter().map(|x| x.mem_limit).collect();
    let quotas: Vec<i64> = p.iter().map(|x| x.quota).collect();
    let frozen: Vec<bool> = p.iter().map(|x| x.frozen).collect();
    Attempt {
        task_type: def.task_type.to_owned(),
        name: def.name.to_owned(),
        code,
        oom: oom_counter || (code == 137 && !live.killed),
        limits: live.limits,
        initial: p.first().map(|x| x.alloc(cap)),
        secs: live.spawned.elapsed().as_secs_f64(),
        start_s: live.start_s,
        up_s: p.first().map(|x| x.t - live.start_s),
        cpu_s: p.last().map_or(0.0, |x| x.cpu_ns as f64 / 1e9),
        peak_ws: p.iter().map(|x| x.ws).max().unwrap_or(0),
        throttled_s: p.last().map_or(0.0, |x| x.throttled_ns as f64 / 1e9),
        limit_changes: metrics::changes(&mem_limits)
            + metrics::changes(&quotas)
            + metrics::changes(&frozen),
        mem: metrics::weigh(&mem_points, first_dt(&mem_points, 0.25)),
        cpu: metrics::weigh(&cpu_points, first_dt(&cpu_points, 0.25)),
        cpu_samples: cpu_points.iter().map(|x| x.used).collect(),
    }
}

/// Runs `defs` (one pipeline) under `policy`. `expect` holds, per task type, the initial allocation ours got
/// last time (admission's guess before the broker answers); `recorded` gives VPA-like its history, and holds
/// nothing of the round in progress (the caller adds a round's runs when all its policies are done).
/// CPU each container holds in leases of the host's free CPU (the broker's status), by the broker's name for the
/// container ([`Containerd::broker_id`]); empty when the broker does not answer (admission then counts the whole
/// quota, as before).
fn host_lent(cl: &mut Client) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    if let Ok(s) = cl.status() {
        for l in s.leases.iter().filter(|l| l.lender.is_none()) {
            *out.entry(l.holder.clone()).or_insert(0.0) += l.amount;
        }
    }
    out
}

/// Cores the running containers used between their last two samples.
fn used_cpu(live: &[Live]) -> f64 {
    live.iter()
        .filter_map(|l| match l.m.probes.as_slice() {
            [.., a, b] => Some(metrics::cores(a.cpu_ns, a.t, b.cpu_ns, b.t)),
            _ => None,
        })
        .sum()
}

/// Usage-based admission's guess for the containers not measured yet (fewer than two samples): the CPU of the
/// allocation their admission assumed, so two tasks are not admitted into the same idle cores before either runs.
fn starting_cpu(live: &[Live]) -> f64 {
    live.iter()
        .filter(|l| l.m.probes.len() < 2)
        .map(|l| l.expected.cpu)
        .sum()
}

pub fn run_pipeline(
    env: &Env,
    policy: Policy,
    round: usize,
    defs: &[TaskDef],
    port: u16,
    expect: &mut HashMap<String, Limits>,
    recorded: &Recorded,
) -> RunResult {
    let c = env.c;
    let started = Instant::now();
    let started_ms = now_ms();
    let t = || started.elapsed().as_secs_f64();
    let pipeline = format!("suite-{}-{round}", policy.name());
    let ids: BTreeMap<&str, String> = defs
        .iter()
        .map(|d| (d.name, c.id(&format!("{}-{}", policy.name(), d.name))))
        .collect();
    let mut limits: Vec<Limits> = defs
        .iter()
        .map(|d| {
            let s = Limits {
                cpu: d.static_cpu,
                mem: d.static_mem,
            };
            match policy {
                Policy::Vpa => recorded.vpa(d.task_type).unwrap_or(s),
                _ => s,
            }
        })
        .collect();
    let mut state: Vec<State> = defs.iter().map(|_| State::Pending).collect();
    let mut tries = vec![0u32; defs.len()];
    let mut broker_client = Client::new(c.broker_socket(), Duration::from_secs(2));
    let mut live: Vec<Live> = Vec::new();
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut points: Vec<HistoryPoint> = Vec::new();
    let mut first_batch: Option<f64> = None;
    let mut last_batch_end = 0.0;

    let start_task = |i: usize, limits: Limits, live: &mut Vec<Live>, expected: Limits| {
        let d = &defs[i];
        let f = flags(d, policy, &pipeline, &ids, limits);
        live.push(Live {
            def: i,
            bg: spawn(env, &ids[d.name], &f, &d.cmd),
            expected,
            m: Meas {
                probes: Vec::new(),
                spawned: Instant::now(),
                start_s: started.elapsed().as_secs_f64(),
                limits,
                killed: false,
            },
        });
    };

    // The server first, and only once it answers.
    let server = defs.iter().position(|d| d.server);
    let lat = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut client_thread = None;
    if let Some(s) = server {
        start_task(s, limits[s], &mut live, limits[s]);
        state[s] = State::Running;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_until(Duration::from_secs(30), || {
            get(addr, Duration::from_millis(500)).then_some(())
        });
        if up.is_none() {
            println!("  WARNING: the web server did not answer on port {port} within 30 s");
        }
        client_thread = Some(client(
            port,
            Duration::from_millis(50),
            stop.clone(),
            lat.clone(),
        ));
    }

    loop {
        let tick = Instant::now();
        let now = t();
        // Sample.
        let mut agg = HistoryPoint {
            at_ms: now_ms(),
            cpu_alloc_cores: Some(0.0),
            memory_alloc_bytes: Some(0),
            ..HistoryPoint::default()
        };
        for l in &mut live {
            if let Some(p) = probe(c, &ids[defs[l.def].name], now) {
                let a = p.alloc(env.cap);
                if l.m.probes.is_empty() && policy == Policy::Ours {
                    expect.insert(defs[l.def].task_type.to_owned(), a);
                }
                if let Some(prev) = l.m.probes.last() {
                    agg.cpu_cores += metrics::cores(prev.cpu_ns, prev.t, p.cpu_ns, p.t);
                }
                agg.memory_bytes += p.ws;
                agg.cpu_alloc_cores = agg.cpu_alloc_cores.map(|x| x + a.cpu);
                agg.memory_alloc_bytes = agg.memory_alloc_bytes.map(|x| x + a.mem);
                l.m.probes.push(p);
            }
        }
        points.push(agg);

        // Exits.
        let mut k = 0;
        while k < live.len() {
            if !live[k].bg.exited() {
                if !live[k].m.killed && live[k].m.spawned.elapsed() > env.task_timeout {
                    let id = &ids[defs[live[k].def].name];
                    println!("  {id}: over {:?}, killed", env.task_timeout);
                    let _ = c.ctr(&["t", "kill", "-s", "SIGKILL", id]);
                    live[k].m.killed = true;
                }
                k += 1;
                continue;
            }
            let Live { def: i, bg, m, .. } = live.remove(k);
            let out = bg.wait(Duration::from_secs(30));
            let a = finish_attempt(&defs[i], &m, out.code, env.cap);
            tries[i] += 1;
            if !defs[i].server {
                last_batch_end = t();
            }
            let oom = a.oom;
            attempts.push(a);
            if oom && tries[i] < 3 && !defs[i].server {
                let mib = (1u64 << 20) as f64;
                limits[i].mem = ((limits[i].mem as f64 * 1.5 / mib).ceil() * mib) as u64;
                println!(
                    "  {}: OOM-killed, retrying with memory limit {} MiB",
                    defs[i].name,
                    limits[i].mem >> 20
                );
                state[i] = State::Pending;
            } else if out.code == 0 || (defs[i].server && m.killed) {
                state[i] = State::Done;
            } else {
                println!(
                    "  {}: exited {} (attempt {}): {}",
                    defs[i].name,
                    out.code,
                    tries[i],
                    out.stderr.lines().last().unwrap_or("")
                );
                state[i] = State::Failed;
                failed.push(defs[i].name.to_owned());
            }
        }

        // Tasks whose dependencies failed are skipped.
        for i in 0..defs.len() {
            if matches!(state[i], State::Pending)
                && defs[i].deps.iter().any(|d| {
                    let j = defs.iter().position(|x| x.name == *d).expect("known dep");
                    matches!(state[j], State::Failed)
                })
            {
                state[i] = State::Failed;
                failed.push(format!("{} (skipped)", defs[i].name));
            }
        }

        // Admission: highest priority first, while the sum of allocations fits the capacity.
        let mut ready: Vec<usize> = (0..defs.len())
            .filter(|&i| {
                matches!(state[i], State::Pending)
                    && defs[i].deps.iter().all(|d| {
                        let j = defs.iter().position(|x| x.name == *d).expect("known dep");
                        matches!(state[j], State::Done)
                    })
            })
            .collect();
        ready.sort_by_key(|&i| (-defs[i].priority, i));
        // Ours' containers may hold CPU lent from the host's free pool; the broker takes it back the moment a
        // task registers, so it is not capacity in use (a scheduler counts what a pod owns, not what it borrowed).
        let lent = if policy == Policy::Ours && !ready.is_empty() {
            host_lent(&mut broker_client)
        } else {
            HashMap::new()
        };
        for i in ready {
            let in_use = live.iter().fold(Limits::default(), |acc, l| {
                let a = l.m.probes.last().map_or(l.expected, |p| p.alloc(env.cap));
                let borrowed = lent
                    .get(&env.c.broker_id(&ids[defs[l.def].name]))
                    .copied()
                    .unwrap_or(0.0);
                Limits {
                    cpu: acc.cpu + (a.cpu - borrowed).max(0.0),
                    mem: acc.mem + a.mem,
                }
            });
            // Ours' guess before its container reports: the broker's initial allocation of the type last time;
            // before ours' first run of a type (no predicted allocation seen yet), VPA-like's recommendation from
            // the same history (the broker predicts from it too), not the spec's limits, which ours never gets
            // once the type has a model. The allocation in force replaces the guess at the container's first sample.
            let want = match policy {
                Policy::Ours => expect
                    .get(defs[i].task_type)
                    .copied()
                    .or_else(|| recorded.vpa(defs[i].task_type))
                    .unwrap_or(limits[i]),
                _ => limits[i],
            };
            let batch_running = live.iter().any(|l| !defs[l.def].server);
            let fits = match env.admit_idle_cpu.filter(|_| policy != Policy::History) {
                Some(idle) => {
                    in_use.mem + want.mem <= env.cap.mem
                        && env.cap.cpu - used_cpu(&live) - starting_cpu(&live) >= idle - 1e-6
                }
                None => in_use.fits_with(want, env.cap),
            };
            if fits || !batch_running {
                start_task(i, limits[i], &mut live, want);
                state[i] = State::Running;
                first_batch.get_or_insert(t());
            }
        }

        let batch_left = (0..defs.len())
            .any(|i| !defs[i].server && matches!(state[i], State::Pending | State::Running));
        if !batch_left {
            break;
        }
        std::thread::sleep(env.interval.saturating_sub(tick.elapsed()));
    }

    // Stop the client, then the server.
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = client_thread {
        let _ = h.join();
    }
    if let Some(s) = server {
        let id = &ids[defs[s].name];
        for l in &mut live {
            if l.def == s {
                l.m.killed = true;
            }
        }
        let _ = c.ctr(&["t", "kill", "-s", "SIGKILL", id]);
        for Live { def, bg, m, .. } in live.drain(..) {
            let out = bg.wait(Duration::from_secs(30));
            attempts.push(finish_attempt(&defs[def], &m, out.code, env.cap));
        }
    }
    // The broker's decisions about this run: counted for ours; in the history rounds (observe) their first CPU
    // and memory values are the initial allocation ours would get, admission's guess for ours' first round.
    let mut decisions = 0;
    if matches!(policy, Policy::Ours | Policy::History) {
        let mut cl = Client::new(c.broker_socket(), Duration::from_secs(5));
        for d in defs {
            let Ok(ds) = cl.explain(&Explain {
                container_id: Some(ids[d.name].clone()),
                limit: Some(10_000),
                before_seq: None,
            }) else {
                continue;
            };
            decisions += ds.decisions.len();
            if policy == Policy::Ours {
                // Every decision, at its time in the pipeline: where ours spent or lost time.
                for x in &ds.decisions {
                    let fmt = |v: Option<f64>| match v {
                        Some(v) if x.resource == "memory" => {
                            format!("{:.0} MiB", v / (1u64 << 20) as f64)
                        }
                        Some(v) => format!("{v:.2}"),
                        None => "-".to_owned(),
                    };
                    println!(
                        "    broker, {} at {:.1} s: {} {} -> {} ({})",
                        d.name,
                        x.at_ms.saturating_sub(started_ms) as f64 / 1000.0,
                        x.resource,
                        fmt(x.old_value),
                        fmt(x.new_value),
                        x.reason.chars().take(110).collect::<String>()
                    );
                }
            }
            if policy == Policy::History {
                let first = |r: &str| {
                    ds.decisions
                        .iter()
                        .find(|x| x.resource == r && x.new_value.is_some())
                        .and_then(|x| x.new_value)
                };
                // A cold start's allocation (the spec's limits: the history rounds run before the broker has a
                // model) says nothing of what ours will get; admission then guesses as below.
                let predicted = ds
                    .decisions
                    .iter()
                    .find(|x| x.resource == "cpu")
                    .is_some_and(|x| !x.reason.starts_with("cold start"));
                if let (true, Some(cpu), Some(mem)) = (predicted, first("cpu"), first("memory")) {
                    expect.insert(
                        d.task_type.to_owned(),
                        Limits {
                            cpu,
                            mem: mem as u64,
                        },
                    );
                }
            }
        }
    }
    let (latencies_ms, request_errors) = {
        let l = lat.lock().expect("latencies poisoned");
        (l.0.clone(), l.1)
    };
    RunResult {
        policy,
        round,
        makespan_s: first_batch.map_or(0.0, |f| last_batch_end - f),
        attempts,
        latencies_ms,
        request_errors,
        decisions,
        failed,
        points,
        started_ms,
    }
}
