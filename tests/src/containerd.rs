//! A private containerd for one test, and `ctr` helpers against it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::clean;
use crate::cmd::{Bg, Output, run_cmd, wait_until};
use crate::settings::{IMAGE, PREDICTIVE_SHIM_BINARY, Settings};

/// Default bound for one ctr call.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    pub settings: Settings,
    pub test: String,
    /// Holds root/, state/, the sockets, config.toml and containerd.log.
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub ctr_bin: PathBuf,
    pub pid: i32,
    /// A namespace of our own: ctr puts containers at cgroupsPath /<ns>/<id>.
    pub ns: String,
    /// The cgroup parent of the test's containers when it is not `/<ns>` (a CRI pod's `cgroup_parent`): the
    /// clean-host checks look there. CRI tests running side by side each need their own, or one's containers
    /// look like another's leaks (all CRI tests share the namespace `k8s.io`).
    pub cgroup_parent: Option<String>,
    ids: Mutex<Vec<String>>,
    finished: bool,
}

fn pid_alive(pid: i32) -> bool {
    !clean::exited(pid)
}

impl Containerd {
    /// Start a private containerd for `test`, or return None (after `SKIPPED:`) when not root.
    pub fn start(test: &str) -> Option<Containerd> {
        Self::start_with(test, Settings::from_env())
    }

    /// [`Self::start`] with explicit settings (the benchmark runs two runtimes on one containerd).
    pub fn start_with(test: &str, settings: Settings) -> Option<Containerd> {
        Self::start_configured(test, settings, None, None)
    }

    /// [`Self::start`] with `broker_toml` added to the predictive config this containerd's shims and broker
    /// read (`DIR/predictive.toml`; `state_dir` and `socket` are set to DIR/broker and DIR/broker.sock).
    pub fn start_with_broker(test: &str, broker_toml: &str) -> Option<Containerd> {
        Self::start_configured(test, Settings::from_env(), Some(broker_toml), None)
    }

    /// [`Self::start_with_broker`] for a test of the broker itself: `None` also when the runtime under test has
    /// none (`PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2`), said on stdout, containerd stopped.
    pub fn start_with_own_broker(test: &str, broker_toml: &str) -> Option<Containerd> {
        let c = Self::start_with_broker(test, broker_toml)?;
        if !c.settings.is_predictive() {
            println!(
                "{test}: runtime {} has no broker; nothing to test",
                c.runtime()
            );
            c.finish();
            return None;
        }
        Some(c)
    }

    /// [`Self::start`] with containerd's whole `config.toml` written by `config(dir)` (containerd-up.sh keeps a
    /// config it finds): for tests that need plugins the default config disables (the CRI test). The config must
    /// put root, state, sockets and the opt dir under `dir` as containerd-up.sh does (`grpc.address` =
    /// `dir/containerd.sock`).
    pub fn start_with_config(test: &str, config: &dyn Fn(&Path) -> String) -> Option<Containerd> {
        Self::start_configured(test, Settings::from_env(), None, Some(config))
    }

    /// [`Self::start_with_config`] with explicit settings (a node's shim directory: the Kubernetes installer test).
    pub fn start_with_settings_and_config(
        test: &str,
        settings: Settings,
        config: &dyn Fn(&Path) -> String,
    ) -> Option<Containerd> {
        Self::start_configured(test, settings, None, Some(config))
    }

    /// [`Self::start_with_config`] with `broker_toml` as in [`Self::start_with_broker`]: a CRI containerd whose
    /// shims use a private broker.
    pub fn start_with_config_and_broker(
        test: &str,
        config: &dyn Fn(&Path) -> String,
        broker_toml: &str,
    ) -> Option<Containerd> {
        Self::start_configured(test, Settings::from_env(), Some(broker_toml), Some(config))
    }

