//! A daemon's own cgroup: a directory named after it at the root of every cgroup hierarchy the host mounts (on a
//! hybrid host the v1 controllers' and the cgroup2 tree's), for a process that must not stay in the cgroup of the
//! process that started it. The shim starts the broker this way: left in containerd's cgroup it would count
//! against containerd's limits and share containerd's fate when that cgroup is killed or restarted.
//!
//! Only that one directory is made in each hierarchy, and one that exists already (an earlier start made it) is
//! reused; nothing else is created, written or removed. The directories are not removed when the daemon exits (an
//! empty cgroup costs nothing, and the next start needs it again). With systemd as PID 1 the cgroup tree is
//! systemd's: start the daemon as a unit there instead of calling this.

use std::path::{Path, PathBuf};

use crate::discovery::{CgroupMount, DiscoveryError, Hierarchy, HostRoots};

/// Errors making a daemon's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum DaemonCgroupError {
    /// The name is not one plain path component.
    #[error("invalid daemon cgroup name {name:?}: one path component, not `.` or `..`")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// No cgroup hierarchy was found.
    #[error("finding the cgroup hierarchies")]
    Discovery(#[source] DiscoveryError),
    /// A directory could not be made.
    #[error("creating cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The cgroups [`make_daemon_cgroups`] made or found.
#[derive(Debug, Default)]
pub struct DaemonCgroups {
    /// The `cgroup.procs` file of the daemon's directory in each hierarchy where it exists: writing `0` to each
    /// moves the writing process into the daemon's cgroups.
    pub procs: Vec<PathBuf>,
    /// Hierarchies where the directory could not be made (the daemon stays where it was in those).
    pub errors: Vec<DaemonCgroupError>,
}

/// Makes (or finds) `name` at the root of every cgroup hierarchy under `roots`.
pub fn make_daemon_cgroups(
    roots: &HostRoots,
    name: &str,
) -> Result<DaemonCgroups, DaemonCgroupError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(DaemonCgroupError::InvalidName {
            name: name.to_owned(),
        });
    }
    let hierarchy = Hierarchy::detect(roots).map_err(DaemonCgroupError::Discovery)?;
    let mounts: Vec<&CgroupMount> = match &hierarchy {
        Hierarchy::Unified(u) => vec![u],
        Hierarchy::Legacy(v1) => v1.iter().collect(),
        Hierarchy::Hybrid { v1, unified } => v1.iter().chain(std::iter::once(unified)).collect(),
    };
    let mut out = DaemonCgroups::default();
    let mut seen: Vec<&Path> = Vec::new();
    for m in mounts {
        // One hierarchy can be mounted more than once; one directory in it is enough.
        if seen.contains(&m.mount_point.as_path()) {
            continue;
        }
        seen.push(&m.mount_point);
        let dir = m.mount_point.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(source) => {
                out.errors
                    .push(DaemonCgroupError::Create { path: dir, source });
                continue;
            }
        }
        // A v1 cpuset cgroup starts with no CPUs and no memory nodes, and nothing can join it (ENOSPC) until it
        // has some: it gets its parent's, as runc gives a new container's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            let empty = std::fs::read_to_string(&own).is_ok_and(|v| v.trim().is_empty());
            if empty
                && let Ok(parent) = std::fs::read_to_string(m.mount_point.join(file))
                && let Err(source) = std::fs::write(&own, parent.trim())
            {
                out.errors
                    .push(DaemonCgroupError::Create { path: own, source });
            }
        }
        out.procs.push(dir.join("cgroup.procs"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> HostRoots {
        HostRoots {
            cgroup: dir.to_owned(),
            proc: dir.join("proc"),
            // No mountinfo: the tree is scanned.
            mountinfo: dir.join("no-mountinfo"),
        }
    }

    #[test]
    fn one_directory_per_hierarchy_of_a_hybrid_host_made_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["memory", "cpu", "freezer", "unified"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
            std::fs::write(tmp.path().join(d).join("cgroup.procs"), "").expect("procs");
        }
        std::fs::write(tmp.path().join("unified/cgroup.controllers"), "").expect("controllers");
        let made = make_daemon_cgroups(&roots(tmp.path()), "predictived").expect("made");
        assert!(made.errors.is_empty(), "{:?}", made.errors);
        let mut procs = made.procs.clone();
        procs.sort();
        let want: Vec<PathBuf> = ["cpu", "freezer", "memory", "unified"]
            .iter()
            .map(|d| tmp.path().join(d).join("predictived/cgroup.procs"))
            .collect();
        assert_eq!(procs, want);
        // A second start reuses them.
        let again = make_daemon_cgroups(&roots(tmp.path()), "predictived").expect("again");
        assert_eq!(again.procs.len(), 4);
        assert!(again.errors.is_empty());
    }

    #[test]
    fn a_v1_cpuset_cgroup_gets_its_parents_cpus_and_nodes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cpuset = tmp.path().join("cpuset");
        // The kernel makes these files, empty, with the directory; the fake does it beforehand.
        std::fs::create_dir_all(cpuset.join("predictived")).expect("mkdir");
        for (f, v) in [
            ("cgroup.procs", ""),
            ("cpuset.cpus", "0-1\n"),
            ("cpuset.mems", "0\n"),
            ("predictived/cpuset.cpus", "\n"),
            ("predictived/cpuset.mems", "\n"),
        ] {
            std::fs::write(cpuset.join(f), v).expect("fixture");
        }
        let mountinfo = tmp.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            "30 25 0:26 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset\n",
        )
        .expect("mountinfo");
        let roots = HostRoots {
            mountinfo,
            ..roots(tmp.path())
        };
        let made = make_daemon_cgroups(&roots, "predictived").expect("made");
        assert!(made.errors.is_empty(), "{:?}", made.errors);
        assert_eq!(made.procs, vec![cpuset.join("predictived/cgroup.procs")]);
        for (f, want) in [("cpuset.cpus", "0-1"), ("cpuset.mems", "0")] {
            let got = std::fs::read_to_string(cpuset.join("predictived").join(f)).expect("read");
            assert_eq!(got, want, "{f}");
        }
    }

    #[test]
    fn a_v2_host_gets_one_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu memory").expect("controllers");
        let made = make_daemon_cgroups(&roots(tmp.path()), "predictived").expect("made");
        assert_eq!(
            made.procs,
            vec![tmp.path().join("predictived/cgroup.procs")]
        );
    }

    #[test]
    fn bad_names_and_failures_are_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for bad in ["", ".", "..", "a/b"] {
            let e = make_daemon_cgroups(&roots(tmp.path()), bad).expect_err(bad);
            assert!(e.to_string().contains("invalid daemon cgroup name"), "{e}");
        }
        // No hierarchy at all.
        let e = make_daemon_cgroups(&roots(tmp.path()), "predictived").expect_err("none");
        assert!(matches!(e, DaemonCgroupError::Discovery(_)), "{e:?}");
        // A file where the directory should be: that hierarchy is reported, the others still work.
        std::fs::write(tmp.path().join("cgroup.controllers"), "").expect("controllers");
        std::fs::write(tmp.path().join("predictived"), "").expect("in the way");
        let made = make_daemon_cgroups(&roots(tmp.path()), "predictived").expect("made");
        assert!(made.procs.is_empty());
        assert!(
            made.errors[0].to_string().contains("predictived"),
            "{}",
            made.errors[0]
        );
    }
}
