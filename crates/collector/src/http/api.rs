//! The `/api/0/` query API: JSON over the read side, named as Sentry's API names things.
//! Request metrics live here; issues and events in [`super::issues`].

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde::Deserialize;
use sightline_protocol::{RouteStats, SeriesPoint};

use super::AppState;
use super::extract::{ApiQuery, ProjectId, constant_time_eq};
use crate::query::unix_now;
use crate::{Error, Project, Query, TimeRange};

/// Range used when a request names none.
const DEFAULT_PERIOD: &str = "1h";

/// Longest `statsPeriod` accepted.
const MAX_PERIOD_SECS: i64 = 90 * 86_400;

/// Default series step, seconds.
const DEFAULT_INTERVAL: i64 = 60;

/// The query API reads only small bodies (issue status changes); this bounds what a
/// client can make it buffer.
const BODY_LIMIT: usize = 64 * 1024;

/// Every `/api/0/` route, behind the admin token when one is configured.
pub(crate) fn routes(state: AppState) -> Router {
    let endpoints: [(&str, MethodRouter<AppState>); 4] = [
        ("/api/0/projects/", get(projects)),
        (
            "/api/0/projects/{project_id}/environments/",
            get(environments),
        ),
        ("/api/0/projects/{project_id}/routes/", get(route_stats)),
        ("/api/0/projects/{project_id}/series/", get(series)),
    ];
    let token = state.admin_token.clone();
    endpoints
        .into_iter()
        .chain(super::issues::endpoints())
        .chain(super::logs::endpoints())
        .chain(crate::insight::api::endpoints())
        // Sentry's paths end in a slash; scripts often leave it out, so both are served.
        .fold(Router::new(), |router, (path, endpoint)| {
            router
                .route(path, endpoint.clone())
                .route(path.trim_end_matches('/'), endpoint)
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(token, require_admin))
        .with_state(state)
}

/// 401 unless the request carries `Authorization: Bearer <admin token>`, when one is set.
async fn require_admin(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    if let Some(token) = token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, given)| given.trim());
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
            return Err(Error::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// `?since=&until=` (unix seconds) or `?statsPeriod=15m|1h|24h|7d|30d` (default 1h).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RangeParams {
    since: Option<i64>,
    until: Option<i64>,
    #[serde(rename = "statsPeriod")]
    stats_period: Option<String>,
}

impl RangeParams {
    /// Ranges that end "now" end with the current second, not at its start: the window
    /// that opened this second (and so the request that just arrived) is in "the last hour".
    pub(crate) fn resolve(&self, now: i64) -> Result<TimeRange, Error> {
        let now = now.saturating_add(1);
        match (self.since, self.until, self.stats_period.as_deref()) {
            (None, None, period) => {
                let secs = parse_period(period.unwrap_or(DEFAULT_PERIOD))?;
                Ok(TimeRange {
                    since: now - secs,
                    until: now,
                })
            }
            (_, _, Some(_)) => Err(Error::BadRequest(
                "give either statsPeriod or since/until, not both".to_owned(),
            )),
            (since, until, None) => {
                let until = until.unwrap_or(now);
                let default = parse_period(DEFAULT_PERIOD)?;
                Ok(TimeRange {
                    since: since.unwrap_or(until.saturating_sub(default)),
                    until,
                })
            }
        }
    }
}

/// `15m` → 900: a positive count of `s`, `m`, `h`, `d` or `w`, at most 90 days.
fn parse_period(text: &str) -> Result<i64, Error> {
    let bad = || {
        Error::BadRequest(
            "statsPeriod must be a number and a unit (s, m, h, d, w) up to 90d, like 1h or 7d"
                .to_owned(),
        )
    };
    if !text.is_ascii() || text.len() < 2 {
        return Err(bad());
    }
    let (count, unit) = text.split_at(text.len() - 1);
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    count
        .parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(unit_secs))
        .filter(|&secs| secs <= MAX_PERIOD_SECS)
        .ok_or_else(bad)
}

/// Longest `environment` accepted, as the issues filter's.
const MAX_ENVIRONMENT_LEN: usize = 200;

/// `?environment=<name>`: one deployment environment's figures; absent or empty, all.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EnvironmentParam {
    environment: Option<String>,
}

