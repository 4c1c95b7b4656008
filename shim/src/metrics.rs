//! Task metrics from a container's cgroups, in containerd's metrics types.
//!
//! Where the cgroups are comes from runtime-hooks (`ContainerCgroup::from_pid`: every layout and path form is
//! resolved there, once); this module only maps the kernel's files to `io.containerd.cgroups.v1.Metrics` (what
//! `ctr t metrics` decodes on a v1 host) or `io.containerd.cgroups.v2.Metrics`. Missing files leave their fields
//! at zero; a file that does not parse is skipped, never a panic.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics,
    PidsStat, Throttle,
};
use containerd_shim_protos::cgroups_v2::metrics as v2m;
use runtime_hooks::v1::Dirs as V1Dirs;

/// The files of one container's v1 hierarchies, by controller name.
struct V1<'a>(&'a V1Dirs);

impl V1<'_> {
    fn dir(&self, controller: &str) -> Option<&Path> {
        let d = self.0;
        match controller {
            "cpu" => d.cpu.as_deref(),
            "cpuacct" => d.cpuacct.as_deref(),
            "memory" => d.memory.as_deref(),
            "blkio" => d.blkio.as_deref(),
            "pids" => d.pids.as_deref(),
            _ => None,
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir(controller)?.join(file)).ok()
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

/// v1's CPU figures: `cpuacct` usage and the `cpu` controller's throttling.
fn v1_cpu(dirs: &V1) -> CPUStat {
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
    cpu
}

/// cgroup v1 metrics for `dirs`, in containerd's v1 metrics type.
pub fn collect_v1(dirs: &V1Dirs) -> Metrics {
    let dirs = V1(dirs);
    let mut m = Metrics::new();

    m.cpu = Some(v1_cpu(&dirs)).into();

    if dirs.0.memory.is_some() {
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

    if dirs.0.pids.is_some() {
        let mut pids = PidsStat::new();
        pids.current = dirs.read_u64("pids", "pids.current").unwrap_or(0);
        // "max" means no limit, which containerd reports as 0.
        pids.limit = dirs
            .read_u64("pids", "pids.max")
            .filter(|v| *v != u64::MAX)
            .unwrap_or(0);
        m.pids = Some(pids).into();
    }

    if dirs.0.blkio.is_some() {
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

/// cgroup v2 metrics for the container's directory `dir`, in containerd's v2 metrics type (the fields runc's shim
/// fills: pids, cpu.stat, memory.stat with usage and limits, memory.events, io.stat).
pub fn collect_v2(dir: &Path) -> v2m::Metrics {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let read_u64 = |f: &str| read(f).as_deref().and_then(parse_u64);
    // "max" means no limit, which containerd reports as 0.
    let limit = |f: &str| read_u64(f).filter(|v| *v != u64::MAX).unwrap_or(0);
    let mut m = v2m::Metrics::new();

    let mut pids = v2m::PidsStat::new();
    pids.current = read_u64("pids.current").unwrap_or(0);
    pids.limit = limit("pids.max");
    m.pids = Some(pids).into();

    let mut cpu = v2m::CPUStat::new();
    if let Some(text) = read("cpu.stat") {
        let s = flat_keyed(&text);
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        cpu.usage_usec = g("usage_usec");
        cpu.user_usec = g("user_usec");
        cpu.system_usec = g("system_usec");
        cpu.nr_periods = g("nr_periods");
        cpu.nr_throttled = g("nr_throttled");
        cpu.throttled_usec = g("throttled_usec");
        cpu.nr_bursts = g("nr_bursts");
        cpu.burst_usec = g("burst_usec");
    }
    m.cpu = Some(cpu).into();

    let mut mem = v2m::MemoryStat::new();
    if let Some(text) = read("memory.stat") {
        let s = flat_keyed(&text);
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        mem.anon = g("anon");
        mem.file = g("file");
        mem.kernel_stack = g("kernel_stack");
        mem.slab = g("slab");
        mem.sock = g("sock");
        mem.shmem = g("shmem");
        mem.file_mapped = g("file_mapped");
        mem.file_dirty = g("file_dirty");
        mem.file_writeback = g("file_writeback");
        mem.anon_thp = g("anon_thp");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.slab_reclaimable = g("slab_reclaimable");
        mem.slab_unreclaimable = g("slab_unreclaimable");
        mem.pgfault = g("pgfault");
        mem.pgmajfault = g("pgmajfault");
        mem.workingset_refault = g("workingset_refault");
        mem.workingset_activate = g("workingset_activate");
        mem.workingset_nodereclaim = g("workingset_nodereclaim");
        mem.pgrefill = g("pgrefill");
        mem.pgscan = g("pgscan");
        mem.pgsteal = g("pgsteal");
        mem.pgactivate = g("pgactivate");
        mem.pgdeactivate = g("pgdeactivate");
        mem.pglazyfree = g("pglazyfree");
        mem.pglazyfreed = g("pglazyfreed");
        mem.thp_fault_alloc = g("thp_fault_alloc");
        mem.thp_collapse_alloc = g("thp_collapse_alloc");
    }
    mem.usage = read_u64("memory.current").unwrap_or(0);
    mem.usage_limit = limit("memory.max");
    mem.swap_usage = read_u64("memory.swap.current").unwrap_or(0);
    mem.swap_limit = limit("memory.swap.max");
    mem.max_usage = read_u64("memory.peak").unwrap_or(0);
    mem.swap_max_usage = read_u64("memory.swap.peak").unwrap_or(0);
    m.memory = Some(mem).into();

    if let Some(text) = read("memory.events") {
        let s = flat_keyed(&text);
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let mut ev = v2m::MemoryEvents::new();
        ev.low = g("low");
        ev.high = g("high");
        ev.max = g("max");
        ev.oom = g("oom");
        ev.oom_kill = g("oom_kill");
        ev.oom_group_kill = g("oom_group_kill");
        m.memory_events = Some(ev).into();
    }

    let mut io = v2m::IOStat::new();
    if let Some(text) = read("io.stat") {
        io.usage = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (major, minor) = it.next()?.split_once(':')?;
                let mut e = v2m::IOEntry::new();
                e.major = major.parse().ok()?;
                e.minor = minor.parse().ok()?;
                for kv in it {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let v = v.parse().unwrap_or(0);
                    match k {
                        "rbytes" => e.rbytes = v,
                        "wbytes" => e.wbytes = v,
                        "rios" => e.rios = v,
                        "wios" => e.wios = v,
                        _ => {}
                    }
                }
                Some(e)
            })
            .collect();
    }
    m.io = Some(io).into();
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
    use runtime_hooks::{CgroupDirs, ContainerCgroup, HostRoots};

    /// A fake hybrid host as Debian lays it out (combined `cpu,cpuacct`), with container `c1`'s files, found the
    /// way the shim finds it: runtime-hooks from `/proc/<pid>/cgroup`.
    fn fake_v1() -> (tempfile::TempDir, ContainerCgroup) {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path().join("cgroup");
        let mut mountinfo = String::new();
        for (i, (ctrl, files)) in [
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
                ],
            ),
            ("pids", vec![("pids.current", "2\n"), ("pids.max", "max\n")]),
            (
                "blkio",
                vec![(
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
                )],
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = r.join(ctrl).join("default/c1");
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(dir.join("cgroup.procs"), "11\n12\n").expect("procs");
            for (f, v) in files {
                std::fs::write(dir.join(f), v).expect("write");
            }
            mountinfo.push_str(&format!(
                "{} 31 0:{} / /sys/fs/cgroup/{ctrl} rw - cgroup cgroup rw,{ctrl}\n",
                32 + i,
                29 + i
            ));
        }
        std::fs::create_dir_all(r.join("unified/default/c1")).expect("unified");
        mountinfo.push_str("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
        std::fs::write(root.path().join("mountinfo"), mountinfo).expect("mountinfo");
        let proc = root.path().join("proc/11");
        std::fs::create_dir_all(&proc).expect("proc");
        std::fs::write(
            proc.join("cgroup"),
            "9:pids:/default/c1\n5:cpu,cpuacct:/default/c1\n4:memory:/default/c1\n3:blkio:/default/c1\n0::/default/c1\n",
        )
        .expect("proc cgroup");
        let roots = HostRoots {
            cgroup: r,
            proc: root.path().join("proc"),
            mountinfo: root.path().join("mountinfo"),
        };
        let cg = ContainerCgroup::from_pid(&roots, 11).expect("found");
        (root, cg)
    }

    fn v1(cg: &ContainerCgroup) -> &V1Dirs {
        match cg.dirs() {
            CgroupDirs::V1(d) => d,
            other => panic!("expected v1, got {other:?}"),
        }
    }

    #[test]
    fn a_combined_hierarchy_is_found_for_both_controllers_and_lists_the_pids() {
        let (root, cg) = fake_v1();
        let d = v1(&cg);
        let r = root.path().join("cgroup");
        assert_eq!(d.cpuacct, Some(r.join("cpu,cpuacct/default/c1")));
        assert_eq!(d.cpu, Some(r.join("cpu,cpuacct/default/c1")));
        assert_eq!(d.unified, Some(r.join("unified/default/c1")));
        assert_eq!(cg.try_procs().expect("procs"), vec![11, 12]);
    }

    #[test]
    fn collects_v1_metrics_from_every_controller() {
        let (_root, cg) = fake_v1();
        let m = collect_v1(v1(&cg));
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
        let (root, cg) = fake_v1();
        let mem = root.path().join("cgroup/memory/default/c1");
        std::fs::write(mem.join("memory.usage_in_bytes"), "").expect("write");
        std::fs::write(mem.join("memory.stat"), "cache\nrss x\n").expect("write");
        std::fs::remove_file(root.path().join("cgroup/cpu,cpuacct/default/c1/cpu.stat"))
            .expect("rm");
        let m = collect_v1(v1(&cg));
        assert_eq!(m.memory.usage.usage, 0);
        assert_eq!(m.memory.rss, 0);
        assert_eq!(m.cpu.throttling.periods, 0);
    }

    #[test]
    fn collects_v2_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (f, v) in [
            ("pids.current", "3\n"),
            ("pids.max", "100\n"),
            (
                "cpu.stat",
                "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_throttled 4\n",
            ),
            ("memory.current", "104857600\n"),
            ("memory.max", "max\n"),
            (
                "memory.stat",
                "anon 62914560\nfile 41943040\ninactive_file x\n",
            ),
            ("memory.events", "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\n"),
            (
                "io.stat",
                "8:0 rbytes=1000 wbytes=2000 rios=10 wios=20 dbytes=0\nbad\n",
            ),
        ] {
            std::fs::write(dir.path().join(f), v).expect("write");
        }
        let m = collect_v2(dir.path());
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!((m.cpu.usage_usec, m.cpu.nr_throttled), (2000, 4));
        assert_eq!(m.memory.usage, 104857600);
        assert_eq!(m.memory.usage_limit, 0, "max means unlimited");
        assert_eq!((m.memory.anon, m.memory.inactive_file), (62914560, 0));
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!((m.io.usage[0].rbytes, m.io.usage[0].wios), (1000, 20));
    }
}
