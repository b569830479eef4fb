//! Log lines (`log_lines`, migration 0003) with the SQLite backend's semantics: the same
//! filters, newest first by (time, id), the same limits; one insert per group commit;
//! retention by dropping daily partitions.
//!
//! Ids. SQLite numbers lines as it inserts them; ClickHouse has no sequence, and several
//! collectors insert at once. A line's id is `received_ms × 10^6 + rank × 1000 + tag`:
//! `rank` is its place among the lines of its listener batch that arrived in the same
//! millisecond (capped at 999), `tag` three digits of a hash of that batch. So ids increase
//! with arrival — exactly within a batch, to the millisecond across batches and
//! collectors — and are computed from the lines alone: a retried or replayed group commit
//! writes the very same rows, which collapse (`ReplacingMergeTree`, and reads keep one row
//! per line), so log lines are idempotent like events. Two batches meeting in one
//! millisecond share an id only when their tags and ranks agree (1 in 1000); the rows stay
//! apart (`batch`, `seq` tell them apart) and their order is still fixed. Ids are 63-bit
//! until the year 2262, and larger than 2^53: a JavaScript client must read them as text.

use serde::{Deserialize, Serialize};

use super::{ClickHouseEvents, db};
use crate::Error;
use crate::store::logs::{LogFilter, LogLine, NewLogLine};

/// One day, milliseconds: the partition of `log_lines`.
const DAY_MS: i64 = 86_400_000;

/// Room for the rank and tag under each arrival millisecond.
const PER_MS: u64 = 1_000_000;
const TAG_SPACE: u64 = 1_000;
const MAX_RANK: u64 = PER_MS / TAG_SPACE - 1;

/// Columns of [`LogOut`], in its order.
const COLUMNS: &str = "id, ts_ms, received_ms, facility, severity, host, app, procid, msgid,
    message, structured_data, format, transport, truncated";

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct LogInsert<'a> {
    project_id: u64,
    ts_ms: i64,
    id: u64,
    batch: u64,
    seq: u32,
    received_ms: i64,
    timestamp_ms: Option<i64>,
    facility: Option<u8>,
    severity: Option<u8>,
    host: Option<&'a str>,
    app: Option<&'a str>,
    procid: Option<&'a str>,
    msgid: Option<&'a str>,
    message: &'a str,
    structured_data: Option<&'a str>,
    format: &'a str,
    transport: &'a str,
    truncated: u8,
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct LogOut {
    id: u64,
    ts_ms: i64,
    received_ms: i64,
    facility: Option<u8>,
    severity: Option<u8>,
    host: Option<String>,
    app: Option<String>,
    procid: Option<String>,
    msgid: Option<String>,
    message: String,
    structured_data: Option<String>,
    format: String,
    transport: String,
    truncated: u8,
}

impl LogOut {
    fn line(self) -> LogLine {
        LogLine {
            id: self.id,
            timestamp: LogLine::format_time(self.ts_ms),
            timestamp_ms: self.ts_ms,
            received_ms: self.received_ms,
            facility: self.facility,
            severity: self.severity,
            severity_name: LogLine::severity_name(self.severity),
            host: self.host,
            app: self.app,
            procid: self.procid,
            msgid: self.msgid,
            message: self.message,
            // Written by the collector as JSON; a row that is not reads as no data.
            structured_data: self
                .structured_data
                .and_then(|text| serde_json::from_str(&text).ok()),
            format: self.format,
            transport: self.transport,
            truncated: self.truncated != 0,
        }
    }
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct LogPart {
    partition: String,
    rows: u64,
}

/// FNV-1a, 64 bits: stable across builds (a spooled batch may be replayed by the next
/// version), unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so that field boundaries count (`("ab", "c")` ≠ `("a", "bc")`).
    fn field(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.bytes(&[0]),
            Some(bytes) => {
                self.bytes(&[1]);
                self.bytes(&(bytes.len() as u64).to_le_bytes());
                self.bytes(bytes);
            }
        }
    }
}

