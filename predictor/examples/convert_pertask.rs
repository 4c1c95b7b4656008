//! Converts real per-task traces vendored in public GitHub repositories into the JSON-lines trace format of
//! `predictor::eval`. Provenance (repository, commit, path, sha256) and the mapping: `predictor/traces/README.md`;
//! `predictor/traces/fetch-github.sh` checks the files and runs this.
//!
//! `cargo run --release -p predictor --example convert_pertask -- --trace bitbrains_rnd|google2011_jobs
//!  --dir DIR --out FILE [--window-s 86400] [--min-coverage 0.8] [--machine-cores 96] [--machine-memory-gib 100]`
//!
//! - `bitbrains_rnd`: Bitbrains GWA-T-12 "Rnd", 500 business VMs of a hosting provider, one CSV per VM and month
//!   (`DIR/2013-7/N.csv`, `2013-8`, `2013-9`; the same `N` is the same VM), a sample every 300 s with provisioned
//!   cores, CPU capacity (MHz), CPU usage (MHz), memory provisioned and used (KB). Each VM is a long-running
//!   service and its own task type `bitbrains_rnd/vmN`; each UTC day (`--window-s`) with samples in at least
//!   `--min-coverage` of its 300 s slots is one run. CPU cores = usage MHz / (capacity MHz / cores); the request
//!   is the provisioned cores and memory at the window's first sample. Rows with 0 provisioned cores, CPU
//!   capacity or memory (the VM held no resources) are skipped and counted.
//! - `google2011_jobs`: the per-job daily series that Nguyen Trung Hieu et al. extracted from Google's
//!   clusterdata-2011 `task_usage` (`DIR/vm_<job id>_<day>`: 288 lines `cpu% mem%`, the job's tasks summed every
//!   300 s over day `<day>` of the first ten days). Each job is a recurring task type `google2011_jobs/job<id>`,
//!   each file one run of 86,400 s. Percentages become cores and bytes of a nominal machine (as
//!   `convert_dctraces`); there is no request. Day `d` starts at a nominal 2011-05-01T00:00:00Z + (d-1) days.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use predictor::eval::{TraceError, write_trace_file};
use predictor::{Profile, RunMetadata, RunOutcome, RunSummary, Sample, TaskKey};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Seconds between two samples in both traces.
const STRIDE_S: u64 = 300;
/// Nominal start of Google's 2011 trace (the extracted files carry no timestamps): 2011-05-01T00:00:00Z.
const GOOGLE2011_START_MS: u64 = 1_304_208_000_000;
/// The columns of every Bitbrains GWA-T-12 file, in order.
const BITBRAINS_HEADER: [&str; 11] = [
    "Timestamp [ms]",
    "CPU cores",
    "CPU capacity provisioned [MHZ]",
    "CPU usage [MHZ]",
    "CPU usage [%]",
    "Memory capacity provisioned [KB]",
    "Memory usage [KB]",
    "Disk read throughput [KB/s]",
    "Disk write throughput [KB/s]",
    "Network received throughput [KB/s]",
    "Network transmitted throughput [KB/s]",
];
const BITBRAINS_MONTHS: [&str; 3] = ["2013-7", "2013-8", "2013-9"];

/// Errors of the converter; each names the flag, file, line or column that was wrong.
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error("missing {flag}")]
    MissingArg { flag: &'static str },
    #[error("bad value {value:?} for {flag}: {why}")]
    BadArg {
        flag: String,
        value: String,
        why: &'static str,
    },
    #[error("unknown trace {name:?} (known: bitbrains_rnd, google2011_jobs)")]
    UnknownTrace { name: String },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: header is {found:?}, expected the Bitbrains GWA-T-12 columns {expected:?}")]
    Header {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path} line {line}: column {column} is {value:?}, not a finite number >= 0")]
    Field {
        path: PathBuf,
        line: usize,
        column: String,
        value: String,
    },
    #[error("{path} line {line}: {found} fields, expected {expected}")]
    FieldCount {
        path: PathBuf,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{path}: file name is not {expected}")]
    FileName {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{dir}: no {what} found")]
    Empty { dir: PathBuf, what: &'static str },
    #[error("writing {path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: TraceError,
    },
}

/// Which trace the directory holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trace {
    BitbrainsRnd,
    Google2011Jobs,
}

impl Trace {
    fn parse(name: &str) -> Result<Self, ConvertError> {
        match name {
            "bitbrains_rnd" => Ok(Self::BitbrainsRnd),
            "google2011_jobs" => Ok(Self::Google2011Jobs),
            _ => Err(ConvertError::UnknownTrace {
                name: name.to_string(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::BitbrainsRnd => "bitbrains_rnd",
            Self::Google2011Jobs => "google2011_jobs",
        }
    }
}

/// One sample of one task type.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    ts_s: u64,
    cpu_cores: f64,
    memory_bytes: f64,
    requested_cpu_cores: Option<f64>,
    requested_memory_bytes: Option<f64>,
}

/// The machine a Google percentage refers to.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Machine {
    cores: f64,
    memory_bytes: f64,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            cores: 96.0,
            memory_bytes: 100.0 * GIB,
        }
    }
}

