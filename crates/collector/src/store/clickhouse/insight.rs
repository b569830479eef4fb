//! Performance insight on ClickHouse: the insight sections of metric batches, one insert
//! per table per group commit, folded by materialized views into every tier
//! (`migrations/clickhouse/0002_insight.sql`), and the [`InsightStore`] reads with the
//! SQLite backend's semantics (same slots, same day split, same sums and ordering).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::windows::{Buckets, Counts, Filter, Param, bind_all, rows_from, stored};
use super::{ClickHouseEvents, db};
use crate::insight::{
    ExemplarDetail, ExemplarSummary, HeapPoint, HeapSeries, InsightStore, NPlusOneRow, QueryTotals,
    RetentionConfig, RouteTotals, StorageReport, TableRows, Tier, WaterfallEntry, day_split, hex,
    reason_names,
};
use crate::store::MetricsIngest;
use crate::{Error, TimeRange};

#[cfg(test)]
#[path = "insight_tests.rs"]
mod tests;

/// The tiered insight tables (each `t` with `t_1m`, `t_1h` and `t_1d`), in the order the
/// storage report lists them, as SQLite's.
const TIERED: [&str; 5] = [
    "insight_routes",
    "query_windows",
    "query_routes",
    "n_plus_one",
    "heap_samples",
];

/// Every insight table retention prunes, with the tier whose retention it follows:
/// exemplars live as long as raw windows, statement texts as long as the day tier.
pub(super) fn pruned_tables() -> impl Iterator<Item = (String, Tier)> {
    Tier::ALL
        .into_iter()
        .flat_map(|tier| {
            TIERED
                .into_iter()
                .map(move |table| (format!("{table}{}", tier.route_suffix()), tier))
        })
        .chain([
            ("exemplars".to_owned(), Tier::Raw),
            ("query_fingerprints".to_owned(), Tier::Day),
        ])
}

