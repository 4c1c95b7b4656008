//! Writing cgroup files with read-back, and the typed errors of every actuation.
//!
//! Each write is one `write(2)` of the whole value (cgroupfs parses a value per write), followed by a read
//! of the same file and a check that the kernel kept what was asked (allowing for its own rounding, such
//! as memory limits rounded down to a page). `EINVAL` and `EBUSY` get their own variants so a caller can
//! tell "the kernel refuses this value" from "the kernel could not reclaim enough to honour it yet".
//!
//! The request types ([`CpuLimit`], [`MemoryLimitPolicy`]) use OCI units: microseconds for CPU bandwidth,
//! cgroup v1 shares (2..=262144) for CPU weight and v1 blkio weight (10..=1000) for IO weight, converted
//! for cgroup v2 with the formulas runc and crun use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors from changing a limit or freezing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// The kernel rejected the value (`EINVAL`): out of range for this kernel or inconsistent with a parent.
    #[error("kernel rejected {value:?} for {path} (EINVAL)")]
    Invalid {
        /// The file written.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The error returned by write(2).
        #[source]
        source: std::io::Error,
    },
    /// The kernel could not apply the value now (`EBUSY`), e.g. a v1 memory limit below what it could reclaim.
    #[error("kernel busy applying {value:?} to {path} (EBUSY)")]
    Busy {
        /// The file written.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The error returned by write(2).
        #[source]
        source: std::io::Error,
    },
    /// Any other failure to write.
    #[error("writing {value:?} to {path}")]
    Write {
        /// The file written.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file back (or a usage figure needed for a check) failed.
    #[error("reading {path}")]
    Read {
        /// The file read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold what was written.
    #[error("{path} reads back {read:?} after writing {value:?}")]
    Mismatch {
        /// The file written.
        path: PathBuf,
        /// The value written.
        value: String,
        /// What the file holds now.
        read: String,
    },
    /// A memory limit below current usage was asked without [`MemoryLimitPolicy::AllowBelowUsage`].
    #[error(
        "refusing memory limit {limit} for {path}: current usage is {usage} bytes; lowering below usage forces \
         reclaim or OOM kills, so the caller must opt in with MemoryLimitPolicy::AllowBelowUsage"
    )]
    BelowUsage {
        /// The limit file.
        path: PathBuf,
        /// The limit asked for.
        limit: u64,
        /// Usage when asked.
        usage: u64,
    },
    /// The value is outside what the interface accepts.
    #[error("{what} {value} is outside {range}")]
    OutOfRange {
        /// What was being set.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range.
        range: &'static str,
    },
    /// A resource names no file this crate may write (a `unified` key, a hugepage size) or combines values the
    /// kernel would refuse (swap below memory).
    #[error("{key:?}: {reason}")]
    BadKey {
        /// The key or value as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The cgroup has no directory for the controller this needs.
    #[error("no {controller} controller directory for this cgroup")]
    NoController {
        /// The controller.
        controller: &'static str,
    },
    /// The cgroup version (or this kernel) has no such knob.
    #[error("{what} is not available on cgroup {version}")]
    Unsupported {
        /// The knob.
        what: &'static str,
        /// `v1` or `v2`.
        version: &'static str,
    },
    /// A freeze or thaw did not complete in time.
    #[error("{path} did not reach {state} within {waited:?}")]
    Timeout {
        /// The state file polled.
        path: PathBuf,
        /// The state waited for.
        state: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// Setting the threads' I/O priority failed.
    #[error("setting the I/O priority of the cgroup's threads")]
    Ioprio(#[from] crate::ioprio::IoprioError),
}

/// CPU bandwidth: `quota_us` of CPU time per `period_us` (OCI `cpu.quota` / `cpu.period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimit {
    /// CPU time per period in microseconds; `None` removes the limit.
    pub quota_us: Option<u64>,
    /// Period in microseconds (1000..=1000000).
    pub period_us: u64,
    /// Unused quota that may accumulate across periods (`cpu.cfs_burst_us` / `cpu.max.burst`, Linux >= 5.14);
    /// `None` leaves it as it is.
    pub burst_us: Option<u64>,
}

impl CpuLimit {
    /// `cores` worth of CPU with the default 100 ms period.
    pub fn cores(cores: f64) -> Self {
        let period_us = 100_000;
        // Quota has a floor of 1 ms in the kernel.
        let quota = (cores.max(0.0) * period_us as f64).round().max(1000.0) as u64;
        Self {
            quota_us: Some(quota),
            period_us,
            burst_us: None,
        }
    }

    /// No CPU bandwidth limit.
    pub fn unlimited() -> Self {
        Self {
            quota_us: None,
            period_us: 100_000,
            burst_us: None,
        }
    }
}

/// What to do when a new memory limit is below current usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryLimitPolicy {
    /// Refuse with [`ActuateError::BelowUsage`] (the default).
    #[default]
    RefuseBelowUsage,
    /// Write it anyway: the kernel reclaims, answers EBUSY (v1) or OOM-kills (v2).
    AllowBelowUsage,
}

