//! Per-thread I/O priority (`ioprio_set(2)`): the class (real-time, best-effort, idle) and level the block
//! layer's mq-deadline (Linux >= 5.14: by class only) and bfq (class and level) schedulers honour, where the
//! cgroup weights are not honoured (v1 `blkio.weight` needs bfq; v2 `io.weight` needs bfq or iocost).
//!
//! A container's priority is set on every thread its cgroup lists (v1 `tasks`, v2 `cgroup.threads`): the
//! kernel keeps it per thread, and a thread or process created later by `fork`/`clone` inherits its parent's,
//! so the container's own descendants keep it. A process that joins the cgroup from outside later (an `exec`
//! into the container) keeps its own priority until the next sweep.

use std::io;
use std::path::{Path, PathBuf};

/// `IOPRIO_WHO_PROCESS`: `who` is one thread id.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The class sits above 13 bits of level/hint.
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// Levels of the real-time and best-effort classes: 0 (highest) ..= 7.
pub const MAX_LEVEL: u8 = 7;

/// An I/O scheduling class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoClass {
    /// `IOPRIO_CLASS_RT`: served before every other class.
    RealTime,
    /// `IOPRIO_CLASS_BE`: the default.
    BestEffort,
    /// `IOPRIO_CLASS_IDLE`: served when no other class has I/O queued (mq-deadline still ages it in after
    /// `prio_aging_expire`, 10 s by default).
    Idle,
}

impl IoClass {
    fn code(self) -> u16 {
        match self {
            Self::RealTime => 1,
            Self::BestEffort => 2,
            Self::Idle => 3,
        }
    }

    /// The name `ionice` and the docs use.
    pub fn name(self) -> &'static str {
        match self {
            Self::RealTime => "realtime",
            Self::BestEffort => "best-effort",
            Self::Idle => "idle",
        }
    }
}

/// A class and a level (0 = highest; the idle class has none and is encoded with 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoPriority {
    class: IoClass,
    level: u8,
}

/// Errors from setting I/O priorities.
#[derive(Debug, thiserror::Error)]
pub enum IoprioError {
    /// A level above [`MAX_LEVEL`].
    #[error("I/O priority level {level} is out of range 0..=7")]
    Level {
        /// The level asked for.
        level: u8,
    },
    /// The thread list could not be read.
    #[error("reading the thread list {path}")]
    Threads {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused `ioprio_set` for a live thread.
    #[error("ioprio_set({priority:?}) on thread {tid}")]
    Set {
        /// The thread.
        tid: i32,
        /// What was set.
        priority: IoPriority,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl IoPriority {
    /// A class and level; the level is ignored (0) for [`IoClass::Idle`].
    pub fn new(class: IoClass, level: u8) -> Result<Self, IoprioError> {
        if level > MAX_LEVEL {
            return Err(IoprioError::Level { level });
        }
        let level = if class == IoClass::Idle { 0 } else { level };
        Ok(Self { class, level })
    }

    /// The class.
    pub fn class(self) -> IoClass {
        self.class
    }

    /// The level.
    pub fn level(self) -> u8 {
        self.level
    }

    /// The kernel's encoding: class << 13 | level.
    pub fn encode(self) -> u16 {
        (self.class.code() << IOPRIO_CLASS_SHIFT) | u16::from(self.level)
    }

    /// From the kernel's encoding; `None` for class 0 (none set: best-effort derived from the CPU nice value).
    pub fn decode(value: u16) -> Option<Self> {
        let level = (value & 0x7) as u8;
        let class = match value >> IOPRIO_CLASS_SHIFT {
            1 => IoClass::RealTime,
            2 => IoClass::BestEffort,
            3 => IoClass::Idle,
            _ => return None,
        };
        Some(Self { class, level })
    }
}

impl std::fmt::Display for IoPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.class {
            IoClass::Idle => f.write_str("idle"),
            c => write!(f, "{}/{}", c.name(), self.level),
        }
    }
}

/// Sets one thread's priority.
pub fn set_thread(tid: i32, priority: IoPriority) -> io::Result<()> {
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            libc::c_int::from(priority.encode()),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One thread's priority; `None` when it has none set.
pub fn get_thread(tid: i32) -> io::Result<Option<IoPriority>> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u16::try_from(rc).ok().and_then(IoPriority::decode))
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Threads set.
    pub set: usize,
    /// Threads listed that exited before they could be set.
    pub gone: usize,
}

