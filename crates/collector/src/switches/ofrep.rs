//! OpenFeature Remote Evaluation Protocol (OFREP): any OpenFeature SDK with an OFREP
//! provider evaluates Sightline switches remotely, against the live snapshot.
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}` → `{"key", "value", "reason", "variant",
//!   "metadata"}`, or `{"key", "errorCode", "errorDetails"}` with 404 (`FLAG_NOT_FOUND`)
//!   or 400 (`PARSE_ERROR`, `INVALID_CONTEXT`).
//! - `POST /ofrep/v1/evaluate/flags` → `{"flags": [...]}` with an `ETag` over the snapshot
//!   version and the context; `If-None-Match` → 304.
//! - `GET /ofrep/v1/configuration` → what this server supports.
//!
//! Switches are boolean flags: `value` is `true`/`false`, `variant` is `on`/`off`.
//! The context's `targetingKey` is the user id; `ip` (or `ipAddress`), `host` and
//! `environment` fill those fields; every other string, number or boolean is an
//! attribute. Credentials as for the stream ([`Reader`]): a project key
//! (`Authorization: Bearer <public key>`, `X-Sentry-Auth`) or the admin token.
//!
//! The protocol fixes the error body, so these handlers answer their own error shape
//! rather than the collector's `{"error": …}`; credential and availability failures
//! still go through [`Error`].

use std::collections::BTreeMap;
use std::hash::Hasher;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use sightline_protocol::{EvalContext, Evaluation, Reason, Switch, SwitchSet};

use super::Switches;
use super::auth::Reader;
use super::stream::not_modified;
use crate::Error;
use crate::http::AppState;

/// Evaluation contexts are small; this bounds what a client can make us parse.
const BODY_LIMIT: usize = 64 * 1024;

/// Most attributes one context may carry.
const MAX_ATTRIBUTES: usize = 256;

pub(super) fn routes(state: AppState) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .route("/ofrep/v1/configuration", get(configuration))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// An OFREP error: the code the protocol names, details for the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    error_code: &'static str,
    error_details: String,
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self.error_code {
            "FLAG_NOT_FOUND" => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn with_key(mut self, key: &str) -> Failure {
        self.key = Some(key.to_owned());
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::debug!(code = self.error_code, details = %self.error_details, "ofrep request refused");
        (self.status(), Json(self)).into_response()
    }
}

fn parse_error(details: impl Into<String>) -> Failure {
    Failure {
        key: None,
        error_code: "PARSE_ERROR",
        error_details: details.into(),
    }
}

fn invalid_context(details: impl Into<String>) -> Failure {
    Failure {
        key: None,
        error_code: "INVALID_CONTEXT",
        error_details: details.into(),
    }
}

/// `{"context": {...}}` (an empty body is an empty context) → an [`EvalContext`].
fn context_of(body: &[u8]) -> Result<EvalContext, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvalContext::default());
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        let mut details = e.to_string();
        details.truncate(details.floor_char_boundary(200));
        parse_error(details)
    })?;
    let Value::Object(mut request) = request else {
        return Err(parse_error("the request body must be a JSON object"));
    };
    match request.remove("context") {
        None | Some(Value::Null) => Ok(EvalContext::default()),
        Some(Value::Object(context)) => eval_context(context),
        Some(_) => Err(invalid_context("context must be a JSON object")),
    }
}

fn eval_context(context: Map<String, Value>) -> Result<EvalContext, Failure> {
    if context.len() > MAX_ATTRIBUTES {
        return Err(invalid_context(format!(
            "context may have at most {MAX_ATTRIBUTES} attributes"
        )));
    }
    let mut ctx = EvalContext::default();
    for (name, value) in context {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(invalid_context(format!(
                    "context attribute {:?} must be a string, number or boolean",
                    name.chars().take(40).collect::<String>()
                )));
            }
        };
        match name.as_str() {
            "targetingKey" => ctx.user_id = Some(text),
            "ip" | "ipAddress" => {
                let ip = text
                    .trim()
                    .parse()
                    .map_err(|_| invalid_context(format!("context.{name} is not an IP address")))?;
                ctx.ip = Some(ip);
            }
            "host" => ctx.host = Some(text),
            "environment" => ctx.environment = Some(text),
            _ => {
                ctx.attributes.insert(name, text);
            }
        }
    }
    Ok(ctx)
}

/// A successful evaluation, as OFREP shapes it.
#[derive(Debug, Serialize)]
struct Success<'a> {
    key: &'a str,
    value: bool,
    reason: &'static str,
    variant: &'static str,
    metadata: BTreeMap<&'static str, Value>,
}

