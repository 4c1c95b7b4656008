//! A Kubernetes pod with `hostUsers: false` through CRI: containerd 2.x's CRI plugin gives the pod a user namespace
//! (kubelet's mapping: 65,536 host ids of its own), an idmapped rootfs (the overlay snapshotter's `uidmap=` /
//! `gidmap=` options) and idmapped `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (the spec's mount
//! `uidMappings`). containerd 1.x has no such pods (kubelet 1.33+ asks for 2.0), so scripts/test.sh runs this file
//! on 2.x only; run alone on 1.x it says why it did nothing. Root only; `SKIPPED:` otherwise.

use std::time::Duration;

use predictive_e2e::cmd::wait_until;
use predictive_e2e::cri::{self, NAMESPACE, USERNS_HANDLER};
use predictive_e2e::settings::{IMAGE, Settings};
use predictive_e2e::{Containerd, require_root};
use serde_json::json;

/// Host uids and gids `BASE..BASE + 65536` are the pod's (kubelet hands out multiples of 65,536).
const BASE: u32 = 1 << 20;

/// Where kubelet mounts a pod's service account token.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether kernel release `release` (`/proc/sys/kernel/osrelease`, e.g. `6.1.0-28-amd64`) is `major.minor` or later.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The `Uid:` line of `/proc/PID/status` (real, effective, saved, filesystem).
fn host_uids(pid: i32) -> Option<String> {
    predictive_e2e::clean::status_field(pid, "Uid")
}

/// The process running `command` in container `cid`.
fn process_of(cid: &str, command: &str) -> Option<i32> {
    cri::in_container(cid, command).into_iter().next()
}

