//! Finding a container's cgroup directories on this host.
//!
//! Three layouts exist: cgroup v2 (one `cgroup2` mount), cgroup v1 (one mount per controller or per
//! group of controllers, e.g. `cpu,cpuacct`) and hybrid (v1 controllers plus a controller-less `cgroup2`
//! tree, usually at `/sys/fs/cgroup/unified`, which still carries `cpu.pressure`, `memory.pressure` and
//! `io.pressure` per cgroup). The layout comes from mountinfo; when mountinfo names no cgroup mount (a
//! fake tree in a test, a chroot) the cgroup root itself is scanned.
//!
//! Every root is a parameter ([`HostRoots`]); mount points under `/sys/fs/cgroup` in mountinfo are
//! rebased onto [`HostRoots::cgroup`], so a test can feed a copy of a real mountinfo and a temp dir.
//!
//! Limits: a relative `cgroupsPath` is taken relative to the hierarchy root (runc resolves it against
//! its own cgroup; prefer [`ContainerCgroup::from_pid`], which is exact). systemd paths
//! (`slice:prefix:name`) are expanded the way runc and youki do for the cgroupfs layout.

use std::path::{Path, PathBuf};

use crate::cgroup::ContainerCgroup;
use crate::{v1, v2};

/// The real cgroup root.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The real procfs root.
pub const DEFAULT_PROC_ROOT: &str = "/proc";
/// The real mountinfo.
pub const DEFAULT_MOUNTINFO: &str = "/proc/self/mountinfo";

/// Errors from discovery.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `/proc/<pid>/cgroup` could not be read (the process is gone, or no permission).
    #[error("reading {path}")]
    ReadProcCgroup {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither mountinfo nor the cgroup root show any cgroup hierarchy.
    #[error("no cgroup hierarchy found in {mountinfo} or under {root}")]
    NoHierarchy {
        /// The mountinfo that was read.
        mountinfo: PathBuf,
        /// The cgroup root that was scanned.
        root: PathBuf,
    },
    /// The `cgroupsPath` cannot name a cgroup.
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No directory for the cgroup exists in any hierarchy.
    #[error("cgroup {path:?} exists in no hierarchy under {root}")]
    NotFound {
        /// The cgroup path looked for.
        path: String,
        /// The cgroup root searched.
        root: PathBuf,
    },
}

/// Where the host's cgroup, proc and mountinfo files are; [`Default`] gives the real ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    /// Normally `/sys/fs/cgroup`.
    pub cgroup: PathBuf,
    /// Normally `/proc`.
    pub proc: PathBuf,
    /// Normally `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        Self {
            cgroup: PathBuf::from(DEFAULT_CGROUP_ROOT),
            proc: PathBuf::from(DEFAULT_PROC_ROOT),
            mountinfo: PathBuf::from(DEFAULT_MOUNTINFO),
        }
    }
}

/// One cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted (rebased onto [`HostRoots::cgroup`]).
    pub mount_point: PathBuf,
    /// The cgroup seen at the mount point (`/` unless this process is in a cgroup namespace or bind mount).
    pub root: String,
    /// v1 controllers on this mount (`cpu`, `cpuacct`, `name=systemd`, ...); empty for cgroup2.
    pub controllers: Vec<String>,
}

/// The cgroup layout of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2 only.
    Unified(CgroupMount),
    /// cgroup v1 only.
    Legacy(Vec<CgroupMount>),
    /// cgroup v1 controllers plus a controller-less cgroup2 tree.
    Hybrid {
        /// The v1 mounts.
        v1: Vec<CgroupMount>,
        /// The cgroup2 mount.
        unified: CgroupMount,
    },
}

/// The cgroup mounts of a mountinfo, one line at a time.
#[derive(Default)]
struct Mounts {
    v1: Vec<CgroupMount>,
    unified: Option<CgroupMount>,
}

