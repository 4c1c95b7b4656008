//! Rule 0, at Register: a task's initial allocation from its spec, its prediction, the host and its limited
//! ancestors.

use super::*;

/// The tightest CPU and memory limits among a task's ancestors, with the cgroup that sets each.
pub(super) type Tightest<'a> = (Option<(&'a str, f64)>, Option<(&'a str, u64)>);

pub(super) fn tightest(parents: &[Ancestor]) -> Tightest<'_> {
    let mut cpu: Option<(&str, f64)> = None;
    let mut mem: Option<(&str, u64)> = None;
    for a in parents {
        if let Some(c) = a.cpu_cores.filter(|c| cpu.is_none_or(|(_, x)| *c < x)) {
            cpu = Some((a.path.as_str(), c));
        }
        if let Some(m) = a.memory_bytes.filter(|m| mem.is_none_or(|(_, x)| *m < x)) {
            mem = Some((a.path.as_str(), m));
        }
    }
    (cpu, mem)
}

/// The initial allocation of a task: the spec on a cold start; otherwise memory at the prediction's `limit`
/// (99.8%; below medium confidence, where that tail is not calibrated yet, at most 1.5x its `upper`) and CPU at the
/// predicted p95 scaled by the p90 of the profile's first `initial_cpu_buckets` over its busiest bucket (a start as
/// busy as the rest of the run starts at the p95; a run predicted to end within `short_run_ms`: its
/// predicted CPU upper bound, if higher), never above a user limit,
/// never below a user request (unless allowed; not even on a host smaller than the request), within the host's
/// grantable capacity and every limited ancestor's limit. A spec with no CPU limit keeps no quota unless
/// `quota_unlimited_cpu` is on. Returns the allocation and the reasons per resource.
pub fn initial_allocation(
    spec: &TaskSpec,
    host: &HostCapacity,
    cfg: &ControllerConfig,
) -> (Allocation, String, String) {
    let grant_mem = host
        .memory_bytes
        .saturating_sub(cfg.memory_reserve(host.memory_bytes));
    let grant_cpu = (host.cpu_cores - cfg.host_reserve_cpu).max(cfg.min_cpu_cores);
    let l = &spec.limits;
    let min_cpu = cfg.min_cpu_for(l);
    let (anc_cpu, anc_mem) = tightest(&spec.parents);
    let memory_max = match (l.memory_limit_bytes, anc_mem) {
        (Some(lim), Some((_, a))) => Some(lim.min(a)),
        (Some(lim), None) => Some(lim),
        (None, Some((_, a))) => Some(a.min(grant_mem)),
        (None, None) => Some(grant_mem),
    };
    let cap_cpu = |c: f64, reason: &mut String| match anc_cpu {
        Some((path, a)) if c > a => {
            *reason = format!("{reason}, capped at the {a:.2}-core limit of {path}");
            a.max(min_cpu)
        }
        _ => c,
    };
    let cap_mem = |m: u64, reason: &mut String| match anc_mem {
        Some((path, a)) if m > a => {
            *reason = format!("{reason}, capped at the {a}-byte limit of {path}");
            a.max(cfg.min_memory_bytes)
        }
        _ => m,
    };
    let Some(p) = spec.prediction.as_ref().filter(|p| !p.is_cold_start()) else {
        let mut cpu_reason = "cold start: the spec's CPU limit".to_owned();
        let mut mem_reason = "cold start: the spec's memory limit".to_owned();
        let cpu = l.cpu_limit_cores.map(|c| cap_cpu(c, &mut cpu_reason));
        let mem = l.memory_limit_bytes.map(|m| cap_mem(m, &mut mem_reason));
        return (
            Allocation {
                cpu_cores: cpu,
                memory_bytes: mem,
                memory_max_bytes: memory_max,
            },
            cpu_reason,
            mem_reason,
        );
    };
    let (cpu, cpu_reason) = match predicted_cpu(spec, p, cfg, grant_cpu) {
        (Some(c), mut why) => (Some(cap_cpu(c, &mut why)), why),
        (None, why) => (None, why),
    };
    let (mem, mut mem_reason) = predicted_memory(spec, p);
    let mem =
        cap_mem(mem.max(cfg.min_memory_bytes), &mut mem_reason).min(memory_max.unwrap_or(u64::MAX));
    (
        Allocation {
            cpu_cores: cpu,
            memory_bytes: Some(mem),
            memory_max_bytes: memory_max,
        },
        cpu_reason,
        mem_reason,
    )
}

