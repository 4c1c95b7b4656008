//! The hierarchies without a resource controller that runc's cgroupfs driver also puts a container in.
//!
//! On cgroup v1, runc's `fs` manager joins, besides the controllers, the named `name=systemd` hierarchy (its
//! `NameGroup{name=systemd, Join: true}`) and, on a hybrid host, the controller-less cgroup2 tree: it makes the
//! container's directory at the same path there and moves the init in, ignoring failures. So `/proc/<pid>/cgroup`
//! agrees on every line, systemd-cgls and kubelet's accounting find the container in its pod, and the hybrid tree's
//! pressure (PSI) files are the container's own. libcontainer (youki) joins neither; the shim does it through
//! [`join_companions`] while the init waits to be started, and removes what it made with [`remove_dirs`] after the
//! container's processes are gone; an exec's worker follows the init there with [`join_init`], as runc's exec joins
//! every cgroup of the container's. (With runc's systemd driver on v1, systemd makes the `name=systemd` directory
//! itself; libcontainer has no systemd driver on v1, so the shim always uses the cgroupfs layout there.)
//!
//! Every root comes from [`HostRoots`], so all of this runs on a fake tree in tests.

use std::path::{Path, PathBuf};

use crate::discovery::{CgroupMount, Hierarchy, HostRoots, mount_dir, normalize_cgroups_path};
use crate::placement::is_systemd_form;

/// The named v1 hierarchy systemd keeps its own tree in.
pub const SYSTEMD_HIERARCHY: &str = "name=systemd";

