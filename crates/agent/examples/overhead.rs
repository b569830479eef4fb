//! Instruction counts per request for callgrind, where wall-clock benchmarks are too
//! noisy (a shared machine): runs `N` trivial requests through one router variant.
//!
//! ```sh
//! cargo build --release -p sightline-agent --example overhead
//! for v in bare noop instrumented; do for n in 1000 2000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$v.$n \
//!     target/release/examples/overhead $v $n 2>&1 | grep refs
//! done; done
//! ```
//!
//! `(Ir at 2000 − Ir at 1000) / 1000` is the cost of one request, without start-up.
//! `traced` is `instrumented` with the insight tracing layer installed. `queries` runs
//! one request emitting `N` sqlx-shaped events through the tracing layer and
//! `queries_plain` the same without it, for the cost per query event.

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use tower::ServiceExt;
use tracing_subscriber::prelude::*;

async fn one(app: &Router, path: &str) -> http::StatusCode {
    let req = Request::get(path).body(Body::empty()).expect("request");
    match app.clone().oneshot(req).await {
        Ok(res) => res.status(),
        Err(never) => match never {},
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "instrumented".to_owned());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dsn = format!("http://benchkey@{}/1", closed.local_addr().expect("addr"));
    drop(closed);
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("valid dsn")
        .service("overhead")
        .n_plus_one_threshold(u32::MAX)
        .exemplar_sample_rate(0.0)
        .start()
        .expect("agent starts");

    let queries = move || {
        for i in 0..n {
            tracing::debug!(
                target: "sqlx::query",
                summary = "SELECT u.id, u.username, …",
                db.statement = "\n\nSELECT u.id, u.username, p.display_name FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = ?\n",
                rows_affected = 0u64,
                rows_returned = 1u64,
                elapsed_secs = black_box(0.000_1f64 + i as f64 * 1e-9),
            );
        }
        "ok"
    };
    let routes = || {
        Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/queries", get(move || async move { queries() }))
    };

    let status = match variant.as_str() {
        "bare" | "noop" | "instrumented" => {
            let app = match variant.as_str() {
                "bare" => routes(),
                "noop" => {
                    routes().layer(tower::util::MapRequestLayer::new(|req: Request<Body>| req))
                }
                _ => routes().layer(agent.layer()),
            };
            let mut last = http::StatusCode::OK;
            for _ in 0..n {
                last = rt.block_on(one(&app, "/users/42"));
            }
            last
        }
        "traced" => {
            let app = routes().layer(agent.layer());
            let dispatch = tracing::Dispatch::new(
                tracing_subscriber::registry().with(sightline_agent::tracing_layer()),
            );
            tracing::dispatcher::with_default(&dispatch, || {
                let mut last = http::StatusCode::OK;
                for _ in 0..n {
                    last = rt.block_on(one(&app, "/users/42"));
                }
                last
            })
        }
        "queries" | "queries_plain" => {
            let app = routes().layer(agent.layer());
            let dispatch = if variant == "queries" {
                tracing::Dispatch::new(
                    tracing_subscriber::registry().with(sightline_agent::tracing_layer()),
                )
            } else {
                tracing::Dispatch::new(tracing_subscriber::registry())
            };
            tracing::dispatcher::with_default(&dispatch, || rt.block_on(one(&app, "/queries")))
        }
        other => {
            eprintln!(
                "unknown variant {other}: bare, noop, instrumented, traced, queries, queries_plain"
            );
            std::process::exit(2);
        }
    };
    black_box(status);
    rt.block_on(guard.shutdown(std::time::Duration::from_millis(10)));
}
