//! The `sightline` binary as scripts and operators meet it: start-up lines, health,
//! ingest auth, restart durability, `demo`.

mod common;

use std::time::Duration;

use common::{Sightline, eventually};
use serde_json::Value;
use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow};

fn batch(start: i64, route: &str, latencies_us: &[u64]) -> MetricBatch {
    let mut latency = Histogram::new();
    for &us in latencies_us {
        latency.record(us);
    }
    MetricBatch {
        agent: AgentInfo {
            service: "script".into(),
            instance: "e2e-1".into(),
            sdk: "test".into(),
            environment: None,
            release: None,
        },
        sent_at_ms: start * 1000,
        dropped_windows: 0,
        switch_evaluations: Default::default(),
        insight: Default::default(),
        windows: vec![RouteWindow {
            start,
            window_secs: 10,
            route: route.into(),
            method: "GET".into(),
            status_class: 2,
            latency,
        }],
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test]
async fn serve_prints_its_interfaces_and_keeps_data_across_restarts() {
    let server = Sightline::start("serve", &[], "dashboard:");
    assert_eq!(server.dsns.len(), 1, "{:?}", server.lines);
    let dsn: sightline_protocol::Dsn = server.dsns[0].parse().expect("dsn parses");
    assert_eq!(format!("http://{}:{}", dsn.host, dsn.port), server.base);

    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["status"], "ok");

    let start = now() / 10 * 10;
    let url = dsn.metrics_url();
    // Wrong key: refused and nothing stored.
    let wrong = client
        .post(&url)
        .header("X-Sentry-Auth", "Sentry sentry_key=0000, sentry_version=7")
        .json(&batch(start, "/wrong", &[10]))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 403);
    let malformed = client
        .post(&url)
        .header("X-Sentry-Auth", dsn.auth_header("test"))
        .header("content-type", "application/json")
        .body("{\"agent\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status(), 400);
    let reason: Value = malformed.json().await.expect("json error body");
    assert!(reason["error"].as_str().is_some_and(|r| !r.is_empty()));

    let ok = client
        .post(&url)
        .header("X-Sentry-Auth", dsn.auth_header("test"))
        .json(&batch(start, "/kept", &[1_000, 2_000, 3_000]))
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), 200);

    // SIGTERM, restart on the same data: same project key, the accepted batch is there,
    // the refused one is not.
    let first_dsn = server.dsns[0].clone();
    let data = server.stop();
    let server = Sightline::start_in("serve", &[], "dashboard:", data);
    let dsn2: sightline_protocol::Dsn = server.dsns[0].parse().expect("dsn");
    assert_eq!(
        dsn2.public_key, dsn.public_key,
        "{first_dsn} vs {}",
        server.dsns[0]
    );
    let rows: Vec<Value> = client
        .get(format!(
            "{}/api/0/projects/{}/routes/?statsPeriod=1h",
            server.base, dsn2.project_id
        ))
        .send()
        .await
        .expect("routes")
        .json()
        .await
        .expect("routes json");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["route"], "/kept");
    assert_eq!(rows[0]["requests"], 3);
}

#[tokio::test]
async fn demo_shows_live_numbers_within_seconds() {
    let started = std::time::Instant::now();
    let server = Sightline::start("demo", &["--demo-rate", "40"], "demo app:");
    let dsn: sightline_protocol::Dsn = server.dsns[0].parse().expect("dsn");
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/0/projects/{}/routes/?statsPeriod=15m",
        server.base, dsn.project_id
    );
    let rows: Vec<Value> = eventually(Duration::from_secs(30), "demo numbers in the API", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let rows: Vec<Value> = client.get(&url).send().await.ok()?.json().await.ok()?;
            (rows.len() >= 3).then_some(rows)
        }
    })
    .await;
    eprintln!(
        "demo: {} routes in the API {:?} after start",
        rows.len(),
        started.elapsed()
    );
    assert!(
        rows.iter()
            .all(|r| r["requests"].as_u64().is_some_and(|n| n > 0))
    );
    assert!(
        rows.iter().all(|r| !r["route"]
            .as_str()
            .unwrap_or("/")
            .contains(char::is_numeric)),
        "route templates, never raw paths: {rows:#?}"
    );

    // The dashboard renders those routes.
    let page = client
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("dashboard");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    let first = rows[0]["route"].as_str().expect("route");
    assert!(html.contains(first), "dashboard does not show {first}");

    let metrics = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("# TYPE"),
        "prometheus text expected:\n{metrics}"
    );
    let _ = server.stop();
}

#[test]
fn refuses_half_a_scale_out_store() {
    // ClickHouse without PostgreSQL (or the other way round) cannot work: refused at
    // start with a reason, not run on the embedded store behind the operator's back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--events",
            "clickhouse://127.0.0.1:8123",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("events (ClickHouse) and meta (PostgreSQL)"),
        "{stderr}"
    );
}

/// A thread's nice value, from `/proc/<pid>/task/<tid>/stat` (field 19).
fn nice_of(task: &std::path::Path) -> i64 {
    let stat = std::fs::read_to_string(task.join("stat")).expect("task stat");
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 1..];
    after_name
        .split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .expect("nice field")
}

#[test]
fn request_threads_yield_to_the_ingest_writer() {
    let server = Sightline::start("serve", &[], "dashboard:");
    let pid = server.child.id();
    let process_nice = nice_of(std::path::Path::new(&format!("/proc/{pid}")));
    // Every thread but the main one (named after the binary, as the runtime's are).
    let mut threads: Vec<(String, i64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .map(|task| task.expect("task").path())
        .filter(|task| !task.ends_with(pid.to_string()))
        .map(|task| {
            let name = std::fs::read_to_string(task.join("comm")).expect("comm");
            (name.trim().to_owned(), nice_of(&task))
        })
        .collect();
    threads.sort();
    let runtime: Vec<_> = threads.iter().filter(|(n, _)| n == "sightline").collect();
    assert!(!runtime.is_empty(), "{threads:?}");
    let nicer = (process_nice + 5).min(19);
    assert!(
        runtime.iter().all(|(_, nice)| *nice == nicer),
        "{threads:?}"
    );
    let writer = threads.iter().find(|(n, _)| n == "sightline-write");
    assert_eq!(writer.map(|w| w.1), Some(process_nice), "{threads:?}");
}
