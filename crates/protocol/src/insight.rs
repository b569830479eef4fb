//! Performance insight on the wire: per-route query and allocation histograms, per-query
//! fingerprint statistics, N+1 suspects, whole-request exemplars and heap samples.
//!
//! One [`InsightBatch`] rides along in every [`MetricBatch`](crate::MetricBatch) under
//! `insight`. Every windowed part is aligned like a `RouteWindow`, so the collector merges
//! them across instances by adding counts and histogram buckets. Query text is shipped
//! once per window per fingerprint ([`QueryWindow::sql`]); exemplars refer to it by
//! fingerprint, which keeps them compact.

use serde::{Deserialize, Serialize};

use crate::{Histogram, HistogramError, MAX_LABEL_LEN};

/// Longest normalised SQL statement the collector accepts, in bytes.
pub const MAX_SQL_LEN: usize = 4_096;

/// Most entries (spans and queries) one exemplar may carry.
pub const MAX_EXEMPLAR_ENTRIES: usize = 1_000;

/// Most exemplars, query windows, … one batch may carry in each list.
pub const MAX_INSIGHT_ITEMS: usize = 10_000;

/// Most calling routes one query window may name.
pub const MAX_QUERY_ROUTES: usize = 256;

/// Everything the insight part of the agent closed since the last upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsightBatch {
    /// Per route × method × window: query and allocation histograms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteInsight>,
    /// Per query fingerprint × window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<QueryWindow>,
    /// Per route × method × fingerprint × window: requests that repeated one statement
    /// shape at least the agent's threshold of times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub n_plus_one: Vec<NPlusOne>,
    /// Whole requests, with their waterfall.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplars: Vec<Exemplar>,
    /// Process heap samples (only when the counting allocator is installed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heap: Vec<HeapSample>,
}

impl InsightBatch {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && self.queries.is_empty()
            && self.n_plus_one.is_empty()
            && self.exemplars.is_empty()
            && self.heap.is_empty()
    }
}

/// Query and allocation figures of the requests of one route × method that finished in
/// one window. Each histogram has one value per request, so `queries.count` is the
/// request count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteInsight {
    /// Window start, unix seconds, a multiple of `window_secs`.
    pub start: i64,
    pub window_secs: u32,
    pub route: String,
    pub method: String,
    /// Queries per request.
    pub queries: Histogram,
    /// Time spent in queries per request, microseconds.
    pub query_us: Histogram,
    /// Allocations per request (empty when the counting allocator is not installed).
    #[serde(default)]
    pub allocs: Histogram,
    /// Bytes allocated per request (empty when the counting allocator is not installed).
    #[serde(default)]
    pub alloc_bytes: Histogram,
    /// Requests flagged as N+1.
    #[serde(default)]
    pub n_plus_one: u64,
}

/// One statement shape over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryWindow {
    pub start: i64,
    pub window_secs: u32,
    /// FNV-1a 64 of `sql`.
    pub fingerprint: u64,
    /// The normalised statement (literals replaced by `?`).
    pub sql: String,
    /// Latency of every execution, microseconds: count, total time, quantiles.
    pub latency: Histogram,
    /// Executions per calling route: `(route, method, count)`; executions outside any
    /// request are not attributed.
    #[serde(default)]
    pub routes: Vec<(String, String, u64)>,
}

/// Requests of one route × method in one window that ran one fingerprint at least the
/// threshold of times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NPlusOne {
    pub start: i64,
    pub window_secs: u32,
    pub route: String,
    pub method: String,
    pub fingerprint: u64,
    /// Flagged requests.
    pub requests: u64,
    /// Executions of the fingerprint summed over the flagged requests.
    pub total_repeats: u64,
    /// Most executions in one request.
    pub max_repeats: u64,
}

/// Why a request was shipped whole.
pub mod reason {
    /// Slower than the agent's threshold.
    pub const SLOW: u8 = 1;
    /// Answered 5xx or failed.
    pub const ERROR: u8 = 2;
    /// Flagged as N+1.
    pub const N_PLUS_ONE: u8 = 4;
    /// Picked by sampling.
    pub const SAMPLED: u8 = 8;
    /// Every reason bit.
    pub const ALL: u8 = SLOW | ERROR | N_PLUS_ONE | SAMPLED;
}

