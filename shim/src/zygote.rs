//! The zygote: a single-threaded helper process that drives libcontainer.
//!
//! libcontainer clones, changes the working directory and waits for its own children: none of that
//! is safe inside the multi-threaded tokio process that serves containerd (runwasi#357, youki#2772).
//! So the shim forks this helper before the runtime starts, while it is still single-threaded. The
//! zygote does nothing but wait for requests; for each one it forks a *worker* (a fork of a
//! single-threaded process is safe), which performs the libcontainer operation, writes one JSON
//! reply line and exits. Requests therefore run in parallel, each in its own process, and a worker
//! that crashes takes nothing else with it.
//!
//! Wire format, on a `SOCK_SEQPACKET` pair: one datagram per request, holding the request as JSON
//! and, as `SCM_RIGHTS`, first a stream socket for the reply, then the stdio descriptors the
//! request names. The worker answers with one JSON line on the reply socket.
//!
//! Container processes end up as children of the shim proper: the worker exits right after
//! creating them, and the shim is the nearest child subreaper. The zygote reaps only its workers.
//!
//! A zygote that dies (the OOM killer, a stray `kill -9`) would leave the shim unable to create, exec, pause or
//! delete, so a pod could never be removed. The next request that finds it gone (the send fails: no reader)
//! starts another one and is sent to it. The server is multi-threaded by then, so the new zygote is not a fork
//! of it but the shim binary run again ([`EXEC_ENV`] names the inherited socket): a fresh single-threaded
//! process, a child of the server as the first one was.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::error::{Result, ShimError};

/// Largest request datagram the zygote accepts.
const MAX_REQUEST: usize = 64 * 1024;
/// Most descriptors one request carries: the reply socket and three stdio descriptors.
const MAX_FDS: usize = 4;
/// Set for the shim binary run as a replacement zygote: `<fd> <parent pid>`, the inherited end of the socket
/// pair and the server to die with (0: none, the server's thread that started it may exit before the server).
pub const EXEC_ENV: &str = "PREDICTIVE_SHIM_ZYGOTE";
/// The descriptor a replacement zygote finds its socket on.
const EXEC_FD: RawFd = 3;

/// Which stdio descriptors follow the reply socket in a request, in this order.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StdioFds {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An operation for a worker to perform with libcontainer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Request {
    Create {
        id: String,
        bundle: PathBuf,
        root: PathBuf,
        console_socket: Option<PathBuf>,
        stdio: StdioFds,
        /// libcontainer's systemd cgroup driver (runtime_hooks::placement decided).
        #[serde(default)]
        systemd: bool,
        /// The container's cgroupfs `linux.cgroupsPath` (as placed), for the worker to enter the named v1
        /// hierarchies there first (`runtime_hooks::companions::enter_named`); `None` with the systemd driver.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroups_path: Option<String>,
        /// What the worker sets right after the create ([`crate::fidelity`]).
        #[serde(default, skip_serializing_if = "crate::fidelity::Fidelity::is_default")]
        fidelity: crate::fidelity::Fidelity,
    },
    Start {
        id: String,
        root: PathBuf,
    },
    Exec {
        id: String,
        root: PathBuf,
        process: PathBuf,
        console_socket: Option<PathBuf>,
        stdio: StdioFds,
    },
    Kill {
        id: String,
        root: PathBuf,
        signal: i32,
        all: bool,
    },
    Pause {
        id: String,
        root: PathBuf,
    },
    Resume {
        id: String,
        root: PathBuf,
    },
    /// Force-delete the container: kill what is left, remove its cgroups and state.
    Delete {
        id: String,
        root: PathBuf,
    },
    /// Move the worker itself into the cgroup `dir` (one the shim made for container `id`), then exit.
    /// Sent as a create begins: see `warmup.rs`.
    JoinCgroup {
        id: String,
        dir: PathBuf,
    },
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Start { .. } => "start",
            Request::Exec { .. } => "exec",
            Request::Kill { .. } => "kill",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::Delete { .. } => "delete",
            Request::JoinCgroup { .. } => "join-cgroup",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Request::Create { id, .. }
            | Request::Start { id, .. }
            | Request::Exec { id, .. }
            | Request::Kill { id, .. }
            | Request::Pause { id, .. }
            | Request::Resume { id, .. }
            | Request::Delete { id, .. }
            | Request::JoinCgroup { id, .. } => id,
        }
    }

    fn stdio(&self) -> StdioFds {
        match self {
            Request::Create { stdio, .. } | Request::Exec { stdio, .. } => *stdio,
            _ => StdioFds::default(),
        }
    }
}