/// The stable id of an exemplar: a 63-bit FNV-1a hash of what it is (project, instance,
/// request and waterfall). Every collector, and a retry of the same insert, computes the
/// same one, so copies collapse; 63 bits so it survives any signed column or cursor.
fn exemplar_id(
    project_id: u64,
    service: &str,
    instance: &str,
    e: &sightline_protocol::Exemplar,
    entries: &str,
) -> u64 {
    let key = format!(
        "{service}\0{instance}\0{}\0{}\0{}\0{}\0{}\0{}\0{entries}",
        e.route, e.method, e.status, e.start_ms, e.duration_us, e.reasons
    );
    super::events::event_key(project_id, &key)
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct RouteIn<'a> {
    project_id: u64,
    environment: &'a str,
    route: &'a str,
    method: &'a str,
    start: i64,
    secs: u32,
    request_count: u64,
    query_count: u64,
    query_time_us: u64,
    measured: u64,
    alloc_count: u64,
    alloc_byte_sum: u64,
    flagged: u64,
    q_buckets: Buckets<'a>,
    q_counts: Counts<'a>,
    qt_buckets: Buckets<'a>,
    qt_counts: Counts<'a>,
    a_buckets: Buckets<'a>,
    a_counts: Counts<'a>,
    ab_buckets: Buckets<'a>,
    ab_counts: Counts<'a>,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct QueryIn<'a> {
    project_id: u64,
    environment: &'a str,
    fingerprint: u64,
    start: i64,
    secs: u32,
    executions: u64,
    total_us: u64,
    fastest_us: u64,
    slowest_us: u64,
    buckets: Buckets<'a>,
    counts: Counts<'a>,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct QueryRouteIn<'a> {
    project_id: u64,
    environment: &'a str,
    fingerprint: u64,
    start: i64,
    secs: u32,
    route: &'a str,
    method: &'a str,
    executions: u64,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct NPlusOneIn<'a> {
    project_id: u64,
    environment: &'a str,
    route: &'a str,
    method: &'a str,
    fingerprint: u64,
    start: i64,
    secs: u32,
    flagged: u64,
    repeats: u64,
    most: u64,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct HeapIn<'a> {
    project_id: u64,
    environment: &'a str,
    service: &'a str,
    instance: &'a str,
    second: i64,
    live: u64,
    peak: u64,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct ExemplarIn<'a> {
    project_id: u64,
    id: u64,
    environment: &'a str,
    service: &'a str,
    instance: &'a str,
    route: &'a str,
    method: &'a str,
    status: u16,
    start_ms: i64,
    duration_us: u64,
    reasons: u8,
    queries: u64,
    query_us: u64,
    allocs: u64,
    alloc_bytes: u64,
    dropped_entries: u64,
    entries: String,
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct FingerprintIn<'a> {
    project_id: u64,
    fingerprint: u64,
    sql: &'a str,
    first_seen: i64,
    last_seen: i64,
}

/// Columns of [`ExemplarOut`], in its order.
const EXEMPLAR_COLUMNS: &str = "id, route, method, status, start_ms, duration_us, reasons,
    queries, query_us, allocs, alloc_bytes, instance";

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct ExemplarOut {
    id: u64,
    route: String,
    method: String,
    status: u16,
    start_ms: i64,
    duration_us: u64,
    reasons: u8,
    queries: u64,
    query_us: u64,
    allocs: u64,
    alloc_bytes: u64,
    instance: String,
}

impl ExemplarOut {
    fn summary(self) -> ExemplarSummary {
        ExemplarSummary {
            id: self.id,
            route: self.route,
            method: self.method,
            status: self.status,
            start_ms: self.start_ms,
            duration_ms: ms(self.duration_us),
            reasons: reason_names(self.reasons),
            queries: self.queries,
            query_ms: ms(self.query_us),
            allocs: self.allocs,
            alloc_bytes: self.alloc_bytes,
            instance: self.instance,
        }
    }
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct ExemplarDetailOut {
    summary: ExemplarOut,
    dropped_entries: u64,
    entries: String,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct QueryRow {
    fingerprint: u64,
    count: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
    hist: (Vec<i32>, Vec<u64>),
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct QueryRouteRow {
    fingerprint: u64,
    route: String,
    method: String,
    count: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct TextRow {
    fingerprint: u64,
    sql: String,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct RouteRow {
    route: String,
    method: String,
    requests: u64,
    queries: u64,
    query_us: u64,
    alloc_requests: u64,
    allocs: u64,
    alloc_bytes: u64,
    n_plus_one: u64,
    hists: [(Vec<i32>, Vec<u64>); 4],
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct RouteRequestsRow {
    route: String,
    method: String,
    requests: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct NPlusOneOut {
    route: String,
    method: String,
    fingerprint: u64,
    requests: u64,
    total_repeats: u64,
    max_repeats: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct HeapRow {
    service: String,
    instance: String,
    step: i64,
    live_bytes: u64,
    peak_bytes: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct TableSize {
    table: String,
    rows: u64,
    bytes: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A fingerprint as SQLite orders it: the same 64 bits, signed.
fn signed(fingerprint: u64) -> i64 {
    i64::from_ne_bytes(fingerprint.to_ne_bytes())
}

/// `sumMap`'s `(buckets, counts)` as merged pairs, empty buckets left out.
fn pairs((buckets, counts): &(Vec<i32>, Vec<u64>)) -> Vec<(i32, u64)> {
    buckets
        .iter()
        .copied()
        .zip(counts.iter().copied())
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The rows of one read: the tiered family's rows in `range`, whole days from the day
/// tier ([`rows_from`]), one project and optionally one environment.
fn tiered<'a>(
    family: &str,
    columns: &str,
    tier: Tier,
    project_id: u64,
    range: TimeRange,
    environment: Option<&'a str>,
    params: &mut Vec<Param<'a>>,
) -> String {
    let filter = Filter {
        project_id,
        environment,
        route: None,
    };
    rows_from(
        family,
        columns,
        tier,
        day_split(tier, range),
        filter,
        range,
        params,
    )
}

impl ClickHouseEvents {
    /// Stores the insight sections of `batches`: one insert per table, each row of a
    /// window rolled into every tier by the views, as SQLite's `write_insight` merges
    /// it (empty route and query windows skipped, statement texts and exemplars kept
    /// once). Not idempotent for windows: a retried commit adds them again, as it does
    /// the metric windows.
    pub(crate) async fn insert_insight(&self, batches: &[&MetricsIngest]) -> Result<(), Error> {
        let mut routes = Vec::new();
        let mut queries = Vec::new();
        let mut query_routes = Vec::new();
        let mut n_plus_one = Vec::new();
        let mut heap = Vec::new();
        let mut exemplars = Vec::new();
        // One text per statement shape and project: the latest sighting decides.
        let mut texts: BTreeMap<(u64, u64), FingerprintIn<'_>> = BTreeMap::new();
        for ingest in batches {
            let project_id = ingest.project_id;
            let agent = &ingest.batch.agent;
            let environment = crate::store::sqlite::stored_environment(agent);
            let insight = &ingest.batch.insight;
            for r in insight.routes.iter().filter(|r| !r.queries.is_empty()) {
                routes.push(RouteIn {
                    project_id,
                    environment,
                    route: &r.route,
                    method: &r.method,
                    start: r.start,
                    secs: r.window_secs,
                    request_count: stored(r.queries.count),
                    query_count: stored(r.queries.sum),
                    query_time_us: stored(r.query_us.sum),
                    measured: stored(r.allocs.count),
                    alloc_count: stored(r.allocs.sum),
                    alloc_byte_sum: stored(r.alloc_bytes.sum),
                    flagged: stored(r.n_plus_one),
                    q_buckets: Buckets(&r.queries.buckets),
                    q_counts: Counts(&r.queries.buckets),
                    qt_buckets: Buckets(&r.query_us.buckets),
                    qt_counts: Counts(&r.query_us.buckets),
                    a_buckets: Buckets(&r.allocs.buckets),
                    a_counts: Counts(&r.allocs.buckets),
                    ab_buckets: Buckets(&r.alloc_bytes.buckets),
                    ab_counts: Counts(&r.alloc_bytes.buckets),
                });
            }
            for q in &insight.queries {
                // Every text is kept, as SQLite keeps it whether or not the window ran.
                texts
                    .entry((project_id, q.fingerprint))
                    .and_modify(|t| {
                        t.first_seen = t.first_seen.min(ingest.received_at);
                        t.last_seen = t.last_seen.max(ingest.received_at);
                    })
                    .or_insert(FingerprintIn {
                        project_id,
                        fingerprint: q.fingerprint,
                        sql: &q.sql,
                        first_seen: ingest.received_at,
                        last_seen: ingest.received_at,
                    });
                if q.latency.is_empty() {
                    continue;
                }
                let l = &q.latency;
                queries.push(QueryIn {
                    project_id,
                    environment,
                    fingerprint: q.fingerprint,
                    start: q.start,
                    secs: q.window_secs,
                    executions: stored(l.count),
                    total_us: stored(l.sum),
                    fastest_us: stored(l.min),
                    slowest_us: stored(l.max),
                    buckets: Buckets(&l.buckets),
                    counts: Counts(&l.buckets),
                });
                for (route, method, count) in &q.routes {
                    query_routes.push(QueryRouteIn {
                        project_id,
                        environment,
                        fingerprint: q.fingerprint,
                        start: q.start,
                        secs: q.window_secs,
                        route,
                        method,
                        executions: stored(*count),
                    });
                }
            }
            for n in &insight.n_plus_one {
                n_plus_one.push(NPlusOneIn {
                    project_id,
                    environment,
                    route: &n.route,
                    method: &n.method,
                    fingerprint: n.fingerprint,
                    start: n.start,
                    secs: n.window_secs,
                    flagged: stored(n.requests),
                    repeats: stored(n.total_repeats),
                    most: stored(n.max_repeats),
                });
            }
            for h in &insight.heap {
                heap.push(HeapIn {
                    project_id,
                    environment,
                    service: &agent.service,
                    instance: &agent.instance,
                    second: h.ts_ms.div_euclid(1000),
                    live: stored(h.live_bytes),
                    peak: stored(h.peak_bytes),
                });
            }
            for e in &insight.exemplars {
                // Serialising protocol entries cannot fail; an empty waterfall is better
                // than refusing the whole group commit if it ever did.
                let entries = serde_json::to_string(&e.entries).unwrap_or_else(|_| "[]".to_owned());
                exemplars.push(ExemplarIn {
                    project_id,
                    id: exemplar_id(project_id, &agent.service, &agent.instance, e, &entries),
                    environment,
                    service: &agent.service,
                    instance: &agent.instance,
                    route: &e.route,
                    method: &e.method,
                    status: e.status,
                    start_ms: e.start_ms,
                    duration_us: stored(e.duration_us),
                    reasons: e.reasons,
                    queries: stored(e.queries),
                    query_us: stored(e.query_us),
                    allocs: stored(e.allocs),
                    alloc_bytes: stored(e.alloc_bytes),
                    dropped_entries: stored(e.dropped_entries),
                    entries,
                });
            }
        }
        let texts: Vec<FingerprintIn<'_>> = texts.into_values().collect();
        self.insert_all::<RouteIn<'_>>("insight_routes_in", &routes)
            .await?;
        self.insert_all::<QueryIn<'_>>("query_windows_in", &queries)
            .await?;
        self.insert_all::<QueryRouteIn<'_>>("query_routes_in", &query_routes)
            .await?;
        self.insert_all::<NPlusOneIn<'_>>("n_plus_one_in", &n_plus_one)
            .await?;
        self.insert_all::<HeapIn<'_>>("heap_in", &heap).await?;
        self.insert_all::<ExemplarIn<'_>>("exemplars", &exemplars)
            .await?;
        self.insert_all::<FingerprintIn<'_>>("query_fingerprints", &texts)
            .await
    }

    /// Writes `rows` into `table` in one insert; nothing when there are none.
    async fn insert_all<T: ::clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[T::Value<'_>],
    ) -> Result<(), Error>
    where
        for<'a> T::Value<'a>: Sync,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await.map_err(db)?;
        }
        insert.end().await.map_err(db)
    }

    /// The statement texts of `fingerprints` in one project ('' for one not kept).
    async fn texts(
        &self,
        project_id: u64,
        fingerprints: Vec<u64>,
    ) -> Result<HashMap<u64, String>, Error> {
        if fingerprints.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<TextRow> = self
            .client
            .query(
                "SELECT fingerprint, any(sql) FROM query_fingerprints
                 WHERE project_id = ? AND has(?, fingerprint)
                 GROUP BY fingerprint",
            )
            .bind(project_id)
            .bind(fingerprints)
            .fetch_all()
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(|r| (r.fingerprint, r.sql)).collect())
    }
}

#[async_trait]
impl InsightStore for ClickHouseEvents {
    fn retention(&self) -> RetentionConfig {
        self.retention.clone()
    }

    async fn query_totals(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<QueryTotals>, Error> {
        let mut params = Vec::new();
        let rows = tiered(
            "query_windows",
            "fingerprint, count, sum_us, min_us, max_us, hist",
            tier,
            project_id,
            range,
            environment,
            &mut params,
        );
        let sql = format!(
            "SELECT fingerprint, sumMerge(count), sumMerge(sum_us), minMerge(min_us),
                    maxMerge(max_us), sumMapMerge(hist)
             FROM {rows}
             GROUP BY fingerprint"
        );
        let windows: Vec<QueryRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        let mut params = Vec::new();
        let rows = tiered(
            "query_routes",
            "fingerprint, route, method, count",
            tier,
            project_id,
            range,
            environment,
            &mut params,
        );
        let sql = format!(
            "SELECT fingerprint, route, method, sumMerge(count)
             FROM {rows}
             GROUP BY fingerprint, route, method"
        );
        let mut routes: Vec<QueryRouteRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        // Most executions first per statement, as SQLite orders them.
        routes.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.route, &a.method).cmp(&(&b.route, &b.method)))
        });
        let mut texts = self
            .texts(project_id, windows.iter().map(|w| w.fingerprint).collect())
            .await?;
        // By the signed fingerprint, the order of SQLite's map.
        let mut out: BTreeMap<i64, QueryTotals> = windows
            .into_iter()
            .map(|w| {
                (
                    signed(w.fingerprint),
                    QueryTotals {
                        fingerprint: w.fingerprint,
                        sql: texts.remove(&w.fingerprint).unwrap_or_default(),
                        count: stored(w.count),
                        sum_us: w.sum_us as f64,
                        min_us: w.min_us,
                        max_us: w.max_us,
                        buckets: pairs(&w.hist),
                        routes: Vec::new(),
                    },
                )
            })
            .collect();
        for r in routes {
            if let Some(q) = out.get_mut(&signed(r.fingerprint)) {
                q.routes.push((r.route, r.method, stored(r.count)));
            }
        }
        Ok(out.into_values().collect())
    }

    async fn route_totals(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<RouteTotals>, Error> {
        let mut params = Vec::new();
        let rows = tiered(
            "insight_routes",
            "route, method, requests, queries, query_us, alloc_requests, allocs, alloc_bytes,
             n_plus_one, queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist",
            tier,
            project_id,
            range,
            environment,
            &mut params,
        );
        // Metric 0 queries, 1 query µs, 2 allocations, 3 bytes: the histograms in order.
        let sql = format!(
            "SELECT route, method, sumMerge(requests), sumMerge(queries), sumMerge(query_us),
                    sumMerge(alloc_requests), sumMerge(allocs), sumMerge(alloc_bytes),
                    sumMerge(n_plus_one), sumMapMerge(queries_hist),
                    sumMapMerge(query_us_hist), sumMapMerge(allocs_hist),
                    sumMapMerge(alloc_bytes_hist)
             FROM {rows}
             GROUP BY route, method
             ORDER BY route, method"
        );
        let rows: Vec<RouteRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let buckets = (0u8..)
                    .zip(&r.hists)
                    .map(|(metric, hist)| (metric, pairs(hist)))
                    .filter(|(_, pairs)| !pairs.is_empty())
                    .collect();
                RouteTotals {
                    route: r.route,
                    method: r.method,
                    requests: stored(r.requests),
                    queries: stored(r.queries),
                    query_us: r.query_us as f64,
                    alloc_requests: stored(r.alloc_requests),
                    allocs: stored(r.allocs),
                    alloc_bytes: r.alloc_bytes as f64,
                    n_plus_one: stored(r.n_plus_one),
                    buckets,
                }
            })
            .collect())
    }

    async fn n_plus_one(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<NPlusOneRow>, Error> {
        let mut params = Vec::new();
        let rows = tiered(
            "n_plus_one",
            "route, method, fingerprint, requests, total_repeats, max_repeats",
            tier,
            project_id,
            range,
            environment,
            &mut params,
        );
        let sql = format!(
            "SELECT route, method, fingerprint, sumMerge(requests), sumMerge(total_repeats),
                    maxMerge(max_repeats)
             FROM {rows}
             GROUP BY route, method, fingerprint"
        );
        let mut suspects: Vec<NPlusOneOut> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        if suspects.is_empty() {
            return Ok(Vec::new());
        }
        // The routes' requests over the same rows.
        let mut params = Vec::new();
        let rows = tiered(
            "insight_routes",
            "route, method, requests",
            tier,
            project_id,
            range,
            environment,
            &mut params,
        );
        let sql =
            format!("SELECT route, method, sumMerge(requests) FROM {rows} GROUP BY route, method");
        let requests: HashMap<(String, String), u64> = bind_all(self.client.query(&sql), &params)
            .fetch_all::<RouteRequestsRow>()
            .await
            .map_err(db)?
            .into_iter()
            .map(|r| ((r.route, r.method), stored(r.requests)))
            .collect();
        let texts = self
            .texts(project_id, suspects.iter().map(|s| s.fingerprint).collect())
            .await?;
        suspects.sort_by(|a, b| {
            stored(b.requests)
                .cmp(&stored(a.requests))
                .then_with(|| (&a.route, &a.method).cmp(&(&b.route, &b.method)))
                .then_with(|| signed(a.fingerprint).cmp(&signed(b.fingerprint)))
        });
        Ok(suspects
            .into_iter()
            .map(|s| {
                let flagged = stored(s.requests);
                let route_requests = requests
                    .get(&(s.route.clone(), s.method.clone()))
                    .copied()
                    .unwrap_or(0);
                NPlusOneRow {
                    fingerprint: hex(s.fingerprint),
                    sql: texts.get(&s.fingerprint).cloned().unwrap_or_default(),
                    requests: flagged,
                    route_requests,
                    max_repeats: stored(s.max_repeats),
                    mean_repeats: if flagged > 0 {
                        stored(s.total_repeats) as f64 / flagged as f64
                    } else {
                        0.0
                    },
                    route: s.route,
                    method: s.method,
                }
            })
            .collect())
    }

    async fn heap(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        step_secs: i64,
        environment: Option<&str>,
    ) -> Result<Vec<HeapSeries>, Error> {
        if step_secs <= 0 {
            return Err(Error::BadRequest("a heap step must be positive".into()));
        }
        let origin = range.since.div_euclid(step_secs) * step_secs;
        // Step start: origin + whole steps; `intDiv` truncates toward zero as SQLite's
        // integer `/` does.
        let mut params = vec![
            Param::I64(origin),
            Param::I64(origin),
            Param::I64(step_secs),
            Param::I64(step_secs),
            Param::U64(project_id),
            Param::I64(range.since),
            Param::I64(range.until),
        ];
        let environment = match environment {
            Some(environment) => {
                params.push(Param::Str(environment));
                "AND environment = ?"
            }
            None => "",
        };
        let sql = format!(
            "SELECT service, instance,
                    toInt64(?) + intDiv(ts - toInt64(?), toInt64(?)) * toInt64(?) AS step,
                    maxMerge(live_bytes), maxMerge(peak_bytes)
             FROM heap_samples{suffix}
             WHERE project_id = ? AND ts >= ? AND ts < ? {environment}
             GROUP BY service, instance, step
             ORDER BY service, instance, step",
            suffix = tier.route_suffix(),
        );
        let rows: Vec<HeapRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        let mut out: Vec<HeapSeries> = Vec::new();
        for row in rows {
            let point = HeapPoint {
                ts: row.step,
                live_bytes: stored(row.live_bytes),
                peak_bytes: stored(row.peak_bytes),
            };
            match out.last_mut() {
                Some(s) if s.service == row.service && s.instance == row.instance => {
                    s.points.push(point);
                }
                _ => out.push(HeapSeries {
                    service: row.service,
                    instance: row.instance,
                    points: vec![point],
                }),
            }
        }
        Ok(out)
    }

    async fn exemplars(
        &self,
        project_id: u64,
        range: TimeRange,
        route: Option<(&str, &str)>,
        before: Option<u64>,
        limit: u32,
        environment: Option<&str>,
    ) -> Result<Vec<ExemplarSummary>, Error> {
        let mut params = vec![
            Param::U64(project_id),
            Param::I64(range.since.saturating_mul(1000)),
            Param::I64(range.until.saturating_mul(1000)),
        ];
        let mut conditions = String::new();
        if let Some((route, method)) = route {
            conditions.push_str(" AND route = ? AND method = ?");
            params.extend([Param::Str(route), Param::Str(method)]);
        }
        if let Some(environment) = environment {
            conditions.push_str(" AND environment = ?");
            params.push(Param::Str(environment));
        }
        if let Some(before) = before {
            // `before` names a row; the page after it continues the (start_ms, id) order.
            // A pruned `before` row leaves nothing after it (older rows went first).
            let start: Option<i64> = self
                .client
                .query("SELECT start_ms FROM exemplars WHERE project_id = ? AND id = ? LIMIT 1")
                .bind(project_id)
                .bind(before)
                .fetch_optional()
                .await
                .map_err(db)?;
            let Some(start) = start else {
                return Ok(Vec::new());
            };
            conditions.push_str(" AND (start_ms < ? OR (start_ms = ? AND id < ?))");
            params.extend([Param::I64(start), Param::I64(start), Param::U64(before)]);
        }
        params.push(Param::U64(u64::from(limit)));
        // Copies of one exemplar share (start_ms, id) and sort together; `LIMIT 1 BY id`
        // reads each once before the page's `LIMIT` applies.
        let sql = format!(
            "SELECT {EXEMPLAR_COLUMNS} FROM exemplars
             WHERE project_id = ? AND start_ms >= ? AND start_ms < ?{conditions}
             ORDER BY start_ms DESC, id DESC
             LIMIT 1 BY id
             LIMIT ?"
        );
        let rows: Vec<ExemplarOut> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(ExemplarOut::summary).collect())
    }

    async fn exemplar(&self, project_id: u64, id: u64) -> Result<Option<ExemplarDetail>, Error> {
        let row: Option<ExemplarDetailOut> = self
            .client
            .query(&format!(
                "SELECT {EXEMPLAR_COLUMNS}, dropped_entries, entries FROM exemplars
                 WHERE project_id = ? AND id = ?
                 LIMIT 1"
            ))
            .bind(project_id)
            .bind(id)
            .fetch_optional()
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let entries: Vec<sightline_protocol::Entry> =
            serde_json::from_str(&row.entries).map_err(|e| Error::Store(std::sync::Arc::new(e)))?;
        Ok(Some(ExemplarDetail {
            summary: row.summary.summary(),
            dropped_entries: row.dropped_entries,
            entries: entries
                .into_iter()
                .map(|e| WaterfallEntry {
                    kind: e.kind,
                    name: e.name,
                    fingerprint: e.fingerprint.map(hex),
                    offset_ms: e.offset_us as f64 / 1000.0,
                    duration_ms: e.duration_us as f64 / 1000.0,
                })
                .collect(),
        }))
    }

    /// Rows and bytes of the active parts: rows a merge has not collapsed yet count as
    /// they are stored, and `db_bytes` is every table's compressed size on disk.
    async fn storage(&self) -> Result<StorageReport, Error> {
        let sizes: Vec<TableSize> = self
            .client
            .query(
                "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts
                 WHERE database = currentDatabase() AND active
                 GROUP BY table",
            )
            .fetch_all()
            .await
            .map_err(db)?;
        let rows_of = |table: &str| {
            sizes
                .iter()
                .find(|s| s.table == self.parts_of(table))
                .map_or(0, |s| s.rows)
        };
        let mut tables = Vec::new();
        for family in ["route_windows", "project_windows"] {
            for tier in Tier::ALL {
                let table = format!("{family}{}", tier.route_suffix());
                tables.push(TableRows {
                    rows: rows_of(&table),
                    table,
                    tier: Some(tier),
                });
            }
        }
        for family in TIERED {
            for tier in Tier::ALL {
                tables.push(TableRows {
                    table: family.to_owned(),
                    tier: Some(tier),
                    rows: rows_of(&format!("{family}{}", tier.route_suffix())),
                });
            }
        }
        for table in ["exemplars", "query_fingerprints"] {
            tables.push(TableRows {
                table: table.to_owned(),
                tier: None,
                rows: rows_of(table),
            });
        }
        Ok(StorageReport {
            db_bytes: sizes.iter().map(|s| s.bytes).sum(),
            tables,
        })
    }

    async fn prune(&self, retention: &RetentionConfig, now: i64) -> Result<u64, Error> {
        ClickHouseEvents::prune(self, retention, now).await
    }
}
