//! The SQLite side of performance insight: merging batches into every tier (written
//! inside the metric group commit), reading them back, and retention.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sightline_protocol::{EncodedSum, MetricBatch, merge_encoded};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::{SqliteStore, add_concatenated, concatenated, corrupt, db, environment_is, split_rows};
use crate::insight::{
    ExemplarDetail, ExemplarSummary, HeapPoint, HeapSeries, InsightStore, NPlusOneRow, QueryTotals,
    RetentionConfig, RouteTotals, StorageReport, TableRows, Tier, WaterfallEntry, day_split, hex,
    reason_names,
};
use crate::store::{to_i64, to_u64};
use crate::{Error, TimeRange};

/// Saturating addition in SQL (an overflowing `+` turns into a float, which `MIN` maps
/// back to the largest integer).
const SAT: &str = "9223372036854775807";

/// Start of the slot of `tier` holding `start`, and that slot's length.
pub(super) fn slot(tier: Tier, start: i64, window_secs: u32) -> (i64, i64) {
    match tier.secs() {
        None => (start, i64::from(window_secs)),
        Some(secs) => {
            let secs = secs.max(i64::from(window_secs));
            (start.div_euclid(secs) * secs, secs)
        }
    }
}

fn fp(fingerprint: u64) -> i64 {
    // Same 64 bits, read as signed: SQLite integers are signed.
    i64::from_ne_bytes(fingerprint.to_ne_bytes())
}

fn unfp(stored: i64) -> u64 {
    u64::from_ne_bytes(stored.to_ne_bytes())
}

