//! Where a container libcontainer 0.7 created would differ from runc's in what the container can do, set right by
//! the create's worker after the create and before the reply (before the container runs).
//!
//! - **A read-only cgroupfs.** On a cgroup v1 (or hybrid) host libcontainer mounts a spec's `cgroup` mount as a
//!   tmpfs holding one bind mount per hierarchy, and takes none of the mount's options for those binds: Docker's,
//!   nerdctl's and the CRI plugin's `ro,nosuid,nodev,noexec` cgroupfs came out writable, so a container's root could
//!   raise its own `memory.limit_in_bytes` or CPU quota and leave every limit behind (runc applies the options to
//!   each bind). The worker enters the init's mount namespace and sets the options the spec asked for on the tmpfs
//!   and every mount below it ([`Fidelity::apply`]). On a pure v2 host libcontainer mounts cgroup2 with the spec's options.
//! - **The locked-memory limit.** On cgroup v2 libcgroups loads the device program from the process that then
//!   forks the init, after setting that process's `RLIMIT_MEMLOCK` to 128 MiB (soft and hard), which the init
//!   inherits: a container got 128 MiB where runc's gets what containerd has (8 MiB under systemd's default,
//!   unlimited where the node raised it, which a 128 MiB hard limit then refused). Unless the spec sets
//!   `RLIMIT_MEMLOCK` itself, the worker gives the init back the limit it had before the create ([`restore_memlock`]).
//! - **Device directories.** libcontainer makes the directories of the spec's devices below `/dev` (`/dev/net` of
//!   `/dev/net/tun`, `/dev/dri`, `/dev/snd`, ...: a device plugin's, Docker's `--device`, every host device of a
//!   privileged container) under a umask of 0, so they were world-writable without the sticky bit, and any user in
//!   the container could delete or replace `/dev/net/tun`. runc makes them 0755; so does the worker ([`tighten`]).
//! - **No swap.** On cgroup v2 a spec whose memory+swap equals its limit kept `memory.swap.max` `max` (libcgroups
//!   skips a 0): the worker writes it ([`no_swap`]).
//! - **Controllers.** On cgroup v2 libcgroups enables above a container only the controllers it has code for; the
//!   create then enables the rest down to the container's parent, as runc does ([`enable_controllers`]), and under
//!   the systemd driver writes the resources systemd has no property for ([`systemd_resources`]).

use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::idmap::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// `statfs(2)`'s magic of a tmpfs, what libcontainer mounts at a v1 cgroupfs mount's destination.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What the create's worker sets right for one container, from its spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fidelity {
    /// The spec's `cgroup` mounts whose options to set on a v1 host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seals: Vec<Seal>,
    /// The spec sets `RLIMIT_MEMLOCK` (libcontainer applies it in the init, after the bump): left as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spec_memlock: bool,
    /// The directories below `/dev` that the spec's devices are in, parents first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_dirs: Vec<PathBuf>,
    /// The spec's device rules, in order ([`crate::devices`]): what the container's cgroup is made to enforce
    /// (`None`: its device rules are left as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_rules: Option<Vec<oci_spec::runtime::LinuxDeviceCgroup>>,
    /// The spec's memory+swap equals its memory limit: no swap ([`no_swap`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_swap: bool,
}

