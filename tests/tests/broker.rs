//! End-to-end tests of the broker through the shim (issue 7's acceptance): a private containerd per test whose
//! shims start a private `predictived` (DIR/predictive.toml), real containers, real cgroup files, and the
//! broker's own records read over its socket. Root only; `SKIPPED:` otherwise. With
//! PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2 there is no broker: these tests print why and pass.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::api::{Explain, Status};
use broker::client::Client;
use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::settings::{IMAGE, Settings};

/// Broker settings for these tests: a short tick (500 ms, times [`Settings::slow`] in the emulated guest: what
/// the tests assert is counted in ticks), retraining after every run once a task type has 3 runs.
fn fast() -> String {
    let settings = Settings::from_env();
    let (slow, budget) = (settings.slow(), settings.register_budget_ms());
    format!(
        "tick_ms = {}\nretrain_check_ms = {}\nregister_budget_ms = {budget}\n",
        500 * slow,
        200 * slow
    )
}
const RETRAIN: &str = "[retrain]\nnew_runs = 1\nmin_runs = 3\n";

/// `n` seconds on this host, `n` x [`Settings::slow`] in the emulated guest.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(Settings::from_env().slow()))
}

/// The broker's tick in these tests.
fn tick() -> Duration {
    Duration::from_millis(500 * u64::from(Settings::from_env().slow()))
}

/// Starts a containerd whose broker has [`fast`] settings plus `top` (top-level keys) and `controller` (keys
/// of the `[controller]` table).
fn start(test: &str, top: &str, controller: &str) -> Option<Containerd> {
    let toml = format!("{}{top}\n[controller]\n{controller}\n{RETRAIN}", fast());
    Containerd::start_with_own_broker(test, &toml)
}

fn client(c: &Containerd) -> Client {
    Client::new(c.broker_socket(), secs(5))
}

fn status(c: &Containerd) -> Option<Status> {
    client(c).status().ok()
}

/// Runs one container of `task_type` in the foreground and checks it exited 0.
fn run_ok(c: &Containerd, name: &str, flags: &[&str], cmd: &[&str]) -> String {
    let id = c.id(name);
    let out = c.run(&id, flags, cmd);
    assert!(out.ok(), "{name}: {out}");
    id
}

/// The runs the broker has seen of `task_type` (`None`: not known, or the broker did not answer).
fn runs_seen(c: &Containerd, task_type: &str) -> Option<u64> {
    client(c)
        .models()
        .ok()?
        .task_types
        .into_iter()
        .find(|t| t.task_key == task_type)
        .map(|t| t.runs_seen)
}

