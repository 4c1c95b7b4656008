//! The cgroups a container makes below its own.
//!
//! A container that sees a writable cgroupfs (a privileged pod, Docker's `--privileged`, docker-in-docker, systemd
//! or kind in a container, a CI runner) may make cgroups below its own and move its processes into them. The kernel
//! will not remove a cgroup that has children, and libcgroups' managers remove only the container's own directory,
//! so its delete failed and the container's cgroups and state stayed, its id taken ("container already exists").
//! runc removes such a subtree deepest first; [`remove_below`] does that for the shim before libcontainer's delete.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HostRoots;

/// How long [`remove_below`] with `wait` keeps trying a cgroup whose processes are still leaving it (a process
/// killed a moment ago leaves its cgroup when it has exited), over the whole subtree.
pub const EXIT_WAIT: Duration = Duration::from_millis(500);

/// The container's directory at an absolute cgroupfs `cgroups_path` in every hierarchy of the host that has it:
/// each v1 hierarchy (the named `name=systemd` one too) and the cgroup2 tree. Empty for a `slice:prefix:name` or
/// relative path (systemd removes a unit's subtree itself) or one naming a hierarchy's root.
pub fn container_dirs(roots: &HostRoots, cgroups_path: &str) -> Vec<PathBuf> {
    let mut dirs = crate::companions::dirs_where(roots, cgroups_path, |h| {
        h.v1_mounts().iter().chain(h.unified()).collect()
    });
    dirs.retain(|d| d.is_dir());
    dirs
}

/// What [`remove_below`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Cgroups removed.
    pub removed: usize,
    /// The first cgroup that would not go, and why (its parents stay too).
    pub failed: Option<(PathBuf, io::Error)>,
}

/// Removes every directory below `dir` (not `dir` itself), deepest first, without following symbolic links. On
/// cgroupfs a directory whose processes are all gone goes with its files; one that still holds a process refuses
/// with `EBUSY`: with `wait` it is tried again until [`EXIT_WAIT`] has passed since the call, else it stays (and so
/// do its parents). A directory gone meanwhile is no failure. Iterative, so a deep tree costs heap, not stack.
pub fn remove_below(dir: &Path, wait: bool) -> Pruned {
    remove_below_with(dir, wait, |d| std::fs::remove_dir(d))
}

/// [`remove_below`] with the directory removal given (a fake one in tests).
pub fn remove_below_with(
    dir: &Path,
    wait: bool,
    mut rmdir: impl FnMut(&Path) -> io::Result<()>,
) -> Pruned {
    let deadline = Instant::now() + EXIT_WAIT;
    let (below, unlisted) = crate::walk::dirs_below(dir);
    let mut out = Pruned {
        removed: 0,
        failed: unlisted,
    };
    // Each directory comes before the ones below it: backwards, every one after them.
    for d in below.into_iter().rev() {
        match remove_one(&d, wait, deadline, &mut rmdir) {
            Ok(()) => out.removed += 1,
            Err(e) => {
                out.failed.get_or_insert((d, e));
            }
        }
    }
    out
}

fn remove_one(
    dir: &Path,
    wait: bool,
    deadline: Instant,
    rmdir: &mut impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let mut pause = Duration::from_millis(5);
    loop {
        match rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if wait && e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout};

    fn tree(root: &Path, dirs: &[&str]) {
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).expect("fixture dir");
        }
    }

    #[test]
    fn every_directory_below_goes_deepest_first_and_the_top_stays() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("c");
        tree(&top, &["a/b/c", "a/d", "e"]);
        std::fs::write(top.join("cgroup.procs"), "").expect("a file of the top");
        let mut order = Vec::new();
        let pruned = remove_below_with(&top, false, |d| {
            order.push(d.strip_prefix(&top).expect("below").to_owned());
            std::fs::remove_dir(d)
        });
        assert!(pruned.failed.is_none(), "{:?}", pruned.failed);
        assert_eq!(pruned.removed, 5);
        let pos = |p: &str| order.iter().position(|o| o == Path::new(p)).expect(p);
        assert!(pos("a/b/c") < pos("a/b") && pos("a/b") < pos("a") && pos("a/d") < pos("a"));
        assert!(
            top.is_dir(),
            "the container's own directory is libcontainer's to remove"
        );
        assert_eq!(
            std::fs::read_dir(&top)
                .expect("top")
                .flatten()
                .filter(|e| e.path().is_dir())
                .count(),
            0
        );
    }

    /// A busy cgroup (a process in it: a file here) stays, and so do its parents; its siblings go; the failure
    /// names it. A link to a directory elsewhere is not followed.
    #[test]
    fn a_busy_cgroup_stays_with_its_parents_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("c");
        tree(&top, &["busy/inner", "idle/x"]);
        std::fs::write(top.join("busy/inner/cgroup.procs"), "42\n").expect("busy");
        let outside = tmp.path().join("outside/keep");
        std::fs::create_dir_all(&outside).expect("outside");
        std::os::unix::fs::symlink(tmp.path().join("outside"), top.join("link")).expect("link");
        let pruned = remove_below(&top, false);
        let (dir, err) = pruned.failed.expect("the busy cgroup is reported");
        assert_eq!(dir, top.join("busy/inner"));
        assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
        assert_eq!(pruned.removed, 2, "idle/x and idle");
        assert!(top.join("busy").is_dir() && !top.join("idle").exists());
        assert!(
            outside.is_dir(),
            "followed a symbolic link out of the cgroup"
        );
    }

    /// With `wait`, a cgroup whose process is still leaving (EBUSY) is tried again until it goes; without, once.
    #[test]
    fn with_wait_a_cgroup_still_emptying_is_tried_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("c");
        tree(&top, &["leaving"]);
        let mut tries = 0;
        let busy_twice = |d: &Path| {
            tries += 1;
            if tries <= 2 {
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            } else {
                std::fs::remove_dir(d)
            }
        };
        let pruned = remove_below_with(&top, true, busy_twice);
        assert!(pruned.failed.is_none(), "{:?}", pruned.failed);
        assert_eq!((pruned.removed, tries), (1, 3));
        tree(&top, &["leaving"]);
        let mut once = 0;
        let pruned = remove_below_with(&top, false, |_| {
            once += 1;
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        });
        assert_eq!(once, 1);
        assert!(pruned.failed.is_some());
    }

    #[test]
    fn a_containers_directories_are_found_in_every_hierarchy() {
        let host = FakeHost::new(Layout::Hybrid);
        let made = ["cpu", "memory", "systemd", "unified"].map(|h| {
            let d = host.root().join(h).join("default/c1");
            std::fs::create_dir_all(&d).expect("fixture");
            d
        });
        let roots = host.roots();
        let mut found = container_dirs(&roots, "/default/c1");
        found.sort();
        let mut want = made.to_vec();
        want.sort();
        assert_eq!(found, want);
        for not_cgroupfs in ["kubepods.slice:cri-containerd:c1", "default/c1", "/", ""] {
            assert!(
                container_dirs(&roots, not_cgroupfs).is_empty(),
                "{not_cgroupfs}"
            );
        }
    }
}
