//! The task service driven without root: a fake runtime (standing for the zygote and the kernel's signals)
//! and a fake event sink behind the seams of `seams.rs`, a real reaper fed the exits the fake produces, and an
//! empty temp dir as `/proc` and cgroup root. Containers run in mode `off`, so no broker is ever contacted.
//! What containerd sees is checked: replies, ttrpc codes, the order of events, when the shim may exit.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StateRequest, Status,
    WaitRequest,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, Code, r#async::TtrpcContext};
use tokio::sync::{Notify, watch};

use super::TaskService;
use crate::error::{Result, ShimError};
use crate::reaper::{Exit, Reaper};
use crate::seams::{EventSink, Runtime};
use crate::zygote::{Failure, Reply, Request, Stdio};

/// How a faked operation fails.
#[derive(Clone)]
enum Outcome {
    /// The worker answers with this failure.
    Refuse(Failure),
    /// The zygote is gone.
    Gone,
}

/// A container as the fake runtime holds it.
struct FakeContainer {
    init: i32,
    execs: Vec<i32>,
}

/// Stands for the zygote (libcontainer in its workers) and the kernel's signals. Processes "die" of SIGKILL and
/// SIGTERM, and a delete kills what is left, as libcontainer does: their exits reach the shim's reaper.
struct FakeRuntime {
    reaper: Arc<Reaper>,
    /// The fake `/proc`: each process gets `<pid>/root`, the directory an exec's cwd is checked in.
    proc: PathBuf,
    next_pid: std::sync::atomic::AtomicI32,
    containers: std::sync::Mutex<HashMap<String, FakeContainer>>,
    /// Every request as "op id", in the order they arrived; a test waits on it.
    calls: watch::Sender<Vec<String>>,
    /// Requests that finished, as "op id", in order.
    done: std::sync::Mutex<Vec<String>>,
    /// Operations held until released (a slow libcontainer).
    held: watch::Sender<HashSet<&'static str>>,
    failures: std::sync::Mutex<HashMap<&'static str, Outcome>>,
    signals: std::sync::Mutex<Vec<(i32, i32)>>,
    /// What each new process's `/proc/<pid>/cgroup` says (none by default: no cgroup to find).
    proc_cgroup: std::sync::Mutex<Option<String>>,
}

impl FakeRuntime {
    fn new(reaper: Arc<Reaper>, proc: PathBuf) -> FakeRuntime {
        FakeRuntime {
            reaper,
            proc,
            next_pid: std::sync::atomic::AtomicI32::new(4_000_001),
            containers: Default::default(),
            calls: watch::channel(Vec::new()).0,
            done: Default::default(),
            held: watch::channel(HashSet::new()).0,
            failures: Default::default(),
            signals: Default::default(),
            proc_cgroup: Default::default(),
        }
    }

    fn hold(&self, op: &'static str) {
        self.held.send_modify(|h| {
            h.insert(op);
        });
    }

    fn release(&self, op: &'static str) {
        self.held.send_modify(|h| {
            h.remove(op);
        });
    }

    fn fail(&self, op: &'static str, outcome: Outcome) {
        self.failures.lock().expect("lock").insert(op, outcome);
    }

