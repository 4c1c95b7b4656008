//! `predictivectl`: the operator's view of the broker, over its socket (see docs/BROKER-API.md).
//!
//! ```text
//! predictivectl [--socket PATH] [--json] [--timeout SECS] status
//! predictivectl [...] models
//! predictivectl [...] explain CONTAINER [--limit N]
//! predictivectl [...] report CONTAINER|TASK-TYPE [--container | --task-type] [-o FILE.svg]
//! predictivectl [...] export [--max-runs-per-type N] [-o FILE.json]
//! ```
//!
//! `export` writes the broker's run history (per task type its newest N runs, default 500) as a versioned file
//! another node's broker imports (`broker::transfer`); with `-o` atomically (temporary dot-file, rename), so a
//! watched import directory never reads half a file.
//!
//! Tables for people by default; `--json` prints the broker's reply as JSON for scripts. `report` writes an SVG
//! chart of usage, allocation and the predicted band over time (CPU and memory), from the `history` request.
//! Every failure is one line on stderr naming what was wrong; exit status 2 for a usage error, 1 otherwise.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::api::{
    self, Decisions, ErrorCode, Explain, History, HistoryQuery, Models, Request, Response, Status,
};
use crate::client::{Client, ClientError};

const USAGE: &str = "usage: predictivectl [--socket PATH] [--json] [--timeout SECS] \
<status | models | explain CONTAINER [--limit N] | report CONTAINER|TASK-TYPE [--container|--task-type] [-o FILE.svg] \
| export [--max-runs-per-type N] [-o FILE.json]>";

/// What `report` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A container, else a task type.
    Either,
    /// A container.
    Container,
    /// A task type.
    TaskType,
}

/// A command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `status`.
    Status,
    /// `models`.
    Models,
    /// `explain CONTAINER`.
    Explain {
        /// The container.
        container: String,
        /// Newest decisions shown.
        limit: usize,
    },
    /// `report NAME`.
    Report {
        /// Container id or task type.
        name: String,
        /// Which of the two.
        subject: Subject,
        /// The SVG file (`-` = stdout); default `NAME.svg`.
        output: Option<PathBuf>,
    },
    /// `export`.
    Export {
        /// Newest runs per task type.
        newest_per_type: usize,
        /// The file (`-` or none = stdout).
        output: Option<PathBuf>,
    },
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The broker's socket.
    pub socket: PathBuf,
    /// JSON instead of tables.
    pub json: bool,
    /// Bound on each request.
    pub timeout: Duration,
    /// What to do.
    pub command: Command,
}

