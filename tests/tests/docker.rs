//! Docker end to end: Docker 26 (Debian 13's packages) started privately against the test's containerd runs
//! containers through our shim, by runtime name and through a daemon.json runtime with `runtimeType` and
//! `options` (Docker then sends `runtimeoptions.v1.Options`, which the shim must accept). See
//! `predictive_e2e::docker`.
//!
//! Runs on containerd 1.7 only: Debian 13 ships Docker 26 with containerd 1.7, and one Docker run per suite
//! is enough (the shim path below containerd is the one the other tests cover on every version). scripts/test.sh
//! leaves it out of the other versions' runs; run against another version it is a skip (a failure under CI).

use std::time::Duration;

use predictive_e2e::docker::{self, Docker, NAMESPACE};
use predictive_e2e::settings::{RUNC_RUNTIME, Settings};
use predictive_e2e::{Containerd, require_root};
use serde_json::{Value, json};

/// The busybox image as `docker load` names it (its manifest.json RepoTags).
const DOCKER_IMAGE: &str = "predictive/busybox:latest";
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn docker_runs_containers_through_the_shim() {
    const TEST: &str = "docker_runs_containers_through_the_shim";
    let settings = Settings::from_env();
    if settings.containerd != "1.7" {
        // scripts/test.sh leaves this test out of the other versions' runs; run alone, it says why it did nothing.
        predictive_e2e::skip(
            TEST,
            &format!(
                "Docker 26 runs on containerd 1.7 only (Debian 13 pairs them), not {}",
                settings.containerd
            ),
        );
        return;
    }
    if !require_root(TEST) {
        return;
    }
    let root = docker::fetch(&settings).unwrap_or_else(|e| panic!("{TEST}: {e}"));
    let Some(mut c) = Containerd::start(TEST) else {
        return;
    };
    // Docker's containers live in containerd's `moby` namespace; the clean-host checks follow them there.
    c.ns = NAMESPACE.to_string();
    let runtime = c.runtime().to_string();
    // Options Docker converts for the runtime type: runtimeoptions.v1.Options for ours (accepted; the shim takes
    // its settings from PREDICTIVE_CONFIG), runc's own options for `make test-runc`.
    let options = if runtime == RUNC_RUNTIME {
        json!({"SystemdCgroup": false})
    } else {
        json!({"ConfigPath": c.dir.join("predictive.toml")})
    };
    let daemon_json =
        json!({"runtimes": {"predictive": {"runtimeType": runtime, "options": options}}});
    let docker = Docker::start(&c, &root, &daemon_json);
    let version = docker
        .cmd(&["version", "--format", "{{.Server.Version}}"], TIMEOUT)
        .expect_ok("docker version");
    assert!(
        version.stdout.trim().starts_with("26."),
        "Docker 26 expected: {version}"
    );
    let tar = c.settings.cache.join("busybox-image.tar");
    docker
        .cmd(
            &["load", "-i", &tar.to_string_lossy()],
            Duration::from_secs(120),
        )
        .expect_ok("docker load");

    for rt in [runtime.as_str(), "predictive"] {
        // The README's quickstart command.
        let out = docker
            .cmd(
                &[
                    "run",
                    "--rm",
                    "--runtime",
                    rt,
                    DOCKER_IMAGE,
                    "echo",
                    "hello",
                ],
                TIMEOUT,
            )
            .expect_ok(&format!("docker run --rm --runtime {rt}"));
        assert_eq!(out.stdout.trim(), "hello", "{out}");

        // A running one, to see what containerd recorded and which shim serves it.
        let out = docker
            .cmd(
                &[
                    "run",
                    "-d",
                    "--runtime",
                    rt,
                    DOCKER_IMAGE,
                    "sleep",
                    "100000",
                ],
                TIMEOUT,
            )
            .expect_ok(&format!("docker run -d --runtime {rt}"));
        let id = out.stdout.trim().to_string();
        assert_eq!(id.len(), 64, "docker run -d prints the container id: {out}");
        c.track(&id);
        let info = c.ctr(&["c", "info", &id]).expect_ok("ctr -n moby c info");
        let v: Value = serde_json::from_str(&info.stdout).expect("c info prints JSON");
        assert_eq!(
            v["Runtime"]["Name"].as_str(),
            Some(runtime.as_str()),
            "--runtime {rt}: {}",
            info.stdout
        );
        if rt == "predictive" && runtime != RUNC_RUNTIME {
            // Docker sent the daemon.json options as runtimeoptions.v1.Options, and the container runs.
            let opts = v["Runtime"]["Options"].to_string();
            assert!(
                opts.contains("runtimeoptions.v1.Options"),
                "daemon.json options not passed as runtimeoptions.v1.Options: {}",
                info.stdout
            );
        }
        let shim = c
            .shim_pids()
            .into_iter()
            .map(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|r| String::from_utf8_lossy(&r).replace('\0', " "))
                    .unwrap_or_default()
            })
            .find(|cmd| cmd.contains(&format!("-id {id}")))
            .unwrap_or_else(|| panic!("no shim serves {id}"));
        let binary = shim.split_whitespace().next().unwrap_or_default();
        let want = format!(
            "containerd-shim-{}",
            runtime
                .trim_start_matches("io.containerd.")
                .replace('.', "-")
        );
        assert!(binary.ends_with(&want), "--runtime {rt}: shim {shim}");
        let out = docker
            .cmd(&["exec", &id, "cat", "/proc/1/cmdline"], TIMEOUT)
            .expect_ok("docker exec");
        assert!(out.stdout.starts_with("sleep"), "{out}");
        docker
            .cmd(&["rm", "-f", &id], TIMEOUT)
            .expect_ok("docker rm -f");
    }
    let left = docker
        .cmd(&["ps", "-aq"], TIMEOUT)
        .expect_ok("docker ps -aq");
    assert!(left.stdout.trim().is_empty(), "{left}");
    let out = docker.stop();
    assert_eq!(out.code, 0, "dockerd did not stop cleanly: {out}");
    c.finish();
}