/// Writes a batch's insight section into every tier.
pub(super) async fn write_insight(
    conn: &mut SqliteConnection,
    project_id: i64,
    batch: &MetricBatch,
    received_at: i64,
) -> Result<(), sqlx::Error> {
    let insight = &batch.insight;
    let environment = super::stored_environment(&batch.agent);
    for tier in Tier::ALL {
        let t = tier.id();
        for r in &insight.routes {
            if r.queries.is_empty() {
                continue;
            }
            let (start, secs) = slot(tier, r.start, r.window_secs);
            let stored = sqlx::query(
                "SELECT queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist
                 FROM insight_routes
                 WHERE project_id = ?1 AND tier = ?2 AND window_start = ?3 AND route = ?4
                   AND method = ?5 AND environment = ?6",
            )
            .bind(project_id)
            .bind(t)
            .bind(start)
            .bind(&r.route)
            .bind(&r.method)
            .bind(environment)
            .fetch_optional(&mut *conn)
            .await?;
            // One blob per metric, in column order.
            let mut hists = Vec::with_capacity(4);
            for (i, h) in [&r.queries, &r.query_us, &r.allocs, &r.alloc_bytes]
                .into_iter()
                .enumerate()
            {
                let before: Vec<u8> = match &stored {
                    Some(row) => row.try_get(i)?,
                    None => Vec::new(),
                };
                hists.push(merge_encoded(&before, &h.buckets).map_err(corrupt)?);
            }
            let [queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist] =
                <[Vec<u8>; 4]>::try_from(hists).map_err(|_| {
                    sqlx::Error::Protocol("one histogram blob per insight metric".into())
                })?;
            sqlx::query(&format!(
                "INSERT INTO insight_routes (project_id, tier, window_start, route, method,
                     window_secs, requests, queries, query_us, alloc_requests, allocs,
                     alloc_bytes, n_plus_one, queries_hist, query_us_hist, allocs_hist,
                     alloc_bytes_hist, environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, ?18)
                 ON CONFLICT (project_id, tier, window_start, route, method, environment)
                 DO UPDATE SET
                     requests = MIN(requests + excluded.requests, {SAT}),
                     queries = MIN(queries + excluded.queries, {SAT}),
                     query_us = MIN(query_us + excluded.query_us, {SAT}),
                     alloc_requests = MIN(alloc_requests + excluded.alloc_requests, {SAT}),
                     allocs = MIN(allocs + excluded.allocs, {SAT}),
                     alloc_bytes = MIN(alloc_bytes + excluded.alloc_bytes, {SAT}),
                     n_plus_one = MIN(n_plus_one + excluded.n_plus_one, {SAT}),
                     queries_hist = excluded.queries_hist,
                     query_us_hist = excluded.query_us_hist,
                     allocs_hist = excluded.allocs_hist,
                     alloc_bytes_hist = excluded.alloc_bytes_hist"
            ))
            .bind(project_id)
            .bind(t)
            .bind(start)
            .bind(&r.route)
            .bind(&r.method)
            .bind(secs)
            .bind(to_i64(r.queries.count))
            .bind(to_i64(r.queries.sum))
            .bind(to_i64(r.query_us.sum))
            .bind(to_i64(r.allocs.count))
            .bind(to_i64(r.allocs.sum))
            .bind(to_i64(r.alloc_bytes.sum))
            .bind(to_i64(r.n_plus_one))
            .bind(queries_hist)
            .bind(query_us_hist)
            .bind(allocs_hist)
            .bind(alloc_bytes_hist)
            .bind(environment)
            .execute(&mut *conn)
            .await?;
        }
        for q in &insight.queries {
            if q.latency.is_empty() {
                continue;
            }
            let (start, secs) = slot(tier, q.start, q.window_secs);
            let l = &q.latency;
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT hist FROM query_windows
                 WHERE project_id = ?1 AND tier = ?2 AND window_start = ?3 AND fingerprint = ?4
                   AND environment = ?5",
            )
            .bind(project_id)
            .bind(t)
            .bind(start)
            .bind(fp(q.fingerprint))
            .bind(environment)
            .fetch_optional(&mut *conn)
            .await?;
            let hist = merge_encoded(stored.as_deref().unwrap_or_default(), &l.buckets)
                .map_err(corrupt)?;
            sqlx::query(&format!(
                "INSERT INTO query_windows (project_id, tier, window_start, fingerprint,
                     window_secs, count, sum_us, min_us, max_us, hist, environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (project_id, tier, window_start, fingerprint, environment)
                 DO UPDATE SET
                     count = MIN(count + excluded.count, {SAT}),
                     sum_us = MIN(sum_us + excluded.sum_us, {SAT}),
                     min_us = MIN(min_us, excluded.min_us),
                     max_us = MAX(max_us, excluded.max_us),
                     hist = excluded.hist"
            ))
            .bind(project_id)
            .bind(t)
            .bind(start)
            .bind(fp(q.fingerprint))
            .bind(secs)
            .bind(to_i64(l.count))
            .bind(to_i64(l.sum))
            .bind(to_i64(l.min))
            .bind(to_i64(l.max))
            .bind(hist)
            .bind(environment)
            .execute(&mut *conn)
            .await?;
            for (route, method, count) in &q.routes {
                sqlx::query(&format!(
                    "INSERT INTO query_routes (project_id, tier, window_start, fingerprint,
                         route, method, count, environment)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (project_id, tier, window_start, fingerprint, route, method,
                                  environment)
                     DO UPDATE SET count = MIN(count + excluded.count, {SAT})"
                ))
                .bind(project_id)
                .bind(t)
                .bind(start)
                .bind(fp(q.fingerprint))
                .bind(route)
                .bind(method)
                .bind(to_i64(*count))
                .bind(environment)
                .execute(&mut *conn)
                .await?;
            }
        }
        for n in &insight.n_plus_one {
            let (start, _) = slot(tier, n.start, n.window_secs);
            sqlx::query(&format!(
                "INSERT INTO n_plus_one (project_id, tier, window_start, route, method,
                     fingerprint, requests, total_repeats, max_repeats, environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (project_id, tier, window_start, route, method, fingerprint,
                              environment)
                 DO UPDATE SET
                     requests = MIN(requests + excluded.requests, {SAT}),
                     total_repeats = MIN(total_repeats + excluded.total_repeats, {SAT}),
                     max_repeats = MAX(max_repeats, excluded.max_repeats)"
            ))
            .bind(project_id)
            .bind(t)
            .bind(start)
            .bind(&n.route)
            .bind(&n.method)
            .bind(fp(n.fingerprint))
            .bind(to_i64(n.requests))
            .bind(to_i64(n.total_repeats))
            .bind(to_i64(n.max_repeats))
            .bind(environment)
            .execute(&mut *conn)
            .await?;
        }
        for h in &insight.heap {
            let secs = h.ts_ms.div_euclid(1000);
            let ts = tier.secs().map_or(secs, |s| secs.div_euclid(s) * s);
            sqlx::query(
                "INSERT INTO heap_samples (project_id, tier, ts, service, instance, live_bytes,
                     peak_bytes, environment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (project_id, tier, ts, service, instance) DO UPDATE SET
                     live_bytes = MAX(live_bytes, excluded.live_bytes),
                     peak_bytes = MAX(peak_bytes, excluded.peak_bytes),
                     environment = excluded.environment",
            )
            .bind(project_id)
            .bind(t)
            .bind(ts)
            .bind(&batch.agent.service)
            .bind(&batch.agent.instance)
            .bind(to_i64(h.live_bytes))
            .bind(to_i64(h.peak_bytes))
            .bind(environment)
            .execute(&mut *conn)
            .await?;
        }
    }
    for q in &insight.queries {
        sqlx::query(
            "INSERT INTO query_fingerprints (project_id, fingerprint, sql, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (project_id, fingerprint) DO UPDATE SET
                 last_seen = MAX(last_seen, excluded.last_seen)",
        )
        .bind(project_id)
        .bind(fp(q.fingerprint))
        .bind(&q.sql)
        .bind(received_at)
        .execute(&mut *conn)
        .await?;
    }
    for e in &insight.exemplars {
        // Serialising protocol entries cannot fail; an empty waterfall is better than
        // refusing the whole group commit if it ever did.
        let entries = serde_json::to_string(&e.entries).unwrap_or_else(|_| "[]".to_owned());
        sqlx::query(
            "INSERT INTO exemplars (project_id, service, instance, route, method, status,
                 start_ms, duration_us, reasons, queries, query_us, allocs, alloc_bytes,
                 dropped_entries, entries, environment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16)",
        )
        .bind(project_id)
        .bind(&batch.agent.service)
        .bind(&batch.agent.instance)
        .bind(&e.route)
        .bind(&e.method)
        .bind(e.status)
        .bind(e.start_ms)
        .bind(to_i64(e.duration_us))
        .bind(e.reasons)
        .bind(to_i64(e.queries))
        .bind(to_i64(e.query_us))
        .bind(to_i64(e.allocs))
        .bind(to_i64(e.alloc_bytes))
        .bind(to_i64(e.dropped_entries))
        .bind(entries)
        .bind(environment)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