impl Mounts {
    /// The v1 controllers a mount's options may name (the others are mount options).
    const KNOWN: [&'static str; 14] = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "blkio",
        "perf_event",
        "net_prio",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    ];

    fn add(&mut self, line: &str, cgroup_root: &Path) {
        let Some((left, right)) = line.split_once(" - ") else {
            return;
        };
        // Most lines of a busy node's mountinfo are not cgroups: skipped before anything is allocated.
        if !right.starts_with("cgroup") {
            return;
        }
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            return;
        }
        let mount_point = rebase(Path::new(&unescape_mount_field(left[4])), cgroup_root);
        let root = unescape_mount_field(left[3]);
        match right[0] {
            "cgroup2" => {
                self.unified = Some(CgroupMount {
                    mount_point,
                    root,
                    controllers: Vec::new(),
                });
            }
            "cgroup" => {
                let controllers = right[2]
                    .split(',')
                    .filter(|opt| Self::KNOWN.contains(opt) || opt.starts_with("name="))
                    .map(str::to_owned)
                    .collect();
                self.v1.push(CgroupMount {
                    mount_point,
                    root,
                    controllers,
                });
            }
            _ => {}
        }
    }

    fn layout(self) -> Option<Hierarchy> {
        match (self.v1.is_empty(), self.unified) {
            (true, Some(u)) => Some(Hierarchy::Unified(u)),
            (true, None) => None,
            (false, Some(u)) => Some(Hierarchy::Hybrid {
                v1: self.v1,
                unified: u,
            }),
            (false, None) => Some(Hierarchy::Legacy(self.v1)),
        }
    }
}

