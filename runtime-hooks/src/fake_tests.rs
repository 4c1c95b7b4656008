//! Unit tests on fake v1, v2 and hybrid cgroupfs trees: every file read and written, malformed content.

use crate::testutil::{FakeHost, Layout, V1_UNLIMITED};
use crate::{ActuateError, CgroupVersion, ContainerCgroup, CpuLimit, MemoryLimitPolicy};

const C: &str = "/default/ctr";
const ALL: [Layout; 3] = [Layout::V1, Layout::V2, Layout::Hybrid];

fn setup(layout: Layout) -> (FakeHost, ContainerCgroup) {
    let host = FakeHost::new(layout);
    host.container(C);
    let cg = ContainerCgroup::discover(&host.roots(), C).expect("discover fake container");
    (host, cg)
}

/// A network namespace listing thousands of interfaces (a container may create them): its counters are left
/// out rather than read past 256 KiB at every tick, and looked at again every 60th sample.
#[test]
fn net_counters_past_the_bound_are_left_out_and_looked_at_again() {
    let (host, mut cg) = setup(Layout::V2);
    let line = "  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n";
    host.proc_file("4242/net/dev", &format!("h1\nh2\n{}", line.repeat(6_000)));
    cg.set_net_pid(Some(4242));
    let mut sampler = cg.sampler();
    assert_eq!(sampler.sample().net, None);
    assert!(sampler.net_oversized());
    host.proc_file("4242/net/dev", &format!("h1\nh2\n{line}"));
    let left_out = (0..100)
        .take_while(|_| sampler.sample().net.is_none())
        .count();
    assert_eq!(left_out, 59, "the next 59 samples do not read it");
    assert!(!sampler.net_oversized());
    assert_eq!(sampler.sample().net.map(|n| n.tx_bytes), Some(500));
}

#[test]
fn samples_every_field_on_each_layout() {
    for layout in ALL {
        let (host, mut cg) = setup(layout);
        host.proc_file(
            "4242/net/dev",
            "h1\nh2\n    lo: 5 5 0 0 0 0 0 0 5 5 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n",
        );
        cg.set_net_pid(Some(4242));
        let s = cg.sample();
        let mut cached = cg.sampler().sample();
        cached.unix_ns = s.unix_ns;
        cached.monotonic_ns = s.monotonic_ns;
        assert_eq!(cached, s, "{layout:?}: the caching sampler reads the same");
        let core = cg.sampler().sample_scope(crate::SampleScope::CORE);
        assert_eq!(
            (core.net, core.pressure),
            (None, Default::default()),
            "{layout:?}: core scope"
        );
        assert_eq!(
            (core.cpu, core.memory, core.io, core.pids),
            (s.cpu, s.memory, s.io, s.pids)
        );
        assert!(
            s.unix_ns > 1_600_000_000_000_000_000,
            "{layout:?}: wall clock"
        );
        assert!(s.monotonic_ns > 0);
        let (usage, throttled) = match layout {
            Layout::V2 => (2_000_000, 300_000),
            _ => (2_000_000, 300_000),
        };
        assert_eq!(s.cpu.usage_ns, Some(usage), "{layout:?}");
        assert_eq!(s.cpu.nr_periods, Some(10));
        assert_eq!(s.cpu.nr_throttled, Some(4));
        assert_eq!(s.cpu.throttled_ns, Some(throttled));
        assert_eq!(s.memory.usage_bytes, Some(104_857_600), "{layout:?}");
        assert_eq!(s.memory.working_set_bytes, Some(104_857_600 - 10_485_760));
        assert_eq!(s.memory.rss_bytes, Some(62_914_560));
        assert_eq!(s.memory.cache_bytes, Some(41_943_040));
        assert_eq!(s.memory.peak_bytes, Some(209_715_200));
        assert_eq!(s.memory.limit_bytes, None, "unlimited reads as None");
        assert_eq!(s.memory.limit_hits, Some(5));
        assert_eq!(s.memory.oom_kills, Some(1));
        assert_eq!(s.io.read_bytes, Some(1001));
        assert_eq!(s.io.write_bytes, Some(2002));
        assert_eq!(s.io.read_ops, Some(13));
        assert_eq!(s.io.write_ops, Some(24));
        assert_eq!(s.pids.current, Some(3));
        assert_eq!(s.pids.limit, None);
        assert_eq!(s.frozen, Some(false));
        let net = s.net.expect("net from /proc/<pid>/net/dev");
        assert_eq!(
            (net.rx_bytes, net.tx_bytes, net.rx_packets, net.tx_packets),
            (1000, 500, 10, 5)
        );
        match layout {
            Layout::V1 => {
                assert_eq!(cg.version(), CgroupVersion::V1);
                assert_eq!(s.pressure.cpu, None);
                assert_eq!(s.memory.under_oom, Some(false));
            }
            Layout::V2 | Layout::Hybrid => {
                let cpu = s.pressure.cpu.expect("cpu pressure");
                assert_eq!(cpu.some.avg10, 1.0);
                assert_eq!(cpu.some.total_us, 1000);
                assert_eq!(cpu.full.map(|f| f.total_us), Some(500));
                assert!(s.pressure.memory.is_some() && s.pressure.io.is_some());
            }
        }
        if layout == Layout::V2 {
            assert_eq!(s.memory.oom_events, Some(1));
            assert_eq!(cg.version(), CgroupVersion::V2);
        }
        if layout == Layout::Hybrid {
            assert_eq!(cg.version(), CgroupVersion::Hybrid);
        }
    }
}

