//! Error events in SQLite: the group commit of envelopes into issues, events, tag and
//! user summaries, and the queries the issue API reads.
//!
//! The write path is built for tens of thousands of events per second through one
//! connection. A commit's events are aggregated in memory first (one issue row per
//! distinct issue, one tag row per distinct issue × key × value), then written row by row
//! through prepared single-row statements, synchronously, on the writer's own thread: the
//! commit borrows the SQLite handle of its sqlx connection ([`WriterTx::on_this_thread`]) instead
//! of sending each statement to the connection's thread and waiting for a core to run
//! it there. Row by row, each statement says what it did: an issue is looked up by its
//! key (and inserted only when new), an event insert whose `event_id` is already stored
//! changes nothing (a duplicate, never counted), a user insert that changes nothing is a
//! user the issue already had. Counting (times seen, first/last seen, users, regression)
//! is done here too, on the rows actually inserted, in one update per issue and commit
//! that also names the issue after the newest event the commit inserted for it
//! (`0006_issue_counts_per_commit.sql` dropped the per-row triggers).

use hashbrown::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Connection};

use super::issues::{
    Cursor, EnvelopeIngest, EventRecord, Issue, IssueFilter, IssueStatus, ItemCount, StoredEvent,
    StoredPayload, TagValue,
};
use super::meta_rows::{ISSUE_COLUMNS, db, issue, like_pattern, sort_column};
use super::sqlite::wal_buffer;
use super::{to_i64, to_u64};
use crate::Error;
use crate::time::utc_day;

/// The ingest writer's own connection, kept open so its page cache stays warm (SQLite
/// drops a connection's whole cache when another one wrote since it last read), with the
/// statements of its commits prepared once: preparing them again for every commit was
/// most of a small commit's fixed cost.
pub(super) struct WriterConnection {
    /// A borrowed view of `conn`'s SQLite handle that holds the prepared statements
    /// ([`WriterTx::on_this_thread`]). Declared before `conn` so that it is dropped, its
    /// statements finalized, before sqlx closes the handle (sqlx's close panics on a
    /// handle with a statement left).
    statements: Option<rusqlite::Connection>,
    conn: SqliteConnection,
}

impl WriterConnection {
    /// Opens the connection. `serialized`: SQLite's own per-connection mutex guards
    /// every call on it, because the prepared statements are finalized on whichever
    /// thread drops this while sqlx's thread may still be running a rollback queued by a
    /// dropped transaction.
    ///
    /// Its WAL appends go through [`wal_buffer`]: a commit's frames reach the file in a
    /// few large writes at the commit's sync. That needs `synchronous = FULL` (a sync at every
    /// commit), checked here, and the rollback hook that drops a rolled-back
    /// transaction's frames, set here.
    #[allow(unsafe_code)]
    pub(super) async fn open(options: &SqliteConnectOptions) -> Result<Self, Error> {
        wal_buffer::register().map_err(|e| Error::Store(std::sync::Arc::new(StoreSetup(e))))?;
        let mut conn = options
            .clone()
            .serialized(true)
            .vfs(wal_buffer::NAME)
            .connect()
            .await
            .map_err(db)?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        if synchronous < 2 {
            return Err(Error::Store(std::sync::Arc::new(StoreSetup(
                "the ingest writer needs synchronous = FULL",
            ))));
        }
        {
            let mut handle = conn.lock_handle().await.map_err(db)?;
            let raw = handle.as_raw_handle().as_ptr();
            // SAFETY: the hook is set on the connection's own open handle, with the handle
            // as its argument; it is called only while that handle is open.
            unsafe {
                rusqlite::ffi::sqlite3_rollback_hook(
                    raw.cast(),
                    Some(wal_buffer::discard_on_rollback),
                    raw.cast(),
                );
            }
        }
        Ok(WriterConnection {
            statements: None,
            conn,
        })
    }

    /// Begins an immediate transaction: it takes the write lock up front, where a deferred
    /// one that upgrades from read to write can fail with SQLITE_BUSY without waiting out
    /// the busy timeout.
    pub(super) async fn begin(&mut self) -> Result<WriterTx<'_>, Error> {
        let tx = self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        Ok(WriterTx {
            tx,
            statements: &mut self.statements,
        })
    }

    /// Finalizes the statements and closes the connection.
    pub(super) async fn close(mut self) {
        self.statements = None;
        let _ = self.conn.close().await;
    }
}