fn read_lines(
    path: &Path,
) -> Result<std::io::Lines<std::io::BufReader<std::fs::File>>, ConvertError> {
    let file = std::fs::File::open(path).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(std::io::BufReader::new(file).lines())
}

fn number(path: &Path, line: usize, column: &str, raw: &str) -> Result<f64, ConvertError> {
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(ConvertError::Field {
            path: path.to_path_buf(),
            line,
            column: column.to_string(),
            value: raw.to_string(),
        }),
    }
}

/// Reads one Bitbrains file; returns its usable rows and how many rows held no resources.
fn read_bitbrains(path: &Path) -> Result<(Vec<Row>, usize), ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut lines = read_lines(path)?;
    let header = lines
        .next()
        .transpose()
        .map_err(read_err)?
        .unwrap_or_default();
    let found: Vec<&str> = header.split(';').map(str::trim).collect();
    if found != BITBRAINS_HEADER {
        return Err(ConvertError::Header {
            path: path.to_path_buf(),
            expected: BITBRAINS_HEADER.join(";"),
            found: header.trim().to_string(),
        });
    }
    let (mut rows, mut empty) = (Vec::new(), 0);
    for (i, line) in lines.enumerate() {
        let line = line.map_err(read_err)?;
        let line_no = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let raw: Vec<&str> = line.split(';').collect();
        if raw.len() != BITBRAINS_HEADER.len() {
            return Err(ConvertError::FieldCount {
                path: path.to_path_buf(),
                line: line_no,
                found: raw.len(),
                expected: BITBRAINS_HEADER.len(),
            });
        }
        let mut v = [0.0; 7];
        for (c, slot) in v.iter_mut().enumerate() {
            *slot = number(path, line_no, BITBRAINS_HEADER[c], raw[c])?;
        }
        let [ts, cores, cap_mhz, usage_mhz, _, mem_cap_kb, mem_kb] = v;
        if cores == 0.0 || cap_mhz == 0.0 || mem_cap_kb == 0.0 {
            empty += 1;
            continue;
        }
        rows.push(Row {
            // The column says ms; the values are seconds since the epoch (1372629804 is 2013-06-30T22:03:24Z).
            ts_s: ts as u64,
            cpu_cores: usage_mhz / (cap_mhz / cores),
            memory_bytes: mem_kb * 1024.0,
            requested_cpu_cores: Some(cores),
            requested_memory_bytes: Some(mem_cap_kb * 1024.0),
        });
    }
    Ok((rows, empty))
}

/// Reads one extracted Google 2011 job-day file: 288 lines `cpu% mem%`, day `day` (1-based).
fn read_google_day(path: &Path, day: u64, machine: Machine) -> Result<Vec<Row>, ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut rows = Vec::new();
    let day_start_s = GOOGLE2011_START_MS / 1000 + (day - 1) * 86_400;
    for (i, line) in read_lines(path)?.enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: Vec<&str> = line.split_whitespace().collect();
        if raw.len() != 2 {
            return Err(ConvertError::FieldCount {
                path: path.to_path_buf(),
                line: i + 1,
                found: raw.len(),
                expected: 2,
            });
        }
        let cpu = number(path, i + 1, "cpu%", raw[0])?;
        let mem = number(path, i + 1, "mem%", raw[1])?;
        rows.push(Row {
            ts_s: day_start_s + rows.len() as u64 * STRIDE_S,
            cpu_cores: cpu / 100.0 * machine.cores,
            memory_bytes: mem / 100.0 * machine.memory_bytes,
            requested_cpu_cores: None,
            requested_memory_bytes: None,
        });
    }
    Ok(rows)
}

