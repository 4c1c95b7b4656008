//! Task metrics and process lists from a container's cgroups, in containerd's metrics types.
//!
//! cgroup v2 goes through containerd-shim's `collect_metrics_v2`. For cgroup v1 (this project's CI
//! host) that crate reads v2 file formats, so v1 is read here, file by file, into
//! `io.containerd.cgroups.v1.Metrics` — the type `ctr t metrics` decodes. Missing files leave
//! their fields at zero; a file that does not parse is skipped, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics,
    PidsStat, Throttle,
};

/// A process's cgroup directories: per v1 controller, and its unified (v2) directory.
#[derive(Debug, Default, Clone)]
pub struct CgroupDirs {
    pub v1: HashMap<String, PathBuf>,
    pub unified: Option<PathBuf>,
    /// True on a pure cgroup v2 host (the unified tree is mounted at the root).
    pub pure_v2: bool,
}

impl CgroupDirs {
    /// Reads `/proc/<pid>/cgroup` text and resolves it under `root` (normally `/sys/fs/cgroup`).
    pub fn parse(proc_cgroup: &str, root: &Path) -> CgroupDirs {
        let pure_v2 = root.join("cgroup.controllers").exists();
        let mut dirs = CgroupDirs {
            pure_v2,
            ..Default::default()
        };
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                dirs.unified = Some(if pure_v2 {
                    root.join(rel)
                } else {
                    root.join("unified").join(rel)
                });
                continue;
            }
            for c in controllers.split(',') {
                let c = c.trim_start_matches("name=");
                // Debian mounts combined hierarchies (cpu,cpuacct) with a symlink per controller.
                let joined = root.join(controllers).join(rel);
                let dir = if joined.exists() {
                    joined
                } else {
                    root.join(c).join(rel)
                };
                dirs.v1.insert(c.to_string(), dir);
            }
        }
        dirs
    }

    pub fn of_pid(pid: u32) -> std::io::Result<CgroupDirs> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        Ok(CgroupDirs::parse(&text, Path::new("/sys/fs/cgroup")))
    }

    /// The pids of every process in the container's cgroup.
    pub fn procs(&self) -> std::io::Result<Vec<u32>> {
        let dir = if self.pure_v2 {
            self.unified.clone()
        } else {
            ["pids", "memory", "freezer", "cpu"]
                .iter()
                .find_map(|c| self.v1.get(*c).cloned())
        };
        let dir = dir.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.v1.get(controller)?.join(file)).ok()
    }

    fn read_u64(&self, controller: &str, file: &str) -> Option<u64> {
        parse_u64(&self.read(controller, file)?)
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// `key value` lines as a map.
fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// cgroup v1 metrics for `dirs`, in containerd's v1 metrics type.
pub fn collect_v1(dirs: &CgroupDirs) -> Metrics {
    let mut m = Metrics::new();

    let mut usage = CPUUsage::new();
    usage.total = dirs.read_u64("cpuacct", "cpuacct.usage").unwrap_or(0);
    usage.user = dirs.read_u64("cpuacct", "cpuacct.usage_user").unwrap_or(0);
    usage.kernel = dirs.read_u64("cpuacct", "cpuacct.usage_sys").unwrap_or(0);
    usage.per_cpu = dirs
        .read("cpuacct", "cpuacct.usage_percpu")
        .map(|t| {
            t.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut throttle = Throttle::new();
    if let Some(stat) = dirs.read("cpu", "cpu.stat") {
        let s = flat_keyed(&stat);
        throttle.periods = s.get("nr_periods").copied().unwrap_or(0);
        throttle.throttled_periods = s.get("nr_throttled").copied().unwrap_or(0);
        throttle.throttled_time = s.get("throttled_time").copied().unwrap_or(0);
    }
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttle).into();
    m.cpu = Some(cpu).into();

    if dirs.v1.contains_key("memory") {
        let entry = |prefix: &str| {
            let mut e = MemoryEntry::new();
            e.usage = dirs
                .read_u64("memory", &format!("{prefix}usage_in_bytes"))
                .unwrap_or(0);
            e.limit = dirs
                .read_u64("memory", &format!("{prefix}limit_in_bytes"))
                .unwrap_or(0);
            e.max = dirs
                .read_u64("memory", &format!("{prefix}max_usage_in_bytes"))
                .unwrap_or(0);
            e.failcnt = dirs
                .read_u64("memory", &format!("{prefix}failcnt"))
                .unwrap_or(0);
            e
        };
        let mut mem = MemoryStat::new();
        if let Some(stat) = dirs.read("memory", "memory.stat") {
            let s = flat_keyed(&stat);
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            mem.cache = g("cache");
            mem.rss = g("rss");
            mem.rss_huge = g("rss_huge");
            mem.mapped_file = g("mapped_file");
            mem.dirty = g("dirty");
            mem.writeback = g("writeback");
            mem.pg_pg_in = g("pgpgin");
            mem.pg_pg_out = g("pgpgout");
            mem.pg_fault = g("pgfault");
            mem.pg_maj_fault = g("pgmajfault");
            mem.inactive_anon = g("inactive_anon");
            mem.active_anon = g("active_anon");
            mem.inactive_file = g("inactive_file");
            mem.active_file = g("active_file");
            mem.unevictable = g("unevictable");
            mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
            mem.hierarchical_swap_limit = g("hierarchical_memsw_limit");
            mem.total_cache = g("total_cache");
            mem.total_rss = g("total_rss");
            mem.total_rss_huge = g("total_rss_huge");
            mem.total_mapped_file = g("total_mapped_file");
            mem.total_dirty = g("total_dirty");
            mem.total_writeback = g("total_writeback");
            mem.total_pg_pg_in = g("total_pgpgin");
            mem.total_pg_pg_out = g("total_pgpgout");
            mem.total_pg_fault = g("total_pgfault");
            mem.total_pg_maj_fault = g("total_pgmajfault");
            mem.total_inactive_anon = g("total_inactive_anon");
            mem.total_active_anon = g("total_active_anon");
            mem.total_inactive_file = g("total_inactive_file");
            mem.total_active_file = g("total_active_file");
            mem.total_unevictable = g("total_unevictable");
        }
        mem.usage = Some(entry("memory.")).into();
        mem.swap = Some(entry("memory.memsw.")).into();
        mem.kernel = Some(entry("memory.kmem.")).into();
        mem.kernel_tcp = Some(entry("memory.kmem.tcp.")).into();
        m.memory = Some(mem).into();

        if let Some(text) = dirs.read("memory", "memory.oom_control") {
            let s = flat_keyed(&text);
            let mut oom = MemoryOomControl::new();
            oom.oom_kill_disable = s.get("oom_kill_disable").copied().unwrap_or(0);
            oom.under_oom = s.get("under_oom").copied().unwrap_or(0);
            oom.oom_kill = s.get("oom_kill").copied().unwrap_or(0);
            m.memory_oom_control = Some(oom).into();
        }
    }

    if dirs.v1.contains_key("pids") {
        let mut pids = PidsStat::new();
        pids.current = dirs.read_u64("pids", "pids.current").unwrap_or(0);
        // "max" means no limit, which containerd reports as 0.
        pids.limit = dirs
            .read_u64("pids", "pids.max")
            .filter(|v| *v != u64::MAX)
            .unwrap_or(0);
        m.pids = Some(pids).into();
    }

    if dirs.v1.contains_key("blkio") {
        let mut blkio = BlkIOStat::new();
        blkio.io_service_bytes_recursive = dirs
            .read("blkio", "blkio.throttle.io_service_bytes_recursive")
            .map(|t| blkio_entries(&t))
            .unwrap_or_default();
        blkio.io_serviced_recursive = dirs
            .read("blkio", "blkio.throttle.io_serviced_recursive")
            .map(|t| blkio_entries(&t))
            .unwrap_or_default();
        m.blkio = Some(blkio).into();
    }
    m
}

/// Parses `MAJ:MIN Op value` lines; the `Total` line has no device and is skipped.
fn blkio_entries(text: &str) -> Vec<BlkIOEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let dev = it.next()?;
            let op = it.next()?;
            let value = it.next()?.parse().ok()?;
            let (major, minor) = dev.split_once(':')?;
            let mut e = BlkIOEntry::new();
            e.major = major.parse().ok()?;
            e.minor = minor.parse().ok()?;
            e.op = op.to_string();
            e.value = value;
            Some(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1() -> (tempfile::TempDir, CgroupDirs) {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        for (ctrl, files) in [
            (
                "cpu,cpuacct",
                vec![
                    ("cpuacct.usage", "123456789\n"),
                    ("cpuacct.usage_user", "100000000\n"),
                    ("cpuacct.usage_sys", "23456789\n"),
                    ("cpuacct.usage_percpu", "100 200 \n"),
                    (
                        "cpu.stat",
                        "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n",
                    ),
                ],
            ),
            (
                "memory",
                vec![
                    ("memory.usage_in_bytes", "4096\n"),
                    ("memory.limit_in_bytes", "67108864\n"),
                    ("memory.max_usage_in_bytes", "8192\n"),
                    ("memory.failcnt", "3\n"),
                    ("memory.stat", "cache 10\nrss 20\ntotal_inactive_file 7\n"),
                    (
                        "memory.oom_control",
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                    ),
                    ("cgroup.procs", "11\n12\n"),
                ],
            ),
            (
                "pids",
                vec![
                    ("pids.current", "2\n"),
                    ("pids.max", "max\n"),
                    ("cgroup.procs", "11\n12\n"),
                ],
            ),
            (
                "blkio",
                vec![(
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
                )],
            ),
        ] {
            let dir = r.join(ctrl).join("default/c1");
            std::fs::create_dir_all(&dir).expect("mkdir");
            for (f, v) in files {
                std::fs::write(dir.join(f), v).expect("write");
            }
        }
        let text = "9:pids:/default/c1\n5:cpu,cpuacct:/default/c1\n4:memory:/default/c1\n3:blkio:/default/c1\n0::/default/c1\n";
        let dirs = CgroupDirs::parse(text, r);
        (root, dirs)
    }

    #[test]
    fn parses_a_hybrid_proc_cgroup() {
        let (root, dirs) = fake_v1();
        assert!(!dirs.pure_v2);
        assert_eq!(
            dirs.v1["cpuacct"],
            root.path().join("cpu,cpuacct/default/c1")
        );
        assert_eq!(dirs.unified, Some(root.path().join("unified/default/c1")));
        assert_eq!(dirs.procs().expect("procs"), vec![11, 12]);
    }

    #[test]
    fn collects_v1_metrics_from_every_controller() {
        let (_root, dirs) = fake_v1();
        let m = collect_v1(&dirs);
        let cpu = m.cpu.as_ref().expect("cpu");
        assert_eq!(cpu.usage.total, 123456789);
        assert_eq!(cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!(cpu.throttling.throttled_periods, 4);
        let mem = m.memory.as_ref().expect("memory");
        assert_eq!(mem.usage.usage, 4096);
        assert_eq!(mem.usage.limit, 67108864);
        assert_eq!(mem.usage.failcnt, 3);
        assert_eq!(mem.rss, 20);
        assert_eq!(mem.total_inactive_file, 7);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.pids.limit, 0, "max means unlimited");
        assert_eq!(m.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(m.blkio.io_service_bytes_recursive[0].value, 4096);
    }

    #[test]
    fn malformed_files_leave_zeros() {
        let (root, dirs) = fake_v1();
        let mem = root.path().join("memory/default/c1");
        std::fs::write(mem.join("memory.usage_in_bytes"), "").expect("write");
        std::fs::write(mem.join("memory.stat"), "cache\nrss x\n").expect("write");
        std::fs::remove_file(root.path().join("cpu,cpuacct/default/c1/cpu.stat")).expect("rm");
        let m = collect_v1(&dirs);
        assert_eq!(m.memory.usage.usage, 0);
        assert_eq!(m.memory.rss, 0);
        assert_eq!(m.cpu.throttling.periods, 0);
    }
}
