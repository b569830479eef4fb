//! What performance insight costs the app:
//!
//! - `alloc/system` vs `alloc/counting`: one 64-byte alloc/free pair through `System`
//!   and through the `CountingAllocator`;
//! - `query_event/*`: a handler emitting 100 sqlx-shaped query events, without and with
//!   the tracing layer (the difference / 100 is the cost per event);
//! - `request/*`: one trivial request, bare (no agent, counting off, no tracing layer) vs
//!   the whole agent (request layer + tracing layer + counting allocator).
//!
//! The bench's global allocator forwards to `System` or to the counting allocator by a
//! switch, so both sides of a comparison run in the same process.
//!
//! `cargo bench -p sightline-agent --bench insight`

// The switchable global allocator implements the unsafe `GlobalAlloc` trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use tracing_subscriber::prelude::*;

static COUNTING: AtomicBool = AtomicBool::new(false);
static INNER: sightline_agent::CountingAllocator = sightline_agent::CountingAllocator::new();

struct Switch;

// SAFETY: forwards every call unchanged to `System` or to the counting allocator, which
// forwards to `System` too; a block allocated by either may be freed by either.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                INNER.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                INNER.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe {
            if COUNTING.load(Ordering::Relaxed) {
                INNER.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Switch = Switch;

fn alloc(c: &mut Criterion) {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let mut group = c.benchmark_group("alloc");
    group.bench_function("system", |b| {
        b.iter(|| {
            // SAFETY: valid layout, freed at once with the same layout.
            unsafe {
                let p = System.alloc(black_box(layout));
                System.dealloc(black_box(p), layout);
            }
        })
    });
    group.bench_function("counting", |b| {
        b.iter(|| {
            // SAFETY: valid layout, freed at once with the same layout.
            unsafe {
                let p = INNER.alloc(black_box(layout));
                INNER.dealloc(black_box(p), layout);
            }
        })
    });
    group.finish();
}

fn queries() -> &'static str {
    for i in 0..100u64 {
        // The shape sqlx 0.8 emits (sqlx-core logger.rs), statement cached after the first.
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
}

async fn one(app: &Router, path: &str) -> http::StatusCode {
    let req = Request::get(path).body(Body::empty()).expect("request");
    match app.clone().oneshot(req).await {
        Ok(res) => res.status(),
        Err(never) => match never {},
    }
}

fn agent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dsn = format!("http://benchkey@{}/1", closed.local_addr().expect("addr"));
    drop(closed);
    let (agent, guard) = sightline_agent::Agent::builder(&dsn)
        .expect("dsn")
        .service("bench")
        // Every request runs 100 identical queries: an N+1 suspect. Keep exemplar
        // building (bounded per window anyway) out of the per-event figure.
        .n_plus_one_threshold(1_000)
        .exemplar_sample_rate(0.0)
        .start()
        .expect("agent starts");
    let plain = tracing::Dispatch::new(tracing_subscriber::registry());
    let insight = tracing::Dispatch::new(
        tracing_subscriber::registry().with(sightline_agent::tracing_layer()),
    );

    let routes = || {
        Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/queries", get(|| async { queries() }))
    };
    let bare = routes();
    let instrumented = routes().layer(agent.layer());

    let mut group = c.benchmark_group("query_event");
    group.bench_function("100_without_layer", |b| {
        tracing::dispatcher::with_default(&plain, || {
            b.iter(|| rt.block_on(one(&instrumented, "/queries")))
        })
    });
    group.bench_function("100_with_layer", |b| {
        tracing::dispatcher::with_default(&insight, || {
            b.iter(|| rt.block_on(one(&instrumented, "/queries")))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("request");
    group.bench_function("bare", |b| {
        COUNTING.store(false, Ordering::Relaxed);
        tracing::dispatcher::with_default(&plain, || {
            b.iter(|| rt.block_on(one(&bare, "/users/42")))
        })
    });
    group.bench_function("whole_agent", |b| {
        COUNTING.store(true, Ordering::Relaxed);
        tracing::dispatcher::with_default(&insight, || {
            b.iter(|| rt.block_on(one(&instrumented, "/users/42")))
        });
        COUNTING.store(false, Ordering::Relaxed);
    });
    group.finish();

    let stats = rt.block_on(guard.shutdown(Duration::from_millis(100)));
    eprintln!("agent stats after the benchmark: {stats:?}");
}

criterion_group!(benches, alloc, agent);
criterion_main!(benches);
