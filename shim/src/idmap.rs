//! Idmapped mounts, for containers in a user namespace of their own (a Kubernetes pod with `hostUsers: false`).
//!
//! Such a pod's files are owned on disk by the host's ids, its processes run as other host ids (kubelet gives each
//! pod 65,536 of its own). An idmapped mount shows files through a user namespace's mapping, so the container's
//! root sees its image and its `/etc/hosts` as its own without a copy or a chown. containerd asks for two kinds:
//!
//! - **rootfs**: a snapshotter that remaps ids (containerd 2.x's overlayfs on a kernel that can) adds
//!   `uidmap=C:H:S` and `gidmap=C:H:S` to the rootfs mount's options. For overlay each lower layer is idmapped
//!   (the upper layer was chowned by the snapshotter); a one-layer bind is idmapped whole ([`mount_rootfs`]).
//! - **spec mounts**: a bind mount in `config.json` with `uidMappings`/`gidMappings` (OCI runtime-spec 1.1; the CRI
//!   plugin sets them on `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` and kubelet's volumes of such a pod).
//!   libcontainer 0.7 does not make idmapped mounts (it ignores the fields), so the shim makes an idmapped copy
//!   of each source under the bundle before the create and points the mount at it; libcontainer's bind of an
//!   idmapped mount keeps its mapping. In such a container every other bind mount is copied there too, as it is,
//!   so that its source is reachable from the namespace ([`copied_mounts`]). The copies are detached once the
//!   container's mounts are made ([`Staged::release`]), or by the `delete` action after a killed server
//!   ([`detach_left`]).
//!
//! The mapping needs a user namespace to name it: a child is forked into one, its `uid_map`/`gid_map` written, its
//! `/proc/PID/ns/user` opened, and then it exits ([`user_namespace`]). The mounts are made with the kernel's mount
//! API (`open_tree`, `mount_setattr` with `MOUNT_ATTR_IDMAP`, `move_mount`; Linux 5.12, and for the filesystem: ext4
//! and xfs 5.12, overlayfs layers 5.19, tmpfs 6.3). A kernel or filesystem that cannot fails the create with an
//! error naming the mount, as runc does.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Result, ShimError};

/// The most lines a `uid_map` or `gid_map` takes (Linux 4.15 on).
const MAX_LINES: usize = 340;
/// Where a bundle's idmapped copies of spec mount sources are attached.
const STAGING_DIR: &str = "idmapped";
/// Where an overlay rootfs's idmapped lower layers are attached while it is mounted.
const LAYERS_DIR: &str = "idmapped-layers";

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `mount_setattr(2)`'s attribute bits (linux/mount.h).
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `mount_setattr(2)` on the mount `fd` is (`AT_EMPTY_PATH`, plus `flags`: `AT_RECURSIVE` for its submounts too).
pub(crate) fn mount_setattr(
    fd: BorrowedFd<'_>,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> std::io::Result<()> {
    let empty = c"";
    // SAFETY: `fd` is an open descriptor, the path an empty C string and `attr` a live `struct mount_attr` of the
    // size passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One line of an id mapping: `size` ids from `container` inside are `host` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// A user namespace's uid and gid mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Range>,
    pub gids: Vec<Range>,
}

impl IdMap {
    /// From containerd's rootfs mount options' values (`C:H:S`, several joined by `,`).
    pub fn from_options(uidmap: &str, gidmap: &str) -> Result<IdMap> {
        let map = IdMap {
            uids: parse_ranges("uidmap", uidmap)?,
            gids: parse_ranges("gidmap", gidmap)?,
        };
        map.check()?;
        Ok(map)
    }