    /// Waits until a request `call` ("op id") has arrived.
    async fn arrived(&self, call: &str) {
        let mut rx = self.calls.subscribe();
        rx.wait_for(|c| c.iter().any(|x| x == call))
            .await
            .expect("the fake lives as long as the test");
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn done(&self) -> Vec<String> {
        self.done.lock().expect("lock").clone()
    }

    fn spawned(&self) -> i32 {
        let pid = self
            .next_pid
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::fs::create_dir_all(self.proc.join(pid.to_string()).join("root").join("tmp"))
            .expect("fake /proc/<pid>/root");
        if let Some(text) = self.proc_cgroup.lock().expect("lock").as_ref() {
            std::fs::write(self.proc.join(pid.to_string()).join("cgroup"), text)
                .expect("fake /proc/<pid>/cgroup");
        }
        pid
    }

    fn die(&self, pid: i32, signal: i32) {
        if signal == libc::SIGKILL || signal == libc::SIGTERM {
            self.reaper.deliver(Exit {
                pid,
                status: 128 + signal as u32,
            });
        }
    }

    fn perform(&self, request: &Request) -> std::result::Result<Option<i32>, Failure> {
        let mut containers = self.containers.lock().expect("lock");
        let known = containers.get_mut(request.id());
        match (request, known) {
            (Request::Create { id, .. }, None) => {
                let init = self.spawned();
                containers.insert(
                    id.clone(),
                    FakeContainer {
                        init,
                        execs: Vec::new(),
                    },
                );
                Ok(Some(init))
            }
            (Request::Create { .. }, Some(_)) => Err(Failure::State),
            (Request::Exec { .. }, Some(c)) => {
                let pid = self.spawned();
                c.execs.push(pid);
                Ok(Some(pid))
            }
            (Request::Kill { signal, all, .. }, Some(c)) => {
                let pids: Vec<i32> = if *all {
                    std::iter::once(c.init).chain(c.execs.clone()).collect()
                } else {
                    vec![c.init]
                };
                for pid in pids {
                    self.die(pid, *signal);
                }
                Ok(None)
            }
            (Request::Delete { id, .. }, Some(_)) => {
                let c = containers.remove(id).expect("matched above");
                for pid in std::iter::once(c.init).chain(c.execs) {
                    self.die(pid, libc::SIGKILL);
                }
                Ok(None)
            }
            (Request::JoinCgroup { .. }, _) => Ok(None),
            (_, Some(_)) => Ok(None),
            (_, None) => Err(Failure::NotFound),
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn call(&self, request: &Request, _stdio: Stdio) -> Result<Reply> {
        let call = format!("{} {}", request.op(), request.id());
        self.calls.send_modify(|c| c.push(call.clone()));
        let op = request.op();
        let mut held = self.held.subscribe();
        held.wait_for(|h| !h.contains(op))
            .await
            .expect("the fake lives as long as the test");
        let failure = self.failures.lock().expect("lock").get(op).cloned();
        let reply = match failure {
            Some(Outcome::Gone) => {
                return Err(ShimError::Zygote(format!(
                    "worker for {call} exited without a reply"
                )));
            }
            Some(Outcome::Refuse(failure)) => Reply::Err {
                failure,
                message: format!("the fake refuses {call}"),
            },
            None => match self.perform(request) {
                Ok(pid) => Reply::Ok { pid },
                Err(failure) => Reply::Err {
                    failure,
                    message: format!("the fake cannot {call}"),
                },
            },
        };
        self.done.lock().expect("lock").push(call);
        Ok(reply)
    }

    fn signal(&self, pid: i32, signal: i32) -> Result<()> {
        self.signals.lock().expect("lock").push((pid, signal));
        self.die(pid, signal);
        Ok(())
    }
}

/// Records every event the shim publishes.
#[derive(Default)]
struct FakeSink {
    events: std::sync::Mutex<Vec<(String, Any)>>,
}

#[async_trait]
impl EventSink for Arc<FakeSink> {
    async fn publish(&self, topic: &str, _namespace: &str, event: Any) -> Result<()> {
        self.events
            .lock()
            .expect("lock")
            .push((topic.to_string(), event));
        Ok(())
    }
}

/// One shim's task service over the fakes, in a temp dir.
struct Shim {
    dir: tempfile::TempDir,
    service: TaskService,
    runtime: Arc<FakeRuntime>,
    sink: Arc<FakeSink>,
    exit: Arc<Notify>,
}

fn ctx() -> TtrpcContext {
    TtrpcContext::default()
}

/// The ttrpc code of a failed call.
fn code<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> Code {
    match result {
        Err(ttrpc::Error::RpcStatus(s)) => s.code(),
        other => panic!("expected an RpcStatus, got {other:?}"),
    }
}

impl Shim {
    fn new() -> Shim {
        let dir = tempfile::tempdir().expect("tempdir");
        let roots = runtime_hooks::HostRoots {
            cgroup: dir.path().join("cgroup"),
            proc: dir.path().join("proc"),
            mountinfo: dir.path().join("mountinfo"),
        };
        let reaper = Arc::new(Reaper::default());
        let runtime = Arc::new(FakeRuntime::new(reaper.clone(), roots.proc.clone()));
        let sink = Arc::new(FakeSink::default());
        let exit = Arc::new(Notify::new());
        let service = TaskService::new(
            "test",
            dir.path().join("state"),
            runtime.clone(),
            reaper,
            sink.clone(),
            exit.clone(),
            roots,
        );
        Shim {
            dir,
            service,
            runtime,
            sink,
            exit,
        }
    }

    /// A bundle for container `id` with `annotations` (mode off unless they say otherwise).
    fn bundle(&self, id: &str, annotations: serde_json::Value) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).expect("rootfs");
        let mut all = serde_json::json!({ predictive_api::annotations::MODE: "off" });
        if let (Some(all), Some(more)) = (all.as_object_mut(), annotations.as_object()) {
            all.extend(more.clone());
        }
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
            "annotations": all,
        });
        std::fs::write(bundle.join("config.json"), spec.to_string()).expect("config.json");
        bundle
    }

    fn create_request(&self, id: &str) -> CreateTaskRequest {
        CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle(id, serde_json::json!({})).display().to_string(),
            ..Default::default()
        }
    }

    async fn create(&self, id: &str) -> u32 {
        let req = self.create_request(id);
        self.service.create(&ctx(), req).await.expect("create").pid
    }

    async fn start(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> ttrpc::Result<()> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        };
        self.service.kill(&ctx(), req).await.map(|_| ())
    }

    async fn wait(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.wait(&ctx(), req).await.map(|r| r.exit_status)
    }

    async fn delete(&self, id: &str, exec_id: &str) -> ttrpc::Result<u32> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service
            .delete(&ctx(), req)
            .await
            .map(|r| r.exit_status)
    }

    async fn state(&self, id: &str, exec_id: &str) -> ttrpc::Result<Status> {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service
            .state(&ctx(), req)
            .await
            .map(|r| r.status.enum_value_or_default())
    }

    async fn exec(&self, id: &str, exec_id: &str, cwd: &str) -> ttrpc::Result<()> {
        let process = serde_json::json!({"args": ["sh"], "cwd": cwd, "user": {"uid": 0, "gid": 0}});
        let req = ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process.to_string().into_bytes(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.service.exec(&ctx(), req).await.map(|_| ())
    }

    async fn shutdown(&self) {
        self.service
            .shutdown(&ctx(), ShutdownRequest::default())
            .await
            .expect("shutdown");
    }

    /// Whether the shim was told to exit (a notification is kept until taken).
    async fn told_to_exit(&self) -> bool {
        tokio::select! {
            biased;
            _ = self.exit.notified() => true,
            _ = std::future::ready(()) => false,
        }
    }

    /// The topics published so far, in order.
    async fn topics(&self) -> Vec<String> {
        self.service.shared.events.flush().await;
        self.sink
            .events
            .lock()
            .expect("lock")
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// The event published under `topic` (the last one), decoded as containerd would: by the `Any`'s type URL,
    /// which must be `M`'s protobuf name.
    async fn event<M: containerd_shim_protos::protobuf::MessageFull>(&self, topic: &str) -> M {
        self.service.shared.events.flush().await;
        let any = self
            .sink
            .events
            .lock()
            .expect("lock")
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no {topic} event"));
        assert_eq!(any.type_url, M::descriptor().full_name(), "{topic}");
        M::parse_from_bytes(&any.value).expect("decodes")
    }

    /// Waits until a delete that finishes after its reply is done (the runtime's delete, then the cleanup).
    async fn settled(&self, id: &str) {
        self.service.deleted(id).await;
    }
}

fn topics(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| format!("/tasks/{t}")).collect()
}

