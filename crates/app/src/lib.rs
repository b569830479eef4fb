//! The Sightline demo application: a small Disqus-like comment service with a
//! game leaderboard, and a load generator that drives it.
//!
//! What flows through the crate:
//!
//! - [`open_db`] opens (or creates) the app's own SQLite file, applies the
//!   schema and seeds a deterministic data set the first time: 50 users with
//!   profiles, 20 threads, 1,000 comments with votes, 4 games with scores.
//!   The seed sizes are exported ([`SEED_USERS`], …) so tests and the load
//!   generator can draw ids from them.
//! - [`router`] builds the HTTP API over that pool. It is deliberately *not*
//!   instrumented: the caller adds `sightline_agent::Agent::layer()` on top,
//!   which is the point of the demo. [`ROUTES`] lists every route it serves.
//! - Some routes misbehave on purpose so the dashboard has something to show:
//!   `GET /threads/{id}` is an N+1 query pattern, `GET /search` is slow,
//!   `GET /threads/{id}/export` allocates a few MB, `GET /flaky` fails ~10 %
//!   of the time, `GET /games/{id}/replay` panics for a game without scores
//!   (the agent turns the panic into a 500 and an error event), and a
//!   malformed JSON body is reported to the agent with `capture_error`.
//! - [`serve`] runs the router on a listener until the shutdown future
//!   resolves, then drains in-flight requests.
//! - [`load`] sends a bounded, realistic mix of requests to a *loopback*
//!   instance and reports what came back.
//! - [`load_errors`] sends gzip-compressed Sentry error envelopes to a
//!   *loopback* collector, as fast as a bounded concurrency allows, and reads
//!   back how many were stored.
//!
//! The `sightline-app` binary wires these together: `sightline-app serve`
//! (optionally with `--dsn` to report to a collector) and `sightline-app load`.

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sqlx::SqlitePool;

mod db;
mod error;
mod extract;
pub mod features;
mod games;
mod http1;
pub mod load;
pub mod load_errors;
mod ops;
mod threads;
mod users;

pub use db::{SEED_COMMENTS, SEED_GAMES, SEED_THREADS, SEED_USERS, open_db};

/// Every route the app serves, as `(method, route template)`; the templates
/// are the ones axum reports as the matched path (and so the agent records).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/threads"),
    ("GET", "/threads/{id}"),
    ("POST", "/threads/{id}/comments"),
    ("GET", "/threads/{id}/export"),
    ("POST", "/comments/{id}/vote"),
    ("GET", "/search"),
    ("GET", "/users/{id}"),
    ("GET", "/leaderboard"),
    ("POST", "/games/{id}/scores"),
    ("GET", "/games/{id}/replay"),
    ("GET", "/flaky"),
    ("GET", "/healthz"),
];

/// Largest request body any route accepts. Comment, vote and score bodies are
/// a few hundred bytes; the cap bounds what a client can make us buffer.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The app's HTTP API over `db` (a pool from [`open_db`]).
///
/// Not instrumented: add the agent's layer on top of the returned router.
pub fn router(db: SqlitePool) -> Router {
    Router::new()
        .route("/threads", get(threads::list))
        .route("/threads/{id}", get(threads::show))
        .route("/threads/{id}/comments", post(threads::post_comment))
        .route("/threads/{id}/export", get(threads::export))
        .route("/comments/{id}/vote", post(threads::vote))
        .route("/search", get(threads::search))
        .route("/users/{id}", get(users::show))
        .route("/leaderboard", get(games::leaderboard))
        .route("/games/{id}/scores", post(games::post_score))
        .route("/games/{id}/replay", get(games::replay))
        .route("/flaky", get(ops::flaky))
        .route("/healthz", get(ops::healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(features::LeaderboardCache::default()))
        .with_state(db)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// 64-bit FNV-1a: a tiny, stable hash for the demo's deterministic behaviour
/// (search delay, export checksum). `DefaultHasher` is not stable across
/// Rust releases, so it would make the delays drift between builds.
pub(crate) fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a's starting value.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values from the FNV spec's test suite.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }
}