/// Nearest-rank quantile of a non-empty slice.
/// One run from the samples of one window `[start_s, start_s + window_s)`.
fn run(key: &TaskKey, run_id: u64, start_s: u64, window_s: u64, rows: &[Row]) -> RunSummary {
    let started_at_ms = start_s * 1000;
    let window_ms = window_s * 1000;
    let cpu: Vec<f64> = rows.iter().map(|r| r.cpu_cores).collect();
    let peak = rows.iter().map(|r| r.memory_bytes).fold(0.0, f64::max);
    let slots = covered_slots(rows, start_s);
    let samples: Vec<Sample> = rows
        .iter()
        .map(|r| Sample {
            ts_ms: r.ts_s * 1000,
            cpu_cores: r.cpu_cores,
            memory_bytes: r.memory_bytes.round() as u64,
            io_bytes: 0,
            count: 1,
        })
        .collect();
    RunSummary {
        run_id,
        task_key: key.clone(),
        started_at_ms,
        meta: RunMetadata {
            requested_cpu_cores: rows[0].requested_cpu_cores,
            requested_memory_bytes: rows[0].requested_memory_bytes.map(|b| b.round() as u64),
            ..RunMetadata::default()
        },
        outcome: RunOutcome {
            duration_s: window_s as f64,
            peak_memory_bytes: peak.round() as u64,
            cpu_seconds: cpu.iter().sum::<f64>() / cpu.len() as f64 * (slots * STRIDE_S) as f64,
            cpu_p50_cores: predictor::percentile(&cpu, 0.5).unwrap_or(0.0),
            cpu_p95_cores: predictor::percentile(&cpu, 0.95).unwrap_or(0.0),
            ..RunOutcome::default()
        },
        profile: Profile::from_samples(&samples, started_at_ms, window_ms),
    }
}

/// How many distinct 300 s slots after `start_s` the rows fall in.
fn covered_slots(rows: &[Row], start_s: u64) -> u64 {
    let mut slots: Vec<u64> = rows.iter().map(|r| (r.ts_s - start_s) / STRIDE_S).collect();
    slots.dedup();
    slots.len() as u64
}

/// Cuts one task type's time-sorted rows into windows aligned on multiples of `window_s` since the epoch (UTC
/// days for 86,400 s); a window becomes a run when its samples cover at least `min_coverage` of its slots.
/// Returns the runs and the number of windows dropped.
fn windows(
    key: &TaskKey,
    rows: &[Row],
    window_s: u64,
    min_coverage: f64,
    next_id: &mut u64,
) -> (Vec<RunSummary>, usize) {
    let (mut runs, mut dropped) = (Vec::new(), 0);
    let needed = (min_coverage * (window_s / STRIDE_S) as f64).ceil() as u64;
    let mut i = 0;
    while i < rows.len() {
        let start_s = rows[i].ts_s / window_s * window_s;
        let end = rows[i..]
            .iter()
            .position(|r| r.ts_s >= start_s + window_s)
            .map_or(rows.len(), |p| i + p);
        let chunk = &rows[i..end];
        if covered_slots(chunk, start_s) >= needed.max(1) {
            *next_id += 1;
            runs.push(run(key, *next_id, start_s, window_s, chunk));
        } else {
            dropped += 1;
        }
        i = end;
    }
    (runs, dropped)
}

/// What a conversion produced, for the summary line.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    files: usize,
    rows: usize,
    rows_without_resources: usize,
    task_types: usize,
    windows_dropped: usize,
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        out.push(entry.map_err(read_err)?.path());
    }
    out.sort();
    Ok(out)
}

fn convert_bitbrains(args: &Args) -> Result<(Vec<RunSummary>, Stats), ConvertError> {
    let mut stats = Stats::default();
    // VM number -> its rows over all months.
    let mut vms: BTreeMap<u32, Vec<Row>> = BTreeMap::new();
    for month in BITBRAINS_MONTHS {
        let month_dir = args.dir.join(month);
        for path in list_dir(&month_dir)? {
            let Some(vm) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".csv"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                if path.extension().is_some_and(|e| e == "csv") {
                    return Err(ConvertError::FileName {
                        path,
                        expected: "<VM number>.csv",
                    });
                }
                continue; // .DS_Store and the like
            };
            let (rows, empty) = read_bitbrains(&path)?;
            stats.files += 1;
            stats.rows += rows.len() + empty;
            stats.rows_without_resources += empty;
            vms.entry(vm).or_default().extend(rows);
        }
    }
    if vms.is_empty() {
        return Err(ConvertError::Empty {
            dir: args.dir.clone(),
            what: "2013-7/N.csv, 2013-8/N.csv or 2013-9/N.csv",
        });
    }
    let mut runs = Vec::new();
    let mut next_id = 0;
    for (vm, mut rows) in vms {
        rows.sort_by_key(|r| r.ts_s);
        rows.dedup_by_key(|r| r.ts_s);
        let key = TaskKey::new(format!("bitbrains_rnd/vm{vm}"));
        let (r, dropped) = windows(&key, &rows, args.window_s, args.min_coverage, &mut next_id);
        stats.task_types += usize::from(!r.is_empty());
        stats.windows_dropped += dropped;
        runs.extend(r);
    }
    Ok((runs, stats))
}

