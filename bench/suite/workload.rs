//! The workload: one pipeline of real programs per round, with the limits a careful user would write.
//!
//! ```text
//!   web (busybox httpd, host network, priority 10: its p99 is measured while the others run)
//!   phases (stress-ng: a CPU phase, then a memory phase) ──▶ etl-b (seq | sed | sort, input grows per round) ─┐
//!   build  (gzip + sha256sum of busybox, two "compile units" at a time) ──▶ etl-a (same program) ───────────┴▶ report (stress-ng CPU)
//! ```
//!
//! The data jobs' memory is linear in their input (busybox `sort` holds every line), and their input grows from
//! round to round as a data set does; `io.predictive.input-bytes` tells the broker the size. Static limits are
//! the known peak x 1.5 (memory rounded up to 32 MiB, CPU to 0.5 cores, at most the host's 2 cores), the peaks
//! measured on this VM under each program (see docs/BENCHMARKS.md); for the data jobs, the peak of the largest
//! input the configured rounds will feed them, which a careful user would know.

/// Bytes of one data-job line (`<n> record-payload-...`) besides the number.
const PAYLOAD: &str = " record-payload-xxxxxxxxxxxxxxxxxxxxxx";
/// Memory of the data job per input line: busybox sort keeps each line in its own allocation plus a pointer
/// (measured: 79.5 MB peak RSS for 1M lines, 236 MB for 3M).
pub const DATA_BYTES_PER_LINE: f64 = 80.0;
/// Memory of the stress-ng memory phase.
const VM_MIB: u64 = 192;

const MIB: u64 = 1 << 20;

/// Where a task runs from and what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDef {
    /// Name in the pipeline (`web`, `phases`, ...).
    pub name: &'static str,
    /// `io.predictive.task-type`.
    pub task_type: &'static str,
    /// Names of the tasks that must finish first.
    pub deps: Vec<&'static str>,
    /// `io.predictive.priority`.
    pub priority: i32,
    /// `io.predictive.input-bytes`, for the data jobs.
    pub input_bytes: Option<u64>,
    /// The command (busybox sh).
    pub cmd: Vec<String>,
    /// The careful user's limits.
    pub static_cpu: f64,
    /// The careful user's memory limit, bytes.
    pub static_mem: u64,
    /// Needs the host's stress-ng bind-mounted.
    pub stress: bool,
    /// The latency-sensitive server: runs for the whole pipeline, not part of the makespan.
    pub server: bool,
}

/// Lines of a data job in `round` (0-based over history and measured rounds): the input grows by 0.3 M lines a
/// round from 0.8 M (etl-a) and 0.6 M (etl-b), times `scale`.
pub fn data_lines(name: &str, round: usize, scale: f64) -> u64 {
    let base = if name == "etl-a" { 0.8 } else { 0.6 };
    ((base + 0.3 * round as f64) * scale * 1e6).round() as u64
}

/// Bytes of the data job's input for `lines` lines: `seq 1 N` with the payload appended.
pub fn input_bytes(lines: u64) -> u64 {
    let mut total = 0;
    let mut digits = 1u32;
    let mut lo = 1u64;
    while lo <= lines {
        let hi = (10u64.pow(digits) - 1).min(lines);
        total += (hi - lo + 1) * (u64::from(digits) + PAYLOAD.len() as u64 + 1);
        lo = hi + 1;
        digits += 1;
    }
    total
}

fn round_up(v: f64, step: f64) -> f64 {
    (v / step).ceil() * step
}

fn mem_limit(peak_bytes: f64) -> u64 {
    round_up(peak_bytes * 1.5, 32.0 * MIB as f64) as u64
}

fn cpu_limit(peak_cores: f64) -> f64 {
    round_up(peak_cores * 1.5, 0.5).min(2.0)
}

fn sh(script: String) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), script]
}

