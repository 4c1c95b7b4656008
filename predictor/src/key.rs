//! Task identity: which past runs a new container should be predicted from.
//!
//! A task type key is, in order of preference:
//! 1. the value of the annotation [`TASK_TYPE_ANNOTATION`] (`io.predictive.task-type`), trimmed, used as is — the
//!    user knows best which runs are alike;
//! 2. otherwise `auto-` followed by 16 hex digits of a 64-bit FNV-1a hash over the image reference, the command
//!    (args) and, when the CRI annotation [`CRI_CONTAINER_NAME_ANNOTATION`] is present, the Kubernetes container name.
//!
//! A Kubernetes container (containerd's CRI plugin sets [`CRI_SANDBOX_NAMESPACE_ANNOTATION`]) is keyed within its
//! Kubernetes namespace, and per container of its pod:
//! 1. with the annotation: `<namespace>/<task type>/<container name>` — one pod-level annotation gives each container
//!    of the pod (init containers too) its own history, and two namespaces that pick the same task type name get two
//!    histories (a tenant cannot feed or read another's);
//! 2. without: `<namespace>/<workload>/<container name>@<8 hex digits of the image's hash>`, where the workload is the
//!    pod name ([`CRI_SANDBOX_NAME_ANNOTATION`]) with the suffixes Kubernetes generates stripped
//!    ([`workload_name`]): the replicas of a Deployment, ReplicaSet, DaemonSet, StatefulSet or (Cron)Job share one
//!    history with no annotation at all, and a new image starts a new one.
//!
//! The namespace, pod and container names are DNS names Kubernetes validated; anything else in their place (a CRI
//! client that is not kubelet) is replaced by `~` and the 16 hex digits of its hash, so a key never carries a `/`,
//! a control character or an unbounded string from a pod.
//!
//! The hash is stable across runs, processes, machines and Rust versions (unlike `std`'s `DefaultHasher`). It hashes
//! the byte string `"predictive-task-key/v1"`, then for each field (image, each arg, container name) a one-byte tag
//! (`b'i'`, `b'a'`, `b'k'`), the field's length as 8 little-endian bytes and the field's bytes — length prefixes make
//! `["a b"]` and `["a", "b"]` different keys. FNV-1a 64: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`.
//! Changing any of this changes every key: bump the `v1` and migrate.
//!
//! Limits: two different tasks that share image, command and container name (e.g. the same script over different
//! data) share a key; give them the annotation. 64 bits make an accidental collision negligible at 10^5 task types.
//! A bare pod whose own name ends like a generated suffix (`worker-2`, `app-x7k2p`) shares history with its
//! siblings of the same prefix.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Annotation that names the task type explicitly.
pub const TASK_TYPE_ANNOTATION: &str = "io.predictive.task-type";
/// CRI annotation carrying the Kubernetes container name.
pub const CRI_CONTAINER_NAME_ANNOTATION: &str = "io.kubernetes.cri.container-name";
/// CRI annotation carrying the pod's Kubernetes namespace.
pub const CRI_SANDBOX_NAMESPACE_ANNOTATION: &str = "io.kubernetes.cri.sandbox-namespace";
/// CRI annotation carrying the pod's name.
pub const CRI_SANDBOX_NAME_ANNOTATION: &str = "io.kubernetes.cri.sandbox-name";
/// CRI annotation saying whether a spec is a pod's sandbox (`sandbox`) or one of its containers (`container`).
pub const CRI_CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// CRI annotation carrying the image reference the pod asked for.
pub const CRI_IMAGE_NAME_ANNOTATION: &str = "io.kubernetes.cri.image-name";
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

    /// Derives the key of a container from its annotations, image reference and command (see the module docs).
    pub fn derive(annotations: &HashMap<String, String>, image: &str, command: &[String]) -> Self {
        let explicit = annotations
            .get(TASK_TYPE_ANNOTATION)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty() && v.len() <= MAX_EXPLICIT_LEN);
        let container = annotations
            .get(CRI_CONTAINER_NAME_ANNOTATION)
            .map(String::as_str);
        if let Some(ns) = annotations.get(CRI_SANDBOX_NAMESPACE_ANNOTATION) {
            let ns = dns_name(ns);
            let container = container.map(dns_name);
            return Self(match (explicit, container) {
                (Some(t), Some(c)) => format!("{ns}/{t}/{c}"),
                (Some(t), None) => format!("{ns}/{t}"),
                (None, c) => {
                    let pod = annotations
                        .get(CRI_SANDBOX_NAME_ANNOTATION)
                        .map(|p| dns_name(workload_name(p)))
                        .unwrap_or_else(|| "-".to_owned());
                    let image = annotations
                        .get(CRI_IMAGE_NAME_ANNOTATION)
                        .map(String::as_str)
                        .unwrap_or(image);
                    let mut h = Fnv1a::new();
                    h.write(DOMAIN);
                    h.field(b'i', image.as_bytes());
                    format!(
                        "{ns}/{pod}/{}@{:08x}",
                        c.unwrap_or_else(|| "-".to_owned()),
                        h.finish() >> 32
                    )
                }
            });
        }
        if let Some(explicit) = explicit {
            return Self(explicit.to_owned());
        }
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

