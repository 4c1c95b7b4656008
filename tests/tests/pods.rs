//! Pods land in their pod cgroups, for both of kubelet's cgroup drivers (issue 13 acceptance 1; issue 18's CRI
//! pod with a systemd `.slice` parent and `SystemdCgroup = true`). A CRI v1 client drives containerd's CRI plugin
//! as kubelet does; the test stands in for kubelet's own part (the pod cgroups and their limits,
//! `predictive_e2e::kubelet`).
//!
//! On a host booted with systemd on cgroup v2 (the guest lane) the `.slice` pod runs with `SystemdCgroup = true`:
//! its containers must be transient `cri-containerd-<id>.scope` units in the pod's slice that systemd knows,
//! delegated, whose limits survive `systemctl daemon-reload` after an Update, and that are gone after removal.
//! Elsewhere (this repository's v1 host, no systemd) the same `slice:prefix:name` path must land where systemd
//! would have put it, never as a literal directory at a hierarchy root. Root only; `SKIPPED:` otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use predictive_e2e::cmd::{run_cmd, wait_until};
use predictive_e2e::cri::{self, CriClient, HANDLER, NAMESPACE};
use predictive_e2e::kubelet::{self, Driver, PodCgroup};
use predictive_e2e::settings::{IMAGE, Settings};
use predictive_e2e::{Containerd, require_root};
use serde_json::{Value, json};

/// A second handler, without `SystemdCgroup`, for the cgroupfs pod on a systemd host (a node runs one driver;
/// this test runs both on one containerd).
const FS_HANDLER: &str = "predictive-fs";

/// containerd's CRI runtime tables: the packaged drop-in, `SystemdCgroup = true` for the `predictive` handler on
/// a systemd v2 host, and [`FS_HANDLER`].
fn dropin(settings: &Settings, systemd: bool) -> String {
    let mut text = cri::dropin(settings, &settings.runtime);
    let runtimes = if settings.is_v2() {
        r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes"#
    } else {
        r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#
    };
    text.push_str(&format!(
        "\n[{runtimes}.{FS_HANDLER}]\n  runtime_type = \"{}\"\n",
        settings.runtime
    ));
    if systemd {
        text.push_str(&format!(
            "\n[{runtimes}.{HANDLER}.options]\n  SystemdCgroup = true\n"
        ));
    }
    text
}

/// Whether this host mounts systemd's named v1 hierarchy (Debian's v1 and hybrid hosts do, with or without
/// systemd as PID 1).
fn has_name_systemd() -> bool {
    kubelet::hierarchies()
        .iter()
        .any(|(_, c)| c.iter().any(|c| c == "name=systemd"))
}

