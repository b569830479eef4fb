//! Who may do what with switches.
//!
//! - Changing and reading definitions, history and audit: the admin token (as the rest of
//!   `/api/0/`), when one is configured.
//! - Reading the live switch set (the stream, the snapshot, OFREP): the admin token or
//!   any project's public key, as `Authorization: Bearer <key>`, `X-Sentry-Auth:
//!   Sentry sentry_key=<key>` or `?sentry_key=`. Apps hold their project key, never the
//!   admin token.
//!
//! Without a configured admin token every route is open, like the rest of the query API.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::http::AppState;
use crate::http::extract::{SentryKey, constant_time_eq};
use crate::{Error, Query};

/// The name audit rows record for changes made with the admin token (or on an open API).
pub(crate) const ADMIN_ACTOR: &str = "admin";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim())
}

fn is_admin(parts: &Parts, token: &str) -> bool {
    bearer(&parts.headers).is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// A request allowed to change switches; carries the actor for the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if let Some(token) = &state.admin_token
            && !is_admin(parts, token)
        {
            return Err(Error::Unauthorized);
        }
        Ok(Admin {
            actor: ADMIN_ACTOR.to_owned(),
        })
    }
}

/// A request allowed to read the live switch set: an admin or an app.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(token) = &state.admin_token else {
            return Ok(Reader);
        };
        if is_admin(parts, token) {
            return Ok(Reader);
        }
        let key = match SentryKey::from_request_parts(parts, state).await {
            Ok(SentryKey(key)) => key,
            Err(_) => bearer(&parts.headers)
                .map(str::to_owned)
                .ok_or(Error::Unauthorized)?,
        };
        let projects = Query::from_ref(state).projects().await?;
        if projects
            .iter()
            .any(|p| constant_time_eq(p.public_key.as_bytes(), key.as_bytes()))
        {
            Ok(Reader)
        } else {
            Err(Error::Unauthorized)
        }
    }
}
