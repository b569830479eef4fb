//! The agent against real local HTTP collectors: healthy, erroring, refusing,
//! unreachable and hanging. In every case the instrumented app keeps answering
//! promptly and the stats account for every window the agent produced.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers here.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sightline_agent::{Agent, AgentGuard, AgentStats};
use sightline_protocol::MetricBatch;
use tower::ServiceExt;

const KEY: &str = "testkey";
const ONE_SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// A scriptable collector.

/// How the collector answers an upload.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Accept,
    Status(u16),
    StatusRetryAfter(u16, u64),
}

#[derive(Default)]
struct Seen {
    /// Answers for the next uploads, in order; `fallback` after that.
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    /// Every upload attempt: when, and what it was answered.
    attempts: Vec<(Instant, u16)>,
    /// Accepted batches that carried request windows.
    batches: Vec<MetricBatch>,
    /// Accepted batches without request windows.
    background: usize,
    auth: Vec<String>,
}

#[derive(Clone)]
struct Collector {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Collector {
    async fn start(script: &[Reply], fallback: Reply) -> Collector {
        let seen = Arc::new(Mutex::new(Seen {
            script: script.iter().copied().collect(),
            fallback: Some(fallback),
            ..Seen::default()
        }));
        let app = Router::new()
            .route("/api/{project_id}/metrics", post(ingest))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { addr, seen }
    }

    fn dsn(&self) -> String {
        format!("http://{KEY}@{}/7", self.addr)
    }

    fn set_fallback(&self, reply: Reply) {
        self.seen.lock().unwrap().fallback = Some(reply);
    }

    fn batches(&self) -> Vec<MetricBatch> {
        self.seen.lock().unwrap().batches.clone()
    }

    /// Accepted batches that carried no request windows.
    fn background(&self) -> u64 {
        self.seen.lock().unwrap().background as u64
    }

    fn attempts(&self) -> Vec<(Instant, u16)> {
        self.seen.lock().unwrap().attempts.clone()
    }

    /// Requests per (window start, route, method, status class) over all batches.
    fn counts(&self) -> BTreeMap<(i64, String, String, u8), u64> {
        let mut counts = BTreeMap::new();
        for batch in self.batches() {
            for w in batch.windows {
                *counts
                    .entry((w.start, w.route, w.method, w.status_class))
                    .or_insert(0) += w.latency.count;
            }
        }
        counts
    }

    fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

async fn ingest(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap, body: Bytes) -> Response {
    let batch: MetricBatch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let mut seen = seen.lock().unwrap();
    // Batches without request windows (heap samples, switch evaluation counts) are the
    // agent's background traffic: accepted on the side, so the script and the attempt log
    // speak only of the batches that carry requests.
    if batch.windows.is_empty() {
        seen.background += 1;
        return (StatusCode::OK, "{\"accepted\":0}").into_response();
    }
    let reply = seen
        .script
        .pop_front()
        .or(seen.fallback)
        .unwrap_or(Reply::Accept);
    let response = match reply {
        Reply::Accept => {
            let auth = headers
                .get("x-sentry-auth")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            seen.auth.push(auth);
            let accepted = batch.windows.len();
            seen.batches.push(batch);
            (StatusCode::OK, format!("{{\"accepted\":{accepted}}}")).into_response()
        }
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::StatusRetryAfter(code, secs) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
    };
    seen.attempts
        .push((Instant::now(), response.status().as_u16()));
    response
}

/// A DSN whose port nothing listens on.
fn closed_port_dsn() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{KEY}@{addr}/7")
}

/// A "collector" that accepts connections and never answers. Returns its DSN and
/// the number of connections it accepted.
async fn hanging_collector() -> (String, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            held.push(socket);
        }
    });
    (format!("http://{KEY}@{addr}/7"), accepted)
}

// ---------------------------------------------------------------------------
// The instrumented app and the traffic driven through it.

fn app(agent: &Agent) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/users", post(|| async { StatusCode::CREATED }))
        .layer(agent.layer())
}

