//! The companion cgroup hierarchies of a container (`name=systemd`, a hybrid host's cgroup2 tree): its init is
//! put there as runc's cgroupfs driver puts it, so kubelet and systemd account it by every hierarchy and its PSI
//! files are its own (`runtime_hooks::companions` does the work; this logs and keeps what was made).

use std::path::PathBuf;

use runtime_hooks::HostRoots;

/// Puts the container's init (before it runs) where runc's cgroupfs driver would also put it: the `name=systemd`
/// hierarchy and a hybrid host's cgroup2 tree, at its v1 path (`runtime_hooks::companions`). Returns the
/// directories made (outermost first), for [`remove_companions`]; a failure is logged, as runc ignores it.
pub fn join_companions(roots: &HostRoots, id: &str, pid: i32) -> Vec<PathBuf> {
    let joined = runtime_hooks::companions::join_companions(roots, pid);
    for e in &joined.errors {
        tracing::debug!(container = %id, "{}", predictive_api::error_chain(e));
    }
    joined.made
}

/// Removes the directories [`join_companions`] (or the create's warm-up) made for container `id`, innermost
/// first; a parent another container still uses stays, and the container's own one failing is logged.
pub fn remove_companions(id: &str, made: &[PathBuf]) {
    if let Some((dir, e)) = runtime_hooks::companions::remove_dirs(made) {
        tracing::warn!(container = %id, "removing {}: {e}", dir.display());
    }
}

/// The `delete` action after a server that died with container `id` standing: removes the container's directories
/// in the companion hierarchies at the cgroupsPath its bundle says ([`runtime_hooks::companions::dirs_at`]), which
/// only the dead server knew it made. Parents stay (other containers may use them, as after a normal Delete's
/// [`remove_companions`] of a parent it did not make); a directory that will not go is reported on stderr.
pub fn remove_left(id: &str, cgroups_path: &str) {
    for dir in runtime_hooks::companions::dirs_at(&HostRoots::default(), cgroups_path) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "{}: delete {}: removing {}: {e}",
                crate::RUNTIME_NAME,
                id.escape_debug(),
                dir.display()
            ),
        }
    }
}
