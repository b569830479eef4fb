//! The Sightline collector: what agents send comes in here, is kept, and goes out again
//! as numbers.
//!
//! What flows through it:
//!
//! 1. **Ingest.** An agent `POST`s a [`MetricBatch`](sightline_protocol::MetricBatch) to
//!    `/api/{project_id}/metrics`, authenticated by the project's public key. The handler
//!    checks it, puts it on a bounded queue (full → 429) and waits.
//! 2. **Write.** One writer task drains the queue and merges many batches into the store in
//!    one transaction — route windows add up, latency histograms add bucket-wise — then
//!    acknowledges each, and only then does the agent get its 200.
//! 3. **Errors.** Any Sentry SDK `POST`s envelopes to `/api/{project_id}/envelope/` (or
//!    bare events to `/store/`), compressed or not, authenticated by the same key (also
//!    from the envelope header's `dsn`). Each event is scrubbed
//!    ([`sightline_protocol::scrub`]), read and grouped into an issue by its fingerprint,
//!    stack trace, exception or parameterised message; the envelope goes through the same
//!    queue and group commit as a metric batch, whole or not at all. Other item types
//!    (transactions, sessions, client reports, attachments, …) are counted per type.
//! 4. **Query.** The `/api/0/` JSON API and the UI (through [`Query`]) read merged buckets
//!    back over any time range as [`RouteStats`](sightline_protocol::RouteStats) and
//!    [`SeriesPoint`](sightline_protocol::SeriesPoint) rows, and issues ([`Issue`]) with
//!    their tags and events, in Sentry's API shapes; issue status changes go through it.
//!
//! `/health` and `/metrics` report on the collector itself. Every failure is an [`Error`],
//! and one `IntoResponse` impl decides its status code.

mod config;
mod error;
mod http;
mod insight;
mod metrics;
mod query;
mod sentry;
mod store;
mod switches;
mod syslog;
mod time;
mod writer;

use std::sync::{Arc, Mutex};

pub use config::Config;
pub use error::{Error, Source};
pub use insight::{CallingRoute, HeapPoint, HeapSeries, NPlusOneRow, RouteInsight, SlowQuery};
pub use insight::{ExemplarDetail, ExemplarSummary, WaterfallEntry};
pub use insight::{RetentionConfig, Tier};
pub use query::{MAX_SERIES_POINTS, Query, TimeRange};
/// Request-body decompression, public for the fuzz targets (`fuzz/`).
pub use sentry::decode as body_decoding;
pub use store::{
    Cursor, Issue, IssueFilter, IssueSort, IssueStatus, ItemCount, Project, StoredEvent, TagValue,
};
pub use store::{LogFilter, LogLine, MAX_ENVIRONMENTS, MAX_LOG_LIMIT};
pub use switches::{
    Action as SwitchAction, AuditFilter, ChangeRecord as SwitchChange, ConditionEdit,
    SwitchDetails, SwitchRecord, Switchboard,
};
pub use syslog::{PAYLOAD_SD_ID, SyslogAddrs, SyslogConfig, parsers as syslog_parsers};

use http::AppState;
use metrics::Metrics;
use store::{ScaledStore, SpoolLimits, SpooledStore, SqliteStore, Store};
use writer::WriterHandle;

/// The ClickHouse schema for a cluster named `cluster`, tables in `database`: every
/// migration's statements rewritten as replicated `_local` tables and `Distributed` ones
/// (`sightline clickhouse-schema`).
pub fn clickhouse_cluster_schema(cluster: &str, database: &str) -> Result<Vec<String>, Error> {
    store::clickhouse_cluster_schema(cluster, database)
}