/// Every file read by sampling, per layout (relative controller, file name).
fn sampled_files(layout: Layout) -> Vec<(&'static str, &'static str)> {
    match layout {
        Layout::V2 => vec![
            ("", "cpu.stat"),
            ("", "memory.current"),
            ("", "memory.peak"),
            ("", "memory.max"),
            ("", "memory.stat"),
            ("", "memory.events"),
            ("", "io.stat"),
            ("", "pids.current"),
            ("", "pids.max"),
            ("", "cgroup.events"),
            ("", "cpu.pressure"),
            ("", "memory.pressure"),
            ("", "io.pressure"),
        ],
        _ => {
            let mut v = vec![
                ("cpu", "cpu.stat"),
                ("cpuacct", "cpuacct.usage"),
                ("memory", "memory.usage_in_bytes"),
                ("memory", "memory.max_usage_in_bytes"),
                ("memory", "memory.limit_in_bytes"),
                ("memory", "memory.failcnt"),
                ("memory", "memory.stat"),
                ("memory", "memory.oom_control"),
                ("blkio", "blkio.throttle.io_service_bytes_recursive"),
                ("blkio", "blkio.throttle.io_serviced_recursive"),
                ("pids", "pids.current"),
                ("pids", "pids.max"),
                ("freezer", "freezer.state"),
            ];
            if layout == Layout::Hybrid {
                v.extend([
                    ("", "cpu.pressure"),
                    ("", "memory.pressure"),
                    ("", "io.pressure"),
                    ("", "cpu.stat"),
                ]);
            }
            v
        }
    }
}

