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
    /// Without a monitor (mode off, a pod's sandbox): the directories made for the container in the companion
    /// hierarchies (`name=systemd`, a hybrid host's cgroup2 tree), outermost first, removed with the container (a
    /// monitor owns them otherwise).
    pub companions: Mutex<Vec<PathBuf>>,
    /// The container's cgroup, found from its init when it was created (in every hierarchy, the companions too;
    /// before its process ran), as containerd's runc shim keeps it: Update, Stats and Pids use it, not wherever the init is by then. A container's init may
    /// move itself into a cgroup below its own (systemd in a container moves into `init.scope`); its limits and
    /// figures stay the container's.
    pub cgroup: std::sync::OnceLock<runtime_hooks::ContainerCgroup>,
    /// The init has exited: no exec starts any more (its exit is announced after theirs, [`Container::execs_settled`]).
    pub init_exited: std::sync::atomic::AtomicBool,
    /// A Kill request signalled the init or all of the container's processes: a SIGKILL it dies of may be that
    /// one, not the OOM killer's ([`crate::oom::OomTracker::check_exit`]).
    pub signalled: std::sync::atomic::AtomicBool,
    /// `true` once what the create does after its reply is done ([`Container::set_up`]).
    set_up: tokio::sync::watch::Sender<bool>,
}