/// One request, shipped whole: the waterfall of its spans and queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exemplar {
    pub route: String,
    pub method: String,
    /// HTTP status (500 for a failed request without a response).
    pub status: u16,
    /// Start, unix milliseconds.
    pub start_ms: i64,
    pub duration_us: u64,
    /// Bit set of [`reason`] flags.
    pub reasons: u8,
    /// Queries the request ran (may exceed the entries kept).
    pub queries: u64,
    /// Time in queries, microseconds.
    pub query_us: u64,
    #[serde(default)]
    pub allocs: u64,
    #[serde(default)]
    pub alloc_bytes: u64,
    /// Entries not kept because of the per-exemplar bound.
    #[serde(default)]
    pub dropped_entries: u64,
    /// Spans and queries in start order.
    pub entries: Vec<Entry>,
}

/// A span or a query within an exemplar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `span` or `query`.
    pub kind: EntryKind,
    /// Span name, or the query's normalised SQL for queries.
    pub name: String,
    /// Query fingerprint (queries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
    /// Start, microseconds after the request started.
    pub offset_us: u64,
    pub duration_us: u64,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Span,
    Query,
}

/// Process heap at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapSample {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// Bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// Largest `live_bytes` sampled since the previous sample was shipped.
    pub peak_bytes: u64,
}

/// An insight section the collector must not store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsightError {
    /// A list is longer than [`MAX_INSIGHT_ITEMS`] (or an exemplar longer than
    /// [`MAX_EXEMPLAR_ENTRIES`], or a query names too many routes).
    TooMany(&'static str),
    /// A label or statement is empty or too long.
    BadLabel(&'static str),
    /// A window is not aligned or too long.
    BadWindow,
    /// A histogram is inconsistent.
    BadHistogram(HistogramError),
    /// Reason bits outside [`reason::ALL`], or a status outside 100–999.
    BadExemplar,
}

impl std::fmt::Display for InsightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsightError::TooMany(what) => write!(f, "insight: too many {what}"),
            InsightError::BadLabel(what) => write!(f, "insight: {what} is empty or too long"),
            InsightError::BadWindow => {
                f.write_str("insight: window_secs must be 1 to 86400 and start a multiple of it")
            }
            InsightError::BadHistogram(e) => write!(f, "insight: {e}"),
            InsightError::BadExemplar => f.write_str("insight: exemplar status or reasons invalid"),
        }
    }
}

impl std::error::Error for InsightError {}

fn label(value: &str, max: usize, which: &'static str) -> Result<(), InsightError> {
    if value.is_empty() || value.len() > max {
        return Err(InsightError::BadLabel(which));
    }
    Ok(())
}

fn window(start: i64, secs: u32) -> Result<(), InsightError> {
    if secs == 0 || secs > 86_400 || start.rem_euclid(i64::from(secs)) != 0 {
        return Err(InsightError::BadWindow);
    }
    Ok(())
}

fn histogram(h: &Histogram) -> Result<(), InsightError> {
    h.validate().map_err(InsightError::BadHistogram)
}

fn bounded<T>(list: &[T], max: usize, which: &'static str) -> Result<(), InsightError> {
    if list.len() > max {
        return Err(InsightError::TooMany(which));
    }
    Ok(())
}

