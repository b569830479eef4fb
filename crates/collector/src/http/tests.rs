//! Router tests: the whole collector on a temporary SQLite file, called with `oneshot`.
//! Expected numbers are computed here from the raw latencies, never read back from what
//! the test sent; the store is inspected through a separate read-only connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;
use tokio::sync::{Mutex, Semaphore};
use tower::ServiceExt;

use crate::store::{Aggregates, Ingest, SqliteStore, Steps, Store, WriteSummary};
use crate::{
    Collector, Config, Cursor, Error, Issue, IssueFilter, IssueStatus, ItemCount, Project,
    StoredEvent, TagValue, TimeRange,
};

/// Sentry ingest, issue grouping and the issue API.
mod sentry;

/// A window start aligned to 10 s and 60 s.
const T0: i64 = 1_700_000_040;

// ---------------------------------------------------------------- fixtures

fn config(dir: &TempDir) -> Config {
    Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    }
}

async fn open(dir: &TempDir) -> (Collector, Project) {
    open_with(config(dir)).await
}

async fn open_with(config: Config) -> (Collector, Project) {
    let collector = Collector::open(config).await.expect("open collector");
    let project = collector.projects().await.expect("projects").remove(0);
    (collector, project)
}

/// Deterministic latencies in µs, log-spread from ~100 µs to ~1 s with a slow tail.
fn latencies(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = 100 + x % 20_000;
            if x.is_multiple_of(23) {
                base * 40
            } else {
                base
            }
        })
        .collect()
}

fn window(start: i64, route: &str, method: &str, status_class: u8, values: &[u64]) -> RouteWindow {
    let mut latency = Histogram::new();
    for &v in values {
        latency.record(v);
    }
    RouteWindow {
        start,
        window_secs: 10,
        route: route.to_owned(),
        method: method.to_owned(),
        status_class,
        latency,
    }
}

fn batch(instance: &str, windows: Vec<RouteWindow>) -> MetricBatch {
    MetricBatch {
        agent: AgentInfo {
            service: "comments".to_owned(),
            instance: instance.to_owned(),
            sdk: "sightline-agent/0.1.0".to_owned(),
            environment: Some("test".to_owned()),
            release: None,
        },
        sent_at_ms: T0 * 1000,
        dropped_windows: 0,
        switch_evaluations: Default::default(),
        insight: Default::default(),
        windows,
    }
}

/// Nearest-rank quantile of the raw values, as the histogram defines it.
fn exact_quantile(values: &[u64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1] as f64
}

fn assert_close(actual_ms: f64, exact_us: f64, what: &str) {
    let exact_ms = exact_us / 1000.0;
    let error = (actual_ms - exact_ms).abs() / exact_ms;
    assert!(
        error <= 0.02,
        "{what}: {actual_ms} ms vs exact {exact_ms} ms ({:.2} %)",
        error * 100.0
    );
}

