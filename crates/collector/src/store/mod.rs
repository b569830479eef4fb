//! Storage behind one trait: the writer task writes group commits through it, the query
//! API reads merged aggregates, issues and events from it. SQLite is the embedded
//! backend; a scaled-out backend implements the same trait.

mod clickhouse;
#[cfg(test)]
mod conformance;
mod issues;
mod logs;
mod meta_rows;
mod migrate;
mod postgres;
mod scaled;
mod spool;
mod sqlite;
mod sqlite_issues;

use async_trait::async_trait;
use serde::Serialize;
use sightline_protocol::MetricBatch;

use crate::{Error, TimeRange};

pub use issues::{
    Cursor, Issue, IssueFilter, IssueSort, IssueStatus, ItemCount, StoredEvent, TagValue,
};
pub(crate) use issues::{EnvelopeIngest, EventRecord, StoredPayload};
pub(crate) use logs::NewLogLine;
pub use logs::{LogFilter, LogLine, MAX_LOG_LIMIT};
pub(crate) use scaled::ScaledStore;
pub use spool::SpoolBacklog;
pub(crate) use spool::{SpoolLimits, SpooledStore};
pub(crate) use sqlite::SqliteStore;

/// URLs of a fresh ClickHouse and a fresh PostgreSQL database on the test servers, for
/// tests outside the store that run a scale-out collector.
#[cfg(test)]
pub(crate) async fn fresh_scale_out_databases() -> (String, String) {
    tokio::join!(
        clickhouse::testing::fresh_database(),
        postgres::testing::fresh_database()
    )
}

/// A project: the unit of ingest authentication and of every query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Project {
    /// Numeric id, the last path segment of the DSN.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// The key agents and SDKs authenticate with (`sentry_key`).
    pub public_key: String,
}

/// One queued op: everything one ingest request adds to the store, written in one
/// group commit with the ops queued next to it.
#[derive(Debug, Clone)]
// Unboxed on purpose: ops live only in the bounded queue (at most `queue_capacity` of
// them, so a few hundred KiB at worst), and boxing would allocate once more per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ingest {
    /// An agent's metric batch.
    Metrics(MetricsIngest),
    /// A Sentry envelope or `store` event.
    Envelope(EnvelopeIngest),
    /// Log lines from the syslog listeners (one read's worth).
    Logs(Vec<NewLogLine>),
}

/// One accepted metric batch on its way to the store.
#[derive(Debug, Clone)]
pub(crate) struct MetricsIngest {
    /// Project the batch was authenticated for.
    pub project_id: u64,
    /// When the collector accepted it, unix seconds (the agent's `last_seen`).
    pub received_at: i64,
    /// The validated batch.
    pub batch: MetricBatch,
}

/// What one group commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WriteSummary {
    /// Windows merged into the store.
    pub windows: u64,
    /// Increase of the dropped-window totals agents reported, summed over agents.
    pub agent_dropped: u64,
    /// Error events stored (duplicates not counted).
    pub events: u64,
    /// Error events skipped because their `event_id` was already stored.
    pub duplicate_events: u64,
    /// Syslog log lines stored.
    pub log_lines: u64,
}

/// Per group key and status class: request count and latency sum/min/max, merged over
/// every window in the range.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClassTotals<K> {
    pub key: K,
    pub status_class: u8,
    pub count: u64,
    /// Float: a sum only ever feeds millisecond figures, and a float cannot overflow.
    pub sum_us: f64,
    pub min_us: u64,
    pub max_us: u64,
}

/// Merged aggregates over a time range, grouped by `K` (route × method, or step start).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Aggregates<K> {
    pub classes: Vec<ClassTotals<K>>,
    /// `(key, bucket, count)`: latency buckets added up in the store.
    pub buckets: Vec<(K, i32, u64)>,
}

/// Steps of a time series: step `i` starts at `origin + i * step_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps {
    pub origin: i64,
    pub step_secs: i64,
}

/// Most environments [`Store::environments`] lists.
pub const MAX_ENVIRONMENTS: u32 = 100;

