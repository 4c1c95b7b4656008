//! Starting the broker when none answers, without ever making a Create wait for one that cannot come.
//!
//! - A shim that finds no broker on the socket starts `predictived` (the binary beside the shim, else on PATH),
//!   at most once per [`SPAWN_EVERY`] per shim process, unless the configuration says `autostart = false`
//!   (the systemd unit or the Kubernetes DaemonSet runs the broker). Only when the broker's binary really
//!   started may the Create that started it wait (bounded, in `predict.rs`); a shim that cannot find or start
//!   one fails open at once.
//! - "No broker" is said once per host until one answers again (a marker file next to the socket), not once per
//!   container: a node without a broker runs every container with its spec's limits, which is worth one line.
//! - The broker gets its own cgroup and a normal `oom_score_adj` (0), not containerd's or the shim's: with
//!   systemd as PID 1 it runs as the transient unit `predictived-auto.service` (`systemd-run`, so systemd puts
//!   it in `system.slice` and owns its cgroup); otherwise it moves itself into `predictived` at the root of every
//!   cgroup hierarchy (made by `runtime_hooks::daemon`, the only cgroup this creates) before it execs.
//!
//! Why not `std::process::Command`: the shim is a child subreaper whose SIGCHLD handler reaps every child
//! (`waitpid(-1)`), and std's `spawn` waits for its child when the exec fails, which panics when the reaper
//! got there first. So the child is forked here by hand: it blocks on a pipe until the parent has
//! [`reaper::detach`]ed its pid (so the reaper drops its exit instead of keeping it as an unclaimed container
//! exit, which a later container with the same pid would receive), then does only async-signal-safe system
//! calls on values prepared before the fork (the shim has threads), and reports a failed step on a
//! close-on-exec status pipe: end-of-file with no report means the exec succeeded. Nobody ever waits for the
//! child; the reaper collects it whenever it exits. A double fork would buy nothing: the grandchild would be
//! reparented to the nearest subreaper, which is this shim again.

use std::ffi::{CString, OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::reaper;
use crate::settings::Settings;

/// Least time between two attempts of one shim process to start a broker.
pub const SPAWN_EVERY: Duration = Duration::from_secs(10);
/// The cgroup (and systemd unit) name of a broker a shim started.
pub const BROKER_CGROUP: &str = "predictived";
/// The transient systemd unit a shim starts the broker as, when systemd is PID 1.
pub const BROKER_UNIT: &str = "predictived-auto.service";
/// The marker next to the broker's socket that says "no broker could be used" was logged on this host.
const UNAVAILABLE_MARKER: &str = "broker-unavailable";

/// Why the broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No `predictived` beside the shim or on PATH.
    #[error("no predictived beside the shim ({beside}) or on PATH")]
    NotFound { beside: String },
    /// A path or argument holds a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    /// A pipe or the fork failed.
    #[error("{what}")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The child could not exec the program.
    #[error("executing {program}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the broker is launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program to exec: `predictived`, or `systemd-run` with predictived in its arguments.
    pub program: PathBuf,
    /// Its arguments, without argv\[0\].
    pub args: Vec<OsString>,
    /// `cgroup.procs` files the child writes `0` to before it execs (empty under systemd).
    pub join: Vec<PathBuf>,
    /// Write 0 to the child's `oom_score_adj` (not under systemd: the unit sets it).
    pub reset_oom_score: bool,
    /// Append the child's output to this file (not under systemd: the journal has it).
    pub log: Option<PathBuf>,
    /// The child's whole environment (`KEY=VALUE`); `None` passes the shim's own.
    pub env: Option<Vec<OsString>>,
}

/// `predictived`'s own arguments for these settings.
pub fn broker_args(s: &Settings) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(f) = &s.config_file {
        args.push("--config".into());
        args.push(f.into());
    }
    args.push("--socket".into());
    args.push(s.socket.clone().into());
    args.push("--state-dir".into());
    args.push(s.state_dir.clone().into());
    args
}

