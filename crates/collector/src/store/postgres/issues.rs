//! Issues in PostgreSQL (scale-out mode): the group commit of envelopes into issues, their
//! tag and user summaries, item counts and the dedup table of stored event ids, and the
//! queries the issue API reads. The event rows themselves go to ClickHouse; the caller
//! gets each event's issue id back to write them there.
//!
//! The rules are those of the embedded backend (`sqlite_issues`): one upsert per distinct
//! (project, hash) described by its newest event, counts of the events actually stored
//! (never a duplicate `event_id`), first/last seen, the latest release and environment in
//! commit order, distinct users, and a resolved issue that recurs becomes
//! unresolved/regressed.
//!
//! Unlike the embedded store, several collectors write at once. So:
//! - one issue per fingerprint is the unique (project_id, hash) with
//!   `INSERT … ON CONFLICT DO UPDATE`, and every count is an increment inside that row
//!   lock, never a read-modify-write in Rust;
//! - a commit claims its event ids first (`event_ids`, `ON CONFLICT DO NOTHING
//!   RETURNING`): a concurrent commit with the same id waits for ours and then sees it as
//!   a duplicate, so the decision of which events count is made by the database;
//! - every writer takes its locks in one order: event ids, then issues, then each
//!   issue's tags and users (only the holder of the issue's row lock touches those), then
//!   item counts; inside each table rows go in sorted key order. Two commits therefore
//!   never wait on each other in a cycle. Deadlock and serialization failures are still
//!   retried a few times, as a net for a lock order this module does not control;
//! - each table is written by one statement per commit whose rows travel as arrays
//!   (`unnest`), whatever the number of events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::{PgMeta, db};
use crate::Error;
use crate::store::meta_rows::{ISSUE_COLUMNS, issue, like_pattern, sort_column};
use crate::store::{
    Cursor, EnvelopeIngest, EventRecord, Issue, IssueFilter, IssueSort, IssueStatus, ItemCount,
    MAX_ENVIRONMENTS, TagValue, to_i64, to_u64,
};
use crate::time::utc_day;

/// What one commit of envelopes stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EnvelopeWrite {
    /// Events stored (duplicates not counted).
    pub events: u64,
    /// Events skipped because their `event_id` was already stored, by this commit or an
    /// earlier one.
    pub duplicates: u64,
    /// `issue_ids[i][j]`: the issue of event `j` of envelope `i`; for a duplicate, the
    /// issue its id was first stored under, so a retried event row lands on the same issue.
    pub issue_ids: Vec<Vec<u64>>,
}

/// Attempts of one commit when PostgreSQL aborts it for a deadlock or serialization
/// failure. The lock order should make these impossible; the retries are a net.
const MAX_ATTEMPTS: u32 = 5;