/// Why a companion directory could not be made or joined (runc ignores these; the shim logs them).
#[derive(Debug, thiserror::Error)]
pub enum CompanionError {
    /// `/proc/<pid>/cgroup` could not be read.
    #[error("reading {path}")]
    ReadProcCgroup {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be made.
    #[error("making {dir}")]
    MakeDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the pid into `cgroup.procs` failed.
    #[error("moving pid {pid} into {file}")]
    Join {
        /// The pid.
        pid: i32,
        /// The `cgroup.procs` file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`join_companions`] did.
#[derive(Debug, Default)]
pub struct Joined {
    /// Directories made, outermost first (give them to [`remove_dirs`] once the container is gone).
    pub made: Vec<PathBuf>,
    /// The directories the pid is now in.
    pub joined: Vec<PathBuf>,
    /// What failed (nothing is undone: as runc, a companion hierarchy is best effort).
    pub errors: Vec<CompanionError>,
}

/// The companion mounts of a layout: the `name=systemd` v1 hierarchy, and the cgroup2 tree of a hybrid host.
pub fn companion_mounts(hierarchy: &Hierarchy) -> Vec<&CgroupMount> {
    match hierarchy {
        Hierarchy::Unified(_) => Vec::new(),
        Hierarchy::Legacy(v1) => v1.iter().filter(|m| is_systemd(m)).collect(),
        Hierarchy::Hybrid { v1, unified } => v1
            .iter()
            .filter(|m| is_systemd(m))
            .chain(std::iter::once(unified))
            .collect(),
    }
}

fn is_systemd(m: &CgroupMount) -> bool {
    m.controllers.len() == 1 && m.controllers[0] == SYSTEMD_HIERARCHY
}

/// The cgroup2 directory a container with `cgroups_path` will have on a hybrid host, known before it exists (the
/// shim's create warm-up moves a worker there first). Only for an absolute cgroupfs path, which libcontainer's v1
/// manager uses as is; `None` on other layouts, for a `slice:prefix:name` or relative path, or one naming the root.
/// Returns the tree's mount point and the directory (for [`make_dirs`]).
pub fn warmup_dir(roots: &HostRoots, cgroups_path: &str) -> Option<(PathBuf, PathBuf)> {
    let path = cgroupfs_path(cgroups_path)?;
    match Hierarchy::detect(roots).ok()? {
        Hierarchy::Hybrid { unified, .. } => {
            mount_dir(&unified, &path).map(|d| (unified.mount_point.clone(), d))
        }
        _ => None,
    }
}

/// The container's own directories in the companion hierarchies (`name=systemd`, a hybrid host's cgroup2 tree)
/// at an absolute cgroupfs `cgroups_path` (as a v1 container's bundle says once the shim placed it): what
/// [`join_companions`] made for it, found again without the shim that made them (its `delete` action after the
/// server died). Empty on a pure v2 host, for a `slice:prefix:name` or relative path, or one naming the root.
pub fn dirs_at(roots: &HostRoots, cgroups_path: &str) -> Vec<PathBuf> {
    dirs_where(roots, cgroups_path, companion_mounts)
}

/// The directories at an absolute cgroupfs `cgroups_path` in the mounts `mounts` picks of the host's layout;
/// empty for a `slice:prefix:name` or relative path, one naming the root, or no layout.
pub(crate) fn dirs_where(
    roots: &HostRoots,
    cgroups_path: &str,
    mounts: impl Fn(&Hierarchy) -> Vec<&CgroupMount>,
) -> Vec<PathBuf> {
    let (Some(path), Ok(hierarchy)) = (cgroupfs_path(cgroups_path), Hierarchy::detect(roots))
    else {
        return Vec::new();
    };
    mounts(&hierarchy)
        .into_iter()
        .filter_map(|m| mount_dir(m, &path))
        .collect()
}

/// The container's directories in the named v1 hierarchies (`name=systemd`) at an absolute cgroupfs `cgroups_path`:
/// where [`enter_named`] puts a create's worker. Empty as [`dirs_at`] is.
pub fn named_dirs_at(roots: &HostRoots, cgroups_path: &str) -> Vec<PathBuf> {
    dirs_where(roots, cgroups_path, |h| {
        h.v1_mounts().iter().filter(|m| is_systemd(m)).collect()
    })
}

/// An absolute cgroupfs `cgroups_path` normalized; `None` for a `slice:prefix:name` or relative path, one that
/// does not normalize, or one naming the root.
pub(crate) fn cgroupfs_path(cgroups_path: &str) -> Option<String> {
    if !cgroups_path.starts_with('/') || is_systemd_form(cgroups_path) {
        return None;
    }
    normalize_cgroups_path(cgroups_path)
        .ok()
        .filter(|p| !p.trim_matches('/').is_empty())
}

/// The cgroup2 directory the calling process is in (the `0::` line of `/proc/self/cgroup` under the cgroup2
/// mount), on a pure v2 or a hybrid host; `None` on a v1-only host, or where the line or the mount is missing. A
/// process that writes itself into it moves nowhere (the kernel finds source and destination the same), but the
/// write takes the cgroup threadgroup lock as any move does: the shim's warm-up uses that to start the create's
/// grace period where it may not make the container's directory (pure v2, a systemd path).
pub fn own_dir(roots: &HostRoots) -> Option<PathBuf> {
    let text = std::fs::read_to_string(roots.proc.join("self/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    match Hierarchy::detect(roots).ok()? {
        Hierarchy::Unified(m) | Hierarchy::Hybrid { unified: m, .. } => mount_dir(&m, path),
        Hierarchy::Legacy(_) => None,
    }
}

/// Puts `pid` (a container's init, before it runs) into every companion hierarchy at the path of its v1 memory
/// cgroup (or of its first controller), making the directories that are missing. Nothing to do on a pure v2 host,
/// or where the pid already is at that path.
pub fn join_companions(roots: &HostRoots, pid: i32) -> Joined {
    let mut out = Joined::default();
    let file = roots.proc.join(pid.to_string()).join("cgroup");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(source) => {
            out.errors
                .push(CompanionError::ReadProcCgroup { path: file, source });
            return out;
        }
    };
    let Ok(hierarchy) = Hierarchy::detect(roots) else {
        return out;
    };
    let lines = proc_lines(&text);
    let controller_path = lines
        .iter()
        .find(|(c, _)| c.contains(&"memory"))
        .or_else(|| {
            lines
                .iter()
                .find(|(c, _)| !c.is_empty() && !c.iter().any(|c| c.starts_with("name=")))
        })
        .map(|(_, p)| *p);
    let Some(target) = controller_path.filter(|p| !p.trim_matches('/').is_empty()) else {
        return out;
    };
    for mount in companion_mounts(&hierarchy) {
        let current = path_in(&lines, mount);
        if current == Some(target) {
            continue;
        }
        let Some(dir) = made_dir(mount, target, &mut out.made, &mut out.errors) else {
            continue;
        };
        match enter(&dir, pid) {
            Ok(()) => out.joined.push(dir),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// What [`enter_named`] did, to undo after a failed create ([`NamedEntered::undo`]).
#[derive(Debug, Default)]
pub struct NamedEntered {
    /// Directories made, outermost first.
    pub made: Vec<PathBuf>,
    /// The directories the calling thread left, to go back to.
    pub left: Vec<PathBuf>,
    /// What failed (best effort, as [`join_companions`]).
    pub errors: Vec<CompanionError>,
}

/// Puts the calling thread (a create's worker, before libcontainer forks the container's processes from it) into the
/// container's directory at the absolute cgroupfs `cgroups_path` in the named v1 hierarchies (`name=systemd`),
/// making it. The container's processes inherit it, so libcontainer, which mounts each v1 hierarchy at the init's
/// own path in it, shows a container its own `name=systemd` cgroup; joined after the create (as
/// [`join_companions`] does for the init), its mount showed the shim's (on a host where the shim is at the root:
/// every container's cgroup, and a privileged container's writes went to the host's systemd tree). The move writes
/// `0` into `tasks`: one thread, so the kernel takes no global lock and no grace period is waited for. Nothing on
/// a pure v2 host, for a `slice:prefix:name` or relative path, or one naming the root.
pub fn enter_named(roots: &HostRoots, cgroups_path: &str) -> NamedEntered {
    let mut out = NamedEntered::default();
    let (Some(path), Ok(hierarchy)) = (cgroupfs_path(cgroups_path), Hierarchy::detect(roots))
    else {
        return out;
    };
    let mine = std::fs::read_to_string(roots.proc.join("thread-self/cgroup")).unwrap_or_default();
    let mine = proc_lines(&mine);
    for mount in hierarchy.v1_mounts().iter().filter(|m| is_systemd(m)) {
        let Some(dir) = made_dir(mount, &path, &mut out.made, &mut out.errors) else {
            continue;
        };
        match enter_thread(&dir) {
            Ok(()) => out
                .left
                .extend(path_in(&mine, mount).and_then(|p| mount_dir(mount, p))),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

impl NamedEntered {
    /// After a failed create: the calling thread goes back where it was, and the directories made go.
    pub fn undo(&self) {
        for dir in &self.left {
            let _ = enter_thread(dir);
        }
        remove_dirs(&self.made);
    }
}

/// The directory of cgroup `path` under `mount`, made with the directories above it that are missing (added to
/// `made`, outermost first); `None`, with the failure in `errors`, when it cannot be.
fn made_dir(
    mount: &CgroupMount,
    path: &str,
    made: &mut Vec<PathBuf>,
    errors: &mut Vec<CompanionError>,
) -> Option<PathBuf> {
    let dir = mount_dir(mount, path)?;
    match make_dirs(&mount.mount_point, &dir) {
        Ok(m) => {
            made.extend(m);
            Some(dir)
        }
        Err(source) => {
            errors.push(CompanionError::MakeDir { dir, source });
            None
        }
    }
}

/// Moves the calling thread into the v1 cgroup directory `dir` (its `tasks` file).
fn enter_thread(dir: &Path) -> Result<(), CompanionError> {
    let file = dir.join("tasks");
    std::fs::write(&file, "0").map_err(|source| CompanionError::Join {
        pid: 0,
        file,
        source,
    })
}

/// Moves the calling process into every companion hierarchy at the path where `init` (a running container's init)
/// is there, as runc's exec joins every cgroup of the container's: an exec's worker does this before libcontainer
/// builds the tenant, whose processes inherit these two (libcontainer moves them into the v1 controllers), so a
/// process exec'd into the container counts in its PSI files and names it on the `name=systemd` line as its init
/// does. Makes nothing (the init's directories exist while it runs); a hierarchy where the caller already is at that
/// path, or where the init is at the root, is left alone. Nothing to do on a pure v2 host.
/// The host's layout is [`Hierarchy::detect`]'s, read once per process (an exec's worker inherits the zygote's).
pub fn join_init(roots: &HostRoots, init: i32) -> Joined {
    let Ok(hierarchy) = Hierarchy::detect(roots) else {
        return Joined::default();
    };
    let mut out = Joined::default();
    let read = |file: PathBuf| {
        std::fs::read_to_string(&file)
            .map_err(|source| CompanionError::ReadProcCgroup { path: file, source })
    };
    let (theirs, mine) = match (
        read(roots.proc.join(init.to_string()).join("cgroup")),
        read(roots.proc.join("self/cgroup")),
    ) {
        (Ok(theirs), Ok(mine)) => (theirs, mine),
        (Err(e), _) | (_, Err(e)) => {
            out.errors.push(e);
            return out;
        }
    };
    let (theirs, mine) = (proc_lines(&theirs), proc_lines(&mine));
    for mount in companion_mounts(&hierarchy) {
        let Some(target) = path_in(&theirs, mount).filter(|p| !p.trim_matches('/').is_empty())
        else {
            continue;
        };
        if path_in(&mine, mount) == Some(target) {
            continue;
        }
        let Some(dir) = mount_dir(mount, target) else {
            continue;
        };
        match enter(&dir, 0) {
            Ok(()) => out.joined.push(dir),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// The lines of a `/proc/<pid>/cgroup`: each hierarchy's controllers (empty for the cgroup2 tree) and path.
fn proc_lines(text: &str) -> Vec<(Vec<&str>, &str)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').collect()
            };
            Some((ctrls, path))
        })
        .collect()
}

/// The path [`proc_lines`] give for the hierarchy mounted at `mount`.
fn path_in<'a>(lines: &[(Vec<&str>, &'a str)], mount: &CgroupMount) -> Option<&'a str> {
    lines
        .iter()
        .find(|(c, _)| {
            c.iter()
                .copied()
                .eq(mount.controllers.iter().map(String::as_str))
        })
        .map(|(_, p)| *p)
}

/// Moves `pid` (0: the calling process, as the create warm-up's worker does) into the cgroup directory `dir`.
pub fn enter(dir: &Path, pid: i32) -> Result<(), CompanionError> {
    let file = dir.join("cgroup.procs");
    std::fs::write(&file, pid.to_string()).map_err(|source| CompanionError::Join {
        pid,
        file,
        source,
    })
}

/// Makes `dir` under `root` and the directories above it that are missing; returns the ones made, outermost
/// first. On an error, removes what it made.
pub fn make_dirs(root: &Path, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let rel = dir.strip_prefix(root).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not under {}", dir.display(), root.display()),
        )
    })?;
    let mut made = Vec::new();
    let mut at = root.to_path_buf();
    for part in rel.components() {
        match part {
            std::path::Component::Normal(p) => at.push(p),
            std::path::Component::CurDir => continue,
            _ => {
                remove_dirs(&made);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} climbs out of {}", dir.display(), root.display()),
                ));
            }
        }
        match std::fs::create_dir(&at) {
            Ok(()) => made.push(at.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && at.is_dir() => {}
            Err(e) => {
                remove_dirs(&made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Removes directories listed outermost first, innermost first. A parent that another container still uses
/// stays; the first failure to remove the innermost one (the container's own) is returned.
pub fn remove_dirs(made: &[PathBuf]) -> Option<(PathBuf, std::io::Error)> {
    let mut failed = None;
    for (i, dir) in made.iter().enumerate().rev() {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if i + 1 == made.len() && failed.is_none() => failed = Some((dir.clone(), e)),
            Err(_) => {}
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout};

    const POD: &str = "/kubepods/burstable/pod1/c1";
    const SCOPE: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-c1.scope";
    /// Paths that name no cgroupfs directory of a container: a systemd one, a relative one, one climbing out, root.
    const NOT_CGROUPFS: [&str; 5] = [
        "kubepods-burstable-pod1.slice:cri-containerd:c1",
        "default/c1",
        "/default/../../etc",
        "/",
        "",
    ];

    /// `/proc/77/cgroup` of an init libcontainer put at `path` in the v1 controllers only.
    fn init_at(host: &FakeHost, path: &str) {
        let mut text = String::new();
        if host.layout != Layout::V2 {
            text.push_str("12:name=systemd:/user.slice\n");
            for (i, c) in crate::v1::CONTROLLERS.iter().enumerate() {
                text.push_str(&format!("{}:{c}:{path}\n", i + 1));
            }
        }
        text.push_str(if host.layout == Layout::V1 {
            ""
        } else {
            "0::/shim\n"
        });
        host.proc_file("77/cgroup", &text);
    }

    #[test]
    fn an_init_joins_name_systemd_and_the_hybrid_tree_at_its_path() {
        for path in [POD, SCOPE] {
            for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
                let host = FakeHost::new(layout);
                host.container(path);
                init_at(&host, path);
                let joined = join_companions(&host.roots(), 77);
                assert!(joined.errors.is_empty(), "{layout:?}: {:?}", joined.errors);
                let rel = path.trim_start_matches('/');
                let mut want = Vec::new();
                if layout != Layout::V2 {
                    want.push(host.root().join("systemd").join(rel));
                }
                if layout == Layout::Hybrid {
                    want.push(host.root().join("unified").join(rel));
                }
                assert_eq!(joined.joined, want, "{layout:?} {path}");
                for d in &want {
                    assert_eq!(
                        host.read_abs(&d.join("cgroup.procs")),
                        "77",
                        "{}",
                        d.display()
                    );
                }
                // Made from the first missing level down; the unified leaf already existed (the fake container).
                if layout != Layout::V2 {
                    assert_eq!(
                        joined.made.first(),
                        Some(
                            &host
                                .root()
                                .join("systemd")
                                .join(rel.split('/').next().unwrap_or(""))
                        ),
                        "{layout:?}"
                    );
                    assert!(joined.made.contains(&host.root().join("systemd").join(rel)));
                }
                // Everything made goes again, innermost first (the fake files are removable: clear them).
                for d in &joined.made {
                    let _ = std::fs::remove_file(d.join("cgroup.procs"));
                }
                assert!(remove_dirs(&joined.made).is_none());
                assert!(!host.root().join("systemd/kubepods").exists());
                assert!(!host.root().join("systemd/kubepods.slice").exists());
            }
        }
    }

    /// A create's worker enters the container's `name=systemd` directory through `tasks` (no other hierarchy: the
    /// v1 controllers are libcontainer's, the cgroup2 tree is not mounted in a v1 container), and a failed create
    /// goes back and removes what it made.
    #[test]
    fn a_create_worker_enters_name_systemd_first_and_undoes_it() {
        for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
            let host = FakeHost::new(layout);
            host.proc_file(
                "thread-self/cgroup",
                "12:name=systemd:/shim\n4:memory:/\n0::/shim\n",
            );
            if layout != Layout::V2 {
                std::fs::create_dir_all(host.root().join("systemd/shim"))
                    .expect("the worker's dir");
            }
            let entered = enter_named(&host.roots(), POD);
            assert!(
                entered.errors.is_empty(),
                "{layout:?}: {:?}",
                entered.errors
            );
            let dir = host
                .root()
                .join("systemd")
                .join(POD.trim_start_matches('/'));
            if layout == Layout::V2 {
                assert!(
                    entered.made.is_empty() && entered.left.is_empty(),
                    "{entered:?}"
                );
                assert!(named_dirs_at(&host.roots(), POD).is_empty());
                continue;
            }
            assert_eq!(host.read_abs(&dir.join("tasks")), "0", "{layout:?}");
            assert_eq!(
                entered.made.first(),
                Some(&host.root().join("systemd/kubepods"))
            );
            assert_eq!(entered.made.last(), Some(&dir));
            assert_eq!(entered.left, vec![host.root().join("systemd/shim")]);
            assert_eq!(named_dirs_at(&host.roots(), POD), vec![dir.clone()]);
            assert!(
                !host.root().join("unified/kubepods").exists(),
                "{layout:?}: the cgroup2 tree is the create's warm-up's"
            );
            // Undone: back in its own directory, and what was made gone (the fake `tasks` files cleared first).
            for d in &entered.made {
                let _ = std::fs::remove_file(d.join("tasks"));
            }
            entered.undo();
            assert_eq!(host.read_abs(&host.root().join("systemd/shim/tasks")), "0");
            assert!(!host.root().join("systemd/kubepods").exists(), "{layout:?}");
        }
        let host = FakeHost::new(Layout::Hybrid);
        for p in NOT_CGROUPFS {
            let entered = enter_named(&host.roots(), p);
            assert!(
                entered.made.is_empty() && entered.left.is_empty(),
                "{p}: {entered:?}"
            );
            assert!(named_dirs_at(&host.roots(), p).is_empty(), "{p}");
        }
    }

    #[test]
    fn nothing_to_do_where_the_init_already_is_or_for_a_root_init() {
        let host = FakeHost::new(Layout::Hybrid);
        host.proc_file(
            "77/cgroup",
            &format!("12:name=systemd:{POD}\n4:memory:{POD}\n0::{POD}\n"),
        );
        let j = join_companions(&host.roots(), 77);
        assert!(
            j.joined.is_empty() && j.made.is_empty() && j.errors.is_empty(),
            "{j:?}"
        );
        host.proc_file("78/cgroup", "12:name=systemd:/\n4:memory:/\n0::/\n");
        assert!(join_companions(&host.roots(), 78).joined.is_empty());
        let gone = join_companions(&host.roots(), 79);
        assert!(matches!(
            gone.errors.as_slice(),
            [CompanionError::ReadProcCgroup { .. }]
        ));
        // A path that climbs out of the hierarchy is never made.
        host.proc_file("80/cgroup", "4:memory:/a/../../etc\n");
        let j = join_companions(&host.roots(), 80);
        assert!(j.made.is_empty() && j.joined.is_empty(), "{j:?}");
    }

    #[test]
    fn an_execs_worker_joins_the_inits_companion_directories() {
        for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
            let host = FakeHost::new(layout);
            host.container(POD);
            init_at(&host, POD);
            let created = join_companions(&host.roots(), 77);
            assert!(
                created.errors.is_empty(),
                "{layout:?}: {:?}",
                created.errors
            );
            // The init as the create left it; the worker where a shim's zygote is.
            let mut init = String::new();
            let mut worker = String::new();
            if layout != Layout::V2 {
                init.push_str(&format!("12:name=systemd:{POD}\n"));
                worker.push_str("12:name=systemd:/system.slice/containerd.service\n");
                init.push_str(&format!("4:memory:{POD}\n"));
                worker.push_str("4:memory:/system.slice/containerd.service\n");
            }
            if layout != Layout::V1 {
                init.push_str(&format!("0::{POD}\n"));
                worker.push_str("0::/system.slice/containerd.service\n");
            }
            host.proc_file("77/cgroup", &init);
            host.proc_file("self/cgroup", &worker);
            let j = join_init(&host.roots(), 77);
            assert!(
                j.errors.is_empty() && j.made.is_empty(),
                "{layout:?}: {j:?}"
            );
            // Where the init is besides the v1 controllers (libcontainer's): what the create joined it to.
            assert_eq!(j.joined, created.joined, "{layout:?}");
            for d in &j.joined {
                assert_eq!(
                    host.read_abs(&d.join("cgroup.procs")),
                    "0",
                    "{}",
                    d.display()
                );
            }
            if layout == Layout::V2 {
                assert!(
                    j.joined.is_empty(),
                    "libcontainer joins the one v2 cgroup itself"
                );
            }
        }
    }

    #[test]
    fn an_execs_worker_stays_where_the_init_is_at_the_root_or_already_beside_it() {
        let host = FakeHost::new(Layout::Hybrid);
        host.proc_file(
            "self/cgroup",
            "12:name=systemd:/user.slice\n4:memory:/user.slice\n0::/user.slice\n",
        );
        host.proc_file(
            "78/cgroup",
            "12:name=systemd:/\n4:memory:/default/c1\n0::/\n",
        );
        let j = join_init(&host.roots(), 78);
        assert!(j.joined.is_empty() && j.errors.is_empty(), "{j:?}");
        host.proc_file(
            "79/cgroup",
            "12:name=systemd:/user.slice\n4:memory:/default/c1\n0::/user.slice\n",
        );
        let j = join_init(&host.roots(), 79);
        assert!(j.joined.is_empty() && j.errors.is_empty(), "{j:?}");
        // An init that is gone: said, nothing joined.
        let j = join_init(&host.roots(), 80);
        assert!(
            matches!(j.errors.as_slice(), [CompanionError::ReadProcCgroup { .. }]),
            "{j:?}"
        );
        // A path that climbs out of the hierarchy is never entered.
        host.proc_file(
            "81/cgroup",
            "12:name=systemd:/a/../../etc\n0::/a/../../etc\n",
        );
        let j = join_init(&host.roots(), 81);
        assert!(j.joined.is_empty(), "{j:?}");
    }

    #[test]
    fn the_warmup_dir_is_the_hybrid_tree_at_an_absolute_cgroupfs_path() {
        let host = FakeHost::new(Layout::Hybrid);
        let unified = host.root().join("unified");
        assert_eq!(
            warmup_dir(&host.roots(), POD),
            Some((unified.clone(), unified.join(POD.trim_start_matches('/'))))
        );
        assert_eq!(
            warmup_dir(&host.roots(), SCOPE),
            Some((unified.clone(), unified.join(SCOPE.trim_start_matches('/'))))
        );
        for p in NOT_CGROUPFS {
            assert_eq!(warmup_dir(&host.roots(), p), None, "{p:?}");
        }
        for layout in [Layout::V1, Layout::V2] {
            assert_eq!(
                warmup_dir(&FakeHost::new(layout).roots(), POD),
                None,
                "{layout:?}"
            );
        }
    }

    #[test]
    fn the_dirs_at_a_path_are_the_ones_an_init_joined_there() {
        for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
            let host = FakeHost::new(layout);
            host.container(POD);
            init_at(&host, POD);
            let joined = join_companions(&host.roots(), 77);
            assert_eq!(dirs_at(&host.roots(), POD), joined.joined, "{layout:?}");
            for p in NOT_CGROUPFS {
                assert!(dirs_at(&host.roots(), p).is_empty(), "{layout:?} {p:?}");
            }
        }
    }

    #[test]
    fn make_dirs_reports_what_it_made_and_remove_dirs_keeps_shared_parents() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let a = root.join("ns/pod/a");
        let made = make_dirs(root, &a).expect("make a");
        assert_eq!(made, vec![root.join("ns"), root.join("ns/pod"), a.clone()]);
        let b = root.join("ns/pod/b");
        assert_eq!(make_dirs(root, &b).expect("make b"), vec![b.clone()]);
        assert!(remove_dirs(&made).is_none());
        assert!(!a.exists() && b.exists());
        assert!(make_dirs(root, Path::new("/elsewhere")).is_err());
        std::fs::write(root.join("file"), "").expect("file");
        assert!(make_dirs(root, &root.join("file/y")).is_err());
        assert!(make_dirs(root, &root.join("x/../../y")).is_err());
        assert!(!root.join("x").exists(), "undone on error");
        // The container's own directory failing to go is reported.
        std::fs::write(b.join("busy"), "").expect("file");
        let failed = remove_dirs(std::slice::from_ref(&b)).expect("not empty");
        assert_eq!(failed.0, b);
    }
}