/// Why `predictivectl` failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments.
    #[error("{0} ({USAGE})")]
    Usage(String),
    /// Nothing listens on the socket.
    #[error("no broker at {path}: is predictived running? (--socket picks another)")]
    NoBroker {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker does not know the container or task type.
    #[error("{0}")]
    NotFound(String),
    /// Talking to the broker failed.
    #[error("talking to the broker")]
    Client(#[source] ClientError),
    /// Writing the output failed.
    #[error("writing {path}")]
    Write {
        /// The file (`-` for stdout).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl CtlError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

fn client_error(e: ClientError) -> CtlError {
    match e {
        ClientError::Connect { path, source } => CtlError::NoBroker { path, source },
        ClientError::Broker(r) if r.code == ErrorCode::NotFound => CtlError::NotFound(r.message),
        e => CtlError::Client(e),
    }
}

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, CtlError> {
    let usage = |m: String| CtlError::Usage(m);
    let mut socket = PathBuf::from(api::DEFAULT_SOCKET);
    let mut json = false;
    let mut timeout = Duration::from_secs(5);
    let mut limit = 100usize;
    let mut subject = Subject::Either;
    let mut output = None;
    let mut newest_per_type = api::DEFAULT_EXPORT_RUNS_PER_TYPE;
    let mut words = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" => return Err(usage("help".to_owned())),
            "--socket" => socket = value()?.into(),
            "--json" => json = true,
            "--timeout" => {
                let v = value()?;
                timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        usage(format!(
                            "--timeout: {v:?} is not a positive number of seconds"
                        ))
                    })?;
            }
            "--limit" => {
                let v = value()?;
                limit =
                    v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        usage(format!("--limit: {v:?} is not a positive integer"))
                    })?;
            }
            "--max-runs-per-type" => {
                let v = value()?;
                newest_per_type = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=api::MAX_EXPORT_RUNS_PER_TYPE).contains(n))
                    .ok_or_else(|| {
                        usage(format!(
                            "--max-runs-per-type: {v:?} is not an integer in 1..={}",
                            api::MAX_EXPORT_RUNS_PER_TYPE
                        ))
                    })?;
            }
            "--container" => subject = Subject::Container,
            "--task-type" => subject = Subject::TaskType,
            "-o" | "--output" => output = Some(PathBuf::from(value()?)),
            f if f.starts_with('-') && f != "-" => {
                return Err(usage(format!("unknown flag {a:?}")));
            }
            _ => words.push(a),
        }
    }
    let mut w = words.into_iter();
    let cmd = w
        .next()
        .ok_or_else(|| usage("no command given".to_owned()))?;
    let mut operand = |what: &str| {
        w.next()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| usage(format!("{cmd} needs {what}")))
    };
    let command = match cmd.as_str() {
        "status" => Command::Status,
        "models" => Command::Models,
        "explain" => Command::Explain {
            container: operand("a container id")?,
            limit,
        },
        "report" => Command::Report {
            name: operand("a container id or task type")?,
            subject,
            output,
        },
        "export" => Command::Export {
            newest_per_type,
            output,
        },
        other => return Err(usage(format!("unknown command {other:?}"))),
    };
    if let Some(extra) = w.next() {
        return Err(usage(format!("unexpected argument {extra:?}")));
    }
    Ok(Args {
        socket,
        json,
        timeout,
        command,
    })
}

/// `text` with every control character but newline escaped (`\u{1b}`): values a container chose (ids, commands,
/// images) never reach the terminal as escape sequences. JSON output is escaped by serde already.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CtlError> {
    out.write_all(terminal_safe(text).as_bytes())
        .map_err(|source| CtlError::Write {
            path: PathBuf::from("-"),
            source,
        })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

fn history(c: &mut Client, name: &str, subject: Subject) -> Result<History, CtlError> {
    let ask = |c: &mut Client, q: HistoryQuery| match c.call(&Request::History(q)) {
        Ok(Response::History(h)) => Ok(h),
        Ok(_) => Err(CtlError::Client(ClientError::Unexpected {
            expected: "history",
        })),
        Err(e) => Err(client_error(e)),
    };
    let as_container = || HistoryQuery {
        container_id: Some(name.to_owned()),
        ..HistoryQuery::default()
    };
    let as_type = || HistoryQuery {
        task_key: Some(name.to_owned()),
        ..HistoryQuery::default()
    };
    match subject {
        Subject::Container => ask(c, as_container()),
        Subject::TaskType => ask(c, as_type()),
        Subject::Either => match ask(c, as_container()) {
            Err(CtlError::NotFound(_)) => ask(c, as_type()).map_err(|e| match e {
                CtlError::NotFound(_) => CtlError::NotFound(format!(
                    "{name} is neither a container nor a task type the broker knows"
                )),
                e => e,
            }),
            r => r,
        },
    }
}

/// Every page of `export`, as an export file.
fn export(
    c: &mut Client,
    newest_per_type: usize,
) -> Result<crate::transfer::HistoryFile, CtlError> {
    let mut runs = Vec::new();
    let mut after = None;
    let mut node_id;
    loop {
        let page = match c.call(&Request::Export(api::ExportQuery {
            after: after.take(),
            newest_per_type: Some(newest_per_type),
            limit: None,
        })) {
            Ok(Response::Export(p)) => p,
            Ok(_) => {
                return Err(CtlError::Client(ClientError::Unexpected {
                    expected: "export",
                }));
            }
            Err(e) => return Err(client_error(e)),
        };
        node_id = page.node_id;
        let empty = page.runs.is_empty();
        runs.extend(page.runs);
        match page.next {
            Some(n) if !empty => after = Some(n),
            _ => break,
        }
    }
    Ok(crate::transfer::HistoryFile {
        format: crate::transfer::FORMAT.to_owned(),
        version: crate::transfer::FILE_VERSION,
        node_id,
        exported_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        runs,
    })
}