/// The storage backend.
///
/// Every method maps its driver's errors to [`Error`] in one place per backend.
#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Cheap liveness check for `/health`.
    async fn ping(&self) -> Result<(), Error>;

    /// Every project, by id.
    async fn projects(&self) -> Result<Vec<Project>, Error>;

    /// One project, `None` when the id is unknown.
    async fn project(&self, id: u64) -> Result<Option<Project>, Error>;

    /// Creates the project `default` when the store has no project yet (the first run).
    async fn ensure_default_project(&self) -> Result<(), Error>;

    /// Merges every batch into the store in one transaction: all of them or none.
    async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error>;

    /// As [`Store::write`], told whether the writer is in a busy spell (`backlog`: this
    /// group commit carries more than one request). A store may then keep summaries it can
    /// rebuild from what it stored (SQLite's tag counts) out of the commit, to write them
    /// with a later one or at [`Store::settle`]. Default: [`Store::write`].
    async fn write_with_backlog(
        &self,
        batches: &[Ingest],
        backlog: bool,
    ) -> Result<WriteSummary, Error> {
        let _ = backlog;
        self.write(batches).await
    }

    /// Writes whatever [`Store::write_with_backlog`] kept back. The writer calls it once
    /// its queue has stayed empty for a moment after a busy spell, and when it stops. A
    /// store that keeps summaries back also writes them before it reads them, so once a
    /// request is answered every read counts it. Default: nothing is kept back.
    async fn settle(&self) -> Result<(), Error> {
        Ok(())
    }

    /// As [`Store::write`], for a store that writes in several steps (the scale-out store:
    /// PostgreSQL, then ClickHouse table by table): the steps whose bits are set in `done`
    /// were applied by an earlier call with the same batches and are skipped, and each
    /// step that succeeds sets its bit, so a call that fails leaves in `done` how far it
    /// got. The spool's shipper retries a failed round with its `done`, so a step that
    /// adds up (switch check counts, metric windows) is never applied twice. A store that
    /// writes in one transaction keeps this default: all or nothing, `done` untouched.
    async fn write_resumable(
        &self,
        batches: &[Ingest],
        done: &mut u32,
    ) -> Result<WriteSummary, Error> {
        let _ = done;
        self.write(batches).await
    }

    /// Aggregates per route × method over `range`, of one environment or (`None`) all.
    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error>;

    /// Aggregates per step over `range`, optionally for one `(route, method)` only, of one
    /// environment or (`None`) all.
    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error>;

    /// Issues of a project matching `filter`, in its order, one page.
    async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error>;

    /// One issue, `None` when the id is unknown.
    async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error>;

    /// Per tag key of an issue, its `top` most frequent values with the key's totals,
    /// keys in name order.
    async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error>;

    /// An issue's events, newest first, one page; payloads only when `full`.
    async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error>;

    /// One event of a project with its payload, `None` when unknown.
    async fn event(&self, project_id: u64, event_id: &str) -> Result<Option<StoredEvent>, Error>;

    /// Sets the status of the issues `ids` (of `project_id` only, when given); returns the
    /// ids that exist and were updated.
    async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error>;

    /// Envelope items a project received per day and type, from `since_day` (`YYYY-MM-DD`).
    async fn item_counts(&self, project_id: u64, since_day: &str) -> Result<Vec<ItemCount>, Error>;

    /// Closes every connection; later calls fail.
    async fn close(&self);

    /// The deployment environments a project's agents report and its events name,
    /// sorted, at most [`MAX_ENVIRONMENTS`]; a backend that keeps neither names none.
    async fn environments(&self, _project_id: u64) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    /// What waits in the local spool, for a backend behind one ([`SpooledStore`]).
    fn backlog(&self) -> Option<SpoolBacklog> {
        None
    }

    /// The feature-switch tables, when this backend keeps them.
    fn switches(&self) -> Option<&dyn crate::switches::SwitchStore> {
        None
    }

    /// The performance-insight tables, when this backend keeps them.
    fn insight(&self) -> Option<&dyn crate::insight::InsightStore> {
        None
    }

    /// Deletes what `retention` no longer keeps; returns how many rows (or, where whole
    /// partitions go at once, partitions). The retention task calls it periodically.
    async fn prune_expired(
        &self,
        retention: &crate::insight::RetentionConfig,
        now: i64,
    ) -> Result<u64, Error> {
        match self.insight() {
            Some(insight) => insight.prune(retention, now).await,
            None => Ok(0),
        }
    }

    // ---- log lines (syslog); written through `write` as `Ingest::Logs` ----

    /// Log lines of a project matching `filter`, newest first.
    async fn logs(&self, _project_id: u64, _filter: &LogFilter) -> Result<Vec<LogLine>, Error> {
        Err(no_log_lines())
    }

    /// Deletes the oldest log lines beyond `max_lines` and those received before
    /// `received_before_ms`, a bounded number per call; returns how many.
    async fn prune_logs(&self, _max_lines: u64, _received_before_ms: i64) -> Result<u64, Error> {
        Err(no_log_lines())
    }
}

/// What a backend without log-line tables answers.
fn no_log_lines() -> Error {
    Error::Store(std::sync::Arc::new(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this store keeps no log lines",
    )))
}

/// The ClickHouse schema rewritten for a cluster (see `clickhouse::cluster`).
pub(crate) fn clickhouse_cluster_schema(
    cluster: &str,
    database: &str,
) -> Result<Vec<String>, Error> {
    clickhouse::cluster_schema(migrate::CLICKHOUSE.iter().map(|m| m.sql), cluster, database)
        .map_err(|e| Error::Store(std::sync::Arc::new(e)))
}

/// Store integers are signed 64-bit: larger counts saturate rather than wrap.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counts read back from a store are never negative; a negative one reads as zero.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
