//! v2 `io`: `io.stat` totals and `io.weight` (or `io.bfq.weight` when only BFQ offers one).

use std::path::Path;

use crate::actuate::{self, ActuateError};
use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Io;

/// Sums `rbytes`, `wbytes`, `rios`, `wios` over the devices of `io.stat`.
pub(crate) fn totals(text: &str) -> [u64; 4] {
    let mut sums = [0u64; 4];
    for line in text.lines() {
        for kv in line.split_ascii_whitespace().skip(1) {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let slot = match key {
                "rbytes" => 0,
                "wbytes" => 1,
                "rios" => 2,
                "wios" => 3,
                _ => continue,
            };
            if let Ok(v) = value.parse::<u64>() {
                sums[slot] = sums[slot].saturating_add(v);
            }
        }
    }
    sums
}

impl Controller for Io {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        // An empty io.stat is a cgroup that has done no IO yet: zeros.
        let Some(text) = files.read(&dir.join("io.stat")) else {
            return;
        };
        let [rb, wb, ri, wi] = totals(text);
        sample.io.read_bytes = Some(rb);
        sample.io.write_bytes = Some(wb);
        sample.io.read_ops = Some(ri);
        sample.io.write_ops = Some(wi);
    }
}

impl Io {
    pub(crate) fn set_weight(dir: &Path, weight: u64) -> Result<(), ActuateError> {
        let file = ["io.weight", "io.bfq.weight"]
            .iter()
            .map(|n| dir.join(n))
            .find(|f| f.is_file())
            .ok_or(ActuateError::Unsupported {
                what: "io weight (io controller not enabled)",
                version: "v2",
            })?;
        actuate::write_verified(&file, &format!("default {weight}"), |back| {
            parse::keyed_u64(back, "default") == Some(weight)
        })
    }
}
