//! Task identity: which past runs a new container should be predicted from.
//!
//! A task type key is, in order of preference:
//! 1. the value of the annotation [`TASK_TYPE_ANNOTATION`] (`io.predictive.task-type`), trimmed, used as is — the
//!    user knows best which runs are alike;
//! 2. otherwise `auto-` followed by 16 hex digits of a 64-bit FNV-1a hash over the image reference, the command
//!    (args) and, when the CRI annotation [`CRI_CONTAINER_NAME_ANNOTATION`] is present, the Kubernetes container name.
//!
//! The hash is stable across runs, processes, machines and Rust versions (unlike `std`'s `DefaultHasher`). It hashes
//! the byte string `"predictive-task-key/v1"`, then for each field (image, each arg, container name) a one-byte tag
//! (`b'i'`, `b'a'`, `b'k'`), the field's length as 8 little-endian bytes and the field's bytes — length prefixes make
//! `["a b"]` and `["a", "b"]` different keys. FNV-1a 64: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`.
//! Changing any of this changes every key: bump the `v1` and migrate.
//!
//! Limits: two different tasks that share image, command and container name (e.g. the same script over different
//! data) share a key; give them the annotation. 64 bits make an accidental collision negligible at 10^5 task types.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Annotation that names the task type explicitly.
pub const TASK_TYPE_ANNOTATION: &str = "io.predictive.task-type";
/// CRI annotation carrying the Kubernetes container name.
pub const CRI_CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";
/// Longest explicit task type accepted; longer values are hashed like a derived key.
pub const MAX_EXPLICIT_LEN: usize = 253;

const DOMAIN: &[u8] = b"predictive-task-key/v1";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The key of a task type (see the module docs for how it is derived).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskKey(String);

impl TaskKey {
    /// Wraps an already derived key (e.g. one read back from the store or given on the command line).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Derives the key of a container from its annotations, image reference and command.
    pub fn derive(annotations: &HashMap<String, String>, image: &str, command: &[String]) -> Self {
        if let Some(explicit) = annotations.get(TASK_TYPE_ANNOTATION) {
            let explicit = explicit.trim();
            if !explicit.is_empty() && explicit.len() <= MAX_EXPLICIT_LEN {
                return Self(explicit.to_owned());
            }
        }
        let container = annotations
            .get(CRI_CONTAINER_NAME_ANNOTATION)
            .map(String::as_str);
        Self(format!(
            "auto-{:016x}",
            derived_hash(image, command, container)
        ))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash behind a derived key (see the module docs for the exact byte layout).
pub fn derived_hash(image: &str, command: &[String], container_name: Option<&str>) -> u64 {
    let mut h = Fnv1a::new();
    h.write(DOMAIN);
    h.field(b'i', image.as_bytes());
    for arg in command {
        h.field(b'a', arg.as_bytes());
    }
    if let Some(name) = container_name {
        h.field(b'k', name.as_bytes());
    }
    h.finish()
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.write(&[tag]);
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        let mut h = Fnv1a::new();
        h.write(b"");
        assert_eq!(h.finish(), 0xcbf29ce484222325);
        let mut h = Fnv1a::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        let mut h = Fnv1a::new();
        h.write(b"foobar");
        assert_eq!(h.finish(), 0x85944171f73967e8);
    }

    #[test]
    fn explicit_annotation_wins_and_is_trimmed() {
        let k = TaskKey::derive(
            &ann(&[
                (TASK_TYPE_ANNOTATION, "  nightly-etl \n"),
                (CRI_CONTAINER_NAME_ANNOTATION, "x"),
            ]),
            "img",
            &cmd(&["run"]),
        );
        assert_eq!(k.as_str(), "nightly-etl");
    }

    #[test]
    fn empty_or_oversized_annotation_falls_back_to_derived() {
        let derived = TaskKey::derive(&ann(&[]), "img", &cmd(&["run"]));
        let empty = TaskKey::derive(&ann(&[(TASK_TYPE_ANNOTATION, "  ")]), "img", &cmd(&["run"]));
        let long = "x".repeat(MAX_EXPLICIT_LEN + 1);
        let oversized = TaskKey::derive(
            &ann(&[(TASK_TYPE_ANNOTATION, &long)]),
            "img",
            &cmd(&["run"]),
        );
        assert_eq!(derived, empty);
        assert_eq!(derived, oversized);
        assert!(derived.as_str().starts_with("auto-"));
        assert_eq!(derived.as_str().len(), "auto-".len() + 16);
    }

    #[test]
    fn derived_key_is_stable_golden_value() {
        // A changed value here means every stored history is orphaned: bump DOMAIN and migrate instead.
        let k = TaskKey::derive(
            &ann(&[]),
            "docker.io/library/python:3.12",
            &cmd(&["python", "etl.py", "--day", "1"]),
        );
        let again = TaskKey::derive(
            &ann(&[]),
            "docker.io/library/python:3.12",
            &cmd(&["python", "etl.py", "--day", "1"]),
        );
        assert_eq!(k, again);
        let expected = format!(
            "auto-{:016x}",
            derived_hash(
                "docker.io/library/python:3.12",
                &cmd(&["python", "etl.py", "--day", "1"]),
                None
            )
        );
        assert_eq!(k.as_str(), expected);
        assert_eq!(k.as_str(), GOLDEN);
    }

    const GOLDEN: &str = "auto-b9c12dec417abe2a";

    #[test]
    fn arg_boundaries_image_and_container_name_matter() {
        let a = TaskKey::derive(&ann(&[]), "img", &cmd(&["a b"]));
        let b = TaskKey::derive(&ann(&[]), "img", &cmd(&["a", "b"]));
        let c = TaskKey::derive(&ann(&[]), "img2", &cmd(&["a b"]));
        let d = TaskKey::derive(
            &ann(&[(CRI_CONTAINER_NAME_ANNOTATION, "web")]),
            "img",
            &cmd(&["a b"]),
        );
        let e = TaskKey::derive(
            &ann(&[(CRI_CONTAINER_NAME_ANNOTATION, "sidecar")]),
            "img",
            &cmd(&["a b"]),
        );
        let keys = [a, b, c, d, e];
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                assert_ne!(keys[i], keys[j], "{i} vs {j}");
            }
        }
    }

    #[test]
    fn serde_is_a_plain_string() {
        let k = TaskKey::new("etl");
        assert_eq!(serde_json::to_string(&k).expect("serialises"), "\"etl\"");
    }
}