impl Fidelity {
    /// What to set right for a container of `spec`; a spec with more device rules than a Create can carry
    /// ([`crate::devices::MAX_RULES_BYTES`]) is refused.
    pub fn of(spec: &Spec) -> Result<Fidelity, crate::devices::DeviceError> {
        Ok(Fidelity {
            seals: seals(spec),
            spec_memlock: spec
                .process()
                .as_ref()
                .and_then(|p| p.rlimits().as_ref())
                .is_some_and(|r| {
                    r.iter()
                        .any(|r| r.typ() == oci_spec::runtime::PosixRlimitType::RlimitMemlock)
                }),
            device_dirs: bounded(device_dirs(spec)),
            device_rules: Some(crate::devices::spec_rules(spec)?),
            no_swap: spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.memory().as_ref())
                .is_some_and(|m| {
                    m.limit().is_some_and(|l| l > 0) && m.swap().is_some() && m.swap() == m.limit()
                }),
        })
    }

    /// Whether the default: no cgroupfs mount to seal, no device directory or rule, the locked-memory limit restored.
    pub fn is_default(&self) -> bool {
        self == &Fidelity::default()
    }

    /// Sets right what the create of the container whose init is `init` left different; `memlock` is this
    /// process's `RLIMIT_MEMLOCK` from before the create.
    pub fn apply(
        &self,
        init: i32,
        memlock: Option<libc::rlimit>,
        systemd: bool,
    ) -> Result<(), FidelityError> {
        let seal = !self.seals.is_empty() && host_needs_seal();
        if seal || !self.device_dirs.is_empty() {
            // The host's /dev device, read before entering: a directory on it is never changed.
            let host_dev = std::os::unix::fs::MetadataExt::dev(
                &std::fs::metadata("/dev").map_err(io("stat of the host's /dev"))?,
            );
            in_mount_namespace(init, || {
                if seal {
                    self.seals.iter().try_for_each(seal_one)?;
                }
                self.device_dirs
                    .iter()
                    .try_for_each(|d| tighten(d, Some(host_dev)))
            })?;
        }
        if let Some(rules) = &self.device_rules {
            crate::devices::apply(init, rules)?;
        }
        // One read of the init's cgroup for both v2 steps; only for a spec's container ([`Fidelity::of`] always
        // has device rules), never for a process a test passes, whose cgroups are the host's.
        let v2 = match self.device_rules {
            Some(_) => v2_cgroup(init)?,
            None => None,
        };
        if let Some((mount, rel)) = v2 {
            if self.no_swap {
                no_swap(&mount.join(rel.strip_prefix("/").unwrap_or(&rel)))?;
            }
            enable_controllers(&mount, &rel, init, systemd);
        }
        if let Some(limit) = memlock.filter(|_| !self.spec_memlock) {
            // Not a reason to fail the create: the container keeps libcgroups' 128 MiB, as before.
            if let Err(e) = restore_memlock(init, limit) {
                tracing::warn!(init, "{}", predictive_api::error_chain(&e));
            }
        }
        Ok(())
    }
}

/// The `unified` keys libcgroups 0.7's systemd manager turns into unit properties; it drops every other one.
const SYSTEMD_UNIFIED: [&str; 9] = [
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "pids.max",
];

/// Writes into the cgroup of a container libcontainer created with its systemd driver on a cgroup v2 host what
/// libcgroups 0.7's systemd manager left out of the spec's resources (`bundle`'s `config.json`), as runc's systemd
/// manager writes every resource after setting the unit's properties. libcgroups' sets only what systemd has
/// properties for (CPU weight and quota, cpuset, memory, pids, I/O throttles) and drops the rest with a log line:
/// the `memory.oom.group` a kubelet on cgroup v2 puts in every container's `unified` (an OOM kill then took one
/// process, not the container), any other `unified` key, hugepage limits, the block I/O weight, CPU burst and
/// idle. What systemd has properties for is left to systemd. Each resource is written on its own: one the host
/// refuses (a controller not delegated to the slice) is a warning, as its absence was before, and does not keep
/// the others out.
pub fn systemd_resources(bundle: &Path, init: i32) {
    use runtime_hooks::discovery::Hierarchy;
    if !matches!(
        Hierarchy::detect(&runtime_hooks::HostRoots::default()),
        Ok(Hierarchy::Unified(_))
    ) {
        // On v1 libcgroups takes its cgroupfs manager, which writes every resource.
        return;
    }
    let warn = |what: String| tracing::warn!(init, "the spec's resources under systemd: {what}");
    let spec = match Spec::load(bundle.join("config.json")) {
        Ok(s) => s,
        Err(e) => return warn(format!("reading config.json: {e}")),
    };
    let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().clone()) else {
        return;
    };
    let pieces = not_for_systemd(&r);
    if pieces.is_empty() {
        return;
    }
    let roots = runtime_hooks::HostRoots::default();
    let cgroup = match runtime_hooks::ContainerCgroup::from_pid(&roots, init) {
        Ok(c) => c,
        Err(e) => return warn(predictive_api::error_chain(&e)),
    };
    for problem in write_pieces(&cgroup, &pieces) {
        warn(problem);
    }
}

