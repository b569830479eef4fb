//! The embedded SQLite backend (sqlx): one file under the data directory.

mod insight;
mod logs;
mod switches;
pub(super) mod wal_buffer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use sightline_protocol::{EncodedSum, RouteWindow, merge_encoded};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};

use super::meta_rows::{db, project};
use super::migrate::{self, Migration};
use super::sqlite_issues;
use super::{
    Aggregates, ClassTotals, Cursor, Ingest, Issue, IssueFilter, IssueStatus, ItemCount,
    MetricsIngest, Project, Steps, Store, StoredEvent, TagValue, WriteSummary, to_i64, to_u64,
};
use crate::{Error, TimeRange, query::unix_now};

/// Connections in the shared pool: concurrent query-API readers and the occasional write
/// outside the ingest path (status changes, switches, retention). The ingest writer has a
/// connection of its own (`SqliteStore::writer`).
const MAX_CONNECTIONS: u32 = 4;

/// How long a request waits for a connection or a lock before the store counts as down.
const WAIT: Duration = Duration::from_secs(5);

/// Page cache per connection, as SQLite's negative `cache_size` (KiB): 32 MiB.
const CACHE_KIB: i64 = -32 * 1024;

/// Page size of a database this store creates (SQLite's default is 4 KiB). An error
/// event's row is ~1.5 KB, and each group commit appends every page it touched to the WAL
/// as a frame, which checkpoints copy back: with 8 KiB pages a commit's event rows fill
/// half as many pages, so fewer frames are built, written and copied. A database keeps the page size
/// it was created with (changing it needs a `VACUUM` outside WAL mode), so stores created
/// before keep 4 KiB pages and work as they did.
const PAGE_SIZE: u32 = 8_192;

/// WAL pages after which a commit checkpoints (SQLite's default is 1,000): ~32 MiB.
const WAL_AUTOCHECKPOINT_PAGES: u32 = (32 << 20) / PAGE_SIZE;

/// Size the WAL file is truncated back to after a checkpoint.
const WAL_SIZE_LIMIT_BYTES: u64 = 64 << 20;

/// Longest the tag summaries of a commit wait in memory while requests queue up. Reads
/// never see them trail (a read of them writes them first), so this bounds only how many
/// stored events a restart after a crash counts again (`tag_fold`) and how long the write
/// a read waits for may take. A tag row is written once per interval however many events
/// it counts: in a long busy spell with a few thousand distinct tag values, a second
/// meant about one upsert per event.
const MAX_TAG_DELAY: Duration = Duration::from_secs(5);

/// Most tag summary rows held in memory before they are written whatever the queue.
const MAX_DEFERRED_TAG_ROWS: usize = 50_000;

/// The schema version that keeps tag summaries' watermark (`tag_fold`).
const TAG_FOLD_VERSION: i64 = 12;

/// SQLite through a sqlx connection pool.
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    /// The group-commit writer's own connection and what it keeps between commits, held
    /// across the whole of a write so writes take turns.
    writer: tokio::sync::Mutex<Writer>,
    /// Whether `Writer::deferred` holds tag summaries: readers of `issue_tags` write them
    /// first ([`SqliteStore::settled_tags`]). Set and cleared under the writer's lock.
    tags_held: AtomicBool,
    /// Tier retention: decides which rollup tier a range query reads.
    retention: crate::insight::RetentionConfig,
}

/// The ingest writer's side of the store.
struct Writer {
    options: SqliteConnectOptions,
    /// Opened at the first write, not at start: a store opened to read or migrate never
    /// needs it.
    conn: Option<sqlite_issues::WriterConnection>,
    /// Tag summaries of committed events not yet in `issue_tags` (migration 0012).
    deferred: DeferredTags,
}

impl Writer {
    /// Begins a write transaction, on the connection opened now if not yet open, and
    /// hands it out with the held tag summaries.
    async fn begin(&mut self) -> Result<(sqlite_issues::WriterTx<'_>, &mut DeferredTags), Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => sqlite_issues::WriterConnection::open(&self.options).await?,
        };
        let conn = self.conn.insert(conn);
        Ok((conn.begin().await?, &mut self.deferred))
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Drops the writer's connection without closing it, as dropping the store does.
    pub(super) async fn drop_writer_connection(&self) {
        drop(self.writer.lock().await.conn.take());
    }
}

/// Tag counts kept back from `issue_tags` while requests queue up, and since when.
#[derive(Default)]
struct DeferredTags {
    counts: sqlite_issues::TagCounts,
    since: Option<std::time::Instant>,
}

impl SqliteStore {
    /// Keeps tiers for `retention` (and reads the tier that fits each range).
    pub(crate) fn with_retention(mut self, retention: crate::insight::RetentionConfig) -> Self {
        self.retention = retention;
        self
    }

    fn tier_for(&self, range: TimeRange) -> crate::insight::Tier {
        crate::insight::tier_for(range, unix_now(), &self.retention)
    }

    fn tier_for_series(&self, range: TimeRange, step_secs: i64) -> crate::insight::Tier {
        crate::insight::tier_for_series(range, step_secs, unix_now(), &self.retention)
    }

    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub(crate) async fn open(path: &Path) -> Result<SqliteStore, Error> {
        Self::open_with(path, migrate::SQLITE).await
    }

    /// As [`SqliteStore::open`], applying `migrations` only (tests start from older schemas).
    async fn open_with(path: &Path, migrations: &[Migration]) -> Result<SqliteStore, Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            // WAL: query-API readers never block the writer task and it never blocks them.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit is fsynced, so a 2xx answer means the data survives a power
            // cut. Group commit keeps that to one fsync per batch of requests, not per request.
            .synchronous(SqliteSynchronous::Full)
            // Wait for a lock instead of failing at once: another process (a backup, the
            // sqlite3 shell) may hold it for a moment.
            .busy_timeout(WAIT)
            // Enforce REFERENCES: windows and every other row belong to a project.
            .foreign_keys(true)
            // 32 MiB of page cache per connection (default 2 MB): the index pages every
            // commit touches (event ids, each issue's newest events, tags) stay in memory
            // instead of being read back between commits. Bounded, so RSS stays bounded.
            .pragma("cache_size", CACHE_KIB.to_string())
            // Statement journals and sort spills in memory, not temp files: they live for
            // one statement and are small next to the cache.
            .pragma("temp_store", "memory")
            // Checkpoint once the WAL holds ~32 MB instead of ~4 MB (1,000 pages): every
            // commit rewrites the same hot index pages, and checkpointing after nearly
            // every group commit copied them into the database each time. Durability is
            // unchanged: a commit is fsynced in the WAL before it is acknowledged.
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
            // After a checkpoint, truncate the WAL back to this size so a burst does not
            // leave a large file behind.
            .pragma("journal_size_limit", WAL_SIZE_LIMIT_BYTES.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(WAIT)
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        let store = SqliteStore {
            pool,
            writer: tokio::sync::Mutex::new(Writer {
                options,
                conn: None,
                deferred: DeferredTags::default(),
            }),
            tags_held: AtomicBool::new(false),
            retention: crate::insight::RetentionConfig::default(),
        };
        store.migrate(migrations).await?;
        // Tests open stores at older schemas, without `tag_fold`.
        if migrations.iter().any(|m| m.version == TAG_FOLD_VERSION) {
            store.recount_tags().await?;
        }
        Ok(store)
    }

    /// Counts into `issue_tags` the tags of events a stopped collector held in memory.
    async fn recount_tags(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let events = sqlite_issues::recount_tags(&mut tx).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        if events > 0 {
            tracing::info!(events, "counted the tags of events stored before a stop");
        }
        Ok(())
    }