/// Waits until the broker has a model for `task_type` (3 runs recorded and retrained).
fn wait_model(c: &Containerd, task_type: &str) {
    let ok = wait_until(secs(20), || {
        let m = client(c).models().ok()?;
        m.task_types
            .iter()
            .any(|t| t.task_key == task_type && t.runs_seen >= 3 && t.model_version.is_some())
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "no model for {task_type} after 3 runs: {:?}",
        client(c).models()
    );
}

/// Three short idle runs of `task_type`, then its model: its next run starts with a small predicted CPU quota
/// (no user limit, so it may borrow above it).
fn idle_history(c: &Containerd, task_type: &str) -> Vec<String> {
    let ann = format!("io.predictive.task-type={task_type}");
    let ids = (0..3)
        .map(|i| {
            run_ok(
                c,
                &format!("idle{i}"),
                &["--annotation", &ann],
                &["sleep", "1.5"],
            )
        })
        .collect();
    wait_model(c, task_type);
    ids
}

/// A command that allocates `mb` MiB in user space (busybox awk, 1 MiB strings: page faults a v1 OOM wait can
/// hold, unlike a kernel copy that just comes back short), then runs `then`.
fn alloc(mb: u32, then: &str) -> Vec<String> {
    vec![
        "awk".to_owned(),
        format!(
            "BEGIN{{s=sprintf(\"%1048576s\",\"\"); for(n=0;n<{mb};n++) a[n]=s; print \"allocated\"; system(\"{then}\")}}"
        ),
    ]
}

/// Starts `id` spinning as task type e2e-borrower (see [`idle_history`]) and returns its CPU quota, checked to be
/// the small predicted one (no CPU limit of its own: it may borrow above it). `history`: the idle runs.
///
/// Small: at most half a core, so the spinning B is throttled at least half the time and has to borrow. The
/// prediction is usually the 0.05-core floor (the idle runs' CPU points 0.002-0.03 cores); on a loaded host a
/// run's start-up, measured over a short first interval, has given 0.26 cores (CI, 2026-12-03).
fn spin_borrower(c: &Containerd, id: &str, history: &[String]) -> i64 {
    c.run_detached(
        id,
        &["--annotation", "io.predictive.task-type=e2e-borrower"],
        &["sh", "-c", "while :; do :; done"],
    );
    let quota = c.cpu_quota_us(id).expect("B quota");
    if !(1..=50_000).contains(&quota) {
        // What the prediction was made from: the idle runs' CPU points, and the decision behind B's quota.
        let runs: Vec<_> = history
            .iter()
            .map(|run| {
                let q = broker::api::HistoryQuery {
                    container_id: Some(run.clone()),
                    ..Default::default()
                };
                match client(c).call(&broker::api::Request::History(q)) {
                    Ok(broker::api::Response::History(h)) => {
                        format!(
                            "{:?}",
                            h.points.iter().map(|p| p.cpu_cores).collect::<Vec<_>>()
                        )
                    }
                    other => format!("{other:?}"),
                }
            })
            .collect();
        let decisions = client(c).explain(&Explain {
            container_id: Some(id.to_owned()),
            ..Default::default()
        });
        panic!(
            "B should start with its small predicted quota: {quota}\nidle runs' CPU (cores): {runs:?}\n\
             B's decisions: {decisions:?}"
        );
    }
    quota
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn annotations(v: &[String]) -> Vec<&str> {
    v.iter()
        .flat_map(|a| ["--annotation", a.as_str()])
        .collect()
}

/// Acceptance 1 and 3 (room): the first run of a task type starts with its spec limits; after three runs the
/// next starts with the predicted memory (within its real usage's interval); a run that outgrows its
/// prediction waits at its allocation (v1: OOM killer off; v2: `memory.high` under `memory.max` at the user's
/// limit) and is grown, never OOM-killed.
#[test]
fn predicted_limits_from_history_and_growth_past_prediction() {
    let Some(c) = start(
        "predicted_limits_from_history_and_growth_past_prediction",
        "",
        "memory_grow_factor = 2.0\nmin_cpu_cores = 1.0",
    ) else {
        return;
    };
    let limit = 512u64 << 20;
    let lim = limit.to_string();
    let ann = vec!["io.predictive.task-type=e2e-mem".to_owned()];
    let mut flags = annotations(&ann);
    flags.extend_from_slice(&["--memory-limit", &lim]);
    let work = alloc(24, "sleep 2");
    let work = strs(&work);

    // First run: cold start, the spec's limit. Each history run's peak is read before its removal.
    let peak_of = |id: &str| {
        c.wait_status(id, "STOPPED", secs(30));
        let peak = c.memory_peak(id).expect("peak");
        c.remove(id);
        peak
    };
    let first = c.id("mem-first");
    c.run_detached(&first, &flags, &work);
    let at_start = c.memory_allocation(&first);
    assert_eq!(at_start, Some(limit), "a cold start keeps the spec's limit");
    let mut peaks = vec![peak_of(&first)];
    for i in 0..2 {
        let id = c.id(&format!("mem-hist{i}"));
        c.run_detached(&id, &flags, &work);
        peaks.push(peak_of(&id));
    }
    println!("history peaks {peaks:?}");
    let shown = peaks.iter().copied().max().unwrap_or(0);
    wait_model(&c, "e2e-mem");

    // Fourth run: the predicted upper bound, well under the spec's limit, and above what it really uses.
    let id = c.id("mem-pred");
    c.run_detached(&id, &flags, &work);
    let predicted = c.memory_allocation(&id).expect("memory allocation");
    let oom_disabled = c
        .cg_file(&id, ("memory", "memory.oom_control"), "memory.max")
        .unwrap_or_default();
    c.wait_status(&id, "STOPPED", secs(30));
    let peak = c.memory_peak(&id).expect("peak");
    let code = c.ctr(&["t", "rm", &id]);
    c.remove(&id);
    println!("predicted allocation {predicted} bytes, real peak {peak} bytes, spec limit {limit}");
    assert!(
        predicted < limit / 2,
        "predicted {predicted} is not below the spec's {limit}"
    );
    assert!(
        predicted >= shown,
        "predicted {predicted} is below the peak its history shows ({peaks:?})"
    );
    // v1's allocation is a hard limit (the OOM killer waits at it). v2's is memory.high, a throttle point the
    // kernel reclaims back to, not a cap: a run may pass it by what is charged before reclaim runs, and by what
    // it uses beyond its history (this command's peak in the emulated guest: 27.1-27.4 MB in most runs, 29.0 MB
    // in some, 2026-12-02), which the kernel then holds it back to. So on v2 the run's peak is checked against the
    // prediction within a tenth.
    let overshoot = if Containerd::cgroup_v2_host() {
        (predicted / 10).max(1 << 20)
    } else {
        0
    };
    assert!(
        peak <= predicted + overshoot,
        "the run used {peak} bytes, over its predicted allocation {predicted}"
    );
    assert!(
        predicted <= (peak * 3).max(peak + (48 << 20)),
        "predicted {predicted} is far above the real peak {peak}"
    );
    if Containerd::cgroup_v2_host() {
        assert_eq!(
            oom_disabled, lim,
            "v2: memory.max stays at the user's limit (memory.high holds the prediction)"
        );
    } else {
        assert!(
            oom_disabled.contains("oom_kill_disable 1"),
            "below the user's limit the OOM killer waits (v1): {oom_disabled}"
        );
    }
    let _ = code;

    // Fifth run outgrows the prediction by 4x: it must be grown, not killed.
    let grow = c.id("mem-grow");
    let started = Instant::now();
    let big = alloc(96, "echo grown-ok");
    let out = c.run(&grow, &flags, &strs(&big));
    println!("outgrowing run took {:?}: {out}", started.elapsed());
    assert!(
        out.ok(),
        "the task outgrowing its prediction was not let through: {out}"
    );
    assert!(out.stdout.contains("grown-ok"), "{out}");
    let d = client(&c)
        .explain(&Explain {
            container_id: Some(grow.clone()),
            limit: Some(100),
            before_seq: None,
        })
        .expect("explain");
    let grew: Vec<_> = d
        .decisions
        .iter()
        .filter(|d| d.resource == "memory" && d.reason.contains("grown"))
        .collect();
    assert!(
        !grew.is_empty(),
        "no memory growth recorded for {grow}: {:#?}",
        d.decisions
    );
    c.finish();
}

/// Acceptance 2: A holds a large CPU allocation and idles, B is CPU-starved: B's quota rises on a lease from A;
/// when A turns busy it has its capacity back.
#[test]
fn idle_neighbour_lends_cpu_and_gets_it_back() {
    lends_and_gets_it_back("idle_neighbour_lends_cpu_and_gets_it_back", 0);
}

/// The same on a busy host, as the lane's CI run of 63cdc04 had it (the other test's containers spinning): other
/// cgroups spin from a few seconds before A turns busy, so B's use falls and it gives most leases back, and A,
/// busy again, gets less CPU than it kept: neither throttled nor at its quota, only waiting for a CPU. It must
/// still have its quota back within the same ticks.
#[test]
fn a_lender_turning_busy_on_a_busy_host_gets_its_cpu_back() {
    lends_and_gets_it_back("a_lender_turning_busy_on_a_busy_host_gets_its_cpu_back", 3);
}

/// Processes spinning in cgroups of their own at the top of the CPU hierarchy (`<name>-hog-<i>`), siblings of
/// the test's namespace cgroup: CPU is shared between cgroups, so each takes a container's worth. Killed and
/// their cgroups removed when dropped.
struct Hogs {
    children: Vec<std::process::Child>,
    dirs: Vec<PathBuf>,
}

impl Hogs {
    fn start(name: &str, n: usize) -> Hogs {
        let root = if Containerd::cgroup_v2_host() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/cpu")
        };
        let mut hogs = Hogs {
            children: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..n {
            let dir = root.join(format!("{name}-hog-{i}"));
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            hogs.dirs.push(dir.clone());
            let child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("a spinning sh");
            let pid = child.id();
            hogs.children.push(child);
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("{} into {}: {e}", pid, dir.display()));
        }
        hogs
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.dirs {
            // A reaped process leaves its cgroup at once; an rmdir racing it is retried.
            let _ = wait_until(Duration::from_secs(5), || std::fs::remove_dir(dir).ok());
        }
    }
}

/// B borrows from the idle A within its ticks; A, busy again, has its quota back within its ticks. With `hogs`,
/// that many [`Hogs`] spin from 2 s (x slow) before A turns busy until it has its quota back.
fn lends_and_gets_it_back(test: &str, hogs: usize) {
    // 2 cores less 0.5 reserved: A (1.45, its spec) and B (0.05, predicted from idle history) take all, so B
    // can only borrow from A. B has no CPU limit of its own: a user's limit caps borrowing.
    // B has no CPU limit: it gets a quota (its prediction) only because the operator opts in.
    let Some(c) = start(test, "host_cpu_cores = 2.0", "quota_unlimited_cpu = true") else {
        return;
    };
    let tick = tick();
    let history = idle_history(&c, "e2e-borrower");
    let a = c.id("lender");
    let b = c.id("borrower");
    // A idles 10 s (x slow in the guest), then spins.
    let idle = secs(10);
    let a_cmd = format!("sleep {}; while :; do :; done", idle.as_secs());
    c.run_detached(
        &a,
        &[
            "--cpus",
            "1.45",
            "--annotation",
            "io.predictive.task-type=e2e-lender",
        ],
        &["sh", "-c", &a_cmd],
    );
    let a_started = Instant::now();
    let b_quota = spin_borrower(&c, &b, &history);
    let b_started = Instant::now();
    let lease = wait_until(secs(8), || {
        let st = status(&c)?;
        let l = st
            .leases
            .iter()
            .find(|l| l.holder == c.broker_id(&b) && l.lender == Some(c.broker_id(&a)))?
            .clone();
        let quota = c.cpu_quota_us(&b)?;
        (quota > b_quota).then_some((l, quota, b_started.elapsed()))
    });
    let (lease, quota, after) = lease.unwrap_or_else(|| {
        panic!(
            "no lease from {a} to {b}: status {:?}, B quota {:?}",
            status(&c),
            c.cpu_quota_us(&b)
        )
    });
    println!(
        "B borrowed {:.2} cores from A (lease {}) after {after:?} ({:.1} ticks); B quota {quota}",
        lease.amount,
        lease.id,
        after.as_secs_f64() / tick.as_secs_f64()
    );
    // Ticks counted from B's first report (one tick after its start): within 3 (+1 for the report cycle).
    assert!(
        after <= tick * 5,
        "B's quota rose only after {after:?} (tick {tick:?})"
    );
    // A's own shim applies its side of the lease at its next report.
    let a_lent = wait_until(secs(3), || c.cpu_quota_us(&a).filter(|q| *q < 145_000));
    assert!(
        a_lent.is_some(),
        "A's quota did not go down by its loan: {:?}",
        c.cpu_quota_us(&a)
    );

    // A turns busy at 10 s (its own script): it must have its 1.45 cores back within 2 ticks (+1 for the report
    // cycle) of the moment its cgroup starts using CPU. An idle `sleep` uses well under 5 ms in 10 s.
    let idle_cpu = c.cpu_usage_us(&a).expect("A's CPU usage");
    let busy_host = (hogs > 0).then(|| {
        std::thread::sleep(idle.saturating_sub(a_started.elapsed() + secs(2)));
        Hogs::start(c.cgroup_name(), hogs)
    });
    let busy = wait_until(idle.saturating_sub(a_started.elapsed()) + secs(8), || {
        (c.cpu_usage_us(&a)? >= idle_cpu + 5_000).then_some(())
    });
    assert!(
        busy.is_some(),
        "A never turned busy: CPU usage {idle_cpu} us -> {:?} us",
        c.cpu_usage_us(&a)
    );
    let since = Instant::now();
    let back = wait_until(secs(8), || {
        (c.cpu_quota_us(&a)? >= 145_000).then(|| since.elapsed())
    });
    let st = status(&c);
    let back = back.unwrap_or_else(|| {
        panic!(
            "A never got its CPU back: quota {:?}, status {st:?}",
            c.cpu_quota_us(&a)
        )
    });
    println!(
        "A had its quota back {back:?} ({:.1} ticks) after turning busy",
        back.as_secs_f64() / tick.as_secs_f64()
    );
    drop(busy_host);
    // A needs one tick of samples to look busy: report + tick + report.
    assert!(back <= tick * 4, "A's capacity came back after {back:?}");
    let leases = status(&c).map(|s| s.leases).unwrap_or_default();
    assert!(
        !leases.iter().any(|l| l.lender == Some(c.broker_id(&a))),
        "A still lends: {leases:?}"
    );
    c.finish();
}

/// Acceptance 3 (no room): a higher-priority task outgrowing its prediction on a full host pauses the
/// lower-priority one instead of being killed.
#[test]
fn no_room_pauses_the_lower_priority_task() {
    // 320 MiB grantable: L holds ~200 MiB, H (predicted ~30 MiB) wants 160 MiB.
    let Some(c) = start(
        "no_room_pauses_the_lower_priority_task",
        "host_memory_bytes = 402653184",
        "host_reserve_memory_bytes = 67108864\nmemory_grow_factor = 2.0\nmin_cpu_cores = 1.0",
    ) else {
        return;
    };
    let hi = [
        "--annotation",
        "io.predictive.task-type=e2e-hi",
        "--annotation",
        "io.predictive.priority=10",
    ];
    let small = alloc(16, "sleep 1.5");
    let small = strs(&small);
    for i in 0..3 {
        run_ok(&c, &format!("hi-hist{i}"), &hi, &small);
    }
    wait_model(&c, "e2e-hi");
    // L fills a tmpfs it owns (tmpfs pages stay charged to its cgroup) and sleeps.
    let low = c.id("low");
    c.run_detached(
        &low,
        &[
            "--annotation",
            "io.predictive.priority=0",
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/fill,options=size=300m",
        ],
        &[
            "sh",
            "-c",
            "head -c 209715200 /dev/zero > /fill/x; sleep 1000",
        ],
    );
    let filled = wait_until(secs(20), || {
        (c.memory_usage(&low)? > 200 << 20).then_some(())
    });
    assert!(filled.is_some(), "L never reached 200 MiB");
    let high = c.id("high");
    let big = alloc(160, "sleep 1000");
    c.run_detached(&high, &hi, &strs(&big));
    let frozen = wait_until(secs(15), || c.frozen(&low)?.then_some(()));
    let decisions = client(&c).explain(&Explain::default()).map(|d| d.decisions);
    assert!(
        frozen.is_some(),
        "L was not paused: frozen {:?}; decisions {decisions:#?}",
        c.frozen(&low)
    );
    // A hold, not a wait: H must survive a few ticks at its allocation on the full host, and there is no event
    // that says "not killed" to wait for.
    std::thread::sleep(tick() * 4);
    assert_eq!(
        c.status(&high).as_deref(),
        Some("RUNNING"),
        "H must not be killed"
    );
    assert_eq!(c.oom_kills(&high), Some(0), "H was OOM-killed");
    // Thaw so the teardown can kill L.
    c.thaw(&low);
    c.finish();
}

/// Acceptance 4: mode observe changes no cgroup file (even with a model that would), mode off never
/// contacts the broker (none is even started for it).
#[test]
fn observe_changes_nothing_and_off_never_contacts_the_broker() {
    let Some(c) = start(
        "observe_changes_nothing_and_off_never_contacts_the_broker",
        "",
        "",
    ) else {
        return;
    };
    let off = run_ok(
        &c,
        "off",
        &["--annotation", "io.predictive.mode=off"],
        &["true"],
    );
    assert!(
        c.broker_pid().is_none() && !c.broker_socket().exists(),
        "mode off started or reached a broker"
    );
    let lim = (512u64 << 20).to_string();
    let flags = [
        "--annotation",
        "io.predictive.task-type=e2e-obs",
        "--memory-limit",
        &lim,
    ];
    let work = alloc(16, "sleep 1.5");
    let work = strs(&work);
    for i in 0..3 {
        run_ok(&c, &format!("obs-hist{i}"), &flags, &work);
    }
    wait_model(&c, "e2e-obs");
    // Enforce would cut the memory limit now; observe must leave every file as the spec set it.
    let mut obs_flags = flags.to_vec();
    obs_flags.extend_from_slice(&["--annotation", "io.predictive.mode=observe"]);
    let id = c.id("observe");
    let obs = alloc(16, "sleep 4");
    c.run_detached(&id, &obs_flags, &strs(&obs));
    // (v1 controller, v1 file, v2 file)
    let files = [
        ("memory", "memory.limit_in_bytes", "memory.max"),
        ("memory", "memory.oom_control", "memory.high"),
        ("cpu", "cpu.cfs_quota_us", "cpu.max"),
        ("freezer", "freezer.state", "cgroup.freeze"),
    ];
    let read = || -> Vec<_> {
        files
            .iter()
            .map(|(k, f, v2)| c.cg_file(&id, (k, f), v2))
            .collect()
    };
    let before = read();
    assert_eq!(before[0].as_deref(), Some(lim.as_str()));
    // Wait for the decision enforce would have applied, then hold two ticks, as long as an enforcing shim takes
    // to get a directive (in the reply to its next report) and write it: there is no event for "nothing was
    // written" to wait for.
    let explain = || {
        client(&c).explain(&Explain {
            container_id: Some(id.clone()),
            limit: None,
            before_seq: None,
        })
    };
    let decided = wait_until(secs(10), || {
        explain()
            .ok()?
            .decisions
            .iter()
            .any(|d| d.resource == "memory" && d.reason.contains("[observe: not applied]"))
            .then_some(())
    });
    assert!(
        decided.is_some(),
        "observe recorded no decision: {:#?}",
        explain().map(|d| d.decisions)
    );
    std::thread::sleep(tick() * 2);
    let after = read();
    assert_eq!(before, after, "observe changed a cgroup file");
    let off_seen = client(&c)
        .explain(&Explain {
            container_id: Some(off.clone()),
            limit: None,
            before_seq: None,
        })
        .expect("explain");
    assert!(off_seen.decisions.is_empty(), "the broker knows {off}");
    c.wait_status(&id, "STOPPED", secs(30));
    c.remove(&id);
    c.finish();
}

/// Acceptance 5: kill -9 of the broker mid-run: containers keep running, shims register again when it is
/// back, and the restarted broker has every committed record and its leases.
#[test]
fn broker_kill9_restart_keeps_containers_records_and_leases() {
    let Some(c) = start(
        "broker_kill9_restart_keeps_containers_records_and_leases",
        "host_cpu_cores = 2.0",
        "quota_unlimited_cpu = true",
    ) else {
        return;
    };
    let _ = idle_history(&c, "e2e-k9");
    let a = c.id("k9-lender");
    let b = c.id("k9-borrower");
    c.run_detached(&a, &["--cpus", "1.45"], &["sleep", "1000"]);
    c.run_detached(
        &b,
        &["--annotation", "io.predictive.task-type=e2e-k9"],
        &["sh", "-c", "while :; do :; done"],
    );
    let lease = wait_until(secs(10), || {
        status(&c)?
            .leases
            .into_iter()
            .find(|l| l.holder == c.broker_id(&b) && l.lender == Some(c.broker_id(&a)))
    })
    .unwrap_or_else(|| panic!("no lease formed: {:?}", status(&c)));
    // What the broker committed to disk is what it must have after the restart: wait for the tick to persist
    // the lease. Explain reads the store, so `before` holds committed decisions only.
    let leases_file = c.dir.join("broker/leases.json");
    let committed: Vec<broker::controller::Lease> = wait_until(secs(5), || {
        let leases: Vec<broker::controller::Lease> =
            serde_json::from_slice(&std::fs::read(&leases_file).ok()?).ok()?;
        leases.iter().any(|l| l.id == lease.id).then_some(leases)
    })
    .unwrap_or_else(|| {
        panic!(
            "lease {} not committed: {:?}",
            lease.id,
            std::fs::read_to_string(&leases_file)
        )
    });
    let before = client(&c)
        .explain(&Explain {
            container_id: None,
            limit: Some(10_000),
            before_seq: None,
        })
        .expect("explain")
        .decisions;
    let quota_b = c.cpu_quota_us(&b).expect("B quota");
    let pid = c.broker_pid().expect("broker running");
    // SAFETY: killing the broker this test's shims started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = wait_until(secs(5), || {
        (!PathBuf::from(format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")))
        .then_some(())
    });
    assert!(gone.is_some(), "broker {pid} survived SIGKILL");
    assert_eq!(c.status(&a).as_deref(), Some("RUNNING"));
    assert_eq!(c.status(&b).as_deref(), Some("RUNNING"));
    // The shims start a broker again themselves (what systemd's Restart= would do otherwise).
    let killed_at = Instant::now();
    let new_pid = wait_until(secs(15), || c.broker_pid().filter(|p| *p != pid))
        .unwrap_or_else(|| panic!("no broker came back after the kill"));
    let back = wait_until(secs(15), || {
        let st = status(&c)?;
        let ids: Vec<_> = st.tasks.iter().map(|t| t.container_id.clone()).collect();
        (ids.contains(&c.broker_id(&a)) && ids.contains(&c.broker_id(&b))).then_some(st)
    });
    let st = back.unwrap_or_else(|| panic!("the shims did not register again: {:?}", status(&c)));
    let reregistered = killed_at.elapsed();
    assert_eq!(c.status(&a).as_deref(), Some("RUNNING"));
    assert_eq!(c.status(&b).as_deref(), Some("RUNNING"));
    let after = client(&c)
        .explain(&Explain {
            container_id: None,
            limit: Some(10_000),
            before_seq: None,
        })
        .expect("explain")
        .decisions;
    for l in &committed {
        let live = st
            .leases
            .iter()
            .any(|x| x.id == l.id && x.holder == l.holder);
        let ended = after.iter().any(|d| {
            d.seq > before.last().map_or(0, |x| x.seq)
                && d.reason.contains(&format!("lease {}", l.id))
        });
        assert!(
            live || ended,
            "lease {} lost across the restart: live {:?}",
            l.id,
            st.leases
        );
    }
    // B was not cut back to its own allocation: its borrowed CPU survived the restart.
    let quota_after = c.cpu_quota_us(&b).expect("B quota");
    assert!(
        quota_after >= quota_b,
        "B's quota fell from {quota_b} to {quota_after} across the restart"
    );
    for d in &before {
        assert!(
            after.iter().any(|x| x.seq == d.seq && x.reason == d.reason),
            "decision {} lost across the restart",
            d.seq
        );
    }
    println!(
        "restart: broker {pid} -> {new_pid}; shims registered again {reregistered:?} after the kill; \
         {} decisions and {} committed leases kept; B quota {quota_b} -> {quota_after}",
        before.len(),
        committed.len(),
    );
    c.remove(&a);
    c.remove(&b);
    c.finish();
}

/// A shim killed with SIGKILL (the OOM killer, an operator's kill -9) leaves its container to containerd's clean-up,
/// which runs the shim binary's `delete` action: that action ends the container and tells the broker, so the
/// container's allocation leaves the broker's books with it, not at the broker's 10-minute forget, and its run is
/// recorded (exit 137, as containerd reports it).
#[test]
fn a_killed_shims_container_leaves_the_broker_with_containerds_cleanup() {
    let Some(c) = start(
        "a_killed_shims_container_leaves_the_broker_with_containerds_cleanup",
        "host_cpu_cores = 2.0",
        "",
    ) else {
        return;
    };
    let id = c.id("shim-k9");
    c.run_detached(
        &id,
        &[
            "--cpus",
            "1.5",
            "--annotation",
            "io.predictive.task-type=e2e-shim-k9",
        ],
        &["sleep", "1000"],
    );
    let held = wait_until(secs(5), || {
        status(&c)?
            .tasks
            .into_iter()
            .find(|t| t.container_id == c.broker_id(&id))
    })
    .unwrap_or_else(|| panic!("{id} never registered: {:?}", status(&c)));
    let shims = c.shim_processes();
    assert!(!shims.is_empty(), "no shim process serves {id}");
    for p in &shims {
        // SAFETY: killing the shim processes of this test's own containerd.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    let killed = Instant::now();
    let ended = wait_until(secs(15), || {
        (c.status(&id).as_deref() != Some("RUNNING")).then(|| killed.elapsed())
    });
    let ended = ended
        .unwrap_or_else(|| panic!("containerd still runs {id} 15 s after its shim was killed"));
    let left = wait_until(secs(5), || {
        let st = status(&c)?;
        (!st.tasks.iter().any(|t| t.container_id == c.broker_id(&id))).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the broker still holds {id} ({:?}) {:?} after its shim was killed and containerd cleaned up: {:?}",
            held.allocation,
            killed.elapsed(),
            status(&c)
        )
    });
    // The run is written after the broker lets the container go (its store writer batches it).
    let runs = || runs_seen(&c, "e2e-shim-k9");
    let recorded = wait_until(secs(5), || (runs() == Some(1)).then_some(()));
    assert!(
        recorded.is_some(),
        "the killed run was not recorded: runs seen {:?}",
        runs()
    );
    println!(
        "shim killed ({} processes): containerd ended the task after {ended:?}, the broker let its allocation \
         ({:?}) go after {left:?}",
        shims.len(),
        held.allocation
    );
    c.remove(&id);
    c.finish();
}

/// A broker that stalls (SIGSTOP here; a hang, a long GC pause, a starved node) costs a container's Create its
/// Register budget and its Delete nothing: the shim that got no answer sends the run's summary after the Delete's
/// reply, and stays for it, so a broker that comes back within the summary's budget still records the run. Before,
/// the Delete waited out the Finish (`ctr run --rm` of `true`: 2.2 s instead of 0.1 s) and the shim's log said the
/// run was lost while the broker's socket still held it. A container that runs through the stall leaves no task
/// registered once the broker has read its retries and its Finish in whatever order (the shim names its run).
#[test]
fn a_stalled_broker_holds_up_no_delete_and_loses_no_run() {
    let Some(c) = start(
        "a_stalled_broker_holds_up_no_delete_and_loses_no_run",
        "",
        "",
    ) else {
        return;
    };
    run_ok(&c, "up", &[], &["true"]);
    let broker = c.broker_pid().expect("the first run started a broker");
    let id = c.id("stalled");
    // SAFETY: stopping the broker this test's shims started; it is continued below.
    unsafe { libc::kill(broker, libc::SIGSTOP) };
    let started = Instant::now();
    let out = c.run(
        &id,
        &["--annotation", "io.predictive.task-type=e2e-stalled"],
        &["true"],
    );
    let took = started.elapsed();
    let shim = c.shim_pid_of(&id);
    // A second of the broker's stall after the Delete: the shim is still there, holding the run's summary.
    std::thread::sleep(Duration::from_secs(1));
    let holding = shim.is_some_and(|p| PathBuf::from(format!("/proc/{p}")).exists());
    // A container that runs through the stall: its monitor retries the Register while it goes unanswered, and
    // the broker reads those retries in any order with the Finish once it goes on.
    let through = c.id("through");
    let out_through = c.run(
        &through,
        &["--annotation", "io.predictive.task-type=e2e-stalled"],
        &["sleep", "4"],
    );
    // SAFETY: as above.
    unsafe { libc::kill(broker, libc::SIGCONT) };
    assert!(out.ok(), "ctr run --rm with the broker stopped: {out}");
    assert!(
        out_through.ok(),
        "ctr run --rm of sleep 4 with the broker stopped: {out_through}"
    );
    assert!(
        !c.containers().contains(&id),
        "{id} still listed after ctr run --rm"
    );
    assert!(
        holding,
        "the shim of {id} (pid {shim:?}) was gone a second after the Delete with the broker stopped: the Delete \
         waited out the run's summary (ctr run --rm took {took:?})"
    );
    let runs = || runs_seen(&c, "e2e-stalled");
    let recorded = wait_until(secs(10), || (runs() == Some(2)).then_some(()));
    assert!(
        recorded.is_some(),
        "the two runs during the stall were not both recorded once the broker went on: runs seen {:?}",
        runs()
    );
    // No retry read after its run's Finish leaves a task registered (before runs were named one stayed until
    // the broker forgot it, 10 minutes later).
    let ours = [c.broker_id(&id), c.broker_id(&through)];
    let left = || -> Vec<String> {
        status(&c)
            .map(|s| {
                s.tasks
                    .into_iter()
                    .map(|t| t.container_id)
                    .filter(|t| ours.contains(t))
                    .collect()
            })
            .unwrap_or_else(|| vec!["(no status)".to_owned()])
    };
    let cleared = wait_until(secs(5), || left().is_empty().then_some(()));
    assert!(
        cleared.is_some(),
        "tasks still registered after their containers ended: {:?}",
        left()
    );
    let gone = wait_until(secs(10), || c.shim_pid_of(&id).is_none().then_some(()));
    assert!(
        gone.is_some(),
        "the shim of {id} outlived its run's summary"
    );
    println!(
        "ctr run --rm of `true` with the broker stopped: {took:?}; the run recorded after it went on"
    );
    c.finish();
}

/// containerd ids are unique only within a namespace, and one broker serves them all: the same id in two namespaces
/// is two containers to the broker (`<namespace>/<id>`), each with its own record and run, and the end of one leaves
/// the other registered. Before, both shims reported as one container `<id>`: their samples mixed, and the first
/// Finish took the record of the one still running.
#[test]
fn one_id_in_two_namespaces_is_two_containers_to_the_broker() {
    let Some(c) = start(
        "one_id_in_two_namespaces_is_two_containers_to_the_broker",
        "",
        "",
    ) else {
        return;
    };
    let id = c.id("twin");
    let other = format!("{}x", c.ns);
    let image = c.settings.cache.join("busybox-image.tar");
    c.ctr_in(&other, &["images", "import", &image.to_string_lossy()])
        .expect_ok("importing the image into the second namespace");
    let flags = ["--annotation", "io.predictive.task-type=e2e-twin"];
    c.run_detached(&id, &flags, &["sleep", "1000"]);
    let mut args = vec!["run", "-d", "--null-io", "--runtime", c.runtime()];
    args.extend_from_slice(&flags);
    args.extend_from_slice(&[IMAGE, &id, "sleep", "1000"]);
    c.ctr_in(&other, &args)
        .expect_ok("the same id in the second namespace");
    let (mine, theirs) = (c.broker_id(&id), broker::api::broker_id(&other, &id));
    let ids = || -> Vec<String> {
        status(&c)
            .map(|s| s.tasks.into_iter().map(|t| t.container_id).collect())
            .unwrap_or_default()
    };
    let both = wait_until(secs(10), || {
        let ids = ids();
        (ids.contains(&mine) && ids.contains(&theirs)).then_some(())
    });
    assert!(
        both.is_some(),
        "the broker does not hold {mine} and {theirs} apart: {:?}",
        ids()
    );
    // A bare id asks for a container the namespaces share: the broker names them rather than pick one.
    let asked = client(&c).call(&broker::api::Request::History(broker::api::HistoryQuery {
        container_id: Some(id.clone()),
        ..Default::default()
    }));
    let named = format!("{asked:?}");
    assert!(
        named.contains(&mine) && named.contains(&theirs),
        "history of the bare id {id} does not name both: {named}"
    );
    c.ctr_in(&other, &["t", "rm", "-f", &id])
        .expect_ok("removing the second namespace's task");
    c.ctr_in(&other, &["c", "rm", &id])
        .expect_ok("removing the second namespace's container");
    let ended = wait_until(secs(10), || (!ids().contains(&theirs)).then_some(()));
    assert!(
        ended.is_some(),
        "{theirs} stayed after its Delete: {:?}",
        ids()
    );
    let runs = || runs_seen(&c, "e2e-twin");
    assert_eq!(
        wait_until(secs(10), || (runs() == Some(1)).then_some(1)),
        Some(1),
        "the second namespace's run was not recorded once: runs seen {:?}",
        runs()
    );
    assert!(
        ids().contains(&mine),
        "the end of {theirs} took {mine}'s record: {:?}",
        ids()
    );
    c.remove(&id);
    assert_eq!(
        wait_until(secs(10), || (runs() == Some(2)).then_some(2)),
        Some(2),
        "the two runs were not recorded apart: runs seen {:?}",
        runs()
    );
    c.ctr_in(&other, &["images", "rm", IMAGE]);
    c.ctr_in(&other, &["namespaces", "rm", &other]);
    // The second namespace's cgroup directory (its container's went with the container); the harness removes only
    // its own namespace's. Before 2026-12-06 each run left an empty one in every hierarchy.
    for (mount, _) in predictive_e2e::kubelet::hierarchies() {
        let _ = std::fs::remove_dir(mount.join(&other));
    }
    c.finish();
}

/// Acceptance 6: a bad annotation value fails Create with InvalidArgument naming the annotation.
#[test]
fn bad_annotation_fails_create_naming_it() {
    let Some(c) = start("bad_annotation_fails_create_naming_it", "", "") else {
        return;
    };
    for (ann, value) in [
        ("io.predictive.priority", "urgent"),
        ("io.predictive.mode", "sometimes"),
        ("io.predictive.input-bytes", "-5"),
    ] {
        let id = c.id("badann");
        let a = format!("{ann}={value}");
        let out = c.run(&id, &["--annotation", &a], &["true"]);
        assert!(!out.ok(), "{a} was accepted: {out}");
        let msg = format!("{}{}", out.stdout, out.stderr);
        assert!(msg.contains(ann), "the error does not name {ann}: {msg}");
        assert!(
            msg.to_lowercase().contains("invalid"),
            "not an InvalidArgument: {msg}"
        );
        c.remove(&id);
    }
    c.finish();
}

/// Waits until the broker monitors container `id` (it has its usage from the shim's reports), removes it, and
/// waits until its run is recorded as `task_type`; returns the task as the broker held it.
fn monitored_then_recorded(
    c: &Containerd,
    id: &str,
    task_type: &str,
) -> broker::controller::TaskView {
    let me = c.broker_id(id);
    let held = || status(c)?.tasks.into_iter().find(|t| t.container_id == me);
    let Some(task) = wait_until(secs(10), || held().filter(|t| t.usage.is_some())) else {
        panic!("the broker does not monitor {me}: {:?}", held())
    };
    c.remove(id);
    let runs = || runs_seen(c, task_type);
    assert_eq!(
        wait_until(secs(10), || (runs() == Some(1)).then_some(1)),
        Some(1),
        "{me}'s run was not recorded as task type {task_type}: runs seen {:?}",
        runs()
    );
    task
}

/// What a pod chooses is still a container the broker monitors and learns from: a command line of 400 KB (the
/// kernel execs up to ~2 MiB) and a CPU limit of 100,000 cores (the kernel takes the quota; Kubernetes' scheduler
/// checks requests, not limits). Before, the shim's Register was refused (a CPU limit past the protocol's 65,536
/// cores; a command past the broker's 1 MiB line alike): the container ran unmonitored and its run was never
/// recorded (checked with main's shim: not held after 10 s).
#[test]
fn a_container_with_a_huge_command_and_cpu_limit_is_monitored_and_recorded() {
    let Some(c) = start(
        "a_container_with_a_huge_command_and_cpu_limit_is_monitored_and_recorded",
        "",
        "",
    ) else {
        return;
    };
    let id = c.id("huge");
    let args: Vec<String> = (0..2000)
        .map(|i| format!("/data/part-{i:05}-{}", "x".repeat(190)))
        .collect();
    let mut cmd = vec!["sh", "-c", "sleep 1000", "sh"];
    cmd.extend(args.iter().map(String::as_str));
    c.run_detached(
        &id,
        &[
            "--annotation",
            "io.predictive.task-type=e2e-huge",
            "--cpus",
            "100000",
        ],
        &cmd,
    );
    let task = monitored_then_recorded(&c, &id, "e2e-huge");
    assert_eq!(
        task.limits.cpu_limit_cores,
        Some(broker::validate::MAX_CORES),
        "the user's 100,000 cores, as the protocol bounds them"
    );
    c.finish();
}

/// A pod's annotation written as a YAML block scalar (`io.predictive.task-type: |`) ends in a newline: the shim's
/// Create check reads it trimmed, and so must the broker. Before, the broker refused the Register ("contains a
/// control character") after the shim had let it through, and the container ran unmonitored.
#[test]
fn an_annotation_ending_in_a_newline_is_read_as_the_shim_reads_it() {
    let Some(c) = start(
        "an_annotation_ending_in_a_newline_is_read_as_the_shim_reads_it",
        "",
        "",
    ) else {
        return;
    };
    let id = c.id("yaml");
    c.run_detached(
        &id,
        &["--annotation", "io.predictive.task-type=e2e-yaml\n"],
        &["sleep", "1000"],
    );
    monitored_then_recorded(&c, &id, "e2e-yaml");
    c.finish();
}

/// Issue 18: the container's own pressure reaches the broker (PSI of its cgroup: v2's own files, or on a hybrid
/// host the cgroup2 directory the shim puts it in), and its priority becomes an IO weight in its cgroup version's
/// units: v2 `io.weight` after runc's blkio-to-io conversion, v1 `blkio.weight` where the IO scheduler has one.
#[test]
fn pressure_and_io_weight_reach_the_cgroup_and_the_broker() {
    let Some(c) = start(
        "pressure_and_io_weight_reach_the_cgroup_and_the_broker",
        "",
        "",
    ) else {
        return;
    };
    let id = c.id("psi");
    // Three spinners on one CPU (busybox taskset; ctr 1.6/1.7 have no --cpuset-cpus): two of them always wait for
    // it, so the cgroup's CPU "some" pressure is high.
    c.run_detached(
        &id,
        &[
            "--annotation",
            "io.predictive.task-type=e2e-psi",
            "--annotation",
            "io.predictive.priority=100",
        ],
        &[
            "taskset",
            "-c",
            "0",
            "sh",
            "-c",
            "for i in 1 2; do (while :; do :; done) & done; while :; do :; done",
        ],
    );
    // The broker's IO weight for priority 100, in blkio units, and what the cgroup file must say.
    let blkio = broker::controller::io_weight(100).expect("a weight for priority 100");
    let want_v2 = 1 + (u64::from(blkio) - 10) * 9999 / 990;
    let weight = wait_until(secs(10), || {
        let text = c.cg_file(&id, ("blkio", "blkio.weight"), "io.weight")?;
        let v: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("default ").or(Some(l)))?
            .trim()
            .parse()
            .ok()?;
        let want = if Containerd::cgroup_v2_host() {
            want_v2
        } else {
            u64::from(blkio)
        };
        (v == want).then_some(v)
    });
    if Containerd::cgroup_v2_host() {
        assert_eq!(
            weight,
            Some(want_v2),
            "io.weight: {:?}",
            c.cg_file(&id, ("blkio", "blkio.weight"), "io.weight")
        );
    } else if c
        .cg_file(&id, ("blkio", "blkio.weight"), "io.weight")
        .is_some()
    {
        assert_eq!(weight, Some(u64::from(blkio)), "blkio.weight");
    } else {
        println!(
            "no blkio.weight on this host's IO scheduler (v1 without bfq/cfq): the IO weight is not checked"
        );
    }
    let psi = wait_until(secs(30), || {
        let st = status(&c)?;
        let u = st
            .tasks
            .iter()
            .find(|t| t.container_id == c.broker_id(&id))?
            .usage?;
        u.cpu_psi_avg10.filter(|p| *p > 5.0)
    });
    println!("IO weight {weight:?} (blkio units {blkio}); CPU pressure avg10 {psi:?} %");
    assert!(
        psi.is_some(),
        "the broker never saw the container's CPU pressure above 5 %: {:?}",
        status(&c).and_then(|s| s
            .tasks
            .into_iter()
            .find(|t| t.container_id == c.broker_id(&id)))
    );
    c.remove(&id);
    c.finish();
}

