//! The create's cgroup warm-up (see [`Warmup`]).

use std::path::PathBuf;
use std::sync::Arc;

use runtime_hooks::HostRoots;

use crate::blocking::blocking;
use crate::container::Container;
use crate::predict::Augment;
use crate::seams::Runtime;
use crate::zygote::{self, Reply, Request};

/// Moving a process into a cgroup waits for an RCU grace period in the kernel (the writer side of the
/// cgroup threadgroup rwsem: 5-25 ms on the 2-core test VM, HZ=250), unless another move happened within about
/// one grace period. A create's first move is libcontainer's intermediate process joining the container's
/// cgroups, ~8 ms into the create (broker registration, rootfs mount, worker fork, libcontainer's set-up), and
/// the create waits the whole grace period there. So a create begins by having a zygote worker move itself into
/// the container's cgroup2 directory (the one [`crate::companions::join_companions`] puts the container in for its PSI
/// files on a hybrid host) and exit: the grace period runs while that work happens, and libcontainer's moves find it
/// passed. Nothing else changes: the directory is the container's own, made here instead of after the create.
/// Measured (docs/BENCHMARKS.md): `ctr run --rm ... /bin/true` median 110 ms without, 101 ms with.
pub struct Warmup {
    /// The directories made (outermost first), once the worker has been and gone.
    task: tokio::task::JoinHandle<Vec<PathBuf>>,
}

impl Warmup {
    pub fn start(
        roots: &HostRoots,
        runtime: &Arc<dyn Runtime>,
        id: &str,
        spec: &oci_spec::runtime::Spec,
    ) -> Option<Warmup> {
        let path = spec.linux().as_ref()?.cgroups_path().as_ref()?.to_str()?;
        let (root, dir) = runtime_hooks::companions::warmup_dir(roots, path)?;
        let runtime = runtime.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            // mkdir in a cgroup hierarchy is kernel work: off the runtime thread, as the rest.
            let d = dir.clone();
            let made = match blocking("making the warm-up cgroup", move || {
                runtime_hooks::companions::make_dirs(&root, &d)
            })
            .await
            {
                Some(Ok(made)) => made,
                Some(Err(e)) => {
                    tracing::debug!(container = %id, "no cgroup2 directory {}: {e}", dir.display());
                    return Vec::new();
                }
                None => return Vec::new(),
            };
            let request = Request::JoinCgroup { id, dir };
            match runtime.call(&request, zygote::Stdio::default()).await {
                Ok(Reply::Ok { .. }) => {}
                Ok(Reply::Err { message, .. }) => tracing::debug!("{message}"),
                Err(e) => tracing::debug!("{}", e.chain()),
            }
            made
        });
        Some(Warmup { task })
    }

    /// After the create: the container's monitor takes the directories (and removes them with the container),
    /// or, without one or after a failed create, they are removed now.
    pub async fn finish(self, monitor: Option<&Augment>, created: Option<&Container>) {
        let made = self.task.await.unwrap_or_default();
        match (monitor, created) {
            (Some(a), _) => a.adopt_companions(made),
            (None, Some(c)) => {
                c.companions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .splice(0..0, made);
            }
            (None, None) => {
                blocking("removing the warm-up cgroup", move || {
                    // The worker replies before it exits: until it has, its directory is busy.
                    if let Some(inner) = made.last() {
                        for _ in 0..100 {
                            match std::fs::remove_dir(inner) {
                                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                                    std::thread::sleep(std::time::Duration::from_millis(2))
                                }
                                _ => break,
                            }
                        }
                    }
                    runtime_hooks::companions::remove_dirs(&made);
                })
                .await;
            }
        }
    }
}
