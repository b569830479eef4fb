//! Scale-out ingest benchmark: a collector on ClickHouse + PostgreSQL (the servers
//! `scripts/services start` runs; their URLs from `SIGHTLINE_TEST_CLICKHOUSE` and
//! `SIGHTLINE_TEST_POSTGRES`), fed through its own HTTP router (no network client in the
//! way) as fast as it accepts, then timed until every row is readable through the query
//! API: metric windows per second and error events per second, stored. A benchmark, not
//! a test: the targets (≥ 100,000 metric rows/s, ≥ 20,000 events/s) are read off its
//! output and recorded in BENCHMARKS.md.
//!
//! ```sh
//! eval "$(scripts/services start)"
//! cargo bench -p sightline-collector --bench scaleout
//! # sizes: SIGHTLINE_BENCH_WINDOWS (default 1,000,000), SIGHTLINE_BENCH_EVENTS (200,000)
//! ```
//!
//! Metric rows: batches of 1,000 windows (100 routes × 10 ten-second windows) from 50
//! agents. Events: envelopes of one ~2 KB event each (as SDKs send them), 50 distinct
//! messages, 256 requests in flight (`SIGHTLINE_BENCH_EVENT_CLIENTS`): SDKs in many
//! processes sending at once, as `scripts/bench-errors` has 512 for SQLite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sightline_collector::Project;
use sightline_collector::{Collector, Config};
use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow};
use tower::ServiceExt;

mod common;

const ROUTES: usize = 100;
const WINDOWS_PER_ROUTE: usize = 10;
/// Metric batches in flight: a few agents' shipping threads at once.
const IN_FLIGHT: usize = 8;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn fresh_postgres(base: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (server, _) = base.rsplit_once('/').expect("postgres url");
    format!("{server}/{name}")
}

async fn post(router: &axum::Router, uri: String, body: Vec<u8>) {
    loop {
        let response = router
            .clone()
            .oneshot(
                Request::post(&uri)
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
                    .expect("request"),
            )
            .await
            .expect("router");
        match response.status() {
            StatusCode::OK => return,
            // A full queue or spool asks to come back: that is the bench's pace.
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => {
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                panic!("{uri}: {other} {}", String::from_utf8_lossy(&body));
            }
        }
    }
}

/// The JSON `uri` answers through the router.
async fn get_json(router: &axum::Router, uri: &str) -> serde_json::Value {
    serde_json::from_slice(&common::get(router, uri).await.1).expect("json")
}

fn batch(agent: usize, start: i64) -> Vec<u8> {
    let mut latency = Histogram::new();
    for v in [900, 1_500, 4_000, 12_000, 90_000] {
        latency.record(v);
    }
    let windows = (0..ROUTES)
        .flat_map(|route| {
            let latency = latency.clone();
            (0..WINDOWS_PER_ROUTE).map(move |w| RouteWindow {
                start: start + 10 * w as i64,
                window_secs: 10,
                route: format!("/bench/{route}"),
                method: "GET".into(),
                status_class: 2,
                latency: latency.clone(),
            })
        })
        .collect();
    serde_json::to_vec(&MetricBatch {
        agent: AgentInfo {
            service: "bench".into(),
            instance: format!("agent-{agent}"),
            sdk: "bench".into(),
            environment: None,
            release: None,
        },
        sent_at_ms: 0,
        dropped_windows: 0,
        switch_evaluations: Default::default(),
        insight: Default::default(),
        windows,
    })
    .expect("batch json")
}

