//! What the collector's benchmarks share: a timed read through the router and the
//! p50/p95/max line every query table prints.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// `GET`s `uri` through the router and returns the wall clock (JSON included) with the
/// body; panics unless it answers 200.
pub async fn get(app: &axum::Router, uri: &str) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let took = started.elapsed();
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    (took, body.to_vec())
}

/// The header of the table [`print_times`] fills.
pub fn print_header() {
    println!(
        "\n{:<28} {:>5} {:>9} {:>9} {:>9} {:>4}",
        "query", "range", "p50 ms", "p95 ms", "max ms", "runs"
    );
}

/// Prints p50/p95/max of `times` (milliseconds), flagged when p95 is over the 100 ms
/// target.
pub fn print_times(name: &str, period: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "{name:<28} {period:>5} {:>9.1} {:>9.1} {:>9.1} {:>4}{}",
        ms(at(0.50)),
        ms(at(0.95)),
        ms(times[times.len() - 1]),
        times.len(),
        if at(0.95) > Duration::from_millis(100) {
            "  over 100 ms"
        } else {
            ""
        }
    );
}