/// One counter of the broker's metrics (`name` with no labels, or `name{labels}` as printed).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The broker's metrics page, over the TCP address `[metrics] listen` names.
fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Issue 16: a pod's containers share one shim (one sandbox-id annotation), and that shim sends one grouped
/// report per wake-up for them: the broker's metrics count grouped messages and the container reports they
/// carried, and both containers stay reported (fresh usage in `status`).
#[test]
fn a_pods_containers_report_in_grouped_messages() {
    // A free local port for the metrics endpoint (taken back from the kernel just before the broker binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let Some(c) = start(
        "a_pods_containers_report_in_grouped_messages",
        "",
        &format!("\n[metrics]\nlisten = \"{addr}\""),
    ) else {
        return;
    };
    let ann = format!("io.kubernetes.cri.sandbox-id={}", c.id("pod"));
    let (a, b) = (c.id("pa"), c.id("pb"));
    for id in [&a, &b] {
        c.run_detached(id, &["--annotation", &ann], &["sleep", "100000"]);
    }
    assert_eq!(c.shim_pids().len(), 1, "one sandbox-id, one shim");
    // Idle, both heartbeat at the same wake-ups (every 5 ticks with the default stale_after_ms): a few rounds.
    let counted = wait_until(secs(40), || {
        let text = scrape(&addr)?;
        let batches = metric(&text, "predictive_requests_total{type=\"reports\"}")?;
        let entries = metric(&text, "predictive_batched_reports_total")?;
        (batches >= 3.0).then_some((batches, entries, text))
    });
    let Some((batches, entries, text)) = counted else {
        panic!(
            "no 3 grouped reports from the pod's shim: {:?}",
            scrape(&addr)
        );
    };
    println!(
        "grouped messages {batches}, container reports in them {entries}, single reports {:?}",
        metric(&text, "predictive_requests_total{type=\"report\"}")
    );
    assert!(
        entries >= 2.0 * batches,
        "a grouped message carries both containers' reports: {entries} in {batches}"
    );
    let st = status(&c).expect("status");
    for id in [&a, &b] {
        let t = st.tasks.iter().find(|t| t.container_id == c.broker_id(id));
        assert!(t.is_some_and(|t| t.usage.is_some()), "{id} reported: {t:?}");
    }
    c.remove(&a);
    c.remove(&b);
    c.finish();
}

