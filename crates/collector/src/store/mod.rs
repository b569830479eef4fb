//! Storage behind one trait: the writer task writes group commits through it, the query
//! API reads merged aggregates from it. SQLite is the embedded backend; a scaled-out
//! backend implements the same trait.

mod migrate;
mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use sightline_protocol::MetricBatch;

use crate::{Error, TimeRange};

pub(crate) use sqlite::SqliteStore;

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

/// One accepted batch on its way to the store.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
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

    /// Aggregates per route × method over `range`.
    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
    ) -> Result<Aggregates<(String, String)>, Error>;

    /// Aggregates per step over `range`, optionally for one `(route, method)` only.
    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
    ) -> Result<Aggregates<i64>, Error>;

    /// Closes every connection; later calls fail.
    async fn close(&self);
}

/// Store integers are signed 64-bit: larger counts saturate rather than wrap.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Counts read back from a store are never negative; a negative one reads as zero.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