fn assert_quantiles(stats: &Value, values: &[u64], what: &str) {
    for (field, q) in [("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
        let actual = stats[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}.{field}: {stats}"));
        assert_close(
            actual,
            exact_quantile(values, q),
            &format!("{what}.{field}"),
        );
    }
}

// ---------------------------------------------------------------- requests

fn post_metrics(project_id: u64, key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(format!("/api/{project_id}/metrics"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(
            "X-Sentry-Auth",
            format!("Sentry sentry_version=7, sentry_client=test/1, sentry_key={key}"),
        );
    }
    request.body(body.into()).unwrap()
}

fn post_batch(project: &Project, batch: &MetricBatch) -> Request<Body> {
    post_metrics(
        project.id,
        Some(&project.public_key),
        serde_json::to_vec(batch).unwrap(),
    )
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Expects `status` and a JSON `{"error": …}` containing `reason`.
async fn expect_error(router: &Router, request: Request<Body>, status: StatusCode, reason: &str) {
    let answer = call(router, request).await;
    assert_eq!(answer.status, status, "{}", answer.text());
    let error = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains(reason), "error {error:?} lacks {reason:?}");
}

async fn routes(router: &Router, project: &Project, since: i64, until: i64) -> Vec<Value> {
    let answer = call(
        router,
        get(&format!(
            "/api/0/projects/{}/routes/?since={since}&until={until}",
            project.id
        )),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json().as_array().unwrap().clone()
}

fn find<'a>(stats: &'a [Value], route: &str, method: &str) -> &'a Value {
    stats
        .iter()
        .find(|s| s["route"] == route && s["method"] == method)
        .unwrap_or_else(|| panic!("no {method} {route} in {stats:?}"))
}

// ---------------------------------------------------------------- store inspection

/// Rows of projects, raw route windows, bytes of the windows' latency histograms and
/// agents, read through a connection of its own.
async fn table_rows(dir: &TempDir) -> [i64; 4] {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("sightline.db"))
        .read_only(true);
    let pool = SqlitePool::connect_with(options).await.unwrap();
    let mut counts = [0; 4];
    for (slot, sql) in counts.iter_mut().zip([
        "SELECT COUNT(*) FROM projects",
        "SELECT COUNT(*) FROM route_windows",
        "SELECT COALESCE(SUM(length(hist)), 0) FROM route_windows",
        "SELECT COUNT(*) FROM agents",
    ]) {
        let row: (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
        *slot = row.0;
    }
    pool.close().await;
    counts
}

/// Batches waiting in the ingest queue, as `/health` reports them.
async fn queue_depth(router: &Router) -> Option<u64> {
    call(router, get("/health")).await.json()["queue_depth"].as_u64()
}

async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn accepted_batch_shows_exact_counts_and_quantiles() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();

    let ok_a = latencies(1, 1_000);
    let ok_b = latencies(2, 800);
    let errors = latencies(3, 40);
    let posts = latencies(4, 300);
    let late = latencies(5, 50);
    let sent = batch(
        "host-1",
        vec![
            window(T0, "/threads/{id}", "GET", 2, &ok_a),
            window(T0 + 10, "/threads/{id}", "GET", 2, &ok_b),
            window(T0 + 20, "/threads/{id}", "GET", 5, &errors),
            window(T0, "/threads/{id}/comments", "POST", 2, &posts),
            // Starts at the end of the queried range: must not be counted.
            window(T0 + 60, "/threads/{id}/comments", "POST", 2, &late),
        ],
    );
    let answer = call(&router, post_batch(&project, &sent)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"accepted": 5}));
    // A 200 means committed: another connection sees it at once.
    let [_, windows, histogram_bytes, agents] = table_rows(&dir).await;
    assert_eq!((windows, agents), (5, 1));
    // Five windows of hundreds of spread-out latencies: many buckets each.
    assert!(histogram_bytes > 300, "{histogram_bytes} histogram bytes");

    let stats = routes(&router, &project, T0, T0 + 60).await;
    assert_eq!(stats.len(), 2);
    let threads = find(&stats, "/threads/{id}", "GET");
    let all: Vec<u64> = [&ok_a[..], &ok_b, &errors].concat();
    let sum_us: u64 = all.iter().sum();
    assert_eq!(threads["requests"], 1_840);
    assert_eq!(threads["errors"], 40);
    assert_eq!(threads["status_classes"], json!([0, 1_800, 0, 0, 40]));
    assert!((threads["error_rate"].as_f64().unwrap() - 40.0 / 1_840.0).abs() < 1e-12);
    assert!((threads["throughput"].as_f64().unwrap() - 1_840.0 / 60.0).abs() < 1e-9);
    assert!((threads["total_ms"].as_f64().unwrap() - sum_us as f64 / 1000.0).abs() < 1e-6);
    assert!((threads["mean_ms"].as_f64().unwrap() - sum_us as f64 / 1_840_000.0).abs() < 1e-9);
    assert_quantiles(threads, &all, "GET /threads/{id}");

    let comments = find(&stats, "/threads/{id}/comments", "POST");
    assert_eq!(comments["requests"], 300);
    assert_eq!(comments["errors"], 0);
    assert_quantiles(comments, &posts, "POST /threads/{id}/comments");
    // Most total time first.
    assert_eq!(stats[0]["route"], "/threads/{id}");

    // statsPeriod ranges end now; these windows are years old.
    let recent = call(
        &router,
        get(&format!(
            "/api/0/projects/{}/routes/?statsPeriod=24h",
            project.id
        )),
    )
    .await;
    assert_eq!(recent.status, StatusCode::OK);
    assert_eq!(recent.json(), json!([]));
    collector.shutdown().await;
}

