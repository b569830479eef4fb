//! The one latency histogram scheme used everywhere in Sightline.
//!
//! Log-bucketed in the manner of DDSketch: a positive value `v` lands in bucket
//! `ceil(log_γ(v))` with `γ = (1 + α) / (1 − α)`, and every bucket is reported by a
//! representative that is within a relative error `α` of every value in it. With
//! `α = 1 %` any quantile is within 1 % of the exact (nearest-rank) quantile, which
//! leaves room under the 2 % bound promised to users.
//!
//! Histograms merge by adding bucket counts, so windows, agents and collectors can
//! combine them in any order — in Rust with [`Histogram::merge`] and in SQL with a
//! `GROUP BY bucket` / `SUM(count)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Relative accuracy of every bucket representative.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// `γ = (1 + α) / (1 − α)`.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Bucket index reserved for the value zero (a zero-length request).
pub const ZERO_BUCKET: i32 = i32::MIN;

/// Largest bucket index the scheme produces: values are clamped to `u64::MAX`
/// microseconds long before this matters, and decoders reject anything larger.
pub const MAX_BUCKET: i32 = 2_300;

/// Index of the bucket holding `value` (> 0).
pub fn bucket_index(value: u64) -> i32 {
    if value == 0 {
        return ZERO_BUCKET;
    }
    // `ln` costs a few nanoseconds; exactness at bucket edges is not needed because the
    // representative of either neighbouring bucket is within α of the value.
    ((value as f64).ln() / GAMMA.ln()).ceil() as i32
}

/// The value reported for every member of bucket `index`: the point whose relative
/// distance to both bucket edges is `α`.
pub fn bucket_value(index: i32) -> f64 {
    if index == ZERO_BUCKET {
        return 0.0;
    }
    2.0 * GAMMA.powi(index) / (GAMMA + 1.0)
}

/// A mergeable latency histogram of non-negative integer values (Sightline records
/// microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Number of recorded values.
    pub count: u64,
    /// Sum of recorded values (saturating).
    pub sum: u64,
    /// Smallest recorded value (0 when empty).
    pub min: u64,
    /// Largest recorded value (0 when empty).
    pub max: u64,
    /// Sparse bucket counts, `index → count`, serialised as `[[index, count], …]`.
    #[serde(with = "pairs")]
    pub buckets: BTreeMap<i32, u64>,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `n` occurrences of `value`.
    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count = self.count.saturating_add(n);
        self.sum = self.sum.saturating_add(value.saturating_mul(n));
        *self.buckets.entry(bucket_index(value)).or_insert(0) += n;
    }

    /// Adds every bucket of `other` into `self`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count = self.count.saturating_add(other.count);
        self.sum = self.sum.saturating_add(other.sum);
        for (&index, &n) in &other.buckets {
            let slot = self.buckets.entry(index).or_insert(0);
            *slot = slot.saturating_add(n);
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Mean of the recorded values, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The `q`-quantile (`0 ≤ q ≤ 1`) by nearest rank, within [`RELATIVE_ACCURACY`]
    /// of the exact value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(self.buckets.iter().map(|(&i, &n)| (i, n)), q)
            .map(|v| v.clamp(self.min as f64, self.max as f64))
    }

    /// Checks the invariants a decoder must not trust blindly: bucket counts add up to
    /// `count`, indexes are in range, `min ≤ max`.
    pub fn validate(&self) -> Result<(), HistogramError> {
        let mut total: u64 = 0;
        for (&index, &n) in &self.buckets {
            if index != ZERO_BUCKET && !(-1..=MAX_BUCKET).contains(&index) {
                return Err(HistogramError::BucketOutOfRange(index));
            }
            total = total.checked_add(n).ok_or(HistogramError::CountMismatch)?;
        }
        if total != self.count {
            return Err(HistogramError::CountMismatch);
        }
        if self.count > 0 && self.min > self.max {
            return Err(HistogramError::MinAboveMax);
        }
        Ok(())
    }
}

