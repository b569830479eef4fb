//! Error events in SQLite: the group commit of envelopes into issues, events, tag and
//! user summaries, and the queries the issue API reads.
//!
//! The write path is built for tens of thousands of events per second through one
//! connection: a commit's events are aggregated in memory first (one issue row per
//! distinct issue, one tag row per distinct issue × key × value) and each table is
//! written by one statement that reads all its rows from one JSON parameter
//! (`json_each`): a fixed handful of prepared statements and round trips per commit.
//! Counting (times seen, first/last seen, users, regression) is done by the triggers in
//! `0002_errors.sql`, on the rows actually inserted: a duplicate `event_id` is skipped by
//! `ON CONFLICT DO NOTHING` and so never counts.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::issues::{
    Cursor, EnvelopeIngest, EventRecord, Issue, IssueFilter, IssueSort, IssueStatus, ItemCount,
    StoredEvent, TagValue,
};
use super::{to_i64, to_u64};
use crate::time::utc_day;

/// Runs `sql` once with all of `rows` as one JSON array in `?1`, which the statement
/// reads back with `json_each`: one statement and one round trip to the connection's
/// thread per table and commit, whatever the number of rows. (Per-row or per-chunk
/// statements cost a thread handoff each, which on a busy machine dominated the commit.)
async fn insert_rows<R: Serialize>(
    conn: &mut SqliteConnection,
    sql: &str,
    rows: &[R],
) -> Result<Vec<SqliteRow>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let json = serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(sql).bind(json).fetch_all(&mut *conn).await
}

/// One issue touched by a commit: its newest event describes it.
struct IssueDraft<'a> {
    project_id: i64,
    newest: &'a EventRecord,
    oldest_timestamp: f64,
}

/// What one commit of envelopes stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct EnvelopeSummary {
    pub events: u64,
    pub duplicates: u64,
}