/// Entries at the root of every hierarchy that name `id` (a literal `slice:prefix:id` directory, say).
fn at_roots(id: &str) -> Vec<PathBuf> {
    kubelet::hierarchies()
        .into_iter()
        .flat_map(|(mount, _)| {
            std::fs::read_dir(&mount)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(id))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn systemctl_show(unit: &str, property: &str) -> String {
    let mut c = std::process::Command::new("systemctl");
    c.args(["show", "--value", "-p", property, unit]);
    run_cmd(c, Duration::from_secs(60)).stdout.trim().to_owned()
}

/// The host has 2 MiB huge pages and a cgroup v2 hugetlb controller (this repository's v1 VM has no hugetlb
/// hierarchy, and containerd drops the limits there).
fn huge_pages_2mb() -> bool {
    Containerd::cgroup_v2_host()
        && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir()
        && std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb"))
}

/// On cgroup v2, the container's cgroup `dir` has every controller the host's root offers, as runc's has (runc
/// enables them all from the root down; libcgroups only those it has code for: under its systemd manager not
/// hugetlb, under either not rdma or misc, so a per-container hugepage limit had no file to go to).
fn assert_all_controllers(dir: &Path, what: &str) {
    let set = |f: &Path| {
        let mut v: Vec<String> = std::fs::read_to_string(f)
            .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        set(&dir.join("cgroup.controllers")),
        set(Path::new("/sys/fs/cgroup/cgroup.controllers")),
        "the controllers of {what} ({})",
        dir.display()
    );
}

/// On cgroup v2, what kubelet asks for in a container's cgroup `dir` beyond CPU and memory limits, as runc's has
/// it: every controller the root offers ([`assert_all_controllers`]); `memory.oom.group` 1 (the `unified` key a
/// kubelet on v2 sends: an OOM kill takes the whole container; under the systemd driver libcgroups' manager drops
/// it and the create's worker writes it); `memory.swap.max` 0 (the CRI plugin sends memory+swap equal to the
/// limit; libcgroups' cgroupfs manager skipped the 0 and left `max`), where the host has swap accounting; and,
/// where the host has 2 MiB huge pages, kubelet's limit of 0 for a page size the pod does not request (under the
/// systemd driver written by the worker: systemd has no property for it). `oom_group`: whether to check it.
fn assert_v2_extras(dir: &Path, what: &str, oom_group: bool) {
    assert_all_controllers(dir, what);
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| format!("({f}: {e})"))
            .trim()
            .to_owned()
    };
    if oom_group {
        assert_eq!(read("memory.oom.group"), "1", "{what}'s memory.oom.group");
    }
    if dir.join("memory.swap.max").is_file() {
        assert_eq!(read("memory.swap.max"), "0", "{what} may swap");
    }
    if huge_pages_2mb() {
        assert_eq!(read("hugetlb.2MB.max"), "0", "{what}'s hugepage limit");
    }
}

/// The slice pod's `io.predictive.priority`: the broker gives it an I/O weight. Below 0: the broker's default
/// policy lets a pod lower its priority, not raise it (`[policy] max_priority` 0).
const PRIORITY: i32 = -100;

/// The `io.weight` the broker's weight for [`PRIORITY`] becomes on cgroup v2 (the conversion the shim writes).
fn io_weight_wanted() -> String {
    let blkio = broker::controller::io_weight(PRIORITY).expect("a weight for the priority");
    format!(
        "default {}",
        runtime_hooks::actuate::blkio_weight_to_io_weight(blkio)
    )
}