/// How a worker failed: the distinction decides the gRPC code containerd sees.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Failure {
    /// The request or the spec was refused as invalid.
    Invalid,
    /// The container is not there.
    NotFound,
    /// The operation is not allowed in the container's state.
    State,
    /// Anything else.
    Other,
}

/// A worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Reply {
    Ok { pid: Option<i32> },
    Err { failure: Failure, message: String },
}

/// The stdio descriptors that travel with a request, each for the container's side.
#[derive(Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    pub fn fds(&self) -> StdioFds {
        StdioFds {
            stdin: self.stdin.is_some(),
            stdout: self.stdout.is_some(),
            stderr: self.stderr.is_some(),
        }
    }
}

/// What a worker runs: one request, its descriptors, one reply.
pub type Work = fn(Request, Stdio) -> Reply;
/// Starts a zygote serving a [`Work`]: the shim's end of its socket and its pid.
type Replace = fn(Work) -> Result<(OwnedFd, Pid)>;

/// The shim's handle on its zygote.
pub struct Zygote {
    sock: Mutex<OwnedFd>,
    pid: AtomicI32,
    work: Work,
    /// Starts a replacement: [`exec_zygote`] in the shim (tests fork one).
    replace: Replace,
}

impl Zygote {
    /// Forks the zygote. Must run while the process is single-threaded: before the tokio runtime
    /// or any other thread is started.
    pub fn spawn(work: Work) -> Result<Zygote> {
        // SAFETY: the caller guarantees the process is single-threaded.
        let (sock, pid) = unsafe { fork_zygote(work) }?;
        Ok(Zygote {
            sock: Mutex::new(sock),
            pid: AtomicI32::new(pid.as_raw()),
            work,
            replace: exec_zygote,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Sends one request datagram on `sock`; a zygote found gone (no reader: EPIPE) is replaced and the
    /// datagram sent to the new one. Call with the socket's lock held.
    fn send(&self, sock: &mut OwnedFd, body: &[u8], fds: &[RawFd], op: &str) -> Result<()> {
        let send = |sock: &OwnedFd| {
            socket::sendmsg::<()>(
                sock.as_raw_fd(),
                &[IoSlice::new(body)],
                &[ControlMessage::ScmRights(fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
        };
        match send(sock) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNREFUSED) => {}
            Err(e) => return Err(ShimError::Zygote(format!("sending {op} request: {e}"))),
        }
        let gone = self.pid();
        let (new, pid) = (self.replace)(self.work).map_err(|e| {
            ShimError::Zygote(format!(
                "the zygote (pid {gone}) is gone and no other could start: {}",
                e.chain()
            ))
        })?;
        *sock = new;
        self.pid.store(pid.as_raw(), Ordering::Relaxed);
        tracing::warn!(
            gone,
            zygote = pid.as_raw(),
            "the zygote was gone; another one serves"
        );
        send(sock)
            .map(|_| ())
            .map_err(|e| ShimError::Zygote(format!("sending {op} request: {e}")))
    }

    /// Sends `request` with `stdio` to a new worker and waits for its reply.
    pub async fn call(&self, request: &Request, stdio: Stdio) -> Result<Reply> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ShimError::Zygote(format!("encoding {} request: {e}", request.op())))?;
        let (mine, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ShimError::sys("creating a reply socket pair"))?;
        let mut fds: Vec<RawFd> = vec![theirs.as_raw_fd()];
        for fd in [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .into_iter()
            .flatten()
        {
            fds.push(fd.as_raw_fd());
        }
        {
            let mut sock = self
                .sock
                .lock()
                .map_err(|_| ShimError::Zygote("socket lock poisoned".into()))?;
            self.send(&mut sock, &body, &fds, request.op())?;
        }
        // The worker holds its own copies now; ours must go, or pipes would never see EOF.
        drop(theirs);
        drop(stdio);

        let std_stream = std::os::unix::net::UnixStream::from(mine);
        std_stream
            .set_nonblocking(true)
            .map_err(ShimError::io("setting the reply socket non-blocking"))?;
        let stream = tokio::net::UnixStream::from_std(std_stream)
            .map_err(ShimError::io("registering the reply socket"))?;
        let mut line = String::new();
        let n = tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(ShimError::io("reading a worker reply"))?;
        if n == 0 {
            return Err(ShimError::Zygote(format!(
                "worker for {} {} exited without a reply",
                request.op(),
                request.id()
            )));
        }
        serde_json::from_str(&line)
            .map_err(|e| ShimError::Zygote(format!("decoding a worker reply {line:?}: {e}")))
    }
}

/// A zygote's socket pair: the server's end, the zygote's end (both close-on-exec).
fn zygote_pair() -> Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ShimError::sys("creating the zygote socket pair"))
}

/// Forks a zygote serving `work`; returns the shim's end of its socket and its pid.
///
/// # Safety
/// The process must be single-threaded (the child runs `work`'s code, not just async-signal-safe calls).
unsafe fn fork_zygote(work: Work) -> Result<(OwnedFd, Pid)> {
    let (parent, child) = zygote_pair()?;
    let me = nix::unistd::getpid();
    // SAFETY: the caller guarantees the process is single-threaded, so the child may run any
    // code; it never returns from `serve`.
    match unsafe { fork() }.map_err(ShimError::sys("forking the zygote"))? {
        ForkResult::Child => {
            drop(parent);
            serve(child, work, Some(me))
        }
        ForkResult::Parent { child: pid } => {
            drop(child);
            Ok((parent, pid))
        }
    }
}

/// A replacement zygote: the shim binary run again with [`EXEC_ENV`] and its end of a new socket pair as
/// [`EXEC_FD`] (it serves `runtime::work`, whatever `work` says). It dies with the server only when started from
/// the server's main thread (the parent-death signal follows the thread that forked); else it exits when the
/// server's end of the socket closes, as it does anyway.
fn exec_zygote(_work: Work) -> Result<(OwnedFd, Pid)> {
    use std::os::unix::process::CommandExt;
    let (parent, child) = zygote_pair()?;
    let me = nix::unistd::getpid();
    let main_thread = nix::unistd::gettid() == me;
    let raw = child.as_raw_fd();
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command
        .args(args)
        .env(
            EXEC_ENV,
            format!("{EXEC_FD} {}", if main_thread { me.as_raw() } else { 0 }),
        )
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let rc = if raw == EXEC_FD {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, EXEC_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let spawned = command
        .spawn()
        .map_err(ShimError::io("running the shim binary as a zygote"))?;
    drop(child);
    Ok((parent, Pid::from_raw(spawned.id() as i32)))
}

/// The shim binary run by [`exec_zygote`]: serves `work` on the inherited socket. Never returns.
pub fn serve_exec(value: &str, work: Work) -> ! {
    let mut parts = value.split(' ');
    let fd = parts.next().and_then(|f| f.parse::<RawFd>().ok());
    let parent = parts
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
        .map(Pid::from_raw);
    // Only what exec_zygote passes: descriptor 3, a seqpacket socket (a variable left in containerd's environment
    // must not turn every shim action into a zygote waiting on whatever descriptor 3 is).
    let is_socket = |fd: RawFd| {
        // SAFETY: a borrow of descriptor 3 for the check only (an fd not open fails the check); it is owned below
        // once it passed.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket::getsockopt(&borrowed, socket::sockopt::SockType) == Ok(SockType::SeqPacket)
    };
    let Some(fd) = fd.filter(|f| *f == EXEC_FD && is_socket(*f)) else {
        eprintln!(
            "{EXEC_ENV}=\"{}\": set only for a replacement zygote, with its socket as descriptor {EXEC_FD}",
            value.escape_debug()
        );
        exit_now(2)
    };
    // SAFETY: still single-threaded (nothing but main has run), so the environment may change; the workers and
    // the containers they start must not see the variable.
    unsafe { std::env::remove_var(EXEC_ENV) };
    // SAFETY: the server passed its end of a socket pair as this descriptor; nothing else here owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    serve(sock, work, parent)
}

/// The zygote's loop: serves `sock` until the server's end closes, dying with `parent` when given. Never returns.
fn serve(sock: OwnedFd, work: Work, parent: Option<Pid>) -> ! {
    if let Some(parent) = parent {
        // The zygote must not outlive the shim.
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a plain integer argument.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        // The server may have died before the signal was asked for.
        if nix::unistd::getppid() != parent {
            exit_now(0);
        }
    }
    let mut workers: Vec<Pid> = Vec::new();
    let mut buf = vec![0u8; MAX_REQUEST];
    // Whether the code pages were dropped since the last request. Not at the start: the zygote was forked from a
    // server about to send its first request (the create) within milliseconds, and reading `smaps` then (~0.25 ms
    // of CPU) kept the server's runnable thread from a CPU before it took containerd's Create.
    let mut trimmed = true;
    loop {
        workers.retain(|pid| {
            matches!(
                waitpid(*pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        // Idle (no worker left, the last request at least a poll round ago): the code this process ran stays
        // mapped for nothing until the next request, which faults back in the little it runs (footprint.rs).
        if workers.is_empty() && !trimmed {
            crate::footprint::drop_code_pages();
            trimmed = true;
        }
        let mut fds = [nix::poll::PollFd::new(
            sock.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // Wake up once a second only while workers may need reaping; an idle zygote sleeps until the
        // next request (100 idle containers would otherwise cost 100 wake-ups a second).
        let timeout = if workers.is_empty() {
            nix::poll::PollTimeout::NONE
        } else {
            nix::poll::PollTimeout::from(1000u16)
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => exit_now(1),
        }
        let (len, received) = match receive(&sock, &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) => exit_now(0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => exit_now(1),
        };
        trimmed = false;
        let mut received = received.into_iter();
        let Some(reply_fd) = received.next() else {
            continue;
        };
        let request: Request = match serde_json::from_slice(&buf[..len]) {
            Ok(r) => r,
            Err(e) => {
                answer(
                    reply_fd,
                    &Reply::Err {
                        failure: Failure::Other,
                        message: format!("zygote could not decode the request: {e}"),
                    },
                );
                continue;
            }
        };
        let wanted = request.stdio();
        let mut stdio = Stdio::default();
        if wanted.stdin {
            stdio.stdin = received.next();
        }
        if wanted.stdout {
            stdio.stdout = received.next();
        }
        if wanted.stderr {
            stdio.stderr = received.next();
        }
        prime();
        // SAFETY: the zygote is single-threaded, so the worker may run any code.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(sock);
                reset_ignored_signals();
                let reply = work(request, stdio);
                answer(reply_fd, &reply);
                exit_now(0)
            }
            Ok(ForkResult::Parent { child }) => workers.push(child),
            Err(e) => answer(
                reply_fd,
                &Reply::Err {
                    failure: Failure::Other,
                    message: format!("zygote could not fork a worker: {e}"),
                },
            ),
        }
    }
}

/// Run by the zygote before it forks a worker: what its workers share is computed here once. The
/// host's cgroup layout ([`runtime_hooks::discovery::Hierarchy::detect`], kept per process): the server filled it
/// before forking this zygote, so this costs nothing; a replacement zygote (exec'd, with no memo) parses mountinfo
/// here once, not once per worker (a parse cost ~1.5 ms of CPU on a node with 2,000 mounts, docs/BENCHMARKS.md).
fn prime() {
    let _ = runtime_hooks::discovery::Hierarchy::detect(&runtime_hooks::HostRoots::default());
}

/// Ignored signals stay ignored across exec, and the shim inherits some (Rust ignores SIGPIPE at
/// startup; containerd leaves 32 and 33 ignored): without this, containers would inherit them.
/// They start with every signal at its default, as under runc. The raw system call is used
/// because glibc refuses to touch the two signals it reserves.
fn reset_ignored_signals() {
    const SIGSET_SIZE: libc::c_long = 8;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a null new action only reads the current action into `old`;
        // the second call installs SIG_DFL, no handler. The kernel's struct (handler, flags,
        // restorer, mask: 32 bytes) is smaller than libc's, whose first field is also the handler,
        // so the kernel writes within `old` and reads zeros past `new`'s handler. The child is
        // single-threaded.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            let rc = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<libc::sigaction>(),
                &mut old as *mut libc::sigaction,
                SIGSET_SIZE,
            );
            if rc == 0 && old.sa_sigaction == libc::SIG_IGN {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = libc::SIG_DFL;
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &new as *const libc::sigaction,
                    std::ptr::null_mut::<libc::sigaction>(),
                    SIGSET_SIZE,
                );
            }
        }
    }
}

/// Receives one request datagram with its descriptors; `None` when the shim has gone.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> nix::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((msg.bytes, fds)))
}

fn answer(fd: OwnedFd, reply: &Reply) {
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    let mut line = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    // A shim that stopped listening has nobody left to tell.
    let _ = stream.write_all(&line);
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers and destructors, which belong to the parent's state.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(request: Request, stdio: Stdio) -> Reply {
        match request {
            Request::Kill { signal: 0, .. } => Reply::Err {
                failure: Failure::Invalid,
                message: "signal 0".into(),
            },
            Request::Kill { signal, .. } => Reply::Ok { pid: Some(signal) },
            Request::Create { .. } => Reply::Ok {
                pid: Some(100 * i32::from(stdio.stdout.is_some())),
            },
            _ => Reply::Ok { pid: None },
        }
    }

