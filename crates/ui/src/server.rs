//! The dashboard's HTTP surface: `GET /`, `GET /projects/{id}`, `GET /assets/sightline.css`.
//!
//! Handlers read through [`sightline_collector::Query`] (the same reads the JSON query API
//! serves) and hand plain data to the pages in [`crate::pages`], rendered with Leptos on the
//! server.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Router,
    extract::{self, Path, RawQuery, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use leptos::prelude::*;
use serde::Deserialize;
use sightline_collector::{Project, Query, TimeRange};

use crate::{
    assets,
    pages::{self, Message, Overview, OverviewPage, ProjectLink},
    period::Period,
};

/// The dashboard's routes, state applied; merge it into the server's router.
pub fn routes(query: Query) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/projects/{id}", get(overview))
        .route(assets::CSS_PATH, get(stylesheet))
        .with_state(query)
}

/// Everything a page handler can fail with; [`IntoResponse`] picks the status and the page.
#[derive(Debug)]
enum PageError {
    /// No project with this id (or the id is not a number).
    ProjectNotFound,
    /// The store has no projects at all.
    NoProjects,
    /// `statsPeriod` is not one of the offered periods, or the query string is malformed.
    BadPeriod,
    /// The store failed; the cause is logged, not shown.
    Unavailable,
}

impl From<sightline_collector::Error> for PageError {
    fn from(error: sightline_collector::Error) -> Self {
        match error {
            // deleted between our reads
            sightline_collector::Error::ProjectNotFound => PageError::ProjectNotFound,
            // anything else is the store's (or our request's) fault, not the visitor's
            error => {
                tracing::error!(error = ?error, "dashboard query failed");
                PageError::Unavailable
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, detail) = match self {
            PageError::ProjectNotFound => (
                StatusCode::NOT_FOUND,
                "Project not found",
                "There is no project with this id.".to_owned(),
            ),
            PageError::NoProjects => (
                StatusCode::NOT_FOUND,
                "No projects yet",
                "The store has no projects. Restart the server to create the default project."
                    .to_owned(),
            ),
            PageError::BadPeriod => (
                StatusCode::BAD_REQUEST,
                "Unknown time range",
                format!(
                    "statsPeriod must be one of {}.",
                    Period::ALL.map(Period::as_str).join(", ")
                ),
            ),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Data temporarily unavailable",
                "Sightline could not read its store. Try again in a moment.".to_owned(),
            ),
        };
        if status.is_client_error() {
            tracing::debug!(status = status.as_u16(), heading, "dashboard page refused");
        }
        let html = pages::document(view! { <Message heading=heading detail=detail/> });
        html_page(status, html)
    }
}

/// `?statsPeriod=` as the query API spells it.
#[derive(Debug, Deserialize)]
struct PeriodParam {
    #[serde(rename = "statsPeriod")]
    stats_period: Option<String>,
}

fn period(
    params: Result<extract::Query<PeriodParam>, QueryRejection>,
) -> Result<Period, PageError> {
    let extract::Query(params) = params.map_err(|_| PageError::BadPeriod)?;
    match params.stats_period.as_deref() {
        None => Ok(Period::default()),
        Some(value) => Period::parse(value).ok_or(PageError::BadPeriod),
    }
}

/// `GET /`: the first project's overview.
async fn index(
    State(query): State<Query>,
    params: Result<extract::Query<PeriodParam>, QueryRejection>,
) -> Result<Redirect, PageError> {
    let period = period(params)?;
    let first = query
        .projects()
        .await?
        .into_iter()
        .min_by_key(|p| p.id)
        .ok_or(PageError::NoProjects)?;
    Ok(Redirect::to(&pages::project_href(first.id, period)))
}

/// `GET /projects/{id}?statsPeriod=`: the project overview.
async fn overview(
    State(query): State<Query>,
    Path(id): Path<String>,
    params: Result<extract::Query<PeriodParam>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let period = period(params)?;
    let id: u64 = id.parse().map_err(|_| PageError::ProjectNotFound)?;
    let projects = query.projects().await?;
    let project = projects
        .iter()
        .find(|p| p.id == id)
        .ok_or(PageError::ProjectNotFound)?;

    let now = unix_now();
    let (since, until) = period.range_at(now);
    let range = TimeRange { since, until };
    let routes = query.routes(id, range).await?;
    let series = query.series(id, range, period.step_secs(), None).await?;

    let data = Overview {
        project: link(project),
        projects: projects.iter().map(link).collect(),
        period,
        since,
        until,
        now,
        routes,
        series,
        dsn: dsn(project, &headers),
    };
    let html = pages::document(view! { <OverviewPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// `GET /assets/sightline.css`. Pages link it with `?v=<content hash>`: that URL never
/// changes content, so it may be cached for good; any other is revalidated.
async fn stylesheet(RawQuery(raw): RawQuery) -> Response {
    let versioned = raw.is_some_and(|q| q == format!("v={:016x}", assets::CSS_VERSION));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        assets::CSS,
    )
        .into_response()
}

/// Pages load nothing but our stylesheet: a strict policy is a second line of defence should
/// escaping ever miss something. Hydration (a later issue) will need `script-src 'self'`
/// plus `'wasm-unsafe-eval'`.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn html_page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            // numbers change every second; never show a stale page from cache
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
        ],
        Html(html),
    )
        .into_response()
}

fn link(project: &Project) -> ProjectLink {
    ProjectLink {
        id: project.id,
        name: project.name.clone(),
    }
}

/// The project's DSN, with the host the browser reached us at (the address apps most likely
/// reach us at too); the default listen address when the `Host` header is absent or odd.
fn dsn(project: &Project, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:7070");
    format!("http://{}@{host}/{}", project.public_key, project.id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project {
            id: 3,
            name: "p".to_owned(),
            public_key: "k3y".to_owned(),
        }
    }

    #[test]
    fn dsn_uses_a_sane_host_header_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(dsn(&project(), &headers), "http://k3y@127.0.0.1:7070/3");
        headers.insert(
            header::HOST,
            HeaderValue::from_static("metrics.example.com:7070"),
        );
        assert_eq!(
            dsn(&project(), &headers),
            "http://k3y@metrics.example.com:7070/3"
        );
        headers.insert(header::HOST, HeaderValue::from_static("[::1]:7070"));
        assert_eq!(dsn(&project(), &headers), "http://k3y@[::1]:7070/3");
        headers.insert(header::HOST, HeaderValue::from_static("evil\"/<x>"));
        assert_eq!(dsn(&project(), &headers), "http://k3y@127.0.0.1:7070/3");
    }
}
