//! What the agent adds to a request: the same trivial axum handler through
//! `oneshot`, bare and instrumented. The agent reports to a closed local port, so
//! shipping fails quietly in the background as it would with the collector down.
//! `noop_layer` is the same router with a pass-through layer: axum re-boxes a layered
//! route and its future, so `instrumented − noop_layer` is what the agent itself costs.
//!
//! `cargo bench -p sightline-agent --bench layer`

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;

fn router() -> Router {
    Router::new().route("/users/{id}", get(|| async { "user" }))
}

async fn one_request(app: &Router) -> http::StatusCode {
    let req = Request::get("/users/42")
        .body(Body::empty())
        .expect("valid request");
    match app.clone().oneshot(req).await {
        Ok(res) => res.status(),
        Err(never) => match never {},
    }
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dsn = format!("http://benchkey@{}/1", closed.local_addr().expect("addr"));
    drop(closed);
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("valid dsn")
        .service("bench")
        .start()
        .expect("agent starts");

    let bare = router();
    let noop = router().layer(tower::util::MapRequestLayer::new(|req: Request<Body>| req));
    let instrumented = router().layer(agent.layer());

    let mut group = c.benchmark_group("oneshot");
    group.bench_function("bare", |b| b.iter(|| rt.block_on(one_request(&bare))));
    group.bench_function("noop_layer", |b| b.iter(|| rt.block_on(one_request(&noop))));
    group.bench_function("instrumented", |b| {
        b.iter(|| rt.block_on(one_request(&instrumented)))
    });
    group.finish();

    let stats = rt.block_on(guard.shutdown(Duration::from_millis(100)));
    eprintln!("agent stats after the benchmark: {stats:?}");
}

criterion_group!(benches, layer);
criterion_main!(benches);
