//! Network egress and ingress: each task's share of the node's link budget (`[network]
//! link_budget_bytes_per_sec`; ingress: `ingress_budget_bytes_per_sec`), and bandwidth lent from idle senders
//! (receivers) to saturated ones. Pure logic like the rest of the controller; the shim applies the
//! [`Action::SetNetEgress`] directives as a TBF root qdisc in the container's network namespace, and the
//! [`Action::SetNetIngress`] ones as a TBF root qdisc on the host-side peer of its veth. The two directions are
//! two [`NetShaper`]s with the same rules: [`NetShaper::new`] for egress (tx counters), [`NetShaper::ingress`]
//! for ingress (rx counters, the annotation `io.predictive.ingress-bytes-per-sec`).
//!
//! Rules:
//! - **Shares** (at every Register and Finish): a task with `io.predictive.egress-bytes-per-sec` (ingress:
//!   `io.predictive.ingress-bytes-per-sec`) gets what it asked. A task without one whose type has a warm prediction
//!   with an estimate in the shaper's direction (runs that measured it; see `predictor::model`) asks its type's
//!   predicted rate, egress from the mean tx rate, ingress from the mean rx rate: the `upper` bound of its
//!   interval (not the one-sided `limit` memory takes: a limit set too low only slows a sender, which can still
//!   borrow), clamped to `[min_bytes_per_sec, budget]` ([`NetAsk::of`]). The tasks with neither share what is left
//!   equally, and never less than `min_bytes_per_sec` each. When the annotations exceed what is left after the
//!   others' floors, they are scaled down in proportion; the predicted asks are then scaled into what the
//!   annotations leave, each keeping the floor. The shares never sum above the budget. Each share's reason says
//!   where it came from (annotation, prediction with its runs and model version, or an equal part).
//! - **Lending** (every tick): a task sending less than `idle_below` of its share lends all of it but what it
//!   keeps (twice its rate, at least `min_bytes_per_sec`); a task sending at least `saturated_at` of its limit
//!   borrows, the lent total split equally among the borrowers. A borrower keeps borrowing while it sends at least
//!   `saturated_at` of its own share.
//! - **Reclaim**: a lender that sends at least `saturated_at` of what it kept gets its share back in the same
//!   tick, and the borrowers' limits fall by as much: the sum of the limits stays within the budget.
//!
//! Tasks sharing the host's network namespace (Register `own_netns: false`) are left out: a limit there would
//! shape the whole host. Ingress directives go only to shims that apply them (Register `net_ingress`). Tasks in
//! mode observe get directives marked `applied: false` and neither lend nor borrow. Limits: the budgets are the
//! operator's figures, not measured from the NIC; ingress is shaped after the host received the packets (see
//! `runtime_hooks::net`). A learned share feeds back on itself: a run shaped at its share sends (receives) at most
//! that plus what it borrows, so a type learns no more than it was given plus the interval's headroom; lending is
//! what lets it grow.

use std::collections::BTreeMap;

use predictive_api::types::{Action, Directive, MAX_NET_EGRESS, MIN_NET_EGRESS, Mode, NetView};
use predictor::Prediction;

/// Which way a [`NetShaper`] limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// What containers send: [`Action::SetNetEgress`], measured on tx.
    #[default]
    Egress,
    /// What containers receive: [`Action::SetNetIngress`], measured on rx.
    Ingress,
}

impl Direction {
    fn action(self, rate: u64) -> Action {
        let rate_bytes_per_sec = Some(rate);
        match self {
            Self::Egress => Action::SetNetEgress { rate_bytes_per_sec },
            Self::Ingress => Action::SetNetIngress { rate_bytes_per_sec },
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }

    /// The prediction's estimate of the rate in this direction (mean tx or rx bytes/s).
    fn estimate(self, p: &Prediction) -> &predictor::Estimate {
        match self {
            Self::Egress => &p.net_tx_bytes_per_s,
            Self::Ingress => &p.net_rx_bytes_per_s,
        }
    }
}
use serde::{Deserialize, Serialize};

/// `[network]` in predictived.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// What all managed containers together may send, bytes/s (default: none = no egress directives).
    pub link_budget_bytes_per_sec: Option<u64>,
    /// What all managed containers together may receive, bytes/s (default: none = no ingress directives).
    pub ingress_budget_bytes_per_sec: Option<u64>,
    /// Smallest share and smallest amount a lender keeps, bytes/s (default 64 KiB/s).
    pub min_bytes_per_sec: u64,
    /// A task sending at least this share of its limit is saturated (default 0.9).
    pub saturated_at: f64,
    /// A task sending less than this share of its own share lends (default 0.25)...
    pub idle_below: f64,
    /// ... once it has for this many ticks in a row (default 3): a lender that just took its share back is not
    /// idle again on the reports sent before its new limit reached it.
    pub idle_ticks: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            link_budget_bytes_per_sec: None,
            ingress_budget_bytes_per_sec: None,
            min_bytes_per_sec: 64 << 10,
            saturated_at: 0.9,
            idle_below: 0.25,
            idle_ticks: 3,
        }
    }
}

