//! Conformal scores pooled across task types, for the tails of young types.
//!
//! A type with a handful of forward scores has a 99.8% memory limit (or a 95% CPU one) that rests on those few
//! ratios and a fitted tail: on the Google 2011 jobs, whose scored runs have 3-7 scores each, that tail
//! under-predicted 3% of the runs while wasting more than any history quantile (docs/BENCHMARKS.md). The pool keeps,
//! per target, a histogram of `ln(actual / predicted)` over every type's newest forward scores; a type below the
//! central conformal ranks takes its `limit` from a blend of its own and the pool's quantile
//! ([`ScorePool::blend`]). It also keeps, per target, a histogram of young runs' `actual / largest earlier value`
//! (runs with 2 to 20 earlier runs): a young type's limit is its largest run x that histogram's quantile
//! ([`crate::model::peak_multiplier`]); the blend remains for a type whose point follows its features.
//! And, per target, young scores' deviations from the scores before them in units of the small-sample tail's reach
//! ([`ScorePool::spread_quantile`]): a young type's interval scales its own reach by their conformal bound
//! ([`crate::model::pooled_interval`]).
//!
//! And, for CPU, how the point's limit and the window limit of each finished run's model would have sized it
//! ([`WindowCosts`]): which of the two the node's types use, and at which price ([`ScorePool::window_price`]).
//!
//! Bounded and incremental: [`BINS`] fixed bins per target over `ln` ratio in `[-RANGE, RANGE]` (values beyond go
//! to the edge bins, so a 1/148 to 148x ratio is resolved to 2.5%), adding a score is O(1), and the counts halve
//! when their total reaches [`CAP`], so the pool follows the node's recent runs. About 10 KB in all, persisted by
//! the engine with each full retrain ([`crate::Store::save_models_and_pool`]); the peak ratios double that.

use serde::{Deserialize, Serialize};

/// Bins per target.
pub const BINS: usize = 400;
/// Half-width of the histogram in `ln` ratio (e^5 ~ 148x).
pub const RANGE: f64 = 5.0;
/// Total weight at which a target's counts halve.
pub const CAP: f64 = 20_000.0;
/// Prior weight of the pool, in own scores: a type with `n` scores weighs its own multiplier `n / (n + N0)`.
pub const N0: f64 = 10.0;
/// The pool answers once a target holds this much weight (before, a young type uses its own scores alone).
pub const MIN_POOLED: f64 = 100.0;

/// One target's pooled histogram of `ln` ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledScores {
    counts: Vec<f32>,
    total: f64,
}

impl Default for PooledScores {
    fn default() -> Self {
        Self {
            counts: vec![0.0; BINS],
            total: 0.0,
        }
    }
}

impl PooledScores {
    fn bin(ln: f64) -> usize {
        let f = (ln + RANGE) / (2.0 * RANGE) * BINS as f64;
        (f.max(0.0) as usize).min(BINS - 1)
    }

    fn centre(b: usize) -> f64 {
        -RANGE + (b as f64 + 0.5) * 2.0 * RANGE / BINS as f64
    }

    /// Adds a ratio `actual / predicted` (ignored unless finite and positive: a run at 0 has no log).
    pub fn add(&mut self, ratio: f64) {
        if !(ratio.is_finite() && ratio > 0.0) {
            return;
        }
        if self.counts.len() != BINS {
            // Stored by a build with other bins: start over rather than misread.
            *self = Self::default();
        }
        if self.total + 1.0 > CAP {
            self.counts.iter_mut().for_each(|c| *c *= 0.5);
            self.total = self.counts.iter().map(|c| f64::from(*c)).sum();
        }
        self.counts[Self::bin(ratio.ln())] += 1.0;
        self.total += 1.0;
    }

    /// The `ln` ratio a conformal upper bound at `q` takes from the scores held: the finite-sample rank
    /// (quantile `q (1 + 1/total)`) and the upper edge of its bin, so that the bound is never below the score it
    /// stands for (the bin's centre may be half a bin below it). `None` when empty.
    pub fn conformal_upper(&self, q: f64) -> Option<f64> {
        let rank = (q * (1.0 + 1.0 / self.total.max(1.0))).min(1.0);
        self.quantile(rank).map(|v| v.ln() + RANGE / BINS as f64)
    }

