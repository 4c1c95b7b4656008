//! OOM notification: tells the shim when the kernel's OOM killer struck in a container's cgroup.
//!
//! cgroup v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control`; it also
//! fires when the cgroup is removed, so each wake-up is checked against the `oom_kill` counter.
//! cgroup v2: `memory.events`' `oom_kill` counter, polled (inotify would do, but a 500 ms poll of
//! one small file costs nothing measurable and needs no extra descriptor per container).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Where a process's memory cgroup lives and which interface it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// Finds the memory cgroup of `pid` from `/proc/<pid>/cgroup`, under `cgroup_root`.
pub fn memory_cgroup(proc_cgroup: &str, cgroup_root: &Path) -> Option<MemoryCgroup> {
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(MemoryCgroup::V1(cgroup_root.join("memory").join(path)));
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    // A pure v2 host: the unified hierarchy is mounted at the root itself.
    let path = unified?;
    cgroup_root
        .join("cgroup.controllers")
        .exists()
        .then(|| MemoryCgroup::V2(cgroup_root.join(path)))
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

/// Calls `on_oom` each time the OOM killer acts in `cgroup`, until the cgroup goes away.
pub async fn watch(cgroup: MemoryCgroup, on_oom: impl Fn() + Send) {
    match &cgroup {
        MemoryCgroup::V1(dir) => {
            if let Err(e) = watch_v1(dir, &cgroup, &on_oom).await {
                tracing::debug!("oom watch on {}: {e}", dir.display());
            }
        }
        MemoryCgroup::V2(dir) => {
            let mut seen = oom_kills(&cgroup).unwrap_or(0);
            while dir.exists() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                match oom_kills(&cgroup) {
                    Some(n) if n > seen => {
                        seen = n;
                        on_oom();
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        }
    }
}

async fn watch_v1(dir: &Path, cgroup: &MemoryCgroup, on_oom: &impl Fn()) -> std::io::Result<()> {
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
    let mut seen = oom_kills(cgroup).unwrap_or(0);
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
        if !dir.exists() {
            return Ok(());
        }
        match oom_kills(cgroup) {
            Some(n) if n > seen => {
                seen = n;
                on_oom();
            }
            // Older kernels have no oom_kill counter: the event itself is the news.
            None => on_oom(),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_memory_cgroup_on_a_hybrid_host() {
        let proc_cgroup = "12:memory:/default/c1\n11:cpu,cpuacct:/default/c1\n0::/default/c1\n";
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            memory_cgroup(proc_cgroup, root.path()),
            Some(MemoryCgroup::V1(root.path().join("memory/default/c1")))
        );
    }

    #[test]
    fn finds_the_v2_cgroup_on_a_unified_host() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
        assert_eq!(
            memory_cgroup("0::/k8s.io/c2\n", root.path()),
            Some(MemoryCgroup::V2(root.path().join("k8s.io/c2")))
        );
        let hybrid = tempfile::tempdir().expect("tempdir");
        assert_eq!(memory_cgroup("0::/k8s.io/c2\n", hybrid.path()), None);
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

    #[tokio::test]
    async fn v2_watch_reports_a_rising_counter_and_stops_when_the_cgroup_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cg = dir.path().join("c");
        std::fs::create_dir(&cg).expect("mkdir");
        std::fs::write(cg.join("memory.events"), "oom_kill 0\n").expect("write");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = count.clone();
        let watcher = tokio::spawn(watch(MemoryCgroup::V2(cg.clone()), move || {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::fs::write(cg.join("memory.events"), "oom_kill 1\n").expect("write");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        std::fs::remove_dir_all(&cg).expect("rm");
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("watcher ends when the cgroup goes")
            .expect("join");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
