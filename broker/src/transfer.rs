//! Learning that travels between nodes: a broker's run history written to a versioned file
//! (`predictivectl export`, from [`export_page`] over the socket) and merged into another broker's store
//! (`predictived --import FILE`, `[import] files`, or a watched directory `[import] dir`).
//!
//! The file (format [`FORMAT`], versions [`OLDEST_FILE_VERSION`] to [`FILE_VERSION`], defined in
//! `predictive_api::history_file`) is one JSON object:
//! `{"format":"predictive-history","version":2,"node_id":"<16 hex>","exported_at_ms":..,"runs":[ExportedRun..]}`
//! ([`crate::api::ExportedRun`]: identity, task type, what was known at start without the command, outcome, profile,
//! and from version 2 the network rates). A file without network rates is written as version 1, which a node that
//! reads only version 1 accepts.
//!
//! Merge semantics: a run is identified by (node id of the broker that recorded it, its run id there); a run already
//! imported, or one that originated on the importing node, is skipped ([`predictor::Store::import_runs`]), so
//! importing a file twice, or files that went round through other nodes, never counts a run twice. The task types
//! that received runs are refitted at once ([`predictor::Predictor::import_runs`]): the next Register of a type learned
//! elsewhere is predicted.
//!
//! A file is hostile input (it comes from another node or a shared volume): it is read without following a symlink,
//! only if it is a regular file of at most `max_file_bytes`; every field is range-checked and every task key checked
//! as a `history` request's is; one bad run rejects the whole file (nothing is written) with an error naming the file
//! (escaped), the run's index and the field. A positive duration under 1 ms is refused (no broker records one); a
//! measured figure below [`MIN_MEASURED`] is read as 0. Values in range are trusted: import only files from your own
//! nodes.
//!
//! A run's network rates (mean and peak egress and ingress) travel in its `net` object, sent in an `export` reply
//! only when the caller asks (`with_network`: an older `predictivectl` refuses fields it does not know).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use predictor::{PortableRun, Predictor, Profile, RunMetadata, RunOutcome, RunSummary, TaskKey};
use serde::Deserialize;

use crate::api::{
    self, ErrorCode, ErrorReply, ExportCursor, ExportPage, ExportQuery, ExportedNet,
    ExportedProfile, ExportedRun,
};
use crate::validate::{self, MAX_BYTES, MAX_CORES, MAX_KEY, MAX_PATH};

pub use predictive_api::history_file::{FILE_VERSION, FORMAT, HistoryFile, OLDEST_FILE_VERSION};

/// Default bound on an import file's size, bytes.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// Most runs one file may hold.
pub const MAX_FILE_RUNS: usize = 1_000_000;
/// How far in the future (clock skew between nodes) a run may start, ms: a run dated later would outweigh every
/// real one in the decaying history.
pub const MAX_FUTURE_MS: u64 = 3_600_000;
/// Longest run accepted, seconds (10 years: what the predictor caps a duration estimate at).
pub const MAX_DURATION_S: f64 = predictor::Resource::Duration.ceiling();
/// Shortest run accepted, seconds, unless 0: a broker records a run's life in whole milliseconds.
pub const MIN_DURATION_S: f64 = 1e-3;
/// Smallest value a run's other measured fields (cores, seconds, load, rates, profile shares) keep at import, a
/// nanosecond of CPU a second: a smaller positive one is below what any node measures and is read as 0. (A
/// subnormal CPU figure beside a real one made a model's bounds infinite: found by the `import` fuzz target.)
pub const MIN_MEASURED: f64 = 1e-9;

/// Highest network rate accepted, bytes/s (10x the highest limit the broker sets; the predictor's cap too).
pub const MAX_NET_RATE: f64 = predictor::Resource::Net.ceiling();

/// A measured value as the import keeps it: 0 below [`MIN_MEASURED`].
fn measured(v: f64) -> f64 {
    if v < MIN_MEASURED { 0.0 } else { v }
}

/// `v` within `[0, max]`: NaN and negatives 0, above `max` (infinity too) `max`.
fn within(v: f64, max: f64) -> f64 {
    if v > max {
        max
    } else if v >= 0.0 {
        v
    } else {
        0.0
    }
}

