//! The collector's own telemetry, kept in lock-free atomics and rendered as Prometheus
//! text by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::http::StatusCode;

use crate::sentry::envelope::ITEM_TYPES;
use crate::store::WriteSummary;

/// Ingest endpoints, each counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /api/{project_id}/metrics`
    Metrics,
    /// `POST /api/{project_id}/envelope/`
    Envelope,
    /// `POST /api/{project_id}/store/`
    Store,
}

impl Endpoint {
    const ALL: [Endpoint; 3] = [Endpoint::Metrics, Endpoint::Envelope, Endpoint::Store];

    fn label(self) -> &'static str {
        match self {
            Endpoint::Metrics => "metrics",
            Endpoint::Envelope => "envelope",
            Endpoint::Store => "store",
        }
    }
}

/// Statuses counted individually; anything else lands in the last slot as `other`.
const STATUSES: [u16; 9] = [200, 400, 401, 403, 404, 413, 429, 503, 0];

/// Upper bounds of the store write latency buckets, in seconds.
const WRITE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Every counter the collector keeps about itself.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Per endpoint, per status in [`STATUSES`].
    requests: [[AtomicU64; STATUSES.len()]; Endpoint::ALL.len()],
    windows_accepted: AtomicU64,
    /// Envelope items accepted, per type in [`ITEM_TYPES`].
    items: [AtomicU64; ITEM_TYPES.len()],
    events_stored: AtomicU64,
    events_duplicate: AtomicU64,
    queue_full: AtomicU64,
    store_write_failures: AtomicU64,
    store_write: LatencyHistogram,
    agent_dropped_windows: AtomicU64,
    /// The syslog listeners' counters (shared with them).
    pub(crate) syslog: std::sync::Arc<crate::syslog::SyslogMetrics>,
}