/// OCI shares (2..=262144) to cgroup v2 `cpu.weight` (1..=10000), as current runc converts them: the quadratic
/// in log2(shares) of opencontainers/cgroups' `ConvertCPUSharesToCgroupV2Value` (commit fd95216, cgroups v0.0.4, in
/// runc since 1.3.2), which maps the minimum, the default and the maximum onto each other (2 -> 1, 1024 -> 100,
/// 262144 -> 10000). The linear formula runc used before (`1 + (shares - 2) * 9999 / 262142`) turned the default
/// 1024 into 39, so a container with a 1-CPU request weighed 2.5x less than one with no weight at all
/// (kubernetes#131216). Out-of-range shares are clamped, as runc does; 0 ("unset") is the caller's to skip.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// OCI blkio weight (10..=1000) to cgroup v2 `io.weight` (1..=10000), as crun converts.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

fn write_error(path: &Path, value: &str, source: std::io::Error) -> ActuateError {
    let (path, value) = (path.to_owned(), value.to_owned());
    match source.raw_os_error() {
        Some(libc::EINVAL) => ActuateError::Invalid {
            path,
            value,
            source,
        },
        Some(libc::EBUSY) => ActuateError::Busy {
            path,
            value,
            source,
        },
        _ => ActuateError::Write {
            path,
            value,
            source,
        },
    }
}

/// Opens `path` (read-write when `readable`) and writes `value` in a single write(2).
fn open_and_write(path: &Path, value: &str, readable: bool) -> Result<std::fs::File, ActuateError> {
    let mut file = std::fs::OpenOptions::new()
        .read(readable)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| write_error(path, value, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| write_error(path, value, e))?;
    Ok(file)
}

/// Writes `value` to `path` in a single write(2), mapping EINVAL and EBUSY to their own variants.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), ActuateError> {
    open_and_write(path, value, false).map(drop)
}