/// A running collector: the store, the ingest queue and its writer task. Cheap to clone;
/// every clone is the same collector.
#[derive(Clone)]
pub struct Collector {
    state: AppState,
    /// Taken by the first [`Collector::shutdown`].
    writer: Arc<Mutex<Option<WriterHandle>>>,
    /// The syslog listeners, when configured; stopped by [`Collector::shutdown`].
    syslog: Arc<Mutex<Option<syslog::SyslogService>>>,
    syslog_addrs: SyslogAddrs,
    /// Stops the retention task (which also stops when every clone is gone).
    retention: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Collector {
    /// Opens the store — the SQLite file under `config.data_dir` (creating it), or
    /// ClickHouse + PostgreSQL when `config.events` and `config.meta` are given — applies
    /// pending migrations, creates the default project on the first run and starts the
    /// writer.
    pub async fn open(config: Config) -> Result<Collector, Error> {
        config.check()?;
        std::fs::create_dir_all(&config.data_dir).map_err(Error::DataDir)?;
        if let (Some(events), Some(meta)) = (&config.events, &config.meta) {
            let scaled = ScaledStore::connect(events, meta)
                .await?
                .with_retention(config.retention.clone());
            let meta = scaled.meta().clone();
            // Accepted batches wait on local disk until the shared databases take them.
            let store = SpooledStore::open(
                Arc::new(scaled),
                &config.spool_path(),
                SpoolLimits::default(),
            )?;
            let collector = Collector::with_store(config, Arc::new(store)).await?;
            // Switch changes made through other collectors reach this one's streams.
            meta.spawn_switch_listener(&collector.state.switches, collector.retention.subscribe());
            return Ok(collector);
        }
        let store = SqliteStore::open(&config.sqlite_path())
            .await?
            .with_retention(config.retention.clone());
        Collector::with_store(config, Arc::new(store)).await
    }

    /// Starts a collector on any store (tests wrap the SQLite store to slow it down).
    async fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Collector, Error> {
        config.check()?;
        store.ensure_default_project().await?;
        let metrics = Arc::new(Metrics::default());
        let (queue, writer) = writer::spawn(
            store.clone(),
            metrics.clone(),
            config.queue_capacity,
            config.linger(),
        );
        let (retention, stop_retention) = tokio::sync::watch::channel(false);
        insight::spawn_retention(store.clone(), config.retention.clone(), stop_retention);
        let switches = switches::Switches::open(store.clone()).await?;
        let admin_token: Option<Arc<str>> = config.admin_token.map(Arc::from);
        let switchboard = switches::Switchboard::new(switches.clone(), admin_token.clone());
        let state = AppState::new(http::Shared {
            switches,
            query: Query::new(store.clone(), switchboard),
            queue,
            metrics,
            admin_token,
            max_body_bytes: config.max_body_bytes,
            max_envelope_bytes: config.max_envelope_bytes,
            max_decompressed_bytes: config.max_decompressed_bytes,
        });
        // Last: nothing after it can fail and leave the listeners running.
        let syslog = syslog::SyslogService::start(
            &config.syslog,
            store.clone(),
            state.query.clone(),
            state.queue.clone(),
            state.metrics.syslog.clone(),
        )
        .await?;
        let syslog_addrs = syslog.as_ref().map(|s| s.addrs).unwrap_or_default();
        Ok(Collector {
            state,
            writer: Arc::new(Mutex::new(Some(writer))),
            syslog: Arc::new(Mutex::new(syslog)),
            syslog_addrs,
            retention: Arc::new(retention),
        })
    }

    /// Where the syslog listeners listen; both `None` when they are off.
    pub fn syslog_addrs(&self) -> SyslogAddrs {
        self.syslog_addrs
    }

    /// Ingest endpoints, the `/api/0/` query API, `/health` and `/metrics`, state applied.
    /// It has no fallback, so it can be merged with other routers.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// A read handle for the UI.
    pub fn query(&self) -> Query {
        self.state.query.clone()
    }

    /// Every project, by id.
    pub async fn projects(&self) -> Result<Vec<Project>, Error> {
        self.state.query.projects().await
    }

    /// Ends the open switch streams (long-lived responses) so that a graceful HTTP
    /// shutdown can finish; call it when shutdown begins. Agents reconnect elsewhere or
    /// keep their last snapshot.
    pub fn close_streams(&self) {
        self.state.switches.close_streams();
    }

    /// Stops taking batches (new ones get 503), commits everything already queued, and
    /// closes the store. Call it after the HTTP server has stopped accepting requests.
    pub async fn shutdown(self) {
        self.close_streams();
        // Syslog first: its listeners queue what they have read before the writer drains.
        let syslog = self
            .syslog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(syslog) = syslog {
            syslog.stop().await;
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.stop().await;
        }
        // The retention task may be mid-run; it fails harmlessly on the closed pool.
        let _ = self.retention.send(true);
        self.state.query.store().close().await;
    }
}