fn unescape_mount_field(field: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The real host's layout, parsed once per process ([`Hierarchy::detect`] with the default roots): cgroup mounts do
/// not move while a shim or the broker runs, and on a node with thousands of mounts each parse of mountinfo cost
/// ~1.5 ms of CPU, several per container (docs/BENCHMARKS.md, "A node with many mounts"). Filled before the shim
/// forks its zygote, so the zygote and every worker it forks inherit it.
static HOST_HIERARCHY: std::sync::OnceLock<Hierarchy> = std::sync::OnceLock::new();

impl Hierarchy {
    /// Detects the layout from mountinfo, falling back to scanning the cgroup root. With the real roots
    /// ([`HostRoots::default`]) the first layout found is kept for the life of the process and returned from then
    /// on without reading mountinfo again; other roots (a fake tree) are read at every call.
    pub fn detect(roots: &HostRoots) -> Result<Self, DiscoveryError> {
        if *roots != HostRoots::default() {
            return Self::read(roots);
        }
        if let Some(known) = HOST_HIERARCHY.get() {
            return Ok(known.clone());
        }
        #[cfg(test)]
        tests::HOST_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = Self::read(roots)?;
        // Two threads may both read it first; they found the same layout.
        Ok(HOST_HIERARCHY.get_or_init(|| found).clone())
    }

    /// Reads the layout from `roots` now (mountinfo, else the cgroup root).
    fn read(roots: &HostRoots) -> Result<Self, DiscoveryError> {
        Self::read_mountinfo(&roots.mountinfo, &roots.cgroup)
            .or_else(|| Self::scan(&roots.cgroup))
            .ok_or_else(|| DiscoveryError::NoHierarchy {
                mountinfo: roots.mountinfo.clone(),
                root: roots.cgroup.clone(),
            })
    }

    /// Parses the mountinfo file line by line (a busy node's is 100+ kB, and a whole copy in a shim's heap before
    /// it forks its zygote stayed resident in both); `None` when it cannot be read or has no cgroup mount. The
    /// kernel escapes only space, tab, newline and backslash in paths: a line naming some other mount in bytes that
    /// are not UTF-8 is read lossily, not a reason to lose the cgroup mounts.
    fn read_mountinfo(file: &Path, cgroup_root: &Path) -> Option<Self> {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(std::fs::File::open(file).ok()?);
        let mut mounts = Mounts::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => mounts.add(
                    String::from_utf8_lossy(&line).trim_end_matches('\n'),
                    cgroup_root,
                ),
                Err(_) => return None,
            }
        }
        mounts.layout()
    }

    /// Parses mountinfo content; `None` when it has no cgroup mount.
    pub fn from_mountinfo(text: &str, cgroup_root: &Path) -> Option<Self> {
        let mut mounts = Mounts::default();
        for line in text.lines() {
            mounts.add(line, cgroup_root);
        }
        mounts.layout()
    }

    /// Recognises a layout from the files under `root` alone.
    pub fn scan(root: &Path) -> Option<Self> {
        let mount = |mount_point: PathBuf, controllers: Vec<String>| CgroupMount {
            mount_point,
            root: "/".to_owned(),
            controllers,
        };
        if root.join("cgroup.controllers").is_file() {
            return Some(Self::Unified(mount(root.to_owned(), Vec::new())));
        }
        let mut v1 = Vec::new();
        for name in v1::CONTROLLERS {
            let dir = root.join(name);
            if dir.join("cgroup.procs").is_file() {
                v1.push(mount(dir, vec![(*name).to_owned()]));
            }
        }
        let unified_dir = root.join("unified");
        let unified = unified_dir
            .join("cgroup.controllers")
            .is_file()
            .then(|| mount(unified_dir, Vec::new()));
        match (v1.is_empty(), unified) {
            (true, Some(u)) => Some(Self::Unified(u)),
            (true, None) => None,
            (false, Some(u)) => Some(Self::Hybrid { v1, unified: u }),
            (false, None) => Some(Self::Legacy(v1)),
        }
    }

    pub(crate) fn v1_mounts(&self) -> &[CgroupMount] {
        match self {
            Self::Unified(_) => &[],
            Self::Legacy(v1) | Self::Hybrid { v1, .. } => v1,
        }
    }

    pub(crate) fn unified(&self) -> Option<&CgroupMount> {
        match self {
            Self::Unified(u) | Self::Hybrid { unified: u, .. } => Some(u),
            Self::Legacy(_) => None,
        }
    }

    /// The directory of `cgroup` (a path from the hierarchy root) under the mount holding `controller`.
    pub(crate) fn v1_dir(&self, controller: &str, cgroup: &str) -> Option<PathBuf> {
        let mount = self
            .v1_mounts()
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))?;
        join_existing(mount, cgroup)
    }

    /// Resolves the container's directories given the cgroup path of each controller.
    fn resolve(
        &self,
        v1_path: impl Fn(&str) -> Option<String>,
        unified_path: Option<&str>,
    ) -> Option<crate::cgroup::CgroupDirs> {
        if let Self::Unified(mount) = self {
            let dir = join_existing(mount, unified_path?)?;
            return Some(crate::cgroup::CgroupDirs::V2(v2::Dirs { dir }));
        }
        let dir = |c: &str| v1_path(c).and_then(|p| self.v1_dir(c, &p));
        let dirs = v1::Dirs {
            cpu: dir("cpu"),
            cpuacct: dir("cpuacct"),
            memory: dir("memory"),
            blkio: dir("blkio"),
            pids: dir("pids"),
            freezer: dir("freezer"),
            cpuset: dir("cpuset"),
            hugetlb: dir("hugetlb"),
            unified: self
                .unified()
                .zip(unified_path)
                .and_then(|(m, p)| join_existing(m, p)),
        };
        let any = [
            &dirs.cpu,
            &dirs.cpuacct,
            &dirs.memory,
            &dirs.blkio,
            &dirs.pids,
            &dirs.freezer,
        ]
        .iter()
        .any(|d| d.is_some());
        any.then_some(crate::cgroup::CgroupDirs::V1(dirs))
    }
}