/// The characters Kubernetes draws generated name suffixes from (`k8s.io/apimachinery/pkg/util/rand`'s alphabet:
/// no vowels, no 0, 1 or 3, so no words).
const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `-<suffix>` at the end of `name` when the suffix is `len` characters of `alphabet`: `name` without it.
fn strip_suffix(
    name: &str,
    lens: std::ops::RangeInclusive<usize>,
    ok: impl Fn(u8) -> bool,
) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!base.is_empty() && lens.contains(&suffix.len()) && suffix.bytes().all(ok)).then_some(base)
}

/// The workload a pod belongs to, from its name: the pod name without the suffixes Kubernetes generates —
/// the 5 random characters of a ReplicaSet's, Job's or DaemonSet's pod, then a Deployment's pod-template hash (6 to
/// 10 of those characters) or a CronJob's schedule time (8 or more digits); or a StatefulSet's ordinal.
/// `web-7d4b9c8f6-x2kqz` -> `web`, `backup-28712345-xbcd2` -> `backup`, `db-0` -> `db`, `nginx` -> `nginx`.
pub fn workload_name(pod: &str) -> &str {
    let generated = |b: u8| GENERATED.contains(&b);
    if let Some(base) = strip_suffix(pod, 5..=5, generated) {
        return strip_suffix(base, 6..=10, generated)
            .or_else(|| strip_suffix(base, 8..=12, |b| b.is_ascii_digit()))
            .unwrap_or(base);
    }
    strip_suffix(pod, 1..=5, |b| b.is_ascii_digit()).unwrap_or(pod)
}

