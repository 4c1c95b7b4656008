//! Kubernetes through CRI: a private containerd with its CRI plugin on, and a real CRI v1 client.
//!
//! No kubelet or crictl exists in Debian's packages, so the client is `tests/cri/cri.py`: Debian's python3-grpcio
//! and python3-protobuf speaking the Kubernetes CRI v1 protocol generated (Debian's protoc) from Kubernetes' own
//! `api.proto` (Debian 13's golang-github-kubernetes-cri-api-dev, fetched by `scripts/fetch-debs.sh` into the cache).
//! One process per call: JSON in (protobuf's JSON mapping of the request), JSON out.
//!
//! The containerd config ([`config`]) is the one a node would use (`packaging/containerd/predictive.toml`'s runtime
//! handler) plus what this machine needs: `restrict_oom_score_adj` (root in this VM cannot set -998), a locally
//! imported pause image (busybox sleeping forever), empty CNI dirs (pods use the host network).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cmd::{Output, run_cmd, wait_until};
use crate::containerd::Containerd;
use crate::settings::Settings;

/// The CRI runtime handler name (RuntimeClass `handler`).
pub const HANDLER: &str = "predictive";
/// The handler for pods with `hostUsers: false` (2.x; packaging/containerd/predictive-v3.toml says why it is apart).
pub const USERNS_HANDLER: &str = "predictive-userns";
/// The sandbox ("pause") image: busybox whose command sleeps forever.
pub const PAUSE_IMAGE: &str = "docker.io/predictive/pause:latest";
/// The CRI plugin's containerd namespace.
pub const NAMESPACE: &str = "k8s.io";
/// The Debian 13 package that ships the CRI v1 `api.proto`.
const CRI_API_PKG: &str = "golang-github-kubernetes-cri-api-dev";
/// Debian's interpreter, with Debian's python3-grpcio (not whatever `python3` comes first on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// The broker's name for CRI container `id` (`k8s.io/<id>`).
pub fn broker_id(id: &str) -> String {
    broker::api::broker_id(NAMESPACE, id)
}

/// The runtime handlers come from the packaged drop-in for the containerd version, as a node gets them: on 2.x
/// `packaging/containerd/predictive-v3.toml` is imported as is; on 1.6/1.7 the tables of
/// `packaging/containerd/predictive.toml` are pasted into the CRI section (an import would replace that whole
/// section there, see the file). Its runtime_type is replaced by `runtime_type` (a no-op for ours;
/// `make test-runc` checks the test with runc's).
pub fn dropin(settings: &Settings, runtime_type: &str) -> String {
    let file = if settings.is_v2() {
        "predictive-v3.toml"
    } else {
        "predictive.toml"
    };
    let path = settings.workspace.join("packaging/containerd").join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .replace(
            "runtime_type = \"io.containerd.predictive.v2\"",
            &format!("runtime_type = \"{runtime_type}\""),
        )
}

/// containerd's config.toml for a CRI test: containerd 1.6/1.7 read config version 2 (one plugin,
/// `io.containerd.grpc.v1.cri`), 2.x version 3 (the runtime and image settings moved to `io.containerd.cri.v1.runtime`
/// and `io.containerd.cri.v1.images`), with `dropin` ([`dropin`]) for the runtime handlers. Writes the drop-in to
/// `dir/conf.d/predictive.toml` for 2.x.
pub fn config(dir: &Path, containerd_version: &str, dropin: &str) -> String {
    config_with(dir, containerd_version, dropin, "")
}