fn summary(row: &sqlx::sqlite::SqliteRow) -> Result<ExemplarSummary, sqlx::Error> {
    let status: i64 = row.try_get("status")?;
    let reasons: i64 = row.try_get("reasons")?;
    Ok(ExemplarSummary {
        id: to_u64(row.try_get("id")?),
        route: row.try_get("route")?,
        method: row.try_get("method")?,
        status: u16::try_from(status).unwrap_or(500),
        start_ms: row.try_get("start_ms")?,
        duration_ms: ms(row.try_get("duration_us")?),
        reasons: reason_names(u8::try_from(reasons).unwrap_or(0)),
        queries: to_u64(row.try_get("queries")?),
        query_ms: ms(row.try_get("query_us")?),
        allocs: to_u64(row.try_get("allocs")?),
        alloc_bytes: to_u64(row.try_get("alloc_bytes")?),
        instance: row.try_get("instance")?,
    })
}

/// The rows of `table` for `project_id = ?1`, `tier` and the environment at `?6`, for
/// [`split_rows`] with the range bounds at `?2`–`?5`.
fn tiered_rows(table: &'static str, columns: &str, tier: Tier, days: (i64, i64)) -> String {
    split_rows(
        columns,
        "window_start",
        (tier, days),
        |t| {
            format!(
                "{table} WHERE project_id = ?1 AND tier = {} AND {}",
                t.id(),
                environment_is(6)
            )
        },
        [2, 3, 4, 5],
    )
}