/// Deadlock detected, serialization failure: the transaction did nothing and may be
/// run again as it was.
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(e) => matches!(e.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// A commit worked out in memory before any statement runs: computed once, replayed as
/// is when the transaction is retried.
struct Plan<'a> {
    /// Events in commit order with their project, the duplicates within the commit
    /// dropped (the first occurrence stays).
    events: Vec<(i64, &'a EventRecord)>,
    /// For event `j` of envelope `i`, its index in `events` (that of the first
    /// occurrence of its id).
    slots: Vec<Vec<usize>>,
    /// Events dropped as duplicates of an earlier event of the same commit.
    duplicates_in_commit: u64,
    /// `(project, day, item type, count)`, sorted: the item-count rows.
    item_counts: Vec<(i64, String, &'static str, i64)>,
}

impl<'a> Plan<'a> {
    fn new(envelopes: &[&'a EnvelopeIngest]) -> Self {
        let mut first: HashMap<(i64, &str), usize> = HashMap::new();
        let mut events = Vec::new();
        let mut slots = Vec::with_capacity(envelopes.len());
        let mut duplicates_in_commit = 0;
        let mut counts: BTreeMap<(i64, String, &'static str), i64> = BTreeMap::new();
        for envelope in envelopes {
            let project_id = to_i64(envelope.project_id);
            let day = utc_day(envelope.received_at);
            for &(item_type, n) in &envelope.items {
                let count = counts
                    .entry((project_id, day.clone(), item_type))
                    .or_default();
                *count = count.saturating_add(to_i64(n));
            }
            let mut envelope_slots = Vec::with_capacity(envelope.events.len());
            for event in &envelope.events {
                let key = (project_id, event.event_id.as_str());
                let slot = match first.get(&key) {
                    Some(&slot) => {
                        duplicates_in_commit += 1;
                        slot
                    }
                    None => {
                        events.push((project_id, event));
                        first.insert(key, events.len() - 1);
                        events.len() - 1
                    }
                };
                envelope_slots.push(slot);
            }
            slots.push(envelope_slots);
        }
        let item_counts = counts
            .into_iter()
            .map(|((project_id, day, item_type), n)| (project_id, day, item_type, n))
            .collect();
        Plan {
            events,
            slots,
            duplicates_in_commit,
            item_counts,
        }
    }
}

/// One issue touched by a commit: its newest stored event describes it, and its stored
/// events in commit order add up to what the commit adds to its counters.
struct IssueDraft<'a> {
    project_id: i64,
    newest: &'a EventRecord,
    events: i64,
    first_seen: f64,
    last_seen: f64,
    /// The last event's release (environment) that had one, as each event in turn would
    /// set it.
    release: Option<&'a str>,
    environment: Option<&'a str>,
}

impl<'a> IssueDraft<'a> {
    fn new(project_id: i64, event: &'a EventRecord) -> Self {
        IssueDraft {
            project_id,
            newest: event,
            events: 0,
            first_seen: event.timestamp,
            last_seen: event.timestamp,
            release: None,
            environment: None,
        }
    }

    fn add(&mut self, event: &'a EventRecord) {
        // `>=`: of events with the same timestamp, the later in the commit describes.
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

impl PgMeta {
    /// Counts every envelope of a group commit into issues, their tag and user summaries
    /// and the item counts, in one transaction: all of it or none. Safe to run from
    /// several collectors at once, and to run again after a failure (events stored by the
    /// first run count as duplicates).
    pub(crate) async fn write_envelopes(
        &self,
        envelopes: &[&EnvelopeIngest],
    ) -> Result<EnvelopeWrite, Error> {
        let plan = Plan::new(envelopes);
        let mut attempt = 1;
        loop {
            match self.write_plan(&plan).await {
                Ok(written) => return Ok(written),
                Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                    tracing::warn!(attempt, error = %e, "issue commit aborted, retrying");
                    // A short, growing pause lets the other transaction finish first.
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(db(e)),
            }
        }
    }

    /// One attempt at a commit.
    async fn write_plan(&self, plan: &Plan<'_>) -> Result<EnvelopeWrite, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut written = EnvelopeWrite {
            duplicates: plan.duplicates_in_commit,
            ..EnvelopeWrite::default()
        };
        let event_issues = write_events(&mut tx, &plan.events).await?;
        write_item_counts(&mut tx, &plan.item_counts).await?;
        tx.commit().await?;

        written.events = event_issues.iter().filter(|(_, new)| *new).count() as u64;
        written.duplicates += event_issues.iter().filter(|(_, new)| !*new).count() as u64;
        written.issue_ids = plan
            .slots
            .iter()
            .map(|slots| slots.iter().map(|&i| event_issues[i].0).collect())
            .collect();
        Ok(written)
    }

    /// Issues of a project matching `filter`, in its order, one page.
    pub(crate) async fn issues(
        &self,
        project_id: u64,
        filter: &IssueFilter,
    ) -> Result<Vec<Issue>, Error> {
        let column = sort_column(filter.sort);
        // The cursor condition is left out of the text when there is none, so the plan
        // of a first page is a plain scan of the sort order's index.
        let after = if filter.cursor.is_some() {
            format!("AND ({column}, id) < ($8, $9)")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {ISSUE_COLUMNS} FROM issues
             WHERE project_id = $1 AND times_seen > 0
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR level = $3)
               AND ($4::text IS NULL OR EXISTS (
                       SELECT 1 FROM issue_tags t WHERE t.issue_id = issues.id
                       AND t.key = 'environment' AND t.value = $4))
               AND ($5::text IS NULL OR EXISTS (
                       SELECT 1 FROM issue_tags t WHERE t.issue_id = issues.id
                       AND t.key = 'release' AND t.value = $5))
               AND ($6::text IS NULL OR title ILIKE $6 ESCAPE '\\' OR culprit ILIKE $6 ESCAPE '\\')
               {after}
             ORDER BY {column} DESC, id DESC
             LIMIT $7"
        );
        let mut query = sqlx::query(&sql)
            .bind(to_i64(project_id))
            .bind(filter.status.map(IssueStatus::as_str))
            .bind(filter.level.as_deref())
            .bind(filter.environment.as_deref())
            .bind(filter.release.as_deref())
            .bind(filter.text.as_deref().map(like_pattern))
            .bind(i64::from(filter.limit));
        if let Some(cursor) = filter.cursor {
            query = match filter.sort {
                IssueSort::Count => {
                    let (value, id) = count_cursor(cursor);
                    query.bind(value).bind(id)
                }
                IssueSort::LastSeen | IssueSort::FirstSeen => {
                    query.bind(cursor.value).bind(to_i64(cursor.id))
                }
            };
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(issue)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// One issue, `None` when the id is unknown.
    pub(crate) async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        sqlx::query(&format!(
            "SELECT {ISSUE_COLUMNS} FROM issues WHERE id = $1 AND times_seen > 0"
        ))
        .bind(to_i64(issue_id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(issue)
        .transpose()
        .map_err(db)
    }

    /// Per tag key of an issue, its `top` most frequent values (ties by value) with the
    /// key's totals, keys in name order.
    pub(crate) async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        sqlx::query(
            "SELECT key, value, count, first_seen, last_seen, distinct_values, total
             FROM (SELECT key, value, count, first_seen, last_seen,
                          ROW_NUMBER() OVER (PARTITION BY key ORDER BY count DESC, value) AS rank,
                          COUNT(*) OVER (PARTITION BY key) AS distinct_values,
                          -- SUM of bigint is numeric in PostgreSQL
                          SUM(count) OVER (PARTITION BY key)::bigint AS total
                   FROM issue_tags WHERE issue_id = $1) AS ranked
             WHERE rank <= $2
             ORDER BY key, rank
             LIMIT $3",
        )
        .bind(to_i64(issue_id))
        .bind(i64::from(top))
        .bind(MAX_TAG_ROWS)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
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
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db)
    }

    /// Sets the status of the issues `ids` (of `project_id` only, when given); returns the
    /// ids that exist and were updated.
    pub(crate) async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error> {
        let ids: Vec<i64> = ids.iter().copied().map(to_i64).collect();
        // The rows are locked in (project_id, hash) order first, the order ingest locks
        // issues in, so a status change and a commit never deadlock. SET expressions read
        // the row as it was: `status` in the CASE is the status before this update.
        sqlx::query(
            "UPDATE issues SET
                 status = $3::text,
                 substatus = CASE $3::text
                     WHEN 'resolved' THEN NULL
                     WHEN 'ignored' THEN 'archived_forever'
                     ELSE CASE WHEN issues.status = 'unresolved' THEN issues.substatus
                               ELSE 'ongoing' END
                 END,
                 resolved_at = CASE $3::text WHEN 'resolved' THEN $4::float8 ELSE NULL END
             FROM (SELECT id FROM issues
                   WHERE id = ANY($1) AND ($2::bigint IS NULL OR project_id = $2)
                     AND times_seen > 0
                   ORDER BY project_id, hash
                   FOR UPDATE) AS locked
             WHERE issues.id = locked.id
             RETURNING issues.id",
        )
        .bind(&ids)
        .bind(project_id.map(to_i64))
        .bind(status.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.try_get::<i64, _>(0).map(to_u64))
        .collect::<Result<_, _>>()
        .map_err(db)
    }

    /// Envelope items a project received per day and type, from `since_day`
    /// (`YYYY-MM-DD`), by day and type.
    pub(crate) async fn item_counts(
        &self,
        project_id: u64,
        since_day: &str,
    ) -> Result<Vec<ItemCount>, Error> {
        sqlx::query(
            "SELECT day, item_type, count FROM item_counts
             WHERE project_id = $1 AND day >= $2
             ORDER BY day, item_type",
        )
        .bind(to_i64(project_id))
        .bind(since_day)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            Ok(ItemCount {
                day: row.try_get(0)?,
                item_type: row.try_get(1)?,
                count: to_u64(row.try_get(2)?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db)
    }

    /// The environments a project's issues saw (their `environment` tags), non-empty,
    /// sorted, at most [`MAX_ENVIRONMENTS`].
    pub(crate) async fn event_environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        // As the embedded store does: a skip scan of the (key, value) index visits each
        // distinct value once (the first thousand: a bound whatever events name), and a
        // value counts when one issue of this project has it. PostgreSQL evaluates a
        // recursive CTE lazily, so the inner LIMIT stops the recursion.
        sqlx::query_scalar(
            "WITH RECURSIVE tagged (value) AS (
                 (SELECT value FROM issue_tags WHERE key = 'environment'
                  ORDER BY value LIMIT 1)
                 UNION ALL
                 SELECT (SELECT t.value FROM issue_tags t
                         WHERE t.key = 'environment' AND t.value > tagged.value
                         ORDER BY t.value LIMIT 1)
                 FROM tagged WHERE tagged.value IS NOT NULL
             )
             SELECT value FROM (SELECT value FROM tagged LIMIT 1000) AS distinct_values
             WHERE value IS NOT NULL AND value <> '' AND EXISTS (
                 SELECT 1 FROM issue_tags t JOIN issues i ON i.id = t.issue_id
                 WHERE t.key = 'environment' AND t.value = distinct_values.value
                   AND i.project_id = $1)
             ORDER BY value
             LIMIT $2",
        )
        .bind(to_i64(project_id))
        .bind(i64::from(MAX_ENVIRONMENTS))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }
}

/// Writes the commit's events (duplicates within the commit already dropped) into the
/// dedup table, issues, tags and users. Returns, per event, its issue id and whether it
/// was stored now (`false`: a duplicate of an earlier commit).
async fn write_events(
    conn: &mut PgConnection,
    events: &[(i64, &EventRecord)],
) -> Result<Vec<(u64, bool)>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // 1. Claim the event ids, in key order. An id a concurrent commit holds makes this
    //    wait for it; once it commits, the id is a duplicate here.
    let mut claims: Vec<(i64, &str, &str)> = events
        .iter()
        .map(|&(project_id, e)| (project_id, e.event_id.as_str(), e.hash.as_str()))
        .collect();
    claims.sort_unstable();
    let (projects, ids, hashes) = unzip3(&claims);
    let returned: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO event_ids (project_id, event_id, hash)
         SELECT project_id, event_id, hash
         FROM unnest($1::bigint[], $2::text[], $3::text[]) WITH ORDINALITY
              AS d(project_id, event_id, hash, ord)
         ORDER BY ord
         ON CONFLICT (project_id, event_id) DO NOTHING
         RETURNING project_id, event_id",
    )
    .bind(projects)
    .bind(ids)
    .bind(hashes)
    .fetch_all(&mut *conn)
    .await?;
    let stored: HashSet<(i64, &str)> = returned
        .iter()
        .map(|(project_id, id)| (*project_id, id.as_str()))
        .collect();
    let new: Vec<bool> = events
        .iter()
        .map(|&(project_id, e)| stored.contains(&(project_id, e.event_id.as_str())))
        .collect();

    // 2. One upsert per distinct issue of the stored events, in (project, hash) order,
    //    carrying what this commit adds to it.
    let mut drafts: BTreeMap<(i64, &str), IssueDraft<'_>> = BTreeMap::new();
    for (&(project_id, event), _) in events.iter().zip(&new).filter(|(_, new)| **new) {
        drafts
            .entry((project_id, event.hash.as_str()))
            .or_insert_with(|| IssueDraft::new(project_id, event))
            .add(event);
    }
    let drafts: Vec<&IssueDraft<'_>> = drafts.values().collect();
    let issue_rows = upsert_issues(conn, &drafts).await?;
    let issue_ids: HashMap<(i64, &str), i64> = issue_rows
        .iter()
        .map(|(id, project_id, hash)| ((*project_id, hash.as_str()), *id))
        .collect();

    // 3. The issues of duplicates: those their ids were first stored under.
    let (projects, ids): (Vec<i64>, Vec<&str>) = claims
        .iter()
        .filter(|&&(project_id, event_id, _)| !stored.contains(&(project_id, event_id)))
        .map(|&(project_id, event_id, _)| (project_id, event_id))
        .unzip();
    let duplicate_rows: Vec<(i64, String, i64)> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "SELECT e.project_id, e.event_id, i.id
             FROM unnest($1::bigint[], $2::text[]) AS d(project_id, event_id)
             JOIN event_ids e ON e.project_id = d.project_id AND e.event_id = d.event_id
             JOIN issues i ON i.project_id = e.project_id AND i.hash = e.hash",
        )
        .bind(projects)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
    };
    let duplicate_issues: HashMap<(i64, &str), i64> = duplicate_rows
        .iter()
        .map(|(project_id, event_id, id)| ((*project_id, event_id.as_str()), *id))
        .collect();

    let mut result = Vec::with_capacity(events.len());
    for (&(project_id, event), &new) in events.iter().zip(&new) {
        let id = if new {
            issue_ids.get(&(project_id, event.hash.as_str()))
        } else {
            duplicate_issues.get(&(project_id, event.event_id.as_str()))
        };
        let id = id.ok_or_else(|| sqlx::Error::Protocol("an event's issue has no id".into()))?;
        result.push((to_u64(*id), new));
    }

    // 4. Tag and user summaries of the stored events, one row per issue × key × value
    //    (issue × user) however many events had it, in key order.
    let mut tags: BTreeMap<(i64, &str, &str), (i64, f64, f64)> = BTreeMap::new();
    let mut users: Vec<(i64, &str)> = Vec::new();
    for (&(_, event), &(issue_id, new)) in events.iter().zip(&result) {
        if !new {
            continue;
        }
        let issue_id = to_i64(issue_id);
        for (key, value) in &event.tags {
            let entry = tags
                .entry((issue_id, key.as_str(), value.as_str()))
                .or_insert((0, event.timestamp, event.timestamp));
            entry.0 += 1;
            entry.1 = entry.1.min(event.timestamp);
            entry.2 = entry.2.max(event.timestamp);
        }
        if let Some(user) = &event.user {
            users.push((issue_id, user.as_str()));
        }
    }
    write_tags(conn, &tags).await?;
    users.sort_unstable();
    users.dedup();
    write_users(conn, &users).await?;
    Ok(result)
}