/// Runs a command, writing its output to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<(), CtlError> {
    let mut c = Client::new(&args.socket, args.timeout);
    match &args.command {
        Command::Export {
            newest_per_type,
            output,
        } => {
            let file = export(&mut c, *newest_per_type)?;
            write_export(&file, output.as_deref(), out)
        }
        Command::Status => {
            let s = c.status().map_err(client_error)?;
            let text = if args.json {
                to_json(&s)
            } else {
                status_table(&s)
            };
            write_out(out, &text)
        }
        Command::Models => {
            let m = c.models().map_err(client_error)?;
            let text = if args.json {
                to_json(&m)
            } else {
                models_table(&m)
            };
            write_out(out, &text)
        }
        Command::Explain { container, limit } => {
            let d = c
                .explain(&Explain {
                    container_id: Some(container.clone()),
                    limit: Some(*limit),
                    before_seq: None,
                })
                .map_err(client_error)?;
            if d.decisions.is_empty() {
                let s = c.status().map_err(client_error)?;
                if !s.tasks.iter().any(|t| &t.container_id == container) {
                    return Err(CtlError::NotFound(format!(
                        "no decision recorded for container {container} and it is not running: unknown container"
                    )));
                }
            }
            let text = if args.json {
                to_json(&d)
            } else {
                explain_table(container, &d)
            };
            write_out(out, &text)
        }
        Command::Report {
            name,
            subject,
            output,
        } => {
            let h = history(&mut c, name, *subject)?;
            write_report(&h, name, output.as_deref(), args.json, out)
        }
    }
}

/// Writes an export file to `output` (atomically), or to stdout when it is `-` or not given.
fn write_export(
    file: &crate::transfer::HistoryFile,
    output: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    match output {
        Some(path) if path.as_os_str() != "-" => {
            crate::transfer::write_file(path, file).map_err(|e| match e {
                crate::transfer::TransferError::Write { source, .. } => CtlError::Write {
                    path: path.to_path_buf(),
                    source,
                },
                e => CtlError::Write {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                },
            })?;
            let types: std::collections::HashSet<&str> =
                file.runs.iter().map(|r| r.task_key.as_str()).collect();
            write_out(
                out,
                &format!(
                    "wrote {} ({} runs of {} task types, node {})\n",
                    path.display(),
                    file.runs.len(),
                    types.len(),
                    file.node_id
                ),
            )
        }
        _ => {
            let mut text = serde_json::to_string(file).map_err(|e| CtlError::Write {
                path: PathBuf::from("-"),
                source: std::io::Error::other(e),
            })?;
            text.push('\n');
            write_out(out, &text)
        }
    }
}

/// Writes a report's SVG to `output` (`-`: stdout; default `<name>.svg`, none with `--json`), and what was written.
fn write_report(
    h: &History,
    name: &str,
    output: Option<&std::path::Path>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let svg = svg(h, name);
    let path = match output {
        Some(p) => p.to_path_buf(),
        None if json => PathBuf::new(),
        None => PathBuf::from(format!("{}.svg", file_stem(name))),
    };
    if path.as_os_str() == "-" {
        write_out(out, &svg)?;
    } else if !path.as_os_str().is_empty() {
        std::fs::write(&path, &svg).map_err(|source| CtlError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if json {
        write_out(out, &to_json(h))
    } else if path.as_os_str() != "-" {
        write_out(
            out,
            &format!(
                "wrote {} ({} points, {})\n",
                path.display(),
                h.points.len(),
                if h.prediction.is_some() {
                    "with the predicted band"
                } else {
                    "cold start: no predicted band"
                }
            ),
        )
    } else {
        Ok(())
    }
}

/// The binary's main.
pub fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(CtlError::Usage(m)) if m == "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("predictivectl: {e}");
            return e.exit_code();
        }
    };
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    match run(&args, &mut lock) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("predictivectl: {}", crate::error_chain(&e));
            e.exit_code()
        }
    }
}

fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---- tables ----

/// Bytes in binary units, one decimal.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String, none: &str) -> String {
    v.map(f).unwrap_or_else(|| none.to_owned())
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for r in rows {
        line(&mut out, r.iter().map(String::as_str).collect());
    }
    out
}

/// UTC `YYYY-MM-DD HH:MM:SS.mmm` from ms since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `predictivectl status`.
pub fn status_table(s: &Status) -> String {
    // `+ 0.0`: an empty f64 sum is -0.0.
    let alloc_cpu: f64 = s
        .tasks
        .iter()
        .filter_map(|t| t.allocation.cpu_cores)
        .sum::<f64>()
        + 0.0;
    let alloc_mem: u64 = s
        .tasks
        .iter()
        .filter_map(|t| t.allocation.memory_bytes)
        .sum();
    let mut out = format!(
        "host pool: {:.2} CPUs, {} memory; allocated {:.2} CPUs, {} ({:.2} CPUs, {} unallocated)\n\
         {} tasks, {} leases, model version {}, broker {}, tick {} ms\n",
        s.host.cpu_cores,
        bytes(s.host.memory_bytes as f64),
        alloc_cpu,
        bytes(alloc_mem as f64),
        (s.host.cpu_cores - alloc_cpu).max(0.0),
        bytes(s.host.memory_bytes.saturating_sub(alloc_mem) as f64),
        s.tasks.len(),
        s.leases.len(),
        s.model_version,
        s.broker_version,
        s.tick_ms,
    );
    if s.tasks.is_empty() {
        out.push_str("\nno tasks registered\n");
    } else {
        let mut tasks = s.tasks.clone();
        tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        let rows: Vec<Vec<String>> = tasks.iter().map(|t| task_row(s, t)).collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "CONTAINER",
                "TASK TYPE",
                "MODE",
                "PRIO",
                "CPU USED",
                "CPU PREDICTED",
                "CPU ALLOC",
                "MEM USED",
                "MEM PREDICTED",
                "MEM ALLOC",
                "LENT",
                "BORROWED",
                "STATE",
            ],
            &rows,
        ));
    }
    if !s.leases.is_empty() {
        out.push('\n');
        out.push_str(&lease_table(s));
    }
    out.push_str(&io_lines(s));
    out
}

/// Per task with a disk I/O priority: what is written, and per device which of it takes effect and why.
fn io_lines(s: &Status) -> String {
    let mut out = String::new();
    for t in &s.tasks {
        let Some(io) = &t.io else { continue };
        let class = io.ioprio.map_or_else(|| "-".to_owned(), |p| p.to_string());
        out.push_str(&format!(
            "\ndisk I/O {}: weight {}, ioprio {class}\n",
            t.container_id, io.weight
        ));
        for d in &io.devices {
            out.push_str(&format!(
                "  {} ({}): {}: {}\n",
                d.device, d.scheduler, d.mechanism, d.why
            ));
        }
    }
    out
}

/// One task's row of the status table.
fn task_row(s: &Status, t: &crate::controller::TaskView) -> Vec<String> {
    let p = s
        .predictions
        .iter()
        .find(|p| p.container_id == t.container_id);
    let lent: Vec<_> = s
        .leases
        .iter()
        .filter(|l| l.lender.as_deref() == Some(t.container_id.as_str()))
        .collect();
    let held: Vec<_> = s
        .leases
        .iter()
        .filter(|l| l.holder == t.container_id)
        .collect();
    let leases = |v: &[&crate::controller::Lease]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{} ({:.2})",
                v.len(),
                v.iter().map(|l| l.amount).sum::<f64>()
            )
        }
    };
    let mut state = Vec::new();
    if t.frozen {
        state.push("paused".to_owned());
    }
    if let Some(u) = t.usage
        && u.cpu_throttled_fraction > 0.0
    {
        state.push(format!(
            "throttled {:.0}%",
            u.cpu_throttled_fraction * 100.0
        ));
    }
    if t.critical {
        state.push("critical".to_owned());
    }
    if state.is_empty() {
        state.push("running".to_owned());
    }
    vec![
        t.container_id.clone(),
        opt(p.map(|p| p.task_key.clone()), |k| k, "-"),
        format!("{:?}", t.mode).to_lowercase(),
        t.priority.to_string(),
        opt(t.usage, |u| format!("{:.2}", u.cpu_cores), "-"),
        opt(
            p.and_then(|p| p.cpu_cores),
            |e| format!("{:.2} [{:.2}-{:.2}]", e.point, e.lower, e.upper),
            "cold",
        ),
        opt(t.allocation.cpu_cores, |c| format!("{c:.2}"), "unlimited"),
        opt(t.usage, |u| bytes(u.memory_bytes as f64), "-"),
        opt(
            p.and_then(|p| p.memory_bytes),
            |e| format!("{} [{}-{}]", bytes(e.point), bytes(e.lower), bytes(e.upper)),
            "cold",
        ),
        opt(t.allocation.memory_bytes, |b| bytes(b as f64), "unlimited"),
        leases(&lent),
        leases(&held),
        state.join(", "),
    ]
}