    /// Weight of the scores held.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The ratio at quantile `q`: the centre of the bin that holds the `total x q`-th weight. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total <= 0.0 || self.counts.len() != BINS {
            return None;
        }
        let target = (self.total * q.clamp(0.0, 1.0)).max(f64::MIN_POSITIVE);
        let mut acc = 0.0;
        for (b, c) in self.counts.iter().enumerate() {
            acc += f64::from(*c);
            if acc >= target - 1e-9 {
                return Some(Self::centre(b).exp());
            }
        }
        Some(Self::centre(BINS - 1).exp())
    }
}

/// The pooled scores of every target, in [`crate::model::Resource::ALL`] order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScorePool {
    /// Per target.
    pub targets: [PooledScores; 6],
    /// Per target, young runs' `actual / largest earlier value` ([`crate::model::ForwardScores::peaks`]): a young
    /// type's margin over its largest run. Empty in a pool stored before it.
    #[serde(default)]
    pub peaks: [PooledScores; 6],
    /// Per target, young types' scores' deviations from their earlier scores in units of the small-sample tail's
    /// reach ([`crate::model::small_sample_deviations`], stored as `e^deviation`): a young type's interval
    /// ([`crate::model::pooled_interval`]). Empty in a pool stored before it.
    #[serde(default)]
    pub spread: [PooledScores; 6],
    /// CPU's two limits' costs over the node's runs ([`ScorePool::window_price`]). Empty in a pool stored before
    /// it.
    #[serde(default)]
    pub window: WindowCosts,
}

/// Prices of an under-sized run, in runs' worth of relative slack, at which CPU's window limit's margin is tried
/// ([`crate::model::priced_margin`]); the node takes the one whose limits left the least slack at no more
/// under-sizing than the point's limit ([`ScorePool::window_price`]). From 1/4 to 64, each 2^(1/4) times the one
/// before: between two neighbours the window limits' under-sizing moves by about a tenth, so one of them lands
/// close to the point's.
pub fn window_prices() -> [f64; N_PRICES] {
    std::array::from_fn(|k| 0.25 * 2f64.powf(k as f64 / 4.0))
}

/// How many [`window_prices`].
pub const N_PRICES: usize = 33;

/// How the two CPU limits sized one run: `actual / limit` of each (above 1: under-sized).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowOutcome {
    /// Under the limit the model gave (the point's).
    pub point: f64,
    /// Under the window limit at each of [`window_prices`].
    pub window: [f64; N_PRICES],
}

/// How CPU's two limits sized the node's latest runs ([`WindowOutcome`]): the point's conformal limit
/// and the window limit (the largest recent run x its priced margin) at each of
/// [`window_prices`]. Sums, halved when `runs` reaches [`CAP`], so they follow the node's recent runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCosts {
    /// Runs summed.
    pub runs: f64,
    /// Runs the point's limit under-sized.
    pub point_under: f64,
    /// The point's limit's relative slack `1 - actual / limit`, summed over the runs it did not under-size.
    pub point_slack: f64,
    /// The same for the window limit, per price.
    pub under: Vec<f64>,
    /// The same for the window limit, per price.
    pub slack: Vec<f64>,
}

impl WindowCosts {
    fn halve_above_cap(&mut self) {
        while self.runs > CAP {
            self.runs *= 0.5;
            self.point_under *= 0.5;
            self.point_slack *= 0.5;
            self.under
                .iter_mut()
                .chain(self.slack.iter_mut())
                .for_each(|v| *v *= 0.5);
        }
    }

    fn add(&mut self, o: &WindowCosts) {
        let n = N_PRICES;
        if self.under.len() != n || self.slack.len() != n {
            // Empty, or stored by a build with other prices: start over rather than misread.
            *self = WindowCosts {
                under: vec![0.0; n],
                slack: vec![0.0; n],
                ..WindowCosts::default()
            };
        }
        if o.under.len() != n || o.slack.len() != n {
            return;
        }
        self.runs += o.runs;
        self.point_under += o.point_under;
        self.point_slack += o.point_slack;
        for k in 0..n {
            self.under[k] += o.under[k];
            self.slack[k] += o.slack[k];
        }
        self.halve_above_cap();
    }