const EXEMPLAR_COLUMNS: &str = "id, route, method, status, start_ms, duration_us, reasons, queries, query_us, allocs, alloc_bytes, instance";

/// Tables with a `tier` column: name, time column, primary key.
const TIERED: [(&str, &str, &str); 5] = [
    (
        "insight_routes",
        "window_start",
        "project_id, tier, window_start, route, method, environment",
    ),
    (
        "query_windows",
        "window_start",
        "project_id, tier, window_start, fingerprint, environment",
    ),
    (
        "query_routes",
        "window_start",
        "project_id, tier, window_start, fingerprint, route, method, environment",
    ),
    (
        "n_plus_one",
        "window_start",
        "project_id, tier, window_start, route, method, fingerprint, environment",
    ),
    (
        "heap_samples",
        "ts",
        "project_id, tier, ts, service, instance",
    ),
];

#[async_trait]
impl InsightStore for SqliteStore {
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let p = to_i64(project_id);
        let (first, end) = day_split(tier, range);
        let mut out: BTreeMap<i64, QueryTotals> = BTreeMap::new();
        let rows = sqlx::query(&format!(
            // The statement text is joined once per fingerprint, after grouping, not
            // once per window row.
            "SELECT g.fingerprint, g.n, g.sum_us, g.min_us, g.max_us, COALESCE(f.sql, ''),
                    g.hist
             FROM (SELECT fingerprint, SUM(count) AS n, TOTAL(sum_us) AS sum_us,
                          MIN(min_us) AS min_us, MAX(max_us) AS max_us, {hist} AS hist
                   FROM {rows}
                   GROUP BY fingerprint) g
             LEFT JOIN query_fingerprints f
                 ON f.project_id = ?1 AND f.fingerprint = g.fingerprint",
            hist = concatenated("hist"),
            rows = tiered_rows(
                "query_windows",
                "fingerprint, count, sum_us, min_us, max_us, hist",
                tier,
                (first, end)
            ),
        ))
        .bind(p)
        .bind(range.since)
        .bind(range.until)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in rows {
            let stored: i64 = row.try_get(0).map_err(db)?;
            let mut latency = EncodedSum::new();
            add_concatenated(&mut latency, row.try_get(6).map_err(db)?).map_err(db)?;
            out.insert(
                stored,
                QueryTotals {
                    fingerprint: unfp(stored),
                    count: to_u64(row.try_get(1).map_err(db)?),
                    sum_us: row.try_get(2).map_err(db)?,
                    min_us: to_u64(row.try_get(3).map_err(db)?),
                    max_us: to_u64(row.try_get(4).map_err(db)?),
                    sql: row.try_get(5).map_err(db)?,
                    buckets: latency.pairs().collect(),
                    ..QueryTotals::default()
                },
            );
        }
        let routes = sqlx::query(&format!(
            "SELECT fingerprint, route, method, SUM(count) AS n FROM {rows}
             GROUP BY fingerprint, route, method ORDER BY fingerprint, n DESC",
            rows = tiered_rows(
                "query_routes",
                "fingerprint, route, method, count",
                tier,
                (first, end)
            ),
        ))
        .bind(p)
        .bind(range.since)
        .bind(range.until)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for row in routes {
            let stored: i64 = row.try_get(0).map_err(db)?;
            if let Some(q) = out.get_mut(&stored) {
                q.routes.push((
                    row.try_get(1).map_err(db)?,
                    row.try_get(2).map_err(db)?,
                    to_u64(row.try_get(3).map_err(db)?),
                ));
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(out.into_values().collect())
    }

    async fn route_totals(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<RouteTotals>, Error> {
        let (first, end) = day_split(tier, range);
        // Metric 0 queries, 1 query µs, 2 allocations, 3 bytes: the blob columns in order.
        let rows = sqlx::query(&format!(
            "SELECT route, method, SUM(requests), SUM(queries), TOTAL(query_us),
                    SUM(alloc_requests), SUM(allocs), TOTAL(alloc_bytes), SUM(n_plus_one),
                    {}, {}, {}, {}
             FROM {}
             GROUP BY route, method",
            concatenated("queries_hist"),
            concatenated("query_us_hist"),
            concatenated("allocs_hist"),
            concatenated("alloc_bytes_hist"),
            tiered_rows(
                "insight_routes",
                "route, method, requests, queries, query_us, alloc_requests, allocs,
                 alloc_bytes, n_plus_one, queries_hist, query_us_hist, allocs_hist,
                 alloc_bytes_hist",
                tier,
                (first, end)
            ),
        ))
        .bind(to_i64(project_id))
        .bind(range.since)
        .bind(range.until)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut buckets = BTreeMap::new();
            for metric in 0u8..4 {
                let mut sum = EncodedSum::new();
                add_concatenated(&mut sum, row.try_get(9 + usize::from(metric)).map_err(db)?)
                    .map_err(db)?;
                let pairs: Vec<(i32, u64)> = sum.pairs().collect();
                if !pairs.is_empty() {
                    buckets.insert(metric, pairs);
                }
            }
            out.push(RouteTotals {
                route: row.try_get(0).map_err(db)?,
                method: row.try_get(1).map_err(db)?,
                requests: to_u64(row.try_get(2).map_err(db)?),
                queries: to_u64(row.try_get(3).map_err(db)?),
                query_us: row.try_get(4).map_err(db)?,
                alloc_requests: to_u64(row.try_get(5).map_err(db)?),
                allocs: to_u64(row.try_get(6).map_err(db)?),
                alloc_bytes: row.try_get(7).map_err(db)?,
                n_plus_one: to_u64(row.try_get(8).map_err(db)?),
                buckets,
            });
        }
        // By route and method, as the map this replaced returned them.
        out.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        Ok(out)
    }

    async fn n_plus_one(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<NPlusOneRow>, Error> {
        let (first, end) = day_split(tier, range);
        // The route's requests over the same rows, per suspect (a handful of rows).
        let route_requests = split_rows(
            "requests",
            "window_start",
            (tier, (first, end)),
            |t| {
                format!(
                    "insight_routes WHERE project_id = ?1 AND tier = {} AND route = n.route
                       AND method = n.method AND {}",
                    t.id(),
                    environment_is(6)
                )
            },
            [2, 3, 4, 5],
        );
        let rows = sqlx::query(&format!(
            "SELECT n.route, n.method, n.fingerprint, COALESCE(f.sql, ''), n.requests,
                    n.total_repeats, n.max_repeats,
                    (SELECT COALESCE(SUM(requests), 0) FROM {route_requests})
             FROM (SELECT route, method, fingerprint, SUM(requests) AS requests,
                          SUM(total_repeats) AS total_repeats, MAX(max_repeats) AS max_repeats
                   FROM {rows}
                   GROUP BY route, method, fingerprint) n
             LEFT JOIN query_fingerprints f
                 ON f.project_id = ?1 AND f.fingerprint = n.fingerprint
             ORDER BY n.requests DESC, n.route, n.method",
            rows = tiered_rows(
                "n_plus_one",
                "route, method, fingerprint, requests, total_repeats, max_repeats",
                tier,
                (first, end)
            ),
        ))
        .bind(to_i64(project_id))
        .bind(range.since)
        .bind(range.until)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let requests = to_u64(row.try_get(4)?);
                let total = to_u64(row.try_get(5)?);
                Ok(NPlusOneRow {
                    route: row.try_get(0)?,
                    method: row.try_get(1)?,
                    fingerprint: hex(unfp(row.try_get(2)?)),
                    sql: row.try_get(3)?,
                    requests,
                    route_requests: to_u64(row.try_get(7)?),
                    max_repeats: to_u64(row.try_get(6)?),
                    mean_repeats: if requests > 0 {
                        total as f64 / requests as f64
                    } else {
                        0.0
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    async fn heap(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        step_secs: i64,
        environment: Option<&str>,
    ) -> Result<Vec<HeapSeries>, Error> {
        let origin = range.since.div_euclid(step_secs) * step_secs;
        let rows = sqlx::query(&format!(
            "SELECT service, instance, ?5 + ((ts - ?5) / ?6) * ?6 AS step, MAX(live_bytes),
                    MAX(peak_bytes)
             FROM heap_samples
             WHERE project_id = ?1 AND tier = ?2 AND ts >= ?3 AND ts < ?4 AND {environment}
             GROUP BY service, instance, step ORDER BY service, instance, step",
            environment = environment_is(7),
        ))
        .bind(to_i64(project_id))
        .bind(tier.id())
        .bind(range.since)
        .bind(range.until)
        .bind(origin)
        .bind(step_secs)
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out: Vec<HeapSeries> = Vec::new();
        for row in rows {
            let service: String = row.try_get(0).map_err(db)?;
            let instance: String = row.try_get(1).map_err(db)?;
            let point = HeapPoint {
                ts: row.try_get(2).map_err(db)?,
                live_bytes: to_u64(row.try_get(3).map_err(db)?),
                peak_bytes: to_u64(row.try_get(4).map_err(db)?),
            };
            match out.last_mut() {
                Some(s) if s.service == service && s.instance == instance => s.points.push(point),
                _ => out.push(HeapSeries {
                    service,
                    instance,
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
        let (route, method) = route.unzip();
        // `before` names a row; the page after it continues the (start_ms, id) order. A
        // pruned `before` row leaves nothing after it (older rows went first).
        sqlx::query(&format!(
            "SELECT {EXEMPLAR_COLUMNS} FROM exemplars
             WHERE project_id = ?1 AND start_ms >= ?2 AND start_ms < ?3
               AND (?4 IS NULL OR (route = ?4 AND method = ?5))
               AND (?7 IS NULL OR (start_ms, id) <
                    (SELECT start_ms, id FROM exemplars WHERE id = ?7 AND project_id = ?1))
               AND {environment}
             ORDER BY start_ms DESC, id DESC LIMIT ?6",
            environment = environment_is(8),
        ))
        .bind(to_i64(project_id))
        .bind(range.since.saturating_mul(1000))
        .bind(range.until.saturating_mul(1000))
        .bind(route)
        .bind(method)
        .bind(i64::from(limit))
        .bind(before.map(to_i64))
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(summary)
        .collect::<Result<_, _>>()
        .map_err(db)
    }

    async fn exemplar(&self, project_id: u64, id: u64) -> Result<Option<ExemplarDetail>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {EXEMPLAR_COLUMNS}, dropped_entries, entries FROM exemplars
             WHERE project_id = ?1 AND id = ?2"
        ))
        .bind(to_i64(project_id))
        .bind(to_i64(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("entries").map_err(db)?;
        let entries: Vec<sightline_protocol::Entry> =
            serde_json::from_str(&text).map_err(|e| Error::Store(std::sync::Arc::new(e)))?;
        Ok(Some(ExemplarDetail {
            summary: summary(&row).map_err(db)?,
            dropped_entries: to_u64(row.try_get("dropped_entries").map_err(db)?),
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

    async fn storage(&self) -> Result<StorageReport, Error> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        let mut tables = Vec::new();
        for table in ["route_windows", "project_windows"] {
            for tier in Tier::ALL {
                let table = format!("{table}{}", tier.route_suffix());
                let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
                tables.push(TableRows {
                    table,
                    tier: Some(tier),
                    rows: to_u64(rows),
                });
            }
        }
        for (table, _, _) in TIERED {
            let counts = sqlx::query(&format!(
                "SELECT tier, COUNT(*) FROM {table} GROUP BY tier ORDER BY tier"
            ))
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
            for tier in Tier::ALL {
                let rows = counts
                    .iter()
                    .find(|r| r.try_get::<i64, _>(0).ok() == Some(tier.id()))
                    .and_then(|r| r.try_get::<i64, _>(1).ok())
                    .unwrap_or(0);
                tables.push(TableRows {
                    table: table.to_owned(),
                    tier: Some(tier),
                    rows: to_u64(rows),
                });
            }
        }
        for table in ["exemplars", "query_fingerprints"] {
            let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            tables.push(TableRows {
                table: table.to_owned(),
                tier: None,
                rows: to_u64(rows),
            });
        }
        // The WAL holds committed pages not yet checkpointed into the main file.
        let wal: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT file FROM pragma_database_list WHERE name = 'main'), '')",
        )
        .fetch_one(&mut *conn)
        .await
        .ok()
        .and_then(|file: String| std::fs::metadata(format!("{file}-wal")).ok())
        .map_or(0, |m| to_i64(m.len()));
        Ok(StorageReport {
            db_bytes: to_u64(pages.saturating_mul(page_size).saturating_add(wal)),
            tables,
        })
    }

    async fn prune(&self, retention: &RetentionConfig, now: i64) -> Result<u64, Error> {
        let limit = to_i64(retention.max_rows_per_run);
        let mut deleted = 0u64;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        for tier in Tier::ALL {
            let cutoff = now.saturating_sub(retention.keep_secs(tier));
            let suffix = tier.route_suffix();
            for (table, key) in [
                (
                    "route_windows",
                    "project_id, window_start, route, method, status_class, environment",
                ),
                (
                    "project_windows",
                    "project_id, window_start, status_class, environment",
                ),
            ] {
                let done = sqlx::query(&format!(
                    "DELETE FROM {table}{suffix} WHERE ({key}) IN (
                         SELECT {key} FROM {table}{suffix} WHERE window_start < ?1 LIMIT ?2)"
                ))
                .bind(cutoff)
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                deleted += done.rows_affected();
            }
            for (table, column, key) in TIERED {
                let done = sqlx::query(&format!(
                    "DELETE FROM {table} WHERE ({key}) IN (
                         SELECT {key} FROM {table} WHERE tier = ?1 AND {column} < ?2 LIMIT ?3)"
                ))
                .bind(tier.id())
                .bind(cutoff)
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                deleted += done.rows_affected();
            }
        }
        let cutoff_ms = now
            .saturating_sub(retention.keep_secs(Tier::Raw))
            .saturating_mul(1000);
        let done = sqlx::query(
            "DELETE FROM exemplars WHERE id IN (
                 SELECT id FROM exemplars WHERE start_ms < ?1 LIMIT ?2)",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        deleted += done.rows_affected();
        let done = sqlx::query(
            "DELETE FROM query_fingerprints WHERE rowid IN (
                 SELECT rowid FROM query_fingerprints WHERE last_seen < ?1 LIMIT ?2)",
        )
        // Statement texts live as long as the coarsest tier that names them.
        .bind(now.saturating_sub(retention.keep_secs(Tier::Day)))
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        deleted += done.rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }
}