/// The hash of a listener batch: everything of every line, in order.
fn batch_key(lines: &[NewLogLine]) -> u64 {
    let mut hash = Fnv::new();
    for line in lines {
        hash.bytes(&line.project_id.to_le_bytes());
        hash.bytes(&line.received_ms.to_le_bytes());
        hash.field(
            line.timestamp_ms
                .map(i64::to_le_bytes)
                .as_ref()
                .map(|b| &b[..]),
        );
        hash.field(line.facility.map(|f| [f]).as_ref().map(|b| &b[..]));
        hash.field(line.severity.map(|s| [s]).as_ref().map(|b| &b[..]));
        for text in [&line.host, &line.app, &line.procid, &line.msgid] {
            hash.field(text.as_deref().map(str::as_bytes));
        }
        hash.field(Some(line.message.as_bytes()));
        hash.field(line.structured_data.as_deref().map(str::as_bytes));
        hash.field(Some(line.format.as_bytes()));
        hash.field(Some(line.transport.as_bytes()));
        hash.bytes(&[u8::from(line.truncated)]);
    }
    hash.0
}

/// The ids of a listener batch's lines, in order (see the module docs).
fn line_ids(lines: &[NewLogLine], batch: u64) -> Vec<u64> {
    let tag = batch % TAG_SPACE;
    let mut ids = Vec::with_capacity(lines.len());
    // Lines of one millisecond are usually adjacent; a line that arrived out of order
    // (another connection's) still ranks after every earlier line of its millisecond.
    let mut ranks: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    for line in lines {
        let rank = ranks.entry(line.received_ms).or_insert(0);
        let ms = u64::try_from(line.received_ms).unwrap_or(0);
        ids.push(
            ms.saturating_mul(PER_MS)
                .saturating_add((*rank).min(MAX_RANK) * TAG_SPACE + tag),
        );
        *rank += 1;
    }
    ids
}

impl ClickHouseEvents {
    /// Stores the lines of every listener batch in one insert. Idempotent: writing the
    /// same batches again (a retried commit, a replayed spool file) adds no line.
    pub(crate) async fn insert_logs(&self, batches: &[&[NewLogLine]]) -> Result<(), Error> {
        if batches.iter().all(|lines| lines.is_empty()) {
            return Ok(());
        }
        let mut insert = self.insert::<LogInsert<'_>>("log_lines").await?;
        for lines in batches {
            let batch = batch_key(lines);
            for ((seq, line), id) in lines.iter().enumerate().zip(line_ids(lines, batch)) {
                insert
                    .write(&LogInsert {
                        project_id: line.project_id,
                        ts_ms: line.time_ms(),
                        id,
                        batch,
                        seq: u32::try_from(seq).unwrap_or(u32::MAX),
                        received_ms: line.received_ms,
                        timestamp_ms: line.timestamp_ms,
                        facility: line.facility,
                        severity: line.severity,
                        host: line.host.as_deref(),
                        app: line.app.as_deref(),
                        procid: line.procid.as_deref(),
                        msgid: line.msgid.as_deref(),
                        message: &line.message,
                        structured_data: line.structured_data.as_deref(),
                        format: line.format,
                        transport: line.transport,
                        truncated: u8::from(line.truncated),
                    })
                    .await
                    .map_err(db)?;
            }
        }
        insert.end().await.map_err(db)
    }

