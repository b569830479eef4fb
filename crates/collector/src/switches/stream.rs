//! How agents get the live switch set: `GET /api/0/switches/stream` (server-sent
//! events) and `GET /api/0/switches/snapshot` (ETag polling, the fallback).
//!
//! The stream sends `event: snapshot` (the whole set) on connect, then `event: change`
//! per committed change (`{"version", "previous", "switch"}`), each with `id:` the set
//! version, and a `: keep-alive` comment every [`KEEP_ALIVE`]. A subscriber that falls
//! more than the broadcast capacity behind gets a fresh snapshot instead of the changes
//! it missed. Streams end when the server shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::{broadcast, watch};

use super::auth::Reader;
use super::{Current, Published, Switches};
use crate::Error;
use crate::http::AppState;

/// Interval of keep-alive comments: well under common proxy idle timeouts, and what
/// agents use to notice a dead connection.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/api/0/switches/stream", get(stream))
        .route("/api/0/switches/stream/", get(stream))
        .route("/api/0/switches/snapshot", get(snapshot))
        .route("/api/0/switches/snapshot/", get(snapshot))
        .with_state(state)
}

/// Whether `If-None-Match` names `etag` (or `*`).
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `GET /api/0/switches/snapshot`: the whole set with its ETag; 304 when unchanged.
async fn snapshot(
    _: Reader,
    State(switches): State<Switches>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    switches.store()?;
    let current = switches.current();
    let etag = current.etag();
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| Error::Store(Arc::new(e)))?;
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        current.json.clone(),
    )
        .into_response())
}

fn snapshot_event(current: &Current) -> Event {
    Event::default()
        .event("snapshot")
        .id(current.version().to_string())
        // Serialised by serde_json, which never emits a raw newline.
        .data(String::from_utf8_lossy(&current.json))
}

fn change_event(change: &Published) -> Event {
    Event::default()
        .event("change")
        .id(change.version.to_string())
        .data(&change.json)
}

/// What one open stream keeps between events.
struct Subscriber {
    switches: Switches,
    changes: broadcast::Receiver<Arc<Published>>,
    closing: watch::Receiver<bool>,
    /// Version the client has: changes up to it are already in what it got.
    version: u64,
    /// The snapshot to send first.
    first: Option<Event>,
}

impl Subscriber {
    async fn next(&mut self) -> Option<Event> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            tokio::select! {
                // `wait_for` fails only when the sender is gone: the service is gone too.
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.changes.recv() => match received {
                    // Committed before the snapshot this client got was taken.
                    Ok(change) if change.version <= self.version => {}
                    Ok(change) => {
                        self.version = change.version;
                        return Some(change_event(&change));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "switch stream lagged; sending a fresh snapshot");
                        let current = self.switches.current();
                        self.version = current.version();
                        return Some(snapshot_event(&current));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// `GET /api/0/switches/stream`
async fn stream(
    _: Reader,
    State(switches): State<Switches>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    switches.store()?;
    // Subscribe before reading the snapshot: a change committed in between is then
    // either in the snapshot (and skipped by version) or delivered after it.
    let changes = switches.subscribe();
    let closing = switches.closing.subscribe();
    let current = switches.current();
    let subscriber = Subscriber {
        version: current.version(),
        first: Some(snapshot_event(&current)),
        switches,
        changes,
        closing,
    };
    let events = futures_util::stream::unfold(subscriber, |mut subscriber| async move {
        let event = subscriber.next().await?;
        Some((Ok(event), subscriber))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}
