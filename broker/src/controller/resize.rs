//! A user's resize (CRI `UpdateContainerResources`, `docker update`): the task's new limits take effect at once.

use super::*;

/// `CPU limit 2.00 -> 0.50 cores, memory limit 536870912 -> 268435456 bytes` (the fields that changed; all of them
/// when none did).
pub(super) fn describe_resize(old: &SpecLimits, new: &SpecLimits) -> String {
    fn cores(v: Option<f64>) -> String {
        v.map_or_else(|| "none".to_owned(), |c| format!("{c:.2}"))
    }
    fn bytes(v: Option<u64>) -> String {
        v.map_or_else(|| "none".to_owned(), |b| b.to_string())
    }
    let fields = [
        (
            "CPU limit",
            cores(old.cpu_limit_cores),
            cores(new.cpu_limit_cores),
            "cores",
        ),
        (
            "CPU request",
            cores(old.cpu_request_cores),
            cores(new.cpu_request_cores),
            "cores",
        ),
        (
            "memory limit",
            bytes(old.memory_limit_bytes),
            bytes(new.memory_limit_bytes),
            "bytes",
        ),
        (
            "memory request",
            bytes(old.memory_request_bytes),
            bytes(new.memory_request_bytes),
            "bytes",
        ),
    ];
    let changed: Vec<String> = fields
        .iter()
        .filter(|(_, o, n, _)| o != n)
        .map(|(what, o, n, unit)| format!("{what} {o} -> {n} {unit}"))
        .collect();
    if changed.is_empty() {
        let all: Vec<String> = fields
            .iter()
            .map(|(what, _, n, unit)| format!("{what} {n} {unit}"))
            .collect();
        format!("unchanged ({})", all.join(", "))
    } else {
        changed.join(", ")
    }
}

impl Controller {
    /// The user resized a running task (CRI `UpdateContainerResources`, `docker update`): `limits` become its
    /// limits and requests at once — the ceiling of its allocation, growth and borrowing, and the floor of its
    /// allocation and of what it may lend — and, when given, `parents` its limited ancestors. The allocation is
    /// derived again (a cold start follows the new limits; a predicted one keeps its allocation within them),
    /// leases it holds above the new ceiling and leases it lends below the new floor end, newest first. Returns
    /// the directives, its own CPU and memory ones always (the shim wrote the user's values over the cgroup);
    /// `None` when the task is not registered.
    pub fn update(
        &mut self,
        container_id: &str,
        limits: SpecLimits,
        parents: Option<Vec<Ancestor>>,
        now_ms: u64,
    ) -> Option<Vec<Directive>> {
        let k = self.key(container_id)?;
        if let Some(p) = &parents {
            self.learn_pool(p);
        }
        let before: Vec<Option<f64>> = self
            .slots
            .iter()
            .map(|s| s.as_ref().and_then(|t| t.cpu))
            .collect();
        let (old_limits, old_cpu, old_memory) = {
            let t = self.task_mut(k);
            let old = t.spec.limits;
            t.spec.limits = limits;
            if let Some(p) = parents {
                t.spec.parents = p;
            }
            (old, t.cpu, t.memory)
        };
        let why = format!(
            "resized by the user: {}",
            describe_resize(&old_limits, &limits)
        );
        let r = self.resized(k, old_memory);
        let (base, ceiling) = (r.base_cpu, r.ceiling);
        let min_cpu = self.cfg.min_cpu_for(&limits);

        // Leases re-checked against the new ceiling (held) and floor (lent).
        let mut reasons: Reasons = vec![None; self.slots.len()];
        let mut out = Vec::new();
        let (held_sum, lent_sum) = self.end_leases_outside(k, &r, &why, &mut reasons, &mut out);
        let t = self.task_mut(k);
        t.base_cpu = base;
        t.cpu = base.map(|b| (b + held_sum.max(0.0) - lent_sum.max(0.0)).max(min_cpu));
        t.memory = r.memory;
        t.memory_max = Some(ceiling);
        if let Some(restore) = &mut t.frozen_memory {
            // What the thaw restores follows the resize: within the new ceiling, and a task paused without an
            // allocation gets the one its new limits give it (else its thaw would lift it above them).
            *restore = restore.map(|m| m.min(ceiling)).or(r.memory);
        }
        t.stalled_since_ms = None;
        t.holding_memory = false;
        reasons[k] = None;
        out.extend(
            self.cpu_directives(reasons, Some(&before))
                .into_iter()
                .filter(|d| d.container_id != container_id),
        );
        let t = self.task(k);
        out.push(Directive {
            container_id: container_id.to_owned(),
            action: Action::SetCpu { cores: t.cpu },
            reason: why.clone(),
            applied: t.enforce(),
            old_value: old_cpu,
        });
        out.push(memory_directive(t, why, old_memory));
        let pipeline = t.spec.pipeline.clone();
        self.update_critical_path(now_ms, pipeline.as_deref());
        Some(out)
    }

