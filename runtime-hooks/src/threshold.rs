//! cgroup v1 memory usage thresholds: wake when a container's memory grows past a level, before it stalls.
//!
//! [`MemoryThreshold::arm`] registers an eventfd through the memory cgroup's `cgroup.event_control`
//! (`"<event_fd> <usage_fd> <bytes>"`, the usage fd being `memory.usage_in_bytes` of the same cgroup; the kernel's
//! Documentation/admin-guide/cgroup-v1/memory.rst, "Memory thresholds"). The eventfd's counter goes up each time
//! the cgroup's usage (hierarchical: its children count) crosses the threshold, either way, so the fd polls
//! readable; [`MemoryThreshold::consume`] reads the counter back to zero. One [`crate::TriggerSet`] watches it with
//! `arm_readable` (one wake per arming) next to the PSI triggers.
//!
//! Limits:
//! - cgroup v2 has no usage thresholds (nor `cgroup.event_control`): [`ThresholdError::CgroupV2`]; there
//!   [`crate::ChangeFile::memory_events`] tells when usage passes `memory.high` or `memory.max`; a hybrid host's
//!   memory controller is on v1, so it has them;
//! - the kernel compares usage with the thresholds every 128 page charges or uncharges per CPU (its
//!   `THRESHOLDS_EVENTS_TARGET`), so the event comes at most ~512 KiB a CPU past the level, and the threshold is
//!   rounded down to a page;
//! - the usage fd is needed only while the registration is written (the kernel checks it is
//!   `memory.usage_in_bytes` of the same cgroup and readable, then lets it go): it is closed at once. The
//!   eventfd is the registration: closing it (dropping the [`MemoryThreshold`]) unregisters it;
//! - removing the cgroup signals the eventfd too (the kernel tells the listener its event is gone): a wake-up
//!   whose cgroup directory is gone is not growth;
//! - registering and unregistering each rebuild the cgroup's threshold array and wait for an RCU grace period
//!   under the cgroup's lock, so an arm blocks 8 ms here, 16 ms when it follows a drop (whose unregistration, run
//!   by a kernel worker, holds the lock first), for ~0.1 ms of CPU (docs/BENCHMARKS.md, issue 16): arm where
//!   blocking is allowed (`spawn_blocking`), not at every tick. Dropping returns at once;
//! - a `CONFIG_PREEMPT_RT` kernel refuses the write (`EOPNOTSUPP`): [`ThresholdError::Register`].

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::CgroupDirs;

/// The file whose usage is watched.
pub const USAGE_FILE: &str = "memory.usage_in_bytes";

/// The file the registration is written to.
pub const CONTROL_FILE: &str = "cgroup.event_control";