/// Whether what a container's init leaves must be killed when it exits (containerd's runc shim's
/// `ShouldKillAllOnExit`): unless the container has a pid namespace of its own, whose end the kernel takes care of.
pub fn kills_all_on_exit(spec: &Spec) -> bool {
    use oci_spec::runtime::LinuxNamespaceType;
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|ns| {
            ns.typ() == LinuxNamespaceType::Pid
                && ns.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())
        });
    !own
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
            companions: Mutex::new(Vec::new()),
            cgroup: std::sync::OnceLock::new(),
            init_exited: std::sync::atomic::AtomicBool::new(false),
            signalled: std::sync::atomic::AtomicBool::new(false),
            set_up: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Waits until the create's set-up after its reply is done: the container in its companion cgroups, its
    /// allocation applied and its monitor started, its cgroup kept and watched for OOM kills. Everything that acts on
    /// the container (Start, Kill, Delete, Update, ...) and its exit wait here first; it takes well under a
    /// millisecond, containerd's hop from Create's reply to Start about one.
    pub async fn set_up(&self) {
        let mut done = self.set_up.subscribe();
        // The sender lives as long as `self`: `wait_for` fails only if it were dropped.
        let _ = done.wait_for(|d| *d).await;
    }

    /// The create's set-up is done (or gave up): [`Container::set_up`] returns from now on.
    pub fn mark_set_up(&self) {
        self.set_up.send_replace(true);
    }

    /// Waits until no exec is starting or running, at most `limit` (an exec that left the container's cgroup and
    /// pid namespace outlives every kill): the container's exit is the last one announced, as runc's shim does it
    /// (containerd#9719: Docker follows an exec by its exit event, and one that came after the container's hung
    /// `docker exec`). Returns the execs still running at the limit.
    pub async fn execs_settled(&self, limit: std::time::Duration) -> Vec<String> {
        let execs = self.exec_processes();
        let settled = async {
            for exec in &execs {
                exec.start_settled().await;
                if exec.pid() > 0 {
                    exec.wait().await;
                }
            }
        };
        match tokio::time::timeout(limit, settled).await {
            Ok(()) => Vec::new(),
            Err(_) => execs
                .iter()
                .filter(|e| e.exit().is_none() && e.pid() > 0)
                .map(|e| e.exec_id.clone())
                .collect(),
        }
    }

    /// Removes the directories in [`Container::companions`] (after the container's processes are gone).
    pub fn remove_companions(&self) {
        let made: Vec<PathBuf> = self
            .companions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        crate::companions::remove_companions(&self.id, &made);
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
        // A user-namespaced container's layers, from a snapshotter that remaps ids.
        let mounted = if crate::idmap::rootfs_idmap(m).is_some() {
            crate::idmap::mount_rootfs(m, rootfs).await
        } else {
            containerd_shim::util::mount_rootfs(m, rootfs)
                .await
                .map_err(ShimError::shim(format!(
                    "mounting {} ({}) on {}",
                    m.source,
                    m.type_,
                    rootfs.display()
                )))
        };
        if let Err(e) = mounted {
            unmount_rootfs(rootfs);
            return Err(e);
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

/// Where the container's cgroup goes ([`place_cgroup`]).
#[derive(Debug, Default)]
pub struct Placed {
    /// The decision; `None` when the spec names no cgroup (libcontainer's default applies).
    pub placement: Option<runtime_hooks::placement::Placement>,
    /// The `linux.cgroupsPath` `bundle/config.json` must say instead of the given one (a systemd
    /// `slice:prefix:name` path on a host without the systemd driver). Written by [`write_config`], in the same
    /// edit as the broker's allocation, so config.json is rewritten at most once per Create.
    pub rewrite: Option<String>,
}

/// For a container that mounts cgroupfs with a cgroupfs cgroupsPath: the path its create's worker enters the named
/// v1 hierarchies at first (`runtime::create`), and the container's own directories there, to remove with it (the
/// parents the worker made stay, as runc's do). libcontainer shows a container the `name=systemd` cgroup its init is
/// in when the mounts are set up; joined after the create, that was the shim's. The early move costs ~2.5 ms of
/// start on a v1 host (docs/BENCHMARKS.md), so every other container joins after the create, as before.
pub fn named_first(
    spec: &Spec,
    roots: &runtime_hooks::HostRoots,
) -> (Option<String>, Vec<PathBuf>) {
    let path = mounts_cgroupfs(spec)
        .then(|| spec.linux().as_ref()?.cgroups_path().as_ref())
        .flatten()
        .map(|p| p.to_string_lossy().into_owned());
    let named = path.as_deref().map_or_else(Vec::new, |p| {
        runtime_hooks::companions::named_dirs_at(roots, p)
    });
    (path, named)
}

/// Whether the container mounts a cgroup filesystem (a `cgroup` or `cgroup2` mount: Docker's, nerdctl's and the CRI
/// plugin's default spec have one at `/sys/fs/cgroup`; `ctr`'s has none).
pub fn mounts_cgroupfs(spec: &Spec) -> bool {
    spec.mounts()
        .iter()
        .flatten()
        .any(|m| matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")))
}

/// Decides where the container's cgroup goes for the cgroupsPath in `spec` and the runtime options
/// (`runtime_hooks::placement`); when the path must change, `spec` is changed now and [`Placed::rewrite`] says
/// what config.json must say.
pub fn place_cgroup(
    id: &str,
    spec: &mut Spec,
    options: &crate::options::RuntimeOptions,
) -> Result<Placed> {
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
        return Ok(Placed::default());
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
    let mut rewrite = None;
    if placed.rewrites(&given) {
        tracing::info!(
            container = id,
            given = %given.escape_debug(),
            path = %placed.cgroups_path,
            "a systemd cgroupsPath on a host without the systemd driver: the cgroup goes where systemd would put it"
        );
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(&placed.cgroups_path)));
        }
        rewrite = Some(placed.cgroups_path.clone());
    }
    Ok(Placed {
        placement: Some(placed),
        rewrite,
    })
}