/// A run's outcome as the broker records it: each figure within what another node's import accepts, so that
/// this node's export is never refused for a run a container's reports shaped (a shim's counters are the
/// container's to move: a CPU counter jumping by 2^64 ns read as 1.8e19 cores).
pub fn recordable(o: RunOutcome) -> RunOutcome {
    let rate = |v: Option<f64>| v.map(|v| within(v, MAX_NET_RATE));
    RunOutcome {
        duration_s: within(o.duration_s, MAX_DURATION_S),
        peak_memory_bytes: o.peak_memory_bytes.min(MAX_BYTES),
        cpu_seconds: within(o.cpu_seconds, MAX_CORES * MAX_DURATION_S),
        cpu_p50_cores: within(o.cpu_p50_cores, MAX_CORES),
        cpu_p95_cores: within(o.cpu_p95_cores, MAX_CORES),
        throttled_s: within(o.throttled_s, MAX_DURATION_S),
        net_tx_bytes_per_s: rate(o.net_tx_bytes_per_s),
        net_tx_peak_bytes_per_s: rate(o.net_tx_peak_bytes_per_s),
        net_rx_bytes_per_s: rate(o.net_rx_bytes_per_s),
        net_rx_peak_bytes_per_s: rate(o.net_rx_peak_bytes_per_s),
        ..o
    }
}

/// Why an import failed; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The file could not be opened or read.
    #[error("reading {path}")]
    Read {
        /// The file (escaped).
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file (a directory, a FIFO, a device).
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The file (escaped).
        path: String,
    },
    /// Over the size bound.
    #[error("{path} is {len} bytes; at most {max} are accepted (import.max_file_bytes)")]
    TooBig {
        /// The file (escaped).
        path: String,
        /// Its size (or more).
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Not an export file of a version this build reads, or a field out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (escaped).
        path: String,
        /// What was wrong, naming the run and field.
        message: String,
    },
    /// The store refused the merge.
    #[error("importing {path} into the predictor store")]
    Store {
        /// The file (escaped).
        path: String,
        /// Why.
        #[source]
        source: predictor::PredictorError,
    },
}

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Runs in the file.
    pub runs: u64,
    /// Runs added.
    pub imported: u64,
    /// Runs already known: skipped.
    pub duplicates: u64,
    /// Runs that originated on this node: skipped.
    pub own: u64,
    /// Task types that received runs.
    pub task_types: usize,
    /// Task types with a model after the refit the import triggered.
    pub refitted: usize,
}

/// A path as it may appear in a log line or an error: control characters escaped, bounded.
pub fn shown_path(p: &Path) -> String {
    validate::shown(&p.to_string_lossy(), 256)
}

/// A node id as the file and the API write it.
pub fn node_hex(id: u64) -> String {
    format!("{id:016x}")
}

fn parse_node(field: &str, s: &str) -> Result<u64, String> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "field `{field}` ({:?}) is not a node id (16 hex digits)",
            validate::shown(s, 32)
        ));
    }
    match u64::from_str_radix(s, 16) {
        Ok(0) | Err(_) => Err(format!("field `{field}` is not a node id (zero)")),
        Ok(n) => Ok(n),
    }
}

fn to_exported(node: &str, p: PortableRun, with_network: bool) -> ExportedRun {
    let r = p.run;
    let o = &r.outcome;
    let net = ExportedNet {
        tx_bytes_per_s: o.net_tx_bytes_per_s,
        tx_peak_bytes_per_s: o.net_tx_peak_bytes_per_s,
        rx_bytes_per_s: o.net_rx_bytes_per_s,
        rx_peak_bytes_per_s: o.net_rx_peak_bytes_per_s,
    };
    let net = (with_network && net != ExportedNet::default()).then_some(net);
    ExportedRun {
        node: if p.origin_node == 0 {
            node.to_owned()
        } else {
            node_hex(p.origin_node)
        },
        run: p.origin_run,
        task_key: r.task_key.as_str().to_owned(),
        started_at_ms: r.started_at_ms,
        image: r.meta.image,
        input_bytes: r.meta.input_bytes,
        dependencies: r.meta.dependencies,
        requested_cpu_cores: r.meta.requested_cpu_cores,
        requested_memory_bytes: r.meta.requested_memory_bytes,
        host_load: r.meta.host_load,
        duration_s: r.outcome.duration_s,
        peak_memory_bytes: r.outcome.peak_memory_bytes,
        cpu_seconds: r.outcome.cpu_seconds,
        cpu_p50_cores: r.outcome.cpu_p50_cores,
        cpu_p95_cores: r.outcome.cpu_p95_cores,
        io_bytes: r.outcome.io_bytes,
        exit_code: r.outcome.exit_code,
        oom_killed: r.outcome.oom_killed,
        throttled_s: r.outcome.throttled_s,
        profile: r.profile.map(|p| ExportedProfile {
            cpu: p.cpu,
            memory: p.memory,
            io: p.io,
        }),
        net,
    }
}

