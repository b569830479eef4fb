//! Ingest endpoints, for agents and SDKs: authenticate, check, enqueue, wait for the
//! group commit, answer.
//!
//! - `POST /api/{project_id}/metrics`: the agent's metric batches.
//! - `POST /api/{project_id}/envelope/` and `/store/` (with or without the slash): Sentry
//!   envelopes and bare events from any Sentry SDK, compressed or not, with CORS so
//!   browser SDKs can send them too.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use sightline_protocol::MetricBatch;
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;

use super::AppState;
use super::extract::{AuthedProject, ClaimedProject};
use crate::Error;
use crate::metrics::{Endpoint, Metrics};
use crate::query::unix_now;
use crate::sentry::decode::{self, Encoding};
use crate::sentry::envelope::{self, counted_type};
use crate::sentry::event::{self, normalize_uuid};
use crate::store::{EnvelopeIngest, EventRecord, Ingest, MetricsIngest, StoredPayload};
use crate::writer::IngestQueue;

/// Longest parse-error message echoed back to a client.
const MAX_REASON_LEN: usize = 200;

/// Bodies up to this size (as sent) are decoded and read on the request's own task;
/// larger ones on the blocking pool, so a 20 MiB envelope does not stall other requests.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// An SDK whose clock runs ahead by more than this gets its event timestamped on arrival.
const MAX_CLOCK_DRIFT_SECS: f64 = 60.0;

/// What browsers may send cross-origin: everything the Sentry browser SDKs send.
const CORS_ALLOW_HEADERS: &str = "x-sentry-auth, x-requested-with, origin, accept, \
    content-type, content-encoding, authorization, authentication, sentry-trace, baggage";

/// Ingest routes, each with its own body limit and counted per outcome.
///
/// Counting and CORS map the response in place (`MapResponseLayer`): unlike `from_fn`
/// middleware, they box neither the inner service nor its future, on every request of
/// the ingest path.
pub(crate) fn routes(state: AppState) -> Router {
    // Every answer of the endpoint by status, rejections by the body limit and extractors
    // included. One layer of the two: each `layer` call boxes the route again, a clone
    // and a boxed future on every request.
    let limited_and_counted = |limit, endpoint| {
        let metrics = state.metrics.clone();
        ServiceBuilder::new()
            .layer(MapResponseLayer::new(move |response: Response| {
                metrics.record_request(endpoint, response.status());
                response
            }))
            .layer(DefaultBodyLimit::max(limit))
    };
    let sentry = |handler: MethodRouter<AppState>, endpoint| {
        handler
            .layer::<_, Infallible>(limited_and_counted(state.max_envelope_bytes, endpoint))
            // Preflights are answered here, neither counted nor limited; the CORS layer
            // wraps both so every answer, errors included, can be read by a browser.
            .options(preflight)
            .layer(MapResponseLayer::new(cors))
    };
    let envelope = sentry(post(envelope), Endpoint::Envelope);
    let store = sentry(post(store), Endpoint::Store);
    Router::new()
        .route(
            "/api/{project_id}/metrics",
            post(metrics_batch).layer::<_, Infallible>(limited_and_counted(
                state.max_body_bytes,
                Endpoint::Metrics,
            )),
        )
        // SDKs add the trailing slash; hand-written clients often leave it out.
        .route("/api/{project_id}/envelope/", envelope.clone())
        .route("/api/{project_id}/envelope", envelope)
        .route("/api/{project_id}/store/", store.clone())
        .route("/api/{project_id}/store", store)
        .with_state(state)
}

/// Lets any origin read the answer: browser SDKs report from every site that uses them,
/// and the project key, not the origin, authenticates.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-sentry-error, x-sentry-rate-limits, retry-after"),
    );
    response
}

/// `OPTIONS` preflight of a browser SDK.
async fn preflight() -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_ALLOW_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, "3600"),
        ],
    )
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
    let body = read_body(body)?;
    // serde's message describes the client's own payload (field, line, column); it is
    // capped because it can quote the input.
    let batch: MetricBatch = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidJson(truncate(e.to_string(), MAX_REASON_LEN)))?;
    batch.validate().map_err(Error::InvalidBatch)?;
    let windows = batch.windows.len();
    let ack = queue
        .submit(Ingest::Metrics(MetricsIngest {
            project_id: project.id,
            received_at: unix_now(),
            batch,
        }))
        .inspect_err(|e| {
            if matches!(e, Error::QueueFull) {
                metrics.record_queue_full();
            }
        })?;
    // The writer acks every op it takes; a dropped ack means it is gone.
    ack.await.map_err(|_| Error::ShuttingDown)??;
    Ok(Json(Accepted { accepted: windows }))
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
        _ => Error::BadRequest("could not read the request body".to_owned()),
    })
}

/// Sentry's answer to an accepted envelope or event.
#[derive(Debug, Serialize)]
struct EventAccepted {
    /// The (first) event's id; absent for envelopes without an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// Which Sentry endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SentryBody {
    /// `/envelope/`: an envelope, possibly authenticated by its header's `dsn`.
    Envelope,
    /// `/store/`: one bare event.
    Store,
}

