//! Error events against a local HTTP receiver of Sentry envelopes: panics in
//! handlers, `capture_error` and `capture_message` arrive as valid Sentry events,
//! exactly once each, and a collector that is away costs the app nothing.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers here.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use sightline_agent::{Agent, AgentGuard, Level};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

const KEY: &str = "errkey";

// ---------------------------------------------------------------------------
// A receiver of Sentry envelopes.

#[derive(Clone, Copy, Debug)]
enum Reply {
    Accept,
    Status(u16),
}

/// One envelope as received.
#[derive(Clone, Debug)]
struct Received {
    header: Value,
    item: Value,
    event: Value,
    auth: String,
    content_type: String,
}

#[derive(Default)]
struct Seen {
    script: VecDeque<Reply>,
    envelopes: Vec<Received>,
    attempts: usize,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    async fn start(script: &[Reply]) -> Receiver {
        let seen = Arc::new(Mutex::new(Seen {
            script: script.iter().copied().collect(),
            ..Seen::default()
        }));
        let app = Router::new()
            .route("/api/{project_id}/envelope/", post(envelope))
            // Metric batches are not what these tests look at.
            .route("/api/{project_id}/metrics", post(|| async { "{}" }))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, seen }
    }

    fn dsn(&self) -> String {
        format!("http://{KEY}@{}/3", self.addr)
    }

    fn envelopes(&self) -> Vec<Received> {
        self.seen.lock().unwrap().envelopes.clone()
    }

    fn events(&self) -> Vec<Value> {
        self.envelopes().into_iter().map(|e| e.event).collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} events"), || self.envelopes().len() >= n).await;
        self.events()
    }
}

/// Splits an envelope into its header, its one item's header and the payload,
/// honouring the item's `length`.
fn parse_envelope(body: &[u8]) -> Option<(Value, Value, Value)> {
    let newline = body.iter().position(|&b| b == b'\n')?;
    let header: Value = serde_json::from_slice(&body[..newline]).ok()?;
    let rest = &body[newline + 1..];
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let item: Value = serde_json::from_slice(&rest[..newline]).ok()?;
    let rest = &rest[newline + 1..];
    let length = usize::try_from(item["length"].as_u64()?).ok()?;
    let payload = rest.get(..length)?;
    // Exactly one item: what follows the payload is its newline and nothing else.
    if rest.get(length..) != Some(b"\n".as_slice()) {
        return None;
    }
    Some((header, item, serde_json::from_slice(payload).ok()?))
}

async fn envelope(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((header, item, event)) = parse_envelope(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut seen = seen.lock().unwrap();
    seen.attempts += 1;
    match seen.script.pop_front().unwrap_or(Reply::Accept) {
        Reply::Accept => {
            let text = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            seen.envelopes.push(Received {
                header,
                item,
                event,
                auth: text("x-sentry-auth"),
                content_type: text("content-type"),
            });
            (StatusCode::OK, "{}").into_response()
        }
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A DSN whose port nothing listens on.
fn closed_port_dsn() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{KEY}@{addr}/3")
}

fn start(dsn: &str) -> (Agent, AgentGuard) {
    Agent::builder(dsn)
        .unwrap()
        .service("errors-test")
        .environment("test")
        .release("errors@2.0.1")
        .in_app_crates(["errors"])
        .switch_default("replay:fast-seek", true)
        .switch_default("replay:share", false)
        .start()
        .unwrap()
}

// ---------------------------------------------------------------------------
// The instrumented app: its handlers are this crate's, so their frames are in-app.

/// Frames of a replay; replay 13 was never recorded.
fn replay_frames(id: u64) -> Vec<u32> {
    if id == 13 || id > 1_000 {
        Vec::new()
    } else {
        vec![1, 2, 3]
    }
}

#[inline(never)]
fn first_frame(id: u64) -> u32 {
    let frames = replay_frames(id);
    *frames
        .first()
        .unwrap_or_else(|| panic!("replay {id} has no frames"))
}

async fn replay(Path(id): Path<u64>) -> String {
    sightline_agent::set_user(format!("player-{id}"));
    tracing::info!(target: "errors::replay", replay = id, "loading replay");
    format!("first frame {}", first_frame(id))
}

/// An error with a cause, as a storage layer would return.
#[derive(Debug)]
struct SaveError {
    thread: u64,
    source: std::io::Error,
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "saving a comment on thread {} failed", self.thread)
    }
}

