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
//! # Errors and panics
//!
//! The agent reports the app's errors as Sentry events (any Sentry tooling reads
//! them) to the collector's envelope endpoint:
//!
//! - **Panics.** [`AgentBuilder::start`] installs a process-wide panic hook, once,
//!   chained to the hook installed before it (so the usual message still prints);
//!   opt out with [`AgentBuilder::capture_panics`]`(false)`. The hook records the
//!   stack at panic time. A handler that panics behind [`RequestLayer`] is caught:
//!   the client gets a `500`, the request is recorded as a 5xx, the app keeps
//!   serving, and an event goes out with the panic message
//!   (`mechanism: {type: "panic", handled: false}`). A panic outside any request is
//!   reported by the hook itself.
//! - **[`capture_error`]** (or [`Agent::capture_error`]) reports an error with its
//!   whole `source()` chain, root cause first, and the stack of the call site;
//!   [`capture_message`] reports a message at a [`Level`]. Both return the
//!   [`EventId`].
//! - **Context.** Inside a request the event carries the method, URL, route template
//!   (also as `transaction`) and headers, the user set with [`set_user`], and the
//!   request's breadcrumbs: the last [`BREADCRUMBS`] tracing events seen by
//!   [`breadcrumbs_layer`] (per request, or per thread outside requests). Every
//!   event has the release, environment, server name and `sdk`.
//! - **Stacks** are caller-first with `in_app` set for the crates named by
//!   [`AgentBuilder::in_app_crates`] (without it: everything but the standard library,
//!   the async and web stack, and the agent). The agent's own frames are removed.
//! - **Cost on the app's threads:** walking the stack (no symbols) and copying the
//!   request context, then a `try_send` into a bounded queue. Symbolication,
//!   scrubbing ([`sightline_protocol::scrub`]: credentials, `Authorization`/`Cookie`
//!   headers, card numbers → `[Filtered]`) and sending happen on the agent thread,
//!   with the same retry and backoff as metric batches. A full queue drops the event
//!   and counts it in [`AgentStats::events_dropped`].
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
mod alloc;
mod error;
mod errors;
mod insight;
mod layer;
mod ship;
mod sql;
mod switches;
mod syslog;
mod tracing_layer;

pub use agent::{Agent, AgentBuilder, AgentGuard, AgentStats};
pub use aggregate::UNMATCHED_ROUTE;
pub use alloc::{CountingAllocator, HeapStats, heap_stats};
pub use error::AgentError;
pub use errors::breadcrumbs::BREADCRUMBS;
pub use errors::{
    BreadcrumbsLayer, EventId, Level, breadcrumbs_layer, capture_error, capture_message, set_user,
};
pub use insight::record_query;
pub use layer::{RequestLayer, RequestService, ResponseFuture};
pub use sightline_protocol::{Condition, EvalContext, Snapshot, Switch, SwitchState};
pub use sql::{fingerprint, normalize as normalize_sql};
pub use switches::Switches;
pub use syslog::{DEFAULT_MAX_MESSAGE as SYSLOG_DEFAULT_MAX_MESSAGE, SyslogTarget};
pub use tracing_layer::{TracingFilter, TracingLayer, tracing_layer};