/// `POST /api/{project_id}/envelope/`
async fn envelope(
    State(state): State<AppState>,
    claimed: ClaimedProject,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventAccepted>, Error> {
    accept_sentry(
        state,
        claimed,
        &headers,
        read_body(body)?,
        SentryBody::Envelope,
    )
    .await
}

/// `POST /api/{project_id}/store/`
async fn store(
    State(state): State<AppState>,
    claimed: ClaimedProject,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventAccepted>, Error> {
    accept_sentry(
        state,
        claimed,
        &headers,
        read_body(body)?,
        SentryBody::Store,
    )
    .await
}

/// Decodes, checks and enqueues a Sentry body; answers once it is committed.
async fn accept_sentry(
    state: AppState,
    claimed: ClaimedProject,
    headers: &HeaderMap,
    body: Bytes,
    kind: SentryBody,
) -> Result<Json<EventAccepted>, Error> {
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(Error::Decode)?;
    let max_decoded = state.max_decompressed_bytes;
    let now = unix_now_f64();
    // The body's size as sent decides: a small one is cheap to read, and a small bomb
    // is cut off by the decoder's cap.
    let inline = body.len() <= INLINE_BODY_BYTES;
    // The body goes once it is read, not after the commit: it is a slice of the
    // connection's read buffer, which would otherwise stay shared while the request
    // waits for its commit.
    let prepare = move || {
        let prepared = prepare(&body, encoding, max_decoded, kind, claimed, now);
        drop(body);
        prepared
    };
    let (ingest, id) = if inline {
        prepare()?
    } else {
        tokio::task::spawn_blocking(prepare)
            .await
            .map_err(|e| Error::Store(Arc::new(e)))??
    };
    let items = ingest.items.clone();
    let ack = state
        .queue
        .submit(Ingest::Envelope(ingest))
        .inspect_err(|e| {
            if matches!(e, Error::QueueFull) {
                state.metrics.record_queue_full();
            }
        })?;
    ack.await.map_err(|_| Error::ShuttingDown)??;
    state.metrics.record_items(&items);
    Ok(Json(EventAccepted { id }))
}

/// Decodes the body, authenticates (the envelope header's `dsn` counts as a key), reads
/// every item, and returns the op to enqueue with the id to answer.
fn prepare(
    body: &[u8],
    encoding: Encoding,
    max_decoded: usize,
    kind: SentryBody,
    claimed: ClaimedProject,
    now: f64,
) -> Result<(EnvelopeIngest, Option<String>), Error> {
    let decoded = decode::decode(body, encoding, max_decoded).map_err(Error::Decode)?;
    let mut events = Vec::new();
    let mut items: Vec<(&'static str, u64)> = Vec::new();
    let mut count = |item_type: &str| {
        let item_type = counted_type(item_type);
        match items.iter_mut().find(|(t, _)| *t == item_type) {
            Some((_, n)) => *n += 1,
            None => items.push((item_type, 1)),
        }
    };
    let project = match kind {
        SentryBody::Store => {
            let project = claimed.authorize(None)?;
            let fallback = fresh_event_id();
            events.push(event_record(&decoded, &fallback, now)?);
            count("event");
            project
        }
        SentryBody::Envelope => {
            let envelope = envelope::parse(&decoded).map_err(Error::InvalidEnvelope)?;
            let project = claimed.authorize(envelope::dsn_public_key(&envelope.headers))?;
            let mut header_id = envelope
                .headers
                .get("event_id")
                .and_then(|id| id.as_str())
                .and_then(normalize_uuid);
            for item in &envelope.items {
                count(&item.ty);
                // Only `event` items become issues; every other type is counted and
                // otherwise skipped, whatever it is, so new SDK item types never fail.
                if item.ty == "event" {
                    let fallback = header_id.take().unwrap_or_else(fresh_event_id);
                    events.push(event_record(item.payload, &fallback, now)?);
                }
            }
            project
        }
    };
    let id = events.first().map(|e| e.event_id.clone());
    Ok((
        EnvelopeIngest {
            project_id: project.id,
            received_at: now,
            events,
            items,
        },
        id,
    ))
}

/// One bare event (what `/store/` takes) of an already authenticated project, as an
/// op for the writer: the way in for events that arrive over syslog.
pub(crate) fn bare_event(project_id: u64, payload: &[u8]) -> Result<EnvelopeIngest, Error> {
    let now = unix_now_f64();
    let event = event_record(payload, &fresh_event_id(), now)?;
    Ok(EnvelopeIngest {
        project_id,
        received_at: now,
        events: vec![event],
        items: vec![(counted_type("event"), 1)],
    })
}

/// Reads one event payload into what the store keeps.
fn event_record(payload: &[u8], fallback_id: &str, now: f64) -> Result<EventRecord, Error> {
    let event = event::read(payload, fallback_id, now).map_err(Error::InvalidEvent)?;
    Ok(EventRecord {
        event_id: event.event_id,
        // A clock far ahead would put the event in the future of every list.
        timestamp: if event.timestamp > now + MAX_CLOCK_DRIFT_SECS {
            now
        } else {
            event.timestamp
        },
        level: event.level,
        title: event.title,
        culprit: event.culprit,
        platform: event.platform,
        environment: event.environment,
        release: event.release,
        user: event.user,
        tags_json: json(&event.tags),
        tags: event.tags,
        hash: event.grouping.hash,
        grouped_by: event.grouping.grouped_by.as_str(),
        grouping_values: json(&event.grouping.values),
        payload: StoredPayload::compress(&event.payload),
    })
}

/// Serialises what cannot fail to serialise (string-keyed values only).
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn fresh_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
