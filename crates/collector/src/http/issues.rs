//! The error side of the `/api/0/` query API, in the shapes and names of Sentry's own
//! API (camelCase, ids as strings, `count` as a string, RFC 3339 times): issue lists with
//! filters and keyset pagination, issue detail with tag summary and "why grouped",
//! events, and issue status changes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::extract::{ApiQuery, ProjectId};
use crate::sentry::event::normalize_uuid;
use crate::time::rfc3339;
use crate::{
    Cursor, Error, Issue, IssueFilter, IssueSort, IssueStatus, Project, Query, StoredEvent,
    TagValue,
};

/// Page size when a request names none.
const DEFAULT_LIMIT: u32 = 25;
/// Largest page, and most issues one bulk status change may name.
pub(crate) const MAX_LIMIT: u32 = 100;
/// Longest text query, environment or release filter.
const MAX_FILTER_LEN: usize = 200;
/// Values shown per tag key in an issue's detail.
const TOP_TAG_VALUES: u32 = 10;
/// Most days of envelope item counts one request may ask for.
const MAX_ITEM_DAYS: u32 = 366;

/// The issue endpoints, for the `/api/0/` router.
pub(crate) fn endpoints() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        (
            "/api/0/projects/{project_id}/issues/",
            get(list_issues).put(bulk_status),
        ),
        (
            "/api/0/issues/{issue_id}/",
            get(issue_detail).put(issue_status),
        ),
        ("/api/0/issues/{issue_id}/events/", get(issue_events)),
        (
            "/api/0/projects/{project_id}/events/{event_id}/",
            get(event_detail),
        ),
        (
            "/api/0/projects/{project_id}/item-counts/",
            get(item_counts),
        ),
    ]
}

// ---------------------------------------------------------------- parameters

fn bad(reason: impl Into<String>) -> Error {
    Error::BadRequest(reason.into())
}

/// `?limit=` within 1..=100.
fn limit(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(bad(format!("limit must be between 1 and {MAX_LIMIT}"))),
    }
}

fn cursor(cursor: Option<&str>) -> Result<Option<Cursor>, Error> {
    match cursor.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(text) => Cursor::decode(text)
            .map(Some)
            .ok_or_else(|| bad("cursor is not one this API handed out")),
    }
}

fn bounded(name: &str, value: Option<String>) -> Result<Option<String>, Error> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) if v.len() > MAX_FILTER_LEN => {
            Err(bad(format!("{name} is longer than {MAX_FILTER_LEN} bytes")))
        }
        other => Ok(other),
    }
}

/// `?status=`: empty or `all` means every status; absent means unresolved, as Sentry's.
fn status_filter(text: &str) -> Result<Option<IssueStatus>, Error> {
    match text {
        "" | "all" => Ok(None),
        other => IssueStatus::parse(other)
            .map(Some)
            .ok_or_else(|| bad("status must be unresolved, resolved, ignored or all")),
    }
}

fn level_filter(text: &str) -> Result<String, Error> {
    match text {
        "fatal" | "error" | "warning" | "info" | "debug" => Ok(text.to_owned()),
        _ => Err(bad("level must be fatal, error, warning, info or debug")),
    }
}

