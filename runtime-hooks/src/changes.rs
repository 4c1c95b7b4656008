//! A cgroup2 file whose changes the kernel announces: `memory.events`, `cgroup.events`.
//!
//! kernfs counts the changes its owner announces (`cgroup_file_notify`, at most one per 10 ms per file) and an
//! open descriptor of the file polls `POLLPRI` until it reads the file after the newest change. So a descriptor
//! kept open tells of every change without inotify (whose instances are counted per user, 128 by default, and
//! shared with kubelet, systemd and every runc shim) and without reading the file on a clock.
//!
//! [`ChangeFile::memory_events`] is the v2 counterpart of a v1 memory usage threshold
//! ([`crate::MemoryThreshold`]): cgroup v2 has no usage thresholds, but `memory.events` changes the moment the
//! container's usage passes its `memory.high` (the broker's allocation there) or its `memory.max`, where the
//! kernel starts reclaiming from it; a [`crate::TriggerSet`] watches it with [`crate::TriggerSet::arm_priority`].

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::CgroupDirs;

/// What one read takes of a notified file: `memory.events` is 6 short lines, `cgroup.events` 2.
const READ_BYTES: usize = 512;

/// An open cgroup2 file that polls `POLLPRI` after each change until [`ChangeFile::consume`] reads it.
#[derive(Debug)]
pub struct ChangeFile {
    file: File,
    path: PathBuf,
}

impl ChangeFile {
    /// Opens `path` and reads it once: a fresh descriptor polls `POLLPRI` at once, for the changes before it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let changes = Self {
            file,
            path: path.to_owned(),
        };
        changes.consume()?;
        Ok(changes)
    }

    /// The `memory.events` of a container's cgroup2 directory on a v2 host; `None` on v1 (a hybrid host's
    /// cgroup2 tree has no memory controller).
    pub fn memory_events(dirs: &CgroupDirs) -> Option<std::io::Result<Self>> {
        match dirs {
            CgroupDirs::V2(d) => Some(Self::open(&d.dir.join("memory.events"))),
            CgroupDirs::V1(_) => None,
        }
    }

    /// Reads the file from its start (one `pread` of at most [`READ_BYTES`], into the stack), which marks its
    /// newest change seen.
    pub fn consume(&self) -> std::io::Result<()> {
        let mut buf = [0u8; READ_BYTES];
        self.file.read_at(&mut buf, 0).map(drop)
    }

    /// The file this watches.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsFd for ChangeFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for ChangeFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_container_has_no_memory_events_to_watch() {
        let dirs = CgroupDirs::V1(crate::v1::Dirs {
            unified: Some("/cg/unified/default/c1".into()),
            ..Default::default()
        });
        assert!(ChangeFile::memory_events(&dirs).is_none());
    }

    #[test]
    fn a_v2_containers_memory_events_is_opened_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        )
        .expect("write");
        let dirs = CgroupDirs::V2(crate::v2::Dirs {
            dir: dir.path().into(),
        });
        let events = ChangeFile::memory_events(&dirs)
            .expect("a v2 container has memory.events")
            .expect("opened");
        assert_eq!(events.path(), dir.path().join("memory.events"));
        events.consume().expect("read");
        let text = std::fs::read_to_string(events.path()).expect("read the file");
        assert!(text.contains("high 3\n"), "{text}");
        let missing = CgroupDirs::V2(crate::v2::Dirs {
            dir: dir.path().join("gone"),
        });
        assert!(ChangeFile::memory_events(&missing).expect("v2").is_err());
    }
}
