//! The ttrpc Task service containerd talks to, over the map of containers this shim holds.
//!
//! Everything that touches libcontainer goes to the runtime (the zygote, see `zygote.rs`), and events go to
//! an event sink, both through the traits in `seams.rs`; everything else — stdio copies, cgroup reads and
//! writes under [`Shared::roots`] — happens here. Unit tests (`task/tests.rs`) drive the service with fakes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::event::Event;
use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest,
    StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use runtime_hooks::placement::Driver;
use runtime_hooks::{CgroupDirs, ContainerCgroup, HostRoots};
use tokio::sync::Notify;

use crate::blocking::blocking;
use crate::container::{self, Container};
use crate::error::{Result, ShimError};
use crate::events::Events;
use crate::fidelity::Fidelity;
use crate::io::{self, ProcessIo, StdioPaths};
use crate::metrics;
use crate::oom;
use crate::options::RuntimeOptions;
use crate::predict::{self, Augment};
use crate::process::{ExitInfo, Process};
use crate::reaper::Reaper;
use crate::seams::{EventSink, Runtime};
use crate::systemd::Scope;
use crate::warmup::Warmup;
use crate::zygote::{self, Failure, Reply, Request};

/// How long a Delete waits for the run summary to reach the broker (it went out when the init exited).
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a summary sent after the Delete's reply may keep the shim: a step under way (the client's budget, at
/// most 1 s) and the summary's two calls at [`predict::UNWAITED_SUMMARY_BUDGET`] each.
const SUMMARY_AFTER_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(8);
/// How long the delete after the reply waits for the summary's last read of the cgroup: a step under way holds
/// the container's state for at most the client's budget (1 s).
const SUMMARY_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything the task service shares with its background tasks.
pub struct Shared {
    pub namespace: String,
    /// libcontainer's state root for this namespace.
    pub state_root: PathBuf,
    /// libcontainer (the zygote's workers) and signals.
    pub runtime: Arc<dyn Runtime>,
    pub reaper: Arc<Reaper>,
    /// Where `/proc` and the cgroup hierarchies are (the host's; a temp dir in unit tests).
    pub roots: HostRoots,
    /// Task events for containerd, sent in order in the background.
    pub events: Events,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Notified when the shim should exit (Shutdown with no containers left).
    pub exit: Arc<Notify>,
    /// Creates in flight and deletes finishing after their reply: a Shutdown must not end the shim under them.
    pending: AtomicUsize,
    /// Deletes finishing after their reply, by container id: done when the value turns true.
    deleting: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// containerd asked the shim to shut down: it exits as soon as it is idle.
    shut_down: AtomicBool,
    /// Drops the code pages a start or delete ran once the shim is quiet again.
    trimmer: crate::footprint::Trimmer,
    /// The server's own cgroup2 directory, looked up at its first use ([`Self::own_cgroup2`]).
    own_cgroup2: std::sync::OnceLock<Option<PathBuf>>,
}

impl Shared {
    /// After a Shutdown: lets the shim exit once it is idle.
    fn exit_if_shut_down(&self) {
        if self.shut_down.load(Ordering::SeqCst) && self.idle() {
            tracing::info!("shutdown: no containers left");
            self.exit.notify_one();
        }
    }

    /// The cgroup2 directory the server is in ([`runtime_hooks::companions::own_dir`]; `None` on a v1-only host),
    /// where the create's and the exec's warm-ups write it to start the kernel's grace period. It does not change
    /// once the server serves: read once (mountinfo and `/proc/self/cgroup`), not at every Create or Exec.
    pub fn own_cgroup2(&self) -> Option<PathBuf> {
        self.own_cgroup2
            .get_or_init(|| runtime_hooks::companions::own_dir(&self.roots))
            .clone()
    }

    /// True when the shim holds no containers and no create is under way.
    pub fn idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
            && self
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }
}

#[derive(Clone)]
pub struct TaskService {
    shared: Arc<Shared>,
}

impl TaskService {
    /// The service for containerd `namespace`: containers' state under `state_root`, processes started by
    /// `runtime` and reaped by `reaper`, events to `sink`, cgroups under `roots`; `exit` is notified when the
    /// shim should exit. Must be called on a tokio runtime (the event queue's task starts here).
    pub fn new(
        namespace: &str,
        state_root: PathBuf,
        runtime: Arc<dyn Runtime>,
        reaper: Arc<Reaper>,
        sink: impl EventSink,
        exit: Arc<Notify>,
        roots: HostRoots,
    ) -> TaskService {
        TaskService {
            shared: Arc::new(Shared {
                namespace: namespace.to_string(),
                state_root,
                runtime,
                reaper,
                roots,
                events: Events::start(sink, namespace.to_string()),
                containers: Mutex::new(HashMap::new()),
                exit,
                pending: AtomicUsize::new(0),
                deleting: Mutex::new(HashMap::new()),
                shut_down: AtomicBool::new(false),
                trimmer: Default::default(),
                own_cgroup2: Default::default(),
            }),
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.shared
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound {
                kind: "container",
                id: id.to_string(),
            })
    }

    /// The container, once the create's set-up after its reply is done ([`Container::set_up`]).
    async fn set_up_container(&self, id: &str) -> Result<Arc<Container>> {
        let container = self.container(id)?;
        container.set_up().await;
        Ok(container)
    }

    /// Sends `request` to the runtime (a zygote worker) and turns a failure into a `ShimError`.
    async fn call(&self, request: Request, stdio: zygote::Stdio) -> Result<Option<i32>> {
        let reply = self.shared.runtime.call(&request, stdio).await?;
        match reply {
            Reply::Ok { pid } => Ok(pid),
            Reply::Err { failure, message } => Err(match failure {
                Failure::Invalid => ShimError::InvalidArgument(format!(
                    "{} {}: {message}",
                    request.op(),
                    request.id()
                )),
                Failure::NotFound => ShimError::NotFound {
                    kind: "container",
                    id: request.id().to_string(),
                },
                Failure::State => ShimError::FailedPrecondition(format!(
                    "{} {}: {message}",
                    request.op(),
                    request.id()
                )),
                Failure::Other => ShimError::Runtime {
                    op: request.op(),
                    id: request.id().to_string(),
                    message,
                },
            }),
        }
    }

    fn publish<E: Event + Message + crate::events::TypeName>(&self, event: E) {
        self.shared.events.send(event)
    }