/// Writes every envelope of a group commit inside the caller's transaction.
pub(super) async fn write_envelopes(
    conn: &mut SqliteConnection,
    envelopes: &[&EnvelopeIngest],
) -> Result<EnvelopeSummary, sqlx::Error> {
    let mut summary = EnvelopeSummary::default();
    write_item_counts(conn, envelopes).await?;

    // Events in commit order, duplicates within the commit dropped here (the store
    // drops those of earlier commits).
    let mut seen = HashSet::new();
    let mut events: Vec<(i64, f64, &EventRecord)> = Vec::new();
    for envelope in envelopes {
        let project_id = to_i64(envelope.project_id);
        for event in &envelope.events {
            if seen.insert((project_id, event.event_id.as_str())) {
                events.push((project_id, envelope.received_at, event));
            } else {
                summary.duplicates += 1;
            }
        }
    }
    if events.is_empty() {
        return Ok(summary);
    }

    // One upsert per distinct issue, described by its newest event.
    let mut draft_index: HashMap<(i64, &str), usize> = HashMap::new();
    let mut drafts: Vec<IssueDraft<'_>> = Vec::new();
    for &(project_id, _, event) in &events {
        match draft_index.get(&(project_id, event.hash.as_str())) {
            Some(&i) => {
                let draft = &mut drafts[i];
                if event.timestamp >= draft.newest.timestamp {
                    draft.newest = event;
                }
                draft.oldest_timestamp = draft.oldest_timestamp.min(event.timestamp);
            }
            None => {
                draft_index.insert((project_id, event.hash.as_str()), drafts.len());
                drafts.push(IssueDraft {
                    project_id,
                    newest: event,
                    oldest_timestamp: event.timestamp,
                });
            }
        }
    }
    let drafts: Vec<_> = drafts
        .iter()
        .map(|d| {
            let e = d.newest;
            (
                d.project_id,
                e.hash.as_str(),
                e.title.as_str(),
                e.culprit.as_str(),
                e.level,
                e.platform.as_str(),
                d.oldest_timestamp,
                e.grouped_by,
                e.grouping_values.as_str(),
            )
        })
        .collect();
    let rows = insert_rows(
        conn,
        // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
        "INSERT INTO issues (project_id, hash, title, culprit, level, platform, substatus,
                             first_seen, last_seen, grouped_by, grouping_values)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                'new', value ->> 6, value ->> 6, value ->> 7, value ->> 8
         FROM json_each(?1) WHERE true
         ON CONFLICT (project_id, hash) DO UPDATE SET
             title = excluded.title,
             culprit = excluded.culprit,
             level = excluded.level,
             platform = excluded.platform,
             grouped_by = excluded.grouped_by,
             grouping_values = excluded.grouping_values
         RETURNING id, project_id, hash, times_seen",
        &drafts,
    )
    .await?;
    let mut issue_ids: HashMap<(i64, String), i64> = HashMap::with_capacity(rows.len());
    // Issues created by this commit start at zero events; the events' trigger counts them.
    let mut created: HashSet<i64> = HashSet::new();
    for row in &rows {
        let id: i64 = row.try_get(0)?;
        issue_ids.insert((row.try_get(1)?, row.try_get(2)?), id);
        if row.try_get::<i64, _>(3)? == 0 {
            created.insert(id);
        }
    }
    let with_issue: Vec<(i64, f64, &EventRecord, i64)> = events
        .iter()
        .map(|&(project_id, received, event)| {
            issue_ids
                .get(&(project_id, event.hash.clone()))
                .map(|&issue_id| (project_id, received, event, issue_id))
                .ok_or_else(|| sqlx::Error::Protocol("issue upsert returned no id".into()))
        })
        .collect::<Result<_, _>>()?;

    let event_rows: Vec<_> = with_issue
        .iter()
        .map(|&(project_id, received, e, issue_id)| {
            (
                project_id,
                e.event_id.as_str(),
                issue_id,
                e.timestamp,
                received,
                e.level,
                e.title.as_str(),
                e.culprit.as_str(),
                e.platform.as_str(),
                e.environment.as_deref(),
                e.release.as_deref(),
                e.user.as_deref(),
                e.hash.as_str(),
                e.grouped_by,
                e.tags_json.as_str(),
                e.payload.as_str(),
            )
        })
        .collect();
    let inserted_rows = insert_rows(
        conn,
        "INSERT INTO events (project_id, event_id, issue_id, timestamp, received, level, title,
                             culprit, platform, environment, release, user, hash, grouped_by,
                             tags, payload)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
                value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11,
                value ->> 12, value ->> 13, value ->> 14, value ->> 15
         FROM json_each(?1) WHERE true
         ON CONFLICT (project_id, event_id) DO NOTHING
         RETURNING project_id, event_id",
        &event_rows,
    )
    .await?;
    let mut inserted: HashSet<(i64, String)> = HashSet::with_capacity(inserted_rows.len());
    for row in &inserted_rows {
        inserted.insert((row.try_get(0)?, row.try_get(1)?));
    }
    summary.events = inserted.len() as u64;
    summary.duplicates += (with_issue.len() - inserted.len()) as u64;

    // Tag and user summaries of the events actually inserted.
    let mut tags: HashMap<(i64, &str, &str), (i64, f64, f64)> = HashMap::new();
    let mut users: HashSet<(i64, &str)> = HashSet::new();
    let mut counted_issues: HashSet<i64> = HashSet::new();
    for &(project_id, _, event, issue_id) in &with_issue {
        if !inserted.contains(&(project_id, event.event_id.clone())) {
            continue;
        }
        counted_issues.insert(issue_id);
        for (key, value) in &event.tags {
            let entry = tags
                .entry((issue_id, key.as_str(), value.as_str()))
                .or_insert((0, event.timestamp, event.timestamp));
            entry.0 += 1;
            entry.1 = entry.1.min(event.timestamp);
            entry.2 = entry.2.max(event.timestamp);
        }
        if let Some(user) = &event.user {
            users.insert((issue_id, user.as_str()));
        }
    }
    let tags: Vec<_> = tags
        .into_iter()
        .map(|((issue_id, key, value), (count, first, last))| {
            (issue_id, key, value, count, first, last)
        })
        .collect();
    insert_rows(
        conn,
        "INSERT INTO issue_tags (issue_id, key, value, count, first_seen, last_seen)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
         FROM json_each(?1) WHERE true
         ON CONFLICT (issue_id, key, value) DO UPDATE SET
             count = count + excluded.count,
             first_seen = MIN(first_seen, excluded.first_seen),
             last_seen = MAX(last_seen, excluded.last_seen)",
        &tags,
    )
    .await?;
    let users: Vec<_> = users.into_iter().collect();
    insert_rows(
        conn,
        "INSERT INTO issue_users (issue_id, user)
         SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true
         ON CONFLICT (issue_id, user) DO NOTHING",
        &users,
    )
    .await?;

    // An issue created for events that all turned out to be duplicates (same event_id,
    // different content) has no event: it must not appear.
    for id in created.difference(&counted_issues) {
        sqlx::query("DELETE FROM issues WHERE id = ?1 AND times_seen = 0")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(summary)
}