fn start(dsn: &str, window_secs: u64, queue_capacity: usize) -> (Agent, AgentGuard) {
    Agent::builder(dsn)
        .unwrap()
        .service("shipping-test")
        .environment("test")
        .release("1.2.3")
        .window(Duration::from_secs(window_secs))
        .queue_capacity(queue_capacity)
        .start()
        .unwrap()
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sleeps until 50 ms into the next second, so that a short burst sent now lands in
/// one 1 s window.
async fn next_second() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(ONE_SECOND - into + Duration::from_millis(50)).await;
    unix_secs()
}

/// What a burst of requests cost the app.
struct Burst {
    /// The unix second every request of the burst finished in.
    second: i64,
    /// Slowest single request.
    slowest: Duration,
    elapsed: Duration,
}

/// Sends `n` requests of `method` to `uri` through the router, asserting each
/// answers `expect`, and that they all fell in one second.
async fn burst(app: &Router, n: usize, method: &str, uri: &str, expect: StatusCode) -> Burst {
    let begun = Instant::now();
    let first_second = unix_secs();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let t = Instant::now();
        let res = app.clone().oneshot(req).await.unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(res.status(), expect);
    }
    let second = unix_secs();
    assert_eq!(
        first_second, second,
        "the machine is too slow for this test: a burst of {n} requests crossed a second"
    );
    Burst {
        second,
        slowest,
        elapsed: begun.elapsed(),
    }
}

