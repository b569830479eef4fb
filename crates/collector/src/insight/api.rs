//! The insight endpoints of the `/api/0/` query API: slow queries, N+1 suspects,
//! per-route query and allocation figures, the most time-consuming routes, heap series,
//! exemplars, and what the store occupies.

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{MethodRouter, get};
use serde::{Deserialize, Serialize};

use super::{
    ExemplarDetail, ExemplarSummary, HeapSeries, InsightStore, NPlusOneRow, StorageReport, Tier,
    aligned_since, hex, quantile, tier_for, tier_for_series,
};
use crate::http::AppState;
use crate::http::api::{EnvironmentParam, RangeParams};
use crate::http::extract::{ApiQuery, ProjectId};
use crate::query::unix_now;
use crate::{Error, Query, TimeRange};

/// Most rows a list endpoint answers with.
const MAX_LIMIT: u32 = 1_000;
/// Rows when the request names no limit.
const DEFAULT_LIMIT: u32 = 50;

/// The insight endpoints, mounted with the rest of the query API (behind its admin token).
pub(crate) fn endpoints() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/api/0/projects/{project_id}/queries/", get(queries)),
        (
            "/api/0/projects/{project_id}/queries/n_plus_one/",
            get(n_plus_one),
        ),
        ("/api/0/projects/{project_id}/routes/insight/", get(routes)),
        ("/api/0/projects/{project_id}/routes/top/", get(top_routes)),
        ("/api/0/projects/{project_id}/heap/", get(heap)),
        ("/api/0/projects/{project_id}/exemplars/", get(exemplars)),
        (
            "/api/0/projects/{project_id}/exemplars/{exemplar_id}/",
            get(exemplar),
        ),
        ("/api/0/storage/", get(storage)),
    ]
}

fn insight(query: &Query) -> Result<&dyn InsightStore, Error> {
    query
        .store()
        .insight()
        .ok_or(Error::NotFound("this store keeps no insight"))
}

/// Checks the project and the range, and picks the tier.
async fn prepare(
    query: &Query,
    project_id: u64,
    range: &RangeParams,
) -> Result<(TimeRange, Tier), Error> {
    let now = unix_now();
    let range = range.resolve(now)?;
    if range.since >= range.until {
        return Err(Error::BadRequest("since must be before until".to_owned()));
    }
    if query.project(project_id).await?.is_none() {
        return Err(Error::ProjectNotFound);
    }
    let retention = insight(query)?.retention();
    let tier = tier_for(range, now, &retention);
    let since = aligned_since(tier, range.since);
    Ok((TimeRange { since, ..range }, tier))
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    sort: Option<String>,
    limit: Option<u32>,
    route: Option<String>,
    method: Option<String>,
    interval: Option<i64>,
    /// Exemplars: the page after this exemplar id.
    before: Option<u64>,
}

impl ListParams {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A calling route of a statement.
#[derive(Debug, Serialize)]
struct CallingRoute {
    route: String,
    method: String,
    count: u64,
}

/// One statement shape.
#[derive(Debug, Serialize)]
struct QueryRow {
    fingerprint: String,
    sql: String,
    count: u64,
    total_ms: f64,
    mean_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Share of all query time in the range.
    share: f64,
    routes: Vec<CallingRoute>,
}

/// `GET /api/0/projects/{id}/queries/?sort=total|p95|count&limit=`
async fn queries(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<QueryRow>>, Error> {
    let (range, tier) = prepare(&query, project_id, &range).await?;
    let totals = insight(&query)?
        .query_totals(project_id, tier, range, environment.get()?)
        .await?;
    let all_us: f64 = totals.iter().map(|q| q.sum_us).sum();
    let mut rows: Vec<QueryRow> = totals
        .into_iter()
        .map(|q| {
            let ms = |v: Option<f64>| v.unwrap_or(0.0) / 1000.0;
            QueryRow {
                fingerprint: hex(q.fingerprint),
                count: q.count,
                total_ms: q.sum_us / 1000.0,
                mean_ms: if q.count > 0 {
                    q.sum_us / q.count as f64 / 1000.0
                } else {
                    0.0
                },
                p50_ms: ms(quantile(&q.buckets, 0.50, q.min_us, q.max_us)),
                p95_ms: ms(quantile(&q.buckets, 0.95, q.min_us, q.max_us)),
                p99_ms: ms(quantile(&q.buckets, 0.99, q.min_us, q.max_us)),
                max_ms: q.max_us as f64 / 1000.0,
                share: if all_us > 0.0 { q.sum_us / all_us } else { 0.0 },
                routes: q
                    .routes
                    .into_iter()
                    .map(|(route, method, count)| CallingRoute {
                        route,
                        method,
                        count,
                    })
                    .collect(),
                sql: q.sql,
            }
        })
        .collect();
    match params.sort.as_deref().unwrap_or("total") {
        "total" => rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms)),
        "p95" => rows.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms)),
        "count" => rows.sort_by_key(|r| std::cmp::Reverse(r.count)),
        _ => {
            return Err(Error::BadRequest(
                "sort must be total, p95 or count".to_owned(),
            ));
        }
    }
    rows.truncate(params.limit() as usize);
    Ok(Json(rows))
}