/// A transaction on the writer's connection.
pub(super) struct WriterTx<'c> {
    tx: sqlx::Transaction<'c, sqlx::Sqlite>,
    statements: &'c mut Option<rusqlite::Connection>,
}

impl WriterTx<'_> {
    /// Runs `write` on the connection's SQLite handle, on this thread, inside this
    /// transaction: a group commit's statements without a hand-off to the connection's
    /// own thread for each. sqlx's thread waits on the handle's lock meanwhile. `write`
    /// prepares through `prepare_cached`, so each statement is prepared once per
    /// connection.
    #[allow(unsafe_code)]
    pub(super) async fn on_this_thread<T>(
        &mut self,
        write: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let mut handle = self.tx.lock_handle().await.map_err(db)?;
        let statements = match self.statements {
            Some(statements) => statements,
            // SAFETY: the handle is a live connection that sqlx keeps open for as long as
            // the `WriterConnection` holding both lives, and the borrowed view is dropped
            // before it (field order); `from_handle` borrows: dropping the view finalizes
            // its statements and leaves the connection open. The view is used only here,
            // while `handle` holds the handle's lock (sqlx's thread cannot use it).
            None => self.statements.insert(
                unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }
                    .map_err(store_error)?,
            ),
        };
        let written = write(statements);
        drop(handle);
        written.map_err(store_error)
    }

    pub(super) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await.map_err(db)
    }
}

impl std::ops::Deref for WriterTx<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriterTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// The writer's connection could not be set up as it must be.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StoreSetup(&'static str);

fn store_error(e: rusqlite::Error) -> Error {
    Error::Store(std::sync::Arc::new(e))
}

/// One issue touched by a commit. Its newest *inserted* event describes it (a
/// duplicate's content is never stored, so it names nothing).
struct IssueDraft<'a> {
    project_id: i64,
    /// The commit's first event of the issue: its key, and the row a new issue starts as
    /// until the count update describes it.
    first: &'a EventRecord,
    /// The issue's row id, once looked up (or created: `created`).
    id: i64,
    created: bool,
    /// Resolved when the commit looked it up: its events regress it.
    resolved: bool,
    /// What the events this commit inserted add to it; `None` while it has none.
    counts: Option<IssueCounts<'a>>,
}

/// What one commit adds to an issue: the events it inserted for it, in commit order.
struct IssueCounts<'a> {
    /// The newest of them (of equal timestamps, the later in the commit).
    newest: &'a EventRecord,
    events: i64,
    first_seen: f64,
    last_seen: f64,
    /// The last inserted event's release (environment) that had one, as each event in
    /// turn would set it.
    release: Option<&'a str>,
    environment: Option<&'a str>,
    /// Users new to the issue, filled in once `issue_users` says which are.
    new_users: i64,
}

impl<'a> IssueCounts<'a> {
    fn new(event: &'a EventRecord) -> Self {
        IssueCounts {
            newest: event,
            events: 0,
            first_seen: event.timestamp,
            last_seen: event.timestamp,
            release: None,
            environment: None,
            new_users: 0,
        }
    }

    fn add(&mut self, event: &'a EventRecord) {
        if event.timestamp >= self.newest.timestamp {
            self.newest = event;
        }
        self.events += 1;
        self.first_seen = self.first_seen.min(event.timestamp);
        self.last_seen = self.last_seen.max(event.timestamp);
        if let Some(release) = &event.release {
            self.release = Some(release);
        }
        if let Some(environment) = &event.environment {
            self.environment = Some(environment);
        }
    }
}

/// What one commit of envelopes stored.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct EnvelopeSummary {
    pub events: u64,
    pub duplicates: u64,
    /// The tag counts of the inserted events, for the caller to write now or later
    /// ([`write_tags`]).
    pub tags: TagCounts,
}

/// Tag summary rows to add: (issue id, key, value) → (events, first seen, last seen).
///
/// Counted on the writer's serial path for every tag of every event, so a row already
/// held is found by borrowed strings ([`TagRowRef`]) and only a new row allocates.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct TagCounts(HashMap<TagRow, (i64, f64, f64)>);

/// The key of a tag summary row; ordered as the table's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct TagRow {
    issue_id: i64,
    key: String,
    value: String,
}