fn rebase(mount_point: &Path, cgroup_root: &Path) -> PathBuf {
    if cgroup_root == Path::new(DEFAULT_CGROUP_ROOT) {
        return mount_point.to_owned();
    }
    match mount_point.strip_prefix(DEFAULT_CGROUP_ROOT) {
        Ok(rest) if rest.as_os_str().is_empty() => cgroup_root.to_owned(),
        Ok(rest) => cgroup_root.join(rest),
        Err(_) => mount_point.to_owned(),
    }
}

/// `mount_point` + (`cgroup` relative to the mount's root), if that directory exists.
pub(crate) fn join_existing(mount: &CgroupMount, cgroup: &str) -> Option<PathBuf> {
    mount_dir(mount, cgroup).filter(|d| d.is_dir())
}

/// `mount_point` + (`cgroup` relative to the mount's root), existing or not; `None` for a cgroup outside the
/// mount's root or a path with `..`.
pub fn mount_dir(mount: &CgroupMount, cgroup: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        cgroup
    } else {
        let rest = cgroup.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let relative = relative.trim_start_matches('/');
    // A cgroup path never climbs out of its hierarchy.
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if relative.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(relative)
    })
}

/// Turns an OCI `linux.cgroupsPath` into a path from the hierarchy root (`/a/b`).
///
/// systemd form `slice:prefix:name` becomes `/<expanded slice>/<prefix>-<name>.scope` (or the slice itself when
/// `name` ends in `.slice`), as runc and youki lay it out.
pub fn normalize_cgroups_path(path: &str) -> Result<String, DiscoveryError> {
    let invalid = |reason| DiscoveryError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("empty"));
    }
    let parts: Vec<&str> = path.split(':').collect();
    let joined = match parts.as_slice() {
        [plain] => {
            if plain.starts_with('/') {
                (*plain).to_owned()
            } else {
                format!("/{plain}")
            }
        }
        [slice, prefix, name] => {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            let mut out = expand_slice(slice).ok_or_else(|| invalid("malformed systemd slice"))?;
            if name.ends_with(".slice") {
                out = expand_slice(name).ok_or_else(|| invalid("malformed systemd slice"))?;
            } else if prefix.is_empty() {
                out.push('/');
                out.push_str(name);
                out.push_str(".scope");
            } else {
                out.push_str(&format!("/{prefix}-{name}.scope"));
            }
            out
        }
        _ => return Err(invalid("neither a path nor slice:prefix:name")),
    };
    if joined.split('/').any(|c| c == "..") {
        return Err(invalid("contains .."));
    }
    Ok(joined)
}

