//! The tracing layer: attributes sqlx's query events and the app's own spans to the
//! request being served.
//!
//! sqlx 0.8 emits one `sqlx::query` event per statement when it finishes (fields
//! `summary`, `db.statement`, `rows_affected`, `rows_returned`, `elapsed`,
//! `elapsed_secs`), on the thread that ran it — for SQLite a worker thread of the
//! connection — inside the span that was current where the query was issued, which sqlx
//! carries over. The request layer enters a `sightline_agent::request` span around every
//! poll of a request, so the request is found either as the thread's current request or
//! through the event's span scope.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::insight::{self, Normalized, REQUEST_TARGET, RequestCtx};

/// Target of sqlx's per-statement events.
const SQLX_TARGET: &str = "sqlx::query";

/// Kept in the extensions of every span opened within a request.
struct SpanInfo {
    ctx: Arc<RequestCtx>,
    start: Instant,
    /// The request layer's own span: not part of the waterfall.
    request: bool,
}

/// A [`tracing_subscriber::Layer`] that adds database queries (sqlx's own events) and the
/// spans the app opens (template rendering, external calls, … at `INFO` or above) to the
/// request being served, for the insight the agent ships: per-request query counts and
/// time, per-statement statistics, N+1 detection and exemplar waterfalls.
///
/// Build it with [`tracing_layer`]. It carries its own filter, so it sees sqlx's
/// `DEBUG` events whatever the app's log filter says — as long as that filter is a
/// per-layer one (`fmt::layer().with_filter(EnvFilter::…)`), not a global one that
/// discards events before any layer sees them.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingLayer {
    _private: (),
}

/// The filter of [`tracing_layer`]: spans at `INFO` or above, the request layer's span,
/// and sqlx's query events.
pub type TracingFilter = FilterFn<fn(&Metadata<'_>) -> bool>;

fn interesting(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        *meta.level() <= Level::INFO || meta.target() == REQUEST_TARGET
    } else {
        meta.target() == SQLX_TARGET
    }
}

/// The insight tracing layer, filtered to what it uses. Install it next to the app's
/// other layers:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
/// tracing_subscriber::registry()
///     .with(sightline_agent::tracing_layer())
///     .init();
/// ```
///
/// Queries of drivers that do not emit sqlx's events can be added with
/// [`record_query`](crate::record_query).
pub fn tracing_layer<S>() -> Filtered<TracingLayer, TracingFilter, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    TracingLayer::default().with_filter(FilterFn::new(interesting as fn(&Metadata<'_>) -> bool))
}

/// Reads the statement and duration out of a sqlx query event without copying
/// anything: the statement is normalised (or found in the cache) as it is visited.
#[derive(Default)]
struct QueryVisitor {
    statement: Option<Normalized>,
    elapsed: Option<Duration>,
}

impl Visit for QueryVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            // sqlx puts the whole statement in `db.statement` when the 4-word summary
            // does not cover it (and marks the summary with a trailing ellipsis).
            "db.statement" => {
                // ASCII trimming: sqlx pads the statement with newlines only.
                let sql = value.trim_ascii();
                if !sql.is_empty() {
                    self.statement = Some(insight::normalized(sql));
                }
            }
            "summary" if !value.ends_with('…') && self.statement.is_none() => {
                self.statement = Some(insight::normalized(value));
            }
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" && value.is_finite() && value >= 0.0 {
            // `as` saturates; nanosecond precision is more than the microseconds kept.
            self.elapsed = Some(Duration::from_nanos((value * 1e9) as u64));
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// Adds the statement of sqlx's `event` to `request`.
fn record(event: &Event<'_>, request: &RequestCtx) {
    let mut visitor = QueryVisitor::default();
    event.record(&mut visitor);
    if let Some(statement) = visitor.statement {
        let end = Instant::now();
        let elapsed = visitor.elapsed.unwrap_or_default();
        request.record_query(&statement, end, elapsed);
    }
}

impl<S> Layer<S> for TracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // The current request on this thread, or the one of the parent span (a span
        // created on another thread under a request span).
        let request = insight::current().or_else(|| {
            span.parent()
                .and_then(|parent| parent.extensions().get::<SpanInfo>().map(|i| i.ctx.clone()))
        });
        if let Some(request) = request {
            span.extensions_mut().insert(SpanInfo {
                ctx: request,
                start: Instant::now(),
                request: attrs.metadata().target() == REQUEST_TARGET,
            });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        if let Some(info) = extensions.get::<SpanInfo>()
            && !info.request
        {
            info.ctx
                .record_span(span.metadata().name(), info.start, Instant::now());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_TARGET {
            return;
        }
        // The thread's current request is borrowed, not cloned: this runs per statement.
        insight::with_current(|current| match current {
            Some(request) => record(event, request),
            None => {
                let request = ctx.event_scope(event).and_then(|mut scope| {
                    scope
                        .find_map(|span| span.extensions().get::<SpanInfo>().map(|i| i.ctx.clone()))
                });
                if let Some(request) = request {
                    record(event, &request);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::aggregate::{DEFAULT_MAX_KEYS, MethodLabel, Recorder};
    use crate::insight::{Hub, InsightConfig};

    #[test]
    fn sqlx_events_and_app_spans_land_in_the_request_on_any_thread() {
        let subscriber = tracing_subscriber::registry().with(tracing_layer());
        let dispatch = tracing::Dispatch::new(subscriber);
        let hub = Arc::new(Hub::new(
            Arc::new(Recorder::new(10, DEFAULT_MAX_KEYS)),
            InsightConfig {
                sample_rate: 1.0,
                ..InsightConfig::default()
            },
        ));
        tracing::dispatcher::with_default(&dispatch, || {
            let mut active = hub
                .begin(None, MethodLabel::of(&http::Method::GET), Instant::now())
                .expect("open");
            active.scope(|| {
                let render = tracing::info_span!("template.render");
                let _g = render.enter();
                // As sqlx-sqlite does: the query runs on a worker thread inside the span
                // that was current where it was issued.
                let span = tracing::Span::current();
                let dispatch = dispatch.clone();
                std::thread::spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let _g = span.enter();
                        tracing::debug!(
                            target: "sqlx::query",
                            summary = "SELECT id FROM users …",
                            db.statement = "\n\nSELECT id FROM users WHERE id = 7\n",
                            rows_affected = 0u64,
                            rows_returned = 1u64,
                            elapsed_secs = 0.000_001f64,
                        );
                    });
                })
                .join()
                .expect("worker");
                tracing::debug!(
                    target: "sqlx::query",
                    summary = "BEGIN",
                    db.statement = "",
                    elapsed_secs = 0.000_001f64,
                );
                // Other events are ignored.
                tracing::info!("not a query");
            });
            active.finish(200, Instant::now());
        });
        let batch = hub.drain(None);
        assert_eq!(batch.routes[0].queries.sum, 2);
        assert_eq!(batch.routes[0].query_us.sum, 2);
        let e = &batch.exemplars[0];
        let names: Vec<&str> = e.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "template.render",
                "select id from users where id = ?",
                "begin"
            ]
        );
    }
}
