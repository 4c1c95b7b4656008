//! Docker 26 (Debian 13's docker.io and docker-cli, unpacked under the cache by `scripts/fetch-debs.sh`) running
//! privately against a test's containerd: its own data-root, exec-root, pidfile, socket and daemon.json under the
//! containerd's test dir, no iptables, no bridge. Its cgroup driver is the one Docker picks by default: on a host
//! booted with systemd on cgroup v2 (the guest lane's Debian 13, any current distribution) `systemd`, each container
//! in a transient `system.slice/docker-<id>.scope`; elsewhere (this v1 host) `cgroupfs` with parent `/moby` (so the
//! clean-host checks, which look at `/sys/fs/cgroup/<ctrl>/<namespace>/<id>`, follow Docker's containers in
//! containerd's `moby` namespace).
//!
//! Debian 12's docker.io (20.10) is not used: it ignores daemon.json's `runtimeType` and would run runc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{Bg, Output, run_cmd, wait_until};
use crate::containerd::Containerd;
use crate::settings::Settings;

/// containerd namespace dockerd uses.
pub const NAMESPACE: &str = "moby";
/// The cache dir name for the unpacked packages.
const CACHE_NAME: &str = "docker-26";

/// Downloads (once, cached) Docker 26 from Debian 13; returns the root it is unpacked in.
pub fn fetch(settings: &Settings) -> Result<PathBuf, String> {
    let mut f = Command::new(settings.script("fetch-debs.sh"));
    f.args([CACHE_NAME, "trixie", "docker.io", "docker-cli"])
        .env("PREDICTIVE_E2E_CACHE", &settings.cache);
    let out = run_cmd(f, Duration::from_secs(150));
    if !out.ok() {
        return Err(format!("fetching Docker 26 from Debian 13: {out}"));
    }
    Ok(PathBuf::from(out.stdout.trim()))
}

/// A running private dockerd. Dropping it stops it.
pub struct Docker {
    pub dir: PathBuf,
    pub sock: PathBuf,
    cli: PathBuf,
    daemon: Option<Bg>,
}

impl Docker {
    /// Starts dockerd (from `root`, see [`fetch`]) against `c`'s containerd with `daemon_json`, and waits until
    /// it answers. With `systemd`, Docker's default cgroup driver on a systemd cgroup v2 host is left as it is;
    /// without, the `cgroupfs` driver and parent `/moby`.
    pub fn start(
        c: &Containerd,
        root: &Path,
        daemon_json: &serde_json::Value,
        systemd: bool,
    ) -> Docker {
        let dir = c.dir.join("docker");
        std::fs::create_dir_all(dir.join("cli")).expect("creating the docker dir");
        let config = dir.join("daemon.json");
        std::fs::write(&config, daemon_json.to_string()).expect("writing daemon.json");
        let sock = dir.join("docker.sock");
        let mut d = Command::new(root.join("usr/sbin/dockerd"));
        d.arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--config-file")
            .arg(&config)
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--containerd")
            .arg(&c.sock)
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
                "--userland-proxy=false",
            ]);
        if !systemd {
            d.args([
                "--exec-opt=native.cgroupdriver=cgroupfs",
                "--cgroup-parent=/moby",
            ]);
        }
        d.env(
            "PATH",
            format!(
                "{}:{}:/usr/sbin:/usr/bin:/sbin:/bin",
                root.join("usr/bin").display(),
                root.join("usr/sbin").display()
            ),
        );
        let mut docker = Docker {
            cli: root.join("usr/bin/docker"),
            dir,
            sock,
            daemon: Some(Bg::spawn(d)),
        };
        let up = wait_until(Duration::from_secs(60), || {
            let daemon = docker.daemon.as_mut().expect("just started");
            if daemon.exited() {
                return Some(false);
            }
            docker
                .cmd(&["version"], Duration::from_secs(10))
                .ok()
                .then_some(true)
        });
        if up != Some(true) {
            let out = docker.daemon.take().expect("just started").kill();
            panic!("dockerd did not come up: {out}");
        }
        docker
    }

    /// `docker ARGS...` against this daemon.
    pub fn cmd(&self, args: &[&str], timeout: Duration) -> Output {
        let mut c = Command::new(&self.cli);
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        run_cmd(c, timeout)
    }

    /// Stops dockerd (SIGTERM; SIGKILL after 20 s); returns its output.
    pub fn stop(mut self) -> Output {
        self.stop_daemon().expect("dockerd runs until stopped")
    }

    fn stop_daemon(&mut self) -> Option<Output> {
        let mut daemon = self.daemon.take()?;
        // SAFETY: signalling the dockerd this helper started.
        unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(daemon.kill())
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(out) = self.stop_daemon() {
            eprintln!("--- dockerd (stopped on drop) ---\n{out}");
        }
    }
}
