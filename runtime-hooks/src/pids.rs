//! `pids` (same files on v1 and v2): `pids.current`, `pids.max`.

use std::path::Path;

use crate::actuate::{self, ActuateError};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Pids;

impl Controller for Pids {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        sample.pids.current = files.u64(&dir.join("pids.current"));
        sample.pids.limit = files
            .read(&dir.join("pids.max"))
            .and_then(parse::limit_value)
            .flatten();
    }
}

impl Pids {
    pub(crate) fn set_limit(dir: &Path, limit: Option<u64>) -> Result<(), ActuateError> {
        let value = limit.map_or_else(|| "max".to_owned(), |n| n.to_string());
        actuate::write_verified(&dir.join("pids.max"), &value, |back| {
            parse::limit_value(back) == Some(limit)
        })
    }
}
