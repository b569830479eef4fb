//! Log lines (from the syslog listeners): what the writer stores and what a search
//! returns, independent of the backend.

use serde::Serialize;

use crate::syslog::message::{SEVERITIES, format_rfc3339};

/// A log line on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewLogLine {
    pub project_id: u64,
    /// When the collector received it, unix milliseconds.
    pub received_ms: i64,
    /// When the sender says it happened, unix milliseconds.
    pub timestamp_ms: Option<i64>,
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    pub host: Option<String>,
    pub app: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub message: String,
    /// Structured data as a JSON object `{sd_id: {name: value}}`, `None` when empty.
    pub structured_data: Option<String>,
    /// `rfc5424`, `rfc3164` or `raw`.
    pub format: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The message was longer than the limit and is cut.
    pub truncated: bool,
}

impl NewLogLine {
    /// The time a line is searched and sorted by: the sender's, else the arrival.
    pub(crate) fn time_ms(&self) -> i64 {
        self.timestamp_ms.unwrap_or(self.received_ms)
    }
}

/// A stored log line, as `GET /api/0/projects/{id}/logs/` returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Increases with arrival.
    pub id: u64,
    /// The sender's time, else the arrival time, RFC 3339 in UTC.
    pub timestamp: String,
    /// The same, unix milliseconds.
    pub timestamp_ms: i64,
    /// Arrival at the collector, unix milliseconds.
    pub received_ms: i64,
    /// 0–23, `null` for raw lines without a priority.
    pub facility: Option<u8>,
    /// 0 (emerg) – 7 (debug), `null` when unknown.
    pub severity: Option<u8>,
    /// `emerg` … `debug`.
    pub severity_name: Option<&'static str>,
    pub host: Option<String>,
    pub app: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub message: String,
    /// `{sd_id: {param: value}}`; `null` when the message had none.
    pub structured_data: Option<serde_json::Value>,
    /// `rfc5424`, `rfc3164` or `raw` (not parseable, kept verbatim).
    pub format: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The message was longer than the limit and is cut.
    pub truncated: bool,
}

impl LogLine {
    pub(crate) fn severity_name(severity: Option<u8>) -> Option<&'static str> {
        severity.and_then(|s| SEVERITIES.get(usize::from(s)).copied())
    }

    pub(crate) fn format_time(ms: i64) -> String {
        format_rfc3339(ms)
    }
}

/// Most lines one search returns.
pub const MAX_LOG_LIMIT: u32 = 1_000;

/// What a log search asks for; every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Substring of the message, ASCII case-insensitive.
    pub text: Option<String>,
    /// This severity or more severe (a lower number).
    pub severity: Option<u8>,
    pub host: Option<String>,
    pub app: Option<String>,
    /// From this time on, unix milliseconds.
    pub since_ms: Option<i64>,
    /// Before this time, unix milliseconds.
    pub until_ms: Option<i64>,
    /// Most lines returned, newest first (1 to [`MAX_LOG_LIMIT`]).
    pub limit: u32,
}
