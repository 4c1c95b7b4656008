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
    /// The systemd unit that owns the container's cgroup (systemd cgroup driver only).
    pub scope: Option<crate::systemd::Scope>,
    /// Without a monitor (mode off, a pod's sandbox): the cgroup2 directories made for the container's PSI
    /// files on a hybrid host, outermost first, removed with the container (a monitor owns them otherwise).
    pub unified: Mutex<Vec<PathBuf>>,
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
            scope: None,
            unified: Mutex::new(Vec::new()),
        }
    }

    /// Removes the cgroup2 directories in [`Container::unified`] (after the container's processes are gone).
    pub fn remove_unified(&self) {
        let made: Vec<PathBuf> = self
            .unified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        crate::predict::remove_unified(&self.id, &made);
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

/// Decides where the container's cgroup goes for the cgroupsPath in `spec` and the runtime options
/// (`runtime_hooks::placement`) and, when the path must change (a systemd `slice:prefix:name` path on a host
/// without systemd), rewrites `linux.cgroupsPath` in `bundle/config.json` and in `spec`. `None` when the spec
/// names no cgroup (libcontainer's default applies).
pub fn place_cgroup(
    id: &str,
    bundle: &Path,
    spec: &mut Spec,
    options: &crate::options::RuntimeOptions,
) -> Result<Option<runtime_hooks::placement::Placement>> {
    use runtime_hooks::placement::{self, PlacementError, SystemdHost};
    let Some(given) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
    else {
        if options.systemd_cgroup {
            tracing::warn!(
                container = id,
                "SystemdCgroup = true but the spec names no cgroupsPath"
            );
        }
        return Ok(None);
    };
    let placed =
        placement::place(&given, options.systemd_cgroup, SystemdHost::current()).map_err(|e| {
            match e {
                PlacementError::SystemdUnavailable { .. } => {
                    ShimError::FailedPrecondition(format!("container {id}: {e}"))
                }
                e => ShimError::InvalidArgument(format!("container {id}: {e}")),
            }
        })?;
    if placed.rewrites(&given) {
        tracing::info!(
            container = id,
            given = %given.escape_debug(),
            path = %placed.cgroups_path,
            "a systemd cgroupsPath on a host without the systemd driver: the cgroup goes where systemd would put it"
        );
        edit_config(bundle, |v| {
            let Some(linux) = v.get_mut("linux").and_then(|l| l.as_object_mut()) else {
                return false;
            };
            linux.insert("cgroupsPath".into(), serde_json::json!(placed.cgroups_path));
            true
        })?;
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(&placed.cgroups_path)));
        }
    }
    Ok(Some(placed))
}

/// Edits `bundle/config.json` as JSON (fields oci-spec does not model are kept) and replaces it atomically;
/// `edit` returns whether it changed anything.
pub fn edit_config(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value) -> bool) -> Result<()> {
    let path = bundle.join("config.json");
    let text =
        std::fs::read(&path).map_err(ShimError::io(format!("reading {}", path.display())))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        ShimError::InvalidArgument(format!(
            "bundle {}: invalid config.json: {e}",
            bundle.display()
        ))
    })?;
    if !spec.is_object() || !edit(&mut spec) {
        return Ok(());
    }
    let tmp = bundle.join(".config.json.predictive");
    let body = serde_json::to_vec(&spec)
        .map_err(|e| ShimError::InvalidArgument(format!("encoding config.json: {e}")))?;
    std::fs::write(&tmp, body).map_err(ShimError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(ShimError::io(format!("replacing {}", path.display())))
}
