//! Rule 5, memory: growth from the free pool, right-sizing by the predicted profile, pausing lower-priority
//! tasks when there is no room, thawing after pressure, and lifting a task that waited too long.

use super::*;

/// The memory directive for a task's current allocation, in its cgroup version's terms.
pub(super) fn memory_directive(t: &Task, reason: String, old: Option<u64>) -> Directive {
    let action = match t.spec.cgroup {
        CgroupKind::V2 => Action::SetMemoryHigh {
            high_bytes: t.memory,
            max_bytes: t.memory_max,
        },
        CgroupKind::V1 => Action::SetMemoryLimit {
            limit_bytes: t.memory,
            // At the user's own limit (or unlimited) the normal OOM killer applies again.
            oom_kill_disabled: matches!((t.memory, t.memory_max), (Some(a), Some(m)) if a < m),
        },
    };
    Directive {
        container_id: t.spec.container_id.clone(),
        action,
        reason,
        applied: t.enforce(),
        old_value: old.map(|v| v as f64),
    }
}

impl Controller {
    /// What a task counts for in the memory pool: its allocation, or its usage when unlimited.
    pub(super) fn pool_share(t: &Task) -> u64 {
        t.memory.unwrap_or_else(|| t.mem_used())
    }

    /// Rule 5 over every task, highest priority first, then host pressure.
    pub(super) fn memory(&mut self, now_ms: u64, out: &mut Vec<Directive>) {
        let mut order: Vec<Key> = self.index.values().copied().collect();
        order.sort_by(|&a, &b| {
            self.task(b)
                .rank()
                .cmp(&self.task(a).rank())
                .then(self.ord[a].cmp(&self.ord[b]))
        });
        // Pause candidates: lowest rank first, then the last in container id order.
        let mut victims = order.clone();
        victims.reverse();
        let mut pass = MemoryPass {
            grantable: self.grantable_memory(),
            allocated: sum_bytes(self.live().map(|(_, t)| Self::pool_share(t))),
            victims,
            froze: false,
        };
        for &k in &order {
            self.memory_task(k, now_ms, &mut pass, out);
        }
        self.host_pressure(&order, &mut pass, out);
    }

    /// Grows, right-sizes, holds or lifts one task's memory; pauses a lower-priority task for it when there is no
    /// room.
    fn memory_task(
        &mut self,
        k: Key,
        now_ms: u64,
        pass: &mut MemoryPass,
        out: &mut Vec<Directive>,
    ) {
        let t = self.task(k);
        if t.frozen() {
            return;
        }
        let (Some(alloc), Some(u)) = (t.memory, t.usage) else {
            return;
        };
        let used = t.mem_used();
        let stalled = u
            .memory_psi_avg10
            .is_some_and(|p| p >= self.cfg.memory_psi_avg10)
            && used as f64 >= alloc as f64 * 0.75;
        let near = used as f64 >= alloc as f64 * self.cfg.memory_grow_at || u.under_oom || stalled;
        if !near {
            self.shrink_task(k, alloc, now_ms, pass, out);
            return;
        }
        let cap = t.memory_max.unwrap_or(pass.grantable);
        if alloc >= cap {
            self.hold(
                k,
                "at its memory limit: the kernel's normal OOM policy applies",
                out,
            );
            return;
        }
        // A task sized by its profile grows to what the profile and its usage say (it would be shrunk back
        // from more); any other by the growth factor.
        let by_usage = (used as f64 * self.cfg.headroom) as u64;
        let target = match t.predicted_memory_window(now_ms, self.cfg.lookahead_buckets) {
            Some(window) if self.cfg.memory_shrink_at > 0.0 && by_usage.max(window) > alloc => {
                by_usage.max(window)
            }
            _ => ((alloc as f64 * self.cfg.memory_grow_factor) as u64)
                .max(by_usage)
                .max(t.predicted_memory_upper(now_ms)),
        }
        .min(cap);
        // The room in the pool, and under every limited ancestor (its own allocation counted there).
        let anc_room = self
            .ancestor_room(&t.spec.parents, None)
            .1
            .map_or(u64::MAX, |(_, r)| r);
        let mut room = pass.grantable.saturating_sub(pass.allocated).min(anc_room);
        if room < target - alloc {
            // No room: pause the lowest-priority running task ranked below this one.
            let (rank, mode) = (t.rank(), t.spec.mode);
            let victim = pass
                .victims
                .iter()
                .copied()
                .take_while(|&v| self.task(v).rank() < rank)
                .find(|&v| {
                    let t = self.task(v);
                    !t.frozen() && !t.stopping && t.spec.mode == mode
                });
            if let Some(v) = victim {
                let why = format!(
                    "no memory for {} (higher priority) to grow",
                    t.spec.container_id
                );
                let share = Self::pool_share(self.task(v));
                self.freeze(v, &why, out);
                pass.allocated = pass
                    .allocated
                    .saturating_sub(share)
                    .saturating_add(Self::pool_share(self.task(v)));
                pass.froze = true;
                room = pass.grantable.saturating_sub(pass.allocated).min(anc_room);
            }
        }
        let grow = (target - alloc).min(room);
        if grow == 0 || room == 0 {
            // Waiting (v1 OOM wait, v2 reclaim stall) is bounded: past memory_stall_ms the allocation is
            // lifted and the kernel's policy applies, as it would without the broker.
            if u.under_oom || stalled {
                let since = *self.task_mut(k).stalled_since_ms.get_or_insert(now_ms);
                let waited = now_ms.saturating_sub(since);
                if waited >= self.cfg.memory_stall_ms {
                    let old_share = Self::pool_share(self.task(k));
                    self.lift(k, waited, out);
                    pass.allocated = pass
                        .allocated
                        .saturating_sub(old_share)
                        .saturating_add(Self::pool_share(self.task(k)));
                    return;
                }
            } else {
                self.task_mut(k).stalled_since_ms = None;
            }
            self.hold(
                k,
                "no room to grow: waits at its allocation (reclaim or v1 OOM wait), never OOM-killed below its limit",
                out,
            );
            return;
        }
        let reason = format!(
            "using {used} of {alloc} bytes{}: grown while the host has room",
            if u.under_oom { " (waiting on OOM)" } else { "" }
        );
        let t = self.task_mut(k);
        t.memory = Some(alloc + grow);
        t.holding_memory = false;
        t.stalled_since_ms = None;
        pass.allocated = pass.allocated.saturating_add(grow);
        out.push(memory_directive(self.task(k), reason, Some(alloc)));
    }

