//! v1 `blkio`: bytes and operations from the throttle layer's counters (present whatever the IO
//! scheduler), falling back to the CFQ/BFQ ones; `blkio.weight` or `blkio.bfq.weight`.
//!
//! Limit: the weight only matters under CFQ or BFQ; with other schedulers neither file exists and
//! [`ActuateError::Unsupported`] is returned.

use std::path::Path;

use crate::actuate::{self, ActuateError};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Blkio;

/// Sums `MAJ:MIN Read N` / `MAJ:MIN Write N` lines; `Total` lines and malformed lines are skipped.
pub(crate) fn read_write_totals(text: &str) -> Option<(u64, u64)> {
    let (mut read, mut write, mut any) = (0u64, 0u64, false);
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_dev), Some(op), Some(value)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => continue,
        }
        any = true;
    }
    // An idle cgroup has only "Total 0": report zeros, not absence.
    (any || text.lines().any(|l| l.starts_with("Total"))).then_some((read, write))
}

fn first_present(files: &mut Files, dir: &Path, names: &[&str]) -> Option<(u64, u64)> {
    names
        .iter()
        .find_map(|name| files.read(&dir.join(name)).and_then(read_write_totals))
}

impl Controller for Blkio {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        if let Some((r, w)) = first_present(
            files,
            dir,
            &[
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
                "blkio.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
            ],
        ) {
            sample.io.read_bytes = Some(r);
            sample.io.write_bytes = Some(w);
        }
        if let Some((r, w)) = first_present(
            files,
            dir,
            &[
                "blkio.throttle.io_serviced_recursive",
                "blkio.throttle.io_serviced",
                "blkio.io_serviced_recursive",
                "blkio.bfq.io_serviced_recursive",
            ],
        ) {
            sample.io.read_ops = Some(r);
            sample.io.write_ops = Some(w);
        }
    }
}

impl Blkio {
    pub(crate) fn set_weight(dir: &Path, weight: u16) -> Result<(), ActuateError> {
        let file = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .map(|n| dir.join(n))
            .find(|f| f.is_file())
            .ok_or(ActuateError::Unsupported {
                what: "io weight without CFQ or BFQ",
                version: "v1",
            })?;
        let want = u64::from(weight);
        // BFQ may print "default N" (and per-device lines); CFQ prints N.
        actuate::write_verified(&file, &weight.to_string(), |back| {
            parse::u64_value(back) == Some(want) || parse::keyed_u64(back, "default") == Some(want)
        })
    }
}