/// [`config`] with `cri_keys` (lines of `key = value`) added to the CRI plugin's runtime table
/// (`io.containerd.grpc.v1.cri` on 1.x, `io.containerd.cri.v1.runtime` on 2.x).
pub fn config_with(dir: &Path, containerd_version: &str, dropin: &str, cri_keys: &str) -> String {
    let keys: String = cri_keys
        .lines()
        .map(|l| format!("    {}\n", l.trim()))
        .collect();
    let d = dir.display();
    let common = format!(
        r#"root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
oom_score = 0

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "{level}"
"#,
        level = std::env::var("PREDICTIVE_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".into())
    );
    if containerd_version.starts_with('2') {
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(&conf_d).expect("creating conf.d");
        std::fs::write(conf_d.join("predictive.toml"), dropin).expect("writing the drop-in");
        format!(
            r#"version = 3
imports = ["{d}/conf.d/*.toml"]
{common}
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
{keys}    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["{d}/cni/bin"]
      conf_dir = "{d}/cni/conf"
"#
        )
    } else {
        let tables: String = dropin
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.starts_with("version"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!(
            r#"version = 2
{common}
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
{keys}    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{d}/cni/bin"
      conf_dir = "{d}/cni/conf"
{tables}"#
        )
    }
}

/// Fetches what the client needs (cached): the CRI api.proto from Debian 13. Err says what is missing.
pub fn prepare(settings: &Settings) -> Result<(), String> {
    // A host that has no protoc (the cgroup v2 guest) gets the module generated beforehand (scripts/guest-lane.sh).
    let generated = settings.cache.join("cri-py/api_pb2.py").is_file();
    for (module, pkg) in [
        ("grpc", "python3-grpcio"),
        ("google.protobuf", "python3-protobuf"),
    ] {
        let mut c = Command::new(PYTHON);
        c.arg("-c").arg(format!("import {module}"));
        if !run_cmd(c, Duration::from_secs(30)).ok() {
            return Err(format!(
                "{PYTHON} cannot import {module}: run scripts/deps.sh (installs {pkg})"
            ));
        }
    }
    if !generated
        && !run_cmd(
            {
                let mut c = Command::new("protoc");
                c.arg("--version");
                c
            },
            Duration::from_secs(30),
        )
        .ok()
    {
        return Err("no protoc: run scripts/deps.sh (installs protobuf-compiler)".into());
    }
    let mut f = Command::new(settings.script("fetch-debs.sh"));
    f.args(["cri-api", "trixie", CRI_API_PKG])
        .env("PREDICTIVE_E2E_CACHE", &settings.cache);
    let out = run_cmd(f, Duration::from_secs(150));
    if !out.ok() {
        return Err(format!("fetching {CRI_API_PKG} from Debian 13: {out}"));
    }
    Ok(())
}

/// The pause image tar (built once per cache by `scripts/make-image.sh`, under a lock).
pub fn ensure_pause_image(settings: &Settings) -> PathBuf {
    crate::containerd::ensure_image_tar(
        settings,
        "pause-image.tar",
        &[PAUSE_IMAGE, r#"["sleep","2147483647"]"#],
    )
}

/// Imports the pause image (`pause`, [`ensure_pause_image`]) and busybox into the CRI plugin's namespace (`c.ns` is
/// restored after) and waits until the CRI plugin lists both, as it does once its event loop has seen the imports:
/// the client for `c`.
pub fn ready_client(c: &mut Containerd, pause: &Path) -> CriClient {
    let slow = u64::from(c.settings.slow());
    let own = std::mem::replace(&mut c.ns, NAMESPACE.to_string());
    for tar in [
        pause.to_path_buf(),
        c.settings.cache.join("busybox-image.tar"),
    ] {
        c.ctr_with(
            &["images", "import", &tar.to_string_lossy()],
            Duration::from_secs(120 * slow),
        )
        .expect_ok("importing an image into k8s.io");
    }
    c.ns = own;
    let api = CriClient::new(&c.settings, &c.sock);
    for image in [PAUSE_IMAGE, crate::settings::IMAGE] {
        let status = json!({"image": {"image": image}});
        let ready = wait_until(Duration::from_secs(30 * slow), || {
            let out = api.try_call("ImageStatus", &status);
            (out.ok() && out.stdout.contains("\"image\"")).then_some(())
        });
        assert!(
            ready.is_some(),
            "the CRI plugin never listed {image}: {}",
            api.try_call("ImageStatus", &status)
        );
    }
    api
}

/// A pod sandbox config as kubelet sends it: pod `name` (uid `uid`) in Kubernetes namespace `namespace`, host
/// network, each container in a pid namespace of its own (no `shareProcessNamespace`; CRI's zero value, `POD`,
/// would share the sandbox's), logs under `logs`, pod `annotations`, under `cgroup_parent`.
pub fn pod_config(
    name: &str,
    uid: &str,
    namespace: &str,
    logs: &Path,
    cgroup_parent: &str,
    annotations: Value,
) -> Value {
    json!({
        "metadata": {"name": name, "uid": uid, "namespace": namespace},
        "log_directory": logs,
        "annotations": annotations,
        "linux": {
            "cgroup_parent": cgroup_parent,
            "security_context": {"namespace_options": {"network": "NODE", "pid": "CONTAINER"}}
        }
    })
}

/// A CRI v1 client for one containerd socket.
pub struct CriClient {
    sock: PathBuf,
    script: PathBuf,
    cache: PathBuf,
}

impl CriClient {
    pub fn new(settings: &Settings, sock: &Path) -> CriClient {
        CriClient {
            sock: sock.to_path_buf(),
            script: settings.workspace.join("tests/cri/cri.py"),
            cache: settings.cache.clone(),
        }
    }

    /// One call; the raw output (for calls expected to fail).
    pub fn try_call(&self, method: &str, request: &serde_json::Value) -> Output {
        let mut c = Command::new(PYTHON);
        c.arg(&self.script)
            .arg(&self.sock)
            .arg(method)
            .arg(request.to_string())
            .env("PREDICTIVE_E2E_CACHE", &self.cache);
        run_cmd(c, Duration::from_secs(90))
    }

    /// RunPodSandbox of pod `config` ([`pod_config`]) under runtime handler `handler`: the sandbox id, tracked by `c`
    /// for the clean-host checks.
    pub fn run_pod(&self, c: &Containerd, config: &Value, handler: &str) -> String {
        let reply = self.call(
            "RunPodSandbox",
            json!({"config": config, "runtime_handler": handler}),
        );
        let id = reply["pod_sandbox_id"]
            .as_str()
            .unwrap_or_else(|| panic!("RunPodSandbox returned no pod_sandbox_id: {reply}"))
            .to_owned();
        c.track(&id);
        id
    }

    /// CreateContainer of container `config` in sandbox `sandbox` (pod `pod`): the container id, tracked by `c`. A
    /// config that names no pid namespace mode gets the pod's, as kubelet sends it ([`pod_config`]).
    pub fn create_container(
        &self,
        c: &Containerd,
        sandbox: &str,
        mut config: Value,
        pod: &Value,
    ) -> String {
        let options = &mut config["linux"]["security_context"]["namespace_options"];
        let mode = &pod["linux"]["security_context"]["namespace_options"]["pid"];
        if options.get("pid").is_none() && mode.is_string() {
            options["pid"] = mode.clone();
        }
        let reply = self.call(
            "CreateContainer",
            json!({"pod_sandbox_id": sandbox, "config": config, "sandbox_config": pod}),
        );
        let id = reply["container_id"]
            .as_str()
            .unwrap_or_else(|| panic!("CreateContainer returned no container_id: {reply}"))
            .to_owned();
        c.track(&id);
        id
    }

    /// One call that must succeed; its reply.
    pub fn call(&self, method: &str, request: serde_json::Value) -> serde_json::Value {
        let out = self
            .try_call(method, &request)
            .expect_ok(&format!("CRI {method} {request}"));
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("CRI {method}: reply is not JSON ({e}): {out}"))
    }
}

/// What an ExecSync returned: its exit code and output (decoded from protobuf's base64 JSON form of `bytes`).
#[derive(Debug)]
pub struct Exec {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl CriClient {
    /// ExecSync of `cmd` in container `cid` (kubelet's exec probe, `kubectl exec` without a terminal), which must
    /// return (whatever its exit code).
    pub fn exec_sync(&self, cid: &str, cmd: &[&str], timeout_s: u64) -> Exec {
        let reply = self.call(
            "ExecSync",
            json!({"container_id": cid, "cmd": cmd, "timeout": timeout_s}),
        );
        let text = |key: &str| {
            String::from_utf8_lossy(&base64_decode(reply[key].as_str().unwrap_or_default()))
                .into_owned()
        };
        Exec {
            exit_code: reply["exit_code"].as_i64().unwrap_or_default(),
            stdout: text("stdout"),
            stderr: text("stderr"),
        }
    }
}

/// What a streaming session ([`CriClient::stream`]) saw: the protocol the server chose, the process's output, the
/// status its error channel carried, whether the server ended the session, and the step that failed (if one did).
#[derive(Debug)]
pub struct Stream {
    pub protocol: String,
    pub stdout: String,
    pub stderr: String,
    pub status: Value,
    pub server_closed: bool,
    pub failed: Option<String>,
}

impl Stream {
    /// The exit code the error channel reported: 0 for `Success`, the `ExitCode` cause of a `NonZeroExitCode`
    /// failure; `None` for no status or another failure.
    pub fn exit_code(&self) -> Option<i64> {
        if self.status["status"] == "Success" {
            return Some(0);
        }
        self.status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

impl CriClient {
    /// One session with the CRI streaming server at `url` (an Exec or Attach reply's), as `kubectl exec -it` or
    /// `kubectl attach` has it: `tests/cri/stream.py` runs `steps` (its doc lists them) over WebSocket.
    pub fn stream(&self, url: &str, steps: Value) -> Stream {
        let script = self.script.with_file_name("stream.py");
        let mut c = Command::new(PYTHON);
        c.arg(&script).arg(url).arg(steps.to_string());
        let out = run_cmd(c, Duration::from_secs(150));
        let v: Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("stream.py printed no JSON ({e}): {out}"));
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        Stream {
            protocol: text("protocol"),
            stdout: text("stdout"),
            stderr: text("stderr"),
            status: v["status"].clone(),
            server_closed: v["server_closed"].as_bool().unwrap_or_default(),
            failed: v["failed"].as_str().map(str::to_owned),
        }
    }
}

/// Decodes standard base64 (padding optional); characters outside the alphabet are skipped.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A pod network for the CRI plugin whose config `config` writes under `dir`: a CNI bridge `bridge` with
/// host-local addresses in `10.<octet>.0.0/24`, from Debian's containernetworking-plugins (`crate::cni::CNI_BIN_DIR`,
/// linked into `dir/cni/bin`), state under `dir/cni`. For pods that need a network namespace of their own (a
/// user-namespaced pod: containerd 2.1 makes its network namespace inside it). Remove the bridge with
/// [`remove_bridge`] after the test.
pub fn bridge_network(dir: &Path, bridge: &str, octet: u8) -> Result<(), String> {
    let (bin, conf) = (dir.join("cni/bin"), dir.join("cni/conf"));
    for d in [&bin, &conf] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let from = Path::new(crate::cni::CNI_BIN_DIR).join(plugin);
        if !from.is_file() {
            return Err(format!(
                "no CNI plugin {} (scripts/deps.sh installs containernetworking-plugins)",
                from.display()
            ));
        }
        std::os::unix::fs::symlink(&from, bin.join(plugin))
            .map_err(|e| format!("linking {}: {e}", from.display()))?;
    }
    let list = json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": dir.join("cni/ipam"),
                "ranges": [[{"subnet": format!("10.{octet}.0.0/24")}]]
            }
        }]
    });
    std::fs::write(conf.join("10-pe2e.conflist"), list.to_string())
        .map_err(|e| format!("writing the CNI config: {e}"))
}

/// Deletes the bridge [`bridge_network`] made (the CNI plugin leaves it when the last pod goes).
pub fn remove_bridge(bridge: &str) {
    let mut c = Command::new("ip");
    c.args(["link", "del", bridge]);
    let _ = run_cmd(c, Duration::from_secs(30));
}

/// The processes whose command line starts with `command` in container `cid` (whose cgroup paths name it).
pub fn in_container(cid: &str, command: &str) -> Vec<i32> {
    crate::clean::processes_matching(|cmd, _| cmd.starts_with(command))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                .unwrap_or_default()
                .contains(cid)
        })
        .collect()
}

/// What a CRI test's containerd needs, fetched or built once ([`prepare`]; a failure fails `test`): the pause
/// image tar and the runtime handlers' drop-in for `settings.runtime` ([`dropin`]).
pub fn prepared(settings: &Settings, test: &str) -> (PathBuf, String) {
    if let Err(e) = prepare(settings) {
        panic!("{test}: {e}");
    }
    (
        ensure_pause_image(settings),
        dropin(settings, &settings.runtime),
    )
}