/// `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> Option<String> {
    let base = slice.strip_suffix(".slice")?;
    if base == "-" {
        return Some(String::new());
    }
    if base.is_empty() || base.contains('/') || base.starts_with('-') || base.ends_with('-') {
        return None;
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for component in base.split('-') {
        if component.is_empty() {
            return None;
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Some(out)
}

/// Why a process could not be moved into a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The path is malformed or the host has no cgroup hierarchy.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The cgroup exists in no hierarchy.
    #[error("cgroup {path:?} exists in no hierarchy under {root}")]
    NotFound {
        /// The path given.
        path: String,
        /// The cgroup root searched.
        root: PathBuf,
    },
    /// Writing the pid into a `cgroup.procs` failed.
    #[error("moving pid {pid} into {file}")]
    Write {
        /// The pid moved (0: the writer).
        pid: u32,
        /// The `cgroup.procs` file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Moves `pid` (0: the calling process) into the existing cgroup `cgroups_path` (a path or `slice:prefix:name`)
/// in every hierarchy that has it: the unified tree and each v1 controller's (named hierarchies such as
/// `name=systemd` are left alone). Used for the shim's own cgroup (runc's `ShimCgroup` option). At least one
/// hierarchy must have the cgroup.
pub fn join(roots: &HostRoots, cgroups_path: &str, pid: u32) -> Result<Vec<PathBuf>, JoinError> {
    let path = normalize_cgroups_path(cgroups_path)?;
    let hierarchy = Hierarchy::detect(roots)?;
    let mut dirs: Vec<PathBuf> = hierarchy
        .v1_mounts()
        .iter()
        .filter(|m| m.controllers.iter().any(|c| !c.starts_with("name=")))
        .filter_map(|m| join_existing(m, &path))
        .collect();
    if let Some(dir) = hierarchy.unified().and_then(|m| join_existing(m, &path)) {
        dirs.push(dir);
    }
    if dirs.is_empty() {
        return Err(JoinError::NotFound {
            path,
            root: roots.cgroup.clone(),
        });
    }
    for dir in &dirs {
        let file = dir.join("cgroup.procs");
        std::fs::write(&file, pid.to_string()).map_err(|source| JoinError::Write {
            pid,
            file: file.clone(),
            source,
        })?;
    }
    Ok(dirs)
}

impl ContainerCgroup {
    /// Finds the cgroup named by an OCI `linux.cgroupsPath` on this host.
    pub fn discover(roots: &HostRoots, cgroups_path: &str) -> Result<Self, DiscoveryError> {
        let path = normalize_cgroups_path(cgroups_path)?;
        let hierarchy = Hierarchy::detect(roots)?;
        let dirs = hierarchy
            .resolve(|_| Some(path.clone()), Some(&path))
            .ok_or_else(|| DiscoveryError::NotFound {
                path: path.clone(),
                root: roots.cgroup.clone(),
            })?;
        Ok(Self::new(dirs, roots.proc.clone()))
    }

    /// Finds the cgroups of a running process from `/proc/<pid>/cgroup` (exact, whatever driver made them).
    pub fn from_pid(roots: &HostRoots, pid: i32) -> Result<Self, DiscoveryError> {
        let file = roots.proc.join(pid.to_string()).join("cgroup");
        let text =
            std::fs::read_to_string(&file).map_err(|source| DiscoveryError::ReadProcCgroup {
                path: file.clone(),
                source,
            })?;
        let hierarchy = Hierarchy::detect(roots)?;
        let mut unified = None;
        let mut v1: Vec<(Vec<&str>, &str)> = Vec::new();
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                unified = Some(path);
            } else {
                v1.push((controllers.split(',').collect(), path));
            }
        }
        let v1_path = |controller: &str| {
            v1.iter()
                .find(|(cs, _)| cs.contains(&controller))
                .map(|(_, p)| (*p).to_owned())
        };
        let dirs = hierarchy
            .resolve(v1_path, unified)
            .ok_or_else(|| DiscoveryError::NotFound {
                path: file.display().to_string(),
                root: roots.cgroup.clone(),
            })?;
        let mut cgroup = Self::new(dirs, roots.proc.clone());
        cgroup.set_net_pid(Some(pid));
        Ok(cgroup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupDirs;
    use crate::testutil::FakeHost;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_layouts() {
        let root = Path::new("/tmp/x");
        match Hierarchy::from_mountinfo(HYBRID_MOUNTINFO, root) {
            Some(Hierarchy::Hybrid { v1, unified }) => {
                assert_eq!(unified.mount_point, Path::new("/tmp/x/unified"));
                assert_eq!(v1.len(), 7);
                assert_eq!(v1[0].controllers, vec!["cpu".to_owned()]);
                assert_eq!(v1[6].controllers, vec!["name=systemd".to_owned()]);
            }
            other => panic!("expected hybrid, got {other:?}"),
        }
        let v2 = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(matches!(
            Hierarchy::from_mountinfo(v2, Path::new(DEFAULT_CGROUP_ROOT)),
            Some(Hierarchy::Unified(m)) if m.mount_point == Path::new("/sys/fs/cgroup")
        ));
        let combined =
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        match Hierarchy::from_mountinfo(combined, Path::new(DEFAULT_CGROUP_ROOT)) {
            Some(Hierarchy::Legacy(v1)) => {
                assert_eq!(
                    v1[0].controllers,
                    vec!["cpu".to_owned(), "cpuacct".to_owned()]
                );
            }
            other => panic!("expected legacy, got {other:?}"),
        }
        assert_eq!(Hierarchy::from_mountinfo("", root), None);
        assert_eq!(Hierarchy::from_mountinfo("garbage\n1 2 3\n", root), None);
        let spaced = "41 31 0:38 /a\\040b /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        match Hierarchy::from_mountinfo(spaced, root) {
            Some(Hierarchy::Unified(m)) => assert_eq!(m.root, "/a b"),
            other => panic!("expected unified, got {other:?}"),
        }
    }

    #[test]
    fn join_writes_every_hierarchy_that_has_the_cgroup() {
        let host = FakeHost::new(crate::testutil::Layout::Hybrid);
        let roots = host.roots();
        for ctrl in ["cpu", "memory", "pids", "unified"] {
            std::fs::create_dir_all(host.root().join(ctrl).join("shims")).expect("mkdir");
        }
        let dirs = join(&roots, "/shims", 0).expect("join");
        assert_eq!(dirs.len(), 4, "{dirs:?}");
        for d in &dirs {
            assert_eq!(
                std::fs::read_to_string(d.join("cgroup.procs")).expect("procs"),
                "0"
            );
        }
        let e = join(&roots, "/nowhere", 0).expect_err("absent");
        assert!(e.to_string().contains("/nowhere"), "{e}");
        assert!(join(&roots, "/a/../b", 0).is_err());
    }

    #[test]
    fn systemd_and_plain_paths() {
        assert_eq!(
            normalize_cgroups_path("/default/abc").ok(),
            Some("/default/abc".to_owned())
        );
        assert_eq!(
            normalize_cgroups_path("default/abc").ok(),
            Some("/default/abc".to_owned())
        );
        assert_eq!(
            normalize_cgroups_path("system.slice:docker:abc").ok(),
            Some("/system.slice/docker-abc.scope".to_owned())
        );
        assert_eq!(
            normalize_cgroups_path("kubepods-besteffort-pod1.slice:cri-containerd:c1").ok(),
            Some(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-c1.scope"
                    .to_owned()
            )
        );
        assert_eq!(
            normalize_cgroups_path(":runc:x").ok(),
            Some("/system.slice/runc-x.scope".to_owned())
        );
        assert!(normalize_cgroups_path("").is_err());
        assert!(normalize_cgroups_path("/a/../b").is_err());
        assert!(normalize_cgroups_path("a:b").is_err());
        assert!(normalize_cgroups_path("bad-.slice:p:n").is_err());
    }

    #[test]
    fn discover_on_each_layout() {
        for layout in [
            crate::testutil::Layout::V1,
            crate::testutil::Layout::V2,
            crate::testutil::Layout::Hybrid,
        ] {
            let host = FakeHost::new(layout);
            host.container("/default/c1");
            let cg = ContainerCgroup::discover(&host.roots(), "/default/c1").expect("discovered");
            match (layout, cg.dirs()) {
                (crate::testutil::Layout::V2, CgroupDirs::V2(d)) => {
                    assert_eq!(d.dir, host.root().join("default/c1"));
                }
                (crate::testutil::Layout::V1, CgroupDirs::V1(d)) => {
                    assert_eq!(
                        d.memory.as_deref(),
                        Some(host.root().join("memory/default/c1").as_path())
                    );
                    assert_eq!(d.unified, None);
                }
                (crate::testutil::Layout::Hybrid, CgroupDirs::V1(d)) => {
                    assert_eq!(
                        d.cpu.as_deref(),
                        Some(host.root().join("cpu/default/c1").as_path())
                    );
                    assert_eq!(
                        d.unified.as_deref(),
                        Some(host.root().join("unified/default/c1").as_path())
                    );
                }
                (l, d) => panic!("layout {l:?} gave {d:?}"),
            }
            assert!(matches!(
                ContainerCgroup::discover(&host.roots(), "/default/missing"),
                Err(DiscoveryError::NotFound { .. })
            ));
        }
    }

    /// Every path form containerd and kubelet give, on every layout: a cgroupfs pod path, the `slice:prefix:name`
    /// form (found at its systemd expansion) and a systemd scope under a pod slice; by cgroupsPath and by pid.
    #[test]
    fn every_path_form_on_every_layout() {
        let scope = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-c1.scope";
        for layout in [
            crate::testutil::Layout::V1,
            crate::testutil::Layout::V2,
            crate::testutil::Layout::Hybrid,
        ] {
            for (given, at) in [
                ("/kubepods/burstable/pod1/c1", "/kubepods/burstable/pod1/c1"),
                ("kubepods-burstable-pod1.slice:cri-containerd:c1", scope),
                (scope, scope),
            ] {
                let host = FakeHost::new(layout);
                host.container(at);
                let rel = at.trim_start_matches('/');
                let (memory, unified) = match layout {
                    crate::testutil::Layout::V2 => (None, Some(host.root().join(rel))),
                    crate::testutil::Layout::V1 => {
                        (Some(host.root().join("memory").join(rel)), None)
                    }
                    crate::testutil::Layout::Hybrid => (
                        Some(host.root().join("memory").join(rel)),
                        Some(host.root().join("unified").join(rel)),
                    ),
                };
                let check = |cg: &ContainerCgroup, how: &str| match cg.dirs() {
                    CgroupDirs::V2(d) => {
                        assert_eq!(Some(&d.dir), unified.as_ref(), "{layout:?} {how} {given}")
                    }
                    CgroupDirs::V1(d) => {
                        assert_eq!(d.memory, memory, "{layout:?} {how} {given}");
                        assert_eq!(d.unified, unified, "{layout:?} {how} {given}");
                        assert!(d.cpu.is_some() && d.pids.is_some() && d.freezer.is_some());
                    }
                };
                check(
                    &ContainerCgroup::discover(&host.roots(), given).expect("discovered"),
                    "discover",
                );
                let mut text = format!("12:name=systemd:{at}\n");
                for (i, c) in crate::v1::CONTROLLERS.iter().enumerate() {
                    text.push_str(&format!("{}:{c}:{at}\n", i + 1));
                }
                text.push_str(&format!("0::{at}\n"));
                host.proc_file("5/cgroup", &text);
                check(
                    &ContainerCgroup::from_pid(&host.roots(), 5).expect("from pid"),
                    "from_pid",
                );
            }
        }
    }

    /// The real host's layouts read by [`Hierarchy::detect`] in this test process (fake trees, which other tests
    /// read at the same time under `cargo test`, are not counted).
    pub(super) static HOST_READS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn the_hosts_layout_is_read_from_mountinfo_once_per_process() {
        let roots = HostRoots::default();
        let Ok(first) = Hierarchy::detect(&roots) else {
            println!("SKIPPED: this host has no cgroup hierarchy to detect");
            return;
        };
        let reads = HOST_READS.load(std::sync::atomic::Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(Hierarchy::detect(&roots).expect("detected before"), first);
        }
        assert_eq!(
            HOST_READS.load(std::sync::atomic::Ordering::Relaxed),
            reads,
            "the real host's layout was read again"
        );
    }

    #[test]
    fn a_mount_path_that_is_not_utf8_does_not_hide_the_cgroup_mounts() {
        let host = FakeHost::new(crate::testutil::Layout::V2);
        let roots = host.roots();
        let mut text = b"25 23 0:30 / /mnt/caf\xe9 rw - tmpfs tmpfs rw\n".to_vec();
        text.extend_from_slice(b"30 23 0:27 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        std::fs::write(&roots.mountinfo, text).expect("write mountinfo");
        match Hierarchy::detect(&roots).expect("detected") {
            // From mountinfo, not from a scan of the tree (which cannot know the mount's root).
            Hierarchy::Unified(m) => assert_eq!(m.root, "/kubepods"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fake_trees_layout_is_read_again_at_every_call() {
        let host = FakeHost::new(crate::testutil::Layout::Hybrid);
        let roots = host.roots();
        assert!(matches!(
            Hierarchy::detect(&roots),
            Ok(Hierarchy::Hybrid { .. })
        ));
        std::fs::write(
            &roots.mountinfo,
            "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        )
        .expect("rewrite mountinfo");
        assert!(matches!(
            Hierarchy::detect(&roots),
            Ok(Hierarchy::Unified(_))
        ));
    }

    #[test]
    fn discover_without_mountinfo_scans_root() {
        for layout in [
            crate::testutil::Layout::V1,
            crate::testutil::Layout::V2,
            crate::testutil::Layout::Hybrid,
        ] {
            let host = FakeHost::new(layout);
            host.container("/c");
            let mut roots = host.roots();
            roots.mountinfo = host.root().join("no-such-mountinfo");
            let cg = ContainerCgroup::discover(&roots, "/c").expect("discovered by scan");
            assert_eq!(
                matches!(cg.dirs(), CgroupDirs::V2(_)),
                layout == crate::testutil::Layout::V2
            );
        }
        let empty = tempfile::tempdir().expect("tempdir");
        let roots = HostRoots {
            cgroup: empty.path().to_owned(),
            proc: empty.path().to_owned(),
            mountinfo: empty.path().join("none"),
        };
        assert!(matches!(
            ContainerCgroup::discover(&roots, "/c"),
            Err(DiscoveryError::NoHierarchy { .. })
        ));
    }

    #[test]
    fn from_pid_reads_proc_cgroup() {
        let host = FakeHost::new(crate::testutil::Layout::Hybrid);
        host.container("/default/c9");
        host.proc_file(
            "77/cgroup",
            "9:name=systemd:/\n8:pids:/default/c9\n4:memory:/default/c9\n2:cpuacct:/default/c9\n1:cpu:/default/c9\n0::/default/c9\n",
        );
        let cg = ContainerCgroup::from_pid(&host.roots(), 77).expect("from pid");
        match cg.dirs() {
            CgroupDirs::V1(d) => {
                assert!(
                    d.memory.is_some()
                        && d.cpu.is_some()
                        && d.pids.is_some()
                        && d.unified.is_some()
                );
                assert_eq!(d.freezer, None, "freezer not listed for the pid");
            }
            other => panic!("expected v1 dirs, got {other:?}"),
        }
        assert!(matches!(
            ContainerCgroup::from_pid(&host.roots(), 78),
            Err(DiscoveryError::ReadProcCgroup { .. })
        ));
        host.proc_file("79/cgroup", "");
        assert!(matches!(
            ContainerCgroup::from_pid(&host.roots(), 79),
            Err(DiscoveryError::NotFound { .. })
        ));
    }

    #[test]
    fn nested_mount_root() {
        let mount = CgroupMount {
            mount_point: PathBuf::from("/nonexistent-mount"),
            root: "/outer".to_owned(),
            controllers: vec![],
        };
        assert_eq!(join_existing(&mount, "/elsewhere/x"), None);
        assert_eq!(join_existing(&mount, "/outerx"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("c")).expect("mkdir");
        let mount = CgroupMount {
            mount_point: dir.path().to_owned(),
            root: "/outer".to_owned(),
            controllers: vec![],
        };
        assert_eq!(
            join_existing(&mount, "/outer/c"),
            Some(dir.path().join("c"))
        );
        assert_eq!(join_existing(&mount, "/outer/../c"), None);
    }
}
