//! Insight reads for the dashboard: the figures the `/api/0/` insight endpoints answer
//! with (slow queries, N+1 suspects, per-route allocation tallies, heap series), as typed
//! rows through [`Query`], with the same tier choice.

use serde::Serialize;

use super::{
    HeapSeries, InsightStore, NPlusOneRow, Tier, aligned_since, hex, quantile, tier_for,
    tier_for_series,
};
use crate::query::unix_now;
use crate::{Error, Query, TimeRange};

/// A route that ran a statement, and how often.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallingRoute {
    pub route: String,
    pub method: String,
    pub count: u64,
}

/// One statement shape over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQuery {
    /// 16 hex digits.
    pub fingerprint: String,
    /// The normalised statement (literals replaced by `?`).
    pub sql: String,
    pub count: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    /// Share of all query time in the range.
    pub share: f64,
    /// Most executions first.
    pub routes: Vec<CallingRoute>,
}

/// Query and allocation figures of one route × method over a range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteInsight {
    pub route: String,
    pub method: String,
    pub requests: u64,
    pub queries_per_request: f64,
    /// Requests measured by a counting allocator (0: the app does not install one).
    pub alloc_requests: u64,
    pub allocs_per_request: f64,
    pub bytes_per_request: f64,
    /// 95th percentile of bytes allocated per request.
    pub bytes_p95: f64,
    /// Requests flagged as N+1.
    pub n_plus_one_requests: u64,
}

impl Query {
    /// The insight tables, `None` when the backend keeps none (then every read is empty).
    fn insight_store(&self) -> Option<&dyn InsightStore> {
        self.store().insight()
    }

    /// Checks the project and the range, and picks the tier as the API does.
    async fn insight_range(
        &self,
        project_id: u64,
        range: TimeRange,
    ) -> Result<Option<(&dyn InsightStore, TimeRange, Tier)>, Error> {
        if range.since >= range.until {
            return Err(Error::BadRequest("since must be before until".to_owned()));
        }
        if self.project(project_id).await?.is_none() {
            return Err(Error::ProjectNotFound);
        }
        let Some(store) = self.insight_store() else {
            return Ok(None);
        };
        let tier = tier_for(range, unix_now(), &store.retention());
        let since = aligned_since(tier, range.since);
        Ok(Some((store, TimeRange { since, ..range }, tier)))
    }

    /// Statement shapes run in `range`, most total time first.
    pub async fn slow_queries(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<SlowQuery>, Error> {
        let Some((store, range, tier)) = self.insight_range(project_id, range).await? else {
            return Ok(Vec::new());
        };
        let totals = store
            .query_totals(project_id, tier, range, environment)
            .await?;
        let all_us: f64 = totals.iter().map(|q| q.sum_us).sum();
        let mut rows: Vec<SlowQuery> = totals
            .into_iter()
            .map(|q| {
                let mut routes: Vec<CallingRoute> = q
                    .routes
                    .into_iter()
                    .map(|(route, method, count)| CallingRoute {
                        route,
                        method,
                        count,
                    })
                    .collect();
                routes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.route.cmp(&b.route)));
                SlowQuery {
                    fingerprint: hex(q.fingerprint),
                    count: q.count,
                    total_ms: q.sum_us / 1000.0,
                    mean_ms: if q.count > 0 {
                        q.sum_us / q.count as f64 / 1000.0
                    } else {
                        0.0
                    },
                    p95_ms: quantile(&q.buckets, 0.95, q.min_us, q.max_us).unwrap_or(0.0) / 1000.0,
                    max_ms: q.max_us as f64 / 1000.0,
                    share: if all_us > 0.0 { q.sum_us / all_us } else { 0.0 },
                    routes,
                    sql: q.sql,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.total_ms
                .total_cmp(&a.total_ms)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        Ok(rows)
    }

    /// Routes that ran one statement shape many times in a request, in `range`.
    pub async fn n_plus_one_suspects(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<NPlusOneRow>, Error> {
        let Some((store, range, tier)) = self.insight_range(project_id, range).await? else {
            return Ok(Vec::new());
        };
        store.n_plus_one(project_id, tier, range, environment).await
    }

    /// Query and allocation figures per route × method in `range`, by route.
    pub async fn route_insight(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<RouteInsight>, Error> {
        let Some((store, range, tier)) = self.insight_range(project_id, range).await? else {
            return Ok(Vec::new());
        };
        let per = |sum: f64, n: u64| if n > 0 { sum / n as f64 } else { 0.0 };
        let mut rows: Vec<RouteInsight> = store
            .route_totals(project_id, tier, range, environment)
            .await?
            .into_iter()
            .map(|r| RouteInsight {
                queries_per_request: per(r.queries as f64, r.requests),
                alloc_requests: r.alloc_requests,
                allocs_per_request: per(r.allocs as f64, r.alloc_requests),
                bytes_per_request: per(r.alloc_bytes, r.alloc_requests),
                // metric 3: bytes per request
                bytes_p95: r
                    .buckets
                    .get(&3)
                    .and_then(|b| quantile(b, 0.95, 0, u64::MAX))
                    .unwrap_or(0.0),
                n_plus_one_requests: r.n_plus_one,
                requests: r.requests,
                route: r.route,
                method: r.method,
            })
            .collect();
        rows.sort_by(|a, b| a.route.cmp(&b.route).then_with(|| a.method.cmp(&b.method)));
        Ok(rows)
    }

    /// Live heap and peak per instance in steps of `step_secs` over `range`.
    pub async fn heap_series(
        &self,
        project_id: u64,
        range: TimeRange,
        step_secs: i64,
        environment: Option<&str>,
    ) -> Result<Vec<HeapSeries>, Error> {
        if step_secs < 1 || (range.until - range.since) / step_secs > crate::MAX_SERIES_POINTS {
            return Err(Error::BadRequest(format!(
                "the step must be positive and leave at most {} points",
                crate::MAX_SERIES_POINTS
            )));
        }
        let Some((store, range, _)) = self.insight_range(project_id, range).await? else {
            return Ok(Vec::new());
        };
        let tier = tier_for_series(range, step_secs, unix_now(), &store.retention());
        store
            .heap(project_id, tier, range, step_secs, environment)
            .await
    }
}
