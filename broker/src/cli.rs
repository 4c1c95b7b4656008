//! `predictived`'s command line:
//! `predictived [--config FILE] [--state-dir DIR] [--socket PATH] [--tick-ms N] [--import FILE]...`.
//! Flags override the file. Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG};

const USAGE: &str = "usage: predictived [--config FILE] [--state-dir DIR] [--socket PATH] [--tick-ms N] [--import FILE]...";

/// Parsed flags.
#[derive(Debug, Default, PartialEq)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--tick-ms`.
    pub tick_ms: Option<u64>,
    /// `--import` (repeatable): export files merged at start.
    pub import: Vec<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse_flags(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--config" => f.config = Some(value()?.into()),
            "--state-dir" => f.state_dir = Some(value()?.into()),
            "--socket" => f.socket = Some(value()?.into()),
            "--import" => f.import.push(value()?.into()),
            "--tick-ms" => {
                let v = value()?;
                f.tick_ms = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--tick-ms: {v:?} is not a positive integer"))?,
                );
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(f)
}

/// The binary's main.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let flags = match parse_flags(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("predictived: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
        assert!(
            parse_flags(args(&["--tick-ms", "0"]))
                .expect_err("zero")
                .contains("--tick-ms")
        );
        assert!(
            parse_flags(args(&["--socket"]))
                .expect_err("no value")
                .contains("--socket")
        );
        assert!(
            parse_flags(args(&["--frobnicate"]))
                .expect_err("unknown")
                .contains("frobnicate")
        );
    }
}
