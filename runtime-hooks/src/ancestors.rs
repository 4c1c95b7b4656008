//! The limits of the cgroups above a container: its pod's, its QoS class's, `kubepods`' (node allocatable) on a
//! Kubernetes node. The kernel holds the sum of a cgroup's children to its own limit, so an allocation or a loan
//! above an ancestor's limit is a promise the kernel will not keep (on v1 it even refuses a child CPU quota above
//! its parent's with EINVAL).
//!
//! Read from the container's `cgroupsPath` (cgroupfs `/kubepods/burstable/pod<uid>/<id>` or systemd
//! `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`, expanded as [`crate::discovery::normalize_cgroups_path`]
//! does), so it works before the container's own cgroup exists. v1 reads `cpu.cfs_quota_us`/`cpu.cfs_period_us`
//! and `memory.limit_in_bytes` in their hierarchies; v2 reads `cpu.max` and `memory.max`. Limits: only hard limits
//! count (not `cpu.shares`/`cpu.weight`, `memory.high` or `memory.soft_limit_in_bytes`).

use std::path::Path;

use crate::discovery::{
    DiscoveryError, Hierarchy, HostRoots, join_existing, normalize_cgroups_path,
};
use crate::parse;

/// v1 reports "no memory limit" as a page-aligned number near `i64::MAX`.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// The hard limits of one ancestor cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct AncestorLimit {
    /// The cgroup, a path from the hierarchy root (`/kubepods/burstable/pod<uid>`).
    pub path: String,
    /// CPU quota over period, cores (`None`: no quota).
    pub cpu_limit_cores: Option<f64>,
    /// Memory limit, bytes (`None`: no limit).
    pub memory_limit_bytes: Option<u64>,
}

/// The limited ancestors of the container at `cgroups_path`, nearest first, up to (not including) the hierarchy
/// root. An ancestor that exists in no hierarchy, or has neither a CPU quota nor a memory limit, is left out.
pub fn ancestor_limits(
    roots: &HostRoots,
    cgroups_path: &str,
) -> Result<Vec<AncestorLimit>, DiscoveryError> {
    let path = normalize_cgroups_path(cgroups_path)?;
    let hierarchy = Hierarchy::detect(roots)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = Vec::new();
    for n in (1..parts.len()).rev() {
        let p = format!("/{}", parts[..n].join("/"));
        let (cpu, memory) = match &hierarchy {
            Hierarchy::Unified(mount) => match join_existing(mount, &p) {
                Some(dir) => (cpu_max(&dir), memory_max(&dir)),
                None => (None, None),
            },
            Hierarchy::Legacy(_) | Hierarchy::Hybrid { .. } => (
                hierarchy.v1_dir("cpu", &p).and_then(|d| cfs_quota(&d)),
                hierarchy.v1_dir("memory", &p).and_then(|d| {
                    parse::u64_file(&d.join("memory.limit_in_bytes"))
                        .filter(|b| *b < V1_UNLIMITED_FLOOR)
                }),
            ),
        };
        if cpu.is_some() || memory.is_some() {
            out.push(AncestorLimit {
                path: p,
                cpu_limit_cores: cpu,
                memory_limit_bytes: memory,
            });
        }
    }
    Ok(out)
}

fn cores(quota: i64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// v1 `cpu.cfs_quota_us` over `cpu.cfs_period_us`.
fn cfs_quota(dir: &Path) -> Option<f64> {
    let quota: i64 = parse::read(&dir.join("cpu.cfs_quota_us"))?
        .trim()
        .parse()
        .ok()?;
    let period = parse::u64_file(&dir.join("cpu.cfs_period_us")).unwrap_or(100_000);
    cores(quota, period)
}

/// v2 `cpu.max` (`max 100000` or `50000 100000`).
fn cpu_max(dir: &Path) -> Option<f64> {
    let text = parse::read(&dir.join("cpu.max"))?;
    let mut f = text.split_whitespace();
    let quota: i64 = f.next()?.parse().ok()?;
    let period = f.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
    cores(quota, period)
}

/// v2 `memory.max`.
fn memory_max(dir: &Path) -> Option<u64> {
    parse::limit_value(&parse::read(&dir.join("memory.max"))?).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout, V1_UNLIMITED};

    const POD: &str = "/kubepods/burstable/pod7";

    /// kubepods with node allocatable memory, a QoS cgroup with nothing, a pod with both limits.
    fn node(layout: Layout) -> FakeHost {
        let host = FakeHost::new(layout);
        for p in ["/kubepods", "/kubepods/burstable", POD] {
            host.container(p);
        }
        if layout == Layout::V2 {
            host.file(&host.rel("", "/kubepods", "memory.max"), "6442450944\n");
            host.file(&host.rel("", POD, "cpu.max"), "50000 100000\n");
            host.file(&host.rel("", POD, "memory.max"), "268435456\n");
        } else {
            host.file(
                &host.rel("memory", "/kubepods", "memory.limit_in_bytes"),
                "6442450944\n",
            );
            host.file(&host.rel("cpu", POD, "cpu.cfs_quota_us"), "25000\n");
            host.file(&host.rel("cpu", POD, "cpu.cfs_period_us"), "50000\n");
            host.file(
                &host.rel("memory", POD, "memory.limit_in_bytes"),
                "268435456\n",
            );
            host.file(
                &host.rel("memory", "/kubepods/burstable", "memory.limit_in_bytes"),
                &format!("{V1_UNLIMITED}\n"),
            );
        }
        host
    }

    #[test]
    fn limited_ancestors_nearest_first_on_each_layout() {
        for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
            let host = node(layout);
            // The container's own cgroup does not exist yet (Register comes before the create).
            let got = ancestor_limits(&host.roots(), &format!("{POD}/abc123")).expect("ancestors");
            assert_eq!(
                got,
                vec![
                    AncestorLimit {
                        path: POD.to_owned(),
                        cpu_limit_cores: Some(0.5),
                        memory_limit_bytes: Some(256 << 20),
                    },
                    AncestorLimit {
                        path: "/kubepods".to_owned(),
                        cpu_limit_cores: None,
                        memory_limit_bytes: Some(6 << 30),
                    },
                ],
                "{layout:?}"
            );
        }
    }

    #[test]
    fn systemd_paths_are_expanded_and_missing_cgroups_skipped() {
        let host = FakeHost::new(Layout::V2);
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7.slice";
        for p in [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            pod,
        ] {
            host.container(p);
        }
        host.file(
            &host.rel("", "/kubepods.slice", "cpu.max"),
            "150000 100000\n",
        );
        host.file(&host.rel("", pod, "memory.max"), "1073741824\n");
        let got = ancestor_limits(
            &host.roots(),
            "kubepods-burstable-pod7.slice:cri-containerd:abc",
        )
        .expect("ancestors");
        let paths: Vec<(&str, Option<f64>, Option<u64>)> = got
            .iter()
            .map(|a| (a.path.as_str(), a.cpu_limit_cores, a.memory_limit_bytes))
            .collect();
        assert_eq!(
            paths,
            vec![
                (pod, None, Some(1 << 30)),
                ("/kubepods.slice", Some(1.5), None)
            ]
        );
        // No ancestor exists at all: nothing, not an error.
        assert_eq!(
            ancestor_limits(&host.roots(), "/elsewhere/x/y").expect("none"),
            Vec::new()
        );
        assert!(ancestor_limits(&host.roots(), "/a/../b").is_err());
    }
}