#[tokio::test]
async fn windows_from_two_instances_merge_bucket_wise() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    // Different shapes, so quantiles of the merge differ from either alone.
    let fast = latencies(10, 900);
    let slow: Vec<u64> = latencies(11, 600).iter().map(|v| v * 7).collect();
    for (instance, values) in [("host-1", &fast), ("host-2", &slow)] {
        let sent = batch(instance, vec![window(T0, "/leaderboard", "GET", 2, values)]);
        let answer = call(&router, post_batch(&project, &sent)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let [_, windows, _, agents] = table_rows(&dir).await;
    assert_eq!(windows, 1, "one merged row per window key");
    assert_eq!(agents, 2);

    let stats = routes(&router, &project, T0, T0 + 10).await;
    let merged = find(&stats, "/leaderboard", "GET");
    let all = [&fast[..], &slow].concat();
    assert_eq!(merged["requests"], 1_500);
    let sum_us: u64 = all.iter().sum();
    assert!((merged["total_ms"].as_f64().unwrap() - sum_us as f64 / 1000.0).abs() < 1e-6);
    assert_quantiles(merged, &all, "merged");
    // Not an average of the two instances' quantiles.
    let p99_avg = (exact_quantile(&fast, 0.99) + exact_quantile(&slow, 0.99)) / 2.0 / 1000.0;
    assert!((merged["p99_ms"].as_f64().unwrap() - p99_avg).abs() / p99_avg > 0.05);
    collector.shutdown().await;
}

#[tokio::test]
async fn series_has_aligned_steps_including_empty_ones() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let a = latencies(20, 200);
    let b = latencies(21, 100);
    let c = latencies(22, 30);
    let sent = batch(
        "host-1",
        vec![
            window(T0, "/a", "GET", 2, &a),
            window(T0 + 50, "/b", "GET", 2, &b),
            window(T0 + 120, "/a", "GET", 5, &c),
        ],
    );
    assert_eq!(
        call(&router, post_batch(&project, &sent)).await.status,
        StatusCode::OK
    );

    // since is mid-step: steps still start on multiples of the interval.
    let uri = format!(
        "/api/0/projects/{}/series/?since={}&until={}",
        project.id,
        T0 + 5,
        T0 + 180
    );
    let answer = call(&router, get(&uri)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let points = answer.json();
    let points = points.as_array().unwrap();
    let ts: Vec<i64> = points.iter().map(|p| p["ts"].as_i64().unwrap()).collect();
    assert_eq!(ts, [T0, T0 + 60, T0 + 120]);
    // The T0 window starts before `since`: only /b's window is in the first step.
    assert_eq!(points[0]["requests"], 100);
    assert_close(
        points[0]["p95_ms"].as_f64().unwrap(),
        exact_quantile(&b, 0.95),
        "step 0 p95",
    );
    assert_eq!(points[1]["requests"], 0);
    assert_eq!(points[1]["p50_ms"], Value::Null);
    assert_eq!(
        (points[2]["requests"].as_u64(), points[2]["errors"].as_u64()),
        (Some(30), Some(30))
    );

    // One route only, 30 s steps.
    let uri = format!(
        "/api/0/projects/{}/series/?since={T0}&until={}&interval=30&route=/a&method=get",
        project.id,
        T0 + 150
    );
    let answer = call(&router, get(&uri)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let requests: Vec<u64> = answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, [200, 0, 0, 0, 30]);

    let too_many = format!(
        "/api/0/projects/{}/series/?statsPeriod=30d&interval=60",
        project.id
    );
    expect_error(
        &router,
        get(&too_many),
        StatusCode::BAD_REQUEST,
        "at most 1500",
    )
    .await;
    let default_interval = format!("/api/0/projects/{}/series/?statsPeriod=1h", project.id);
    let answer = call(&router, get(&default_interval)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let n = answer.json().as_array().unwrap().len();
    assert!((60..=61).contains(&n), "{n} one-minute steps in an hour");
    collector.shutdown().await;
}

#[tokio::test]
async fn query_api_rejects_bad_parameters() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let id = project.id;
    for (uri, reason) in [
        (
            format!("/api/0/projects/{id}/routes/?statsPeriod=1y"),
            "statsPeriod",
        ),
        (format!("/api/0/projects/{id}/routes/?since=abc"), "since"),
        (
            format!("/api/0/projects/{id}/routes/?since=20&until=10"),
            "before",
        ),
        (
            format!("/api/0/projects/{id}/routes/?since=10&statsPeriod=1h"),
            "either",
        ),
        (
            format!("/api/0/projects/{id}/series/?interval=0"),
            "interval",
        ),
        (format!("/api/0/projects/{id}/series/?route=/a"), "together"),
        ("/api/0/projects/x/routes/".to_owned(), "project id"),
    ] {
        expect_error(&router, get(&uri), StatusCode::BAD_REQUEST, reason).await;
    }
    expect_error(
        &router,
        get("/api/0/projects/999/routes/"),
        StatusCode::NOT_FOUND,
        "project",
    )
    .await;
    expect_error(
        &router,
        get("/api/0/projects/999/series/"),
        StatusCode::NOT_FOUND,
        "project",
    )
    .await;
    let projects = call(&router, get("/api/0/projects")).await;
    assert_eq!(projects.status, StatusCode::OK);
    assert_eq!(
        projects.json(),
        json!([{"id": project.id, "name": "default", "public_key": project.public_key}])
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn bad_ingest_requests_are_refused_and_store_nothing() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.max_body_bytes = 4_096;
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    assert_eq!(project.public_key.len(), 32);
    assert!(project.public_key.chars().all(|c| c.is_ascii_hexdigit()));
    let before = table_rows(&dir).await;
    assert_eq!(before, [1, 0, 0, 0]);

    let good = batch(
        "host-1",
        vec![window(T0, "/a", "GET", 2, &latencies(30, 20))],
    );
    let good_json = serde_json::to_vec(&good).unwrap();
    let key = project.public_key.as_str();
    let mut invalid = good.clone();
    invalid
        .windows
        .push(window(T0, "/b", "GET", 7, &latencies(31, 5)));
    let mut misaligned = good.clone();
    misaligned.windows[0].start += 3;
    let mut inconsistent = good.clone();
    inconsistent.windows[0].latency.count += 1;
    let oversized = batch(
        "host-1",
        (0..40)
            .map(|i| window(T0 + 10 * i, "/a", "GET", 2, &latencies(32, 3)))
            .collect(),
    );
    let oversized = serde_json::to_vec(&oversized).unwrap();
    assert!(oversized.len() > 4_096);

    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed json",
            post_metrics(project.id, Some(key), "{\"agent\": "),
            StatusCode::BAD_REQUEST,
            "invalid json",
        ),
        (
            "wrong shape",
            post_metrics(project.id, Some(key), "{\"windows\": []}"),
            StatusCode::BAD_REQUEST,
            "missing field",
        ),
        (
            "missing key",
            post_metrics(project.id, None, good_json.clone()),
            StatusCode::UNAUTHORIZED,
            "sentry_key",
        ),
        (
            "wrong key",
            post_metrics(
                project.id,
                Some("0123456789abcdef0123456789abcdef"),
                good_json.clone(),
            ),
            StatusCode::FORBIDDEN,
            "sentry_key",
        ),
        (
            "unknown project",
            post_metrics(999, Some(key), good_json.clone()),
            StatusCode::NOT_FOUND,
            "project not found",
        ),
        (
            "oversized body",
            post_metrics(project.id, Some(key), oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
        // One good window and one bad: nothing at all may be stored.
        (
            "bad status class",
            post_batch(&project, &invalid),
            StatusCode::BAD_REQUEST,
            "status_class 7",
        ),
        (
            "misaligned window",
            post_batch(&project, &misaligned),
            StatusCode::BAD_REQUEST,
            "window_secs",
        ),
        (
            "inconsistent histogram",
            post_batch(&project, &inconsistent),
            StatusCode::BAD_REQUEST,
            "latency",
        ),
    ];
    for (what, request, status, reason) in cases {
        let answer = call(&router, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(reason), "{what}: {error:?} lacks {reason:?}");
        assert_eq!(table_rows(&dir).await, before, "{what} changed the store");
    }

    // The same key in the query string and in `Authorization` is accepted.
    let by_query = Request::post(format!("/api/{}/metrics?sentry_key={key}", project.id))
        .body(Body::from(good_json.clone()))
        .unwrap();
    assert_eq!(call(&router, by_query).await.status, StatusCode::OK);
    let by_authorization = Request::post(format!("/api/{}/metrics", project.id))
        .header(header::AUTHORIZATION, format!("Sentry sentry_key={key}"))
        .body(Body::from(good_json))
        .unwrap();
    assert_eq!(call(&router, by_authorization).await.status, StatusCode::OK);
    let stats = routes(&router, &project, T0, T0 + 10).await;
    assert_eq!(find(&stats, "/a", "GET")["requests"], 40);

    let metrics = call(&router, get("/metrics")).await.text();
    let rejected = |status: &str| {
        metric(
            &metrics,
            &format!(
                "sightline_ingest_requests_total{{endpoint=\"metrics\",outcome=\"rejected\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(rejected("400"), 5.0);
    assert_eq!(
        (
            rejected("401"),
            rejected("403"),
            rejected("404"),
            rejected("413")
        ),
        (1.0, 1.0, 1.0, 1.0)
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn too_many_windows_is_413() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.max_body_bytes = 64 * 1024 * 1024;
    let (collector, project) = open_with(config).await;
    let one = window(T0, "/a", "GET", 2, &[100]);
    let sent = batch(
        "host-1",
        vec![one; sightline_protocol::MAX_WINDOWS_PER_BATCH + 1],
    );
    expect_error(
        &collector.router(),
        post_batch(&project, &sent),
        StatusCode::PAYLOAD_TOO_LARGE,
        "windows",
    )
    .await;
    assert_eq!(table_rows(&dir).await, [1, 0, 0, 0]);
    collector.shutdown().await;
}

#[tokio::test]
async fn admin_token_guards_the_query_api_only() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.admin_token = Some("s3cret-token".to_owned());
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    let uri = format!("/api/0/projects/{}/routes/", project.id);
    let with = |value: &str| {
        Request::get(&uri)
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap()
    };
    expect_error(&router, get(&uri), StatusCode::UNAUTHORIZED, "admin token").await;
    expect_error(
        &router,
        get("/api/0/projects/"),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    expect_error(
        &router,
        with("Bearer s3cret-tokeN"),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    expect_error(
        &router,
        with("Bearer s3cret"),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    expect_error(
        &router,
        with("Basic s3cret-token"),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    assert_eq!(
        call(&router, with("Bearer s3cret-token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&router, with("bearer s3cret-token")).await.status,
        StatusCode::OK
    );
    // Unknown projects are not revealed without the token.
    expect_error(
        &router,
        get("/api/0/projects/999/routes/"),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    // Ingest authenticates by project key, ops endpoints are open.
    let sent = batch("host-1", vec![window(T0, "/a", "GET", 2, &[100])]);
    assert_eq!(
        call(&router, post_batch(&project, &sent)).await.status,
        StatusCode::OK
    );
    assert_eq!(call(&router, get("/health")).await.status, StatusCode::OK);
    assert_eq!(call(&router, get("/metrics")).await.status, StatusCode::OK);
    collector.shutdown().await;
}

/// What a `tracing` subscriber writes, for the test to read back.
#[derive(Clone, Default)]
struct Written(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Written {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

#[tokio::test]
async fn every_request_is_logged_at_debug_by_route_template_and_status() {
    let dir = TempDir::new().unwrap();
    let (collector, _) = open(&dir).await;
    let router = collector.router();
    let logged = |level: tracing::Level| {
        let written = Written::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer({
                let written = written.clone();
                move || written.clone()
            })
            .finish();
        (written, tracing::subscriber::set_default(subscriber))
    };

    let (written, guard) = logged(tracing::Level::DEBUG);
    let answer = call(&router, get("/api/0/issues/987654321/")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&router, get("/health")).await.status, StatusCode::OK);
    drop(guard);
    let lines: Vec<String> = written
        .lines()
        .into_iter()
        .filter(|line| line.contains("sightline_collector::http: request "))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The template, never the path with its ids.
    assert!(
        lines[0].contains(r#"method=GET route="/api/0/issues/{issue_id}/" status=404 elapsed_us="#),
        "{}",
        lines[0]
    );
    assert!(!lines[0].contains("987654321"), "{}", lines[0]);
    assert!(
        lines[1].contains(r#"method=GET route="/health" status=200 elapsed_us="#),
        "{}",
        lines[1]
    );

    // Not at the default level.
    let (written, guard) = logged(tracing::Level::INFO);
    assert_eq!(call(&router, get("/health")).await.status, StatusCode::OK);
    drop(guard);
    assert!(
        written
            .lines()
            .iter()
            .all(|line| !line.contains("http: request "))
    );
}

#[tokio::test]
async fn health_and_metrics_reflect_the_traffic() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.queue_capacity = 16;
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    let health = call(&router, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        json!({"status": "ok", "store": "ok", "queue_depth": 0, "queue_capacity": 16})
    );

    let mut first = batch("host-1", vec![window(T0, "/a", "GET", 2, &[100, 200])]);
    first.windows.push(window(T0, "/b", "GET", 2, &[300]));
    first.dropped_windows = 5;
    let mut second = batch("host-1", vec![window(T0 + 10, "/a", "GET", 2, &[100])]);
    second.dropped_windows = 7; // a running total: 2 more
    let mut other = batch("host-2", vec![window(T0 + 10, "/a", "GET", 2, &[100])]);
    other.dropped_windows = 1;
    for sent in [&first, &second, &other] {
        assert_eq!(
            call(&router, post_batch(&project, sent)).await.status,
            StatusCode::OK
        );
    }
    let wrong = post_metrics(
        project.id,
        Some("nope"),
        serde_json::to_vec(&first).unwrap(),
    );
    assert_eq!(call(&router, wrong).await.status, StatusCode::FORBIDDEN);

    let answer = call(&router, get("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = answer.text();
    let requests = "sightline_ingest_requests_total{endpoint=\"metrics\",outcome=";
    assert_eq!(
        metric(&text, &format!("{requests}\"accepted\",status=\"200\"}}")),
        3.0
    );
    assert_eq!(
        metric(&text, &format!("{requests}\"rejected\",status=\"403\"}}")),
        1.0
    );
    assert_eq!(
        metric(&text, &format!("{requests}\"rejected\",status=\"429\"}}")),
        0.0
    );
    assert_eq!(
        metric(&text, "sightline_ingest_windows_accepted_total"),
        4.0
    );
    assert_eq!(metric(&text, "sightline_agent_dropped_windows_total"), 8.0);
    assert_eq!(metric(&text, "sightline_ingest_queue_depth"), 0.0);
    assert_eq!(metric(&text, "sightline_ingest_queue_capacity"), 16.0);
    let commits = metric(&text, "sightline_store_write_seconds_count");
    assert!((1.0..=3.0).contains(&commits), "{commits} commits");
    assert_eq!(
        metric(&text, "sightline_store_write_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert!(metric(&text, "sightline_store_write_seconds_sum") > 0.0);

    // A store that does not answer makes the collector degraded.
    collector.clone().shutdown().await;
    let health = call(&router, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(health.json()["store"], "error");
    expect_error(
        &router,
        post_batch(&project, &other),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down",
    )
    .await;
}

#[tokio::test]
async fn data_survives_shutdown_and_reopen() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let values = latencies(40, 500);
    let sent = batch("host-1", vec![window(T0, "/a", "GET", 2, &values)]);
    assert_eq!(
        call(&collector.router(), post_batch(&project, &sent))
            .await
            .status,
        StatusCode::OK
    );
    collector.shutdown().await;

    let (reopened, again) = open(&dir).await;
    assert_eq!(again, project, "the default project is created once");
    assert_eq!(reopened.projects().await.unwrap().len(), 1);
    let stats = reopened
        .query()
        .routes(
            project.id,
            TimeRange {
                since: T0,
                until: T0 + 10,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].requests, 500);
    assert_close(
        stats[0].p99_ms,
        exact_quantile(&values, 0.99),
        "p99 after reopen",
    );
    reopened.shutdown().await;
}

// ---------------------------------------------------------------- a store the test can hold

/// The SQLite store with a gate in front of `write`, so the test decides when the writer
/// task gets through, and a record of how many batches each commit carried.
struct GatedStore {
    inner: SqliteStore,
    gate: Semaphore,
    /// Batches that reached `write`, committed or still waiting at the gate.
    batches_at_gate: AtomicUsize,
    commits: Mutex<Vec<usize>>,
}

#[async_trait]
impl Store for GatedStore {
    async fn ping(&self) -> Result<(), Error> {
        self.inner.ping().await
    }
    async fn projects(&self) -> Result<Vec<Project>, Error> {
        self.inner.projects().await
    }
    async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        self.inner.project(id).await
    }
    async fn ensure_default_project(&self) -> Result<(), Error> {
        self.inner.ensure_default_project().await
    }
    async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error> {
        self.write_with_backlog(batches, false).await
    }
    async fn write_with_backlog(
        &self,
        batches: &[Ingest],
        backlog: bool,
    ) -> Result<WriteSummary, Error> {
        self.batches_at_gate
            .fetch_add(batches.len(), Ordering::SeqCst);
        let _permit = self.gate.acquire().await.expect("gate open");
        let summary = self.inner.write_with_backlog(batches, backlog).await?;
        self.commits.lock().await.push(batches.len());
        Ok(summary)
    }
    async fn settle(&self) -> Result<(), Error> {
        self.inner.settle().await
    }
    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        self.inner
            .route_aggregates(project_id, range, environment)
            .await
    }
    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        self.inner
            .series_aggregates(project_id, range, steps, route, environment)
            .await
    }
    async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error> {
        self.inner.issues(project_id, filter).await
    }
    async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        self.inner.issue(issue_id).await
    }
    async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        self.inner.issue_tags(issue_id, top).await
    }
    async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.inner.issue_events(issue_id, limit, cursor, full).await
    }
    async fn event(&self, project_id: u64, event_id: &str) -> Result<Option<StoredEvent>, Error> {
        self.inner.event(project_id, event_id).await
    }
    async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error> {
        self.inner
            .set_issue_status(project_id, ids, status, now)
            .await
    }
    async fn item_counts(&self, project_id: u64, since_day: &str) -> Result<Vec<ItemCount>, Error> {
        self.inner.item_counts(project_id, since_day).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

/// Posts, from a task of its own, a batch of one `/a` window starting `10 * i` s after
/// `T0` with one request of `micros`.
fn spawn_post(
    router: &Router,
    project: &Project,
    i: i64,
    micros: u64,
) -> tokio::task::JoinHandle<Answer> {
    let request = post_batch(
        project,
        &batch(
            "host-1",
            vec![window(T0 + 10 * i, "/a", "GET", 2, &[micros])],
        ),
    );
    let router = router.clone();
    tokio::spawn(async move { call(&router, request).await })
}

async fn open_gated(dir: &TempDir, queue_capacity: usize) -> (Collector, Arc<GatedStore>, Project) {
    let mut config = config(dir);
    config.queue_capacity = queue_capacity;
    open_gated_with(config).await
}

async fn open_gated_with(config: Config) -> (Collector, Arc<GatedStore>, Project) {
    let store = Arc::new(GatedStore {
        inner: SqliteStore::open(&config.sqlite_path()).await.unwrap(),
        gate: Semaphore::new(0),
        batches_at_gate: AtomicUsize::new(0),
        commits: Mutex::new(Vec::new()),
    });
    let collector = Collector::with_store(config, store.clone()).await.unwrap();
    let project = collector.projects().await.unwrap().remove(0);
    (collector, store, project)
}

#[tokio::test]
async fn a_full_queue_answers_429_and_queued_batches_commit_together() {
    let dir = TempDir::new().unwrap();
    let (collector, store, project) = open_gated(&dir, 3).await;
    let router = collector.router();
    let send = |i: i64| spawn_post(&router, &project, i, 1_000);
    let depth = async || queue_depth(&router).await;

    // The first batch reaches the writer, which is held at the gate.
    let first = send(0);
    wait_until("the writer to take the first batch", async || {
        store.batches_at_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    // Three more fill the queue.
    let queued: Vec<_> = (1..=3).map(send).collect();
    wait_until("three queued batches", async || depth().await == Some(3)).await;
    let health = call(&router, get("/health")).await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store"], "ok");

    let refused = call(
        &router,
        post_batch(
            &project,
            &batch("host-1", vec![window(T0 + 40, "/a", "GET", 2, &[1_000])]),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    assert_eq!(refused.json(), json!({"error": "ingest queue full"}));
    let text = call(&router, get("/metrics")).await.text();
    assert_eq!(metric(&text, "sightline_ingest_queue_full_total"), 1.0);
    assert_eq!(metric(&text, "sightline_ingest_queue_depth"), 3.0);
    assert_eq!(
        table_rows(&dir).await,
        [1, 0, 0, 0],
        "nothing is committed before the gate opens"
    );

    store.gate.add_permits(100);
    for task in std::iter::once(first).chain(queued) {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    // One commit for the first batch, one for the three that waited behind it.
    assert_eq!(*store.commits.lock().await, [1, 3]);
    let stats = routes(&router, &project, T0, T0 + 60).await;
    assert_eq!(
        find(&stats, "/a", "GET")["requests"],
        4,
        "the refused batch is not stored"
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn a_busy_spell_commit_waits_for_requests_that_arrive_meanwhile() {
    let dir = TempDir::new().unwrap();
    let (collector, store, project) = open_gated_with(Config {
        commit_wait_ms: 10_000,
        commit_wait_batches: 3,
        ..config(&dir)
    })
    .await;
    let router = collector.router();
    let send = |i: i64| spawn_post(&router, &project, i, 1_000);
    // A lone batch is written without waiting (it is held at the gate).
    let first = send(0);
    wait_until("the writer to take the first batch", async || {
        store.batches_at_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    let queued: Vec<_> = (1..=2).map(send).collect();
    wait_until("two queued batches", async || {
        queue_depth(&router).await == Some(2)
    })
    .await;
    store.gate.add_permits(100);
    // The writer takes the two queued batches and, instead of writing them, waits (for
    // up to ten seconds) for a third: none reaches the gate meanwhile.
    wait_until("the writer to wait with two batches in hand", async || {
        queue_depth(&router).await == Some(0) && store.batches_at_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    let late = send(3);
    for task in [first].into_iter().chain(queued).chain([late]) {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    assert_eq!(*store.commits.lock().await, [1, 3]);
    collector.shutdown().await;
}

#[tokio::test]
async fn shutdown_commits_what_is_queued_then_refuses() {
    let dir = TempDir::new().unwrap();
    let (collector, store, project) = open_gated(&dir, 8).await;
    let router = collector.router();
    let send = |i: i64| spawn_post(&router, &project, i, 2_000);
    // One batch held in the writer, two more waiting in the queue.
    let mut tasks = vec![send(0)];
    wait_until("the writer to take the first batch", async || {
        store.batches_at_gate.load(Ordering::SeqCst) == 1
    })
    .await;
    tasks.extend((1..=2).map(send));
    wait_until("two queued batches", async || {
        queue_depth(&router).await == Some(2)
    })
    .await;

    // Shutdown is asked while they wait; only then may the writer go on.
    let shutdown = tokio::spawn(collector.clone().shutdown());
    wait_until("shutdown to signal the writer", async || {
        collector.writer.lock().unwrap().is_none()
    })
    .await;
    store.gate.add_permits(100);
    shutdown.await.unwrap();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    expect_error(
        &router,
        post_batch(
            &project,
            &batch("host-1", vec![window(T0, "/a", "GET", 2, &[1])]),
        ),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down",
    )
    .await;

    let (reopened, _) = open(&dir).await;
    let stats = reopened
        .query()
        .routes(
            project.id,
            TimeRange {
                since: T0,
                until: T0 + 60,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(stats[0].requests, 3);
    reopened.shutdown().await;
}
