//! Writes a synthetic JSON-lines trace (format: `predictor::eval` docs) to stdout or a file.
//!
//! `cargo run -p predictor --example gen_trace -- [--tasks N] [--runs-per-task N] [--days D] [--seed S]
//!  [--drift X] [--outliers P] [--out FILE]`

use std::io::Write;
use std::process::ExitCode;

use predictor::eval::write_trace;
use predictor::synth::{SynthConfig, generate};

fn main() -> ExitCode {
    let mut cfg = SynthConfig::default();
    let mut out: Option<String> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        let ok = match args[i].as_str() {
            "--tasks" => val.parse().map(|v| cfg.task_types = v).is_ok(),
            "--runs-per-task" => val.parse().map(|v| cfg.runs_per_task = v).is_ok(),
            "--days" => val.parse().map(|v| cfg.days = v).is_ok(),
            "--seed" => val.parse().map(|v| cfg.seed = v).is_ok(),
            "--drift" => val.parse().map(|v| cfg.drift_scale = v).is_ok(),
            "--outliers" => val.parse().map(|v| cfg.outlier_rate = v).is_ok(),
            "--out" => {
                out = Some(val.clone());
                true
            }
            _ => false,
        };
        if !ok {
            eprintln!("gen_trace: bad argument {} {val}", args[i]);
            return ExitCode::from(2);
        }
        i += 2;
    }
    let runs = generate(&cfg);
    let result = match &out {
        Some(path) => std::fs::File::create(path)
            .map_err(|e| format!("creating {path}: {e}"))
            .and_then(|f| {
                write_trace(std::io::BufWriter::new(f), &runs).map_err(|e| e.to_string())
            }),
        None => write_trace(std::io::stdout().lock(), &runs).map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("gen_trace: {e}");
        return ExitCode::FAILURE;
    }
    let _ = std::io::stderr().flush();
    eprintln!(
        "gen_trace: {} runs of {} task types",
        runs.len(),
        cfg.task_types
    );
    ExitCode::SUCCESS
}