/// Adds every envelope's item counts to the per-day table.
async fn write_item_counts(
    conn: &mut SqliteConnection,
    envelopes: &[&EnvelopeIngest],
) -> Result<(), sqlx::Error> {
    let mut counts: HashMap<(i64, String, &str), i64> = HashMap::new();
    for envelope in envelopes {
        let day = utc_day(envelope.received_at);
        for &(item_type, n) in &envelope.items {
            *counts
                .entry((to_i64(envelope.project_id), day.clone(), item_type))
                .or_default() += to_i64(n);
        }
    }
    let counts: Vec<_> = counts
        .iter()
        .map(|((project_id, day, item_type), n)| (project_id, day.as_str(), item_type, n))
        .collect();
    insert_rows(
        conn,
        "INSERT INTO item_counts (project_id, day, item_type, count)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?1) WHERE true
         ON CONFLICT (project_id, day, item_type) DO UPDATE SET
             count = MIN(count + excluded.count, 9223372036854775807)",
        &counts,
    )
    .await?;
    Ok(())
}

const ISSUE_COLUMNS: &str = "id, project_id, hash, title, culprit, level, platform, status,
    substatus, first_seen, last_seen, times_seen, user_count, grouped_by, grouping_values,
    last_release, last_environment";

fn issue(row: &SqliteRow) -> Result<Issue, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let values: String = row.try_get("grouping_values")?;
    Ok(Issue {
        id: to_u64(row.try_get("id")?),
        project_id: to_u64(row.try_get("project_id")?),
        hash: row.try_get("hash")?,
        title: row.try_get("title")?,
        culprit: row.try_get("culprit")?,
        level: row.try_get("level")?,
        platform: row.try_get("platform")?,
        status: IssueStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Protocol(format!("unknown issue status {status:?}")))?,
        substatus: row.try_get("substatus")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        times_seen: to_u64(row.try_get("times_seen")?),
        user_count: to_u64(row.try_get("user_count")?),
        grouped_by: row.try_get("grouped_by")?,
        grouping_values: serde_json::from_str(&values).unwrap_or_default(),
        last_release: row.try_get("last_release")?,
        last_environment: row.try_get("last_environment")?,
    })
}

/// The sort column of an issue list; a closed set, never client text.
fn sort_column(sort: IssueSort) -> &'static str {
    match sort {
        IssueSort::LastSeen => "last_seen",
        IssueSort::Count => "times_seen",
        IssueSort::FirstSeen => "first_seen",
    }
}

/// `%text%` for LIKE, with LIKE's own wildcards escaped by `\`.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub(super) async fn issues(
    conn: &mut SqliteConnection,
    project_id: u64,
    filter: &IssueFilter,
) -> Result<Vec<Issue>, sqlx::Error> {
    let column = sort_column(filter.sort);
    let sql = format!(
        "SELECT {ISSUE_COLUMNS} FROM issues
         WHERE project_id = ?1 AND times_seen > 0
           AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR level = ?3)
           AND (?4 IS NULL OR EXISTS (SELECT 1 FROM issue_tags t WHERE t.issue_id = issues.id
                                      AND t.key = 'environment' AND t.value = ?4))
           AND (?5 IS NULL OR EXISTS (SELECT 1 FROM issue_tags t WHERE t.issue_id = issues.id
                                      AND t.key = 'release' AND t.value = ?5))
           AND (?6 IS NULL OR title LIKE ?6 ESCAPE '\\' OR culprit LIKE ?6 ESCAPE '\\')
           AND (?7 IS NULL OR {column} < ?7 OR ({column} = ?7 AND id < ?8))
         ORDER BY {column} DESC, id DESC
         LIMIT ?9"
    );
    sqlx::query(&sql)
        .bind(to_i64(project_id))
        .bind(filter.status.map(IssueStatus::as_str))
        .bind(filter.level.as_deref())
        .bind(filter.environment.as_deref())
        .bind(filter.release.as_deref())
        .bind(filter.text.as_deref().map(like_pattern))
        .bind(filter.cursor.map(|c| c.value))
        .bind(filter.cursor.map(|c| to_i64(c.id)))
        .bind(filter.limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(issue)
        .collect()
}

pub(super) async fn issue_by_id(
    conn: &mut SqliteConnection,
    issue_id: u64,
) -> Result<Option<Issue>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ISSUE_COLUMNS} FROM issues WHERE id = ?1 AND times_seen > 0"
    ))
    .bind(to_i64(issue_id))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(issue)
    .transpose()
}

/// Most tag rows one issue detail reads, whatever the number of keys.
const MAX_TAG_ROWS: i64 = 2_000;

