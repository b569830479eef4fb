//! Rows the query API answers with (`/api/0/projects/<id>/routes/`, `…/series/`).

use serde::{Deserialize, Serialize};

/// One route × method over a time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Requests in the range.
    pub requests: u64,
    /// Requests answered with a 5xx status.
    pub errors: u64,
    /// Requests per status class, index 0 = `1xx` … 4 = `5xx`.
    pub status_classes: [u64; 5],
    /// `errors / requests`.
    pub error_rate: f64,
    /// Requests per second over the range.
    pub throughput: f64,
    /// Latency quantiles in milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Mean latency in milliseconds.
    pub mean_ms: f64,
    /// Total server time spent in this route, milliseconds.
    pub total_ms: f64,
}

/// One step of a time series for a route or for all routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Step start, unix seconds.
    pub ts: i64,
    pub requests: u64,
    pub errors: u64,
    /// Latency quantiles in milliseconds; `None` when the step saw no requests.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}
