//! A container as the shim holds it: its bundle, its init process, its exec processes, and the
//! rootfs mounts the shim made for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::api::Mount;
use oci_spec::runtime::Spec;

use crate::error::{Result, ShimError};
use crate::process::Process;

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Whether the shim mounted `bundle/rootfs` from the request's mounts (and so unmounts it).
    pub rootfs_mounted: bool,
    pub oom_watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub oom: Mutex<Option<Arc<crate::oom::OomTracker>>>,
    /// Prediction, allocation and monitor (none in mode off).
    pub augment: Option<Arc<crate::predict::Augment>>,
}

impl Container {
    pub fn new(id: &str, bundle: &Path, init: Process, rootfs_mounted: bool) -> Container {
        Container {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            init: Arc::new(init),
            execs: Mutex::new(HashMap::new()),
            rootfs_mounted,
            oom_watch: Mutex::new(None),
            oom: Mutex::new(None),
            augment: None,
        }
    }

    fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The init process for an empty exec id, else that exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound {
                kind: "exec",
                id: format!("{exec_id} in container {}", self.id),
            })
    }

    pub fn add_exec(&self, process: Process) -> Result<Arc<Process>> {
        let mut execs = self.execs();
        if execs.contains_key(&process.exec_id) {
            return Err(ShimError::AlreadyExists {
                kind: "exec",
                id: process.exec_id.clone(),
            });
        }
        let process = Arc::new(process);
        execs.insert(process.exec_id.clone(), process.clone());
        Ok(process)
    }

    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.execs().remove(exec_id)
    }

    pub fn exec_processes(&self) -> Vec<Arc<Process>> {
        self.execs().values().cloned().collect()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

/// Reads and checks the bundle's `config.json`, with an error that names the bundle.
pub fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !path.exists() {
        return Err(ShimError::InvalidArgument(format!(
            "bundle {}: config.json not found",
            bundle.display()
        )));
    }
    let spec = Spec::load(&path).map_err(|e| {
        ShimError::InvalidArgument(format!(
            "bundle {}: invalid config.json: {e}",
            bundle.display()
        ))
    })?;
    let args_missing = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .is_none_or(|a| a.is_empty());
    if args_missing {
        return Err(ShimError::InvalidArgument(format!(
            "bundle {}: config.json has no process args",
            bundle.display()
        )));
    }
    Ok(spec)
}

/// Mounts the request's rootfs mounts on `bundle/rootfs`, in order.
pub async fn mount_rootfs(mounts: &[Mount], rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(rootfs)
        .map_err(ShimError::io(format!("creating {}", rootfs.display())))?;
    for m in mounts {
        if let Err(e) = containerd_shim::util::mount_rootfs(m, rootfs).await {
            unmount_rootfs(rootfs);
            return Err(ShimError::shim(format!(
                "mounting {} ({}) on {}",
                m.source,
                m.type_,
                rootfs.display()
            ))(e));
        }
    }
    Ok(())
}

/// Unmounts everything at and below `rootfs`; what is not mounted is not an error.
pub fn unmount_rootfs(rootfs: &Path) {
    if let Some(path) = rootfs.to_str()
        && let Err(e) = containerd_shim::mount::umount_recursive(Some(path), libc::MNT_DETACH)
    {
        tracing::warn!("unmounting {}: {e}", rootfs.display());
    }
}
