//! The `io.predictive.*` annotations a user sets on a container, parsed and validated. The shim can call
//! [`Annotations::parse`] at Create to fail with a clear error before it contacts the broker; the broker parses
//! them again at Register.
//!
//! | annotation | value | default |
//! | --- | --- | --- |
//! | `io.predictive.mode` | `off`, `observe` or `enforce` | `enforce` |
//! | `io.predictive.task-type` | 1 to 253 printable characters, no `/` (the broker's predictor derives the task type key from it) | derived from image and command (on Kubernetes: namespace, workload, container, image) |
//! | `io.predictive.input-bytes` | unsigned integer | 0 |
//! | `io.predictive.priority` | integer -1000..=1000, higher first | 0 |
//! | `io.predictive.depends-on` | comma-separated container ids | none |
//! | `io.predictive.pipeline` | any non-empty string | none |
//! | `io.predictive.max-borrow` | cores, a non-negative number (`0.5`) | the broker's `max_borrow_cpu` |
//! | `io.predictive.allow-below-request` | `true` or `false` | `false` |
//! | `io.predictive.egress-bytes-per-sec` | bytes/s, 8192..=100000000000: the container's share of the node's link budget | an equal share of what the annotated ones leave |
//! | `io.predictive.ingress-bytes-per-sec` | bytes/s, 8192..=100000000000: the container's share of the node's ingress budget | an equal share of what the annotated ones leave |

use std::collections::BTreeMap;

use crate::types::{MAX_NET_EGRESS, MIN_NET_EGRESS, Mode};

/// `off | observe | enforce`.
pub const MODE: &str = "io.predictive.mode";
/// Task type (used by the predictor's key; the broker checks it is the predictor's own constant).
pub const TASK_TYPE: &str = "io.predictive.task-type";
/// Longest `io.predictive.task-type` accepted, bytes (the predictor's longest explicit key part).
pub const MAX_TASK_TYPE_LEN: usize = 253;
/// containerd's CRI plugin sets it on every container it creates: `sandbox` for a pod's pause container,
/// `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Input size in bytes.
pub const INPUT_BYTES: &str = "io.predictive.input-bytes";
/// Priority, higher first.
pub const PRIORITY: &str = "io.predictive.priority";
/// Comma-separated container ids this task depends on.
pub const DEPENDS_ON: &str = "io.predictive.depends-on";
/// Pipeline id.
pub const PIPELINE: &str = "io.predictive.pipeline";
/// Most CPU the task may borrow, cores.
pub const MAX_BORROW: &str = "io.predictive.max-borrow";
/// Allow allocations below the spec's requests.
pub const ALLOW_BELOW_REQUEST: &str = "io.predictive.allow-below-request";
/// Network egress share, bytes/s.
pub const EGRESS: &str = "io.predictive.egress-bytes-per-sec";
/// Network ingress share, bytes/s.
pub const INGRESS: &str = "io.predictive.ingress-bytes-per-sec";

/// Longest pipeline name or dependency id accepted, bytes.
const MAX_NAME: usize = 253;
/// Most dependencies one container may name.
const MAX_DEPENDS_ON: usize = 64;

/// A bad annotation value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("annotation {key}: {value:?} is not {expected}")]
pub struct AnnotationError {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

/// The parsed annotations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// Mode.
    pub mode: Mode,
    /// Input size.
    pub input_bytes: u64,
    /// Priority.
    pub priority: i32,
    /// Upstream container ids.
    pub depends_on: Vec<String>,
    /// Pipeline.
    pub pipeline: Option<String>,
    /// Maximum borrow, cores.
    pub max_borrow_cpu: Option<f64>,
    /// Allocations may go below requests.
    pub allow_below_request: bool,
    /// Network egress share, bytes/s.
    pub egress_bytes_per_sec: Option<u64>,
    /// Network ingress share, bytes/s.
    pub ingress_bytes_per_sec: Option<u64>,
}

