//! v1 `memory`: usage, peak, limit, failcnt, `memory.stat`, `memory.oom_control`; writes the hard limit
//! (keeping `memory.memsw.limit_in_bytes` at least as high), the soft limit and `oom_kill_disable`.

use std::path::Path;

use crate::actuate::{self, ActuateError, MemoryLimitPolicy};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Memory;

/// v1 reports "unlimited" as PAGE_COUNTER_MAX pages (9223372036854771712 on x86-64): anything this big.
const UNLIMITED_FLOOR: u64 = 1 << 62;

fn limit(value: Option<u64>) -> Option<u64> {
    value.filter(|v| *v < UNLIMITED_FLOOR)
}

impl Controller for Memory {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        let m = &mut sample.memory;
        m.usage_bytes = files.u64(&dir.join("memory.usage_in_bytes"));
        m.peak_bytes = files.u64(&dir.join("memory.max_usage_in_bytes"));
        m.limit_bytes = limit(files.u64(&dir.join("memory.limit_in_bytes")));
        m.limit_hits = files.u64(&dir.join("memory.failcnt"));
        if let Some(stat) = files.read(&dir.join("memory.stat")) {
            // total_* are hierarchical (include child cgroups); older kernels only have the local ones.
            let [total_rss, rss, total_cache, cache, total_inactive, inactive] = parse::keyed_many(
                stat,
                [
                    "total_rss",
                    "rss",
                    "total_cache",
                    "cache",
                    "total_inactive_file",
                    "inactive_file",
                ],
            );
            m.rss_bytes = total_rss.or(rss);
            m.cache_bytes = total_cache.or(cache);
            m.working_set_bytes = m
                .usage_bytes
                .zip(total_inactive.or(inactive))
                .map(|(u, i)| u.saturating_sub(i));
        }
        if let Some(oom) = files.read(&dir.join("memory.oom_control")) {
            m.oom_kills = parse::keyed_u64(oom, "oom_kill");
            m.under_oom = parse::keyed_u64(oom, "under_oom").map(|v| v != 0);
        }
    }
}

fn write_limit(file: &Path, value: Option<u64>) -> Result<(), ActuateError> {
    match value {
        Some(bytes) => actuate::write_verified(file, &bytes.to_string(), |back| {
            back.parse::<u64>()
                .is_ok_and(|b| actuate::memory_matches(bytes, b))
        }),
        None => actuate::write_verified(file, "-1", |back| {
            back.parse::<u64>().is_ok_and(|b| b >= UNLIMITED_FLOOR)
        }),
    }
}

impl Memory {
    pub(crate) fn set_limit(
        dir: &Path,
        value: Option<u64>,
        policy: MemoryLimitPolicy,
    ) -> Result<(), ActuateError> {
        let file = dir.join("memory.limit_in_bytes");
        if let (Some(bytes), MemoryLimitPolicy::RefuseBelowUsage) = (value, policy) {
            actuate::refuse_below_usage(&file, &dir.join("memory.usage_in_bytes"), bytes)?;
        }
        // memory+swap must stay >= memory: raise it first when the new limit would exceed it.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if let Some(current) = parse::u64_file(&memsw) {
            let wanted = value.unwrap_or(u64::MAX);
            if current < UNLIMITED_FLOOR && current < wanted {
                write_limit(&memsw, value)?;
            }
        }
        write_limit(&file, value)
    }

    pub(crate) fn set_soft_limit(dir: &Path, value: Option<u64>) -> Result<(), ActuateError> {
        write_limit(&dir.join("memory.soft_limit_in_bytes"), value)
    }

    pub(crate) fn set_oom_kill_disabled(dir: &Path, disabled: bool) -> Result<(), ActuateError> {
        let want = u64::from(disabled);
        actuate::write_verified(&dir.join("memory.oom_control"), &want.to_string(), |back| {
            parse::keyed_u64(back, "oom_kill_disable") == Some(want)
        })
    }
}
