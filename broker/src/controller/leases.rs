//! Rules 1-3, leases: expiry and renewal, ancestors' limits, revocation when a lender needs its CPU back,
//! release by holders that no longer need it; the host's lent CPU taken back when a task registers; and the leases
//! restored after a broker restart.

use super::*;

impl Controller {
    /// Restores the leases a previous broker run persisted. They wait for their holders and lenders to register
    /// again (with [`Controller::adopt`]) until `stale_after_ms` after `now_ms`; a lease whose holder has not
    /// come back by then ends as usual.
    pub fn restore_leases(&mut self, leases: Vec<Lease>, now_ms: u64) {
        for l in leases {
            self.next_lease = self.next_lease.max(l.id + 1);
            let holder = self.key(&l.holder);
            let lender = l.lender.as_deref().and_then(|id| self.key(id));
            self.leases.insert(
                l.id,
                Held {
                    lease: l,
                    holder,
                    lender,
                },
            );
        }
        self.restore_grace_until_ms = now_ms + self.cfg.stale_after_ms;
    }

    pub(super) fn end_lease(
        &mut self,
        id: u64,
        why: &str,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) {
        let Some(h) = self.leases.remove(&id) else {
            return;
        };
        if let Some(k) = h.holder
            && let Some(t) = self.slots[k].as_mut()
        {
            let min_cpu = self.cfg.min_cpu_for(&t.spec.limits);
            t.cpu = t.cpu.map(|c| (c - h.lease.amount).max(min_cpu));
            reasons[k] = Some(format!("lease {id} ended: {why}"));
            out.push(Directive {
                container_id: h.lease.holder.clone(),
                action: Action::LeaseRevoked {
                    lease: h.lease.clone(),
                },
                reason: why.to_owned(),
                applied: t.enforce(),
                old_value: None,
            });
        }
        if let Some(k) = h.lender
            && let Some(l) = self.slots[k].as_mut()
        {
            l.cpu = l.cpu.map(|c| c + h.lease.amount);
            reasons[k] = Some(format!("lease {id} returned: {why}"));
        }
    }

    /// Ends leases held under a limited ancestor whose tasks hold more CPU than its limit (its limit was lowered,
    /// a sibling registered, a resize), newest first, until they fit again.
    pub(super) fn fit_ancestors(&mut self, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let mut limited: Vec<(String, f64)> = Vec::new();
        for (_, t) in self.live() {
            for a in &t.spec.parents {
                if let Some(c) = a.cpu_cores
                    && !limited.iter().any(|(p, _)| *p == a.path)
                {
                    limited.push((a.path.clone(), c));
                }
            }
        }
        for (path, limit) in limited {
            let under = |t: &Task| t.spec.parents.iter().any(|a| a.path == path);
            let mut sum: f64 = self
                .live()
                .filter(|(_, t)| under(t))
                .map(|(_, t)| Self::cpu_share(t))
                .sum();
            if sum <= limit + EPS {
                continue;
            }
            let ids: Vec<(u64, f64)> = self
                .leases
                .values()
                .rev()
                .filter(|h| {
                    h.holder
                        .and_then(|k| self.slots[k].as_ref())
                        .is_some_and(&under)
                        && !h
                            .lender
                            .and_then(|k| self.slots[k].as_ref())
                            .is_some_and(&under)
                })
                .map(|h| (h.lease.id, h.lease.amount))
                .collect();
            let why = format!(
                "{path}'s limit of {limit:.2} cores is exceeded ({sum:.2} allocated under it)"
            );
            for (id, amount) in ids {
                if sum <= limit + EPS {
                    break;
                }
                self.end_lease(id, &why, reasons, out);
                sum -= amount;
            }
        }
    }

    /// Ends leases of the host's free CPU, newest first, while the tasks hold more CPU than the host can grant:
    /// a task that registers takes its place in CPU that was only lent, at once, never waiting for a tick or for
    /// the borrower to release it. Leases from a lender move CPU between tasks and are left alone. With no such
    /// lease (the common Register) it costs one pass over the leases, not over the tasks.
    pub(super) fn reclaim_host_leases(&mut self, newcomer: &str, out: &mut Vec<Directive>) {
        let ids: Vec<(u64, f64)> = self
            .leases
            .values()
            .rev()
            .filter(|h| h.lender.is_none() && h.lease.holder != newcomer)
            .map(|h| (h.lease.id, h.lease.amount))
            .collect();
        if ids.is_empty() {
            return;
        }
        let grantable = self.grantable_cpu();
        let mut allocated: f64 = self.live().filter_map(|(_, t)| t.cpu).sum();
        if allocated <= grantable + EPS {
            return;
        }
        let mut reasons: Reasons = vec![None; self.slots.len()];
        let why = format!("{newcomer} registered and the host's CPU was lent");
        for (id, amount) in ids {
            if allocated <= grantable + EPS {
                break;
            }
            self.end_lease(id, &why, &mut reasons, out);
            allocated -= amount;
        }
        out.extend(self.cpu_directives(reasons, None));
    }