impl Annotations {
    /// Parses the `io.predictive.*` annotations in `map`; other keys are ignored.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self, AnnotationError> {
        let get = |k: &str| map.get(k).map(|v| v.trim());
        // The value goes into an error a shim logs: bounded (a pod controls it; Debug escapes the rest).
        let bad = |key, value: &str, expected| AnnotationError {
            key,
            value: match value.char_indices().nth(64) {
                Some((i, _)) => format!("{}...", &value[..i]),
                None => value.to_owned(),
            },
            expected,
        };
        let mut a = Annotations::default();
        if let Some(v) = get(TASK_TYPE) {
            // A pod sets this: it becomes part of a key that is logged, stored and shown, so it is bounded and
            // printable, and it cannot pose as another namespace's key (`<ns>/<type>/<container>`).
            if v.len() > MAX_TASK_TYPE_LEN || v.contains('/') || v.chars().any(char::is_control) {
                return Err(bad(
                    TASK_TYPE,
                    v,
                    "at most 253 bytes of printable characters without '/'",
                ));
            }
        }
        if let Some(v) = get(MODE) {
            a.mode = match v {
                "off" => Mode::Off,
                "observe" => Mode::Observe,
                "enforce" => Mode::Enforce,
                _ => return Err(bad(MODE, v, "one of off, observe, enforce")),
            };
        }
        if let Some(v) = get(INPUT_BYTES) {
            a.input_bytes = v
                .parse()
                .map_err(|_| bad(INPUT_BYTES, v, "an unsigned integer"))?;
        }
        if let Some(v) = get(PRIORITY) {
            a.priority = v
                .parse()
                .ok()
                .filter(|p: &i32| (-1000..=1000).contains(p))
                .ok_or_else(|| bad(PRIORITY, v, "an integer in -1000..=1000"))?;
        }
        // Both are names a pod sets: bounded and printable, like the task type.
        let printable = |v: &str| v.len() <= MAX_NAME && !v.chars().any(char::is_control);
        if let Some(v) = get(DEPENDS_ON) {
            a.depends_on = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if a.depends_on.len() > MAX_DEPENDS_ON || !a.depends_on.iter().all(|d| printable(d)) {
                return Err(bad(
                    DEPENDS_ON,
                    v,
                    "at most 64 comma-separated container ids of at most 253 printable bytes",
                ));
            }
        }
        if let Some(v) = get(PIPELINE) {
            if v.is_empty() || !printable(v) {
                return Err(bad(
                    PIPELINE,
                    v,
                    "a non-empty string of at most 253 printable bytes",
                ));
            }
            a.pipeline = Some(v.to_owned());
        }
        if let Some(v) = get(MAX_BORROW) {
            a.max_borrow_cpu = Some(
                v.parse()
                    .ok()
                    .filter(|c: &f64| c.is_finite() && *c >= 0.0)
                    .ok_or_else(|| bad(MAX_BORROW, v, "a non-negative number of cores"))?,
            );
        }
        if let Some(v) = get(ALLOW_BELOW_REQUEST) {
            a.allow_below_request = match v {
                "true" => true,
                "false" => false,
                _ => return Err(bad(ALLOW_BELOW_REQUEST, v, "true or false")),
            };
        }
        for (key, field) in [
            (EGRESS, &mut a.egress_bytes_per_sec),
            (INGRESS, &mut a.ingress_bytes_per_sec),
        ] {
            if let Some(v) = get(key) {
                *field = Some(
                    v.parse()
                        .ok()
                        .filter(|r| (MIN_NET_EGRESS..=MAX_NET_EGRESS).contains(r))
                        .ok_or_else(|| bad(key, v, "bytes per second in 8192..=100000000000"))?,
                );
            }
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_full_set() {
        assert_eq!(Annotations::parse(&map(&[])), Ok(Annotations::default()));
        let a = Annotations::parse(&map(&[
            (MODE, "observe"),
            (INPUT_BYTES, "1024"),
            (PRIORITY, "-5"),
            (DEPENDS_ON, "a, b,,"),
            (PIPELINE, "etl"),
            (MAX_BORROW, "1.5"),
            (ALLOW_BELOW_REQUEST, "true"),
            (EGRESS, "1048576"),
            (INGRESS, "2097152"),
            ("other", "x"),
        ]))
        .expect("valid");
        assert_eq!(a.mode, Mode::Observe);
        assert_eq!((a.input_bytes, a.priority), (1024, -5));
        assert_eq!(a.depends_on, vec!["a", "b"]);
        assert_eq!(a.pipeline.as_deref(), Some("etl"));
        assert_eq!(a.max_borrow_cpu, Some(1.5));
        assert!(a.allow_below_request);
        assert_eq!(a.egress_bytes_per_sec, Some(1 << 20));
        assert_eq!(a.ingress_bytes_per_sec, Some(2 << 20));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (k, v) in [
            (MODE, "sometimes"),
            (INPUT_BYTES, "-1"),
            (PRIORITY, "high"),
            (PRIORITY, "5000"),
            (PIPELINE, " "),
            (PIPELINE, "a\u{7}b"),
            (DEPENDS_ON, "a,b\nc"),
            (MAX_BORROW, "-1"),
            (MAX_BORROW, "NaN"),
            (ALLOW_BELOW_REQUEST, "yes"),
            (EGRESS, "100"),
            (EGRESS, "1e6"),
            (INGRESS, "8191"),
            (INGRESS, "100000000001"),
            (TASK_TYPE, "a/b"),
            (TASK_TYPE, "line\nbreak"),
        ] {
            let e = Annotations::parse(&map(&[(k, v)])).expect_err(v);
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
