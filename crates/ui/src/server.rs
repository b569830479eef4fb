//! The dashboard's HTTP surface: the pages, the theme form, the compiled-in assets and the
//! WebAssembly bundle.
//!
//! Handlers read through [`sightline_collector::Query`] (the same reads the JSON query API
//! serves) and hand plain data to the pages in [`crate::pages`], rendered with Leptos on the
//! server.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    Form, Router,
    extract::{self, FromRef, Path, RawQuery, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use leptos::prelude::*;
use serde::Deserialize;
use sightline_collector::{Project, Query};

mod errors;
mod exemplars;
mod logs;
mod markers;
mod memory;
mod queries;
mod switches;

use crate::{
    assets,
    pages::{
        self, Chrome, Ctx, ExemplarRows, Message, OVERVIEW_ISSUES, Overview, OverviewIssues,
        OverviewPage, ProjectLink, RouteDetail, RoutePage, RoutesList, RoutesPage, Section, SignIn,
        Theme,
    },
    range::{Range, RangeError},
    site::{self, Site},
};

/// The dashboard's routes, state applied, with the bundle found by [`Site::locate`];
/// merge it into the server's router.
pub fn routes(query: Query) -> Router {
    routes_with_site(query, Site::locate())
}

/// [`routes`] with an explicit bundle (or [`Site::without_bundle`]).
pub fn routes_with_site(query: Query, site: Site) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/projects/{id}", get(overview))
        .route("/projects/{id}/routes", get(routes_list))
        .route("/projects/{id}/route", get(route_detail))
        .route("/projects/{id}/issues", get(errors::issues_list))
        .route("/projects/{id}/issues/status", post(errors::bulk_status))
        .route("/projects/{id}/issues/{issue}", get(errors::issue_detail))
        .route(
            "/projects/{id}/issues/{issue}/status",
            post(errors::issue_status),
        )
        .route(
            "/projects/{id}/exemplars/{exemplar}",
            get(exemplars::exemplar_detail),
        )
        .route("/projects/{id}/logs", get(logs::logs_list))
        .route("/projects/{id}/queries", get(queries::queries_list))
        .route("/projects/{id}/memory", get(memory::memory))
        .route("/projects/{id}/switches", get(switches::switches_list))
        .route(
            "/projects/{id}/switches/{key}",
            get(switches::switch_detail),
        )
        .route(
            "/projects/{id}/switches/{key}/state",
            post(switches::set_state),
        )
        .route(
            "/projects/{id}/switches/{key}/revert",
            post(switches::revert),
        )
        .route(
            "/projects/{id}/switches/{key}/conditions",
            post(switches::conditions),
        )
        .route(
            "/projects/{id}/switches/{key}/details",
            post(switches::details),
        )
        .route("/signin", post(sign_in))
        .route("/theme", post(set_theme))
        .route(assets::CSS_PATH, get(stylesheet))
        .route(assets::BOOT_PATH, get(boot_script))
        .route("/pkg/{file}", get(bundle_file))
        .with_state(UiState { query, site })
}

#[derive(Clone)]
struct UiState {
    query: Query,
    site: Site,
}

impl FromRef<UiState> for Query {
    fn from_ref(state: &UiState) -> Query {
        state.query.clone()
    }
}