/// The status table's leases, by id.
fn lease_table(s: &Status) -> String {
    let mut leases = s.leases.clone();
    leases.sort_by_key(|l| l.id);
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                format!("{:?}", l.resource).to_lowercase(),
                l.lender.clone().unwrap_or_else(|| "host".to_owned()),
                l.holder.clone(),
                format!("{:.2}", l.amount),
                utc(l.granted_at_ms),
                utc(l.expires_at_ms),
            ]
        })
        .collect();
    table(
        &[
            "LEASE",
            "RESOURCE",
            "LENDER",
            "HOLDER",
            "AMOUNT",
            "GRANTED (UTC)",
            "EXPIRES (UTC)",
        ],
        &rows,
    )
}

/// `predictivectl models`.
pub fn models_table(m: &Models) -> String {
    let mut out = format!(
        "model version {}, {} task types (error: forward-validated mean |ln(actual/predicted)|, 0.05 = ~5%)\n",
        m.model_version,
        m.task_types.len()
    );
    if m.task_types.is_empty() {
        out.push_str("\nno task type recorded yet\n");
        return out;
    }
    let target = |t: &predictive_api::prediction::TaskTypeSummary,
                  r: predictive_api::prediction::Resource| {
        t.targets
            .iter()
            .find(|x| x.resource == r)
            .map(|x| format!("{} {:.3}", x.kind.name(), x.error))
            .unwrap_or_else(|| "-".to_owned())
    };
    let rows: Vec<Vec<String>> = m
        .task_types
        .iter()
        .map(|t| {
            vec![
                t.task_key.clone(),
                t.runs_seen.to_string(),
                opt(t.model_version, |v| format!("v{v}"), "none (cold)"),
                target(t, predictive_api::prediction::Resource::Cpu),
                target(t, predictive_api::prediction::Resource::Memory),
                target(t, predictive_api::prediction::Resource::Duration),
                target(t, predictive_api::prediction::Resource::Io),
                if t.image.is_empty() {
                    "-".to_owned()
                } else {
                    t.image.clone()
                },
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            "TASK TYPE",
            "RUNS",
            "MODEL",
            "CPU",
            "MEMORY",
            "DURATION",
            "IO",
            "IMAGE",
        ],
        &rows,
    ));
    out
}

fn decision_value(resource: &str, v: Option<f64>) -> String {
    match (resource, v) {
        (_, None) => "unlimited".to_owned(),
        ("memory", Some(b)) => bytes(b),
        ("freezer", Some(f)) => if f > 0.5 { "paused" } else { "running" }.to_owned(),
        (_, Some(c)) => format!("{c:.2}"),
    }
}