/// The launch of `exe` under systemd: a transient service with its own cgroup in `system.slice` and
/// `OOMScoreAdjust=0`, collected by systemd when it exits or fails.
pub fn systemd_launch(systemd_run: &Path, exe: &Path, unit: &str, broker: Vec<OsString>) -> Launch {
    let mut args: Vec<OsString> = [
        format!("--unit={unit}"),
        "--description=predictive broker (started by containerd-shim-predictive-v2)".to_owned(),
        "--collect".to_owned(),
        "--quiet".to_owned(),
        "--property=OOMScoreAdjust=0".to_owned(),
        "--".to_owned(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(exe.into());
    args.extend(broker);
    Launch {
        program: systemd_run.to_owned(),
        args,
        join: Vec::new(),
        reset_oom_score: false,
        log: None,
        env: None,
    }
}

/// The transient unit of the broker serving `socket`: [`BROKER_UNIT`] for the default socket, else that name
/// with a hash of the socket path (`predictived-auto-<16 hex>.service`), so brokers on other sockets (a second
/// containerd's, a test's) are units of their own instead of failing on the name.
pub fn broker_unit(socket: &Path) -> String {
    if socket == Path::new(predictive_api::wire::DEFAULT_SOCKET) {
        return BROKER_UNIT.to_owned();
    }
    // FNV-1a: stable across builds and hosts (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in socket.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("predictived-auto-{h:016x}.service")
}

/// `name` in the first directory of `path` (a PATH value) that has it as a file.
fn on_path(path: Option<&OsStr>, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The `predictived` to start: beside the shim, else on PATH.
fn find_broker() -> Result<PathBuf, SpawnError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("predictived")));
    if let Some(b) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(b.clone());
    }
    on_path(std::env::var_os("PATH").as_deref(), "predictived").ok_or_else(|| {
        SpawnError::NotFound {
            beside: beside
                .map(|b| b.display().to_string())
                .unwrap_or_else(|| "?".into()),
        }
    })
}

/// How this host gets a broker started: under systemd when it is PID 1 (`/run/systemd/system`, as
/// `sd_booted` checks) and `systemd-run` is there, else directly into its own cgroups.
fn launch_for_host(exe: &Path, s: &Settings) -> Launch {
    let broker = broker_args(s);
    if Path::new("/run/systemd/system").is_dir()
        && let Some(run) = on_path(
            Some(OsStr::new("/usr/bin:/bin:/usr/local/bin")),
            "systemd-run",
        )
    {
        return systemd_launch(&run, exe, &broker_unit(&s.socket), broker);
    }
    let join = match runtime_hooks::daemon::make_daemon_cgroups(
        &runtime_hooks::HostRoots::default(),
        BROKER_CGROUP,
    ) {
        Ok(made) => {
            for e in &made.errors {
                tracing::warn!(
                    "the broker stays in the shim's cgroup there: {}",
                    predictive_api::error_chain(e)
                );
            }
            made.procs
        }
        Err(e) => {
            tracing::warn!(
                "the broker gets no cgroup of its own: {}",
                predictive_api::error_chain(&e)
            );
            Vec::new()
        }
    };
    Launch {
        program: exe.to_owned(),
        args: broker,
        join,
        reset_oom_score: true,
        log: Some(s.state_dir.join("predictived.log")),
        env: None,
    }
}

/// Starts a broker unless this shim tried less than [`SPAWN_EVERY`] ago or `autostart` is off. True when a
/// broker process was started now (the caller may wait a little for its socket); false means: do not wait.
pub fn maybe_spawn_broker(s: &Settings) -> bool {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    if !s.autostart {
        note_unavailable(
            s,
            "no broker answered and autostart = false (a service runs it)",
        );
        return false;
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < SPAWN_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
    }
    let started = find_broker().and_then(|exe| {
        if let Err(e) = std::fs::create_dir_all(&s.state_dir) {
            tracing::debug!("creating {}: {e}", s.state_dir.display());
        }
        let launch = launch_for_host(&exe, s);
        spawn(&launch).map(|pid| (exe, pid))
    });
    match started {
        Ok((exe, pid)) => {
            tracing::info!(
                pid,
                socket = %s.socket.display(),
                "no broker answered: started {}",
                exe.display()
            );
            true
        }
        Err(e) => {
            note_unavailable(
                s,
                &format!(
                    "no broker answered and none could be started: {}",
                    predictive_api::error_chain(&e)
                ),
            );
            false
        }
    }
}