// --- state transitions -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_container_goes_created_running_stopped_deleted_and_containerd_hears_each_step() {
    let shim = Shim::new();
    let pid = shim.create("c1").await;
    assert!(pid > 0);
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::CREATED);
    assert_eq!(shim.start("c1", "").await.expect("start"), pid);
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::RUNNING);
    // A signal to the init goes to its pid, not through the runtime.
    shim.kill("c1", "", libc::SIGTERM as u32, false)
        .await
        .expect("kill");
    assert_eq!(
        *shim.runtime.signals.lock().expect("lock"),
        vec![(pid as i32, libc::SIGTERM)]
    );
    assert_eq!(shim.wait("c1", "").await.expect("wait"), 143);
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::STOPPED);
    assert_eq!(shim.delete("c1", "").await.expect("delete"), 143);
    assert_eq!(code(shim.state("c1", "").await), Code::NOT_FOUND);
    shim.settled("c1").await;
    assert_eq!(
        shim.runtime.calls(),
        ["create c1", "start c1", "delete c1"],
        "libcontainer is asked to create, start and remove it, nothing else"
    );
    assert_eq!(
        shim.topics().await,
        topics(&["create", "start", "exit", "delete"])
    );
    let exit: containerd_shim_protos::events::task::TaskExit = shim.event("/tasks/exit").await;
    assert_eq!((exit.pid, exit.exit_status), (pid, 143));
}

/// In a pid namespace that is not its own, what the init leaves is killed before its exit is published (as
/// containerd's runc shim); in its own (every other test's bundle) nothing is.
#[tokio::test]
async fn in_a_shared_pid_namespace_the_inits_exit_kills_what_it_left_before_it_is_published() {
    let shim = Shim::new();
    let req = shim.create_request("c1");
    let config = std::path::Path::new(&req.bundle).join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config")).expect("json");
    spec["linux"]["namespaces"][0]["path"] = serde_json::json!("/proc/42/ns/pid");
    std::fs::write(&config, spec.to_string()).expect("config");
    let pid = shim.service.create(&ctx(), req).await.expect("create").pid;
    shim.start("c1", "").await.expect("start");
    shim.kill("c1", "", libc::SIGTERM as u32, false)
        .await
        .expect("kill");
    assert_eq!(shim.wait("c1", "").await.expect("wait"), 143);
    let exit: containerd_shim_protos::events::task::TaskExit = shim.event("/tasks/exit").await;
    assert_eq!(exit.pid, pid);
    // By the time containerd hears of the exit, the kill --all was asked for.
    assert_eq!(shim.runtime.calls(), ["create c1", "start c1", "kill c1"]);
    shim.delete("c1", "").await.expect("delete");
}

