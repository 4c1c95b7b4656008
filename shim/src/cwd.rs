//! A process's working directory, as runc treats it (drop-in parity):
//!
//! - `process.cwd` must be a non-empty absolute path, for the init and for an exec (runc refuses "Cwd property
//!   must not be empty" and "Cwd must be an absolute path"; libcontainer would take a relative one as is).
//! - The init's cwd is created in the rootfs when it is missing (runc's `MkdirAll(cwd, 0755)` after pivot_root;
//!   libcontainer fails with "failed to unix syscall"). It is made here, before libcontainer runs, inside the
//!   bundle's rootfs with every lookup confined to it (`openat2` with `RESOLVE_IN_ROOT`, so a symlink in the image
//!   cannot point it at the host), and owned by the container's root (its host ids under a user namespace). Limit:
//!   a cwd under one of the spec's own mounts (a tmpfs at `/work`, cwd `/work/x`) is made in the rootfs below that
//!   mount, not in it, so it still fails there, unlike under runc.
//! - An exec's cwd is not created (runc does not either); a missing one is refused before the exec with runc's
//!   words, rather than libcontainer's "failed to unix syscall".

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use oci_spec::runtime::{Process, Spec};

use crate::error::{Result, ShimError};

/// Checks `process.cwd` as runc does; `what` names the process in the error.
pub fn check(process: &Process, what: &str) -> Result<()> {
    let cwd = process.cwd();
    if cwd.as_os_str().is_empty() {
        return Err(ShimError::InvalidArgument(format!(
            "{what}: process.cwd must not be empty"
        )));
    }
    if !cwd.is_absolute() {
        return Err(ShimError::InvalidArgument(format!(
            "{what}: process.cwd {} must be an absolute path",
            cwd.display()
        )));
    }
    Ok(())
}

fn open_in(root: &OwnedFd, path: &Path) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = nix::fcntl::openat2(root.as_raw_fd(), rel, how)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    std::fs::File::open(root)
        .map(OwnedFd::from)
        .map_err(ShimError::io(format!("opening rootfs {}", root.display())))
}

