//! Kubernetes end to end through CRI: containerd's CRI plugin with a `predictive` runtime handler, driven by a CRI
//! v1 client the way kubelet drives it for a pod with `runtimeClassName: predictive` (see `predictive_e2e::cri`).
//! Root only; `SKIPPED:` otherwise. Runs on every containerd version of the suite (config version 2 on 1.6/1.7,
//! version 3 on 2.x).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use predictive_e2e::cmd::wait_until;
use predictive_e2e::cri::{self, HANDLER, NAMESPACE, in_container};
use predictive_e2e::settings::{IMAGE, Settings};
use predictive_e2e::{Containerd, clean, require_root};
use serde_json::{Value, json};

/// `io.containerd.predictive.v2` -> `containerd-shim-predictive-v2`.
fn shim_binary(runtime: &str) -> String {
    let mut parts: Vec<&str> = runtime.split('.').collect();
    let version = parts.pop().unwrap_or_default();
    let name = parts.pop().unwrap_or_default();
    format!("containerd-shim-{name}-{version}")
}

/// Entries under `root` (at most `depth` levels) named after one of `ids`.
fn named(root: &Path, ids: &[&str], depth: u32, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| name.starts_with(id)) {
            out.push(e.path().display().to_string());
        } else if depth > 1 && e.file_type().is_ok_and(|t| t.is_dir()) {
            named(&e.path(), ids, depth - 1, out);
        }
    }
}