    /// Waits for `pid` to exit in the background, then records and announces the exit; for a container's init,
    /// after what [`InitExit::settle`] settles first.
    fn watch_exit(
        &self,
        container_id: &str,
        process: Arc<Process>,
        pid: i32,
        init: Option<InitExit>,
    ) {
        let rx = self.shared.reaper.subscribe(pid);
        let shared = self.shared.clone();
        let container_id = container_id.to_string();
        tokio::spawn(async move {
            let status = rx.await.map(|e| e.status).unwrap_or(255);
            let oom_killed = match &init {
                Some(init) => init.settle(&shared, &container_id, status).await,
                None => false,
            };
            // What the process wrote reaches the client before its exit does (see `io.rs`).
            let flush = process.io.lock().await.as_ref().map(|pio| pio.flusher());
            if let Some(f) = flush
                && !f.run(io::FLUSH_TIMEOUT).await
            {
                tracing::debug!(container = %container_id, pid, timeout = ?io::FLUSH_TIMEOUT,
                    "the output's reader did not take it in time: announcing the exit");
            }
            let info = process.set_exited(status);
            // A container's end is news for the node's log; an exec's (each exec probe's) is not.
            let id = if process.exec_id.is_empty() {
                tracing::info!(container = %container_id, pid, status, "process exited");
                container_id.clone()
            } else {
                tracing::debug!(container = %container_id, id = %process.exec_id, pid, status, "exec exited");
                process.exec_id.clone()
            };
            if let Some(a) = init.as_ref().and_then(|i| i.augment.as_ref()) {
                a.exited(info.status, oom_killed);
            }
            shared.events.send(TaskExit {
                container_id,
                id,
                pid: pid as u32,
                exit_status: info.status,
                exited_at: Some(info.at).into(),
                ..Default::default()
            });
        });
    }

