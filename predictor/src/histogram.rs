//! A decaying histogram of a positive quantity: the baseline model of the VPA / Autopilot family.
//!
//! Buckets grow exponentially (each 0.2% wider than the previous, so a quantile is off by at most 0.2%) and are stored
//! sparsely, so one histogram covers bytes and cores alike. Each observation carries a weight that halves every
//! half-life of age, so recent runs dominate and the quantiles follow drift (VPA uses 24 h for CPU; we default to
//! 7 days because batch task types run less often than services).
//!
//! Limits: a quantile is returned as its bucket's upper edge (conservative by < 0.2%); values <= 0 share one bucket
//! that reads back as 0.

use serde::{Deserialize, Serialize};

/// Relative width of a bucket.
pub const BUCKET_RATIO: f64 = 1.002;
const ZERO_BUCKET: i32 = i32::MIN;

/// Sparse exponential-bucket histogram with weighted observations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecayingHistogram {
    /// (bucket index, weight), sorted by index.
    buckets: Vec<(i32, f64)>,
    total: f64,
}

impl DecayingHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Weight of an observation `age_ms` old under a half-life of `half_life_ms` (1 for a fresh one).
    pub fn decay_weight(age_ms: u64, half_life_ms: u64) -> f64 {
        if half_life_ms == 0 {
            return 1.0;
        }
        0.5f64.powf(age_ms as f64 / half_life_ms as f64)
    }

    /// Adds `value` with `weight` (ignored unless finite and > 0).
    pub fn add(&mut self, value: f64, weight: f64) {
        if !(weight.is_finite() && weight > 0.0 && value.is_finite()) {
            return;
        }
        let idx = bucket_of(value);
        match self.buckets.binary_search_by_key(&idx, |&(i, _)| i) {
            Ok(pos) => self.buckets[pos].1 += weight,
            Err(pos) => self.buckets.insert(pos, (idx, weight)),
        }
        self.total += weight;
    }

    /// Total weight.
    pub fn total_weight(&self) -> f64 {
        self.total
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The weighted `q` quantile (0..=1), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.buckets.is_empty() {
            return None;
        }
        let target = q.clamp(0.0, 1.0) * self.total;
        let mut acc = 0.0;
        for &(idx, w) in &self.buckets {
            acc += w;
            if acc >= target {
                return Some(upper_edge(idx));
            }
        }
        self.buckets.last().map(|&(idx, _)| upper_edge(idx))
    }
}

fn bucket_of(value: f64) -> i32 {
    if value <= 1e-12 {
        return ZERO_BUCKET;
    }
    (value.ln() / BUCKET_RATIO.ln()).floor() as i32
}

fn upper_edge(idx: i32) -> f64 {
    if idx == ZERO_BUCKET {
        return 0.0;
    }
    BUCKET_RATIO.powi(idx + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_uniform_values_within_one_percent() {
        let mut h = DecayingHistogram::new();
        for v in 1..=1000 {
            h.add(f64::from(v), 1.0);
        }
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = h.quantile(q).expect("non-empty");
            assert!((got / want - 1.0).abs() < 0.003, "q{q}: {got} vs {want}");
            assert!(got >= want * 0.999, "upper edge is conservative");
        }
    }

    #[test]
    fn decay_makes_recent_values_dominate() {
        let mut h = DecayingHistogram::new();
        let half_life = 1_000;
        // 100 old runs at 10, 100 recent runs at 20; old ones are 5 half-lives old (weight 1/32).
        for _ in 0..100 {
            h.add(10.0, DecayingHistogram::decay_weight(5_000, half_life));
            h.add(20.0, DecayingHistogram::decay_weight(0, half_life));
        }
        let median = h.quantile(0.5).expect("non-empty");
        assert!((median / 20.0 - 1.0).abs() < 0.003, "median {median}");
        assert!((DecayingHistogram::decay_weight(1_000, 1_000) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn zero_and_invalid_values() {
        let mut h = DecayingHistogram::new();
        assert!(h.quantile(0.5).is_none());
        h.add(0.0, 1.0);
        h.add(f64::NAN, 1.0);
        h.add(5.0, 0.0);
        assert_eq!(h.quantile(0.5), Some(0.0));
        assert!((h.total_weight() - 1.0).abs() < 1e-12);
    }
}