    /// A project's lines matching `filter`, newest first (by time, then id), at most
    /// `filter.limit`: what SQLite's `search_logs` answers.
    pub(crate) async fn search_logs(
        &self,
        project_id: u64,
        filter: &LogFilter,
    ) -> Result<Vec<LogLine>, Error> {
        // Only fixed fragments go into the text; every value is bound. A NULL severity,
        // host or app fails its comparison, as in SQLite. `positionCaseInsensitive` folds
        // ASCII only, as SQLite's LIKE does, and has no wildcards to escape.
        let mut conditions = String::new();
        if filter.severity.is_some() {
            conditions.push_str(" AND severity <= ?");
        }
        if filter.host.is_some() {
            conditions.push_str(" AND host = ?");
        }
        if filter.app.is_some() {
            conditions.push_str(" AND app = ?");
        }
        if filter.text.is_some() {
            conditions.push_str(" AND positionCaseInsensitive(message, ?) > 0");
        }
        // Copies of a line (a retried insert not merged yet) share (time, id, batch, seq)
        // and sort together; `LIMIT 1 BY` keeps one before the page's limit applies.
        let mut query = self
            .client
            .query(&format!(
                "SELECT {COLUMNS} FROM log_lines
                 WHERE project_id = ? AND ts_ms >= ? AND ts_ms < ?{conditions}
                 ORDER BY ts_ms DESC, id DESC, batch DESC, seq DESC
                 LIMIT 1 BY ts_ms, id, batch, seq
                 LIMIT ?"
            ))
            .bind(project_id)
            .bind(filter.since_ms.unwrap_or(i64::MIN))
            .bind(filter.until_ms.unwrap_or(i64::MAX));
        if let Some(severity) = filter.severity {
            query = query.bind(severity);
        }
        if let Some(host) = &filter.host {
            query = query.bind(host.as_str());
        }
        if let Some(app) = &filter.app {
            query = query.bind(app.as_str());
        }
        if let Some(text) = &filter.text {
            query = query.bind(text.as_str());
        }
        let rows: Vec<LogOut> = query.bind(filter.limit).fetch_all().await.map_err(db)?;
        Ok(rows.into_iter().map(LogOut::line).collect())
    }

    /// Drops the daily partitions (by arrival) that lie wholly before
    /// `received_before_ms`, then the oldest partitions while more than `max_lines` lines
    /// remain, but never the newest one; returns the lines dropped.
    ///
    /// Coarser than SQLite, which deletes line by line: lines received before the cutoff
    /// stay until their whole UTC day has passed it, and the count bound holds to a day —
    /// a store may keep more than `max_lines` when today's partition alone holds more, and
    /// fewer once a day is dropped. Deleting single lines would take an `ALTER … DELETE`
    /// mutation, which rewrites whole parts in the background; dropping a partition is
    /// instant, and works where TTL does not (18.16). The count comes from `system.parts`
    /// and includes copies not merged yet.
    pub(crate) async fn prune_logs(
        &self,
        max_lines: u64,
        received_before_ms: i64,
    ) -> Result<u64, Error> {
        let parts: Vec<LogPart> = self
            .client
            .query(
                "SELECT partition, sum(rows) FROM system.parts
                 WHERE database = currentDatabase() AND table = 'log_lines' AND active
                 GROUP BY partition",
            )
            .fetch_all()
            .await
            .map_err(db)?;
        // The partition value is `intDiv(received_ms, 86400000)`: the day number.
        let mut days: Vec<(i64, u64)> = parts
            .iter()
            .filter_map(|part| match part.partition.parse::<i64>() {
                Ok(day) => Some((day, part.rows)),
                Err(_) => {
                    tracing::warn!(partition = %part.partition, "unexpected log partition");
                    None
                }
            })
            .collect();
        days.sort_unstable();
        let mut total: u64 = days.iter().map(|&(_, rows)| rows).sum();
        let mut dropped = 0u64;
        for (i, &(day, rows)) in days.iter().enumerate() {
            let newest = i + 1 == days.len();
            let expired = day.saturating_add(1).saturating_mul(DAY_MS) <= received_before_ms;
            let too_many = total > max_lines && !newest;
            if !expired && !too_many {
                // Days are in order: later ones are newer and fewer remain past this one.
                break;
            }
            // Dropping a partition another collector dropped already is a no-op.
            self.client
                .query("ALTER TABLE log_lines DROP PARTITION ?")
                .bind(day)
                .execute()
                .await
                .map_err(db)?;
            total = total.saturating_sub(rows);
            dropped = dropped.saturating_add(rows);
        }
        Ok(dropped)
    }
}