#[derive(Debug, Default, Deserialize)]
struct IssueParams {
    query: Option<String>,
    status: Option<String>,
    level: Option<String>,
    environment: Option<String>,
    release: Option<String>,
    sort: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl IssueParams {
    /// The filter these parameters ask for. `query` may hold Sentry-style tokens
    /// (`is:resolved level:error environment:prod release:1.2`) besides plain text;
    /// explicit parameters win over tokens.
    fn filter(self) -> Result<IssueFilter, Error> {
        let query = bounded("query", self.query)?;
        let mut status = Some(IssueStatus::Unresolved);
        let (mut level, mut environment, mut release) = (None, None, None);
        let mut words = Vec::new();
        for word in query.as_deref().unwrap_or("").split_whitespace() {
            match word.split_once(':') {
                Some(("is", value)) => status = status_filter(value)?,
                Some(("level", value)) => level = Some(level_filter(value)?),
                Some(("environment", value)) => environment = Some(value.to_owned()),
                Some(("release", value)) => release = Some(value.to_owned()),
                _ => words.push(word),
            }
        }
        if let Some(text) = self.status.as_deref() {
            status = status_filter(text)?;
        }
        if let Some(text) = self.level.as_deref().filter(|l| !l.is_empty()) {
            level = Some(level_filter(text)?);
        }
        let sort = match self.sort.as_deref().unwrap_or("date") {
            "date" | "" => IssueSort::LastSeen,
            "freq" => IssueSort::Count,
            "new" => IssueSort::FirstSeen,
            _ => return Err(bad("sort must be date, freq or new")),
        };
        Ok(IssueFilter {
            status,
            level,
            environment: bounded("environment", self.environment)?.or(environment),
            release: bounded("release", self.release)?.or(release),
            text: (!words.is_empty()).then(|| words.join(" ")),
            sort,
            limit: limit(self.limit)?,
            cursor: cursor(self.cursor.as_deref())?,
        })
    }
}

/// `{"status": "resolved" | "unresolved" | "ignored"}`; other fields are ignored.
fn status_body(body: &[u8]) -> Result<IssueStatus, Error> {
    #[derive(Deserialize)]
    struct StatusBody {
        status: Option<String>,
    }
    let body: StatusBody = serde_json::from_slice(body)
        .map_err(|_| Error::InvalidJson("expected {\"status\": …}".to_owned()))?;
    body.status
        .as_deref()
        .and_then(IssueStatus::parse)
        .ok_or_else(|| bad("status must be resolved, unresolved or ignored"))
}

/// `?id=1&id=2…` of a bulk change: 1 to 100 numeric ids.
fn bulk_ids(uri: &Uri) -> Result<Vec<u64>, Error> {
    let mut ids = Vec::new();
    for pair in uri.query().unwrap_or("").split('&') {
        if let Some(value) = pair.strip_prefix("id=") {
            let id = value.parse().map_err(|_| bad("id must be a number"))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() || ids.len() > MAX_LIMIT as usize {
        return Err(bad(format!(
            "name between 1 and {MAX_LIMIT} issues with ?id=…&id=…"
        )));
    }
    Ok(ids)
}

fn issue_id(Path(id): Path<String>) -> Result<u64, Error> {
    id.parse().map_err(|_| bad("issue id must be a number"))
}

// ---------------------------------------------------------------- JSON shapes

fn project_json(project: &Project) -> Value {
    json!({"id": project.id.to_string(), "name": project.name, "slug": project.name})
}

/// `DEFAULT-1A`: the project name in capitals and the issue id in base 36, like Sentry's.
fn short_id(project: &Project, id: u64) -> String {
    let mut prefix: String = project
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '-'
            }
        })
        .collect();
    if prefix.is_empty() {
        prefix.push('P');
    }
    let mut digits = Vec::new();
    let mut n = id;
    loop {
        digits.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{prefix}-{}", String::from_utf8_lossy(&digits))
}

fn issue_json(issue: &Issue, project: &Project) -> Value {
    json!({
        "id": issue.id.to_string(),
        "shortId": short_id(project, issue.id),
        "title": issue.title,
        "culprit": issue.culprit,
        "level": issue.level,
        "status": issue.status.as_str(),
        "substatus": issue.substatus,
        "platform": issue.platform,
        "type": "error",
        "count": issue.times_seen.to_string(),
        "userCount": issue.user_count,
        "firstSeen": rfc3339(issue.first_seen),
        "lastSeen": rfc3339(issue.last_seen),
        "project": project_json(project),
        "groupedBy": issue.grouped_by,
        "metadata": {"title": issue.title},
        "lastRelease": issue.last_release,
        "lastEnvironment": issue.last_environment,
    })
}

fn event_json(event: &StoredEvent) -> Value {
    let tags: Vec<Value> = event
        .tags
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    let mut out = json!({
        "id": event.event_id,
        "eventID": event.event_id,
        "event_id": event.event_id,
        "groupID": event.issue_id.to_string(),
        "projectID": event.project_id.to_string(),
        "title": event.title,
        "culprit": event.culprit,
        "level": event.level,
        "platform": event.platform,
        "environment": event.environment,
        "release": event.release,
        "user": event.user,
        "tags": tags,
        "dateCreated": rfc3339(event.timestamp),
        "dateReceived": rfc3339(event.received),
        "groupingHash": event.hash,
        "groupedBy": event.grouped_by,
    });
    if let (Some(payload), Value::Object(map)) = (&event.payload, &mut out) {
        map.insert("payload".to_owned(), payload.clone());
    }
    out
}

/// Tag values grouped by key, Sentry's `tags` of an issue.
fn tags_json(values: &[TagValue]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for chunk in values.chunk_by(|a, b| a.key == b.key) {
        let first = &chunk[0];
        let top: Vec<Value> = chunk
            .iter()
            .map(|v| {
                json!({
                    "key": v.key,
                    "name": v.value,
                    "value": v.value,
                    "count": v.count,
                    "firstSeen": rfc3339(v.first_seen),
                    "lastSeen": rfc3339(v.last_seen),
                })
            })
            .collect();
        out.push(json!({
            "key": first.key,
            "name": first.key,
            "totalValues": first.total,
            "uniqueValues": first.distinct_values,
            "topValues": top,
        }));
    }
    out
}

/// A `Link` header pointing at the next page, as Sentry's pagination does, when this page
/// was full.
fn next_link(uri: &Uri, next: Option<Cursor>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(next) = next {
        let cursor = next.encode();
        let link = format!(
            "<{}?cursor={cursor}>; rel=\"next\"; results=\"true\"; cursor=\"{cursor}\"",
            uri.path()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    headers
}

async fn project_of(query: &Query, project_id: u64) -> Result<Project, Error> {
    query
        .project(project_id)
        .await?
        .ok_or(Error::ProjectNotFound)
}

async fn find_issue(query: &Query, id: u64) -> Result<(Issue, Project), Error> {
    let issue = query.issue(id).await?.ok_or(Error::NotFound("issue"))?;
    let project = project_of(query, issue.project_id).await?;
    Ok((issue, project))
}

// ---------------------------------------------------------------- handlers

/// `GET /api/0/projects/{project_id}/issues/`
async fn list_issues(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(params): ApiQuery<IssueParams>,
    uri: Uri,
) -> Result<Response, Error> {
    let filter = params.filter()?;
    let issues = query.issues(project_id, &filter).await?;
    let project = project_of(&query, project_id).await?;
    let next = (issues.len() == filter.limit as usize)
        .then(|| issues.last())
        .flatten()
        .map(|last| Cursor {
            value: last.sort_value(filter.sort),
            id: last.id,
        });
    let body: Vec<Value> = issues.iter().map(|i| issue_json(i, &project)).collect();
    Ok((next_link(&uri, next), Json(body)).into_response())
}

/// `PUT /api/0/projects/{project_id}/issues/?id=1&id=2` with `{"status": …}`.
async fn bulk_status(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    uri: Uri,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let ids = bulk_ids(&uri)?;
    let status = status_body(&body)?;
    project_of(&query, project_id).await?;
    let updated = query
        .set_issue_status(Some(project_id), &ids, status)
        .await?;
    let updated: Vec<String> = updated.iter().map(u64::to_string).collect();
    Ok(Json(json!({"status": status.as_str(), "updated": updated})))
}

/// `GET /api/0/issues/{issue_id}/`
async fn issue_detail(State(query): State<Query>, id: Path<String>) -> Result<Json<Value>, Error> {
    let (issue, project) = find_issue(&query, issue_id(id)?).await?;
    let tags = query.issue_tags(issue.id, TOP_TAG_VALUES).await?;
    let latest = query.issue_events(issue.id, 1, None, true).await?;
    let values_of = |key: &str| -> Vec<&str> {
        tags.iter()
            .filter(|t| t.key == key)
            .map(|t| t.value.as_str())
            .collect()
    };
    let mut body = issue_json(&issue, &project);
    if let Value::Object(map) = &mut body {
        map.insert("tags".to_owned(), Value::Array(tags_json(&tags)));
        map.insert("environments".to_owned(), json!(values_of("environment")));
        map.insert("releases".to_owned(), json!(values_of("release")));
        map.insert(
            "grouping".to_owned(),
            json!({
                "hash": issue.hash,
                "groupedBy": issue.grouped_by,
                "values": issue.grouping_values,
            }),
        );
        map.insert(
            "latestEvent".to_owned(),
            latest.first().map_or(Value::Null, event_json),
        );
    }
    Ok(Json(body))
}

/// `PUT /api/0/issues/{issue_id}/` with `{"status": …}`: answers the updated issue.
async fn issue_status(
    State(query): State<Query>,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let id = issue_id(id)?;
    let status = status_body(&body)?;
    if query
        .set_issue_status(None, &[id], status)
        .await?
        .is_empty()
    {
        return Err(Error::NotFound("issue"));
    }
    let (issue, project) = find_issue(&query, id).await?;
    Ok(Json(issue_json(&issue, &project)))
}

#[derive(Debug, Default, Deserialize)]
struct EventParams {
    limit: Option<u32>,
    cursor: Option<String>,
    /// `true`: each event with its whole payload.
    full: Option<bool>,
}

/// `GET /api/0/issues/{issue_id}/events/`: newest first.
async fn issue_events(
    State(query): State<Query>,
    id: Path<String>,
    ApiQuery(params): ApiQuery<EventParams>,
    uri: Uri,
) -> Result<Response, Error> {
    let id = issue_id(id)?;
    let limit = limit(params.limit)?;
    let cursor = cursor(params.cursor.as_deref())?;
    query.issue(id).await?.ok_or(Error::NotFound("issue"))?;
    let events = query
        .issue_events(id, limit, cursor, params.full.unwrap_or(false))
        .await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last())
        .flatten()
        .map(|last| Cursor {
            value: last.timestamp,
            id: last.id,
        });
    let body: Vec<Value> = events.iter().map(event_json).collect();
    Ok((next_link(&uri, next), Json(body)).into_response())
}

/// `GET /api/0/projects/{project_id}/events/{event_id}/`: the whole event.
async fn event_detail(
    State(query): State<Query>,
    Path((project_id, event_id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let project_id: u64 = project_id
        .parse()
        .map_err(|_| bad("project id must be a number"))?;
    let event_id = normalize_uuid(&event_id).ok_or_else(|| bad("event id must be a uuid"))?;
    project_of(&query, project_id).await?;
    let event = query
        .event(project_id, &event_id)
        .await?
        .ok_or(Error::NotFound("event"))?;
    Ok(Json(event_json(&event)))
}

#[derive(Debug, Default, Deserialize)]
struct ItemCountParams {
    days: Option<u32>,
}

#[derive(Debug, Serialize)]
struct ItemCountJson {
    day: String,
    #[serde(rename = "type")]
    item_type: String,
    count: u64,
}

/// `GET /api/0/projects/{project_id}/item-counts/?days=30`: envelope items per UTC day
/// and type.
async fn item_counts(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(params): ApiQuery<ItemCountParams>,
) -> Result<Json<Vec<ItemCountJson>>, Error> {
    let days = params.days.unwrap_or(30);
    if !(1..=MAX_ITEM_DAYS).contains(&days) {
        return Err(bad(format!("days must be between 1 and {MAX_ITEM_DAYS}")));
    }
    let counts = query.item_counts(project_id, days).await?;
    Ok(Json(
        counts
            .into_iter()
            .map(|c| ItemCountJson {
                day: c.day,
                item_type: c.item_type,
                count: c.count,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Result<IssueFilter, Error> {
        axum::extract::Query::<IssueParams>::try_from_uri(
            &format!("/x?{query}").parse::<Uri>().expect("uri"),
        )
        .expect("parses")
        .0
        .filter()
    }

    #[test]
    fn issue_filters_default_like_sentry() {
        let f = params("").expect("valid");
        assert_eq!(f.status, Some(IssueStatus::Unresolved));
        assert_eq!(
            (f.sort, f.limit, f.text),
            (IssueSort::LastSeen, DEFAULT_LIMIT, None)
        );
        assert_eq!(params("status=").expect("valid").status, None);
        assert_eq!(params("status=all").expect("valid").status, None);
        let f = params("query=is:resolved+level:error+release:1.2+user+not+found&sort=freq")
            .expect("valid");
        assert_eq!(f.status, Some(IssueStatus::Resolved));
        assert_eq!(f.level.as_deref(), Some("error"));
        assert_eq!(f.release.as_deref(), Some("1.2"));
        assert_eq!(f.text.as_deref(), Some("user not found"));
        assert_eq!(f.sort, IssueSort::Count);
        let f = params("query=is:resolved&status=ignored").expect("valid");
        assert_eq!(f.status, Some(IssueStatus::Ignored));
    }

    #[test]
    fn bad_issue_filters_are_named() {
        for (query, reason) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("status=open", "status"),
            ("level=loud", "level"),
            ("sort=priority", "sort"),
            ("cursor=abc", "cursor"),
            ("query=is:maybe", "status"),
        ] {
            let error = params(query).expect_err(query).to_string();
            assert!(error.contains(reason), "{query}: {error}");
        }
        let long = format!("query={}", "a".repeat(MAX_FILTER_LEN + 1));
        assert!(params(&long).is_err());
    }

    #[test]
    fn bulk_ids_are_bounded() {
        let ids = |q: &str| bulk_ids(&format!("/x?{q}").parse::<Uri>().expect("uri"));
        assert_eq!(ids("id=3&id=1&id=3&status=x").expect("valid"), [3, 1]);
        assert!(ids("").is_err());
        assert!(ids("id=x").is_err());
        let many: Vec<String> = (0..=MAX_LIMIT).map(|i| format!("id={i}")).collect();
        assert!(ids(&many.join("&")).is_err());
    }

    #[test]
    fn short_ids_read_like_sentrys() {
        let project = Project {
            id: 1,
            name: "my app".into(),
            public_key: String::new(),
        };
        assert_eq!(short_id(&project, 1), "MY-APP-1");
        assert_eq!(short_id(&project, 36 * 36 + 35), "MY-APP-10Z");
        assert_eq!(short_id(&project, 0), "MY-APP-0");
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            value: 1_700_000_000.123_456,
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("NaN:1"), None);
        assert_eq!(Cursor::decode("1:-1"), None);
    }
}
