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
//! another node's broker imports (`predictive_api::history_file`); with `-o` atomically (temporary dot-file, rename), so a
//! watched import directory never reads half a file.
//!
//! Tables for people by default; `--json` prints the broker's reply as JSON for scripts. `report` writes an SVG
//! chart of usage, allocation and the predicted band over time (CPU and memory), from the `history` request.
//! Every failure is one line on stderr naming what was wrong; exit status 2 for a usage error, 1 otherwise.
//!
//! This crate links the protocol crate (`predictive-api`) only, not the broker: modules [`tables`] (what people
//! read), [`svg`] (the report's chart) and [`args`] (the command line, by clap).

pub mod args;
pub mod svg;
pub mod tables;

use std::io::Write;
use std::path::PathBuf;

use predictive_api::client::{Client, ClientError};
use predictive_api::history_file::{self, HistoryFile};
use predictive_api::wire::{
    self as api, ErrorCode, Explain, History, HistoryQuery, Request, Response,
};

pub use args::{Args, Command, Subject, parse_args};
pub use svg::svg;
pub use tables::{bytes, explain_table, models_table, status_table, utc};

/// Why `predictivectl` failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments: what was wrong, on one line.
    #[error("{0} (predictivectl --help shows the usage)")]
    Usage(String),
    /// `--help`: not a failure; the text to print.
    #[error("{0}")]
    Help(String),
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
    /// The exit status: 2 for a usage error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Help(_) => 0,
            CtlError::Usage(_) => 2,
            _ => 1,
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
fn export(c: &mut Client, newest_per_type: usize) -> Result<HistoryFile, CtlError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    history_file::collect(now_ms, |after| {
        match c.call(&Request::Export(api::ExportQuery {
            after,
            newest_per_type: Some(newest_per_type),
            limit: None,
            with_network: Some(true),
        })) {
            Ok(Response::Export(p)) => Ok(p),
            Ok(_) => Err(CtlError::Client(ClientError::Unexpected {
                expected: "export",
            })),
            Err(e) => Err(client_error(e)),
        }
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
    file: &HistoryFile,
    output: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    match output {
        Some(path) if path.as_os_str() != "-" => {
            history_file::write_file(path, file).map_err(|source| CtlError::Write {
                path: path.to_path_buf(),
                source,
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

/// The whole command line: parses `args` (after the program name), runs the command with its output on `out`
/// and any failure as one line on `err`; returns the exit status (0, 1, or 2 for a usage error). The binary is
/// this with the process's streams; tests call it in-process.
pub fn cli(args: impl IntoIterator<Item = String>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(CtlError::Help(text)) => {
            let _ = write!(out, "{text}");
            return 0;
        }
        Err(e) => {
            let _ = writeln!(err, "predictivectl: {e}");
            return e.exit_code();
        }
    };
    match run(&args, out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "predictivectl: {}", predictive_api::error_chain(&e));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_output_escapes_control_characters() {
        assert_eq!(terminal_safe("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\n");
        assert_eq!(terminal_safe("plain\n"), "plain\n");
    }
}