/// A number as an error shows it: in exponent form when it is tiny (`5e-309`, not 309 digits).
fn shown_number(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-4 {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Checks a run's network rates: each finite, at least 0 and at most [`MAX_NET_RATE`].
fn check_net(net: Option<&ExportedNet>) -> Result<ExportedNet, String> {
    let Some(n) = net else {
        return Ok(ExportedNet::default());
    };
    for (field, v) in [
        ("net.tx_bytes_per_s", n.tx_bytes_per_s),
        ("net.tx_peak_bytes_per_s", n.tx_peak_bytes_per_s),
        ("net.rx_bytes_per_s", n.rx_bytes_per_s),
        ("net.rx_peak_bytes_per_s", n.rx_peak_bytes_per_s),
    ] {
        if let Some(v) = v.filter(|v| !(v.is_finite() && (0.0..=MAX_NET_RATE).contains(v))) {
            return Err(format!(
                "field `{field}` is {}; a rate in [0, {MAX_NET_RATE}] bytes/s is expected",
                shown_number(v)
            ));
        }
    }
    let flush = |v: Option<f64>| v.map(measured);
    Ok(ExportedNet {
        tx_bytes_per_s: flush(n.tx_bytes_per_s),
        tx_peak_bytes_per_s: flush(n.tx_peak_bytes_per_s),
        rx_bytes_per_s: flush(n.rx_bytes_per_s),
        rx_peak_bytes_per_s: flush(n.rx_peak_bytes_per_s),
    })
}

/// A run's start and end against this node's clock (`duration_s` already in range): neither more than the
/// clocks' skew ahead. A run dated later would outweigh every real one in the decaying history; a broker records a
/// run when it ends, and one that ended years ahead would keep its task type "seen" (retention) until then.
fn within_clock(e: &ExportedRun, now_ms: u64) -> Result<(), String> {
    let latest = now_ms.saturating_add(MAX_FUTURE_MS);
    if e.started_at_ms == 0 || e.started_at_ms > latest {
        return Err(format!(
            "field `started_at_ms` is {}; a start after the epoch and at most {} s ahead of this node's clock is expected",
            e.started_at_ms,
            MAX_FUTURE_MS / 1000
        ));
    }
    let ended_ms = e.started_at_ms as f64 + e.duration_s * 1000.0;
    if ended_ms > latest as f64 {
        return Err(format!(
            "field `duration_s` is {}: the run started at {} ms would end {} s ahead of this node's clock; at \
             most {} s (a run is recorded when it ends) is expected",
            shown_number(e.duration_s),
            e.started_at_ms,
            ((ended_ms - now_ms as f64) / 1000.0).round(),
            MAX_FUTURE_MS / 1000
        ));
    }
    Ok(())
}

/// Checks one run of a file and turns it into the store's shape. The error names the field.
fn from_exported(e: &ExportedRun, now_ms: u64) -> Result<PortableRun, String> {
    let origin_node = parse_node("node", &e.node)?;
    let net = check_net(e.net.as_ref())?;
    validate::name("task_key", &e.task_key, MAX_KEY).map_err(|r| r.message)?;
    validate::optional_text("image", &e.image, MAX_PATH).map_err(|r| r.message)?;
    validate::cores("requested_cpu_cores", e.requested_cpu_cores).map_err(|r| r.message)?;
    validate::bytes("requested_memory_bytes", e.requested_memory_bytes).map_err(|r| r.message)?;
    let range = |field: &str, v: f64, max: f64| {
        if v.is_finite() && (0.0..=max).contains(&v) {
            Ok(())
        } else {
            Err(format!(
                "field `{field}` is {}; a number in [0, {max}] is expected",
                shown_number(v)
            ))
        }
    };
    // A broker records a run's life in whole milliseconds: a shorter positive one is no broker's.
    if e.duration_s > 0.0 && e.duration_s < MIN_DURATION_S {
        return Err(format!(
            "field `duration_s` is {}; 0 or at least {MIN_DURATION_S} s (a broker counts whole milliseconds) is \
             expected",
            shown_number(e.duration_s)
        ));
    }
    range("duration_s", e.duration_s, MAX_DURATION_S)?;
    within_clock(e, now_ms)?;
    range("cpu_p50_cores", e.cpu_p50_cores, MAX_CORES)?;
    range("cpu_p95_cores", e.cpu_p95_cores, MAX_CORES)?;
    range("cpu_seconds", e.cpu_seconds, MAX_CORES * MAX_DURATION_S)?;
    range("throttled_s", e.throttled_s, MAX_DURATION_S)?;
    range("host_load", e.host_load, 1e6)?;
    if e.peak_memory_bytes > MAX_BYTES {
        return Err(format!(
            "field `peak_memory_bytes` is {}; at most {MAX_BYTES} is accepted",
            e.peak_memory_bytes
        ));
    }
    if let Some(p) = &e.profile {
        for (name, series) in [("cpu", &p.cpu), ("memory", &p.memory), ("io", &p.io)] {
            if series.len() != predictor::BUCKETS {
                return Err(format!(
                    "field `profile.{name}` has {} buckets; {} are expected",
                    series.len(),
                    predictor::BUCKETS
                ));
            }
            if let Some(v) = series
                .iter()
                .find(|v| !v.is_finite() || !(0.0..=1.0).contains(*v))
            {
                return Err(format!(
                    "field `profile.{name}` holds {v}; shares of the peak in [0, 1] are expected"
                ));
            }
        }
    }
    Ok(PortableRun {
        origin_node,
        origin_run: e.run,
        run: RunSummary {
            run_id: 0,
            task_key: TaskKey::new(e.task_key.clone()),
            started_at_ms: e.started_at_ms,
            meta: RunMetadata {
                image: e.image.clone(),
                command: Vec::new(),
                input_bytes: e.input_bytes,
                dependencies: e.dependencies,
                requested_cpu_cores: e.requested_cpu_cores,
                requested_memory_bytes: e.requested_memory_bytes,
                host_load: measured(e.host_load),
            },
            outcome: RunOutcome {
                duration_s: e.duration_s,
                peak_memory_bytes: e.peak_memory_bytes,
                cpu_seconds: measured(e.cpu_seconds),
                cpu_p50_cores: measured(e.cpu_p50_cores),
                cpu_p95_cores: measured(e.cpu_p95_cores),
                io_bytes: e.io_bytes,
                exit_code: e.exit_code,
                oom_killed: e.oom_killed,
                throttled_s: measured(e.throttled_s),
                net_tx_bytes_per_s: net.tx_bytes_per_s,
                net_tx_peak_bytes_per_s: net.tx_peak_bytes_per_s,
                net_rx_bytes_per_s: net.rx_bytes_per_s,
                net_rx_peak_bytes_per_s: net.rx_peak_bytes_per_s,
            },
            profile: e.profile.as_ref().map(|p| {
                let shares = |s: &[f32]| -> Vec<f32> {
                    s.iter()
                        .map(|v| {
                            if f64::from(*v) < MIN_MEASURED {
                                0.0
                            } else {
                                *v
                            }
                        })
                        .collect()
                };
                Profile {
                    cpu: shares(&p.cpu),
                    memory: shares(&p.memory),
                    io: shares(&p.io),
                }
            }),
        },
    })
}

/// Serves `export`: one page of runs, at most [`api::MAX_EXPORT_PAGE`] and about [`api::EXPORT_PAGE_BYTES`].
pub fn export_page(p: &Predictor, q: &ExportQuery) -> Result<ExportPage, ErrorReply> {
    let internal = |e: &dyn std::error::Error| {
        ErrorReply::new(
            ErrorCode::Internal,
            format!("exporting runs: {}", crate::error_chain(e)),
        )
    };
    let node = node_hex(p.node_id().map_err(|e| internal(&e))?);
    let after = q
        .after
        .as_ref()
        .map(|c| (TaskKey::new(c.task_key.clone()), c.run_id));
    let limit = q
        .limit
        .unwrap_or(api::MAX_EXPORT_PAGE)
        .min(api::MAX_EXPORT_PAGE);
    let newest = q
        .newest_per_type
        .unwrap_or(api::DEFAULT_EXPORT_RUNS_PER_TYPE);
    let (runs, mut next) = p
        .store()
        .export_page(after.as_ref().map(|(k, i)| (k, *i)), newest, limit)
        .map_err(|e| internal(&e))?;
    let mut out = Vec::with_capacity(runs.len());
    let mut bytes = 0;
    let mut last: Option<ExportCursor> = None;
    for r in runs {
        let cursor = ExportCursor {
            task_key: r.run.task_key.as_str().to_owned(),
            run_id: r.run.run_id,
        };
        let e = to_exported(&node, r, q.with_network == Some(true));
        bytes += serde_json::to_vec(&e).map_or(0, |v| v.len());
        if bytes > api::EXPORT_PAGE_BYTES && !out.is_empty() {
            // The rest goes on the next page, which starts after the last run sent.
            return Ok(ExportPage {
                node_id: node,
                runs: out,
                next: last,
            });
        }
        out.push(e);
        last = Some(cursor);
    }
    Ok(ExportPage {
        node_id: node,
        runs: out,
        next: next.take().map(|(k, run_id)| ExportCursor {
            task_key: k.as_str().to_owned(),
            run_id,
        }),
    })
}

/// Parses and checks an export file's bytes. `path` (escaped) only names it in errors.
pub fn parse(bytes: &[u8], path: &str, now_ms: u64) -> Result<Vec<PortableRun>, TransferError> {
    let invalid = |message: String| TransferError::Invalid {
        path: path.to_owned(),
        message,
    };
    // The header first: a newer version is named as such, not as an unknown field.
    #[derive(Deserialize)]
    struct Header {
        format: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
    }
    let h: Header = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "not a JSON object: {}",
            validate::shown(&e.to_string(), 200)
        ))
    })?;
    match h.format.as_ref().and_then(|v| v.as_str()) {
        Some(FORMAT) => {}
        _ => {
            return Err(invalid(format!(
                "field `format` is {}; an export file says {FORMAT:?} (written by `predictivectl export`)",
                h.format.map_or("missing".to_owned(), |v| validate::shown(
                    &v.to_string(),
                    64
                ))
            )));
        }
    }
    match h.version.as_ref().and_then(|v| v.as_u64()) {
        Some(OLDEST_FILE_VERSION..=FILE_VERSION) => {}
        _ => {
            return Err(invalid(format!(
                "field `version` is {}; this build reads versions {OLDEST_FILE_VERSION} to {FILE_VERSION}",
                h.version.map_or("missing".to_owned(), |v| validate::shown(
                    &v.to_string(),
                    64
                ))
            )));
        }
    }
    let file: HistoryFile =
        serde_json::from_slice(bytes).map_err(|e| invalid(validate::shown(&e.to_string(), 200)))?;
    parse_node("node_id", &file.node_id).map_err(invalid)?;
    if file.runs.len() > MAX_FILE_RUNS {
        return Err(invalid(format!(
            "{} runs; at most {MAX_FILE_RUNS} are accepted in one file",
            file.runs.len()
        )));
    }
    file.runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            from_exported(r, now_ms).map_err(|m| {
                invalid(format!(
                    "run {i} (task type {:?}): {m}",
                    validate::shown(&r.task_key, 64)
                ))
            })
        })
        .collect()
}