/// A [`TagRow`] by reference: the same fields in the same order, so the same hash.
#[derive(Hash)]
struct TagRowRef<'a> {
    issue_id: i64,
    key: &'a str,
    value: &'a str,
}

impl hashbrown::Equivalent<TagRow> for TagRowRef<'_> {
    fn equivalent(&self, row: &TagRow) -> bool {
        self.issue_id == row.issue_id && self.key == row.key && self.value == row.value
    }
}

impl TagCounts {
    /// Counts one event's `key: value` on its issue.
    fn add(&mut self, issue_id: i64, key: &str, value: &str, timestamp: f64) {
        let row = TagRowRef {
            issue_id,
            key,
            value,
        };
        match self.0.get_mut(&row) {
            Some(held) => fold(held, 1, timestamp, timestamp),
            None => {
                let row = TagRow {
                    issue_id,
                    key: key.to_owned(),
                    value: value.to_owned(),
                };
                self.0.insert(row, (1, timestamp, timestamp));
            }
        }
    }

    /// Adds every row of `other`.
    pub(super) fn merge(&mut self, other: TagCounts) {
        if self.0.is_empty() {
            self.0 = other.0;
            return;
        }
        for (row, (events, first, last)) in other.0 {
            let held = self.0.entry(row).or_insert((0, first, last));
            fold(held, events, first, last);
        }
    }

