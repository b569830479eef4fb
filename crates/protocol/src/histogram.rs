//! The one latency histogram scheme used everywhere in Sightline.
//!
//! Log-bucketed in the manner of DDSketch: a positive value `v` lands in bucket
//! `ceil(log_γ(v))` with `γ = (1 + α) / (1 − α)`, and every bucket is reported by a
//! representative that is within a relative error `α` of every value in it. With
//! `α = 1 %` any quantile is within 1 % of the exact (nearest-rank) quantile, which
//! leaves room under the 2 % bound promised to users.
//!
//! Histograms merge by adding bucket counts, so windows, agents and collectors can
//! combine them in any order — in Rust with [`Histogram::merge`], and in storage as one
//! compact blob per window ([`encode_buckets`], [`add_encoded`], [`merge_encoded`]).

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

/// First byte of a fixed-width bucket list (format 1): a big-endian `u16` bucket count,
/// then per bucket a big-endian `u16` code and `u64` count. Only SQL writes it (the collector's migration that turned bucket
/// rows into blobs); decoders read both formats.
pub const ENCODING_FIXED: u8 = 1;

/// Bytes per `(bucket, count)` pair in format 1.
pub const FIXED_PAIR_LEN: usize = 10;

/// First byte of a varint bucket list (format 2), what [`encode_buckets`] writes.
pub const ENCODING_VARINT: u8 = 2;

/// Largest bucket code: [`MAX_BUCKET`] + 2.
const MAX_CODE: u16 = MAX_BUCKET as u16 + 2;

/// The stored code of bucket `index`: 0 for [`ZERO_BUCKET`], `index + 2` for the indexes
/// the scheme produces (`-1..=MAX_BUCKET`), so codes fit a `u16` and sort as indexes do.
fn bucket_code(index: i32) -> Option<u16> {
    if index == ZERO_BUCKET {
        return Some(0);
    }
    if !(-1..=MAX_BUCKET).contains(&index) {
        return None;
    }
    u16::try_from(index + 2).ok()
}

