//! Cost of one controller tick (observe of every container + tick) with 100 and with 1,000 registered
//! containers (the goal: the broker under 1% of one core at a 1 s tick, i.e. well under 10 ms per
//! tick). Prints figures; never fails on a slow machine.

use broker::controller::{
    Allocation, CgroupKind, Controller, ControllerConfig, HostCapacity, Mode, SpecLimits, TaskSpec,
    Usage,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn id(i: usize) -> String {
    format!("c{i:04}")
}

fn controller(n: usize) -> Controller {
    let mut c = Controller::new(
        ControllerConfig::default(),
        HostCapacity {
            cpu_cores: 64.0,
            memory_bytes: n as u64 * (2 << 30),
        },
    );
    for i in 0..n {
        // Running at half its CPU limit (as after a prediction), so that a starved task can borrow.
        c.adopt(
            TaskSpec {
                container_id: id(i),
                mode: Mode::Enforce,
                cgroup: CgroupKind::V2,
                priority: (i % 5) as i32,
                depends_on: if i.is_multiple_of(10) {
                    Vec::new()
                } else {
                    vec![id(i - 1)]
                },
                pipeline: Some(format!("p{}", i / 10)),
                max_borrow_cpu: None,
                allow_below_request: false,
                cpu_shares: None,
                limits: SpecLimits {
                    cpu_limit_cores: Some(1.0),
                    memory_limit_bytes: Some(2 << 30),
                    ..SpecLimits::default()
                },
                parents: Vec::new(),
                prediction: None,
                started_at_ms: 0,
                stale_after_ms: None,
            },
            Allocation {
                cpu_cores: Some(0.5),
                memory_bytes: Some(1 << 30),
                memory_max_bytes: Some(2 << 30),
            },
            0,
        );
    }
    c
}

fn bench(cr: &mut Criterion) {
    for n in [100, 1_000] {
        let mut c = controller(n);
        let ids: Vec<String> = (0..n).map(id).collect();
        let mut now = 0u64;
        cr.bench_function(&format!("tick_{n}_containers"), |b| {
            b.iter(|| {
                now += 1000;
                for (i, id) in ids.iter().enumerate() {
                    // Half idle, half starved: leases are granted, renewed and released.
                    let busy = (i + (now / 1000) as usize).is_multiple_of(2);
                    c.observe(
                        id,
                        Usage {
                            at_ms: now,
                            cpu_cores: if busy { 1.0 } else { 0.05 },
                            cpu_throttled_fraction: if busy { 0.5 } else { 0.0 },
                            memory_bytes: 512 << 20,
                            ..Usage::default()
                        },
                    );
                }
                c.tick(now)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
