//! Root tests of memory usage thresholds on this host's real v1 memory hierarchy.
//!
//! Each test makes its own memory cgroup (`predictive-threshold-test-<pid>-<n>`, in the memory hierarchy only) and
//! a guard kills what runs in it and removes it on drop, also when an assertion fails; nothing else on the host is
//! touched. Without root a test prints `SKIPPED: <reason>`; under CI it fails instead (`testkit`). A host without
//! a v1 memory hierarchy checks the v2 error instead. Figures are printed, never asserted.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::discovery::{Hierarchy, HostRoots};
use crate::threshold::{MemoryThreshold, ThresholdError, USAGE_FILE};
use crate::{CgroupDirs, TriggerSet};

const MIB: u64 = 1 << 20;

/// How long a wake may take before the test calls it missing: the kernel signals within a page charge, so this
/// only bounds a loaded machine's scheduling.
const WAKE_LIMIT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn require_root(test: &str) -> bool {
    testkit::require_root(test, "real v1 memory cgroups")
}

/// The v1 memory hierarchy's mount point, when this host has one at its root.
fn memory_mount() -> Option<PathBuf> {
    match Hierarchy::detect(&HostRoots::default()).expect("cgroup hierarchy") {
        Hierarchy::Unified(_) => None,
        Hierarchy::Legacy(v1) | Hierarchy::Hybrid { v1, .. } => v1
            .into_iter()
            .find(|m| m.root == "/" && m.controllers.iter().any(|c| c == "memory"))
            .map(|m| m.mount_point),
    }
}

/// A host without v1 memory: arming on its own (v2) cgroup says why. Returns true when that was the case.
fn checked_v2_instead(test: &str) -> bool {
    if memory_mount().is_some() {
        return false;
    }
    let dirs = CgroupDirs::V2(crate::v2::Dirs {
        dir: "/sys/fs/cgroup".into(),
    });
    let err = MemoryThreshold::arm(&dirs, MIB).expect_err("v2");
    assert!(matches!(err, ThresholdError::CgroupV2), "{err}");
    println!("{test}: no v1 memory hierarchy on this host; the v2 error is checked instead");
    true
}

/// Our own memory cgroup, removed on drop with every process in it.
struct ThresholdCgroup {
    dir: PathBuf,
    children: Vec<Child>,
}