    async fn do_create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        if req.id.is_empty() {
            return Err(ShimError::InvalidArgument("container id is empty".into()));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(format!(
                "restore {}: {NO_CHECKPOINT}",
                req.id
            )));
        }
        if self.containers().contains_key(&req.id) {
            return Err(ShimError::AlreadyExists {
                kind: "container",
                id: req.id.clone(),
            });
        }
        self.deleted(&req.id).await;
        let bundle = PathBuf::from(&req.bundle);
        let mut spec = container::read_spec(&bundle)?;
        let options = match req.options.as_ref() {
            Some(any) => RuntimeOptions::decode(&any.type_url, &any.value)?,
            None => RuntimeOptions::default(),
        };
        let placed = container::place_cgroup(&req.id, &mut spec, &options)?;
        let scope = placed
            .placement
            .as_ref()
            .filter(|p| p.driver == Driver::Systemd)
            .map(|p| {
                let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
                Scope::new(&p.cgroups_path, p.unit.as_deref(), &req.id, resources)
            });
        let shared = &self.shared;
        let warmup = Warmup::start(
            &shared.roots,
            || shared.own_cgroup2(),
            &shared.runtime,
            &req.id,
            &spec,
        );
        // Lets the warm-up's request reach the zygote now, not at the create's first wait.
        tokio::task::yield_now().await;
        let result = self
            .create_container(&req, bundle, spec, scope, placed.rewrite)
            .await;
        if let Some(w) = warmup {
            let made = result
                .is_ok()
                .then(|| self.containers().get(&req.id).cloned())
                .flatten();
            w.finish(
                result.as_ref().ok().and_then(|(_, a)| a.as_deref()),
                made.as_deref(),
            )
            .await;
        }
        result.map(|(response, _)| response)
    }

    /// Before libcontainer: registers with the broker (on the blocking pool) while the request's rootfs is
    /// mounted and the idmapped mounts' copies are made, then writes config.json as libcontainer must read it and
    /// makes the init's cwd. A failure (a refusal for bad annotations, say) unmounts the rootfs again and drops
    /// the copies, so nothing is left behind.
    async fn prepare_bundle(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: &oci_spec::runtime::Spec,
        cgroups_rewrite: Option<&str>,
    ) -> Result<(Option<Arc<Augment>>, crate::idmap::Staged)> {
        let prepare = {
            let (id, ns) = (req.id.clone(), self.shared.namespace.clone());
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || Augment::prepare(&id, &ns, &spec))
        };
        let rootfs = bundle.join("rootfs");
        let mounted = !req.rootfs.is_empty();
        if mounted && let Err(e) = container::mount_rootfs(&req.rootfs, &rootfs).await {
            let _ = prepare.await;
            return Err(e);
        }
        let result = async {
            let staged = crate::idmap::Staged::make(bundle, spec);
            let augment = prepare.await.map_err(|e| ShimError::Runtime {
                op: "create",
                id: req.id.clone(),
                message: format!("registering with the broker: {e}"),
            })??;
            let staged = staged?;
            // The placed cgroupsPath, the broker's allocation and the idmapped copies, one edit.
            let directives = augment
                .as_ref()
                .map(|a| a.spec_directives())
                .unwrap_or_default();
            container::write_config(bundle, cgroups_rewrite, &directives, &staged)?;
            // As runc: a missing cwd is made in the rootfs (a relative or empty one is refused).
            crate::cwd::make_init_cwd(bundle, spec)?;
            Ok((augment, staged))
        }
        .await;
        if result.is_err() && mounted {
            container::unmount_rootfs(&rootfs);
        }
        result
    }

    async fn create_container(
        &self,
        req: &CreateTaskRequest,
        bundle: PathBuf,
        spec: oci_spec::runtime::Spec,
        scope: Option<Scope>,
        cgroups_rewrite: Option<String>,
    ) -> Result<(CreateTaskResponse, Option<Arc<Augment>>)> {
        let fidelity = Fidelity::of(&spec)
            .map_err(|e| ShimError::InvalidArgument(format!("container {}: {e}", req.id)))?;
        let (augment, mut staged) = self
            .prepare_bundle(req, &bundle, &spec, cgroups_rewrite.as_deref())
            .await?;
        let rootfs = bundle.join("rootfs");
        let mounted = !req.rootfs.is_empty();
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if terminal != req.terminal {
            tracing::debug!(
                "request terminal={} but spec terminal={terminal}; the spec wins",
                req.terminal
            );
        }
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal,
        };

        let kill_all = container::kills_all_on_exit(&spec);
        let (cgroups_path, named) = container::named_first(&spec, &self.shared.roots);
        let placement = (scope.is_some(), cgroups_path, fidelity);
        let created = self.create_init(req, &bundle, paths, placement).await;
        // The container's mounts are made (or never will be): its copies of the idmapped sources are its own.
        staged.release();
        match created {
            Ok((process, pid)) => {
                let mut container = Container::new(&req.id, &bundle, process, mounted);
                container
                    .companions
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(named);
                container.augment = augment.clone();
                set_scope(&mut container, scope).await;
                let container = Arc::new(container);
                let init = InitExit {
                    container: container.clone(),
                    augment: augment.clone(),
                    kill_all,
                };
                self.watch_exit(&req.id, container.init.clone(), pid, Some(init));
                self.containers().insert(req.id.clone(), container.clone());
                // After the reply, before Start: the container joins its companion cgroups (and, with a monitor,
                // gets its allocation) while containerd's hop to the Start runs, which waits for it
                // ([`Container::set_up`]), as does anything else that acts on the container. Its process runs only
                // at the Start.
                tokio::spawn(set_up(self.shared.clone(), container, augment.clone(), pid));
                self.publish(TaskCreate {
                    container_id: req.id.clone(),
                    bundle: req.bundle.clone(),
                    rootfs: req.rootfs.clone(),
                    io: Some(TaskIO {
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        terminal,
                        ..Default::default()
                    })
                    .into(),
                    checkpoint: req.checkpoint.clone(),
                    pid: pid as u32,
                    ..Default::default()
                });
                Ok((
                    CreateTaskResponse {
                        pid: pid as u32,
                        ..Default::default()
                    },
                    augment,
                ))
            }
            Err(err) => {
                if mounted {
                    container::unmount_rootfs(&rootfs);
                }
                Err(err)
            }
        }
    }

    async fn create_init(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        paths: StdioPaths,
        (systemd, cgroups_path, fidelity): (bool, Option<String>, Fidelity),
    ) -> Result<(Process, i32)> {
        std::fs::create_dir_all(&self.shared.state_root).map_err(ShimError::io(format!(
            "creating state root {}",
            self.shared.state_root.display()
        )))?;
        let owner = io::Owner {
            id: &req.id,
            namespace: &self.shared.namespace,
            reaper: &self.shared.reaper,
        };
        let (mut pio, stdio, console) =
            ProcessIo::prepare(&paths, &self.shared.state_root, &owner).await?;
        let request = Request::Create {
            id: req.id.clone(),
            bundle: bundle.to_path_buf(),
            root: self.shared.state_root.clone(),
            console_socket: console,
            stdio: stdio.fds(),
            systemd,
            cgroups_path: cgroups_path.filter(|_| !systemd),
            fidelity,
        };
        let result = async {
            let pid = self
                .call(request, stdio)
                .await?
                .ok_or_else(|| ShimError::Zygote("create returned no pid".into()))?;
            if let Err(e) = pio.connect_console(&paths).await {
                let _ = self
                    .call(self.delete_request(&req.id), zygote::Stdio::default())
                    .await;
                return Err(e);
            }
            Ok(pid)
        }
        .await;
        match result {
            Ok(pid) => {
                let process = Process::new("", paths);
                process.set_pid(pid);
                *process.io.lock().await = Some(pio);
                Ok((process, pid))
            }
            Err(e) => {
                pio.abort().await;
                Err(e)
            }
        }
    }

    async fn do_start(&self, req: StartRequest) -> Result<StartResponse> {
        let container = self.set_up_container(&req.id).await?;
        let process = container.process(&req.exec_id)?;
        if process.status() != Status::CREATED {
            return Err(ShimError::FailedPrecondition(format!(
                "process {} in container {} is {:?}, not created",
                if req.exec_id.is_empty() {
                    "init"
                } else {
                    &req.exec_id
                },
                req.id,
                process.status()
            )));
        }
        // Until the reply and its event: an exit seen meanwhile is announced after them.
        let _starting = process.begin_start();
        if req.exec_id.is_empty() {
            // No broker freeze may land while libcontainer starts the init.
            let _hold = match &container.augment {
                Some(a) => Some(a.freezer.hold("start", false).await),
                None => None,
            };
            if let Some(pio) = process.io.lock().await.as_mut() {
                pio.start_input()?;
            }
            self.call(
                Request::Start {
                    id: req.id.clone(),
                    root: self.shared.state_root.clone(),
                },
                zygote::Stdio::default(),
            )
            .await?;
            process.set_status(Status::RUNNING);
            let pid = process.pid();
            self.publish(TaskStart {
                container_id: req.id.clone(),
                pid: pid as u32,
                ..Default::default()
            });
            return Ok(StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }
        let pid = self.start_exec(&container, &process).await?;
        self.publish(TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid: pid as u32,
            ..Default::default()
        });
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start_exec(&self, container: &Container, process: &Arc<Process>) -> Result<i32> {
        // As runc's shim: once the init has exited no exec starts, even while its exit is not announced yet.
        if container.init_exited.load(Ordering::SeqCst) {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is not running: its init exited",
                container.id
            )));
        }
        match container.init.status() {
            Status::RUNNING => {}
            // As runc: `runc exec` refuses a paused container unless given --ignore-paused, which containerd's
            // runc shim never passes.
            Status::PAUSED => {
                return Err(ShimError::FailedPrecondition(format!(
                    "cannot exec in a paused state: container {} is paused (resume it first)",
                    container.id
                )));
            }
            _ => {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {} is not running",
                    container.id
                )));
            }
        }
        // A broker freeze (invisible to the user) is thawed first, and none may land while the exec is set up.
        let _hold = match &container.augment {
            Some(a) => Some(
                a.freezer
                    .hold(&format!("exec {}", process.exec_id), false)
                    .await,
            ),
            None => None,
        };
        let spec_path = exec_spec_path(&self.shared.state_root, &container.id, &process.exec_id);
        let owner = io::Owner {
            id: &process.exec_id,
            namespace: &self.shared.namespace,
            reaper: &self.shared.reaper,
        };
        let (mut pio, stdio, console) =
            ProcessIo::prepare(&process.stdio, &self.shared.state_root, &owner).await?;
        if let Err(e) = pio.start_input() {
            pio.abort().await;
            return Err(e);
        }
        let result = async {
            let pid = self
                .call(
                    Request::Exec {
                        id: container.id.clone(),
                        root: self.shared.state_root.clone(),
                        process: spec_path.clone(),
                        console_socket: console,
                        stdio: stdio.fds(),
                    },
                    stdio,
                )
                .await?
                .ok_or_else(|| ShimError::Zygote("exec returned no pid".into()))?;
            pio.connect_console(&process.stdio).await?;
            Ok(pid)
        }
        .await;
        let _ = std::fs::remove_file(&spec_path);
        match result {
            Ok(pid) => {
                process.set_pid(pid);
                process.set_status(Status::RUNNING);
                let mut io = process.io.lock().await;
                // A CloseIO can come while the exec starts (ctr sends it as soon as its stdin ends).
                if process.stdin_closed() {
                    pio.tasks.close_input();
                }
                *io = Some(pio);
                drop(io);
                self.watch_exit(&container.id, process.clone(), pid, None);
                Ok(pid)
            }
            Err(e) => {
                pio.abort().await;
                process.set_exited(127);
                Err(e)
            }
        }
    }

    async fn do_delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let container = self.set_up_container(&req.id).await?;
        if !req.exec_id.is_empty() {
            let process = container.process(&req.exec_id)?;
            if matches!(process.status(), Status::RUNNING | Status::PAUSED) {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {} in container {} is still running",
                    req.exec_id, req.id
                )));
            }
            container.remove_exec(&req.exec_id);
            shutdown_io(&process).await;
            let exit = process.exit().unwrap_or_else(|| ExitInfo {
                status: 0,
                at: crate::process::now(),
            });
            return Ok(DeleteResponse {
                pid: process.pid() as u32,
                exit_status: exit.status,
                exited_at: Some(exit.at).into(),
                ..Default::default()
            });
        }
        let init = container.init.clone();
        if matches!(init.status(), Status::RUNNING | Status::PAUSED) {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is still running",
                req.id
            )));
        }
        // The stdio copies drain and the run summary reaches the broker before the reply, unless the broker left
        // the container's last call unanswered: then the summary goes out after it (`after_reply`).
        let summary_after_reply = container.augment.as_ref().is_some_and(|a| a.unanswered());
        let drain = async {
            for exec in container.exec_processes() {
                shutdown_io(&exec).await;
            }
            shutdown_io(&init).await;
            if let Some(a) = container.augment.as_ref().filter(|_| !summary_after_reply) {
                a.wait(SUMMARY_WAIT).await;
            }
        };
        let exited = async {
            tokio::time::timeout(std::time::Duration::from_secs(10), init.wait())
                .await
                .unwrap_or_else(|_| ExitInfo {
                    status: 137,
                    at: crate::process::now(),
                })
        };
        let settled = init.status() == Status::STOPPED
            && container
                .exec_processes()
                .iter()
                .all(|p| !matches!(p.status(), Status::RUNNING | Status::PAUSED));
        let exit = if settled {
            // Every process has exited, so libcontainer's delete (cgroups and state, ~6 ms in a worker) has
            // nothing to kill: it runs after the reply (started below, once the rootfs is unmounted: its worker
            // would take CPU from the unmount). A Create of the same id, and the shim's exit, wait for it.
            drain.await;
            exited.await
        } else {
            // Force-delete: kills a created-but-never-started init (or execs left running), then removes
            // cgroups and state, before the reply. A broker freeze goes first.
            let _hold = match &container.augment {
                Some(a) => Some(a.freezer.hold("delete", true).await),
                None => None,
            };
            self.call(self.delete_request(&req.id), zygote::Stdio::default())
                .await?;
            let exit = exited.await;
            drain.await;
            remove_cgroup_dirs(&container).await;
            exit
        };
        if let Some(h) = container
            .oom_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
        if container.rootfs_mounted {
            let rootfs = container.rootfs();
            blocking("unmounting the rootfs", move || {
                container::unmount_rootfs(&rootfs)
            })
            .await;
        }
        self.after_reply(&req.id, container.clone(), settled, summary_after_reply);
        self.containers().remove(&req.id);
        let pid = init.pid() as u32;
        self.publish(TaskDelete {
            container_id: req.id.clone(),
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at.clone()).into(),
            id: req.id.clone(),
            ..Default::default()
        });
        Ok(DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    /// A force-delete through libcontainer: kills what is left, removes the container's cgroups and state.
    fn delete_request(&self, id: &str) -> Request {
        Request::Delete {
            id: id.to_string(),
            root: self.shared.state_root.clone(),
        }
    }

    /// What a Delete leaves to run after its reply, in the background: libcontainer's delete of a container whose
    /// processes have all exited (`delete`; a Create of the same id waits for it) and the run summary's sending
    /// (`summary`; the delete waits for its last read of the cgroup, not for the broker). Until both are done the
    /// shim is not idle (it does not exit).
    fn after_reply(&self, id: &str, container: Arc<Container>, delete: bool, summary: bool) {
        if !delete && !summary {
            return;
        }
        let (done, wait) = tokio::sync::watch::channel(false);
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        self.shared
            .deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), wait);
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let augment = container.augment.as_ref().filter(|_| summary);
            if delete {
                if let Some(a) = augment {
                    a.summarized(SUMMARY_READ_WAIT).await;
                }
                if let Err(e) = me
                    .call(me.delete_request(&id), zygote::Stdio::default())
                    .await
                {
                    tracing::warn!(container = %id, "removing the container's cgroups and state: {}", e.chain());
                }
                remove_cgroup_dirs(&container).await;
            }
            me.shared
                .deleting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let _ = done.send(true);
            if let Some(a) = augment {
                a.wait(SUMMARY_AFTER_REPLY_WAIT).await;
            }
            me.shared.pending.fetch_sub(1, Ordering::SeqCst);
            me.shared.exit_if_shut_down();
        });
    }

    /// Waits until a delete of `id` still running after its reply is done.
    async fn deleted(&self, id: &str) {
        let wait = self
            .shared
            .deleting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(mut wait) = wait {
            let _ = wait.wait_for(|done| *done).await;
        }
    }

    async fn do_exec(&self, req: ExecProcessRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(ShimError::InvalidArgument("exec id is empty".into()));
        }
        let spec = req.spec.as_ref().ok_or_else(|| {
            ShimError::InvalidArgument(format!("exec {}: no process spec", req.exec_id))
        })?;
        let process_spec: oci_spec::runtime::Process = serde_json::from_slice(&spec.value)
            .map_err(|e| {
                ShimError::InvalidArgument(format!(
                    "exec {}: invalid process spec: {e}",
                    req.exec_id
                ))
            })?;
        // As containerd's runc shim (its paused and stopped states refuse Exec: no TaskExecAdded for an exec
        // that cannot start) and runc (cwd rules).
        if container.init.status() == Status::PAUSED {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot exec in a paused state: container {} is paused (resume it first)",
                req.id
            )));
        }
        if container.init.status() == Status::STOPPED
            || container.init_exited.load(Ordering::SeqCst)
        {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot exec in a stopped state: container {} has exited",
                req.id
            )));
        }
        let init_pid = container.init.pid();
        if init_pid > 0 {
            crate::cwd::check_exec_cwd(
                &self.shared.roots.proc,
                init_pid,
                &process_spec,
                &req.exec_id,
            )?;
        } else {
            crate::cwd::check(&process_spec, &format!("exec {}", req.exec_id))?;
        }
        let terminal = process_spec.terminal().unwrap_or(false);
        // The id is taken before its spec file is written: a second Exec of an id in use is refused before it
        // can overwrite (or, failing, remove) the spec the first one's Start reads.
        container.add_exec(Process::new(
            &req.exec_id,
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal,
            },
        ))?;
        let path = exec_spec_path(&self.shared.state_root, &req.id, &req.exec_id);
        let written = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir)
                .map_err(ShimError::io(format!("creating {}", dir.display()))),
            None => Ok(()),
        }
        .and_then(|()| {
            std::fs::write(&path, &spec.value)
                .map_err(ShimError::io(format!("writing {}", path.display())))
        });
        if let Err(e) = written {
            container.remove_exec(&req.exec_id);
            return Err(e);
        }
        let shared = self.shared.clone();
        crate::warmup::for_exec(move || shared.own_cgroup2());
        self.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    async fn do_kill(&self, req: KillRequest) -> Result<()> {
        let container = self.set_up_container(&req.id).await?;
        let process = container.process(&req.exec_id)?;
        let signal = i32::try_from(req.signal)
            .ok()
            .filter(|s| (0..=SIGNAL_MAX).contains(s))
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!(
                    "signal {} out of range (0 to {SIGNAL_MAX})",
                    req.signal
                ))
            })?;
        if req.exec_id.is_empty() && signal != 0 {
            container.signalled.store(true, Ordering::SeqCst);
        }
        // A broker freeze must not keep a signal from landing (v1 freezes even SIGKILL): it is thawed first. A
        // signal to the init or to all processes (a stop) also marks the container stopping, so the broker never
        // freezes it again during its grace period.
        let _hold = match (&container.augment, signal) {
            (Some(a), s) if s != 0 => Some(
                a.freezer
                    .hold(&format!("signal {signal}"), req.exec_id.is_empty())
                    .await,
            ),
            _ => None,
        };
        if req.exec_id.is_empty() && req.all && nix::sys::signal::Signal::try_from(signal).is_err()
        {
            // A real-time signal (or 0), which libcontainer's kill takes for no signal at all: sent to every
            // process of the container's cgroup here, as runc's `kill --all` does.
            self.signal_all(&container, signal).await?;
        } else if req.exec_id.is_empty() && req.all {
            let killed = self
                .call(
                    Request::Kill {
                        id: req.id.clone(),
                        root: self.shared.state_root.clone(),
                        signal,
                        all: true,
                    },
                    zygote::Stdio::default(),
                )
                .await;
            if let Err(e) = killed {
                // After the init exited there may be nothing left to signal, or no cgroup at all (systemd
                // removes a transient scope with its last process): as runc says then, the process is gone.
                if container.init.status() == Status::STOPPED {
                    tracing::debug!(container = %req.id, "kill --all after the init exited: {}", e.chain());
                    return Err(ShimError::NotFound {
                        kind: "process",
                        id: format!("{}{FINISHED}", req.id),
                    });
                }
                return Err(e);
            }
        } else {
            let pid = process.pid();
            if pid <= 0 || process.status() == Status::STOPPED {
                return Err(ShimError::NotFound {
                    kind: "process",
                    id: format!("{}{FINISHED}", req.id),
                });
            }
            self.shared.runtime.signal(pid, signal)?;
        }
        // A frozen process cannot act on SIGKILL on cgroup v1: thaw a paused container so the kill lands. Only a
        // kill of the container (its init, or all of it) thaws, as runc's does: a SIGKILL to one exec must not
        // undo the user's pause of the rest (on v1 the exec then ends at the resume, on v2 at once).
        if signal == libc::SIGKILL
            && req.exec_id.is_empty()
            && container.init.status() == Status::PAUSED
        {
            let thawed = self
                .call(
                    Request::Resume {
                        id: req.id.clone(),
                        root: self.shared.state_root.clone(),
                    },
                    zygote::Stdio::default(),
                )
                .await;
            match thawed {
                Ok(_) => {}
                // On cgroup v2 SIGKILL ends a frozen process without a thaw, so the init may be exiting, a zombie
                // or reaped before the resume looks, which libcontainer then refuses (a stopped container, or no
                // /proc/PID/stat). The kill landed; as runc, whose thaw after a SIGKILL ignores its error, the
                // Kill succeeds.
                Err(e) if crate::process::exiting(container.init.pid()) => {
                    tracing::debug!(container = %req.id, "no thaw after SIGKILL, the init is exiting: {}", e.chain());
                }
                Err(e) => return Err(e),
            }
            container.init.set_status(Status::RUNNING);
        }
        Ok(())
    }

    /// Sends `signal` to every process in the container's cgroup and below (a process gone meanwhile is skipped).
    /// NotFound once the init has exited and nothing is left, as for libcontainer's kill of all.
    async fn signal_all(&self, container: &Container, signal: i32) -> Result<()> {
        let (known, pid) = self
            .cgroup_source(container)
            .map_err(|_| ShimError::NotFound {
                kind: "process",
                id: format!("{}{FINISHED}", container.id),
            })?;
        let pids = self
            .cgroup_procs(known, pid, "kill --all", &container.id)
            .await?;
        if pids.is_empty() && container.init.status() == Status::STOPPED {
            return Err(ShimError::NotFound {
                kind: "process",
                id: format!("{}{FINISHED}", container.id),
            });
        }
        for pid in pids.into_iter().filter(|&p| p > 0) {
            match self.shared.runtime.signal(pid, signal) {
                Err(ShimError::Sys {
                    source: nix::errno::Errno::ESRCH,
                    ..
                }) => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn do_pause_resume(&self, id: &str, pause: bool) -> Result<()> {
        let container = self.set_up_container(id).await?;
        let root = self.shared.state_root.clone();
        let request = if pause {
            Request::Pause {
                id: id.to_string(),
                root,
            }
        } else {
            Request::Resume {
                id: id.to_string(),
                root,
            }
        };
        match &container.augment {
            // The broker's freeze and the user's pause compose (`freeze.rs`).
            Some(a) => {
                a.freezer
                    .by_user(pause, self.call(request, zygote::Stdio::default()))
                    .await?;
            }
            None => {
                self.call(request, zygote::Stdio::default()).await?;
            }
        }
        if pause {
            container.init.set_status(Status::PAUSED);
            self.publish(TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            });
        } else {
            container.init.set_status(Status::RUNNING);
            self.publish(TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
        Ok(())
    }

    fn running_pid(&self, container: &Container) -> Result<u32> {
        let pid = container.init.pid();
        if pid <= 0 || container.init.status() == Status::STOPPED {
            return Err(ShimError::FailedPrecondition(format!(
                "container {} is not running",
                container.id
            )));
        }
        Ok(pid as u32)
    }

    /// Where Stats and Pids find the container's cgroup: the one kept since its start ([`Container::cgroup`]), also
    /// once its init exited and until its Delete, as runc's shim answers then (containerd's CRI, since its PR 12714,
    /// reads the OOM kill count of a container that exited 137 from Stats; `ctr t ps` lists what is left), else
    /// looked up from the running init (the pid). NotFound when there is neither, as runc's "cgroup does not
    /// exist", which containerd's metrics collection passes over quietly (any other error it logs per poll).
    fn cgroup_source(&self, container: &Container) -> Result<(Option<ContainerCgroup>, u32)> {
        if let Some(cg) = container.cgroup.get() {
            return Ok((Some(cg.clone()), 0));
        }
        match self.running_pid(container) {
            Ok(pid) => Ok((None, pid)),
            Err(_) => Err(ShimError::NotFound {
                kind: "cgroup of container",
                id: container.id.clone(),
            }),
        }
    }

    /// Every process in the container's cgroup and below ([`TaskService::cgroup_source`]'s `known` or `pid`), read
    /// off the runtime thread; an error names `op` and the container `id`.
    async fn cgroup_procs(
        &self,
        known: Option<ContainerCgroup>,
        pid: u32,
        op: &'static str,
        id: &str,
    ) -> Result<Vec<i32>> {
        let roots = self.shared.roots.clone();
        tokio::task::spawn_blocking(move || {
            container_cgroup(known, &roots, pid).and_then(|cg| {
                cg.try_procs_all()
                    .map_err(|e| predictive_api::error_chain(&e))
            })
        })
        .await
        .map_err(|e| ShimError::Zygote(format!("{op}: {e}")))?
        .map_err(|e| {
            ShimError::FailedPrecondition(format!(
                "{op} {id}: listing the processes of its cgroup: {e}"
            ))
        })
    }

    async fn do_update(&self, req: UpdateTaskRequest) -> Result<()> {
        let container = self.set_up_container(&req.id).await?;
        let pid = self.running_pid(&container)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::InvalidArgument("update carries no resources".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::InvalidArgument(format!("invalid linux resources: {e}")))?;
        let scope = container.scope.clone();
        let augment = container.augment.clone();
        let id = req.id.clone();
        let roots = self.shared.roots.clone();
        let known = container.cgroup.get().cloned();
        tokio::task::spawn_blocking(move || {
            let cg = container_cgroup(known, &roots, pid).map_err(|e| {
                ShimError::FailedPrecondition(format!("update {id}: finding its cgroup: {e}"))
            })?;
            // systemd's unit first, as runc does: a refusal there changes nothing, and the cgroup files written
            // next are not put back by systemd's next daemon-reload.
            if let Some(scope) = &scope {
                let problems = scope.sync(&resources, &cg).map_err(|e| {
                    ShimError::FailedPrecondition(format!(
                        "update {id}: {}",
                        predictive_api::error_chain(&e)
                    ))
                })?;
                for p in problems {
                    tracing::warn!(container = %id, "update: after the unit's properties changed, writing again what it has none for: {p}");
                }
            }
            predict::apply_update(&cg, &id, &resources, augment.as_deref())
        })
        .await
        .map_err(|e| ShimError::Zygote(format!("update task: {e}")))?
    }

    async fn do_stats(&self, req: StatsRequest) -> Result<StatsResponse> {
        let container = self.set_up_container(&req.id).await?;
        let (known, pid) = self.cgroup_source(&container)?;
        let id = req.id.clone();
        let roots = self.shared.roots.clone();
        let stats = tokio::task::spawn_blocking(move || {
            let cgroup = container_cgroup(known, &roots, pid).map_err(|e| {
                ShimError::FailedPrecondition(format!(
                    "stats {id}: finding the cgroup of pid {pid}: {e}"
                ))
            })?;
            let any = match cgroup.dirs() {
                CgroupDirs::V2(d) => crate::events::to_any(&metrics::collect_v2(&d.dir)),
                CgroupDirs::V1(d) => crate::events::to_any(&metrics::collect_v1(d)),
            };
            any.map_err(|e| ShimError::shim("encoding metrics")(e.into()))
        })
        .await
        .map_err(|e| ShimError::Zygote(format!("stats: {e}")))??;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    async fn do_pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let container = self.set_up_container(&req.id).await?;
        let (known, pid) = self.cgroup_source(&container)?;
        let pids = self.cgroup_procs(known, pid, "pids", &req.id).await?;
        let execs: Vec<(i32, String)> = container
            .exec_processes()
            .iter()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| process_info(pid, &execs))
                .collect::<Result<_>>()?,
            ..Default::default()
        })
    }

    fn do_state(&self, req: &StateRequest) -> Result<StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let exit = process.exit();
        // As runc's shim: a process of a paused container is paused too, whatever it was doing.
        let status = match process.status() {
            Status::RUNNING | Status::CREATED if container.init.status() == Status::PAUSED => {
                Status::PAUSED
            }
            s => s,
        };
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: process.pid().max(0) as u32,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.as_ref().map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| e.at).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }
}

