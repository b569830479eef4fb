//! Endpoints for whoever runs the collector: `/health` for probes, `/metrics` for Prometheus.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::Query;
use crate::metrics::Gauges;
use crate::writer::IngestQueue;

/// A store that does not answer `SELECT 1` this fast counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        // Neither endpoint reads a body.
        .layer(DefaultBodyLimit::max(0))
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    store: &'static str,
    queue_depth: usize,
    queue_capacity: usize,
    /// Scale-out mode: batches accepted and waiting in the local spool for the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    spool: Option<crate::store::SpoolBacklog>,
}

/// Always 200, so a probe can read why it is degraded: the store does not answer, or the
/// queue is over 90 % full and 429s are near.
async fn health(State(query): State<Query>, State(queue): State<IngestQueue>) -> Json<Health> {
    let store_ok = matches!(
        tokio::time::timeout(PING_TIMEOUT, query.store().ping()).await,
        Ok(Ok(()))
    );
    let (queue_depth, queue_capacity) = (queue.depth(), queue.capacity());
    let queue_ok = queue_depth * 10 <= queue_capacity * 9;
    let spool = query.store().backlog();
    // Shipping that fails means the backend is away, even when its ping answers.
    let spool_ok = !spool.is_some_and(|s| s.failing);
    Json(Health {
        status: if store_ok && queue_ok && spool_ok {
            "ok"
        } else {
            "degraded"
        },
        store: if store_ok { "ok" } else { "error" },
        queue_depth,
        queue_capacity,
        spool,
    })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let gauges = Gauges {
        queue_depth: state.queue.depth(),
        queue_capacity: state.queue.capacity(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
}
