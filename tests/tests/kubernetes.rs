//! The Kubernetes packaging: the manifests in `packaging/kubernetes/` parse (Debian's python3-yaml) and say what
//! they must, the containerd drop-ins parse (Python's tomllib) and name the `predictive` handler, and the
//! DaemonSet's installer script edits a node's containerd config so that this suite's containerd version loads the
//! handler (`containerd config dump`), keeps the node's own settings, and undoes it exactly. No root needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use predictive_e2e::run_cmd;
use predictive_e2e::settings::Settings;
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// Every YAML document in `dir/*.yaml` and every TOML file in `toml_dir`, as JSON: {"file": [docs...]}.
fn parse_all(yaml_dir: &Path, toml_dir: &Path) -> Value {
    let script = r#"
import glob, json, os, sys, tomllib, yaml
out = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    with open(f) as fh:
        out[os.path.basename(f)] = [d for d in yaml.safe_load_all(fh) if d is not None]
for f in sorted(glob.glob(os.path.join(sys.argv[2], "*.toml"))):
    with open(f, "rb") as fh:
        out[os.path.basename(f)] = [tomllib.load(fh)]
print(json.dumps(out))
"#;
    let mut c = Command::new(PYTHON);
    c.arg("-c").arg(script).arg(yaml_dir).arg(toml_dir);
    let out = run_cmd(c, Duration::from_secs(30)).expect_ok("parsing the manifests (python3-yaml)");
    serde_json::from_str(&out.stdout).expect("the parser prints JSON")
}

fn docs<'a>(all: &'a Value, file: &str) -> &'a Vec<Value> {
    all[file]
        .as_array()
        .unwrap_or_else(|| panic!("{file} missing or empty: {all}"))
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

#[test]
fn kubernetes_manifests_and_dropins_parse() {
    let ws = Settings::from_env().workspace;
    let all = parse_all(
        &ws.join("packaging/kubernetes"),
        &ws.join("packaging/containerd"),
    );

    let rc = kind(docs(&all, "runtimeclass.yaml"), "RuntimeClass");
    assert_eq!(rc["apiVersion"], "node.k8s.io/v1", "{rc}");
    assert_eq!(rc["metadata"]["name"], "predictive", "{rc}");
    assert_eq!(rc["handler"], "predictive", "{rc}");

    let pod = kind(docs(&all, "pod-example.yaml"), "Pod");
    assert_eq!(pod["spec"]["runtimeClassName"], "predictive", "{pod}");

    let ds = kind(docs(&all, "predictive-deploy.yaml"), "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1", "{ds}");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the selector must match the pod labels: {ds}"
    );
    assert_eq!(
        spec["hostPID"], true,
        "nsenter needs the host's PID 1: {spec}"
    );
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true, "{c}");
    let script = "/opt/predictive-deploy/predictive-deploy.sh";
    assert_eq!(c["command"], serde_json::json!([script, "install"]), "{c}");
    assert_eq!(
        c["lifecycle"]["preStop"]["exec"]["command"],
        serde_json::json!([script, "cleanup"]),
        "{c}"
    );
    // Every volume the container mounts exists, and the host paths the script writes are mounted under HOST_ROOT.
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default(),
                m["mountPath"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for (name, _) in &mounts {
        assert!(volumes.contains(name), "volume {name} not defined: {spec}");
    }
    let env = |k: &str| {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == k)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("env {k} missing: {c}"))
            .to_string()
    };
    let host_root = env("HOST_ROOT");
    for path in [
        format!("{host_root}{}", env("HOST_BIN_DIR")),
        format!(
            "{host_root}{}",
            Path::new(&env("CONTAINERD_CONF"))
                .parent()
                .expect("a config dir")
                .display()
        ),
    ] {
        assert!(
            mounts.iter().any(|(_, m)| *m == path),
            "{path} is not mounted: {mounts:?}"
        );
    }
    // The image the DaemonSet runs carries the script where the manifest calls it.
    let dockerfile = std::fs::read_to_string(ws.join("packaging/kubernetes/Dockerfile"))
        .expect("packaging/kubernetes/Dockerfile");
    for f in [
        "packaging/kubernetes/predictive-deploy.sh /opt/predictive-deploy/",
        "containerd-shim-predictive-v2 /opt/predictive-deploy/bin/",
        "predictive-v3.toml /opt/predictive-deploy/",
    ] {
        assert!(dockerfile.contains(f), "Dockerfile lacks `{f}`");
    }

    // The drop-ins: version 2 for containerd 1.6/1.7 (runc kept), version 3 for 2.x.
    let v2 = &docs(&all, "predictive.toml")[0];
    assert_eq!(v2["version"], 2, "{v2}");
    let rts = &v2["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    assert_eq!(
        rts["predictive"]["runtime_type"], "io.containerd.predictive.v2",
        "{v2}"
    );
    assert_eq!(rts["runc"]["runtime_type"], "io.containerd.runc.v2", "{v2}");
    let v3 = &docs(&all, "predictive-v3.toml")[0];
    assert_eq!(v3["version"], 3, "{v3}");
    let rts = &v3["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"];
    assert_eq!(
        rts["predictive"]["runtime_type"], "io.containerd.predictive.v2",
        "{v3}"
    );
    for rt in [
        &v2["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"],
        rts,
    ] {
        assert_eq!(
            rt["predictive"]["pod_annotations"],
            serde_json::json!(["io.predictive.*"]),
            "{rt}"
        );
    }
}