    #[test]
    fn requests_round_trip_through_a_forked_worker() {
        // The test harness may be multi-threaded; the echo worker only writes to a socket, which is
        // async-signal-safe enough for this test.
        let zygote = Zygote::spawn(echo).expect("spawn zygote");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let kill = |signal| Request::Kill {
                id: "c1".into(),
                root: "/nonexistent".into(),
                signal,
                all: false,
            };
            let reply = zygote.call(&kill(9), Stdio::default()).await.expect("call");
            assert_eq!(reply, Reply::Ok { pid: Some(9) });

            let (r, w) = nix::unistd::pipe().expect("pipe");
            let stdio = Stdio {
                stdout: Some(w),
                ..Default::default()
            };
            let create = Request::Create {
                id: "c1".into(),
                bundle: "/nonexistent".into(),
                root: "/nonexistent".into(),
                console_socket: None,
                stdio: stdio.fds(),
                systemd: false,
                cgroups_path: None,
                fidelity: Default::default(),
            };
            let reply = zygote.call(&create, stdio).await.expect("call");
            assert_eq!(reply, Reply::Ok { pid: Some(100) });
            // Every copy of the write end is closed once the worker is gone: the read end sees EOF.
            let mut buf = [0u8; 1];
            let n = nix::unistd::read(r.as_raw_fd(), &mut buf).expect("read");
            assert_eq!(n, 0);

            let reply = zygote.call(&kill(0), Stdio::default()).await.expect("call");
            assert!(matches!(
                reply,
                Reply::Err {
                    failure: Failure::Invalid,
                    ..
                }
            ));
        });
        let pid = Pid::from_raw(zygote.pid());
        drop(zygote);
        // Closing our end makes the zygote exit.
        let status = waitpid(pid, None).expect("wait zygote");
        assert_eq!(status, WaitStatus::Exited(pid, 0));
    }

    /// A test's replacement: a fork (the harness is multi-threaded; the echo worker only writes to a socket).
    fn fork_for_test(work: Work) -> Result<(OwnedFd, Pid)> {
        // SAFETY: see above.
        unsafe { fork_zygote(work) }
    }

    #[test]
    fn a_killed_zygote_is_replaced_by_the_next_request() {
        let mut zygote = Zygote::spawn(echo).expect("spawn zygote");
        zygote.replace = fork_for_test;
        let first = Pid::from_raw(zygote.pid());
        nix::sys::signal::kill(first, nix::sys::signal::Signal::SIGKILL).expect("kill");
        assert_eq!(
            waitpid(first, None).expect("wait"),
            WaitStatus::Signaled(first, nix::sys::signal::Signal::SIGKILL, false)
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let kill = Request::Kill {
            id: "c1".into(),
            root: "/nonexistent".into(),
            signal: 9,
            all: false,
        };
        let reply = rt
            .block_on(zygote.call(&kill, Stdio::default()))
            .expect("the request reaches a new zygote");
        assert_eq!(reply, Reply::Ok { pid: Some(9) });
        let second = Pid::from_raw(zygote.pid());
        assert_ne!(second, first);
        drop(zygote);
        assert_eq!(
            waitpid(second, None).expect("wait"),
            WaitStatus::Exited(second, 0)
        );
    }
}