/// `predictivectl explain CONTAINER`.
pub fn explain_table(container: &str, d: &Decisions) -> String {
    let mut out = format!(
        "{} decisions for {container}, oldest first\n",
        d.decisions.len()
    );
    if d.decisions.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = d
        .decisions
        .iter()
        .map(|x| {
            let directive = serde_json::to_value(x.directive)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            vec![
                utc(x.at_ms),
                x.resource.clone(),
                directive,
                match (x.directive, x.old_value) {
                    (predictive_api::prediction::DecisionKind::Hold, _) => "-".to_owned(),
                    (_, None) if x.resource != "cpu" && x.resource != "memory" => {
                        decision_value(&x.resource, x.new_value)
                    }
                    (_, old) => format!(
                        "{} -> {}",
                        decision_value(&x.resource, old),
                        decision_value(&x.resource, x.new_value)
                    ),
                },
                x.reason.clone(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["TIME (UTC)", "RESOURCE", "DIRECTIVE", "CHANGE", "REASON"],
        &rows,
    ));
    out
}

// ---- the SVG report ----

const W: f64 = 960.0;
const PANEL_H: f64 = 230.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const GAP: f64 = 70.0;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One panel's series, in seconds since the start and the panel's unit.
struct Series {
    usage: Vec<(f64, f64)>,
    alloc: Vec<(f64, f64)>,
    /// (x0, x1, lower, upper) per predicted bucket.
    band: Vec<(f64, f64, f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn pts(v: &[(f64, f64)]) -> String {
    let mut s = String::new();
    for (i, (x, y)) in v.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{x:.1},{y:.1}");
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn panel(
    out: &mut String,
    id: &str,
    title: &str,
    top: f64,
    s: &Series,
    t_max: f64,
    fmt: &dyn Fn(f64) -> String,
) {
    let y_max = nice_max(
        s.usage
            .iter()
            .map(|p| p.1)
            .chain(s.alloc.iter().map(|p| p.1))
            .chain(s.band.iter().map(|b| b.3))
            .fold(0.0, f64::max)
            * 1.05,
    );
    let pw = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t / t_max).clamp(0.0, 1.0) * pw;
    let y = |v: f64| top + PANEL_H - (v / y_max).clamp(0.0, 1.0) * PANEL_H;
    let _ = writeln!(out, "<g id=\"{id}\" class=\"panel\">");
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"panel-title\">{}</text>",
        top - 10.0,
        xml(title)
    );
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{pw}\" height=\"{PANEL_H}\" class=\"frame\"/>"
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"ytick\">{}</text>",
            LEFT + pw,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            xml(&fmt(v))
        );
    }
    for i in 0..=6 {
        let t = t_max * f64::from(i) / 6.0;
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xtick\">{}</text>",
            x(t),
            top + PANEL_H + 16.0,
            xml(&format!("{t:.0}s"))
        );
    }
    // The predicted band: upper edge forward, lower edge back.
    let mut band = Vec::new();
    for b in &s.band {
        band.push((x(b.0), y(b.3)));
        band.push((x(b.1), y(b.3)));
    }
    for b in s.band.iter().rev() {
        band.push((x(b.1), y(b.2)));
        band.push((x(b.0), y(b.2)));
    }
    let _ = writeln!(
        out,
        "<polygon id=\"{id}-predicted-band\" class=\"predicted-band\" data-series=\"predicted band\" points=\"{}\"/>",
        pts(&band)
    );
    // Allocation as steps: a value holds until the next observation.
    let mut alloc = Vec::new();
    for (i, (t, v)) in s.alloc.iter().enumerate() {
        if i > 0 {
            alloc.push((x(*t), alloc.last().map_or(y(*v), |p: &(f64, f64)| p.1)));
        }
        alloc.push((x(*t), y(*v)));
    }
    let _ = writeln!(
        out,
        "<polyline id=\"{id}-allocation\" class=\"allocation\" data-series=\"allocation\" points=\"{}\"/>",
        pts(&alloc)
    );
    let usage: Vec<(f64, f64)> = s.usage.iter().map(|(t, v)| (x(*t), y(*v))).collect();
    let _ = writeln!(
        out,
        "<polyline id=\"{id}-usage\" class=\"usage\" data-series=\"usage\" points=\"{}\"/>",
        pts(&usage)
    );
    if s.usage.is_empty() && s.alloc.is_empty() && s.band.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"empty\">no data</text>",
            LEFT + pw / 2.0,
            top + PANEL_H / 2.0
        );
    }
    out.push_str("</g>\n");
}

