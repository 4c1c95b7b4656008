//! v2 freezer: `cgroup.freeze` (the request) and `frozen` in `cgroup.events` (the outcome).

use std::path::Path;
use std::time::Duration;

use crate::actuate::{self, ActuateError};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Freezer;

impl Controller for Freezer {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        sample.frozen = files
            .read(&dir.join("cgroup.events"))
            .and_then(|t| parse::keyed_u64(t, "frozen"))
            .map(|v| v != 0);
    }
}

impl Freezer {
    pub(crate) fn set(dir: &Path, frozen: bool, timeout: Duration) -> Result<(), ActuateError> {
        let want = if frozen { "1" } else { "0" };
        actuate::write_str_exact(&dir.join("cgroup.freeze"), want)?;
        let state = if frozen { "frozen" } else { "thawed" };
        let result = actuate::wait_for(&dir.join("cgroup.events"), state, timeout, |events| {
            parse::keyed(events, "frozen") == Some(want)
        });
        if frozen && result.is_err() {
            // Best effort: do not leave a freeze pending; the timeout is the error to report.
            let _ = actuate::write(&dir.join("cgroup.freeze"), "0");
        }
        result
    }
}
