//! A whole OCI `LinuxResources` applied to a live container's cgroup, field by field as `runc update` does: what
//! the shim's Update (CRI `UpdateContainerResources`, `docker update`) writes.
//!
//! - A field that is absent (or 0 where runc reads 0 as "unset") leaves its file alone; -1 means unlimited.
//! - CPU shares become `cpu.weight` on v2 with runc's current conversion ([`crate::actuate::shares_to_weight`]);
//!   quota and period become `cpu.max` there, and the v1 `cpu.cfs_*` files elsewhere.
//! - Memory and swap are written in the order the kernel accepts (v1: `memsw` raised before and lowered after the
//!   memory limit; v2: `memory.swap.max`, converted from OCI's memory+swap, before `memory.max`). A memory limit
//!   below usage is written as asked (the kernel reclaims, or refuses with EBUSY on v1), as runc does.
//! - `unified` entries are written last on v2 (they override the fields above, as in runc) and refused on v1.
//!
//! Limits: block IO device throttles, RDMA, network classes, realtime CPU and `disableOOMKiller` are not applied
//! (the OOM-killer switch belongs to the broker's allocation). Every refusal is an [`ActuateError`] naming the file.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use crate::actuate::{self, ActuateError, MemoryLimitPolicy};
use crate::cgroup::{CgroupDirs, ContainerCgroup};
use crate::{parse, v1, v2};

/// Longest `unified` value written, bytes.
const MAX_UNIFIED_VALUE: usize = 4096;

/// `Some(None)` for -1 (unlimited), `Some(Some(n))` for a positive value, `None` for 0 or absent (unset).
fn limit(v: Option<i64>) -> Option<Option<u64>> {
    match v? {
        0 => None,
        n if n < 0 => Some(None),
        n => Some(Some(n as u64)),
    }
}

fn need<'a>(
    dir: &'a Option<std::path::PathBuf>,
    controller: &'static str,
) -> Result<&'a Path, ActuateError> {
    dir.as_deref()
        .ok_or(ActuateError::NoController { controller })
}

/// A hugepage size as OCI names it (`2MB`, `1GB`, `64KB`): digits then `KB`, `MB` or `GB`.
fn check_page_size(size: &str) -> Result<(), ActuateError> {
    let digits = size
        .strip_suffix("KB")
        .or_else(|| size.strip_suffix("MB"))
        .or_else(|| size.strip_suffix("GB"));
    match digits {
        Some(d) if !d.is_empty() && d.len() <= 8 && d.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(ActuateError::BadKey {
            key: size.to_owned(),
            reason: "not a hugepage size such as 2MB or 1GB",
        }),
    }
}