fn envelope(n: usize) -> Vec<u8> {
    let event = serde_json::json!({
        "event_id": format!("{n:032x}"),
        "level": "error",
        "platform": "python",
        "message": format!("bench failure {} for user {n}", n % 50),
        "tags": {"worker": format!("w{}", n % 7)},
        "extra": {"padding": "x".repeat(1_700)},
    });
    let mut body = format!("{{\"event_id\":\"{n:032x}\"}}\n{{\"type\":\"event\"}}\n").into_bytes();
    body.extend(serde_json::to_vec(&event).expect("event json"));
    body.push(b'\n');
    body
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let clickhouse = std::env::var("SIGHTLINE_TEST_CLICKHOUSE")
        .expect("SIGHTLINE_TEST_CLICKHOUSE: run `eval \"$(scripts/services start)\"` first");
    let postgres = std::env::var("SIGHTLINE_TEST_POSTGRES")
        .expect("SIGHTLINE_TEST_POSTGRES: run `eval \"$(scripts/services start)\"` first");
    let windows = env_count("SIGHTLINE_BENCH_WINDOWS", 1_000_000);
    let events = env_count("SIGHTLINE_BENCH_EVENTS", 200_000);
    let aggregates = env_count("SIGHTLINE_BENCH_AGGREGATES", 10_000_000);
    let name = format!("sightline_bench_{}", std::process::id());
    let meta = fresh_postgres(&postgres, &name).await;
    let data = tempfile::tempdir().expect("data dir");
    let collector = Collector::open(Config {
        data_dir: data.path().to_owned(),
        events: Some(format!("{}/{name}", clickhouse.trim_end_matches('/'))),
        meta: Some(meta),
        // Room for a round's worth of batches in flight.
        queue_capacity: 4_096,
        ..Config::default()
    })
    .await
    .expect("collector");
    let project = collector.projects().await.expect("projects")[0].clone();
    let router = Arc::new(collector.router());

    if windows > 0 {
        ingest_windows(&router, &project, windows).await;
    }
    if events > 0 {
        ingest_events(&router, &project, events).await;
    }
    if aggregates > 0 {
        let database = format!("{}/{name}", clickhouse.trim_end_matches('/'));
        dashboard_queries(&router, &database, project.id, aggregates).await;
    }
    collector.shutdown().await;
}

/// Metric windows through `POST /api/<id>/metrics`, timed until the routes table counts
/// every request.
async fn ingest_windows(router: &Arc<axum::Router>, project: &Project, windows: usize) {
    let per_batch = ROUTES * WINDOWS_PER_ROUTE;
    let batches = windows.div_ceil(per_batch);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let start = (now - 1_800) / 600 * 600;
    let uri = format!(
        "/api/{}/metrics?sentry_key={}",
        project.id, project.public_key
    );
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|b| batch(b % 50, start + 100 * (b / 50) as i64))
        .collect();
    let began = Instant::now();
    futures_util::stream::iter(bodies)
        .for_each_concurrent(IN_FLIGHT, |body| {
            let (router, uri) = (router.clone(), uri.clone());
            async move { post(&router, uri, body).await }
        })
        .await;
    let accepted = began.elapsed();
    let expected = (batches * per_batch * 5) as u64;
    let routes = format!("/api/0/projects/{}/routes/?statsPeriod=24h", project.id);
    loop {
        let rows = get_json(router, &routes).await;
        let stored: u64 = rows
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["requests"].as_u64()).sum())
            .unwrap_or(0);
        if stored >= expected {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(1_800),
            "windows never all stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = began.elapsed();
    let rows = (batches * per_batch) as f64;
    println!(
        "metric windows: {} rows in {} batches; accepted in {:.1} s ({:.0} rows/s), readable after {:.1} s ({:.0} rows/s stored)",
        batches * per_batch,
        batches,
        accepted.as_secs_f64(),
        rows / accepted.as_secs_f64(),
        stored.as_secs_f64(),
        rows / stored.as_secs_f64()
    );
}