fn ctr_runtime(c: &Containerd, id: &str) -> String {
    let info = c.ctr(&["c", "info", id]).expect_ok("ctr c info");
    let v: Value = serde_json::from_str(&info.stdout).expect("c info prints JSON");
    v["Runtime"]["Name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A containerd with the CRI plugin and our handler, and a CRI client to it: what kubelet talks to.
struct Node {
    c: Containerd,
    api: cri::CriClient,
    logs: PathBuf,
    /// The pods' cgroup parent ([`Containerd::own_cgroup_parent`]).
    parent: String,
}

impl Node {
    /// `None` when the test cannot run here (it printed why).
    fn start(test: &str) -> Option<Node> {
        if !require_root(test) {
            return None;
        }
        let settings = Settings::from_env();
        let (pause, dropin) = cri::prepared(&settings, test);
        assert!(
            dropin.contains(&format!("runtimes.{HANDLER}]")),
            "the drop-in names no {HANDLER} handler:\n{dropin}"
        );
        let version = settings.containerd.clone();
        let mut c =
            Containerd::start_with_config(test, &|dir| cri::config(dir, &version, &dropin))?;
        // The CRI plugin works in its own namespace; the clean-host checks follow it there. The pods' cgroups go
        // under this test's own parent, where those checks look: tests that run at the same time never see (or
        // scrub) each other's containers, as they would under a shared /k8s.io.
        c.ns = NAMESPACE.to_string();
        let parent = c.own_cgroup_parent();
        let api = cri::ready_client(&mut c, &pause);
        let logs = c.dir.join("pod-logs");
        std::fs::create_dir_all(&logs).expect("creating the pod log dir");
        Some(Node {
            c,
            api,
            logs,
            parent,
        })
    }

    /// A pod config named `name`, of task type `task_type`, under the test's own cgroup parent.
    fn pod(&self, name: &str, task_type: &str) -> Value {
        cri::pod_config(
            name,
            &format!("{name}-{}", std::process::id()),
            "default",
            &self.logs,
            &self.parent,
            json!({"io.predictive.task-type": task_type}),
        )
    }

    /// Runs pod `pod` with a started `sleep` container per name: the sandbox id and the container ids.
    fn run_sleepers(&self, pod: &Value, names: &[&str]) -> (String, Vec<String>) {
        let sid = self.api.run_pod(&self.c, pod, HANDLER);
        let ids = names
            .iter()
            .map(|name| self.run_container(&sid, pod, name, &["sleep", "100000"], json!({})))
            .collect();
        (sid, ids)
    }

    /// Creates and starts container `name` running `command` with CRI `linux` settings in sandbox `sid` (of pod
    /// `pod`): its id.
    fn run_container(
        &self,
        sid: &str,
        pod: &Value,
        name: &str,
        command: &[&str],
        linux: Value,
    ) -> String {
        let cid = self.api.create_container(
            &self.c,
            sid,
            json!({
                "metadata": {"name": name},
                "image": {"image": IMAGE},
                "command": command,
                "log_path": format!("{name}.log"),
                "linux": linux
            }),
            pod,
        );
        self.api
            .call("StartContainer", json!({"container_id": cid}));
        cid
    }

    fn status(&self, cid: &str) -> Value {
        self.api
            .call("ContainerStatus", json!({"container_id": cid}))["status"]
            .clone()
    }

    fn state(&self, cid: &str) -> String {
        self.status(cid)["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn pod_state(&self, sid: &str) -> String {
        self.api
            .call("PodSandboxStatus", json!({"pod_sandbox_id": sid}))["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Kubelet's teardown of a pod: stop it, remove its containers, remove it; then no container is listed.
    fn remove_pod(&self, sid: &str, ids: &[String]) {
        self.api
            .call("StopPodSandbox", json!({"pod_sandbox_id": sid}));
        for cid in ids {
            self.api
                .call("RemoveContainer", json!({"container_id": cid}));
        }
        self.api
            .call("RemovePodSandbox", json!({"pod_sandbox_id": sid}));
        let left = self.api.call("ListContainers", json!({}));
        assert_eq!(left["containers"], json!([]), "{left}");
    }

    /// The running `sleep` of container `cid`.
    fn sleep_of(cid: &str) -> i32 {
        in_container(cid, "sleep 100000")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("the sleep of {cid} is not running"))
    }
}

#[test]
fn cri_pod_sandbox_and_container_share_one_shim() {
    let Some(Node {
        c,
        api,
        logs,
        parent,
    }) = Node::start("cri_pod_sandbox_and_container_share_one_shim")
    else {
        return;
    };
    let v = api.call("Version", json!({}));
    assert_eq!(v["runtime_api_version"], "v1", "{v}");

    let pod = cri::pod_config(
        "pe2e-cri",
        &format!("pe2e-{}", std::process::id()),
        "default",
        &logs,
        &parent,
        json!({"io.predictive.task-type": "cri-hello"}),
    );
    let sid = api.run_pod(&c, &pod, HANDLER);
    let cid = api.create_container(
        &c,
        &sid,
        json!({
            "metadata": {"name": "hello"},
            "image": {"image": IMAGE},
            "command": ["sh", "-c", "echo hello from a pod; echo to-stderr >&2; sleep 100000"],
            "log_path": "hello.log"
        }),
        &pod,
    );
    api.call("StartContainer", json!({"container_id": cid}));

    // The container's output, in the CRI log format kubelet reads (`<time> stdout F <line>`).
    let log_file = logs.join("hello.log");
    let log = wait_until(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        text.contains("to-stderr").then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no output in {}: {:?}",
            log_file.display(),
            std::fs::read_to_string(&log_file)
        )
    });
    let lines: Vec<(&str, &str)> = log
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            (f.len() == 4).then(|| (f[1], f[3]))
        })
        .collect();
    assert!(lines.contains(&("stdout", "hello from a pod")), "{log}");
    assert!(lines.contains(&("stderr", "to-stderr")), "{log}");

    let status = api.call("ContainerStatus", json!({"container_id": cid}));
    assert_eq!(status["status"]["state"], "CONTAINER_RUNNING", "{status}");
    let pod_status = api.call("PodSandboxStatus", json!({"pod_sandbox_id": sid}));
    assert_eq!(
        pod_status["status"]["state"], "SANDBOX_READY",
        "{pod_status}"
    );

    // The drop-in's pod_annotations hand the pod's io.predictive.* annotations to the runtime.
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(c.bundle(&cid).join("config.json"))
            .expect("the bundle's config.json"),
    )
    .expect("config.json is JSON");
    assert_eq!(
        spec["annotations"]["io.predictive.task-type"], "cri-hello",
        "{}",
        spec["annotations"]
    );

    // containerd recorded our runtime for both, and one shim process serves the whole pod.
    for id in [&sid, &cid] {
        assert_eq!(ctr_runtime(&c, id), c.runtime(), "runtime of {id}");
    }
    let shims = c.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "sandbox and container must share one shim: {shims:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", shims[0]))
        .map(|r| String::from_utf8_lossy(&r).replace('\0', " "))
        .unwrap_or_default();
    let binary = cmdline.split_whitespace().next().unwrap_or_default();
    assert!(
        binary.ends_with(&shim_binary(c.runtime())),
        "shim {}: {cmdline}",
        shims[0]
    );
    assert!(
        cmdline.contains(&format!("-id {sid}")),
        "the pod's shim is the sandbox's: {cmdline}"
    );
    // The container's init is a descendant of that shim (directly or through its helper).
    let init = in_container(&cid, "sleep 100000")
        .into_iter()
        .next()
        .expect("the container's sleep is running");
    let mut p = init;
    while p != shims[0] && p > 1 {
        p = clean::parent_of(p).unwrap_or(1);
    }
    assert_eq!(
        p, shims[0],
        "container init {init} is not under shim {}",
        shims[0]
    );

    // Tear down as kubelet does, then nothing is left.
    api.call("StopContainer", json!({"container_id": cid, "timeout": 10}));
    let status = api.call("ContainerStatus", json!({"container_id": cid}));
    assert_eq!(status["status"]["state"], "CONTAINER_EXITED", "{status}");
    api.call("RemoveContainer", json!({"container_id": cid}));
    api.call("StopPodSandbox", json!({"pod_sandbox_id": sid}));
    api.call("RemovePodSandbox", json!({"pod_sandbox_id": sid}));
    let left = api.call("ListContainers", json!({}));
    assert_eq!(left["containers"], json!([]), "{left}");
    let left = api.call("ListPodSandbox", json!({}));
    assert_eq!(left["items"], json!([]), "{left}");
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    let gone = wait_until(Duration::from_secs(15), || {
        c.shim_processes().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the pod's shim did not exit: {:?}",
        c.shim_processes()
    );
    let mut found = Vec::new();
    named(&c.dir.join("root"), &[&sid, &cid], 4, &mut found);
    assert!(found.is_empty(), "CRI state left: {found:?}");
    c.finish();
}

