//! Kill, exec and delete on a container the broker froze (issue 13, acceptance 3), through a CRI v1 client as
//! kubelet stops and probes a pod: StopContainer with timeout 2 returns within 10 s (exit 137 from SIGKILL, or the
//! process's own exit when it handles SIGTERM), and ExecSync runs (the shim thaws the container first). The broker
//! is told (Report `stopping`) and never freezes the container again.
//!
//! A freeze on demand: a private broker with a tiny host memory pool (96 MiB grantable), a pod whose
//! high-priority container idles, and a low-priority one that allocates 100 MiB: host memory pressure makes the
//! controller pause the lowest-priority running task (its rule 5) within a tick or two. Root only; `SKIPPED:`
//! otherwise. With PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2 there is no broker: the test says so and passes.
//! cgroup v1 (freezer.state) and v2 (cgroup.events) hosts.

use std::time::{Duration, Instant};

use broker::api::Explain;
use broker::client::Client;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::cri::{self, CriClient, HANDLER, NAMESPACE};
use predictive_e2e::settings::{IMAGE, Settings};
use predictive_e2e::{Containerd, require_root};
use serde_json::{Value, json};

const TEST: &str = "cri_stop_and_exec_on_broker_frozen_containers";
/// 128 MiB host, 32 MiB reserve: 96 MiB grantable, paused at 95 % (91 MiB) of it.
/// The keeper holds [`KEEPER_MIB`] and each hog [`HOG_MIB`]: together over the 91 MiB, each alone well under the
/// 96 MiB a task may reach (on v2 that is its `memory.max`, so one hog alone over the pause line would be OOM-killed
/// there instead of frozen).
const BROKER: &str = "tick_ms = 500\nhost_memory_bytes = 134217728\n[controller]\nhost_reserve_memory_bytes = 33554432\n";
const KEEPER_MIB: u32 = 48;
const HOG_MIB: u32 = 50;
/// StopContainer's and ExecSync's bound in the acceptance.
const BOUND: Duration = Duration::from_secs(10);

/// busybox awk holding `mib` MiB in user space, then `then` (sh -c) as its child.
fn hog(mib: u32, then: &str) -> String {
    format!(
        "BEGIN{{s=sprintf(\"%1048576s\",\"\"); for(n=0;n<{mib};n++) a[n]=s; print \"allocated\"; system(\"{then}\")}}"
    )
}

/// Whether the container's cgroup is frozen (v1 `freezer.state`, v2 `cgroup.events`).
fn frozen(c: &Containerd, id: &str) -> Option<bool> {
    if Containerd::cgroup_v2_host() {
        let events = std::fs::read_to_string(c.cgroup_dir("", id).join("cgroup.events")).ok()?;
        return Some(events.lines().any(|l| l.trim() == "frozen 1"));
    }
    let state = std::fs::read_to_string(c.cgroup_dir("freezer", id).join("freezer.state")).ok()?;
    Some(state.trim() == "FROZEN")
}

fn wait_frozen(c: &Containerd, id: &str, what: &str) {
    let ok = wait_until(Duration::from_secs(30) * c.settings.slow(), || {
        frozen(c, id).filter(|f| *f).map(|_| ())
    });
    let decisions = Client::new(c.broker_socket(), Duration::from_secs(5))
        .explain(&Explain::default())
        .map(|d| d.decisions);
    assert!(
        ok.is_some(),
        "{what} ({id}) was never frozen by the broker: {:?}; decisions {decisions:#?}",
        frozen(c, id)
    );
}

/// Standard base64 of `bytes` (protobuf's JSON form of a `bytes` field).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Pod<'a> {
    api: CriClient,
    c: &'a Containerd,
    sid: String,
    config: Value,
}

impl Pod<'_> {
    fn container(&self, name: &str, priority: i32, command: &[&str]) -> String {
        let id = self.api.create_container(
            self.c,
            &self.sid,
            json!({
                "metadata": {"name": name},
                "image": {"image": IMAGE},
                "command": command,
                "annotations": {"io.predictive.priority": priority.to_string()},
                "log_path": format!("{name}.log"),
                // kubelet's default: the container's own PID namespace (awk below is its PID 1).
                "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}}
            }),
            &self.config,
        );
        self.api.call("StartContainer", json!({"container_id": id}));
        id
    }

    /// StopContainer with timeout 2, timed; then the exit code kubelet would read.
    fn stop(&self, id: &str, what: &str) -> (Duration, i64) {
        let started = Instant::now();
        let out = self
            .api
            .try_call("StopContainer", &json!({"container_id": id, "timeout": 2}));
        let took = started.elapsed();
        assert!(
            out.ok(),
            "{what}: StopContainer failed after {took:?}: {out}"
        );
        let st = self
            .api
            .call("ContainerStatus", json!({"container_id": id}));
        assert_eq!(st["status"]["state"], "CONTAINER_EXITED", "{what}: {st}");
        (took, st["status"]["exit_code"].as_i64().unwrap_or(-1))
    }

    fn remove(&self, id: &str) {
        self.api
            .call("RemoveContainer", json!({"container_id": id}));
    }

    /// The broker's decisions about `id` whose reason says `needle`.
    fn decided(&self, id: &str, needle: &str) -> Vec<String> {
        Client::new(self.c.broker_socket(), Duration::from_secs(5))
            .explain(&Explain {
                container_id: Some(id.to_owned()),
                limit: None,
                before_seq: None,
            })
            .map(|d| d.decisions)
            .unwrap_or_default()
            .into_iter()
            .map(|d| format!("{} {:?}: {}", d.resource, d.directive, d.reason))
            .filter(|d| d.contains(needle))
            .collect()
    }
}