/// Writes each of `pieces` ([`not_for_systemd`]'s) into the container's cgroup `cg` on its own, so that one the
/// host refuses keeps no other out; what could not be written, in words.
pub fn write_pieces(
    cg: &runtime_hooks::ContainerCgroup,
    pieces: &[oci_spec::runtime::LinuxResources],
) -> Vec<String> {
    pieces
        .iter()
        .filter_map(|piece| cg.update_resources(piece).err())
        .map(|e| predictive_api::error_chain(&e))
        .collect()
}

/// The controllers systemd enables itself down to a delegated unit (`Delegate=yes`), and manages.
const SYSTEMD_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids"];

/// On a cgroup v2 host, the cgroup2 mount and the init `init`'s cgroup under it (from its root); `Ok(None)` on a
/// v1 or hybrid host.
fn v2_cgroup(init: i32) -> Result<Option<(PathBuf, PathBuf)>, FidelityError> {
    use runtime_hooks::discovery::Hierarchy;
    let Ok(Hierarchy::Unified(mount)) = Hierarchy::detect(&runtime_hooks::HostRoots::default())
    else {
        return Ok(None);
    };
    let own = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
        .map_err(io(format!("reading the cgroup of the init {init}")))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| FidelityError::Io {
            what: format!("the init {init} is in no cgroup v2 directory"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    Ok(Some((mount.mount_point.clone(), PathBuf::from(rel.trim()))))
}

/// A spec whose memory+swap equals its memory limit (what containerd's CRI plugin sends for a Kubernetes
/// container on a node without swap for it, Docker for `--memory` with `--memory-swap` the same) asks for no swap:
/// on cgroup v2 `memory.swap.max` 0, as runc writes it. libcgroups 0.7's cgroupfs manager skips every v2 memory
/// value of 0, so such a container kept `max` and could swap without bound on a node with swap (its systemd
/// manager sets `MemorySwapMax=0`). On v1 memory+swap is written as it is. A host without swap accounting (no
/// `memory.swap.max`) has nothing to set; a write the kernel refuses fails the create, as runc's does.
fn no_swap(cgroup: &Path) -> Result<(), FidelityError> {
    let file = cgroup.join("memory.swap.max");
    if !file.is_file() {
        return Ok(());
    }
    std::fs::write(&file, "0").map_err(io(format!("writing 0 to {}", file.display())))
}

/// On a cgroup v2 host (`mount`), enables in every cgroup from the root down to the parent of the container's
/// (`rel`, the one the init `init` is in) each controller the root offers that is not enabled there, as runc does for every container
/// (`fs2.CreateCgroupPath`): libcgroups enables only those it has code for (under its systemd manager cpu, memory
/// and pids; under its cgroupfs manager hugetlb too, never rdma or misc), so a container's cgroup had no
/// `hugetlb.*` files under the systemd driver (a per-container hugepage limit went unwritten) and no
/// `rdma.*` or `misc.*` under either. Under the systemd driver the controllers systemd manages are left to it.
/// One controller per write; one the kernel refuses is a warning, as its absence was before.
fn enable_controllers(mount: &Path, rel: &Path, init: i32, systemd: bool) {
    let skip = if systemd { SYSTEMD_CONTROLLERS } else { &[] };
    for problem in enable_down(mount, rel, skip) {
        tracing::warn!(init, "enabling controllers for the container: {problem}");
    }
}

/// The work of [`enable_controllers`] below the cgroup2 mount `root` for the cgroup `rel` (from the root): what
/// could not be done.
fn enable_down(root: &Path, rel: &Path, skip: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let offered = match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(text) => text,
        Err(e) => {
            return vec![format!(
                "reading {}/cgroup.controllers: {e}",
                root.display()
            )];
        }
    };
    let wanted: Vec<&str> = offered
        .split_whitespace()
        .filter(|c| !skip.contains(c))
        .collect();
    let parts: Vec<_> = rel
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    let Some((_, ancestors)) = parts.split_last() else {
        // The init in the root cgroup: nothing of the host's is changed for it.
        return problems;
    };
    let mut dir = root.to_path_buf();
    for level in std::iter::once(None).chain(ancestors.iter().map(Some)) {
        if let Some(part) = level {
            dir.push(part);
        }
        let file = dir.join("cgroup.subtree_control");
        let enabled = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("reading {}: {e}", file.display()));
                return problems;
            }
        };
        for c in wanted
            .iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        {
            if let Err(e) = std::fs::write(&file, format!("+{c}")) {
                problems.push(format!("writing +{c} to {}: {e}", file.display()));
            }
        }
    }
    problems
}