impl FromRef<UiState> for Site {
    fn from_ref(state: &UiState) -> Site {
        state.site.clone()
    }
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
    /// `since`/`until` are not times, out of order or too far apart.
    BadCustomRange,
    /// `sort`/`dir` name no column or direction.
    BadSort,
    /// The route page was asked for without `route` and `method`.
    RouteMissing,
    /// An issues or switches filter names nothing we know, or is too long.
    BadFilter,
    /// No issue with this id in this project.
    IssueNotFound,
    /// No event with this id in this issue.
    EventNotFound,
    /// No switch with this key.
    SwitchNotFound,
    /// No exemplar with this id in this project (or it was pruned).
    ExemplarNotFound,
    /// A form was posted from another site.
    CrossSite,
    /// A form lacks a field or has one we cannot read.
    BadForm,
    /// The page needs the admin credential; the sign-in form returns to this path.
    SignIn { back: String, wrong: bool },
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

impl From<RangeError> for PageError {
    fn from(error: RangeError) -> Self {
        match error {
            RangeError::UnknownPeriod => PageError::BadPeriod,
            RangeError::BadCustom => PageError::BadCustomRange,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, detail) = match self {
            PageError::SignIn { back, wrong } => {
                tracing::debug!(status = 401, "dashboard sign-in asked for");
                let html = pages::document(None, None, move || {
                    view! { <SignIn back=back wrong=wrong/> }
                });
                return html_page(StatusCode::UNAUTHORIZED, html);
            }
            PageError::BadFilter => (
                StatusCode::BAD_REQUEST,
                "Unknown filter",
                "A filter names a status, level, state or sort order we do not know, or is \
                 longer than 200 characters."
                    .to_owned(),
            ),
            PageError::IssueNotFound => (
                StatusCode::NOT_FOUND,
                "Issue not found",
                "This project has no issue with this id.".to_owned(),
            ),
            PageError::EventNotFound => (
                StatusCode::NOT_FOUND,
                "Event not found",
                "This issue has no stored event with this id.".to_owned(),
            ),
            PageError::ExemplarNotFound => (
                StatusCode::NOT_FOUND,
                "Exemplar not found",
                "This project has no stored exemplar with this id; exemplars are kept as long \
                 as raw data."
                    .to_owned(),
            ),
            PageError::SwitchNotFound => (
                StatusCode::NOT_FOUND,
                "Switch not found",
                "There is no switch with this key.".to_owned(),
            ),
            PageError::CrossSite => (
                StatusCode::FORBIDDEN,
                "Refused",
                "Changes are only accepted from the dashboard's own pages.".to_owned(),
            ),
            PageError::BadForm => (
                StatusCode::BAD_REQUEST,
                "Incomplete form",
                "The form lacked a field or carried one that cannot be read.".to_owned(),
            ),
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
                    crate::range::Period::ALL.map(|p| p.as_str()).join(", ")
                ),
            ),
            PageError::BadCustomRange => (
                StatusCode::BAD_REQUEST,
                "Unknown time range",
                "since and until must be times (unix seconds or YYYY-MM-DDTHH:MM, UTC), since \
                 before until, at most 90 days apart."
                    .to_owned(),
            ),
            PageError::BadSort => (
                StatusCode::BAD_REQUEST,
                "Unknown sort order",
                "sort must name a column of the table and dir be asc or desc.".to_owned(),
            ),
            PageError::RouteMissing => (
                StatusCode::BAD_REQUEST,
                "Which route?",
                "The route page needs both route and method.".to_owned(),
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
        let html = pages::document(
            None,
            None,
            move || view! { <Message heading=heading detail=detail/> },
        );
        html_page(status, html)
    }
}

/// Every page's query parameters: the range (as the query API spells it), live mode, and
/// the page's own. Unknown parameters are ignored.
#[derive(Debug, Default, Deserialize)]
struct PageParams {
    #[serde(rename = "statsPeriod")]
    stats_period: Option<String>,
    since: Option<String>,
    until: Option<String>,
    live: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    route: Option<String>,
    method: Option<String>,
    /// The issues list: search text and filters, as the issues API names them.
    query: Option<String>,
    status: Option<String>,
    level: Option<String>,
    environment: Option<String>,
    release: Option<String>,
    cursor: Option<String>,
    /// The issue page: which event.
    event: Option<String>,
    /// The switches list: search text and state.
    q: Option<String>,
    state: Option<String>,
    /// A form's outcome (one of a fixed set).
    notice: Option<String>,
    /// The route page: list the exemplars after this one (its id).
    before: Option<String>,
}

impl PageParams {
    fn from(params: Result<extract::Query<PageParams>, QueryRejection>) -> Result<Self, PageError> {
        params.map(|p| p.0).map_err(|_| PageError::BadPeriod)
    }

    fn range(&self, now: i64) -> Result<Range, PageError> {
        Ok(Range::from_params(
            self.stats_period.as_deref(),
            self.since.as_deref(),
            self.until.as_deref(),
            now,
        )?)
    }

    fn notice(&self) -> Option<pages::Notice> {
        self.notice.as_deref().and_then(pages::Notice::parse)
    }

    /// `?environment=`: `None` for all (absent or empty); too long is a bad filter.
    fn environment(&self) -> Result<Option<String>, PageError> {
        match self.environment.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(e) if e.len() > pages::MAX_FILTER_LEN => Err(PageError::BadFilter),
            Some(e) => Ok(Some(e.to_owned())),
        }
    }

    fn live(&self) -> bool {
        self.live
            .as_deref()
            .is_some_and(|v| matches!(v, "1" | "true" | "on"))
    }
}