fn convert_google(args: &Args) -> Result<(Vec<RunSummary>, Stats), ConvertError> {
    let mut stats = Stats::default();
    // Job id -> (day, path).
    let mut jobs: BTreeMap<u64, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for path in list_dir(&args.dir)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(rest) = name.strip_prefix("vm_") else {
            continue;
        };
        let parsed = rest
            .split_once('_')
            .and_then(|(job, day)| Some((job.parse::<u64>().ok()?, day.parse::<u64>().ok()?)))
            .filter(|&(_, day)| (1..=31).contains(&day));
        let Some((job, day)) = parsed else {
            return Err(ConvertError::FileName {
                path,
                expected: "vm_<job id>_<day 1..31>",
            });
        };
        jobs.entry(job).or_default().push((day, path));
    }
    if jobs.is_empty() {
        return Err(ConvertError::Empty {
            dir: args.dir.clone(),
            what: "vm_<job id>_<day> files",
        });
    }
    let mut runs = Vec::new();
    let mut next_id = 0;
    for (job, mut days) in jobs {
        days.sort();
        let key = TaskKey::new(format!("google2011_jobs/job{job}"));
        let mut rows = Vec::new();
        for (day, path) in days {
            let r = read_google_day(&path, day, args.machine)?;
            stats.files += 1;
            stats.rows += r.len();
            rows.extend(r);
        }
        let (r, dropped) = windows(&key, &rows, 86_400, args.min_coverage, &mut next_id);
        stats.task_types += usize::from(!r.is_empty());
        stats.windows_dropped += dropped;
        runs.extend(r);
    }
    Ok((runs, stats))
}

/// Parsed command line.
#[derive(Debug)]
struct Args {
    trace: Trace,
    dir: PathBuf,
    out: PathBuf,
    window_s: u64,
    min_coverage: f64,
    machine: Machine,
}

fn parse_args(args: &[String]) -> Result<Args, ConvertError> {
    let (mut trace, mut dir, mut out, mut window_s, mut min_coverage) =
        (None, None, None, 86_400, 0.8);
    let mut machine = Machine::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        let bad = |why| ConvertError::BadArg {
            flag: flag.clone(),
            value: value.clone(),
            why,
        };
        let positive = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
        };
        match flag.as_str() {
            "--trace" => trace = Some(Trace::parse(&value)?),
            "--dir" => dir = Some(PathBuf::from(&value)),
            "--out" => out = Some(PathBuf::from(&value)),
            "--window-s" => {
                window_s = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0 && n.is_multiple_of(STRIDE_S))
                    .ok_or(bad("a whole number of 300 s samples"))?;
            }
            "--min-coverage" => {
                min_coverage = positive()
                    .filter(|v| *v <= 1.0)
                    .ok_or(bad("a fraction in (0, 1]"))?;
            }
            "--machine-cores" => machine.cores = positive().ok_or(bad("a number > 0"))?,
            "--machine-memory-gib" => {
                machine.memory_bytes = positive().ok_or(bad("a number > 0"))? * GIB
            }
            _ => return Err(bad("unknown flag")),
        }
    }
    Ok(Args {
        trace: trace.ok_or(ConvertError::MissingArg { flag: "--trace" })?,
        dir: dir.ok_or(ConvertError::MissingArg { flag: "--dir" })?,
        out: out.ok_or(ConvertError::MissingArg { flag: "--out" })?,
        window_s,
        min_coverage,
        machine,
    })
}

fn convert(args: &Args) -> Result<(Vec<RunSummary>, Stats), ConvertError> {
    match args.trace {
        Trace::BitbrainsRnd => convert_bitbrains(args),
        Trace::Google2011Jobs => convert_google(args),
    }
}

