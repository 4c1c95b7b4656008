//! The allocation controller driven by a sequence of registrations, usage reports, resizes, stops and ticks, every
//! value inside the range the broker's request checks accept (so anything a shim, a pod's spec or its cgroup files
//! can make it say). After each step every directive must keep what the controller promises a user
//! (`broker::controller`'s header): CPU and memory finite and positive, never above the user's limit, a CPU quota
//! never below the user's request (unless the task allows it), no quota lifted while a CPU limit is set, and on
//! v1 the OOM killer disabled only below the user's memory limit.
#![no_main]
use std::collections::HashMap;

use broker::controller::{
    Action, Ancestor, CgroupKind, Controller, ControllerConfig, Directive, HostCapacity, Mode,
    SpecLimits, TaskSpec, Usage,
};
use broker::validate::{MAX_BYTES, MAX_CORES};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Bytes;
use predictor::{Band, Confidence, Estimate, Prediction, ProfilePoint, TaskKey};

/// Values a spec may name.
trait SpecValues {
    fn cores(&mut self) -> f64;
    fn bytes(&mut self) -> u64;
}

impl SpecValues for Bytes<'_> {
    /// Cores a spec may name: in (0, MAX_CORES].
    fn cores(&mut self) -> f64 {
        match self.u8() % 4 {
            0 => 0.001,
            1 => MAX_CORES,
            2 => f64::from(self.u8() % 16 + 1) / 4.0,
            _ => self.num(MAX_CORES).max(1e-6),
        }
    }
    /// Bytes a spec may name: in [1, MAX_BYTES].
    fn bytes(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => 1,
            1 => MAX_BYTES,
            2 => u64::from(self.u8() % 64 + 1) << 24,
            _ => self.u64() % MAX_BYTES + 1,
        }
    }
}

fn estimate(b: &mut Bytes, max: f64) -> Estimate {
    let mut v = [b.num(max), b.num(max), b.num(max)];
    v.sort_by(f64::total_cmp);
    Estimate {
        lower: v[0],
        point: v[1],
        upper: v[2],
        limit: b.num(max),
        kind: None,
    }
}

fn band(b: &mut Bytes, max: f64) -> Band {
    let e = estimate(b, max);
    Band {
        lower: e.lower,
        point: e.point,
        upper: e.upper,
    }
}

/// A prediction as the predictor may give one: every estimate finite and at least 0.
fn prediction(b: &mut Bytes) -> Prediction {
    let mut p = Prediction::cold(&TaskKey::new("t"));
    p.confidence = [
        Confidence::None,
        Confidence::Low,
        Confidence::Medium,
        Confidence::High,
    ][usize::from(b.u8() % 4)];
    p.level = 0.9;
    p.runs = u64::from(b.u8());
    p.duration_s = estimate(b, 1e6);
    p.cpu_cores = estimate(b, 1024.0);
    p.memory_bytes = estimate(b, MAX_BYTES as f64);
    p.io_bytes_per_s = estimate(b, 1e12);
    if b.bit() {
        p.profile = (0..predictor::BUCKETS)
            .map(|_| ProfilePoint {
                cpu_cores: band(b, 1024.0),
                memory_bytes: band(b, MAX_BYTES as f64),
                io_bytes_per_s: band(b, 1e12),
            })
            .collect();
    }
    p
}

fn limits(b: &mut Bytes) -> SpecLimits {
    SpecLimits {
        cpu_limit_cores: b.opt(Bytes::cores),
        cpu_request_cores: b.opt(Bytes::cores),
        memory_limit_bytes: b.opt(Bytes::bytes),
        memory_request_bytes: b.opt(Bytes::bytes),
    }
}

fn parents(b: &mut Bytes) -> Vec<Ancestor> {
    (0..b.u8() % 3)
        .map(|i| Ancestor {
            path: ["/kubepods/burstable/pod1", "/kubepods", "/kubepods/pod2"][usize::from(i)]
                .to_owned(),
            cpu_cores: b.opt(Bytes::cores),
            memory_bytes: b.opt(Bytes::bytes),
        })
        .collect()
}

fn usage(b: &mut Bytes, at_ms: u64) -> Usage {
    Usage {
        at_ms,
        cpu_cores: b.num(MAX_CORES),
        cpu_throttled_fraction: b.num(1.0),
        cpu_psi_avg10: b.opt(|b| b.num(100.0)),
        memory_psi_avg10: b.opt(|b| b.num(100.0)),
        memory_bytes: b.int(MAX_BYTES),
        working_set_bytes: b.opt(|b| b.int(MAX_BYTES)),
        under_oom: b.u8() % 5 == 0,
        net_tx_bytes_per_sec: None,
        net_rx_bytes_per_sec: None,
    }
}

/// What a task was registered (or last resized) with.
struct Known {
    limits: SpecLimits,
    allow_below_request: bool,
    parents: bool,
}