    fn is_finite(&self) -> bool {
        [self.runs, self.point_under, self.point_slack]
            .iter()
            .chain(&self.under)
            .chain(&self.slack)
            .all(|v| v.is_finite() && *v >= 0.0)
    }
}

impl ScorePool {
    /// Adds a type's newest forward scores (`actual / predicted`) of target `slot`.
    pub fn add(&mut self, slot: usize, ratios: &[f64]) {
        if let Some(t) = self.targets.get_mut(slot) {
            ratios.iter().for_each(|r| t.add(*r));
        }
    }

    /// Adds the forward scores (`actual / predicted`, per target, oldest first) of a type fitted after
    /// `new_runs` more runs than at its previous fit: the newest `new_runs` of each target (fewer when a run had
    /// no score), so each run is pooled once however often its type is refitted.
    pub fn add_newest(&mut self, scores: &[Vec<f64>; 6], new_runs: u64) {
        for (slot, sc) in scores.iter().enumerate() {
            let new = usize::try_from(new_runs)
                .unwrap_or(usize::MAX)
                .min(sc.len());
            self.add(slot, &sc[sc.len() - new..]);
        }
    }

    /// Adds the newest `new_runs` deviations of each target (`spread`, aligned with a fit's scores; NaN ones
    /// skipped), as [`ScorePool::add_newest`] adds scores: each run once however often its type is refitted.
    pub fn add_spread(&mut self, spread: &[Vec<f64>; 6], new_runs: u64) {
        for (t, sc) in self.spread.iter_mut().zip(spread) {
            let new = usize::try_from(new_runs)
                .unwrap_or(usize::MAX)
                .min(sc.len());
            sc[sc.len() - new..]
                .iter()
                .filter(|d| d.is_finite())
                .for_each(|d| t.add(d.exp()));
        }
    }

    /// The pooled deviation at quantile `q` of target `slot` (in units of the small-sample tail's reach), as a
    /// conformal bound ([`PooledScores::conformal_upper`]). `None` while the pool holds less than [`MIN_POOLED`] of
    /// them.
    pub fn spread_quantile(&self, slot: usize, q: f64) -> Option<f64> {
        self.spread
            .get(slot)
            .filter(|t| t.total() >= MIN_POOLED)
            .and_then(|t| t.conformal_upper(q))
    }

    /// Adds the peak ratios `(earlier runs, ratio)` of target slots in order whose run had at least `from` earlier
    /// runs: a fit's runs since its type's previous fit, so each run is pooled once however often its type is
    /// refitted ([`crate::model::ForwardScores::add_to`]).
    pub fn add_peaks(&mut self, peaks: &[Vec<(usize, f64)>; 6], from: usize) {
        for (t, p) in self.peaks.iter_mut().zip(peaks) {
            p.iter()
                .filter(|(age, _)| *age >= from)
                .for_each(|(_, r)| t.add(*r));
        }
    }

    /// The pooled peak ratio at quantile `q` of target `slot`: a young type's margin over its largest run.
    /// `None` while the pool holds less than [`MIN_POOLED`] of them.
    pub fn peak_quantile(&self, slot: usize, q: f64) -> Option<f64> {
        self.peaks
            .get(slot)
            .filter(|t| t.total() >= MIN_POOLED)
            .and_then(|t| t.quantile(q))
    }

    /// Adds how CPU's two limits sized one run (ignored unless every ratio is finite and not negative).
    pub fn add_window_outcome(&mut self, o: &WindowOutcome) {
        if !std::iter::once(&o.point)
            .chain(&o.window)
            .all(|r| r.is_finite() && *r >= 0.0)
        {
            return;
        }
        let split = |r: f64| if r > 1.0 { (1.0, 0.0) } else { (0.0, 1.0 - r) };
        let (point_under, point_slack) = split(o.point);
        let n = N_PRICES;
        let mut one = WindowCosts {
            runs: 1.0,
            point_under,
            point_slack,
            under: vec![0.0; n],
            slack: vec![0.0; n],
        };
        for (k, r) in o.window.iter().enumerate() {
            (one.under[k], one.slack[k]) = split(*r);
        }
        self.window.add(&one);
    }