/// The thread ids a cgroup file lists (one per line; malformed lines skipped).
pub fn read_threads(file: &Path) -> Result<Vec<i32>, IoprioError> {
    let text = std::fs::read_to_string(file).map_err(|source| IoprioError::Threads {
        path: file.to_owned(),
        source,
    })?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Sets `priority` on every thread `threads_file` lists with `set`; a thread that exited meanwhile (`ESRCH`)
/// is counted, not an error.
pub fn sweep_with(
    threads_file: &Path,
    priority: IoPriority,
    mut set: impl FnMut(i32, IoPriority) -> io::Result<()>,
) -> Result<Sweep, IoprioError> {
    let mut out = Sweep::default();
    for tid in read_threads(threads_file)? {
        match set(tid, priority) {
            Ok(()) => out.set += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => out.gone += 1,
            Err(source) => {
                return Err(IoprioError::Set {
                    tid,
                    priority,
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// [`sweep_with`] through the real syscall.
pub fn sweep(threads_file: &Path, priority: IoPriority) -> Result<Sweep, IoprioError> {
    sweep_with(threads_file, priority, set_thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_the_kernels() {
        let be = IoPriority::new(IoClass::BestEffort, 4).expect("level");
        assert_eq!(be.encode(), (2 << 13) | 4);
        assert_eq!(IoPriority::decode(be.encode()), Some(be));
        let idle = IoPriority::new(IoClass::Idle, 5).expect("level");
        assert_eq!(idle.encode(), 3 << 13);
        assert_eq!(idle.to_string(), "idle");
        assert_eq!(be.to_string(), "best-effort/4");
        assert_eq!(IoPriority::decode(0), None);
        assert!(matches!(
            IoPriority::new(IoClass::RealTime, 8),
            Err(IoprioError::Level { level: 8 })
        ));
    }

    #[test]
    fn a_sweep_sets_every_listed_thread_and_counts_the_exited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tasks");
        std::fs::write(&file, "10\n11\n12\nbogus\n").expect("fixture");
        let prio = IoPriority::new(IoClass::Idle, 0).expect("level");
        let mut seen = Vec::new();
        let sweep = sweep_with(&file, prio, |tid, p| {
            seen.push((tid, p));
            if tid == 11 {
                Err(io::Error::from_raw_os_error(libc::ESRCH))
            } else {
                Ok(())
            }
        })
        .expect("sweep");
        assert_eq!(sweep, Sweep { set: 2, gone: 1 });
        assert_eq!(seen.len(), 3);
        let err = sweep_with(&file, prio, |_, _| {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        })
        .expect_err("EPERM is an error");
        assert!(err.to_string().contains("thread 10"), "{err}");
        let missing = sweep_with(&dir.path().join("absent"), prio, |_, _| Ok(()));
        assert!(matches!(missing, Err(IoprioError::Threads { .. })));
    }

    /// Our own thread (no root needed to lower one's own priority to idle, and back to best-effort).
    #[test]
    fn the_syscall_round_trips_on_this_thread() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let before = get_thread(tid).expect("ioprio_get");
        let be = IoPriority::new(IoClass::BestEffort, 6).expect("level");
        set_thread(tid, be).expect("ioprio_set");
        assert_eq!(get_thread(tid).expect("ioprio_get"), Some(be));
        let restore = before.unwrap_or(IoPriority::new(IoClass::BestEffort, 4).expect("level"));
        set_thread(tid, restore).expect("restore");
    }
}
