//! Exec into a running container, per runtime: what a Kubernetes exec probe (CRI `ExecSync`, containerd's task
//! exec) costs each time it fires. One sleeping container per runtime, `n` `ctr task exec ... /bin/true` into
//! each, the runtimes interleaved (exec i alternates which goes first); per exec its time (until `ctr` exits),
//! and over all of them the CPU of the runtime's shim processes, themselves and the children they reaped
//! (runc v2: its shim, `runc exec` and what it forks; ours: the server, the zygote and its workers; both: the
//! exec'd `/bin/true`), plus our broker's.

use predictive_e2e::Containerd;
use predictive_e2e::settings::{PREDICTIVE_RUNTIME, RUNC_RUNTIME};

/// One runtime's execs.
pub struct ExecSide {
    pub runtime: &'static str,
    pub times_ms: Vec<f64>,
    /// CPU of the runtime's shim processes and their reaped children over all the execs, ms.
    pub cpu_ms: f64,
}

/// Both runtimes' execs, and our broker's CPU over ours (`None`: no broker found).
pub struct Exec {
    pub runc: ExecSide,
    pub ours: ExecSide,
    pub broker_cpu_ms: Option<f64>,
}

/// utime + stime + cutime + cstime of a process (its own CPU and that of the children it waited for), in clock
/// ticks; `None` once it is gone.
fn tree_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the last ')' start at field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    f.get(11..15)?.iter().map(|v| v.parse::<u64>().ok()).sum()
}

fn ticks_of(pids: &[i32]) -> Result<u64, String> {
    pids.iter()
        .map(|&p| tree_ticks(p).ok_or_else(|| format!("shim process {p} is gone")))
        .sum()
}

fn ms_per_tick() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1000.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// A sleeping container of `runtime` and the shim processes that came with it (server and helpers).
fn sleeper(c: &Containerd, runtime: &str, id: &str) -> Result<Vec<i32>, String> {
    let before = c.shim_processes();
    let out = super::run_sleeper(c, runtime, id);
    if !out.ok() {
        return Err(format!("{runtime}: {out}"));
    }
    let pids = predictive_e2e::cmd::wait_until(std::time::Duration::from_secs(10), || {
        let new: Vec<i32> = c
            .shim_processes()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        (!new.is_empty()).then_some(new)
    });
    pids.ok_or_else(|| format!("{runtime}: no new shim process for {id}"))
}

fn exec_once(c: &Containerd, id: &str, n: usize) -> Result<f64, String> {
    let exec_id = format!("probe{n}");
    let out = c.ctr(&["task", "exec", "--exec-id", &exec_id, id, "/bin/true"]);
    if !out.ok() {
        return Err(format!("exec {n} into {id}: {out}"));
    }
    Ok(out.elapsed.as_secs_f64() * 1000.0)
}

/// Runs the execs (after 2 warm-up execs per runtime) and removes both containers.
pub fn measure(c: &Containerd, n: usize) -> Result<Exec, String> {
    let ids = [c.id("exec"), c.id("exec")];
    let result = measure_in(c, n, &ids);
    for id in &ids {
        let _ = c.ctr(&["t", "rm", "-f", id]);
        let _ = c.ctr(&["c", "rm", id]);
    }
    result
}

fn measure_in(c: &Containerd, n: usize, ids: &[String; 2]) -> Result<Exec, String> {
    let runtimes = [RUNC_RUNTIME, PREDICTIVE_RUNTIME];
    let mut pids = Vec::new();
    for (runtime, id) in runtimes.iter().zip(ids) {
        pids.push(sleeper(c, runtime, id)?);
    }
    for (id, w) in ids.iter().flat_map(|id| [(id, 0), (id, 1)]) {
        exec_once(c, id, w)?;
    }
    let broker = c.broker_pid();
    let broker_before = broker.and_then(tree_ticks);
    let before = [ticks_of(&pids[0])?, ticks_of(&pids[1])?];
    let mut times = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for i in 0..n {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            times[s].push(exec_once(c, &ids[s], i + 2)?);
        }
    }
    let after = [ticks_of(&pids[0])?, ticks_of(&pids[1])?];
    let tick = ms_per_tick();
    let broker_cpu_ms = match (broker, broker_before) {
        (Some(b), Some(t0)) => tree_ticks(b).map(|t1| t1.saturating_sub(t0) as f64 * tick),
        _ => None,
    };
    let [runc_ms, ours_ms] = times;
    Ok(Exec {
        runc: ExecSide {
            runtime: RUNC_RUNTIME,
            times_ms: runc_ms,
            cpu_ms: after[0].saturating_sub(before[0]) as f64 * tick,
        },
        ours: ExecSide {
            runtime: PREDICTIVE_RUNTIME,
            times_ms: ours_ms,
            cpu_ms: after[1].saturating_sub(before[1]) as f64 * tick,
        },
        broker_cpu_ms,
    })
}

/// The exec table and its ratios, or why it was skipped.
pub fn print(exec: &Result<Exec, String>, n: usize) {
    let e = match exec {
        Ok(e) => e,
        Err(e) => {
            println!(
                "SKIPPED: exec: {}",
                e.lines().take(12).collect::<Vec<_>>().join("\n    ")
            );
            return;
        }
    };
    let per = |ms: f64| ms / n.max(1) as f64;
    let broker = e.broker_cpu_ms.unwrap_or(0.0);
    println!();
    println!(
        "exec: {n} `ctr task exec ... /bin/true` per runtime into one sleeping container each, interleaved; CPU of the shim processes and the children they reaped (10 ms ticks):"
    );
    println!(
        "| runtime | exec median ms | exec p90 ms | CPU ms per exec |\n| --- | --- | --- | --- |"
    );
    let ours_broker = e.broker_cpu_ms.map(|b| format!(" (broker {:.2})", per(b)));
    for (side, extra, note) in [(&e.runc, 0.0, None), (&e.ours, broker, ours_broker)] {
        println!(
            "| {} | {:.1} | {:.1} | {:.2}{} |",
            side.runtime,
            super::percentile(&side.times_ms, 0.5),
            super::percentile(&side.times_ms, 0.9),
            per(side.cpu_ms + extra),
            note.unwrap_or_default()
        );
    }
    println!(
        "ratio ours/runc: exec median {}  exec p90 {}  CPU per exec {}",
        super::ratio(
            super::percentile(&e.ours.times_ms, 0.5),
            super::percentile(&e.runc.times_ms, 0.5)
        ),
        super::ratio(
            super::percentile(&e.ours.times_ms, 0.9),
            super::percentile(&e.runc.times_ms, 0.9)
        ),
        super::ratio(e.ours.cpu_ms + broker, e.runc.cpu_ms)
    );
}