impl std::error::Error for SaveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[inline(never)]
fn save_comment(thread: u64) -> Result<(), SaveError> {
    Err(SaveError {
        thread,
        source: std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"),
    })
}

async fn post_comment(Path(thread): Path<u64>) -> Response {
    match save_comment(thread) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => {
            let id = sightline_agent::capture_error(&error).expect("an agent runs");
            (StatusCode::INTERNAL_SERVER_ERROR, id.to_string()).into_response()
        }
    }
}

fn app(agent: &Agent) -> Router {
    Router::new()
        .route("/games/{id}/replay", get(replay))
        .route("/threads/{id}/comments", post(post_comment))
        .layer(agent.layer())
}

async fn send(app: &Router, method: &str, uri: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "games.example")
        .header("authorization", "Bearer hunter2")
        .header("x-request-id", "req-1")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn in_app_frames(exception: &Value) -> Vec<&Value> {
    exception["stacktrace"]["frames"]
        .as_array()
        .map(|frames| frames.iter().filter(|f| f["in_app"] == true).collect())
        .unwrap_or_default()
}

fn assert_valid_sentry_event(event: &Value) {
    let parsed: Result<sentry_types::protocol::v7::Event<'static>, _> =
        serde_json::from_value(event.clone());
    assert!(parsed.is_ok(), "not a sentry event: {parsed:?}\n{event:#}");
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_panicking_handler_answers_500_and_its_panic_arrives() {
    let receiver = Receiver::start(&[]).await;
    let (agent, guard) = start(&receiver.dsn());
    let _tracing = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(agent.breadcrumbs_layer()),
    );
    let app = app(&agent);

    let (status, _) = send(&app, "GET", "/games/13/replay?speed=2").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // The app goes on serving.
    let (status, body) = send(&app, "GET", "/games/1/replay").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "first frame 1"));

    let events = receiver.wait_for(1).await;
    let event = &events[0];
    assert_valid_sentry_event(event);
    let exception = &event["exception"]["values"][0];
    assert_eq!(exception["type"], "panic");
    assert_eq!(exception["value"], "replay 13 has no frames");
    assert_eq!(
        exception["mechanism"],
        serde_json::json!({"type": "panic", "handled": false})
    );
    assert_eq!(event["level"], "error");

    // The stack is the one at panic time: the crashing frame is this crate's
    // `first_frame`, called by the handler; caller first, so it comes last.
    let frames = exception["stacktrace"]["frames"].as_array().unwrap();
    let in_app = in_app_frames(exception);
    let last = in_app.last().expect("in-app frames");
    assert_eq!(last["module"], "errors");
    // The closure that panicked, inside `first_frame`.
    assert!(
        last["function"]
            .as_str()
            .unwrap()
            .starts_with("first_frame::{"),
        "{last}"
    );
    assert!(last["lineno"].as_u64().is_some_and(|l| l > 0), "{last}");
    assert!(
        last["filename"]
            .as_str()
            .unwrap()
            .ends_with("tests/errors.rs"),
        "{last}"
    );
    assert!(
        last["abs_path"].as_str().unwrap().starts_with('/'),
        "{last}"
    );
    assert!(
        in_app
            .iter()
            .any(|f| f["function"].as_str().unwrap().starts_with("replay")),
        "{in_app:#?}"
    );
    assert!(
        in_app
            .iter()
            .all(|f| f["module"].as_str().unwrap().starts_with("errors"))
    );
    // Nothing of the panic machinery above it, and none of the agent's frames.
    assert_eq!(frames.last(), Some(*last), "{frames:#?}");
    assert!(
        frames.iter().all(|f| !f["module"]
            .as_str()
            .unwrap_or("")
            .starts_with("sightline_agent")),
        "{frames:#?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f["module"].as_str().unwrap_or("").contains("axum::"))
    );

    // The request, scrubbed, and what the handler said before it panicked.
    assert_eq!(event["transaction"], "/games/{id}/replay");
    assert_eq!(event["request"]["method"], "GET");
    assert_eq!(
        event["request"]["url"],
        "http://games.example/games/13/replay"
    );
    assert_eq!(event["request"]["query_string"], "speed=2");
    assert_eq!(event["request"]["headers"]["Authorization"], "[Filtered]");
    assert_eq!(event["request"]["headers"]["X-Request-Id"], "req-1");
    assert!(!event.to_string().contains("hunter2"));
    assert_eq!(event["user"]["id"], "player-13");
    let crumbs = event["breadcrumbs"]["values"].as_array().unwrap();
    assert_eq!(crumbs.len(), 1, "only this request's: {crumbs:#?}");
    assert_eq!(crumbs[0]["message"], "loading replay");
    assert_eq!(crumbs[0]["data"]["replay"], "13");
    assert_eq!(event["release"], "errors@2.0.1");
    assert_eq!(event["environment"], "test");
    assert_eq!(event["platform"], "rust");
    assert_eq!(event["sdk"]["name"], "sightline-agent");
    // The feature switches on (the agent has not synced yet: its defaults).
    assert_eq!(
        event["contexts"]["flags"],
        serde_json::json!({"values": [{"flag": "replay:fast-seek", "result": true}]})
    );

    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.requests, 2);
    assert_eq!((stats.events_sent, stats.events_dropped), (1, 0));
}

