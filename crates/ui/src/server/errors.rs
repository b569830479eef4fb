//! The Errors pages' handlers: the issues list, an issue with one of its events, and the
//! status forms (one issue, or the ticked ones of the list).

use axum::{
    Form,
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use leptos::prelude::*;
use sightline_collector::{Cursor, IssueStatus, Query, StoredEvent};

use super::{
    PageError, PageParams, UiState, frame, html_page, require_admin, same_origin, with_notice,
};
use crate::pages::{
    self, EventNav, IssueDetail, IssueFilters, IssuePage, IssueRow, IssuesList, IssuesPage, Notice,
    Section, Volume,
};
use crate::range::Window;

/// Events read per issue for its sparkline, at most; past it the sparkline says "at least".
const VOLUME_EVENTS: u32 = 500;
/// Most issues one bulk form may change (as the API's bulk change).
const MAX_BULK: usize = 100;
/// Events read per store call.
const EVENT_PAGE: u32 = 100;
/// How far back from the newest event the issue page looks for the shown one's newer
/// neighbour (and position).
const NAV_EVENTS: u32 = 1_000;

/// `GET /projects/{id}/issues?query=&status=&level=&environment=&release=&sort=&cursor=`
pub(super) async fn issues_list(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let filters = IssueFilters::from_params(
        params.query.as_deref(),
        params.status.as_deref(),
        params.level.as_deref(),
        params.environment.as_deref(),
        params.release.as_deref(),
        params.sort.as_deref(),
        params.cursor.as_deref(),
    )
    .map_err(|_| PageError::BadFilter)?;
    let frame = frame(&state.query, &id, &params).await?;
    let chrome = frame.chrome(
        Section::Errors,
        "/issues",
        filters.params(),
        &headers,
        &state.site,
    );
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let window = frame.range.resolve(frame.now);
    let filter = filters.filter();
    let issues = state.query.issues(frame.project.id, &filter).await?;
    let next = (issues.len() == filter.limit as usize)
        .then(|| issues.last())
        .flatten()
        .map(|last| {
            Cursor {
                value: last.sort_value(filter.sort),
                id: last.id,
            }
            .encode()
        });
    let mut rows = Vec::with_capacity(issues.len());
    for issue in issues {
        let volume = volume(&state.query, issue.id, window).await?;
        rows.push(IssueRow { issue, volume });
    }
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = IssuesList {
        chrome,
        window,
        now: frame.now,
        filters,
        rows,
        next,
        notice: params.notice(),
    };
    let html = pages::document(theme, bundle, move || view! { <IssuesPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// An issue's events per step of `window`, read newest first until the window's start
/// (or [`VOLUME_EVENTS`]).
async fn volume(query: &Query, issue: u64, window: Window) -> Result<Volume, PageError> {
    let mut stamps = Vec::new();
    let mut cursor = None;
    let mut capped = false;
    loop {
        let page = query.issue_events(issue, EVENT_PAGE, cursor, false).await?;
        let full = page.len() == EVENT_PAGE as usize;
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor {
            value: last.timestamp,
            id: last.id,
        });
        let reached_start = last.timestamp < window.since as f64;
        stamps.extend(page.iter().map(|e| e.timestamp));
        if !full || reached_start {
            break;
        }
        if stamps.len() >= VOLUME_EVENTS as usize {
            capped = true;
            break;
        }
    }
    Ok(Volume::of(stamps, window, capped))
}

/// An event id as links carry it: 32 hex digits, dashes allowed (a UUID), any case.
fn event_id(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// `GET /projects/{id}/issues/{issue}?event=`: the issue with its newest event, or the
/// one named.
pub(super) async fn issue_detail(
    State(state): State<UiState>,
    Path((id, issue_id)): Path<(String, String)>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let frame = frame(&state.query, &id, &params).await?;
    let keep: Vec<(&'static str, String)> =
        params.event.iter().map(|e| ("event", e.clone())).collect();
    let mut chrome = frame.chrome(Section::Errors, "/issues", keep, &headers, &state.site);
    chrome.ctx.path = format!("/projects/{}/issues/{issue_id}", frame.project.id);
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let issue_id: u64 = issue_id.parse().map_err(|_| PageError::IssueNotFound)?;
    let issue = state
        .query
        .issue(issue_id)
        .await?
        .filter(|i| i.project_id == frame.project.id)
        .ok_or(PageError::IssueNotFound)?;
    let tags = state.query.issue_tags(issue.id, 10).await?;
    let event = match params.event.as_deref().filter(|e| !e.is_empty()) {
        Some(text) => {
            let id = event_id(text).ok_or(PageError::EventNotFound)?;
            let event = state
                .query
                .event(frame.project.id, &id)
                .await?
                .filter(|e| e.issue_id == issue.id)
                .ok_or(PageError::EventNotFound)?;
            Some(event)
        }
        None => state
            .query
            .issue_events(issue.id, 1, None, true)
            .await?
            .into_iter()
            .next(),
    };
    let nav = match &event {
        Some(event) => navigation(&state.query, event).await?,
        None => EventNav::default(),
    };
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = IssueDetail {
        chrome,
        now: frame.now,
        issue,
        tags,
        event,
        nav,
        notice: params.notice(),
    };
    let html = pages::document(theme, bundle, move || view! { <IssuePage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

/// The shown event's older and newer neighbours (events are listed newest first, by
/// timestamp then row id), and its position when it is among the newest [`NAV_EVENTS`].
async fn navigation(query: &Query, event: &StoredEvent) -> Result<EventNav, PageError> {
    let here = Cursor {
        value: event.timestamp,
        id: event.id,
    };
    let older = query
        .issue_events(event.issue_id, 1, Some(here), false)
        .await?
        .into_iter()
        .next()
        .map(|e| e.event_id);
    let mut nav = EventNav {
        older,
        ..EventNav::default()
    };
    let mut cursor = None;
    let mut seen: u64 = 0;
    let mut previous: Option<String> = None;
    'pages: while seen < u64::from(NAV_EVENTS) {
        let page = query
            .issue_events(event.issue_id, EVENT_PAGE, cursor, false)
            .await?;
        for e in &page {
            seen += 1;
            if e.id == event.id {
                nav.newer = previous;
                nav.position = Some(seen);
                break 'pages;
            }
            previous = Some(e.event_id.clone());
        }
        match page.last() {
            Some(last) if page.len() == EVENT_PAGE as usize => {
                cursor = Some(Cursor {
                    value: last.timestamp,
                    id: last.id,
                });
            }
            _ => break,
        }
    }
    Ok(nav)
}

/// A status form's `status` field.
fn status_of(value: Option<&str>) -> Result<IssueStatus, PageError> {
    value.and_then(IssueStatus::parse).ok_or(PageError::BadForm)
}

fn notice_for(status: IssueStatus) -> Notice {
    match status {
        IssueStatus::Resolved => Notice::Resolved,
        IssueStatus::Ignored => Notice::Ignored,
        IssueStatus::Unresolved => Notice::Unresolved,
    }
}

/// The project id of a form's path.
fn project_of(id: &str) -> Result<u64, PageError> {
    id.parse().map_err(|_| PageError::ProjectNotFound)
}

/// `POST /projects/{id}/issues/status` with `id=…&id=…&status=…&back=…`: the list's bulk
/// form. Fields are read as pairs, since `id` repeats.
pub(super) async fn bulk_status(
    State(state): State<UiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let back = field("back").unwrap_or("/").to_owned();
    require_admin(&state.query, &headers, back.clone())?;
    let project = project_of(&id)?;
    let status = status_of(field("status"))?;
    let mut ids: Vec<u64> = Vec::new();
    for (_, value) in fields.iter().filter(|(k, _)| k == "id") {
        let id = value.parse().map_err(|_| PageError::BadForm)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > MAX_BULK {
        return Err(PageError::BadForm);
    }
    let notice = if ids.is_empty() {
        Notice::NoneSelected
    } else {
        state
            .query
            .set_issue_status(Some(project), &ids, status)
            .await?;
        notice_for(status)
    };
    Ok(Redirect::to(&with_notice(&back, notice)).into_response())
}

/// `POST /projects/{id}/issues/{issue}/status` with `status=…&back=…`.
pub(super) async fn issue_status(
    State(state): State<UiState>,
    Path((id, issue)): Path<(String, String)>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let back = field("back").unwrap_or("/").to_owned();
    require_admin(&state.query, &headers, back.clone())?;
    let project = project_of(&id)?;
    let issue: u64 = issue.parse().map_err(|_| PageError::IssueNotFound)?;
    let status = status_of(field("status"))?;
    let updated = state
        .query
        .set_issue_status(Some(project), &[issue], status)
        .await?;
    if updated.is_empty() {
        return Err(PageError::IssueNotFound);
    }
    Ok(Redirect::to(&with_notice(&back, notice_for(status))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_hex_uuids_only() {
        assert_eq!(
            event_id("BC3D031E-F908-46BB-84C3-520E28C01C4F").as_deref(),
            Some("bc3d031ef90846bb84c3520e28c01c4f")
        );
        assert_eq!(event_id("bc3d031e"), None);
        assert_eq!(event_id("<script>alert(1)</script>aaaaaaaaaaaaa"), None);
    }
}