impl EnvironmentParam {
    /// The environment asked for, `None` for all; 400 when longer than a name can be.
    pub(crate) fn get(&self) -> Result<Option<&str>, Error> {
        match self.environment.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(e) if e.len() > MAX_ENVIRONMENT_LEN => Err(Error::BadRequest(format!(
                "environment is longer than {MAX_ENVIRONMENT_LEN} bytes"
            ))),
            Some(e) => Ok(Some(e)),
        }
    }
}

/// `?interval=<seconds>&route=<template>&method=<METHOD>` on top of the range.
#[derive(Debug, Default, Deserialize)]
struct SeriesParams {
    interval: Option<i64>,
    route: Option<String>,
    method: Option<String>,
}

/// `GET /api/0/projects/`
async fn projects(State(query): State<Query>) -> Result<Json<Vec<Project>>, Error> {
    Ok(Json(query.projects().await?))
}

/// `GET /api/0/projects/{project_id}/environments/`: the environments the project's
/// agents report and its events name, sorted, as `[{"name": …}]` (Sentry's shape).
async fn environments(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
) -> Result<Json<Vec<Environment>>, Error> {
    let names = query.environments(project_id).await?;
    Ok(Json(
        names.into_iter().map(|name| Environment { name }).collect(),
    ))
}

/// One entry of the environments list.
#[derive(Debug, serde::Serialize)]
struct Environment {
    name: String,
}

/// `GET /api/0/projects/{project_id}/routes/`
async fn route_stats(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<RouteStats>>, Error> {
    let range = range.resolve(unix_now())?;
    Ok(Json(
        query.routes(project_id, range, environment.get()?).await?,
    ))
}

/// `GET /api/0/projects/{project_id}/series/`
async fn series(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(range): ApiQuery<RangeParams>,
    ApiQuery(params): ApiQuery<SeriesParams>,
    ApiQuery(environment): ApiQuery<EnvironmentParam>,
) -> Result<Json<Vec<SeriesPoint>>, Error> {
    let range = range.resolve(unix_now())?;
    let method = params.method.map(|m| m.to_ascii_uppercase());
    let route = match (params.route.as_deref(), method.as_deref()) {
        (Some(route), Some(method)) => Some((route, method)),
        (None, None) => None,
        _ => {
            return Err(Error::BadRequest(
                "route and method must be given together".to_owned(),
            ));
        }
    };
    let interval = params.interval.unwrap_or(DEFAULT_INTERVAL);
    Ok(Json(
        query
            .series(project_id, range, interval, route, environment.get()?)
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_like_sentrys() {
        for (text, secs) in [
            ("15m", 900),
            ("1h", 3_600),
            ("24h", 86_400),
            ("7d", 604_800),
            ("30d", 2_592_000),
            ("90s", 90),
            ("2w", 1_209_600),
        ] {
            assert_eq!(parse_period(text).unwrap(), secs, "{text}");
        }
        for text in [
            "",
            "h",
            "0h",
            "-1h",
            "1y",
            "1.5h",
            "91d",
            "99999999999999999999d",
            "1é",
            "éh",
        ] {
            assert!(parse_period(text).is_err(), "{text}");
        }
    }

    #[test]
    fn ranges_resolve_from_either_form() {
        let second = 1_700_000_000;
        let resolve = |since, until, period: Option<&str>| {
            RangeParams {
                since,
                until,
                stats_period: period.map(str::to_owned),
            }
            .resolve(second)
        };
        // "Now" is the end of the current second: a window opening in it is inside.
        let now = second + 1;
        assert_eq!(
            resolve(None, None, None).unwrap(),
            TimeRange {
                since: now - 3_600,
                until: now
            }
        );
        assert_eq!(
            resolve(None, None, Some("15m")).unwrap(),
            TimeRange {
                since: now - 900,
                until: now
            }
        );
        assert_eq!(
            resolve(Some(10), Some(20), None).unwrap(),
            TimeRange {
                since: 10,
                until: 20
            }
        );
        assert_eq!(
            resolve(Some(10), None, None).unwrap(),
            TimeRange {
                since: 10,
                until: now
            }
        );
        assert_eq!(
            resolve(None, Some(7_200), None).unwrap(),
            TimeRange {
                since: 3_600,
                until: 7_200
            }
        );
        assert!(resolve(Some(10), None, Some("1h")).is_err());
        assert!(resolve(None, None, Some("soon")).is_err());
    }
}