#[tokio::test]
async fn capture_error_sends_the_chain_and_the_call_site() {
    let receiver = Receiver::start(&[]).await;
    let (agent, guard) = start(&receiver.dsn());
    let app = app(&agent);

    let (status, id) = send(&app, "POST", "/threads/7/comments").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let events = receiver.wait_for(1).await;
    let event = &events[0];
    assert_valid_sentry_event(event);
    assert_eq!(event["event_id"], id.as_str());
    assert_eq!(event["level"], "error");
    let values = event["exception"]["values"].as_array().unwrap();
    let chain: Vec<(&str, &str)> = values
        .iter()
        .map(|v| (v["type"].as_str().unwrap(), v["value"].as_str().unwrap()))
        .collect();
    // Root cause first, as Sentry orders them.
    assert_eq!(
        chain,
        [
            ("Custom", "disk full"),
            ("SaveError", "saving a comment on thread 7 failed")
        ]
    );
    assert_eq!(values[1]["mechanism"]["handled"], true);
    // The stack of the call site: the handler that called capture_error, last.
    let in_app = in_app_frames(&values[1]);
    let last = in_app.last().expect("in-app frames");
    assert_eq!(last["module"], "errors");
    assert!(
        last["function"]
            .as_str()
            .unwrap()
            .starts_with("post_comment"),
        "{last}"
    );
    assert_eq!(event["transaction"], "/threads/{id}/comments");
    assert_eq!(event["request"]["headers"]["Authorization"], "[Filtered]");

    // Outside a request: no request context, the caller's stack.
    let error = save_comment(9).unwrap_err();
    let id = agent.capture_error(&error);
    let events = receiver.wait_for(2).await;
    let event = &events[1];
    assert_eq!(event["event_id"], id.to_string());
    assert!(event.get("request").is_none() && event.get("transaction").is_none());
    let in_app = in_app_frames(&event["exception"]["values"][1]);
    assert!(
        in_app.last().is_some_and(|f| f["function"]
            .as_str()
            .unwrap()
            .starts_with("capture_error_sends_the_chain")),
        "{in_app:#?}"
    );
    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.events_sent, stats.events_dropped), (2, 0));
}