    /// The price at which the node's types size CPU by their window limit, or `None` (the point's limit): once the
    /// pool holds [`MIN_POOLED`] runs both limits sized, the price whose window limits under-sized no more of them
    /// than the point's limit did, with the least mean slack over the runs they did not under-size — when that
    /// slack is below the point's. The comparison the evaluator makes (slack at no more under-sizing), made on the
    /// node's own recent runs, and one decision for the node rather than per type: a type's own few dozen runs
    /// picked the wrong limit about as often as the right one (docs/BENCHMARKS.md).
    pub fn window_price(&self) -> Option<f64> {
        let w = &self.window;
        if w.runs < MIN_POOLED {
            return None;
        }
        let mean = |slack: f64, under: f64| slack / (w.runs - under).max(1.0);
        let point = mean(w.point_slack, w.point_under);
        if w.under.len() != N_PRICES || w.slack.len() != w.under.len() {
            return None;
        }
        (0..w.under.len())
            .filter(|&k| w.under[k] <= w.point_under)
            .map(|k| (mean(w.slack[k], w.under[k]), k))
            .filter(|(slack, _)| *slack < point)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| window_prices()[k])
    }

    /// Adds the counts of `other` (scores pooled while this one was in use), halving while above [`CAP`].
    pub fn merge(&mut self, other: &ScorePool) {
        if other.window.runs > 0.0 && other.window.is_finite() {
            self.window.add(&other.window);
        }
        let pairs = self
            .targets
            .iter_mut()
            .zip(&other.targets)
            .chain(self.peaks.iter_mut().zip(&other.peaks))
            .chain(self.spread.iter_mut().zip(&other.spread));
        for (t, o) in pairs {
            if o.counts.len() != BINS || o.total <= 0.0 {
                continue;
            }
            if t.counts.len() != BINS {
                *t = PooledScores::default();
            }
            t.counts
                .iter_mut()
                .zip(&o.counts)
                .for_each(|(a, b)| *a += b);
            t.total += o.total;
            while t.total > CAP {
                t.counts.iter_mut().for_each(|c| *c *= 0.5);
                t.total = t.counts.iter().map(|c| f64::from(*c)).sum();
            }
        }
    }

    /// A type's own multiplier `own` at quantile `q` of target `slot`, from its `n` own scores, blended with the
    /// pool's quantile `q`: `own^w x pooled^(1-w)`, `w = n / (n + N0)` (the smaller of the two when either is 0).
    /// `own` unchanged while the pool holds less than [`MIN_POOLED`].
    pub fn blend(&self, slot: usize, n: usize, own: f64, q: f64) -> f64 {
        let Some(pooled) = self
            .targets
            .get(slot)
            .filter(|t| t.total() >= MIN_POOLED)
            .and_then(|t| t.quantile(q))
        else {
            return own;
        };
        if !(own > 0.0 && pooled > 0.0) {
            return own.min(pooled);
        }
        let w = n as f64 / (n as f64 + N0);
        (w * own.ln() + (1.0 - w) * pooled.ln()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_scores_added_to_within_a_bin() {
        let mut p = PooledScores::default();
        assert_eq!(p.quantile(0.5), None);
        // 1,000 ratios from 0.5 to 2.0, evenly in log.
        for i in 0..1000 {
            p.add((f64::from(i) / 999.0 * 4f64.ln() - 2f64.ln()).exp());
        }
        p.add(0.0);
        p.add(f64::INFINITY);
        assert_eq!(p.total(), 1000.0, "a ratio of 0 or infinity has no log");
        let step = (2.0 * RANGE / BINS as f64).exp();
        for (q, want) in [(0.5, 1.0), (0.9, 2f64.powf(0.8)), (0.05, 2f64.powf(-0.9))] {
            let got = p.quantile(q).expect("holds scores");
            assert!(
                got / want < step && want / got < step,
                "q {q}: {got} vs {want}"
            );
        }
        // Beyond the range: the edge bin, not a panic.
        p.add(1e9);
        assert!(p.quantile(1.0).expect("holds") > 100.0);
    }

    #[test]
    fn a_conformal_bound_from_the_pool_is_never_below_its_rank() {
        let mut p = PooledScores::default();
        assert_eq!(p.conformal_upper(0.9), None);
        // 99 deviations 0.01, 0.02, ..., 0.99: the 90% conformal rank is ceil(100 x 0.9) = the 90th, 0.90.
        for i in 1..100 {
            p.add((f64::from(i) / 100.0).exp());
        }
        let got = p.conformal_upper(0.9).expect("holds");
        let half = RANGE / BINS as f64;
        assert!(got >= 0.90 && got <= 0.90 + 2.0 * half + 1e-9, "{got}");
        // The plain quantile (the bin's centre of the 89.1th weight) may be below the rank's score.
        assert!(p.quantile(0.9).expect("holds").ln() < got);
    }

    #[test]
    fn a_fits_deviations_are_pooled_once_and_an_old_pool_loads_without_them() {
        let mut pool = ScorePool::default();
        let spread: [Vec<f64>; 6] = std::array::from_fn(|s| {
            if s == 1 {
                vec![f64::NAN, f64::NAN, 0.5, 1.5, 2.5]
            } else {
                Vec::new()
            }
        });
        // Refitted after 2 new runs: the last two deviations are new.
        pool.add_spread(&spread, 2);
        assert_eq!(pool.spread[1].total(), 2.0);
        pool.add_spread(&spread, 10);
        assert_eq!(pool.spread[1].total(), 5.0, "NaN (no deviation) is skipped");
        assert_eq!(pool.spread_quantile(1, 0.9), None, "too few to answer");
        for _ in 0..40 {
            pool.add_spread(&spread, 3);
        }
        let q = pool.spread_quantile(1, 0.5).expect("pooled");
        assert!((q - 1.5).abs() < 0.03, "{q}");
        let mut merged = ScorePool::default();
        merged.merge(&pool);
        assert_eq!(merged.spread[1].total(), 125.0);
        let mut old = serde_json::to_value(ScorePool::default()).expect("encode");
        old.as_object_mut().expect("an object").remove("spread");
        let loaded: ScorePool = serde_json::from_value(old).expect("an old pool loads");
        assert_eq!(loaded.spread[1].total(), 0.0);
    }

    #[test]
    fn the_node_takes_the_window_limit_only_where_it_left_less_slack_at_no_more_under_sizing() {
        let outcome = |point: f64, window: [f64; N_PRICES]| WindowOutcome { point, window };
        // The point's limit: 1 run in 10 under-sized, 30% slack on the others. The window: under-sizes 2 in 10 up to
        // price index 11, 1 in 10 from 12 on, with 20% slack at 12 and 25% from 13 on.
        let nth = |i: usize| {
            let miss = i.is_multiple_of(10);
            let window = std::array::from_fn(|k| match k {
                _ if miss || (k < 12 && i % 10 == 1) => 1.2,
                12 => 0.8,
                _ => 0.75,
            });
            outcome(if miss { 1.5 } else { 0.7 }, window)
        };
        let mut pool = ScorePool::default();
        for i in 0..(MIN_POOLED as usize - 10) {
            pool.add_window_outcome(&nth(i));
        }
        assert_eq!(pool.window_price(), None, "fewer than MIN_POOLED runs");
        let before = pool.window.clone();
        pool.add_window_outcome(&outcome(f64::NAN, [0.5; N_PRICES]));
        pool.add_window_outcome(&outcome(0.5, [-1.0; N_PRICES]));
        assert_eq!(
            pool.window, before,
            "a ratio that is not finite and positive is not pooled"
        );
        for i in 0..10 {
            pool.add_window_outcome(&nth(i));
        }
        assert_eq!(pool.window.runs, MIN_POOLED);
        // Prices 0-11 under-size more than the point; 12 leaves the least slack of the others.
        assert_eq!(pool.window_price(), Some(window_prices()[12]));
        // A window that leaves more slack than the point at every price: the point stands.
        let mut worse = ScorePool::default();
        for i in 0..200 {
            worse.add_window_outcome(&outcome(
                if i % 10 == 0 { 1.5 } else { 0.9 },
                [if i % 10 == 0 { 1.5 } else { 0.6 }; N_PRICES],
            ));
        }
        assert_eq!(worse.window_price(), None);
        // Merged pools add; a pool stored before the window costs loads without them.
        let mut merged = ScorePool::default();
        merged.merge(&pool);
        merged.merge(&worse);
        assert_eq!(merged.window.runs, MIN_POOLED + 200.0);
        let mut old = serde_json::to_value(ScorePool::default()).expect("encode");
        old.as_object_mut().expect("an object").remove("window");
        let loaded: ScorePool = serde_json::from_value(old).expect("an old pool loads");
        assert_eq!(loaded.window_price(), None);
    }

    #[test]
    fn the_pool_stays_bounded_and_follows_recent_scores() {
        let mut p = PooledScores::default();
        for _ in 0..(CAP as usize) {
            p.add(1.0);
        }
        for _ in 0..(CAP as usize * 2) {
            p.add(3.0);
        }
        assert!(p.total() <= CAP, "{}", p.total());
        assert_eq!(p.counts.len(), BINS);
        // The older scores at 1.0 now weigh a few percent: the median is the recent 3.0.
        let m = p.quantile(0.5).expect("holds");
        assert!((m / 3.0 - 1.0).abs() < 0.03, "{m}");
        assert!(p.quantile(0.01).expect("holds") < 1.05);
    }

    #[test]
    fn a_young_type_leans_on_the_pool_and_an_older_one_on_itself() {
        let mut pool = ScorePool::default();
        // Too little pooled: own stands.
        pool.add(2, &[2.0; 50]);
        assert_eq!(pool.blend(2, 3, 5.0, 0.998), 5.0);
        pool.add(2, &[2.0; 100]);
        let q = pool.targets[2].quantile(0.998).expect("holds");
        // n = 0: the pool alone; n = N0: the geometric mean; large n: nearly its own.
        assert!((pool.blend(2, 0, 5.0, 0.998) - q).abs() < 1e-9);
        let half = pool.blend(2, N0 as usize, 5.0, 0.998);
        assert!((half - (5.0 * q).sqrt()).abs() < 1e-9, "{half}");
        assert!(pool.blend(2, 1000, 5.0, 0.998) > 4.9);
        // Merging another pool adds its counts; the newest scores of a refit are added once.
        let mut other = ScorePool::default();
        other.add_newest(&[vec![], vec![1.0; 3], vec![], vec![], vec![], vec![]], 2);
        let mut merged = pool.clone();
        merged.merge(&other);
        assert_eq!(
            (merged.targets[1].total(), merged.targets[2].total()),
            (2.0, 150.0)
        );
        // Another target's pool is empty.
        assert_eq!(pool.blend(1, 3, 5.0, 0.998), 5.0);
        assert_eq!(pool.blend(9, 3, 5.0, 0.998), 5.0);
    }

    #[test]
    fn a_fits_peak_ratios_are_pooled_once_and_an_old_pool_loads_without_them() {
        let mut pool = ScorePool::default();
        let fit = crate::model::ForwardScores {
            peaks: std::array::from_fn(|s| {
                if s == 2 {
                    (2..10).map(|age| (age, 1.0 + age as f64 / 100.0)).collect()
                } else {
                    Vec::new()
                }
            }),
            runs: 10,
            ..crate::model::ForwardScores::default()
        };
        // Refitted after 3 new runs: the runs with 7, 8 and 9 earlier runs are new.
        fit.add_to(&mut pool, 3);
        assert_eq!(pool.peaks[2].total(), 3.0);
        assert_eq!(pool.peak_quantile(2, 0.5), None, "too few to answer");
        for _ in 0..40 {
            fit.add_to(&mut pool, 3);
        }
        let q = pool.peak_quantile(2, 1.0).expect("pooled");
        assert!((q / 1.09 - 1.0).abs() < 0.03, "{q}");
        let mut merged = ScorePool::default();
        merged.merge(&pool);
        assert_eq!(merged.peaks[2].total(), 123.0);
        // A pool written before peak ratios existed.
        let mut old = serde_json::to_value(ScorePool::default()).expect("encode");
        old.as_object_mut().expect("an object").remove("peaks");
        let loaded: ScorePool = serde_json::from_value(old).expect("an old pool loads");
        assert_eq!(loaded.peaks[2].total(), 0.0);
    }
}
