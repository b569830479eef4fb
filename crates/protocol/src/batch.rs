//! The metric batch an agent sends to the collector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Histogram, MAX_SWITCH_KEY_LEN};

/// Most windows one batch may carry; the collector rejects larger batches (413).
pub const MAX_WINDOWS_PER_BATCH: usize = 10_000;

/// Longest route template, method or instance label the collector accepts.
pub const MAX_LABEL_LEN: usize = 512;

/// Most switches one batch may report evaluation counts for.
pub const MAX_SWITCH_EVALUATIONS: usize = 10_000;

/// One upload from an agent: every window it closed since the last upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricBatch {
    /// Which process sent it.
    pub agent: AgentInfo,
    /// When the agent sent it, unix milliseconds.
    pub sent_at_ms: i64,
    /// Windows the agent dropped (queue overflow, refused uploads) since it started —
    /// a running total, so the collector can report loss even if batches are lost.
    #[serde(default)]
    pub dropped_windows: u64,
    /// Closed windows.
    pub windows: Vec<RouteWindow>,
    /// How often each feature switch was checked since the previous batch, by key
    /// (feeds the stale-switch hints). Absent from agents that predate switches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub switch_evaluations: BTreeMap<String, u64>,
    /// Performance insight: query and allocation figures, N+1 suspects, exemplars and
    /// heap samples. Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "crate::InsightBatch::is_empty")]
    pub insight: crate::InsightBatch,
}

/// Identity of a reporting process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// Service name (e.g. `comments`).
    pub service: String,
    /// Unique per process (host + pid + random suffix).
    pub instance: String,
    /// Agent version, `sightline-agent/0.1.0`.
    pub sdk: String,
    /// Deployment environment, e.g. `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Release / version of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// HTTP status class, 1 for `1xx` … 5 for `5xx`.
pub type StatusClass = u8;

/// Aggregate of all requests of one route × method × status class that finished in
/// one time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteWindow {
    /// Window start, unix seconds, a multiple of `window_secs` so windows from many
    /// instances line up and merge.
    pub start: i64,
    /// Window length in seconds.
    pub window_secs: u32,
    /// Matched route template (`/threads/{id}`), never a raw path.
    pub route: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Status class, 1–5.
    pub status_class: StatusClass,
    /// Request latency in microseconds; `latency.count` is the request count.
    pub latency: Histogram,
}

