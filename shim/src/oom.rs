//! OOM notification: tells the shim when the kernel's OOM killer struck in a container's cgroup.
//!
//! cgroup v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control`; it also
//! fires when the cgroup is removed, so each wake-up is checked against the `oom_kill` counter.
//! cgroup v2: `memory.events`' `oom_kill` counter, read when the kernel says the file changed, and at least
//! every [`V2_RECHECK`] in case a notification is lost: an idle container costs no wake-up twice a second. The
//! change notification is the file's own descriptor, kept open and polled for `POLLPRI` ([`Changes`]: cgroup2
//! notifies every open file of `memory.events` on each change, as it does inotify), not an inotify instance:
//! instances are counted per user (`fs.inotify.max_user_instances`, 128 by default), shared with kubelet, systemd,
//! containerd and every runc shim's own watcher, so one per container ran out on a node of ~60 containers of ours
//! beside runc's (measured in the cgroup v2 guest), after which each container read its file twice a second.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Longest wait between two reads of v2 `memory.events` (and checks that the cgroup still exists).
const V2_RECHECK: Duration = Duration::from_secs(30);

use runtime_hooks::{CgroupDirs, ContainerCgroup};

/// Where a process's memory cgroup lives and which interface it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

impl MemoryCgroup {
    /// The memory cgroup of a container's cgroups (found by runtime-hooks): v1's memory directory, or the v2 one.
    pub fn of(cgroup: &ContainerCgroup) -> Option<MemoryCgroup> {
        match cgroup.dirs() {
            CgroupDirs::V1(d) => d.memory.clone().map(MemoryCgroup::V1),
            CgroupDirs::V2(d) => Some(MemoryCgroup::V2(d.dir.clone())),
        }
    }
}