#[tokio::test]
async fn kill_all_goes_through_the_runtime_and_a_finished_process_is_not_found() {
    let shim = Shim::new();
    shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    shim.kill("c1", "", libc::SIGKILL as u32, true)
        .await
        .expect("kill --all");
    assert!(shim.runtime.calls().contains(&"kill c1".to_string()));
    assert_eq!(shim.wait("c1", "").await.expect("wait"), 137);
    // As runc's shim: a signal to a process that is gone is NotFound (containerd ignores it on stop).
    assert_eq!(
        code(shim.kill("c1", "", libc::SIGTERM as u32, false).await),
        Code::NOT_FOUND
    );
    // kill --all after the init exited: the runtime finds nothing to signal, and that is NotFound too.
    shim.runtime.fail("kill", Outcome::Refuse(Failure::Other));
    assert_eq!(
        code(shim.kill("c1", "", libc::SIGKILL as u32, true).await),
        Code::NOT_FOUND
    );
}

#[tokio::test]
async fn an_exec_lives_and_is_deleted_on_its_own() {
    let shim = Shim::new();
    let init = shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    shim.exec("c1", "e1", "/tmp").await.expect("exec");
    assert_eq!(
        shim.state("c1", "e1").await.expect("state"),
        Status::CREATED
    );
    let pid = shim.start("c1", "e1").await.expect("start exec");
    assert_ne!(pid, init);
    assert_eq!(
        shim.state("c1", "e1").await.expect("state"),
        Status::RUNNING
    );
    assert_eq!(
        code(shim.delete("c1", "e1").await),
        Code::FAILED_PRECONDITION,
        "a running exec is not deleted"
    );
    shim.kill("c1", "e1", libc::SIGKILL as u32, false)
        .await
        .expect("kill exec");
    assert_eq!(shim.wait("c1", "e1").await.expect("wait exec"), 137);
    assert_eq!(shim.delete("c1", "e1").await.expect("delete exec"), 137);
    assert_eq!(code(shim.state("c1", "e1").await), Code::NOT_FOUND);
    // The init is untouched.
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::RUNNING);
    assert_eq!(
        shim.topics().await,
        topics(&["create", "start", "exec-added", "exec-started", "exit"])
    );
    let started: containerd_shim_protos::events::task::TaskExecStarted =
        shim.event("/tasks/exec-started").await;
    assert_eq!((started.exec_id.as_str(), started.pid), ("e1", pid));
}

