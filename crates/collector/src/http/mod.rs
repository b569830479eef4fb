//! The HTTP surface, one router per audience: ingest (agents and SDKs), the `/api/0/`
//! query API (the UI and scripts), and ops (`/health`, `/metrics` for whoever runs it).

pub(crate) mod api;
pub(crate) mod extract;
pub(crate) mod ingest;
mod issues;
mod logs;
mod ops;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tower::{Layer, Service};

use crate::Query;
use crate::metrics::Metrics;
use crate::writer::IngestQueue;

/// Everything a handler may need; handlers take the part they use through `FromRef`.
///
/// One `Arc`: axum clones the state for every request (the handler, `State` extractors),
/// and cloning and dropping the dozen reference counts inside, shared by every core, was
/// ~3 % of the collector's CPU at error ingest.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub(crate) struct Shared {
    pub query: Query,
    pub queue: IngestQueue,
    pub metrics: Arc<Metrics>,
    /// `Some` makes every `/api/0/` route require `Authorization: Bearer <token>`.
    pub admin_token: Option<Arc<str>>,
    pub max_body_bytes: usize,
    pub max_envelope_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub switches: crate::switches::Switches,
}

impl FromRef<AppState> for Query {
    fn from_ref(state: &AppState) -> Query {
        state.query.clone()
    }
}

impl FromRef<AppState> for IngestQueue {
    fn from_ref(state: &AppState) -> IngestQueue {
        state.queue.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Arc<Metrics> {
        state.metrics.clone()
    }
}

/// The collector's whole router, state applied.
pub(crate) fn router(state: AppState) -> Router {
    // No fallback here: the server merges this router with the UI's, and axum refuses to
    // merge two routers that both have one.
    let routes = Router::new()
        .merge(ingest::routes(state.clone()))
        .merge(api::routes(state.clone()))
        .merge(crate::switches::routes(state.clone()))
        .merge(ops::routes(state));
    middleware_stack(routes)
}

/// The layers every route shares.
///
/// Order, outermost first: the request log sees every response, including the rejections
/// of inner layers (admin auth, body limits, ingest outcome counting, which each router
/// adds for its own routes).
fn middleware_stack(routes: Router) -> Router {
    routes.layer(LogRequestLayer)
}

/// One debug line per request: method, route template (never the raw path, which may
/// carry ids or keys), status and latency.
///
/// A layer of its own rather than `middleware::from_fn`, which clones the inner service
/// and boxes a future for every request (~1 % of the collector's CPU at error ingest);
/// and nothing is gathered while debug lines are not written.
#[derive(Clone, Copy)]
struct LogRequestLayer;

impl<S> Layer<S> for LogRequestLayer {
    type Service = LogRequest<S>;

    fn layer(&self, inner: S) -> LogRequest<S> {
        LogRequest { inner }
    }
}

#[derive(Clone)]
struct LogRequest<S> {
    inner: S,
}

/// What the request log line says of the request.
struct Seen {
    started: Instant,
    method: Method,
    route: Option<MatchedPath>,
}

impl<S> Service<Request> for LogRequest<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let seen = tracing::enabled!(tracing::Level::DEBUG).then(|| Seen {
            started: Instant::now(),
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
        });
        Logged {
            inner: self.inner.call(request),
            seen,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, logged when it is ready.
    struct Logged<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F, E> Future for Logged<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let (Some(seen), Ok(response)) = (this.seen.take(), &answer) {
            tracing::debug!(
                method = %seen.method,
                route = seen.route.as_ref().map_or("-", MatchedPath::as_str),
                status = response.status().as_u16(),
                elapsed_us = u64::try_from(seen.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        }
        Poll::Ready(answer)
    }
}