/// What a kill of a process that has exited says after its id (runc's shim: "process already finished").
const FINISHED: &str = " (already finished)";

/// Whether `e` is a kill's answer for a process that has exited.
fn already_finished(e: &ShimError) -> bool {
    matches!(e, ShimError::NotFound { id, .. } if id.ends_with(FINISHED))
}

fn exec_spec_path(state_root: &Path, id: &str, exec_id: &str) -> PathBuf {
    // Inside libcontainer's directory for the container, so it goes when the container does.
    state_root.join(id).join(format!("exec-{exec_id}.json"))
}

/// As containerd's runc shim, once a container's init has exited in a pid namespace that is not its own (a pod's
/// shared one, a target container's, the host's), where the kernel does not end what the init started: SIGKILL to
/// every process left in the container's cgroup, before the exit is published.
async fn kill_all_after_init(shared: &Shared, id: &str, augment: Option<&Augment>) {
    // A broker freeze would hold the signal (v1 freezes even SIGKILL).
    let _hold = match augment {
        Some(a) => Some(
            a.freezer
                .hold("kill --all after the init exited", true)
                .await,
        ),
        None => None,
    };
    let request = Request::Kill {
        id: id.to_owned(),
        root: shared.state_root.clone(),
        signal: libc::SIGKILL,
        all: true,
    };
    match shared
        .runtime
        .call(&request, zygote::Stdio::default())
        .await
    {
        Ok(Reply::Ok { .. }) => {
            tracing::debug!(container = %id, "killed what the init left in its cgroup")
        }
        Ok(Reply::Err { message, .. }) => {
            tracing::warn!(container = %id, "killing what the init left: {message}")
        }
        Err(e) => tracing::warn!(container = %id, "killing what the init left: {}", e.chain()),
    }
}