/// Reads a file for a read-back or a check.
pub(crate) fn read(path: &Path) -> Result<String, ActuateError> {
    std::fs::read_to_string(path).map_err(|source| ActuateError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes, reads back and checks with `ok(read_back_trimmed)`.
///
/// The read-back goes through the same descriptor (`pread` from offset 0; cgroupfs regenerates the
/// content), which saves a second open: opening is most of the cost of a cgroup file access.
pub(crate) fn write_verified(
    path: &Path,
    value: &str,
    ok: impl FnOnce(&str) -> bool,
) -> Result<(), ActuateError> {
    use std::os::unix::fs::FileExt;
    let file = match open_and_write(path, value, true) {
        Ok(file) => file,
        // A write-only file: write it, then read back through a fresh open (which will say why).
        Err(ActuateError::Write { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            write(path, value)?;
            std::fs::File::open(path).map_err(|source| ActuateError::Read {
                path: path.to_owned(),
                source,
            })?
        }
        Err(e) => return Err(e),
    };
    let mut buf = [0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ActuateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    let back = String::from_utf8_lossy(&buf[..len]);
    let back = back.trim();
    if ok(back) {
        Ok(())
    } else {
        Err(ActuateError::Mismatch {
            path: path.to_owned(),
            value: value.to_owned(),
            read: back.to_owned(),
        })
    }
}

/// Writes a number and expects the same number back.
pub(crate) fn write_u64_exact(path: &Path, value: u64) -> Result<(), ActuateError> {
    write_verified(path, &value.to_string(), |back| {
        back.parse::<u64>().ok() == Some(value)
    })
}

/// Writes a value and expects the same text back.
pub(crate) fn write_str_exact(path: &Path, value: &str) -> Result<(), ActuateError> {
    write_verified(path, value, |back| back == value)
}

/// The kernel rounds memory limits down to a page; accept anything within one page below.
pub(crate) fn memory_matches(asked: u64, back: u64) -> bool {
    let page = page_size();
    back <= asked && asked - back < page
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// Polls `path` until `done(content)` or `timeout`.
pub(crate) fn wait_for(
    path: &Path,
    state: &'static str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<(), ActuateError> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if done(read(path)?.trim()) {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(ActuateError::Timeout {
                path: path.to_owned(),
                state,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Refuses a memory limit of `bytes` for `file` when it is below the usage in `usage_file`:
/// lowering a limit under usage makes the kernel reclaim or OOM-kill, which the caller must opt into.
pub(crate) fn refuse_below_usage(
    file: &Path,
    usage_file: &Path,
    bytes: u64,
) -> Result<(), ActuateError> {
    let text = read(usage_file)?;
    let usage = text
        .trim()
        .parse::<u64>()
        .map_err(|_| ActuateError::Mismatch {
            path: usage_file.to_path_buf(),
            value: "a byte count".to_owned(),
            read: text.trim().to_owned(),
        })?;
    if bytes < usage {
        return Err(ActuateError::BelowUsage {
            path: file.to_path_buf(),
            limit: bytes,
            usage,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(CpuLimit::cores(0.5).quota_us, Some(50_000));
        assert_eq!(CpuLimit::cores(0.0).quota_us, Some(1000));
        assert_eq!(CpuLimit::cores(f64::NAN).quota_us, Some(1000));
    }

    /// opencontainers/cgroups' own table for `ConvertCPUSharesToCgroupV2Value` (utils_test.go), 0 ("unset")
    /// aside: minimum, default and maximum map onto each other, out-of-range values are clamped.
    #[test]
    fn shares_convert_to_weight_as_current_runc_does() {
        for (shares, weight) in [
            (1, 1),
            (2, 1),
            (3, 2),
            (1024, 100),
            (262_143, 10_000),
            (262_144, 10_000),
            (262_145, 10_000),
            (u64::MAX, 10_000),
        ] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
        // Kubernetes' 2-CPU and 100m requests: above and below the default, never the linear formula's values.
        assert!(shares_to_weight(2048) > 100 && shares_to_weight(102) < 100);
        assert_ne!(shares_to_weight(2048), 1 + (2048 - 2) * 9999 / 262_142);
        let mut last = 0;
        for shares in (2..=262_144).step_by(97) {
            let w = shares_to_weight(shares);
            assert!(w >= last && (1..=10_000).contains(&w), "{shares} -> {w}");
            last = w;
        }
    }

    #[test]
    fn memory_rounding() {
        let page = page_size();
        assert!(memory_matches(10 * page, 10 * page));
        assert!(memory_matches(10 * page + 5, 10 * page));
        assert!(!memory_matches(10 * page, 9 * page));
        assert!(!memory_matches(10 * page, 11 * page));
    }

    #[test]
    fn write_and_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("knob");
        std::fs::write(&file, "long old value\n").expect("seed");
        write_u64_exact(&file, 5).expect("written and read back");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "5");
        let err = write_verified(&file, "7", |_| false).expect_err("mismatch");
        assert!(matches!(err, ActuateError::Mismatch { ref read, .. } if read == "7"));
        let missing = dir.path().join("missing-dir/knob");
        assert!(matches!(
            write(&missing, "1"),
            Err(ActuateError::Write { .. })
        ));
        assert!(matches!(read(&missing), Err(ActuateError::Read { .. })));
        let err =
            wait_for(&file, "never", Duration::from_millis(20), |_| false).expect_err("timeout");
        assert!(matches!(err, ActuateError::Timeout { .. }));
    }
}
