//! Replays a JSON-lines trace (format: `predictor::eval` docs) the fair way — a run joins the history when it
//! ends, ours is refitted after every finished run of its task type, VPA-like decays with a 24 h half-life,
//! Autopilot-like takes a 24 h window — and prints Markdown tables: each policy at its default (under-prediction
//! rate, mean relative slack, interval coverage), ours against the best member of the history-quantile family at
//! the same or a lower under-prediction rate, and ours' risk/slack curve over the level of its limit.
//!
//! `cargo run --release -p predictor --example evaluate -- <trace.jsonl> [--retrain-every N] [--min-history N]`

use std::path::PathBuf;
use std::process::ExitCode;

use predictor::eval::{EvalConfig, evaluate, read_trace};

const USAGE: &str = "usage: evaluate <trace.jsonl> [--retrain-every N] [--min-history N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first().map(PathBuf::from) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut cfg = EvalConfig::default();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<usize>().ok());
        let slot = match args[i].as_str() {
            "--retrain-every" => &mut cfg.retrain_every,
            "--min-history" => &mut cfg.min_history,
            other => {
                eprintln!("evaluate: unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        match value {
            Some(n) if n > 0 => *slot = n,
            _ => {
                eprintln!(
                    "evaluate: {} needs a positive whole number, got {:?}",
                    args[i],
                    args.get(i + 1).map_or("nothing", String::as_str)
                );
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    let runs = match read_trace(&path) {
        Ok(r) => r,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("evaluate: {msg}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let report = evaluate(&runs, &cfg);
    print!("{}", report.table());
    println!("\nreplay took {:.1} s", started.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