/// A batch the collector must not store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// More than [`MAX_WINDOWS_PER_BATCH`] windows.
    TooManyWindows(usize),
    /// A label is empty or longer than [`MAX_LABEL_LEN`].
    BadLabel(&'static str),
    /// Status class outside 1–5.
    BadStatusClass(u8),
    /// Window length 0 or over a day, or start not aligned to it.
    BadWindow,
    /// The histogram is internally inconsistent.
    BadHistogram(crate::HistogramError),
    /// More than [`MAX_SWITCH_EVALUATIONS`] switch counts, or a key empty or too long.
    BadSwitchEvaluations,
    /// The insight section is invalid.
    BadInsight(crate::InsightError),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::TooManyWindows(n) => {
                write!(
                    f,
                    "batch has {n} windows, at most {MAX_WINDOWS_PER_BATCH} allowed"
                )
            }
            BatchError::BadLabel(which) => {
                write!(f, "{which} must be 1 to {MAX_LABEL_LEN} bytes")
            }
            BatchError::BadStatusClass(c) => write!(f, "status_class {c} is not 1 to 5"),
            BatchError::BadWindow => {
                f.write_str("window_secs must be 1 to 86400 and start a multiple of it")
            }
            BatchError::BadHistogram(e) => write!(f, "latency: {e}"),
            BatchError::BadInsight(e) => e.fmt(f),
            BatchError::BadSwitchEvaluations => write!(
                f,
                "switch_evaluations must have at most {MAX_SWITCH_EVALUATIONS} keys of 1 to {MAX_SWITCH_KEY_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

fn check_label(value: &str, which: &'static str) -> Result<(), BatchError> {
    if value.is_empty() || value.len() > MAX_LABEL_LEN {
        return Err(BatchError::BadLabel(which));
    }
    Ok(())
}

impl MetricBatch {
    /// Checks everything the collector relies on before storing the batch.
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.windows.len() > MAX_WINDOWS_PER_BATCH {
            return Err(BatchError::TooManyWindows(self.windows.len()));
        }
        check_label(&self.agent.service, "agent.service")?;
        check_label(&self.agent.instance, "agent.instance")?;
        for w in &self.windows {
            check_label(&w.route, "route")?;
            check_label(&w.method, "method")?;
            if !(1..=5).contains(&w.status_class) {
                return Err(BatchError::BadStatusClass(w.status_class));
            }
            if w.window_secs == 0
                || w.window_secs > 86_400
                || w.start.rem_euclid(i64::from(w.window_secs)) != 0
            {
                return Err(BatchError::BadWindow);
            }
            w.latency.validate().map_err(BatchError::BadHistogram)?;
        }
        if self.switch_evaluations.len() > MAX_SWITCH_EVALUATIONS
            || self
                .switch_evaluations
                .keys()
                .any(|k| k.is_empty() || k.len() > MAX_SWITCH_KEY_LEN)
        {
            return Err(BatchError::BadSwitchEvaluations);
        }
        self.insight.validate().map_err(BatchError::BadInsight)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> RouteWindow {
        let mut latency = Histogram::new();
        latency.record(1_500);
        RouteWindow {
            start: 1_700_000_000,
            window_secs: 10,
            route: "/threads/{id}".into(),
            method: "GET".into(),
            status_class: 2,
            latency,
        }
    }

    fn batch() -> MetricBatch {
        MetricBatch {
            agent: AgentInfo {
                service: "comments".into(),
                instance: "host-1".into(),
                sdk: "sightline-agent/0.1.0".into(),
                environment: None,
                release: None,
            },
            sent_at_ms: 0,
            dropped_windows: 0,
            windows: vec![window()],
            switch_evaluations: BTreeMap::new(),
            insight: Default::default(),
        }
    }

    #[test]
    fn valid_batch_round_trips() {
        let b = batch();
        assert_eq!(b.validate(), Ok(()));
        let json = serde_json::to_string(&b).expect("serialise");
        let back: MetricBatch = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, b);
    }

    #[test]
    fn rejects_what_the_collector_cannot_store() {
        let mut b = batch();
        b.windows[0].status_class = 7;
        assert_eq!(b.validate(), Err(BatchError::BadStatusClass(7)));
        let mut b = batch();
        b.windows[0].start += 3;
        assert_eq!(b.validate(), Err(BatchError::BadWindow));
        let mut b = batch();
        b.windows[0].route = "x".repeat(MAX_LABEL_LEN + 1);
        assert_eq!(b.validate(), Err(BatchError::BadLabel("route")));
        let mut b = batch();
        b.windows[0].latency.count = 9;
        assert!(matches!(b.validate(), Err(BatchError::BadHistogram(_))));
        let mut b = batch();
        b.switch_evaluations.insert(String::new(), 1);
        assert_eq!(b.validate(), Err(BatchError::BadSwitchEvaluations));
        let mut b = batch();
        b.switch_evaluations = (0..=MAX_SWITCH_EVALUATIONS)
            .map(|i| (format!("s{i}"), 1))
            .collect();
        assert_eq!(b.validate(), Err(BatchError::BadSwitchEvaluations));
    }

    #[test]
    fn switch_evaluations_are_optional_on_the_wire() {
        let plain = serde_json::to_value(batch()).expect("serialise");
        assert!(plain.get("switch_evaluations").is_none());
        let mut b = batch();
        b.switch_evaluations
            .insert("comments:new_editor".into(), 42);
        assert_eq!(b.validate(), Ok(()));
        let json = serde_json::to_value(&b).expect("serialise");
        assert_eq!(json["switch_evaluations"]["comments:new_editor"], 42);
        let back: MetricBatch = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, b);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(batch()).expect("serialise");
        v["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<MetricBatch>(v).is_err());
    }
}