/// The runs as a trace file at `out` (written whole or not at all).
fn write_atomically(out: &Path, runs: &[RunSummary]) -> Result<(), ConvertError> {
    write_trace_file(out, runs).map_err(|source| ConvertError::Encode {
        path: out.to_path_buf(),
        source,
    })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("convert_pertask: {e}");
            eprintln!(
                "usage: convert_pertask --trace bitbrains_rnd|google2011_jobs --dir DIR --out FILE \
                 [--window-s 86400] [--min-coverage 0.8] [--machine-cores 96] [--machine-memory-gib 100]"
            );
            return ExitCode::from(2);
        }
    };
    let result = convert(&args).and_then(|(runs, stats)| {
        write_atomically(&args.out, &runs)?;
        Ok((runs.len(), stats))
    });
    match result {
        Ok((n, s)) => {
            eprintln!(
                "convert_pertask: {}: {} files, {} rows ({} without resources, skipped) -> {n} runs of {} task \
                 types in {}; {} windows under the coverage dropped",
                args.trace.name(),
                s.files,
                s.rows,
                s.rows_without_resources,
                s.task_types,
                args.out.display(),
                s.windows_dropped,
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("convert_pertask: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use predictor::eval::read_trace;

    const HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\t\
        CPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\t\
        Disk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";

    fn args(trace: Trace, dir: &Path, window_s: u64) -> Args {
        Args {
            trace,
            dir: dir.to_path_buf(),
            out: dir.join("out.jsonl"),
            window_s,
            min_coverage: 0.8,
            machine: Machine::default(),
        }
    }

    /// A Bitbrains row: 2 cores of 2,000 MHz each, `mhz` used, 8 GiB provisioned, `mem_kb` used.
    fn bb_row(ts: u64, mhz: f64, mem_kb: f64) -> String {
        format!("{ts};\t2;\t4000.0;\t{mhz};\t0.0;\t8388608.0;\t{mem_kb};\t0.0;\t0.0;\t0.0;\t0.0\n")
    }

    #[test]
    fn bitbrains_vms_become_task_types_and_covered_windows_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        for m in BITBRAINS_MONTHS {
            std::fs::create_dir(dir.path().join(m)).expect("month dir");
        }
        // VM 7: one full hour (12 samples) in July, one full hour and a third of one in August, read as
        // hourly windows. Timestamps are seconds, as in the real files.
        let hour = 1_372_633_200; // 2013-06-30T23:00:00Z, a multiple of 3600
        let mut july = String::from(HEADER);
        july.push('\n');
        for i in 0..12 {
            july.push_str(&bb_row(
                hour + i * 300,
                1000.0 * (i + 1) as f64,
                1024.0 * (i + 1) as f64,
            ));
        }
        july.push_str("1372636800;\t0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0;\t0.0\n");
        std::fs::write(dir.path().join("2013-7/7.csv"), july).expect("write");
        let mut aug = String::from(HEADER);
        aug.push('\n');
        for i in 0..16 {
            aug.push_str(&bb_row(hour + 7200 + i * 300, 2000.0, 4096.0));
        }
        std::fs::write(dir.path().join("2013-8/7.csv"), aug).expect("write");
        std::fs::write(dir.path().join("2013-9/.DS_Store"), "").expect("write");

        let a = args(Trace::BitbrainsRnd, dir.path(), 3600);
        let (runs, stats) = convert(&a).expect("converts");
        write_atomically(&a.out, &runs).expect("writes");
        let back = read_trace(&a.out).expect("the evaluator reads what the converter wrote");
        assert_eq!(back, runs);
        assert_eq!(
            stats.rows_without_resources, 1,
            "the row with 0 cores is skipped"
        );
        assert_eq!(stats.task_types, 1);
        assert_eq!(
            back.len(),
            2,
            "two covered hours; the hour with 4 of 12 samples is dropped"
        );
        assert_eq!(stats.windows_dropped, 1);
        let first = &back[0];
        assert_eq!(first.task_key, TaskKey::new("bitbrains_rnd/vm7"));
        assert_eq!(first.started_at_ms, hour * 1000);
        assert_eq!(first.outcome.duration_s, 3600.0);
        // 1,000..12,000 MHz on cores of 2,000 MHz: 0.5..6 cores; nearest-rank median 3 cores, P95 6 cores.
        assert_eq!(first.outcome.cpu_p50_cores, 3.0);
        assert_eq!(first.outcome.cpu_p95_cores, 6.0);
        assert_eq!(first.outcome.peak_memory_bytes, 12 * 1024 * 1024);
        assert_eq!(first.meta.requested_cpu_cores, Some(2.0));
        assert_eq!(first.meta.requested_memory_bytes, Some(8 << 30));
        assert!(first.profile.as_ref().is_some_and(Profile::is_well_formed));
        assert_eq!(back[1].started_at_ms, (hour + 7200) * 1000);
        assert_eq!(back[1].outcome.cpu_p95_cores, 1.0);
    }

    #[test]
    fn google_job_days_become_runs_of_the_job() {
        let dir = tempfile::tempdir().expect("temp dir");
        let day = |cpu: f64| {
            (0..288)
                .map(|i| format!("{} 10.0\n", cpu + f64::from(i) / 288.0))
                .collect::<String>()
        };
        std::fs::write(dir.path().join("vm_42_1"), day(1.0)).expect("write");
        std::fs::write(dir.path().join("vm_42_3"), day(2.0)).expect("write");
        std::fs::write(dir.path().join("vm_7_2"), day(5.0)).expect("write");
        let (runs, stats) =
            convert(&args(Trace::Google2011Jobs, dir.path(), 86_400)).expect("converts");
        assert_eq!((stats.files, stats.task_types, runs.len()), (3, 2, 3));
        let job42: Vec<&RunSummary> = runs
            .iter()
            .filter(|r| r.task_key == TaskKey::new("google2011_jobs/job42"))
            .collect();
        assert_eq!(job42.len(), 2);
        assert_eq!(job42[0].started_at_ms, GOOGLE2011_START_MS);
        assert_eq!(
            job42[1].started_at_ms,
            GOOGLE2011_START_MS + 2 * 86_400_000,
            "day 3"
        );
        assert_eq!(job42[0].outcome.duration_s, 86_400.0);
        assert_eq!(
            job42[0].outcome.peak_memory_bytes,
            (10.0 * GIB).round() as u64
        );
        assert!(job42[1].outcome.cpu_p95_cores > job42[0].outcome.cpu_p95_cores);
        assert_eq!(job42[0].meta.requested_memory_bytes, None);
    }

    #[test]
    fn bad_input_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        for m in BITBRAINS_MONTHS {
            std::fs::create_dir(dir.path().join(m)).expect("month dir");
        }
        std::fs::write(
            dir.path().join("2013-7/1.csv"),
            "cpu_usage,assigned_mem\n1,2\n",
        )
        .expect("write");
        let err =
            convert(&args(Trace::BitbrainsRnd, dir.path(), 86_400)).expect_err("wrong header");
        assert!(
            err.to_string().contains("1.csv") && err.to_string().contains("Bitbrains"),
            "{err}"
        );

        std::fs::write(
            dir.path().join("2013-7/1.csv"),
            format!("{HEADER}\n1372629804;\t2;\t4000;\toops;\t0;\t1;\t1;\t0;\t0;\t0;\t0\n"),
        )
        .expect("write");
        let err = convert(&args(Trace::BitbrainsRnd, dir.path(), 86_400)).expect_err("bad value");
        let msg = err.to_string();
        assert!(
            msg.contains("line 2") && msg.contains("CPU usage [MHZ]") && msg.contains("oops"),
            "{msg}"
        );

        let g = tempfile::tempdir().expect("temp dir");
        std::fs::write(g.path().join("vm_1_x"), "1 2\n").expect("write");
        let err = convert(&args(Trace::Google2011Jobs, g.path(), 86_400)).expect_err("bad name");
        assert!(err.to_string().contains("vm_<job id>_<day"), "{err}");
        std::fs::remove_file(g.path().join("vm_1_x")).expect("rm");
        std::fs::write(g.path().join("vm_1_1"), "1 2 3\n").expect("write");
        let err = convert(&args(Trace::Google2011Jobs, g.path(), 86_400)).expect_err("3 fields");
        assert!(
            err.to_string().contains("line 1: 3 fields, expected 2"),
            "{err}"
        );

        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let err = parse_args(&s(&["--trace", "materna"])).expect_err("unknown trace");
        assert!(err.to_string().contains("\"materna\""), "{err}");
        let err = parse_args(&s(&["--trace", "bitbrains_rnd", "--window-s", "1000"]))
            .expect_err("stride");
        assert!(err.to_string().contains("--window-s"), "{err}");
        let err = parse_args(&s(&["--trace", "bitbrains_rnd", "--min-coverage", "1.5"]))
            .expect_err("coverage");
        assert!(err.to_string().contains("--min-coverage"), "{err}");
        let err =
            parse_args(&s(&["--trace", "bitbrains_rnd", "--dir", "d"])).expect_err("no --out");
        assert_eq!(err.to_string(), "missing --out");
    }
}