    /// From a spec's `uidMappings`/`gidMappings`; `what` names them in an error.
    pub fn from_spec(
        what: &str,
        uids: &[LinuxIdMapping],
        gids: &[LinuxIdMapping],
    ) -> Result<IdMap> {
        let ranges = |m: &[LinuxIdMapping]| {
            m.iter()
                .map(|r| Range {
                    container: r.container_id(),
                    host: r.host_id(),
                    size: r.size(),
                })
                .collect()
        };
        let map = IdMap {
            uids: ranges(uids),
            gids: ranges(gids),
        };
        map.check()
            .map_err(|e| ShimError::InvalidArgument(format!("{what}: {}", e.chain())))?;
        Ok(map)
    }

    fn check(&self) -> Result<()> {
        for (name, ranges) in [("uid", &self.uids), ("gid", &self.gids)] {
            if ranges.is_empty() {
                return Err(ShimError::InvalidArgument(format!(
                    "an idmapped mount needs {name} mappings, and there are none"
                )));
            }
            if ranges.len() > MAX_LINES {
                return Err(ShimError::InvalidArgument(format!(
                    "{} {name} mappings, more than the kernel's {MAX_LINES}",
                    ranges.len()
                )));
            }
            for r in ranges {
                let fits = |start: u32| start.checked_add(r.size - 1).is_some();
                if r.size == 0 || !fits(r.container) || !fits(r.host) {
                    return Err(ShimError::InvalidArgument(format!(
                        "{name} mapping {}:{}:{} is empty or runs past 2^32",
                        r.container, r.host, r.size
                    )));
                }
            }
        }
        Ok(())
    }

    /// A `uid_map`/`gid_map` file's text.
    fn proc_text(ranges: &[Range]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
            .collect()
    }
}

fn parse_ranges(option: &str, value: &str) -> Result<Vec<Range>> {
    let bad = |why: &str| {
        ShimError::InvalidArgument(format!(
            "rootfs mount option {option}={}: {why}",
            value.escape_debug()
        ))
    };
    if value.len() > 64 * MAX_LINES {
        return Err(bad("too long"));
    }
    value
        .split(',')
        .map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [c, h, s] = fields[..] else {
                return Err(bad("not container:host:size"));
            };
            let n = |f: &str| f.parse::<u32>().map_err(|_| bad("not a number"));
            Ok(Range {
                container: n(c)?,
                host: n(h)?,
                size: n(s)?,
            })
        })
        .collect()
}

/// A user namespace with `map`, held by its file (the process that made it has exited).
///
/// The child is forked by hand because the shim has threads: it only calls `unshare`, `write`, `read` and
/// `_exit`. It waits on a pipe until the parent has written its maps, opened its namespace and
/// [`crate::reaper::detach`]ed it, so the reaper drops its exit instead of keeping it for a container process
/// that may get the pid later.
pub fn user_namespace(map: &IdMap) -> Result<OwnedFd> {
    let (hold_r, hold_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::sys("pipe"))?;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::sys("pipe"))?;
    let (hold, hold_end, ready) = (hold_r.as_raw_fd(), hold_w.as_raw_fd(), ready_w.as_raw_fd());
    // SAFETY: the child runs only async-signal-safe system calls on descriptors opened before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ShimError::Io {
            context: "forking the user namespace's holder".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: the child: raw system calls on inherited descriptors, then _exit.
        unsafe {
            // Its copy of the write end would keep the read below from ever seeing the parent's close.
            libc::close(hold_end);
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                b'1'
            } else {
                b'0'
            };
            libc::write(ready, (&ok as *const u8).cast(), 1);
            let mut byte = 0u8;
            libc::read(hold, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    crate::reaper::detach(pid);
    drop((hold_r, ready_w));
    // The child runs until `hold_w` is closed, when this returns.
    let _hold = hold_w;
    let mut byte = [0u8; 1];
    let read = nix::unistd::read(ready_r.as_raw_fd(), &mut byte)
        .map_err(ShimError::sys("reading the holder's report"))?;
    if read != 1 || byte[0] != b'1' {
        return Err(ShimError::FailedPrecondition(
            "this host cannot make a user namespace (unshare CLONE_NEWUSER failed)".into(),
        ));
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text.as_bytes()).map_err(ShimError::io(
            format!("writing {file} {:?}", text.trim_end()),
        ))
    };
    write("uid_map", IdMap::proc_text(&map.uids))?;
    write("gid_map", IdMap::proc_text(&map.gids))?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(ShimError::io("opening the user namespace"))?;
    Ok(OwnedFd::from(ns))
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ShimError::InvalidArgument(format!("path {} has a NUL byte", path.display())))
}