/// The report's CPU and memory series (usage, allocation, predicted band) in seconds since the start, and the
/// last point's time.
fn series(h: &History) -> (Series, Series, f64) {
    let t0 = h
        .started_at_ms
        .or_else(|| h.points.first().map(|p| p.at_ms))
        .unwrap_or(0);
    let rel = |ms: u64| ms.saturating_sub(t0) as f64 / 1000.0;
    let mut cpu = Series {
        usage: Vec::new(),
        alloc: Vec::new(),
        band: Vec::new(),
    };
    let mut mem = Series {
        usage: Vec::new(),
        alloc: Vec::new(),
        band: Vec::new(),
    };
    for p in &h.points {
        let t = rel(p.at_ms);
        cpu.usage.push((t, p.cpu_cores));
        mem.usage.push((t, p.memory_bytes as f64));
        if let Some(a) = p.cpu_alloc_cores {
            cpu.alloc.push((t, a));
        }
        if let Some(a) = p.memory_alloc_bytes {
            mem.alloc.push((t, a as f64));
        }
    }
    let last_t = h.points.last().map_or(0.0, |p| rel(p.at_ms));
    if let Some(p) = &h.prediction {
        let d = if p.duration_s.point > 0.0 {
            p.duration_s.point
        } else {
            last_t.max(1.0)
        };
        if p.profile.is_empty() {
            cpu.band
                .push((0.0, d, p.cpu_cores.lower, p.cpu_cores.upper));
            mem.band
                .push((0.0, d, p.memory_bytes.lower, p.memory_bytes.upper));
        } else {
            let n = p.profile.len() as f64;
            for (i, b) in p.profile.iter().enumerate() {
                let (x0, x1) = (d * i as f64 / n, d * (i + 1) as f64 / n);
                cpu.band
                    .push((x0, x1, b.cpu_cores.lower, b.cpu_cores.upper));
                mem.band
                    .push((x0, x1, b.memory_bytes.lower, b.memory_bytes.upper));
            }
        }
    }
    (cpu, mem, last_t)
}