#[tokio::test]
async fn an_exec_writes_the_server_into_its_own_cgroup2_directory_to_start_the_grace_period() {
    let shim = Shim::new();
    // A pure v2 host whose tree holds the server at /system.slice/shim.
    let cgroup = shim.dir.path().join("cgroup");
    let own = cgroup.join("system.slice/shim");
    std::fs::create_dir_all(&own).expect("own cgroup");
    std::fs::write(cgroup.join("cgroup.controllers"), "cpu memory io pids\n").expect("controllers");
    let procs = own.join("cgroup.procs");
    std::fs::write(&procs, "").expect("cgroup.procs");
    std::fs::create_dir_all(shim.dir.path().join("proc/self")).expect("proc/self");
    std::fs::write(
        shim.dir.path().join("proc/self/cgroup"),
        "0::/system.slice/shim\n",
    )
    .expect("self");
    shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    // The create's warm-up went to the (fake) zygote; what is written from here on is the exec's.
    std::fs::write(&procs, "").expect("cleared");

    shim.exec("c1", "e1", "/").await.expect("exec");
    let mut written = String::new();
    for _ in 0..200 {
        written = std::fs::read_to_string(&procs).expect("read");
        if !written.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // "0": the writing process, the server itself, already there: nothing moves.
    assert_eq!(written, "0", "the exec's warm-up write");
    // A refused exec (an id in use) is refused before it writes.
    std::fs::write(&procs, "").expect("cleared");
    assert!(shim.exec("c1", "e1", "/").await.is_err(), "a second e1");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(std::fs::read_to_string(&procs).expect("read"), "");
}

#[tokio::test]
async fn exec_is_refused_as_runcs_shim_refuses_it() {
    let shim = Shim::new();
    shim.create("c1").await;
    // Not started yet: an exec may be added, not started.
    shim.exec("c1", "early", "/").await.expect("exec added");
    assert_eq!(
        code(shim.start("c1", "early").await),
        Code::FAILED_PRECONDITION
    );
    shim.start("c1", "").await.expect("start");
    assert_eq!(code(shim.exec("c1", "", "/").await), Code::INVALID_ARGUMENT);
    shim.exec("c1", "e1", "/").await.expect("exec");
    let spec = super::exec_spec_path(&shim.service.shared.state_root, "c1", "e1");
    let first = std::fs::read(&spec).expect("e1's spec file");
    assert_eq!(
        code(shim.exec("c1", "e1", "/tmp").await),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        std::fs::read(&spec).ok(),
        Some(first),
        "a refused Exec of e1 changed the spec e1's Start reads"
    );
    // The cwd is looked up in the container's root (the fake /proc/<pid>/root), as runc does.
    assert_eq!(
        code(shim.exec("c1", "e2", "/no/such/dir").await),
        Code::INVALID_ARGUMENT
    );
    assert_eq!(
        code(shim.exec("c1", "e3", "relative").await),
        Code::INVALID_ARGUMENT
    );
    shim.service
        .pause(
            &ctx(),
            PauseRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("pause");
    assert_eq!(
        code(shim.exec("c1", "e4", "/").await),
        Code::FAILED_PRECONDITION
    );
    assert_eq!(
        code(shim.start("c1", "e1").await),
        Code::FAILED_PRECONDITION
    );
}

#[tokio::test]
async fn pause_and_resume_move_the_state_and_are_announced() {
    let shim = Shim::new();
    shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    shim.service
        .pause(
            &ctx(),
            PauseRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("pause");
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::PAUSED);
    assert_eq!(
        code(shim.delete("c1", "").await),
        Code::FAILED_PRECONDITION,
        "a paused container is not deleted"
    );
    shim.service
        .resume(
            &ctx(),
            ResumeRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("resume");
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::RUNNING);
    assert_eq!(
        shim.topics().await,
        topics(&["create", "start", "paused", "resumed"])
    );
}

/// As runc's shim: an exec of a paused container is paused too (State); a SIGKILL to it leaves the user's pause in
/// place (only a kill of the container thaws it); an exec of a container whose init has exited is refused at Exec,
/// so no TaskExecAdded announces a process that can never start.
#[tokio::test]
async fn an_exec_follows_its_containers_pause_and_a_stopped_container_takes_no_exec() {
    let shim = Shim::new();
    shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    shim.exec("c1", "e1", "/").await.expect("exec");
    shim.start("c1", "e1").await.expect("start e1");
    let pause = PauseRequest {
        id: "c1".into(),
        ..Default::default()
    };
    shim.service.pause(&ctx(), pause).await.expect("pause");
    assert_eq!(shim.state("c1", "e1").await.expect("state"), Status::PAUSED);
    shim.kill("c1", "e1", libc::SIGKILL as u32, false)
        .await
        .expect("SIGKILL to e1");
    assert_eq!(shim.wait("c1", "e1").await.expect("wait e1"), 137);
    assert_eq!(
        shim.state("c1", "e1").await.expect("state"),
        Status::STOPPED
    );
    assert!(
        !shim.runtime.calls().iter().any(|c| c == "resume c1"),
        "a kill of one exec thawed the container: {:?}",
        shim.runtime.calls()
    );
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::PAUSED);
    // A SIGKILL to the container itself thaws it, so the kill lands on cgroup v1 too.
    shim.kill("c1", "", libc::SIGKILL as u32, false)
        .await
        .expect("SIGKILL to the init");
    shim.runtime.arrived("resume c1").await;
    assert_eq!(shim.wait("c1", "").await.expect("wait"), 137);
    let added = |topics: &[String]| topics.iter().filter(|t| *t == "/tasks/exec-added").count();
    let before = added(&shim.topics().await);
    assert_eq!(
        code(shim.exec("c1", "late", "/").await),
        Code::FAILED_PRECONDITION,
        "an exec into a stopped container"
    );
    assert_eq!(
        added(&shim.topics().await),
        before,
        "an exec-added for a refused exec"
    );
}

// --- error codes -------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_containers_and_execs_are_not_found() {
    let shim = Shim::new();
    assert_eq!(code(shim.state("nope", "").await), Code::NOT_FOUND);
    assert_eq!(code(shim.start("nope", "").await), Code::NOT_FOUND);
    assert_eq!(code(shim.kill("nope", "", 9, false).await), Code::NOT_FOUND);
    assert_eq!(code(shim.wait("nope", "").await), Code::NOT_FOUND);
    assert_eq!(code(shim.delete("nope", "").await), Code::NOT_FOUND);
    assert_eq!(code(shim.exec("nope", "e1", "/").await), Code::NOT_FOUND);
    let pids = PidsRequest {
        id: "nope".into(),
        ..Default::default()
    };
    assert_eq!(code(shim.service.pids(&ctx(), pids).await), Code::NOT_FOUND);
    shim.create("c1").await;
    assert_eq!(code(shim.state("c1", "e9").await), Code::NOT_FOUND);
    assert_eq!(code(shim.start("c1", "e9").await), Code::NOT_FOUND);
    assert_eq!(code(shim.delete("c1", "e9").await), Code::NOT_FOUND);
    match shim.state("nope", "").await {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.message(), "container nope not found"),
        other => panic!("{other:?}"),
    }
    assert!(
        shim.runtime.calls().iter().all(|c| c == "create c1"),
        "{:?}",
        shim.runtime.calls()
    );
}

