//! `predictived`'s command line:
//! `predictived [--config FILE] [--state-dir DIR] [--socket PATH] [--tick-ms N] [--import FILE]...`.
//! Flags override the file. Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG};

const USAGE: &str = "usage: predictived [--config FILE] [--state-dir DIR] [--socket PATH] [--tick-ms N] [--import FILE]...";

/// predictived: the host-local broker that predicts, allocates, lends and pauses containers' resources. Flags
/// override the configuration file.
#[derive(Debug, Default, PartialEq, clap::Parser)]
#[command(name = "predictived")]
pub struct Flags {
    /// The configuration file [default: /etc/predictive/predictived.toml, used only if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The state directory (the predictor's store, the lock).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The socket the shims and predictivectl connect to.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The controller's tick, ms.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: Option<u64>,
    /// An export file (`predictivectl export`) merged at start; repeatable.
    #[arg(long, value_name = "FILE")]
    pub import: Vec<PathBuf>,
}

/// Why the arguments were not run: `--help`, or a usage error.
#[derive(Debug, PartialEq)]
pub enum FlagsError {
    /// `--help`: the text to print.
    Help(String),
    /// What was wrong, one line naming the argument.
    Usage(String),
}

/// Parses the arguments after the program name.
pub fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, FlagsError> {
    let argv = std::iter::once("predictived".to_owned()).chain(args);
    <Flags as clap::Parser>::try_parse_from(argv).map_err(|e| {
        if e.kind() == clap::error::ErrorKind::DisplayHelp {
            return FlagsError::Help(e.to_string());
        }
        // clap's first paragraph on one line, without its `error: `.
        let text = e.to_string();
        let line = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        FlagsError::Usage(line.strip_prefix("error: ").unwrap_or(&line).to_owned())
    })
}

/// The binary's main.
pub fn main() -> ExitCode {
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(FlagsError::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(FlagsError::Usage(e)) => {
            eprintln!("predictived: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A line that cannot be written is dropped. The subscriber would report it with `eprintln!` on the same
        // stderr (a shim-started broker's is its log file), which panics when that fails too: on a full disk every
        // thread that logged died, the store's recorder with it, and every later request waited out its timeout.
        .log_internal_errors(false)
        .try_init();
    let (path, required) = match &flags.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut cfg = match Config::load(&path, required) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("predictived: {}", crate::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(d) = flags.state_dir {
        cfg.state_dir = d;
    }
    if let Some(s) = flags.socket {
        cfg.socket = s;
    }
    if let Some(t) = flags.tick_ms {
        cfg.tick_ms = t;
    }
    cfg.import.files.extend(flags.import);
    match crate::server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("predictived: {}", crate::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_parse_both_forms_and_reject_unknown() {
        let f = parse_flags(args(&[
            "--state-dir",
            "/tmp/s",
            "--socket=/tmp/b.sock",
            "--tick-ms",
            "50",
            "--import",
            "/a.json",
            "--import=/b.json",
        ]))
        .expect("valid");
        assert_eq!(
            f.import,
            vec![PathBuf::from("/a.json"), PathBuf::from("/b.json")]
        );
        assert_eq!(f.state_dir, Some(PathBuf::from("/tmp/s")));
        assert_eq!(f.socket, Some(PathBuf::from("/tmp/b.sock")));
        assert_eq!(f.tick_ms, Some(50));
        for (a, needle) in [
            (&["--tick-ms", "0"][..], "--tick-ms"),
            (&["--tick-ms", "x"][..], "--tick-ms"),
            (&["--socket"][..], "--socket"),
            (&["--frobnicate"][..], "'--frobnicate'"),
            (&["run"][..], "'run'"),
        ] {
            match parse_flags(args(a)) {
                Err(FlagsError::Usage(e)) => {
                    assert!(e.contains(needle) && !e.contains('\n'), "{a:?}: {e}")
                }
                other => panic!("{a:?}: {other:?}"),
            }
        }
        assert!(
            matches!(parse_flags(args(&["-h"])), Err(FlagsError::Help(h)) if h.contains("--import <FILE>"))
        );
    }
}
