//! Rule 4, CPU borrowing: which tasks are under CPU pressure, who can lend, and the leases granted to them;
//! and the `set_cpu` directives every CPU rule ends with.

use super::*;

/// Why a task is under CPU pressure; put into words only for a directive that is emitted.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pressure {
    Throttled(f64),
    Busy { used: f64, quota: f64 },
    Stall(f64),
}

impl std::fmt::Display for Pressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Pressure::Throttled(share) => {
                write!(f, "throttled in {:.0}% of periods", share * 100.0)
            }
            Pressure::Busy { used, quota } => write!(f, "using {used:.2} of {quota:.2} cores"),
            Pressure::Stall(p) => write!(f, "CPU stall {p:.0}%"),
        }
    }
}

impl Controller {
    /// What a task needs to keep at `now_ms`: usage with headroom, or what its profile predicts next.
    pub(super) fn cpu_need(&self, t: &Task, now_ms: u64) -> f64 {
        let used = t.usage.map(|u| u.cpu_cores).unwrap_or(0.0) * self.cfg.headroom;
        used.max(t.predicted_cpu(now_ms, self.cfg.lookahead_buckets))
            .max(self.cfg.min_cpu_for(&t.spec.limits))
    }

    /// The least CPU a task keeps: its request (unless it allows less), and the smallest allocation.
    pub(super) fn cpu_floor(t: &Task) -> f64 {
        t.spec
            .limits
            .cpu_request_cores
            .filter(|_| !t.spec.allow_below_request)
            .unwrap_or(0.0)
    }

    pub(super) fn cpu_pressure(&self, t: &Task) -> Option<Pressure> {
        let u = t.usage?;
        let quota = t.cpu?;
        if u.cpu_throttled_fraction >= self.cfg.throttled_fraction {
            return Some(Pressure::Throttled(u.cpu_throttled_fraction));
        }
        if u.cpu_cores >= quota * self.cfg.busy_fraction {
            return Some(Pressure::Busy {
                used: u.cpu_cores,
                quota,
            });
        }
        match u.cpu_psi_avg10 {
            Some(p) if p >= self.cfg.cpu_psi_avg10 => Some(Pressure::Stall(p)),
            _ => None,
        }
    }

    /// Pressure as a lender is judged: [`Self::cpu_pressure`], or a stall over its last interval alone. A lender
    /// gives up CPU it is not using, so the tick it starts waiting for a CPU it stops lending and takes back what
    /// it lent, not when PSI's 10 s average catches up (on a busy host a spinning lender gets less than its quota:
    /// neither throttled nor busy, only stalled). Borrowing still waits for the average: taking from others needs
    /// a need that lasts.
    pub(super) fn lender_pressure(&self, t: &Task) -> Option<Pressure> {
        self.cpu_pressure(t).or_else(|| {
            let p = t.usage?.cpu_psi_recent?;
            (t.cpu.is_some() && p >= self.cfg.cpu_psi_avg10).then_some(Pressure::Stall(p))
        })
    }

    /// Emits `set_cpu`, in container id order, for every task with a reason; with `before`, only where the
    /// quota differs from it (and with it as the old value).
    pub(super) fn cpu_directives(
        &self,
        mut reasons: Reasons,
        before: Option<&[Option<f64>]>,
    ) -> Vec<Directive> {
        let mut out = Vec::new();
        for (k, t) in self.live() {
            let Some(reason) = reasons.get_mut(k).and_then(Option::take) else {
                continue;
            };
            let old_value = match before.and_then(|b| b.get(k)) {
                Some(old) => {
                    if (t.cpu.unwrap_or(0.0) - old.unwrap_or(0.0)).abs() <= EPS {
                        continue;
                    }
                    *old
                }
                None => None,
            };
            out.push(Directive {
                container_id: t.spec.container_id.clone(),
                action: Action::SetCpu { cores: t.cpu },
                reason,
                applied: t.enforce(),
                old_value,
            });
        }
        out
    }

