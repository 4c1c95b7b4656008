//! Cost of one controller tick with 100 registered containers (the goal: the broker under 1% of one
//! core at a 1 s tick, i.e. well under 10 ms per tick). Prints figures; never fails on a slow machine.

use broker::controller::{
    CgroupKind, Controller, ControllerConfig, HostCapacity, Mode, SpecLimits, TaskSpec, Usage,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn controller(n: usize) -> Controller {
    let mut c = Controller::new(
        ControllerConfig::default(),
        HostCapacity {
            cpu_cores: 64.0,
            memory_bytes: 256 << 30,
        },
    );
    for i in 0..n {
        c.register(
            TaskSpec {
                container_id: format!("c{i:03}"),
                mode: Mode::Enforce,
                cgroup: CgroupKind::V2,
                priority: (i % 5) as i32,
                depends_on: if i.is_multiple_of(10) {
                    Vec::new()
                } else {
                    vec![format!("c{:03}", i - 1)]
                },
                pipeline: Some(format!("p{}", i / 10)),
                max_borrow_cpu: None,
                allow_below_request: false,
                limits: SpecLimits {
                    cpu_limit_cores: Some(1.0),
                    memory_limit_bytes: Some(2 << 30),
                    ..SpecLimits::default()
                },
                prediction: None,
                started_at_ms: 0,
            },
            0,
        );
    }
    c
}

fn bench(cr: &mut Criterion) {
    let n = 100;
    let mut c = controller(n);
    let mut now = 0u64;
    cr.bench_function("tick_100_containers", |b| {
        b.iter(|| {
            now += 1000;
            for i in 0..n {
                // Half idle, half starved: leases are granted, renewed and released.
                let busy = (i + (now / 1000) as usize).is_multiple_of(2);
                c.observe(
                    &format!("c{i:03}"),
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

criterion_group!(benches, bench);
criterion_main!(benches);