/// Reads a file for import: not through a symlink, a regular file, at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = shown_path(path);
    let read_err = |source| TransferError::Read {
        path: shown.clone(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        // No symlink to follow; a FIFO must not block the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(read_err)?;
    let md = f.metadata().map_err(read_err)?;
    if !md.is_file() {
        return Err(TransferError::NotAFile { path: shown });
    }
    if md.len() > max {
        return Err(TransferError::TooBig {
            path: shown,
            len: md.len(),
            max,
        });
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(max + 1).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 > max {
        return Err(TransferError::TooBig {
            path: shown,
            len: buf.len() as u64,
            max,
        });
    }
    Ok(buf)
}

/// Imports one file into the predictor and refits the task types it taught. `path` may be a symlink (a ConfigMap
/// volume's files are); the file it resolves to is read as [`read_bounded`] reads.
pub fn import_file(
    p: &Predictor,
    path: &Path,
    max_bytes: u64,
    now_ms: u64,
) -> Result<ImportOutcome, TransferError> {
    let shown = shown_path(path);
    let real = std::fs::canonicalize(path).map_err(|source| TransferError::Read {
        path: shown.clone(),
        source,
    })?;
    let bytes = read_bounded(&real, max_bytes)?;
    let runs = parse(&bytes, &shown, now_ms)?;
    let (rep, refit) = p
        .import_runs(&runs, now_ms)
        .map_err(|source| TransferError::Store {
            path: shown.clone(),
            source,
        })?;
    let out = ImportOutcome {
        runs: runs.len() as u64,
        imported: rep.imported,
        duplicates: rep.duplicates,
        own: rep.own,
        task_types: rep.task_types.len(),
        refitted: refit.map_or(0, |r| r.task_types),
    };
    tracing::info!(
        file = %shown,
        runs = out.runs,
        imported = out.imported,
        duplicates = out.duplicates,
        own = out.own,
        task_types = out.task_types,
        refitted = out.refitted,
        "imported run history"
    );
    Ok(out)
}

/// The watched import directory: every `*.json` file (not a dot-file, which is one being written) is imported
/// when it is new or changed (size or mtime). A file that fails is logged once per version of it. An entry may be a
/// symlink (Kubernetes projects a ConfigMap's keys as symlinks into `..data/`) as long as it resolves inside the
/// directory.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: HashMap<PathBuf, (PathBuf, u64, i64, i64)>,
    dir_error: Option<String>,
}

impl Watcher {
    /// Scans `dir` once.
    pub fn scan(&mut self, p: &Predictor, dir: &Path, max_bytes: u64, now_ms: u64) {
        use std::os::unix::fs::MetadataExt;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => {
                self.dir_error = None;
                e
            }
            Err(e) => {
                let msg = e.to_string();
                if self.dir_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(dir = %shown_path(dir), error = %msg, "reading the import directory");
                    self.dir_error = Some(msg);
                }
                return;
            }
        };
        let Ok(root) = std::fs::canonicalize(dir) else {
            return;
        };
        let mut present = Vec::new();
        for entry in entries.flatten().take(10_000) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            let Ok(md) = std::fs::metadata(&real) else {
                continue;
            };
            let stamp = (real.clone(), md.len(), md.mtime(), md.mtime_nsec());
            present.push(path.clone());
            if self.seen.get(&path) == Some(&stamp) {
                continue;
            }
            self.seen.insert(path.clone(), stamp);
            if !real.starts_with(&root) {
                tracing::warn!(
                    file = %shown_path(&path),
                    "import file rejected: it resolves outside the import directory"
                );
                continue;
            }
            if let Err(e) = import_file(p, &real, max_bytes, now_ms) {
                tracing::warn!(file = %shown_path(&path), error = %crate::error_chain(&e), "import file rejected; it is tried again when it changes");
            }
        }
        self.seen.retain(|k, _| present.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_json(node: &str, run: u64, key: &str) -> serde_json::Value {
        serde_json::json!({"node": node, "run": run, "task_key": key, "started_at_ms": 1_000,
            "duration_s": 2.0, "peak_memory_bytes": 1_000_000, "cpu_p95_cores": 0.5})
    }

    fn file(runs: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({"format": FORMAT, "version": 1, "node_id": "00000000000000aa",
            "exported_at_ms": 5, "runs": runs})
    }

    fn parse_err(v: &serde_json::Value) -> String {
        parse(v.to_string().as_bytes(), "f.json", 10_000)
            .expect_err("rejected")
            .to_string()
    }

    #[test]
    fn a_run_recorded_with_any_figures_is_imported_by_another_node() {
        let extremes = [f64::MAX, f64::INFINITY, f64::NAN, -1.0, 1e300, 0.0];
        for (i, v) in extremes.into_iter().enumerate() {
            let outcome = recordable(RunOutcome {
                duration_s: v,
                peak_memory_bytes: u64::MAX,
                cpu_seconds: v,
                cpu_p50_cores: v,
                cpu_p95_cores: v,
                io_bytes: u64::MAX,
                throttled_s: v,
                net_tx_bytes_per_s: Some(v),
                net_tx_peak_bytes_per_s: Some(v),
                net_rx_bytes_per_s: Some(v),
                net_rx_peak_bytes_per_s: Some(v),
                ..RunOutcome::default()
            });
            let run = PortableRun {
                origin_node: 0,
                origin_run: 1,
                run: RunSummary {
                    run_id: 1,
                    task_key: TaskKey::new("etl"),
                    started_at_ms: 1_000,
                    meta: RunMetadata::default(),
                    outcome,
                    profile: None,
                },
            };
            let exported = to_exported("00000000000000aa", run, true);
            // Imported on a node whose clock is past the run's end (a broker records a run when it ends).
            if let Err(e) = from_exported(&exported, 1_000 + api::MAX_RAN_MS) {
                panic!("figures at {v} (case {i}): refused: {e}");
            }
        }
    }

    #[test]
    fn a_valid_file_parses_into_runs_with_their_origin() {
        let v = file(vec![run_json("00000000000000bb", 7, "etl")]);
        let runs = parse(v.to_string().as_bytes(), "f.json", 10_000).expect("valid");
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].origin_node, runs[0].origin_run), (0xbb, 7));
        assert_eq!(runs[0].run.task_key.as_str(), "etl");
        assert!(runs[0].run.meta.command.is_empty());
        assert_eq!(
            runs[0].run.outcome.net_tx_bytes_per_s, None,
            "version 1: none"
        );

        let mut with_net = run_json("00000000000000bb", 8, "upload");
        with_net["net"] = serde_json::json!({"tx_bytes_per_s": 2e6, "tx_peak_bytes_per_s": 3e6});
        let mut v = file(vec![with_net]);
        v["version"] = serde_json::json!(2);
        let runs = parse(v.to_string().as_bytes(), "f.json", 10_000).expect("valid");
        let o = &runs[0].run.outcome;
        assert_eq!(
            (
                o.net_tx_bytes_per_s,
                o.net_tx_peak_bytes_per_s,
                o.net_rx_bytes_per_s
            ),
            (Some(2e6), Some(3e6), None)
        );

        // Below what any node measures, a value is read as 0 (a subnormal CPU figure beside a real one made a
        // model's bounds infinite: found by the `import` fuzz target); the rest of the run is kept.
        let mut tiny = run_json("00000000000000bb", 9, "etl");
        tiny["cpu_p95_cores"] = serde_json::json!(5e-309);
        tiny["cpu_p50_cores"] = serde_json::json!(0.25);
        let runs = parse(file(vec![tiny]).to_string().as_bytes(), "f.json", 10_000).expect("valid");
        let o = &runs[0].run.outcome;
        assert_eq!((o.cpu_p95_cores, o.cpu_p50_cores), (0.0, 0.25));
    }

    /// The predictor caps every estimate at what these checks accept of a run.
    #[test]
    fn the_predictors_ceilings_are_the_bounds_a_run_is_checked_against() {
        use predictor::Resource;
        assert_eq!(Resource::Cpu.ceiling(), MAX_CORES);
        assert_eq!(Resource::Memory.ceiling(), MAX_BYTES as f64);
        assert_eq!(Resource::NetRx.ceiling(), MAX_NET_RATE);
        // A run as long as a Finish may say (found by the `server` fuzz target: 10 x 366 days accepted, 10 x 365
        // imported, so a node's export with one such run was refused whole).
        assert_eq!(
            Resource::Duration.ceiling(),
            api::MAX_RAN_MS as f64 / 1000.0
        );
    }

    #[test]
    fn bad_files_are_rejected_naming_what_was_wrong() {
        let mut future = run_json("00000000000000bb", 1, "etl");
        future["started_at_ms"] = serde_json::json!(10_000 + MAX_FUTURE_MS + 1);
        // Started in the past, ends beyond the clocks' skew: no broker's run.
        let mut ends_later = run_json("00000000000000bb", 1, "etl");
        ends_later["duration_s"] = serde_json::json!(86_400.0);
        let mut nan_cpu = run_json("00000000000000bb", 1, "etl");
        nan_cpu["cpu_p95_cores"] = serde_json::json!(-1.0);
        let mut short_profile = run_json("00000000000000bb", 1, "etl");
        short_profile["profile"] = serde_json::json!({"cpu": [0.5], "memory": [0.5], "io": [0.5]});
        let mut extra = run_json("00000000000000bb", 1, "etl");
        extra["surprise"] = serde_json::json!(1);
        let mut v3 = file(vec![]);
        v3["version"] = serde_json::json!(FILE_VERSION + 1);
        v3["new_field"] = serde_json::json!(true);
        let mut bad_rate = run_json("00000000000000bb", 1, "etl");
        bad_rate["net"] = serde_json::json!({"tx_bytes_per_s": 1e13});
        let mut negative_rate = run_json("00000000000000bb", 1, "etl");
        negative_rate["net"] = serde_json::json!({"rx_peak_bytes_per_s": -5.0});
        let mut odd_net = run_json("00000000000000bb", 1, "etl");
        odd_net["net"] = serde_json::json!({"tx": 5.0});
        let mut wrong = file(vec![]);
        wrong["format"] = serde_json::json!("something-else");
        // Shorter than any broker records.
        let mut microsecond_run = run_json("00000000000000bb", 1, "etl");
        microsecond_run["duration_s"] = serde_json::json!(1e-6);
        for (v, expect) in [
            (
                file(vec![microsecond_run]),
                "field `duration_s` is 1e-6; 0 or at least 0.001 s",
            ),
            (v3, "this build reads versions 1 to 2"),
            (
                file(vec![bad_rate]),
                "field `net.tx_bytes_per_s` is 10000000000000",
            ),
            (
                file(vec![negative_rate]),
                "field `net.rx_peak_bytes_per_s` is -5",
            ),
            (file(vec![odd_net]), "unknown field `tx`"),
            (wrong, "field `format`"),
            (
                file(vec![run_json("zz", 1, "etl")]),
                "run 0 (task type \"etl\"): field `node`",
            ),
            (file(vec![run_json("0000000000000000", 1, "etl")]), "zero"),
            (
                file(vec![run_json("00000000000000bb", 1, "")]),
                "field `task_key` is empty",
            ),
            (
                file(vec![run_json("00000000000000bb", 1, "a\u{1b}[2Jb")]),
                "control character",
            ),
            (
                file(vec![run_json(
                    "00000000000000bb",
                    1,
                    &"k".repeat(MAX_KEY + 1),
                )]),
                "at most 1024",
            ),
            (
                file(vec![run_json("00000000000000bb", 1, "ok"), future]),
                "run 1 (task type \"etl\"): field `started_at_ms`",
            ),
            (file(vec![nan_cpu]), "field `cpu_p95_cores` is -1"),
            (
                file(vec![ends_later]),
                "field `duration_s` is 86400: the run started at 1000 ms would end 86391 s ahead",
            ),
            (
                file(vec![short_profile]),
                "field `profile.cpu` has 1 buckets",
            ),
            (file(vec![extra]), "surprise"),
        ] {
            let e = parse_err(&v);
            assert!(
                e.starts_with("f.json: ") && e.contains(expect),
                "{expect}: {e}"
            );
            assert!(!e.contains('\u{1b}'), "escaped: {e}");
        }
        let e = parse(b"\x00\x01 not json", "f.json", 0)
            .expect_err("junk")
            .to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn files_are_read_bounded_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 2048]).expect("write");
        let e = read_bounded(&big, 1024).expect_err("too big").to_string();
        assert!(e.contains("2048 bytes; at most 1024"), "{e}");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&big, &link).expect("symlink");
        assert!(matches!(
            read_bounded(&link, 1 << 20),
            Err(TransferError::Read { .. })
        ));
        assert!(matches!(
            read_bounded(dir.path(), 1 << 20),
            Err(TransferError::NotAFile { .. })
        ));
        assert_eq!(read_bounded(&big, 4096).expect("fits").len(), 2048);
    }

    #[test]
    fn a_watched_dir_follows_configmap_symlinks_inside_it_and_nothing_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = tempfile::tempdir().expect("tempdir");
        let p = Predictor::open(
            &store.path().join("p.redb"),
            predictor::PredictorConfig::default(),
        )
        .expect("open");
        let runs: Vec<_> = (1..=5)
            .map(|i| run_json("00000000000000bb", i, "etl"))
            .collect();
        let text = file(runs).to_string();
        // What kubelet makes of a ConfigMap volume: cm.json -> ..data/cm.json, ..data -> ..2026_01_01.
        let import = dir.path().join("import");
        std::fs::create_dir_all(import.join("..2026_01_01")).expect("mkdir");
        std::fs::write(import.join("..2026_01_01/cm.json"), &text).expect("write");
        std::os::unix::fs::symlink("..2026_01_01", import.join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/cm.json", import.join("cm.json")).expect("symlink");
        // And a symlink out of the directory, to a file the broker must not read on anyone's behalf.
        let outside = dir.path().join("outside.json");
        let other: Vec<_> = (1..=5)
            .map(|i| run_json("00000000000000cc", i, "secret"))
            .collect();
        std::fs::write(&outside, file(other).to_string()).expect("write");
        std::os::unix::fs::symlink(&outside, import.join("out.json")).expect("symlink");
        let mut w = Watcher::default();
        w.scan(&p, &import, DEFAULT_MAX_FILE_BYTES, 10_000);
        assert_eq!(
            p.store().run_count_of(&TaskKey::new("etl")).expect("count"),
            5
        );
        assert_eq!(
            p.store()
                .run_count_of(&TaskKey::new("secret"))
                .expect("count"),
            0
        );
        // Unchanged: not read again (nothing to count twice anyway).
        w.scan(&p, &import, DEFAULT_MAX_FILE_BYTES, 10_000);
        assert_eq!(p.store().run_count().expect("count"), 5);
    }
}