fn code_bucket(code: u16) -> i32 {
    if code == 0 {
        ZERO_BUCKET
    } else {
        i32::from(code) - 2
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one LEB128 varint at `*at`; `None` when it is cut off or longer than a `u64`.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        let part = u64::from(byte & 0x7f);
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Encodes sparse bucket counts as stored by the collector, one blob per window:
///
/// ```text
/// 0x02 (format 2), the number of buckets that follow (LEB128 varint), then per non-empty
/// bucket in ascending index order:
///     code delta (LEB128 varint; the code is 0 for ZERO_BUCKET, else index + 2, and the
///                 delta is from the previous bucket's code, or from 0 for the first)
///     count      (LEB128 varint)
/// ```
///
/// About 3 bytes a bucket: an hour of one route's latencies is a few hundred bytes. Empty
/// buckets are left out. A blob says where it ends, so blobs concatenated (SQL's
/// `group_concat(hist, '')`) read back as their sum ([`EncodedSum::add_concatenated`]).
/// Decoders also read format 1 (fixed width, [`ENCODING_FIXED`]), which SQL can build:
/// `unhex('01' || printf('%04X', count(*)) || group_concat(printf('%04X%016X', code,
/// count), '' ORDER BY bucket))`.
pub fn encode_buckets(buckets: &BTreeMap<i32, u64>) -> Result<Vec<u8>, HistogramError> {
    let present = buckets.values().filter(|&&n| n > 0).count();
    let mut out = Vec::with_capacity(2 + present * 3);
    out.push(ENCODING_VARINT);
    put_varint(&mut out, present as u64);
    let mut previous = 0u16;
    for (&index, &count) in buckets {
        if count == 0 {
            continue;
        }
        let code = bucket_code(index).ok_or(HistogramError::BucketOutOfRange(index))?;
        put_varint(&mut out, u64::from(code - previous));
        put_varint(&mut out, count);
        previous = code;
    }
    Ok(out)
}

/// Parses the blob of either format that starts at `*at` and appends its buckets to `out`
/// as `(code, count)`, checking all of it: a known format, a bucket count no larger than
/// the number of codes, whole pairs, codes strictly ascending and in range — so a decode
/// is bounded whatever the input. Empty buckets are dropped.
fn parse_one(
    bytes: &[u8],
    at: &mut usize,
    out: &mut Vec<(u16, u64)>,
) -> Result<(), HistogramError> {
    let bad = HistogramError::BadEncoding;
    let mut previous: Option<u16> = None;
    let mut push = |code: u64, count: u64| {
        let code = u16::try_from(code)
            .ok()
            .filter(|&c| c <= MAX_CODE)
            .ok_or(bad("bucket code out of range"))?;
        if previous.is_some_and(|p| p >= code) {
            return Err(bad("buckets out of order"));
        }
        previous = Some(code);
        if count > 0 {
            out.push((code, count));
        }
        Ok(())
    };
    let format = *bytes.get(*at).ok_or(bad("missing format"))?;
    *at += 1;
    let too_many = |n: u64| n > u64::from(MAX_CODE) + 1;
    match format {
        ENCODING_VARINT => {
            let n = get_varint(bytes, at).ok_or(bad("bad varint"))?;
            if too_many(n) {
                return Err(bad("more buckets than codes"));
            }
            let mut code = 0u64;
            for _ in 0..n {
                let delta = get_varint(bytes, at).ok_or(bad("bad varint"))?;
                let count = get_varint(bytes, at).ok_or(bad("truncated pair"))?;
                code = code.saturating_add(delta);
                push(code, count)?;
            }
            Ok(())
        }
        ENCODING_FIXED => {
            let n = match bytes.get(*at..*at + 2) {
                Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
                _ => return Err(bad("truncated count")),
            };
            *at += 2;
            if too_many(n as u64) {
                return Err(bad("more buckets than codes"));
            }
            let body = bytes
                .get(*at..*at + n * FIXED_PAIR_LEN)
                .ok_or(bad("truncated pair"))?;
            *at += body.len();
            for pair in body.chunks_exact(FIXED_PAIR_LEN) {
                let mut count = [0u8; 8];
                count.copy_from_slice(&pair[2..]);
                push(
                    u64::from(u16::from_be_bytes([pair[0], pair[1]])),
                    u64::from_be_bytes(count),
                )?;
            }
            Ok(())
        }
        _ => Err(bad("unknown format")),
    }
}

/// Parses exactly one blob (an empty slice reads as an empty histogram) into `out`.
fn parse_encoded(bytes: &[u8], out: &mut Vec<(u16, u64)>) -> Result<(), HistogramError> {
    out.clear();
    if bytes.is_empty() {
        return Ok(());
    }
    let mut at = 0;
    parse_one(bytes, &mut at, out)?;
    if at != bytes.len() {
        return Err(HistogramError::BadEncoding("bytes after the histogram"));
    }
    Ok(())
}

/// Adds the buckets of an encoded blob into `into` (saturating). A corrupt blob is an
/// error and leaves `into` unchanged.
pub fn add_encoded(into: &mut BTreeMap<i32, u64>, bytes: &[u8]) -> Result<(), HistogramError> {
    let mut pairs = Vec::new();
    parse_encoded(bytes, &mut pairs)?;
    for (code, count) in pairs {
        let slot = into.entry(code_bucket(code)).or_insert(0);
        *slot = slot.saturating_add(count);
    }
    Ok(())
}

/// The sum of many encoded blobs, kept dense by bucket code: adding a blob is one pass
/// over its pairs with no map lookups, which is what a read over thousands of windows
/// needs. Grows only to the largest code seen (latencies in µs stay under ~1,000 codes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedSum {
    counts: Vec<u64>,
    /// Reused parse buffer.
    scratch: Vec<(u16, u64)>,
}

impl EncodedSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the buckets of one blob (saturating). A corrupt blob is an error and adds
    /// nothing.
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        parse_encoded(bytes, &mut self.scratch)?;
        self.add_scratch();
        Ok(())
    }

    /// Adds every blob of a concatenation of blobs (an empty slice: none). A corrupt one
    /// is an error and adds nothing.
    pub fn add_concatenated(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        self.scratch.clear();
        let mut at = 0;
        while at < bytes.len() {
            parse_one(bytes, &mut at, &mut self.scratch)?;
        }
        self.add_scratch();
        Ok(())
    }

    fn add_scratch(&mut self) {
        let needed = self
            .scratch
            .iter()
            .map(|&(code, _)| usize::from(code) + 1)
            .max()
            .unwrap_or(0);
        if needed > self.counts.len() {
            self.counts.resize(needed, 0);
        }
        for &(code, count) in &self.scratch {
            let slot = &mut self.counts[usize::from(code)];
            *slot = slot.saturating_add(count);
        }
    }

    /// Non-empty `(bucket index, count)` pairs in ascending index order, as
    /// [`quantile_of`] takes them.
    pub fn pairs(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        (0u16..)
            .zip(&self.counts)
            .filter(|&(_, &n)| n > 0)
            .map(|(code, &n)| (code_bucket(code), n))
    }
}

