//! The tower middleware that times requests.
//!
//! It adds no errors and no responses of its own: the inner service's output passes
//! through untouched, and measuring costs two clock reads and one uncontended lock.
//! The one exception is a handler that panics: with panic capture on (the default),
//! the layer catches the panic, reports it as an error event and answers `500`, so
//! one bad request does not take its connection or task down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;

use crate::aggregate::{MethodLabel, Recorder, UNMATCHED, status_class};
use crate::errors::Sink;
use crate::errors::scope::{self, RequestScope};
use crate::insight::{Active, Hub};

/// A tower [`Layer`](tower::Layer) that records every request's route template,
/// method, status class and latency into the agent's current window.
///
/// Add it with [`axum::Router::layer`] (or `route_layer`): the route template comes
/// from axum's [`MatchedPath`], which the router sets before calling route-level
/// middleware. Requests without one (the fallback, or the layer wrapped around the
/// whole router from outside) are recorded as `<unmatched>` — never by raw path,
/// which would make one key per user id.
///
/// The latency runs from `call` until the response future resolves, i.e. until the
/// response head is ready; streaming the body is not included. A response future
/// dropped before it resolves (a cancelled request) is not recorded.
///
/// While it polls the handler, the request is the thread's current one for error
/// events: [`capture_error`](crate::capture_error), [`set_user`](crate::set_user) and
/// the breadcrumbs layer see it. A panic in the handler is caught (unless
/// [`capture_panics(false)`](crate::AgentBuilder::capture_panics)), reported with the
/// stack at panic time, answered `500` and recorded as a 5xx.
#[derive(Clone)]
pub struct RequestLayer {
    agent: Arc<Parts>,
}

impl RequestLayer {
    pub(crate) fn new(recorder: Arc<Recorder>) -> RequestLayer {
        RequestLayer {
            agent: Arc::new(Parts {
                recorder,
                insight: None,
                errors: None,
            }),
        }
    }

    pub(crate) fn with_errors(mut self, sink: Arc<Sink>) -> RequestLayer {
        Arc::make_mut(&mut self.agent).errors = Some(sink);
        self
    }

    pub(crate) fn with_insight(mut self, hub: Arc<Hub>) -> RequestLayer {
        Arc::make_mut(&mut self.agent).insight = Some(hub);
        self
    }
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            agent: self.agent.clone(),
        }
    }
}

/// What the service needs of the agent, behind one `Arc`: routers clone their
/// services (and axum may apply layers) for every request.
#[derive(Clone)]
struct Parts {
    /// Latency per route, method and status class.
    recorder: Arc<Recorder>,
    /// Performance insight (queries, spans, allocations per request), when enabled.
    insight: Option<Arc<Hub>>,
    /// Error events of the agent.
    errors: Option<Arc<Sink>>,
}

/// The service [`RequestLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    agent: Arc<Parts>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RequestService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    // The body of the `500` answered for a panicking handler.
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        // `MatchedPath` holds an `Arc<str>`: cloning it does not allocate.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = MethodLabel::of(req.method());
        let agent = &*self.agent;
        let scope = agent
            .errors
            .as_ref()
            .map(|sink| RequestScope::new(sink.clone(), &req, route.clone()));
        let mut measure = match agent
            .insight
            .as_ref()
            .and_then(|hub| hub.begin(route.clone(), method, start))
        {
            Some(active) => Measure::Insight(active),
            None => Measure::Latency {
                recorder: agent.recorder.clone(),
                route,
                method,
                start,
            },
        };
        // The inner `call` runs (and allocates) on behalf of the request too.
        let inner = match &mut measure {
            Measure::Insight(active) => active.scope(|| self.inner.call(req)),
            Measure::Latency { .. } => self.inner.call(req),
        };
        ResponseFuture {
            inner,
            measure: Some(measure),
            scope,
        }
    }
}