/// Writes what Create changes in `bundle/config.json` before libcontainer reads it — the placed cgroupsPath, the
/// broker's CPU and memory directives and the idmapped mounts' copies — in one edit (none when there is nothing to
/// change).
pub fn write_config(
    bundle: &Path,
    cgroups_path: Option<&str>,
    directives: &[predictive_api::types::Directive],
    idmapped: &crate::idmap::Staged,
) -> Result<()> {
    if cgroups_path.is_none() && directives.is_empty() && idmapped.sources.is_empty() {
        return Ok(());
    }
    edit_config(bundle, |v| {
        let mut changed = idmapped.edit(v);
        if let Some(path) = cgroups_path {
            let linux = v
                .as_object_mut()
                .map(|o| o.entry("linux").or_insert_with(|| serde_json::json!({})));
            if let Some(linux) = linux.and_then(|l| l.as_object_mut()) {
                linux.insert("cgroupsPath".into(), serde_json::json!(path));
                changed = true;
            }
        }
        crate::spec_edit::edit_spec(v, directives) || changed
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use predictive_api::types::{Action, Directive};
    use std::os::unix::fs::MetadataExt;

    fn spec_with_namespaces(namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": namespaces}
        }))
        .expect("a spec")
    }

    #[test]
    fn only_a_pid_namespace_of_its_own_spares_the_kill_at_exit() {
        let own = spec_with_namespaces(serde_json::json!([{"type": "pid"}, {"type": "mount"}]));
        assert!(!kills_all_on_exit(&own));
        let shared =
            spec_with_namespaces(serde_json::json!([{"type": "pid", "path": "/proc/42/ns/pid"}]));
        assert!(kills_all_on_exit(&shared));
        let host = spec_with_namespaces(serde_json::json!([{"type": "mount"}]));
        assert!(kills_all_on_exit(&host));
        let no_linux: Spec =
            serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2"})).expect("a spec");
        assert!(kills_all_on_exit(&no_linux));
    }

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","x-unknown":{"kept":true},"linux":{"cgroupsPath":"kubepods-burstable-pod1.slice:cri-containerd:c1"}}"#,
        )
        .expect("config");
        dir
    }

    fn inode(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("config.json"))
            .expect("config")
            .ino()
    }

    #[test]
    fn a_placed_path_and_the_allocation_are_one_edit_of_config_json() {
        let b = bundle();
        let before = inode(b.path());
        let cpu = Directive {
            container_id: "c1".into(),
            action: Action::SetCpu { cores: Some(0.5) },
            reason: "test".into(),
            applied: true,
            old_value: None,
        };
        let path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-c1.scope";
        write_config(
            b.path(),
            Some(path),
            std::slice::from_ref(&cpu),
            &Default::default(),
        )
        .expect("written");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.path().join("config.json")).expect("read"))
                .expect("json");
        assert_eq!(v["linux"]["cgroupsPath"], path);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["x-unknown"]["kept"], true);
        // One replacement: the file was renamed into place once, and no temporary is left.
        assert_ne!(inode(b.path()), before);
        assert!(!b.path().join(".config.json.predictive").exists());
        // Nothing to change: the file is not touched.
        let after = inode(b.path());
        write_config(b.path(), None, &[], &Default::default()).expect("nothing");
        assert_eq!(inode(b.path()), after);
    }

    #[test]
    fn placing_a_slice_path_without_systemd_changes_the_spec_and_asks_for_the_rewrite() {
        if runtime_hooks::placement::SystemdHost::current().booted
            && runtime_hooks::placement::SystemdHost::current().unified
        {
            // A systemd v2 host keeps the slice form (libcontainer's systemd manager): nothing to rewrite.
            eprintln!("SKIPPED: a systemd v2 host keeps slice paths as given");
            return;
        }
        let b = bundle();
        let mut spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"cgroupsPath": "kubepods-burstable-pod1.slice:cri-containerd:c1"}
        }))
        .expect("spec");
        let placed = place_cgroup("c1", &mut spec, &crate::options::RuntimeOptions::default())
            .expect("placed");
        let want = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-c1.scope";
        assert_eq!(placed.rewrite.as_deref(), Some(want));
        assert_eq!(
            spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
            Some(PathBuf::from(want))
        );
        // Deciding writes nothing: config.json still says what containerd gave.
        let text = std::fs::read_to_string(b.path().join("config.json")).expect("read");
        assert!(text.contains("slice:cri-containerd:c1"), "{text}");
    }
}
