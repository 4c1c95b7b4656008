//! The one percentile of the workspace: the broker's per-run CPU p50/p95, the controller's p90 of a predicted
//! profile, the trace converters, the simulator and the benchmarks all use [`percentile`].
//!
//! Definition: nearest rank (the smallest sample with at least `q` of the samples at or below it), not linear
//! interpolation. It always answers a value that was observed, so a CPU p95 is a load the task really ran at and a
//! latency p99 is a run that really took that long; it is what most of these call sites already computed. Not the
//! histogram's estimate ([`crate::histogram`]), which answers from decayed buckets, not from the samples.

/// The `q` quantile (`q` in 0..=1; outside is clamped) of `values` by nearest rank: the value at rank
/// `ceil(q * n)` (at least 1) of the `n` values sorted, so `q = 0` is the smallest and `q = 1` the largest.
/// NaN values are no reading and are left out; `None` when no value is left, or when `q` is NaN.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    // The tolerance keeps a rank that is whole on paper whole in floating point (0.07 * 100 is 7.000000000000001).
    let rank = (q.clamp(0.0, 1.0) * n as f64 - 1e-9).ceil() as usize;
    let i = rank.clamp(1, n) - 1;
    let (_, x, _) = v.select_nth_unstable_by(i, f64::total_cmp);
    Some(*x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_no_percentile() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[f64::NAN, f64::NAN], 0.5), None);
    }

    #[test]
    fn one_value_is_every_percentile() {
        for q in [0.0, 0.01, 0.5, 0.95, 1.0] {
            assert_eq!(percentile(&[7.5], q), Some(7.5), "q {q}");
        }
    }

    #[test]
    fn nearest_rank_of_one_to_ten() {
        let v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.1), Some(1.0));
        assert_eq!(percentile(&v, 0.11), Some(2.0));
        // An even count: the lower of the two middle values, no average of them.
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v, 0.95), Some(10.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
    }

    #[test]
    fn whole_ranks_survive_floating_point() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        for p in 1..=100 {
            let q = f64::from(p) / 100.0;
            assert_eq!(percentile(&v, q), Some(f64::from(p)), "q {q}");
        }
        assert_eq!(percentile(&v, 0.07), Some(7.0));
    }

    #[test]
    fn q_outside_zero_to_one_is_clamped_and_nan_q_has_no_answer() {
        let v = [3.0, 1.0, 2.0];
        assert_eq!(percentile(&v, -1.0), Some(1.0));
        assert_eq!(percentile(&v, 2.0), Some(3.0));
        assert_eq!(percentile(&v, f64::NAN), None);
    }

    #[test]
    fn nan_values_are_left_out_and_infinities_kept() {
        let v = [f64::NAN, 4.0, 1.0, f64::NAN, 2.0, 3.0];
        assert_eq!(percentile(&v, 0.5), Some(2.0));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        let inf = [1.0, f64::INFINITY, f64::NEG_INFINITY];
        assert_eq!(percentile(&inf, 0.0), Some(f64::NEG_INFINITY));
        assert_eq!(percentile(&inf, 1.0), Some(f64::INFINITY));
    }

    #[test]
    fn input_is_left_as_it_was() {
        let v = [3.0, 1.0, 2.0];
        assert_eq!(percentile(&v, 0.5), Some(2.0));
        assert_eq!(v, [3.0, 1.0, 2.0]);
    }
}