    fn start_configured(
        test: &str,
        settings: Settings,
        broker_toml: Option<&str>,
        config: Option<&dyn Fn(&Path) -> String>,
    ) -> Option<Containerd> {
        if !crate::require_root(test) {
            return None;
        }
        let image_tar = ensure_image(&settings);
        let me = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/pe2e-{me}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(config) = config {
            std::fs::create_dir_all(&dir).expect("creating the containerd dir");
            std::fs::write(dir.join("config.toml"), config(&dir)).expect("writing config.toml");
        }
        if let Some(extra) = broker_toml {
            std::fs::create_dir_all(&dir).expect("creating the containerd dir");
            let text = format!(
                "state_dir = \"{d}/broker\"\nsocket = \"{d}/broker.sock\"\n{extra}\n",
                d = dir.display()
            );
            std::fs::write(dir.join("predictive.toml"), text).expect("writing predictive.toml");
        }
        // Checked after `config`, which may install the shim (the Kubernetes node test's installer does).
        if settings.is_predictive() {
            let bin = settings.shim_dir.join(PREDICTIVE_SHIM_BINARY);
            assert!(
                bin.is_file(),
                "{test}: {} not found: build it first (`make build`, or `cargo build --release -p predictive-shim`), \
                 or set PREDICTIVE_E2E_RUNTIME=io.containerd.runc.v2 / PREDICTIVE_E2E_SHIM_DIR",
                bin.display()
            );
        }
        let mut up = Command::new(settings.script("containerd-up.sh"));
        up.arg(&dir).arg(&settings.containerd);
        if settings.shim_dir.is_dir() {
            up.arg(&settings.shim_dir);
        }
        let out = run_cmd(up, Duration::from_secs(600));
        assert!(
            out.ok(),
            "{test}: starting containerd {}: {out}",
            settings.containerd
        );
        let env = std::fs::read_to_string(dir.join("env")).expect("containerd-up.sh writes env");
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{k} missing from {}/env", dir.display()))
        };
        let pid: i32 = std::fs::read_to_string(dir.join("containerd.pid"))
            .expect("containerd-up.sh writes containerd.pid")
            .trim()
            .parse()
            .expect("containerd.pid holds a pid");
        let c = Containerd {
            test: test.to_string(),
            sock: PathBuf::from(get("CONTAINERD_SOCK")),
            ctr_bin: PathBuf::from(get("CTR")),
            dir,
            pid,
            ns: format!("pe2e{me}n{n}"),
            cgroup_parent: None,
            settings,
            ids: Mutex::new(Vec::new()),
            finished: false,
        };
        c.ctr_with(
            &["images", "import", &image_tar.to_string_lossy()],
            Duration::from_secs(120),
        )
        .expect_ok("importing the busybox image");
        Some(c)
    }

    /// A fresh container id, unique on this host (private containerds share /run/containerd/{runc,s,fifo}).
    pub fn id(&self, name: &str) -> String {
        let id = format!(
            "pe2e-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        self.ids.lock().expect("ids poisoned").push(id.clone());
        id
    }

    /// Adds an id the test did not make with [`Self::id`] (one containerd's CRI plugin or Docker chose) to the
    /// ids [`Self::finish`] checks the host for.
    pub fn track(&self, id: &str) {
        self.ids.lock().expect("ids poisoned").push(id.to_string());
    }

    /// The broker's name for container `id` of this containerd's namespace (`<namespace>/<id>`: every test has a
    /// namespace of its own).
    pub fn broker_id(&self, id: &str) -> String {
        broker::api::broker_id(&self.ns, id)
    }

    pub fn runtime(&self) -> &str {
        &self.settings.runtime
    }

    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        self.ctr_cmd_in(&self.ns, args)
    }

    /// `ctr` in containerd namespace `ns` instead of the test's own.
    pub fn ctr_cmd_in(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.ctr_bin);
        cmd.arg("-a").arg(&self.sock).arg("-n").arg(ns).args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with(args, CTR_TIMEOUT * self.settings.slow())
    }

    /// `ctr` in containerd namespace `ns` (see [`Self::ctr_cmd_in`]).
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        run_cmd(
            self.ctr_cmd_in(ns, args),
            CTR_TIMEOUT * self.settings.slow(),
        )
    }

    pub fn ctr_with(&self, args: &[&str], timeout: Duration) -> Output {
        run_cmd(self.ctr_cmd(args), timeout)
    }

    fn run_args<'a>(
        &'a self,
        mode: &[&'a str],
        id: &'a str,
        flags: &[&'a str],
        cmd: &[&'a str],
    ) -> Vec<&'a str> {
        let mut a = vec!["run"];
        a.extend_from_slice(mode);
        a.extend_from_slice(&["--runtime", self.runtime()]);
        a.extend_from_slice(flags);
        a.extend_from_slice(&[IMAGE, id]);
        a.extend_from_slice(cmd);
        a
    }

    /// `ctr run --rm --runtime R FLAGS IMAGE ID CMD...` in the foreground.
    pub fn run(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        self.ctr(&self.run_args(&["--rm"], id, flags, cmd))
    }

    /// Same, without --rm (the container stays; remove it with [`Self::remove`]).
    pub fn run_keep(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        self.ctr(&self.run_args(&[], id, flags, cmd))
    }

    /// Same, in the background: for tests that act on a running foreground `ctr run`.
    pub fn run_bg(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Bg {
        Bg::spawn(self.ctr_cmd(&self.run_args(&["--rm"], id, flags, cmd)))
    }

    /// `ctr events` of this containerd, once it is live: a warm-up container's events have come through it (an
    /// event sent before the subscription is not replayed).
    pub fn events(&self) -> Bg {
        let mut events = Bg::spawn(self.ctr_cmd(&["events"]));
        let warm = self.id("warm");
        self.run(&warm, &[], &["true"]).expect_ok("warm-up run");
        assert!(
            events.wait_for_stdout(&warm, Duration::from_secs(10)),
            "ctr events saw nothing: {}",
            events.stderr()
        );
        events
    }

    /// `ctr run -d --null-io ...`, then wait until the task is RUNNING.
    pub fn run_detached(&self, id: &str, flags: &[&str], cmd: &[&str]) {
        self.run_detached_try(id, flags, cmd)
            .expect_ok(&format!("starting {id} detached"));
        self.wait_status(id, "RUNNING", Duration::from_secs(20));
    }

    /// A container `id` whose shell counts up in `/tmp/count` every 50 ms, running once the count is past 2; the
    /// returned closure reads the count (through `/proc/<init>/root`): what a pause or a thaw shows.
    pub fn run_counter(&self, id: &str) -> impl Fn() -> Option<u64> + use<> {
        let count = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done";
        self.run_detached(id, &[], &["sh", "-c", count]);
        let file = format!("/proc/{}/root/tmp/count", self.task_pid(id));
        let read = move || {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        wait_until(Duration::from_secs(10), || read().filter(|n| *n > 2))
            .expect("the counter runs");
        read
    }

    pub fn run_detached_try(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        self.ctr(&self.run_args(&["-d", "--null-io"], id, flags, cmd))
    }

    /// The `ctr t ls` rows: (id, pid, status).
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        let out = self.ctr(&["t", "ls"]).expect_ok("ctr t ls");
        out.stdout
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3).then(|| {
                    (
                        f[0].to_string(),
                        f[1].parse().unwrap_or(0),
                        f[2].to_string(),
                    )
                })
            })
            .collect()
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.tasks().into_iter().find(|t| t.0 == id).map(|t| t.2)
    }

    pub fn task_pid(&self, id: &str) -> i32 {
        self.tasks()
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| t.1)
            .unwrap_or_else(|| panic!("task {id} not in `ctr t ls`"))
    }

    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.status(id);
            (last.as_deref() == Some(want)).then_some(())
        });
        assert!(
            ok.is_some(),
            "task {id}: status {last:?}, expected {want} within {timeout:?}"
        );
    }

    pub fn containers(&self) -> Vec<String> {
        let out = self.ctr(&["c", "ls", "-q"]).expect_ok("ctr c ls");
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Kill and delete the task, then the container; panics if the container is still listed.
    pub fn remove(&self, id: &str) {
        if self.status(id).is_some() {
            let out = self.ctr(&["t", "rm", "-f", id]);
            if !out.ok() && self.status(id).is_some() {
                panic!("removing task {id}: {out}");
            }
        }
        if self.containers().iter().any(|c| c == id) {
            self.ctr(&["c", "rm", id])
                .expect_ok(&format!("removing container {id}"));
        }
        assert!(
            !self.containers().iter().any(|c| c == id),
            "container {id} still listed after removal"
        );
    }

    /// Shim processes serving this containerd (they carry `-address <our socket>`), counted once
    /// per shim: a helper child with the same command line (our shim's zygote) is not listed.
    pub fn shim_pids(&self) -> Vec<i32> {
        let all = self.shim_processes();
        all.iter()
            .copied()
            .filter(|p| !clean::parent_of(*p).is_some_and(|pp| all.contains(&pp)))
            .collect()
    }

    /// The shim server that serves container `id` (its command line carries `-id <id>`), if one runs; panics if
    /// more than one does (a test that stops "the" shim must stop the only one).
    pub fn shim_pid_of(&self, id: &str) -> Option<i32> {
        let arg = format!("-id {id} ");
        let servers: Vec<i32> = self
            .shim_pids()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|cmd| {
                    format!("{} ", String::from_utf8_lossy(&cmd).replace('\0', " ")).contains(&arg)
                })
            })
            .collect();
        assert!(servers.len() <= 1, "one shim serves {id}: {servers:?}");
        servers.first().copied()
    }

    /// Every process of this containerd's shims, helpers included.
    pub fn shim_processes(&self) -> Vec<i32> {
        let addr = format!("-address {} ", self.sock.display());
        clean::processes_matching(|cmdline, _| {
            format!("{cmdline} ").contains(&addr)
                && cmdline
                    .split_whitespace()
                    .next()
                    .is_some_and(|a| a.contains("containerd-shim"))
        })
    }

    /// The bundle dir containerd made for a container.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id)
    }

    /// A container's cgroup directory for a v1 controller (`/sys/fs/cgroup/<ctrl>/<ns>/<id>`),
    /// or its unified directory on a cgroup v2 host.
    pub fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").is_file() {
            root.join(self.cgroup_name()).join(id)
        } else {
            root.join(controller).join(self.cgroup_name()).join(id)
        }
    }

    /// The directory under each hierarchy's root that holds this test's container cgroups.
    pub fn cgroup_name(&self) -> &str {
        self.cgroup_parent.as_deref().unwrap_or(&self.ns)
    }

    /// What the clean-host checks and the scrub ([`clean`]) need to know of this containerd.
    pub fn leak_scope(&self) -> clean::Scope<'_> {
        clean::Scope {
            dir: &self.dir,
            sock: &self.sock,
            ns: &self.ns,
            runtime: &self.settings.runtime,
            cgroup_name: self.cgroup_name(),
        }
    }

    /// A CRI test's own cgroup parent (`/<name>`, unique on this host), set as [`Self::cgroup_parent`].
    pub fn own_cgroup_parent(&mut self) -> String {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("pe2e-{}", std::process::id()));
        self.cgroup_parent = Some(name.clone());
        format!("/{name}")
    }

    pub fn cgroup_v2_host() -> bool {
        Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
    }

    /// A file of the container's cgroup, trimmed: `v1` is (controller, file) on a v1 host, `v2` the file on a v2
    /// host.
    pub fn cg_file(&self, id: &str, v1: (&str, &str), v2: &str) -> Option<String> {
        let path = if Self::cgroup_v2_host() {
            self.cgroup_dir("", id).join(v2)
        } else {
            self.cgroup_dir(v1.0, id).join(v1.1)
        };
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The CPU bandwidth limit in force: quota per 100 ms period in microseconds, -1 for none
    /// (`cpu.cfs_quota_us` on v1, `cpu.max` on v2).
    pub fn cpu_quota_us(&self, id: &str) -> Option<i64> {
        let text = self.cg_file(id, ("cpu", "cpu.cfs_quota_us"), "cpu.max")?;
        match text.split_whitespace().next()? {
            "max" => Some(-1),
            q => q.parse().ok(),
        }
    }

    /// CPU time the container has used, microseconds (`cpuacct.usage` on v1, `usage_usec` of `cpu.stat` on v2).
    pub fn cpu_usage_us(&self, id: &str) -> Option<u64> {
        let text = self.cg_file(id, ("cpuacct", "cpuacct.usage"), "cpu.stat")?;
        if Self::cgroup_v2_host() {
            text.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
        } else {
            text.parse::<u64>().ok().map(|ns| ns / 1000)
        }
    }

    /// The memory the container may use before the kernel throttles or stops it: `memory.limit_in_bytes` on
    /// v1; on v2 `memory.high` (the broker's allocation), or `memory.max` where that is unlimited. `u64::MAX` for
    /// no limit.
    pub fn memory_allocation(&self, id: &str) -> Option<u64> {
        if Self::cgroup_v2_host() {
            let high = parse_limit(&self.cg_file(id, ("", ""), "memory.high")?)?;
            if high != u64::MAX {
                return Some(high);
            }
        }
        self.memory_max(id)
    }

    /// The hard memory limit: `memory.limit_in_bytes` on v1, `memory.max` on v2 (`u64::MAX` for none).
    pub fn memory_max(&self, id: &str) -> Option<u64> {
        parse_limit(&self.cg_file(id, ("memory", "memory.limit_in_bytes"), "memory.max")?)
    }

    /// Memory in use now (`memory.usage_in_bytes` / `memory.current`).
    pub fn memory_usage(&self, id: &str) -> Option<u64> {
        self.cg_file(id, ("memory", "memory.usage_in_bytes"), "memory.current")?
            .parse()
            .ok()
    }

    /// The most memory used (`memory.max_usage_in_bytes` / `memory.peak`).
    pub fn memory_peak(&self, id: &str) -> Option<u64> {
        self.cg_file(id, ("memory", "memory.max_usage_in_bytes"), "memory.peak")?
            .parse()
            .ok()
    }

    /// OOM kills in the cgroup (`oom_kill` of `memory.oom_control` / `memory.events`).
    pub fn oom_kills(&self, id: &str) -> Option<u64> {
        let text = self.cg_file(id, ("memory", "memory.oom_control"), "memory.events")?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the cgroup is frozen (`freezer.state` FROZEN / `cgroup.events` frozen 1).
    pub fn frozen(&self, id: &str) -> Option<bool> {
        if Self::cgroup_v2_host() {
            let events = self.cg_file(id, ("", ""), "cgroup.events")?;
            return Some(events.lines().any(|l| l.trim() == "frozen 1"));
        }
        Some(self.cg_file(id, ("freezer", "freezer.state"), "")? == "FROZEN")
    }

    /// Thaws the cgroup behind the runtime's back (a test's teardown).
    pub fn thaw(&self, id: &str) {
        let _ = if Self::cgroup_v2_host() {
            std::fs::write(self.cgroup_dir("", id).join("cgroup.freeze"), "0")
        } else {
            std::fs::write(
                self.cgroup_dir("freezer", id).join("freezer.state"),
                "THAWED",
            )
        };
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Remove what is left, stop containerd, and check the host is clean for every id this test used.
    /// Panics listing the leaks (after cleaning them up, so later tests start clean).
    pub fn finish(self) {
        let (test, runtime, version) = (
            self.test.clone(),
            self.settings.runtime.clone(),
            self.settings.containerd.clone(),
        );
        let problems = self.finish_report();
        if !problems.is_empty() {
            panic!(
                "{test}: host not clean after the test (runtime {runtime}, containerd {version}):\n  {}",
                problems.join("\n  ")
            );
        }
    }

    /// [`Self::finish`] without the panic: returns the leaks found (and scrubbed).
    pub fn finish_report(mut self) -> Vec<String> {
        self.finished = true;
        let mut problems = Vec::new();
        // Containers a test left behind are removed quietly: the leak checks are about what
        // the runtime leaves after a removal.
        for c in self.containers() {
            let _ = self.ctr(&["t", "rm", "-f", &c]);
            let _ = self.ctr(&["c", "rm", &c]);
        }
        let ids = self.ids.lock().expect("ids poisoned").clone();
        // Shims exit after their last task is deleted.
        let shims = wait_until(Duration::from_secs(15), || {
            self.shim_processes().is_empty().then_some(())
        });
        if shims.is_none() {
            problems.push(format!(
                "shim processes still running after all containers were removed: {:?}",
                self.shim_processes()
            ));
        }
        if let Some(leaks) = wait_clean(Duration::from_secs(10), || {
            clean::state_leaks(&self.leak_scope(), &ids)
        }) {
            problems.extend(leaks);
        }
        self.stop_containerd();
        if let Some(leaks) = wait_clean(Duration::from_secs(10), || {
            clean::host_leaks(&self.leak_scope(), &ids)
        }) {
            problems.extend(leaks);
        }
        let keep = self.settings.keep && !problems.is_empty();
        clean::scrub(&self.leak_scope(), &ids, keep);
        problems
    }

    /// The broker socket this containerd's shims use.
    pub fn broker_socket(&self) -> PathBuf {
        self.dir.join("broker.sock")
    }

    /// The pid of the broker a shim started for this containerd, if one runs.
    pub fn broker_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("broker/predictived.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .contains("predictived")
            .then_some(pid)
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 5 s).
    pub fn stop_broker(&self) {
        if let Some(pid) = self.broker_pid() {
            // SAFETY: signalling the broker this test's shims started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Kills containerd with SIGKILL (a crash; its shims and containers run on) and waits until it is gone.
    pub fn kill_containerd(&self) {
        // SAFETY: signalling the containerd this harness started.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let gone = wait_until(Duration::from_secs(10), || {
            (!pid_alive(self.pid)).then_some(())
        });
        assert!(gone.is_some(), "containerd {} survived SIGKILL", self.pid);
    }

    /// Starts containerd again on the same root, state, sockets and config (after [`Self::kill_containerd`]), as a
    /// restart or an upgrade would; the log so far is kept as `containerd.log.1`.
    pub fn start_containerd_again(&mut self) {
        let _ = std::fs::rename(
            self.dir.join("containerd.log"),
            self.dir.join("containerd.log.1"),
        );
        let mut up = Command::new(self.settings.script("containerd-up.sh"));
        up.arg(&self.dir).arg(&self.settings.containerd);
        if self.settings.shim_dir.is_dir() {
            up.arg(&self.settings.shim_dir);
        }
        let out = run_cmd(up, Duration::from_secs(60));
        assert!(out.ok(), "{}: starting containerd again: {out}", self.test);
        self.pid = std::fs::read_to_string(self.dir.join("containerd.pid"))
            .expect("containerd-up.sh writes containerd.pid")
            .trim()
            .parse()
            .expect("containerd.pid holds a pid");
    }

    fn stop_containerd(&self) {
        self.stop_broker();
        if pid_alive(self.pid) {
            // SAFETY: signalling the containerd we started.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; it did not stop in time.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

fn wait_clean(timeout: Duration, mut f: impl FnMut() -> Vec<String>) -> Option<Vec<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let leaks = f();
        if leaks.is_empty() {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(leaks);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The test panicked: clean up as well as we can so later tests start clean.
        if self.settings.keep {
            eprintln!(
                "{}: keeping {} (containerd.log there)",
                self.test,
                self.dir.display()
            );
        }
        let log = self.log();
        let interesting: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.contains("loading plugin")
                    && !l.contains("skip plugin")
                    && !l.contains("devmapper")
            })
            .collect();
        eprintln!(
            "--- containerd.log ({}, without plugin loading; last 60 lines) ---",
            self.dir.join("containerd.log").display()
        );
        for l in &interesting[interesting.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
        let mut down = Command::new(self.settings.script("containerd-down.sh"));
        down.arg(&self.dir).arg("--keep");
        let _ = run_cmd(down, Duration::from_secs(120));
        self.stop_containerd();
        let ids = self.ids.lock().expect("ids poisoned").clone();
        clean::scrub(&self.leak_scope(), &ids, self.settings.keep);
    }
}

/// Build the busybox image tar once per cache (under a lock: tests run in parallel).
fn ensure_image(settings: &Settings) -> PathBuf {
    ensure_image_tar(settings, "busybox-image.tar", &[])
}

/// `$cache/<file>`, built once per cache by `scripts/make-image.sh <tar> <args>...` under a lock (tests run in
/// parallel); `args` are make-image.sh's optional image name and command.
pub fn ensure_image_tar(settings: &Settings, file: &str, args: &[&str]) -> PathBuf {
    let tar = settings.cache.join(file);
    if tar.is_file() {
        return tar;
    }
    std::fs::create_dir_all(&settings.cache).expect("creating the cache dir");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"exec 9>"$1.lock"; flock -w 300 9; t=$1 m=$2; shift 2; [ -s "$t" ] || "$m" "$t" "$@""#)
        .arg("ensure-image")
        .arg(&tar)
        .arg(settings.script("make-image.sh"))
        .args(args);
    run_cmd(cmd, Duration::from_secs(320)).expect_ok(&format!("building {file}"));
    tar
}

/// A memory limit file's value: bytes, or `u64::MAX` for `max` (v2) and v1's page-rounded "unlimited".
fn parse_limit(text: &str) -> Option<u64> {
    if text == "max" {
        return Some(u64::MAX);
    }
    let v: u64 = text.parse().ok()?;
    Some(if v >= (1 << 62) { u64::MAX } else { v })
}