fn marker(s: &Settings) -> Option<PathBuf> {
    s.socket.parent().map(|d| d.join(UNAVAILABLE_MARKER))
}

/// Says why no broker can be used: once per host until one answers again (the marker next to the socket), else
/// once per shim process; at debug level after that.
pub fn note_unavailable(s: &Settings, why: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let first_here = !SAID.swap(true, std::sync::atomic::Ordering::SeqCst);
    let first_on_host = match marker(s) {
        Some(m) => match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&m)
        {
            Ok(mut f) => {
                use std::io::Write;
                let _ = writeln!(f, "{why}");
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            // No directory to mark in: once per shim process.
            Err(_) => first_here,
        },
        None => first_here,
    };
    if first_on_host {
        tracing::warn!(
            "{why}: containers start with their spec's limits at once (fail open); said once until a broker answers"
        );
    } else {
        tracing::debug!("{why}");
    }
}

/// A broker answered: the next outage is worth a line again.
pub fn note_available(s: &Settings) {
    if let Some(m) = marker(s) {
        let _ = std::fs::remove_file(m);
    }
}

/// Everything the child needs, made before the fork: it may only make async-signal-safe calls.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    join: Vec<CString>,
    oom_score_adj: Option<CString>,
    null: OwnedFd,
    out: Option<OwnedFd>,
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| SpawnError::Nul {
        what: what.to_owned(),
    })
}

fn prepare(launch: &Launch) -> Result<Prepared, SpawnError> {
    let program = cstring("the program path", launch.program.as_os_str().as_bytes())?;
    let mut argv = vec![program.clone()];
    for a in &launch.args {
        argv.push(cstring("an argument", a.as_bytes())?);
    }
    let mut envp = Vec::new();
    let vars: Vec<OsString> = match &launch.env {
        Some(env) => env.clone(),
        None => std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    };
    for kv in vars {
        // A variable that cannot be passed is left out rather than failing the start.
        if let Ok(c) = CString::new(kv.into_vec()) {
            envp.push(c);
        }
    }
    let join = launch
        .join
        .iter()
        .map(|p| cstring("a cgroup path", p.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| SpawnError::Sys {
            what: "opening /dev/null",
            source,
        })?;
    let out = launch.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    Ok(Prepared {
        program,
        argv,
        envp,
        join,
        oom_score_adj: launch
            .reset_oom_score
            .then(|| CString::from(c"/proc/self/oom_score_adj")),
        null: null.into(),
        out: out.map(Into::into),
    })
}

/// Steps the child reports on the status pipe when they fail: `[step, errno]` as two little-endian u32.
const STEP_JOIN: u32 = 1;
const STEP_OOM: u32 = 2;
const STEP_STDIO: u32 = 3;
const STEP_EXEC: u32 = 4;
const STEP_FDS: u32 = 5;
/// The most descriptors [`spawn_with`] passes (the child copies them into a fixed array: no allocation there).
const MAX_PASSED_FDS: usize = 8;

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Sys {
        what: "creating a pipe",
        source: e.into(),
    })
}

/// Starts `launch` detached (own session, stdin /dev/null, output to its log) and returns its pid once it has
/// exec'd. Failures before the exec (a cgroup, `oom_score_adj`) are logged as warnings; a failed exec is the
/// error.
pub fn spawn(launch: &Launch) -> Result<i32, SpawnError> {
    spawn_with(launch, &[], true)
}

