//! Range checks on everything a peer sends, before any of it reaches the controller, the store or a log line.
//!
//! The protocol's types accept any JSON number and any string; this module says which values the broker takes:
//! ids and names are non-empty, bounded and free of control characters (a newline in a container id forged whole log
//! lines); CPU figures are finite, positive and at most [`MAX_CORES`]; byte counts are positive and at most
//! [`MAX_BYTES`] (the kernel's own "max"); page sizes are within [`wire::MAX_PAGE`]. A value out of range is an
//! `invalid_request` error naming the field (`limits.cpu_limit_cores`, `samples[3].pressure.cpu.some.avg10`).

use crate::types::{Allocation, SpecLimits};
use crate::wire::{self, ErrorCode, ErrorReply, Request};

/// Longest container id, namespace or history task key accepted, bytes.
pub const MAX_ID: usize = 253;
/// Longest task key a `history` request may name, bytes (`<namespace>/<type>/<container>@<hash>`).
pub const MAX_KEY: usize = 1024;
/// Longest image reference or cgroup path, bytes.
pub const MAX_PATH: usize = 4096;
/// Most CPU a limit, request or allocation may name, cores.
pub const MAX_CORES: f64 = 65_536.0;
/// Most bytes a limit or a memory figure may name: `i64::MAX`, which the kernel reads as "max".
pub const MAX_BYTES: u64 = i64::MAX as u64;
/// Most running tasks one pipeline may have (its critical path is recomputed every tick: O(tasks + edges)).
pub const MAX_PIPELINE_TASKS: usize = 32_768;
/// Most samples one Report may carry (a shim buffers at most 64).
pub const MAX_SAMPLES: usize = 4096;
/// Most OOM events one Report may count.
pub const MAX_OOM_EVENTS: u64 = 1 << 32;

fn bad(message: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidRequest, message)
}