    /// Distinct rows held.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Adds `events` seen between `first` and `last` to a held row.
fn fold(held: &mut (i64, f64, f64), events: i64, first: f64, last: f64) {
    held.0 += events;
    held.1 = held.1.min(first);
    held.2 = held.2.max(last);
}

/// How a tag row to add meets the one already there.
const ADD_TO_TAG_ROWS: &str = "ON CONFLICT (issue_id, key, value) DO UPDATE SET
    count = count + excluded.count,
    first_seen = MIN(first_seen, excluded.first_seen),
    last_seen = MAX(last_seen, excluded.last_seen)";

/// Records that `issue_tags` counts every event stored so far (migration 0012).
const MARK_TAGS_COUNTED: &str =
    "UPDATE tag_fold SET through_event = (SELECT COALESCE(MAX(id), 0) FROM events)";

/// Adds `tags` to `issue_tags` and records that the summaries count every event stored so
/// far (`tag_fold`, migration 0012), inside the caller's transaction ([`WriterTx::on_this_thread`]).
/// Rows of issues deleted meanwhile are skipped: each issue is looked up once, and a row is
/// a single-row `VALUES` upsert (an `INSERT … SELECT … WHERE EXISTS` per row copies every
/// page it touches to a statement journal), in key order so each lands next to the last.
pub(super) fn write_tags(conn: &rusqlite::Connection, tags: &TagCounts) -> rusqlite::Result<()> {
    let mut exists = conn.prepare_cached("SELECT 1 FROM issues WHERE id = ?1")?;
    let mut insert = conn.prepare_cached(&format!(
        "INSERT INTO issue_tags (issue_id, key, value, count, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         {ADD_TO_TAG_ROWS}"
    ))?;
    let mut rows: Vec<_> = tags.0.iter().collect();
    rows.sort_unstable_by_key(|&(row, _)| row);
    let mut issue: Option<(i64, bool)> = None;
    for (row, (count, first, last)) in rows {
        let live = match issue {
            Some((id, live)) if id == row.issue_id => live,
            _ => {
                let live = exists.exists([row.issue_id])?;
                issue = Some((row.issue_id, live));
                live
            }
        };
        if live {
            insert.execute(params![
                row.issue_id,
                row.key,
                row.value,
                count,
                first,
                last
            ])?;
        }
    }
    conn.prepare_cached(MARK_TAGS_COUNTED)?.execute([])?;
    Ok(())
}

/// Counts the tags of the events stored after `tag_fold.through_event` into `issue_tags`:
/// what a collector held in memory when it stopped. Run once when the store opens, in the
/// caller's transaction; returns the events counted.
pub(super) async fn recount_tags(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let (events,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM events WHERE id > (SELECT through_event FROM tag_fold)",
    )
    .fetch_one(&mut *conn)
    .await?;
    if events == 0 {
        return Ok(0);
    }
    sqlx::query(&format!(
        "INSERT INTO issue_tags (issue_id, key, value, count, first_seen, last_seen)
         SELECT e.issue_id, t.value ->> 0, t.value ->> 1, COUNT(*), MIN(e.timestamp),
                MAX(e.timestamp)
         FROM events AS e, json_each(e.tags) AS t
         WHERE e.id > (SELECT through_event FROM tag_fold)
         GROUP BY 1, 2, 3
         {ADD_TO_TAG_ROWS}"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(MARK_TAGS_COUNTED).execute(&mut *conn).await?;
    Ok(to_u64(events))
}

/// Writes every envelope of a group commit inside the caller's transaction
/// ([`WriterTx::on_this_thread`]).
pub(super) fn write_envelopes(
    conn: &rusqlite::Connection,
    envelopes: &[&EnvelopeIngest],
) -> rusqlite::Result<EnvelopeSummary> {
    let mut summary = EnvelopeSummary::default();
    write_item_counts(conn, envelopes)?;

    // Events in commit order, duplicates within the commit dropped here (the insert
    // skips those of earlier commits).
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

    // One draft per distinct issue.
    let mut draft_index: HashMap<(i64, &str), usize> = HashMap::new();
    let mut drafts: Vec<IssueDraft<'_>> = Vec::new();
    for &(project_id, _, event) in &events {
        draft_index
            .entry((project_id, event.hash.as_str()))
            .or_insert_with(|| {
                drafts.push(IssueDraft {
                    project_id,
                    first: event,
                    id: 0,
                    created: false,
                    resolved: false,
                    counts: None,
                });
                drafts.len() - 1
            });
    }
    // Each issue is looked up by its key and created only when new, with no events yet
    // (times seen 0): the count update below gives it its events, its first and last
    // seen, and sets title, culprit and the rest from the newest event the commit
    // inserted for it, so an existing issue's row is written once per commit, not twice.
    let mut find = conn.prepare_cached(
        "SELECT id, status = 'resolved' FROM issues WHERE project_id = ?1 AND hash = ?2",
    )?;
    let mut create = conn.prepare_cached(
        "INSERT INTO issues (project_id, hash, title, culprit, level, platform, first_seen,
                             grouped_by, grouping_values, substatus, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'new', ?7)
         RETURNING id",
    )?;
    for d in &mut drafts {
        let e = d.first;
        let found: Option<(i64, bool)> = find
            .query_row(params![d.project_id, e.hash], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        d.id = match found {
            Some((id, resolved)) => {
                d.resolved = resolved;
                id
            }
            None => {
                d.created = true;
                create.query_row(
                    params![
                        d.project_id,
                        e.hash,
                        e.title,
                        e.culprit,
                        e.level,
                        e.platform,
                        e.timestamp,
                        e.grouped_by,
                        e.grouping_values,
                    ],
                    |row| row.get(0),
                )?
            }
        };
    }

    // Every event not already stored is inserted; one whose `event_id` is (an earlier
    // commit's) changes nothing and counts as a duplicate.
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (project_id, event_id, issue_id, timestamp, received, level,
                             title, culprit, platform, environment, release, user, hash,
                             grouped_by, tags, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (project_id, event_id) DO NOTHING",
    )?;
    // Each inserted event with the index of its issue's draft.
    let mut new_events: Vec<(&EventRecord, usize)> = Vec::with_capacity(events.len());
    for &(project_id, received, e) in &events {
        let i = *draft_index
            .get(&(project_id, e.hash.as_str()))
            .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        let inserted = insert.execute(params![
            project_id,
            e.event_id,
            drafts[i].id,
            e.timestamp,
            received,
            e.level,
            e.title,
            e.culprit,
            e.platform,
            e.environment,
            e.release,
            e.user,
            e.hash,
            e.grouped_by,
            e.tags_json,
            e.payload.0,
        ])?;
        if inserted == 1 {
            new_events.push((e, i));
        } else {
            summary.duplicates += 1;
        }
    }
    summary.events = new_events.len() as u64;

    // Counts, tag and user summaries of the events actually inserted, one entry per
    // issue (or issue × tag) however many events it had in this commit. A user insert
    // that changes nothing is a user the issue already had.
    let mut add_user = conn.prepare_cached(
        "INSERT INTO issue_users (issue_id, user) VALUES (?1, ?2)
         ON CONFLICT (issue_id, user) DO NOTHING",
    )?;
    let mut tags = TagCounts::default();
    for &(event, i) in &new_events {
        let d = &mut drafts[i];
        let issue_id = d.id;
        let c = d.counts.get_or_insert_with(|| IssueCounts::new(event));
        c.add(event);
        for (key, value) in &event.tags {
            tags.add(issue_id, key, value, event.timestamp);
        }
        if let Some(user) = &event.user
            && add_user.execute(params![issue_id, user])? == 1
        {
            c.new_users += 1;
        }
    }
    // One update per issue and commit. SET expressions all read the row as it was, so
    // `times_seen = 0` is an issue this commit created: its first and last seen are its
    // inserted events' alone. Only an issue resolved when it was looked up (in this
    // transaction) has its status set, by a statement of its own: SQLite evaluates the
    // `status` and `substatus` CHECKs (`IN` lists, each built into a temporary b-tree)
    // only for an update that assigns those columns, which made the one statement for
    // every issue twice as slow.
    macro_rules! update_counts {
        ($status:literal) => {
            concat!(
                "UPDATE issues SET
                     title            = ?8,
                     culprit          = ?9,
                     level            = ?10,
                     platform         = ?11,
                     grouped_by       = ?12,
                     grouping_values  = ?13,
                     times_seen       = times_seen + ?2,
                     first_seen       = CASE WHEN times_seen = 0 THEN ?3
                                             ELSE MIN(first_seen, ?3) END,
                     last_seen        = CASE WHEN times_seen = 0 THEN ?4
                                             ELSE MAX(last_seen, ?4) END,
                     last_release     = COALESCE(?5, last_release),
                     last_environment = COALESCE(?6, last_environment),
                     user_count       = user_count + ?7",
                $status,
                " WHERE id = ?1"
            )
        };
    }
    let mut update = conn.prepare_cached(update_counts!(""))?;
    let mut regress = conn.prepare_cached(update_counts!(
        ", status = 'unresolved', substatus = 'regressed', resolved_at = NULL"
    ))?;
    for d in &drafts {
        let Some(c) = &d.counts else {
            continue;
        };
        let e = c.newest;
        let statement = if d.resolved {
            &mut regress
        } else {
            &mut update
        };
        statement.execute(params![
            d.id,
            c.events,
            c.first_seen,
            c.last_seen,
            c.release,
            c.environment,
            c.new_users,
            e.title,
            e.culprit,
            e.level,
            e.platform,
            e.grouped_by,
            e.grouping_values,
        ])?;
    }

    // An issue created for events that all turned out to be duplicates (same event_id,
    // different content) has no event: it must not appear.
    for d in drafts.iter().filter(|d| d.created && d.counts.is_none()) {
        conn.prepare_cached("DELETE FROM issues WHERE id = ?1 AND times_seen = 0")?
            .execute([d.id])?;
    }
    summary.tags = tags;
    Ok(summary)
}

/// Adds every envelope's item counts to the per-day table.
fn write_item_counts(
    conn: &rusqlite::Connection,
    envelopes: &[&EnvelopeIngest],
) -> rusqlite::Result<()> {
    let mut counts: HashMap<(i64, String, &str), i64> = HashMap::new();
    for envelope in envelopes {
        let day = utc_day(envelope.received_at);
        for &(item_type, n) in &envelope.items {
            *counts
                .entry((to_i64(envelope.project_id), day.clone(), item_type))
                .or_default() += to_i64(n);
        }
    }
    let mut upsert = conn.prepare_cached(
        "INSERT INTO item_counts (project_id, day, item_type, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (project_id, day, item_type) DO UPDATE SET
             count = MIN(count + excluded.count, 9223372036854775807)",
    )?;
    for ((project_id, day, item_type), n) in &counts {
        upsert.execute(params![project_id, day, item_type, n])?;
    }
    Ok(())
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
    let payload: Option<Vec<u8>> = row.try_get("payload")?;
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
        payload: payload.map(|p| {
            StoredPayload::json(&p)
                .and_then(|json| serde_json::from_slice(&json).ok())
                .unwrap_or(Value::Null)
        }),
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
    use tempfile::TempDir;

    use super::*;
    use crate::store::conformance::{envelope, record};
    use crate::store::{SqliteStore, Store};

    #[test]
    fn tag_counts_find_held_rows_by_reference() {
        let mut tags = TagCounts::default();
        tags.add(1, "release", "r1", 1_000.0);
        tags.add(1, "release", "r1", 999.0);
        tags.add(1, "release", "r2", 1_002.0);
        tags.add(2, "release", "r1", 1_003.0);
        let mut more = TagCounts::default();
        more.add(1, "release", "r1", 1_005.0);
        tags.merge(more);
        assert_eq!(tags.len(), 3, "{tags:?}");
        let row = |issue_id, value: &str| TagRow {
            issue_id,
            key: "release".to_owned(),
            value: value.to_owned(),
        };
        assert_eq!(tags.0[&row(1, "r1")], (3, 999.0, 1_005.0));
        assert_eq!(tags.0[&row(1, "r2")], (1, 1_002.0, 1_002.0));
        assert_eq!(tags.0[&row(2, "r1")], (1, 1_003.0, 1_003.0));
    }

    async fn store(dir: &TempDir) -> SqliteStore {
        let store = SqliteStore::open(&dir.path().join("test.db"))
            .await
            .unwrap();
        store.ensure_default_project().await.unwrap();
        store
    }

    async fn issue_of(store: &SqliteStore, hash: &str) -> Issue {
        let filter = IssueFilter {
            limit: 100,
            ..IssueFilter::default()
        };
        store
            .issues(1, &filter)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.hash == hash.repeat(32))
            .expect("issue stored")
    }

    #[tokio::test]
    async fn a_version_8_store_keeps_its_plain_payloads_readable() {
        use sqlx::Connection;
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        store
            .write(&[envelope(vec![
                record(1, "a", 1_000.0, None, None, None),
                record(2, "a", 1_001.0, None, None, None),
            ])])
            .await
            .unwrap();
        let mut conn = store_connection(&dir).await;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT payload FROM events WHERE event_id = ?1")
            .bind(format!("{:032x}", 1))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            StoredPayload::json(&stored).as_deref(),
            Some(&b"{\"n\":1}"[..])
        );
        // The store as a version-8 build left it: payloads as JSON text, no version 9.
        sqlx::raw_sql(
            "UPDATE events SET payload = '{\"n\": ' || (id) || '}';
             DELETE FROM schema_migrations WHERE version = 9;",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        store.close().await;
        drop(store);

        let store = self::store(&dir).await;
        store
            .write(&[envelope(vec![record(3, "a", 1_002.0, None, None, None)])])
            .await
            .unwrap();
        for n in [1, 2, 3] {
            let event = store.event(1, &format!("{n:032x}")).await.unwrap().unwrap();
            assert_eq!(event.payload, Some(serde_json::json!({ "n": n })));
        }
        let issue = issue_of(&store, "a").await;
        assert_eq!(issue.times_seen, 3);
        let events = store.issue_events(issue.id, 10, None, true).await.unwrap();
        let payloads: Vec<_> = events.into_iter().map(|e| e.payload).collect();
        assert_eq!(
            payloads,
            [3, 2, 1].map(|n| Some(serde_json::json!({ "n": n })))
        );
    }

    /// (key, value, count, first seen, last seen) of every tag summary row of the issue.
    async fn tags_of(store: &SqliteStore, hash: &str) -> Vec<(String, String, u64, f64, f64)> {
        let issue = issue_of(store, hash).await;
        let mut tags: Vec<_> = store
            .issue_tags(issue.id, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.key, t.value, t.count, t.first_seen, t.last_seen))
            .collect();
        tags.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        tags
    }

    /// The same rows as they are in the `issue_tags` table, read on a connection of its own
    /// (a read through the store would write held summaries first).
    async fn table_tags(
        dir: &TempDir,
        store: &SqliteStore,
        hash: &str,
    ) -> Vec<(String, String, u64, f64, f64)> {
        let issue = issue_of(store, hash).await;
        let rows: Vec<(String, String, i64, f64, f64)> = sqlx::query_as(
            "SELECT key, value, count, first_seen, last_seen FROM issue_tags
             WHERE issue_id = ?1 ORDER BY key, value",
        )
        .bind(to_i64(issue.id))
        .fetch_all(&mut store_connection(dir).await)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(k, v, n, first, last)| (k, v, to_u64(n), first, last))
            .collect()
    }