/// The resources of `r` libcgroups' systemd manager does not set, one per element (each written on its own).
pub fn not_for_systemd(
    r: &oci_spec::runtime::LinuxResources,
) -> Vec<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxResources};
    let mut pieces: Vec<LinuxResources> = Vec::new();
    if let Some(cpu) = r
        .cpu()
        .as_ref()
        .filter(|c| c.burst().is_some() || c.idle().is_some())
    {
        let mut only = LinuxCpu::default();
        only.set_burst(cpu.burst()).set_idle(cpu.idle());
        pieces.push(LinuxResources::default().set_cpu(Some(only)).clone());
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
        let mut only = LinuxBlockIo::default();
        only.set_weight(Some(w));
        pieces.push(LinuxResources::default().set_block_io(Some(only)).clone());
    }
    if let Some(pages) = r.hugepage_limits().clone().filter(|p| !p.is_empty()) {
        pieces.push(
            LinuxResources::default()
                .set_hugepage_limits(Some(pages))
                .clone(),
        );
    }
    // One key at a time, sorted: a key the kernel refuses keeps no other out.
    let mut keys: Vec<(&String, &String)> = r
        .unified()
        .iter()
        .flatten()
        .filter(|(k, _)| !SYSTEMD_UNIFIED.contains(&k.as_str()))
        .collect();
    keys.sort();
    for (k, v) in keys {
        let only = std::collections::HashMap::from([(k.clone(), v.clone())]);
        pieces.push(LinuxResources::default().set_unified(Some(only)).clone());
    }
    pieces
}

/// This process's `RLIMIT_MEMLOCK` (what the init should have), read before the create.
pub fn memlock() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `struct rlimit`.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0).then_some(limit)
}

