//! `predictivectl`'s command line, parsed by clap: global flags (`--socket`, `--json`, `--timeout`, before or after
//! the command) and one command with its own flags. A usage error is one line naming what was wrong.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use predictive_api::wire as api;

use crate::CtlError;

/// The operator's view of the broker predictived, over its socket: tables for people, `--json` for scripts.
#[derive(Debug, Parser)]
#[command(
    name = "predictivectl",
    disable_help_subcommand = true,
    arg_required_else_help = false
)]
struct Cli {
    /// The broker's socket.
    #[arg(long, global = true, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the broker's reply as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Bound on each request, seconds.
    #[arg(long, global = true, value_name = "SECS", default_value = "5", value_parser = seconds,
          allow_negative_numbers = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The host pool and every task: used vs predicted vs allocated, leases, pauses and throttles.
    Status,
    /// Task types: runs seen, model version, per target the model kind and its measured error.
    Models,
    /// Every decision about a container, with its reason.
    Explain {
        /// The container id.
        #[arg(value_name = "CONTAINER", value_parser = operand)]
        container: String,
        /// Newest decisions shown.
        #[arg(long, value_name = "N", default_value = "100", value_parser = positive)]
        limit: usize,
    },
    /// An SVG chart of usage, allocation and the predicted band over time (CPU and memory).
    Report {
        /// A container id, else a task type (its latest recorded run against today's prediction).
        #[arg(value_name = "CONTAINER|TASK-TYPE", value_parser = operand)]
        name: String,
        /// NAME is a container.
        #[arg(long, conflicts_with = "task_type")]
        container: bool,
        /// NAME is a task type.
        #[arg(long)]
        task_type: bool,
        /// The SVG file (`-`: stdout); default NAME.svg (none with --json).
        #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
        output: Option<PathBuf>,
    },
    /// The run history (newest N runs per task type), as a file another node's broker imports.
    Export {
        /// Newest runs per task type.
        #[arg(long, value_name = "N", default_value_t = api::DEFAULT_EXPORT_RUNS_PER_TYPE,
              value_parser = runs_per_type)]
        max_runs_per_type: usize,
        /// The file, written atomically (`-` or none: stdout).
        #[arg(short = 'o', long = "output", value_name = "FILE.json")]
        output: Option<PathBuf>,
    },
}

fn seconds(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "not a positive number of seconds".to_owned())
}

fn positive(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "not a positive integer".to_owned())
}

fn runs_per_type(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=api::MAX_EXPORT_RUNS_PER_TYPE).contains(n))
        .ok_or_else(|| format!("not an integer in 1..={}", api::MAX_EXPORT_RUNS_PER_TYPE))
}

fn operand(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("empty".to_owned())
    } else {
        Ok(v.to_owned())
    }
}

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

impl From<Cli> for Args {
    fn from(c: Cli) -> Args {
        let command = match c.command {
            Sub::Status => Command::Status,
            Sub::Models => Command::Models,
            Sub::Explain { container, limit } => Command::Explain { container, limit },
            Sub::Report {
                name,
                container,
                task_type,
                output,
            } => Command::Report {
                name,
                subject: match (container, task_type) {
                    (true, _) => Subject::Container,
                    (_, true) => Subject::TaskType,
                    _ => Subject::Either,
                },
                output,
            },
            Sub::Export {
                max_runs_per_type,
                output,
            } => Command::Export {
                newest_per_type: max_runs_per_type,
                output,
            },
        };
        Args {
            socket: c.socket,
            json: c.json,
            timeout: c.timeout,
            command,
        }
    }
}

/// The first paragraph of a clap error on one line, without clap's `error: `: what was wrong, naming the argument
/// (`unexpected argument '--frobnicate' found`, `invalid value '0' for '--limit <N>': not a positive integer`).
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = words.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

/// Parses the arguments after the program name. `--help` (or `-h`) is [`CtlError::Help`] with the text to print.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, CtlError> {
    let argv = std::iter::once("predictivectl".to_owned()).chain(args);
    match Cli::try_parse_from(argv) {
        Ok(c) => Ok(c.into()),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            Err(CtlError::Help(e.to_string()))
        }
        Err(e) => Err(CtlError::Usage(one_line(&e))),
    }
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
        let a = args(&["export", "-o", "-", "--max-runs-per-type", "20"]).expect("ok");
        assert_eq!(
            (a.timeout, a.command),
            (
                Duration::from_secs(5),
                Command::Export {
                    newest_per_type: 20,
                    output: Some(PathBuf::from("-"))
                }
            )
        );
        assert!(matches!(args(&["--help"]), Err(CtlError::Help(h)) if h.contains("explain")));
    }

    #[test]
    fn bad_arguments_name_what_was_wrong() {
        for (a, needle) in [
            (&["--bogus", "status"][..], "unexpected argument '--bogus'"),
            (&["explain"][..], "<CONTAINER>"),
            (&["explain", " "][..], "<CONTAINER>"),
            (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
            (&[][..], "requires a subcommand"),
            (&["status", "extra"][..], "unexpected argument 'extra'"),
            (&["explain", "c1", "--limit", "0"][..], "--limit"),
            (&["--timeout", "-1", "status"][..], "--timeout"),
            (
                &["export", "--max-runs-per-type", "0"][..],
                "--max-runs-per-type",
            ),
            (
                &["report", "x", "--container", "--task-type"][..],
                "--task-type",
            ),
            (&["--socket"][..], "--socket"),
        ] {
            let e = args(a).expect_err(needle);
            assert!(matches!(e, CtlError::Usage(_)), "{a:?}: {e}");
            let text = e.to_string();
            assert!(text.contains(needle), "{a:?}: {text}");
            assert_eq!(text.lines().count(), 1, "{a:?}: {text}");
        }
    }
}
