//! Docker end to end: Docker 26 (Debian 13's packages) started privately against the test's containerd runs
//! containers through our shim, by runtime name and through a daemon.json runtime with `runtimeType` and
//! `options` (Docker then sends `runtimeoptions.v1.Options`, which the shim must accept). See
//! `predictive_e2e::docker`.
//!
//! Docker's cgroup driver is its default for the host: `cgroupfs` on this v1 host, `systemd` in the cgroup v2
//! guest lane (what Docker uses on every current distribution), where each container is a transient
//! `docker-<id>.scope` the shim asks systemd for without being told to (Docker sends no `SystemdCgroup` to a
//! runtime it does not know as runc). On both: `docker run -m --cpus` limits in the container's cgroup, `docker
//! update` in the cgroup (and on the scope, which systemd's `daemon-reload` puts back), and `docker kill` of a
//! paused container (on cgroup v2 SIGKILL ends a frozen process before any thaw).
//!
//! Runs on containerd 1.7 only: Debian 13 ships Docker 26 with containerd 1.7, and one Docker run per suite
//! is enough (the shim path below containerd is the one the other tests cover on every version). scripts/test.sh
//! leaves it out of the other versions' runs; run against another version it is a skip (a failure under CI).

use std::path::PathBuf;
use std::time::Duration;

