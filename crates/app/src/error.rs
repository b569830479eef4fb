//! The one error type of the HTTP API, and the one place that maps it to
//! status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// The request failed validation; the reason is safe to show to clients.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The addressed thread, comment, user or game does not exist.
    #[error("not found")]
    NotFound,
    /// The request body is larger than the route accepts.
    #[error("payload too large")]
    PayloadTooLarge,
    /// `GET /flaky` chose to fail this request.
    #[error("simulated failure")]
    Simulated,
    /// The database does not answer the health check.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A query failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, reason) = match &self {
            AppError::BadRequest(reason) => (StatusCode::BAD_REQUEST, *reason),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found"),
            AppError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
            AppError::Simulated => (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
            AppError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        match &self {
            AppError::Db(source) | AppError::Unavailable(source) => {
                tracing::error!(error = %source, status = status.as_u16(), "request failed");
                sightline_agent::capture_error(&self);
            }
            // Failing is this route's job; logging it at error level would
            // bury real errors under one line per simulated one.
            AppError::Simulated => tracing::debug!("simulated failure"),
            _ => tracing::debug!(%reason, status = status.as_u16(), "request rejected"),
        }
        (status, Json(json!({ "error": reason }))).into_response()
    }
}