fn containerd_bin(settings: &Settings) -> PathBuf {
    let mut f = Command::new(settings.script("fetch-containerd.sh"));
    f.arg(&settings.containerd);
    let out = run_cmd(f, Duration::from_secs(600)).expect_ok("fetch-containerd.sh");
    PathBuf::from(out.stdout.trim()).join("containerd")
}

/// `containerd --config CONF config dump` of the suite's containerd version.
fn dump(containerd: &Path, conf: &Path) -> String {
    let mut c = Command::new(containerd);
    c.arg("--config").arg(conf).args(["config", "dump"]);
    run_cmd(c, Duration::from_secs(30))
        .expect_ok("containerd config dump")
        .stdout
        // 2.x prints single-quoted strings.
        .replace('\'', "\"")
}

#[test]
fn deploy_script_adds_the_handler_and_undoes_it() {
    let settings = Settings::from_env();
    let containerd = containerd_bin(&settings);
    let ws = &settings.workspace;
    let host = PathBuf::from(format!(
        "/tmp/pe2e-deploy-{}-{}",
        std::process::id(),
        settings.containerd
    ));
    let _ = std::fs::remove_dir_all(&host);
    let etc = host.join("etc/containerd");
    std::fs::create_dir_all(&etc).expect("creating the fake node");
    // A node's own settings that must survive: Debian 12's default config.toml (1.6/1.7), a kubeadm-style
    // systemd cgroup runc (2.x).
    let (original, kept) = if settings.is_v2() {
        (
            "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n",
            "SystemdCgroup = true",
        )
    } else {
        (
            "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n",
            "bin_dir = \"/usr/lib/cni\"",
        )
    };
    let conf = etc.join("config.toml");
    std::fs::write(&conf, original).expect("writing config.toml");
    let run = |action: &str| {
        let mut c = Command::new(ws.join("packaging/kubernetes/predictive-deploy.sh"));
        c.arg(action)
            .env("HOST_ROOT", &host)
            .env("DROPIN", ws.join("packaging/containerd/predictive.toml"))
            .env(
                "DROPIN_V3",
                ws.join("packaging/containerd/predictive-v3.toml"),
            );
        run_cmd(c, Duration::from_secs(30)).expect_ok(&format!("predictive-deploy.sh {action}"))
    };
    let before = dump(&containerd, &conf);
    assert!(!before.contains("runtimes.predictive]"), "{before}");
    // Twice: a restarted installer pod must not add the handler twice (a duplicate table is invalid TOML).
    run("configure");
    run("configure");
    // The node's containerd reads /etc/containerd/conf.d; this fake node's is under `host`.
    let text = std::fs::read_to_string(&conf).expect("config.toml");
    let test_conf = etc.join("config-test.toml");
    std::fs::write(
        &test_conf,
        text.replace(
            "/etc/containerd/conf.d",
            &etc.join("conf.d").to_string_lossy(),
        ),
    )
    .expect("writing the test config");
    let after = dump(&containerd, &test_conf);
    for want in [
        "runtimes.predictive]",
        "runtime_type = \"io.containerd.predictive.v2\"",
        "runtimes.runc]",
        "runtime_type = \"io.containerd.runc.v2\"",
        "pod_annotations = [\"io.predictive.*\"]",
        kept,
    ] {
        assert!(
            after.contains(want),
            "containerd {} does not see `{want}` after configure:\n{text}\n--- dump ---\n{after}",
            settings.containerd
        );
    }
    run("unconfigure");
    assert_eq!(
        std::fs::read_to_string(&conf).expect("config.toml"),
        original,
        "unconfigure must restore config.toml"
    );
    assert!(!etc.join("conf.d/predictive.toml").exists());
    let _ = std::fs::remove_dir_all(&host);
}