/// The SVG chart of a history: a CPU panel and a memory panel, each with usage, allocation and the predicted
/// band over seconds since the start of the run. Series carry ids `cpu-usage`, `cpu-allocation`,
/// `cpu-predicted-band`, `memory-usage`, `memory-allocation`, `memory-predicted-band`.
pub fn svg(h: &History, name: &str) -> String {
    let (cpu, mem, last_t) = series(h);
    let band_end = cpu.band.last().map_or(0.0, |b| b.1);
    let t_max = nice_max(last_t.max(band_end).max(1.0));
    let height = TOP + 2.0 * PANEL_H + GAP + 60.0;
    let subject = match &h.container_id {
        Some(c) if c == name => format!("container {c} (task type {})", h.task_key),
        Some(c) => format!("task type {} (latest run: container {c})", h.task_key),
        None => format!("task type {}", h.task_key),
    };
    let started = h.started_at_ms.map(utc).unwrap_or_else(|| "-".to_owned());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    out.push_str(
        "<style>.frame{fill:none;stroke:#888}.grid{stroke:#ddd}.usage{fill:none;stroke:#1f77b4;stroke-width:1.5}\
.allocation{fill:none;stroke:#d62728;stroke-width:1.5}.predicted-band{fill:#2ca02c;fill-opacity:0.25;stroke:#2ca02c;stroke-opacity:0.5}\
.ytick{text-anchor:end}.xtick{text-anchor:middle}.panel-title{font-weight:bold}.title{font-size:15px;font-weight:bold}.empty{text-anchor:middle;fill:#888}</style>\n",
    );
    let _ = writeln!(
        out,
        "<title>{}</title>\n<text x=\"{LEFT}\" y=\"24\" class=\"title\">{}</text>\n<text x=\"{LEFT}\" y=\"42\">started {} UTC; {} points; {}{}</text>",
        xml(&format!("predictive report: {subject}")),
        xml(&subject),
        xml(&started),
        h.points.len(),
        if h.live { "running" } else { "not running" },
        match &h.prediction {
            Some(p) => format!(
                "; predicted band at level {:.2} from model v{} ({} runs)",
                p.level, p.model_version, p.runs
            ),
            None => "; cold start: no prediction".to_owned(),
        },
    );
    // Legend.
    let ly = 58.0;
    for (i, (class, label)) in [
        ("usage", "usage"),
        ("allocation", "allocation"),
        ("predicted-band", "predicted band"),
    ]
    .iter()
    .enumerate()
    {
        let lx = W - RIGHT - 330.0 + 115.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"18\" height=\"8\" class=\"{class}\"/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>",
            ly - 8.0,
            lx + 24.0,
            ly
        );
    }
    panel(
        &mut out,
        "cpu",
        "CPU (cores)",
        TOP + 20.0,
        &cpu,
        t_max,
        &|v| format!("{v:.2}"),
    );
    panel(
        &mut out,
        "memory",
        "Memory",
        TOP + 20.0 + PANEL_H + GAP,
        &mem,
        t_max,
        &bytes,
    );
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xtick\">seconds since start</text>\n</svg>",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        height - 8.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, CtlError> {
        parse_args(a.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_and_commands_parse() {
        let a = args(&["--socket", "/tmp/x.sock", "--json", "status"]).expect("ok");
        assert_eq!(
            (a.socket, a.json, a.command),
            (PathBuf::from("/tmp/x.sock"), true, Command::Status)
        );
        let a = args(&["report", "etl", "--task-type", "-o", "a.svg"]).expect("ok");
        assert_eq!(
            a.command,
            Command::Report {
                name: "etl".to_owned(),
                subject: Subject::TaskType,
                output: Some(PathBuf::from("a.svg")),
            }
        );
        let a = args(&["explain", "c1", "--limit=5", "--timeout=0.5"]).expect("ok");
        assert_eq!(
            a.command,
            Command::Explain {
                container: "c1".to_owned(),
                limit: 5
            }
        );
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.socket, PathBuf::from(api::DEFAULT_SOCKET));
    }

    #[test]
    fn bad_arguments_name_what_was_wrong() {
        for (a, needle) in [
            (&["--bogus", "status"][..], "unknown flag \"--bogus\""),
            (&["explain"][..], "explain needs a container id"),
            (&["frobnicate"][..], "unknown command \"frobnicate\""),
            (&[][..], "no command"),
            (&["status", "extra"][..], "unexpected argument \"extra\""),
            (&["--limit", "0", "status"][..], "--limit"),
            (&["--socket"][..], "--socket needs a value"),
        ] {
            let e = args(a).expect_err(needle);
            assert!(matches!(e, CtlError::Usage(_)));
            assert!(e.to_string().contains(needle), "{a:?}: {e}");
        }
    }

    #[test]
    fn utc_and_bytes_format() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_824_000_123), "2026-11-28 00:00:00.123");
        assert_eq!(bytes(512.0), "512B");
        assert_eq!(bytes(1536.0 * 1024.0), "1.5MiB");
    }

    #[test]
    fn terminal_output_escapes_control_characters() {
        assert_eq!(terminal_safe("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\n");
        assert_eq!(terminal_safe("plain\n"), "plain\n");
    }

    #[test]
    fn svg_has_the_three_series_and_escapes_names() {
        let h = History {
            task_key: "a<b>&c".to_owned(),
            container_id: Some("c1".to_owned()),
            live: true,
            started_at_ms: Some(1000),
            total_points: None,
            next_offset: None,
            points: (0..5)
                .map(|i| api::HistoryPoint {
                    at_ms: 1000 + i * 1000,
                    cpu_cores: 0.1 * i as f64,
                    memory_bytes: 1 << 20,
                    cpu_alloc_cores: Some(0.5),
                    memory_alloc_bytes: Some(2 << 20),
                    ..api::HistoryPoint::default()
                })
                .collect(),
            prediction: None,
        };
        let s = svg(&h, "c1");
        for id in [
            "cpu-usage",
            "cpu-allocation",
            "cpu-predicted-band",
            "memory-usage",
        ] {
            assert!(s.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(s.contains("a&lt;b&gt;&amp;c") && !s.contains("a<b>"));
        assert!(s.contains("cold start"));
    }
}
