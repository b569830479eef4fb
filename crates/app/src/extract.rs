//! Extractors whose rejections are [`AppError`]s, so malformed input gets the
//! same short JSON error as everything else instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A positive integer id from the route's single `{id}` segment.
pub(crate) struct Id(pub(crate) i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<i64>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::BadRequest("invalid id"))?;
        if id > 0 {
            Ok(Id(id))
        } else {
            Err(AppError::BadRequest("invalid id"))
        }
    }
}

/// A JSON request body.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::PayloadTooLarge)
            }
            Err(rejection) => {
                tracing::debug!(%rejection, "invalid json body");
                // A client sending bodies we cannot read is a bug on one side or the
                // other: worth an error event with the request and the serde error.
                sightline_agent::capture_error(&rejection);
                Err(AppError::BadRequest("invalid json body"))
            }
        }
    }
}

/// Query-string parameters.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(value) =
            Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    tracing::debug!(%rejection, "invalid query string");
                    AppError::BadRequest("invalid query parameters")
                })?;
        Ok(Params(value))
    }
}