/// A Kubernetes namespace, pod or container name as it goes into a key: as is when it is a DNS name Kubernetes
/// would accept (lower-case alphanumerics, `-` and `.`, at most 253), else `~` and the hex of its hash.
fn dns_name(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        return name.to_owned();
    }
    let mut h = Fnv1a::new();
    h.write(DOMAIN);
    h.field(b'n', name.as_bytes());
    format!("~{:016x}", h.finish())
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

    fn pod(
        ns: &str,
        pod: &str,
        container: &str,
        extra: &[(&str, &str)],
    ) -> HashMap<String, String> {
        let mut a = ann(&[
            (CRI_SANDBOX_NAMESPACE_ANNOTATION, ns),
            (CRI_SANDBOX_NAME_ANNOTATION, pod),
            (CRI_CONTAINER_NAME_ANNOTATION, container),
            (CRI_CONTAINER_TYPE_ANNOTATION, "container"),
            (CRI_IMAGE_NAME_ANNOTATION, "docker.io/library/nginx:1.27"),
        ]);
        a.extend(ann(extra));
        a
    }

    #[test]
    fn a_pod_annotation_gives_each_container_its_own_history_per_namespace() {
        let key = |ns, c| {
            TaskKey::derive(
                &pod(ns, "etl-x7k2p", c, &[(TASK_TYPE_ANNOTATION, "etl")]),
                "img",
                &[],
            )
        };
        assert_eq!(key("team-a", "main").as_str(), "team-a/etl/main");
        assert_eq!(key("team-a", "sidecar").as_str(), "team-a/etl/sidecar");
        assert_eq!(key("team-b", "main").as_str(), "team-b/etl/main");
    }

    #[test]
    fn replicas_share_a_derived_key_and_a_new_image_starts_a_new_one() {
        let key = |pod_name, c, image| {
            let mut a = pod("shop", pod_name, c, &[]);
            a.insert(CRI_IMAGE_NAME_ANNOTATION.to_owned(), image);
            TaskKey::derive(&a, "ignored", &cmd(&["run", pod_name]))
        };
        let img = || "docker.io/shop/web:1.0".to_owned();
        let a = key("web-7d4b9c8f6-x2kqz", "app", img());
        let b = key("web-7d4b9c8f6-p9w4t", "app", img());
        let rolled = key("web-5f6d8b9c4d-m2n4p", "app", img());
        assert_eq!(a, b, "two replicas of one ReplicaSet");
        assert_eq!(a, rolled, "a later ReplicaSet of the same Deployment");
        assert!(a.as_str().starts_with("shop/web/app@"), "{a}");
        assert_ne!(
            a,
            key("web-7d4b9c8f6-x2kqz", "proxy", img()),
            "another container"
        );
        assert_ne!(
            a,
            key(
                "web-7d4b9c8f6-x2kqz",
                "app",
                "docker.io/shop/web:2.0".to_owned()
            ),
            "another image"
        );
        assert_ne!(
            a,
            key("api-7d4b9c8f6-x2kqz", "app", img()),
            "another workload"
        );
        let other_ns = TaskKey::derive(
            &pod(
                "other",
                "web-7d4b9c8f6-x2kqz",
                "app",
                &[(CRI_IMAGE_NAME_ANNOTATION, "docker.io/shop/web:1.0")],
            ),
            "",
            &[],
        );
        assert_ne!(a, other_ns, "another namespace");
    }

    #[test]
    fn generated_pod_name_suffixes_are_stripped() {
        for (pod, workload) in [
            ("web-7d4b9c8f6-x2kqz", "web"),
            ("my-web-app-5f6d8b9c4d-m2n4p", "my-web-app"),
            ("fluentd-x7k2p", "fluentd"),
            ("backup-28712345-xbcd2", "backup"),
            ("migrate-db-zq9w2", "migrate-db"),
            ("db-0", "db"),
            ("kafka-12", "kafka"),
            ("nginx", "nginx"),
            ("hello-world", "hello-world"),
            ("pe2e-cri", "pe2e-cri"),
            ("-x7k2p", "-x7k2p"),
        ] {
            assert_eq!(workload_name(pod), workload, "{pod}");
        }
    }

    #[test]
    fn names_that_are_not_dns_names_never_reach_a_key_as_they_are() {
        let k = TaskKey::derive(
            &pod(
                "a/../b",
                "p\nq",
                "C\u{1b}[31m",
                &[(TASK_TYPE_ANNOTATION, "etl")],
            ),
            "",
            &[],
        );
        let parts: Vec<&str> = k.as_str().split('/').collect();
        assert_eq!(parts.len(), 3, "{k}");
        assert!(
            parts[0].starts_with('~') && parts[2].starts_with('~'),
            "{k}"
        );
        assert_eq!(parts[1], "etl");
        assert!(k.as_str().chars().all(|c| !c.is_control()), "{k:?}");
    }

    #[test]
    fn serde_is_a_plain_string() {
        let k = TaskKey::new("etl");
        assert_eq!(serde_json::to_string(&k).expect("serialises"), "\"etl\"");
    }
}