/// A pod's shim killed with SIGKILL (its server and zygote; kubelet's node under memory pressure, an operator's
/// `kill -9`): kubelet sees the sandbox not ready and both containers exited, the broker lets both go, kubelet's
/// teardown succeeds and leaves nothing behind (containerd runs the shim binary's `delete` for each container of
/// the group as soon as their connections close, while the killed server's listening socket may still take
/// connections), and the node runs the next pod.
#[test]
fn a_killed_pods_shim_ends_its_containers_for_kubelet() {
    const TEST: &str = "a_killed_pods_shim_ends_its_containers_for_kubelet";
    let Some(node) = Node::start(TEST) else {
        return;
    };
    let broker =
        (node.c.runtime() == "io.containerd.predictive.v2").then(|| node.c.broker_socket());
    let registered = |ids: &[String]| -> Option<usize> {
        let sock = broker.clone()?;
        let st = broker::client::Client::new(sock, Duration::from_secs(5))
            .status()
            .ok()?;
        Some(
            st.tasks
                .iter()
                .filter(|t| {
                    ids.iter()
                        .any(|id| t.container_id == predictive_e2e::cri::broker_id(id))
                })
                .count(),
        )
    };

    let (sid, ids) = node.run_sleepers(&node.pod("pe2e-k9", "cri-k9"), &["a", "b"]);
    for cid in &ids {
        assert_eq!(node.state(cid), "CONTAINER_RUNNING", "{cid}");
    }
    if broker.is_some() {
        let both = wait_until(Duration::from_secs(5), || {
            (registered(&ids) == Some(2)).then_some(())
        });
        assert!(both.is_some(), "the broker does not hold both containers");
    }
    let shims = node.c.shim_processes();
    assert!(!shims.is_empty(), "no shim process serves the pod");
    for p in &shims {
        // SAFETY: killing the shim processes of this test's own containerd.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    let killed = std::time::Instant::now();
    let released = broker.as_ref().map(|_| {
        wait_until(Duration::from_secs(5), || {
            (registered(&ids) == Some(0)).then(|| killed.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "the broker still holds {:?} of the killed pod's containers",
                registered(&ids)
            )
        })
    });
    let exited = wait_until(Duration::from_secs(10), || {
        (node.pod_state(&sid) == "SANDBOX_NOTREADY"
            && ids.iter().all(|cid| node.state(cid) == "CONTAINER_EXITED"))
        .then(|| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "10 s after the pod's shim was killed kubelet would still see pod {} and containers {:?}",
            node.pod_state(&sid),
            ids.iter().map(|cid| node.state(cid)).collect::<Vec<_>>()
        )
    });
    println!(
        "pod shim killed ({} processes): kubelet would see the pod not ready and both containers exited after \
         {exited:?}; the broker let both go after {released:?}",
        shims.len()
    );
    node.remove_pod(&sid, &ids);

    // The node runs the next pod, as kubelet would start it again.
    let (sid, ids) = node.run_sleepers(&node.pod("pe2e-k9-again", "cri-k9"), &["c"]);
    assert_eq!(node.state(&ids[0]), "CONTAINER_RUNNING");
    node.remove_pod(&sid, &ids);
    // What a killed shim left is the runtime's to clean (runc v2 leaves its containers' state and cgroups here:
    // printed, not asserted, so the suite can still be run against it).
    if node.c.runtime() == "io.containerd.predictive.v2" {
        node.c.finish();
    } else {
        let runtime = node.c.runtime().to_owned();
        println!("{TEST}: left by {runtime}: {:?}", node.c.finish_report());
    }
}

/// containerd killed and started again under a running pod (a crash, or an upgrade as kubelet's node sees it): the
/// CRI plugin finds the pod ready and its running container running through the same shim, learns of the
/// container that died while it was down, execs and stops through the shim after the restart, and kubelet's
/// teardown leaves nothing behind.
#[test]
fn cri_pod_survives_a_containerd_restart() {
    let Some(mut node) = Node::start("cri_pod_survives_a_containerd_restart") else {
        return;
    };
    let (sid, ids) = node.run_sleepers(&node.pod("pe2e-restart", "cri-restart"), &["live", "dies"]);
    let (live, dies) = (&ids[0], &ids[1]);
    let shims = node.c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim serves the pod: {shims:?}");
    let doomed = Node::sleep_of(dies);

    node.c.kill_containerd();
    // SAFETY: killing a process of this test's own container while containerd is down.
    unsafe { libc::kill(doomed, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    node.c.start_containerd_again();
    let restarted = std::time::Instant::now();
    let up = wait_until(Duration::from_secs(30), || {
        node.api.try_call("Version", &json!({})).ok().then_some(())
    });
    assert!(up.is_some(), "the CRI plugin did not come back");

    let settled = wait_until(Duration::from_secs(10), || {
        (node.pod_state(&sid) == "SANDBOX_READY"
            && node.state(live) == "CONTAINER_RUNNING"
            && node.state(dies) == "CONTAINER_EXITED")
            .then(|| restarted.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "after the restart: pod {}, {live} {}, {dies} {}",
            node.pod_state(&sid),
            node.status(live),
            node.status(dies)
        )
    });
    // containerd 1.6 has the shim's 137; 1.7 and 2.1 record a task that ended while they were down with the
    // unknown exit code 255 (runc v2's shim the same, 2026-12-03).
    let code = node.status(dies)["exit_code"].as_i64();
    assert!(
        matches!(code, Some(137 | 255)),
        "the container killed while containerd was down exited {code:?}"
    );
    assert_eq!(node.c.shim_pids(), shims, "the same shim serves the pod");
    let exec = node.api.call(
        "ExecSync",
        json!({"container_id": live, "cmd": ["sh", "-c", "exit 7"], "timeout": 10}),
    );
    assert_eq!(exec["exit_code"], 7, "ExecSync after the restart: {exec}");
    node.api
        .call("StopContainer", json!({"container_id": live, "timeout": 2}));
    assert_eq!(node.state(live), "CONTAINER_EXITED");
    println!(
        "containerd restarted under a pod: CRI saw both containers right after {settled:?} (the dead one's exit \
         code {code:?})"
    );

    node.remove_pod(&sid, &ids);
    let gone = wait_until(Duration::from_secs(15), || {
        node.c.shim_processes().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the pod's shim did not exit: {:?}",
        node.c.shim_processes()
    );
    node.c.finish();
}

/// A pod with `shareProcessNamespace: true` (kubelet: pid namespace mode POD for the sandbox and every
/// container): when a container's init exits, what it started in the pod's namespace is gone at once and the pod's
/// other container is untouched. The CRI plugin deletes an exited task with a kill of what is left, so this holds
/// even without the shim's own kill at the init's exit (which `parity.rs` checks where nobody deletes at once).
#[test]
fn a_pods_shared_pid_namespace_loses_what_an_exited_container_left() {
    let Some(node) = Node::start("a_pods_shared_pid_namespace_loses_what_an_exited_container_left")
    else {
        return;
    };
    let mut pod = node.pod("pe2e-sharedpid", "cri-sharedpid");
    pod["linux"]["security_context"]["namespace_options"]["pid"] = json!("POD");
    let sid = node.api.run_pod(&node.c, &pod, HANDLER);
    let shared = json!({"security_context": {"namespace_options": {"pid": "POD"}}});
    // The peer's init is a shell, so that its `sleep` is a child in the shared namespace too.
    let ids: Vec<String> = [
        ("peer", "sleep 100000 & wait"),
        // A child that would outlive the init, which exits once the child surely runs.
        ("app", "sleep 100000 & sleep 1; exit 0"),
    ]
    .into_iter()
    .map(|(name, script)| {
        let cid = node.api.create_container(
            &node.c,
            &sid,
            json!({
                "metadata": {"name": name},
                "image": {"image": IMAGE},
                "command": ["sh", "-c", script],
                "log_path": format!("{name}.log"),
                "linux": shared
            }),
            &pod,
        );
        node.api
            .call("StartContainer", json!({"container_id": cid}));
        cid
    })
    .collect();
    let app = ids[1].clone();
    let exited = wait_until(Duration::from_secs(20), || {
        (node.state(&app) == "CONTAINER_EXITED").then_some(Instant::now())
    })
    .expect("the app container exits");
    let left = || in_container(&app, "sleep 100000");
    let ended = wait_until(Duration::from_secs(5), || left().is_empty().then_some(()));
    assert!(
        ended.is_some(),
        "{}: the exited app's child still runs: {:?}",
        node.c.runtime(),
        left()
    );
    println!(
        "{}: the app's child was gone {:?} after CRI reported the app exited",
        node.c.runtime(),
        exited.elapsed()
    );
    // The peer shares the namespace and runs on.
    assert_eq!(node.state(&ids[0]), "CONTAINER_RUNNING");
    Node::sleep_of(&ids[0]);
    node.remove_pod(&sid, &ids);
    node.c.finish();
}

/// Kubelet's exec probe with `timeoutSeconds` (CRI ExecSync with a timeout): a probe that hangs is killed by the CRI
/// plugin at its timeout (a Kill of the exec's process through the shim), ExecSync returns DEADLINE_EXCEEDED, the
/// probe's process is gone from the container, and the next probe runs. (A probe whose command leaves a child
/// holding its output is held until containerd's `drain_exec_sync_io_timeout`, under runc's shim too: containerd's
/// choice, not tested here.)
#[test]
fn an_exec_probe_that_times_out_is_ended_and_the_next_one_runs() {
    let Some(node) = Node::start("an_exec_probe_that_times_out_is_ended_and_the_next_one_runs")
    else {
        return;
    };
    let (sid, ids) = node.run_sleepers(&node.pod("pe2e-probe", "cri-probe"), &["app"]);
    let app = &ids[0];
    let probes = || in_container(app, "sleep 4242");
    for round in 0..2 {
        let started = Instant::now();
        let out = node.api.try_call(
            "ExecSync",
            &json!({"container_id": app, "cmd": ["sleep", "4242"], "timeout": 1}),
        );
        let took = started.elapsed();
        println!(
            "{}: a hung probe with timeout 1 s returned after {took:?}",
            node.c.runtime()
        );
        assert!(
            !out.ok() && out.stderr.contains("DEADLINE_EXCEEDED"),
            "round {round}: ExecSync of a hung probe did not time out: {out}"
        );
        assert!(
            took < Duration::from_secs(10),
            "round {round}: ExecSync took {took:?}: {out}"
        );
        let left = wait_until(Duration::from_secs(10), || {
            probes().is_empty().then_some(())
        });
        assert!(
            left.is_some(),
            "round {round}: the timed-out probe still runs: {:?}",
            probes()
        );
        let next = node.api.call(
            "ExecSync",
            json!({"container_id": app, "cmd": ["sh", "-c", "exit 3"], "timeout": 5}),
        );
        assert_eq!(
            next["exit_code"], 3,
            "round {round}: the next probe: {next}"
        );
    }
    assert_eq!(node.state(app), "CONTAINER_RUNNING");
    node.remove_pod(&sid, &ids);
    node.c.finish();
}

/// The `/proc/self/status` fields a security context sets: `(Seccomp, NoNewPrivs, CapEff)`.
fn confinement(status: &str) -> (String, String, String) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("NoNewPrivs:"), field("CapEff:"))
}

/// The two security contexts every cluster runs: a pod of Pod Security's `restricted` level as kubelet sends it
/// (runAsUser 1000, no privilege escalation, all capabilities dropped, the `RuntimeDefault` seccomp profile, a
/// read-only root, kubelet's masked and read-only `/proc` paths) is confined by each; a `privileged` one (CNI agents,
/// kube-proxy, CSI node plugins) gets every capability, the host's devices, no seccomp filter and may mount.
#[test]
fn restricted_and_privileged_pods_get_what_their_security_context_says() {
    let Some(node) =
        Node::start("restricted_and_privileged_pods_get_what_their_security_context_says")
    else {
        return;
    };
    let masked = [
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    let read_only = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
    let pod = node.pod("pe2e-restricted", "cri-restricted");
    let sid = node.api.run_pod(&node.c, &pod, HANDLER);
    let restricted = node.run_container(
        &sid,
        &pod,
        "restricted",
        &["sleep", "100000"],
        json!({"security_context": {
            "run_as_user": {"value": 1000}, "run_as_group": {"value": 1000},
            "no_new_privs": true,
            "capabilities": {"drop_capabilities": ["ALL"]},
            "readonly_rootfs": true,
            "seccomp": {"profile_type": "RuntimeDefault"},
            "masked_paths": masked, "readonly_paths": read_only
        }}),
    );
    let exec = |cid: &str, script: &str| node.api.exec_sync(cid, &["sh", "-c", script], 20);
    let status = exec(&restricted, "cat /proc/self/status");
    assert_eq!(
        confinement(&status.stdout),
        ("2".into(), "1".into(), "0000000000000000".into()),
        "the restricted container's seccomp filter, no_new_privs and capabilities: {status:?}"
    );
    let id = exec(&restricted, "id -u; id -g");
    assert_eq!(id.stdout, "1000\n1000\n", "{id:?}");
    let root = exec(&restricted, "touch /made");
    assert!(
        root.exit_code != 0 && root.stderr.contains("Read-only file system"),
        "a write to the read-only root: {root:?}"
    );
    // RuntimeDefault refuses a new user namespace without CAP_SYS_ADMIN (the kernel here would allow it).
    let userns = exec(&restricted, "unshare -U true");
    assert!(
        userns.exit_code != 0 && userns.stderr.contains("Operation not permitted"),
        "unshare under RuntimeDefault: {userns:?}"
    );
    // A masked file reads empty (the kernel's has text on the host; which exist depends on its configuration).
    let shown = masked
        .iter()
        .find(|p| std::fs::read(p).is_ok_and(|text| !text.is_empty()))
        .expect("a masked /proc file with text on the host");
    let hidden = exec(
        &restricted,
        &format!("wc -c < {shown}; grep -c ' /proc/sys ro,' /proc/self/mountinfo"),
    );
    assert_eq!(
        hidden.stdout, "0\n1\n",
        "masked {shown}, read-only /proc/sys: {hidden:?}"
    );

    // containerd kills each ExecSync's process after its exit (its delete does): the shim answers "already
    // finished" as runc's does, without a warning per exec probe in the node's log, nor a line per exec's exit
    // (no container has exited yet: every such line would be an exec's).
    let log = std::fs::read_to_string(node.c.dir.join("containerd.log")).unwrap_or_default();
    let per_exec: Vec<&str> = log
        .lines()
        .filter(|l| {
            (l.contains("WARN") && l.contains("op=\"kill\"")) || l.contains("process exited")
        })
        .collect();
    assert!(
        per_exec.is_empty(),
        "lines in the node's log per exec: {per_exec:?}"
    );

    // Privileged: kubelet marks the sandbox privileged too (containerd refuses a privileged container otherwise).
    let mut ppod = node.pod("pe2e-privileged", "cri-privileged");
    ppod["linux"]["security_context"]["privileged"] = json!(true);
    let psid = node.api.run_pod(&node.c, &ppod, HANDLER);
    let privileged = node.run_container(
        &psid,
        &ppod,
        "privileged",
        &["sleep", "100000"],
        json!({"security_context": {"privileged": true}}),
    );
    let host_caps = std::fs::read_to_string("/proc/self/status")
        .map(|s| confinement(&s).2)
        .unwrap_or_default();
    let status = exec(&privileged, "cat /proc/self/status");
    assert_eq!(
        confinement(&status.stdout),
        ("0".into(), "0".into(), host_caps),
        "the privileged container: no seccomp filter, and every capability root has on the host: {status:?}"
    );
    // A block device of the host that root may open there: its node is in the privileged container and opens
    // (the device cgroup allows every device); the restricted container has no such node.
    let disk = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .find(|d| std::fs::File::open(d).is_ok())
        .expect("a block device root can open on the host");
    let open = exec(
        &privileged,
        &format!("head -c 1 {disk} > /dev/null && echo opened"),
    );
    assert_eq!(
        open.stdout, "opened\n",
        "opening {disk} in the privileged container: {open:?}"
    );
    let absent = exec(&restricted, &format!("test -e {disk} || echo absent"));
    assert_eq!(
        absent.stdout, "absent\n",
        "{disk} in the restricted container: {absent:?}"
    );
    let mount = exec(
        &privileged,
        "mkdir -p /mnt/t && mount -t tmpfs pe2e /mnt/t && echo ok > /mnt/t/f && cat /mnt/t/f && umount /mnt/t \
         && grep -c ' /sys rw,' /proc/self/mountinfo",
    );
    assert_eq!(
        mount.stdout, "ok\n1\n",
        "a mount and a writable /sys in the privileged container: {mount:?}"
    );

    // Kubelet's teardown of both; the last one checks that no container is left.
    node.api
        .call("StopPodSandbox", json!({"pod_sandbox_id": sid}));
    node.api
        .call("RemoveContainer", json!({"container_id": restricted}));
    node.api
        .call("RemovePodSandbox", json!({"pod_sandbox_id": sid}));
    node.remove_pod(&psid, &[privileged]);
    node.c.finish();
}

/// `kubectl debug -it <pod> --target=app`: an ephemeral container in the target container's pid namespace
/// (CRI `pid: TARGET`). It sees the target's processes, its own end leaves the target running (the shim's kill of
/// what its init left is of its own cgroup only), and the target's end takes it too (the kernel ends a pid
/// namespace with its init): both are reported exited.
#[test]
fn an_ephemeral_container_shares_its_targets_pid_namespace() {
    let Some(node) = Node::start("an_ephemeral_container_shares_its_targets_pid_namespace") else {
        return;
    };
    let pod = node.pod("pe2e-debug", "cri-debug");
    let sid = node.api.run_pod(&node.c, &pod, HANDLER);
    let start = |name: &str, command: &[&str], linux: Value| {
        node.run_container(&sid, &pod, name, command, linux)
    };
    let app = start("app", &["sleep", "100001"], json!({}));
    let target = |cid: &str| json!({"security_context": {"namespace_options": {"pid": "TARGET", "target_id": cid}}});
    let debug = start("debugger", &["sleep", "100003"], target(&app));
    let seen = node.api.exec_sync(
        &debug,
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; ps -o args | grep -c '^sleep 10000[13]'",
        ],
        20,
    );
    assert_eq!(
        seen.stdout, "sleep 100001 \n2\n",
        "the debugger's pid 1 is the app's init and it sees both sleeps: {seen:?}"
    );
    node.api.call(
        "StopContainer",
        json!({"container_id": debug, "timeout": 2}),
    );
    assert_eq!(node.state(&debug), "CONTAINER_EXITED");
    assert!(
        in_container(&debug, "sleep 100003").is_empty(),
        "the debugger's sleep still runs"
    );
    assert_eq!(
        node.state(&app),
        "CONTAINER_RUNNING",
        "the app after the debugger's end"
    );
    assert!(
        !in_container(&app, "sleep 100001").is_empty(),
        "the app's sleep after the debugger's end"
    );

    // A second debugger, then the app ends: the kernel ends its pid namespace, the debugger with it.
    let second = start("debugger-2", &["sleep", "100003"], target(&app));
    node.api
        .call("StopContainer", json!({"container_id": app, "timeout": 2}));
    let both = wait_until(Duration::from_secs(20), || {
        (node.state(&second) == "CONTAINER_EXITED").then_some(())
    });
    assert!(
        both.is_some(),
        "the debugger after its target's end: {} ({:?} left)",
        node.state(&second),
        in_container(&second, "sleep 100003")
    );
    assert_eq!(node.state(&app), "CONTAINER_EXITED");
    node.remove_pod(&sid, &[app, debug, second]);
    node.c.finish();
}

/// `kubectl exec -it`, `kubectl exec -i`, `kubectl run -i` and `kubectl run -it` (an attach to a container with
/// `stdin` and `stdinOnce`) through containerd's CRI streaming server, over WebSocket as a client of it speaks: the
/// terminal and its size (the shim's ResizePty), stdin and its end (CloseIO), the output and the exit code, for an
/// exec and for a container's init.
#[test]
fn kubectl_exec_and_attach_stream_through_the_shim() {
    let Some(node) = Node::start("kubectl_exec_and_attach_stream_through_the_shim") else {
        return;
    };
    let pod = node.pod("pe2e-stream", "cri-stream");
    let sid = node.api.run_pod(&node.c, &pod, HANDLER);
    let app = node.run_container(&sid, &pod, "app", &["sleep", "100000"], json!({}));
    let url = |method: &str, request: Value| {
        node.api.call(method, request)["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} returned no url"))
            .to_owned()
    };

    // kubectl exec -it app -- sh: a terminal of the size the client says, resized while it runs, and the shell's
    // exit code at its end.
    let exec = url(
        "Exec",
        json!({"container_id": app, "cmd": ["sh"], "tty": true, "stdin": true, "stdout": true}),
    );
    let s = node.api.stream(
        &exec,
        json!([
            {"resize": [100, 30]},
            {"expect": "# "},
            {"send": "stty size\r"},
            {"expect": "30 100"},
            {"resize": [120, 40]},
            {"send": "stty size; tty\r"},
            {"expect": "/dev/pts/"},
            {"send": "exit 3\r"},
            {"wait": 20}
        ]),
    );
    assert!(
        s.failed.is_none() && s.stdout.contains("\r\n40 120\r\n") && s.server_closed,
        "exec -it: {s:?}"
    );
    assert_eq!(s.exit_code(), Some(3), "exec -it's status: {s:?}");

    // kubectl exec -i app -- sh -c '...': stdin in, stdout and stderr apart, the exit code.
    let exec = url(
        "Exec",
        json!({"container_id": app, "cmd": ["sh", "-c", "head -c 6 | tr a-z A-Z; echo to-stderr >&2; exit 4"],
               "stdin": true, "stdout": true, "stderr": true}),
    );
    let s = node
        .api
        .stream(&exec, json!([{"send": "hello\n"}, {"wait": 20}]));
    assert!(
        s.failed.is_none() && s.stdout == "HELLO\n" && s.stderr == "to-stderr\n",
        "exec -i: {s:?}"
    );
    assert_eq!(s.exit_code(), Some(4), "exec -i's status: {s:?}");

    // kubectl run -i once -- ...: attached to the init's stdin; when the client leaves, `stdinOnce` ends it.
    let config = |name: &str, command: &[&str], tty: bool| {
        json!({
            "metadata": {"name": name},
            "image": {"image": IMAGE},
            "command": command,
            "log_path": format!("{name}.log"),
            "stdin": true,
            "stdin_once": true,
            "tty": tty
        })
    };
    let start = |config: Value| {
        let cid = node.api.create_container(&node.c, &sid, config, &pod);
        node.api
            .call("StartContainer", json!({"container_id": cid}));
        cid
    };
    let exited = |cid: &str| {
        wait_until(Duration::from_secs(20), || {
            let status = node.status(cid);
            (status["state"] == "CONTAINER_EXITED").then_some(status["exit_code"].as_i64())
        })
        .flatten()
    };
    let once = start(config(
        "once",
        &[
            "sh",
            "-c",
            "read line; echo got-$line; cat; echo eof-seen; exit 5",
        ],
        false,
    ));
    let attach = url(
        "Attach",
        json!({"container_id": once, "stdin": true, "stdout": true, "stderr": true}),
    );
    let s = node.api.stream(
        &attach,
        json!([
            {"send": "first\n"},
            {"expect": "got-first\n"},
            {"send": "more\n"},
            {"expect": "more\n"},
            {"close": true}
        ]),
    );
    assert!(
        s.failed.is_none() && s.stdout == "got-first\nmore\n",
        "attach -i: {s:?}"
    );
    assert_eq!(
        exited(&once),
        Some(5),
        "the attached container after its stdin's end: {}",
        node.status(&once)
    );
    let log = std::fs::read_to_string(node.logs.join("once.log")).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    assert_eq!(lines, ["got-first", "more", "eof-seen"], "its log: {log:?}");

    // kubectl run -it shell -- sh: attached to the init's terminal, resized, and its exit code.
    let shell = start(config("shell", &["sh"], true));
    let attach = url(
        "Attach",
        json!({"container_id": shell, "stdin": true, "stdout": true, "tty": true}),
    );
    let s = node.api.stream(
        &attach,
        json!([
            {"resize": [90, 25]},
            {"send": "stty size\r"},
            {"expect": "25 90"},
            {"send": "exit 6\r"},
            {"wait": 20}
        ]),
    );
    assert!(
        s.failed.is_none() && s.stdout.contains("\r\n25 90\r\n") && s.server_closed,
        "attach -it: {s:?}"
    );
    assert_eq!(exited(&shell), Some(6), "{}", node.status(&shell));
    node.remove_pod(&sid, &[app, once, shell]);
    node.c.finish();
}

/// A container killed by the OOM killer at its pod spec's memory limit is what kubelet shows as `OOMKilled` (exit
/// code 137), as cri-tools' critest and Kubernetes' node e2e check; one that exits on its own is `Error` or
/// `Completed`.
#[test]
fn an_oom_killed_container_is_reported_oomkilled() {
    let Some(node) = Node::start("an_oom_killed_container_is_reported_oomkilled") else {
        return;
    };
    let pod = node.pod("pe2e-oom", "cri-oom");
    let sid = node.api.run_pod(&node.c, &pod, HANDLER);
    let limited = json!({"resources": {"memory_limit_in_bytes": 32 << 20}});
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(node.run_container(
            &sid,
            &pod,
            &format!("oom-{i}"),
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
            limited.clone(),
        ));
    }
    let failed = node.run_container(
        &sid,
        &pod,
        "failed",
        &["sh", "-c", "exit 137"],
        limited.clone(),
    );
    let done = node.run_container(&sid, &pod, "done", &["true"], limited);
    let exited = |cid: &str| {
        wait_until(Duration::from_secs(30), || {
            let status = node.status(cid);
            (status["state"] == "CONTAINER_EXITED").then_some((
                status["exit_code"].as_i64().unwrap_or(-1),
                status["reason"].as_str().unwrap_or_default().to_owned(),
            ))
        })
    };
    // The status as kubelet reads it once it sees the container exited.
    for cid in &ids {
        assert_eq!(
            exited(cid),
            Some((137, "OOMKilled".to_owned())),
            "an OOM-killed container: {}",
            node.status(cid)
        );
    }
    assert_eq!(exited(&failed), Some((137, "Error".to_owned())));
    assert_eq!(exited(&done), Some((0, "Completed".to_owned())));
    ids.extend([failed, done]);
    node.remove_pod(&sid, &ids);
    node.c.finish();
}