    /// A task not near its allocation: no longer holding or stalled, and right-sized when its profile says it
    /// needs less.
    fn shrink_task(
        &mut self,
        k: Key,
        alloc: u64,
        now_ms: u64,
        pass: &mut MemoryPass,
        out: &mut Vec<Directive>,
    ) {
        let t = self.task(k);
        let used = t.mem_used();
        let need = self.right_size(t, now_ms);
        if t.holding_memory || t.stalled_since_ms.is_some() {
            let t = self.task_mut(k);
            t.holding_memory = false;
            t.stalled_since_ms = None;
        }
        if let Some(need) = need
            && (need as f64) < alloc as f64 * self.cfg.memory_shrink_at
        {
            let reason = format!(
                "using {used} of {alloc} bytes, {need} needed by its predicted profile: right-sized"
            );
            self.task_mut(k).memory = Some(need);
            pass.allocated = pass.allocated.saturating_sub(alloc - need);
            out.push(memory_directive(self.task(k), reason, Some(alloc)));
        }
    }

    /// Host memory pressure: pauses the lowest-priority running task (unless one was paused this tick); thaws the
    /// highest-priority paused one once pressure has passed.
    fn host_pressure(&mut self, order: &[Key], pass: &mut MemoryPass, out: &mut Vec<Directive>) {
        let grantable = pass.grantable;
        let total = sum_bytes(self.live().map(|(_, t)| t.mem_used()));
        let running = self.live().filter(|(_, t)| !t.frozen()).count();
        if !pass.froze && total as f64 >= pass.grantable as f64 * self.cfg.pause_at && running > 1 {
            let top = self
                .live()
                .filter(|(_, t)| !t.frozen())
                .map(|(_, t)| t.rank())
                .max();
            let victim = pass.victims.iter().copied().find(|&v| {
                let t = self.task(v);
                !t.frozen() && !t.stopping && t.enforce() && Some(t.rank()) < top
            });
            if let Some(v) = victim {
                let why = format!("host memory pressure: {total} of {grantable} bytes in use");
                self.freeze(v, &why, out);
                pass.froze = true;
            }
        }
        if !pass.froze && (total as f64) < pass.grantable as f64 * self.cfg.thaw_below {
            // The highest rank first, then the first in container id order.
            let thaw = order
                .iter()
                .copied()
                .find(|&k| self.task(k).frozen())
                .map(|k| {
                    let t = self.task(k);
                    (k, t.frozen_memory.flatten(), t.memory)
                });
            if let Some((k, restore, now)) = thaw {
                let extra = restore.unwrap_or(0).saturating_sub(now.unwrap_or(0));
                if self.memory_room() >= extra {
                    let why =
                        format!("memory pressure passed: {total} of {grantable} bytes in use");
                    let t = self.task_mut(k);
                    t.frozen_memory = None;
                    // A task paused without an allocation (no limit, no prediction) goes back to none: the
                    // usage it was held at is not a limit it ever had.
                    t.memory = restore;
                    let t = self.task(k);
                    out.push(memory_directive(t, format!("restored at thaw: {why}"), now));
                    out.push(Directive {
                        container_id: t.spec.container_id.clone(),
                        action: Action::Thaw,
                        reason: why,
                        applied: t.enforce(),
                        old_value: None,
                    });
                }
            }
        }
    }

