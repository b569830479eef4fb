//! End to end: performance insight. The demo app, instrumented with the agent's request
//! layer, tracing layer and counting allocator, reports to a real `sightline serve`; the
//! query API must flag the N+1 route with the right statement and repeat count, show the
//! slow route's waterfall in order, count exactly the queries each handler ran, and tally
//! the allocating route within 5 % of what a test allocator measured around the handler.

// A `#[global_allocator]` must implement the unsafe `GlobalAlloc` trait: the test
// allocator below wraps the agent's counting allocator and adds its own per-thread
// counters, to measure allocations independently of the agent.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use common::{Sightline, eventually};
use serde_json::Value;
use tracing_subscriber::prelude::*;

thread_local! {
    // const and destructor-free: safe to touch from inside the allocator.
    static TEST_ALLOCS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The agent's counting allocator, plus counters of its own.
struct TestAlloc;

static INNER: sightline_agent::CountingAllocator = sightline_agent::CountingAllocator::new();

fn count(bytes: usize) {
    let _ = TEST_ALLOCS.try_with(|c| {
        let (n, b) = c.get();
        c.set((n + 1, b + bytes as u64));
    });
}

// SAFETY: every method forwards its arguments unchanged to the counting allocator (which
// forwards to `System`); the counting touches only a const thread-local `Cell` and never
// allocates or panics.
unsafe impl GlobalAlloc for TestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from `INNER`.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from `INNER`.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: TestAlloc = TestAlloc;

fn test_counts() -> (u64, u64) {
    TEST_ALLOCS.with(Cell::get)
}

/// `(allocations, bytes)` of every request the inner measuring layer saw, by path.
type Measured = Arc<Mutex<Vec<(String, u64, u64)>>>;

/// A future that adds up what its polls allocate on the polling thread.
struct Measuring {
    inner: Pin<Box<dyn Future<Output = Response> + Send>>,
    totals: (u64, u64),
    path: String,
    sink: Measured,
}

impl Future for Measuring {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let before = test_counts();
        let polled = self.inner.as_mut().poll(cx);
        let after = test_counts();
        self.totals.0 += after.0 - before.0;
        self.totals.1 += after.1 - before.1;
        if polled.is_ready() {
            let (path, totals) = (std::mem::take(&mut self.path), self.totals);
            self.sink
                .lock()
                .expect("sink")
                .push((path, totals.0, totals.1));
        }
        polled
    }
}

