//! The create's cgroup warm-up (see [`Warmup`]), and its early start from the `start` action ([`early`]).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
///
/// Where the shim may not make that directory (a pure v2 host, where libcontainer or systemd makes the container's
/// cgroup; a systemd path) the worker writes itself into the cgroup2 directory it is already in
/// ([`runtime_hooks::companions::own_dir`]): nothing moves, nothing is made, and the grace period starts all the same.
///
/// The `start` action starts the same grace period ~2 ms sooner ([`early`]) when it spawns a server.
pub struct Warmup {
    /// The directories made (outermost first), once the worker has been and gone.
    task: tokio::task::JoinHandle<Vec<PathBuf>>,
}

impl Warmup {
    /// `own` gives the server's own cgroup2 directory (`task::Shared::own_cgroup2`).
    pub fn start(
        roots: &HostRoots,
        own: impl FnOnce() -> Option<PathBuf>,
        runtime: &Arc<dyn Runtime>,
        id: &str,
        spec: &oci_spec::runtime::Spec,
    ) -> Option<Warmup> {
        let path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .and_then(|p| p.to_str());
        let Target { root, dir } = target(roots, path, own)?;
        let runtime = runtime.clone();
        let id = id.to_string();
        let early = take_early(&id, &dir);
        // The `start` action's mover has started the grace period already: a second mover would only fork.
        let moved = early.is_some();
        let task = tokio::spawn(async move {
            // mkdir in a cgroup hierarchy is kernel work: off the runtime thread, as the rest.
            let made = match root {
                None => Vec::new(),
                Some(root) => {
                    let d = dir.clone();
                    match blocking("making the warm-up cgroup", move || {
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
                    }
                }
            };
            // What the `start` action made is the container's as well (outermost first).
            let made: Vec<PathBuf> = early.into_iter().flatten().chain(made).collect();
            if moved {
                return made;
            }
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
                    remove_when_empty(&made)
                })
                .await;
            }
        }
    }
}

/// An exec's warm-up, at its Exec request: the Start that follows forks a worker whose libcontainer tenant
/// process joins the container's cgroups (a `cgroup.procs` write), and that write waits for the grace period
/// unless another move happened within about one grace period. So at the Exec a blocking thread of the server
/// writes the server into the cgroup2 directory it is already in (`0`: the writer's own process): nothing moves,
/// nothing is made, and the grace period runs while the Exec is answered and the Start comes. Fire and forget: a
/// failure only means the tenant waits as it did. `own` gives the server's own cgroup2 directory
/// (`task::Shared::own_cgroup2`), asked on the blocking thread.
pub fn for_exec(own: impl FnOnce() -> Option<PathBuf> + Send + 'static) {
    tokio::task::spawn_blocking(move || {
        let Some(dir) = own() else {
            return;
        };
        if let Err(e) = runtime_hooks::companions::enter(&dir, 0) {
            tracing::debug!("exec warm-up: {e}");
        }
    });
}

/// Where a warm-up mover writes itself: the container's cgroup2 directory on a hybrid host (`root` is the tree's
/// mount point, to make it under), else the mover's own cgroup2 directory (`root` is `None`: nothing to make).
struct Target {
    root: Option<PathBuf>,
    dir: PathBuf,
}

/// `own` gives the mover's own cgroup2 directory ([`runtime_hooks::companions::own_dir`]), asked only when the
/// container's is not ours to make.
fn target(
    roots: &HostRoots,
    cgroups_path: Option<&str>,
    own: impl FnOnce() -> Option<PathBuf>,
) -> Option<Target> {
    match cgroups_path.and_then(|p| runtime_hooks::companions::warmup_dir(roots, p)) {
        Some((root, dir)) => Some(Target {
            root: Some(root),
            dir,
        }),
        None => own().map(|dir| Target { root: None, dir }),
    }
}

/// Removes warm-up directories (outermost first) once the mover that was in the innermost has exited: it
/// replies, or the `start` action returns, before it exits, and until it has, its directory is busy.
fn remove_when_empty(made: &[PathBuf]) {
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
    runtime_hooks::companions::remove_dirs(made);
}

/// Carries what the `start` action's early warm-up made to the server it spawns: JSON `[id, dir, made]`.
pub const EARLY_ENV: &str = "PREDICTIVE_EARLY_WARMUP";

/// The early warm-up's directories, in the server, until its container's create adopts them.
struct Early {
    id: String,
    dir: PathBuf,
    made: Vec<PathBuf>,
}

static EARLY: Mutex<Option<Early>> = Mutex::new(None);

