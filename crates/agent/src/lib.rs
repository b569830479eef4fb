//! `sightline-agent`: measures every request of an axum/tower app and ships
//! aggregates to a Sightline collector, without ever blocking the app.
//!
//! What flows through it:
//!
//! 1. [`RequestLayer`] times each request and records its route template (axum's
//!    `MatchedPath`, never the raw path), method and status class into the current
//!    window: a histogram per route × method × status class, kept in per-thread
//!    shards so that app threads do not contend.
//! 2. One thread named `sightline-agent`, running its own small tokio runtime, closes
//!    windows as they end (they are aligned to multiples of the window length since
//!    the epoch, so instances merge), queues them as a `MetricBatch` in a bounded
//!    queue, and POSTs them to the collector named by the DSN, retrying with backoff.
//! 3. When the collector is away the queue drops its oldest batches and counts them;
//!    [`Agent::stats`] says what was sent, queued and lost.
//!
//! The app holds an [`AgentGuard`]: [`AgentGuard::shutdown`] closes the open windows
//! and flushes them; dropping the guard does the same in the background.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (agent, guard) = sightline_agent::Agent::builder("http://KEY@127.0.0.1:7070/1")?
//!     .service("comments")
//!     .start()?;
//! let app: Router = Router::new()
//!     .route("/threads/{id}", get(|| async { "thread" }))
//!     .layer(agent.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! let stats = guard.shutdown(Duration::from_secs(5)).await;
//! println!("sent {} windows, lost {}", stats.windows_sent, stats.windows_dropped);
//! # Ok(())
//! # }
//! ```

mod agent;
mod aggregate;
mod error;
mod layer;
mod ship;

pub use agent::{Agent, AgentBuilder, AgentGuard, AgentStats};
pub use aggregate::UNMATCHED_ROUTE;
pub use error::AgentError;
pub use layer::{RequestLayer, RequestService, ResponseFuture};
