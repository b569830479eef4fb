//! The load generator against the app served on an ephemeral loopback port.

mod common;

use std::time::{Duration, Instant};

use sightline_app::load::{self, LoadConfig, LoadError};
use tokio::sync::oneshot;

/// Serves a fresh app on 127.0.0.1:0; returns its base URL, the shutdown
/// trigger and the server task.
async fn served() -> (
    common::TestApp,
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = common::app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(sightline_app::serve(
        listener,
        app.router.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    (app, format!("http://{addr}"), stop, server)
}

#[tokio::test]
async fn refuses_non_loopback_targets_before_sending() {
    for target in [
        "http://example.com",
        "http://10.1.2.3:8080",
        "http://[2001:db8::1]:80",
    ] {
        let started = Instant::now();
        let err = load::run(LoadConfig {
            target: target.to_owned(),
            ..LoadConfig::default()
        })
        .await
        .expect_err(target);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(
                err.downcast_ref::<LoadError>(),
                Some(LoadError::NotLoopback { .. })
            ),
            "{target}: {err}"
        );
        assert!(err.to_string().contains("only loopback targets"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_max_requests_and_stops() {
    let (app, target, stop, server) = served().await;
    let duration = Duration::from_secs(60);
    let started = Instant::now();
    let report = load::run(LoadConfig {
        target,
        rate: None,
        concurrency: 4,
        max_requests: Some(300),
        duration,
        seed: 42,
    })
    .await
    .expect("load run");
    assert!(started.elapsed() < duration, "{report}");
    assert!(report.elapsed < duration);
    assert_eq!(report.sent, 300, "{report}");
    assert_eq!(
        report.ok + report.client_errors + report.server_errors + report.transport_errors,
        report.sent
    );
    assert_eq!(report.transport_errors, 0, "{report}");
    assert!(report.ok >= 240, "{report}");
    assert_eq!(report.per_route.values().sum::<u64>(), report.sent);
    assert!(report.per_route.len() >= 8, "{report}");
    // The server saw the writes.
    assert!(app.count("SELECT COUNT(id) FROM comments").await > sightline_app::SEED_COMMENTS);

    stop.send(()).expect("server still running");
    server.await.expect("join").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_an_unlimited_run() {
    let (_app, target, stop, server) = served().await;
    let report = load::run(LoadConfig {
        target,
        rate: None,
        concurrency: 4,
        max_requests: None,
        duration: Duration::from_millis(800),
        seed: 7,
    })
    .await
    .expect("load run");
    assert!(report.sent > 0, "{report}");
    // Stops at the deadline, give or take scheduling.
    assert!(report.elapsed >= Duration::from_millis(800), "{report}");
    assert!(report.elapsed < Duration::from_millis(1_500), "{report}");

    stop.send(()).expect("server still running");
    server.await.expect("join").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_paces_the_requests() {
    let (_app, target, stop, server) = served().await;
    let report = load::run(LoadConfig {
        target,
        rate: Some(40.0),
        concurrency: 4,
        max_requests: Some(1_000),
        duration: Duration::from_secs(1),
        seed: 9,
    })
    .await
    .expect("load run");
    // 40 req/s for one second: about 40 (the first tick fires at once); the
    // lower bound leaves room for ticks skipped on a busy machine.
    assert!((25..=45).contains(&report.sent), "{report}");

    stop.send(()).expect("server still running");
    server.await.expect("join").expect("serve");
}