fn last_error(context: String) -> ShimError {
    ShimError::Io {
        context,
        source: std::io::Error::last_os_error(),
    }
}

/// A detached copy of the mount at `source` (and of the mounts below it when `recursive`) that shows its files
/// through `userns`'s mapping (as they are without one), read-only when `read_only`.
pub fn idmapped_tree(
    source: &Path,
    userns: Option<BorrowedFd>,
    recursive: bool,
    read_only: bool,
) -> Result<OwnedFd> {
    let path = c_path(source)?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree with a valid C path; a non-negative result is a new descriptor this function owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(last_error(format!(
            "cloning the mount at {}",
            source.display()
        )));
    }
    // SAFETY: fd is a new descriptor returned above.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: if userns.is_some() {
            MOUNT_ATTR_IDMAP
        } else {
            0
        } | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    if attr.attr_set == 0 {
        return Ok(tree);
    }
    if let Err(e) = mount_setattr(tree.as_fd(), rec, &attr) {
        return Err(ShimError::Io {
            context: format!(
                "idmapping the mount of {} (the kernel or its filesystem cannot)",
                source.display()
            ),
            source: e,
        });
    }
    Ok(tree)
}

/// The filesystem at `path` by name (`statfs`'s magic number), with the first Linux release that idmaps it where
/// known.
fn filesystem(path: &Path) -> (String, Option<&'static str>) {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC,
    };
    let kind = match nix::sys::statfs::statfs(path) {
        Ok(s) => s.filesystem_type(),
        Err(e) => return (format!("a filesystem statfs cannot name ({e})"), None),
    };
    let (name, since) = match kind {
        TMPFS_MAGIC => ("tmpfs", "6.3"),
        EXT4_SUPER_MAGIC => ("ext4", "5.12"),
        XFS_SUPER_MAGIC => ("xfs", "5.12"),
        BTRFS_SUPER_MAGIC => ("btrfs", "5.15"),
        OVERLAYFS_SUPER_MAGIC => ("overlayfs", "5.19"),
        // linux/magic.h; no Linux release idmaps ramfs (6.18 refuses it).
        other if other.0 == 0x8584_58f6 => return ("ramfs".into(), None),
        other => return (format!("filesystem type {:#x}", other.0), None),
    };
    (name.to_owned(), Some(since))
}

/// What the create says when the kernel would not idmap spec mount `m`'s source (kubelet's design leaves that
/// error to the runtime: it names the volume, its filesystem and the kernel, not only `EINVAL`).
fn refused(m: &oci_spec::runtime::Mount, source: &Path, e: ShimError) -> ShimError {
    let ShimError::Io { source: errno, .. } = e else {
        return e;
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (fs, since) = filesystem(source);
    ShimError::Io {
        context: refusal(
            &m.destination().display().to_string(),
            &source.display().to_string(),
            &fs,
            since,
            release.trim(),
        ),
        source: errno,
    }
}

/// [`refused`]'s text; every name in it escaped (a volume's path is the pod's to choose).
fn refusal(dest: &str, source: &str, fs: &str, since: Option<&str>, release: &str) -> String {
    let since = since.map_or(String::new(), |v| format!(", which Linux idmaps from {v}"));
    format!(
        "mount {}: idmapping its source {} on {}{since} (this is Linux {})",
        dest.escape_debug(),
        source.escape_debug(),
        fs.escape_debug(),
        release.escape_debug()
    )
}

/// Attaches a detached tree ([`idmapped_tree`]) at `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<()> {
    let path = c_path(target)?;
    let empty = c"";
    // SAFETY: move_mount from a valid mount descriptor to a valid C path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(last_error(format!(
            "attaching an idmapped mount at {}",
            target.display()
        )));
    }
    Ok(())
}