#[test]
fn cri_stop_and_exec_on_broker_frozen_containers() {
    if !require_root(TEST) {
        return;
    }
    let settings = Settings::from_env();
    if !settings.is_predictive() {
        println!(
            "{TEST}: runtime {} has no broker; nothing to test",
            settings.runtime
        );
        return;
    }
    let (pause, dropin) = cri::prepared(&settings, TEST);
    let version = settings.containerd.clone();
    let Some(mut c) = Containerd::start_with_config_and_broker(
        TEST,
        &|dir| cri::config(dir, &version, &dropin),
        &format!(
            "register_budget_ms = {}\n{BROKER}",
            if settings.slow() > 1 { 1000 } else { 50 }
        ),
    ) else {
        return;
    };
    c.ns = NAMESPACE.to_string();
    // Its own cgroup parent: other CRI tests run beside it in the same containerd namespace.
    let parent = c.own_cgroup_parent();
    let api = cri::ready_client(&mut c, &pause);
    let logs = c.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("creating the pod log dir");
    let config = cri::pod_config(
        "pe2e-frozen",
        &format!("pe2e-frozen-{}", std::process::id()),
        "default",
        &logs,
        &parent,
        json!({}),
    );
    let sid = api.run_pod(&c, &config, HANDLER);
    let pod = Pod {
        api,
        c: &c,
        sid: sid.clone(),
        config,
    };
    // The acceptance's 10 s on this host; times the emulated guest's slowness there (it proves no hang, not speed).
    let bound = BOUND * c.settings.slow();
    // The one the broker protects (highest priority): never paused.
    let keeper = pod.container("keeper", 10, &["awk", &hog(KEEPER_MIB, "sleep 100000")]);

    // 1. SIGTERM is ignored (awk is PID 1 without a handler): SIGKILL after the timeout must land on a frozen task.
    let hog1 = pod.container("hog-kill", -10, &["awk", &hog(HOG_MIB, "sleep 100000")]);
    wait_frozen(&c, &hog1, "the SIGKILL case");
    let (took, code) = pod.stop(&hog1, "a frozen task ignoring SIGTERM");
    println!("StopContainer of a frozen task ignoring SIGTERM: {took:?}, exit {code}");
    assert!(took < bound, "StopContainer took {took:?}");
    assert_eq!(code, 137, "SIGKILL's exit");
    let told = pod.decided(&hog1, "stopping");
    assert!(
        !told.is_empty(),
        "the broker was not told {hog1} is stopping"
    );
    pod.remove(&hog1);

    // 2. The process handles SIGTERM itself (exit 42): it must get to run its handler.
    let script = format!(
        "trap 'exit 42' TERM; awk '{}' & wait",
        hog(HOG_MIB, "sleep 100000")
    );
    let hog2 = pod.container("hog-term", -10, &["sh", "-c", &script]);
    wait_frozen(&c, &hog2, "the SIGTERM case");
    let (took, code) = pod.stop(&hog2, "a frozen task handling SIGTERM");
    println!("StopContainer of a frozen task handling SIGTERM: {took:?}, exit {code}");
    assert!(took < bound, "StopContainer took {took:?}");
    assert_eq!(code, 42, "the process's own exit on SIGTERM");
    pod.remove(&hog2);

    // 3. An exec probe into a frozen container runs (thawed first); the broker never freezes it again.
    let hog3 = pod.container("hog-exec", -10, &["awk", &hog(HOG_MIB, "sleep 100000")]);
    wait_frozen(&c, &hog3, "the exec case");
    let started = Instant::now();
    let out = pod.api.try_call(
        "ExecSync",
        &json!({"container_id": hog3, "cmd": ["echo", "exec-ran"], "timeout": 5}),
    );
    let took = started.elapsed();
    println!("ExecSync into a frozen container: {took:?}");
    assert!(took < bound, "ExecSync took {took:?}: {out}");
    assert!(out.ok(), "ExecSync failed: {out}");
    let reply: Value = serde_json::from_str(out.stdout.trim()).expect("ExecSync reply is JSON");
    assert_eq!(reply["exit_code"], 0, "{reply}");
    assert_eq!(reply["stdout"], base64(b"exec-ran\n"), "{reply}");
    // Pressure is still there: four ticks later it is still running.
    let refrozen = wait_until(Duration::from_secs(2), || {
        frozen(&c, &hog3).filter(|f| *f).map(|_| ())
    });
    assert!(
        refrozen.is_none(),
        "the broker froze {hog3} again after the exec"
    );
    assert!(
        !pod.decided(&hog3, "stopping").is_empty(),
        "the broker was not told about the exec"
    );
    let (took, code) = pod.stop(&hog3, "the exec'd container");
    assert!(took < bound && code == 137, "{took:?} {code}");
    pod.remove(&hog3);

    let (_, code) = pod.stop(&keeper, "the keeper");
    assert_eq!(code, 137, "awk as PID 1 ignores SIGTERM");
    pod.remove(&keeper);
    pod.api
        .call("StopPodSandbox", json!({"pod_sandbox_id": sid}));
    pod.api
        .call("RemovePodSandbox", json!({"pod_sandbox_id": sid}));
    drop(pod);
    c.finish();
}
