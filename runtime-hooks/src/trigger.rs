//! PSI triggers: wake on a container's CPU or memory stall instead of on the clock.
//!
//! [`PressureTriggers`] writes a trigger (`some <threshold_us> <window_us>`, the kernel's
//! Documentation/accounting/psi.rst) into the container's cgroup2 `cpu.pressure` and `memory.pressure` and keeps
//! the two descriptors: each reports `POLLPRI` at most once per window in which the cgroup's "some" stall passed the
//! threshold. [`TriggerSet`] gathers many containers' descriptors in one epoll set, so a tokio caller registers only
//! the set's fd with `AsyncFd`, and on readiness calls [`TriggerSet::drain`].
//!
//! Limits:
//! - a v1 host without a cgroup2 companion tree has no pressure files: [`TriggerError::NoCgroup2`];
//! - the triggers are always the kernel's *unprivileged* kind ([`WINDOW`], 10% stall over 2 s): the files are
//!   opened with `CAP_SYS_RESOURCE` out of the opening thread's effective set (the kernel judges a trigger by its
//!   opener's credentials). A privileged trigger could use a 500 ms window but makes the kernel start a `psimon`
//!   thread per cgroup, which polls every 50 ms while the container stalls: a node of hundreds of containers
//!   would pay a kernel thread each, and a poller for each throttled one. An unprivileged trigger is evaluated by
//!   the kernel's 2 s averaging work that runs anyway, so it fires about one window after the stall began
//!   (2.02-2.06 s measured here);
//! - a `POLLPRI` is consumed by whoever polls the descriptor first: when an outer poller (tokio's epoll) asks the
//!   set's fd for readiness the kernel polls the members and may consume their events, so [`TriggerSet::drain`]
//!   can return 0 after a wake-up. The readiness itself is the signal; the count is a lower bound.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::CgroupDirs;

/// A trigger's "some" stall threshold within its window, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerWindow {
    /// Stall (at least one task waiting) within a window that fires the trigger.
    pub threshold_us: u64,
    /// The window's length.
    pub window_us: u64,
}

/// 200 ms of stall in 2 s (10%): an unprivileged trigger's window must be a multiple of 2 s.
pub const WINDOW: TriggerWindow = TriggerWindow {
    threshold_us: 200_000,
    window_us: 2_000_000,
};

/// The pressure files a trigger is written into.
pub const PRESSURE_FILES: [&str; 2] = ["cpu.pressure", "memory.pressure"];

/// Why triggers could not be armed or watched.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A pure v1 host: the container has no cgroup2 directory, hence no pressure files.
    #[error("no cgroup2 directory (a v1 host without the unified tree has no pressure files)")]
    NoCgroup2,
    /// Opening a pressure file failed (absent without PSI: kernel < 4.20 or `psi=0`).
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the trigger.
    #[error("writing trigger {trigger:?} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The trigger line, without its NUL.
        trigger: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An epoll call failed.
    #[error("epoll {op} (fd {fd})")]
    Epoll {
        /// `create`, `add`, `delete` or `wait`.
        op: &'static str,
        /// The descriptor concerned (the epoll fd itself for `create` and `wait`).
        fd: RawFd,
        /// The errno.
        #[source]
        source: Errno,
    },
}

/// The bytes to write: the kernel NUL-terminates the written buffer at its last byte, so without a trailing NUL
/// the last digit of the window is cut.
pub fn trigger_line(w: TriggerWindow) -> CString {
    CString::new(format!("some {} {}", w.threshold_us, w.window_us))
        .expect("digits and spaces hold no NUL")
}

/// Where a container's pressure files are: its own directory on v2, its companion cgroup2 directory on a hybrid
/// host, none on pure v1.
pub fn pressure_dir(dirs: &CgroupDirs) -> Option<&Path> {
    match dirs {
        CgroupDirs::V2(d) => Some(&d.dir),
        CgroupDirs::V1(d) => d.unified.as_deref(),
    }
}

/// One container's armed triggers: `cpu.pressure` and `memory.pressure`, each with a trigger written.
///
/// Dropping it closes the descriptors, and the kernel waits for an RCU grace period per trigger on close
/// (17 ms a container measured here, against 10 µs to arm): drop it where blocking is allowed (not on a
/// tokio worker in a hot path; `spawn_blocking` or the container's exit path).
#[derive(Debug)]
pub struct PressureTriggers {
    fds: Vec<OwnedFd>,
}

impl PressureTriggers {
    /// Arms triggers in the container's pressure files.
    pub fn arm(dirs: &CgroupDirs) -> Result<Self, TriggerError> {
        Self::arm_in(pressure_dir(dirs).ok_or(TriggerError::NoCgroup2)?)
    }

    /// Arms triggers in the pressure files of cgroup2 directory `dir`.
    pub fn arm_in(dir: &Path) -> Result<Self, TriggerError> {
        let fds = PRESSURE_FILES
            .iter()
            .map(|name| write_trigger(&dir.join(name), WINDOW))
            .collect::<Result<_, _>>()?;
        Ok(Self { fds })
    }