/// Asserts the app did not wait on the collector: an in-process request takes well
/// under a millisecond; a request that waited on the collector would take seconds (the
/// hanging collector never answers), every time. The bounds leave room for a loaded
/// machine; speed itself is measured in the benches.
fn assert_prompt(bursts: &[Burst]) {
    let slowest = bursts.iter().map(|b| b.slowest).max().unwrap();
    let elapsed: Duration = bursts.iter().map(|b| b.elapsed).sum();
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request took {slowest:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "requests took {elapsed:?} in all"
    );
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn accounted(stats: &AgentStats) -> u64 {
    stats.windows_sent + stats.windows_dropped + stats.windows_queued
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn batches_arrive_with_exact_counts() {
    let collector = Collector::start(&[], Reply::Accept).await;
    let (agent, guard) = start(&collector.dsn(), 1, 64);
    let app = app(&agent);

    next_second().await;
    let b1 = burst(&app, 30, "GET", "/users/17", StatusCode::OK).await;
    let b2 = burst(&app, 10, "POST", "/users", StatusCode::CREATED).await;
    let b3 = burst(&app, 5, "GET", "/nope/17", StatusCode::NOT_FOUND).await;
    assert_eq!((b1.second, b2.second), (b3.second, b3.second));
    next_second().await;
    let b4 = burst(&app, 7, "GET", "/users/99", StatusCode::OK).await;

    wait_for(
        "52 requests at the collector",
        Duration::from_secs(10),
        || collector.total() == 52,
    )
    .await;
    let key = |s: i64, r: &str, m: &str, c: u8| (s, r.to_owned(), m.to_owned(), c);
    let expected = BTreeMap::from([
        (key(b1.second, "/users/{id}", "GET", 2), 30),
        (key(b1.second, "/users", "POST", 2), 10),
        (key(b1.second, "<unmatched>", "GET", 4), 5),
        (key(b4.second, "/users/{id}", "GET", 2), 7),
    ]);
    assert_eq!(collector.counts(), expected);

    // Each closed window travels once, whole: every second's windows are in exactly one
    // batch. Two windows usually mean two batches, but a flush that runs late on a busy
    // machine may carry both closed windows in one, which is right too.
    let batches = collector.batches();
    for second in [b1.second, b4.second] {
        let carrying = batches
            .iter()
            .filter(|b| b.windows.iter().any(|w| w.start == second))
            .count();
        assert_eq!(carrying, 1, "second {second} in {carrying} batches");
    }
    assert!(
        (1..=2).contains(&batches.len()),
        "{} batches",
        batches.len()
    );
    for batch in &batches {
        assert_eq!(batch.validate(), Ok(()));
        assert_eq!(batch.dropped_windows, 0);
        assert_eq!(batch.agent.service, "shipping-test");
        assert_eq!(batch.agent.environment.as_deref(), Some("test"));
        assert_eq!(batch.agent.release.as_deref(), Some("1.2.3"));
        assert!(batch.agent.sdk.starts_with("sightline-agent/"));
        for w in &batch.windows {
            assert_eq!(w.window_secs, 1);
            assert!(w.latency.max < 1_000_000, "{w:?}");
        }
    }
    let auth = collector.seen.lock().unwrap().auth.clone();
    assert!(
        auth.iter()
            .all(|a| a.contains("sentry_key=testkey")
                && a.contains("sentry_client=sightline-agent/")),
        "{auth:?}"
    );
    assert_prompt(&[b1, b2, b3, b4]);

    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        stats,
        AgentStats {
            requests: 52,
            windows_sent: 4,
            windows_dropped: 0,
            windows_queued: 0,
            // Plus any windowless background batch (heap samples) the agent sent.
            batches_sent: batches.len() as u64 + collector.background(),
            send_failures: 0,
            events_sent: 0,
            events_dropped: 0,
        }
    );
}

#[tokio::test]
async fn shutdown_flushes_the_open_window() {
    let collector = Collector::start(&[], Reply::Accept).await;
    // A long window: nothing closes on its own during the test.
    let (agent, guard) = start(&collector.dsn(), 3_600, 64);
    let app = app(&agent);
    let mut sent = 0;
    for i in 0..20 {
        let req = Request::get(format!("/users/{i}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.batches().is_empty(), "the window is still open");
    assert_eq!(agent.stats().requests, sent);

    let t = Instant::now();
    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(collector.total(), sent);
    assert_eq!(stats.windows_sent, 1);
    assert_eq!((stats.windows_dropped, stats.windows_queued), (0, 0));

    // The agent has stopped: later requests are served but not recorded.
    let req = Request::get("/users/1").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(agent.stats().requests, sent);
}

#[tokio::test]
async fn dropping_the_guard_flushes_in_the_background() {
    let collector = Collector::start(&[], Reply::Accept).await;
    let (agent, guard) = start(&collector.dsn(), 3_600, 64);
    let app = app(&agent);
    for _ in 0..12 {
        let req = Request::get("/users/5").body(Body::empty()).unwrap();
        app.clone().oneshot(req).await.unwrap();
    }
    let t = Instant::now();
    drop(guard);
    // A blocking drop would wait for the upload (the flush below takes its time).
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop blocked {:?}",
        t.elapsed()
    );
    wait_for("the flush after drop", Duration::from_secs(5), || {
        collector.total() == 12
    })
    .await;
    wait_for("the sent counter", Duration::from_secs(5), || {
        agent.stats().windows_sent == 1
    })
    .await;
}

#[tokio::test]
async fn unreachable_collector_costs_the_app_nothing() {
    let (agent, guard) = start(&closed_port_dsn(), 1, 1);
    let app = app(&agent);
    let mut bursts = Vec::new();
    for n in [67, 67, 66] {
        next_second().await;
        bursts.push(burst(&app, n, "GET", "/users/3", StatusCode::OK).await);
    }
    assert_prompt(&bursts);

    // Three windows were produced; with room for one batch, some were dropped.
    wait_for("three windows closed", Duration::from_secs(5), || {
        accounted(&agent.stats()) == 3
    })
    .await;
    let stats = agent.stats();
    assert_eq!(stats.windows_sent, 0);
    assert!(stats.windows_dropped >= 1, "{stats:?}");
    assert!(stats.windows_queued <= 2, "{stats:?}");
    assert!(stats.send_failures >= 1, "{stats:?}");

    let t = Instant::now();
    let stats = guard.shutdown(ONE_SECOND).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert_eq!(stats.requests, 200);
    assert_eq!(
        (
            stats.windows_sent,
            stats.windows_dropped,
            stats.windows_queued
        ),
        (0, 3, 0)
    );
}

#[tokio::test]
async fn hanging_collector_does_not_hold_up_the_app_or_shutdown() {
    let (dsn, accepted) = hanging_collector().await;
    let (agent, guard) = start(&dsn, 1, 64);
    let app = app(&agent);
    let mut bursts = Vec::new();
    for _ in 0..2 {
        next_second().await;
        bursts.push(burst(&app, 100, "GET", "/users/8", StatusCode::OK).await);
    }
    assert_prompt(&bursts);

    wait_for("two windows closed", Duration::from_secs(5), || {
        accounted(&agent.stats()) == 2
    })
    .await;
    // The first upload hangs (the client gives up after 10 s): both windows wait.
    let stats = agent.stats();
    assert_eq!(
        (stats.windows_sent, stats.windows_queued),
        (0, 2),
        "{stats:?}"
    );
    assert!(*accepted.lock().unwrap() >= 1);

    let t = Instant::now();
    let stats = guard.shutdown(ONE_SECOND).await;
    let took = t.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(3)).contains(&took),
        "shutdown took {took:?}"
    );
    assert_eq!(stats.requests, 200);
    assert_eq!(
        (
            stats.windows_sent,
            stats.windows_dropped,
            stats.windows_queued
        ),
        (0, 2, 0)
    );
    assert!(stats.send_failures >= 1);
}

#[tokio::test]
async fn collector_errors_are_retried_honouring_retry_after() {
    let collector = Collector::start(
        &[Reply::Status(500), Reply::StatusRetryAfter(429, 3)],
        Reply::Accept,
    )
    .await;
    let (agent, guard) = start(&collector.dsn(), 1, 64);
    let app = app(&agent);
    next_second().await;
    let b = burst(&app, 200, "GET", "/users/1", StatusCode::OK).await;
    assert_prompt(&[b]);

    wait_for("the retried batch", Duration::from_secs(15), || {
        collector.total() == 200
    })
    .await;
    let attempts = collector.attempts();
    let codes: Vec<u16> = attempts.iter().map(|a| a.1).collect();
    assert_eq!(codes, [500, 429, 200]);
    let backoff = attempts[1].0 - attempts[0].0;
    let after = attempts[2].0 - attempts[1].0;
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1_500)).contains(&backoff),
        "first backoff {backoff:?}"
    );
    assert!(
        after >= Duration::from_millis(2_950),
        "retry-after not honoured: {after:?}"
    );
    // Retried, not duplicated.
    assert_eq!(collector.batches().len(), 1);

    let stats = guard.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        (
            stats.windows_sent,
            stats.windows_dropped,
            stats.windows_queued
        ),
        (1, 0, 0)
    );
    assert_eq!(
        (stats.batches_sent, stats.send_failures),
        (1 + collector.background(), 2)
    );
}

