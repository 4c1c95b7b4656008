//! The run-history export file: what `predictivectl export` writes and `predictived --import` (the broker's
//! `transfer` module) reads — one JSON object,
//! `{"format":"predictive-history","version":2,"node_id":"<16 hex>","exported_at_ms":..,"runs":[ExportedRun..]}`.
//! The file's checks on import (sizes, ranges, task keys) live with the reader, in the broker.
//!
//! Versions: 1 has no network rates; 2 adds a run's optional `net` object. A writer says 2 only when some run
//! carries `net` ([`version_for`]), so a file without network rates stays readable by a node that reads only
//! version 1 (a cluster part-way through an upgrade).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::wire::{ExportCursor, ExportPage, ExportedRun};

/// The `format` field of an export file.
pub const FORMAT: &str = "predictive-history";
/// The newest file version this build writes and reads.
pub const FILE_VERSION: u64 = 2;
/// The oldest file version this build reads.
pub const OLDEST_FILE_VERSION: u64 = 1;

/// The version a file holding `runs` is written as: [`FILE_VERSION`] when a run carries network rates, else 1,
/// which an older reader accepts.
pub fn version_for(runs: &[ExportedRun]) -> u64 {
    if runs.iter().any(|r| r.net.is_some()) {
        FILE_VERSION
    } else {
        OLDEST_FILE_VERSION
    }
}

/// Every page of a broker's `export`, as an export file written at `exported_at_ms`: `page` asks for the page
/// after a cursor (none: the first) and is called until a page says there is no next one (or holds no run).
pub fn collect<E>(
    exported_at_ms: u64,
    mut page: impl FnMut(Option<ExportCursor>) -> Result<ExportPage, E>,
) -> Result<HistoryFile, E> {
    let mut runs = Vec::new();
    let mut after = None;
    loop {
        let p = page(after.take())?;
        let empty = p.runs.is_empty();
        runs.extend(p.runs);
        match p.next {
            Some(n) if !empty => after = Some(n),
            _ => {
                return Ok(HistoryFile {
                    format: FORMAT.to_owned(),
                    version: version_for(&runs),
                    node_id: p.node_id,
                    exported_at_ms,
                    runs,
                });
            }
        }
    }
}

/// An export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFile {
    /// [`FORMAT`].
    pub format: String,
    /// [`version_for`] its runs.
    pub version: u64,
    /// The exporting broker's node id (16 hex digits).
    pub node_id: String,
    /// When it was written, ms since the epoch.
    pub exported_at_ms: u64,
    /// The runs.
    pub runs: Vec<ExportedRun>,
}

/// Writes an export file atomically (temporary file in the same directory, fsync, rename), mode 0644 under the
/// usual umask. The temporary file's name starts with a dot, so a watched import directory skips it until the
/// rename.
pub fn write_file(path: &Path, file: &HistoryFile) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, file).map_err(std::io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.json");
        let file = HistoryFile {
            format: FORMAT.to_owned(),
            version: FILE_VERSION,
            node_id: "00000000000000aa".to_owned(),
            exported_at_ms: 1,
            runs: Vec::new(),
        };
        write_file(&path, &file).expect("write");
        let back: HistoryFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back, file);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("h.json")]);
        assert!(write_file(&dir.path().join("no/such/dir/h.json"), &file).is_err());
    }
}