impl NetConfig {
    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        for (key, budget) in [
            ("link_budget_bytes_per_sec", self.link_budget_bytes_per_sec),
            (
                "ingress_budget_bytes_per_sec",
                self.ingress_budget_bytes_per_sec,
            ),
        ] {
            if let Some(b) = budget
                && !(MIN_NET_EGRESS..=MAX_NET_EGRESS).contains(&b)
            {
                return Err(format!(
                    "key `network.{key}` must be in {MIN_NET_EGRESS}..={MAX_NET_EGRESS}"
                ));
            }
        }
        if !(MIN_NET_EGRESS..=MAX_NET_EGRESS).contains(&self.min_bytes_per_sec) {
            return Err(format!(
                "key `network.min_bytes_per_sec` must be in {MIN_NET_EGRESS}..={MAX_NET_EGRESS}"
            ));
        }
        let unit = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !unit(self.saturated_at)
            || !unit(self.idle_below)
            || self.idle_below >= self.saturated_at
        {
            return Err(
                "keys `network.saturated_at` and `network.idle_below` must be in (0, 1], idle_below below saturated_at"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Own,
    /// Lends all of its share but this much.
    Lending(u64),
    Borrowing,
}

/// What a task asks of the link budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAsk {
    /// Nothing: an equal part of what the asks leave.
    Equal,
    /// `io.predictive.egress-bytes-per-sec` (ingress: `io.predictive.ingress-bytes-per-sec`), bytes/s.
    Annotation(u64),
    /// Its task type's predicted rate in the shaper's direction, bytes/s, with the words saying where it came from.
    Predicted {
        /// The ask, within `[min_bytes_per_sec, budget]`.
        bytes_per_sec: u64,
        /// Why, for the decision log.
        why: String,
    },
}

impl NetAsk {
    /// The ask of a task in direction `dir`: its annotation when it has one, else its type's predicted rate in
    /// that direction (egress: mean tx, ingress: mean rx) — the interval's `upper` bound (a limit set too low only
    /// slows a sender, which can still borrow, so the one-sided tail that memory needs is not taken) clamped to
    /// `[min_bytes_per_sec, budget]` — when the prediction is warm and its runs measured that direction, else an
    /// equal part. `cfg` is the shaper's ([`NetShaper::config`]: for ingress its budget is the ingress budget).
    pub fn of(
        annotation: Option<u64>,
        prediction: Option<&Prediction>,
        dir: Direction,
        cfg: &NetConfig,
    ) -> Self {
        if let Some(a) = annotation {
            return NetAsk::Annotation(a);
        }
        let (Some(p), Some(budget)) = (prediction, cfg.link_budget_bytes_per_sec) else {
            return NetAsk::Equal;
        };
        let e = dir.estimate(p);
        if p.is_cold_start() || e.kind.is_none() || !e.upper.is_finite() || e.upper <= 0.0 {
            return NetAsk::Equal;
        }
        let bytes_per_sec = (e.upper as u64).clamp(cfg.min_bytes_per_sec.min(budget), budget);
        NetAsk::Predicted {
            bytes_per_sec,
            why: format!(
                "predicted {} of its type: upper bound {:.0} B/s of the {:.0}% interval around {:.0} B/s, {} runs, \
                 model v{}",
                dir.name(),
                e.upper,
                p.level * 100.0,
                e.point,
                p.runs,
                p.model_version
            ),
        }
    }

    fn bytes(&self) -> Option<u64> {
        match self {
            NetAsk::Equal => None,
            NetAsk::Annotation(b)
            | NetAsk::Predicted {
                bytes_per_sec: b, ..
            } => Some(*b),
        }
    }

