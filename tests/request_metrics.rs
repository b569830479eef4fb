//! End to end: the demo app, instrumented with the agent, reports to a real `sightline
//! serve` process; the query API must show exact per-route counts and quantiles within
//! the histogram's error bound.
//!
//! True latencies come from two recording layers that sandwich the agent's layer: for
//! every request `inner ≤ agent ≤ outer`, so each order statistic the agent saw lies
//! between the inner and outer ones, and the API's quantile must lie within the
//! histogram's relative error of that band.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use common::{Sightline, eventually};
use serde_json::Value;

type Key = (String, String); // (route, method)
/// (status, microseconds) of every request, per route × method.
type Samples = BTreeMap<Key, Vec<(u16, u64)>>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Samples>>);

async fn record(State(rec): State<Recorder>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| sightline_agent::UNMATCHED_ROUTE.to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let micros = start.elapsed().as_micros() as u64;
    rec.0
        .lock()
        .expect("recorder lock")
        .entry((route, method))
        .or_default()
        .push((response.status().as_u16(), micros));
    response
}

fn nearest_rank(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1] as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_app_metrics_reach_the_query_api_exactly() {
    let server = Sightline::start("serve", &[], "dashboard:");
    let dsn = server.dsns.first().expect("a dsn line").clone();
    let project_id = dsn.rsplit('/').next().expect("project id").to_owned();

    let app_dir = tempfile::tempdir().expect("temp dir");
    let db = sightline_app::open_db(&app_dir.path().join("app.db"))
        .await
        .expect("app db");
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("dsn")
        .service("comments")
        .window(Duration::from_secs(1))
        .start()
        .expect("agent");
    let (inner, outer) = (Recorder::default(), Recorder::default());
    let app = sightline_app::router(db)
        .layer(from_fn_with_state(inner.clone(), record))
        .layer(agent.layer())
        .layer(from_fn_with_state(outer.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app_base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app_task = tokio::spawn(sightline_app::serve(listener, app, async {
        let _ = stop_rx.await;
    }));

    // A known number of requests per route, including slow, failing, N+1, allocating
    // and unmatched ones.
    let plan: &[(&str, &str, Option<Value>, usize)] = &[
        ("GET", "/threads", None, 40),
        ("GET", "/threads/3", None, 25),
        ("GET", "/threads/999999", None, 5),
        (
            "POST",
            "/threads/2/comments",
            Some(serde_json::json!({"user_id": 4, "body": "nice thread"})),
            12,
        ),
        (
            "POST",
            "/threads/2/comments",
            Some(serde_json::json!({"user_id": 4})),
            3,
        ),
        ("GET", "/users/7", None, 20),
        ("GET", "/leaderboard", None, 30),
        ("GET", "/search?q=rust", None, 6),
        ("GET", "/search?q=observability", None, 6),
        ("GET", "/threads/1/export", None, 4),
        ("GET", "/flaky", None, 80),
        ("GET", "/definitely/not/a/route", None, 7),
    ];
    let client = reqwest::Client::new();
    let mut sent = 0u64;
    for (method, path, body, n) in plan {
        for _ in 0..*n {
            let url = format!("{app_base}{path}");
            let request = match *method {
                "GET" => client.get(&url),
                _ => client.post(&url).json(body.as_ref().expect("post body")),
            };
            request.send().await.expect("app answers");
            sent += 1;
        }
    }

    let stats = guard.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.windows_dropped, 0, "agent dropped windows: {stats:?}");
    assert_eq!(stats.requests, sent);
    let _ = stop_tx.send(());
    app_task.await.expect("app task").expect("app served");

    let outer = outer.0.lock().expect("lock").clone();
    let inner = inner.0.lock().expect("lock").clone();
    assert_eq!(outer.values().map(Vec::len).sum::<usize>() as u64, sent);

    let routes_url = format!(
        "{}/api/0/projects/{project_id}/routes/?statsPeriod=1h",
        server.base
    );
    let rows: Vec<Value> = eventually(Duration::from_secs(20), "all requests in the API", || {
        let (client, url) = (client.clone(), routes_url.clone());
        async move {
            let rows: Vec<Value> = client.get(&url).send().await.ok()?.json().await.ok()?;
            let total: u64 = rows
                .iter()
                .map(|r| r["requests"].as_u64().unwrap_or(0))
                .sum();
            (total == sent).then_some(rows)
        }
    })
    .await;

    assert_eq!(
        rows.len(),
        outer.len(),
        "one row per route × method: {rows:#?}"
    );
    for ((route, method), outer_samples) in &outer {
        let row = rows
            .iter()
            .find(|r| r["route"] == route.as_str() && r["method"] == method.as_str())
            .unwrap_or_else(|| panic!("no row for {method} {route}"));
        assert_eq!(
            row["requests"].as_u64(),
            Some(outer_samples.len() as u64),
            "{method} {route}"
        );
        let mut classes = [0u64; 5];
        for (status, _) in outer_samples {
            classes[usize::from(status / 100) - 1] += 1;
        }
        let api_classes: Vec<u64> = row["status_classes"]
            .as_array()
            .expect("status_classes")
            .iter()
            .map(|c| c.as_u64().expect("count"))
            .collect();
        assert_eq!(api_classes, classes, "{method} {route} status classes");
        assert_eq!(
            row["errors"].as_u64(),
            Some(classes[4]),
            "{method} {route} errors"
        );

        let mut lo: Vec<u64> = inner
            .get(&(route.clone(), method.clone()))
            .map(|v| v.iter().map(|&(_, us)| us).collect())
            .unwrap_or_default();
        let mut hi: Vec<u64> = outer_samples.iter().map(|&(_, us)| us).collect();
        if lo.len() != hi.len() {
            // The inner layer does not see requests that never reach a route handler
            // (axum answers those itself); bound them below by zero.
            lo = vec![0; hi.len()];
        }
        lo.sort_unstable();
        hi.sort_unstable();
        for (q, field) in [(0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")] {
            let got = row[field].as_f64().expect(field);
            let (low, high) = (nearest_rank(&lo, q) * 0.98, nearest_rank(&hi, q) * 1.02);
            assert!(
                low <= got && got <= high,
                "{method} {route} {field} = {got} ms, true value between {low} and {high} ms"
            );
        }
    }

    // The flaky route really produced both outcomes, so the class split above was tested.
    let flaky = &outer[&("/flaky".to_owned(), "GET".to_owned())];
    assert!(flaky.iter().any(|&(s, _)| s == 500) && flaky.iter().any(|&(s, _)| s == 200));

    // The all-routes time series adds up to the same total.
    let series: Vec<Value> = client
        .get(format!(
            "{}/api/0/projects/{project_id}/series/?statsPeriod=1h&interval=60",
            server.base
        ))
        .send()
        .await
        .expect("series")
        .json()
        .await
        .expect("series json");
    let total: u64 = series
        .iter()
        .map(|p| p["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, sent);
}