/// Reads the `oom_kill` counter from `memory.oom_control` (v1) or `memory.events` (v2).
pub fn oom_kills(cgroup: &MemoryCgroup) -> Option<u64> {
    let (file, key) = match cgroup {
        MemoryCgroup::V1(dir) => (dir.join("memory.oom_control"), "oom_kill"),
        MemoryCgroup::V2(dir) => (dir.join("memory.events"), "oom_kill"),
    };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// The `oom_kill` counter of a v2 cgroup's parent.
fn parent_kills(cgroup: &MemoryCgroup) -> Option<u64> {
    match cgroup {
        MemoryCgroup::V2(dir) => oom_kills(&MemoryCgroup::V2(dir.parent()?.to_owned())),
        MemoryCgroup::V1(_) => None,
    }
}

/// Counts the OOM kills of one cgroup that have been reported, so the watcher and the exit path
/// (which checks once more before announcing the exit) never report one twice or miss one.
#[derive(Debug)]
pub struct OomTracker {
    cgroup: MemoryCgroup,
    reported: AtomicU64,
    /// The counter when tracking began.
    initial: u64,
    /// For a v2 cgroup its owner removes once it is empty (a systemd scope): the parent's `oom_kill`
    /// (hierarchical: it counts this cgroup's kills too) as of the last reading of this cgroup's ([`Self::check`]),
    /// `u64::MAX` when unknown. `None` for any other cgroup.
    parent_seen: Option<AtomicU64>,
}

/// The exit status of a process the kernel's OOM killer ended (SIGKILL).
const KILLED: u32 = 128 + libc::SIGKILL as u32;

impl OomTracker {
    /// Tracks `cgroup`, which its owner removes on its own once it is empty if `owner_removes` (systemd, for a
    /// scope: see [`Self::check_exit`]).
    pub fn new(cgroup: MemoryCgroup, owner_removes: bool) -> OomTracker {
        let parent_seen = (owner_removes && matches!(cgroup, MemoryCgroup::V2(_)))
            .then(|| AtomicU64::new(parent_kills(&cgroup).unwrap_or(u64::MAX)));
        let initial = oom_kills(&cgroup).unwrap_or(0);
        OomTracker {
            cgroup,
            reported: AtomicU64::new(initial),
            initial,
            parent_seen,
        }
    }

    /// True if the OOM killer acted in the cgroup since tracking began (as far as reported by [`Self::check`]).
    pub fn killed(&self) -> bool {
        self.reported.load(Ordering::SeqCst) > self.initial
    }

    /// True if the OOM killer acted since the last report (and marks it reported).
    pub fn check(&self) -> bool {
        let Some(seen) = &self.parent_seen else {
            return oom_kills(&self.cgroup)
                .is_some_and(|n| self.reported.fetch_max(n, Ordering::SeqCst) < n);
        };
        // The parent's count around this reading: the watcher often wakes at a `max` event just before a kill, so
        // a kill between the reads is common. If this reading saw a kill, the later count (that kill is reported);
        // if not, the earlier one (a kill it missed is left for the exit's check).
        let before = parent_kills(&self.cgroup);
        let Some(n) = oom_kills(&self.cgroup) else {
            return false;
        };
        let rose = self.reported.fetch_max(n, Ordering::SeqCst) < n;
        let after = parent_kills(&self.cgroup);
        if let Some(p) = if rose { after } else { before.min(after) } {
            seen.store(p, Ordering::SeqCst);
        }
        rose
    }

    /// [`Self::check`] at the exit of the container's init with exit status `status`. A systemd scope's cgroup is
    /// removed by systemd once it is empty, which can come before this read when an OOM kill emptied it (the whole
    /// group killed; seen in the v2 guest under load): for an init killed by SIGKILL that no Kill request
    /// `signalled`, whose cgroup is gone and had no kill read yet, a rise of the parent's counter since this
    /// cgroup's was last read is taken as this cgroup's kill (a group kill counts each process: a reading between
    /// two of them leaves a rise that is the same kill). Without the Kill condition a pod's sandbox, stopped (SIGKILL) after its container's OOM
    /// kill, took that kill for its own (guest, measured). A sibling's kill since the last reading, at an init that
    /// died of a SIGKILL from outside the shim (`kill -9`), would still be taken.
    pub fn check_exit(&self, status: u32, signalled: bool) -> bool {
        if self.check() {
            return true;
        }
        let (MemoryCgroup::V2(dir), Some(parent_seen)) = (&self.cgroup, &self.parent_seen) else {
            return false;
        };
        if status != KILLED || signalled || self.killed() || dir.exists() {
            return false;
        }
        let Some(now) = parent_kills(&self.cgroup) else {
            return false;
        };
        let seen = parent_seen.fetch_max(now, Ordering::SeqCst);
        if seen >= now {
            return false;
        }
        tracing::info!(cgroup = %dir.display(), "the cgroup was gone at the exit (SIGKILL): its OOM kill read from the parent's oom_kill ({seen} -> {now})");
        self.reported.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn dir(&self) -> &Path {
        match &self.cgroup {
            MemoryCgroup::V1(d) | MemoryCgroup::V2(d) => d,
        }
    }

    /// Calls `on_oom` each time the OOM killer acts in the cgroup, until the cgroup goes away.
    pub async fn watch(&self, on_oom: impl Fn() + Send) {
        if let MemoryCgroup::V1(dir) = &self.cgroup {
            if let Err(e) = self.watch_v1(dir, &on_oom).await {
                tracing::warn!("OOM notification on {}: {e}", dir.display());
            }
            return;
        }
        let events = self.dir().join("memory.events");
        let notify = match Changes::watch(&events) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(
                    "no change notification on {} ({e}): reading it every 500 ms",
                    events.display()
                );
                None
            }
        };
        // Read once the watch is in place, then on every change: a kill between the tracker's first reading and
        // the watch would otherwise wait for the next recheck.
        while self.dir().exists() {
            if self.check() {
                on_oom();
            }
            match &notify {
                Some(n) => {
                    n.changed(V2_RECHECK).await;
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    async fn watch_v1(&self, dir: &Path, on_oom: &impl Fn()) -> std::io::Result<()> {
        let control = std::fs::File::open(dir.join("memory.oom_control"))?;
        // SAFETY: eventfd takes plain integer arguments and returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: efd was just returned by eventfd and is owned by nothing else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )?;
        // SAFETY: the AsyncFd owns the eventfd, so it stays open for as long as it is registered.
        let efd = unsafe { AsyncFd::register(efd) }?;
        loop {
            let mut guard = efd.readable().await?;
            let mut buf = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from an eventfd we own.
            let n = unsafe { libc::read(efd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(err);
            }
            // The eventfd also fires when the cgroup is removed.
            if !dir.exists() {
                return Ok(());
            }
            if self.check() {
                on_oom();
            }
        }
    }
}

/// A cgroup2 file's descriptor, kept open to be told of the file's changes: kernfs counts the changes of a file
/// its owner notifies (`memory.events`, `cgroup.events`) and polls an open descriptor `POLLPRI` while it has
/// not read the newest one. Needs a kernfs file: `epoll` refuses a regular file (`EPERM`, a fake cgroupfs).
struct Changes {
    fd: AsyncFd<runtime_hooks::ChangeFile>,
}

impl Changes {
    fn watch(file: &Path) -> std::io::Result<Changes> {
        // Opened and read once: a descriptor opens with the changes before it unread.
        let file = runtime_hooks::ChangeFile::open(file)?;
        // SAFETY: the AsyncFd owns the file, so the descriptor stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) }?;
        Ok(Changes { fd })
    }

    /// Marks the newest change read: kernfs records it when this descriptor reads the file.
    fn seen(&self) {
        let _ = self.fd.get_ref().consume();
    }

    /// `true` when the file changed since the last call, `false` after `at_most` without a change.
    async fn changed(&self, at_most: Duration) -> bool {
        let Ok(Ok(mut guard)) =
            tokio::time::timeout(at_most, self.fd.ready(Interest::PRIORITY)).await
        else {
            return false;
        };
        self.seen();
        guard.clear_ready();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_v1_memory_on_a_hybrid_host_and_unified_on_v2() {
        let dirs = runtime_hooks::v1::Dirs {
            memory: Some("/cg/memory/default/c1".into()),
            unified: Some("/cg/unified/default/c1".into()),
            ..Default::default()
        };
        let hybrid = ContainerCgroup::new(CgroupDirs::V1(dirs), "/proc".into());
        assert_eq!(
            MemoryCgroup::of(&hybrid),
            Some(MemoryCgroup::V1("/cg/memory/default/c1".into()))
        );
        let no_memory = ContainerCgroup::new(
            CgroupDirs::V1(runtime_hooks::v1::Dirs::default()),
            "/proc".into(),
        );
        assert_eq!(MemoryCgroup::of(&no_memory), None);
        let v2 = ContainerCgroup::new(
            CgroupDirs::V2(runtime_hooks::v2::Dirs {
                dir: "/cg/k8s.io/c2".into(),
            }),
            "/proc".into(),
        );
        assert_eq!(
            MemoryCgroup::of(&v2),
            Some(MemoryCgroup::V2("/cg/k8s.io/c2".into()))
        );
    }

    #[test]
    fn reads_oom_kill_counters() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("write");
        assert_eq!(oom_kills(&MemoryCgroup::V1(dir.path().into())), Some(2));
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .expect("write");
        assert_eq!(oom_kills(&MemoryCgroup::V2(dir.path().into())), Some(1));
        std::fs::write(dir.path().join("memory.events"), "garbage\n").expect("write");
        assert_eq!(oom_kills(&MemoryCgroup::V2(dir.path().into())), None);
    }

    /// A systemd scope emptied by a group OOM kill can be removed before the exit path reads its counter: the
    /// parent's hierarchical counter tells, for a SIGKILLed init only, and only for a rise since the last reading.
    #[test]
    fn a_kill_whose_cgroup_is_gone_at_the_exit_is_read_from_the_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path();
        let events = |d: &Path, n: u32| {
            std::fs::write(d.join("memory.events"), format!("oom 0\noom_kill {n}\n"))
                .expect("write")
        };
        // A child cgroup of the pod with no kill yet, and its tracker.
        let child = |name: &str, owner_removes: bool| {
            let d = pod.join(name);
            std::fs::create_dir(&d).expect("mkdir");
            events(&d, 0);
            let t = OomTracker::new(MemoryCgroup::V2(d.clone()), owner_removes);
            (d, t)
        };
        events(pod, 5);
        let (scope, tracker) = child("cri-containerd-c.scope", true);
        // A sibling's kill while this cgroup is there: its own counter says no.
        events(pod, 6);
        assert!(!tracker.check_exit(KILLED, false));
        assert!(!tracker.killed());
        // This cgroup's kill, and systemd removed it before the exit path read it.
        events(pod, 7);
        std::fs::remove_dir_all(&scope).expect("rm");
        assert!(
            !tracker.check_exit(0, false),
            "an init that exited by itself"
        );
        assert!(
            !tracker.check_exit(128 + 15, false),
            "an init ended by SIGTERM"
        );
        assert!(
            !tracker.check_exit(KILLED, true),
            "an init a Kill request ended (a pod's sandbox stopped after its container's OOM kill)"
        );
        assert!(tracker.check_exit(KILLED, false));
        assert!(tracker.killed());
        assert!(!tracker.check_exit(KILLED, false), "reported once");
        // The watcher saw the kill (a group kill counts each process) and then the cgroup went: one report.
        let (seen, tracker) = child("cri-containerd-e.scope", true);
        events(&seen, 2);
        events(pod, 9);
        assert!(tracker.check());
        std::fs::remove_dir_all(&seen).expect("rm");
        assert!(!tracker.check_exit(KILLED, false), "reported twice");
        assert!(tracker.killed());
        // The watcher read the group kill half done (one process of two), then the cgroup went: one report.
        let (half, tracker) = child("cri-containerd-h.scope", true);
        events(&half, 1);
        events(pod, 10);
        assert!(tracker.check());
        events(&half, 2);
        events(pod, 11);
        std::fs::remove_dir_all(&half).expect("rm");
        assert!(
            !tracker.check_exit(KILLED, false),
            "one kill reported twice"
        );
        assert!(tracker.killed());
        // A cgroup its owner does not remove on its own (the cgroupfs driver) has no such reading.
        let (fs, tracker) = child("f", false);
        events(pod, 12);
        std::fs::remove_dir_all(&fs).expect("rm");
        assert!(!tracker.check_exit(KILLED, false));
        // Gone without a kill: an init ended by kill -9.
        let (other, tracker) = child("cri-containerd-d.scope", true);
        std::fs::remove_dir_all(&other).expect("rm");
        assert!(!tracker.check_exit(KILLED, false));
        assert!(!tracker.killed());
    }

    /// The change notification on a real cgroup2 file, with no inotify instance: a descriptor of `cgroup.events`
    /// (notified like `memory.events`, and present without controllers, as in this host's hybrid tree) in a
    /// cgroup of the test's own wakes when a process moves in and again when it leaves, and not in between.
    #[tokio::test]
    async fn a_cgroup2_files_descriptor_wakes_at_each_change_of_the_file() {
        if !testkit::require_root(
            "a_cgroup2_files_descriptor_wakes_at_each_change_of_the_file",
            "a cgroup2 directory of its own",
        ) {
            return;
        }
        use runtime_hooks::discovery::Hierarchy;
        let Some(root) = (match Hierarchy::detect(&runtime_hooks::HostRoots::default()) {
            Ok(Hierarchy::Unified(u) | Hierarchy::Hybrid { unified: u, .. }) => Some(u.mount_point),
            _ => None,
        }) else {
            testkit::skip(
                "a_cgroup2_files_descriptor_wakes_at_each_change_of_the_file",
                "no cgroup2 tree mounted",
            );
            return;
        };
        /// The test's cgroup, removed on drop with the process in it.
        struct Own(PathBuf, std::process::Child);
        impl Drop for Own {
            fn drop(&mut self) {
                let _ = self.1.kill();
                let _ = self.1.wait();
                for _ in 0..50 {
                    if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let dir = root.join(format!("predictive-test-oom-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir");
        let sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let mut own = Own(dir.clone(), sleeper);
        let changes = Changes::watch(&dir.join("cgroup.events")).expect("watch a cgroup2 file");
        // Long enough for a change to show (the kernel notifies at the write), short enough for the test.
        let quiet = Duration::from_millis(300);
        assert!(
            !changes.changed(quiet).await,
            "woken with no change (the changes before it opened count as read)"
        );
        std::fs::write(dir.join("cgroup.procs"), own.1.id().to_string()).expect("move in");
        assert!(
            changes.changed(Duration::from_secs(10)).await,
            "no wake-up when a process moved in (populated 0 -> 1)"
        );
        assert!(!changes.changed(quiet).await, "woken twice for one change");
        own.1.kill().expect("kill");
        own.1.wait().expect("wait");
        assert!(
            changes.changed(Duration::from_secs(10)).await,
            "no wake-up when the cgroup emptied (populated 1 -> 0)"
        );
    }

    #[tokio::test]
    async fn v2_watch_reports_a_rising_counter_once_and_stops_when_the_cgroup_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cg = dir.path().join("c");
        std::fs::create_dir(&cg).expect("mkdir");
        std::fs::write(cg.join("memory.events"), "oom_kill 0\n").expect("write");
        let tracker = std::sync::Arc::new(OomTracker::new(MemoryCgroup::V2(cg.clone()), false));
        // Each report counts up: the test waits on the count, not on the clock.
        let (count, reports) = tokio::sync::watch::channel(0u32);
        let t = tracker.clone();
        let watcher =
            tokio::spawn(async move { t.watch(move || count.send_modify(|n| *n += 1)).await });
        let reported = |n: u32| {
            let mut reports = reports.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(30), reports.wait_for(|c| *c >= n))
                    .await
                    .expect("the watcher reports within its poll period")
                    .expect("the watcher is alive");
            }
        };
        std::fs::write(cg.join("memory.events"), "oom_kill 1\n").expect("write");
        reported(1).await;
        // Already reported by the watcher: the exit path's check finds nothing new.
        assert!(!tracker.check());
        std::fs::write(cg.join("memory.events"), "oom_kill 2\n").expect("write");
        // The exit path got there first this time (no await in between: the watcher cannot run).
        assert!(tracker.check());
        std::fs::write(cg.join("memory.events"), "oom_kill 3\n").expect("write");
        reported(2).await;
        std::fs::remove_dir_all(&cg).expect("rm");
        tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .expect("watcher ends when the cgroup goes")
            .expect("join");
        // Kills 1 and 3 by the watcher; 2 only by the exit path.
        assert_eq!(*reports.borrow(), 2);
    }
}