#[tokio::test]
async fn create_refuses_what_it_cannot_run_and_leaves_nothing() {
    let shim = Shim::new();
    let mut req = shim.create_request("c1");
    req.id = String::new();
    assert_eq!(
        code(shim.service.create(&ctx(), req).await),
        Code::INVALID_ARGUMENT
    );
    let mut req = shim.create_request("c1");
    req.checkpoint = "/some/checkpoint".into();
    // Neither a restore nor a checkpoint is done: UNIMPLEMENTED, not "not found" (the generated default).
    assert_eq!(
        code(shim.service.create(&ctx(), req).await),
        Code::UNIMPLEMENTED
    );
    let checkpoint = containerd_shim_protos::api::CheckpointTaskRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(
        code(shim.service.checkpoint(&ctx(), checkpoint).await),
        Code::UNIMPLEMENTED
    );
    let req = CreateTaskRequest {
        id: "c2".into(),
        bundle: shim.dir.path().join("no-bundle").display().to_string(),
        ..Default::default()
    };
    assert_eq!(
        code(shim.service.create(&ctx(), req).await),
        Code::INVALID_ARGUMENT
    );
    let bad = CreateTaskRequest {
        id: "c3".into(),
        bundle: shim
            .bundle(
                "c3",
                serde_json::json!({predictive_api::annotations::PRIORITY: "urgent"}),
            )
            .display()
            .to_string(),
        ..Default::default()
    };
    match shim.service.create(&ctx(), bad).await {
        Err(ttrpc::Error::RpcStatus(s)) => {
            assert_eq!(s.code(), Code::INVALID_ARGUMENT);
            assert!(
                s.message().contains("io.predictive.priority"),
                "{}",
                s.message()
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        shim.runtime.calls().is_empty(),
        "refused before libcontainer"
    );
    shim.create("c1").await;
    let again = shim.create_request("c1");
    assert_eq!(
        code(shim.service.create(&ctx(), again).await),
        Code::ALREADY_EXISTS
    );
    assert_eq!(shim.topics().await, topics(&["create"]));
}

#[tokio::test]
async fn runtime_failures_reach_containerd_as_grpc_codes() {
    let shim = Shim::new();
    let cases = [
        (Outcome::Refuse(Failure::Invalid), Code::INVALID_ARGUMENT),
        (Outcome::Refuse(Failure::NotFound), Code::NOT_FOUND),
        (Outcome::Refuse(Failure::State), Code::FAILED_PRECONDITION),
        (Outcome::Refuse(Failure::Other), Code::UNKNOWN),
        (Outcome::Gone, Code::UNAVAILABLE),
    ];
    for (i, (outcome, want)) in cases.iter().enumerate() {
        let id = format!("c{i}");
        shim.runtime.fail("create", outcome.clone());
        let req = shim.create_request(&id);
        assert_eq!(
            code(shim.service.create(&ctx(), req).await),
            *want,
            "create #{i}"
        );
        // A failed create leaves no container behind, and the shim may exit.
        assert_eq!(code(shim.state(&id, "").await), Code::NOT_FOUND);
        assert!(shim.service.shared.idle());
    }
    shim.runtime.failures.lock().expect("lock").clear();
    shim.create("ok").await;
    shim.runtime.fail("start", Outcome::Refuse(Failure::State));
    assert_eq!(code(shim.start("ok", "").await), Code::FAILED_PRECONDITION);
    assert_eq!(shim.state("ok", "").await.expect("state"), Status::CREATED);
    shim.runtime.fail("pause", Outcome::Gone);
    let pause = PauseRequest {
        id: "ok".into(),
        ..Default::default()
    };
    assert_eq!(
        code(shim.service.pause(&ctx(), pause).await),
        Code::UNAVAILABLE
    );
    assert_eq!(
        shim.topics().await,
        topics(&["create"]),
        "no event for what failed"
    );
}

#[tokio::test]
async fn lifecycle_mistakes_are_failed_preconditions() {
    let shim = Shim::new();
    shim.create("c1").await;
    let pids = PidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    shim.start("c1", "").await.expect("start");
    assert_eq!(
        code(shim.start("c1", "").await),
        Code::FAILED_PRECONDITION,
        "started twice"
    );
    assert_eq!(
        code(shim.delete("c1", "").await),
        Code::FAILED_PRECONDITION,
        "running"
    );
    // No cgroup to list (the temp dir has none): the container's state, not the request, is at fault.
    assert_eq!(
        code(shim.service.pids(&ctx(), pids).await),
        Code::FAILED_PRECONDITION
    );
    let bad = KillRequest {
        id: "c1".into(),
        signal: 99,
        ..Default::default()
    };
    assert_eq!(
        code(shim.service.kill(&ctx(), bad).await),
        Code::INVALID_ARGUMENT
    );
    assert!(shim.runtime.signals.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_real_time_signal_or_0_reaches_the_process_and_one_past_sigrtmax_is_refused() {
    let shim = Shim::new();
    let pid = shim.create("c1").await as i32;
    shim.start("c1", "").await.expect("start");
    // systemd's stop signal (SIGRTMIN+3), the last real-time one, and 0 (does it exist?): runc sends any of them.
    for signal in [37, 64, 0] {
        shim.kill("c1", "", signal, false)
            .await
            .unwrap_or_else(|e| panic!("signal {signal}: {e:?}"));
    }
    assert_eq!(
        *shim.runtime.signals.lock().expect("lock"),
        vec![(pid, 37), (pid, 64), (pid, 0)]
    );
    assert_eq!(
        code(shim.kill("c1", "", 65, false).await),
        Code::INVALID_ARGUMENT
    );
    // A resize of a process without a terminal sets nothing and is no error, as with runc's shim (Docker's resize
    // API sends one for any container).
    let resize = ResizePtyRequest {
        id: "c1".into(),
        width: 80,
        height: 24,
        ..Default::default()
    };
    shim.service
        .resize_pty(&ctx(), resize)
        .await
        .expect("resize without a terminal");
    shim.kill("c1", "", libc::SIGKILL as u32, false)
        .await
        .expect("kill");
    assert_eq!(shim.wait("c1", "").await.expect("wait"), 137);
    assert_eq!(shim.delete("c1", "").await.expect("delete"), 137);
    shim.settled("c1").await;
}

// --- delete after the reply ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_settled_delete_replies_first_and_a_new_create_of_the_id_waits_for_it() {
    let shim = Arc::new(Shim::new());
    shim.create("c1").await;
    shim.start("c1", "").await.expect("start");
    shim.kill("c1", "", libc::SIGKILL as u32, false)
        .await
        .expect("kill");
    shim.wait("c1", "").await.expect("wait");
    shim.runtime.hold("delete");
    // Everything has exited: the reply comes while libcontainer's delete is still held.
    assert_eq!(shim.delete("c1", "").await.expect("delete"), 137);
    shim.runtime.arrived("delete c1").await;
    assert!(shim.runtime.done().iter().all(|c| c != "delete c1"));
    assert_eq!(code(shim.state("c1", "").await), Code::NOT_FOUND);
    assert!(shim.topics().await.ends_with(&topics(&["delete"])));
    // Not idle: containerd's Shutdown must not end the shim under the delete.
    assert!(!shim.service.shared.idle());
    shim.shutdown().await;
    assert!(!shim.told_to_exit().await);
    // The same id again: its Create reaches libcontainer only after the old delete is done.
    let again = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.create("c1").await })
    };
    tokio::task::yield_now().await;
    shim.runtime.release("delete");
    again.await.expect("create again");
    let calls = shim.runtime.done();
    let deleted = calls
        .iter()
        .position(|c| c == "delete c1")
        .expect("deleted");
    let created = calls
        .iter()
        .rposition(|c| c == "create c1")
        .expect("created");
    assert!(deleted < created, "{calls:?}");
}

