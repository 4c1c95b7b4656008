//! The suite's figures from its samples: time-weighted slack, percentiles, rates from cumulative counters and
//! counts of limit changes. Pure functions, so the unit tests below check them without containers.

/// One sample of one container: seconds since the run started, then allocation and use of one resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the run started.
    pub t: f64,
    /// Allocation in force (cores or bytes).
    pub alloc: f64,
    /// What the container used (cores or bytes).
    pub used: f64,
}

/// Sums of `alloc * dt` and `min(used, alloc) * dt`: kept apart so runs and rounds can be pooled before the
/// ratio is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Weighted {
    /// Sum of allocation x seconds.
    pub alloc: f64,
    /// Sum of used (capped at the allocation) x seconds.
    pub used: f64,
}

impl Weighted {
    /// Adds another sum (another container, run or round).
    pub fn add(&mut self, o: Weighted) {
        self.alloc += o.alloc;
        self.used += o.used;
    }

    /// Slack: allocated minus used over allocated, time-weighted; `None` when nothing was allocated.
    pub fn slack(&self) -> Option<f64> {
        (self.alloc > 0.0).then(|| (self.alloc - self.used) / self.alloc)
    }
}

/// Time-weighted allocation and use of one container's samples. Each sample stands for the time since the
/// container's previous sample (samples come every ~250 ms but not exactly, and a slow `ctr` call can stretch
/// one interval); the first stands for `first_dt` seconds. Use above the allocation (a CPU counter read a little
/// late, memory charged just before a limit write) counts as the allocation: slack is never negative.
pub fn weigh(points: &[Point], first_dt: f64) -> Weighted {
    let mut w = Weighted::default();
    let mut prev: Option<f64> = None;
    for p in points {
        let dt = prev.map_or(first_dt, |t| (p.t - t).max(0.0));
        prev = Some(p.t);
        w.alloc += p.alloc * dt;
        w.used += p.used.min(p.alloc).max(0.0) * dt;
    }
    w
}

/// Nearest-rank percentile (`q` in 0..=1) of `v`; `None` for an empty slice.
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    predictor::percentile(v, q)
}

/// Cores used between two reads of a cumulative CPU counter in nanoseconds taken at `t0` and `t1` seconds.
pub fn cores(ns0: u64, t0: f64, ns1: u64, t1: f64) -> f64 {
    let dt = t1 - t0;
    if dt <= 0.0 {
        return 0.0;
    }
    ns1.saturating_sub(ns0) as f64 / 1e9 / dt
}

/// Mean, smallest and largest of `v`; `None` for an empty slice.
pub fn spread(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((v.iter().sum::<f64>() / v.len() as f64, lo, hi))
}

/// Per-round ratios `a[i] / b[i]` of two policies measured in the same rounds (pairs with a zero `b` dropped):
/// a round's load moves both, so the pair's ratio is steadier than the ratio of means.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect()
}

/// How many times a sequence of observed limit values changed (the first value is the start, not a change).
pub fn changes<T: PartialEq>(values: &[T]) -> usize {
    values.windows(2).filter(|w| w[0] != w[1]).count()
}

/// `a / b` as text, or `-` when `b` is zero (or either is unknown).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_paired_ratios() {
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[2.0, 4.0, 3.0]), Some((3.0, 2.0, 4.0)));
        assert_eq!(
            paired_ratios(&[2.0, 3.0, 1.0], &[4.0, 0.0, 2.0]),
            vec![0.5, 0.5]
        );
    }

    fn p(t: f64, alloc: f64, used: f64) -> Point {
        Point { t, alloc, used }
    }

    #[test]
    fn slack_is_weighted_by_time_not_by_sample_count() {
        // 1 s at 100 allocated / 50 used, then a 3 s gap at 100 / 100: by time 50 of 400 is unused (12.5%),
        // by sample count it would be 25%.
        let w = weigh(&[p(1.0, 100.0, 50.0), p(4.0, 100.0, 100.0)], 1.0);
        assert_eq!(w.alloc, 400.0);
        assert_eq!(w.used, 350.0);
        assert_eq!(w.slack(), Some(0.125));
    }

    #[test]
    fn use_above_the_allocation_counts_as_the_allocation() {
        let w = weigh(&[p(0.5, 1.0, 1.3), p(1.0, 1.0, 0.5)], 0.5);
        assert_eq!(w.slack(), Some(0.25));
    }

    #[test]
    fn pooled_slack_is_not_the_mean_of_slacks() {
        // A big idle container and a small busy one: pooled 990 of 1100 unused, not the mean of 99% and 0%.
        let mut all = weigh(&[p(1.0, 1000.0, 10.0)], 1.0);
        all.add(weigh(&[p(1.0, 100.0, 100.0)], 1.0));
        assert_eq!(all.slack(), Some(990.0 / 1100.0));
        assert_eq!(Weighted::default().slack(), None);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 0.99), Some(198.0));
        assert_eq!(percentile(&v, 0.5), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.99), None);
        // One slow request in a hundred is the p99; two are needed to move it past the fast ones.
        let mut v = vec![1.0; 99];
        v.push(500.0);
        assert_eq!(percentile(&v, 0.99), Some(1.0));
        v.push(500.0);
        assert_eq!(percentile(&v, 0.99), Some(500.0));
    }

    #[test]
    fn cores_from_a_cumulative_counter() {
        assert_eq!(cores(1_000_000_000, 10.0, 1_500_000_000, 10.5), 1.0);
        assert_eq!(cores(5, 1.0, 5, 1.0), 0.0);
        // A counter that went backwards (a new cgroup) is no use, not negative use.
        assert_eq!(cores(10, 1.0, 5, 2.0), 0.0);
    }

    #[test]
    fn limit_changes_count_transitions() {
        assert_eq!(changes::<i64>(&[]), 0);
        assert_eq!(changes(&[100_000, 100_000, 50_000, 50_000, 100_000]), 2);
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
    }
}