/// CLOCK_MONOTONIC now: the clock the shims' heartbeats fall due on (at multiples of the heartbeat,
/// `runtime_hooks::pacing::heartbeat_due`), the same for every process on the host.
fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which outlives the call; CLOCK_MONOTONIC always exists.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 5d6d40a on real containers: a pod's containers share one shim, which sends their reports as one batch on the
/// connection of the first due member, and the broker pokes a container on the connection its last report came
/// on. When the member whose connection carried the pod's last batch finishes, the members left report at once on
/// their own, so a lease drawing on an idle, settled member afterwards reaches it by a poke, not at its heartbeat.
///
/// F (the first member, 0.05 cores, idle) and L (the lender, 1.45 cores, idle) in one pod. F's `sleep` ends two ticks
/// after a heartbeat H of the pod that comes once L has settled: both report at H in one batch, on F's connection
/// (the broker's counters show the batch); then F exits and is removed, which closes that connection. B, outside
/// the pod, spins and borrows from L; L's quota must go down within 3 s of the lease. Before the fix the broker's
/// poke for L went to F's connection (or nowhere once it closed), it pokes once per report, and L's settled shim
/// collected its side of the lease only at its next heartbeat, H + 10 s; the test checks that the lease came at
/// least 3 s and two ticks before that, so only a poke can bring L's side within the 3 s.
#[test]
fn a_pods_lender_is_poked_after_the_member_that_carried_its_reports_finished() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let tick = tick();
    // The default 10 s on this host, set so that it is a whole number of ticks in the guest too: the pod's
    // heartbeats fall on multiples of it.
    let heartbeat = tick * 20;
    let Some(c) = start(
        "a_pods_lender_is_poked_after_the_member_that_carried_its_reports_finished",
        "host_cpu_cores = 2.0",
        &format!(
            "quota_unlimited_cpu = true\nidle_heartbeat_ms = {}\n\n[metrics]\nlisten = \"{addr}\"",
            heartbeat.as_millis()
        ),
    ) else {
        return;
    };
    let history = idle_history(&c, "e2e-borrower");
    let pod = format!("io.kubernetes.cri.sandbox-id={}", c.id("pod"));
    let (f, l, b) = (c.id("first"), c.id("lender"), c.id("borrower"));

    // H: the first heartbeat at least 6 s away, time for F and L to start, report and settle before it.
    let now = monotonic();
    let hb = heartbeat.as_nanos();
    let h = (now + secs(6)).as_nanos().div_ceil(hb) * hb;
    let h = Duration::from_nanos(u64::try_from(h).expect("monotonic ns fit in u64"));
    let h_at = Instant::now() + (h - now);
    let h_wall = SystemTime::now() + (h - now);
    let f_sleep = (h + tick * 2).saturating_sub(monotonic());
    c.run_detached(
        &f,
        &[
            "--cpus",
            "0.05",
            "--annotation",
            &pod,
            "--annotation",
            "io.predictive.task-type=e2e-first",
        ],
        &["sleep", &format!("{:.3}", f_sleep.as_secs_f64())],
    );
    c.run_detached(
        &l,
        &[
            "--cpus",
            "1.45",
            "--annotation",
            &pod,
            "--annotation",
            "io.predictive.task-type=e2e-lender",
        ],
        &["sleep", "100000"],
    );
    assert_eq!(c.shim_pids().len(), 1, "one sandbox-id, one shim");
    assert!(
        Instant::now() + tick * 6 <= h_at,
        "L started {:?} before the pod's heartbeat: too late to settle before it",
        h_at.saturating_duration_since(Instant::now())
    );

    // Both members report at H, in one batch: F is the first member, so on F's connection.
    std::thread::sleep(h_at.saturating_duration_since(Instant::now() + tick));
    let batched = || metric(&scrape(&addr)?, "predictive_batched_reports_total");
    let grouped_before = batched().expect("the broker's metrics");
    c.wait_status(
        &f,
        "STOPPED",
        h_at.saturating_duration_since(Instant::now()) + tick * 2 + secs(10),
    );
    let f_exited = h_at.elapsed();
    let grouped_after = batched().expect("the broker's metrics");
    assert!(
        grouped_after >= grouped_before + 2.0,
        "the pod's heartbeat did not go as one batch of both members: {grouped_before} -> {grouped_after} batched reports"
    );
    c.remove(&f);
    assert_eq!(c.cpu_quota_us(&l), Some(145_000), "L lends nothing yet");

    let b_quota = spin_borrower(&c, &b, &history);
    // L's quota is watched from now on: its side of the lease may land before the test sees the lease.
    let l_lent = |c: &Containerd| {
        c.cpu_quota_us(&l)
            .filter(|q| *q < 145_000)
            .map(|q| (q, SystemTime::now()))
    };
    let mut lent = None;
    let lease = wait_until(secs(8), || {
        lent = lent.or_else(|| l_lent(&c));
        let st = status(&c)?;
        let lease = st
            .leases
            .iter()
            .find(|x| x.holder == c.broker_id(&b) && x.lender == Some(c.broker_id(&l)))?
            .clone();
        (c.cpu_quota_us(&b)? > b_quota).then_some(lease)
    });
    let lease = lease.unwrap_or_else(|| {
        panic!(
            "no lease from {l} to {b}: status {:?}, B quota {:?}",
            status(&c),
            c.cpu_quota_us(&b)
        )
    });
    let granted = UNIX_EPOCH + Duration::from_millis(lease.granted_at_ms);
    let since_h = granted.duration_since(h_wall).unwrap_or_default();
    let next_heartbeat = (h_wall + heartbeat)
        .duration_since(granted)
        .unwrap_or_default();
    println!(
        "F exited {f_exited:?} after the pod's heartbeat (batched reports {grouped_before} -> {grouped_after}); the broker lent B \
         {:.2} cores of L's {since_h:?} after it, {next_heartbeat:?} before L's next heartbeat",
        lease.amount
    );
    assert!(
        next_heartbeat >= secs(3) + tick * 2,
        "the lease came {next_heartbeat:?} before L's heartbeat: too close to tell a poke from it"
    );
    // L's shim must be poked, on the connection L reported on after F left, and apply its side of the lease.
    let lent = lent.or_else(|| {
        let left = (granted + secs(3))
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        wait_until(left, || l_lent(&c))
    });
    let after = lent.map(|(q, at)| (q, at.duration_since(granted).unwrap_or_default()));
    let Some((quota, after)) = after.filter(|(_, after)| *after <= secs(3)) else {
        panic!(
            "L's quota did not go down by its loan: {:?} within 3 s of the lease (its next heartbeat \
             {next_heartbeat:?} after it)",
            after.map_or_else(|| c.cpu_quota_us(&l), |(q, _)| Some(q))
        )
    };
    println!(
        "L's quota went down to {quota} {after:?} ({:.1} ticks) after the lease was granted",
        after.as_secs_f64() / tick.as_secs_f64()
    );
    c.remove(&b);
    c.remove(&l);
    c.finish();
}