fn check(d: &Directive, tasks: &HashMap<String, Known>, when: &str) {
    let Some(k) = tasks.get(&d.container_id) else {
        return;
    };
    let l = &k.limits;
    let what = format!("{when}: {d:?} with {:?}", l);
    match &d.action {
        Action::SetCpu { cores: Some(c) } => {
            assert!(c.is_finite() && *c > 0.0, "{what}");
            if let Some(lim) = l.cpu_limit_cores {
                assert!(
                    *c <= lim * (1.0 + 1e-9),
                    "CPU above the user's limit; {what}"
                );
            }
            // A request above the limit (a spec Kubernetes would refuse) yields to the limit.
            if let Some(req) = l
                .cpu_request_cores
                .filter(|_| !k.allow_below_request && !k.parents)
            {
                let floor = l.cpu_limit_cores.map_or(req, |lim| req.min(lim));
                assert!(
                    *c >= floor * (1.0 - 1e-9),
                    "CPU below the user's request; {what}"
                );
            }
        }
        Action::SetCpu { cores: None } => {
            assert!(
                l.cpu_limit_cores.is_none(),
                "CPU quota lifted under a CPU limit; {what}"
            );
        }
        Action::SetMemoryHigh {
            high_bytes,
            max_bytes,
        } => {
            if let Some(lim) = l.memory_limit_bytes {
                assert!(
                    max_bytes.is_some_and(|m| m <= lim),
                    "memory.max above the user's limit; {what}"
                );
            }
            if let (Some(h), Some(m)) = (high_bytes, max_bytes) {
                assert!(h <= m && *h > 0, "{what}");
            }
        }
        Action::SetMemoryLimit {
            limit_bytes,
            oom_kill_disabled,
        } => {
            if let Some(lim) = l.memory_limit_bytes {
                assert!(
                    limit_bytes.is_some_and(|m| m <= lim),
                    "memory limit above the user's; {what}"
                );
                if *oom_kill_disabled {
                    assert!(
                        limit_bytes.is_some_and(|m| m < lim),
                        "OOM killer off at the user's limit; {what}"
                    );
                }
            }
            assert!(limit_bytes.is_none_or(|m| m > 0), "{what}");
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let cfg = ControllerConfig {
        quota_unlimited_cpu: b.bit(),
        ..ControllerConfig::default()
    };
    let host = HostCapacity {
        cpu_cores: f64::from(b.u8() % 64 + 1) / 2.0,
        memory_bytes: u64::from(b.u8() % 64 + 1) << 28,
    };
    let mut c = Controller::new(cfg, host);
    let mut tasks: HashMap<String, Known> = HashMap::new();
    let mut now_ms: u64 = 1_000_000;
    let mut next = 0u32;
    for _ in 0..64 {
        if b.0.is_empty() {
            break;
        }
        let ids: Vec<String> = tasks.keys().cloned().collect();
        let pick =
            |b: &mut Bytes| (!ids.is_empty()).then(|| ids[usize::from(b.u8()) % ids.len()].clone());
        let directives = match b.u8() % 8 {
            0 | 1 if tasks.len() < 12 => {
                next += 1;
                let id = format!("c{next}");
                let spec = TaskSpec {
                    container_id: id.clone(),
                    mode: if b.u8() % 4 == 0 {
                        Mode::Observe
                    } else {
                        Mode::Enforce
                    },
                    cgroup: if b.bit() {
                        CgroupKind::V1
                    } else {
                        CgroupKind::V2
                    },
                    priority: i32::from(b.u8() % 8) - 4,
                    depends_on: ids.iter().take(usize::from(b.u8() % 3)).cloned().collect(),
                    pipeline: b.bit().then(|| "p".to_owned()),
                    max_borrow_cpu: b.opt(|b| b.num(MAX_CORES)),
                    allow_below_request: b.u8() % 4 == 0,
                    limits: limits(&mut b),
                    cpu_shares: None,
                    parents: parents(&mut b),
                    prediction: b.opt(prediction),
                    started_at_ms: now_ms,
                    stale_after_ms: b.opt(|b| u64::from(b.u8()) * 100),
                };
                tasks.insert(
                    id.clone(),
                    Known {
                        limits: spec.limits,
                        allow_below_request: spec.allow_below_request,
                        parents: !spec.parents.is_empty(),
                    },
                );
                let (a, ds) = c.register(spec, now_ms);
                let as_directives = [
                    Action::SetCpu { cores: a.cpu_cores },
                    Action::SetMemoryHigh {
                        high_bytes: a.memory_bytes,
                        max_bytes: a.memory_max_bytes,
                    },
                ];
                for action in as_directives {
                    let d = Directive {
                        container_id: id.clone(),
                        action,
                        reason: String::new(),
                        applied: true,
                        old_value: None,
                    };
                    // No quota is a valid allocation for a task without a CPU limit, and memory_max may be none
                    // only where the user set no limit: `check` says exactly that.
                    check(&d, &tasks, "register's allocation");
                }
                ds
            }
            2 | 3 => match pick(&mut b) {
                Some(id) => {
                    let u = usage(&mut b, now_ms);
                    c.observe(&id, u);
                    Vec::new()
                }
                None => Vec::new(),
            },
            4 | 0 | 1 => {
                now_ms += u64::from(b.u8()) * 20;
                c.tick(now_ms)
            }
            5 => match pick(&mut b) {
                Some(id) => {
                    let ds = c.unregister(&id, now_ms);
                    for d in &ds {
                        check(d, &tasks, "unregister");
                    }
                    tasks.remove(&id);
                    Vec::new()
                }
                None => Vec::new(),
            },
            6 => match pick(&mut b) {
                Some(id) => {
                    let l = limits(&mut b);
                    let ps = b.bit().then(|| parents(&mut b));
                    if let Some(k) = tasks.get_mut(&id) {
                        k.limits = l;
                        if let Some(p) = &ps {
                            k.parents = !p.is_empty();
                        }
                    }
                    c.update(&id, l, ps, now_ms).unwrap_or_default()
                }
                None => Vec::new(),
            },
            _ => match pick(&mut b) {
                Some(id) => c.stopping(&id, "fuzz"),
                None => Vec::new(),
            },
        };
        for d in &directives {
            check(d, &tasks, "step");
        }
    }
});