/// `s` with control characters escaped and cut to `max` characters: safe to put in an error message or a log line.
pub fn shown(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A name a peer chose: non-empty, at most `max` bytes, no control characters.
pub fn name(field: &str, v: &str, max: usize) -> Result<(), ErrorReply> {
    if v.trim().is_empty() {
        return Err(bad(format!("field `{field}` is empty")));
    }
    if v.len() > max {
        return Err(bad(format!(
            "field `{field}` is {} bytes long; at most {max} are accepted",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(bad(format!(
            "field `{field}` ({:?}) contains a control character",
            shown(v, 64)
        )));
    }
    Ok(())
}

pub fn optional_text(field: &str, v: &str, max: usize) -> Result<(), ErrorReply> {
    if v.is_empty() {
        return Ok(());
    }
    name(field, v, max)
}

/// A CPU figure: finite, positive, at most [`MAX_CORES`].
pub fn cores(field: &str, v: Option<f64>) -> Result<(), ErrorReply> {
    match v {
        Some(c) if !c.is_finite() || c <= 0.0 || c > MAX_CORES => Err(bad(format!(
            "field `{field}` is {c}; a number of cores in (0, {MAX_CORES}] is expected"
        ))),
        _ => Ok(()),
    }
}

/// A byte count that sizes something: positive, at most [`MAX_BYTES`].
pub fn bytes(field: &str, v: Option<u64>) -> Result<(), ErrorReply> {
    match v {
        Some(b) if b == 0 || b > MAX_BYTES => Err(bad(format!(
            "field `{field}` is {b}; a number of bytes in [1, {MAX_BYTES}] is expected"
        ))),
        _ => Ok(()),
    }
}

fn at_most(field: &str, v: Option<u64>, max: u64) -> Result<(), ErrorReply> {
    match v {
        Some(b) if b > max => Err(bad(format!(
            "field `{field}` is {b}; at most {max} is accepted"
        ))),
        _ => Ok(()),
    }
}

/// Most CPU time one run may report, seconds: [`MAX_CORES`] busy for a year.
pub const MAX_CPU_SECONDS: f64 = MAX_CORES * 365.0 * 86_400.0;

/// A run's CPU time: finite, at least 0, at most [`MAX_CPU_SECONDS`].
fn cpu_seconds(field: &str, v: Option<f64>) -> Result<(), ErrorReply> {
    match v {
        Some(s) if !s.is_finite() || !(0.0..=MAX_CPU_SECONDS).contains(&s) => Err(bad(format!(
            "field `{field}` is {s}; seconds in [0, {MAX_CPU_SECONDS}] are expected"
        ))),
        _ => Ok(()),
    }
}

fn percent(field: &str, v: f64) -> Result<(), ErrorReply> {
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(bad(format!(
            "field `{field}` is {v}; a percentage in [0, 100] is expected"
        )));
    }
    Ok(())
}

/// The spec's limits and requests (`prefix` is `limits`).
pub fn limits(prefix: &str, l: &SpecLimits) -> Result<(), ErrorReply> {
    cores(&format!("{prefix}.cpu_limit_cores"), l.cpu_limit_cores)?;
    cores(&format!("{prefix}.cpu_request_cores"), l.cpu_request_cores)?;
    bytes(
        &format!("{prefix}.memory_limit_bytes"),
        l.memory_limit_bytes,
    )?;
    bytes(
        &format!("{prefix}.memory_request_bytes"),
        l.memory_request_bytes,
    )
}

fn allocation(prefix: &str, a: &Allocation) -> Result<(), ErrorReply> {
    cores(&format!("{prefix}.cpu_cores"), a.cpu_cores)?;
    bytes(&format!("{prefix}.memory_bytes"), a.memory_bytes)?;
    bytes(&format!("{prefix}.memory_max_bytes"), a.memory_max_bytes)
}

fn parents(field: &str, ps: &[wire::ParentLimit]) -> Result<(), ErrorReply> {
    if ps.len() > wire::MAX_PARENTS {
        return Err(bad(format!(
            "field `{field}` has {} entries; at most {} are accepted",
            ps.len(),
            wire::MAX_PARENTS
        )));
    }
    for (i, p) in ps.iter().enumerate() {
        cores(&format!("{field}[{i}].cpu_limit_cores"), p.cpu_limit_cores)?;
        bytes(
            &format!("{field}[{i}].memory_limit_bytes"),
            p.memory_limit_bytes,
        )?;
    }
    Ok(())
}

fn sample(i: usize, s: &runtime_hooks::Sample) -> Result<(), ErrorReply> {
    let f = |what: &str| format!("samples[{i}].{what}");
    let m = &s.memory;
    for (what, v) in [
        ("memory.usage_bytes", m.usage_bytes),
        ("memory.working_set_bytes", m.working_set_bytes),
        ("memory.peak_bytes", m.peak_bytes),
        ("memory.rss_bytes", m.rss_bytes),
        ("memory.cache_bytes", m.cache_bytes),
    ] {
        at_most(&f(what), v, MAX_BYTES)?;
    }
    for (what, p) in [
        ("pressure.cpu", &s.pressure.cpu),
        ("pressure.memory", &s.pressure.memory),
        ("pressure.io", &s.pressure.io),
    ] {
        let Some(p) = p else { continue };
        for (half, l) in [("some", Some(&p.some)), ("full", p.full.as_ref())] {
            let Some(l) = l else { continue };
            for (w, v) in [("avg10", l.avg10), ("avg60", l.avg60), ("avg300", l.avg300)] {
                percent(&f(&format!("{what}.{half}.{w}")), v)?;
            }
        }
    }
    Ok(())
}

/// Checks one container's Report (alone or as an entry of a batch).
pub fn report(r: &wire::Report) -> Result<(), ErrorReply> {
    name("container_id", &r.container_id, MAX_ID)?;
    if r.samples.len() > MAX_SAMPLES {
        return Err(bad(format!(
            "field `samples` has {} entries; at most {MAX_SAMPLES} are accepted",
            r.samples.len()
        )));
    }
    at_most("oom_events", Some(r.oom_events), MAX_OOM_EVENTS)?;
    for (i, s) in r.samples.iter().enumerate() {
        sample(i, s)?;
    }
    Ok(())
}

/// Checks a batch's size: at least one entry, at most [`wire::MAX_BATCH`]. A batch too large is refused whole,
/// before anything of it is applied.
pub fn batch(b: &wire::Reports) -> Result<(), ErrorReply> {
    match b.reports.len() {
        0 => Err(bad(
            "field `reports` is empty; a batch carries at least one report".to_owned(),
        )),
        n if n > wire::MAX_BATCH => Err(bad(format!(
            "field `reports` has {n} entries; at most {} are accepted in one batch",
            wire::MAX_BATCH
        ))),
        _ => Ok(()),
    }
}

/// Checks every field of a request a peer sent.
pub fn request(req: &Request) -> Result<(), ErrorReply> {
    match req {
        Request::Register(r) => {
            name("container_id", &r.container_id, MAX_ID)?;
            optional_text("namespace", &r.namespace, MAX_ID)?;
            optional_text("image", &r.image, MAX_PATH)?;
            optional_text("cgroup_path", &r.cgroup_path, MAX_PATH)?;
            if let Some(p) = r.pid
                && p <= 0
            {
                return Err(bad(format!("field `pid` is {p}; a process id is positive")));
            }
            limits("limits", &r.limits)?;
            // Our own annotations name task types, pipelines and dependencies that reach logs and terminals:
            // read as the shim's Create check reads them (trimmed; names bounded and printable), so what a
            // shim let through is taken and what it refuses is refused with the same words. (A raw check
            // refused `etl\n`, a YAML block scalar's value, that both read as `etl`.) Other annotations are not
            // ours to judge: a Kubernetes one may legitimately hold a newline.
            crate::annotations::Annotations::parse(&r.annotations)
                .map_err(|e| ErrorReply::new(ErrorCode::InvalidAnnotation, e.to_string()))?;
            if let Some(a) = &r.adopt {
                allocation("adopt", a)?;
            }
            parents("parents", &r.parents)
        }
        Request::Report(r) => report(r),
        // The entries are checked one by one where they are applied ([`report`]): one bad entry must not cost
        // the others of its batch.
        Request::Reports(b) => batch(b),
        Request::Update(u) => {
            name("container_id", &u.container_id, MAX_ID)?;
            limits("limits", &u.limits)?;
            match &u.parents {
                Some(p) => parents("parents", p),
                None => Ok(()),
            }
        }
        Request::Finish(f) => {
            name("container_id", &f.container_id, MAX_ID)?;
            at_most("peak_memory_bytes", f.peak_memory_bytes, MAX_BYTES)?;
            at_most("ran_ms", f.ran_ms, wire::MAX_RAN_MS)?;
            cpu_seconds("cpu_seconds", f.cpu_seconds)
        }
        Request::Status(p) | Request::Models(p) => page(p),
        Request::Explain(e) => {
            if let Some(c) = &e.container_id {
                name("container_id", c, MAX_ID)?;
            }
            match e.limit {
                Some(n) if n == 0 || n > wire::MAX_PAGE => Err(bad(format!(
                    "field `limit` is {n}; 1..={} decisions per request (page with `before_seq`)",
                    wire::MAX_PAGE
                ))),
                _ => Ok(()),
            }
        }
        Request::History(h) => {
            if let Some(c) = &h.container_id {
                name("container_id", c, MAX_ID)?;
            }
            if let Some(k) = &h.task_key {
                name("task_key", k, MAX_KEY)?;
            }
            match h.limit {
                Some(n) if n == 0 || n > wire::MAX_HISTORY_POINTS as u64 => Err(bad(format!(
                    "field `limit` is {n}; 1..={} points per request (page with `offset`)",
                    wire::MAX_HISTORY_POINTS
                ))),
                _ => Ok(()),
            }
        }
        Request::Export(e) => {
            if let Some(c) = &e.after {
                name("after.task_key", &c.task_key, MAX_KEY)?;
            }
            match e.newest_per_type {
                Some(n) if n == 0 || n > wire::MAX_EXPORT_RUNS_PER_TYPE => {
                    return Err(bad(format!(
                        "field `newest_per_type` is {n}; 1..={} runs per task type",
                        wire::MAX_EXPORT_RUNS_PER_TYPE
                    )));
                }
                _ => {}
            }
            match e.limit {
                Some(n) if n == 0 || n > wire::MAX_EXPORT_PAGE => Err(bad(format!(
                    "field `limit` is {n}; 1..={} runs per request (page with `after`)",
                    wire::MAX_EXPORT_PAGE
                ))),
                _ => Ok(()),
            }
        }
    }
}

fn page(p: &wire::Page) -> Result<(), ErrorReply> {
    match p.limit {
        Some(n) if n == 0 || n > wire::MAX_PAGE as u64 => Err(bad(format!(
            "field `limit` is {n}; 1..={} per page (page with `offset`)",
            wire::MAX_PAGE
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_line(f: impl FnOnce(&mut runtime_hooks::Sample)) -> String {
        let mut s = runtime_hooks::Sample {
            unix_ns: 1,
            monotonic_ns: 1,
            ..runtime_hooks::Sample::default()
        };
        f(&mut s);
        format!(
            r#"{{"version":1,"type":"report","container_id":"c","samples":[{}]}}"#,
            serde_json::to_string(&s).expect("encodes")
        )
    }

    fn check(line: &str) -> Result<(), ErrorReply> {
        let (_, r) = wire::parse_request(line);
        request(&r.expect("parses"))
    }

    #[test]
    fn out_of_range_numbers_name_their_field() {
        for (line, field) in [
            (
                r#"{"version":1,"type":"register","container_id":"c","limits":{"cpu_limit_cores":-5.0}}"#,
                "limits.cpu_limit_cores",
            ),
            (
                r#"{"version":1,"type":"register","container_id":"c","limits":{"memory_limit_bytes":18446744073709551615}}"#,
                "limits.memory_limit_bytes",
            ),
            (
                r#"{"version":1,"type":"register","container_id":"c","adopt":{"cpu_cores":-3.0,"memory_bytes":null,"memory_max_bytes":null}}"#,
                "adopt.cpu_cores",
            ),
            (
                r#"{"version":1,"type":"register","container_id":"c","pid":-1}"#,
                "pid",
            ),
            (
                r#"{"version":1,"type":"finish","container_id":"c","cpu_seconds":-1.0}"#,
                "cpu_seconds",
            ),
            (
                r#"{"version":1,"type":"finish","container_id":"c","cpu_seconds":1e300}"#,
                "cpu_seconds",
            ),
            (
                r#"{"version":1,"type":"finish","container_id":"c","ran_ms":18446744073709551615}"#,
                "ran_ms",
            ),
            (
                r#"{"version":1,"type":"update","container_id":"c","limits":{"cpu_request_cores":1e300}}"#,
                "limits.cpu_request_cores",
            ),
            (
                report_line(|s| {
                    s.pressure.cpu = Some(runtime_hooks::cgroup::Pressure {
                        some: runtime_hooks::cgroup::PsiLine {
                            avg10: 500.0,
                            ..Default::default()
                        },
                        full: None,
                    })
                })
                .leak(),
                "samples[0].pressure.cpu.some.avg10",
            ),
            (r#"{"version":1,"type":"explain","limit":0}"#, "limit"),
            (r#"{"version":1,"type":"status","limit":100000}"#, "limit"),
            (
                r#"{"version":1,"type":"register","container_id":"x\n2026-01-01 INFO forged"}"#,
                "container_id",
            ),
            (
                r#"{"version":1,"type":"finish","container_id":"a\u001b[31m"}"#,
                "container_id",
            ),
        ] {
            let e = check(line).expect_err(line);
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{line}");
            assert!(
                e.message.contains(&format!("`{field}`")),
                "{line}: {}",
                e.message
            );
            assert!(
                !e.message.contains('\n') && !e.message.contains('\u{1b}'),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        for line in [
            r#"{"version":1,"type":"register","container_id":"c1","namespace":"default","limits":{"cpu_limit_cores":2.0,"memory_limit_bytes":9223372036854771712}}"#,
            report_line(|_| {}).leak(),
            r#"{"version":1,"type":"finish","container_id":"c1","exit_code":-9}"#,
            r#"{"version":1,"type":"explain","limit":1000}"#,
            r#"{"version":1,"type":"status"}"#,
            r#"{"version":1,"type":"history","task_key":"ns/etl/main@0123abcd"}"#,
        ] {
            check(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn a_batch_is_bounded_and_its_entries_checked_one_by_one() {
        let entry = |id: &str| wire::Report {
            container_id: id.to_owned(),
            ..wire::Report::default()
        };
        let batch = |n: usize| wire::Reports {
            reports: (0..n).map(|i| entry(&format!("c{i}"))).collect(),
        };
        request(&Request::Reports(batch(wire::MAX_BATCH))).expect("a full batch passes");
        let e = request(&Request::Reports(batch(wire::MAX_BATCH + 1))).expect_err("too many");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("`reports`")
                && e.message.contains(&(wire::MAX_BATCH + 1).to_string())
                && e.message.contains(&wire::MAX_BATCH.to_string()),
            "{}",
            e.message
        );
        let e = request(&Request::Reports(batch(0))).expect_err("empty");
        assert!(e.message.contains("`reports` is empty"), "{}", e.message);
        // A bad entry does not fail the batch's check: the broker answers it on its own.
        let mut b = batch(2);
        b.reports[1].container_id = "x\n".to_owned();
        request(&Request::Reports(b.clone())).expect("the batch's size is fine");
        let e = report(&b.reports[1]).expect_err("the entry is not");
        assert!(e.message.contains("`container_id`"), "{}", e.message);
        report(&b.reports[0]).expect("the other entry is fine");
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb\u{1b}", 10), "a\\nb\\u{1b}");
        assert_eq!(shown("abcdef", 3), "abc...");
    }

    /// The broker takes our annotations as the shim's Create check reads them (trimmed, `Annotations::parse`):
    /// a value from a YAML block scalar (`task-type: |` gives `"etl\n"`) or a dependency list over several lines
    /// was accepted at Create and then refused by the broker, and the container ran unmonitored. What the shim
    /// refuses, the broker refuses with the same words, as a bad annotation.
    #[test]
    fn our_annotations_are_taken_as_the_shim_reads_them() {
        use crate::annotations::{self, Annotations};
        let register = |pairs: &[(&str, &str)]| wire::Register {
            container_id: "c".to_owned(),
            annotations: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..wire::Register::default()
        };
        for pairs in [
            &[(annotations::TASK_TYPE, "etl\n")][..],
            &[(annotations::DEPENDS_ON, "extract,\n  load\n")],
            &[
                (annotations::PIPELINE, "\tnightly\r\n"),
                (annotations::PRIORITY, "5\n"),
            ],
            // Not ours to read: nothing of the broker's reads it, logs it or keys on it.
            &[("io.predictive.note", "line one\nline two")],
        ] {
            let r = register(pairs);
            assert!(Annotations::parse(&r.annotations).is_ok(), "{pairs:?}");
            assert_eq!(request(&wire::Request::Register(r)), Ok(()), "{pairs:?}");
        }
        for pairs in [
            &[(annotations::TASK_TYPE, "etl\u{1b}[2J")][..],
            &[(annotations::PIPELINE, "a\nb")],
            &[(annotations::PRIORITY, "urgent")],
        ] {
            let r = register(pairs);
            let shim = Annotations::parse(&r.annotations).expect_err("the shim refuses it");
            let e = request(&wire::Request::Register(r)).expect_err("the broker refuses it");
            assert_eq!(e.code, ErrorCode::InvalidAnnotation, "{pairs:?}");
            assert_eq!(e.message, shim.to_string());
            assert!(!e.message.contains(['\n', '\u{1b}']), "{}", e.message);
        }
    }
}