impl ThresholdCgroup {
    fn new() -> Self {
        let mount = memory_mount().expect("a v1 memory hierarchy");
        let dir = mount.join(format!(
            "predictive-threshold-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            dir,
            children: Vec::new(),
        }
    }

    fn dirs(&self) -> CgroupDirs {
        CgroupDirs::V1(crate::v1::Dirs {
            memory: Some(self.dir.clone()),
            ..Default::default()
        })
    }

    fn usage(&self) -> u64 {
        let text = std::fs::read_to_string(self.dir.join(USAGE_FILE)).expect("read usage");
        text.trim().parse().expect("usage is a number")
    }

    /// Starts `program args` inside the cgroup (it moves itself in before exec, so all it charges is ours), with
    /// its stdin and stdout pipes the test holds.
    fn spawn(&mut self, program: &str, args: &[&str]) -> (ChildStdin, BufReader<ChildStdout>) {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
            .expect("no NUL in path");
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        crate::testutil::enter_before_exec(&mut cmd, vec![procs]);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in the test cgroup: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        self.children.push(child);
        (stdin, stdout)
    }

    fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        // The shell's pipeline members are in our cgroup too: only ours are there.
        for _ in 0..50 {
            let pids = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            let mut any = false;
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                // SAFETY: kill has no memory preconditions; the pid is in our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills what runs in it and removes the directory; true once it is gone.
    fn remove(&mut self) -> bool {
        self.kill_all();
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ThresholdCgroup {
    fn drop(&mut self) {
        if !self.remove() {
            eprintln!(
                "warning: could not remove test cgroup {}",
                self.dir.display()
            );
        }
    }
}

/// Waits until `fd` polls readable; `None` after `limit`.
fn readable_within(fd: BorrowedFd<'_>, limit: Duration) -> Option<Duration> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return Some(start.elapsed()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        if start.elapsed() >= limit {
            return None;
        }
    }
}

/// Tells the child to allocate; returns (go -> readable, CLOCK_MONOTONIC ns when the wait returned, usage at the
/// wake less the threshold). The fd must be quiet until then.
fn grow_past(
    tc: &ThresholdCgroup,
    threshold: &MemoryThreshold,
    stdin: &mut ChildStdin,
    go: &str,
) -> (Duration, i64, i64) {
    assert_eq!(
        readable_within(threshold.as_fd(), Duration::from_millis(300)),
        None,
        "quiet before the allocation (usage {} B, threshold {} B)",
        tc.usage(),
        threshold.bytes()
    );
    stdin
        .write_all(format!("{go}\n").as_bytes())
        .expect("tell the child");
    let woke = readable_within(threshold.as_fd(), WAKE_LIMIT);
    let woke_ns = monotonic_ns();
    let at_wake = tc.usage();
    let woke = woke.unwrap_or_else(|| {
        panic!(
            "no wake within {WAKE_LIMIT:?}: usage {at_wake} B, threshold {} B",
            threshold.bytes()
        )
    });
    let past = i64::try_from(at_wake).unwrap_or(i64::MAX)
        - i64::try_from(threshold.bytes()).unwrap_or(i64::MAX);
    (woke, woke_ns, past)
}

/// dash keeps the 32 MiB string in anonymous memory, then sleeps; it waits for a line first.
const GROW_32_MIB: &str = "read _; x=$(head -c 33554432 /dev/zero | tr '\\000' a); sleep 120";

/// A threshold 8 MiB above usage: quiet while the cgroup idles, readable once a child allocates 32 MiB, the set
/// woken with it; quiet once consumed; signalled again when usage falls back below (the child killed) and when
/// the cgroup is removed.
#[test]
fn a_memory_threshold_wakes_the_set_when_usage_grows_past_it() {
    const TEST: &str = "a_memory_threshold_wakes_the_set_when_usage_grows_past_it";
    if !require_root(TEST) || checked_v2_instead(TEST) {
        return;
    }
    let mut tc = ThresholdCgroup::new();
    let (mut stdin, _) = tc.spawn("sh", &["-c", GROW_32_MIB]);
    let base = tc.usage();
    let threshold = MemoryThreshold::arm(&tc.dirs(), base + 8 * MIB).expect("arm");
    let set = TriggerSet::new().expect("epoll set");
    set.arm_readable(threshold.as_fd()).expect("arm readable");
    assert_eq!(threshold.consume().expect("read"), 0, "nothing yet");

    let (woke, _, past) = grow_past(&tc, &threshold, &mut stdin, "go");
    println!(
        "threshold: base {base} B, threshold +8 MiB; readable {woke:?} after the go, usage then {past} B past it"
    );
    // Usage moves both ways while the pipeline runs (head and tr exit, pipe buffers are freed), so the reading
    // after the wake may sit a little under the threshold; it must show most of the growth.
    assert!(
        past > -(4 << 20),
        "woken before the usage grew: {past} B from the threshold"
    );
    assert!(
        readable_within(set.as_fd(), Duration::from_secs(1)).is_some(),
        "the set wakes"
    );
    assert_eq!(set.drain(), 1);
    assert!(threshold.consume().expect("read") >= 1);
    assert_eq!(
        readable_within(threshold.as_fd(), Duration::ZERO),
        None,
        "consumed: quiet"
    );

    // Either direction: the memory freed takes usage back below the threshold.
    tc.kill_all();
    let fell = readable_within(threshold.as_fd(), WAKE_LIMIT).expect("falling back signals too");
    println!(
        "threshold: readable {fell:?} after the kill (usage {} B)",
        tc.usage()
    );
    assert!(threshold.consume().expect("read") >= 1);

    // Removing the cgroup tells the listener its event is gone.
    assert!(tc.remove(), "rmdir {}", tc.dir.display());
    let gone = readable_within(threshold.as_fd(), WAKE_LIMIT).expect("removal signals");
    println!("threshold: readable {gone:?} after the rmdir");
    assert!(!threshold.dir().exists());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; the thread CPU clock always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(
        u64::try_from(ts.tv_sec).expect("non-negative"),
        u32::try_from(ts.tv_nsec).expect("below a second"),
    )
}

/// Figures for docs/BENCHMARKS.md: the cost of arming and dropping a threshold, and the wake latency over
/// several allocations. Asserts only that every round woke.
#[test]
fn memory_threshold_arm_cost_and_wake_latency() {
    const TEST: &str = "memory_threshold_arm_cost_and_wake_latency";
    if !require_root(TEST) || checked_v2_instead(TEST) {
        return;
    }
    let mut tc = ThresholdCgroup::new();
    const ARMS: usize = 200;
    let (mut arm_wall, mut arm_cpu, mut drop_wall) = (Vec::new(), Vec::new(), Vec::new());
    let dirs = tc.dirs();
    let level = tc.usage() + 64 * MIB;
    for _ in 0..ARMS {
        let (w, c) = (Instant::now(), thread_cpu());
        let t = MemoryThreshold::arm(&dirs, level).expect("arm");
        arm_wall.push(w.elapsed());
        arm_cpu.push(thread_cpu().saturating_sub(c));
        let w = Instant::now();
        drop(t);
        drop_wall.push(w.elapsed());
    }
    let (arm_max, arm_min) = (
        *arm_wall.iter().max().expect("arms"),
        *arm_wall.iter().min().expect("arms"),
    );
    println!(
        "threshold: arm median {:?} wall (min {arm_min:?}, max {arm_max:?}), {:?} thread CPU; drop median {:?} \
         ({ARMS} arms+drops)",
        median(arm_wall),
        median(arm_cpu),
        median(drop_wall)
    );
    // Without a drop in between: no unregistration (the kernel's worker takes the same lock) can be in the way.
    const HELD: usize = 50;
    let mut held_wall = Vec::new();
    let held: Vec<_> = (0..HELD)
        .map(|_| {
            let w = Instant::now();
            let t = MemoryThreshold::arm(&dirs, level).expect("arm");
            held_wall.push(w.elapsed());
            t
        })
        .collect();
    drop(held);
    println!(
        "threshold: arm median {:?} wall with {HELD} held (none dropped in between)",
        median(held_wall)
    );

    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("-c")
            .arg("")
            .status()
            .is_ok_and(|s| s.success())
    });
    let Some(python) = python else {
        println!("threshold: no python3, wake latency not measured");
        return;
    };
    const ROUNDS: usize = 9;
    let usage_file = tc.dir.join(USAGE_FILE);
    let usage_file = usage_file.to_str().expect("UTF-8 path");
    let (mut latencies, mut pasts) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (mut stdin, mut stdout) = tc.spawn(python, &["-c", TOUCH_32_MIB, usage_file]);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("child ready");
        assert_eq!(line.trim(), "ready");
        let threshold = MemoryThreshold::arm(&dirs, tc.usage() + 8 * MIB).expect("arm");
        let (_, woke_ns, past) =
            grow_past(&tc, &threshold, &mut stdin, &threshold.bytes().to_string());
        line.clear();
        stdout.read_line(&mut line).expect("child's crossing time");
        let crossed_ns: i64 = line.trim().parse().expect("a time");
        assert!(crossed_ns > 0, "the child saw usage cross");
        latencies.push(woke_ns - crossed_ns);
        pasts.push(past);
        tc.kill_all();
    }
    println!("threshold: wake latency after the child saw usage cross, ns: {latencies:?}");
    println!("threshold: usage past the threshold when the waiter ran, B: {pasts:?}");
    latencies.sort_unstable();
    pasts.sort_unstable();
    println!(
        "threshold: median latency {} µs, median {} KiB past ({ROUNDS} rounds)",
        latencies[ROUNDS / 2] / 1000,
        pasts[ROUNDS / 2] / 1024
    );
}

/// Touches 32 MiB a page at a time once it reads the threshold from stdin, and prints the CLOCK_MONOTONIC time
/// (ns) at which it first read usage at or past it (0 if never).
const TOUCH_32_MIB: &str = r#"
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(-1, 32 << 20)
print("ready", flush=True)
thr = int(sys.stdin.readline())
crossed = 0
for off in range(0, 32 << 20, 4096):
    m[off] = 1
    if not crossed and int(os.pread(fd, 32, 0)) >= thr:
        crossed = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
print(crossed, flush=True)
time.sleep(120)
"#;

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}