    /// A resized task's allocation under its new limits (already in its spec): a cold start follows them, a
    /// predicted task keeps what it had within them.
    fn resized(&self, k: Key, old_memory: Option<u64>) -> Resized {
        let grant_mem = self.grantable_memory();
        let grant_cpu = self.grantable_cpu();
        let cfg = &self.cfg;
        let t = self.task(k);
        let limits = t.spec.limits;
        let min_cpu = cfg.min_cpu_for(&limits);
        let cold = t.spec.prediction.as_ref().is_none_or(|p| p.is_cold_start());
        let (anc_cpu, anc_mem) = tightest(&t.spec.parents);
        let anc_cpu = anc_cpu.map_or(f64::INFINITY, |(_, c)| c);
        let cpu_request = limits
            .cpu_request_cores
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0.0);
        let cpu_cap = limits.cpu_limit_cores.unwrap_or(f64::INFINITY).min(anc_cpu);
        let base: Option<f64> = if limits.cpu_limit_cores.is_none() && !cfg.quota_unlimited_cpu {
            None
        } else if cold {
            limits.cpu_limit_cores.map(|c| c.min(anc_cpu).max(min_cpu))
        } else {
            let start = t.base_cpu.unwrap_or_else(|| {
                initial_allocation(&t.spec, &self.host, cfg)
                    .0
                    .cpu_cores
                    .unwrap_or(cpu_request)
            });
            Some(
                start
                    .max(cpu_request)
                    .min(cpu_cap)
                    .min(grant_cpu.max(cpu_request))
                    .max(min_cpu),
            )
        };
        let ceiling = limits
            .memory_limit_bytes
            .unwrap_or(grant_mem)
            .min(anc_mem.map_or(u64::MAX, |(_, m)| m));
        let mem_request = limits
            .memory_request_bytes
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0);
        let memory = if cold {
            limits.memory_limit_bytes.map(|m| m.min(ceiling))
        } else {
            let cur = old_memory.unwrap_or(ceiling);
            Some(
                cur.max(mem_request)
                    .max(self.cfg.min_memory_bytes)
                    .min(ceiling),
            )
        };
        Resized {
            base_cpu: base,
            cpu_cap,
            cpu_floor: cpu_request.max(min_cpu),
            memory,
            ceiling,
        }
    }

    /// Ends, newest first, the leases task `k` holds above its new CPU cap and lends below its new floor; returns
    /// what it still holds and lends.
    fn end_leases_outside(
        &mut self,
        k: Key,
        r: &Resized,
        why: &str,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) -> (f64, f64) {
        let (base, cpu_cap, floor) = (r.base_cpu, r.cpu_cap, r.cpu_floor);
        let mut held: Vec<(u64, f64)> = Vec::new();
        let mut lent: Vec<(u64, f64)> = Vec::new();
        for h in self.leases.values() {
            if h.holder == Some(k) {
                held.push((h.lease.id, h.lease.amount));
            }
            if h.lender == Some(k) {
                lent.push((h.lease.id, h.lease.amount));
            }
        }
        let mut held_sum: f64 = held.iter().map(|(_, a)| a).sum();
        let mut lent_sum: f64 = lent.iter().map(|(_, a)| a).sum();
        for (id, amount) in held.iter().rev() {
            if base.is_some_and(|b| b + held_sum <= cpu_cap + EPS) {
                break;
            }
            self.end_lease(*id, why, reasons, out);
            held_sum -= amount;
        }
        for (id, amount) in lent.iter().rev() {
            if base.is_some_and(|b| b - lent_sum + EPS >= floor) {
                break;
            }
            self.end_lease(*id, why, reasons, out);
            lent_sum -= amount;
        }
        (held_sum, lent_sum)
    }
}

/// A resized task's allocation before its leases are re-checked.
struct Resized {
    /// Its own CPU before leases (`None`: no quota).
    base_cpu: Option<f64>,
    /// Its user limit or its tightest ancestor's, whichever is lower.
    cpu_cap: f64,
    /// The least it keeps when lending.
    cpu_floor: f64,
    memory: Option<u64>,
    /// The memory ceiling (`memory.max`).
    ceiling: u64,
}