/// The container's cgroup as found at its create ([`Container::cgroup`]), else (not found then) the one its init
/// `pid` is in now; an error names what failed.
fn container_cgroup(
    known: Option<ContainerCgroup>,
    roots: &runtime_hooks::HostRoots,
    pid: u32,
) -> std::result::Result<ContainerCgroup, String> {
    match known {
        Some(cg) => Ok(cg),
        None => ContainerCgroup::from_pid(roots, pid as i32)
            .map_err(|e| predictive_api::error_chain(&e)),
    }
}

/// What the exit of a container's init settles before it is recorded and announced ([`TaskService::watch_exit`]).
struct InitExit {
    container: Arc<Container>,
    augment: Option<Arc<Augment>>,
    /// Kill what the init left: it had no pid namespace of its own ([`crate::container::kills_all_on_exit`]).
    kill_all: bool,
}

impl InitExit {
    /// As runc's shim: no exec starts any more; an init that ended during its Start is announced after the Start
    /// (Docker takes a start event after the exit for a container running again); an OOM kill the watcher has not
    /// reported yet is announced; what the init left is killed; every exec's exit comes first. Only then do Waits
    /// return and TaskExit go out. Whether the container was OOM-killed (its init ended with `status`).
    async fn settle(&self, shared: &Shared, container_id: &str, status: u32) -> bool {
        let container = &self.container;
        container.init_exited.store(true, Ordering::SeqCst);
        container.init.start_settled().await;
        // An init killed before its Start may end while the create's set-up still runs.
        container.set_up().await;
        let oom = container
            .oom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut oom_killed = false;
        if let Some(oom) = &oom {
            if oom.check_exit(status, container.signalled.load(Ordering::SeqCst)) {
                publish_oom(shared, container_id);
            }
            oom_killed = oom.killed();
        }
        if self.kill_all {
            kill_all_after_init(shared, container_id, self.augment.as_deref()).await;
        }
        let left = container.execs_settled(EXECS_SETTLE).await;
        if !left.is_empty() {
            tracing::warn!(container = %container_id, execs = ?left,
                "execs still running {EXECS_SETTLE:?} after the init exited: announcing its exit first");
        }
        oom_killed
    }
}