    /// Why the share is what it is, given the share it got.
    fn words(&self, base: u64) -> String {
        let scaled = |b: u64| {
            if base < b {
                format!(", scaled down from {b} B/s: the asks exceed the budget")
            } else {
                String::new()
            }
        };
        match self {
            NetAsk::Equal => "an equal part of what the asks leave".to_owned(),
            NetAsk::Annotation(b) => format!("asked {b} B/s by annotation{}", scaled(*b)),
            NetAsk::Predicted { bytes_per_sec, why } => {
                format!("{why}{}", scaled(*bytes_per_sec))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct NetTask {
    ask: NetAsk,
    enforce: bool,
    base: u64,
    /// The limit last directed (`None`: none yet).
    limit: Option<u64>,
    /// Measured rate in the shaper's direction (tx for egress, rx for ingress), bytes/s.
    tx: Option<f64>,
    /// `tx` came in a report since the last tick: only such a tick counts (a tick with no report learns nothing,
    /// and counting the old rate again made a sender whose reports paused look idle for as long).
    fresh: bool,
    /// Ticks in a row below `idle_below` of its share.
    idle_for: u32,
    role: Role,
    reason: String,
}

/// The egress (or ingress) shares and loans of the tasks with their own network namespace.
#[derive(Debug, Clone, Default)]
pub struct NetShaper {
    /// For ingress, `link_budget_bytes_per_sec` holds the ingress budget (the rules read one budget).
    cfg: NetConfig,
    dir: Direction,
    tasks: BTreeMap<String, NetTask>,
}

impl NetShaper {
    /// An egress shaper with `cfg`; with no budget it never emits a directive.
    pub fn new(cfg: NetConfig) -> Self {
        Self {
            cfg,
            dir: Direction::Egress,
            tasks: BTreeMap::new(),
        }
    }

    /// An ingress shaper: `ingress_budget_bytes_per_sec` shared by the same rules; emits
    /// [`Action::SetNetIngress`], and [`NetShaper::observe`] takes received bytes/s.
    pub fn ingress(cfg: NetConfig) -> Self {
        let budget = cfg.ingress_budget_bytes_per_sec;
        Self {
            cfg: NetConfig {
                link_budget_bytes_per_sec: budget,
                ..cfg
            },
            dir: Direction::Ingress,
            tasks: BTreeMap::new(),
        }
    }

    /// The direction it limits.
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// [`NetAsk::of`] in this shaper's direction, with its budget.
    pub fn ask(&self, annotation: Option<u64>, prediction: Option<&Prediction>) -> NetAsk {
        NetAsk::of(annotation, prediction, self.dir, &self.cfg)
    }

    /// [`NetShaper::register_ask`] with the annotation's ask, if any.
    pub fn register(
        &mut self,
        id: &str,
        asked: Option<u64>,
        mode: Mode,
        own_netns: bool,
    ) -> Vec<Directive> {
        let ask = asked.map_or(NetAsk::Equal, NetAsk::Annotation);
        self.register_ask(id, ask, mode, own_netns)
    }

    /// Adds (or replaces) a task and returns the directives: its limit, and the other tasks' smaller shares.
    /// Nothing when there is no budget or the task shares the host's network namespace.
    pub fn register_ask(
        &mut self,
        id: &str,
        ask: NetAsk,
        mode: Mode,
        own_netns: bool,
    ) -> Vec<Directive> {
        self.tasks.remove(id);
        if self.cfg.link_budget_bytes_per_sec.is_none() || !own_netns {
            return Vec::new();
        }
        self.tasks.insert(
            id.to_owned(),
            NetTask {
                ask,
                enforce: mode == Mode::Enforce,
                base: 0,
                limit: None,
                tx: None,
                fresh: false,
                idle_for: 0,
                role: Role::Own,
                reason: String::new(),
            },
        );
        self.share();
        self.limits()
    }

    /// Removes a task; the others' shares grow.
    pub fn unregister(&mut self, id: &str) -> Vec<Directive> {
        if self.tasks.remove(id).is_none() {
            return Vec::new();
        }
        self.share();
        self.limits()
    }

    /// Records a task's measured rate in the shaper's direction (egress: sent, ingress: received), bytes/s.
    pub fn observe(&mut self, id: &str, tx_bytes_per_sec: Option<f64>) {
        if let (Some(t), Some(tx)) = (self.tasks.get_mut(id), tx_bytes_per_sec) {
            t.tx = Some(tx);
            t.fresh = true;
        }
    }

    /// One step: lending, borrowing and reclaims; the directives for the limits that changed.
    pub fn tick(&mut self) -> Vec<Directive> {
        if self.tasks.is_empty() {
            return Vec::new();
        }
        let (sat, idle) = (self.cfg.saturated_at, self.cfg.idle_below);
        let min = self.cfg.min_bytes_per_sec;
        for t in self.tasks.values_mut() {
            let current = t.limit.unwrap_or(t.base) as f64;
            if !t.enforce {
                t.role = Role::Own;
                continue;
            }
            // No report since the last tick: its role stands.
            let (Some(tx), true) = (t.tx, std::mem::take(&mut t.fresh)) else {
                continue;
            };
            t.idle_for = if tx < idle * t.base as f64 {
                t.idle_for.saturating_add(1)
            } else {
                0
            };
            t.role = match t.role {
                Role::Lending(kept) if tx >= sat * kept as f64 => {
                    t.idle_for = 0;
                    Role::Own
                }
                Role::Lending(kept) => Role::Lending(kept),
                Role::Borrowing if tx >= sat * t.base as f64 => Role::Borrowing,
                _ if t.idle_for >= self.cfg.idle_ticks => {
                    let keep = ((tx * 2.0) as u64).max(min).min(t.base);
                    if keep < t.base {
                        Role::Lending(keep)
                    } else {
                        Role::Own
                    }
                }
                _ if tx >= sat * current => Role::Borrowing,
                _ => Role::Own,
            };
        }
        self.limits()
    }

    /// Sets every task's limit from its share and role; returns the directives for those that changed.
    fn limits(&mut self) -> Vec<Directive> {
        let lent: u64 = self
            .tasks
            .values()
            .map(|t| match t.role {
                Role::Lending(kept) => t.base.saturating_sub(kept),
                _ => 0,
            })
            .sum();
        let lenders: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.role, Role::Lending(_)))
            .map(|(id, _)| id.clone())
            .collect();
        let borrowers = self
            .tasks
            .values()
            .filter(|t| t.role == Role::Borrowing)
            .count() as u64;
        let each = lent.checked_div(borrowers).unwrap_or(0);
        let mut out = Vec::new();
        for (id, t) in &mut self.tasks {
            let (limit, reason) = match t.role {
                Role::Own => (
                    t.base,
                    format!("its share {} B/s ({})", t.base, t.ask.words(t.base)),
                ),
                Role::Lending(kept) => (
                    kept,
                    format!(
                        "idle: keeps {kept} B/s of its share {} B/s, lends the rest",
                        t.base
                    ),
                ),
                Role::Borrowing if each > 0 => (
                    t.base + each,
                    format!(
                        "saturated: its share {} B/s + {each} B/s lent by {}",
                        t.base,
                        lenders.join(", ")
                    ),
                ),
                Role::Borrowing => (
                    t.base,
                    format!("saturated: its share {} B/s, nothing to borrow", t.base),
                ),
            };
            let limit = limit.clamp(MIN_NET_EGRESS, MAX_NET_EGRESS);
            t.reason = reason.clone();
            if t.limit != Some(limit) {
                out.push(Directive {
                    container_id: id.clone(),
                    action: self.dir.action(limit),
                    reason: format!(
                        "{dir} {reason} ({budget} budget {} B/s)",
                        self.cfg.link_budget_bytes_per_sec.unwrap_or(0),
                        dir = self.dir.name(),
                        budget = match self.dir {
                            Direction::Egress => "link",
                            Direction::Ingress => "ingress",
                        }
                    ),
                    applied: t.enforce,
                    old_value: t.limit.map(|l| l as f64),
                });
                t.limit = Some(limit);
            }
        }
        out
    }

    /// Shares of the budget (see the module doc); loans end, as the shares changed under them.
    fn share(&mut self) {
        let Some(budget) = self.cfg.link_budget_bytes_per_sec else {
            return;
        };
        let n = self.tasks.len() as u64;
        if n == 0 {
            return;
        }
        let unasked = self
            .tasks
            .values()
            .filter(|t| t.ask == NetAsk::Equal)
            .count() as u64;
        let floor = self.cfg.min_bytes_per_sec.min(budget / n);
        let sum = |annotated: bool| -> u64 {
            self.tasks
                .values()
                .filter(|t| matches!(t.ask, NetAsk::Annotation(_)) == annotated)
                .filter_map(|t| t.ask.bytes())
                .sum()
        };
        // The annotations first, then the predictions in what they leave (a learned ask never cuts an explicit
        // one); a predicted share keeps the floor, as a task with no ask does. A predicted ask is at least the floor.
        let predicted_n = self
            .tasks
            .values()
            .filter(|t| matches!(t.ask, NetAsk::Predicted { .. }))
            .count() as u64;
        let room = budget.saturating_sub((unasked + predicted_n) * floor);
        let annotated = sum(true).min(room);
        let room_predicted = budget.saturating_sub(unasked * floor + annotated);
        let predicted = sum(false).min(room_predicted);
        let extra_room = room_predicted.saturating_sub(predicted_n * floor);
        let extra_asked = sum(false).saturating_sub(predicted_n * floor);
        let rest = budget.saturating_sub(annotated + predicted);
        let scale = |a: u64, asked: u64, room: u64| {
            if asked <= room {
                a
            } else {
                (u128::from(a) * u128::from(room) / u128::from(asked.max(1))) as u64
            }
        };
        let all_annotated = sum(true);
        for t in self.tasks.values_mut() {
            t.base = match t.ask {
                NetAsk::Annotation(a) => scale(a, all_annotated, room),
                NetAsk::Predicted {
                    bytes_per_sec: a, ..
                } => floor + scale(a.saturating_sub(floor), extra_asked, extra_room),
                NetAsk::Equal => (rest / unasked.max(1)).max(floor),
            };
            t.role = Role::Own;
            t.idle_for = 0;
        }
    }

    /// The status of a task's egress (or ingress).
    pub fn view(&self, id: &str) -> Option<NetView> {
        let t = self.tasks.get(id)?;
        let limit = t.limit.unwrap_or(t.base);
        let (tx, rx) = match self.dir {
            Direction::Egress => (t.tx, None),
            Direction::Ingress => (None, t.tx),
        };
        Some(NetView {
            limit_bytes_per_sec: limit,
            base_bytes_per_sec: t.base,
            tx_bytes_per_sec: tx,
            rx_bytes_per_sec: rx,
            lent_bytes_per_sec: t.base.saturating_sub(limit),
            borrowed_bytes_per_sec: limit.saturating_sub(t.base),
            reason: t.reason.clone(),
        })
    }

    /// Sum of the limits in force, bytes/s.
    pub fn total(&self) -> u64 {
        self.tasks.values().map(|t| t.limit.unwrap_or(t.base)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn shaper(budget: u64) -> NetShaper {
        NetShaper::new(NetConfig {
            link_budget_bytes_per_sec: Some(budget),
            ..NetConfig::default()
        })
    }

    fn limit_of(ds: &[Directive], id: &str) -> Option<u64> {
        ds.iter()
            .filter(|d| d.container_id == id)
            .find_map(|d| match d.action {
                Action::SetNetEgress { rate_bytes_per_sec } => rate_bytes_per_sec,
                _ => None,
            })
    }

    fn limit(s: &NetShaper, id: &str) -> u64 {
        s.view(id).expect("registered").limit_bytes_per_sec
    }

    #[test]
    fn no_budget_or_host_network_means_no_directive() {
        let mut off = NetShaper::new(NetConfig::default());
        assert!(off.register("a", Some(MB), Mode::Enforce, true).is_empty());
        assert!(off.tick().is_empty());
        assert_eq!(off.view("a"), None);
        let mut on = shaper(2 * MB);
        assert!(on.register("host", None, Mode::Enforce, false).is_empty());
        assert_eq!(on.view("host"), None);
    }

    #[test]
    fn shares_follow_the_annotations_and_never_exceed_the_budget() {
        let mut s = shaper(2 * MB);
        let ds = s.register("a", Some(MB), Mode::Enforce, true);
        assert_eq!(limit_of(&ds, "a"), Some(MB));
        let ds = s.register("b", None, Mode::Enforce, true);
        assert_eq!(limit_of(&ds, "b"), Some(MB), "the rest, equally");
        assert_eq!(limit_of(&ds, "a"), None, "a unchanged: no directive");
        // c asks for the whole link: the asks are scaled into what the floor of b leaves.
        let ds = s.register("c", Some(2 * MB), Mode::Enforce, true);
        let floor = NetConfig::default().min_bytes_per_sec;
        assert_eq!(limit(&s, "b"), floor);
        assert_eq!(limit_of(&ds, "b"), Some(floor));
        assert!(s.total() <= 2 * MB, "{}", s.total());
        assert_eq!(limit(&s, "c"), 2 * limit(&s, "a"));
        // c leaves: a and b get their earlier shares back.
        let ds = s.unregister("c");
        assert_eq!(
            (limit_of(&ds, "a"), limit_of(&ds, "b")),
            (Some(MB), Some(MB))
        );
    }

    /// One tick after a report from each of `rates` (a shim reports every tick).
    fn tick_after(s: &mut NetShaper, rates: &[(&str, f64)]) -> Vec<Directive> {
        for (id, r) in rates {
            s.observe(id, Some(*r));
        }
        s.tick()
    }

    #[test]
    fn an_idle_sender_lends_to_a_saturated_one_and_takes_it_back_in_one_tick() {
        let mut s = shaper(2 * MB);
        s.register("a", Some(MB), Mode::Enforce, true);
        s.register("b", Some(MB), Mode::Enforce, true);
        let keep = NetConfig::default().min_bytes_per_sec;
        let full = 0.99 * MB as f64;
        // Both send at their limit: nothing moves.
        assert!(tick_after(&mut s, &[("a", full), ("b", full)]).is_empty());
        // b goes idle: it lends after idle_ticks ticks, a borrows what b does not keep.
        let b_idle = [("a", full), ("b", 0.0)];
        assert!(tick_after(&mut s, &b_idle).is_empty());
        assert!(tick_after(&mut s, &b_idle).is_empty());
        let ds = tick_after(&mut s, &b_idle);
        assert_eq!(limit_of(&ds, "b"), Some(keep));
        assert_eq!(limit_of(&ds, "a"), Some(2 * MB - keep));
        let a = s.view("a").expect("a");
        assert_eq!(a.borrowed_bytes_per_sec, MB - keep);
        assert!(a.reason.contains("lent by b"), "{}", a.reason);
        assert_eq!(s.total(), 2 * MB);
        // a uses its loan; b stays idle: nothing changes.
        assert!(tick_after(&mut s, &[("a", 1.95 * MB as f64), ("b", 0.0)]).is_empty());
        // A tick with no report changes nothing either (the rates last seen are not counted again).
        assert!(s.tick().is_empty());
        // b sends again and fills what it kept: both limits are back in the same tick.
        let ds = tick_after(&mut s, &[("a", 1.95 * MB as f64), ("b", keep as f64)]);
        assert_eq!(
            (limit_of(&ds, "a"), limit_of(&ds, "b")),
            (Some(MB), Some(MB))
        );
        // b's next report still shows the small rate (sent before its limit rose): it does not lend at once.
        assert!(tick_after(&mut s, &[("a", full), ("b", keep as f64)]).is_empty());
        assert_eq!(s.total(), 2 * MB);
    }

    /// A sender whose reports pause is not idle: only ticks with a report since the last count (a rate of 0 seen
    /// once, then three ticks with no report, lends nothing).
    #[test]
    fn ticks_without_a_report_count_nothing() {
        let mut s = shaper(2 * MB);
        s.register("a", Some(MB), Mode::Enforce, true);
        s.register("b", Some(MB), Mode::Enforce, true);
        assert!(tick_after(&mut s, &[("a", MB as f64), ("b", 0.0)]).is_empty());
        for _ in 0..3 {
            assert!(s.tick().is_empty());
        }
        assert!(s.view("b").is_some_and(|v| v.borrowed_bytes_per_sec == 0));
        assert_eq!(limit(&s, "b"), MB);
    }

    #[test]
    fn observe_mode_records_without_lending() {
        let mut s = shaper(2 * MB);
        let ds = s.register("a", Some(MB), Mode::Observe, true);
        assert!(!ds[0].applied);
        s.register("b", Some(MB), Mode::Enforce, true);
        s.observe("a", Some(0.0));
        s.observe("b", Some(MB as f64));
        for _ in 0..5 {
            assert!(s.tick().is_empty());
        }
    }

    /// A warm prediction of `runs` runs whose egress is `point` with upper bound `upper` (`kind: None` when
    /// `measured` is false: the runs never measured egress).
    fn predicted(point: f64, upper: f64, runs: u64, measured: bool) -> Prediction {
        predicted_in(Direction::Egress, point, upper, runs, measured)
    }

    /// As [`predicted`], the estimate in direction `dir` (the other direction unmeasured).
    fn predicted_in(
        dir: Direction,
        point: f64,
        upper: f64,
        runs: u64,
        measured: bool,
    ) -> Prediction {
        let mut p = Prediction::cold(&predictor::TaskKey::new("t"));
        p.confidence = predictor::Confidence::Low;
        p.level = 0.9;
        p.runs = runs;
        p.model_version = 3;
        let e = predictor::Estimate {
            point,
            lower: point * 0.9,
            upper,
            limit: upper * 1.1,
            kind: measured.then_some(predictor::ModelKind::Baseline),
        };
        match dir {
            Direction::Egress => p.net_tx_bytes_per_s = e,
            Direction::Ingress => p.net_rx_bytes_per_s = e,
        }
        p
    }

    /// A configuration with an egress (link) and an ingress budget.
    fn budgets(link: u64, ingress: u64) -> NetConfig {
        NetConfig {
            link_budget_bytes_per_sec: Some(link),
            ingress_budget_bytes_per_sec: Some(ingress),
            ..NetConfig::default()
        }
    }

    /// The ingress shaper asks the type's predicted ingress (rx), not its egress; the annotation wins over it.
    #[test]
    fn a_predicted_ingress_ask_sets_the_ingress_share_and_the_annotation_wins_over_it() {
        let cfg = budgets(10 * MB, 4 * MB);
        let mut s = NetShaper::ingress(cfg.clone());
        let egress = NetShaper::new(cfg);
        // A type that received about 1 MB/s (and whose egress was never measured) asks 1.2 MB/s of ingress.
        let p = predicted_in(Direction::Ingress, MB as f64, 1.2 * MB as f64, 8, true);
        assert_eq!(egress.ask(None, Some(&p)), NetAsk::Equal);
        let ask = s.ask(None, Some(&p));
        assert!(
            matches!(ask, NetAsk::Predicted { bytes_per_sec, .. } if bytes_per_sec == 1_200_000),
            "{ask:?}"
        );
        let ds = s.register_ask("learned", ask, Mode::Enforce, true);
        assert_eq!(
            ds[0].action,
            Action::SetNetIngress {
                rate_bytes_per_sec: Some(1_200_000)
            }
        );
        let why = &ds[0].reason;
        assert!(why.contains("predicted ingress of its type"), "{why}");
        assert!(
            why.contains("8 runs") && why.contains("ingress budget"),
            "{why}"
        );
        s.register("equal", None, Mode::Enforce, true);
        assert_eq!(limit(&s, "equal"), 4 * MB - 1_200_000);
        assert_eq!(limit(&s, "learned"), 1_200_000);
        // The ingress budget bounds the ask; the annotation wins over the prediction.
        let huge = predicted_in(Direction::Ingress, 1e12, 2e12, 8, true);
        assert!(
            matches!(s.ask(None, Some(&huge)), NetAsk::Predicted { bytes_per_sec, .. } if bytes_per_sec == 4 * MB)
        );
        let ask = s.ask(Some(MB / 2), Some(&p));
        assert_eq!(ask, NetAsk::Annotation(MB / 2));
        s.register_ask("annotated", ask, Mode::Enforce, true);
        assert_eq!(limit(&s, "annotated"), MB / 2);
        assert!(
            s.view("annotated")
                .expect("view")
                .reason
                .contains("by annotation")
        );
    }

    #[test]
    fn a_predicted_ask_sets_the_share_and_the_annotation_wins_over_it() {
        let cfg = NetConfig {
            link_budget_bytes_per_sec: Some(10 * MB),
            ..NetConfig::default()
        };
        let mut s = NetShaper::new(cfg.clone());
        // A type that sent about 1 MB/s asks its upper bound, 1.2 MB/s; the others share the rest.
        let p = predicted(MB as f64, 1.2 * MB as f64, 8, true);
        let ask = NetAsk::of(None, Some(&p), Direction::Egress, &cfg);
        assert!(
            matches!(ask, NetAsk::Predicted { bytes_per_sec, .. } if bytes_per_sec == 1_200_000)
        );
        let ds = s.register_ask("learned", ask, Mode::Enforce, true);
        assert_eq!(limit_of(&ds, "learned"), Some(1_200_000));
        assert!(
            ds[0].reason.contains("predicted egress of its type"),
            "{}",
            ds[0].reason
        );
        assert!(ds[0].reason.contains("8 runs"), "{}", ds[0].reason);
        s.register("equal", None, Mode::Enforce, true);
        assert_eq!(limit(&s, "equal"), 10 * MB - 1_200_000);
        assert_eq!(limit(&s, "learned"), 1_200_000);
        // The annotation wins over the prediction.
        let ask = NetAsk::of(Some(3 * MB), Some(&p), Direction::Egress, &cfg);
        assert_eq!(ask, NetAsk::Annotation(3 * MB));
        s.register_ask("annotated", ask, Mode::Enforce, true);
        assert_eq!(limit(&s, "annotated"), 3 * MB);
        assert!(
            s.view("annotated")
                .expect("view")
                .reason
                .contains("by annotation")
        );
        // Cold, unmeasured or no prediction: an equal part.
        let mut cold = p.clone();
        cold.confidence = predictor::Confidence::None;
        assert_eq!(
            NetAsk::of(None, Some(&cold), Direction::Egress, &cfg),
            NetAsk::Equal
        );
        let unmeasured = predicted(0.0, 0.0, 8, false);
        assert_eq!(
            NetAsk::of(None, Some(&unmeasured), Direction::Egress, &cfg),
            NetAsk::Equal
        );
        assert_eq!(
            NetAsk::of(None, None, Direction::Egress, &cfg),
            NetAsk::Equal
        );
        // A prediction below the floor or above the budget is clamped into [min, budget].
        let tiny = predicted(10.0, 20.0, 8, true);
        assert!(
            matches!(NetAsk::of(None, Some(&tiny), Direction::Egress, &cfg), NetAsk::Predicted { bytes_per_sec, .. } if bytes_per_sec == cfg.min_bytes_per_sec)
        );
        let huge = predicted(1e12, 2e12, 8, true);
        assert!(
            matches!(NetAsk::of(None, Some(&huge), Direction::Egress, &cfg), NetAsk::Predicted { bytes_per_sec, .. } if bytes_per_sec == 10 * MB)
        );
    }

    #[test]
    fn predicted_asks_scale_into_what_the_annotations_leave() {
        let cfg = NetConfig {
            link_budget_bytes_per_sec: Some(10 * MB),
            ..NetConfig::default()
        };
        let mut s = NetShaper::new(cfg.clone());
        let floor = cfg.min_bytes_per_sec;
        s.register("annotated", Some(6 * MB), Mode::Enforce, true);
        s.register("equal", None, Mode::Enforce, true);
        let big = predicted(5.0 * MB as f64, 6.0 * MB as f64, 20, true);
        for id in ["p1", "p2"] {
            let ask = NetAsk::of(None, Some(&big), Direction::Egress, &cfg);
            s.register_ask(id, ask, Mode::Enforce, true);
        }
        // The annotation keeps its 6 MB/s; the two 6 MB/s predictions share what is left after the floor of the
        // task with no ask, equally; the sum stays within the budget.
        assert_eq!(limit(&s, "annotated"), 6 * MB);
        assert_eq!(limit(&s, "equal"), floor);
        let each = (10 * MB - 6 * MB - floor) / 2;
        assert_eq!((limit(&s, "p1"), limit(&s, "p2")), (each, each));
        assert!(s.total() <= 10 * MB, "{}", s.total());
        let why = s.view("p1").expect("view").reason;
        assert!(why.contains("scaled down from 6000000 B/s"), "{why}");
        // The annotation asking the whole link leaves the predicted tasks their floor, as the task with no ask.
        s.register("annotated", Some(10 * MB), Mode::Enforce, true);
        assert!(s.total() <= 10 * MB, "{}", s.total());
        assert_eq!((limit(&s, "p1"), limit(&s, "equal")), (floor, floor));
        assert_eq!(limit(&s, "annotated"), 10 * MB - 3 * floor);
    }

    /// The ingress shaper: its own budget, the same rules, SetNetIngress directives, rx in its view; with only
    /// an egress budget it emits nothing.
    #[test]
    fn ingress_shares_its_own_budget_by_the_same_rules() {
        let cfg = budgets(10 * MB, 2 * MB);
        let mut s = NetShaper::ingress(cfg.clone());
        assert_eq!(s.direction(), Direction::Ingress);
        let ds = s.register("a", Some(MB), Mode::Enforce, true);
        assert_eq!(
            ds[0].action,
            Action::SetNetIngress {
                rate_bytes_per_sec: Some(MB)
            }
        );
        assert!(
            ds[0].reason.starts_with("ingress its share"),
            "{}",
            ds[0].reason
        );
        assert!(
            ds[0].reason.contains("ingress budget 2000000"),
            "{}",
            ds[0].reason
        );
        s.register("b", None, Mode::Enforce, true);
        assert_eq!(limit(&s, "b"), MB);
        // b receives nothing for idle_ticks ticks: it lends to a, which receives at its limit.
        let keep = cfg.min_bytes_per_sec;
        for _ in 0..2 {
            assert!(tick_after(&mut s, &[("a", 0.99 * MB as f64), ("b", 0.0)]).is_empty());
        }
        let ds = tick_after(&mut s, &[("a", 0.99 * MB as f64), ("b", 0.0)]);
        assert!(
            ds.iter()
                .all(|d| matches!(d.action, Action::SetNetIngress { .. }))
        );
        assert_eq!(limit(&s, "a"), 2 * MB - keep);
        let v = s.view("a").expect("a");
        assert_eq!(
            (v.tx_bytes_per_sec, v.rx_bytes_per_sec),
            (None, Some(0.99 * MB as f64))
        );
        assert_eq!(s.total(), 2 * MB);

        let mut off = NetShaper::ingress(NetConfig {
            link_budget_bytes_per_sec: Some(MB),
            ..NetConfig::default()
        });
        assert!(off.register("a", None, Mode::Enforce, true).is_empty());
        assert_eq!(off.view("a"), None);
    }

    #[test]
    fn config_checks_name_the_key() {
        let bad = NetConfig {
            ingress_budget_bytes_per_sec: Some(MAX_NET_EGRESS + 1),
            ..NetConfig::default()
        };
        assert!(
            bad.check()
                .expect_err("too big")
                .contains("network.ingress_budget_bytes_per_sec")
        );
        let bad = NetConfig {
            link_budget_bytes_per_sec: Some(10),
            ..NetConfig::default()
        };
        assert!(bad.check().expect_err("too small").contains("link_budget"));
        let bad = NetConfig {
            idle_below: 0.95,
            ..NetConfig::default()
        };
        assert!(bad.check().expect_err("order").contains("idle_below"));
        assert_eq!(NetConfig::default().check(), Ok(()));
    }
}