/// Issue 16: a settled container (idle, its shim asleep until the heartbeat) whose memory grows wakes its shim
/// through a v1 memory usage threshold: the broker hears of the growth long before the heartbeat, here set to a
/// minute so that only the threshold can explain it. cgroup v2 has no usage thresholds: not run there
/// (`a_settled_container_reaching_its_memory_limit_wakes_its_shim_before_the_heartbeat` is its v2 counterpart).
#[test]
fn a_settled_containers_memory_growth_wakes_its_shim_before_the_heartbeat() {
    if Containerd::cgroup_v2_host() {
        println!("SKIPPED: cgroup v2 has no memory usage thresholds");
        return;
    }
    let Some(c) = start(
        "a_settled_containers_memory_growth_wakes_its_shim_before_the_heartbeat",
        "",
        "idle_heartbeat_ms = 60000",
    ) else {
        return;
    };
    let id = c.id("grower");
    // Idle long enough to settle (3 idle looks after its first reports), then 32 MiB at once, then idle again.
    let idle = secs(12);
    let script = format!(
        "sleep {}; awk 'BEGIN{{s=sprintf(\"%1048576s\",\"\"); for(n=0;n<32;n++) a[n]=s; system(\"sleep 600\")}}'",
        idle.as_secs()
    );
    c.run_detached(&id, &[], &["sh", "-c", &script]);
    let seen = growth_heard(&c, &id, Instant::now(), 24 << 20, idle + secs(10));
    println!("the broker heard of 32 MiB of growth {seen:?} after the cgroup showed it");
    c.remove(&id);
    c.finish();
}

