//! v2 `cpu`: `cpu.stat` (usage and throttling), `cpu.max`, `cpu.max.burst`, `cpu.weight`.

use std::path::Path;

use crate::actuate::{self, ActuateError, CpuLimit};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Cpu;

fn usec_to_ns(v: u64) -> u64 {
    v.saturating_mul(1000)
}

/// `usage_usec` of `cpu.stat` in nanoseconds (present even without the cpu controller).
pub(crate) fn usage_ns(files: &mut Files, dir: &Path) -> Option<u64> {
    parse::keyed_u64(files.read(&dir.join("cpu.stat"))?, "usage_usec").map(usec_to_ns)
}

impl Controller for Cpu {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        let Some(stat) = files.read(&dir.join("cpu.stat")) else {
            return;
        };
        sample.cpu.usage_ns = parse::keyed_u64(stat, "usage_usec").map(usec_to_ns);
        sample.cpu.nr_periods = parse::keyed_u64(stat, "nr_periods");
        sample.cpu.nr_throttled = parse::keyed_u64(stat, "nr_throttled");
        sample.cpu.throttled_ns = parse::keyed_u64(stat, "throttled_usec").map(usec_to_ns);
    }
}

impl Cpu {
    pub(crate) fn set_limit(dir: &Path, limit: &CpuLimit) -> Result<(), ActuateError> {
        let burst_file = dir.join("cpu.max.burst");
        if let Some(burst) = limit.burst_us {
            if !burst_file.is_file() {
                return Err(ActuateError::Unsupported {
                    what: "cpu burst (cpu.max.burst)",
                    version: "v2",
                });
            }
            // The kernel refuses a quota below the current burst: clear the burst first.
            let current = parse::u64_file(&burst_file).unwrap_or(0);
            if current > 0 && current > burst {
                actuate::write_u64_exact(&burst_file, 0)?;
            }
        }
        let quota = limit
            .quota_us
            .map_or_else(|| "max".to_owned(), |q| q.to_string());
        let value = format!("{quota} {}", limit.period_us);
        actuate::write_str_exact(&dir.join("cpu.max"), &value)?;
        if let Some(burst) = limit.burst_us {
            actuate::write_u64_exact(&burst_file, burst)?;
        }
        Ok(())
    }

    pub(crate) fn set_weight(dir: &Path, weight: u64) -> Result<(), ActuateError> {
        actuate::write_u64_exact(&dir.join("cpu.weight"), weight)
    }
}
