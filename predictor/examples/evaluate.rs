//! Replays a JSON-lines trace (format: `predictor::eval` docs) and prints, per policy and resource, the
//! under-prediction rate, mean relative slack and interval coverage as a Markdown table.
//!
//! `cargo run --release -p predictor --example evaluate -- <trace.jsonl> [--retrain-every N]`

use std::path::PathBuf;
use std::process::ExitCode;

use predictor::eval::{EvalConfig, evaluate, read_trace};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first().map(PathBuf::from) else {
        eprintln!("usage: evaluate <trace.jsonl> [--retrain-every N]");
        return ExitCode::from(2);
    };
    let mut cfg = EvalConfig::default();
    if let Some(pos) = args.iter().position(|a| a == "--retrain-every") {
        match args.get(pos + 1).and_then(|v| v.parse().ok()) {
            Some(n) => cfg.retrain_every = n,
            None => {
                eprintln!("evaluate: --retrain-every needs a number");
                return ExitCode::from(2);
            }
        }
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