/// The `start` action's half, when it is about to spawn a server for container `id`: makes the directory
/// [`Warmup`] would (a hybrid host and a cgroupfs path; elsewhere the action's own cgroup2 directory, made by
/// nobody) and forks a mover into it that exits at once, so
/// the grace period runs from here (~2 ms before the server's create can start it: the server's exec and start-up,
/// containerd's connect and Create). The mover shares no descriptor with the action (containerd reads the
/// action's output to its end) and nobody waits for it. Returns the value of [`EARLY_ENV`] for the server,
/// which adopts the directories at the create (or removes them, [`drop_early`]).
pub fn early(roots: &HostRoots, id: &str, spec: &serde_json::Value) -> Option<EarlyStart> {
    let path = spec
        .get("linux")
        .and_then(|l| l.get("cgroupsPath"))
        .and_then(|p| p.as_str());
    let Target { root, dir } = target(roots, path, || runtime_hooks::companions::own_dir(roots))?;
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .ok()?;
    // The directories first, the mover after: the kernel holds `cgroup_mutex` while a `cgroup.procs` write waits
    // for the grace period, so a `mkdir` after the mover's write would wait for all of it (docs/BENCHMARKS.md, "The
    // mover as the `start` action's first step").
    let made = match root {
        Some(root) => runtime_hooks::companions::make_dirs(&root, &dir).ok()?,
        None => Vec::new(),
    };
    match serde_json::to_string(&(id, &dir, &made)) {
        Ok(env) if spawn_mover(&procs) => Some(EarlyStart { env, made }),
        _ => {
            remove_when_empty(&made);
            None
        }
    }
}

/// What the `start` action's early warm-up made.
pub struct EarlyStart {
    /// For the server: [`EARLY_ENV`].
    pub env: String,
    made: Vec<PathBuf>,
}

impl EarlyStart {
    /// When no server will adopt the directories: removes them once the mover has gone.
    pub fn undo(&self) {
        remove_when_empty(&self.made);
    }
}

/// Forks a process that moves itself into the cgroup whose `cgroup.procs` is `procs` and exits. The action is
/// single-threaded here; the child makes only async-signal-safe calls.
fn spawn_mover(procs: &CString) -> bool {
    // SAFETY: fork in a single-threaded process; the child below calls only close_range, open, write and _exit.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: async-signal-safe calls on a C string made before the fork; never returns.
            unsafe {
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    // "0": the writing process.
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                }
                libc::_exit(0)
            }
        }
        pid => pid > 0,
    }
}

/// In the server: takes what the `start` action's early warm-up made, from [`EARLY_ENV`] (a value that does not
/// parse is ignored: the directories are then left as libcontainer and the create find them).
pub fn keep_early(value: &str) {
    if let Ok((id, dir, made)) = serde_json::from_str::<(String, PathBuf, Vec<PathBuf>)>(value) {
        *EARLY.lock().unwrap_or_else(|e| e.into_inner()) = Some(Early { id, dir, made });
    }
}

/// The early warm-up's directories if they are for this container's warm-up directory; if the create placed the
/// container elsewhere, they are removed.
fn take_early(id: &str, dir: &Path) -> Option<Vec<PathBuf>> {
    let mut early = EARLY.lock().unwrap_or_else(|e| e.into_inner());
    match early.take() {
        Some(e) if e.id == id && e.dir == dir => Some(e.made),
        Some(e) if e.id == id => {
            tokio::task::spawn_blocking(move || remove_when_empty(&e.made));
            None
        }
        other => {
            *early = other;
            None
        }
    }
}