/// The host id that container id 0 maps to in `mappings` (none: no user namespace).
fn host_root(mappings: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> Option<u32> {
    mappings?
        .iter()
        .find(|m| m.container_id() == 0 && m.size() > 0)
        .map(|m| m.host_id())
}

/// Makes the init's `process.cwd` inside the container's rootfs when it is missing (runc parity).
pub fn make_init_cwd(bundle: &Path, spec: &Spec) -> Result<()> {
    let Some(process) = spec.process().as_ref() else {
        return Ok(());
    };
    check(process, &format!("bundle {}", bundle.display()))?;
    let root_path = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| "rootfs".into());
    let root_path = if root_path.is_absolute() {
        root_path
    } else {
        bundle.join(root_path)
    };
    let root = open_root(&root_path)?;
    let linux = spec.linux().as_ref();
    let owner = (
        host_root(linux.and_then(|l| l.uid_mappings().as_ref())),
        host_root(linux.and_then(|l| l.gid_mappings().as_ref())),
    );
    let cwd = process.cwd();
    let mut at = std::path::PathBuf::from("/");
    for c in cwd.components() {
        let Component::Normal(name) = c else {
            // `/` and `..` need nothing made (RESOLVE_IN_ROOT keeps `..` inside the root).
            at.push(c);
            continue;
        };
        let parent = open_in(&root, &at).map_err(|e| ShimError::Sys {
            context: format!(
                "looking up {} in rootfs {}",
                at.display(),
                root_path.display()
            ),
            source: e,
        })?;
        at.push(name);
        match open_in(&root, &at) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(ShimError::Sys {
                    context: format!(
                        "process.cwd {}: looking up {} in rootfs {}",
                        cwd.display(),
                        at.display(),
                        root_path.display()
                    ),
                    source: e,
                });
            }
        }
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name,
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(ShimError::Sys {
                    context: format!(
                        "process.cwd {}: creating {} in rootfs {}",
                        cwd.display(),
                        at.display(),
                        root_path.display()
                    ),
                    source: e,
                });
            }
        }
        if owner != (None, None) {
            let _ = nix::unistd::fchownat(
                Some(parent.as_raw_fd()),
                name,
                owner.0.map(nix::unistd::Uid::from_raw),
                owner.1.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
    Ok(())
}

/// Refuses an exec whose `process.cwd` is not a directory in the container whose init is `pid`, in runc's words.
/// `proc` is the proc root (`/proc`, a temp dir in tests).
pub fn check_exec_cwd(proc: &Path, pid: i32, process: &Process, exec_id: &str) -> Result<()> {
    check(process, &format!("exec {exec_id}"))?;
    let root = open_root(&proc.join(pid.to_string()).join("root"))?;
    match open_in(&root, process.cwd()) {
        Ok(_) => Ok(()),
        Err(e) => Err(ShimError::InvalidArgument(format!(
            "exec {exec_id}: chdir to cwd ({:?}) set in the process spec failed: {}",
            process.cwd(),
            std::io::Error::from(e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(root: &Path, cwd: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": root},
            "process": {"cwd": cwd, "args": ["sh"], "user": {"uid": 0, "gid": 0}}
        }))
        .expect("spec")
    }

    #[test]
    fn a_missing_cwd_is_made_inside_the_rootfs_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("rootfs");
        std::fs::create_dir_all(root.join("data")).expect("mkdir");
        make_init_cwd(tmp.path(), &spec(&root, "/data/a/b")).expect("made");
        assert!(root.join("data/a/b").is_dir());
        // An existing one is fine.
        make_init_cwd(tmp.path(), &spec(&root, "/data/a/b")).expect("again");
        // An absolute symlink in the image (`/escape` -> `/tmp`) is followed inside the rootfs, never on the host.
        std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
        std::os::unix::fs::symlink("/tmp", root.join("escape")).expect("symlink");
        let name = format!("pe2e-cwd-{}", std::process::id());
        make_init_cwd(tmp.path(), &spec(&root, &format!("/escape/{name}"))).expect("made inside");
        assert!(root.join("tmp").join(&name).is_dir());
        assert!(!Path::new("/tmp").join(&name).exists(), "made on the host");
        // `..` cannot climb out either.
        make_init_cwd(tmp.path(), &spec(&root, "/../../up")).expect("clamped");
        assert!(root.join("up").is_dir() && !tmp.path().join("up").exists());
    }

    #[test]
    fn empty_and_relative_cwds_are_refused_naming_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = make_init_cwd(tmp.path(), &spec(tmp.path(), "tmp")).expect_err("relative");
        assert!(e.to_string().contains("must be an absolute path"), "{e}");
        let e = make_init_cwd(tmp.path(), &spec(tmp.path(), "")).expect_err("empty");
        assert!(e.to_string().contains("must not be empty"), "{e}");
    }

    #[test]
    fn an_exec_cwd_must_exist_in_the_container() {
        let p: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/nonexistent-cwd-of-a-test", "args": ["sh"], "user": {"uid": 0, "gid": 0}
        }))
        .expect("process");
        // Our own root stands in for the container's.
        let e = check_exec_cwd(Path::new("/proc"), std::process::id() as i32, &p, "e1")
            .expect_err("missing");
        assert!(
            e.to_string().contains("chdir to cwd") && e.to_string().contains("e1"),
            "{e}"
        );
        let ok: Process = serde_json::from_value(serde_json::json!({
            "cwd": "/tmp", "args": ["sh"], "user": {"uid": 0, "gid": 0}
        }))
        .expect("process");
        check_exec_cwd(Path::new("/proc"), std::process::id() as i32, &ok, "e2").expect("exists");
    }
}