#[test]
fn a_user_namespaced_pod_runs_on_idmapped_files() {
    const TEST: &str = "a_user_namespaced_pod_runs_on_idmapped_files";
    let settings = Settings::from_env();
    if !settings.is_v2() {
        predictive_e2e::skip(
            TEST,
            &format!(
                "user-namespaced pods need containerd 2.x, not {}",
                settings.containerd
            ),
        );
        return;
    }
    if !require_root(TEST) {
        return;
    }
    let (pause, dropin) = cri::prepared(&settings, TEST);
    let version = settings.containerd.clone();
    let bridge = format!("pe2eu{}", std::process::id() % 100_000);
    let _bridge = Bridge(bridge.clone());
    let octet = 100 + (std::process::id() % 100) as u8;
    let Some(mut c) = Containerd::start_with_config(TEST, &|dir| {
        cri::bridge_network(dir, &bridge, octet).unwrap_or_else(|e| panic!("{TEST}: {e}"));
        cri::config(dir, &version, &dropin)
    }) else {
        return;
    };
    c.ns = NAMESPACE.to_string();
    // The pod's cgroups under the test's own parent, where the clean-host checks look (not a shared /k8s.io).
    let parent = c.own_cgroup_parent();
    let api = cri::ready_client(&mut c, &pause);
    // What kubelet checks before it sends a pod with hostUsers: false to a RuntimeClass.
    let status = api.call("Status", json!({}));
    let handlers = &status["runtime_handlers"];
    let features = handlers
        .as_array()
        .and_then(|h| h.iter().find(|h| h["name"] == USERNS_HANDLER))
        .map(|h| h["features"].clone());
    assert_eq!(
        features,
        Some(json!({"recursive_read_only_mounts": true, "user_namespaces": true})),
        "the {USERNS_HANDLER} handler's features in CRI Status: {handlers}"
    );
    let logs = c.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("creating the pod log dir");

    let ids = json!([{"host_id": BASE, "container_id": 0, "length": 65536}]);
    let userns = json!({"mode": "POD", "uids": ids, "gids": ids});
    let mut pod = cri::pod_config(
        "pe2e-userns",
        &format!("pe2e-userns-{}", std::process::id()),
        "default",
        &logs,
        &parent,
        json!({"io.predictive.task-type": "cri-userns"}),
    );
    // A pod network of its own: kubelet refuses hostNetwork with hostUsers: false.
    pod["linux"]["security_context"]["namespace_options"] =
        json!({"userns_options": userns, "pid": "CONTAINER"});
    let sid = api.run_pod(&c, &pod, USERNS_HANDLER);
    // Two volumes of the host's root as kubelet hands them over: `/vol` idmapped (kubelet gives a user-namespaced
    // pod's volumes its mapping), `/ro` read-only with `recursiveReadOnly: Enabled`, a tmpfs mounted below it.
    let vol = c.dir.join("vol");
    let ro = c.dir.join("ro");
    std::fs::create_dir_all(&vol).expect("mkdir vol");
    std::fs::write(vol.join("data"), b"host\n").expect("writing the volume");
    std::fs::create_dir_all(ro.join("sub")).expect("mkdir ro/sub");
    let sub = Tmpfs::mount(&ro.join("sub"));
    let create = |name: &str, user: Option<u32>, mounts: serde_json::Value| -> String {
        let mut security = json!({"namespace_options": {"userns_options": userns}});
        if let Some(uid) = user {
            security["run_as_user"] = json!({"value": uid});
        }
        api.create_container(
            &c,
            &sid,
            json!({
                "metadata": {"name": name},
                "image": {"image": IMAGE},
                "command": ["sleep", "100000"],
                "log_path": format!("{name}.log"),
                "mounts": mounts,
                "linux": {"security_context": security}
            }),
            &pod,
        )
    };
    let container = |name: &str, user: Option<u32>, mounts: serde_json::Value| -> String {
        let cid = create(name, user, mounts);
        api.call("StartContainer", json!({"container_id": cid}));
        cid
    };
    let app = container(
        "app",
        None,
        json!([
            {"container_path": "/vol", "host_path": vol, "uidMappings": ids, "gidMappings": ids},
            {"container_path": "/ro", "host_path": ro, "readonly": true, "recursive_read_only": true,
             "propagation": "PROPAGATION_PRIVATE"}
        ]),
    );
    let user = container("user", Some(1000), json!([]));

    // The host's view: the pod's processes run as its own host ids, in a namespace that maps them.
    let sleep = process_of(&app, "sleep 100000").expect("the app's sleep runs");
    let map = std::fs::read_to_string(format!("/proc/{sleep}/uid_map")).unwrap_or_default();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &BASE.to_string(), "65536"],
        "the app's uid map: {map:?}"
    );
    // Run by our shim (the handler's runtime_path), which the broker knows the pod's containers from.
    let parent = std::fs::read_to_string(format!("/proc/{sleep}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:").map(|p| p.trim().to_owned()))
        .unwrap_or_default();
    let shim = std::fs::read_link(format!("/proc/{parent}/exe")).unwrap_or_default();
    assert!(
        shim.ends_with(predictive_e2e::settings::PREDICTIVE_SHIM_BINARY),
        "the app's parent {parent} is {}",
        shim.display()
    );
    let root = format!("{BASE} {BASE} {BASE} {BASE}");
    assert_eq!(host_uids(sleep), Some(root.clone()), "the app's init");
    let as_user = process_of(&user, "sleep 100000").and_then(host_uids);
    let uid_1000 = (BASE + 1000).to_string();
    assert_eq!(
        as_user,
        Some(format!("{uid_1000} {uid_1000} {uid_1000} {uid_1000}")),
        "runAsUser 1000 is host uid BASE + 1000"
    );

    // The container's view through an exec (kubectl exec, an exec probe): the same namespace, and its image and
    // the pod's files are root's, as on disk, through the idmapped mounts.
    let exec = api.exec_sync(
        &app,
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; stat -c '%n %u:%g' / /bin/busybox /etc/hosts /etc/hostname /etc/resolv.conf",
        ],
        20,
    );
    let lines: Vec<Vec<&str>> = exec
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let owned = |path: &'static str| vec![path, "0:0"];
    assert_eq!(
        lines,
        [
            vec!["0"],
            vec!["0", &BASE.to_string(), "65536"],
            owned("/"),
            owned("/bin/busybox"),
            owned("/etc/hosts"),
            owned("/etc/hostname"),
            owned("/etc/resolv.conf"),
        ],
        "an exec in the app: {exec:?}"
    );
    // The pod's root may write what is its own: through the idmapped mount the host file's owner is it.
    let write = api.exec_sync(
        &app,
        &[
            "sh",
            "-c",
            "echo 10.0.0.1 pe2e >> /etc/hosts && touch /made && stat -c %u /made",
        ],
        20,
    );
    assert_eq!(
        (write.exit_code, write.stdout.trim()),
        (0, "0"),
        "the pod's root writing its files: {write:?}"
    );
    let hosts = std::fs::read_to_string(
        c.dir
            .join("root/io.containerd.grpc.v1.cri/sandboxes")
            .join(&sid)
            .join("hosts"),
    )
    .unwrap_or_default();
    assert!(
        hosts.contains("10.0.0.1 pe2e"),
        "the sandbox's hosts file: {hosts:?}"
    );
    // The idmapped volume is the pod root's to write; the recursively read-only one is read-only below too.
    let volume = api.exec_sync(
        &app,
        &[
            "sh",
            "-c",
            "stat -c %u:%g /vol/data && echo pod >> /vol/data && cat /vol/data",
        ],
        20,
    );
    assert_eq!(
        (volume.exit_code, volume.stdout.as_str()),
        (0, "0:0\nhost\npod\n"),
        "the idmapped volume: {volume:?}"
    );
    for path in ["/ro/x", "/ro/sub/x"] {
        let touch = api.exec_sync(&app, &["touch", path], 20);
        assert!(
            touch.exit_code != 0 && touch.stderr.contains("Read-only file system"),
            "{path} in a recursiveReadOnly volume: {touch:?}"
        );
    }
    let user_exec = api.exec_sync(&user, &["sh", "-c", "id -u; cat /proc/self/uid_map"], 20);
    assert_eq!(
        user_exec.stdout.split_whitespace().collect::<Vec<_>>(),
        ["1000", "0", &BASE.to_string(), "65536"],
        "an exec in the runAsUser 1000 container: {user_exec:?}"
    );

    // A projected volume (the service account token kubelet gives every pod) is a tmpfs of kubelet's holding
    // root's 0644 files, handed over with the pod's mapping. Linux idmaps tmpfs from 6.3: there the pod's root owns
    // the files and a runAsUser container reads them. A volume the kernel cannot idmap (tmpfs before 6.3, ramfs on
    // every release) fails the start with an error naming the volume, its filesystem and the kernel (what kubelet's
    // design asks of the runtime), and the pod's other containers run on.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let volume_of = |name: &str, fs: &str| {
        let dir = c.dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir volume");
        let mount = Tmpfs::mount_as(fs, &dir);
        std::fs::write(dir.join("token"), b"secret\n").expect("writing the token");
        let mounts = json!([{"container_path": TOKEN_DIR, "host_path": dir, "readonly": true,
                             "uidMappings": ids, "gidMappings": ids}]);
        (mount, mounts)
    };
    let refused = |cid: &str, fs: &str, since: &str| {
        let start = api.try_call("StartContainer", &json!({"container_id": cid}));
        assert!(
            start.code != 0
                && start
                    .stderr
                    .contains(&format!("mount {TOKEN_DIR}: idmapping its source"))
                && start
                    .stderr
                    .contains(&format!("on {fs}{since} (this is Linux {}", release.trim())),
            "starting a container with an idmapped {fs} volume on Linux {release:?}: {start}"
        );
        let alive = api.exec_sync(&app, &["true"], 20);
        assert_eq!(
            alive.exit_code, 0,
            "the app after the refused start: {alive:?}"
        );
    };
    let (projected, mounts) = volume_of("token", "tmpfs");
    let reader = create("reader", Some(1000), mounts);
    if kernel_at_least(&release, 6, 3) {
        api.call("StartContainer", json!({"container_id": reader}));
        let read = api.exec_sync(
            &reader,
            &[
                "sh",
                "-c",
                &format!("stat -c %u:%g {TOKEN_DIR}/token && cat {TOKEN_DIR}/token"),
            ],
            20,
        );
        assert_eq!(
            (read.exit_code, read.stdout.as_str()),
            (0, "0:0\nsecret\n"),
            "the projected volume on Linux {release:?}: {read:?}"
        );
    } else {
        refused(&reader, "tmpfs", ", which Linux idmaps from 6.3");
    }
    let (ramfs, mounts) = volume_of("ramfs", "ramfs");
    let unmappable = create("unmappable", None, mounts);
    refused(&unmappable, "ramfs", "");

    // Teardown as kubelet does it; the shim's idmapped copies and helper processes are gone with the pod.
    api.call("StopPodSandbox", json!({"pod_sandbox_id": sid}));
    for cid in [&app, &user, &reader, &unmappable] {
        api.call("RemoveContainer", json!({"container_id": cid}));
    }
    api.call("RemovePodSandbox", json!({"pod_sandbox_id": sid}));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&*c.dir.to_string_lossy()) && l.contains("/idmapped/"))
        .collect();
    assert!(left.is_empty(), "idmapped copies left mounted: {left:?}");
    let gone = wait_until(Duration::from_secs(10), || {
        api.call("ListContainers", json!({}))["containers"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    assert!(gone.is_some(), "containers left after the teardown");
    drop(sub);
    drop(projected);
    drop(ramfs);
    c.finish();
}

/// A tmpfs (or another memory filesystem) mounted at a directory for the test's life.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path) -> Tmpfs {
        Tmpfs::mount_as("tmpfs", at)
    }

    fn mount_as(fs: &str, at: &std::path::Path) -> Tmpfs {
        let mut m = std::process::Command::new("mount");
        m.args(["-t", fs, &format!("pe2e-{fs}")]).arg(at);
        predictive_e2e::cmd::run_cmd(m, Duration::from_secs(30))
            .expect_ok("mounting a memory filesystem");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mut u = std::process::Command::new("umount");
        u.arg("-l").arg(&self.0);
        let _ = predictive_e2e::cmd::run_cmd(u, Duration::from_secs(30));
    }
}

/// Deletes the test's CNI bridge when the test ends, passed or not.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        cri::remove_bridge(&self.0);
    }
}
