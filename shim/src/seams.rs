//! The two seams the task service drives the outside world through, as runwasi's `Instance` and
//! `EventSender` traits: [`Runtime`] (libcontainer in the zygote's workers, and signals to a known pid) and
//! [`EventSink`] (containerd's event service). In the shim they are the [`Zygote`] and the
//! [`crate::publisher::Publisher`]; a unit test puts fakes behind them (`task/tests.rs`), so the service's state
//! machine, its error codes and its shutdown run without root, containerd or a container.
//!
//! Cgroup reads and writes are not behind a trait: they take a [`runtime_hooks::HostRoots`], which a test
//! points at an empty temp dir (or a fake cgroupfs), as runtime-hooks' own tests do.

use async_trait::async_trait;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Result, ShimError};
use crate::zygote::{Reply, Request, Stdio, Zygote};

/// What the task service asks of the container runtime.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Carries out `request` (create, start, exec, kill --all, pause, resume, delete, the create's cgroup
    /// warm-up) with `stdio` as the container's descriptors; the reply says how it went.
    async fn call(&self, request: &Request, stdio: Stdio) -> Result<Reply>;

    /// Sends `signal` (checked by the caller) to the process `pid`, one the runtime started.
    fn signal(&self, pid: i32, signal: i32) -> Result<()>;
}

#[async_trait]
impl Runtime for Zygote {
    async fn call(&self, request: &Request, stdio: Stdio) -> Result<Reply> {
        Zygote::call(self, request, stdio).await
    }

    fn signal(&self, pid: i32, signal: i32) -> Result<()> {
        // kill(2) takes 0 and negative pids for process groups, -1 for every process: never meant here (a pid that
        // cgroup.procs shows as 0 is one outside the shim's pid namespace).
        if pid <= 0 {
            return Err(ShimError::InvalidArgument(format!(
                "signal {signal} to pid {pid}: not a process"
            )));
        }
        // nix's `Signal` names only the standard signals; a real-time one (or 0) goes to the kernel as its number.
        // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
        let sent = unsafe { libc::kill(pid, signal) };
        nix::errno::Errno::result(sent)
            .map(drop)
            .map_err(ShimError::sys(format!(
                "sending signal {signal} to pid {pid}"
            )))
    }
}

/// Where the shim's task events go (`events.rs` queues them and calls this in order).
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Sends one event, encoded ([`crate::events::to_any`]), to containerd under `topic` in `namespace`.
    async fn publish(&self, topic: &str, namespace: &str, event: Any) -> Result<()>;
}