/// What a request needs recorded once its response is ready.
enum Measure {
    /// Latency and performance insight, recorded together by the insight hub.
    Insight(Active),
    /// Latency only (insight off, or the agent stopped).
    Latency {
        recorder: Arc<Recorder>,
        route: Option<MatchedPath>,
        method: MethodLabel,
        start: Instant,
    },
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestService`]: the inner future, timed.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        measure: Option<Measure>,
        scope: Option<Box<RequestScope>>,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    R: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let measure = &mut *this.measure;
        let catch = this.scope.as_ref().is_some_and(|s| s.sink.capture_panics);
        let polled = scope::enter(this.scope, catch, || match measure {
            Some(Measure::Insight(active)) => active.scope(|| inner.poll(cx)),
            _ => inner.poll(cx),
        });
        let output = match polled {
            Ok(Poll::Ready(output)) => output,
            Ok(Poll::Pending) => return Poll::Pending,
            // The handler panicked; it is never polled again.
            Err(payload) => Ok(crate::errors::panicked(this.scope.take(), payload)),
        };
        // Once the response is ready: one clock read for every figure of the request.
        let end = Instant::now();
        let status = match &output {
            Ok(response) => response.status().as_u16(),
            // The error is the app's to handle; to us it is a failed request.
            Err(_) => 500,
        };
        match this.measure.take() {
            Some(Measure::Insight(active)) => active.finish(status, end),
            Some(Measure::Latency {
                recorder,
                route,
                method,
                start,
            }) => {
                let micros = u64::try_from(end.saturating_duration_since(start).as_micros())
                    .unwrap_or(u64::MAX);
                let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
                let now_ms = recorder.unix_ms_at(end);
                recorder.record(route, method, status_class(status), micros, now_ms);
            }
            None => {}
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use http::{Request, StatusCode};
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::aggregate::DEFAULT_MAX_KEYS;

    fn recorder() -> Arc<Recorder> {
        Arc::new(Recorder::new(10, DEFAULT_MAX_KEYS))
    }

    fn app(recorder: &Arc<Recorder>) -> Router {
        Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/users", post(|| async { StatusCode::CREATED }))
            .route("/broken", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .layer(RequestLayer::new(recorder.clone()))
    }

    async fn send(app: &Router, method: &str, uri: &str) -> StatusCode {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        app.clone().oneshot(req).await.expect("infallible").status()
    }

    fn summary(recorder: &Recorder) -> Vec<(String, String, u8, u64)> {
        recorder
            .drain(None)
            .into_iter()
            .map(|w| (w.route, w.method, w.status_class, w.latency.count))
            .collect()
    }

    #[tokio::test]
    async fn records_the_route_template_not_the_raw_path() {
        let rec = recorder();
        let app = app(&rec);
        assert_eq!(send(&app, "GET", "/users/42").await, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/users/43").await, StatusCode::OK);
        assert_eq!(send(&app, "POST", "/users").await, StatusCode::CREATED);
        assert_eq!(
            send(&app, "GET", "/broken").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            summary(&rec),
            [
                ("/broken".to_owned(), "GET".to_owned(), 5, 1),
                ("/users".to_owned(), "POST".to_owned(), 2, 1),
                ("/users/{id}".to_owned(), "GET".to_owned(), 2, 2),
            ]
        );
    }

    #[tokio::test]
    async fn requests_without_a_matched_path_are_unmatched() {
        let rec = recorder();
        let app = app(&rec);
        // axum's default fallback is layered too, and has no MatchedPath.
        assert_eq!(send(&app, "GET", "/nope/123").await, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "GET", "/nope/456").await, StatusCode::NOT_FOUND);
        assert_eq!(
            summary(&rec),
            [("<unmatched>".to_owned(), "GET".to_owned(), 4, 2)]
        );

        // Wrapped around the router from outside, the route is not known yet: the
        // layer must not fall back to the raw path.
        let outside = tower::Layer::layer(
            &RequestLayer::new(rec.clone()),
            Router::new().route("/users/{id}", get(|| async { "user" })),
        );
        let req = Request::get("/users/7")
            .body(Body::empty())
            .expect("request");
        let res = outside.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            summary(&rec),
            [("<unmatched>".to_owned(), "GET".to_owned(), 2, 1)]
        );
    }

    #[tokio::test]
    async fn inner_errors_pass_through_and_count_as_5xx() {
        let rec = recorder();
        let failing =
            service_fn(|_req: Request<()>| async { Err::<http::Response<()>, _>("inner failure") });
        let svc = tower::Layer::layer(&RequestLayer::new(rec.clone()), failing);
        let err = svc
            .oneshot(Request::new(()))
            .await
            .expect_err("the inner error is returned as is");
        assert_eq!(err, "inner failure");

        let ok = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(StatusCode::PERMANENT_REDIRECT)
                    .body(())
                    .expect("response"),
            )
        });
        let svc = tower::Layer::layer(&RequestLayer::new(rec.clone()), ok);
        let res = svc.oneshot(Request::new(())).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            summary(&rec),
            [
                ("<unmatched>".to_owned(), "GET".to_owned(), 3, 1),
                ("<unmatched>".to_owned(), "GET".to_owned(), 5, 1),
            ]
        );
    }

    #[tokio::test]
    async fn latency_spans_call_to_response() {
        let rec = recorder();
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                    "slow"
                }),
            )
            .layer(RequestLayer::new(rec.clone()));
        send(&app, "GET", "/slow").await;
        let windows = rec.drain(None);
        assert_eq!(windows.len(), 1);
        let micros = windows[0].latency.max;
        assert!(
            (30_000..5_000_000).contains(&micros),
            "recorded {micros} µs for a 30 ms handler"
        );
    }

    #[tokio::test]
    async fn a_cancelled_request_is_not_recorded() {
        let rec = recorder();
        let app = Router::new()
            .route("/hang", get(std::future::pending::<&'static str>))
            .layer(RequestLayer::new(rec.clone()));
        let req = Request::get("/hang").body(Body::empty()).expect("request");
        let res = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            app.clone().oneshot(req),
        )
        .await;
        assert!(res.is_err());
        assert!(rec.drain(None).is_empty());
    }

    fn explode(message: &str) -> &'static str {
        panic!("{message}")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_recorded_as_5xx_and_reported() {
        crate::errors::panic::install();
        let rec = recorder();
        let (sink, mut events) = crate::errors::Sink::new(true, 8);
        let app = Router::new()
            .route(
                "/games/{id}/replay",
                get(|| async {
                    crate::set_user("u1");
                    explode("replay 13 has no frames")
                }),
            )
            .route("/users/{id}", get(|| async { "user" }))
            .layer(RequestLayer::new(rec.clone()).with_errors(sink.clone()));
        assert_eq!(
            send(&app, "GET", "/games/13/replay").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(send(&app, "GET", "/users/1").await, StatusCode::OK);
        assert_eq!(
            summary(&rec),
            [
                ("/games/{id}/replay".to_owned(), "GET".to_owned(), 5, 1),
                ("/users/{id}".to_owned(), "GET".to_owned(), 2, 1),
            ]
        );
        let captured = events.try_recv().expect("an event was queued");
        assert!(events.try_recv().is_err(), "exactly one");
        assert_eq!(captured.exceptions[0].value, "replay 13 has no frames");
        assert_eq!(captured.mechanism, Some(crate::errors::Mechanism::panic()));
        assert!(captured.backtrace.is_some(), "the stack at panic time");
        assert_eq!(captured.user.as_deref(), Some("u1"));
        let request = captured.request.expect("request context");
        assert_eq!(request.route.as_deref(), Some("/games/{id}/replay"));
        // The request is no longer current once the layer is done with it.
        assert!(!crate::set_user("u2"));

        // With panic capture off, the layer lets the panic through.
        let (off, _events) = crate::errors::Sink::new(false, 8);
        let app = Router::new()
            .route("/boom", get(|| async { explode("boom") }))
            .layer(RequestLayer::new(rec.clone()).with_errors(off));
        let req = Request::get("/boom").body(Body::empty()).expect("request");
        let unwound = tokio::spawn(app.oneshot(req)).await;
        assert!(unwound.is_err_and(|e| e.is_panic()));
        assert!(!crate::set_user("u3"), "no stale request after the unwind");
    }
}
