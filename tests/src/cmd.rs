//! Running external commands with a timeout, in the foreground or the background.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) command did.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    /// Exit code, or 128+signal when killed by a signal (as a shell reports it).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.code == 0 && !self.timed_out
    }

    /// Panic with the whole story unless the command exited 0.
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(self.ok(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}{} after {:.1}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed.as_secs_f64(),
            tail(&self.stdout, 4000),
            tail(&self.stderr, 4000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn code_of(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn reader(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf
                    .lock()
                    .expect("output buffer poisoned")
                    .extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Kill a child's whole process group (it was started in its own group).
fn kill_group(child: &Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill with a negative pid signals the process group we created for this child.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// A descriptor that turns readable when process `pid` (our child, not yet reaped) exits.
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; on success it returns a new descriptor that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Sleeps until `fd` is readable or `timeout` (at most a second) passes.
fn wait_readable(fd: &std::os::fd::OwnedFd, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.min(Duration::from_secs(1)).as_millis().max(1) as i32;
    // SAFETY: one pollfd that lives across the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// A command running in the background whose output is collected as it comes.
/// Dropping it kills it.
pub struct Bg {
    pub cmdline: String,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    status: Option<ExitStatus>,
    /// When the exit was seen: `Output::elapsed` ends here, not after the output readers are drained.
    ended: Option<Instant>,
}

impl Bg {
    pub fn spawn(mut cmd: Command) -> Bg {
        let cmdline = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{cmdline}`: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            reader(child.stdout.take().expect("stdout is piped"), out.clone()),
            reader(child.stderr.take().expect("stderr is piped"), err.clone()),
        ];
        Bg {
            cmdline,
            child,
            out,
            err,
            readers,
            started: Instant::now(),
            status: None,
            ended: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("output buffer poisoned")).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("output buffer poisoned")).into_owned()
    }

    /// Has it exited? (reaps it if so)
    pub fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                self.ended = Some(Instant::now());
            }
        }
        self.status.is_some()
    }

    /// Wait until stdout contains `needle`, or the timeout passes, or the process exits.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline || self.exited() {
                return self.stdout().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for exit up to `timeout`; kill it if it has not exited by then.
    /// The exit is seen when it happens (a pidfd; a 1 ms poll where there is none), so `elapsed` is the command's
    /// own time, not rounded up to a polling interval (`make bench` times `ctr run` with it).
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let pidfd = pidfd_open(self.child.id());
        while !self.exited() {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                kill_group(&self.child);
                self.status = self.child.wait().ok();
                self.ended = Some(Instant::now());
                break;
            }
            match &pidfd {
                Some(fd) => wait_readable(fd, deadline - now),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        self.finish(timed_out)
    }

    /// Kill it now and return what it printed.
    pub fn kill(mut self) -> Output {
        if !self.exited() {
            kill_group(&self.child);
            self.status = self.child.wait().ok();
        }
        self.finish(false)
    }

    fn finish(&mut self, timed_out: bool) -> Output {
        // Readers end when every holder of the pipes is gone; don't wait forever for a
        // grandchild that kept them.
        let until = Instant::now() + Duration::from_secs(5);
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Output {
            cmdline: self.cmdline.clone(),
            code: self.status.map(code_of).unwrap_or(-1),
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out,
            elapsed: self.ended.unwrap_or_else(Instant::now) - self.started,
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.status.is_none() && !self.exited() {
            kill_group(&self.child);
            let _ = self.child.wait();
        }
    }
}

/// Run a command to completion with a timeout (killed after it), stdin from /dev/null.
pub fn run_cmd(cmd: Command, timeout: Duration) -> Output {
    Bg::spawn(cmd).wait(timeout)
}

/// Poll `f` until it returns Some or the timeout passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