/// What every project page reads first: the project list and the project itself, and
/// the project's environments with the one the page shows.
struct Frame {
    project: Project,
    projects: Vec<Project>,
    environments: Vec<String>,
    environment: Option<String>,
    range: Range,
    live: bool,
    now: i64,
}

async fn frame(query: &Query, id: &str, params: &PageParams) -> Result<Frame, PageError> {
    let now = unix_now();
    let range = params.range(now)?;
    let id: u64 = id.parse().map_err(|_| PageError::ProjectNotFound)?;
    let environment = params.environment()?;
    let projects = query.projects().await?;
    let project = projects
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or(PageError::ProjectNotFound)?;
    let environments = query.environments(project.id).await?;
    Ok(Frame {
        project,
        projects,
        environments,
        environment,
        range,
        live: params.live(),
        now,
    })
}

impl Frame {
    fn chrome(
        &self,
        section: Section,
        section_suffix: &'static str,
        keep: Vec<(&'static str, String)>,
        headers: &HeaderMap,
        site: &Site,
    ) -> Chrome {
        Chrome {
            ctx: Ctx {
                path: format!("/projects/{}{section_suffix}", self.project.id),
                project: self.project.id,
                range: self.range,
                live: self.live,
                environment: self.environment.clone(),
                keep,
            },
            projects: self.projects.iter().map(link).collect(),
            environments: self.environments.clone(),
            section,
            section_suffix,
            theme: theme(headers),
            bundle: site.bundle().map(|b| b.version.clone()),
        }
    }
}

/// `GET /`: the first project's overview, filters kept.
async fn index(State(query): State<Query>, RawQuery(raw): RawQuery) -> Result<Redirect, PageError> {
    let first = query
        .projects()
        .await?
        .into_iter()
        .min_by_key(|p| p.id)
        .ok_or(PageError::NoProjects)?;
    let target = match raw.filter(|q| !q.is_empty()) {
        Some(q) => format!("/projects/{}?{q}", first.id),
        None => format!("/projects/{}", first.id),
    };
    Ok(Redirect::to(&target))
}

/// `GET /projects/{id}`: the project overview.
async fn overview(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let frame = frame(&state.query, &id, &params).await?;
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let id = frame.project.id;
    let routes = state
        .query
        .routes(id, range, frame.environment.as_deref())
        .await?;
    let series = state
        .query
        .series(id, range, window.step, None, frame.environment.as_deref())
        .await?;
    let markers = markers::flip_markers(&state.query, &headers, window).await?;
    let issues = overview_issues(&state.query, &headers, id, frame.environment.as_deref()).await?;
    let chrome = frame.chrome(Section::Overview, "", Vec::new(), &headers, &state.site);
    let theme = chrome.theme;
    let bundle = chrome.bundle.clone();
    let data = Overview {
        chrome,
        project_name: frame.project.name.clone(),
        window,
        now: frame.now,
        routes,
        series,
        markers,
        dsn: dsn(&frame.project, &headers),
        issues,
    };
    let html = pages::document(theme, bundle, move || view! { <OverviewPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// Unresolved issues to show on the overview: the newest, and those that regressed.
/// Without the admin credential (when one is configured) there are none to show, as the
/// Errors pages ask for it.
async fn overview_issues(
    query: &Query,
    headers: &HeaderMap,
    project_id: u64,
    environment: Option<&str>,
) -> Result<Option<OverviewIssues>, PageError> {
    use sightline_collector::{IssueFilter, IssueSort, IssueStatus};
    if require_admin(query, headers, String::new()).is_err() {
        return Ok(None);
    }
    let unresolved = |sort, limit| IssueFilter {
        status: Some(IssueStatus::Unresolved),
        environment: environment.map(str::to_owned),
        sort,
        limit,
        ..IssueFilter::default()
    };
    let newest = query
        .issues(
            project_id,
            &unresolved(IssueSort::FirstSeen, OVERVIEW_ISSUES as u32),
        )
        .await?;
    // Regressions are rare among the recently seen: a page of those, filtered.
    let regressed = query
        .issues(project_id, &unresolved(IssueSort::LastSeen, 200))
        .await?
        .into_iter()
        .filter(|issue| issue.substatus.as_deref() == Some("regressed"))
        .take(OVERVIEW_ISSUES)
        .collect();
    Ok(Some(OverviewIssues { newest, regressed }))
}

/// `GET /projects/{id}/routes?sort=&dir=`: every route, sorted.
async fn routes_list(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let sort = pages::Sort::from_params(params.sort.as_deref(), params.dir.as_deref())
        .ok_or(PageError::BadSort)?;
    let frame = frame(&state.query, &id, &params).await?;
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let routes = state
        .query
        .routes(frame.project.id, range, frame.environment.as_deref())
        .await?;
    let chrome = frame.chrome(
        Section::Routes,
        "/routes",
        sort.params(),
        &headers,
        &state.site,
    );
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = RoutesList {
        chrome,
        window,
        routes,
        sort,
    };
    let html = pages::document(theme, bundle, move || view! { <RoutesPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// Exemplars listed on a route page, newest first.
const ROUTE_EXEMPLARS: u32 = 50;

/// `GET /projects/{id}/route?method=&route=`: one route.
async fn route_detail(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let (Some(route), Some(method)) = (params.route.clone(), params.method.clone()) else {
        return Err(PageError::RouteMissing);
    };
    let method = method.to_ascii_uppercase();
    let before = match params.before.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => Some(b.parse::<u64>().map_err(|_| PageError::BadFilter)?),
        None => None,
    };
    let frame = frame(&state.query, &id, &params).await?;
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let id = frame.project.id;
    let stats = state
        .query
        .routes(id, range, frame.environment.as_deref())
        .await?
        .into_iter()
        .find(|r| r.route == route && r.method == method);
    let series = state
        .query
        .series(
            id,
            range,
            window.step,
            Some((&route, &method)),
            frame.environment.as_deref(),
        )
        .await?;
    let markers = markers::flip_markers(&state.query, &headers, window).await?;
    // one more than a page, to know whether an older page exists
    let mut exemplars = state
        .query
        .exemplars(
            id,
            range,
            Some((&route, &method)),
            before,
            ROUTE_EXEMPLARS + 1,
            frame.environment.as_deref(),
        )
        .await?;
    let older = (exemplars.len() > ROUTE_EXEMPLARS as usize).then(|| {
        exemplars.truncate(ROUTE_EXEMPLARS as usize);
        exemplars.last().map_or(0, |e| e.id)
    });
    let keep = vec![("method", method.clone()), ("route", route.clone())];
    let chrome = frame.chrome(Section::Routes, "/route", keep, &headers, &state.site);
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = RouteDetail {
        chrome,
        window,
        now: frame.now,
        route,
        method,
        stats,
        series,
        markers,
        exemplars: ExemplarRows {
            rows: exemplars,
            paged: before.is_some(),
            older,
        },
    };
    let html = pages::document(theme, bundle, move || view! { <RoutePage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// The theme form's fields.
#[derive(Debug, Deserialize)]
struct ThemeForm {
    theme: String,
    /// The page to return to.
    back: String,
}

/// Name of the cookie holding the chosen colour scheme.
const THEME_COOKIE: &str = "sightline_theme";

/// `back` when it is a path on this server, else `/`: forms never cause an open redirect.
fn local_path(back: &str) -> &str {
    if back.starts_with('/') && !back.starts_with("//") && !back.contains('\\') {
        back
    } else {
        "/"
    }
}

/// `back` (a local path) with `notice=` set to `notice`, any earlier notice dropped.
fn with_notice(back: &str, notice: pages::Notice) -> String {
    let back = local_path(back);
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("notice="))
        .collect();
    let notice = format!("notice={}", notice.as_str());
    pairs.push(&notice);
    format!("{path}?{}", pairs.join("&"))
}

/// `POST /theme`: remembers the colour scheme in a cookie and goes back to the page (a
/// plain form, so it works without JavaScript).
async fn set_theme(Form(form): Form<ThemeForm>) -> Response {
    let back = local_path(&form.back);
    let cookie = match Theme::parse(&form.theme) {
        Some(theme) => format!(
            "{THEME_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
            theme.as_str()
        ),
        None => format!("{THEME_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax"),
    };
    let mut response = Redirect::to(back).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The value of the cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The colour scheme from the theme cookie; `None` follows the system.
fn theme(headers: &HeaderMap) -> Option<Theme> {
    cookie(headers, THEME_COOKIE).and_then(Theme::parse)
}

/// Name of the cookie holding the admin token, once signed in (only when the server has
/// one configured).
const ADMIN_COOKIE: &str = "sightline_admin";

/// Pages over data the API guards with the admin token (issues, events, switches) need it
/// here too: as the admin cookie set by the sign-in form, or as `Authorization: Bearer`
/// for scripts. Without a configured token, like the API, they are open. `back` is where
/// the sign-in form returns to.
fn require_admin(query: &Query, headers: &HeaderMap, back: String) -> Result<(), PageError> {
    let board = query.switchboard();
    if !board.token_required() {
        return Ok(());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if board.admits(cookie(headers, ADMIN_COOKIE)) || bearer.is_some_and(|b| board.admits(Some(b)))
    {
        Ok(())
    } else {
        Err(PageError::SignIn {
            back: local_path(&back).to_owned(),
            wrong: false,
        })
    }
}

/// Refuses a form posted from another site (a page elsewhere submitting to this server
/// in a signed-in browser): browsers say where a request comes from in `Sec-Fetch-Site`,
/// and in `Origin`, which must then name this host.
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PageError::CrossSite);
    }
    if let Some(origin) = header("origin") {
        let host = header("host").unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if origin_host.is_empty() || origin_host != host {
            return Err(PageError::CrossSite);
        }
    }
    Ok(())
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
    back: String,
}

/// `POST /signin`: checks the admin token and remembers it in an HttpOnly, same-site
/// cookie for the session, then goes back to the page that asked.
async fn sign_in(
    State(query): State<Query>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let board = query.switchboard();
    let back = local_path(&form.back).to_owned();
    if !board.token_required() {
        return Ok(Redirect::to(&back).into_response());
    }
    let token = form.token.trim();
    // a cookie value cannot carry every byte; such a token could never be remembered
    let storable = token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    if !storable || !board.admits(Some(token)) {
        tracing::info!("dashboard sign-in with a wrong admin token");
        return Err(PageError::SignIn { back, wrong: true });
    }
    let mut response = Redirect::to(&back).into_response();
    let cookie = format!("{ADMIN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `Cache-Control` for a compiled-in or built file: a URL carrying the current version
/// never changes content, so it may be cached for good; any other is revalidated.
fn cache_control(raw: Option<&str>, version: &str) -> &'static str {
    if raw.is_some_and(|q| q == format!("v={version}")) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// `GET /assets/sightline.css`.
async fn stylesheet(RawQuery(raw): RawQuery) -> Response {
    let cache = cache_control(raw.as_deref(), &format!("{:016x}", assets::CSS_VERSION));
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        assets::CSS,
    )
        .into_response()
}

/// `GET /assets/boot.js`.
async fn boot_script(RawQuery(raw): RawQuery) -> Response {
    let cache = cache_control(raw.as_deref(), &format!("{:016x}", assets::BOOT_VERSION));
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        assets::BOOT,
    )
        .into_response()
}

/// `GET /pkg/{file}`: the bundle's two files, precompressed when the build wrote `.br` or
/// `.gz` siblings and the browser takes them. 404 without a bundle.
async fn bundle_file(
    State(site): State<Site>,
    Path(file): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(bundle) = site.bundle() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (asset, content_type) = match file.as_str() {
        site::JS_FILE => (&bundle.js, "text/javascript; charset=utf-8"),
        site::WASM_FILE => (&bundle.wasm, "application/wasm"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let accepts = |coding: &str| {
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|c| {
                let mut parts = c.split(';');
                parts.next().is_some_and(|name| name.trim() == coding)
                    && !parts.any(|q| matches!(q.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"))
            })
    };
    let (body, encoding) = match (&asset.brotli, &asset.gzip) {
        (Some(br), _) if accepts("br") => (br.clone(), Some("br")),
        (_, Some(gz)) if accepts("gzip") => (gz.clone(), Some("gzip")),
        _ => (asset.plain.clone(), None),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CACHE_CONTROL,
                cache_control(raw.as_deref(), &bundle.version),
            ),
            (header::VARY, "accept-encoding"),
        ],
        body,
    )
        .into_response();
    if let Some(encoding) = encoding {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

/// A second line of defence should escaping ever miss something: scripts only from this
/// origin (the boot script and the bundle; `'wasm-unsafe-eval'` lets it compile
/// WebAssembly), no inline script or style, fetches (live mode) only to this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

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

    #[test]
    fn theme_comes_from_its_cookie_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(theme(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; sightline_theme=dark"),
        );
        assert_eq!(theme(&headers), Some(Theme::Dark));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("sightline_theme=<x>"),
        );
        assert_eq!(theme(&headers), None);
    }
}
