//! Threads and their comments: listing, reading, posting, voting, searching
//! and exporting.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqlitePool};
use tracing::Instrument;

use crate::error::AppError;
use crate::extract::{Id, JsonBody, Params};
use crate::features::Features;
use crate::{FNV_OFFSET, fnv1a, unix_now};

/// Characters of the top comment a thread preview shows.
const PREVIEW_CHARS: usize = 120;

/// Longest comment body accepted, in characters.
const MAX_COMMENT_CHARS: usize = 5_000;
/// Longest search query accepted, in characters.
const MAX_QUERY_CHARS: usize = 100;
/// Search results returned per query.
const SEARCH_LIMIT: i64 = 20;
/// Characters of a matching comment shown in a search result.
const SNIPPET_CHARS: usize = 120;
/// Roughly how much JSON an export builds in memory.
const EXPORT_TARGET_BYTES: usize = 4 * 1024 * 1024;
/// Upper bound on export copies, whatever the thread's size.
const EXPORT_MAX_COPIES: usize = 2_048;

#[derive(Serialize)]
pub(crate) struct ThreadSummary {
    id: i64,
    title: String,
    url: String,
    author_id: i64,
    created_at: i64,
    comment_count: i64,
}

impl FromRow<'_, SqliteRow> for ThreadSummary {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(ThreadSummary {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            url: row.try_get("url")?,
            author_id: row.try_get("author_id")?,
            created_at: row.try_get("created_at")?,
            comment_count: row.try_get("comment_count")?,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Thread {
    id: i64,
    title: String,
    url: String,
    author_id: i64,
    created_at: i64,
}

impl FromRow<'_, SqliteRow> for Thread {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Thread {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            url: row.try_get("url")?,
            author_id: row.try_get("author_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A comment as stored, before its author is attached.
struct CommentRow {
    id: i64,
    author_id: i64,
    parent_id: Option<i64>,
    body: String,
    score: i64,
    created_at: i64,
}

impl FromRow<'_, SqliteRow> for CommentRow {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(CommentRow {
            id: row.try_get("id")?,
            author_id: row.try_get("author_id")?,
            parent_id: row.try_get("parent_id")?,
            body: row.try_get("body")?,
            score: row.try_get("score")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Author {
    id: i64,
    username: String,
    display_name: String,
}

impl FromRow<'_, SqliteRow> for Author {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        Ok(Author {
            id: row.try_get("id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Comment {
    id: i64,
    parent_id: Option<i64>,
    body: String,
    score: i64,
    created_at: i64,
    author: Author,
}

impl Comment {
    fn new(row: CommentRow, author: Author) -> Comment {
        Comment {
            id: row.id,
            parent_id: row.parent_id,
            body: row.body,
            score: row.score,
            created_at: row.created_at,
            author,
        }
    }
}

/// Comments with their authors in one query (what `show` should do).
impl FromRow<'_, SqliteRow> for Comment {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        let author = Author {
            id: row.try_get("author_id")?,
            username: row.try_get("username")?,
            display_name: row.try_get("display_name")?,
        };
        Ok(Comment::new(CommentRow::from_row(row)?, author))
    }
}

#[derive(Serialize)]
pub(crate) struct ThreadList {
    threads: Vec<ThreadSummary>,
}

/// `GET /threads`: every thread with its comment count.
pub(crate) async fn list(State(db): State<SqlitePool>) -> Result<Json<ThreadList>, AppError> {
    let threads = sqlx::query_as::<_, ThreadSummary>(
        "SELECT t.id, t.title, t.url, t.author_id, t.created_at, COUNT(c.id) AS comment_count \
         FROM threads t LEFT JOIN comments c ON c.thread_id = t.id \
         GROUP BY t.id ORDER BY t.id",
    )
    .fetch_all(&db)
    .await?;
    Ok(Json(ThreadList { threads }))
}

#[derive(Serialize)]
pub(crate) struct ThreadDetail {
    thread: Thread,
    comments: Vec<Comment>,
    /// The top-scored comment's opening, with switch `comments:rich_preview` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
}