/// `GET /api/0/projects/{id}/queries/n_plus_one/`
async fn n_plus_one(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<NPlusOneRow>>, Error> {
    let (range, tier) = prepare(&query, project_id, &range).await?;
    Ok(Json(
        insight(&query)?
            .n_plus_one(project_id, tier, range, environment.get()?)
            .await?,
    ))
}

/// Query and allocation figures of one route × method.
#[derive(Debug, Serialize)]
struct RouteRow {
    route: String,
    method: String,
    requests: u64,
    queries_per_request: f64,
    query_ms_per_request: f64,
    /// 95th percentile of queries per request.
    queries_p95: f64,
    /// 95th percentile of query time per request.
    query_ms_p95: f64,
    /// Requests measured by a counting allocator (0: the app does not install one).
    alloc_requests: u64,
    allocs_per_request: f64,
    bytes_per_request: f64,
    bytes_p95: f64,
    /// Requests flagged as N+1.
    n_plus_one_requests: u64,
    /// Any request of the route flagged as N+1.
    n_plus_one: bool,
}

/// `GET /api/0/projects/{id}/routes/insight/`
async fn routes(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<RouteRow>>, Error> {
    let (range, tier) = prepare(&query, project_id, &range).await?;
    let totals = insight(&query)?
        .route_totals(project_id, tier, range, environment.get()?)
        .await?;
    let per = |sum: f64, n: u64| if n > 0 { sum / n as f64 } else { 0.0 };
    let p95 = |r: &super::RouteTotals, metric: u8| {
        r.buckets
            .get(&metric)
            .and_then(|b| quantile(b, 0.95, 0, u64::MAX))
            .unwrap_or(0.0)
    };
    let mut rows: Vec<RouteRow> = totals
        .iter()
        .map(|r| RouteRow {
            route: r.route.clone(),
            method: r.method.clone(),
            requests: r.requests,
            queries_per_request: per(r.queries as f64, r.requests),
            query_ms_per_request: per(r.query_us, r.requests) / 1000.0,
            queries_p95: p95(r, 0),
            query_ms_p95: p95(r, 1) / 1000.0,
            alloc_requests: r.alloc_requests,
            allocs_per_request: per(r.allocs as f64, r.alloc_requests),
            bytes_per_request: per(r.alloc_bytes, r.alloc_requests),
            bytes_p95: p95(r, 3),
            n_plus_one_requests: r.n_plus_one,
            n_plus_one: r.n_plus_one > 0,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.query_ms_per_request * b.requests as f64)
            .total_cmp(&(a.query_ms_per_request * a.requests as f64))
            .then_with(|| a.route.cmp(&b.route))
    });
    Ok(Json(rows))
}

/// A route's share of all server time.
#[derive(Debug, Serialize)]
struct TopRoute {
    route: String,
    method: String,
    requests: u64,
    total_ms: f64,
    mean_ms: f64,
    p95_ms: f64,
    /// Share of the total server time of every route in the range.
    share: f64,
}

/// `GET /api/0/projects/{id}/routes/top/?limit=`: the routes taking the most server time.
async fn top_routes(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<TopRoute>>, Error> {
    let range = range.resolve(unix_now())?;
    // Sorted by total time already.
    let stats = query.routes(project_id, range, environment.get()?).await?;
    let all: f64 = stats.iter().map(|r| r.total_ms).sum();
    Ok(Json(
        stats
            .into_iter()
            .take(params.limit() as usize)
            .map(|r| TopRoute {
                share: if all > 0.0 { r.total_ms / all } else { 0.0 },
                route: r.route,
                method: r.method,
                requests: r.requests,
                total_ms: r.total_ms,
                mean_ms: r.mean_ms,
                p95_ms: r.p95_ms,
            })
            .collect(),
    ))
}

/// `GET /api/0/projects/{id}/heap/?interval=`: live heap per instance.
async fn heap(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<HeapSeries>>, Error> {
    let now = unix_now();
    let (range, _) = prepare(&query, project_id, &range).await?;
    let step = params
        .interval
        .unwrap_or(((range.until - range.since) / 300).max(1));
    if step < 1 || (range.until - range.since) / step > crate::MAX_SERIES_POINTS {
        return Err(Error::BadRequest(format!(
            "interval must be positive and leave at most {} points",
            crate::MAX_SERIES_POINTS
        )));
    }
    let store = insight(&query)?;
    let tier = tier_for_series(range, step, now, &store.retention());
    Ok(Json(
        store
            .heap(project_id, tier, range, step, environment.get()?)
            .await?,
    ))
}

/// `GET /api/0/projects/{id}/exemplars/?route=&method=&limit=&before=`
async fn exemplars(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(params): ApiQuery<ListParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<ExemplarSummary>>, Error> {
    let (range, _) = prepare(&query, project_id, &range).await?;
    let method = params.method.as_deref().map(str::to_ascii_uppercase);
    let route = match (params.route.as_deref(), method.as_deref()) {
        (Some(route), Some(method)) => Some((route, method)),
        (Some(route), None) => Some((route, "GET")),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::BadRequest("method needs a route".to_owned()));
        }
    };
    Ok(Json(
        insight(&query)?
            .exemplars(
                project_id,
                range,
                route,
                params.before,
                params.limit(),
                environment.get()?,
            )
            .await?,
    ))
}

/// `GET /api/0/projects/{id}/exemplars/{exemplar_id}/`: the waterfall.
async fn exemplar(
    State(query): State<Query>,
    ids: Result<Path<(u64, u64)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ExemplarDetail>, Error> {
    let Path((project_id, id)) =
        ids.map_err(|_| Error::BadRequest("project and exemplar ids must be numbers".to_owned()))?;
    insight(&query)?
        .exemplar(project_id, id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("exemplar not found"))
}

/// `GET /api/0/storage/`: database size and rows per table and tier.
async fn storage(State(query): State<Query>) -> Result<Json<StorageReport>, Error> {
    Ok(Json(insight(&query)?.storage().await?))
}