/// [`spawn`], with `fds` as the child's descriptors 3, 4, ... and, unless `detach`, its exit kept for whoever
/// subscribes to its pid at the shim's reaper (a logging binary's, which the shim waits for).
pub fn spawn_with(launch: &Launch, fds: &[&OwnedFd], detach: bool) -> Result<i32, SpawnError> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(SpawnError::Sys {
            what: "passing descriptors to the child",
            source: std::io::Error::from_raw_os_error(libc::EMFILE),
        });
    }
    let p = prepare(launch)?;
    let fds: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (go_r, go_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    // SAFETY: the child runs `child`, which makes only async-signal-safe system calls on memory prepared
    // above and never returns (it execs or _exits), as POSIX requires after a fork in a threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Sys {
            what: "forking the broker",
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        child(&p, &argv, &envp, &fds, &go_r, &go_w, &st_r, &st_w);
    }
    // Its exit is nobody's: the reaper must drop it. Only then may it go on (and possibly exit).
    if detach {
        reaper::detach(pid);
    }
    drop(go_r);
    drop(st_w);
    // SAFETY: writing one byte from a valid buffer to a pipe we own.
    unsafe { libc::write(go_w.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    drop(go_w);
    let mut report = Vec::new();
    let _ = std::fs::File::from(st_r).read_to_end(&mut report);
    let mut result = Ok(pid);
    for rec in report.chunks_exact(8) {
        let step = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let errno = i32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let err = std::io::Error::from_raw_os_error(errno);
        match step {
            STEP_EXEC => {
                result = Err(SpawnError::Exec {
                    program: launch.program.display().to_string(),
                    source: err,
                })
            }
            STEP_JOIN => tracing::warn!("the broker could not join one of its cgroups: {err}"),
            STEP_OOM => tracing::warn!("the broker's oom_score_adj could not be reset: {err}"),
            // Without its descriptors the child is of no use: it exits instead of exec'ing.
            STEP_FDS => {
                result = Err(SpawnError::Sys {
                    what: "passing descriptors to the child",
                    source: err,
                })
            }
            _ => tracing::warn!("the child's stdio could not be set up: {err}"),
        }
    }
    result
}

/// The forked child. Only async-signal-safe calls from here on; never returns.
#[allow(clippy::too_many_arguments)]
fn child(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: &[i32],
    go_r: &OwnedFd,
    go_w: &OwnedFd,
    st_r: &OwnedFd,
    st_w: &OwnedFd,
) -> ! {
    // The status pipe's number: moved above the passed descriptors' range before they are put in place.
    let st = std::cell::Cell::new(st_w.as_raw_fd());
    // SAFETY: every call below is an async-signal-safe system call (close, read, sigprocmask, signal, setsid,
    // open, write, fcntl, dup2, close_range, execve, _exit) on descriptors this process owns and on NUL-terminated
    // strings and pointer arrays prepared before the fork, which stay valid until execve or _exit.
    unsafe {
        let report = |step: u32| {
            let errno = *libc::__errno_location();
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&step.to_le_bytes());
            rec[4..].copy_from_slice(&errno.to_le_bytes());
            libc::write(st.get(), rec.as_ptr().cast(), rec.len());
        };
        libc::close(go_w.as_raw_fd());
        libc::close(st_r.as_raw_fd());
        // Wait until the parent has detached our pid from its reaper (EOF: it is gone, so give up).
        let mut b = 0u8;
        loop {
            let n = libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(1);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE; a daemon starts with it at its default.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        for path in &p.join {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                report(STEP_JOIN);
            }
            if fd >= 0 {
                libc::close(fd);
            }
        }
        if let Some(path) = &p.oom_score_adj {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                report(STEP_OOM);
            }
            if fd >= 0 {
                libc::close(fd);
            }
        }
        let null = p.null.as_raw_fd();
        let out = p.out.as_ref().map_or(null, |o| o.as_raw_fd());
        if libc::dup2(null, 0) < 0 || libc::dup2(out, 1) < 0 || libc::dup2(out, 2) < 0 {
            report(STEP_STDIO);
        }
        // The passed descriptors become 3, 4, ...: first the status pipe and copies of them go above that
        // range (fcntl picks free numbers, so nothing is overwritten), then each copy is dup'ed into place
        // (dup2 clears close-on-exec on the copy it makes).
        let first_free = 3 + fds.len() as i32;
        if !fds.is_empty() {
            let moved = libc::fcntl(st.get(), libc::F_DUPFD_CLOEXEC, first_free);
            if moved < 0 {
                report(STEP_FDS);
                libc::_exit(126);
            }
            st.set(moved);
            let mut high = [0i32; MAX_PASSED_FDS];
            for (i, fd) in fds.iter().take(high.len()).enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free);
                if high[i] < 0 {
                    report(STEP_FDS);
                    libc::_exit(126);
                }
            }
            for (i, fd) in high.iter().take(fds.len()).enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    report(STEP_FDS);
                    libc::_exit(126);
                }
            }
        }
        // Nothing else of the shim's (containers' stdio, sockets) leaks into the child, whatever its
        // close-on-exec flag; the status pipe closes at the exec.
        let st = st.get();
        if st > first_free {
            libc::syscall(
                libc::SYS_close_range,
                first_free as u32,
                (st - 1) as u32,
                0u32,
            );
        }
        libc::syscall(libc::SYS_close_range, (st + 1) as u32, u32::MAX, 0u32);
        libc::execve(p.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        report(STEP_EXEC);
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            config_file: Some(dir.join("p.toml")),
            socket: dir.join("broker.sock"),
            state_dir: dir.join("state"),
            tick: Duration::from_secs(1),
            register_budget: Duration::from_millis(50),
            enabled: true,
            autostart: true,
        }
    }

    /// Waits for a child the test spawned (no reaper runs in unit tests).
    fn reap(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn the_child_gets_a_normal_oom_score_its_own_session_and_a_log() {
        // The parent's score is not 0 (as a shim's is containerd's + 1), so the child's 0 is its own doing.
        std::fs::write("/proc/self/oom_score_adj", "100").expect("raising our own oom_score_adj");
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("out.log");
        let launch = Launch {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "cat /proc/self/oom_score_adj; ps -o sid= -p $$ 2>/dev/null || cut -d' ' -f6 /proc/$$/stat; echo $$; ls /proc/self/fd".into(),
            ],
            join: Vec::new(),
            reset_oom_score: true,
            log: Some(log.clone()),
            env: None,
        };
        let pid = spawn(&launch).expect("spawn");
        assert_eq!(reap(pid), 0);
        let out = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "0", "{out}");
        // Its own session: the session id is its pid.
        assert_eq!(lines[1].trim(), lines[2].trim(), "{out}");
        // Only stdio (and ls's own directory descriptor) are open.
        let fds: Vec<&str> = lines[3..].to_vec();
        assert!(fds.len() <= 4, "descriptors leaked into the child: {fds:?}");
    }

    #[test]
    fn passed_descriptors_are_three_and_up_the_environment_only_the_given_and_the_exit_kept() {
        let reaper = crate::reaper::Reaper::default();
        let (a_r, a_w) = pipe().expect("pipe");
        let (b_r, b_w) = pipe().expect("pipe");
        let launch = Launch {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "tr '\\0' ' ' < /proc/$$/environ >&3; echo >&3; echo to-four >&4; ls /proc/self/fd >&3; exit 5"
                    .into(),
            ],
            join: Vec::new(),
            reset_oom_score: false,
            log: None,
            env: Some(vec!["A=1".into(), "B=two words".into()]),
        };
        // Passed in an order their numbers do not have, so a copy must not overwrite another.
        let pid = spawn_with(&launch, &[&b_w, &a_w], false).expect("spawn");
        drop((a_w, b_w));
        let mut three = String::new();
        std::fs::File::from(b_r)
            .read_to_string(&mut three)
            .expect("reading 3");
        let mut four = String::new();
        std::fs::File::from(a_r)
            .read_to_string(&mut four)
            .expect("reading 4");
        let mut lines = three.lines();
        assert_eq!(lines.next(), Some("A=1 B=two words "), "{three}");
        let fds: Vec<&str> = lines.collect();
        // 0-2, the two passed, ls's own directory: nothing else leaked.
        assert!(
            fds.len() <= 6 && fds.contains(&"3") && fds.contains(&"4"),
            "{fds:?}"
        );
        assert_eq!(four, "to-four\n");
        let mut rx = reaper.subscribe(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            reaper.reap();
            if let Ok(exit) = rx.try_recv() {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit kept for the child");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(exit.status, 5);
    }

    #[test]
    fn a_failed_exec_is_an_error_naming_the_program() {
        let launch = Launch {
            program: "/nonexistent/predictived".into(),
            args: Vec::new(),
            join: vec!["/nonexistent/cgroup.procs".into()],
            reset_oom_score: false,
            log: None,
            env: None,
        };
        let e = spawn(&launch).expect_err("no such program");
        assert!(e.to_string().contains("/nonexistent/predictived"), "{e}");
        assert!(matches!(e, SpawnError::Exec { .. }), "{e:?}");
    }

    #[test]
    fn the_shims_reaper_collects_the_broker_and_drops_its_exit() {
        // As in the shim: the reaper's waitpid(-1) is the only wait. A real spawn, no std Command, so nothing
        // else waits for the child and nothing can panic when the reaper gets there first.
        let reaper = crate::reaper::Reaper::default();
        let launch = Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exit 3".into()],
            join: Vec::new(),
            reset_oom_score: false,
            log: None,
            env: None,
        };
        let pid = spawn(&launch).expect("spawn");
        // Reap until the child is gone (kill(pid, 0) fails once it is collected; a zombie still answers).
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            reaper.reap();
            std::thread::sleep(Duration::from_millis(1));
        }
        // Its exit was dropped, not kept for a container process that may get the pid next.
        let mut rx = reaper.subscribe(pid);
        assert!(rx.try_recv().is_err(), "the broker's exit was kept");
    }

    #[test]
    fn a_broker_on_another_socket_is_a_unit_of_its_own() {
        assert_eq!(
            broker_unit(Path::new(predictive_api::wire::DEFAULT_SOCKET)),
            "predictived-auto.service"
        );
        let a = broker_unit(Path::new("/tmp/pe2e-1-0/broker.sock"));
        let b = broker_unit(Path::new("/tmp/pe2e-2-0/broker.sock"));
        assert_ne!(a, b);
        assert!(
            a.starts_with("predictived-auto-") && a.ends_with(".service"),
            "{a}"
        );
        assert_eq!(
            a,
            broker_unit(Path::new("/tmp/pe2e-1-0/broker.sock")),
            "stable"
        );
    }

    #[test]
    fn systemd_gets_a_transient_unit_with_the_brokers_arguments() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = settings(tmp.path());
        let l = systemd_launch(
            Path::new("/usr/bin/systemd-run"),
            Path::new("/usr/bin/predictived"),
            BROKER_UNIT,
            broker_args(&s),
        );
        let args: Vec<String> = l
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let dash = args.iter().position(|a| a == "--").expect("--");
        assert!(args[..dash].contains(&"--unit=predictived-auto.service".to_owned()));
        assert!(args[..dash].contains(&"--property=OOMScoreAdjust=0".to_owned()));
        assert_eq!(args[dash + 1], "/usr/bin/predictived");
        assert_eq!(
            args[dash + 2..],
            [
                "--config".to_owned(),
                tmp.path().join("p.toml").display().to_string(),
                "--socket".to_owned(),
                tmp.path().join("broker.sock").display().to_string(),
                "--state-dir".to_owned(),
                tmp.path().join("state").display().to_string(),
            ]
        );
        assert!(l.join.is_empty() && !l.reset_oom_score && l.log.is_none());
    }

    #[test]
    fn unavailability_is_said_once_per_host_until_a_broker_answers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = settings(tmp.path());
        let m = tmp.path().join(UNAVAILABLE_MARKER);
        note_unavailable(&s, "first");
        assert_eq!(std::fs::read_to_string(&m).expect("marker").trim(), "first");
        note_unavailable(&s, "second");
        assert_eq!(
            std::fs::read_to_string(&m).expect("marker").trim(),
            "first",
            "the second shim does not say it again"
        );
        note_available(&s);
        assert!(!m.exists());
    }
}
