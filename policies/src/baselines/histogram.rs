//! A decaying histogram with exponentially growing buckets, as VPA keeps.

/// Bucket `0` holds zero; bucket `b >= 1` holds `[g^(b-1), g^b)`, with
/// `g = 1.05`. A sample at time `t` weighs `2^((t - ref) / half_life)`, so
/// older samples count for less; weights are renormalised before they grow
/// too large.
#[derive(Debug, Clone)]
pub struct DecayingHistogram {
    weights: Vec<f64>,
    half_life_ms: u64,
    reference_ms: u64,
    growth_ln: f64,
}

const GROWTH: f64 = 1.05;

impl DecayingHistogram {
    /// An empty histogram; `half_life_ms` must be positive.
    pub fn new(half_life_ms: u64) -> Self {
        DecayingHistogram {
            weights: Vec::new(),
            half_life_ms: half_life_ms.max(1),
            reference_ms: 0,
            growth_ln: GROWTH.ln(),
        }
    }

    fn bucket(&self, value: u64) -> usize {
        if value == 0 {
            0
        } else {
            // value >= 1 so ln >= 0; the cast saturates on absurd inputs.
            ((value as f64).ln() / self.growth_ln).floor() as usize + 1
        }
    }

    fn bucket_top(&self, b: usize) -> u64 {
        if b == 0 { 0 } else { (self.growth_ln * b as f64).exp().ceil() as u64 }
    }

    /// Add a sample of `value` seen at `time_ms`.
    pub fn add(&mut self, value: u64, time_ms: u64) {
        let mut exponent = time_ms.saturating_sub(self.reference_ms) as f64 / self.half_life_ms as f64;
        if exponent > 40.0 {
            // Move the reference forward and scale the old weights down.
            let scale = (-exponent).exp2();
            for w in &mut self.weights {
                *w *= scale;
            }
            self.reference_ms = time_ms;
            exponent = 0.0;
        }
        let b = self.bucket(value);
        if self.weights.len() <= b {
            self.weights.resize(b + 1, 0.0);
        }
        self.weights[b] += exponent.exp2();
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.weights.iter().all(|w| *w <= 0.0)
    }

    /// The top of the bucket where the cumulative weight reaches `p` % of the
    /// total; `None` when empty.
    pub fn percentile(&self, p: u32) -> Option<u64> {
        let total: f64 = self.weights.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let want = total * f64::from(p.min(100)) / 100.0;
        let mut acc = 0.0;
        for (b, w) in self.weights.iter().enumerate() {
            acc += w;
            if acc >= want && *w > 0.0 {
                return Some(self.bucket_top(b));
            }
        }
        self.weights.iter().rposition(|w| *w > 0.0).map(|b| self.bucket_top(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_within_a_bucket() {
        let mut h = DecayingHistogram::new(86_400_000);
        for v in 1..=100u64 {
            h.add(v * 10, 0);
        }
        let p90 = h.percentile(90).unwrap_or(0);
        assert!((900..=950).contains(&p90), "p90 {p90}");
        assert_eq!(DecayingHistogram::new(1).percentile(90), None);
    }

    #[test]
    fn old_samples_decay() {
        let mut h = DecayingHistogram::new(1_000);
        for _ in 0..100 {
            h.add(1_000, 0);
        }
        // Ten half-lives later one sample outweighs the hundred old ones.
        h.add(10, 10_000);
        assert!(h.percentile(50).unwrap_or(0) <= 11);
        // Renormalisation keeps working far in the future.
        h.add(10, 1_000_000);
        assert!(!h.is_empty());
    }
}