/// The broker's I/O weight is in the container's cgroup (`io.weight`'s first line), within `within`.
fn assert_io_weight(dir: &Path, what: &str, within: Duration) {
    let read = || {
        std::fs::read_to_string(dir.join("io.weight"))
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let want = io_weight_wanted();
    let _ = wait_until(within, || (read() == want).then_some(()));
    assert_eq!(read(), want, "{what}'s io.weight");
}

struct Pod {
    sandbox: String,
    container: String,
}

fn run_pod(
    c: &Containerd,
    api: &CriClient,
    pod: &PodCgroup,
    name: &str,
    handler: &str,
    annotations: Value,
) -> Pod {
    let uid = format!("{name}-{}", std::process::id());
    let logs = c.dir.join("pod-logs");
    let config = cri::pod_config(
        name,
        &uid,
        "default",
        &logs,
        &pod.cgroup_parent,
        annotations,
    );
    let sandbox = api.run_pod(c, &config, handler);
    let mut resources =
        json!({"cpu_period": 100000, "cpu_quota": 100000, "memory_limit_in_bytes": 268435456});
    if Containerd::cgroup_v2_host() {
        // What a kubelet on cgroup v2 adds to every container: an OOM kill takes the whole container.
        resources["unified"] = json!({"memory.oom.group": "1"});
    }
    if huge_pages_2mb() {
        // Kubelet sends a limit for every page size the node has, 0 for one the pod does not request.
        resources["hugepage_limits"] = json!([{"page_size": "2MB", "limit": 0}]);
    }
    let container = api.create_container(
        c,
        &sandbox,
        json!({
            "metadata": {"name": "app"},
            "image": {"image": IMAGE},
            "command": ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 100000"],
            "log_path": format!("{name}-app.log"),
            "linux": {"resources": resources}
        }),
        &config,
    );
    api.call("StartContainer", json!({"container_id": container}));
    Pod { sandbox, container }
}

/// Sandbox and container processes are in their own cgroups inside the pod's, in every hierarchy (the leaf
/// `leaf(id)`: `cri-containerd-<id>.scope` for a slice pod, `<id>` for a cgroupfs one), and nothing named after
/// them sits at a hierarchy root.
fn assert_inside(c: &Containerd, pod: &PodCgroup, p: &Pod, leaf: &dyn Fn(&str) -> String) {
    for id in [&p.sandbox, &p.container] {
        let pid = c.task_pid(id);
        let cgroups = kubelet::cgroups_of(pid);
        assert!(!cgroups.is_empty(), "no cgroups for {id} (pid {pid})");
        let want = format!("{}/{}", pod.path, leaf(id));
        if has_name_systemd() {
            // What a user checks with `cat /proc/<pid>/cgroup`: the name=systemd line names the pod too.
            let line = cgroups.iter().find(|(c, _)| c == "name=systemd");
            assert_eq!(
                line.map(|(_, p)| p.as_str()),
                Some(want.as_str()),
                "{id} (pid {pid}) is not in its pod in the name=systemd hierarchy: {cgroups:?}"
            );
        }
        for (ctrl, path) in &cgroups {
            assert_eq!(
                path, &want,
                "{id} (pid {pid}) is at {path} in hierarchy {ctrl:?}, not in its pod: {cgroups:?}"
            );
        }
        let stray = at_roots(id);
        assert!(
            stray.is_empty(),
            "{id} made cgroups at a hierarchy root: {stray:?}"
        );
    }
}

/// Directories left inside the pods' cgroups, in every hierarchy.
fn left_in(pods: &[&PodCgroup]) -> Vec<PathBuf> {
    kubelet::hierarchies()
        .into_iter()
        .flat_map(|(mount, _)| pods.iter().map(move |p| p.dir(&mount)).collect::<Vec<_>>())
        .flat_map(|d| {
            std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| p.is_dir())
        .collect()
}

/// ContainerStats and ListContainerStats report the container's usage.
fn assert_stats(api: &CriClient, id: &str) {
    let usage = wait_until(Duration::from_secs(30), || {
        let s = api.call("ContainerStats", json!({"container_id": id}));
        let cpu = s["stats"]["cpu"]["usage_core_nano_seconds"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| s["stats"]["cpu"]["usage_core_nano_seconds"]["value"].as_u64())?;
        let mem = s["stats"]["memory"]["working_set_bytes"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| s["stats"]["memory"]["working_set_bytes"]["value"].as_u64())?;
        (cpu > 0 && mem > 0).then_some((cpu, mem))
    });
    let (cpu, mem) = usage.unwrap_or_else(|| {
        panic!(
            "ContainerStats of {id} report no usage: {}",
            api.call("ContainerStats", json!({"container_id": id}))
        )
    });
    println!("{id}: cpu {cpu} ns, working set {mem} bytes");
    let all = api.call("ListContainerStats", json!({}));
    assert!(
        all["stats"]
            .as_array()
            .is_some_and(|v| v.iter().any(|s| s["attributes"]["id"] == id)),
        "ListContainerStats misses {id}: {all}"
    );
}

/// A pod's container (the CRI plugin's default capabilities, CAP_MKNOD among them) may make nodes of the host's
/// disk and console but open neither: its spec denies every device but the standard ones, and runc's defaults do
/// not add the console.
fn assert_no_host_device(api: &CriClient, id: &str, when: &str) {
    let (major, minor) = predictive_e2e::root_disk();
    let script = format!(
        "mknod /tmp/disk b {major} {minor} && mknod /tmp/console c 5 1 && echo MADE; \
         if head -c 1 /tmp/disk >/dev/null; then echo DISK; fi; if head -c 0 /tmp/console; then echo CONSOLE; fi; \
         rm -f /tmp/disk /tmp/console; head -c 4 /dev/zero | wc -c"
    );
    let out = api.exec_sync(id, &["sh", "-c", &script], 30);
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["MADE", "4"],
        "container {id} ({when}): the host's disk {major}:{minor} or console opened, or mknod failed: {out:?}"
    );
}

fn remove_pod(api: &CriClient, p: &Pod) {
    api.call(
        "StopContainer",
        json!({"container_id": p.container, "timeout": 10}),
    );
    api.call("RemoveContainer", json!({"container_id": p.container}));
    api.call("StopPodSandbox", json!({"pod_sandbox_id": p.sandbox}));
    api.call("RemovePodSandbox", json!({"pod_sandbox_id": p.sandbox}));
}

#[test]
fn cri_pods_land_in_their_pod_cgroups() {
    const TEST: &str = "cri_pods_land_in_their_pod_cgroups";
    if !require_root(TEST) {
        return;
    }
    let settings = Settings::from_env();
    if let Err(e) = cri::prepare(&settings) {
        panic!("{TEST}: {e}");
    }
    let systemd = kubelet::systemd_v2_host();
    let pause = cri::ensure_pause_image(&settings);
    let dropin = dropin(&settings, systemd);
    let version = settings.containerd.clone();
    let Some(mut c) =
        // containerd drops a container's hugepage limits by default; a node with huge pages passes them on.
        Containerd::start_with_config(TEST, &|dir| {
            cri::config_with(dir, &version, &dropin, "disable_hugetlb_controller = false")
        })
    else {
        return;
    };
    c.ns = NAMESPACE.to_string();
    std::fs::create_dir_all(c.dir.join("pod-logs")).expect("pod log dir");
    let api = cri::ready_client(&mut c, &pause);

    let me = std::process::id();
    let slice_pod = PodCgroup::create(Driver::Systemd, &format!("s{me}"), 1 << 30, 2.0);
    let fs_pod = PodCgroup::create(Driver::Cgroupfs, &format!("f{me}"), 1 << 30, 2.0);
    // The slice pod's priority gives it the broker's I/O weight: written into its cgroup, and (under the systemd
    // driver) into the unit's `IOWeight=` drop-in for systemd's next reload, which would write 100 otherwise.
    let slice = run_pod(
        &c,
        &api,
        &slice_pod,
        "pe2e-slice",
        HANDLER,
        json!({"io.predictive.priority": PRIORITY.to_string()}),
    );
    let fs = run_pod(&c, &api, &fs_pod, "pe2e-fs", FS_HANDLER, json!({}));
    assert_inside(&c, &slice_pod, &slice, &|id| {
        format!("cri-containerd-{id}.scope")
    });
    assert_inside(&c, &fs_pod, &fs, &|id| id.to_owned());
    for p in [&slice, &fs] {
        assert_stats(&api, &p.container);
        assert_no_host_device(&api, &p.container, "started");
    }
    let scope = format!("cri-containerd-{}.scope", slice.container);
    let scope_dir = PathBuf::from("/sys/fs/cgroup")
        .join(slice_pod.path.trim_start_matches('/'))
        .join(&scope);
    if Containerd::cgroup_v2_host() {
        let dir = fs_pod.dir(Path::new("/sys/fs/cgroup")).join(&fs.container);
        assert_v2_extras(&dir, "the cgroupfs pod's container", true);
        if systemd {
            assert_v2_extras(&scope_dir, "the slice pod's container", true);
            // Applied at the Create when the broker answers it; here the first container starts the broker, so when
            // its shim registers late (about a second after).
            assert_io_weight(
                &scope_dir,
                "the slice pod's container",
                Duration::from_secs(30),
            );
        }
    }
    if systemd {
        // systemd knows the container: a running, delegated scope in the pod's slice.
        assert_eq!(systemctl_show(&scope, "ActiveState"), "active", "{scope}");
        assert_eq!(systemctl_show(&scope, "Delegate"), "yes", "{scope}");
        let parent = slice_pod
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(systemctl_show(&scope, "Slice"), parent, "{scope}");
        // A rewrite of its limits (here a user's Update, like a broker directive through the same path) sticks
        // across systemd's daemon-reload, which puts back the unit properties it knows.
        api.call(
            "UpdateContainerResources",
            json!({"container_id": slice.container, "linux": {
                "cpu_period": 100000, "cpu_quota": 50000, "memory_limit_in_bytes": 201326592}}),
        );
        let read = |f: &str| {
            std::fs::read_to_string(scope_dir.join(f))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        assert_eq!(
            read("cpu.max"),
            "50000 100000",
            "Update did not reach {scope}"
        );
        assert_eq!(read("memory.max"), "201326592");
        // The unit's properties changed: systemd wrote every file it has a property for, with the unit's values or
        // its defaults (memory.oom.group 0); what it has none for was written again after it.
        assert_v2_extras(
            &scope_dir,
            "the slice pod's container after an Update",
            true,
        );
        assert_io_weight(
            &scope_dir,
            "the slice pod's container after an Update",
            Duration::ZERO,
        );
        let mut reload = std::process::Command::new("systemctl");
        reload.arg("daemon-reload");
        run_cmd(reload, Duration::from_secs(120)).expect_ok("systemctl daemon-reload");
        assert_eq!(
            read("cpu.max"),
            "50000 100000",
            "daemon-reload undid the CPU update of {scope}"
        );
        assert_eq!(
            read("memory.max"),
            "201326592",
            "daemon-reload undid the memory update of {scope}"
        );
        assert_no_host_device(&api, &slice.container, "after daemon-reload");
        // What systemd has no property for, or ours sets besides it, is still there after the reload; the OOM group
        // is now systemd's own to write: the reload read the shim's drop-in.
        assert_v2_extras(
            &scope_dir,
            "the slice pod's container after daemon-reload",
            true,
        );
        assert_io_weight(
            &scope_dir,
            "the slice pod's container after daemon-reload",
            Duration::ZERO,
        );
        assert_eq!(systemctl_show(&scope, "OOMPolicy"), "kill", "{scope}");
        // An OOM kill: kubelet sees OOMKilled, and systemd, which now fails the unit for it, does not keep it
        // listed failed.
        api.exec_sync(
            &slice.container,
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=400M", "count=1"],
            60,
        );
        let exited = wait_until(Duration::from_secs(30), || {
            let status =
                &api.call("ContainerStatus", json!({"container_id": slice.container}))["status"];
            (status["state"] == "CONTAINER_EXITED").then(|| {
                (
                    status["exit_code"].as_i64().unwrap_or(-1),
                    status["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
        });
        assert_eq!(
            exited,
            Some((137, "OOMKilled".to_owned())),
            "the slice pod's container after an OOM kill"
        );
        let unit_gone = wait_until(Duration::from_secs(30), || {
            (systemctl_show(&scope, "LoadState") == "not-found").then_some(())
        });
        assert!(
            unit_gone.is_some(),
            "{scope} kept after its OOM kill: {} {}",
            systemctl_show(&scope, "ActiveState"),
            systemctl_show(&scope, "Result")
        );
    }

    remove_pod(&api, &slice);
    remove_pod(&api, &fs);
    let gone = wait_until(Duration::from_secs(30), || {
        left_in(&[&slice_pod, &fs_pod]).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "container cgroups left in the pods after removal: {:?}",
        left_in(&[&slice_pod, &fs_pod])
    );
    if systemd {
        let state = systemctl_show(&scope, "ActiveState");
        assert_ne!(
            state, "active",
            "{scope} still active after RemoveContainer"
        );
        let drop_ins = PathBuf::from("/run/systemd/transient").join(format!("{scope}.d"));
        assert!(
            !drop_ins.exists(),
            "{} left after RemoveContainer: {:?}",
            drop_ins.display(),
            std::fs::read_dir(&drop_ins)
                .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
    }
    c.finish();
    drop(slice_pod);
    drop(fs_pod);
}