/// A Prometheus histogram: per-bucket counts (made cumulative when rendered), sum, count.
#[derive(Debug, Default)]
struct LatencyHistogram {
    buckets: [AtomicU64; WRITE_BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = WRITE_BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// Gauges read at scrape time rather than counted.
pub(crate) struct Gauges {
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

impl Metrics {
    /// Counts one answered ingest request.
    pub(crate) fn record_request(&self, endpoint: Endpoint, status: StatusCode) {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status.as_u16())
            .unwrap_or(STATUSES.len() - 1);
        self.requests[endpoint as usize][slot].fetch_add(1, Relaxed);
    }

    /// Counts a request turned away because the queue was full.
    pub(crate) fn record_queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    /// Records one group commit: how long it took, and what it stored.
    pub(crate) fn record_write(&self, elapsed: Duration, summary: &WriteSummary) {
        self.store_write.observe(elapsed);
        self.windows_accepted.fetch_add(summary.windows, Relaxed);
        self.agent_dropped_windows
            .fetch_add(summary.agent_dropped, Relaxed);
        self.events_stored.fetch_add(summary.events, Relaxed);
        self.events_duplicate
            .fetch_add(summary.duplicate_events, Relaxed);
        self.syslog.committed(summary.log_lines);
    }

    /// Counts the items of one accepted envelope, by type (a name from [`ITEM_TYPES`]).
    pub(crate) fn record_items(&self, items: &[(&'static str, u64)]) {
        for &(item_type, n) in items {
            if let Some(i) = ITEM_TYPES.iter().position(|&t| t == item_type) {
                self.items[i].fetch_add(n, Relaxed);
            }
        }
    }

    /// Records a group commit that failed.
    pub(crate) fn record_write_failure(&self, elapsed: Duration) {
        self.store_write.observe(elapsed);
        self.store_write_failures.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(2048);
        // Writing to a String cannot fail.
        let _ = self.write_to(&mut out, gauges);
        out
    }

    fn write_to(&self, out: &mut String, gauges: &Gauges) -> std::fmt::Result {
        header(
            out,
            "sightline_ingest_requests_total",
            "counter",
            "Ingest requests answered, by endpoint, outcome and status.",
        )?;
        for endpoint in Endpoint::ALL {
            for (i, &status) in STATUSES.iter().enumerate() {
                let n = self.requests[endpoint as usize][i].load(Relaxed);
                let outcome = if (200..300).contains(&status) {
                    "accepted"
                } else {
                    "rejected"
                };
                let status = if status == 0 {
                    "other".to_owned()
                } else {
                    status.to_string()
                };
                writeln!(
                    out,
                    "sightline_ingest_requests_total{{endpoint=\"{}\",outcome=\"{outcome}\",status=\"{status}\"}} {n}",
                    endpoint.label()
                )?;
            }
        }
        counter(
            out,
            "sightline_ingest_windows_accepted_total",
            "Route windows committed to the store.",
            self.windows_accepted.load(Relaxed),
        )?;
        header(
            out,
            "sightline_envelope_items_total",
            "counter",
            "Envelope items accepted, by item type (unknown types as \"unknown\").",
        )?;
        for (item_type, n) in ITEM_TYPES.iter().zip(&self.items) {
            writeln!(
                out,
                "sightline_envelope_items_total{{type=\"{item_type}\"}} {}",
                n.load(Relaxed)
            )?;
        }
        counter(
            out,
            "sightline_events_stored_total",
            "Error events committed to the store.",
            self.events_stored.load(Relaxed),
        )?;
        counter(
            out,
            "sightline_events_duplicate_total",
            "Error events accepted but not stored again: their event_id was already stored.",
            self.events_duplicate.load(Relaxed),
        )?;
        counter(
            out,
            "sightline_ingest_queue_full_total",
            "Ingest requests refused with 429 because the queue was full.",
            self.queue_full.load(Relaxed),
        )?;
        gauge(
            out,
            "sightline_ingest_queue_depth",
            "Batches waiting in the ingest queue.",
            gauges.queue_depth,
        )?;
        gauge(
            out,
            "sightline_ingest_queue_capacity",
            "Capacity of the ingest queue, in batches.",
            gauges.queue_capacity,
        )?;
        counter(
            out,
            "sightline_store_write_failures_total",
            "Group commits that failed.",
            self.store_write_failures.load(Relaxed),
        )?;

        let name = "sightline_store_write_seconds";
        header(
            out,
            name,
            "histogram",
            "Latency of group commits to the store.",
        )?;
        let mut cumulative = 0;
        for (le, n) in WRITE_BUCKETS.iter().zip(&self.store_write.buckets) {
            cumulative += n.load(Relaxed);
            writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}")?;
        }
        let count = self.store_write.count.load(Relaxed);
        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}")?;
        let sum = self.store_write.sum_us.load(Relaxed) as f64 / 1e6;
        writeln!(out, "{name}_sum {sum}")?;
        writeln!(out, "{name}_count {count}")?;

        counter(
            out,
            "sightline_agent_dropped_windows_total",
            "Windows agents reported dropping, as increases seen since this collector started.",
            self.agent_dropped_windows.load(Relaxed),
        )?;
        self.syslog.write_to(out)
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) -> std::fmt::Result {
    header(out, name, "counter", help)?;
    writeln!(out, "{name} {value}")
}

fn gauge(out: &mut String, name: &str, help: &str, value: usize) -> std::fmt::Result {
    header(out, name, "gauge", help)?;
    writeln!(out, "{name} {value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        metrics.record_request(Endpoint::Metrics, StatusCode::OK);
        metrics.record_request(Endpoint::Metrics, StatusCode::TOO_MANY_REQUESTS);
        metrics.record_request(Endpoint::Metrics, StatusCode::IM_A_TEAPOT);
        let summary = |windows, agent_dropped| WriteSummary {
            windows,
            agent_dropped,
            events: 2,
            duplicate_events: 1,
            log_lines: 0,
        };
        metrics.record_write(Duration::from_micros(800), &summary(3, 2));
        metrics.record_write(Duration::from_millis(30), &summary(1, 0));
        metrics.record_items(&[("event", 2), ("session", 1), ("unknown", 4)]);
        metrics.record_request(Endpoint::Envelope, StatusCode::PAYLOAD_TOO_LARGE);
        metrics.record_write_failure(Duration::from_secs(9));
        let text = metrics.render(&Gauges {
            queue_depth: 2,
            queue_capacity: 8,
        });
        for line in [
            "sightline_ingest_requests_total{endpoint=\"metrics\",outcome=\"accepted\",status=\"200\"} 1",
            "sightline_ingest_requests_total{endpoint=\"metrics\",outcome=\"rejected\",status=\"429\"} 1",
            "sightline_ingest_requests_total{endpoint=\"metrics\",outcome=\"rejected\",status=\"other\"} 1",
            "sightline_ingest_requests_total{endpoint=\"metrics\",outcome=\"rejected\",status=\"400\"} 0",
            "sightline_ingest_windows_accepted_total 4",
            "sightline_ingest_queue_depth 2",
            "sightline_ingest_queue_capacity 8",
            "sightline_store_write_failures_total 1",
            "sightline_store_write_seconds_bucket{le=\"0.001\"} 1",
            "sightline_store_write_seconds_bucket{le=\"0.01\"} 1",
            "sightline_store_write_seconds_bucket{le=\"0.05\"} 2",
            "sightline_store_write_seconds_bucket{le=\"5\"} 2",
            "sightline_store_write_seconds_bucket{le=\"+Inf\"} 3",
            "sightline_store_write_seconds_count 3",
            "sightline_store_write_seconds_sum 9.0308",
            "sightline_agent_dropped_windows_total 2",
            "sightline_envelope_items_total{type=\"event\"} 2",
            "sightline_envelope_items_total{type=\"session\"} 1",
            "sightline_envelope_items_total{type=\"unknown\"} 4",
            "sightline_envelope_items_total{type=\"transaction\"} 0",
            "sightline_events_stored_total 4",
            "sightline_events_duplicate_total 2",
            "sightline_ingest_requests_total{endpoint=\"envelope\",outcome=\"rejected\",status=\"413\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
