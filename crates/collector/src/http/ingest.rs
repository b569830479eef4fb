//! Ingest endpoints, for agents and SDKs: authenticate, check, enqueue, wait for the
//! group commit, answer.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use sightline_protocol::MetricBatch;

use super::AppState;
use super::extract::AuthedProject;
use crate::Error;
use crate::metrics::{Endpoint, Metrics};
use crate::query::unix_now;
use crate::store::Ingest;
use crate::writer::IngestQueue;

/// Longest parse-error message echoed back to a client.
const MAX_REASON_LEN: usize = 200;

/// `POST /api/{project_id}/metrics`, limited to `max_body_bytes` and counted per outcome.
pub(crate) fn routes(state: AppState) -> Router {
    let counting = (state.metrics.clone(), Endpoint::Metrics);
    Router::new()
        .route(
            "/api/{project_id}/metrics",
            post(metrics_batch)
                .layer(DefaultBodyLimit::max(state.max_body_bytes))
                .layer(middleware::from_fn_with_state(counting, count_outcome)),
        )
        .with_state(state)
}

/// Counts every answer of an ingest endpoint by status, rejections by extractors included.
async fn count_outcome(
    State((metrics, endpoint)): State<(Arc<Metrics>, Endpoint)>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    metrics.record_request(endpoint, response.status());
    response
}

#[derive(Debug, Serialize)]
struct Accepted {
    /// Windows in the batch, all committed.
    accepted: usize,
}

/// Answers 200 only once the batch is committed to the store.
async fn metrics_batch(
    State(queue): State<IngestQueue>,
    State(metrics): State<Arc<Metrics>>,
    AuthedProject(project): AuthedProject,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, Error> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        _ => Error::BadRequest("could not read the request body".to_owned()),
    })?;
    // serde's message describes the client's own payload (field, line, column); it is
    // capped because it can quote the input.
    let batch: MetricBatch = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidJson(truncate(e.to_string(), MAX_REASON_LEN)))?;
    batch.validate().map_err(Error::InvalidBatch)?;
    let windows = batch.windows.len();
    let ack = queue
        .submit(Ingest {
            project_id: project.id,
            received_at: unix_now(),
            batch,
        })
        .inspect_err(|e| {
            if matches!(e, Error::QueueFull) {
                metrics.record_queue_full();
            }
        })?;
    // The writer acks every op it takes; a dropped ack means it is gone.
    ack.await.map_err(|_| Error::ShuttingDown)??;
    Ok(Json(Accepted { accepted: windows }))
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        assert_eq!(truncate("aéé".into(), 2), "a…");
    }
}
