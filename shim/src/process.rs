//! One process the shim runs: a container's init or an exec, with its status, its stdio and the
//! channel that carries its exit to every `Wait`.

use std::sync::Mutex;

use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

use crate::io::{ProcessIo, StdioPaths};

/// A finished process's exit as containerd reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: Timestamp,
}

#[derive(Debug)]
struct State {
    status: Status,
    pid: i32,
    exit: Option<ExitInfo>,
}

/// An init or exec process.
pub struct Process {
    /// The exec id; empty for a container's init.
    pub exec_id: String,
    pub stdio: StdioPaths,
    pub io: tokio::sync::Mutex<Option<ProcessIo>>,
    /// CloseIO came (possibly before `io` was set up).
    stdin_closed: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    exited: watch::Sender<Option<ExitInfo>>,
    /// A Start is under way ([`Process::begin_start`]).
    starting: watch::Sender<bool>,
}

/// A Start under way, until dropped ([`Process::begin_start`]).
pub struct Starting<'a>(&'a Process);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.starting.send_replace(false);
    }
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        let (exited, _) = watch::channel(None);
        let (starting, _) = watch::channel(false);
        Process {
            exec_id: exec_id.to_string(),
            stdio,
            io: tokio::sync::Mutex::new(None),
            stdin_closed: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State {
                status: Status::CREATED,
                pid: 0,
                exit: None,
            }),
            exited,
            starting,
        }
    }

    /// Marks a Start under way until the returned guard is dropped (after its reply and its event, or its
    /// failure): an exit seen meanwhile is announced after them ([`Process::start_settled`]).
    pub fn begin_start(&self) -> Starting<'_> {
        self.starting.send_replace(true);
        Starting(self)
    }

    /// Waits until no Start of this process is under way.
    pub async fn start_settled(&self) {
        let mut rx = self.starting.subscribe();
        // The sender lives as long as the process, so this only ends early at shutdown.
        let _ = rx.wait_for(|starting| !starting).await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.state().pid
    }

    /// Records a CloseIO.
    pub fn close_stdin(&self) {
        self.stdin_closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a CloseIO came.
    pub fn stdin_closed(&self) -> bool {
        self.stdin_closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_pid(&self, pid: i32) {
        self.state().pid = pid;
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Moves to `status` unless the process has already stopped.
    pub fn set_status(&self, status: Status) {
        let mut state = self.state();
        if state.status != Status::STOPPED {
            state.status = status;
        }
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.state().exit.clone()
    }

    /// Records the exit and wakes every waiter.
    pub fn set_exited(&self, status: u32) -> ExitInfo {
        let info = ExitInfo { status, at: now() };
        {
            let mut state = self.state();
            state.status = Status::STOPPED;
            state.exit = Some(info.clone());
        }
        self.exited.send_replace(Some(info.clone()));
        info
    }

    /// Waits until the process has exited.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as the process; this only happens at shutdown.
                return ExitInfo {
                    status: 255,
                    at: now(),
                };
            }
        }
    }
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// Whether process `pid` is gone or on its way out.
pub fn exiting(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_exiting(&stat),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// `PF_EXITING` of a task's flags (include/linux/sched.h): set as a task begins to exit.
const PF_EXITING: u64 = 0x4;

/// From `/proc/PID/stat`: the process is a zombie or dead, or has begun to exit (`PF_EXITING` in its flags, the 9th
/// field). The fields are counted after the command's closing parenthesis, which the command may itself contain.
fn stat_exiting(stat: &str) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let flags = fields.nth(5).and_then(|f| f.parse::<u64>().ok());
    matches!(state, Some("Z" | "X" | "x")) || flags.is_some_and(|f| f & PF_EXITING != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_exit_whenever_they_come() {
        let p = std::sync::Arc::new(Process::new("", StdioPaths::default()));
        assert_eq!(p.status(), Status::CREATED);
        let early = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await.status })
        };
        p.set_status(Status::RUNNING);
        p.set_exited(137);
        assert_eq!(early.await.expect("join"), 137);
        assert_eq!(p.wait().await.status, 137);
        // A stopped process stays stopped.
        p.set_status(Status::RUNNING);
        assert_eq!(p.status(), Status::STOPPED);
    }

    #[test]
    fn stat_exiting_reads_the_state_and_the_exiting_flag() {
        // /proc/PID/stat: pid (comm) state ppid pgrp session tty_nr tpgid flags ...
        let stat = |comm: &str, state: &str, flags: u64| {
            format!("42 ({comm}) {state} 1 42 42 0 -1 {flags} 120 0 0 0")
        };
        assert!(!stat_exiting(&stat("containerd-shim", "S", 0x40_0000)));
        assert!(!stat_exiting(&stat("containerd-shim", "R", 0x40_0140)));
        assert!(stat_exiting(&stat("containerd-shim", "D", 0x40_0144)));
        assert!(stat_exiting(&stat("containerd-shim", "Z", 0x40_0000)));
        assert!(stat_exiting(&stat("containerd-shim", "X", 0)));
        // A command may hold spaces and parentheses: the fields start after the last one.
        assert!(!stat_exiting(&stat("a) Z 1 1 1 0 -1 4 (b", "S", 0)));
        assert!(stat_exiting(&stat("a) S 1 1 1 0 -1 0 (b", "S", 4)));
        assert!(!stat_exiting("garbage"));
    }
}