    /// The armed descriptors, `cpu.pressure` then `memory.pressure`.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.fds.iter().map(AsFd::as_fd)
    }
}

fn write_trigger(path: &Path, window: TriggerWindow) -> Result<OwnedFd, TriggerError> {
    let mut file = open_unprivileged(path).map_err(|source| TriggerError::Open {
        path: path.to_owned(),
        source,
    })?;
    let line = trigger_line(window);
    file.write_all(line.as_bytes_with_nul())
        .map_err(|source| TriggerError::Write {
            path: path.to_owned(),
            trigger: line.to_string_lossy().into_owned(),
            source,
        })?;
    Ok(OwnedFd::from(file))
}

/// Opens `path` read-write with `CAP_SYS_RESOURCE` out of this thread's effective set (capabilities are per
/// thread), and puts it back: the file's credentials make the trigger written into it unprivileged (module docs).
fn open_unprivileged(path: &Path) -> std::io::Result<std::fs::File> {
    use caps::{CapSet, Capability};
    let cap = Capability::CAP_SYS_RESOURCE;
    let held = caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if held {
        caps::drop(None, CapSet::Effective, cap).map_err(std::io::Error::other)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    if held {
        // From the permitted set, which the drop left alone: allowed.
        caps::raise(None, CapSet::Effective, cap).map_err(|e| {
            std::io::Error::other(format!("CAP_SYS_RESOURCE not raised again: {e}"))
        })?;
    }
    file
}

/// Events one [`TriggerSet::drain`] takes per `epoll_wait`; more are taken by further calls in the same drain.
const DRAIN_BATCH: usize = 64;

/// Batches one [`TriggerSet::drain`] takes at most.
pub const DRAIN_ROUNDS: usize = 16;

/// The most one [`TriggerSet::drain`] returns.
pub const DRAIN_MAX: usize = DRAIN_ROUNDS * DRAIN_BATCH;

/// Many containers' triggers behind one epoll fd, readable when any trigger fired since the last drain.
///
/// Members are registered for `EPOLLPRI` only (a pressure file always polls readable and writable). The kernel's
/// poll of a trigger consumes its event, so a drained set is quiet until a trigger fires again, level-triggered or
/// not (both measured in the root test); members are edge-triggered so `epoll_wait` does not poll them again.
#[derive(Debug)]
pub struct TriggerSet {
    epoll: Epoll,
}

impl TriggerSet {
    /// An empty set.
    pub fn new() -> Result<Self, TriggerError> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|source| TriggerError::Epoll {
                op: "create",
                fd: -1,
                source,
            })?;
        Ok(Self { epoll })
    }

    /// Adds a container's descriptors; they stay in the set until [`TriggerSet::remove`] or until
    /// `triggers` is dropped (the kernel drops a closed fd from every epoll set).
    pub fn add(&self, triggers: &PressureTriggers) -> Result<(), TriggerError> {
        for fd in triggers.fds() {
            let raw = fd.as_raw_fd();
            let event = EpollEvent::new(
                EpollFlags::EPOLLPRI | EpollFlags::EPOLLET,
                u64::try_from(raw).unwrap_or(0),
            );
            self.epoll
                .add(fd, event)
                .map_err(|source| TriggerError::Epoll {
                    op: "add",
                    fd: raw,
                    source,
                })?;
        }
        Ok(())
    }

    /// Removes a container's descriptors; one that is not in the set is skipped.
    pub fn remove(&self, triggers: &PressureTriggers) -> Result<(), TriggerError> {
        for fd in triggers.fds() {
            match self.epoll.delete(fd) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(source) => {
                    return Err(TriggerError::Epoll {
                        op: "delete",
                        fd: fd.as_raw_fd(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Wakes the set's waiter once when `fd` turns readable (a socket a peer may write to unasked): the fd is
    /// added, or re-enabled when it is in the set already, for one `EPOLLIN` (`EPOLLONESHOT`). Data already
    /// waiting fires at once. A closed fd leaves the set with its file.
    pub fn arm_readable(&self, fd: BorrowedFd<'_>) -> Result<(), TriggerError> {
        self.arm_once(fd, EpollFlags::EPOLLIN)
    }

    /// Wakes the set's waiter once when `fd`, a cgroup2 file that announces its changes
    /// ([`crate::changes::ChangeFile`]), changes: added, or re-enabled when it is in the set already, for one
    /// `EPOLLPRI` (`EPOLLONESHOT`). A change its descriptor has not read yet fires at once. A closed fd leaves the
    /// set with its file.
    pub fn arm_priority(&self, fd: BorrowedFd<'_>) -> Result<(), TriggerError> {
        self.arm_once(fd, EpollFlags::EPOLLPRI)
    }

    fn arm_once(&self, fd: BorrowedFd<'_>, flags: EpollFlags) -> Result<(), TriggerError> {
        let raw = fd.as_raw_fd();
        let mut event = EpollEvent::new(
            flags | EpollFlags::EPOLLONESHOT,
            u64::try_from(raw).unwrap_or(0),
        );
        let r = match self.epoll.add(fd, event) {
            Err(Errno::EEXIST) => self.epoll.modify(fd, &mut event),
            r => r,
        };
        r.map_err(|source| TriggerError::Epoll {
            op: "arm",
            fd: raw,
            source,
        })
    }

    /// Takes the pending events without blocking; returns how many triggers fired (a lower bound: see the
    /// module's limits). Takes at most [`DRAIN_ROUNDS`] batches of 64 events, so a storm cannot hold the caller;
    /// events left then stay pending and the fd polls readable, but an edge-triggered waiter (tokio's `AsyncFd`)
    /// is not woken for them again: call `drain` again while it returns [`DRAIN_MAX`].
    pub fn drain(&self) -> usize {
        self.drain_into(None)
    }

    /// [`TriggerSet::drain`], also appending to `fired` the descriptor of each event taken (at most
    /// [`DRAIN_MAX`] a call): who woke the set.
    pub fn drain_into(&self, mut fired: Option<&mut Vec<RawFd>>) -> usize {
        let mut events = [EpollEvent::empty(); DRAIN_BATCH];
        let mut count = 0;
        for _ in 0..DRAIN_ROUNDS {
            let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            // Every reported event is a member's wake-up (EPOLLERR, a trigger gone with its cgroup, comes with it).
            count += n;
            if let Some(out) = fired.as_deref_mut() {
                out.extend(
                    events[..n]
                        .iter()
                        .filter_map(|e| RawFd::try_from(e.data()).ok()),
                );
            }
            if n < DRAIN_BATCH {
                break;
            }
        }
        count
    }
}

impl AsFd for TriggerSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl AsRawFd for TriggerSet {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_lines_end_in_a_nul_after_the_full_window() {
        assert_eq!(
            trigger_line(WINDOW).as_bytes_with_nul(),
            b"some 200000 2000000\0"
        );
        assert_eq!(WINDOW.window_us % 2_000_000, 0, "unprivileged: whole 2 s");
    }

    #[test]
    fn opening_for_a_trigger_leaves_the_threads_capabilities_as_they_were() {
        let before = caps::read(None, caps::CapSet::Effective).expect("capget");
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("cpu.pressure");
        std::fs::write(&file, "").expect("write");
        open_unprivileged(&file).expect("open");
        assert!(open_unprivileged(&tmp.path().join("absent")).is_err());
        assert_eq!(
            caps::read(None, caps::CapSet::Effective).expect("capget"),
            before
        );
    }

    #[test]
    fn pure_v1_has_no_pressure_dir_and_arming_says_so() {
        let v1 = CgroupDirs::V1(crate::v1::Dirs {
            cpu: Some("/sys/fs/cgroup/cpu/x".into()),
            ..Default::default()
        });
        assert_eq!(pressure_dir(&v1), None);
        assert!(matches!(
            PressureTriggers::arm(&v1),
            Err(TriggerError::NoCgroup2)
        ));
        let hybrid = CgroupDirs::V1(crate::v1::Dirs {
            unified: Some("/sys/fs/cgroup/unified/x".into()),
            ..Default::default()
        });
        assert_eq!(
            pressure_dir(&hybrid),
            Some(Path::new("/sys/fs/cgroup/unified/x"))
        );
        let v2 = CgroupDirs::V2(crate::v2::Dirs {
            dir: "/sys/fs/cgroup/x".into(),
        });
        assert_eq!(pressure_dir(&v2), Some(Path::new("/sys/fs/cgroup/x")));
    }

    #[test]
    fn a_missing_pressure_file_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = PressureTriggers::arm_in(tmp.path()).expect_err("no files");
        match &err {
            TriggerError::Open { path, .. } => {
                assert_eq!(path, &tmp.path().join("cpu.pressure"));
            }
            other => panic!("expected Open, got {other}"),
        }
        assert!(err.to_string().contains("cpu.pressure"), "{err}");
    }

    #[test]
    fn an_empty_set_is_not_readable_and_drains_nothing() {
        let set = TriggerSet::new().expect("epoll");
        assert_eq!(set.drain(), 0);
        let mut pfd = [nix::poll::PollFd::new(
            set.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).expect("poll"),
            0
        );
    }

    fn readable(set: &TriggerSet) -> bool {
        let mut pfd = [nix::poll::PollFd::new(
            set.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).expect("poll") == 1
    }

    #[test]
    fn an_armed_socket_wakes_the_set_once_per_arming() {
        let (mut peer, ours) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let set = TriggerSet::new().expect("epoll");
        set.arm_readable(ours.as_fd()).expect("arm");
        assert!(!readable(&set), "nothing written yet");
        peer.write_all(b"poke\n").expect("write");
        assert!(readable(&set), "a write wakes the set");
        assert_eq!(set.drain(), 1);
        peer.write_all(b"poke\n").expect("write");
        assert!(!readable(&set), "one wake per arming");
        set.arm_readable(ours.as_fd()).expect("arm again");
        assert!(readable(&set), "data already waiting fires at once");
        assert_eq!(set.drain(), 1);
        drop(ours);
        assert_eq!(set.drain(), 0, "a closed fd leaves the set");
    }
}