/// The create's set-up after its reply ([`Container::set_up`]): the container in its companion cgroups (a monitor's
/// `created`, which also applies the allocation and starts the monitor; else the directories are made and kept
/// here), then its cgroup kept and watched for OOM kills. Off the runtime thread: a move into a cgroup waits for the
/// kernel. Marks the container set up however it ends (a panic too).
async fn set_up(
    shared: Arc<Shared>,
    container: Arc<Container>,
    augment: Option<Arc<Augment>>,
    pid: i32,
) {
    struct Done(Arc<Container>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.mark_set_up();
        }
    }
    let _done = Done(container.clone());
    // The container's cgroup, found from its init once it is in the companion hierarchies too (a hybrid host's PSI
    // directory): the monitor's, or found here.
    let cgroup = match &augment {
        Some(a) => {
            a.created(pid).await;
            a.cgroup()
        }
        // The sandbox, or mode off: the container's PSI files are its own all the same, and it is in its cgroup
        // in every hierarchy (kubelet and systemd account a pod by all of them).
        None => {
            let (roots, id) = (shared.roots.clone(), container.id.clone());
            let (made, cgroup) = blocking("joining the companion cgroups", move || {
                let made = crate::companions::join_companions(&roots, &id, pid);
                (made, ContainerCgroup::from_pid(&roots, pid).ok())
            })
            .await
            .unwrap_or_default();
            container
                .companions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(made);
            cgroup
        }
    };
    if let Some(cg) = cgroup {
        let _ = container.cgroup.set(cg);
    }
    watch_oom(&shared, &container);
}