impl InsightBatch {
    /// Checks everything the collector relies on before storing the section.
    pub fn validate(&self) -> Result<(), InsightError> {
        bounded(&self.routes, MAX_INSIGHT_ITEMS, "routes")?;
        bounded(&self.queries, MAX_INSIGHT_ITEMS, "queries")?;
        bounded(&self.n_plus_one, MAX_INSIGHT_ITEMS, "n_plus_one")?;
        bounded(&self.exemplars, MAX_INSIGHT_ITEMS, "exemplars")?;
        bounded(&self.heap, MAX_INSIGHT_ITEMS, "heap samples")?;
        for r in &self.routes {
            window(r.start, r.window_secs)?;
            label(&r.route, MAX_LABEL_LEN, "route")?;
            label(&r.method, MAX_LABEL_LEN, "method")?;
            for h in [&r.queries, &r.query_us, &r.allocs, &r.alloc_bytes] {
                histogram(h)?;
            }
        }
        for q in &self.queries {
            window(q.start, q.window_secs)?;
            label(&q.sql, MAX_SQL_LEN, "sql")?;
            histogram(&q.latency)?;
            bounded(&q.routes, MAX_QUERY_ROUTES, "query routes")?;
            for (route, method, _) in &q.routes {
                label(route, MAX_LABEL_LEN, "route")?;
                label(method, MAX_LABEL_LEN, "method")?;
            }
        }
        for n in &self.n_plus_one {
            window(n.start, n.window_secs)?;
            label(&n.route, MAX_LABEL_LEN, "route")?;
            label(&n.method, MAX_LABEL_LEN, "method")?;
        }
        for e in &self.exemplars {
            label(&e.route, MAX_LABEL_LEN, "route")?;
            label(&e.method, MAX_LABEL_LEN, "method")?;
            if !(100..=999).contains(&e.status) || e.reasons & !reason::ALL != 0 {
                return Err(InsightError::BadExemplar);
            }
            bounded(&e.entries, MAX_EXEMPLAR_ENTRIES, "exemplar entries")?;
            for entry in &e.entries {
                label(&entry.name, MAX_SQL_LEN, "entry name")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> InsightBatch {
        let mut h = Histogram::new();
        h.record(3);
        InsightBatch {
            routes: vec![RouteInsight {
                start: 1_700_000_000,
                window_secs: 10,
                route: "/threads/{id}".into(),
                method: "GET".into(),
                queries: h.clone(),
                query_us: h.clone(),
                allocs: h.clone(),
                alloc_bytes: h.clone(),
                n_plus_one: 1,
            }],
            queries: vec![QueryWindow {
                start: 1_700_000_000,
                window_secs: 10,
                fingerprint: 42,
                sql: "select ? from t".into(),
                latency: h.clone(),
                routes: vec![("/threads/{id}".into(), "GET".into(), 1)],
            }],
            n_plus_one: vec![NPlusOne {
                start: 1_700_000_000,
                window_secs: 10,
                route: "/threads/{id}".into(),
                method: "GET".into(),
                fingerprint: 42,
                requests: 1,
                total_repeats: 6,
                max_repeats: 6,
            }],
            exemplars: vec![Exemplar {
                route: "/threads/{id}".into(),
                method: "GET".into(),
                status: 200,
                start_ms: 1_700_000_000_123,
                duration_us: 5_000,
                reasons: reason::N_PLUS_ONE,
                queries: 1,
                query_us: 100,
                allocs: 10,
                alloc_bytes: 1_000,
                dropped_entries: 0,
                entries: vec![Entry {
                    kind: EntryKind::Query,
                    name: "select ? from t".into(),
                    fingerprint: Some(42),
                    offset_us: 10,
                    duration_us: 100,
                }],
            }],
            heap: vec![HeapSample {
                ts_ms: 1_700_000_000_000,
                live_bytes: 10,
                peak_bytes: 20,
            }],
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let b = sample();
        assert_eq!(b.validate(), Ok(()));
        let json = serde_json::to_string(&b).expect("serialise");
        let back: InsightBatch = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, b);
        assert!(InsightBatch::default().is_empty());
        assert_eq!(
            serde_json::to_string(&InsightBatch::default()).expect("json"),
            "{}"
        );
    }

    #[test]
    fn rejects_what_cannot_be_stored() {
        let mut b = sample();
        b.routes[0].start += 1;
        assert_eq!(b.validate(), Err(InsightError::BadWindow));
        let mut b = sample();
        b.queries[0].sql = "x".repeat(MAX_SQL_LEN + 1);
        assert_eq!(b.validate(), Err(InsightError::BadLabel("sql")));
        let mut b = sample();
        b.exemplars[0].reasons = 64;
        assert_eq!(b.validate(), Err(InsightError::BadExemplar));
        let mut b = sample();
        b.routes[0].allocs.count += 1;
        assert!(matches!(b.validate(), Err(InsightError::BadHistogram(_))));
        let mut b = sample();
        let entry = b.exemplars[0].entries[0].clone();
        b.exemplars[0].entries = vec![entry; MAX_EXEMPLAR_ENTRIES + 1];
        assert!(matches!(b.validate(), Err(InsightError::TooMany(_))));
    }
}
