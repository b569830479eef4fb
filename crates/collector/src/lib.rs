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
//! 3. **Query.** The `/api/0/` JSON API and the UI (through [`Query`]) read merged buckets
//!    back over any time range as [`RouteStats`](sightline_protocol::RouteStats) and
//!    [`SeriesPoint`](sightline_protocol::SeriesPoint) rows.
//!
//! `/health` and `/metrics` report on the collector itself. Every failure is an [`Error`],
//! and one `IntoResponse` impl decides its status code.

mod config;
mod error;
mod http;
mod metrics;
mod query;
mod store;
mod writer;

use std::sync::{Arc, Mutex};

pub use config::Config;
pub use error::{Error, Source};
pub use query::{MAX_SERIES_POINTS, Query, TimeRange};
pub use store::Project;

use http::AppState;
use metrics::Metrics;
use store::{SqliteStore, Store};
use writer::WriterHandle;

/// A running collector: the store, the ingest queue and its writer task. Cheap to clone;
/// every clone is the same collector.
#[derive(Clone)]
pub struct Collector {
    state: AppState,
    /// Taken by the first [`Collector::shutdown`].
    writer: Arc<Mutex<Option<WriterHandle>>>,
}

impl Collector {
    /// Opens the SQLite store under `config.data_dir` (creating it), applies pending
    /// migrations, creates the default project on the first run and starts the writer.
    pub async fn open(config: Config) -> Result<Collector, Error> {
        config.check()?;
        std::fs::create_dir_all(&config.data_dir).map_err(Error::DataDir)?;
        let store = SqliteStore::open(&config.sqlite_path()).await?;
        Collector::with_store(config, Arc::new(store)).await
    }

    /// Starts a collector on any store (tests wrap the SQLite store to slow it down).
    async fn with_store(config: Config, store: Arc<dyn Store>) -> Result<Collector, Error> {
        config.check()?;
        store.ensure_default_project().await?;
        let metrics = Arc::new(Metrics::default());
        let (queue, writer) = writer::spawn(store.clone(), metrics.clone(), config.queue_capacity);
        let state = AppState {
            query: Query::new(store.clone()),
            queue,
            metrics,
            admin_token: config.admin_token.map(Arc::from),
            max_body_bytes: config.max_body_bytes,
        };
        Ok(Collector {
            state,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
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

    /// Stops taking batches (new ones get 503), commits everything already queued, and
    /// closes the store. Call it after the HTTP server has stopped accepting requests.
    pub async fn shutdown(self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.stop().await;
        }
        self.state.query.store().close().await;
    }
}