    pub(super) fn expire_and_renew(
        &mut self,
        now_ms: u64,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) {
        let stale = self.cfg.stale_after_ms;
        let ttl = self.cfg.lease_ttl_ms;
        let mut ended = Vec::new();
        for h in self.leases.values_mut() {
            let holder = h.holder.and_then(|k| self.slots[k].as_ref());
            if now_ms < self.restore_grace_until_ms && holder.is_none() {
                continue;
            }
            let fresh = holder.is_some_and(|t| t.fresh(now_ms, stale));
            let l = &mut h.lease;
            if fresh {
                l.expires_at_ms = l.expires_at_ms.max(now_ms + ttl);
            }
            if !fresh || now_ms >= l.expires_at_ms {
                ended.push(l.id);
            }
        }
        for id in ended {
            self.end_lease(id, "expired: its holder stopped reporting", reasons, out);
        }
    }

    /// Ends the leases of lenders that need their CPU back; returns, by key, who took some back.
    pub(super) fn revoke(
        &mut self,
        now_ms: u64,
        reasons: &mut Reasons,
        out: &mut Vec<Directive>,
    ) -> Vec<bool> {
        let mut took_back = vec![false; self.slots.len()];
        let mut by_lender: HashMap<Key, Vec<u64>> = HashMap::new();
        for h in self.leases.values() {
            if let Some(k) = h.lender {
                by_lender.entry(k).or_default().push(h.lease.id);
            }
        }
        let mut lenders: Vec<(Key, Vec<u64>)> = by_lender.into_iter().collect();
        lenders.sort_by_key(|(k, _)| self.ord[*k]);
        for (k, mut ids) in lenders {
            let t = self.task(k);
            let (Some(base), Some(kept)) = (t.base_cpu, t.cpu) else {
                continue;
            };
            let predicted = t.predicted_cpu(now_ms, self.cfg.lookahead_buckets);
            let pressure = self.lender_pressure(t);
            let busy = pressure.is_some();
            if !busy && predicted <= kept + EPS {
                continue;
            }
            // Busy: its real need is hidden by the reduced quota, so everything comes back.
            let need = if busy {
                base
            } else {
                self.cpu_need(t, now_ms).max(Self::cpu_floor(t)).min(base)
            };
            let mut why: Option<String> = None;
            ids.reverse();
            for id in ids {
                let t = self.task(k);
                if t.cpu.unwrap_or(base) + EPS >= need {
                    break;
                }
                let why = why.get_or_insert_with(|| {
                    let lender = &t.spec.container_id;
                    if busy {
                        let used = t.usage.map(|u| u.cpu_cores).unwrap_or(0.0);
                        // Busy says it already; a throttle or a stall says why so little is used.
                        let what = match pressure {
                            Some(p @ (cpu::Pressure::Throttled(_) | cpu::Pressure::Stall(_))) => format!("{p}, "),
                            _ => String::new(),
                        };
                        format!(
                            "lender {lender} needs it back ({what}using {used:.2} of the {kept:.2} cores it kept)"
                        )
                    } else {
                        format!("lender {lender}'s profile predicts {predicted:.2} cores next")
                    }
                });
                self.end_lease(id, why, reasons, out);
                took_back[k] = true;
            }
        }
        took_back
    }

    pub(super) fn release(&mut self, reasons: &mut Reasons, out: &mut Vec<Directive>) {
        let ids: Vec<u64> = self.leases.keys().rev().copied().collect();
        for id in ids {
            let Some(h) = self.leases.get(&id) else {
                continue;
            };
            let Some(t) = h.holder.and_then(|k| self.slots[k].as_ref()) else {
                continue;
            };
            let (Some(u), Some(cpu)) = (t.usage, t.cpu) else {
                continue;
            };
            if self.cpu_pressure(t).is_none()
                && u.cpu_cores * self.cfg.headroom <= cpu - h.lease.amount
            {
                let why = format!(
                    "{} no longer needs it (using {:.2} cores)",
                    h.lease.holder, u.cpu_cores
                );
                self.end_lease(id, &why, reasons, out);
            }
        }
    }
}