async fn find_thread(db: &SqlitePool, id: i64) -> Result<Thread, AppError> {
    sqlx::query_as::<_, Thread>(
        "SELECT id, title, url, author_id, created_at FROM threads WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound)
}

/// `GET /threads/{id}`: the thread and all its comments with their authors.
pub(crate) async fn show(
    State(db): State<SqlitePool>,
    Id(id): Id,
    features: Features,
) -> Result<Json<ThreadDetail>, AppError> {
    let thread = find_thread(&db, id).await?;
    let rows = sqlx::query_as::<_, CommentRow>(
        "SELECT id, author_id, parent_id, body, score, created_at \
         FROM comments WHERE thread_id = ? ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&db)
    .await?;
    // Deliberate N+1 for the demo: one query per comment for its author, the
    // lazy-loading pattern Sightline's query counts exist to expose. `export`
    // shows the fix: a single join.
    let mut comments = Vec::with_capacity(rows.len());
    for row in rows {
        let author = sqlx::query_as::<_, Author>(
            "SELECT u.id, u.username, p.display_name \
             FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?",
        )
        .bind(row.author_id)
        .fetch_one(&db)
        .await?;
        comments.push(Comment::new(row, author));
    }
    let preview = features
        .on(crate::features::RICH_PREVIEW)
        .then(|| comments.iter().max_by_key(|c| (c.score, -c.id)))
        .flatten()
        .map(|top| top.body.chars().take(PREVIEW_CHARS).collect());
    Ok(Json(ThreadDetail {
        thread,
        comments,
        preview,
    }))
}

#[derive(Deserialize)]
pub(crate) struct NewComment {
    user_id: i64,
    body: String,
    #[serde(default)]
    parent_id: Option<i64>,
}

async fn user_exists(db: &SqlitePool, id: i64) -> Result<bool, AppError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// `POST /threads/{id}/comments`: adds a comment (optionally a reply).
pub(crate) async fn post_comment(
    State(db): State<SqlitePool>,
    Id(thread_id): Id,
    JsonBody(new): JsonBody<NewComment>,
) -> Result<(StatusCode, Json<Comment>), AppError> {
    let body = new.body.trim();
    if body.is_empty() {
        return Err(AppError::BadRequest("comment body is empty"));
    }
    if body.chars().count() > MAX_COMMENT_CHARS {
        return Err(AppError::BadRequest("comment body is too long"));
    }
    find_thread(&db, thread_id).await?;
    let author = sqlx::query_as::<_, Author>(
        "SELECT u.id, u.username, p.display_name \
         FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?",
    )
    .bind(new.user_id)
    .fetch_optional(&db)
    .await?
    .ok_or(AppError::BadRequest("unknown user"))?;
    if let Some(parent) = new.parent_id {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM comments WHERE id = ? AND thread_id = ?")
                .bind(parent)
                .bind(thread_id)
                .fetch_optional(&db)
                .await?;
        if found.is_none() {
            return Err(AppError::BadRequest("unknown parent comment"));
        }
    }
    let created_at = unix_now();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO comments (thread_id, author_id, parent_id, body, score, created_at) \
         VALUES (?, ?, ?, ?, 0, ?) RETURNING id",
    )
    .bind(thread_id)
    .bind(author.id)
    .bind(new.parent_id)
    .bind(body)
    .bind(created_at)
    .fetch_one(&db)
    .await?;
    let comment = Comment {
        id,
        parent_id: new.parent_id,
        body: body.to_owned(),
        score: 0,
        created_at,
        author,
    };
    Ok((StatusCode::CREATED, Json(comment)))
}

#[derive(Deserialize)]
pub(crate) struct NewVote {
    user_id: i64,
    value: i64,
}

#[derive(Serialize)]
pub(crate) struct VoteResult {
    comment_id: i64,
    score: i64,
}

/// `POST /comments/{id}/vote`: records (or changes) a user's ±1 vote and
/// returns the comment's new score.
pub(crate) async fn vote(
    State(db): State<SqlitePool>,
    Id(comment_id): Id,
    JsonBody(vote): JsonBody<NewVote>,
) -> Result<Json<VoteResult>, AppError> {
    if vote.value != 1 && vote.value != -1 {
        return Err(AppError::BadRequest("vote value must be 1 or -1"));
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM comments WHERE id = ?")
        .bind(comment_id)
        .fetch_optional(&db)
        .await?;
    if found.is_none() {
        return Err(AppError::NotFound);
    }
    if !user_exists(&db, vote.user_id).await? {
        return Err(AppError::BadRequest("unknown user"));
    }
    // Write first: the transaction takes SQLite's write lock on its first
    // statement, waiting on busy_timeout instead of failing a read-to-write
    // upgrade under concurrent votes.
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO votes (comment_id, user_id, value, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (comment_id, user_id) DO UPDATE SET value = excluded.value",
    )
    .bind(comment_id)
    .bind(vote.user_id)
    .bind(vote.value)
    .bind(unix_now())
    .execute(&mut *tx)
    .await?;
    let score: i64 = sqlx::query_scalar(
        "UPDATE comments SET score = \
         (SELECT COALESCE(SUM(value), 0) FROM votes WHERE comment_id = ?1) \
         WHERE id = ?1 RETURNING score",
    )
    .bind(comment_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(VoteResult { comment_id, score }))
}

#[derive(Deserialize)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct SearchHit {
    comment_id: i64,
    thread_id: i64,
    snippet: String,
}

impl FromRow<'_, SqliteRow> for SearchHit {
    fn from_row(row: &SqliteRow) -> Result<Self, sqlx::Error> {
        let body: String = row.try_get("body")?;
        Ok(SearchHit {
            comment_id: row.try_get("id")?,
            thread_id: row.try_get("thread_id")?,
            snippet: body.chars().take(SNIPPET_CHARS).collect(),
        })
    }
}