#[tokio::test]
async fn refused_batches_are_dropped_not_retried() {
    let collector = Collector::start(&[], Reply::Status(401)).await;
    let (agent, guard) = start(&collector.dsn(), 1, 64);
    let app = app(&agent);
    next_second().await;
    burst(&app, 10, "GET", "/users/1", StatusCode::OK).await;
    wait_for("the refused batch", Duration::from_secs(5), || {
        agent.stats().windows_dropped == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(collector.attempts().len(), 1, "a 401 must not be retried");
    let stats = guard.shutdown(ONE_SECOND).await;
    assert_eq!(
        (
            stats.windows_sent,
            stats.windows_dropped,
            stats.windows_queued
        ),
        (0, 1, 0)
    );
    assert_eq!(stats.send_failures, 1);
}

#[tokio::test]
async fn dropped_windows_travel_with_the_next_batch() {
    // Unavailable at first, with a small queue: windows are dropped and counted.
    let collector = Collector::start(&[], Reply::StatusRetryAfter(503, 1)).await;
    let (agent, guard) = start(&collector.dsn(), 1, 1);
    let app = app(&agent);
    for _ in 0..3 {
        next_second().await;
        burst(&app, 5, "GET", "/users/1", StatusCode::OK).await;
    }
    wait_for("three windows closed", Duration::from_secs(5), || {
        accounted(&agent.stats()) == 3
    })
    .await;
    let dropped = agent.stats().windows_dropped;
    assert!(dropped >= 1, "{:?}", agent.stats());

    // The collector comes back: what is left arrives, with the loss reported.
    collector.set_fallback(Reply::Accept);
    wait_for("the queue to drain", Duration::from_secs(5), || {
        agent.stats().windows_queued == 0
    })
    .await;
    let stats = guard.shutdown(ONE_SECOND).await;
    let batches = collector.batches();
    assert_eq!(batches.len() as u64, 3 - dropped);
    assert_eq!(batches[0].dropped_windows, dropped);
    assert_eq!(stats.windows_sent + stats.windows_dropped, 3);
    assert_eq!(collector.total(), 5 * (3 - dropped));
}