/// Decodes a blob written by [`encode_buckets`].
pub fn decode_buckets(bytes: &[u8]) -> Result<BTreeMap<i32, u64>, HistogramError> {
    let mut buckets = BTreeMap::new();
    add_encoded(&mut buckets, bytes)?;
    Ok(buckets)
}

/// `stored` with `add` merged in, encoded as one blob: what a writer puts back after a
/// read-modify-write of one window's blob. `stored` may also be blobs side by side (a
/// `group_concat` of rows, as a rollup built in SQL holds them); they are added up first.
pub fn merge_encoded(stored: &[u8], add: &BTreeMap<i32, u64>) -> Result<Vec<u8>, HistogramError> {
    let mut sum = EncodedSum::new();
    sum.add_concatenated(stored)?;
    let mut merged: BTreeMap<i32, u64> = sum.pairs().collect();
    for (&index, &count) in add {
        let slot = merged.entry(index).or_insert(0);
        *slot = slot.saturating_add(count);
    }
    encode_buckets(&merged)
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
    /// An encoded bucket list that [`encode_buckets`] cannot have written.
    BadEncoding(&'static str),
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
            HistogramError::BadEncoding(why) => write!(f, "encoded histogram is corrupt: {why}"),
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

    fn recorded(values: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record(v);
        }
        h
    }

    proptest! {
        #[test]
        fn merge_of_encoded_equals_encode_of_merged(
            a in prop::collection::vec(0u64..u64::MAX / 4, 0..300),
            b in prop::collection::vec(0u64..10_000_000, 0..300),
            q in 0.0f64..=1.0,
        ) {
            let (ha, hb) = (recorded(&a), recorded(&b));
            let mut merged = ha.clone();
            merged.merge(&hb);
            let stored = encode_buckets(&ha.buckets).expect("encode a");
            let by_blob = merge_encoded(&stored, &hb.buckets).expect("merge");
            prop_assert_eq!(&by_blob, &encode_buckets(&merged.buckets).expect("encode merged"));
            // Adding both blobs into one map (what a read does) gives the same buckets,
            // and so the same quantiles.
            let mut read = BTreeMap::new();
            add_encoded(&mut read, &stored).expect("add a");
            add_encoded(&mut read, &encode_buckets(&hb.buckets).expect("encode b")).expect("add b");
            prop_assert_eq!(&read, &merged.buckets);
            prop_assert_eq!(
                quantile_of(read.iter().map(|(&i, &n)| (i, n)), q),
                quantile_of(merged.buckets.iter().map(|(&i, &n)| (i, n)), q)
            );
            // Concatenated blobs (what SQL's group_concat returns) read as their sum, the
            // fixed format included.
            let fixed_b: Vec<(u16, u64)> = hb
                .buckets
                .iter()
                .map(|(&i, &n)| (bucket_code(i).expect("in range"), n))
                .collect();
            let mut concatenated = stored.clone();
            concatenated.extend(fixed(&fixed_b));
            concatenated.extend(encode_buckets(&BTreeMap::new()).expect("empty"));
            let mut sum = EncodedSum::new();
            sum.add_concatenated(&concatenated).expect("concatenated");
            prop_assert_eq!(sum.pairs().collect::<BTreeMap<_, _>>(), merged.buckets.clone());
            // As one blob, a concatenation has bytes after its end.
            prop_assert!(EncodedSum::new().add(&concatenated).is_err());
            let mut sum = EncodedSum::new();
            sum.add(&stored).expect("sum a");
            sum.add(&encode_buckets(&hb.buckets).expect("encode b")).expect("sum b");
            prop_assert_eq!(sum.pairs().collect::<BTreeMap<_, _>>(), merged.buckets.clone());
            prop_assert_eq!(decode_buckets(&by_blob).expect("decode"), merged.buckets);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            versioned in any::<u8>(),
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            // Mostly past the version check, so the pair checks are what is exercised.
            let bytes: Vec<u8> = [Some(ENCODING_VARINT), Some(ENCODING_FIXED), None][usize::from(versioned) % 3]
                .into_iter()
                .chain(tail)
                .collect();
            if let Ok(buckets) = decode_buckets(&bytes) {
                // Whatever decodes re-encodes to a valid blob.
                let again = encode_buckets(&buckets).expect("re-encode");
                prop_assert_eq!(decode_buckets(&again).expect("decode"), buckets);
            }
        }
    }

    /// Format 1 as the collector's migration builds it in SQL.
    fn fixed(pairs: &[(u16, u64)]) -> Vec<u8> {
        let mut out = vec![ENCODING_FIXED];
        out.extend_from_slice(&(pairs.len() as u16).to_be_bytes());
        for (code, count) in pairs {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    #[test]
    fn both_formats_decode_to_the_same_buckets() {
        let h = recorded(&[0, 1, 1, 3, 1_000_000]);
        let three = bucket_index(3);
        let million = bucket_index(1_000_000);
        let expected = BTreeMap::from([(ZERO_BUCKET, 1), (0, 2), (three, 1), (million, 1)]);
        assert_eq!(h.buckets, expected);
        // Codes: zero bucket → 0, index i → i + 2, stored as deltas.
        let varint = encode_buckets(&h.buckets).unwrap();
        let (c3, cm) = (three as u8 + 2, million as u16 + 2);
        let mut want = vec![ENCODING_VARINT, 4, 0, 1, 2, 2, c3 - 2, 1];
        put_varint(&mut want, u64::from(cm - u16::from(c3)));
        want.push(1);
        assert_eq!(varint, want);
        let sql = fixed(&[(0, 1), (2, 2), (u16::from(c3), 1), (cm, 1)]);
        assert_eq!(decode_buckets(&sql).unwrap(), expected);
        assert_eq!(decode_buckets(&varint).unwrap(), expected);
        // Merging into a format-1 blob writes format 2.
        let merged = merge_encoded(&sql, &BTreeMap::from([(0, 1)])).unwrap();
        assert_eq!(merged[0], ENCODING_VARINT);
        assert_eq!(decode_buckets(&merged).unwrap()[&0], 3);
        assert_eq!(
            encode_buckets(&BTreeMap::new()).unwrap(),
            [ENCODING_VARINT, 0]
        );
        for empty in [&[][..], &[ENCODING_VARINT, 0], &[ENCODING_FIXED, 0, 0]] {
            assert_eq!(decode_buckets(empty).unwrap(), BTreeMap::new());
        }
        // Counts up to u64::MAX survive.
        let huge = BTreeMap::from([(MAX_BUCKET, u64::MAX)]);
        assert_eq!(
            decode_buckets(&encode_buckets(&huge).unwrap()).unwrap(),
            huge
        );
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let bad = |b: &[u8]| matches!(decode_buckets(b), Err(HistogramError::BadEncoding(_)));
        let blob = encode_buckets(&recorded(&[5, 500, 50_000]).buckets).unwrap();
        assert!(bad(&blob[..blob.len() - 1]), "truncated varint pair");
        assert!(bad(&[ENCODING_VARINT]), "no bucket count");
        assert!(bad(&[ENCODING_VARINT, 1, 0x80]), "cut-off varint");
        let mut long = vec![ENCODING_VARINT, 1];
        long.extend([0xff; 9]);
        long.extend([0x7f, 1]);
        assert!(bad(&long), "varint past 64 bits");
        assert!(bad(&[ENCODING_VARINT, 2, 5, 1, 0, 1]), "repeated code");
        assert!(
            bad(&[ENCODING_VARINT, 1, 0xff, 0x7f, 1]),
            "code out of range"
        );
        assert!(
            bad(&[ENCODING_VARINT, 0xff, 0x7f]),
            "more buckets than codes"
        );
        assert!(bad(&[ENCODING_VARINT, 2, 5, 1]), "fewer buckets than said");
        assert!(bad(&[ENCODING_VARINT, 0, 0]), "bytes after the histogram");
        assert!(bad(&[3]), "unknown format");
        assert!(bad(&[ENCODING_FIXED, 0]), "cut-off fixed count");
        let sql = fixed(&[(10, 1), (20, 1)]);
        assert!(bad(&sql[..sql.len() - 1]), "truncated fixed pair");
        assert!(bad(&fixed(&[(20, 1), (10, 1)])), "out of order");
        assert!(bad(&fixed(&[(u16::MAX, 1)])), "fixed code out of range");
        // A failed add leaves the target as it was.
        let far = fixed(&[(10, 1), (u16::MAX, 1)]);
        let mut into = BTreeMap::from([(7, 1)]);
        assert!(add_encoded(&mut into, &far).is_err());
        assert_eq!(into, BTreeMap::from([(7, 1)]));
        let mut sum = EncodedSum::new();
        assert!(sum.add(&far).is_err());
        let good = encode_buckets(&BTreeMap::from([(7, 1)])).unwrap();
        assert!(sum.add_concatenated(&[good.clone(), far].concat()).is_err());
        assert!(sum.add_concatenated(&good[..good.len() - 1]).is_err());
        assert_eq!(sum.pairs().count(), 0);
        assert_eq!(
            encode_buckets(&BTreeMap::from([(MAX_BUCKET + 1, 1)])),
            Err(HistogramError::BucketOutOfRange(MAX_BUCKET + 1))
        );
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
