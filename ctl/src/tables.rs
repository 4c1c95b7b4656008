//! The tables `predictivectl` prints for people: `status`, `models`, `explain`, and the units they use.

use std::fmt::Write as _;

use predictive_api::types::{Lease, TaskView};
use predictive_api::wire::{Decisions, Models, Status};

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
    out.push_str(&net_lines(s));
    out
}

/// Per task with an egress or ingress limit: the limit in force, its own share, what it sends (receives),
/// lends or borrows, the type's predicted rate in that direction when there is one, and why; the ingress line
/// right after the egress one.
fn net_lines(s: &Status) -> String {
    let mut out = String::new();
    for t in &s.tasks {
        let views = [
            (
                "egress",
                "sending",
                t.net.as_ref().map(|n| (n, n.tx_bytes_per_sec)),
            ),
            (
                "ingress",
                "receiving",
                t.net_ingress.as_ref().map(|n| (n, n.rx_bytes_per_sec)),
            ),
        ];
        for (direction, verb, view) in views {
            let Some((n, rate)) = view else { continue };
            let measured = rate.map_or_else(|| "-".to_owned(), |r| format!("{}/s", bytes(r)));
            let mut line = format!(
                "\nnetwork {direction} {}: limit {}/s (share {}/s), {verb} {measured}",
                t.container_id,
                bytes(n.limit_bytes_per_sec as f64),
                bytes(n.base_bytes_per_sec as f64)
            );
            if n.lent_bytes_per_sec > 0 {
                let _ = write!(line, ", lends {}/s", bytes(n.lent_bytes_per_sec as f64));
            }
            if n.borrowed_bytes_per_sec > 0 {
                let _ = write!(
                    line,
                    ", borrows {}/s",
                    bytes(n.borrowed_bytes_per_sec as f64)
                );
            }
            // The task type's predicted rate in this direction, when its runs measured it.
            if let Some(e) = s
                .predictions
                .iter()
                .find(|p| p.container_id == t.container_id)
                .and_then(|p| match direction {
                    "egress" => p.net_tx_bytes_per_s,
                    _ => p.net_rx_bytes_per_s,
                })
            {
                let _ = write!(
                    line,
                    ", predicted {}/s [{}/s-{}/s]",
                    bytes(e.point),
                    bytes(e.lower),
                    bytes(e.upper)
                );
            }
            let _ = writeln!(line, "\n  {}", n.reason);
            out.push_str(&line);
        }
    }
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
fn task_row(s: &Status, t: &TaskView) -> Vec<String> {
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
    let leases = |v: &[&Lease]| {
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
        ("net" | "net-ingress", Some(b)) => format!("{}/s", bytes(b)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_bytes_format() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_824_000_123), "2026-11-28 00:00:00.123");
        assert_eq!(bytes(512.0), "512B");
        assert_eq!(bytes(1536.0 * 1024.0), "1.5MiB");
    }

    #[test]
    fn egress_and_ingress_lines_show_limit_share_and_loans() {
        let view = |id: &str, limit: u64, reason: &str| TaskView {
            container_id: id.to_owned(),
            mode: predictive_api::types::Mode::Enforce,
            priority: 0,
            critical: false,
            allocation: Default::default(),
            base_cpu_cores: None,
            frozen: false,
            stopping: false,
            usage: None,
            limits: Default::default(),
            max_borrow_cpu: None,
            io: None,
            net: Some(predictive_api::types::NetView {
                limit_bytes_per_sec: limit,
                base_bytes_per_sec: 1 << 20,
                tx_bytes_per_sec: Some(1000.0),
                rx_bytes_per_sec: None,
                lent_bytes_per_sec: (1u64 << 20).saturating_sub(limit),
                borrowed_bytes_per_sec: limit.saturating_sub(1 << 20),
                reason: reason.to_owned(),
            }),
            net_ingress: (id == "b").then(|| predictive_api::types::NetView {
                limit_bytes_per_sec: 3 << 20,
                base_bytes_per_sec: 3 << 20,
                tx_bytes_per_sec: None,
                rx_bytes_per_sec: Some(2048.0),
                lent_bytes_per_sec: 0,
                borrowed_bytes_per_sec: 0,
                reason: "ingress its share".to_owned(),
            }),
        };
        let s = Status {
            tasks: vec![
                view("a", 2 << 20, "saturated: borrows"),
                view("b", 64 << 10, "idle: lends"),
            ],
            broker_version: String::new(),
            tick_ms: 1000,
            host: predictive_api::types::HostCapacity {
                cpu_cores: 1.0,
                memory_bytes: 1,
            },
            model_version: 0,
            leases: Vec::new(),
            predictions: Vec::new(),
            pool: String::new(),
            total_tasks: None,
            next_offset: None,
        };
        let text = net_lines(&s);
        assert!(
            text.contains("network egress a: limit 2.0MiB/s (share 1.0MiB/s), sending 1000B/s, borrows 1.0MiB/s\n  saturated: borrows"),
            "{text}"
        );
        assert!(text.contains("network egress b: limit 64.0KiB/s"), "{text}");
        assert!(text.contains("lends 960.0KiB/s"), "{text}");
        assert!(
            text.contains("network egress b: limit 64.0KiB/s (share 1.0MiB/s), sending 1000B/s, lends 960.0KiB/s\n  idle: lends\n\nnetwork ingress b: limit 3.0MiB/s (share 3.0MiB/s), receiving 2.0KiB/s\n  ingress its share"),
            "{text}"
        );
        assert!(!text.contains("network ingress a"), "{text}");
        assert!(
            !text.contains("predicted"),
            "no prediction, no figure: {text}"
        );
        // A task whose type's egress and ingress are predicted shows each estimate beside its share.
        let e = |point: f64| predictive_api::prediction::Estimate {
            point,
            lower: point * 0.5,
            upper: point * 1.5,
            limit: point * 2.0,
            kind: Some(predictive_api::prediction::ModelKind::Baseline),
        };
        let s = Status {
            predictions: vec![predictive_api::wire::TaskPrediction {
                container_id: "b".to_owned(),
                task_key: "up".to_owned(),
                started_at_ms: 0,
                cpu_cores: None,
                memory_bytes: None,
                duration_s: None,
                net_tx_bytes_per_s: Some(e(1024.0 * 1024.0)),
                net_rx_bytes_per_s: Some(e(2048.0 * 1024.0)),
            }],
            ..s
        };
        let text = net_lines(&s);
        assert!(
            text.contains("network egress b: limit 64.0KiB/s (share 1.0MiB/s), sending 1000B/s, lends 960.0KiB/s, predicted 1.0MiB/s [512.0KiB/s-1.5MiB/s]"),
            "{text}"
        );
        assert!(
            text.contains("network ingress b: limit 3.0MiB/s (share 3.0MiB/s), receiving 2.0KiB/s, predicted 2.0MiB/s [1.0MiB/s-3.0MiB/s]"),
            "{text}"
        );
        assert_eq!(text.matches("predicted").count(), 2, "{text}");
    }
}