/// A `unified` key names one interface file of the container's own cgroup: `controller.name`, no path, and
/// nothing that changes the cgroup's membership or structure.
fn check_unified_key(key: &str) -> Result<(), ActuateError> {
    let bad = |reason| {
        Err(ActuateError::BadKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() || key.len() > 64 {
        return bad("not 1 to 64 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("not a cgroup interface file name");
    }
    let Some((controller, file)) = key.split_once('.') else {
        return bad("not controller.name");
    };
    if controller.is_empty() || file.is_empty() || key.contains("..") {
        return bad("not controller.name");
    }
    if controller == "cgroup"
        && file != "freeze"
        && file != "max.depth"
        && file != "max.descendants"
    {
        return bad("changes the cgroup's membership or structure");
    }
    Ok(())
}

impl ContainerCgroup {
    /// Applies `r` to the container's cgroup, as `runc update` does (see the module docs): the first refusal is
    /// returned and the writes after it are not made.
    pub fn update_resources(&self, r: &LinuxResources) -> Result<(), ActuateError> {
        let unified = r.unified().as_ref().filter(|u| !u.is_empty());
        if let Some(u) = unified {
            for (k, v) in u {
                check_unified_key(k)?;
                if v.len() > MAX_UNIFIED_VALUE {
                    return Err(ActuateError::BadKey {
                        key: k.clone(),
                        reason: "value longer than 4096 bytes",
                    });
                }
            }
        }
        if let Some(pages) = r.hugepage_limits() {
            for p in pages {
                check_page_size(p.page_size())?;
            }
        }
        match self.dirs() {
            CgroupDirs::V1(d) => {
                if unified.is_some() {
                    return Err(ActuateError::Unsupported {
                        what: "unified resources",
                        version: "v1",
                    });
                }
                update_v1(d, r)
            }
            CgroupDirs::V2(d) => {
                update_v2(&d.dir, r)?;
                if let Some(u) = unified {
                    // Sorted, so the order of the writes does not depend on the map's.
                    let mut keys: Vec<&String> = u.keys().collect();
                    keys.sort();
                    for k in keys {
                        actuate::write(&d.dir.join(k), &u[k])?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn update_v1(d: &v1::Dirs, r: &LinuxResources) -> Result<(), ActuateError> {
    if let Some(cpu) = r.cpu() {
        cpu_v1(d, cpu)?;
    }
    if let Some(m) = r.memory() {
        memory_v1(need(&d.memory, "memory")?, m)?;
    }
    if let Some(p) = r.pids() {
        crate::pids::Pids::set_limit(
            need(&d.pids, "pids")?,
            (p.limit() > 0).then_some(p.limit() as u64),
        )?;
    }
    if let Some(w) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
    {
        v1::blkio::Blkio::set_weight(need(&d.blkio, "blkio")?, w)?;
    }
    if let Some(pages) = r.hugepage_limits() {
        for p in pages {
            let file = need(&d.hugetlb, "hugetlb")?
                .join(format!("hugetlb.{}.limit_in_bytes", p.page_size()));
            actuate::write_u64_exact(&file, p.limit().max(0) as u64)?;
        }
    }
    Ok(())
}

fn cpu_v1(d: &v1::Dirs, cpu: &LinuxCpu) -> Result<(), ActuateError> {
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        if !(2..=262_144).contains(&shares) {
            return Err(ActuateError::OutOfRange {
                what: "cpu shares",
                value: shares,
                range: "2..=262144",
            });
        }
        v1::cpu::Cpu::set_shares(need(&d.cpu, "cpu")?, shares)?;
    }
    let period = cpu.period().filter(|p| *p != 0);
    let quota = cpu.quota().filter(|q| *q != 0).map(|q| q.max(-1));
    if period.is_some() || quota.is_some() {
        let dir = need(&d.cpu, "cpu")?;
        let write_quota = |q: i64| {
            actuate::write_verified(&dir.join("cpu.cfs_quota_us"), &q.to_string(), |back| {
                back.parse::<i64>().ok() == Some(q)
            })
        };
        if let Some(p) = period {
            match actuate::write_u64_exact(&dir.join("cpu.cfs_period_us"), p) {
                Ok(()) => {}
                // The new period is out of bounds with the old quota (runc's retry): the quota first.
                Err(ActuateError::Invalid { .. }) if quota.is_some() => {
                    write_quota(quota.expect("checked just above"))?;
                    actuate::write_u64_exact(&dir.join("cpu.cfs_period_us"), p)?;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(q) = quota {
            write_quota(q)?;
        }
    }
    if let Some(burst) = cpu.burst() {
        actuate::write_u64_exact(&need(&d.cpu, "cpu")?.join("cpu.cfs_burst_us"), burst)?;
    }
    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let dir = need(&d.cpuset, "cpuset")?;
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            actuate::write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            actuate::write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    Ok(())
}

fn memory_v1(dir: &Path, m: &LinuxMemory) -> Result<(), ActuateError> {
    let mem = limit(m.limit());
    let swap = limit(m.swap());
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let write_swap = |s: Option<u64>| -> Result<(), ActuateError> {
        if !memsw.is_file() {
            // No swap accounting on this kernel: fine when nothing is limited, as runc accepts.
            return match s {
                None => Ok(()),
                Some(_) => Err(ActuateError::Unsupported {
                    what: "a swap limit (memory.memsw.limit_in_bytes)",
                    version: "v1 without swap accounting",
                }),
            };
        }
        match s {
            Some(v) => actuate::write_u64_exact(&memsw, v),
            None => actuate::write_verified(&memsw, "-1", |b| {
                b.parse::<u64>().is_ok_and(|b| b >= 1 << 62)
            }),
        }
    };
    // memsw must stay >= the memory limit: raised first, lowered last.
    let current = parse::u64_file(&dir.join("memory.limit_in_bytes")).unwrap_or(u64::MAX);
    let swap_first = matches!(swap, Some(s) if s.is_none_or(|s| s >= current));
    if swap_first {
        write_swap(swap.expect("swap_first implies a swap value"))?;
    }
    if let Some(l) = mem {
        v1::memory::Memory::set_limit(dir, l, MemoryLimitPolicy::AllowBelowUsage)?;
    }
    if let (Some(s), false) = (swap, swap_first) {
        write_swap(s)?;
    }
    if let Some(r) = limit(m.reservation()) {
        v1::memory::Memory::set_soft_limit(dir, r)?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(ActuateError::OutOfRange {
                what: "memory swappiness",
                value: s,
                range: "0..=100",
            });
        }
        actuate::write_u64_exact(&dir.join("memory.swappiness"), s)?;
    }
    Ok(())
}

/// OCI memory+swap to cgroup v2 `memory.swap.max` (runc's `ConvertMemorySwapToCgroupV2Value`): `None` = leave it,
/// `Some(None)` = max. `limit` is the memory limit being set, or the one in force.
fn swap_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<Option<u64>>, ActuateError> {
    let bad = |reason| {
        Err(ActuateError::BadKey {
            key: "memory.swap".to_owned(),
            reason,
        })
    };
    let swap = swap.unwrap_or(0);
    match (swap, limit.unwrap_or(0)) {
        (0, -1) => Ok(Some(None)),
        (0, _) => Ok(None),
        (s, _) if s < 0 => Ok(Some(None)),
        (_, -1) => Ok(Some(Some(swap as u64))),
        (_, 0) => bad("a swap limit needs a memory limit"),
        (_, l) if l < 0 => bad("the memory limit is negative"),
        (s, l) if s < l => bad("memory+swap is below the memory limit"),
        (s, l) => Ok(Some(Some((s - l) as u64))),
    }
}

fn update_v2(dir: &Path, r: &LinuxResources) -> Result<(), ActuateError> {
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            v2::cpu::Cpu::set_weight(dir, actuate::shares_to_weight(shares))?;
        }
        let period = cpu.period().filter(|p| *p != 0);
        let quota = cpu.quota().filter(|q| *q != 0);
        if period.is_some() || quota.is_some() {
            // As runc: a quota <= 0 is "max"; the period is kept when not given.
            let mut value = quota
                .filter(|q| *q > 0)
                .map_or_else(|| "max".to_owned(), |q| q.to_string());
            if let Some(p) = period {
                value.push_str(&format!(" {p}"));
            }
            actuate::write(&dir.join("cpu.max"), &value)?;
        }
        if let Some(burst) = cpu.burst() {
            actuate::write_u64_exact(&dir.join("cpu.max.burst"), burst)?;
        }
        if let Some(idle) = cpu.idle() {
            actuate::write(&dir.join("cpu.idle"), &idle.to_string())?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            actuate::write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            actuate::write(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(m) = r.memory() {
        let mem = limit(m.limit());
        let in_force = || {
            parse::read(&dir.join("memory.max"))
                .and_then(|t| parse::limit_value(&t))
                .map(|l| l.map_or(-1, |b| b as i64))
        };
        let limit_for_swap = match m.limit().filter(|l| *l != 0) {
            Some(l) => Some(l),
            None if m.swap().is_some_and(|s| s > 0) => in_force(),
            None => None,
        };
        if let Some(s) = swap_v2(m.swap(), limit_for_swap)? {
            let file = dir.join("memory.swap.max");
            if file.is_file() {
                match s {
                    Some(v) => actuate::write_u64_exact(&file, v)?,
                    None => actuate::write_str_exact(&file, "max")?,
                }
            } else if s != Some(0) && s.is_some() {
                return Err(ActuateError::Unsupported {
                    what: "a swap limit (memory.swap.max)",
                    version: "v2 without swap accounting",
                });
            }
        }
        if let Some(l) = mem {
            v2::memory::Memory::set_limit(dir, l, MemoryLimitPolicy::AllowBelowUsage)?;
        }
        if let Some(r) = limit(m.reservation()) {
            let low = dir.join("memory.low");
            match r {
                Some(b) => actuate::write_u64_exact(&low, b)?,
                None => actuate::write_str_exact(&low, "max")?,
            }
        }
    }
    if let Some(p) = r.pids() {
        crate::pids::Pids::set_limit(dir, (p.limit() > 0).then_some(p.limit() as u64))?;
    }
    if let Some(w) = r
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
    {
        v2::io::Io::set_weight(dir, actuate::blkio_weight_to_io_weight(w))?;
    }
    if let Some(pages) = r.hugepage_limits() {
        for p in pages {
            let file = dir.join(format!("hugetlb.{}.max", p.page_size()));
            actuate::write_u64_exact(&file, p.limit().max(0) as u64)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout, V1_UNLIMITED};

    const C: &str = "/kubepods/burstable/pod1/ctr";

    fn setup(layout: Layout) -> (FakeHost, ContainerCgroup) {
        let host = FakeHost::new(layout);
        host.container(C);
        let cg = ContainerCgroup::discover(&host.roots(), C).expect("discover fake container");
        (host, cg)
    }

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).expect("LinuxResources")
    }

    #[test]
    fn cpu_and_memory_as_runc_writes_them_on_each_layout() {
        for layout in [Layout::V1, Layout::Hybrid, Layout::V2] {
            let (host, cg) = setup(layout);
            host.file(
                &host.rel("memory", C, "memory.memsw.limit_in_bytes"),
                &format!("{V1_UNLIMITED}\n"),
            );
            if layout == Layout::V2 {
                host.file(&host.rel("", C, "memory.swap.max"), "max\n");
                host.file(&host.rel("", C, "memory.low"), "0\n");
            }
            let r = resources(serde_json::json!({
                "cpu": {"shares": 1024, "quota": 50000, "period": 100000},
                "memory": {"limit": 268435456, "swap": 268435456},
                "pids": {"limit": 64}
            }));
            cg.update_resources(&r).expect("update");
            if layout == Layout::V2 {
                assert_eq!(
                    host.read(&host.rel("", C, "cpu.weight")).trim(),
                    "100",
                    "1024 shares are weight 100"
                );
                assert_eq!(
                    host.read(&host.rel("", C, "cpu.max")).trim(),
                    "50000 100000"
                );
                assert_eq!(
                    host.read(&host.rel("", C, "memory.max")).trim(),
                    "268435456"
                );
                assert_eq!(
                    host.read(&host.rel("", C, "memory.swap.max")).trim(),
                    "0",
                    "memory+swap = memory: no swap"
                );
                assert_eq!(host.read(&host.rel("", C, "pids.max")).trim(), "64");
            } else {
                assert_eq!(host.read(&host.rel("cpu", C, "cpu.shares")).trim(), "1024");
                assert_eq!(
                    host.read(&host.rel("cpu", C, "cpu.cfs_quota_us")).trim(),
                    "50000"
                );
                assert_eq!(
                    host.read(&host.rel("cpu", C, "cpu.cfs_period_us")).trim(),
                    "100000"
                );
                assert_eq!(
                    host.read(&host.rel("memory", C, "memory.limit_in_bytes"))
                        .trim(),
                    "268435456"
                );
                assert_eq!(
                    host.read(&host.rel("memory", C, "memory.memsw.limit_in_bytes"))
                        .trim(),
                    "268435456"
                );
                assert_eq!(host.read(&host.rel("pids", C, "pids.max")).trim(), "64");
            }
            // Unlimited again (-1), and absent or 0 fields leave their files alone. (A fake v1 file reads back
            // "-1" where the kernel shows its huge "unlimited" number, so v1 memory stays limited here.)
            let memory = if layout == Layout::V2 {
                serde_json::json!({"limit": -1, "swap": -1})
            } else {
                serde_json::json!({"limit": 0})
            };
            let r = resources(serde_json::json!({
                "cpu": {"quota": -1, "shares": 0},
                "memory": memory
            }));
            cg.update_resources(&r).expect("unlimited");
            if layout == Layout::V2 {
                assert_eq!(host.read(&host.rel("", C, "cpu.max")).trim(), "max");
                assert_eq!(host.read(&host.rel("", C, "memory.max")).trim(), "max");
                assert_eq!(host.read(&host.rel("", C, "memory.swap.max")).trim(), "max");
                assert_eq!(host.read(&host.rel("", C, "cpu.weight")).trim(), "100");
            } else {
                assert_eq!(
                    host.read(&host.rel("cpu", C, "cpu.cfs_quota_us")).trim(),
                    "-1"
                );
                assert_eq!(host.read(&host.rel("cpu", C, "cpu.shares")).trim(), "1024");
                assert_eq!(
                    host.read(&host.rel("memory", C, "memory.limit_in_bytes"))
                        .trim(),
                    "268435456"
                );
            }
            assert_eq!(
                host.read(&host.rel(
                    if layout == Layout::V2 { "" } else { "pids" },
                    C,
                    "pids.max"
                ))
                .trim(),
                "64"
            );
        }
    }

    #[test]
    fn v1_swap_is_raised_before_and_lowered_after_the_memory_limit() {
        let (host, cg) = setup(Layout::V1);
        let mem = host.rel("memory", C, "memory.limit_in_bytes");
        let memsw = host.rel("memory", C, "memory.memsw.limit_in_bytes");
        host.file(&mem, "536870912\n");
        host.file(&memsw, "536870912\n");
        // A fake kernel would not refuse an order; the files end as asked either way, and the order is what
        // `swap_first` decides: raising writes memsw while the old limit is still below it.
        cg.update_resources(&resources(
            serde_json::json!({"memory": {"limit": 1073741824, "swap": 2147483648u64}}),
        ))
        .expect("raise");
        assert_eq!(host.read(&mem).trim(), "1073741824");
        assert_eq!(host.read(&memsw).trim(), "2147483648");
        cg.update_resources(&resources(
            serde_json::json!({"memory": {"limit": 268435456, "swap": 268435456}}),
        ))
        .expect("lower");
        assert_eq!(host.read(&mem).trim(), "268435456");
        assert_eq!(host.read(&memsw).trim(), "268435456");
    }

    #[test]
    fn unified_is_written_last_on_v2_and_refused_on_v1() {
        let (host, cg) = setup(Layout::V2);
        let r = resources(serde_json::json!({
            "cpu": {"shares": 2048},
            "unified": {"cpu.weight": "7", "memory.high": "104857600"}
        }));
        cg.update_resources(&r).expect("unified");
        assert_eq!(
            host.read(&host.rel("", C, "cpu.weight")).trim(),
            "7",
            "unified overrides the shares"
        );
        assert_eq!(
            host.read(&host.rel("", C, "memory.high")).trim(),
            "104857600"
        );
        for key in [
            "../escape",
            "cgroup.procs",
            "memory",
            "a/b.c",
            "",
            "cgroup.subtree_control",
        ] {
            let r = resources(serde_json::json!({"unified": {key: "1"}}));
            let e = cg.update_resources(&r).expect_err(key);
            assert!(
                matches!(&e, ActuateError::BadKey { key: k, .. } if k == key),
                "{key}: {e}"
            );
            assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
        }
        let (_host, cg1) = setup(Layout::Hybrid);
        let e = cg1
            .update_resources(&resources(
                serde_json::json!({"unified": {"memory.high": "1"}}),
            ))
            .expect_err("v1");
        assert!(
            matches!(e, ActuateError::Unsupported { version: "v1", .. }),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_what_was_wrong() {
        let (_host, cg) = setup(Layout::V1);
        let e = cg
            .update_resources(&resources(serde_json::json!({"cpu": {"shares": 1}})))
            .expect_err("shares 1");
        assert!(
            matches!(
                e,
                ActuateError::OutOfRange {
                    what: "cpu shares",
                    ..
                }
            ),
            "{e}"
        );
        let e = cg
            .update_resources(&resources(
                serde_json::json!({"hugepageLimits": [{"pageSize": "2M/../x", "limit": 1}]}),
            ))
            .expect_err("page size");
        assert!(e.to_string().contains("2M/../x"), "{e}");
        let (_host, cg2) = setup(Layout::V2);
        let e = cg2
            .update_resources(&resources(
                serde_json::json!({"memory": {"limit": 1073741824, "swap": 1024}}),
            ))
            .expect_err("memory+swap below memory");
        assert!(e.to_string().contains("memory+swap"), "{e}");
    }

    #[test]
    fn v1_cpuset_goes_to_the_cpuset_hierarchy() {
        let (host, _) = setup(Layout::V1);
        // The fake host mounts no cpuset: add one, as a real v1 host has.
        let info = host.base_file("mountinfo");
        let mut text = std::fs::read_to_string(&info).expect("mountinfo");
        text.push_str("60 31 0:60 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n");
        std::fs::write(&info, text).expect("mountinfo");
        host.file(&host.rel("cpuset", C, "cpuset.cpus"), "0-1\n");
        host.file(&host.rel("cpuset", C, "cpuset.mems"), "0\n");
        let cg = ContainerCgroup::discover(&host.roots(), C).expect("discover");
        cg.update_resources(&resources(
            serde_json::json!({"cpu": {"cpus": "1", "mems": "0"}}),
        ))
        .expect("cpuset");
        assert_eq!(host.read(&host.rel("cpuset", C, "cpuset.cpus")).trim(), "1");
    }

    #[test]
    fn swap_conversion_matches_runc() {
        const MB: i64 = 1 << 20;
        assert_eq!(swap_v2(None, Some(128 * MB)).ok(), Some(None));
        assert_eq!(swap_v2(Some(0), Some(-1)).ok(), Some(Some(None)));
        assert_eq!(swap_v2(Some(-1), Some(128 * MB)).ok(), Some(Some(None)));
        assert_eq!(
            swap_v2(Some(256 * MB), Some(-1)).ok(),
            Some(Some(Some(256 << 20)))
        );
        assert_eq!(
            swap_v2(Some(256 * MB), Some(128 * MB)).ok(),
            Some(Some(Some(128 << 20)))
        );
        assert!(swap_v2(Some(256 * MB), None).is_err());
        assert!(swap_v2(Some(128 * MB), Some(256 * MB)).is_err());
    }
}
