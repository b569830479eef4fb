//! `/api/0/switches/…` and `/api/0/audit/`: list, read, create, change, revert, history,
//! audit log and stale-switch hints. Admin credential required when one is configured.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sightline_protocol::{Condition, Switch, SwitchState};

use super::auth::Admin;
use super::{Action, AuditFilter, ChangeMeta, ChangeRecord, SwitchRecord, Switches};
use crate::Error;
use crate::http::AppState;
use crate::http::extract::ApiQuery;
use crate::query::unix_now;

/// Top-level keys that name endpoints under `/api/0/switches/` and so cannot be switches.
const RESERVED_KEYS: &[&str] = &["stale", "stream", "snapshot"];

/// A definition with 32 conditions of 1,000 values each is about 8 MB of JSON at worst;
/// real ones are a few KB. 1 MiB bounds what a client can make us buffer.
const BODY_LIMIT: usize = 1024 * 1024;

/// Audit rows per page by default, and at most.
const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1_000;

/// Stale hints look this many days back by default, and at most.
const DEFAULT_STALE_DAYS: i64 = 30;
const MAX_STALE_DAYS: i64 = 3_650;

/// Longest reason kept in the audit log.
const MAX_REASON_LEN: usize = 1_024;

pub(super) fn routes(state: AppState) -> Router {
    let endpoints: [(&str, MethodRouter<AppState>); 6] = [
        ("/api/0/switches/", get(list).post(create)),
        ("/api/0/switches/stale/", get(stale)),
        ("/api/0/switches/{key}/", get(read).patch(update)),
        ("/api/0/switches/{key}/revert/", post(revert)),
        ("/api/0/switches/{key}/history/", get(history)),
        ("/api/0/audit/", get(audit)),
    ];
    endpoints
        .into_iter()
        // As the rest of /api/0/: with or without the trailing slash.
        .fold(Router::new(), |router, (path, endpoint)| {
            router
                .route(path, endpoint.clone())
                .route(path.trim_end_matches('/'), endpoint)
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Parses a JSON body whatever its content type (scripts often send none).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let mut reason = e.to_string();
        reason.truncate(reason.floor_char_boundary(200));
        Error::InvalidJson(reason)
    })
}

pub(super) fn reason_of(reason: Option<String>) -> Result<String, Error> {
    let reason = reason.unwrap_or_default();
    if reason.len() > MAX_REASON_LEN {
        return Err(Error::BadRequest(format!(
            "reason must be at most {MAX_REASON_LEN} bytes"
        )));
    }
    Ok(reason)
}

/// `GET /api/0/switches/`
async fn list(
    _: Admin,
    State(switches): State<Switches>,
) -> Result<Json<Vec<SwitchRecord>>, Error> {
    let (_, records) = switches.store()?.load_switches().await?;
    Ok(Json(records))
}

/// `POST /api/0/switches/`: a definition plus `reason`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    key: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    default: bool,
    #[serde(default = "off")]
    state: SwitchState,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    exclusions: Vec<Condition>,
    reason: Option<String>,
}

fn off() -> SwitchState {
    SwitchState::Off
}