    fn row(
        key: &str,
        value: &str,
        count: u64,
        first: f64,
        last: f64,
    ) -> (String, String, u64, f64, f64) {
        (key.to_owned(), value.to_owned(), count, first, last)
    }

    /// In a busy spell the tag summaries are kept back from the commit and written before
    /// a read of them, or by the settle that ends the spell, adding up to what
    /// commit-by-commit writes give.
    #[tokio::test]
    async fn tag_summaries_kept_back_in_a_busy_spell_are_written_before_a_read_or_a_settle() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        store
            .write(&[envelope(vec![record(
                1,
                "a",
                1_000.0,
                None,
                Some("r1"),
                None,
            )])])
            .await
            .unwrap();
        let before = tags_of(&store, "a").await;
        assert_eq!(
            before,
            [
                row("release", "r1", 1, 1_000.0, 1_000.0),
                row("worker", "w1", 1, 1_000.0, 1_000.0)
            ]
        );
        for (n, t) in [(2, 1_002.0), (3, 999.0), (4, 1_004.0)] {
            store
                .write_with_backlog(
                    &[envelope(vec![record(n, "a", t, None, Some("r1"), None)])],
                    true,
                )
                .await
                .unwrap();
        }
        // The events and the issue's counts are there at once; the table's tag rows trail,
        // but a read of the summaries writes them first.
        assert_eq!(issue_of(&store, "a").await.times_seen, 4);
        assert_eq!(table_tags(&dir, &store, "a").await, before);
        let all = [
            row("release", "r1", 4, 999.0, 1_004.0),
            row("worker", "w0", 1, 999.0, 999.0),
            row("worker", "w1", 2, 1_000.0, 1_004.0),
            row("worker", "w2", 1, 1_002.0, 1_002.0),
        ];
        assert_eq!(tags_of(&store, "a").await, all);
        assert_eq!(table_tags(&dir, &store, "a").await, all);
        // Kept back again, and a lone request's rows meanwhile with them; the settle
        // writes them all, once: settling again adds nothing.
        for (n, t, backlog) in [(5, 1_005.0, true), (6, 1_006.0, false)] {
            store
                .write_with_backlog(
                    &[envelope(vec![record(n, "a", t, None, None, None)])],
                    backlog,
                )
                .await
                .unwrap();
        }
        assert_eq!(table_tags(&dir, &store, "a").await, all);
        store.settle().await.unwrap();
        store.settle().await.unwrap();
        let tags = table_tags(&dir, &store, "a").await;
        assert_eq!(tags[1], row("worker", "w0", 2, 999.0, 1_006.0));
        assert_eq!(tags[3], row("worker", "w2", 2, 1_002.0, 1_005.0));
        // With nothing held, a write without a backlog writes its own at once.
        store
            .write_with_backlog(
                &[envelope(vec![record(7, "a", 1_007.0, None, None, None)])],
                false,
            )
            .await
            .unwrap();
        let tags = table_tags(&dir, &store, "a").await;
        assert_eq!(tags[2], row("worker", "w1", 3, 1_000.0, 1_007.0));
        assert_eq!(tags, tags_of(&store, "a").await);
    }

    /// A read of the summaries whose held rows cannot be written (another process holds
    /// the write lock past the busy timeout) answers with the rows already written, and
    /// the held ones are written once the lock is free.
    #[tokio::test]
    async fn a_read_goes_ahead_when_held_tag_rows_cannot_be_written() {
        use sqlx::Connection;
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        let first = record(1, "a", 1_001.0, None, None, None);
        store.write(&[envelope(vec![first])]).await.unwrap();
        let before = tags_of(&store, "a").await;
        let second = record(2, "a", 1_002.0, None, None, None);
        store
            .write_with_backlog(&[envelope(vec![second])], true)
            .await
            .unwrap();
        let mut other = store_connection(&dir).await;
        let lock = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
        assert_eq!(tags_of(&store, "a").await, before, "read without them");
        lock.rollback().await.unwrap();
        let after = tags_of(&store, "a").await;
        assert_eq!(
            after.iter().map(|t| t.2).sum::<u64>(),
            2 * before.len() as u64
        );
    }

    /// Held rows of an issue deleted before they are written are skipped; the other
    /// issues' rows are written.
    #[tokio::test]
    async fn held_tag_rows_of_a_deleted_issue_are_skipped() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        for (n, hash) in [(1, "a"), (2, "b"), (3, "a")] {
            let event = record(n, hash, 1_000.0 + n as f64, None, Some("r1"), None);
            store
                .write_with_backlog(&[envelope(vec![event])], true)
                .await
                .unwrap();
        }
        let a = issue_of(&store, "a").await;
        sqlx::query("DELETE FROM issues WHERE id = ?1")
            .bind(to_i64(a.id))
            .execute(&mut store_connection(&dir).await)
            .await
            .unwrap();
        store.settle().await.unwrap();
        assert_eq!(
            table_tags(&dir, &store, "b").await,
            [
                row("release", "r1", 1, 1_002.0, 1_002.0),
                row("worker", "w2", 1, 1_002.0, 1_002.0)
            ]
        );
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM issue_tags")
            .fetch_one(&mut store_connection(&dir).await)
            .await
            .unwrap();
        assert_eq!(rows, 2, "none of the deleted issue's");
    }

    /// The writer's statements stay prepared from one commit to the next, but never
    /// outlive its connection: whether the store closes the writer's connection or it is
    /// dropped, every handle on the database ends closed. A statement still alive when
    /// sqlx closes the handle makes SQLite refuse the close, and the handle, with its open
    /// files, stays behind. (Not the WAL file's removal: when a dropped connection closes
    /// on sqlx's thread while the pool closes, each may see the other still open, and
    /// neither removes it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writers_statements_end_before_its_connection() {
        /// Files of this process open under `dir`.
        fn open_files(dir: &std::path::Path) -> usize {
            std::fs::read_dir("/proc/self/fd")
                .map(|fds| {
                    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                        .filter(|target| target.starts_with(dir))
                        .count()
                })
                .unwrap_or(0)
        }
        for close in [true, false] {
            let dir = TempDir::new().unwrap();
            let path = dir.path().join("test.db");
            let wal = dir.path().join("test.db-wal");
            let store = store(&dir).await;
            for n in 1..=3 {
                let event = record(n, "a", 1_000.0 + n as f64, Some("u"), None, None);
                store.write(&[envelope(vec![event])]).await.unwrap();
            }
            assert!(wal.exists(), "commits go through the WAL");
            assert!(open_files(dir.path()) > 0, "the store holds its files open");
            if !close {
                store.drop_writer_connection().await;
            }
            store.close().await;
            // sqlx closes a dropped connection on its own thread.
            for _ in 0..200 {
                if open_files(dir.path()) == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert_eq!(
                open_files(dir.path()),
                0,
                "every handle closed after a close: {close}"
            );
            drop(store);
            let store = SqliteStore::open(&path).await.unwrap();
            assert_eq!(issue_of(&store, "a").await.times_seen, 3);
        }
    }

    /// A collector that stops with tag summaries kept back loses none of them: the store
    /// counts them from the stored events when it opens again, once.
    #[tokio::test]
    async fn tag_summaries_kept_back_at_a_stop_are_counted_on_the_next_open() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        for (n, hash) in [(1, "a"), (2, "a"), (3, "b")] {
            store
                .write_with_backlog(
                    &[envelope(vec![record(
                        n,
                        hash,
                        1_000.0 + n as f64,
                        None,
                        None,
                        Some("prod"),
                    )])],
                    true,
                )
                .await
                .unwrap();
        }
        assert_eq!(table_tags(&dir, &store, "a").await, []);
        store.close().await;
        drop(store);

        for _ in 0..2 {
            let store = self::store(&dir).await;
            assert_eq!(
                tags_of(&store, "a").await,
                [
                    row("environment", "prod", 2, 1_001.0, 1_002.0),
                    row("worker", "w1", 1, 1_001.0, 1_001.0),
                    row("worker", "w2", 1, 1_002.0, 1_002.0),
                ]
            );
            assert_eq!(
                tags_of(&store, "b").await,
                [
                    row("environment", "prod", 1, 1_003.0, 1_003.0),
                    row("worker", "w0", 1, 1_003.0, 1_003.0),
                ]
            );
            store.close().await;
        }
    }

    /// A connection of its own to the store's file, for rows no writer of this version
    /// would write.
    async fn store_connection(dir: &TempDir) -> SqliteConnection {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        SqliteConnection::connect(&url).await.unwrap()
    }
}