/// The values of a rootfs mount's `uidmap=` and `gidmap=` options, when it has either.
pub fn rootfs_idmap(m: &Mount) -> Option<(&str, &str)> {
    let find = |key: &str| m.options.iter().find_map(|o| o.strip_prefix(key));
    let (u, g) = (find("uidmap="), find("gidmap="));
    (u.is_some() || g.is_some()).then(|| (u.unwrap_or_default(), g.unwrap_or_default()))
}

/// Mounts rootfs mount `m`, which has `uidmap=`/`gidmap=` options ([`rootfs_idmap`]), on `rootfs`: an overlay
/// with each lower layer idmapped, or a bind idmapped whole.
pub async fn mount_rootfs(m: &Mount, rootfs: &Path) -> Result<()> {
    let (uidmap, gidmap) = rootfs_idmap(m).unwrap_or_default();
    let map = IdMap::from_options(uidmap, gidmap)?;
    let userns = user_namespace(&map)?;
    let options: Vec<String> = m
        .options
        .iter()
        .filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap="))
        .cloned()
        .collect();
    let is = |name: &str| options.iter().any(|o| o == name);
    if m.type_ == "overlay" {
        let lower = options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .ok_or_else(|| {
                ShimError::InvalidArgument("an idmapped overlay rootfs has no lowerdir".into())
            })?;
        // Each layer's idmapped copy is attached under the bundle while the overlay is mounted (Linux 6.12 refuses a
        // layer on a detached mount), and detached again after: the overlay holds them.
        let layers = Layers::attach(rootfs, lower, &userns)?;
        let lowerdir = layers
            .dirs
            .iter()
            .map(|d| d.to_string_lossy())
            .collect::<Vec<_>>()
            .join(":");
        let mut mount = m.clone();
        mount.options = options
            .iter()
            .map(|o| {
                if o.starts_with("lowerdir=") {
                    format!("lowerdir={lowerdir}")
                } else {
                    o.clone()
                }
            })
            .collect();
        let mounted = containerd_shim::util::mount_rootfs(&mount, rootfs).await;
        layers.release();
        return mounted.map_err(ShimError::shim(format!(
            "mounting the idmapped overlay on {}",
            rootfs.display()
        )));
    }
    if m.type_ == "bind" || is("bind") || is("rbind") {
        let tree = idmapped_tree(
            Path::new(&m.source),
            Some(userns.as_fd()),
            is("rbind"),
            is("ro"),
        )?;
        return attach(&tree, rootfs);
    }
    Err(ShimError::InvalidArgument(format!(
        "an idmapped rootfs of type {:?} (only overlay and bind can be)",
        m.type_.escape_debug().to_string()
    )))
}