pub(super) async fn issue_tags(
    conn: &mut SqliteConnection,
    issue_id: u64,
    top: u32,
) -> Result<Vec<TagValue>, sqlx::Error> {
    sqlx::query(
        "SELECT key, value, count, first_seen, last_seen, distinct_values, total
         FROM (SELECT key, value, count, first_seen, last_seen,
                      ROW_NUMBER() OVER (PARTITION BY key ORDER BY count DESC, value) AS rank,
                      COUNT(*) OVER (PARTITION BY key) AS distinct_values,
                      SUM(count) OVER (PARTITION BY key) AS total
               FROM issue_tags WHERE issue_id = ?1)
         WHERE rank <= ?2
         ORDER BY key, rank
         LIMIT ?3",
    )
    .bind(to_i64(issue_id))
    .bind(top)
    .bind(MAX_TAG_ROWS)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| {
        Ok(TagValue {
            key: row.try_get(0)?,
            value: row.try_get(1)?,
            count: to_u64(row.try_get(2)?),
            first_seen: row.try_get(3)?,
            last_seen: row.try_get(4)?,
            distinct_values: to_u64(row.try_get(5)?),
            total: to_u64(row.try_get(6)?),
        })
    })
    .collect()
}

/// Event columns; the payload is selected as NULL when not wanted.
const EVENT_COLUMNS: &str = "id, event_id, issue_id, project_id, timestamp, received, level,
    title, culprit, platform, environment, release, user, hash, grouped_by, tags";

fn event(row: &SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    let tags: String = row.try_get("tags")?;
    let payload: Option<String> = row.try_get("payload")?;
    Ok(StoredEvent {
        id: to_u64(row.try_get("id")?),
        event_id: row.try_get("event_id")?,
        issue_id: to_u64(row.try_get("issue_id")?),
        project_id: to_u64(row.try_get("project_id")?),
        timestamp: row.try_get("timestamp")?,
        received: row.try_get("received")?,
        level: row.try_get("level")?,
        title: row.try_get("title")?,
        culprit: row.try_get("culprit")?,
        platform: row.try_get("platform")?,
        environment: row.try_get("environment")?,
        release: row.try_get("release")?,
        user: row.try_get("user")?,
        hash: row.try_get("hash")?,
        grouped_by: row.try_get("grouped_by")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        payload: payload.map(|p| serde_json::from_str(&p).unwrap_or(Value::Null)),
    })
}

pub(super) async fn issue_events(
    conn: &mut SqliteConnection,
    issue_id: u64,
    limit: u32,
    cursor: Option<Cursor>,
    full: bool,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let payload = if full { "payload" } else { "NULL AS payload" };
    sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS}, {payload} FROM events
         WHERE issue_id = ?1
           AND (?2 IS NULL OR timestamp < ?2 OR (timestamp = ?2 AND id < ?3))
         ORDER BY timestamp DESC, id DESC
         LIMIT ?4"
    ))
    .bind(to_i64(issue_id))
    .bind(cursor.map(|c| c.value))
    .bind(cursor.map(|c| to_i64(c.id)))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(event)
    .collect()
}

pub(super) async fn event_by_id(
    conn: &mut SqliteConnection,
    project_id: u64,
    event_id: &str,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS}, payload FROM events WHERE project_id = ?1 AND event_id = ?2"
    ))
    .bind(to_i64(project_id))
    .bind(event_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(event)
    .transpose()
}

pub(super) async fn set_issue_status(
    conn: &mut SqliteConnection,
    project_id: Option<u64>,
    ids: &[u64],
    status: IssueStatus,
    now: f64,
) -> Result<Vec<u64>, sqlx::Error> {
    // The id list travels as one JSON parameter: one statement shape for any count.
    let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE issues SET
             status = ?3,
             substatus = CASE ?3
                 WHEN 'resolved' THEN NULL
                 WHEN 'ignored' THEN 'archived_forever'
                 ELSE CASE WHEN status = 'unresolved' THEN substatus ELSE 'ongoing' END
             END,
             resolved_at = CASE ?3 WHEN 'resolved' THEN ?4 ELSE NULL END
         WHERE id IN (SELECT value FROM json_each(?1))
           AND (?2 IS NULL OR project_id = ?2)
           AND times_seen > 0
         RETURNING id",
    )
    .bind(ids)
    .bind(project_id.map(to_i64))
    .bind(status.as_str())
    .bind(now)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| row.try_get::<i64, _>(0).map(to_u64))
    .collect()
}

pub(super) async fn item_counts(
    conn: &mut SqliteConnection,
    project_id: u64,
    since_day: &str,
) -> Result<Vec<ItemCount>, sqlx::Error> {
    sqlx::query(
        "SELECT day, item_type, count FROM item_counts
         WHERE project_id = ?1 AND day >= ?2
         ORDER BY day, item_type",
    )
    .bind(to_i64(project_id))
    .bind(since_day)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| {
        Ok(ItemCount {
            day: row.try_get(0)?,
            item_type: row.try_get(1)?,
            count: to_u64(row.try_get(2)?),
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_pattern("100%_a\\b"), "%100\\%\\_a\\\\b%");
    }
}