async fn create(
    Admin { actor }: Admin,
    State(switches): State<Switches>,
    body: Bytes,
) -> Result<(StatusCode, Json<SwitchRecord>), Error> {
    let body: CreateBody = parse(&body)?;
    let meta = ChangeMeta {
        actor,
        reason: reason_of(body.reason)?,
        expected_version: None,
    };
    let switch = Switch {
        key: body.key,
        label: body.label,
        description: body.description,
        owner: body.owner,
        default: body.default,
        state: body.state,
        conditions: body.conditions,
        exclusions: body.exclusions,
    };
    let key = switch.key.clone();
    if RESERVED_KEYS.contains(&key.as_str()) {
        return Err(Error::BadRequest(format!(
            "invalid switch: {key:?} is reserved, choose another key"
        )));
    }
    let record = switches
        .change(&key, Action::Create, meta, |existing| match existing {
            Some(_) => Err(Error::Conflict("a switch with this key exists".to_owned())),
            None => Ok(switch),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// `GET /api/0/switches/{key}`
async fn read(
    _: Admin,
    State(switches): State<Switches>,
    Path(key): Path<String>,
) -> Result<Json<SwitchRecord>, Error> {
    switches
        .store()?
        .switch(&key)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("switch"))
}

/// `PATCH /api/0/switches/{key}`: the fields to change, `reason`, and optionally the
/// `expected_version` the client last saw (409 if the switch moved on since).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    state: Option<SwitchState>,
    label: Option<String>,
    description: Option<String>,
    owner: Option<String>,
    default: Option<bool>,
    conditions: Option<Vec<Condition>>,
    exclusions: Option<Vec<Condition>>,
    reason: Option<String>,
    expected_version: Option<u64>,
}

async fn update(
    Admin { actor }: Admin,
    State(switches): State<Switches>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<SwitchRecord>, Error> {
    let body: PatchBody = parse(&body)?;
    let meta = ChangeMeta {
        actor,
        reason: reason_of(body.reason)?,
        expected_version: body.expected_version,
    };
    let record = switches
        .change(&key, Action::Update, meta, |existing| {
            let mut switch = existing.ok_or(Error::NotFound("switch"))?.switch.clone();
            if let Some(state) = body.state {
                switch.state = state;
            }
            if let Some(label) = body.label {
                switch.label = label;
            }
            if let Some(description) = body.description {
                switch.description = description;
            }
            if let Some(owner) = body.owner {
                switch.owner = owner;
            }
            if let Some(default) = body.default {
                switch.default = default;
            }
            if let Some(conditions) = body.conditions {
                switch.conditions = conditions;
            }
            if let Some(exclusions) = body.exclusions {
                switch.exclusions = exclusions;
            }
            Ok(switch)
        })
        .await?;
    Ok(Json(record))
}

/// `POST /api/0/switches/{key}/revert`: back to the definition of an earlier version,
/// recorded as a new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevertBody {
    version: u64,
    reason: Option<String>,
    expected_version: Option<u64>,
}

async fn revert(
    Admin { actor }: Admin,
    State(switches): State<Switches>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<SwitchRecord>, Error> {
    let body: RevertBody = parse(&body)?;
    let meta = ChangeMeta {
        actor,
        reason: reason_of(body.reason)?,
        expected_version: body.expected_version,
    };
    let record = switches.revert(&key, body.version, meta).await?;
    Ok(Json(record))
}

/// `GET /api/0/switches/{key}/history`: newest first.
async fn history(
    _: Admin,
    State(switches): State<Switches>,
    Path(key): Path<String>,
) -> Result<Json<Vec<ChangeRecord>>, Error> {
    let history = switches.store()?.switch_history(&key).await?;
    if history.is_empty() {
        return Err(Error::NotFound("switch"));
    }
    Ok(Json(history))
}

#[derive(Debug, Default, Deserialize)]
struct AuditParams {
    limit: Option<u32>,
    /// Only changes with a smaller id: the next page after the last row seen.
    before: Option<u64>,
    /// Only changes at or after this unix second.
    since: Option<i64>,
    /// Only changes before this unix second.
    until: Option<i64>,
}

/// `GET /api/0/audit/`: every switch change, newest first.
async fn audit(
    _: Admin,
    State(switches): State<Switches>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<Vec<ChangeRecord>>, Error> {
    let limit = params.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(Error::BadRequest(format!(
            "limit must be 1 to {MAX_AUDIT_LIMIT}"
        )));
    }
    Ok(Json(
        switches
            .store()?
            .switch_audit(
                limit,
                &AuditFilter {
                    before: params.before,
                    since: params.since,
                    until: params.until,
                },
            )
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
struct StaleParams {
    days: Option<i64>,
}

/// A switch worth removing, and why.
#[derive(Debug, Serialize)]
struct StaleHint {
    key: String,
    state: SwitchState,
    owner: String,
    /// `not_evaluated` and/or `fully_on`.
    reasons: Vec<&'static str>,
    /// UTC day (unix seconds) of the last reported check, if any.
    last_evaluated: Option<i64>,
    /// Unix seconds since the state last changed.
    state_since: i64,
}

/// `GET /api/0/switches/stale?days=30`: switches no agent checked in `days` days, or on
/// for everyone for `days` days: candidates for removal from the code.
async fn stale(
    _: Admin,
    State(switches): State<Switches>,
    ApiQuery(params): ApiQuery<StaleParams>,
) -> Result<Json<Vec<StaleHint>>, Error> {
    let days = params.days.unwrap_or(DEFAULT_STALE_DAYS);
    if !(1..=MAX_STALE_DAYS).contains(&days) {
        return Err(Error::BadRequest(format!(
            "days must be 1 to {MAX_STALE_DAYS}"
        )));
    }
    let now = unix_now();
    let cutoff = now - days * 86_400;
    let usage = switches
        .store()?
        .switch_usage(cutoff.div_euclid(86_400))
        .await?;
    let hints = usage
        .into_iter()
        .filter_map(|u| {
            let mut reasons = Vec::new();
            // A switch younger than the window has not had the chance to be checked.
            if u.recent_evaluations == 0 && u.record.created_at <= cutoff {
                reasons.push("not_evaluated");
            }
            if u.record.switch.state == SwitchState::On && u.record.state_since <= cutoff {
                reasons.push("fully_on");
            }
            (!reasons.is_empty()).then(|| StaleHint {
                key: u.record.switch.key,
                state: u.record.switch.state,
                owner: u.record.switch.owner,
                reasons,
                last_evaluated: u.last_evaluated_day.map(|d| d * 86_400),
                state_since: u.record.state_since,
            })
        })
        .collect();
    Ok(Json(hints))
}