    /// Writes `batches` in one transaction. With `backlog` (a busy spell), or while some
    /// are held, the tag summaries of the commit are added up in memory instead of
    /// written, until [`MAX_TAG_DELAY`] has passed or too many are held: then all of them
    /// are written in the commit at hand. [`Store::settle`] writes them when the spell
    /// ends, and a read of them first ([`SqliteStore::settled_tags`]).
    async fn write_batches(
        &self,
        batches: &[Ingest],
        backlog: bool,
    ) -> Result<WriteSummary, Error> {
        let mut writer = self.writer.lock().await;
        let (mut tx, deferred) = writer.begin().await?;
        let mut summary = WriteSummary::default();
        let mut envelopes = Vec::new();
        for ingest in batches {
            let ingest = match ingest {
                Ingest::Metrics(metrics) => metrics,
                Ingest::Envelope(envelope) => {
                    envelopes.push(envelope);
                    continue;
                }
                Ingest::Logs(lines) => {
                    logs::insert_logs(&mut tx, lines).await.map_err(db)?;
                    summary.log_lines += lines.len() as u64;
                    continue;
                }
            };
            let dropped = upsert_agent(&mut tx, ingest).await.map_err(db)?;
            switches::record_evaluations(&mut tx, &ingest.batch, ingest.received_at)
                .await
                .map_err(db)?;
            summary.agent_dropped = summary.agent_dropped.saturating_add(dropped);
            let project_id = to_i64(ingest.project_id);
            let environment = stored_environment(&ingest.batch.agent);
            merge_windows(&mut tx, project_id, environment, &ingest.batch.windows)
                .await
                .map_err(db)?;
            summary.windows += ingest.batch.windows.len() as u64;
            insight::write_insight(&mut tx, project_id, &ingest.batch, ingest.received_at)
                .await
                .map_err(db)?;
        }
        if envelopes.is_empty() {
            tx.commit().await?;
            return Ok(summary);
        }
        let stored = tx
            .on_this_thread(|conn| sqlite_issues::write_envelopes(conn, &envelopes))
            .await?;
        summary.events = stored.events;
        summary.duplicate_events = stored.duplicates;
        // A lone request's rows are written with it, unless rows are held: then they join
        // those (a commit of one request in a busy spell must not write them all).
        let write_now = (!backlog && deferred.counts.is_empty())
            || deferred.since.is_some_and(|t| t.elapsed() >= MAX_TAG_DELAY)
            || deferred.counts.len() + stored.tags.len() > MAX_DEFERRED_TAG_ROWS;
        if write_now {
            // Written with what was held; on failure nothing of this commit counts and
            // the held rows stay held.
            let mut all = deferred.counts.clone();
            all.merge(stored.tags);
            tx.on_this_thread(|conn| sqlite_issues::write_tags(conn, &all))
                .await?;
            tx.commit().await?;
            *deferred = DeferredTags::default();
            self.tags_held.store(false, Ordering::SeqCst);
        } else {
            tx.commit().await?;
            deferred.counts.merge(stored.tags);
            deferred.since.get_or_insert_with(std::time::Instant::now);
            // Before the commit's answers go out (the caller answers after this returns),
            // so a read that follows an answer writes that answer's tags first.
            self.tags_held.store(true, Ordering::SeqCst);
        }
        Ok(summary)
    }

    /// Writes the tag summaries held back in a busy spell, if any, before a read of
    /// `issue_tags`: a client that has its answers reads summaries that count its events,
    /// however long the spell goes on. Waits for a commit in progress. Should the write
    /// fail (a full disk), the read goes ahead without them rather than fail too: the rows
    /// stay held for the writer's next try.
    async fn settled_tags(&self) {
        if self.tags_held.load(Ordering::SeqCst)
            && let Err(e) = self.settle().await
        {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "tag summaries not written before a read"
            );
        }
    }

    /// Applies every pending migration, all in one immediate transaction so two processes
    /// opening the same file cannot both apply one.
    async fn migrate(&self, migrations: &[Migration]) -> Result<(), Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at INTEGER NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        for migration in migrate::pending(migrations, &applied)? {
            let failed = |e: sqlx::Error| Error::Migration {
                version: migration.version,
                source: Arc::new(e),
            };
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)")
                .bind(migration.version)
                .bind(unix_now())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(version = migration.version, "applied sqlite migration");
        }
        tx.commit().await.map_err(db)
    }
}

/// Reads `status_class, SUM(count), TOTAL(sum_us), MIN(min_us), MAX(max_us)` from column
/// `at` on.
fn class_totals<K>(row: &SqliteRow, key: K, at: usize) -> Result<ClassTotals<K>, sqlx::Error> {
    Ok(ClassTotals {
        key,
        status_class: row.try_get(at)?,
        count: to_u64(row.try_get(at + 1)?),
        sum_us: row.try_get(at + 2)?,
        min_us: to_u64(row.try_get(at + 3)?),
        max_us: to_u64(row.try_get(at + 4)?),
    })
}

/// Merges one batch's agent row and returns how much its dropped-window total grew.
async fn upsert_agent(
    conn: &mut SqliteConnection,
    ingest: &MetricsIngest,
) -> Result<u64, sqlx::Error> {
    let agent = &ingest.batch.agent;
    let project_id = to_i64(ingest.project_id);
    let previous: Option<i64> = sqlx::query(
        "SELECT dropped_windows FROM agents
         WHERE project_id = ?1 AND service = ?2 AND instance = ?3",
    )
    .bind(project_id)
    .bind(&agent.service)
    .bind(&agent.instance)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get(0))
    .transpose()?;
    let reported = to_i64(ingest.batch.dropped_windows);
    sqlx::query(
        "INSERT INTO agents (project_id, service, instance, sdk, environment, release,
                             first_seen, last_seen, dropped_windows)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
         ON CONFLICT (project_id, service, instance) DO UPDATE SET
             sdk = excluded.sdk,
             environment = excluded.environment,
             release = excluded.release,
             last_seen = MAX(last_seen, excluded.last_seen),
             -- a running total: a retried older batch must not lower it
             dropped_windows = MAX(dropped_windows, excluded.dropped_windows)",
    )
    .bind(project_id)
    .bind(&agent.service)
    .bind(&agent.instance)
    .bind(&agent.sdk)
    .bind(agent.environment.as_deref())
    .bind(agent.release.as_deref())
    .bind(ingest.received_at)
    .bind(reported)
    .execute(&mut *conn)
    .await?;
    Ok(to_u64(reported.saturating_sub(previous.unwrap_or(0))))
}

/// A stored histogram blob that `sightline_protocol::encode_buckets` cannot have written.
fn corrupt(e: sightline_protocol::HistogramError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// The rows a read over a range takes, as what follows `FROM`: those of the read's tier
/// `fine` with `time` in `[?{since}, ?{first})` and `[?{end}, ?{until})`, and those of the
/// day tier in `[?{first}, ?{end})` — the whole days of [`crate::insight::day_split`]
/// (`days`), as a subquery of `columns`. `from(tier)` names a tier's table and opens its
/// `WHERE` clause with the key filters. Without whole days (`days` empty) it is `fine`'s
/// table and filter alone: SQLite materialises a compound subquery before grouping (a day
/// of minute rows took twice as long to group), and even a simple subquery measured slower
/// than the table itself in the history benchmark.
pub(super) fn split_rows(
    columns: &str,
    time: &str,
    (fine, days): (crate::insight::Tier, (i64, i64)),
    from: impl Fn(crate::insight::Tier) -> String,
    [since, until, first, end]: [u8; 4],
) -> String {
    let (fine, day) = (from(fine), from(crate::insight::Tier::Day));
    if days.0 >= days.1 {
        return format!("{fine} AND {time} >= ?{since} AND {time} < ?{until}");
    }
    format!(
        "(SELECT {columns} FROM {fine} AND {time} >= ?{since} AND {time} < ?{first}
          UNION ALL
          SELECT {columns} FROM {day} AND {time} >= ?{first} AND {time} < ?{end}
          UNION ALL
          SELECT {columns} FROM {fine} AND {time} >= ?{end} AND {time} < ?{until})"
    )
}

/// What a latency window is merged into: one route × method of `route_windows{suffix}`, or
/// the per-project rollup `project_windows{suffix}` that the all-routes charts read.
#[derive(Debug, Clone, Copy)]
enum WindowKey<'a> {
    Route { route: &'a str, method: &'a str },
    Project,
}

impl WindowKey<'_> {
    /// The table of `tier`, and its primary key as an `ON CONFLICT` target.
    fn table(self, tier: crate::insight::Tier) -> (String, &'static str) {
        let suffix = tier.route_suffix();
        match self {
            WindowKey::Route { .. } => (
                format!("route_windows{suffix}"),
                "project_id, window_start, route, method, status_class, environment",
            ),
            WindowKey::Project => (
                format!("project_windows{suffix}"),
                "project_id, window_start, status_class, environment",
            ),
        }
    }
}