/// Memory usage of container `id` as the broker last heard it.
fn heard_memory(c: &Containerd, id: &str) -> Option<u64> {
    status(c)?
        .tasks
        .into_iter()
        .find(|t| t.container_id == c.broker_id(id))?
        .usage
        .map(|u| u.memory_bytes)
}

/// For a settled container `id` started at `started`: waits (at most `within`) until its cgroup holds `by` bytes
/// more than the broker first heard of, which must come after the container could settle (8 s), then (at most 20 s)
/// until the broker hears it; returns how long after the cgroup showed it the broker did.
fn growth_heard(c: &Containerd, id: &str, started: Instant, by: u64, within: Duration) -> Duration {
    let before =
        wait_until(secs(5), || heard_memory(c, id)).expect("the broker hears of the container");
    let grown = wait_until(within, || {
        c.memory_usage(id)
            .filter(|m| *m >= before + by)
            .map(|_| Instant::now())
    });
    let grown = grown.unwrap_or_else(|| {
        panic!(
            "the container never grew by {by} bytes: {:?} bytes, the broker heard {before}",
            c.memory_usage(id)
        )
    });
    assert!(
        grown.duration_since(started) >= secs(8),
        "the growth came before the container could settle"
    );
    let seen = wait_until(secs(20), || {
        heard_memory(c, id)
            .filter(|m| *m >= before + by)
            .map(|_| grown.elapsed())
    });
    seen.unwrap_or_else(|| {
        panic!(
            "the broker did not hear of the growth within {:?} (before the heartbeat): it heard {:?}, the cgroup has {:?}",
            secs(20),
            heard_memory(c, id),
            c.memory_usage(id)
        )
    })
}