/// The CPU of a predicted task before its ancestors' caps: its p95 scaled by its profile's first buckets (the p90
/// of their points over the busiest bucket's), or its p95 without a profile,
/// between its request and its limit, within the host; `None` when it keeps no quota. With the reason.
fn predicted_cpu(
    spec: &TaskSpec,
    p: &Prediction,
    cfg: &ControllerConfig,
    grant_cpu: f64,
) -> (Option<f64>, String) {
    let l = &spec.limits;
    let request = l
        .cpu_request_cores
        .filter(|_| !spec.allow_below_request)
        .unwrap_or(0.0);
    if l.cpu_limit_cores.is_none() && !cfg.quota_unlimited_cpu {
        (
            None,
            "no CPU limit in the spec: no quota (controller.quota_unlimited_cpu is off)".to_owned(),
        )
    } else {
        let mut cpu_reason;
        let mut cpu = if p.profile.len() == BUCKETS {
            let k = cfg.initial_cpu_buckets.clamp(1, BUCKETS);
            let first: Vec<f64> = p.profile[..k].iter().map(|pp| pp.cpu_cores.point).collect();
            let start = predictor::percentile(&first, 0.9).unwrap_or(0.0);
            // The profile is a shape (each run's buckets over its own peak, averaged over runs) times the
            // predicted p95: its busiest bucket sits below the p95 by the runs' jitter (a steady CPU-bound task's
            // buckets average ~0.8 of its peak). The shape says when, the p95 says how much: a start as busy as
            // the busiest bucket starts at the predicted p95.
            let busiest = p
                .profile
                .iter()
                .map(|pp| pp.cpu_cores.point)
                .fold(0.0, f64::max);
            if busiest > 0.0 && p.cpu_cores.point > busiest {
                cpu_reason = format!(
                    "predicted p95 of {:.2} cores x {:.2} (the p90 of the first {k} lifetime buckets over the \
                     busiest one)",
                    p.cpu_cores.point,
                    start / busiest
                );
                p.cpu_cores.point * start / busiest
            } else {
                cpu_reason = format!("predicted p90 over the first {k} lifetime buckets");
                start
            }
        } else {
            cpu_reason = "predicted p95".to_owned();
            p.cpu_cores.point
        };
        let short =
            p.duration_s.upper > 0.0 && p.duration_s.upper * 1000.0 <= cfg.short_run_ms as f64;
        if short && p.cpu_cores.upper > cpu {
            cpu = p.cpu_cores.upper;
            cpu_reason = format!(
                "predicted CPU upper bound (a short run: at most {:.1} s predicted)",
                p.duration_s.upper
            );
        }
        if cpu < request {
            cpu = request;
            cpu_reason =
                format!("the spec's CPU request of {request:.2} cores (prediction below it)");
        }
        if let Some(lim) = l.cpu_limit_cores.filter(|lim| cpu > *lim) {
            cpu = lim;
            cpu_reason = "the spec's CPU limit (prediction above it)".to_owned();
        }
        // A small host cuts a prediction, never a request.
        let min_cpu = cfg.min_cpu_for(l);
        let cpu = cpu.clamp(min_cpu, grant_cpu.max(request).max(min_cpu));
        (Some(cpu), cpu_reason)
    }
}

/// The memory of a predicted task before its ancestors' caps: the prediction's `limit` (below medium confidence at
/// most 1.5x its `upper`), between its request and its limit. With the reason.
fn predicted_memory(spec: &TaskSpec, p: &Prediction) -> (u64, String) {
    let l = &spec.limits;
    // The one-sided 99.8% limit needs a calibrated tail: on a young type (low confidence, a few runs) it rests on a
    // handful of residuals and a Student-t with one or two degrees of freedom, so it is capped (`Estimate::allocation`).
    let mem = p.memory_bytes.allocation(p.confidence);
    let mut mem_reason = if p.confidence >= Confidence::Medium {
        "predicted memory limit (its one-sided 99.8% bound)".to_owned()
    } else {
        format!(
            "predicted memory limit, at most {YOUNG_LIMIT_CAP}x its upper bound at level {} (few runs: the 99.8% tail \
             is not calibrated yet)",
            p.level
        )
    };
    let mut mem = mem.max(0.0) as u64;
    if let Some(req) = l
        .memory_request_bytes
        .filter(|r| mem < *r && !spec.allow_below_request)
    {
        mem = req;
        mem_reason = "the spec's memory request (prediction below it)".to_owned();
    }
    if let Some(lim) = l.memory_limit_bytes.filter(|lim| mem > *lim) {
        mem = lim;
        mem_reason = "the spec's memory limit (prediction above it)".to_owned();
    }
    (mem, mem_reason)
}
