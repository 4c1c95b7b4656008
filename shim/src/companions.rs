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