    /// What a running task sized by its profile needs now: the profile's window, never below its usage over
    /// `memory_grow_at` (+5%, so that it is not grown again at once), the spec's request (unless allowed) or
    /// the smallest allocation, never above its ceiling. `None`: not sized by its profile.
    pub(super) fn right_size(&self, t: &Task, now_ms: u64) -> Option<u64> {
        if self.cfg.memory_shrink_at <= 0.0 {
            return None;
        }
        let u = t.usage?;
        if u.under_oom {
            return None;
        }
        let window = t.predicted_memory_window(now_ms, self.cfg.lookahead_buckets)?;
        let floor = (t.mem_used() as f64 / self.cfg.memory_grow_at.max(0.5) * 1.05) as u64;
        let request = t
            .spec
            .limits
            .memory_request_bytes
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0);
        let need = window
            .max(floor)
            .max(request)
            .max(self.cfg.min_memory_bytes);
        Some(need.min(t.memory_max.unwrap_or(u64::MAX)))
    }

    /// Grantable memory not allocated (unlimited tasks count with their usage).
    pub(super) fn memory_room(&self) -> u64 {
        let allocated = sum_bytes(self.live().map(|(_, t)| Self::pool_share(t)));
        self.grantable_memory().saturating_sub(allocated)
    }

    pub(super) fn hold(&mut self, k: Key, why: &str, out: &mut Vec<Directive>) {
        let t = self.task_mut(k);
        if !t.holding_memory {
            t.holding_memory = true;
            out.push(Directive {
                container_id: t.spec.container_id.clone(),
                action: Action::Hold {
                    resource: ResourceKind::Memory,
                },
                reason: why.to_owned(),
                applied: t.enforce(),
                old_value: None,
            });
        }
    }

    /// Lifts the allocation of a task that waited `waited_ms` on memory with no room to grow to its ceiling: the
    /// user's limit (the kernel OOM-kills at it, as it would have without the broker), or none at all.
    pub(super) fn lift(&mut self, k: Key, waited_ms: u64, out: &mut Vec<Directive>) {
        let t = self.task_mut(k);
        let old = t.memory;
        t.memory = t.spec.limits.memory_limit_bytes.and(t.memory_max);
        t.stalled_since_ms = None;
        t.holding_memory = false;
        let to = t.memory.map_or_else(
            || "no limit".to_owned(),
            |m| format!("its limit of {m} bytes"),
        );
        let reason = format!(
            "waited on memory for {:.1} s with no room to grow (memory_stall_ms): lifted to {to}, the kernel's \
             OOM policy applies",
            waited_ms as f64 / 1000.0
        );
        out.push(memory_directive(self.task(k), reason, old));
    }

    /// Freezes a task and shrinks its allocation to what it uses, returning the rest to the pool.
    pub(super) fn freeze(&mut self, k: Key, why: &str, out: &mut Vec<Directive>) {
        let min = self.cfg.min_memory_bytes;
        let t = self.task_mut(k);
        let old = t.memory;
        t.frozen_memory = Some(old);
        let used = t.mem_used().max(min);
        let shrunk = old.map(|a| a.min(used));
        t.memory = shrunk.or(Some(used));
        let t = self.task(k);
        out.push(Directive {
            container_id: t.spec.container_id.clone(),
            action: Action::Freeze,
            reason: why.to_owned(),
            applied: t.enforce(),
            old_value: None,
        });
        if shrunk != old {
            out.push(memory_directive(
                t,
                format!("paused: allocation held at usage ({why})"),
                old,
            ));
        }
    }
}

/// What one memory pass carries from task to task.
struct MemoryPass {
    grantable: u64,
    /// The pool's allocated memory (unlimited tasks count with their usage), saturated at `u64::MAX`.
    allocated: u64,
    /// Pause candidates: lowest rank first, then the last in container id order.
    victims: Vec<Key>,
    /// A task was paused this tick.
    froze: bool,
}