/// The pipeline of `round`; `rounds` is the number of rounds the suite will run (the careful user sizes the
/// data jobs for the largest input), `scale` stretches durations and inputs, `port` is the web server's.
pub fn pipeline(round: usize, rounds: usize, scale: f64, port: u16) -> Vec<TaskDef> {
    let secs = |s: f64| format!("{}s", (s * scale).round().max(1.0));
    let data = |name: &'static str, deps: Vec<&'static str>| {
        let lines = data_lines(name, round, scale);
        let largest = data_lines(name, rounds.saturating_sub(1), scale);
        TaskDef {
            name,
            task_type: "suite-etl",
            deps,
            priority: 0,
            input_bytes: Some(input_bytes(lines)),
            cmd: sh(format!(
                "seq 1 {lines} | sed 's/$/{PAYLOAD}/' | sort -r | md5sum"
            )),
            static_cpu: cpu_limit(1.3),
            static_mem: mem_limit(largest as f64 * DATA_BYTES_PER_LINE + 4.0 * MIB as f64),
            stress: false,
            server: false,
        }
    };
    let units = (30.0 * scale).round().max(2.0) as u64;
    vec![
        TaskDef {
            name: "web",
            task_type: "suite-web",
            deps: vec![],
            priority: 10,
            input_bytes: None,
            cmd: sh(format!(
                "mkdir -p /www && awk 'BEGIN{{printf \"%4096s\", \"\"}}' > /www/index.html && \
                 exec httpd -f -p 127.0.0.1:{port} -h /www"
            )),
            static_cpu: cpu_limit(0.1),
            static_mem: mem_limit(4.0 * MIB as f64),
            stress: false,
            server: true,
        },
        TaskDef {
            name: "phases",
            task_type: "suite-phases",
            deps: vec![],
            priority: 0,
            input_bytes: None,
            cmd: sh(format!(
                "stress-ng --temp-path /tmp --cpu 1 --cpu-method matrixprod -t {} && \
                 stress-ng --temp-path /tmp --vm 1 --vm-bytes {VM_MIB}m --vm-keep -t {}",
                secs(8.0),
                secs(8.0)
            )),
            static_cpu: cpu_limit(1.0),
            static_mem: mem_limit((VM_MIB + 12) as f64 * MIB as f64),
            stress: true,
            server: false,
        },
        TaskDef {
            name: "build",
            task_type: "suite-build",
            deps: vec![],
            priority: 0,
            input_bytes: None,
            cmd: sh(format!(
                "i=0; while [ $i -lt {units} ]; do gzip -c /bin/busybox > /tmp/a.gz & gzip -9 -c /bin/busybox > \
                 /tmp/b.gz & wait; sha256sum /tmp/a.gz /tmp/b.gz > /tmp/sums; i=$((i+1)); done"
            )),
            static_cpu: cpu_limit(2.0),
            static_mem: mem_limit(24.0 * MIB as f64),
            stress: false,
            server: false,
        },
        data("etl-a", vec!["build"]),
        data("etl-b", vec!["phases"]),
        TaskDef {
            name: "report",
            task_type: "suite-report",
            deps: vec!["etl-a", "etl-b"],
            priority: 0,
            input_bytes: None,
            cmd: sh(format!(
                "stress-ng --temp-path /tmp --cpu 1 --cpu-method fft -t {}",
                secs(4.0)
            )),
            static_cpu: cpu_limit(1.0),
            static_mem: mem_limit(12.0 * MIB as f64),
            stress: true,
            server: false,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_bytes_counts_every_digit() {
        // "1".."9": 9 lines of 1 digit, "10": 2 digits; each with the payload and a newline.
        let per = PAYLOAD.len() as u64 + 1;
        assert_eq!(input_bytes(9), 9 * (1 + per));
        assert_eq!(input_bytes(10), 9 * (1 + per) + 2 + per);
        assert_eq!(input_bytes(0), 0);
    }

    #[test]
    fn static_limits_cover_the_largest_input_and_stay_on_the_host() {
        let p = pipeline(0, 5, 1.0, 8080);
        let etl = p.iter().find(|t| t.name == "etl-a").expect("etl-a");
        let largest = data_lines("etl-a", 4, 1.0) as f64 * DATA_BYTES_PER_LINE;
        assert!(etl.static_mem as f64 >= largest * 1.5);
        assert!(p.iter().all(|t| t.static_cpu <= 2.0 && t.static_cpu >= 0.5));
        // Dependencies name tasks of the pipeline.
        for t in &p {
            for d in &t.deps {
                assert!(
                    p.iter().any(|x| x.name == *d),
                    "{} depends on unknown {d}",
                    t.name
                );
            }
        }
    }
}