/// Envelopes of one event each through `POST /api/<id>/envelope/`, timed until the
/// issue list counts every event.
async fn ingest_events(router: &Arc<axum::Router>, project: &Project, events: usize) {
    let uri = format!(
        "/api/{}/envelope/?sentry_key={}",
        project.id, project.public_key
    );
    let began = Instant::now();
    futures_util::stream::iter(0..events)
        .for_each_concurrent(env_count("SIGHTLINE_BENCH_EVENT_CLIENTS", 256), |n| {
            let (router, uri) = (router.clone(), uri.clone());
            async move { post(&router, uri, envelope(n)).await }
        })
        .await;
    let accepted = began.elapsed();
    let issues = format!("/api/0/projects/{}/issues/?limit=100", project.id);
    loop {
        let list = get_json(router, &issues).await;
        let counted: u64 = list
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|i| i["count"].as_str()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        if counted >= events as u64 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(1_800),
            "events never all stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = began.elapsed();
    println!(
        "error events: {events} (~2 KB each); accepted in {:.1} s ({:.0} events/s), counted after {:.1} s ({:.0} events/s stored)",
        accepted.as_secs_f64(),
        events as f64 / accepted.as_secs_f64(),
        stored.as_secs_f64(),
        events as f64 / stored.as_secs_f64()
    );
}

/// Keys per 10-second window in the query phase: 20 routes × {2xx, 5xx}.
const QUERY_ROUTES: u64 = 20;
const QUERY_KEYS: u64 = 2 * QUERY_ROUTES;
/// Timed runs per query after one warm-up.
const QUERY_RUNS: usize = 30;

/// Seeds `aggregates` agent windows of request aggregates (10-second windows, 20 routes ×
/// {2xx, 5xx}, ending now, back as far as the count reaches: 10 M is 29 days) and one
/// route-insight window per route and window, then times every dashboard read of route
/// windows over 15 m … 30 d through the router.
///
/// The rows are generated by ClickHouse itself (`INSERT … SELECT … FROM numbers`) into the
/// same `Null` input tables ingest writes, so the materialized views fold them into every
/// tier exactly as they fold ingested batches; sending 10 M windows through HTTP would
/// measure ingest, which the first phase does.
async fn dashboard_queries(
    router: &axum::Router,
    database: &str,
    project_id: u64,
    aggregates: usize,
) {
    let (endpoint, db) = database.rsplit_once('/').expect("clickhouse url");
    let client = clickhouse::Client::default()
        .with_url(endpoint)
        .with_database(db)
        .with_validation(false);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let slots = (aggregates as u64).div_ceil(QUERY_KEYS);
    let first = (now / 10 - slots) * 10;
    let began = Instant::now();
    // Chunks of ~1 M rows, oldest first: each insert block spans a few hours, so it
    // writes one or two daily partitions per tier.
    let chunk_slots = 1_000_000 / QUERY_KEYS;
    let mut slot = 0;
    while slot < slots {
        let count = chunk_slots.min(slots - slot);
        // n → window `first + 10 × (slot + n / KEYS)`, key `n % KEYS`: route `key / 2`,
        // status class 2 or 5. Eight latency buckets around a route-specific median
        // (bucket 350 ≈ 1 ms), counts from a hash of the row.
        let windows = format!(
            "INSERT INTO windows_in
             SELECT {project_id}, '', concat('/bench/resource', toString(intDiv(n % {QUERY_KEYS}, 2)), '/{{id}}'),
                    'GET', if(n % 2 = 0, 2, 5), toInt64({first} + 10 * intDiv(n, {QUERY_KEYS})), 10,
                    arraySum(counts), arraySum(arrayMap((b, c) -> toUInt64(c * pow(1.0202, b)), buckets, counts)),
                    toUInt64(pow(1.0202, buckets[1])), toUInt64(pow(1.0202, buckets[8])),
                    buckets, counts
             FROM (SELECT number + {offset} AS n,
                          arrayMap(i -> toInt32(330 + 8 * (n % {QUERY_KEYS}) + 6 * i), range(8)) AS buckets,
                          arrayMap(i -> toUInt64(1 + cityHash64(n, i) % 12), range(8)) AS counts
                   FROM numbers({rows}))",
            offset = slot * QUERY_KEYS,
            rows = count * QUERY_KEYS,
        );
        client
            .query(&windows)
            .execute()
            .await
            .expect("seed windows");
        let insight = format!(
            "INSERT INTO insight_routes_in
             SELECT {project_id}, '', concat('/bench/resource', toString(n % {QUERY_ROUTES}), '/{{id}}'),
                    'GET', toInt64({first} + 10 * intDiv(n, {QUERY_ROUTES})), 10,
                    arraySum(counts), 3 * arraySum(counts), 900 * arraySum(counts),
                    arraySum(counts), 40 * arraySum(counts), 4096 * arraySum(counts),
                    if(n % {QUERY_ROUTES} = 3, arraySum(counts), 0),
                    [toInt32(56)], [arraySum(counts)],
                    buckets, counts, [toInt32(186)], [arraySum(counts)],
                    [toInt32(420)], [arraySum(counts)]
             FROM (SELECT number + {offset} AS n,
                          arrayMap(i -> toInt32(300 + 6 * i), range(8)) AS buckets,
                          arrayMap(i -> toUInt64(1 + cityHash64(n, i) % 12), range(8)) AS counts
                   FROM numbers({rows}))",
            offset = slot * QUERY_ROUTES,
            rows = count * QUERY_ROUTES,
        );
        client
            .query(&insight)
            .execute()
            .await
            .expect("seed insight");
        slot += count;
    }
    let seeded = began.elapsed();
    println!(
        "\ndashboard queries: seeded {} request-aggregate windows ({} days) and {} route-insight windows in {:.0} s",
        slots * QUERY_KEYS,
        slots * 10 / 86_400,
        slots * QUERY_ROUTES,
        seeded.as_secs_f64()
    );
    for family in ["route_windows", "insight_routes"] {
        for suffix in ["", "_1m", "_1h", "_1d"] {
            let table = format!("{family}{suffix}");
            let (rows, parts) = client
                .query(
                    "SELECT toUInt64(sum(rows)), toUInt64(count()) FROM system.parts
                     WHERE active AND database = ? AND table = ?",
                )
                .bind(db)
                .bind(&table)
                .fetch_one::<(u64, u64)>()
                .await
                .expect("parts");
            println!("  {table:<20} {rows:>10} rows in {parts} active parts");
        }
    }
    common::print_header();
    let one = "route=/bench/resource7/%7Bid%7D&method=GET";
    for (period, step) in [
        ("15m", 60),
        ("1h", 60),
        ("24h", 900),
        ("7d", 3_600),
        ("30d", 21_600),
    ] {
        let p = format!("statsPeriod={period}");
        let id = project_id;
        for (name, uri) in [
            ("routes", format!("/api/0/projects/{id}/routes/?{p}")),
            (
                "series (all routes)",
                format!("/api/0/projects/{id}/series/?{p}&interval={step}"),
            ),
            (
                "series (one route)",
                format!("/api/0/projects/{id}/series/?{p}&interval={step}&{one}"),
            ),
            (
                "routes/insight",
                format!("/api/0/projects/{id}/routes/insight/?{p}"),
            ),
            (
                "routes/top",
                format!("/api/0/projects/{id}/routes/top/?{p}&limit=10"),
            ),
        ] {
            timed_reads(router, name, period, &uri).await;
        }
    }
}

/// Runs `uri` once to warm up, then [`QUERY_RUNS`] times, and prints p50/p95/max of the
/// wall clock through the router (JSON included). Panics unless every answer is a 200
/// with rows in it.
async fn timed_reads(router: &axum::Router, name: &str, period: &str, uri: &str) {
    let mut times = Vec::with_capacity(QUERY_RUNS);
    for run in 0..=QUERY_RUNS {
        let (took, body) = common::get(router, uri).await;
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let rows = answer
            .as_array()
            .or_else(|| answer["routes"].as_array())
            .or_else(|| answer["points"].as_array())
            .map_or(1, Vec::len);
        assert!(rows > 0, "{uri}: no rows in {answer}");
        if run > 0 {
            times.push(took);
        }
    }
    common::print_times(name, period, &mut times);
}