/// Creates or updates the issues of `drafts` (sorted by project and hash: the lock
/// order) and returns each one's `(id, project_id, hash)`.
async fn upsert_issues(
    conn: &mut PgConnection,
    drafts: &[&IssueDraft<'_>],
) -> Result<Vec<(i64, i64, String)>, sqlx::Error> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let text = |f: for<'d> fn(&'d IssueDraft<'_>) -> &'d str| -> Vec<&str> {
        drafts.iter().map(|&d| f(d)).collect()
    };
    sqlx::query_as(
        "INSERT INTO issues (project_id, hash, title, culprit, level, platform, grouped_by,
                             grouping_values, times_seen, first_seen, last_seen,
                             last_release, last_environment, substatus)
         SELECT project_id, hash, title, culprit, level, platform, grouped_by,
                grouping_values, times_seen, first_seen, last_seen, last_release,
                last_environment, 'new'
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::bigint[], $10::float8[],
                     $11::float8[], $12::text[], $13::text[]) WITH ORDINALITY
              AS d(project_id, hash, title, culprit, level, platform, grouped_by,
                   grouping_values, times_seen, first_seen, last_seen, last_release,
                   last_environment, ord)
         ORDER BY ord
         ON CONFLICT (project_id, hash) DO UPDATE SET
             title            = excluded.title,
             culprit          = excluded.culprit,
             level            = excluded.level,
             platform         = excluded.platform,
             grouped_by       = excluded.grouped_by,
             grouping_values  = excluded.grouping_values,
             times_seen       = issues.times_seen + excluded.times_seen,
             first_seen       = LEAST(issues.first_seen, excluded.first_seen),
             last_seen        = GREATEST(issues.last_seen, excluded.last_seen),
             last_release     = COALESCE(excluded.last_release, issues.last_release),
             last_environment = COALESCE(excluded.last_environment, issues.last_environment),
             -- every SET reads the row as it was: the status before this update
             substatus        = CASE WHEN issues.status = 'resolved' THEN 'regressed'
                                     ELSE issues.substatus END,
             resolved_at      = CASE WHEN issues.status = 'resolved' THEN NULL
                                     ELSE issues.resolved_at END,
             status           = CASE WHEN issues.status = 'resolved' THEN 'unresolved'
                                     ELSE issues.status END
         RETURNING id, project_id, hash",
    )
    .bind(drafts.iter().map(|d| d.project_id).collect::<Vec<_>>())
    .bind(text(|d| &d.newest.hash))
    .bind(text(|d| &d.newest.title))
    .bind(text(|d| &d.newest.culprit))
    .bind(text(|d| d.newest.level))
    .bind(text(|d| &d.newest.platform))
    .bind(text(|d| d.newest.grouped_by))
    .bind(text(|d| &d.newest.grouping_values))
    .bind(drafts.iter().map(|d| d.events).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.first_seen).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.last_seen).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.release).collect::<Vec<_>>())
    .bind(drafts.iter().map(|d| d.environment).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await
}