/// Watches the container's cgroup ([`Container::cgroup`]) for OOM kills.
fn watch_oom(shared: &Arc<Shared>, container: &Container) {
    let Some(cgroup) = container.cgroup.get().and_then(oom::MemoryCgroup::of) else {
        return;
    };
    // systemd removes a scope's cgroup once it is empty, maybe before the exit path reads it.
    let tracker = Arc::new(oom::OomTracker::new(cgroup, container.scope.is_some()));
    let shared = shared.clone();
    let id = container.id.clone();
    let t = tracker.clone();
    let handle = tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = t.watch(move || {
            let _ = tx.send(());
        });
        let forward = async {
            while rx.recv().await.is_some() {
                publish_oom(&shared, &id);
                // The broker hears of the kill at the next look, not the next heartbeat.
                crate::predict::wake_monitors();
            }
        };
        tokio::join!(watcher, forward);
    });
    *container.oom.lock().unwrap_or_else(|e| e.into_inner()) = Some(tracker);
    *container
        .oom_watch
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(handle);
}

/// How long a container's exit waits for its execs' ([`Container::execs_settled`]): they end with it (the kernel
/// ends its pid namespace, or the kill of all it left), so this is for one that escaped both.
const EXECS_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a checkpoint or a restore is refused.
const NO_CHECKPOINT: &str =
    "checkpoint and restore are not supported by io.containerd.predictive.v2";

/// The highest signal number Kill takes: Linux's `SIGRTMAX` (64 on every architecture containerd ships for but
/// MIPS). runc takes any number up to it; a real-time signal is some images' stop signal (systemd's `SIGRTMIN+3`, 37,
/// in kind's node image and the UBI init images), and 0 asks whether the process exists.
const SIGNAL_MAX: i32 = 64;