async fn measure(State(sink): State<Measured>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    Measuring {
        inner: Box::pin(next.run(req)),
        totals: (0, 0),
        path,
        sink,
    }
    .await
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.expect("api answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_one_waterfall_query_counts_and_allocations() {
    // sqlx runs SQLite statements on worker threads: only a global subscriber sees them.
    tracing_subscriber::registry()
        .with(sightline_agent::tracing_layer())
        .try_init()
        .expect("global subscriber");

    let server = Sightline::start("serve", &[], "dashboard:");
    let dsn = server.dsns.first().expect("a dsn line").clone();
    let project_id = dsn.rsplit('/').next().expect("project id").to_owned();
    let api = format!("{}/api/0/projects/{project_id}", server.base);

    let app_dir = tempfile::tempdir().expect("temp dir");
    let db = sightline_app::open_db(&app_dir.path().join("app.db"))
        .await
        .expect("app db");
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("dsn")
        .service("comments")
        .window(Duration::from_secs(1))
        .exemplar_slow_threshold(Duration::from_millis(15))
        .exemplar_sample_rate(0.0)
        .max_exemplars_per_window(1_000)
        .start()
        .expect("agent");
    let measured = Measured::default();
    let app = sightline_app::router(db)
        .layer(from_fn_with_state(measured.clone(), measure))
        .layer(agent.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app_task = tokio::spawn(sightline_app::serve(listener, app, async {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::new();
    // Warm the app's connection pool: a new connection runs its `PRAGMA`s inside whichever
    // request asked for it, and they would count as that request's queries.
    let warm: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{app_base}/users/1"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for request in warm {
        assert!(request.await.expect("task").expect("answer").is_success());
    }
    // The app's own answer says how many comments thread 3 has: `GET /threads/3` runs one
    // query for the thread, one for its comments and one per comment for its author.
    let threads = get_json(&client, &format!("{app_base}/threads")).await;
    let comments = threads["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|t| t["id"] == 3)
        .and_then(|t| t["comment_count"].as_u64())
        .expect("thread 3");
    assert!(comments >= 5, "thread 3 has {comments} comments");
    for _ in 0..5 {
        get_json(&client, &format!("{app_base}/threads/3")).await;
    }
    for q in ["rust", "latency", "cache"] {
        get_json(&client, &format!("{app_base}/search?q={q}")).await;
    }
    for _ in 0..3 {
        get_json(&client, &format!("{app_base}/threads/1/export")).await;
    }
    let stats = guard.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.windows_dropped, 0, "{stats:?}");
    // The API's ranges end at the current second: let the last 1-second window close.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let _ = stop_tx.send(());
    app_task.await.expect("app task").expect("app served");

    // N+1: the author lookup, once per comment of the thread, in each of the 5 requests.
    let author_sql = "SELECT u.id, u.username, p.display_name \
                      FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?";
    let author = format!("{:016x}", sightline_agent::fingerprint(author_sql));
    let suspects: Vec<Value> = eventually(Duration::from_secs(20), "n+1 suspects", || {
        let (client, url) = (client.clone(), format!("{api}/queries/n_plus_one/"));
        async move {
            let rows: Vec<Value> = client.get(&url).send().await.ok()?.json().await.ok()?;
            let total: u64 = rows.iter().filter_map(|r| r["requests"].as_u64()).sum();
            (total >= 5).then_some(rows)
        }
    })
    .await;
    assert_eq!(suspects.len(), 1, "{suspects:#?}");
    let suspect = &suspects[0];
    assert_eq!(suspect["route"], "/threads/{id}");
    assert_eq!(suspect["method"], "GET");
    assert_eq!(suspect["fingerprint"], author.as_str());
    assert_eq!(suspect["sql"], sightline_agent::normalize_sql(author_sql));
    assert_eq!(suspect["requests"], 5);
    assert_eq!(suspect["route_requests"], 5);
    assert_eq!(suspect["max_repeats"], comments);
    assert_eq!(suspect["mean_repeats"].as_f64(), Some(comments as f64));

    // Per-request query counts are exactly what the handlers ran.
    let routes = get_json(&client, &format!("{api}/routes/insight/")).await;
    let route = |name: &str| {
        routes
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["route"] == name)
            .unwrap_or_else(|| panic!("no insight row for {name}: {routes:#?}"))
            .clone()
    };
    let thread = route("/threads/{id}");
    assert_eq!(thread["requests"], 5);
    assert_eq!(
        thread["queries_per_request"].as_f64(),
        Some((comments + 2) as f64)
    );
    assert_eq!(thread["n_plus_one"], true);
    assert_eq!(route("/search")["queries_per_request"].as_f64(), Some(2.0));
    assert_eq!(route("/threads")["queries_per_request"].as_f64(), Some(1.0));
    assert_eq!(
        route("/threads/{id}/export")["queries_per_request"].as_f64(),
        Some(2.0)
    );
    assert_eq!(route("/search")["n_plus_one"], false);

    // The slow statement list names the author lookup with its calling route.
    let queries = get_json(&client, &format!("{api}/queries/?sort=count")).await;
    let top = &queries[0];
    assert_eq!(top["fingerprint"], author.as_str());
    assert_eq!(top["count"].as_u64(), Some(5 * comments));
    assert_eq!(top["routes"][0]["route"], "/threads/{id}");
    assert_eq!(top["routes"][0]["count"].as_u64(), Some(5 * comments));

    // The slow route's exemplar: its two queries, then the backend call, in order.
    let list = get_json(
        &client,
        &format!("{api}/exemplars/?route=/search&method=GET"),
    )
    .await;
    let list = list.as_array().expect("exemplars");
    assert_eq!(list.len(), 3, "{list:#?}");
    let id = list[0]["id"].as_u64().expect("id");
    assert!(
        list[0]["reasons"]
            .as_array()
            .expect("reasons")
            .contains(&"slow".into())
    );
    let detail = get_json(&client, &format!("{api}/exemplars/{id}/")).await;
    assert_eq!(detail["route"], "/search");
    assert_eq!(detail["queries"], 2);
    let steps: Vec<(String, String)> = detail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                e["name"].as_str().expect("name").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (
                "query".to_owned(),
                "select count (id) from comments where body like ? escape ?".to_owned()
            ),
            (
                "query".to_owned(),
                "select id, thread_id, body from comments where body like ? escape ? order by id limit ?"
                    .to_owned()
            ),
            ("span".to_owned(), "search.backend".to_owned()),
        ]
    );
    let offsets: Vec<f64> = detail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["offset_ms"].as_f64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    let backend = &detail["entries"][2];
    assert!(
        backend["duration_ms"].as_f64().expect("duration") >= 19.0,
        "{backend}"
    );

    // Allocations: the agent's per-request tally of the export route against what the test
    // allocator counted around the handler.
    let export: Vec<(u64, u64)> = measured
        .lock()
        .expect("measured")
        .iter()
        .filter(|(path, _, _)| path == "/threads/1/export")
        .map(|&(_, n, b)| (n, b))
        .collect();
    assert_eq!(export.len(), 3);
    let direct_allocs = export.iter().map(|e| e.0).sum::<u64>() as f64 / 3.0;
    let direct_bytes = export.iter().map(|e| e.1).sum::<u64>() as f64 / 3.0;
    let export_row = route("/threads/{id}/export");
    assert_eq!(export_row["alloc_requests"], 3);
    let agent_allocs = export_row["allocs_per_request"].as_f64().expect("allocs");
    let agent_bytes = export_row["bytes_per_request"].as_f64().expect("bytes");
    assert!(direct_bytes > 1_000_000.0, "{direct_bytes}");
    for (what, agent, direct) in [
        ("allocations", agent_allocs, direct_allocs),
        ("bytes", agent_bytes, direct_bytes),
    ] {
        let error = (agent - direct).abs() / direct;
        assert!(
            error <= 0.05,
            "{what}: agent {agent}, test allocator {direct} ({:.2} % apart)",
            error * 100.0
        );
    }

    // The heap series of this process, and the storage report.
    let heap = get_json(&client, &format!("{api}/heap/?statsPeriod=15m&interval=10")).await;
    let series = heap.as_array().expect("heap");
    assert_eq!(series.len(), 1, "{heap:#?}");
    assert!(
        series[0]["points"]
            .as_array()
            .expect("points")
            .iter()
            .all(|p| p["live_bytes"].as_u64() > Some(0))
    );
    let storage = get_json(&client, &format!("{}/api/0/storage/", server.base)).await;
    assert!(storage["db_bytes"].as_u64() > Some(0));
    assert!(
        storage["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .any(|t| t["table"] == "exemplars" && t["rows"].as_u64() >= Some(3))
    );
    let top = get_json(&client, &format!("{api}/routes/top/")).await;
    let shares: f64 = top
        .as_array()
        .expect("top")
        .iter()
        .filter_map(|r| r["share"].as_f64())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "{top:#?}");
}