/// Removes an empty directory or a file a copy was attached at. Never recursive: a copy that is still attached
/// (its unmount failed) shows the source's files, which must not be touched; the kernel refuses to remove a
/// mount point, so what is still mounted stays, with a warning.
fn unlink_mountpoint(path: &Path) {
    let removed = if path.is_dir() {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = removed
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

/// Detaches whatever a killed server left attached under `bundle` (its copies and an overlay's layers) and
/// removes the mount points, never recursively: containerd removes the bundle recursively after the `delete`
/// action, and through an attached copy that would remove the files of its source.
pub fn detach_left(bundle: &Path) {
    for dir in [bundle.join(STAGING_DIR), bundle.join(LAYERS_DIR)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(p) = path.to_str()
                && let Err(e) = containerd_shim::mount::umount_recursive(Some(p), libc::MNT_DETACH)
            {
                tracing::warn!("unmounting {}: {e}", path.display());
            }
            unlink_mountpoint(&path);
        }
        unlink_mountpoint(&dir);
    }
}

/// The idmapped copies of an overlay's lower layers, attached at `<bundle>/idmapped-layers/<i>` (the compactor of
/// long overlay options shortens such paths when there are many layers).
struct Layers {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Layers {
    fn attach(rootfs: &Path, lowerdir: &str, userns: &OwnedFd) -> Result<Layers> {
        let root = rootfs.with_file_name(LAYERS_DIR);
        std::fs::create_dir_all(&root)
            .map_err(ShimError::io(format!("creating {}", root.display())))?;
        let mut layers = Layers {
            root,
            dirs: Vec::new(),
        };
        for (i, dir) in lowerdir.split(':').enumerate() {
            let tree = idmapped_tree(Path::new(dir), Some(userns.as_fd()), false, false)?;
            let at = layers.root.join(i.to_string());
            std::fs::create_dir(&at)
                .map_err(ShimError::io(format!("creating {}", at.display())))?;
            layers.dirs.push(at.clone());
            attach(&tree, &at)?;
        }
        Ok(layers)
    }

    fn release(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        for dir in self.dirs.drain(..) {
            // A directory the copy was never attached at is not mounted: only the removal matters there.
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
            unlink_mountpoint(&dir);
        }
        unlink_mountpoint(&self.root);
    }
}

impl Drop for Layers {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The spec's bind mounts the shim makes copies of: its index in `spec.mounts`, the mapping its copy shows files
/// through (`None`: as they are) and whether the copy takes the mounts below the source too.
///
/// - A bind mount with `uidMappings`/`gidMappings`, or with the `idmap`/`ridmap` option (the container's own
///   mappings then), is idmapped.
/// - In a container with a user namespace, every other bind mount is copied as it is: libcontainer resolves a
///   bind's source from the container's init, which already runs as the namespace's root, an unprivileged host
///   id that cannot reach a source below containerd's 0700 root (`/var/lib/containerd/.../hosts`). runc opens
///   those sources from the host side first; the copy under the bundle (0711 down to it, as containerd makes it
///   for user-namespaced containers) is reachable instead.
fn copied_mounts(spec: &Spec) -> Result<Vec<(usize, Option<IdMap>, bool)>> {
    let linux = spec.linux().as_ref();
    let own = (
        linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default(),
        linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default(),
    );
    let userns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let mut found = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let options = m.options().clone().unwrap_or_default();
        let has = |name: &str| options.iter().any(|o| o == name);
        let (uids, gids) = (m.uid_mappings().clone(), m.gid_mappings().clone());
        let asked = uids.is_some() || gids.is_some() || has("idmap") || has("ridmap");
        let bind = m.typ().as_deref() == Some("bind") || has("bind") || has("rbind");
        let what = format!(
            "mount {}",
            m.destination().display().to_string().escape_debug()
        );
        if asked && !bind {
            return Err(ShimError::InvalidArgument(format!(
                "{what}: only a bind mount can be idmapped"
            )));
        }
        if !bind || (!asked && !userns) {
            continue;
        }
        let map = match (uids, gids) {
            _ if !asked => None,
            (Some(u), Some(g)) => Some(IdMap::from_spec(&what, &u, &g)?),
            (None, None) => Some(IdMap::from_spec(&what, &own.0, &own.1)?),
            _ => {
                return Err(ShimError::InvalidArgument(format!(
                    "{what}: uidMappings and gidMappings go together"
                )));
            }
        };
        found.push((i, map, has("rbind") || has("ridmap")));
    }
    Ok(found)
}

/// The copies of a container's bind mount sources ([`copied_mounts`]), attached under `bundle/idmapped/`.
#[derive(Debug, Default)]
pub struct Staged {
    dir: Option<PathBuf>,
    /// `spec.mounts` index -> the copy its source becomes.
    pub sources: Vec<(usize, PathBuf)>,
}

impl Staged {
    /// Makes the copies for `spec`'s bind mounts that need one (none: nothing is made). A failure leaves nothing
    /// behind.
    pub fn make(bundle: &Path, spec: &Spec) -> Result<Staged> {
        let wanted = copied_mounts(spec)?;
        if wanted.is_empty() {
            return Ok(Staged::default());
        }
        let dir = bundle.join(STAGING_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(ShimError::io(format!("creating {}", dir.display())))?;
        let mut staged = Staged {
            dir: Some(dir.clone()),
            sources: Vec::new(),
        };
        let mounts = spec.mounts().as_deref().unwrap_or_default();
        let mut namespaces: Vec<(IdMap, OwnedFd)> = Vec::new();
        for (i, map, recursive) in wanted {
            let source = mounts[i].source().clone().unwrap_or_default();
            let tree = match map {
                // The pod's mounts share one mapping: one namespace for them all.
                Some(map) => {
                    let at = match namespaces.iter().position(|(m, _)| *m == map) {
                        Some(at) => at,
                        None => {
                            let fd = user_namespace(&map)?;
                            namespaces.push((map, fd));
                            namespaces.len() - 1
                        }
                    };
                    idmapped_tree(&source, Some(namespaces[at].1.as_fd()), recursive, false)
                        .map_err(|e| refused(&mounts[i], &source, e))?
                }
                None => idmapped_tree(&source, None, recursive, false)?,
            };
            let target = dir.join(i.to_string());
            let made = if source.is_dir() {
                std::fs::create_dir(&target)
            } else {
                std::fs::File::create(&target).map(drop)
            };
            made.map_err(ShimError::io(format!("creating {}", target.display())))?;
            attach(&tree, &target)?;
            staged.sources.push((i, target));
        }
        Ok(staged)
    }

    /// Detaches and removes the copies: the container's mount namespace holds its own mounts of them.
    pub fn release(&mut self) {
        for (_, target) in self.sources.drain(..) {
            if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!("unmounting {}: {e}", target.display());
            }
            unlink_mountpoint(&target);
        }
        if let Some(dir) = self.dir.take() {
            unlink_mountpoint(&dir);
        }
    }

    /// Points each copied mount of `config.json` (as JSON) at its copy, without the mappings libcontainer would
    /// otherwise ignore: `false` when there is none.
    pub fn edit(&self, spec: &mut serde_json::Value) -> bool {
        let Some(mounts) = spec.get_mut("mounts").and_then(|m| m.as_array_mut()) else {
            return false;
        };
        let mut changed = false;
        for (i, source) in &self.sources {
            let Some(m) = mounts.get_mut(*i).and_then(|m| m.as_object_mut()) else {
                continue;
            };
            m.insert("source".into(), serde_json::json!(source));
            m.remove("uidMappings");
            m.remove("gidMappings");
            if let Some(o) = m.get_mut("options").and_then(|o| o.as_array_mut()) {
                o.retain(|v| v != "idmap" && v != "ridmap");
            }
            changed = true;
        }
        changed
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn spec(value: serde_json::Value) -> Spec {
        serde_json::from_value(value).expect("a spec")
    }

    fn bind(dest: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut m = serde_json::json!({
            "destination": dest, "type": "bind", "source": format!("/src{dest}"), "options": ["rbind", "rw"]
        });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        m
    }

    const MAP: [u32; 3] = [0, 1 << 20, 65536];

    fn mapping() -> serde_json::Value {
        serde_json::json!([{"containerID": MAP[0], "hostID": MAP[1], "size": MAP[2]}])
    }

    #[test]
    fn rootfs_options_parse_and_bad_ones_name_the_option() {
        let map =
            IdMap::from_options("0:1048576:65536", "0:1048576:1,1:1048577:65535").expect("valid");
        assert_eq!(
            map.uids,
            [Range {
                container: 0,
                host: 1 << 20,
                size: 65536
            }]
        );
        assert_eq!(map.gids.len(), 2);
        assert_eq!(
            IdMap::proc_text(&map.gids),
            "0 1048576 1\n1 1048577 65535\n"
        );
        for (uid, gid, want) in [
            ("0:1:0", "0:1:1", "empty or runs past"),
            ("0:4294967295:2", "0:1:1", "runs past 2^32"),
            ("0:x:1", "0:1:1", "uidmap=0:x:1: not a number"),
            ("0:1", "0:1:1", "not container:host:size"),
            ("0:1:1", "", "gidmap=: not container:host:size"),
        ] {
            let err = IdMap::from_options(uid, gid).expect_err(uid).chain();
            assert!(err.contains(want), "{uid} {gid}: {err}");
        }
    }

    #[test]
    fn bind_mounts_with_mappings_are_idmapped_and_in_a_user_namespace_the_rest_are_copied() {
        let mounts = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            bind("/etc/hosts", serde_json::json!({"uidMappings": mapping(), "gidMappings": mapping()})),
            bind("/data", serde_json::json!({})),
            bind("/opt", serde_json::json!({"options": ["bind", "idmap"]})),
        ]);
        let with_userns = spec(serde_json::json!({
            "ociVersion": "1.1.0", "root": {"path": "rootfs"}, "mounts": mounts,
            "linux": {"namespaces": [{"type": "user"}, {"type": "mount"}],
                      "uidMappings": mapping(), "gidMappings": mapping()}
        }));
        let found = copied_mounts(&with_userns).expect("valid");
        let want_map = IdMap::from_options("0:1048576:65536", "0:1048576:65536").expect("valid");
        assert_eq!(
            found,
            [
                (1, Some(want_map.clone()), true),
                (2, None, true),
                (3, Some(want_map), false)
            ],
            "hosts idmapped with its own mappings, /data copied as is, /opt idmapped with the container's"
        );
        let without = spec(serde_json::json!({
            "ociVersion": "1.1.0", "root": {"path": "rootfs"}, "mounts": [bind("/data", serde_json::json!({}))],
            "linux": {"namespaces": [{"type": "mount"}]}
        }));
        assert!(
            copied_mounts(&without).expect("valid").is_empty(),
            "no user namespace, no copy"
        );
    }

    #[test]
    fn a_refused_idmap_names_the_mount_its_filesystem_and_the_kernel() {
        let text = refusal(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x",
            "tmpfs",
            Some("6.3"),
            "6.1.0-28-amd64",
        );
        assert_eq!(
            text,
            "mount /var/run/secrets/kubernetes.io/serviceaccount: idmapping its source \
             /var/lib/kubelet/pods/p/volumes/kubernetes.io~projected/kube-api-access-x on tmpfs, which Linux \
             idmaps from 6.3 (this is Linux 6.1.0-28-amd64)"
        );
        let hostile = refusal(
            "/a\n\u{1b}[2J",
            "/s",
            "filesystem type 0x1234",
            None,
            "6.18",
        );
        assert!(!hostile.contains(['\n', '\u{1b}']), "{hostile:?}");
        assert!(
            hostile.ends_with("on filesystem type 0x1234 (this is Linux 6.18)"),
            "{hostile}"
        );
        // The filesystem of a real path: /proc is none of the named ones, a tmpfs (/dev/shm) is.
        assert!(
            filesystem(Path::new("/proc"))
                .0
                .starts_with("filesystem type 0x")
        );
        if std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.contains(" /dev/shm tmpfs ")) {
            assert_eq!(
                filesystem(Path::new("/dev/shm")),
                ("tmpfs".into(), Some("6.3"))
            );
        }
    }

    #[test]
    fn mappings_on_a_non_bind_mount_or_only_one_side_are_refused() {
        for (m, want) in [
            (
                serde_json::json!({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "uidMappings": mapping(), "gidMappings": mapping()}),
                "mount /t: only a bind mount can be idmapped",
            ),
            (
                bind("/x", serde_json::json!({"uidMappings": mapping()})),
                "mount /x: uidMappings and gidMappings go together",
            ),
        ] {
            let s = spec(
                serde_json::json!({"ociVersion": "1.1.0", "root": {"path": "rootfs"}, "mounts": [m]}),
            );
            let err = copied_mounts(&s).expect_err(want).chain();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn the_config_edit_points_a_mount_at_its_copy_and_drops_what_libcontainer_ignores() {
        let mut json = serde_json::json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            bind("/etc/hosts", serde_json::json!({"uidMappings": mapping(), "gidMappings": mapping(),
                                                  "options": ["rbind", "ridmap", "rw"]})),
        ], "x-kept": 1});
        let staged = Staged {
            dir: None,
            sources: vec![(1, PathBuf::from("/b/idmapped/1"))],
        };
        assert!(staged.edit(&mut json));
        assert_eq!(
            json["mounts"][1],
            serde_json::json!({"destination": "/etc/hosts", "type": "bind", "source": "/b/idmapped/1",
                               "options": ["rbind", "rw"]})
        );
        assert_eq!(json["mounts"][0]["source"], "proc");
        assert_eq!(json["x-kept"], 1);
        assert!(
            !Staged::default().edit(&mut json),
            "nothing staged, nothing changed"
        );
    }

    /// Root only: copies a killed server left attached in a bundle are detached before containerd's recursive
    /// removal of the bundle, which then leaves the sources' files alone.
    #[test]
    fn copies_left_attached_are_detached_and_a_recursive_removal_spares_their_sources() {
        if !testkit::require_root("copies_left_attached_are_detached", "mounts") {
            return;
        }
        let top = tempfile::tempdir().expect("tempdir");
        let (bundle, source) = (top.path().join("bundle"), top.path().join("volume"));
        std::fs::create_dir_all(&source).expect("mkdir");
        std::fs::write(source.join("data"), b"keep").expect("write");
        let spec = spec(serde_json::json!({
            "ociVersion": "1.1.0", "root": {"path": "rootfs"},
            "mounts": [{"destination": "/v", "type": "bind", "source": source, "options": ["rbind"],
                        "uidMappings": mapping(), "gidMappings": mapping()}]
        }));
        let staged = Staged::make(&bundle, &spec).expect("staged");
        // As if the server died here: the copy stays attached.
        std::mem::forget(staged);
        assert!(bundle.join(STAGING_DIR).join("0/data").exists());
        detach_left(&bundle);
        assert!(
            !bundle.join(STAGING_DIR).exists(),
            "the copies' directory goes"
        );
        std::fs::remove_dir_all(&bundle).expect("containerd's removal of the bundle");
        assert_eq!(
            std::fs::read(source.join("data")).expect("the volume's file"),
            b"keep"
        );
    }

    /// Root only (a user namespace's maps and a mount): a file of the host's root, seen through an idmapped copy
    /// of its directory, is owned by the mapping's host id.
    #[test]
    fn an_idmapped_copy_shows_files_through_the_mapping_and_leaves_nothing_when_released() {
        if !testkit::require_root(
            "an_idmapped_copy_shows_files_through_the_mapping",
            "a user namespace's maps and a mount",
        ) {
            return;
        }
        let bundle = tempfile::tempdir().expect("tempdir");
        let source = bundle.path().join("src");
        std::fs::create_dir(&source).expect("mkdir");
        std::fs::write(source.join("file"), b"x").expect("write");
        let spec = spec(serde_json::json!({
            "ociVersion": "1.1.0", "root": {"path": "rootfs"},
            "mounts": [{"destination": "/d", "type": "bind", "source": source, "options": ["rbind"],
                        "uidMappings": mapping(), "gidMappings": mapping()}]
        }));
        let mut staged = Staged::make(bundle.path(), &spec).expect("staged");
        let copy = &staged.sources[0].1;
        let meta = std::fs::metadata(copy.join("file")).expect("the file through the copy");
        assert_eq!((meta.uid(), meta.gid()), (1 << 20, 1 << 20));
        assert_eq!(
            std::fs::metadata(source.join("file")).expect("file").uid(),
            0
        );
        staged.release();
        assert!(
            !bundle.path().join(STAGING_DIR).exists(),
            "the copies' directory goes"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mounts.contains(&*bundle.path().to_string_lossy()),
            "{mounts}"
        );
    }
}