/// As the server exits: removes an early warm-up's directories no create adopted.
pub fn drop_early() {
    if let Some(e) = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take() {
        remove_when_empty(&e.made);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake hybrid host: a v1 memory hierarchy and the cgroup2 tree at `unified`, as Debian 12 mounts them.
    fn hybrid() -> (tempfile::TempDir, HostRoots) {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = HostRoots {
            cgroup: dir.path().join("cgroup"),
            proc: dir.path().join("proc"),
            mountinfo: dir.path().join("mountinfo"),
        };
        std::fs::create_dir_all(roots.cgroup.join("memory")).expect("memory");
        std::fs::create_dir_all(roots.cgroup.join("unified")).expect("unified");
        std::fs::write(roots.cgroup.join("memory/cgroup.procs"), "").expect("procs");
        std::fs::write(roots.cgroup.join("unified/cgroup.controllers"), "").expect("controllers");
        std::fs::write(
            &roots.mountinfo,
            "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
        .expect("mountinfo");
        (dir, roots)
    }

    fn spec(path: &str) -> serde_json::Value {
        serde_json::json!({ "linux": { "cgroupsPath": path } })
    }

    #[test]
    fn the_start_actions_mover_moves_itself_into_the_containers_warmup_directory() {
        let (_dir, roots) = hybrid();
        // Already there (a fake file stands for the kernel's): nothing is made, the mover still goes in.
        let leaf = roots.cgroup.join("unified/pods/c2");
        std::fs::create_dir_all(&leaf).expect("leaf");
        std::fs::write(leaf.join("cgroup.procs"), "").expect("procs");
        let start =
            early(&roots, "c2", &spec("/pods/c2")).expect("a hybrid host and a cgroupfs path");
        assert!(start.made.is_empty());
        let (id, dir, made): (String, PathBuf, Vec<PathBuf>) =
            serde_json::from_str(&start.env).expect("the server's value parses");
        assert_eq!(
            (id.as_str(), dir.as_path(), made.len()),
            ("c2", leaf.as_path(), 0)
        );
        wait_moved(&leaf);
    }

    /// Waits for the fake `cgroup.procs` in `dir` to hold what a mover writes ("0": its own pid, as the kernel
    /// reads it).
    fn wait_moved(dir: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default() != "0" {
            assert!(
                std::time::Instant::now() < deadline,
                "the mover never wrote"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn where_the_containers_directory_is_not_ours_to_make_the_mover_writes_itself_where_it_is() {
        // A pure v2 host (a systemd node: containerd in its service's cgroup) and a hybrid host with a systemd path.
        let dir = tempfile::tempdir().expect("tempdir");
        let v2 = HostRoots {
            cgroup: dir.path().join("cgroup"),
            proc: dir.path().join("proc"),
            mountinfo: dir.path().join("mountinfo"),
        };
        std::fs::write(
            &v2.mountinfo,
            "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        )
        .expect("mountinfo");
        let (_hdir, hybrid) = hybrid();
        for (roots, root, path) in [
            (&v2, "cgroup", "/default/c1"),
            (&v2, "cgroup", "kubepods-pod1.slice:cri-containerd:c1"),
            (
                &hybrid,
                "cgroup/unified",
                "kubepods-pod1.slice:cri-containerd:c1",
            ),
        ] {
            let own = roots
                .cgroup
                .parent()
                .expect("tmp")
                .join(root)
                .join("system.slice/containerd.service");
            std::fs::create_dir_all(&own).expect("own cgroup");
            std::fs::write(own.join("cgroup.procs"), "").expect("procs");
            std::fs::create_dir_all(roots.proc.join("self")).expect("proc");
            std::fs::write(
                roots.proc.join("self/cgroup"),
                "0::/system.slice/containerd.service\n",
            )
            .expect("proc self cgroup");
            let start = early(roots, "c1", &spec(path)).expect(path);
            assert!(start.made.is_empty(), "{path}: nothing is made");
            let (_, at, _): (String, PathBuf, Vec<PathBuf>) =
                serde_json::from_str(&start.env).expect("the server's value parses");
            assert_eq!(at, own, "{path}");
            wait_moved(&own);
            // The server's create finds the same directory: no second mover, nothing to remove.
            keep_early(&start.env);
            assert_eq!(take_early("c1", &own), Some(Vec::new()));
        }
        assert!(
            !v2.cgroup.join("default").exists(),
            "the container's own directory is not made on v2"
        );
    }

    #[test]
    fn no_early_warmup_where_neither_the_containers_nor_its_own_cgroup2_directory_is_known() {
        let (_dir, roots) = hybrid();
        for s in [
            spec("kubepods-burstable-pod1.slice:cri-containerd:c1"),
            spec("default/c1"),
            spec("/"),
            serde_json::json!({ "linux": {} }),
            serde_json::json!({}),
        ] {
            assert!(early(&roots, "c1", &s).is_none(), "{s}");
        }
        assert!(!roots.cgroup.join("unified/default").exists());
    }

    #[test]
    fn the_server_adopts_what_the_start_action_made_once_and_removes_it_when_unused() {
        let (_dir, roots) = hybrid();
        let unified = roots.cgroup.join("unified");
        let start = early(&roots, "c1", &spec("/pods/c1")).expect("early warm-up");
        let dir = unified.join("pods/c1");
        assert_eq!(start.made, vec![unified.join("pods"), dir.clone()]);
        keep_early(&start.env);
        // Another container's create leaves it; this container's takes it, once.
        assert_eq!(take_early("c9", &unified.join("pods/c9")), None);
        assert_eq!(take_early("c1", &dir), Some(start.made.clone()));
        assert_eq!(take_early("c1", &dir), None);
        // Not adopted: the server's exit removes it (a fake directory has no procs file for the mover to write).
        keep_early(&start.env);
        drop_early();
        assert!(!unified.join("pods").exists());
        // A value that does not parse is ignored.
        keep_early("not json");
        assert!(EARLY.lock().unwrap_or_else(|e| e.into_inner()).is_none());
    }
}