/// Gives the process `init` the locked-memory limit `limit` if it has another one.
pub fn restore_memlock(init: i32, limit: libc::rlimit) -> Result<(), FidelityError> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limit of `init` into a live `struct rlimit`; sets nothing (null new limit).
    let rc = unsafe { libc::prlimit(init, libc::RLIMIT_MEMLOCK, std::ptr::null(), &mut now) };
    if rc != 0 {
        return Err(io(format!(
            "reading the locked-memory limit of the init {init}"
        ))(std::io::Error::last_os_error()));
    }
    if (now.rlim_cur, now.rlim_max) == (limit.rlim_cur, limit.rlim_max) {
        return Ok(());
    }
    // SAFETY: sets the limit of `init` from a live `struct rlimit`; the old one is not asked for.
    let rc = unsafe { libc::prlimit(init, libc::RLIMIT_MEMLOCK, &limit, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io(format!(
            "setting the locked-memory limit of the init {init}"
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The directories strictly below `/dev` that hold the spec's devices, parents first, each once.
pub fn device_dirs(spec: &Spec) -> Vec<PathBuf> {
    let dev = Path::new("/dev");
    let dirs: std::collections::BTreeSet<PathBuf> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .flat_map(|d| {
            d.path()
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(dev) && *a != dev)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.components().any(|c| c == std::path::Component::ParentDir))
        .collect();
    dirs.into_iter().collect()
}

/// At most [`MAX_DEVICE_DIRS_BYTES`] of directory names go to the worker (its request is one datagram of at most
/// 64 KiB): a privileged container on a host with thousands of device directories (one `/dev/cpu/<n>` per CPU) keeps
/// them as libcontainer made them rather than fail, with a warning.
fn bounded(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let bytes: usize = dirs.iter().map(|d| d.as_os_str().len() + 4).sum();
    if bytes <= MAX_DEVICE_DIRS_BYTES {
        return dirs;
    }
    tracing::warn!(
        dirs = dirs.len(),
        bytes,
        "too many device directories below /dev to check: left as libcontainer made them"
    );
    Vec::new()
}

/// The most bytes of device directory names one Create sends its worker.
const MAX_DEVICE_DIRS_BYTES: usize = 24 * 1024;

/// Makes the directory `dir` of the container 0755 if libcontainer left it 0777 (its mkdir under umask 0); any
/// other mode is left as it is. Resolved without following a symlink, so it can only be the directory itself.
fn tighten(dir: &Path, host_dev: Option<u64>) -> Result<(), FidelityError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let what = |w: &str| format!("{w} {} in the container", dir.display());
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(libc::AT_FDCWD, dir, how) {
        Ok(fd) => fd,
        // Not made after all (or not a directory): nothing of ours to tighten.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {
            return Ok(());
        }
        Err(e) => {
            return Err(io(what("opening"))(e.into()));
        }
    };
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    let fd = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    let meta = fd.metadata().map_err(io(what("stat of")))?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The host's own /dev bound into the container (a spec that mounts it over libcontainer's tmpfs) is not ours.
    if host_dev.is_some_and(|h| h == meta.dev()) {
        return Ok(());
    }
    if meta.permissions().mode() & 0o7777 == 0o777 {
        fd.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io(what("chmod of")))?;
    }
    Ok(())
}

/// One `cgroup` mount of the spec and the attributes its options ask for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seal {
    /// Where it is mounted in the container.
    pub destination: PathBuf,
    /// `MOUNT_ATTR_*` bits: read-only, nosuid, nodev, noexec.
    pub attr: u64,
}

/// The spec's `cgroup` mounts that ask for read-only, nosuid, nodev or noexec (in the order they are mounted).
pub fn seals(spec: &Spec) -> Vec<Seal> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("cgroup"))
        .filter_map(|m| {
            let attr = m.options().iter().flatten().fold(0, |attr, o| {
                attr | match o.as_str() {
                    "ro" => MOUNT_ATTR_RDONLY,
                    "nosuid" => MOUNT_ATTR_NOSUID,
                    "nodev" => MOUNT_ATTR_NODEV,
                    "noexec" => MOUNT_ATTR_NOEXEC,
                    _ => 0,
                }
            });
            (attr != 0).then(|| Seal {
                destination: m.destination().clone(),
                attr,
            })
        })
        .collect()
}

/// Whether libcontainer mounts a `cgroup` mount as v1 hierarchies here (a v1 or hybrid host), the case it drops
/// the options in.
fn host_needs_seal() -> bool {
    // The host's layout as the process read it once (the zygote's, inherited by its workers): no I/O per Create.
    use runtime_hooks::discovery::Hierarchy;
    matches!(
        Hierarchy::detect(&runtime_hooks::HostRoots::default()),
        Ok(Hierarchy::Legacy(_) | Hierarchy::Hybrid { .. })
    )
}

