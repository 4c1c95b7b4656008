//! Blocking work off the shim's single runtime thread.

/// Runs blocking work (a move into a cgroup waits for the kernel's RCU grace period, 5-25 ms; a cgroup's rmdir
/// and an unmount wait on the kernel too) on the blocking pool: the runtime thread serves every container of the
/// shim, and a wait there stalls them all. `None` (logged) if it panicked.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!("{what}: {e}");
            None
        }
    }
}
