//! v2 `memory`: `memory.current`, `memory.peak`, `memory.max`, `memory.stat`, `memory.events`;
//! writes `memory.max` and `memory.high`.
//!
//! Limit: cgroup v2 cannot disable the OOM killer; a `memory.max` below usage makes the kernel reclaim
//! and then OOM-kill, which is why the library refuses it by default.

use std::path::Path;

use crate::actuate::{self, ActuateError, MemoryLimitPolicy};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Memory;

impl Controller for Memory {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        let m = &mut sample.memory;
        m.usage_bytes = files.u64(&dir.join("memory.current"));
        m.peak_bytes = files.u64(&dir.join("memory.peak"));
        m.limit_bytes = files
            .read(&dir.join("memory.max"))
            .and_then(parse::limit_value)
            .flatten();
        if let Some(stat) = files.read(&dir.join("memory.stat")) {
            let [anon, file, inactive_file] =
                parse::keyed_many(stat, ["anon", "file", "inactive_file"]);
            m.rss_bytes = anon;
            m.cache_bytes = file;
            m.working_set_bytes = m
                .usage_bytes
                .zip(inactive_file)
                .map(|(u, i)| u.saturating_sub(i));
        }
        if let Some(events) = files.read(&dir.join("memory.events")) {
            m.limit_hits = parse::keyed_u64(events, "max");
            m.oom_events = parse::keyed_u64(events, "oom");
            m.oom_kills = parse::keyed_u64(events, "oom_kill");
        }
    }
}

fn write_limit(file: &Path, value: Option<u64>) -> Result<(), ActuateError> {
    match value {
        Some(bytes) => actuate::write_verified(file, &bytes.to_string(), |back| {
            back.parse::<u64>()
                .is_ok_and(|b| actuate::memory_matches(bytes, b))
        }),
        None => actuate::write_str_exact(file, "max"),
    }
}

impl Memory {
    pub(crate) fn set_limit(
        dir: &Path,
        value: Option<u64>,
        policy: MemoryLimitPolicy,
    ) -> Result<(), ActuateError> {
        let file = dir.join("memory.max");
        if let (Some(bytes), MemoryLimitPolicy::RefuseBelowUsage) = (value, policy) {
            actuate::refuse_below_usage(&file, &dir.join("memory.current"), bytes)?;
        }
        write_limit(&file, value)
    }

    pub(crate) fn set_high(dir: &Path, value: Option<u64>) -> Result<(), ActuateError> {
        write_limit(&dir.join("memory.high"), value)
    }
}