/// One process of a container as Task.Pids lists it: an exec's own process carries its exec id (`ctr task ps`
/// shows it), as runc's shim does, in containerd's `containerd.runc.v1.ProcessDetails`.
fn process_info(pid: i32, execs: &[(i32, String)]) -> Result<ProcessInfo> {
    let mut info = ProcessInfo {
        pid: pid as u32,
        ..Default::default()
    };
    if let Some((_, exec_id)) = execs.iter().find(|(p, _)| *p == pid) {
        let details = containerd_shim_protos::shim::oci::ProcessDetails {
            exec_id: exec_id.clone(),
            ..Default::default()
        };
        let any = crate::events::to_any(&details)
            .map_err(|e| ShimError::shim("encoding a process's details")(e.into()))?;
        info.info = Some(any).into();
    }
    Ok(info)
}

async fn shutdown_io(process: &Process) {
    if let Some(pio) = process.io.lock().await.take() {
        pio.shutdown().await;
    }
}

/// After Create under the systemd driver: the container's unit, for its monitor and itself, and the unit's
/// drop-ins for what its spec asks that the unit was not started with (`OOMPolicy=kill`, `IOWeight=`;
/// [`Scope::write_drop_ins`], off the runtime thread).
async fn set_scope(container: &mut Container, scope: Option<Scope>) {
    if let (Some(a), Some(s)) = (&container.augment, &scope) {
        a.set_scope(s.clone());
    }
    container.scope = scope;
    let Some(s) = container.scope.clone().filter(|s| s.drop_ins_pending()) else {
        return;
    };
    let id = container.id.clone();
    blocking("writing the unit's drop-ins", move || {
        if let Err(e) = s.write_drop_ins() {
            tracing::warn!(container = %id, "the unit's drop-ins: {e}");
        }
    })
    .await;
}

/// After the container's processes are gone: removes the cgroup directories the shim made for it (its monitor's
/// and its own), off the runtime thread.
async fn remove_cgroup_dirs(container: &Arc<Container>) {
    let c = container.clone();
    blocking("removing the container's cgroup directories", move || {
        if let Some(a) = &c.augment {
            a.cleanup();
        }
        c.remove_companions();
        if let Some(s) = &c.scope
            && let Err(e) = s.forget()
        {
            tracing::warn!(container = %c.id, "removing the unit's drop-ins: {e}");
        }
    })
    .await;
}

fn publish_oom(shared: &Shared, id: &str) {
    tracing::warn!(container = %id, "the OOM killer acted in the container's cgroup");
    shared.events.send(TaskOOM {
        container_id: id.to_string(),
        ..Default::default()
    });
}

fn log_result<T>(op: &str, id: &str, result: Result<T>) -> ttrpc::Result<T> {
    result.map_err(|e| {
        tracing::warn!(op, id, "{}", e.chain());
        e.into()
    })
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.do_state(&req).map_err(Into::into)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let id = req.id.clone();
        tracing::info!(id = %id, bundle = %req.bundle, "create");
        self.shared.pending.fetch_add(1, Ordering::SeqCst);
        let result = self.do_create(req).await;
        self.shared.pending.fetch_sub(1, Ordering::SeqCst);
        log_result("create", &id, result)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let id = req.id.clone();
        let result = self.do_start(req).await;
        self.shared.trimmer.touched();
        log_result("start", &id, result)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let id = req.id.clone();
        let result = self.do_delete(req).await;
        self.shared.trimmer.touched();
        log_result("delete", &id, result)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let id = req.id.clone();
        log_result("pids", &id, self.do_pids(req).await)
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        log_result("pause", &req.id, self.do_pause_resume(&req.id, true).await)?;
        Ok(Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        log_result(
            "resume",
            &req.id,
            self.do_pause_resume(&req.id, false).await,
        )?;
        Ok(Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let id = req.id.clone();
        match self.do_kill(req).await {
            // containerd kills every exec it deletes (CRI's ExecSync, so each exec probe) after its exit: the
            // expected answer, not worth a warning per probe.
            Err(e) if already_finished(&e) => {
                tracing::debug!(op = "kill", id, "{}", e.chain());
                Err(e.into())
            }
            result => log_result("kill", &id, result).map(|()| Empty::new()),
        }
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let id = req.id.clone();
        log_result("exec", &id, self.do_exec(req).await)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let result = async {
            let process = self.container(&req.id)?.process(&req.exec_id)?;
            let guard = process.io.lock().await;
            match guard.as_ref().and_then(|pio| pio.pty.as_ref()) {
                Some(pty) => io::resize(pty, req.width, req.height),
                // As runc's shim: a process without a terminal has no size to set, and that is no error (Docker's
                // resize API sends it for any container).
                None => {
                    tracing::debug!(id = %req.id, exec_id = %req.exec_id, "resize of a process without a terminal");
                    Ok(())
                }
            }
        }
        .await;
        log_result("resize_pty", &req.id, result)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let result = async {
            let process = self.container(&req.id)?.process(&req.exec_id)?;
            // Kept for an exec whose stdio is not set up yet (it is at Start), then applied.
            process.close_stdin();
            if let Some(pio) = process.io.lock().await.as_ref() {
                pio.tasks.close_input();
            }
            Ok(())
        }
        .await;
        log_result("close_io", &req.id, result)?;
        Ok(Empty::new())
    }

    /// Not done (no CRIU): UNIMPLEMENTED, what a client takes for "this runtime cannot", where the generated
    /// default's NOT_FOUND reads as "no such container" (kubelet's checkpoint API, `ctr c checkpoint`).
    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        log_result(
            "checkpoint",
            &req.id,
            Err(ShimError::Unimplemented(format!(
                "checkpoint {}: {NO_CHECKPOINT}",
                req.id
            ))),
        )
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let id = req.id.clone();
        log_result("update", &id, self.do_update(req).await)?;
        Ok(Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let process = log_result(
            "wait",
            &req.id,
            self.container(&req.id)
                .and_then(|c| c.process(&req.exec_id)),
        )?;
        let exit = process.wait().await;
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let id = req.id.clone();
        log_result("stats", &id, self.do_stats(req).await)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .container(&req.id)
            .map(|c| c.init.pid().max(0) as u32)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.shared.shut_down.store(true, Ordering::SeqCst);
        self.shared.exit_if_shut_down();
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests;
