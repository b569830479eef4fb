//! Operational routes: the health check and the deliberately flaky endpoint.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::error::AppError;

/// Share of `GET /flaky` requests that fail.
const FLAKY_FAILURE_RATE: f64 = 0.10;

/// `GET /flaky`: 500 with probability [`FLAKY_FAILURE_RATE`], else 200, so
/// the dashboard has an error rate to show.
pub(crate) async fn flaky() -> Result<Json<Value>, AppError> {
    if fastrand::f64() < FLAKY_FAILURE_RATE {
        return Err(AppError::Simulated);
    }
    Ok(Json(json!({ "status": "ok" })))
}

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
pub(crate) async fn healthz(State(db): State<SqlitePool>) -> Result<Json<Value>, AppError> {
    sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(&db)
        .await
        .map_err(AppError::Unavailable)?;
    Ok(Json(json!({ "status": "ok" })))
}
