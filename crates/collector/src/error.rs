//! The collector's one error type, and the one place that turns it into an HTTP answer.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sightline_protocol::BatchError;

use crate::sentry::decode::DecodeError;
use crate::sentry::envelope::EnvelopeError;
use crate::sentry::event::EventError;

/// What a client is told to wait before retrying a refused ingest request, in seconds.
const RETRY_AFTER_SECS: &str = "1";

/// A source error from a backend or the OS, shareable so one failed group commit can
/// answer every request in it.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in the collector.
///
/// Client errors carry a message meant for the client; server errors keep their cause as
/// a `source` for the log and answer with a fixed reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body is not JSON of the expected shape.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// The metric batch failed `MetricBatch::validate`.
    #[error("invalid batch: {0}")]
    InvalidBatch(BatchError),
    /// The request body cannot be decompressed, or is too large once decompressed.
    #[error("{0}")]
    Decode(DecodeError),
    /// The Sentry envelope is malformed.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(EnvelopeError),
    /// A Sentry event is malformed or too large.
    #[error("invalid event: {0}")]
    InvalidEvent(EventError),
    /// A path or query parameter is malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The ingest request carries no project key (`sentry_key`).
    #[error("missing sentry_key")]
    MissingKey,
    /// The query API needs an admin token and the request has none, or a wrong one.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// The project key does not belong to the addressed project.
    #[error("sentry_key does not match the project")]
    WrongKey,
    /// No project has this id.
    #[error("project not found")]
    ProjectNotFound,
    /// No issue (or event, or switch) has this id.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with the current state (a switch that exists already, or
    /// one that moved past the version the client expected).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request body is larger than the endpoint accepts.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The ingest queue is full; the client should retry after a pause.
    #[error("ingest queue full")]
    QueueFull,
    /// The collector is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,
    /// The store failed or could not be reached.
    #[error("store unavailable")]
    Store(#[source] Source),
    /// A schema migration failed while opening the store.
    #[error("schema migration {version} failed")]
    Migration {
        /// Version of the failed migration.
        version: i64,
        /// Why it failed.
        #[source]
        source: Source,
    },
    /// The store was migrated by a newer build than this one.
    #[error("store schema version {0} is newer than this build knows")]
    SchemaTooNew(i64),
    /// The configuration cannot work.
    #[error("invalid config: {0}")]
    Config(&'static str),
    /// The data directory could not be created.
    #[error("cannot create the data directory")]
    DataDir(#[source] std::io::Error),
    /// A syslog listener could not bind its address.
    #[error("cannot bind a syslog listener")]
    Listen(#[source] std::io::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl Error {
    /// The status code a client sees for this error.
    fn status(&self) -> StatusCode {
        match self {
            Error::InvalidJson(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            // The protocol promises 413 for oversized batches; every other invalid batch is 400.
            Error::InvalidBatch(BatchError::TooManyWindows(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidBatch(_) => StatusCode::BAD_REQUEST,
            Error::Decode(DecodeError::TooLarge(_)) | Error::InvalidEvent(EventError::TooLarge) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::Decode(_) | Error::InvalidEnvelope(_) | Error::InvalidEvent(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::MissingKey | Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::WrongKey => StatusCode::FORBIDDEN,
            Error::ProjectNotFound | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Error::ShuttingDown
            | Error::Store(_)
            | Error::Migration { .. }
            | Error::SchemaTooNew(_)
            | Error::Config(_)
            | Error::DataDir(_)
            | Error::Listen(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // Client errors describe the client's own input; server errors get a fixed reason
        // so no internal detail (paths, SQL, driver text) reaches the client.
        let reason = if status.is_server_error() {
            match self {
                Error::ShuttingDown => "shutting down".to_owned(),
                _ => "service unavailable".to_owned(),
            }
        } else {
            self.to_string()
        };
        if status.is_server_error() {
            tracing::error!(error = &self as &dyn std::error::Error, %status, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request rejected");
        }
        let mut response = (status, Json(ErrorBody { error: &reason })).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