#[tokio::test]
async fn a_force_delete_replies_only_after_the_runtime_removed_the_container() {
    let shim = Arc::new(Shim::new());
    shim.create("c1").await;
    // Created, never started: the delete must kill it, before the reply.
    shim.runtime.hold("delete");
    let delete = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.delete("c1", "").await })
    };
    shim.runtime.arrived("delete c1").await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !delete.is_finished(),
        "replied before libcontainer's delete was done"
    );
    shim.runtime.release("delete");
    assert_eq!(delete.await.expect("join").expect("delete"), 137);
    assert!(shim.service.shared.idle());
    assert_eq!(shim.topics().await, topics(&["create", "exit", "delete"]));
}

// --- idle exit ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_shim_exits_after_shutdown_once_its_last_container_is_deleted() {
    let shim = Shim::new();
    shim.create("c1").await;
    shim.create("c2").await;
    shim.shutdown().await;
    assert!(!shim.told_to_exit().await, "two containers left");
    for id in ["c1", "c2"] {
        shim.kill(id, "", libc::SIGKILL as u32, true)
            .await
            .expect("kill");
        shim.wait(id, "").await.expect("wait");
        shim.delete(id, "").await.expect("delete");
        shim.settled(id).await;
        if id == "c1" {
            assert!(!shim.told_to_exit().await, "c2 is left");
        }
    }
    assert!(shim.told_to_exit().await, "nothing left after Shutdown");
}

#[tokio::test]
async fn without_shutdown_an_idle_shim_stays_and_with_nothing_it_goes_at_once() {
    let shim = Shim::new();
    shim.create("c1").await;
    shim.kill("c1", "", libc::SIGKILL as u32, true)
        .await
        .expect("kill");
    shim.wait("c1", "").await.expect("wait");
    shim.delete("c1", "").await.expect("delete");
    shim.settled("c1").await;
    assert!(shim.service.shared.idle());
    assert!(!shim.told_to_exit().await, "containerd did not ask");
    shim.shutdown().await;
    assert!(shim.told_to_exit().await);
}

#[tokio::test]
async fn a_create_in_flight_holds_off_the_exit() {
    let shim = Arc::new(Shim::new());
    shim.runtime.hold("create");
    let create = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.create("c1").await })
    };
    shim.runtime.arrived("create c1").await;
    shim.shutdown().await;
    assert!(!shim.told_to_exit().await, "a Create is under way");
    shim.runtime.release("create");
    create.await.expect("create");
    assert!(!shim.told_to_exit().await, "and now it has a container");
    assert_eq!(shim.state("c1", "").await.expect("state"), Status::CREATED);
}