/// One slot of one tier to merge a latency histogram into.
#[derive(Debug, Clone, Copy)]
struct Slot<'a> {
    project_id: i64,
    environment: &'a str,
    status_class: sightline_protocol::StatusClass,
    tier: crate::insight::Tier,
    start: i64,
    secs: i64,
}

/// Merges `latency` into `key`'s row of `slot`: totals added in SQL, the histogram by
/// read-modify-write of the row's blob (the writer is the only one writing, inside its
/// transaction). Sums saturate at the largest integer (SQLite turns an overflowing `+`
/// into a float, which `MIN` maps back).
async fn merge_window(
    conn: &mut SqliteConnection,
    key: WindowKey<'_>,
    slot: Slot<'_>,
    latency: &sightline_protocol::Histogram,
) -> Result<(), sqlx::Error> {
    let (table, conflict) = key.table(slot.tier);
    let route = match key {
        WindowKey::Route { route, method } => Some((route, method)),
        WindowKey::Project => None,
    };
    let (route_is, route_columns, route_values) = if route.is_some() {
        (
            " AND route = ?5 AND method = ?6",
            ", route, method",
            ", ?11, ?12",
        )
    } else {
        ("", "", "")
    };
    let select_sql = format!(
        "SELECT hist FROM {table}
         WHERE project_id = ?1 AND window_start = ?2 AND status_class = ?3
           AND environment = ?4{route_is}"
    );
    let mut select = sqlx::query_scalar(&select_sql)
        .bind(slot.project_id)
        .bind(slot.start)
        .bind(slot.status_class)
        .bind(slot.environment);
    if let Some((route, method)) = route {
        select = select.bind(route).bind(method);
    }
    let stored: Option<Vec<u8>> = select.fetch_optional(&mut *conn).await?;
    let hist =
        merge_encoded(stored.as_deref().unwrap_or_default(), &latency.buckets).map_err(corrupt)?;
    let insert_sql = format!(
        "INSERT INTO {table} (project_id, window_start, status_class, environment, window_secs,
             count, sum_us, min_us, max_us, hist{route_columns})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10{route_values})
         ON CONFLICT ({conflict}) DO UPDATE SET
             window_secs = MAX(window_secs, excluded.window_secs),
             count = MIN(count + excluded.count, 9223372036854775807),
             sum_us = MIN(sum_us + excluded.sum_us, 9223372036854775807),
             min_us = MIN(min_us, excluded.min_us),
             max_us = MAX(max_us, excluded.max_us),
             hist = excluded.hist"
    );
    let mut insert = sqlx::query(&insert_sql)
        .bind(slot.project_id)
        .bind(slot.start)
        .bind(slot.status_class)
        .bind(slot.environment)
        .bind(slot.secs)
        .bind(to_i64(latency.count))
        .bind(to_i64(latency.sum))
        .bind(to_i64(latency.min))
        .bind(to_i64(latency.max))
        .bind(hist);
    if let Some((route, method)) = route {
        insert = insert.bind(route).bind(method);
    }
    insert.execute(&mut *conn).await?;
    Ok(())
}

