//! v1 `freezer`: `freezer.state` (`THAWED`, `FREEZING`, `FROZEN`).
//!
//! A freeze can stay in `FREEZING` while a task sleeps uninterruptibly; after the timeout the cgroup is
//! thawed again (never left half-frozen) and [`ActuateError::Timeout`] is returned.

use std::path::Path;
use std::time::Duration;

use crate::actuate::{self, ActuateError};
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Freezer;

impl Controller for Freezer {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        sample.frozen = files
            .read(&dir.join("freezer.state"))
            .and_then(|s| match s.trim() {
                "FROZEN" => Some(true),
                "THAWED" | "FREEZING" => Some(false),
                _ => None,
            });
    }
}

impl Freezer {
    pub(crate) fn set(dir: &Path, frozen: bool, timeout: Duration) -> Result<(), ActuateError> {
        let file = dir.join("freezer.state");
        let state = if frozen { "FROZEN" } else { "THAWED" };
        actuate::write(&file, state)?;
        let result = actuate::wait_for(&file, state, timeout, |s| s == state);
        if frozen && result.is_err() {
            // Best effort: do not leave tasks stuck in FREEZING; the timeout is the error to report.
            let _ = actuate::write(&file, "THAWED");
        }
        result
    }
}