/// What went wrong setting a created container right.
#[derive(Debug, thiserror::Error)]
pub enum FidelityError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} in the container is not the tmpfs a cgroupfs mount makes (statfs type {kind:#x})", .destination.display())]
    NotCgroupfs { destination: PathBuf, kind: i64 },
    #[error(transparent)]
    Devices(#[from] crate::devices::DeviceError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FidelityError {
    let what = what.into();
    move |source| FidelityError::Io { what, source }
}

/// Runs `f` in the mount namespace of the process `init`, then returns this process to its own. Paths are resolved in
/// the container's root (entering a mount namespace makes its root this process's), so a symlink in the image cannot
/// point a change anywhere outside the container. Must run in a single-threaded process (setns(2)).
fn in_mount_namespace(
    init: i32,
    f: impl FnOnce() -> Result<(), FidelityError>,
) -> Result<(), FidelityError> {
    let own = std::fs::File::open("/proc/thread-self/ns/mnt")
        .map_err(io("opening this process's mount namespace"))?;
    let theirs = std::fs::File::open(format!("/proc/{init}/ns/mnt")).map_err(io(format!(
        "opening the mount namespace of the init {init}"
    )))?;
    enter(&theirs, init)?;
    let done = f();
    let back = enter(&own, std::process::id() as i32);
    done.and(back)
}

fn enter(ns: &std::fs::File, whose: i32) -> Result<(), FidelityError> {
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(std::io::Error::from)
        .map_err(io(format!("entering the mount namespace of {whose}")))
}

fn seal_one(s: &Seal) -> Result<(), FidelityError> {
    let what = |w: &str| format!("{w} {} in the container", s.destination.display());
    let dir = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(Path::new("/").join(&s.destination))
        .map_err(io(what("opening")))?;
    let fs = nix::sys::statfs::fstatfs(dir.as_fd())
        .map_err(std::io::Error::from)
        .map_err(io(what("statfs of")))?;
    let kind = fs.filesystem_type().0 as i64;
    if kind != TMPFS_MAGIC {
        return Err(FidelityError::NotCgroupfs {
            destination: s.destination.clone(),
            kind,
        });
    }
    let attr = crate::idmap::MountAttr {
        attr_set: s.attr,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    crate::idmap::mount_setattr(dir.as_fd(), libc::AT_RECURSIVE as libc::c_uint, &attr)
        .map_err(io(what("mount_setattr of")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": mounts,
        }))
        .expect("a spec")
    }

    #[test]
    fn a_spec_asks_for_no_swap_when_memory_and_swap_are_its_limit() {
        let of = |memory: serde_json::Value| {
            let spec: Spec = serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs"},
                "linux": {"resources": {"memory": memory}}
            }))
            .expect("a spec");
            Fidelity::of(&spec).expect("fidelity").no_swap
        };
        assert!(of(
            serde_json::json!({"limit": 268435456, "swap": 268435456})
        ));
        assert!(
            !of(serde_json::json!({"limit": 268435456, "swap": 536870912})),
            "swap granted"
        );
        assert!(
            !of(serde_json::json!({"limit": 268435456, "swap": -1})),
            "unlimited swap"
        );
        assert!(
            !of(serde_json::json!({"limit": 268435456})),
            "swap left to the host"
        );
        assert!(
            !of(serde_json::json!({"limit": -1, "swap": -1})),
            "no limit"
        );
        assert!(!of(serde_json::json!({})));
    }

    #[test]
    fn controllers_are_enabled_from_the_root_down_to_the_containers_parent() {
        // A fake cgroup2 tree: the root offers five controllers; the root already enables hugetlb; each write
        // replaces a fake file, so it holds the last controller written there.
        let root = tempfile::tempdir().expect("a temp dir");
        let root = root.path();
        let scope = "kubepods.slice/pod.slice/cri-containerd-1.scope";
        std::fs::create_dir_all(root.join(scope)).expect("the tree");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpu memory pids hugetlb misc\n",
        )
        .expect("controllers");
        std::fs::write(root.join("cgroup.subtree_control"), "cpu memory hugetlb\n")
            .expect("root's");
        for dir in ["kubepods.slice", "kubepods.slice/pod.slice", scope] {
            std::fs::write(root.join(dir).join("cgroup.subtree_control"), "").expect("empty");
        }
        let control = |dir: &str| {
            std::fs::read_to_string(root.join(dir).join("cgroup.subtree_control")).expect("read")
        };
        let problems = enable_down(root, Path::new(&format!("/{scope}")), SYSTEMD_CONTROLLERS);
        assert!(problems.is_empty(), "{problems:?}");
        // systemd's own are left to it; what it does not manage is enabled where missing.
        assert_eq!(
            control(""),
            "+misc",
            "hugetlb was enabled at the root already"
        );
        assert_eq!(control("kubepods.slice"), "+misc");
        assert_eq!(control("kubepods.slice/pod.slice"), "+misc");
        assert_eq!(
            control(scope),
            "",
            "the container's own cgroup enables nothing"
        );
        // The cgroupfs driver: every controller the root offers, one write each.
        std::fs::write(
            root.join("kubepods.slice/cgroup.subtree_control"),
            "cpu memory pids hugetlb",
        )
        .expect("reset");
        assert!(enable_down(root, Path::new(&format!("/{scope}")), &[]).is_empty());
        assert_eq!(control("kubepods.slice"), "+misc");
        assert_eq!(control("kubepods.slice/pod.slice"), "+misc");
        // A cgroup that is not there is named.
        let problems = enable_down(root, Path::new("/gone.slice/x.scope"), &[]);
        assert!(
            problems.iter().any(|p| p.contains("gone.slice")),
            "{problems:?}"
        );
        // An init in the root cgroup changes nothing.
        std::fs::write(root.join("cgroup.subtree_control"), "").expect("reset");
        assert!(enable_down(root, Path::new("/"), &[]).is_empty());
        assert_eq!(control(""), "");
    }

    #[test]
    fn a_cgroup_mounts_options_become_the_attributes_to_set() {
        let s = spec(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["ro", "nosuid", "nodev", "noexec", "relatime"]},
            {"destination": "/privileged", "type": "cgroup", "source": "cgroup", "options": ["rw"]},
            {"destination": "/v2", "type": "cgroup2", "source": "cgroup", "options": ["ro"]},
            {"destination": "/half", "type": "cgroup", "source": "cgroup", "options": ["rw", "nosuid"]},
        ]));
        assert_eq!(
            seals(&s),
            vec![
                Seal {
                    destination: "/sys/fs/cgroup".into(),
                    attr: MOUNT_ATTR_RDONLY
                        | MOUNT_ATTR_NOSUID
                        | MOUNT_ATTR_NODEV
                        | MOUNT_ATTR_NOEXEC,
                },
                Seal {
                    destination: "/half".into(),
                    attr: MOUNT_ATTR_NOSUID,
                },
            ],
            "only `cgroup` mounts (libcontainer honours a `cgroup2` mount's options), and only what they ask"
        );
        assert!(seals(&spec(serde_json::json!([]))).is_empty());
    }

    #[test]
    fn what_systemd_has_no_property_for_is_written_one_resource_at_a_time() {
        let r: oci_spec::runtime::LinuxResources = serde_json::from_value(serde_json::json!({
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 10000},
            "memory": {"limit": 268435456},
            "pids": {"limit": 100},
            "blockIO": {"weight": 300},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "unified": {"memory.oom.group": "1", "memory.max": "1000", "io.prio.class": "idle"}
        }))
        .expect("resources");
        let pieces: Vec<serde_json::Value> = not_for_systemd(&r)
            .iter()
            .map(|p| serde_json::to_value(p).expect("json"))
            .collect();
        assert_eq!(
            pieces,
            vec![
                serde_json::json!({"cpu": {"burst": 10000}}),
                serde_json::json!({"blockIO": {"weight": 300}}),
                serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}),
                serde_json::json!({"unified": {"io.prio.class": "idle"}}),
                serde_json::json!({"unified": {"memory.oom.group": "1"}}),
            ],
            "CPU quota and shares, memory, pids and memory.max are systemd's"
        );
        let plain: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": 1}})).expect("resources");
        assert!(not_for_systemd(&plain).is_empty());
    }

    #[test]
    fn a_spec_that_sets_the_locked_memory_limit_keeps_it() {
        let with = |rlimits: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs"},
                "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "rlimits": rlimits},
            }))
            .expect("a spec")
        };
        let nofile = serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
        assert!(!Fidelity::of(&with(nofile)).expect("fidelity").spec_memlock);
        let memlock = serde_json::json!([{"type": "RLIMIT_MEMLOCK", "hard": 65536, "soft": 65536}]);
        assert!(Fidelity::of(&with(memlock)).expect("fidelity").spec_memlock);
        // A spec without device rules still gets runc's defaults (its Fidelity is never the default).
        let plain = Fidelity::of(&spec(serde_json::json!([]))).expect("fidelity");
        assert_eq!(plain.device_rules, Some(Vec::new()));
        assert!(!plain.is_default());
    }

    #[test]
    fn the_directories_of_the_specs_devices_below_dev_are_listed_once_parents_first() {
        let s: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"devices": [
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
                {"path": "/dev/dri/by-path/pci-card", "type": "c", "major": 226, "minor": 0},
                {"path": "/dev/dri/card0", "type": "c", "major": 226, "minor": 0},
                {"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3},
            ]},
        }))
        .expect("a spec");
        assert_eq!(
            device_dirs(&s),
            ["/dev/dri", "/dev/dri/by-path", "/dev/net"]
                .map(PathBuf::from)
                .to_vec()
        );
        // A host with one /dev/cpu/<n> per CPU: 4,096 of them are more than one request carries, and none is sent.
        let many: Vec<PathBuf> = (0..4096)
            .map(|n| PathBuf::from(format!("/dev/cpu/{n}")))
            .collect();
        assert!(bounded(many).is_empty());
        let some: Vec<PathBuf> = (0..256)
            .map(|n| PathBuf::from(format!("/dev/cpu/{n}")))
            .collect();
        assert_eq!(
            bounded(some.clone()),
            some,
            "a 256-CPU host's are all checked"
        );
    }

    /// A directory left 0777 becomes 0755; one the image or the spec made otherwise keeps its mode; a symlink is
    /// not followed.
    #[test]
    fn only_a_world_writable_device_directory_is_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        let open = dir.path().join("net");
        let sticky = dir.path().join("shm");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::create_dir(&sticky).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        let link = dir.path().join("link");
        let target = dir.path().join("target");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for d in [&open, &sticky, &link, &dir.path().join("missing")] {
            tighten(d, None).expect("tighten");
        }
        // A directory on the device named as the host's /dev is left alone.
        let other = dir.path().join("host");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let on = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&other).expect("stat"));
        tighten(&other, Some(on)).expect("tighten");
        assert_eq!(
            mode(&other),
            0o777,
            "a directory on the host's /dev was changed"
        );
        assert_eq!(mode(&open), 0o755);
        assert_eq!(mode(&sticky), 0o1777);
        assert_eq!(mode(&target), 0o777, "followed a symlink");
    }

    /// libcgroups' bump, undone: a child whose limit was changed gets this process's back. (Its soft limit only:
    /// raising a hard limit needs CAP_SYS_RESOURCE, which this machine's root lacks.)
    #[test]
    fn the_inits_locked_memory_limit_is_given_back() {
        let ours = memlock().expect("getrlimit");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let bumped = libc::rlimit {
            rlim_cur: ours.rlim_cur / 2,
            rlim_max: ours.rlim_max,
        };
        // SAFETY: sets the child's limit from a live `struct rlimit`.
        let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_MEMLOCK, &bumped, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit of the child");
        let keep = Fidelity {
            spec_memlock: true,
            ..Fidelity::default()
        };
        keep.apply(pid, Some(ours), false).expect("apply");
        let read = || {
            let mut now = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: reads the child's limit into a live `struct rlimit`.
            unsafe { libc::prlimit(pid, libc::RLIMIT_MEMLOCK, std::ptr::null(), &mut now) };
            (now.rlim_cur, now.rlim_max)
        };
        assert_eq!(
            read(),
            (bumped.rlim_cur, bumped.rlim_max),
            "a spec's own limit stays"
        );
        Fidelity::default()
            .apply(pid, Some(ours), false)
            .expect("apply");
        assert_eq!(read(), (ours.rlim_cur, ours.rlim_max));
        let _ = child.kill();
        let _ = child.wait();
    }
}