use predictive_e2e::clean::status_field;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::docker::{self, Docker, NAMESPACE};
use predictive_e2e::kubelet::systemd_v2_host;
use predictive_e2e::settings::{RUNC_RUNTIME, Settings};
use predictive_e2e::{Containerd, require_root, run_cmd};
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
    let systemd = systemd_v2_host();
    let options = if runtime == RUNC_RUNTIME {
        json!({ "SystemdCgroup": systemd })
    } else {
        json!({"ConfigPath": c.dir.join("predictive.toml")})
    };
    let daemon_json =
        json!({"runtimes": {"predictive": {"runtimeType": runtime, "options": options}}});
    let docker = Docker::start(&c, &root, &daemon_json, systemd);
    let version = docker
        .cmd(
            &[
                "info",
                "--format",
                "{{.ServerVersion}} {{.CgroupDriver}} {{.CgroupVersion}}",
            ],
            TIMEOUT,
        )
        .expect_ok("docker info");
    let want = if systemd { "systemd 2" } else { "cgroupfs 1" };
    assert!(
        version.stdout.trim().starts_with("26.") && version.stdout.trim().ends_with(want),
        "Docker 26 with cgroup driver and version {want} expected: {version}"
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

        // A running one with limits, to see what containerd recorded, which shim serves it and where its cgroup is.
        let out = docker
            .cmd(
                &[
                    "run",
                    "-d",
                    "--runtime",
                    rt,
                    "-m",
                    "64m",
                    "--cpus",
                    "0.5",
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
        // Docker's default spec (CAP_MKNOD, no device but the standard ones and the console, its seccomp profile,
        // no no_new_privs), on its cgroup driver (systemd's on a systemd host): a node of the host's disk can be made
        // but not opened, and an exec keeps the container's privileges (no no_new_privs) under the filter.
        let (major, minor) = predictive_e2e::root_disk();
        let script = format!(
            "mknod /tmp/disk b {major} {minor} && echo MADE; \
             if head -c 1 /tmp/disk >/dev/null; then echo DISK; fi; rm -f /tmp/disk; \
             grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"
        );
        let out = docker
            .cmd(&["exec", &id, "sh", "-c", &script], TIMEOUT)
            .expect_ok("docker exec of the device check");
        assert_eq!(
            out.stdout.split_whitespace().collect::<Vec<_>>(),
            ["MADE", "NoNewPrivs:", "0", "Seccomp:", "2"],
            "--runtime {rt}: the host's disk {major}:{minor} opened, or the exec's privileges differ: {out}"
        );
        limits_follow_docker(&c, &docker, &id, systemd);
        // `docker kill` of a paused container: SIGKILL, then a thaw (Docker's and the shim's both).
        docker
            .cmd(&["pause", &id], TIMEOUT)
            .expect_ok("docker pause");
        docker
            .cmd(&["kill", &id], TIMEOUT)
            .expect_ok("docker kill of a paused container");
        let exited = wait_until(TIMEOUT, || {
            let out = docker.cmd(&["inspect", "-f", "{{.State.Status}}", &id], TIMEOUT);
            (out.stdout.trim() == "exited").then_some(())
        });
        assert!(
            exited.is_some(),
            "--runtime {rt}: the killed paused container did not exit"
        );
        docker.cmd(&["rm", &id], TIMEOUT).expect_ok("docker rm");
        let dir = cgroup(&c, &id, systemd, "memory");
        let gone = wait_until(Duration::from_secs(10), || (!dir.exists()).then_some(()));
        assert!(gone.is_some(), "{} stayed after docker rm", dir.display());
    }
    let left = docker
        .cmd(&["ps", "-aq"], TIMEOUT)
        .expect_ok("docker ps -aq");
    assert!(left.stdout.trim().is_empty(), "{left}");
    let out = docker.stop();
    assert_eq!(out.code, 0, "dockerd did not stop cleanly: {out}");
    c.finish();
}

/// The container's cgroup directory for a v1 controller (cgroupfs driver, parent `/moby`), or its systemd scope on a
/// systemd cgroup v2 host.
fn cgroup(c: &Containerd, id: &str, systemd: bool, controller: &str) -> PathBuf {
    if systemd {
        PathBuf::from(format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"))
    } else {
        c.cgroup_dir(controller, id)
    }
}

/// `docker run -m 64m --cpus 0.5` is in the container's cgroup, and `docker update` changes it there and, on the
/// systemd driver, on the scope too (what systemd puts back at a `daemon-reload`).
fn limits_follow_docker(c: &Containerd, docker: &Docker, id: &str, systemd: bool) {
    let read = |controller: &str, file: &str| {
        let path = cgroup(c, id, systemd, controller).join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    };
    let (memory, cpu) = if systemd {
        (("memory", "memory.max"), ("cpu", "cpu.max"))
    } else {
        (
            ("memory", "memory.limit_in_bytes"),
            ("cpu", "cpu.cfs_quota_us"),
        )
    };
    let quota = |cores_x10: u64| {
        if systemd {
            format!("{} 100000", cores_x10 * 10_000)
        } else {
            (cores_x10 * 10_000).to_string()
        }
    };
    assert_eq!(
        read(memory.0, memory.1),
        (64u64 << 20).to_string(),
        "docker run -m 64m"
    );
    assert_eq!(read(cpu.0, cpu.1), quota(5), "docker run --cpus 0.5");
    docker
        .cmd(
            &[
                "update",
                "-m",
                "96m",
                "--memory-swap",
                "192m",
                "--cpus",
                "1.5",
                id,
            ],
            TIMEOUT,
        )
        .expect_ok("docker update");
    assert_eq!(
        read(memory.0, memory.1),
        (96u64 << 20).to_string(),
        "docker update -m 96m"
    );
    assert_eq!(read(cpu.0, cpu.1), quota(15), "docker update --cpus 1.5");
    if systemd {
        // --memory-swap is memory + swap: 96 MiB of swap.
        assert_eq!(read("memory", "memory.swap.max"), (96u64 << 20).to_string());
        let mut show = std::process::Command::new("systemctl");
        show.args(["show", "-p", "MemoryMax", "-p", "CPUQuotaPerSecUSec"])
            .arg(format!("docker-{id}.scope"));
        let out = run_cmd(show, TIMEOUT).expect_ok("systemctl show");
        assert!(
            out.stdout.contains(&format!("MemoryMax={}", 96u64 << 20))
                && out.stdout.contains("CPUQuotaPerSecUSec=1.500000s"),
            "the update is not on docker-{id}.scope, a daemon-reload would undo it: {out}"
        );
    }
}

/// Docker's `userns-remap: default`: every container in a user namespace mapped to the `dockremap` user's
/// subordinate ids (Docker adds the user and its `/etc/subuid` line itself). The container, an exec (root inside,
/// with the container's capabilities, able to write its `/etc/hosts`), an exec as `-u 1000` and a detached exec run
/// as the mapped host ids, never as the host's root (an exec ran as the host's root before 2026-12-05).
///
/// Runs in the cgroup v2 guest only (`tests/guest-tests.txt`), on containerd 1.7 as the other Docker test: the
/// system user Docker adds must not outlive the test, and the guest is thrown away. scripts/test.sh leaves it out of
/// the host's runs; run alone on a host it says why it did nothing.
#[test]
fn docker_userns_remap_runs_containers_and_execs_in_the_mapped_ids() {
    const TEST: &str = "docker_userns_remap_runs_containers_and_execs_in_the_mapped_ids";
    let settings = Settings::from_env();
    if settings.containerd != "1.7" || !settings.guest {
        predictive_e2e::skip(
            TEST,
            &format!(
                "Docker's userns-remap adds a system user: it runs in the throwaway guest on containerd 1.7 \
                 (here: containerd {}, guest {})",
                settings.containerd, settings.guest
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
    c.ns = NAMESPACE.to_string();
    let runtime = c.runtime().to_string();
    let systemd = systemd_v2_host();
    let docker = Docker::start(&c, &root, &json!({"userns-remap": "default"}), systemd);
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let base = subuid
        .lines()
        .find_map(|l| l.strip_prefix("dockremap:"))
        .and_then(|r| r.split(':').next())
        .and_then(|b| b.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no dockremap line in /etc/subuid: {subuid:?}"));
    let tar = c.settings.cache.join("busybox-image.tar");
    docker
        .cmd(
            &["load", "-i", &tar.to_string_lossy()],
            Duration::from_secs(120),
        )
        .expect_ok("docker load");
    let out = docker
        .cmd(
            &[
                "run",
                "-d",
                "--runtime",
                &runtime,
                DOCKER_IMAGE,
                "sleep",
                "100000",
            ],
            TIMEOUT,
        )
        .expect_ok("docker run -d with userns-remap");
    let id = out.stdout.trim().to_string();
    c.track(&id);
    let pid = docker
        .cmd(&["inspect", "-f", "{{.State.Pid}}", &id], TIMEOUT)
        .expect_ok("docker inspect")
        .stdout
        .trim()
        .to_string();
    let mapped = |uid: u32| vec![(base + uid).to_string(); 4].join(" ");
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"],
        "the container's uid map"
    );
    assert_eq!(
        status_field(&pid, "Uid").unwrap_or_default(),
        mapped(0),
        "the container's init on the host"
    );

    let exec = docker
        .cmd(
            &[
                "exec", &id, "sh", "-c",
                "cat /proc/self/uid_map; id -u; grep CapEff /proc/self/status; echo 10.0.0.1 pe2e >> /etc/hosts && echo hosts-ok",
            ],
            TIMEOUT,
        )
        .expect_ok("docker exec");
    let init_caps = format!(
        "CapEff: {}",
        status_field(&pid, "CapEff").unwrap_or_default()
    );
    let lines: Vec<String> = exec
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("0 {base} 65536"),
            "0".into(),
            init_caps,
            "hosts-ok".into()
        ],
        "an exec: the container's namespace, root there with the init's capabilities: {exec}"
    );
    let user = docker
        .cmd(
            &[
                "exec",
                "-u",
                "1000",
                &id,
                "sh",
                "-c",
                "id -u; echo HOME=$HOME",
            ],
            TIMEOUT,
        )
        .expect_ok("docker exec -u 1000");
    assert_eq!(user.stdout, "1000\nHOME=/\n", "{user}");
    docker
        .cmd(&["exec", "-d", &id, "sleep", "4244"], TIMEOUT)
        .expect_ok("docker exec -d");
    let detached = wait_until(Duration::from_secs(10), || {
        predictive_e2e::clean::processes_matching(|cmd, _| cmd.trim() == "sleep 4244")
            .first()
            .copied()
    })
    .expect("the detached exec runs");
    assert_eq!(
        status_field(detached, "Uid").unwrap_or_default(),
        mapped(0),
        "the detached exec on the host"
    );

    docker
        .cmd(&["rm", "-f", &id], TIMEOUT)
        .expect_ok("docker rm -f");
    let out = docker.stop();
    assert_eq!(out.code, 0, "dockerd did not stop cleanly: {out}");
    c.finish();
}