#[derive(Serialize)]
pub(crate) struct SearchResults {
    query: String,
    total: i64,
    results: Vec<SearchHit>,
}

/// Escapes `%`, `_` and the escape character itself for `LIKE … ESCAPE '\'`.
fn escape_like(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The extra time a search for `q` takes: 20–80 ms, always the same for the
/// same query.
pub(crate) fn search_delay(q: &str) -> Duration {
    Duration::from_millis(20 + fnv1a(FNV_OFFSET, q.as_bytes()) % 61)
}

/// `GET /search?q=`: comments containing `q` (case-insensitive).
pub(crate) async fn search(
    State(db): State<SqlitePool>,
    Params(params): Params<SearchParams>,
) -> Result<Json<SearchResults>, AppError> {
    let q = params
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or(AppError::BadRequest("missing query"))?;
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::BadRequest("query is too long"));
    }
    let pattern = format!("%{}%", escape_like(q));
    // A LIKE with a leading wildcard cannot use an index: a full scan of the
    // comments table, the slow query the demo wants on the dashboard.
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(id) FROM comments WHERE body LIKE ? ESCAPE '\\'")
            .bind(&pattern)
            .fetch_one(&db)
            .await?;
    let results = sqlx::query_as::<_, SearchHit>(
        "SELECT id, thread_id, body FROM comments WHERE body LIKE ? ESCAPE '\\' \
         ORDER BY id LIMIT ?",
    )
    .bind(&pattern)
    .bind(SEARCH_LIMIT)
    .fetch_all(&db)
    .await?;
    // Deliberately slow for the demo: this stands in for a remote search
    // backend, so the route shows up with a visibly higher latency
    // distribution. Never do this in a real handler.
    // The span shows up in the request's exemplar waterfall, after the two queries.
    tokio::time::sleep(search_delay(q))
        .instrument(tracing::info_span!("search.backend"))
        .await;
    Ok(Json(SearchResults {
        query: q.to_owned(),
        total,
        results,
    }))
}

/// `GET /threads/{id}/export`: builds the whole thread as JSON, many times
/// over (a few MB in memory), and answers with a summary of what it built.
pub(crate) async fn export(
    State(db): State<SqlitePool>,
    Id(id): Id,
) -> Result<Json<serde_json::Value>, AppError> {
    let thread = find_thread(&db, id).await?;
    let comments = sqlx::query_as::<_, Comment>(
        "SELECT c.id, c.author_id, c.parent_id, c.body, c.score, c.created_at, \
                u.username, p.display_name \
         FROM comments c JOIN users u ON u.id = c.author_id \
         JOIN profiles p ON p.user_id = u.id \
         WHERE c.thread_id = ? ORDER BY c.created_at, c.id",
    )
    .bind(id)
    .fetch_all(&db)
    .await?;
    let comment_count = comments.len();
    let document = json!({ "thread": thread, "comments": comments });
    // Deliberately allocation-heavy for the demo: one serialized copy per
    // "page" of an imagined paginated export, all held in memory at once so
    // the allocation tally of this route stands out. Inline rather than on a
    // blocking thread so the allocations are attributed to this request.
    let one = document.to_string();
    let copies = EXPORT_TARGET_BYTES
        .div_ceil(one.len().max(1))
        .clamp(1, EXPORT_MAX_COPIES);
    let pages: Vec<String> = (0..copies)
        .map(|page| json!({ "page": page, "document": &document }).to_string())
        .collect();
    let bytes: usize = pages.iter().map(String::len).sum();
    let checksum = pages
        .iter()
        .fold(FNV_OFFSET, |hash, page| fnv1a(hash, page.as_bytes()));
    Ok(Json(json!({
        "thread_id": id,
        "comments": comment_count,
        "copies": copies,
        "bytes": bytes,
        "checksum": format!("{checksum:016x}"),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_delay_is_deterministic_and_in_range() {
        let mut seen = std::collections::BTreeSet::new();
        for q in ["latency", "cache", "x", "postgres replicas", "ünïcode", ""] {
            let delay = search_delay(q);
            assert_eq!(delay, search_delay(q));
            assert!((20..=80).contains(&delay.as_millis()), "{q}: {delay:?}");
            seen.insert(delay);
        }
        assert!(seen.len() > 1, "delay does not depend on the query");
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(escape_like("100%_a\\b"), "100\\%\\_a\\\\b");
        assert_eq!(escape_like("plain"), "plain");
    }
}
