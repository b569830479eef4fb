//! Insight settings and their [`AgentBuilder`] setters.

use std::time::Duration;

use crate::AgentBuilder;

/// How requests are judged and how much of them is shipped whole.
#[derive(Debug, Clone)]
pub(crate) struct InsightConfig {
    /// A request running one statement shape this many times or more is an N+1 suspect.
    pub(crate) n_plus_one_threshold: u64,
    /// Requests at least this slow are shipped as exemplars.
    pub(crate) slow: Duration,
    /// Share of all other requests shipped as exemplars, 0 to 1.
    pub(crate) sample_rate: f64,
    /// Most exemplars per window; the first ones win.
    pub(crate) max_exemplars: usize,
    /// Most spans and queries kept per exemplar.
    pub(crate) max_entries: usize,
}

impl Default for InsightConfig {
    fn default() -> Self {
        InsightConfig {
            n_plus_one_threshold: 5,
            slow: Duration::from_millis(500),
            sample_rate: 0.01,
            max_exemplars: 20,
            max_entries: 500,
        }
    }
}

impl AgentBuilder {
    /// A request that runs the same statement shape (fingerprint) at least `n` times is
    /// flagged as an N+1 suspect, and so is its route (default 5; at least 2).
    pub fn n_plus_one_threshold(mut self, n: u32) -> Self {
        self.insight.n_plus_one_threshold = u64::from(n.max(2));
        self
    }

    /// Requests at least this slow are shipped whole as exemplars (default 500 ms).
    pub fn exemplar_slow_threshold(mut self, d: Duration) -> Self {
        self.insight.slow = d;
        self
    }

    /// Share of the remaining requests shipped whole as exemplars, from 0 to 1
    /// (default 0.01). Slow, erroring and N+1 requests are always candidates.
    pub fn exemplar_sample_rate(mut self, share: f64) -> Self {
        self.insight.sample_rate = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// Most exemplars shipped per window (default 20); later candidates are dropped.
    pub fn max_exemplars_per_window(mut self, n: usize) -> Self {
        self.insight.max_exemplars = n;
        self
    }

    /// Most spans and queries kept per exemplar (default 500, at most 1000); the rest are
    /// counted in `dropped_entries`.
    pub fn max_exemplar_entries(mut self, n: usize) -> Self {
        self.insight.max_entries = n.min(sightline_protocol::MAX_EXEMPLAR_ENTRIES);
        self
    }
}