// --- nothing blocking on the runtime thread ------------------------------------------------------------------

/// A v1 host with systemd's named hierarchy: container c1's init, in memory:/default/c1, joins name=systemd at that
/// path, whose `cgroup.procs` (returned) is a fifo: the move waits until someone reads it, as a real one waits for
/// the kernel.
fn held_named_move(shim: &Shim) -> PathBuf {
    let cgroup = shim.dir.path().join("cgroup");
    std::fs::write(
        shim.dir.path().join("mountinfo"),
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
         34 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
    )
    .expect("mountinfo");
    std::fs::create_dir_all(cgroup.join("memory/default/c1")).expect("memory cgroup");
    let dir = cgroup.join("systemd/default/c1");
    std::fs::create_dir_all(&dir).expect("systemd cgroup");
    let procs = dir.join("cgroup.procs");
    nix::unistd::mkfifo(&procs, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    *shim.runtime.proc_cgroup.lock().expect("lock") =
        Some("4:memory:/default/c1\n1:name=systemd:/user.slice\n".into());
    procs
}

#[tokio::test]
async fn moving_the_init_into_its_cgroups_leaves_the_runtime_thread_free() {
    let shim = Arc::new(Shim::new());
    let procs = held_named_move(&shim);

    // The reader reads only when the test's task, on the runtime thread, says so; if the runtime thread were
    // stuck in the move it never would, and the reader unblocks the move itself after a long while and says so.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let reader = {
        let procs = procs.clone();
        std::thread::spawn(move || {
            let stalled = wait
                .recv_timeout(std::time::Duration::from_secs(30))
                .is_err();
            let text = std::fs::read_to_string(&procs).expect("reading the fifo");
            (stalled, text)
        })
    };
    // The move comes after Create's reply ([`super::Container::set_up`]); the Start waits for it.
    let pid = shim.create("c1").await;
    let start = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.start("c1", "").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    go.send(()).expect("reader");
    let started = tokio::time::timeout(std::time::Duration::from_secs(60), start).await;
    if started.is_err() {
        // A move that never came would leave the reader waiting for a writer: open and close one (no reader:
        // ENXIO).
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&procs);
    }
    let (stalled, text) = reader.join().expect("reader");
    assert!(started.is_ok(), "the Start never came");
    assert!(
        !stalled,
        "the runtime thread was blocked while the init moved into its cgroup"
    );
    assert_eq!(text, pid.to_string(), "the init was moved");
}

/// Create replies once libcontainer made the init; the init's moves into its companion cgroups run after the reply
/// (they wait for the kernel) and the Start waits for them, so the process never runs outside its cgroups.
#[tokio::test]
async fn create_replies_before_the_inits_companion_moves_and_start_waits_for_them() {
    let shim = Arc::new(Shim::new());
    let procs = held_named_move(&shim);

    let created = tokio::time::timeout(std::time::Duration::from_secs(20), shim.create("c1")).await;
    if created.is_err() {
        // Let the waiting move go (a reader that opens and leaves), so the test fails instead of hanging.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&procs);
    }
    let pid =
        created.expect("Create replied while the init's move into name=systemd was still waiting");
    let start = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.start("c1", "").await })
    };
    // However long the move takes, the runtime is not asked to start the init before it is done.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !shim.runtime.calls().iter().any(|c| c == "start c1"),
        "the init was started before it was in its cgroups: {:?}",
        shim.runtime.calls()
    );
    let moved = std::fs::read_to_string(&procs).expect("reading the fifo");
    assert_eq!(moved, pid.to_string(), "the init was moved");
    let started = tokio::time::timeout(std::time::Duration::from_secs(20), start)
        .await
        .expect("Start went on once the move was done")
        .expect("start task");
    assert_eq!(started.expect("start"), pid);
    assert!(shim.runtime.calls().iter().any(|c| c == "start c1"));
}

/// Task.Pids names an exec's process by its exec id as runc's shim does (what `ctr task ps` prints and decodes by
/// its type URL); the init and the processes they started carry nothing.
#[test]
fn pids_name_an_execs_process() {
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::shim::oci::ProcessDetails;
    let execs = [(42, "ps-1".to_owned()), (43, "shell".to_owned())];
    let exec = super::process_info(43, &execs).expect("encodes");
    assert_eq!(exec.pid, 43);
    let any = exec.info.as_ref().expect("an exec's process has details");
    assert_eq!(any.type_url, "containerd.runc.v1.ProcessDetails");
    let details = ProcessDetails::parse_from_bytes(&any.value).expect("decodes");
    assert_eq!(details.exec_id, "shell");
    for other in [7, 44] {
        let info = super::process_info(other, &execs).expect("encodes");
        assert_eq!(info.pid, other as u32);
        assert!(info.info.is_none(), "pid {other} is no exec's: {info:?}");
    }
}
