//! OOM notifications for one cgroup.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`; the kernel
//! signals it each time the cgroup hits OOM, also when the OOM killer is disabled (then the tasks wait,
//! which is the broker's chance to lend memory). cgroup v2: inotify on `memory.events`, counting `oom`.
//!
//! [`OomWatcher`] is a plain file descriptor: block on [`OomWatcher::wait`], or register
//! [`AsRawFd::as_raw_fd`] with epoll / tokio's `AsyncFd` and call `wait(Some(Duration::ZERO))` when it is
//! readable. Limit: v1 events are not delivered for OOMs of descendant cgroups.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::parse;

/// Errors from setting up or waiting on an OOM watcher.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// The cgroup has no memory controller directory.
    #[error("no memory controller directory for this cgroup")]
    NoMemoryController,
    /// A cgroup file could not be opened or read.
    #[error("opening {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// eventfd(2) or inotify_init1(2) failed.
    #[error("creating the notification descriptor")]
    Descriptor(#[source] std::io::Error),
    /// Registering the eventfd (v1) or the inotify watch (v2) failed.
    #[error("registering for OOM events on {path}")]
    Register {
        /// The file written or watched.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// poll(2) or read(2) on the descriptor failed.
    #[error("waiting for OOM events")]
    Wait(#[source] std::io::Error),
}

enum Inner {
    V1 {
        eventfd: OwnedFd,
        // Kept open: the kernel drops the registration when it is closed.
        _oom_control: File,
    },
    V2 {
        inotify: OwnedFd,
        events: PathBuf,
        last: u64,
    },
}

/// Notifies OOM events of one cgroup.
pub struct OomWatcher {
    inner: Inner,
}

impl std::fmt::Debug for OomWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::V1 { .. } => "v1 eventfd",
            Inner::V2 { .. } => "v2 memory.events",
        };
        f.debug_struct("OomWatcher").field("kind", &kind).finish()
    }
}

fn oom_count(events: &Path) -> u64 {
    parse::read(events)
        .and_then(|t| parse::keyed_u64(&t, "oom").or_else(|| parse::keyed_u64(&t, "oom_kill")))
        .unwrap_or(0)
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl OomWatcher {
    /// Registers an eventfd on `<dir>/memory.oom_control`.
    pub(crate) fn v1(dir: &Path) -> Result<Self, OomError> {
        let control_path = dir.join("memory.oom_control");
        let oom_control = File::open(&control_path).map_err(|source| OomError::Open {
            path: control_path.clone(),
            source,
        })?;
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(OomError::Descriptor(last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let register = dir.join("cgroup.event_control");
        let line = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
        crate::actuate::write(&register, &line).map_err(|e| OomError::Register {
            path: register.clone(),
            source: match e {
                crate::actuate::ActuateError::Invalid { source, .. }
                | crate::actuate::ActuateError::Busy { source, .. }
                | crate::actuate::ActuateError::Write { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            },
        })?;
        Ok(Self {
            inner: Inner::V1 {
                eventfd,
                _oom_control: oom_control,
            },
        })
    }

    /// Watches `<dir>/memory.events` with inotify.
    pub(crate) fn v2(dir: &Path) -> Result<Self, OomError> {
        let events = dir.join("memory.events");
        if !events.is_file() {
            return Err(OomError::Open {
                path: events,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        // SAFETY: inotify_init1 has no memory preconditions; the result is checked before use.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(OomError::Descriptor(last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let inotify = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_path =
            std::ffi::CString::new(events.as_os_str().as_encoded_bytes()).map_err(|_| {
                OomError::Register {
                    path: events.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                }
            })?;
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(inotify.as_raw_fd(), c_path.as_ptr(), libc::IN_MODIFY)
        };
        if wd < 0 {
            return Err(OomError::Register {
                path: events,
                source: last_os_error(),
            });
        }
        let last = oom_count(&events);
        Ok(Self {
            inner: Inner::V2 {
                inotify,
                events,
                last,
            },
        })
    }

    /// Waits up to `timeout` (`None`: forever) and returns the number of OOM events since the last call
    /// (0 when the time ran out).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<u64, OomError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Inner::V2 { events, last, .. } = &mut self.inner {
                let now = oom_count(events);
                if now > *last {
                    let delta = now - *last;
                    *last = now;
                    return Ok(delta);
                }
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !poll_readable(self.as_raw_fd(), remaining)? {
                return Ok(0);
            }
            match &mut self.inner {
                Inner::V1 { eventfd, .. } => {
                    let mut buf = [0u8; 8];
                    // SAFETY: buf is 8 writable bytes, the size an eventfd read needs.
                    let n = unsafe {
                        libc::read(eventfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n == 8 {
                        return Ok(u64::from_ne_bytes(buf));
                    }
                    let err = last_os_error();
                    if err.kind() != std::io::ErrorKind::WouldBlock {
                        return Err(OomError::Wait(err));
                    }
                }
                Inner::V2 { inotify, .. } => drain(inotify.as_raw_fd())?,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
        }
    }
}

fn drain(fd: RawFd) -> Result<(), OomError> {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is writable for its whole length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let err = last_os_error();
            if n == 0 || err.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(());
            }
            return Err(OomError::Wait(err));
        }
    }
}

/// poll(2) for readability; `Ok(false)` on timeout.
fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> Result<bool, OomError> {
    let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let err = last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(OomError::Wait(err));
        }
    }
}

impl AsRawFd for OomWatcher {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            Inner::V1 { eventfd, .. } => eventfd.as_raw_fd(),
            Inner::V2 { inotify, .. } => inotify.as_raw_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_counts_oom_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n").expect("seed");
        let mut watcher = OomWatcher::v2(dir.path()).expect("watch");
        assert_eq!(
            watcher.wait(Some(Duration::from_millis(20))).expect("wait"),
            0
        );
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 3\noom_kill 2\n").expect("bump");
        assert_eq!(watcher.wait(Some(Duration::from_secs(5))).expect("wait"), 2);
        assert_eq!(watcher.wait(Some(Duration::ZERO)).expect("wait"), 0);
        // Malformed content reads as zero events, never a panic.
        std::fs::write(&events, "oom x\n").expect("garble");
        assert_eq!(
            watcher.wait(Some(Duration::from_millis(20))).expect("wait"),
            0
        );
    }

    #[test]
    fn v2_missing_file_is_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            OomWatcher::v2(dir.path()),
            Err(OomError::Open { .. })
        ));
        assert!(matches!(
            OomWatcher::v1(dir.path()),
            Err(OomError::Open { .. })
        ));
    }

    #[test]
    fn v1_registration_line_names_both_fds() {
        // On a fake tree cgroup.event_control is a plain file: the registration line lands in it.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        )
        .expect("seed");
        std::fs::write(dir.path().join("cgroup.event_control"), "").expect("seed");
        let mut watcher = OomWatcher::v1(dir.path()).expect("registered");
        let line = std::fs::read_to_string(dir.path().join("cgroup.event_control")).expect("read");
        let fds: Vec<i32> = line.split(' ').filter_map(|f| f.parse().ok()).collect();
        assert_eq!(fds.len(), 2);
        assert_eq!(fds[0], watcher.as_raw_fd());
        assert_eq!(
            watcher.wait(Some(Duration::from_millis(10))).expect("wait"),
            0
        );
    }
}