/// Nearest-rank quantile over `(bucket index, count)` pairs in ascending index order —
/// shared by [`Histogram::quantile`] and by stores that merge buckets in SQL.
pub fn quantile_of(buckets: impl IntoIterator<Item = (i32, u64)>, q: f64) -> Option<f64> {
    let buckets: Vec<(i32, u64)> = buckets.into_iter().filter(|&(_, n)| n > 0).collect();
    let total: u64 = buckets.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (index, n) in buckets {
        seen += n;
        if seen >= rank {
            return Some(bucket_value(index));
        }
    }
    None
}

/// A histogram that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistogramError {
    /// A bucket index the scheme never produces.
    BucketOutOfRange(i32),
    /// The bucket counts do not add up to `count`.
    CountMismatch,
    /// `min` is larger than `max`.
    MinAboveMax,
}

impl std::fmt::Display for HistogramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistogramError::BucketOutOfRange(i) => {
                write!(f, "histogram bucket {i} is out of range")
            }
            HistogramError::CountMismatch => {
                f.write_str("histogram bucket counts do not add up to its count")
            }
            HistogramError::MinAboveMax => f.write_str("histogram min is larger than its max"),
        }
    }
}

impl std::error::Error for HistogramError {}

mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(map.len()))?;
        for (index, n) in map {
            seq.serialize_element(&(index, n))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, u64>, D::Error> {
        let pairs = Vec::<(i32, u64)>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for (index, n) in pairs {
            let slot = map.entry(index).or_insert(0u64);
            *slot = slot.saturating_add(n);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(values: &[u64], q: f64) -> u64 {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    proptest! {
        #[test]
        fn quantiles_within_relative_error(
            values in prop::collection::vec(0u64..50_000_000, 1..2_000),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &v in &values { h.record(v); }
            let exact = exact_quantile(&values, q) as f64;
            let estimate = h.quantile(q).expect("non-empty");
            let error = if exact == 0.0 { estimate } else { (estimate - exact).abs() / exact };
            prop_assert!(error <= RELATIVE_ACCURACY + 1e-9, "q={q} exact={exact} estimate={estimate}");
        }

        #[test]
        fn merge_equals_recording_everything(
            a in prop::collection::vec(0u64..10_000_000, 0..500),
            b in prop::collection::vec(0u64..10_000_000, 0..500),
        ) {
            let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record(v); all.record(v); }
            for &v in &b { hb.record(v); all.record(v); }
            let mut merged = ha.clone();
            merged.merge(&hb);
            prop_assert_eq!(&merged, &all);
            // and in the other order
            hb.merge(&ha);
            prop_assert_eq!(&hb, &all);
            prop_assert!(all.validate().is_ok());
        }

        #[test]
        fn serde_round_trip(values in prop::collection::vec(0u64..u64::MAX / 4, 0..200)) {
            let mut h = Histogram::new();
            for &v in &values { h.record(v); }
            let json = serde_json::to_string(&h).expect("serialise");
            let back: Histogram = serde_json::from_str(&json).expect("deserialise");
            prop_assert_eq!(back, h);
        }
    }

    #[test]
    fn every_value_is_within_alpha_of_its_bucket() {
        for v in (1..10_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let rep = bucket_value(bucket_index(v));
            let err = (rep - v as f64).abs() / v as f64;
            assert!(err <= RELATIVE_ACCURACY + 1e-9, "v={v} rep={rep}");
            assert!(bucket_index(v) <= MAX_BUCKET);
        }
    }

    #[test]
    fn empty_and_zero() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        h.record(0);
        assert_eq!(h.quantile(0.99), Some(0.0));
        assert!(h.validate().is_ok());
    }

    #[test]
    fn validate_rejects_inconsistent_counts() {
        let mut h = Histogram::new();
        h.record(100);
        h.count = 5;
        assert_eq!(h.validate(), Err(HistogramError::CountMismatch));
        let mut h = Histogram::new();
        h.record(100);
        h.buckets.insert(MAX_BUCKET + 1, 1);
        h.count += 1;
        assert_eq!(
            h.validate(),
            Err(HistogramError::BucketOutOfRange(MAX_BUCKET + 1))
        );
    }
}