/// Issue 16, on both cgroup versions: a settled container whose memory reaches its limit wakes its shim before the
/// heartbeat (90 s here), also where nothing stalls. The container reads a file the page cache does not hold,
/// so its usage climbs to its 32 MiB limit and stays there as the kernel reclaims the clean pages it read, cheaply
/// (no PSI memory trigger fires, so only a usage signal explains a wake-up): on v1 its usage threshold fires, on v2
/// its `memory.events` changes (`max`; `high` where the broker's allocation is lower).
#[test]
fn a_settled_container_reaching_its_memory_limit_wakes_its_shim_before_the_heartbeat() {
    // The heartbeat well past every wait below, which `secs` stretches in the emulated guest.
    let heartbeat = format!("idle_heartbeat_ms = {}", secs(90).as_millis());
    let Some(c) = start(
        "a_settled_container_reaching_its_memory_limit_wakes_its_shim_before_the_heartbeat",
        "",
        &heartbeat,
    ) else {
        return;
    };
    // On a disk filesystem (/tmp may be a tmpfs, whose pages cannot leave the cache), out of the page cache.
    let data = PathBuf::from(format!("/var/tmp/predictive-e2e-{}", c.id("cache")));
    std::fs::create_dir_all(&data).expect("data directory");
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(data.clone());
    let file = data.join("big");
    {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut f = std::fs::File::create(&file).expect("create the file");
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..96 {
            f.write_all(&block).expect("write the file");
        }
        f.sync_all().expect("fsync the file");
        // SAFETY: advice on a descriptor this test owns; the kernel drops only this file's clean pages.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise DONTNEED");
    }
    let id = c.id("reader");
    let idle = secs(12);
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.display()
    );
    let script = format!(
        "sleep {}; cat /data/big > /dev/null; exec sleep 600",
        idle.as_secs()
    );
    c.run_detached(
        &id,
        &[
            "--memory-limit",
            &(32u64 << 20).to_string(),
            "--mount",
            &mount,
        ],
        &["sh", "-c", &script],
    );
    let seen = growth_heard(&c, &id, Instant::now(), 16 << 20, idle + secs(30));
    println!(
        "the broker heard of the container at its memory limit {seen:?} after the cgroup showed it"
    );
    c.remove(&id);
    c.finish();
}

/// A tmpfs mounted at a path, unmounted (lazily: the broker may still hold its files) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("the mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The broker's disk fills up (its state directory on a 32 MiB tmpfs, filled with a file), then is freed: the
/// containers started meanwhile run and exit as always, the broker lives on, and once there is room again every
/// run is recorded again (runs that ended while the disk was full may be lost). Before: the broker's log line
/// about the failed write panicked the thread that logged it (its log is on the same disk), the store's recorder
/// among them, and the store refused every transaction until the broker was restarted.
#[test]
fn a_full_disk_freed_again_records_runs_again() {
    let Some(c) = start("a_full_disk_freed_again_records_runs_again", "", "") else {
        return;
    };
    // Mounted before the first container starts the broker.
    let state = Tmpfs::mount(&c.dir.join("broker"), "32m");
    let runs = || runs_seen(&c, "e2e-full");
    let run = |name: &str| {
        let started = Instant::now();
        run_ok(
            &c,
            name,
            &["--annotation", "io.predictive.task-type=e2e-full"],
            &["sleep", "0.3"],
        );
        started.elapsed()
    };
    let took_before = [run("before0"), run("before1")];
    let recorded = wait_until(secs(5), || (runs() == Some(2)).then_some(()));
    assert!(
        recorded.is_some(),
        "runs before the disk filled: {:?}",
        runs()
    );
    let broker = c.broker_pid().expect("the broker runs");

    let filler = state.0.join("filler");
    let out = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=64k")
        .output()
        .expect("running dd");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left"),
        "dd did not fill the disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took_full = [run("full0"), run("full1")];
    let during = runs();
    std::fs::remove_file(&filler).expect("removing the filler");
    // The store tries a reopen at most once a second (predictor::store): the next runs come after that.
    std::thread::sleep(Duration::from_secs(1));
    let freed = runs();

    let took_after = [run("after0"), run("after1")];
    let again = wait_until(secs(5), || {
        let now = runs()?;
        (now >= freed.or(during).unwrap_or(2) + 2).then_some(now)
    });
    assert_eq!(c.broker_pid(), Some(broker), "the broker restarted");
    println!(
        "ctr run took {took_before:?} before, {took_full:?} with the disk full, {took_after:?} after; runs seen \
         {during:?} while full, {freed:?} once freed, {again:?} after two more"
    );
    assert!(
        again.is_some(),
        "the two runs after the disk was freed were not both recorded: runs seen {freed:?} once freed, {:?} now",
        runs()
    );
    c.stop_broker();
    drop(state);
    c.finish();
}