#[tokio::test]
async fn envelopes_arrive_with_exact_counts() {
    let receiver = Receiver::start(&[]).await;
    let (agent, guard) = start(&receiver.dsn());
    let app = app(&agent);
    let mut ids = Vec::new();
    for id in [13, 1_001, 1_002] {
        let (status, _) = send(&app, "GET", &format!("/games/{id}/replay")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    for thread in 0..4 {
        let (_, id) = send(&app, "POST", &format!("/threads/{thread}/comments")).await;
        ids.push(id);
    }
    ids.push(
        agent
            .capture_message("replay cache is cold", Level::Warning)
            .to_string(),
    );

    let envelopes = {
        receiver.wait_for(8).await;
        receiver.envelopes()
    };
    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert_eq!(receiver.envelopes().len(), 8, "exactly once each");
    assert_eq!((stats.events_sent, stats.events_dropped), (8, 0));
    for e in &envelopes {
        assert_valid_sentry_event(&e.event);
        assert_eq!(e.header["event_id"], e.event["event_id"]);
        assert_eq!(e.header["dsn"], receiver.dsn());
        assert!(
            e.header["sent_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(e.item["type"], "event");
        assert!(e.auth.contains(&format!("sentry_key={KEY}")), "{}", e.auth);
        assert!(
            e.auth.contains("sentry_client=sightline-agent/"),
            "{}",
            e.auth
        );
        assert_eq!(e.content_type, "application/x-sentry-envelope");
    }
    let panics: Vec<&str> = envelopes
        .iter()
        .filter(|e| e.event["exception"]["values"][0]["type"] == "panic")
        .map(|e| e.event["exception"]["values"][0]["value"].as_str().unwrap())
        .collect();
    assert_eq!(panics.len(), 3);
    assert!(panics.contains(&"replay 1001 has no frames"));
    let mut got: Vec<String> = envelopes
        .iter()
        .filter(|e| e.event["exception"]["values"][0]["type"] != "panic")
        .map(|e| e.event["event_id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    let message = envelopes
        .iter()
        .find(|e| e.event.get("logentry").is_some())
        .expect("the message");
    assert_eq!(message.event["logentry"]["message"], "replay cache is cold");
    assert_eq!(message.event["level"], "warning");
}

#[tokio::test]
async fn failed_uploads_are_retried_not_duplicated() {
    let receiver = Receiver::start(&[Reply::Status(503)]).await;
    let (agent, guard) = start(&receiver.dsn());
    let error = save_comment(1).unwrap_err();
    agent.capture_error(&error);
    receiver.wait_for(1).await;
    let stats = guard.shutdown(Duration::from_secs(5)).await;
    assert_eq!(receiver.seen.lock().unwrap().attempts, 2);
    assert_eq!(receiver.envelopes().len(), 1);
    assert_eq!((stats.events_sent, stats.events_dropped), (1, 0));
    assert!(
        stats.send_failures == 0,
        "event failures are not metric batch failures"
    );
}

#[tokio::test]
async fn an_unreachable_collector_costs_the_app_nothing() {
    let (agent, guard) = Agent::builder(&closed_port_dsn())
        .unwrap()
        .event_queue_capacity(2)
        .start()
        .unwrap();
    let app = app(&agent);
    // The first capture may wait for the agent thread to finish loading the
    // binary's debug info (once per process, at start); later ones never do.
    let (status, _) = send(&app, "POST", "/threads/1/comments").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let one = Instant::now();
        let uri = if i % 2 == 0 {
            format!("/games/{}/replay", 2_000 + i)
        } else {
            format!("/threads/{i}/comments")
        };
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let (status, _) = send(&app, method, &uri).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        // Panicking requests also pay for the previous (std's) hook, which prints a
        // symbolicated backtrace when RUST_BACKTRACE is set: not the agent's cost.
        if method == "POST" {
            slowest = slowest.max(one.elapsed());
        }
    }
    // Generous bounds, for a loaded machine: a capture that waited on the failing
    // upload would wait out its retry backoff (seconds), every time.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest capture took {slowest:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // With room for two, most were dropped while the first upload failed.
    wait_until("drops to be counted", || agent.stats().events_dropped >= 1).await;
    let stats = guard.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.events_sent, 0);
    assert_eq!(stats.events_dropped, 21, "{stats:?}");
    // After the agent stopped, captures are dropped and counted, never block.
    let error = save_comment(1).unwrap_err();
    agent.capture_error(&error);
    assert_eq!(agent.stats().events_dropped, 22);
}
