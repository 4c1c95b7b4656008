//! v1 `cpu`: CFS bandwidth (`cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpu.cfs_burst_us`), `cpu.shares`
//! and throttling counters (`cpu.stat`).

use std::path::Path;

use crate::actuate::{self, ActuateError, CpuLimit};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Cpu;

impl Controller for Cpu {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        let Some(stat) = files.read(&dir.join("cpu.stat")) else {
            return;
        };
        sample.cpu.nr_periods = parse::keyed_u64(stat, "nr_periods");
        sample.cpu.nr_throttled = parse::keyed_u64(stat, "nr_throttled");
        sample.cpu.throttled_ns = parse::keyed_u64(stat, "throttled_time");
    }
}

impl Cpu {
    pub(crate) fn set_limit(dir: &Path, limit: &CpuLimit) -> Result<(), ActuateError> {
        let burst_file = dir.join("cpu.cfs_burst_us");
        if let Some(burst) = limit.burst_us {
            if !burst_file.is_file() {
                return Err(ActuateError::Unsupported {
                    what: "cpu burst (cpu.cfs_burst_us)",
                    version: "v1",
                });
            }
            // The kernel refuses a quota below the current burst: clear the burst first.
            let current = parse::u64_file(&burst_file).unwrap_or(0);
            if current > 0 && current > burst {
                actuate::write_u64_exact(&burst_file, 0)?;
            }
        }
        actuate::write_u64_exact(&dir.join("cpu.cfs_period_us"), limit.period_us)?;
        let quota = match limit.quota_us {
            Some(q) => i64::try_from(q).map_err(|_| ActuateError::OutOfRange {
                what: "cpu quota (us)",
                value: q,
                range: "1000..=i64::MAX",
            })?,
            None => -1,
        };
        actuate::write_verified(&dir.join("cpu.cfs_quota_us"), &quota.to_string(), |back| {
            back.parse::<i64>().ok() == Some(quota)
        })?;
        if let Some(burst) = limit.burst_us {
            actuate::write_u64_exact(&burst_file, burst)?;
        }
        Ok(())
    }

    pub(crate) fn set_shares(dir: &Path, shares: u64) -> Result<(), ActuateError> {
        actuate::write_u64_exact(&dir.join("cpu.shares"), shares)
    }
}