/// Merges a batch's route windows into the route tables of every tier (`route_windows`,
/// `_1m`, `_1h`, `_1d`), and their sum per slot and status class into the per-project
/// rollup of every tier (one merge per slot, however many routes it holds).
async fn merge_windows(
    conn: &mut SqliteConnection,
    project_id: i64,
    environment: &str,
    windows: &[RouteWindow],
) -> Result<(), sqlx::Error> {
    type ProjectSlot = (i64, i64, sightline_protocol::StatusClass);
    let mut project: BTreeMap<ProjectSlot, (Slot<'_>, sightline_protocol::Histogram)> =
        BTreeMap::new();
    // An empty window adds nothing to any sum, and would drag `min_us` to 0.
    for window in windows.iter().filter(|w| !w.latency.is_empty()) {
        for tier in crate::insight::Tier::ALL {
            let (start, secs) = insight::slot(tier, window.start, window.window_secs);
            let slot = Slot {
                project_id,
                environment,
                status_class: window.status_class,
                tier,
                start,
                secs,
            };
            let key = WindowKey::Route {
                route: &window.route,
                method: &window.method,
            };
            merge_window(conn, key, slot, &window.latency).await?;
            let (kept, sum) = project
                .entry((tier.id(), start, window.status_class))
                .or_insert_with(|| (slot, sightline_protocol::Histogram::new()));
            kept.secs = kept.secs.max(secs);
            sum.merge(&window.latency);
        }
    }
    for (slot, latency) in project.into_values() {
        merge_window(conn, WindowKey::Project, slot, &latency).await?;
    }
    Ok(())
}

/// `table` (`route_windows`, or `project_windows`: the per-project rollup every read of
/// all routes takes) of `tier`, for `project_id = ?1` and the environment at
/// `?{environment}`.
fn windows_table(table: &str, tier: crate::insight::Tier, environment: u8) -> String {
    format!(
        "{table}{} WHERE project_id = ?1 AND {}",
        tier.route_suffix(),
        environment_is(environment)
    )
}

/// The condition that keeps one environment's rows when parameter `?{param}` names one,
/// and every row when it is NULL.
pub(super) fn environment_is(param: u8) -> String {
    format!("(?{param} IS NULL OR environment = ?{param})")
}

/// What an agent's windows are stored under: its environment, or '' without one.
pub(super) fn stored_environment(agent: &sightline_protocol::AgentInfo) -> &str {
    agent.environment.as_deref().unwrap_or("")
}

/// SQL aggregate that concatenates the histogram blobs in `column` of a group into one
/// blob (each blob says where it ends). A read then returns one row per key rather than
/// one per window: sqlx costs microseconds a row (the 30-day history benchmark in
/// BENCHMARKS.md). `group_concat` keeps a blob's bytes as they are; the cast makes the
/// result a blob again.
pub(super) fn concatenated(column: &str) -> String {
    format!("CAST(group_concat({column}, '') AS BLOB)")
}

/// Adds every blob of a [`concatenated`] column (NULL: none) into `sum`.
pub(super) fn add_concatenated(
    sum: &mut EncodedSum,
    blobs: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    sum.add_concatenated(blobs.unwrap_or_default())
        .map_err(corrupt)
}

/// Merged histograms per key, flattened to `(key, bucket, count)` in key and bucket order.
fn flatten<K: Clone>(sums: BTreeMap<K, EncodedSum>) -> Vec<(K, i32, u64)> {
    sums.iter()
        .flat_map(|(key, sum)| sum.pairs().map(|(bucket, n)| (key.clone(), bucket, n)))
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    fn switches(&self) -> Option<&dyn crate::switches::SwitchStore> {
        Some(self)
    }

    fn insight(&self) -> Option<&dyn crate::insight::InsightStore> {
        Some(self)
    }

    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db)
    }

    async fn projects(&self) -> Result<Vec<Project>, Error> {
        sqlx::query("SELECT id, name, public_key FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(project)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        sqlx::query("SELECT id, name, public_key FROM projects WHERE id = ?1")
            .bind(to_i64(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(project)
            .transpose()
            .map_err(db)
    }

    async fn ensure_default_project(&self) -> Result<(), Error> {
        // One statement, so two processes starting on an empty file create one project.
        let created = sqlx::query(
            "INSERT INTO projects (name, public_key, created_at)
             SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM projects)",
        )
        .bind("default")
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(unix_now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if created.rows_affected() > 0 {
            tracing::info!("created the default project");
        }
        Ok(())
    }

    async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error> {
        self.write_batches(batches, false).await
    }

    async fn write_with_backlog(
        &self,
        batches: &[Ingest],
        backlog: bool,
    ) -> Result<WriteSummary, Error> {
        self.write_batches(batches, backlog).await
    }

    async fn settle(&self) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        if writer.deferred.counts.is_empty() {
            return Ok(());
        }
        let (mut tx, deferred) = writer.begin().await?;
        let counts = &deferred.counts;
        tx.on_this_thread(|conn| sqlite_issues::write_tags(conn, counts))
            .await?;
        tx.commit().await?;
        *deferred = DeferredTags::default();
        self.tags_held.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        let tier = self.tier_for(range);
        let range = TimeRange {
            since: crate::insight::aligned_since(tier, range.since),
            ..range
        };
        let (first, end) = crate::insight::day_split(tier, range);
        // One statement: totals and histograms from the same snapshot.
        let rows = sqlx::query(&format!(
            "SELECT route, method, status_class, SUM(count), TOTAL(sum_us), MIN(min_us),
                    MAX(max_us), {hist}
             FROM {rows}
             GROUP BY route, method, status_class",
            hist = concatenated("hist"),
            rows = split_rows(
                "route, method, status_class, count, sum_us, min_us, max_us, hist",
                "window_start",
                (tier, (first, end)),
                |tier| windows_table("route_windows", tier, 6),
                [2, 3, 4, 5],
            ),
        ))
        .bind(to_i64(project_id))
        .bind(range.since)
        .bind(range.until)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut classes = Vec::with_capacity(rows.len());
        let mut sums: BTreeMap<(String, String), EncodedSum> = BTreeMap::new();
        for row in &rows {
            let key: (String, String) = (row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?);
            add_concatenated(
                sums.entry(key.clone()).or_default(),
                row.try_get(7).map_err(db)?,
            )
            .map_err(db)?;
            classes.push(class_totals(row, key, 2).map_err(db)?);
        }
        Ok(Aggregates {
            classes,
            buckets: flatten(sums),
        })
    }

    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        // ?4 is the first step's start (≤ every window_start in range), ?5 the step length:
        // integer division assigns each window to the step its start falls in.
        // ?6/?7: one route × method from the route tables; without them, every route
        // from the per-project rollup.
        // ?8/?9: the whole days read from the day tier, when every day lies in one step.
        // ?10: one environment, or every one when NULL.
        let tier = self.tier_for_series(range, steps.step_secs);
        let (first, end) = if steps.step_secs % 86_400 == 0 {
            crate::insight::day_split(tier, range)
        } else {
            (range.until, range.until)
        };
        let (route, method) = route.unzip();
        let rows = sqlx::query(&format!(
            "SELECT ?4 + ((window_start - ?4) / ?5) * ?5 AS step, status_class, SUM(count),
                    TOTAL(sum_us), MIN(min_us), MAX(max_us), {hist}
             FROM {rows}
             GROUP BY step, status_class",
            hist = concatenated("hist"),
            rows = split_rows(
                "window_start, status_class, count, sum_us, min_us, max_us, hist",
                "window_start",
                (tier, (first, end)),
                // all routes: the per-project rollup (a row per status class, not per
                // route and status class)
                |tier| match route {
                    Some(_) => format!(
                        "{} AND route = ?6 AND method = ?7",
                        windows_table("route_windows", tier, 10)
                    ),
                    None => windows_table("project_windows", tier, 10),
                },
                [2, 3, 8, 9],
            ),
        ))
        .bind(to_i64(project_id))
        .bind(range.since)
        .bind(range.until)
        .bind(steps.origin)
        .bind(steps.step_secs)
        .bind(route)
        .bind(method)
        .bind(first)
        .bind(end)
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut classes = Vec::with_capacity(rows.len());
        let mut sums: BTreeMap<i64, EncodedSum> = BTreeMap::new();
        for row in &rows {
            let step: i64 = row.try_get(0).map_err(db)?;
            add_concatenated(sums.entry(step).or_default(), row.try_get(6).map_err(db)?)
                .map_err(db)?;
            classes.push(class_totals(row, step, 1).map_err(db)?);
        }
        Ok(Aggregates {
            classes,
            buckets: flatten(sums),
        })
    }

    async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error> {
        if filter.environment.is_some() || filter.release.is_some() {
            self.settled_tags().await;
        }
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::issues(&mut conn, project_id, filter)
            .await
            .map_err(db)
    }

    async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::issue_by_id(&mut conn, issue_id)
            .await
            .map_err(db)
    }

    async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        self.settled_tags().await;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::issue_tags(&mut conn, issue_id, top)
            .await
            .map_err(db)
    }

    async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::issue_events(&mut conn, issue_id, limit, cursor, full)
            .await
            .map_err(db)
    }

    async fn event(&self, project_id: u64, event_id: &str) -> Result<Option<StoredEvent>, Error> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::event_by_id(&mut conn, project_id, event_id)
            .await
            .map_err(db)
    }

    async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error> {
        // IMMEDIATE, as for ingest: this transaction writes.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let updated = sqlite_issues::set_issue_status(&mut tx, project_id, ids, status, now)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(updated)
    }

    async fn item_counts(&self, project_id: u64, since_day: &str) -> Result<Vec<ItemCount>, Error> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sqlite_issues::item_counts(&mut conn, project_id, since_day)
            .await
            .map_err(db)
    }

    async fn close(&self) {
        if let Some(conn) = self.writer.lock().await.conn.take() {
            conn.close().await;
        }
        self.pool.close().await;
    }

    async fn environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        self.settled_tags().await;
        // Event environments are the `environment` tags of the project's issues: a
        // skip-scan of the (key, value) index visits each distinct value once (the first
        // thousand: a bound whatever events name), and a value counts when one issue of
        // this project has it.
        sqlx::query_scalar(
            "WITH RECURSIVE tagged (value) AS (
                 SELECT MIN(value) FROM issue_tags WHERE key = 'environment'
                 UNION ALL
                 SELECT (SELECT MIN(value) FROM issue_tags
                         WHERE key = 'environment' AND value > tagged.value)
                 FROM tagged WHERE tagged.value IS NOT NULL
                 LIMIT 1000
             )
             SELECT environment FROM agents
             WHERE project_id = ?1 AND environment IS NOT NULL AND environment <> ''
             UNION
             SELECT value FROM tagged
             WHERE value IS NOT NULL AND value <> '' AND EXISTS (
                 SELECT 1 FROM issue_tags t JOIN issues i ON i.id = t.issue_id
                 WHERE t.key = 'environment' AND t.value = tagged.value
                   AND i.project_id = ?1)
             ORDER BY 1
             LIMIT ?2",
        )
        .bind(to_i64(project_id))
        .bind(super::MAX_ENVIRONMENTS)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn logs(
        &self,
        project_id: u64,
        filter: &super::LogFilter,
    ) -> Result<Vec<super::LogLine>, Error> {
        self.search_logs(project_id, filter).await
    }

    async fn prune_logs(&self, max_lines: u64, received_before_ms: i64) -> Result<u64, Error> {
        self.prune_log_lines(max_lines, received_before_ms).await
    }
}

#[cfg(test)]
mod tests {
    use sightline_protocol::{AgentInfo, Histogram, MetricBatch, bucket_index};
    use tempfile::TempDir;

    use super::*;

    async fn store(dir: &TempDir) -> SqliteStore {
        let store = SqliteStore::open(&dir.path().join("test.db"))
            .await
            .unwrap();
        store.ensure_default_project().await.unwrap();
        store
    }

    fn ingest(project_id: u64, count: u64, sum: u64) -> Ingest {
        let mut latency = Histogram::new();
        latency.record_n(1_000, count);
        latency.sum = sum;
        Ingest::Metrics(MetricsIngest {
            project_id,
            received_at: 1_700_000_100,
            batch: MetricBatch {
                agent: AgentInfo {
                    service: "svc".into(),
                    instance: "i-1".into(),
                    sdk: "test".into(),
                    environment: None,
                    release: None,
                },
                sent_at_ms: 0,
                dropped_windows: 0,
                switch_evaluations: Default::default(),
                insight: Default::default(),
                windows: vec![RouteWindow {
                    start: 1_700_000_000,
                    window_secs: 10,
                    route: "/r".into(),
                    method: "GET".into(),
                    status_class: 2,
                    latency,
                }],
            },
        })
    }

    const RANGE: TimeRange = TimeRange {
        since: 1_700_000_000,
        until: 1_700_000_010,
    };