/// Adds the commit's tag counts to each issue's summary.
async fn write_tags(
    conn: &mut PgConnection,
    tags: &BTreeMap<(i64, &str, &str), (i64, f64, f64)>,
) -> Result<(), sqlx::Error> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut issues = Vec::with_capacity(tags.len());
    let mut keys = Vec::with_capacity(tags.len());
    let mut values = Vec::with_capacity(tags.len());
    let mut counts = Vec::with_capacity(tags.len());
    let mut firsts = Vec::with_capacity(tags.len());
    let mut lasts = Vec::with_capacity(tags.len());
    for (&(issue_id, key, value), &(count, first, last)) in tags {
        issues.push(issue_id);
        keys.push(key);
        values.push(value);
        counts.push(count);
        firsts.push(first);
        lasts.push(last);
    }
    sqlx::query(
        "INSERT INTO issue_tags (issue_id, key, value, count, first_seen, last_seen)
         SELECT issue_id, key, value, count, first_seen, last_seen
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::float8[],
                     $6::float8[]) WITH ORDINALITY
              AS d(issue_id, key, value, count, first_seen, last_seen, ord)
         ORDER BY ord
         ON CONFLICT (issue_id, key, value) DO UPDATE SET
             count      = issue_tags.count + excluded.count,
             first_seen = LEAST(issue_tags.first_seen, excluded.first_seen),
             last_seen  = GREATEST(issue_tags.last_seen, excluded.last_seen)",
    )
    .bind(issues)
    .bind(keys)
    .bind(values)
    .bind(counts)
    .bind(firsts)
    .bind(lasts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the commit's distinct `(issue, user)` pairs (sorted) and counts those new to
/// their issue.
async fn write_users(conn: &mut PgConnection, users: &[(i64, &str)]) -> Result<(), sqlx::Error> {
    if users.is_empty() {
        return Ok(());
    }
    let (issues, names): (Vec<i64>, Vec<&str>) = users.iter().copied().unzip();
    // The insert reports the pairs that were new; the update adds them up, on issue rows
    // this transaction already holds.
    sqlx::query(
        "WITH added AS (
             INSERT INTO issue_users (issue_id, user_key)
             SELECT issue_id, user_key
             FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS d(issue_id, user_key, ord)
             ORDER BY ord
             ON CONFLICT (issue_id, user_key) DO NOTHING
             RETURNING issue_id
         )
         UPDATE issues SET user_count = issues.user_count + a.n
         FROM (SELECT issue_id, COUNT(*) AS n FROM added GROUP BY issue_id) AS a
         WHERE issues.id = a.issue_id",
    )
    .bind(issues)
    .bind(names)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds the commit's item counts (sorted by key) to the per-day table. Last in the
/// transaction: these rows are shared by every commit of a project and day, so they are
/// held locked as briefly as possible.
async fn write_item_counts(
    conn: &mut PgConnection,
    counts: &[(i64, String, &'static str, i64)],
) -> Result<(), sqlx::Error> {
    if counts.is_empty() {
        return Ok(());
    }
    let projects: Vec<i64> = counts.iter().map(|c| c.0).collect();
    let days: Vec<&str> = counts.iter().map(|c| c.1.as_str()).collect();
    let types: Vec<&str> = counts.iter().map(|c| c.2).collect();
    let ns: Vec<i64> = counts.iter().map(|c| c.3).collect();
    // Saturates at the largest bigint rather than failing the commit on overflow.
    sqlx::query(
        "INSERT INTO item_counts (project_id, day, item_type, count)
         SELECT project_id, day, item_type, count
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY
              AS d(project_id, day, item_type, count, ord)
         ORDER BY ord
         ON CONFLICT (project_id, day, item_type) DO UPDATE SET
             count = CASE WHEN item_counts.count > 9223372036854775807 - excluded.count
                          THEN 9223372036854775807
                          ELSE item_counts.count + excluded.count END",
    )
    .bind(projects)
    .bind(days)
    .bind(types)
    .bind(ns)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Three columns of sorted rows, as the arrays `unnest` reads.
fn unzip3<'a>(rows: &[(i64, &'a str, &'a str)]) -> (Vec<i64>, Vec<&'a str>, Vec<&'a str>) {
    let mut a = Vec::with_capacity(rows.len());
    let mut b = Vec::with_capacity(rows.len());
    let mut c = Vec::with_capacity(rows.len());
    for &(x, y, z) in rows {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    (a, b, c)
}

/// A cursor of the count order as integer bounds, so `(times_seen, id) < ($8, $9)`
/// compares bigints and stays an index range. `times_seen < v OR (times_seen = v AND
/// id < c)` is exactly that for a whole `v`; for a fractional one it reads
/// `times_seen <= floor(v)`, i.e. any id at `floor(v)`. Values beyond bigint saturate.
fn count_cursor(cursor: Cursor) -> (i64, i64) {
    if cursor.value.fract() == 0.0 {
        (cursor.value as i64, to_i64(cursor.id))
    } else {
        (cursor.value.floor() as i64, i64::MAX)
    }
}

/// Most tag rows one issue detail reads, whatever the number of keys.
const MAX_TAG_ROWS: i64 = 2_000;

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::StoredPayload;

    /// A fresh, uniquely named database on the test server, so tests run in parallel.
    struct TestDb {
        admin_url: String,
        name: String,
        url: String,
    }

    impl TestDb {
        async fn new() -> TestDb {
            let admin_url = std::env::var("SIGHTLINE_TEST_POSTGRES").expect(
                "SIGHTLINE_TEST_POSTGRES is not set: start the test servers with \
                 `eval \"$(scripts/services start)\"` from the repository root",
            );
            let name = format!("sightline_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to SIGHTLINE_TEST_POSTGRES");
            // An identifier cannot be a parameter; the name is ours, hex only.
            sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create the test database");
            admin.close().await.ok();
            let (base, query) = match admin_url.split_once('?') {
                Some((base, query)) => (base, format!("?{query}")),
                None => (admin_url.as_str(), String::new()),
            };
            let authority = base
                .rsplit_once('/')
                .map_or(base, |(authority, _)| authority);
            let url = format!("{authority}/{name}{query}");
            TestDb {
                admin_url,
                name,
                url,
            }
        }

        async fn connect(&self) -> PgMeta {
            PgMeta::connect(&self.url)
                .await
                .expect("connect and migrate")
        }

        /// Drops the database once a test passed (a failed one keeps it to look at).
        async fn drop(self, metas: &[&PgMeta]) {
            for meta in metas {
                meta.close().await;
            }
            let mut admin = sqlx::PgConnection::connect(&self.admin_url)
                .await
                .expect("connect to SIGHTLINE_TEST_POSTGRES");
            sqlx::raw_sql(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await
                .expect("drop the test database");
        }
    }

    /// An event `n` of issue `hash` (repeated to 32 characters), seen at `timestamp`.
    fn record(
        n: usize,
        hash: &str,
        timestamp: f64,
        user: Option<&str>,
        release: Option<&str>,
        environment: Option<&str>,
    ) -> EventRecord {
        let mut tags = vec![("worker".to_owned(), format!("w{}", n % 3))];
        if let Some(release) = release {
            tags.push(("release".to_owned(), release.to_owned()));
        }
        if let Some(environment) = environment {
            tags.push(("environment".to_owned(), environment.to_owned()));
        }
        EventRecord {
            event_id: format!("{n:032x}"),
            timestamp,
            level: "error",
            title: format!("boom {hash}"),
            culprit: "f in m".to_owned(),
            platform: "python".to_owned(),
            environment: environment.map(str::to_owned),
            release: release.map(str::to_owned),
            user: user.map(str::to_owned),
            tags_json: serde_json::to_string(&tags).expect("tags serialise"),
            tags,
            hash: hash.repeat(32),
            grouped_by: "message",
            grouping_values: "[\"boom\"]".to_owned(),
            payload: StoredPayload::compress(&format!("{{\"n\":{n}}}")),
        }
    }

    /// A plain event of issue `hash`: no user, release or environment.
    fn plain(n: usize, hash: &str, timestamp: f64) -> EventRecord {
        record(n, hash, timestamp, None, None, None)
    }

    fn envelope(project_id: u64, events: Vec<EventRecord>) -> EnvelopeIngest {
        EnvelopeIngest {
            project_id,
            received_at: 2_000.0,
            items: vec![("event", events.len() as u64)],
            events,
        }
    }

    async fn write(meta: &PgMeta, envelopes: &[EnvelopeIngest]) -> EnvelopeWrite {
        let refs: Vec<&EnvelopeIngest> = envelopes.iter().collect();
        meta.write_envelopes(&refs).await.expect("write envelopes")
    }

    fn all() -> IssueFilter {
        IssueFilter {
            limit: 100,
            ..IssueFilter::default()
        }
    }

    async fn issue_of(meta: &PgMeta, project_id: u64, hash: &str) -> Issue {
        meta.issues(project_id, &all())
            .await
            .expect("list issues")
            .into_iter()
            .find(|i| i.hash == hash.repeat(32))
            .expect("issue stored")
    }

    #[tokio::test]
    async fn one_commit_counts_each_event_once_and_the_newest_describes_the_issue() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        // 300 events of issue "a" and 7 of issue "b" in one commit, over several
        // envelopes, with repeated users and an in-commit duplicate.
        let mut a: Vec<EventRecord> = (0..300)
            .map(|n| {
                let user = format!("id:{}", n % 40);
                let release = (n % 2 == 0).then_some("r1");
                let ts = 1_000.0 + n as f64;
                record(n, "a", ts, Some(&user), release, Some("prod"))
            })
            .collect();
        // The newest event names the issue; a later event in commit order without a
        // release leaves the last release seen in place.
        a[250].title = "newest a".to_owned();
        a[250].timestamp = 1_299.5;
        a.push(plain(300, "a", 900.0));
        let duplicate = record(7, "a", 5_000.0, Some("id:other"), None, None);
        let b: Vec<EventRecord> = (1_000..1_007)
            .map(|n| record(n, "b", 1_500.0, None, Some("r2"), Some("staging")))
            .collect();
        let (first, rest) = a.split_at(150);
        let written = write(
            &meta,
            &[
                envelope(1, first.to_vec()),
                envelope(1, b),
                envelope(1, rest.to_vec()),
                envelope(1, vec![duplicate]),
            ],
        )
        .await;
        assert_eq!((written.events, written.duplicates), (308, 1));
        let lens: Vec<usize> = written.issue_ids.iter().map(Vec::len).collect();
        assert_eq!(lens, [150, 7, 151, 1]);

        let issue = issue_of(&meta, 1, "a").await;
        assert_eq!(issue.times_seen, 301);
        assert_eq!(issue.user_count, 40);
        assert_eq!((issue.first_seen, issue.last_seen), (900.0, 1_299.5));
        assert_eq!(issue.title, "newest a");
        assert_eq!(issue.last_release.as_deref(), Some("r1"));
        assert_eq!(issue.last_environment.as_deref(), Some("prod"));
        assert_eq!(issue.status, IssueStatus::Unresolved);
        assert_eq!(issue.substatus.as_deref(), Some("new"));
        assert_eq!(issue.grouping_values, ["boom"]);
        assert!(written.issue_ids[0].iter().all(|&id| id == issue.id));
        assert!(written.issue_ids[2].iter().all(|&id| id == issue.id));
        assert_eq!(written.issue_ids[3], [issue.id]);
        let tags = meta.issue_tags(issue.id, 10).await.expect("tags");
        let count = |key: &str, value: &str| {
            tags.iter()
                .find(|t| t.key == key && t.value == value)
                .map(|t| t.count)
        };
        assert_eq!(count("worker", "w0"), Some(101));
        assert_eq!(count("worker", "w1"), Some(100));
        assert_eq!(count("worker", "w2"), Some(100));
        assert_eq!(count("release", "r1"), Some(150));
        assert_eq!(count("environment", "prod"), Some(300));

        let b = issue_of(&meta, 1, "b").await;
        assert_eq!((b.times_seen, b.user_count), (7, 0));
        assert_eq!(b.last_release.as_deref(), Some("r2"));
        assert_eq!(written.issue_ids[1], [b.id; 7]);
        assert_eq!(meta.issue(b.id).await.expect("issue"), Some(b));

        // A second commit adds to the first: only new users and new events count. Its
        // newest event describes the issue again.
        let mut newer = record(5_001, "a", 2_001.0, Some("id:new"), None, Some("dev"));
        newer.title = "second commit".to_owned();
        // A duplicate, newer still: it counts for nothing (not even last seen) and does
        // not describe the issue; the newest stored event does.
        let mut duplicate = record(0, "a", 3_000.0, Some("id:dup"), None, None);
        duplicate.title = "never shown".to_owned();
        let written = write(
            &meta,
            &[envelope(
                1,
                vec![
                    record(5_000, "a", 2_000.0, Some("id:1"), None, None),
                    newer,
                    duplicate,
                ],
            )],
        )
        .await;
        assert_eq!((written.events, written.duplicates), (2, 1));
        assert_eq!(written.issue_ids, [vec![issue.id; 3]]);
        let issue = issue_of(&meta, 1, "a").await;
        assert_eq!((issue.times_seen, issue.user_count), (303, 41));
        assert_eq!((issue.first_seen, issue.last_seen), (900.0, 2_001.0));
        assert_eq!(issue.title, "second commit");
        assert_eq!(issue.last_release.as_deref(), Some("r1"));
        assert_eq!(issue.last_environment.as_deref(), Some("dev"));
        assert_eq!(issue.substatus.as_deref(), Some("new"));
        assert_eq!(meta.issue(issue.id + 1_000).await.expect("issue"), None);
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn duplicates_count_once_and_name_the_issue_they_were_stored_under() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        let first = write(
            &meta,
            &[envelope(
                1,
                vec![
                    plain(1, "a", 1_000.0),
                    plain(2, "a", 1_001.0),
                    plain(3, "b", 1_002.0),
                ],
            )],
        )
        .await;
        assert_eq!((first.events, first.duplicates), (3, 0));
        let (a, b) = (first.issue_ids[0][0], first.issue_ids[0][2]);
        assert_ne!(a, b);

        // Event 1 again, with other content (so another hash): still issue a's. Event 4
        // twice in the commit: counted once, both copies named. Event 5 with the id of
        // event 3 but the hash of a new issue "c": a duplicate, and no issue "c".
        let mut renamed = plain(3, "c", 1_003.0);
        renamed.title = "never shown".to_owned();
        let second = write(
            &meta,
            &[
                envelope(1, vec![plain(1, "b", 1_010.0), plain(4, "a", 1_011.0)]),
                envelope(1, vec![plain(4, "a", 1_012.0), renamed]),
                // The same event id in another project is another event.
                envelope(2, vec![plain(1, "a", 1_013.0)]),
            ],
        )
        .await;
        assert_eq!((second.events, second.duplicates), (2, 3));
        let other = second.issue_ids[2][0];
        assert_eq!(second.issue_ids, [vec![a, a], vec![a, b], vec![other]]);
        assert!(other != a && other != b);

        let issues = meta.issues(1, &all()).await.expect("list");
        let mut counts: Vec<(String, u64)> = issues
            .iter()
            .map(|i| (i.hash[..1].to_owned(), i.times_seen))
            .collect();
        counts.sort();
        assert_eq!(counts, [("a".to_owned(), 3), ("b".to_owned(), 1)]);
        let a = issue_of(&meta, 1, "a").await;
        assert_eq!(a.last_seen, 1_011.0);
        assert_eq!(issue_of(&meta, 2, "a").await.times_seen, 1);

        // A whole commit sent again (a retry after a lost answer) changes nothing and
        // names the same issues.
        let again = write(
            &meta,
            &[envelope(
                1,
                vec![plain(1, "a", 1_000.0), plain(3, "b", 1_002.0)],
            )],
        )
        .await;
        assert_eq!((again.events, again.duplicates), (0, 2));
        assert_eq!(again.issue_ids, [vec![a.id, b]]);
        assert_eq!(issue_of(&meta, 1, "a").await, a);
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn a_resolved_issue_regresses_and_an_ignored_one_stays_ignored() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        write(
            &meta,
            &[envelope(
                1,
                vec![plain(1, "a", 1_000.0), plain(2, "i", 1_000.0)],
            )],
        )
        .await;
        let a = issue_of(&meta, 1, "a").await;
        let ignored = issue_of(&meta, 1, "i").await;
        let updated = meta
            .set_issue_status(None, &[a.id], IssueStatus::Resolved, 1_500.0)
            .await
            .expect("resolve");
        assert_eq!(updated, [a.id]);
        meta.set_issue_status(None, &[ignored.id], IssueStatus::Ignored, 1_500.0)
            .await
            .expect("ignore");
        let a = issue_of(&meta, 1, "a").await;
        assert_eq!((a.status, a.substatus), (IssueStatus::Resolved, None));

        // Only duplicates: nothing recurred, it stays resolved.
        write(&meta, &[envelope(1, vec![plain(1, "a", 1_600.0)])]).await;
        assert_eq!(issue_of(&meta, 1, "a").await.status, IssueStatus::Resolved);

        let events: Vec<_> = (10..50)
            .map(|n| record(n, "a", 2_000.0, Some("id:9"), None, None))
            .chain((50..60).map(|n| plain(n, "i", 2_000.0)))
            .collect();
        write(&meta, &[envelope(1, events)]).await;
        let a = issue_of(&meta, 1, "a").await;
        assert_eq!(a.status, IssueStatus::Unresolved);
        assert_eq!(a.substatus.as_deref(), Some("regressed"));
        assert_eq!((a.times_seen, a.user_count), (41, 1));
        let ignored = issue_of(&meta, 1, "i").await;
        assert_eq!(ignored.status, IssueStatus::Ignored);
        assert_eq!(ignored.substatus.as_deref(), Some("archived_forever"));
        assert_eq!(ignored.times_seen, 11);

        // Back to unresolved: from ignored it is `ongoing`; an unresolved issue keeps its
        // substatus.
        meta.set_issue_status(None, &[a.id, ignored.id], IssueStatus::Unresolved, 3_000.0)
            .await
            .expect("unresolve");
        assert_eq!(
            issue_of(&meta, 1, "a").await.substatus.as_deref(),
            Some("regressed")
        );
        assert_eq!(
            issue_of(&meta, 1, "i").await.substatus.as_deref(),
            Some("ongoing")
        );
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn status_changes_keep_to_the_project() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        let written = write(
            &meta,
            &[
                envelope(1, vec![plain(1, "a", 1_000.0)]),
                envelope(2, vec![plain(2, "a", 1_000.0)]),
            ],
        )
        .await;
        let (one, two) = (written.issue_ids[0][0], written.issue_ids[1][0]);
        let updated = meta
            .set_issue_status(Some(1), &[one, two, 9_999], IssueStatus::Resolved, 5.0)
            .await
            .expect("resolve");
        assert_eq!(updated, [one]);
        assert_eq!(
            issue_of(&meta, 2, "a").await.status,
            IssueStatus::Unresolved
        );
        let mut updated = meta
            .set_issue_status(None, &[two, one], IssueStatus::Ignored, 6.0)
            .await
            .expect("ignore");
        updated.sort_unstable();
        assert_eq!(updated, [one, two]);
        assert_eq!(issue_of(&meta, 2, "a").await.status, IssueStatus::Ignored);
        assert!(
            meta.set_issue_status(None, &[], IssueStatus::Resolved, 7.0)
                .await
                .expect("nothing")
                .is_empty()
        );
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn tag_summaries_rank_top_values_with_the_keys_totals() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        // browser: chrome ×5, firefox ×3, safari ×3 (tie, by value), edge ×1.
        let browsers = [("chrome", 5), ("firefox", 3), ("safari", 3), ("edge", 1)];
        let mut events = Vec::new();
        let mut n = 0;
        for (browser, times) in browsers {
            for _ in 0..times {
                let mut event = plain(n, "a", 1_000.0 + n as f64);
                event.tags = vec![
                    ("browser".to_owned(), browser.to_owned()),
                    ("os".to_owned(), "linux".to_owned()),
                ];
                events.push(event);
                n += 1;
            }
        }
        let (early, late) = events.split_at(6);
        write(&meta, &[envelope(1, early.to_vec())]).await;
        write(&meta, &[envelope(1, late.to_vec())]).await;
        let issue = issue_of(&meta, 1, "a").await;
        let tags = meta.issue_tags(issue.id, 2).await.expect("tags");
        let rows: Vec<(&str, &str, u64, u64, u64)> = tags
            .iter()
            .map(|t| {
                (
                    t.key.as_str(),
                    t.value.as_str(),
                    t.count,
                    t.distinct_values,
                    t.total,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("browser", "chrome", 5, 4, 12),
                ("browser", "firefox", 3, 4, 12),
                ("os", "linux", 12, 1, 12),
            ]
        );
        // first/last seen of a value over both commits (firefox: events 5..=7).
        assert_eq!((tags[1].first_seen, tags[1].last_seen), (1_005.0, 1_007.0));
        assert_eq!((tags[2].first_seen, tags[2].last_seen), (1_000.0, 1_011.0));
        assert_eq!(meta.issue_tags(issue.id, 10).await.expect("tags").len(), 5);
        assert!(
            meta.issue_tags(issue.id + 1, 10)
                .await
                .expect("tags")
                .is_empty()
        );
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn item_counts_add_up_per_day_and_type() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        let day = |received_at: f64, items: Vec<(&'static str, u64)>| EnvelopeIngest {
            project_id: 1,
            received_at,
            events: Vec::new(),
            items,
        };
        // 2024-03-01 and 2024-03-02 (UTC); envelopes without events count too.
        let (d1, d2) = (1_709_294_400.0, 1_709_294_400.0 + 86_400.0);
        write(
            &meta,
            &[
                day(d1, vec![("session", 2), ("event", 1)]),
                day(d1 + 10.0, vec![("session", 3)]),
                day(d2, vec![("transaction", 4)]),
            ],
        )
        .await;
        write(
            &meta,
            &[day(d2 + 5.0, vec![("transaction", 1), ("event", u64::MAX)])],
        )
        .await;
        let mut other = day(d1, vec![("event", 9)]);
        other.project_id = 2;
        write(&meta, &[other]).await;
        let counts = meta.item_counts(1, "2024-03-01").await.expect("counts");
        let rows: Vec<(&str, &str, u64)> = counts
            .iter()
            .map(|c| (c.day.as_str(), c.item_type.as_str(), c.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("2024-03-01", "event", 1),
                ("2024-03-01", "session", 5),
                ("2024-03-02", "event", i64::MAX as u64),
                ("2024-03-02", "transaction", 5),
            ]
        );
        // Saturates rather than failing the commit.
        write(&meta, &[day(d2, vec![("event", 10)])]).await;
        let counts = meta.item_counts(1, "2024-03-02").await.expect("counts");
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].count, i64::MAX as u64);
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn the_issue_list_filters_sorts_and_pages() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        // Issues a..f: first seen 100·i, last seen 1000 − 10·i, counts 3,1,3,2,1,3 (ties
        // broken by id), levels, environments and releases varied.
        let counts = [3, 1, 3, 2, 1, 3];
        let mut n = 0;
        let mut envelopes = Vec::new();
        for (i, hash) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
            let mut events = Vec::new();
            for k in 0..counts[i] {
                let ts = if k == 0 {
                    100.0 * i as f64
                } else {
                    1_000.0 - 10.0 * i as f64
                };
                let env = if i % 2 == 0 { "prod" } else { "staging" };
                let release = (i < 2).then_some("1.0");
                let mut event = record(n, hash, ts, None, release, Some(env));
                event.level = if i == 3 { "warning" } else { "error" };
                event.title = format!("Error {hash}: 50%_off");
                event.culprit = if i == 4 {
                    "Handler.CHECKOUT".to_owned()
                } else {
                    "f".to_owned()
                };
                events.push(event);
                n += 1;
            }
            envelopes.push(envelope(1, events));
        }
        envelopes.push(envelope(2, vec![plain(999, "z", 5_000.0)]));
        write(&meta, &envelopes).await;
        let hashes = |issues: &[Issue]| -> String { issues.iter().map(|i| &i.hash[..1]).collect() };
        let list = |filter: IssueFilter| {
            let meta = meta.clone();
            async move { meta.issues(1, &filter).await.expect("list") }
        };
        let id = |hash: &'static str| {
            let meta = meta.clone();
            async move { issue_of(&meta, 1, hash).await.id }
        };

        // Sorts: last seen (default; b has one event, last seen 100), first seen, count.
        assert_eq!(hashes(&list(all()).await), "acdfeb");
        let by = |sort| IssueFilter { sort, ..all() };
        assert_eq!(hashes(&list(by(IssueSort::FirstSeen)).await), "fedcba");
        let by_count = list(by(IssueSort::Count)).await;
        let mut expected = by_count.clone();
        expected.sort_by_key(|i| std::cmp::Reverse((i.times_seen, i.id)));
        assert_eq!(by_count, expected);
        assert_eq!(
            by_count.iter().map(|i| i.times_seen).collect::<Vec<_>>(),
            [3, 3, 3, 2, 1, 1]
        );
        let c = id("c").await;

        // Filters.
        let with = |f: fn(&mut IssueFilter)| {
            let mut filter = all();
            f(&mut filter);
            filter
        };
        assert_eq!(
            hashes(&list(with(|f| f.level = Some("warning".into()))).await),
            "d"
        );
        assert_eq!(
            hashes(&list(with(|f| f.environment = Some("staging".into()))).await),
            "dfb"
        );
        assert_eq!(
            hashes(&list(with(|f| f.release = Some("1.0".into()))).await),
            "ab"
        );
        assert_eq!(
            hashes(&list(with(|f| f.text = Some("checkout".into()))).await),
            "e"
        );
        assert_eq!(
            hashes(&list(with(|f| f.text = Some("ERROR C".into()))).await),
            "c"
        );
        // LIKE wildcards in the text are literal: "%_" matches only "%_", not "50%_".
        assert_eq!(
            hashes(&list(with(|f| f.text = Some("0%_o".into()))).await),
            "acdfeb"
        );
        assert!(
            list(with(|f| f.text = Some("0_%o".into())))
                .await
                .is_empty()
        );
        assert_eq!(list(with(|f| f.text = Some("%".into()))).await.len(), 6);
        assert!(
            list(with(|f| f.text = Some("Error _".into())))
                .await
                .is_empty()
        );
        meta.set_issue_status(None, &[c], IssueStatus::Resolved, 1.0)
            .await
            .expect("resolve");
        assert_eq!(
            hashes(&list(with(|f| f.status = Some(IssueStatus::Resolved))).await),
            "c"
        );
        assert_eq!(
            hashes(&list(with(|f| f.status = Some(IssueStatus::Unresolved))).await),
            "adfeb"
        );
        assert_eq!(hashes(&meta.issues(2, &all()).await.expect("list")), "z");

        // Keyset pages of two follow each order exactly, without repeats or gaps.
        for sort in [IssueSort::LastSeen, IssueSort::FirstSeen, IssueSort::Count] {
            let whole = list(by(sort)).await;
            let mut paged = Vec::new();
            let mut cursor = None;
            loop {
                let page = list(IssueFilter {
                    limit: 2,
                    cursor,
                    ..by(sort)
                })
                .await;
                assert!(page.len() <= 2);
                let Some(last) = page.last() else { break };
                cursor = Some(Cursor {
                    value: last.sort_value(sort),
                    id: last.id,
                });
                paged.extend(page);
            }
            assert_eq!(hashes(&paged), hashes(&whole), "{sort:?}");
        }
        // A fractional count cursor: every issue seen at most twice.
        let page = list(IssueFilter {
            cursor: Some(Cursor { value: 2.5, id: 0 }),
            ..by(IssueSort::Count)
        })
        .await;
        assert_eq!(
            page.iter().map(|i| i.times_seen).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        test.drop(&[&meta]).await;
    }

    #[tokio::test]
    async fn event_environments_are_the_projects_own_sorted() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        write(
            &meta,
            &[
                envelope(
                    1,
                    vec![
                        record(1, "a", 1.0, None, None, Some("prod")),
                        record(2, "b", 1.0, None, None, Some("Beta")),
                        record(3, "b", 1.0, None, None, Some("")),
                        record(4, "c", 1.0, None, None, Some("prod")),
                    ],
                ),
                envelope(2, vec![record(5, "a", 1.0, None, None, Some("other"))]),
            ],
        )
        .await;
        // Byte order, as the embedded store sorts: upper case first.
        assert_eq!(
            meta.event_environments(1).await.expect("envs"),
            ["Beta", "prod"]
        );
        assert_eq!(meta.event_environments(2).await.expect("envs"), ["other"]);
        assert!(meta.event_environments(3).await.expect("envs").is_empty());
        test.drop(&[&meta]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_collectors_make_one_issue_per_fingerprint_and_exact_counts() {
        const TASKS: usize = 8;
        const COMMITS: usize = 6;
        const PER_COMMIT: usize = 20;
        let test = TestDb::new().await;
        // Two collectors: two pools on one database.
        let collectors = [test.connect().await, test.connect().await];
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let meta = collectors[task % 2].clone();
            tasks.push(tokio::spawn(async move {
                let mut stored = 0;
                for commit in 0..COMMITS {
                    // Shared fingerprints s0..s3 in an order of this task's own, a
                    // fingerprint of its own, and one event id every task sends (the
                    // same event through every collector).
                    let mut events = Vec::new();
                    for k in 0..PER_COMMIT {
                        let n = 1_000_000 + (task * COMMITS + commit) * PER_COMMIT + k;
                        let hash = if k % 5 == 4 {
                            format!("t{task}")
                        } else {
                            format!("s{}", (k + task) % 4)
                        };
                        let user = format!("id:{}", k % 7);
                        let ts = 1_000.0 + n as f64;
                        events.push(record(n, &hash[..2], ts, Some(&user), None, Some("prod")));
                    }
                    events.push(record(commit, "s0", 500.0, Some("id:shared"), None, None));
                    let envelopes = [envelope(1, events.split_off(10)), envelope(1, events)];
                    let refs: Vec<&EnvelopeIngest> = envelopes.iter().collect();
                    let written = meta.write_envelopes(&refs).await?;
                    stored += written.events;
                }
                Ok::<u64, Error>(stored)
            }));
        }
        let mut stored = 0;
        for task in tasks {
            stored += task.await.expect("task ran").expect("no write failed");
        }
        // Every distinct event exactly once: the per-task ones and one per shared id.
        let distinct = (TASKS * COMMITS * PER_COMMIT + COMMITS) as u64;
        assert_eq!(stored, distinct);

        let meta = &collectors[0];
        let issues = meta.issues(1, &all()).await.expect("list");
        let mut hashes: Vec<&str> = issues.iter().map(|i| &i.hash[..2]).collect();
        hashes.sort_unstable();
        let mut expected: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
        expected.extend((0..TASKS).map(|t| format!("t{t}")));
        expected.sort_unstable();
        assert_eq!(hashes, expected, "one issue per fingerprint");
        let times_seen: u64 = issues.iter().map(|i| i.times_seen).sum();
        assert_eq!(times_seen, distinct);
        for issue in &issues {
            let tags = meta.issue_tags(issue.id, 10).await.expect("tags");
            let workers: u64 = tags
                .iter()
                .filter(|t| t.key == "worker")
                .map(|t| t.count)
                .sum();
            assert_eq!(workers, issue.times_seen, "tag counts of {}", issue.hash);
        }
        let s0 = issues
            .iter()
            .find(|i| i.hash.starts_with("s0"))
            .expect("s0");
        // Users id:0..6 and id:shared; the shared events are the oldest.
        assert_eq!((s0.user_count, s0.first_seen), (8, 500.0));
        let t0 = issues
            .iter()
            .find(|i| i.hash.starts_with("t0"))
            .expect("t0");
        assert_eq!(t0.times_seen, (COMMITS * PER_COMMIT / 5) as u64);
        // Its events are k = 4, 9, 14, 19 of each commit: users id:4, id:2, id:0, id:5.
        assert_eq!(t0.user_count, 4);
        let items = meta.item_counts(1, "1970-01-01").await.expect("items");
        let sent = (TASKS * COMMITS * (PER_COMMIT + 1)) as u64;
        assert_eq!(items.iter().map(|c| c.count).sum::<u64>(), sent);
        test.drop(&[&collectors[0], &collectors[1]]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_aborted_by_a_deadlock_is_retried_and_counts_once() {
        let test = TestDb::new().await;
        let meta = test.connect().await;
        write(
            &meta,
            &[envelope(1, vec![plain(1, "a", 1.0), plain(2, "b", 1.0)])],
        )
        .await;

        // Another session locks the issues in the opposite order: b now, a once the
        // writer holds a and waits for b. Its long deadlock_timeout makes the writer the
        // one that detects the cycle and is aborted, so the commit must be run again.
        let mut other = sqlx::PgConnection::connect(&test.url)
            .await
            .expect("second session");
        sqlx::raw_sql("SET deadlock_timeout = '10s'")
            .execute(&mut other)
            .await
            .expect("set deadlock_timeout");
        let mut tx = other.begin().await.expect("begin");
        sqlx::query("UPDATE issues SET title = 'held' WHERE hash = $1")
            .bind("b".repeat(32))
            .execute(&mut *tx)
            .await
            .expect("lock b");
        let writer = tokio::spawn({
            let meta = meta.clone();
            async move {
                let envelope = envelope(1, vec![plain(3, "a", 2.0), plain(4, "b", 3.0)]);
                meta.write_envelopes(&[&envelope]).await
            }
        });
        let mut waits = 0;
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut *tx)
            .await
            .expect("pg_stat_activity");
            if waiting > 0 {
                break;
            }
            waits += 1;
            assert!(waits < 500, "the writer never waited for issue b");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sqlx::query("UPDATE issues SET title = 'held too' WHERE hash = $1")
            .bind("a".repeat(32))
            .execute(&mut *tx)
            .await
            .expect("the writer, not this session, is the deadlock victim");
        tx.commit().await.expect("commit");

        let written = writer
            .await
            .expect("writer task")
            .expect("the aborted commit is retried");
        assert_eq!((written.events, written.duplicates), (2, 0));
        let a = issue_of(&meta, 1, "a").await;
        let b = issue_of(&meta, 1, "b").await;
        assert_eq!((a.times_seen, b.times_seen), (2, 2));
        assert_eq!(written.issue_ids, [vec![a.id, b.id]]);
        // The retry ran after the other session committed: its titles gave way.
        assert_eq!((a.title.as_str(), b.title.as_str()), ("boom a", "boom b"));
        let tags = meta.issue_tags(a.id, 10).await.expect("tags");
        assert_eq!(tags.iter().map(|t| t.count).sum::<u64>(), 2);
        test.drop(&[&meta]).await;
    }

    #[test]
    fn count_cursors_are_exact_integer_bounds() {
        assert_eq!(count_cursor(Cursor { value: 7.0, id: 3 }), (7, 3));
        assert_eq!(count_cursor(Cursor { value: 2.5, id: 3 }), (2, i64::MAX));
        assert_eq!(count_cursor(Cursor { value: -0.5, id: 3 }), (-1, i64::MAX));
        assert_eq!(
            count_cursor(Cursor {
                value: 1e300,
                id: 3
            })
            .0,
            i64::MAX
        );
    }
}