/// A damaged store file (here 64 KiB of noise where `predictor.redb` should be): the broker a shim starts sets it
/// aside, byte for byte, as `predictor.redb.corrupt-<unix seconds>` and serves on an empty store, so the node's
/// containers are allocated and recorded again. Before: the broker exited at every start ("I/O error: invalid
/// data"; a truncated copy made redb panic), and every container ran on its spec limits, unrecorded, until someone
/// removed the file.
#[test]
fn a_damaged_store_is_set_aside_and_the_broker_starts_on_an_empty_one() {
    let Some(c) = start(
        "a_damaged_store_is_set_aside_and_the_broker_starts_on_an_empty_one",
        "",
        "",
    ) else {
        return;
    };
    let state = c.dir.join("broker");
    std::fs::create_dir_all(&state).expect("the state dir");
    let noise: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(state.join("predictor.redb"), &noise).expect("the damaged store");
    run_ok(
        &c,
        "after-damage",
        &["--annotation", "io.predictive.task-type=e2e-damaged"],
        &["sleep", "0.3"],
    );
    let recorded = wait_until(secs(5), || {
        (runs_seen(&c, "e2e-damaged") == Some(1)).then_some(())
    });
    assert!(
        recorded.is_some(),
        "the run was not recorded: {:?}",
        client(&c).models()
    );
    let aside: Vec<PathBuf> = std::fs::read_dir(&state)
        .expect("the state dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("predictor.redb.corrupt-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "set aside: {aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).expect("the file set aside"),
        noise,
        "the damaged file is kept as it was"
    );
    println!("set aside as {}", aside[0].display());
    c.finish();
}

/// Debian's `faketime` package: an `LD_PRELOAD` library that shifts `CLOCK_REALTIME` (and, unless told not to,
/// the monotonic clocks) by what a file says.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A broker this test starts itself (the shims' `autostart` off) whose wall clock is stepped by hand: libfaketime
/// re-reads `clock` (`+900`: 15 minutes ahead of the host's) at every clock read; the monotonic clock stays the
/// host's, as in a real step (NTP's `makestep`, `date -s`, a VM's clock set after a migration).
struct SteppedBroker {
    child: std::process::Child,
    clock: PathBuf,
}

impl SteppedBroker {
    fn start(c: &Containerd) -> SteppedBroker {
        let clock = c.dir.join("faketime");
        std::fs::write(&clock, "+0\n").expect("the fake clock's file");
        let log =
            std::fs::File::create(c.dir.join("predictived-stepped.log")).expect("the broker's log");
        let child = std::process::Command::new(c.settings.shim_dir.join("predictived"))
            .arg("--config")
            .arg(c.dir.join("predictive.toml"))
            .arg("--socket")
            .arg(c.broker_socket())
            .arg("--state-dir")
            .arg(c.dir.join("broker"))
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("DONT_FAKE_MONOTONIC", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting predictived under libfaketime");
        let up = wait_until(secs(10), || status(c));
        assert!(up.is_some(), "the broker under libfaketime did not answer");
        SteppedBroker { child, clock }
    }

    /// Sets the broker's wall clock to the host's plus `offset` (`+900`, `-3600`: seconds).
    fn step(&self, offset: &str) {
        std::fs::write(&self.clock, format!("{offset}\n")).expect("stepping the fake clock");
    }

    fn log(c: &Containerd) -> String {
        std::fs::read_to_string(c.dir.join("predictived-stepped.log")).unwrap_or_default()
    }
}

/// The wall clock steps (NTP's `makestep` at boot, `date -s`, a VM resumed or migrated): the broker's timing —
/// a task's freshness, its leases, when a silent task is forgotten, a run's duration — runs on the monotonic
/// clock, so a step neither forgets the node's tasks nor keeps a silent one alive. Before: 15 minutes forward
/// and every task was "no report for 10 minutes: forgotten" at the next tick (its lease ended, its run closed
/// unrecorded); an hour back and a task that stopped reporting stayed fresh for that hour, holding its lease.
#[test]
fn a_wall_clock_step_neither_forgets_nor_freezes_the_brokers_tasks() {
    let test = "a_wall_clock_step_neither_forgets_nor_freezes_the_brokers_tasks";
    if !std::path::Path::new(LIBFAKETIME).exists() {
        predictive_e2e::skip(
            test,
            "no libfaketime (scripts/deps.sh installs Debian's faketime)",
        );
        return;
    }
    let Some(c) = start(
        test,
        "autostart = false\nhost_cpu_cores = 2.0",
        "quota_unlimited_cpu = true\nstale_after_ms = 2000\nidle_heartbeat_ms = 0",
    ) else {
        return;
    };
    let mut broker = SteppedBroker::start(&c);
    let history = idle_history(&c, "e2e-borrower");
    let a = c.id("clock-lender");
    let b = c.id("clock-borrower");
    c.run_detached(&a, &["--cpus", "1.45"], &["sleep", "1000"]);
    let b_started = Instant::now();
    spin_borrower(&c, &b, &history);
    let (a_id, b_id) = (c.broker_id(&a), c.broker_id(&b));
    let lease_of = |st: &Status| {
        st.leases
            .iter()
            .find(|l| l.holder == b_id && l.lender.as_ref() == Some(&a_id))
            .map(|l| l.id)
    };
    let lease = wait_until(secs(10), || lease_of(&status(&c)?))
        .unwrap_or_else(|| panic!("no lease formed: {:?}", status(&c)));

    // 15 minutes forward: four ticks later both tasks are still registered and the lease is the same one.
    broker.step("+900");
    let watched = Instant::now();
    while watched.elapsed() < tick() * 4 {
        let st = status(&c).expect("status after the step forward");
        let ids: Vec<&str> = st.tasks.iter().map(|t| t.container_id.as_str()).collect();
        assert!(
            ids.contains(&a_id.as_str()) && ids.contains(&b_id.as_str()),
            "a step of the wall clock 15 minutes forward dropped tasks: {ids:?}\n{}",
            SteppedBroker::log(&c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        status(&c).as_ref().and_then(lease_of),
        Some(lease),
        "the lease did not survive the step forward: {:?}",
        status(&c).map(|s| s.leases)
    );
    assert!(
        !SteppedBroker::log(&c).contains("forgotten"),
        "the step forward made the broker forget tasks: {}",
        SteppedBroker::log(&c)
    );

    // An hour back (75 minutes from where it was): B's shim stops reporting (SIGSTOP); its lease must end
    // within the staleness bound (2 s) and a few ticks, as on a clock that did not move.
    broker.step("-3600");
    std::thread::sleep(tick() * 2);
    let shim = c.shim_pid_of(&b).expect("B's shim");
    // SAFETY: stopping the shim of this test's container; it is continued below.
    unsafe { libc::kill(shim, libc::SIGSTOP) };
    let silent = Instant::now();
    let ended = wait_until(secs(10), || {
        (status(&c).as_ref().and_then(lease_of) != Some(lease)).then(|| silent.elapsed())
    });
    // SAFETY: as above.
    unsafe { libc::kill(shim, libc::SIGCONT) };
    assert!(
        ended.is_some(),
        "after a step of the wall clock an hour back, B's lease outlived 10 s of its shim's silence: {:?}",
        status(&c).map(|s| s.leases)
    );

    // B's run is recorded with the time it really ran, not with the steps in it.
    let runs = || runs_seen(&c, "e2e-borrower");
    let before = runs().unwrap_or(0);
    c.remove(&b);
    let ran = b_started.elapsed().as_secs_f64();
    let recorded = wait_until(secs(10), || (runs()? > before).then_some(()));
    assert!(
        recorded.is_some(),
        "B's run was not recorded: runs seen {:?}",
        runs()
    );
    let page = match client(&c).call(&broker::api::Request::Export(Default::default())) {
        Ok(broker::api::Response::Export(p)) => p,
        other => panic!("export: {other:?}"),
    };
    let last = page
        .runs
        .iter()
        .filter(|r| r.task_key == "e2e-borrower")
        .max_by_key(|r| r.run)
        .expect("B's run in the export");
    println!(
        "lease {lease} ended {ended:?} after the shim fell silent (clock an hour back); B ran {ran:.1} s, recorded \
         {:.1} s",
        last.duration_s
    );
    assert!(
        (last.duration_s - ran).abs() < 3.0,
        "B ran {ran:.1} s and its run was recorded as {:.1} s",
        last.duration_s
    );
    c.remove(&a);
    c.stop_broker();
    let _ = broker.child.wait();
    c.finish();
}