    /// Grants leases to tasks under CPU pressure, highest priority first, from the host's unallocated CPU and
    /// then from idle lenders. The lenders are found once per tick (lowest priority, then most spare, first)
    /// and drawn down in that order.
    pub(super) fn borrow_cpu(
        &mut self,
        now_ms: u64,
        took_back: &[bool],
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) {
        let stale = self.cfg.stale_after_ms;
        let fresh = |t: &Task| t.fresh(now_ms, stale);
        let mut borrowers: Vec<(Key, Pressure)> = self
            .live()
            .filter(|(_, t)| !t.frozen() && t.base_cpu.is_some() && fresh(t))
            .filter_map(|(k, t)| self.cpu_pressure(t).map(|why| (k, why)))
            .collect();
        if borrowers.is_empty() {
            return;
        }
        borrowers.sort_by(|a, b| {
            self.task(b.0)
                .rank()
                .cmp(&self.task(a.0).rank())
                .then(self.ord[a.0].cmp(&self.ord[b.0]))
        });
        let n = self.slots.len();
        let mut lending = vec![false; n];
        // Who holds a lease (a borrower does not lend).
        let mut holding = vec![false; n];
        for h in self.leases.values() {
            if let Some(k) = h.lender {
                lending[k] = true;
            }
            if let Some(k) = h.holder.filter(|_| h.lease.amount > EPS) {
                holding[k] = true;
            }
        }
        let lenders = self.lenders(now_ms, took_back, &holding);
        let mut lenders = lenders;
        let grantable = self.grantable_cpu();
        let mut allocated: f64 = self.live().filter_map(|(_, t)| t.cpu).sum();
        let mut first_lender = 0;
        for (k, why) in borrowers {
            if lending[k] {
                continue; // a lender under pressure gets its own back first (revoke)
            }
            let t = self.task(k);
            let (Some(base), Some(cpu)) = (t.base_cpu, t.cpu) else {
                continue;
            };
            let max_borrow = t
                .spec
                .max_borrow_cpu
                .or(self.cfg.max_borrow_cpu)
                .unwrap_or(f64::INFINITY);
            // Never above the user's limit, and never past the room its limited ancestors have left.
            let (anc_room, _) = self.ancestor_room(&t.spec.parents, None);
            let cap = t
                .spec
                .limits
                .cpu_limit_cores
                .unwrap_or(f64::INFINITY)
                .min(base + max_borrow)
                .min(grantable)
                .min(anc_room.map_or(f64::INFINITY, |(_, r)| cpu + r));
            let mut want = (cpu * self.cfg.borrow_step)
                .max(self.cfg.min_lease_cpu)
                .min(cap - cpu);
            if want < self.cfg.min_lease_cpu - EPS {
                continue;
            }
            let mode = t.spec.mode;
            // The host's unallocated CPU first, then lenders in their order.
            let mut sources: Vec<(Option<usize>, f64)> = Vec::new();
            let pool = grantable - allocated;
            if pool >= self.cfg.min_lease_cpu {
                sources.push((None, pool));
            }
            // Lenders are drawn down from the front: skip the ones already exhausted.
            while lenders
                .get(first_lender)
                .is_some_and(|(_, spare)| *spare < self.cfg.min_lease_cpu)
            {
                first_lender += 1;
            }
            let mut taken = 0.0;
            for (i, (l, spare)) in lenders.iter().enumerate().skip(first_lender) {
                if taken >= want - EPS {
                    break;
                }
                if *l != k && *spare >= self.cfg.min_lease_cpu && self.task(*l).spec.mode == mode {
                    sources.push((Some(i), *spare));
                    taken += spare;
                }
            }
            for (lender, spare) in sources {
                if want < self.cfg.min_lease_cpu - EPS {
                    break;
                }
                let amount = spare.min(want);
                want -= amount;
                let lender_key = lender.map(|i| {
                    lenders[i].1 -= amount;
                    lenders[i].0
                });
                if self.grant_lease((k, why), lender_key, amount, now_ms, reasons, out) {
                    allocated += amount;
                }
            }
        }
    }

    /// The tasks that can lend this tick, with their spare CPU: fresh, not paused, not under pressure, holding no
    /// lease and not having taken CPU back; lowest priority first, then most spare.
    fn lenders(&self, now_ms: u64, took_back: &[bool], holding: &[bool]) -> Vec<(Key, f64)> {
        let stale = self.cfg.stale_after_ms;
        let fresh = |t: &Task| t.fresh(now_ms, stale);
        let mut lenders: Vec<(Key, f64)> = self
            .live()
            .filter(|(k, t)| !t.frozen() && !took_back[*k] && !holding[*k] && fresh(t))
            .filter(|(_, t)| t.usage.is_some() && self.lender_pressure(t).is_none())
            .filter_map(|(k, t)| {
                // A lender keeps what it needs and never goes below its request.
                let spare = t.cpu? - self.cpu_need(t, now_ms).max(Self::cpu_floor(t));
                (spare >= self.cfg.min_lease_cpu).then_some((k, spare))
            })
            .collect();
        lenders.sort_by(|a, b| {
            self.task(a.0)
                .rank()
                .cmp(&self.task(b.0).rank())
                .then(b.1.total_cmp(&a.1))
        });
        lenders
    }

    /// Grants `k` a lease of `amount` cores from `lender` (`None`: the host's free CPU); true when it came from
    /// the host.
    fn grant_lease(
        &mut self,
        (k, why): (Key, Pressure),
        lender_key: Option<Key>,
        amount: f64,
        now_ms: u64,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) -> bool {
        let lease = Lease {
            id: self.next_lease,
            resource: ResourceKind::Cpu,
            holder: self.task(k).spec.container_id.clone(),
            lender: lender_key.map(|l| self.task(l).spec.container_id.clone()),
            amount,
            granted_at_ms: now_ms,
            expires_at_ms: now_ms + self.cfg.lease_ttl_ms,
        };
        self.next_lease += 1;
        if let Some(l) = lender_key {
            let lt = self.task_mut(l);
            lt.cpu = lt.cpu.map(|c| c - amount);
            reasons[l] = Some(format!(
                "lent {amount:.2} cores to {} (lease {})",
                lease.holder, lease.id
            ));
        }
        let from = lease.lender.as_deref().unwrap_or("the host's free CPU");
        reasons[k] = Some(format!(
            "{why}: borrowed {amount:.2} cores from {from} (lease {})",
            lease.id
        ));
        let h = self.task_mut(k);
        h.cpu = h.cpu.map(|c| c + amount);
        out.push(Directive {
            container_id: lease.holder.clone(),
            action: Action::LeaseGranted {
                lease: lease.clone(),
            },
            reason: why.to_string(),
            applied: h.enforce(),
            old_value: None,
        });
        self.leases.insert(
            lease.id,
            Held {
                lease,
                holder: Some(k),
                lender: lender_key,
            },
        );
        lender_key.is_none()
    }
}