/// OpenFeature's reason for a Sightline evaluation.
fn reason(evaluation: Evaluation) -> &'static str {
    match evaluation.reason {
        Reason::On => "STATIC",
        Reason::Off => "DISABLED",
        Reason::Split => "SPLIT",
        Reason::Excluded | Reason::Matched => "TARGETING_MATCH",
        Reason::NoMatch | Reason::Default => "DEFAULT",
    }
}

fn success<'a>(set: &SwitchSet, switch: &'a Switch, evaluation: Evaluation) -> Success<'a> {
    let mut metadata = BTreeMap::new();
    metadata.insert("state", Value::from(switch.state.as_str()));
    metadata.insert("version", Value::from(set.version()));
    if evaluation.inherited {
        metadata.insert("inherited", Value::from(true));
    }
    Success {
        key: &switch.key,
        value: evaluation.active,
        reason: reason(evaluation),
        variant: if evaluation.active { "on" } else { "off" },
        metadata,
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`
async fn evaluate_one(
    _: Reader,
    State(switches): State<Switches>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    switches.store()?;
    let ctx = match context_of(&body) {
        Ok(ctx) => ctx,
        Err(failure) => return Ok(failure.with_key(&key).into_response()),
    };
    let current = switches.current();
    let (Some(evaluation), Some(switch)) =
        (current.set.evaluate(&key, &ctx), current.set.get(&key))
    else {
        return Ok(Failure {
            key: Some(key),
            error_code: "FLAG_NOT_FOUND",
            error_details: "no switch has this key".to_owned(),
        }
        .into_response());
    };
    Ok(Json(success(&current.set, switch, evaluation)).into_response())
}

/// `POST /ofrep/v1/evaluate/flags`: every switch for one context.
async fn evaluate_all(
    _: Reader,
    State(switches): State<Switches>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    switches.store()?;
    let ctx = match context_of(&body) {
        Ok(ctx) => ctx,
        Err(failure) => return Ok(failure.into_response()),
    };
    let current = switches.current();
    // The answer depends on the snapshot and the context, so both go into the tag.
    let mut hash = FnvHasher::default();
    hash.write(&serde_json::to_vec(&ctx).unwrap_or_default());
    let etag = format!("\"{}-{:016x}\"", current.version(), hash.finish());
    let etag_value =
        HeaderValue::from_str(&etag).map_err(|e| Error::Store(std::sync::Arc::new(e)))?;
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let flags: Vec<Success<'_>> = current
        .set
        .switches()
        .filter_map(|switch| {
            let evaluation = current.set.evaluate(&switch.key, &ctx)?;
            Some(success(&current.set, switch, evaluation))
        })
        .collect();
    Ok((
        [(header::ETAG, etag_value)],
        Json(serde_json::json!({ "flags": flags })),
    )
        .into_response())
}

/// `GET /ofrep/v1/configuration`
async fn configuration(_: Reader) -> Json<Value> {
    Json(serde_json::json!({
        "name": "sightline",
        "capabilities": {
            "cacheInvalidation": {
                "polling": { "enabled": true, "minPollingIntervalMs": 1000 }
            },
            "flagEvaluation": { "supportedTypes": ["boolean"] }
        }
    }))
}

/// 64-bit FNV-1a for the bulk ETag: stable across restarts, so clients' tags stay good.
struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_map_onto_eval_contexts() {
        let ctx = context_of(
            br#"{"context": {"targetingKey": "u1", "ipAddress": "10.0.0.1", "host": "web-1",
                 "environment": "prod", "plan": "pro", "seats": 5, "beta": true, "gone": null}}"#,
        )
        .unwrap();
        assert_eq!(ctx.user_id.as_deref(), Some("u1"));
        assert_eq!(ctx.ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ctx.host.as_deref(), Some("web-1"));
        assert_eq!(ctx.environment.as_deref(), Some("prod"));
        assert_eq!(ctx.attributes.len(), 3);
        assert_eq!(ctx.attributes["seats"], "5");
        assert_eq!(context_of(b"").unwrap(), EvalContext::default());
        assert_eq!(context_of(b"{}").unwrap(), EvalContext::default());
        for (body, code) in [
            (&b"{"[..], "PARSE_ERROR"),
            (b"[1]", "PARSE_ERROR"),
            (br#"{"context": 3}"#, "INVALID_CONTEXT"),
            (br#"{"context": {"ip": "nope"}}"#, "INVALID_CONTEXT"),
            (br#"{"context": {"tags": ["a"]}}"#, "INVALID_CONTEXT"),
        ] {
            assert_eq!(context_of(body).unwrap_err().error_code, code);
        }
    }
}