#[test]
fn malformed_files_give_absent_fields_never_panics() {
    let garbage = [
        "",
        "\n",
        "max\n",
        "184467440737095516160000\n",
        "-5\n",
        "some\nfull\n",
        "x y z\n1 2 3\n",
        "some avg10=",
        "\u{0}\u{1}binary",
    ];
    for layout in ALL {
        // One tree per layout: each file is garbled, sampled (one-off and cached), then restored.
        let (host, cg) = setup(layout);
        for (controller, file) in sampled_files(layout) {
            // Fresh per file: the previous file was deleted and recreated (a new inode).
            let mut sampler = cg.sampler();
            let rel = host.rel(controller, C, file);
            let original = host.read(&rel);
            for content in garbage {
                host.file(&rel, content);
                for s in [cg.sample(), sampler.sample()] {
                    // Spot checks: the garbled file's fields are gone, the rest stay.
                    match file {
                        "memory.usage_in_bytes" | "memory.current" => {
                            assert_eq!(s.memory.usage_bytes, None);
                            assert_eq!(s.memory.working_set_bytes, None);
                        }
                        "cpu.pressure" => {
                            assert_eq!(s.pressure.cpu, None, "{layout:?} {content:?}")
                        }
                        "pids.current" => assert_eq!(s.pids.current, None),
                        _ => {}
                    }
                    if file != "pids.current" {
                        assert_eq!(s.pids.current, Some(3), "{layout:?} {file} {content:?}");
                    }
                }
            }
            // A missing file is absence too.
            std::fs::remove_file(host.root().join(&rel)).expect("rm");
            let _ = cg.sample();
            host.file(&rel, &original);
        }
    }
}

