//! Reaping: the shim is the child subreaper of every container process it starts, so it collects
//! their exit statuses and hands each to whoever waits for that pid.
//!
//! Exits can arrive before anybody asks for them (an exec that fails at once is reaped the moment
//! its worker exits, possibly before the worker's reply is read), so unclaimed exits are kept,
//! a bounded number of them, until claimed.
//!
//! Children that are not container processes (the broker the shim may start, see `spawn.rs`) are
//! [`detach`]ed before they can exit: their exits are dropped, so a container process that later
//! gets the same pid never receives a stale exit.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How many unclaimed exits are kept; the oldest go first.
const MAX_UNCLAIMED: usize = 4096;

/// Children whose exits nobody waits for (see [`detach`]). Process-wide: there is one reaper per shim.
static DETACHED: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

/// Marks child `pid` as not a container process: its exit is dropped when reaped. Call it before the
/// child can exit (`spawn.rs` holds the child on a pipe until this is done).
pub fn detach(pid: i32) {
    DETACHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid);
}

/// Takes `pid` out of the detached set; true when it was there.
fn take_detached(pid: i32) -> bool {
    DETACHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid)
}

/// An exit: the process's status as containerd reports it (128 + signal for a signalled process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: u32,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (u64, Exit)>,
    seq: u64,
}

/// Routes exit statuses collected by `reap` to the tasks that subscribed to them.
#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

impl Reaper {
    /// Returns a receiver that yields `pid`'s exit, at once if it has already been reaped.
    pub fn subscribe(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, exit)) = inner.unclaimed.remove(&pid) {
            let _ = tx.send(exit);
        } else {
            inner.waiters.insert(pid, tx);
        }
        rx
    }

    /// Hands `exit` to its subscriber, or keeps it until one comes (a detached child's is dropped).
    pub fn deliver(&self, exit: Exit) {
        if take_detached(exit.pid) {
            tracing::debug!(
                pid = exit.pid,
                status = exit.status,
                "a detached child exited"
            );
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = inner.waiters.remove(&exit.pid) {
            let _ = tx.send(exit);
            return;
        }
        if inner.unclaimed.len() >= MAX_UNCLAIMED
            && let Some(oldest) = inner
                .unclaimed
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(pid, _)| *pid)
        {
            inner.unclaimed.remove(&oldest);
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.unclaimed.insert(exit.pid, (seq, exit));
    }

    /// Collects every exited child without blocking and delivers each exit.
    pub fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.deliver(Exit {
                    pid: pid.as_raw(),
                    status: code as u32,
                }),
                Ok(WaitStatus::Signaled(pid, signal, _)) => self.deliver(Exit {
                    pid: pid.as_raw(),
                    status: 128 + signal as u32,
                }),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!("waitpid: {err}");
                    return;
                }
            }
        }
    }
}

/// Makes this process the child subreaper for everything it starts.
pub fn set_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exits_wait_for_their_subscriber() {
        let reaper = Reaper::default();
        reaper.deliver(Exit { pid: 7, status: 3 });
        let mut rx = reaper.subscribe(7);
        assert_eq!(rx.try_recv().ok(), Some(Exit { pid: 7, status: 3 }));
    }

    #[test]
    fn late_exits_reach_their_subscriber() {
        let reaper = Reaper::default();
        let mut rx = reaper.subscribe(8);
        assert!(rx.try_recv().is_err());
        reaper.deliver(Exit {
            pid: 8,
            status: 137,
        });
        assert_eq!(
            rx.try_recv().ok(),
            Some(Exit {
                pid: 8,
                status: 137
            })
        );
    }

    #[test]
    fn detached_exits_are_dropped_once() {
        let reaper = Reaper::default();
        // A pid no real child of the test has: the set is process-wide.
        detach(-77);
        reaper.deliver(Exit {
            pid: -77,
            status: 0,
        });
        let mut rx = reaper.subscribe(-77);
        assert!(rx.try_recv().is_err(), "a detached exit was kept");
        // The pid is reused by a container process later: its exit is delivered.
        reaper.deliver(Exit {
            pid: -77,
            status: 9,
        });
        assert_eq!(
            rx.try_recv().ok(),
            Some(Exit {
                pid: -77,
                status: 9
            })
        );
    }

    #[test]
    fn a_real_child_is_reaped_with_its_status() {
        let reaper = Reaper::default();
        // Reaped through the reaper, not Child::wait: that is what is under test.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("spawn sh");
        let mut rx = reaper.subscribe(child.id() as i32);
        for _ in 0..500 {
            reaper.reap();
            if let Ok(exit) = rx.try_recv() {
                assert_eq!(exit.status, 3);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("child was never reaped");
    }
}
