//! What one disk I/O priority write costs: `ioprio::sweep` (read a cgroup's thread list, one `ioprio_set` per
//! thread), the write the shim makes once per Register (and on adoption) for a task whose priority is not 0. The
//! thread list is a file naming this process's own threads (THREADS of them, parked), so no root and no cgroup
//! is needed; the priority alternates between best-effort levels 2 and 5. Prints wall and CPU time (user +
//! system of the whole process) per sweep and per thread.
//!
//! `cargo run --release -p runtime-hooks --example io_cost [ITERATIONS] [THREADS]`

use std::time::Instant;

use runtime_hooks::ioprio::{IoClass, IoPriority, sweep};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to write.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    let arg = |i: usize, default: u32| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, threads) = (arg(1, 2000), arg(2, 16));
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..threads {
        let tx = tx.clone();
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            tx.send(tid).expect("main thread waits");
            loop {
                std::thread::park();
            }
        });
    }
    let tids: Vec<i32> = (0..threads)
        .map(|_| rx.recv().expect("a thread's id"))
        .collect();
    let dir = std::env::temp_dir().join(format!("io-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("tasks");
    let list: String = tids.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&file, list).expect("thread list");

    let levels = [
        IoPriority::new(IoClass::BestEffort, 2).expect("level"),
        IoPriority::new(IoClass::BestEffort, 5).expect("level"),
    ];
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for i in 0..n {
        let done = sweep(&file, levels[i as usize % 2]).expect("ioprio sweep");
        assert_eq!(done.set, tids.len(), "every thread set");
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let per = |s: f64| s / f64::from(n) * 1e6;
    println!(
        "ioprio sweep of {threads} threads: {:.1} us wall, {:.1} us CPU per sweep ({:.2} us wall per thread), {n} sweeps",
        per(wall),
        per(cpu),
        per(wall) / f64::from(threads)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
