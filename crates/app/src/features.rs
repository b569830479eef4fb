//! Features of the demo guarded by Sightline switches, evaluated per request by the
//! agent's [`Switches`] (added by the caller as an `Extension`; without it every
//! feature is off).
//!
//! - [`RICH_PREVIEW`]: `GET /threads/{id}` adds a `preview` of the top-scored comment.
//! - [`LEADERBOARD_CACHE`]: `GET /leaderboard` answers from a 2-second in-memory cache
//!   (`x-cache: hit|miss`) instead of querying every time: the lever to pull when the
//!   scores table is hot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sightline_agent::{EvalContext, Switches};

/// Adds a preview of the top comment to the thread page.
pub const RICH_PREVIEW: &str = "comments:rich_preview";
/// Serves the leaderboard from a short-lived cache.
pub const LEADERBOARD_CACHE: &str = "leaderboard:cache";

/// The demo's switches, `(key, label, description)`, so the server can create them.
pub const SWITCHES: &[(&str, &str, &str)] = &[
    (
        RICH_PREVIEW,
        "Thread preview",
        "GET /threads/{id} adds a preview of the top-scored comment.",
    ),
    (
        LEADERBOARD_CACHE,
        "Leaderboard cache",
        "GET /leaderboard answers from a 2 s in-memory cache instead of the database.",
    ),
];

/// The request's view of the switches: who asks (`x-user-id`), and the agent's set.
pub(crate) struct Features {
    switches: Option<Switches>,
    ctx: EvalContext,
}

impl Features {
    /// Whether `key` is on for this request.
    pub(crate) fn on(&self, key: &str) -> bool {
        self.switches
            .as_ref()
            .is_some_and(|s| s.is_active(key, &self.ctx))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Features {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let switches = parts.extensions.get::<Switches>().cloned();
        let mut ctx = switches
            .as_ref()
            .map_or_else(EvalContext::default, Switches::context);
        if let Some(user) = parts.headers.get("x-user-id").and_then(|v| v.to_str().ok()) {
            ctx.user_id = Some(user.to_owned());
        }
        Ok(Features { switches, ctx })
    }
}

/// How long a cached leaderboard is served.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// Most cached leaderboards (one per game × limit asked for).
const CACHE_ENTRIES: usize = 256;

/// A leaderboard request: `(game, limit)`.
type BoardKey = (Option<i64>, i64);

/// A cached answer and when it was computed.
type Cached = (Instant, Arc<serde_json::Value>);

/// Leaderboard answers by request.
#[derive(Clone, Default)]
pub(crate) struct LeaderboardCache {
    entries: Arc<Mutex<HashMap<BoardKey, Cached>>>,
}

impl LeaderboardCache {
    pub(crate) fn get(&self, key: BoardKey) -> Option<Arc<serde_json::Value>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, value)| value.clone())
    }

    pub(crate) fn put(&self, key: BoardKey, value: Arc<serde_json::Value>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if entries.len() < CACHE_ENTRIES {
            entries.insert(key, (Instant::now(), value));
        }
    }
}