#[test]
fn missing_psi_and_huge_numbers() {
    let (host, cg) = setup(Layout::Hybrid);
    for f in ["cpu.pressure", "memory.pressure", "io.pressure"] {
        std::fs::remove_file(host.root().join(host.rel("", C, f))).expect("rm psi");
    }
    host.file(
        &host.rel("memory", C, "memory.usage_in_bytes"),
        "18446744073709551615\n",
    );
    host.file(
        &host.rel("memory", C, "memory.stat"),
        "total_inactive_file 18446744073709551615\n",
    );
    host.file(
        &host.rel("memory", C, "memory.limit_in_bytes"),
        "1073741824\n",
    );
    host.file(&host.rel("pids", C, "pids.max"), "100\n");
    let s = cg.sample();
    assert_eq!(s.pressure.cpu, None);
    assert_eq!(s.pressure.memory, None);
    assert_eq!(s.pressure.io, None);
    assert_eq!(s.memory.usage_bytes, Some(u64::MAX));
    assert_eq!(s.memory.working_set_bytes, Some(0));
    assert_eq!(s.memory.limit_bytes, Some(1 << 30));
    assert_eq!(s.pids.limit, Some(100));
    // Without cpuacct the hybrid cgroup2 cpu.stat supplies usage.
    std::fs::remove_file(host.root().join(host.rel("cpuacct", C, "cpuacct.usage"))).expect("rm");
    assert_eq!(cg.sample().cpu.usage_ns, Some(9000));
    // An idle blkio cgroup shows only "Total 0": zeros, not absence.
    host.file(
        &host.rel("blkio", C, "blkio.throttle.io_service_bytes_recursive"),
        "Total 0\n",
    );
    assert_eq!(cg.sample().io.read_bytes, Some(0));

    let (host, cg) = setup(Layout::V2);
    host.file(&host.rel("", C, "memory.max"), "max\n");
    host.file(
        &host.rel("", C, "cpu.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
    );
    host.file(&host.rel("", C, "io.stat"), "");
    let s = cg.sample();
    assert_eq!(s.memory.limit_bytes, None);
    assert_eq!(s.pressure.cpu.and_then(|p| p.full), None);
    assert_eq!(s.io.read_bytes, Some(0));
}

#[test]
fn cpu_limit_writes_each_layout() {
    for layout in ALL {
        let (host, cg) = setup(layout);
        cg.set_cpu_limit(&CpuLimit {
            quota_us: Some(50_000),
            period_us: 100_000,
            burst_us: Some(10_000),
        })
        .expect("set cpu limit");
        if layout == Layout::V2 {
            assert_eq!(host.read(&host.rel("", C, "cpu.max")), "50000 100000");
            assert_eq!(host.read(&host.rel("", C, "cpu.max.burst")), "10000");
        } else {
            assert_eq!(host.read(&host.rel("cpu", C, "cpu.cfs_quota_us")), "50000");
            assert_eq!(
                host.read(&host.rel("cpu", C, "cpu.cfs_period_us")),
                "100000"
            );
            assert_eq!(host.read(&host.rel("cpu", C, "cpu.cfs_burst_us")), "10000");
        }
        cg.set_cpu_limit(&CpuLimit::unlimited()).expect("unlimit");
        if layout == Layout::V2 {
            assert_eq!(host.read(&host.rel("", C, "cpu.max")), "max 100000");
            std::fs::remove_file(host.root().join(host.rel("", C, "cpu.max.burst"))).expect("rm");
        } else {
            assert_eq!(host.read(&host.rel("cpu", C, "cpu.cfs_quota_us")), "-1");
            std::fs::remove_file(host.root().join(host.rel("cpu", C, "cpu.cfs_burst_us")))
                .expect("rm");
        }
        let err = cg
            .set_cpu_limit(&CpuLimit {
                quota_us: Some(1000),
                period_us: 100_000,
                burst_us: Some(1),
            })
            .expect_err("no burst file");
        assert!(matches!(err, ActuateError::Unsupported { .. }), "{err}");
        let err = cg.set_cpu_limit(&CpuLimit {
            quota_us: Some(1000),
            period_us: 10,
            burst_us: None,
        });
        assert!(matches!(err, Err(ActuateError::OutOfRange { .. })));

        cg.set_cpu_shares(512).expect("shares");
        if layout == Layout::V2 {
            assert_eq!(host.read(&host.rel("", C, "cpu.weight")), "59");
        } else {
            assert_eq!(host.read(&host.rel("cpu", C, "cpu.shares")), "512");
        }
        assert!(matches!(
            cg.set_cpu_shares(1),
            Err(ActuateError::OutOfRange { .. })
        ));
    }
}

#[test]
fn memory_limits_refuse_below_usage() {
    for layout in ALL {
        let (host, cg) = setup(layout);
        let (limit_file, high_file) = if layout == Layout::V2 {
            (
                host.rel("", C, "memory.max"),
                host.rel("", C, "memory.high"),
            )
        } else {
            (
                host.rel("memory", C, "memory.limit_in_bytes"),
                host.rel("memory", C, "memory.soft_limit_in_bytes"),
            )
        };
        // Usage is 100 MiB.
        let err = cg
            .set_memory_limit(Some(50 << 20), MemoryLimitPolicy::default())
            .expect_err("refused");
        match &err {
            ActuateError::BelowUsage { limit, usage, .. } => {
                assert_eq!((*limit, *usage), (50 << 20, 100 << 20))
            }
            other => panic!("{layout:?}: {other}"),
        }
        assert!(
            err.to_string().contains("AllowBelowUsage"),
            "message says how to opt in: {err}"
        );
        let untouched = host.read(&limit_file);
        assert!(
            untouched.starts_with("max") || untouched.starts_with(V1_UNLIMITED),
            "{untouched}"
        );
        cg.set_memory_limit(Some(50 << 20), MemoryLimitPolicy::AllowBelowUsage)
            .expect("opted in");
        assert_eq!(host.read(&limit_file), (50u64 << 20).to_string());
        cg.set_memory_limit(Some(200 << 20), MemoryLimitPolicy::default())
            .expect("above usage");
        assert_eq!(host.read(&limit_file), (200u64 << 20).to_string());
        cg.set_memory_high(Some(150 << 20)).expect("high");
        assert_eq!(host.read(&high_file), (150u64 << 20).to_string());
        if layout == Layout::V2 {
            cg.set_memory_limit(None, MemoryLimitPolicy::default())
                .expect("unlimited");
            assert_eq!(host.read(&limit_file), "max");
            cg.set_memory_high(None).expect("no high");
            assert_eq!(host.read(&high_file), "max");
            assert!(matches!(
                cg.set_oom_kill_disabled(true),
                Err(ActuateError::Unsupported { .. })
            ));
        } else {
            // A fake file cannot play the kernel's "-1 reads back as PAGE_COUNTER_MAX": a typed mismatch.
            let err = cg
                .set_memory_limit(None, MemoryLimitPolicy::default())
                .expect_err("fake readback");
            assert!(
                matches!(err, ActuateError::Mismatch { ref read, .. } if read == "-1"),
                "{err}"
            );
            host.file(&host.rel("memory", C, "memory.usage_in_bytes"), "garbage");
            assert!(matches!(
                cg.set_memory_limit(Some(1 << 30), MemoryLimitPolicy::default()),
                Err(ActuateError::Mismatch { .. })
            ));
        }
    }
}

#[test]
fn v1_memsw_is_raised_first() {
    let (host, cg) = setup(Layout::V1);
    host.file(
        &host.rel("memory", C, "memory.memsw.limit_in_bytes"),
        "209715200\n",
    );
    cg.set_memory_limit(Some(400 << 20), MemoryLimitPolicy::default())
        .expect("raise");
    assert_eq!(
        host.read(&host.rel("memory", C, "memory.memsw.limit_in_bytes")),
        (400u64 << 20).to_string()
    );
    cg.set_memory_limit(Some(300 << 20), MemoryLimitPolicy::default())
        .expect("lower");
    assert_eq!(
        host.read(&host.rel("memory", C, "memory.memsw.limit_in_bytes")),
        (400u64 << 20).to_string()
    );
}

#[test]
fn oom_control_and_io_and_pids_and_freezer() {
    for layout in ALL {
        let (host, cg) = setup(layout);
        if layout != Layout::V2 {
            // The kernel would answer "oom_kill_disable 1\n..." on read; a fake file echoes "1": typed mismatch.
            let err = cg
                .set_oom_kill_disabled(true)
                .expect_err("fake readback differs");
            assert!(matches!(err, ActuateError::Mismatch { .. }));
            assert_eq!(host.read(&host.rel("memory", C, "memory.oom_control")), "1");
        }
        cg.set_io_weight(500).expect("io weight");
        if layout == Layout::V2 {
            assert_eq!(host.read(&host.rel("", C, "io.weight")), "default 4950");
            std::fs::remove_file(host.root().join(host.rel("", C, "io.weight"))).expect("rm");
        } else {
            assert_eq!(host.read(&host.rel("blkio", C, "blkio.bfq.weight")), "500");
            std::fs::remove_file(host.root().join(host.rel("blkio", C, "blkio.bfq.weight")))
                .expect("rm");
        }
        assert!(matches!(
            cg.set_io_weight(500),
            Err(ActuateError::Unsupported { .. })
        ));
        assert!(matches!(
            cg.set_io_weight(5),
            Err(ActuateError::OutOfRange { .. })
        ));
        // No weight file now: the priority still reaches the listed threads (our own, so no root is needed).
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let threads = if layout == Layout::V2 {
            host.rel("", C, "cgroup.threads")
        } else {
            host.rel("pids", C, "tasks")
        };
        host.file(&threads, &format!("{tid}\n"));
        let prio =
            crate::ioprio::IoPriority::new(crate::ioprio::IoClass::BestEffort, 6).expect("level");
        let applied = cg.set_io_priority(500, Some(prio)).expect("io priority");
        assert!(!applied.weight_written);
        assert_eq!(applied.threads.set, 1);
        assert_eq!(
            crate::ioprio::get_thread(tid).expect("ioprio_get"),
            Some(prio)
        );

        let pids_file = if layout == Layout::V2 {
            host.rel("", C, "pids.max")
        } else {
            host.rel("pids", C, "pids.max")
        };
        cg.set_pids_limit(Some(64)).expect("pids");
        assert_eq!(host.read(&pids_file), "64");
        assert_eq!(cg.sample().pids.limit, Some(64));
        cg.set_pids_limit(None).expect("pids max");
        assert_eq!(host.read(&pids_file), "max");

        if layout == Layout::V2 {
            host.file(&host.rel("", C, "cgroup.events"), "populated 1\nfrozen 1\n");
            cg.freeze().expect("freeze");
            assert_eq!(host.read(&host.rel("", C, "cgroup.freeze")), "1");
            assert_eq!(cg.sample().frozen, Some(true));
            host.file(&host.rel("", C, "cgroup.events"), "populated 1\nfrozen 0\n");
            cg.thaw().expect("thaw");
            assert_eq!(host.read(&host.rel("", C, "cgroup.freeze")), "0");
        } else {
            cg.freeze().expect("freeze");
            assert_eq!(
                host.read(&host.rel("freezer", C, "freezer.state")),
                "FROZEN"
            );
            assert_eq!(cg.sample().frozen, Some(true));
            cg.thaw().expect("thaw");
            assert_eq!(
                host.read(&host.rel("freezer", C, "freezer.state")),
                "THAWED"
            );
        }
    }
}

#[test]
fn missing_controller_is_typed() {
    let (host, _) = setup(Layout::V1);
    std::fs::remove_dir_all(host.root().join("freezer/default")).expect("rm freezer");
    std::fs::remove_dir_all(host.root().join("pids/default")).expect("rm pids");
    let cg = ContainerCgroup::discover(&host.roots(), C).expect("still found");
    assert!(matches!(
        cg.freeze(),
        Err(ActuateError::NoController {
            controller: "freezer"
        })
    ));
    assert!(matches!(
        cg.set_pids_limit(Some(1)),
        Err(ActuateError::NoController { controller: "pids" })
    ));
    assert_eq!(cg.sample().frozen, None);
    // A vanished cgroup (container gone) samples as all-absent, and writes fail with the path.
    std::fs::remove_dir_all(host.root().join("cpu/default")).expect("rm cpu");
    let err = cg.set_cpu_shares(100).expect_err("gone");
    assert!(matches!(err, ActuateError::Write { ref path, .. } if path.ends_with("cpu.shares")));
}

/// Pids lists the processes a container moved into cgroups below its own too (`runc ps` does); the cgroup's own
/// `cgroup.procs` must be there, one below it that is gone is skipped.
#[test]
fn every_process_below_the_cgroup_is_listed() {
    for layout in [Layout::V1, Layout::V2] {
        let (host, cg) = setup(layout);
        let ctrl = if layout == Layout::V1 { "memory" } else { "" };
        host.file(&host.rel(ctrl, C, "cgroup.procs"), "10\n11\n");
        host.file(&host.rel(ctrl, C, "made/cgroup.procs"), "12\n");
        host.file(&host.rel(ctrl, C, "made/deeper/cgroup.procs"), "13\nbad\n");
        std::fs::create_dir_all(host.root().join(host.rel(ctrl, C, "emptied"))).expect("dir");
        let mut all = cg.try_procs_all().expect("procs");
        all.sort_unstable();
        assert_eq!(all, vec![10, 11, 12, 13], "{layout:?}");
        assert_eq!(cg.try_procs().expect("procs"), vec![10, 11], "{layout:?}");
        std::fs::remove_file(host.root().join(host.rel(ctrl, C, "cgroup.procs"))).expect("rm");
        assert!(
            matches!(cg.try_procs_all(), Err(ActuateError::Read { .. })),
            "{layout:?}"
        );
    }
}

#[test]
fn procs_lists_pids() {
    let (host, cg) = setup(Layout::V2);
    host.file(&host.rel("", C, "cgroup.procs"), "10\n11\nbad\n");
    assert_eq!(cg.procs(), vec![10, 11]);
    host.proc_file(
        "10/net/dev",
        "a\nb\n  eth0: 7 1 0 0 0 0 0 0 9 2 0 0 0 0 0 0\n",
    );
    assert_eq!(cg.sample().net.map(|n| n.rx_bytes), Some(7));
}