/// Why a threshold could not be armed or read.
#[derive(Debug, thiserror::Error)]
pub enum ThresholdError {
    /// A cgroup v2 container: v2 has no usage thresholds (`memory.events` and PSI are its notifications).
    #[error("cgroup v2 has no memory usage thresholds (cgroup.event_control is v1 only)")]
    CgroupV2,
    /// A v1 container without a memory cgroup directory.
    #[error("no v1 memory cgroup directory")]
    NoMemoryController,
    /// The eventfd could not be created.
    #[error("creating the eventfd for a threshold in {}", dir.display())]
    Eventfd {
        /// The memory cgroup directory.
        dir: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// Opening `memory.usage_in_bytes` or `cgroup.event_control` failed.
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the registration (`EINVAL`: not a v1 memory cgroup file, or the two files are of
    /// different cgroups; `EOPNOTSUPP`: a `PREEMPT_RT` kernel).
    #[error("writing {line:?} to {}", path.display())]
    Register {
        /// `cgroup.event_control`.
        path: PathBuf,
        /// The registration line.
        line: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the eventfd's counter failed.
    #[error("reading the threshold eventfd of {}", dir.display())]
    Read {
        /// The memory cgroup directory.
        dir: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
}

/// The directory a container's thresholds are registered in: its v1 memory cgroup.
pub fn memory_dir(dirs: &CgroupDirs) -> Result<&Path, ThresholdError> {
    match dirs {
        CgroupDirs::V2(_) => Err(ThresholdError::CgroupV2),
        CgroupDirs::V1(d) => d
            .memory
            .as_deref()
            .ok_or(ThresholdError::NoMemoryController),
    }
}

/// One armed usage threshold: the eventfd the kernel signals when the cgroup's usage crosses `bytes`.
///
/// Readable (`POLLIN`) while its counter is nonzero; [`Self::consume`] quiets it. Dropping it closes the eventfd,
/// which unregisters the threshold.
#[derive(Debug)]
pub struct MemoryThreshold {
    eventfd: EventFd,
    dir: PathBuf,
    bytes: u64,
}

impl MemoryThreshold {
    /// Arms a threshold at `bytes` of usage in the container's v1 memory cgroup.
    pub fn arm(dirs: &CgroupDirs, bytes: u64) -> Result<Self, ThresholdError> {
        Self::arm_in(memory_dir(dirs)?, bytes)
    }

    /// Arms a threshold at `bytes` of usage in v1 memory cgroup directory `dir`.
    pub fn arm_in(dir: &Path, bytes: u64) -> Result<Self, ThresholdError> {
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(
            |source| ThresholdError::Eventfd {
                dir: dir.to_owned(),
                source,
            },
        )?;
        let open = |name: &str, write: bool| {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|source| ThresholdError::Open { path, source })
        };
        let usage = open(USAGE_FILE, false)?;
        let mut control = open(CONTROL_FILE, true)?;
        let line = format!("{} {} {bytes}", eventfd.as_raw_fd(), usage.as_raw_fd());
        // One write: the kernel parses each write(2) as one registration.
        control
            .write_all(line.as_bytes())
            .map_err(|source| ThresholdError::Register {
                path: dir.join(CONTROL_FILE),
                line: line.clone(),
                source,
            })?;
        Ok(Self {
            eventfd,
            dir: dir.to_owned(),
            bytes,
        })
    }

    /// The threshold, in bytes, as asked (the kernel rounds it down to a page).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The memory cgroup directory it is registered in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the eventfd's counter without blocking and resets it: how many crossings (or the cgroup's removal)
    /// the kernel signalled since the last call, 0 when none. The fd then polls quiet until the next one.
    pub fn consume(&self) -> Result<u64, ThresholdError> {
        loop {
            return match self.eventfd.read() {
                Ok(n) => Ok(n),
                Err(Errno::EAGAIN) => Ok(0),
                Err(Errno::EINTR) => continue,
                Err(source) => Err(ThresholdError::Read {
                    dir: self.dir.clone(),
                    source,
                }),
            };
        }
    }
}

impl AsFd for MemoryThreshold {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }
}

impl AsRawFd for MemoryThreshold {
    fn as_raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout};
    use crate::{ContainerCgroup, TriggerSet};

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).expect("poll") == 1
    }

    fn fake(layout: Layout) -> (FakeHost, ContainerCgroup) {
        let host = FakeHost::new(layout);
        host.container("/default/c1");
        let cg = ContainerCgroup::discover(&host.roots(), "/default/c1").expect("discover");
        (host, cg)
    }

    #[test]
    fn v2_has_no_thresholds_and_says_so() {
        let (_host, cg) = fake(Layout::V2);
        let err = MemoryThreshold::arm(cg.dirs(), 1 << 20).expect_err("v2");
        assert!(matches!(err, ThresholdError::CgroupV2), "{err}");
        assert!(err.to_string().contains("v2"), "{err}");
    }

    #[test]
    fn a_v1_container_without_a_memory_cgroup_says_so() {
        let dirs = CgroupDirs::V1(crate::v1::Dirs {
            cpu: Some("/sys/fs/cgroup/cpu/x".into()),
            ..Default::default()
        });
        let err = MemoryThreshold::arm(&dirs, 1 << 20).expect_err("no memory dir");
        assert!(matches!(err, ThresholdError::NoMemoryController), "{err}");
    }

    #[test]
    fn a_hybrid_host_registers_in_the_v1_memory_directory() {
        let (host, cg) = fake(Layout::Hybrid);
        let dir = memory_dir(cg.dirs()).expect("v1 memory dir");
        assert_eq!(dir, host.root().join("memory/default/c1"));
    }

    #[test]
    fn missing_files_name_the_path() {
        for (missing, layout) in [(USAGE_FILE, Layout::V1), (CONTROL_FILE, Layout::Hybrid)] {
            let (host, cg) = fake(layout);
            let path = host.root().join("memory/default/c1").join(missing);
            std::fs::remove_file(&path).expect("rm");
            let err = MemoryThreshold::arm(cg.dirs(), 1 << 20).expect_err("missing file");
            match &err {
                ThresholdError::Open { path: p, .. } => assert_eq!(p, &path),
                other => panic!("expected Open, got {other}"),
            }
            assert!(err.to_string().contains(missing), "{err}");
        }
    }

    #[test]
    fn a_refused_registration_names_the_file_and_the_line() {
        let (host, cg) = fake(Layout::V1);
        let control = host.root().join("memory/default/c1").join(CONTROL_FILE);
        std::fs::remove_file(&control).expect("rm");
        // /dev/full opens for writing and fails every write with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", &control).expect("symlink");
        let err = MemoryThreshold::arm(cg.dirs(), 4096).expect_err("ENOSPC");
        match &err {
            ThresholdError::Register { path, line, source } => {
                assert_eq!(path, &control);
                assert!(line.ends_with(" 4096"), "{line}");
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected Register, got {other}"),
        }
        assert!(err.to_string().contains("cgroup.event_control"), "{err}");
    }

    #[test]
    fn the_registration_line_names_our_eventfd_and_the_bytes() {
        let (host, cg) = fake(Layout::V1);
        let t = MemoryThreshold::arm(cg.dirs(), 123_456_789).expect("arm on a fake tree");
        let written = host.read("memory/default/c1/cgroup.event_control");
        let fields: Vec<&str> = written.split(' ').collect();
        assert_eq!(fields.len(), 3, "{written:?}");
        assert_eq!(fields[0], t.as_raw_fd().to_string());
        assert!(fields[1].parse::<RawFd>().is_ok(), "{written:?}");
        assert_ne!(fields[1], fields[0]);
        assert_eq!(fields[2], "123456789");
        assert_eq!(t.bytes(), 123_456_789);
        assert_eq!(t.dir(), host.root().join("memory/default/c1"));
    }

    /// The kernel's signal is an eventfd write: simulated here, the set and `consume` see what they would.
    #[test]
    fn a_signalled_threshold_wakes_a_set_once_and_consume_quiets_it() {
        let (_host, cg) = fake(Layout::V1);
        let t = MemoryThreshold::arm(cg.dirs(), 1 << 20).expect("arm");
        let set = TriggerSet::new().expect("epoll");
        set.arm_readable(t.as_fd()).expect("arm readable");
        assert!(!readable(t.as_fd()), "nothing signalled");
        assert!(!readable(set.as_fd()));
        assert_eq!(t.consume().expect("read"), 0);
        let signal = |n: u64| {
            nix::unistd::write(t.as_fd(), &n.to_ne_bytes()).expect("signal");
        };
        signal(1);
        signal(1);
        assert!(readable(t.as_fd()));
        assert!(readable(set.as_fd()), "the set wakes");
        assert_eq!(set.drain(), 1);
        assert_eq!(t.consume().expect("read"), 2, "both crossings counted");
        assert!(!readable(t.as_fd()), "consumed: quiet");
        signal(1);
        assert!(!readable(set.as_fd()), "one wake per arming");
        set.arm_readable(t.as_fd()).expect("arm again");
        assert!(readable(set.as_fd()), "pending at arming: fires at once");
        assert_eq!(set.drain(), 1);
        assert_eq!(t.consume().expect("read"), 1);
        drop(t);
        assert_eq!(set.drain(), 0, "a dropped threshold leaves the set");
    }
}