    #[tokio::test]
    async fn pragmas_hold_on_pooled_connections() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        let mut conn = store.pool.acquire().await.unwrap();
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("synchronous", "2"), // FULL
            ("foreign_keys", "1"),
            ("busy_timeout", "5000"),
            ("cache_size", "-32768"),
            ("temp_store", "2"), // MEMORY
            ("page_size", "8192"),
            ("wal_autocheckpoint", "4096"),
            ("journal_size_limit", "67108864"),
        ] {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            let value: String = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }

    #[tokio::test]
    async fn a_group_commit_is_all_or_nothing() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        // The second batch names a project that does not exist: the foreign key fails,
        // and the first batch must not be stored either.
        let result = store
            .write(&[ingest(1, 5, 5_000), ingest(42, 1, 1_000)])
            .await;
        assert!(matches!(result, Err(Error::Store(_))), "{result:?}");
        let aggregates = store.route_aggregates(1, RANGE, None).await.unwrap();
        assert!(aggregates.classes.is_empty() && aggregates.buckets.is_empty());

        let summary = store.write(&[ingest(1, 5, 5_000)]).await.unwrap();
        assert_eq!(summary.windows, 1);
        assert_eq!(
            store
                .route_aggregates(1, RANGE, None)
                .await
                .unwrap()
                .classes[0]
                .count,
            5
        );
    }

    #[tokio::test]
    async fn huge_counts_saturate_instead_of_failing() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        let huge = ingest(1, u64::MAX / 2, u64::MAX);
        store.write(std::slice::from_ref(&huge)).await.unwrap();
        // Merging again would overflow a 64-bit integer.
        store.write(&[huge]).await.unwrap();
        let aggregates = store.route_aggregates(1, RANGE, None).await.unwrap();
        assert_eq!(aggregates.classes[0].count, i64::MAX as u64);
        // Bucket counts live in a blob of unsigned counts: they add up past i64::MAX.
        assert_eq!(aggregates.buckets[0].2, (u64::MAX / 2) * 2);
        assert!(aggregates.classes[0].sum_us >= i64::MAX as f64);
    }

    #[tokio::test]
    async fn the_default_project_is_created_once() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        store.ensure_default_project().await.unwrap();
        let projects = store.projects().await.unwrap();
        assert_eq!(projects.len(), 1);
        assert_eq!(
            store.project(projects[0].id).await.unwrap().as_ref(),
            Some(&projects[0])
        );
        assert_eq!(store.project(u64::MAX).await.unwrap(), None);
        drop(store);
        // Reopening applies no migration twice and keeps the project.
        let reopened = SqliteStore::open(&dir.path().join("test.db"))
            .await
            .unwrap();
        reopened.ensure_default_project().await.unwrap();
        assert_eq!(reopened.projects().await.unwrap(), projects);
    }

    fn histogram(values: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record(v);
        }
        h
    }

    /// One instance's batch: a route window with `latency`, and the same values as the
    /// route's bytes-per-request and as one statement's latency.
    fn instance_window(instance: &str, start: i64, latency: &[u64]) -> Ingest {
        let h = histogram(latency);
        let Ingest::Metrics(mut metrics) = ingest(1, 1, 1) else {
            unreachable!("ingest() builds metrics")
        };
        metrics.batch.agent.instance = instance.into();
        metrics.batch.windows[0].start = start;
        metrics.batch.windows[0].latency = h.clone();
        metrics
            .batch
            .insight
            .routes
            .push(sightline_protocol::RouteInsight {
                start,
                window_secs: 10,
                route: "/r".into(),
                method: "GET".into(),
                queries: histogram(&vec![1; latency.len()]),
                query_us: h.clone(),
                allocs: Histogram::new(),
                alloc_bytes: h.clone(),
                n_plus_one: 0,
            });
        metrics
            .batch
            .insight
            .queries
            .push(sightline_protocol::QueryWindow {
                start,
                window_secs: 10,
                fingerprint: 7,
                sql: "SELECT ?".into(),
                latency: h,
                routes: vec![("/r".into(), "GET".into(), latency.len() as u64)],
            });
        Ingest::Metrics(metrics)
    }

    async fn stored_hist(store: &SqliteStore, table: &str, start: i64) -> Histogram {
        let blob: Vec<u8> = sqlx::query_scalar(&format!(
            "SELECT hist FROM {table} WHERE project_id = 1 AND window_start = ?1"
        ))
        .bind(start)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        Histogram {
            buckets: sightline_protocol::decode_buckets(&blob).unwrap(),
            ..Histogram::new()
        }
    }

    #[tokio::test]
    async fn histograms_merge_across_instances_and_tiers() {
        use crate::insight::{InsightStore, Tier};
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        // Hour- and minute-aligned; two instances report the same 10 s window, and one
        // more window falls in the same minute.
        const T: i64 = 1_699_999_200;
        let (a, b, c) = ([900, 1_000, 1_000], [1_000, 5_000, 0], [20_000, 21_000, 1]);
        // Separate group commits and one together: the same merge either way.
        store.write(&[instance_window("i-1", T, &a)]).await.unwrap();
        store
            .write(&[
                instance_window("i-2", T, &b),
                instance_window("i-1", T + 20, &c),
            ])
            .await
            .unwrap();
        let same_window = histogram(&[&a[..], &b[..]].concat()).buckets;
        let same_minute = histogram(&[&a[..], &b[..], &c[..]].concat()).buckets;

        assert_eq!(
            stored_hist(&store, "route_windows", T).await.buckets,
            same_window
        );
        assert_eq!(
            stored_hist(&store, "route_windows", T + 20).await.buckets,
            histogram(&c).buckets
        );
        for table in ["route_windows_1m", "route_windows_1h"] {
            assert_eq!(
                stored_hist(&store, table, T).await.buckets,
                same_minute,
                "{table}"
            );
        }
        for table in ["route_windows_1d"] {
            assert_eq!(
                stored_hist(&store, table, T.div_euclid(86_400) * 86_400)
                    .await
                    .buckets,
                same_minute,
                "{table}"
            );
        }

        // Reads over ranges of 30 s, 1 h and 1 day pick the raw, minute and hour tiers
        // (the data is older than every retention, so the span decides); each merges to
        // the same histogram.
        for span in [30, 3_600, 86_400] {
            let range = TimeRange {
                since: T,
                until: T + span,
            };
            let aggregates = store.route_aggregates(1, range, None).await.unwrap();
            let buckets: BTreeMap<i32, u64> =
                aggregates.buckets.iter().map(|&(_, i, n)| (i, n)).collect();
            assert_eq!(buckets, same_minute, "span {span}");
            assert_eq!(aggregates.classes[0].count, 9);
            let series = store
                .series_aggregates(
                    1,
                    range,
                    Steps {
                        origin: T,
                        step_secs: span,
                    },
                    Some(("/r", "GET")),
                    None,
                )
                .await
                .unwrap();
            assert!(series.buckets.iter().all(|&(step, _, _)| step == T));
            let buckets: BTreeMap<i32, u64> =
                series.buckets.iter().map(|&(_, i, n)| (i, n)).collect();
            assert_eq!(buckets, same_minute, "series over {span}");
            // all routes, from the per-project rollup: the same windows, the same sums
            let all = store
                .series_aggregates(
                    1,
                    range,
                    Steps {
                        origin: T,
                        step_secs: span,
                    },
                    None,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(all.buckets, series.buckets, "all routes over {span}");
            assert_eq!(
                format!("{:?}", all.classes),
                format!("{:?}", series.classes),
                "all routes over {span}"
            );
        }
        // The all-routes series reads the rollup alone: the route rows gone, it stays.
        let range = TimeRange {
            since: T,
            until: T + 3_600,
        };
        let steps = Steps {
            origin: T,
            step_secs: 60,
        };
        let before = store
            .series_aggregates(1, range, steps, None, None)
            .await
            .unwrap();
        for tier in Tier::ALL {
            sqlx::query(&format!("DELETE FROM route_windows{}", tier.route_suffix()))
                .execute(&store.pool)
                .await
                .unwrap();
        }
        let after = store
            .series_aggregates(1, range, steps, None, None)
            .await
            .unwrap();
        assert_eq!(after.buckets, before.buckets);
        assert_eq!(after.classes.iter().map(|c| c.count).sum::<u64>(), 9);

        for tier in Tier::ALL {
            // As the API reads a tier: from the start of the slot holding `since`.
            let range = TimeRange {
                since: crate::insight::aligned_since(tier, T),
                until: T + 3_600,
            };
            let routes = store.route_totals(1, tier, range, None).await.unwrap();
            assert_eq!(routes.len(), 1);
            let bytes: BTreeMap<i32, u64> = routes[0].buckets[&3].iter().copied().collect();
            assert_eq!(bytes, same_minute, "{tier:?} bytes per request");
            let queries: BTreeMap<i32, u64> = routes[0].buckets[&0].iter().copied().collect();
            assert_eq!(queries, BTreeMap::from([(0, 9)]), "{tier:?} queries");
            assert!(
                !routes[0].buckets.contains_key(&2),
                "no allocations recorded"
            );
            let statements = store.query_totals(1, tier, range, None).await.unwrap();
            let latency: BTreeMap<i32, u64> = statements[0].buckets.iter().copied().collect();
            assert_eq!(latency, same_minute, "{tier:?} statement latency");
            assert_eq!(statements[0].count, 9);
        }
    }

    #[tokio::test]
    async fn every_read_keeps_to_one_environment_when_asked() {
        use crate::insight::{InsightStore, Tier};
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        const T: i64 = 1_699_999_200;
        // Two instances in two environments and one that names none, each with a window,
        // its insight, an N+1 row, a heap sample and an exemplar.
        let batch = |instance: &str, environment: Option<&str>, latency: &[u64]| {
            let Ingest::Metrics(mut metrics) = instance_window(instance, T, latency) else {
                unreachable!("instance_window builds metrics")
            };
            metrics.batch.agent.environment = environment.map(str::to_owned);
            let insight = &mut metrics.batch.insight;
            insight.n_plus_one.push(sightline_protocol::NPlusOne {
                start: T,
                window_secs: 10,
                route: "/r".into(),
                method: "GET".into(),
                fingerprint: 7,
                requests: latency.len() as u64,
                total_repeats: 5 * latency.len() as u64,
                max_repeats: 5,
            });
            insight.heap.push(sightline_protocol::HeapSample {
                ts_ms: T * 1000,
                live_bytes: 1_000,
                peak_bytes: 2_000,
            });
            insight.exemplars.push(sightline_protocol::Exemplar {
                route: "/r".into(),
                method: "GET".into(),
                status: 200,
                start_ms: T * 1000,
                duration_us: latency[0],
                reasons: 1,
                queries: 0,
                query_us: 0,
                allocs: 0,
                alloc_bytes: 0,
                dropped_entries: 0,
                entries: Vec::new(),
            });
            Ingest::Metrics(metrics)
        };
        store
            .write(&[
                batch("web-1", Some("production"), &[1_000, 2_000, 3_000]),
                batch("web-2", Some("staging"), &[9_000]),
                batch("old-1", None, &[5_000, 5_000]),
            ])
            .await
            .unwrap();

        for (environment, requests, instances) in [
            (Some("production"), 3, vec!["web-1"]),
            (Some("staging"), 1, vec!["web-2"]),
            (Some("qa"), 0, vec![]),
            (None, 6, vec!["old-1", "web-1", "web-2"]),
        ] {
            let what = format!("{environment:?}");
            for span in [30, 3_600, 86_400, 3 * 86_400] {
                let range = TimeRange {
                    since: T,
                    until: T + span,
                };
                let routes = store.route_aggregates(1, range, environment).await.unwrap();
                let counted: u64 = routes.classes.iter().map(|c| c.count).sum();
                assert_eq!(counted, requests, "{what} over {span}");
                let steps = Steps {
                    origin: T,
                    step_secs: span,
                };
                let series = store
                    .series_aggregates(1, range, steps, None, environment)
                    .await
                    .unwrap();
                let counted: u64 = series.classes.iter().map(|c| c.count).sum();
                assert_eq!(counted, requests, "series, {what} over {span}");
            }
            for tier in Tier::ALL {
                let range = TimeRange {
                    since: crate::insight::aligned_since(tier, T),
                    until: T + 3 * 86_400,
                };
                let queries = store
                    .query_totals(1, tier, range, environment)
                    .await
                    .unwrap();
                let executed: u64 = queries.iter().map(|q| q.count).sum();
                assert_eq!(executed, requests, "{what} in {tier:?}");
                let calls: u64 = queries
                    .iter()
                    .flat_map(|q| q.routes.iter().map(|r| r.2))
                    .sum();
                assert_eq!(calls, requests, "{what} in {tier:?}");
                let routes = store
                    .route_totals(1, tier, range, environment)
                    .await
                    .unwrap();
                assert_eq!(
                    routes.iter().map(|r| r.requests).sum::<u64>(),
                    requests,
                    "{what} in {tier:?}"
                );
                let suspects = store.n_plus_one(1, tier, range, environment).await.unwrap();
                assert_eq!(
                    suspects.iter().map(|s| s.requests).sum::<u64>(),
                    requests,
                    "{what} in {tier:?}"
                );
                assert!(
                    suspects.iter().all(|s| s.route_requests == requests),
                    "{what} in {tier:?}: {suspects:?}"
                );
                let heap = store
                    .heap(1, tier, range, 86_400, environment)
                    .await
                    .unwrap();
                let names: Vec<&str> = heap.iter().map(|h| h.instance.as_str()).collect();
                assert_eq!(names, instances, "{what} in {tier:?}");
            }
            let exemplars = store
                .exemplars(
                    1,
                    TimeRange {
                        since: T,
                        until: T + 60,
                    },
                    None,
                    None,
                    10,
                    environment,
                )
                .await
                .unwrap();
            let mut names: Vec<&str> = exemplars.iter().map(|e| e.instance.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, instances, "{what}");
        }
        assert_eq!(
            store.environments(1).await.unwrap(),
            ["production", "staging"]
        );
    }

    /// Windows every 5 hours for 32 days from `T0` (a UTC midnight), two routes, with
    /// N+1 rows; returns the store and what each window recorded.
    async fn a_month_of_windows(dir: &TempDir) -> (SqliteStore, Vec<(i64, Vec<u64>)>) {
        let store = store(dir).await;
        let mut windows = Vec::new();
        let mut batch = Vec::new();
        for i in 0..32 * 24 / 5 {
            let start = T0 + i * 5 * 3_600 + 10 * (i % 7);
            let latency: Vec<u64> = (0..1 + i % 4)
                .map(|k| 900 + 37 * ((i * 13 + k) as u64 % 50))
                .collect();
            let mut ingest = instance_window("i-1", start, &latency);
            let Ingest::Metrics(metrics) = &mut ingest else {
                unreachable!("instance_window() builds metrics")
            };
            metrics.batch.windows[0].route = if i % 3 == 0 { "/a" } else { "/r" }.into();
            metrics
                .batch
                .insight
                .n_plus_one
                .push(sightline_protocol::NPlusOne {
                    start,
                    window_secs: 10,
                    route: "/r".into(),
                    method: "GET".into(),
                    fingerprint: 7,
                    requests: 1,
                    total_repeats: 5 + i as u64 % 3,
                    max_repeats: 5 + i as u64 % 3,
                });
            batch.push(ingest);
            windows.push((start, latency));
        }
        store.write(&batch).await.unwrap();
        (store, windows)
    }

    /// A UTC midnight (2023-11-14).
    const T0: i64 = 1_699_920_000;

    #[tokio::test]
    async fn a_month_read_from_whole_days_equals_the_hour_tier() {
        use crate::insight::{InsightStore, Tier, aligned_since, day_split};
        let dir = TempDir::new().unwrap();
        let (store, windows) = a_month_of_windows(&dir).await;
        // 30 days starting and ending mid-day: 29 whole days, hours at both edges.
        let range = TimeRange {
            since: T0 + 86_400 + 7 * 3_600 + 1_234,
            until: T0 + 31 * 86_400 + 2 * 3_600 + 5,
        };
        assert_eq!(
            store.tier_for(range),
            Tier::Hour,
            "the data is older than every retention"
        );
        let hours = TimeRange {
            since: aligned_since(Tier::Hour, range.since),
            ..range
        };
        let (first, end) = day_split(Tier::Hour, hours);
        assert_eq!((first, end), (T0 + 2 * 86_400, T0 + 31 * 86_400));
        let inside: Vec<u64> = windows
            .iter()
            .filter(|(start, _)| (hours.since..hours.until).contains(start))
            .flat_map(|(_, latency)| latency.iter().copied())
            .collect();
        let expected = histogram(&inside);
        let n = inside.len() as u64;

        // Reads again after the hour rows of the whole days are gone: the days come from
        // the day tier alone, the edges from the hour tier alone.
        for pass in ["both tiers", "no hour rows inside whole days"] {
            let aggregates = store.route_aggregates(1, range, None).await.unwrap();
            let buckets: BTreeMap<i32, u64> =
                aggregates
                    .buckets
                    .iter()
                    .fold(BTreeMap::new(), |mut m, &(_, i, n)| {
                        *m.entry(i).or_insert(0) += n;
                        m
                    });
            assert_eq!(buckets, expected.buckets, "{pass}");
            assert_eq!(
                aggregates.classes.iter().map(|c| c.count).sum::<u64>(),
                n,
                "{pass}"
            );
            let statements = store
                .query_totals(1, Tier::Hour, hours, None)
                .await
                .unwrap();
            assert_eq!(statements[0].count, n, "{pass}");
            assert_eq!(
                statements[0].buckets,
                expected.buckets.clone().into_iter().collect::<Vec<_>>(),
                "{pass}"
            );
            assert_eq!(
                statements[0].routes,
                [("/r".into(), "GET".into(), n)],
                "{pass}"
            );
            let p95 = |buckets: &[(i32, u64)], min, max| {
                crate::insight::quantile(buckets, 0.95, min, max)
            };
            let all: Vec<(i32, u64)> = expected.buckets.clone().into_iter().collect();
            assert_eq!(
                p95(
                    &statements[0].buckets,
                    statements[0].min_us,
                    statements[0].max_us
                ),
                p95(&all, expected.min, expected.max),
                "{pass}"
            );
            let routes = store
                .route_totals(1, Tier::Hour, hours, None)
                .await
                .unwrap();
            assert_eq!(routes.iter().map(|r| r.requests).sum::<u64>(), n, "{pass}");
            let bytes = routes
                .iter()
                .fold(BTreeMap::new(), |mut m: BTreeMap<i32, u64>, r| {
                    for &(i, n) in &r.buckets[&3] {
                        *m.entry(i).or_insert(0) += n;
                    }
                    m
                });
            assert_eq!(bytes, expected.buckets, "{pass}");
            let suspects = store.n_plus_one(1, Tier::Hour, hours, None).await.unwrap();
            let flagged = windows
                .iter()
                .filter(|(s, _)| (hours.since..hours.until).contains(s))
                .count() as u64;
            assert_eq!(suspects[0].requests, flagged, "{pass}");
            assert_eq!(suspects[0].route_requests, n, "{pass}");

            for (table, tier) in [
                ("route_windows_1h", ""),
                ("insight_routes", "AND tier = 2"),
                ("query_windows", "AND tier = 2"),
                ("query_routes", "AND tier = 2"),
                ("n_plus_one", "AND tier = 2"),
            ] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE window_start >= ?1 AND window_start < ?2 {tier}"
                ))
                .bind(first)
                .bind(end)
                .execute(&store.pool)
                .await
                .unwrap();
            }
        }
    }

    /// What the dashboard reads over 20 days of [`a_month_of_windows`].
    async fn month_reads(
        store: &SqliteStore,
    ) -> (
        Aggregates<(String, String)>,
        Vec<crate::insight::QueryTotals>,
        Vec<crate::insight::RouteTotals>,
        Vec<crate::insight::NPlusOneRow>,
    ) {
        use crate::insight::{InsightStore, Tier};
        let range = TimeRange {
            since: T0 + 3_600,
            until: T0 + 20 * 86_400 + 3_600,
        };
        (
            store.route_aggregates(1, range, None).await.unwrap(),
            store
                .query_totals(1, Tier::Hour, range, None)
                .await
                .unwrap(),
            store
                .route_totals(1, Tier::Hour, range, None)
                .await
                .unwrap(),
            store.n_plus_one(1, Tier::Hour, range, None).await.unwrap(),
        )
    }

    /// The all-routes series over 20 days of the month, in 1-hour and 1-day steps.
    async fn month_series(store: &SqliteStore) -> Vec<Aggregates<i64>> {
        let range = TimeRange {
            since: T0 + 86_400,
            until: T0 + 21 * 86_400,
        };
        let mut out = Vec::new();
        for step_secs in [3_600, 86_400] {
            let steps = Steps {
                origin: range.since,
                step_secs,
            };
            let series = store
                .series_aggregates(1, range, steps, None, None)
                .await
                .unwrap();
            assert!(!series.classes.is_empty());
            out.push(series);
        }
        out
    }

    #[tokio::test]
    async fn version_8_builds_the_day_tier_from_the_hours() {
        // The same month written by today's writer (with a day tier) and, hour rows only,
        // into a store at version 7 that is then migrated.
        let (dir, old_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (current, _) = a_month_of_windows(&dir).await;
        let expected = month_reads(&current).await;
        let expected_series = month_series(&current).await;
        current.close().await;
        drop(current);
        let old_path = old_dir.path().join("test.db");
        let v7 = SqliteStore::open_with(&old_path, &migrate::SQLITE[..7])
            .await
            .unwrap();
        v7.ensure_default_project().await.unwrap();
        let mut conn = v7.pool.acquire().await.unwrap();
        sqlx::query("ATTACH DATABASE ?1 AS current")
            .bind(dir.path().join("test.db").to_string_lossy().into_owned())
            .execute(&mut *conn)
            .await
            .unwrap();
        // Version 7's columns, named: later versions may add some.
        for (table, columns, hour) in [
            (
                "route_windows_1h",
                "project_id, route, method, status_class, window_start, window_secs, count,
                 sum_us, min_us, max_us, hist",
                "",
            ),
            (
                "insight_routes",
                "project_id, tier, window_start, route, method, window_secs, requests, queries,
                 query_us, alloc_requests, allocs, alloc_bytes, n_plus_one, queries_hist,
                 query_us_hist, allocs_hist, alloc_bytes_hist",
                "WHERE tier = 2",
            ),
            (
                "query_windows",
                "project_id, tier, window_start, fingerprint, window_secs, count, sum_us,
                 min_us, max_us, hist",
                "WHERE tier = 2",
            ),
            (
                "query_routes",
                "project_id, tier, window_start, fingerprint, route, method, count",
                "WHERE tier = 2",
            ),
            (
                "n_plus_one",
                "project_id, tier, window_start, route, method, fingerprint, requests,
                 total_repeats, max_repeats",
                "WHERE tier = 2",
            ),
            (
                "query_fingerprints",
                "project_id, fingerprint, sql, first_seen, last_seen",
                "",
            ),
        ] {
            sqlx::query(&format!(
                "INSERT INTO main.{table} ({columns})
                 SELECT {columns} FROM current.{table} {hour}"
            ))
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        sqlx::query("DETACH DATABASE current")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        v7.close().await;
        drop(v7);

        let store = SqliteStore::open(&old_path).await.unwrap();
        let migrated = month_reads(&store).await;
        assert_eq!(migrated.0.classes, expected.0.classes);
        assert_eq!(migrated.0.buckets, expected.0.buckets);
        assert_eq!(format!("{:?}", migrated.1), format!("{:?}", expected.1));
        assert_eq!(format!("{:?}", migrated.2), format!("{:?}", expected.2));
        assert_eq!(migrated.3, expected.3);
        // Version 11 builds the per-project rollup the all-routes charts read from the
        // (migrated) hour and day route rows.
        for (migrated, expected) in month_series(&store).await.iter().zip(&expected_series) {
            assert_eq!(migrated.buckets, expected.buckets);
            assert_eq!(
                format!("{:?}", migrated.classes),
                format!("{:?}", expected.classes)
            );
        }
        // Windows from before version 10 kept no environment: all of them, none of any.
        let month = TimeRange {
            since: T0,
            until: T0 + 40 * 86_400,
        };
        let named = store
            .route_aggregates(1, month, Some("production"))
            .await
            .unwrap();
        assert!(named.classes.is_empty() && named.buckets.is_empty());
        // A migrated day holds its hours' blobs side by side; the writer merges into it
        // and leaves one blob.
        let day = T0 + 86_400;
        let day_hist = || {
            sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT query_us_hist FROM insight_routes WHERE tier = 3 AND window_start = ?1",
            )
            .bind(day)
            .fetch_one(&store.pool)
        };
        let before = day_hist().await.unwrap();
        assert!(
            sightline_protocol::decode_buckets(&before).is_err(),
            "several blobs"
        );
        store
            .write(&[instance_window("i-9", day + 60, &[5_000])])
            .await
            .unwrap();
        let after = sightline_protocol::decode_buckets(&day_hist().await.unwrap()).unwrap();
        assert!(after.contains_key(&bucket_index(5_000)));
    }

    #[tokio::test]
    async fn retention_drops_a_tier_with_its_histograms_and_the_report_counts_rows() {
        use crate::insight::{InsightStore, RetentionConfig, Tier};
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        const T: i64 = 1_699_999_200;
        store
            .write(&[
                instance_window("i-1", T, &[1_000, 2_000]),
                instance_window("i-2", T, &[3_000]),
            ])
            .await
            .unwrap();
        let rows = |report: &crate::insight::StorageReport, table: &str, tier: Tier| {
            report
                .tables
                .iter()
                .find(|t| t.table == table && t.tier == Some(tier))
                .map_or(u64::MAX, |t| t.rows)
        };
        let before = store.storage().await.unwrap();
        assert!(!before.tables.iter().any(|t| t.table.contains("bucket")));
        for (table, tier) in [
            ("route_windows", Tier::Raw),
            ("route_windows_1m", Tier::Minute),
            ("route_windows_1h", Tier::Hour),
            ("route_windows_1d", Tier::Day),
            ("project_windows", Tier::Raw),
            ("project_windows_1d", Tier::Day),
            ("insight_routes", Tier::Raw),
            ("query_windows", Tier::Hour),
            ("query_windows", Tier::Day),
        ] {
            assert_eq!(rows(&before, table, tier), 1, "{table}");
        }
        // Two days later the raw tier (kept 24 h) is past retention, the rollups are not.
        let deleted = store
            .prune(&RetentionConfig::default(), T + 2 * 86_400)
            .await
            .unwrap();
        let after = store.storage().await.unwrap();
        assert_eq!(rows(&after, "route_windows", Tier::Raw), 0);
        assert_eq!(rows(&after, "project_windows", Tier::Raw), 0);
        assert_eq!(rows(&after, "project_windows_1h", Tier::Hour), 1);
        assert_eq!(rows(&after, "insight_routes", Tier::Raw), 0);
        assert_eq!(rows(&after, "query_windows", Tier::Raw), 0);
        assert_eq!(rows(&after, "route_windows_1m", Tier::Minute), 1);
        assert_eq!(rows(&after, "route_windows_1h", Tier::Hour), 1);
        assert_eq!(rows(&after, "route_windows_1d", Tier::Day), 1);
        assert!(deleted >= 3, "{deleted}");
        // What is left still reads back merged.
        let aggregates = store
            .route_aggregates(
                1,
                TimeRange {
                    since: T,
                    until: T + 3_600,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(aggregates.classes[0].count, 3);
        assert_eq!(
            aggregates.buckets.iter().map(|&(_, _, n)| n).sum::<u64>(),
            3
        );
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_an_error_not_a_panic() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        store.write(&[ingest(1, 5, 5_000)]).await.unwrap();
        sqlx::query("UPDATE route_windows SET hist = x'01ffff'")
            .execute(&store.pool)
            .await
            .unwrap();
        let read = store.route_aggregates(1, RANGE, None).await;
        assert!(matches!(read, Err(Error::Store(_))), "{read:?}");
        let write = store.write(&[ingest(1, 5, 5_000)]).await;
        assert!(matches!(write, Err(Error::Store(_))), "{write:?}");
    }

    #[tokio::test]
    async fn version_7_turns_bucket_rows_into_blobs() {
        use crate::insight::{InsightStore, Tier};
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("test.db");
        let v6 = SqliteStore::open_with(&path, &migrate::SQLITE[..6])
            .await
            .unwrap();
        v6.ensure_default_project().await.unwrap();
        // Rows as the version-6 writer left them; bucket rows out of key order on purpose,
        // with the zero bucket, an empty bucket and one the scheme never produces.
        sqlx::raw_sql(
            "INSERT INTO route_windows VALUES (1, '/r', 'GET', 2, 1700000000, 10, 4, 3000, 0, 1500);
             INSERT INTO route_windows VALUES (1, '/r', 'GET', 5, 1700000000, 10, 1, 9, 9, 9);
             INSERT INTO route_buckets VALUES (1, '/r', 'GET', 2, 1700000000, 366, 2);
             INSERT INTO route_buckets VALUES (1, '/r', 'GET', 2, 1700000000, -2147483648, 1);
             INSERT INTO route_buckets VALUES (1, '/r', 'GET', 2, 1700000000, 346, 1);
             INSERT INTO route_buckets VALUES (1, '/r', 'GET', 2, 1700000000, 400, 0);
             INSERT INTO route_buckets VALUES (1, '/r', 'GET', 2, 1700000000, 99999, 5);
             INSERT INTO route_windows_1h VALUES (1, '/r', 'GET', 2, 1699999200, 3600, 4, 3000, 0, 1500);
             INSERT INTO route_buckets_1h VALUES (1, '/r', 'GET', 2, 1699999200, 346, 3);
             INSERT INTO insight_routes VALUES (1, 0, 1700000000, '/r', 'GET', 10, 4, 8, 800, 4, 40, 4000, 0);
             INSERT INTO insight_route_buckets VALUES (1, 0, 1700000000, '/r', 'GET', 3, 700, 4);
             INSERT INTO insight_route_buckets VALUES (1, 0, 1700000000, '/r', 'GET', 0, 70, 4);
             INSERT INTO insight_route_buckets VALUES (1, 0, 1700000000, '/r', 'GET', 0, 0, 1);
             INSERT INTO query_windows VALUES (1, 1, 1699999980, 7, 60, 3, 300, 90, 110);
             INSERT INTO query_buckets VALUES (1, 1, 1699999980, 7, 233, 1);
             INSERT INTO query_buckets VALUES (1, 1, 1699999980, 7, 228, 2);",
        )
        .execute(&v6.pool)
        .await
        .unwrap();
        v6.close().await;
        drop(v6);

        let store = SqliteStore::open(&path).await.unwrap();
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        // Two rows at that start: the 2xx one has the buckets, the 5xx one none.
        let blobs: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT hist FROM route_windows WHERE window_start = 1700000000 ORDER BY status_class",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(
            sightline_protocol::decode_buckets(&blobs[0]).unwrap(),
            BTreeMap::from([(i32::MIN, 1), (346, 1), (366, 2)]),
            "sqlite {version}"
        );
        assert_eq!(blobs[1], [sightline_protocol::ENCODING_FIXED, 0, 0]);
        assert_eq!(
            stored_hist(&store, "route_windows_1h", 1_699_999_200)
                .await
                .buckets,
            BTreeMap::from([(346, 3)])
        );
        let routes = store
            .route_totals(
                1,
                Tier::Raw,
                TimeRange {
                    since: 1_700_000_000,
                    until: 1_700_000_010,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(routes[0].buckets[&3], [(700, 4)]);
        assert_eq!(routes[0].buckets[&0], [(0, 1), (70, 4)]);
        assert!(!routes[0].buckets.contains_key(&1));
        let statements = store
            .query_totals(
                1,
                Tier::Minute,
                TimeRange {
                    since: 1_699_999_980,
                    until: 1_700_000_040,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(statements[0].buckets, [(228, 2), (233, 1)]);
        // The bucket tables are gone, and the merged reads see the converted blobs.
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%buckets%'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(left, 0);
        let aggregates = store.route_aggregates(1, RANGE, None).await.unwrap();
        assert_eq!(
            aggregates
                .buckets
                .iter()
                .map(|&(_, i, n)| (i, n))
                .collect::<Vec<_>>(),
            [(i32::MIN, 1), (346, 1), (366, 2)]
        );
        // New writes merge into the converted blobs.
        store.write(&[ingest(1, 2, 2_000)]).await.unwrap();
        assert_eq!(bucket_index(1_000), 346);
        let merged = stored_hist(&store, "route_windows", 1_700_000_000).await;
        assert_eq!(merged.buckets[&346], 3);
    }
}
