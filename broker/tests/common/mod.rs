//! What the broker's integration tests share (a module of each test binary, not a test of its own): a real
//! `predictived` on a temp dir, `predictivectl` through its library, clocks. Not every binary uses every item.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::client::Client;

/// How long a daemon may take to serve its socket.
const SERVE_WITHIN: Duration = Duration::from_secs(60);

/// `predictivectl ARGS` through its library (a test of this package cannot name another package's binary; the
/// binary is `predictivectl::cli` on the process's streams), as a process's output.
pub fn predictivectl(args: Vec<String>) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = predictivectl::cli(args, &mut stdout, &mut stderr);
    Output {
        status: std::process::ExitStatus::from_raw(i32::from(code) << 8),
        stdout,
        stderr,
    }
}

/// A temp dir under /tmp: a socket path must fit in 108 bytes whatever TMPDIR is.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pd")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp")
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// One `predictived` on `dir`: its configuration `dir/predictived.toml`, state `dir/state`, socket
/// `dir/run/broker.sock`, stderr appended to `dir/stderr.log`. Killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    /// Writes `config` and starts a daemon on it, waiting until it serves.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::start_with(dir, config, &[], |_| {})
    }

    /// [`Daemon::start`] with extra arguments (`--import FILE`) and a last say on the command (environment,
    /// `pre_exec`).
    pub fn start_with(
        dir: &Path,
        config: &str,
        args: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        std::fs::write(dir.join("predictived.toml"), config).expect("config");
        let mut cmd = Daemon::command(dir);
        cmd.args(args);
        customize(&mut cmd);
        let mut d = Daemon {
            child: cmd.spawn().expect("spawn predictived"),
            dir: dir.to_owned(),
        };
        let until = Instant::now() + SERVE_WITHIN;
        while Client::new(d.socket(), Duration::from_secs(2))
            .status()
            .is_err()
        {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("predictived exited ({st}): {}", d.stderr());
            }
            assert!(
                Instant::now() < until,
                "predictived did not serve: {}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The command that starts a daemon on `dir` as [`Daemon::start`] does (its config already written).
    pub fn command(dir: &Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_predictived"));
        cmd.arg("--config")
            .arg(dir.join("predictived.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(dir.join("run/broker.sock"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/broker.sock")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::new(self.socket(), Duration::from_secs(10))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls `f` every 20 ms until it gives a value, for at most `within`; the failure names `what` and shows the
    /// daemon's log.
    pub fn wait_for<T>(&self, what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
