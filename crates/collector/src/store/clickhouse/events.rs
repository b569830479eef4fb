//! Error events: one batched insert per group commit, and the reads of the events list
//! and of one event, with SQLite's semantics (newest first, keyset paging, a duplicate
//! event id stored once).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ClickHouseEvents, EventRow, db};
use crate::Error;
use crate::store::{Cursor, StoredEvent, StoredPayload};

/// The stable id of an event: a 63-bit FNV-1a hash of its project and event id. Every
/// collector, and a retry of the same insert, computes the same one, so it identifies the
/// event's rows and breaks ties in the events list as SQLite's row id does. 63 bits so it
/// survives any signed 64-bit column or cursor it passes through.
pub(crate) fn event_key(project_id: u64, event_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = project_id
        .to_le_bytes()
        .iter()
        .chain(event_id.as_bytes())
        .fold(OFFSET, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        });
    hash & (u64::MAX >> 1)
}

/// The row version of an event received at `received` (unix seconds): higher for earlier
/// receipt, so `ReplacingMergeTree(version)` keeps the first copy, as SQLite keeps the
/// first and skips later duplicates.
fn version(received: f64) -> u64 {
    // Milliseconds; a float outside u64 saturates (`as` does), which only ties versions.
    u64::MAX - (received.max(0.0) * 1000.0) as u64
}

/// Bytes written as a `String` column in one piece (a `&[u8]` would go byte by byte).
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A `String` column read as bytes (a payload is LZ4, not UTF-8).
#[derive(Debug, Default)]
struct BlobBuf(Vec<u8>);

impl<'de> Deserialize<'de> for BlobBuf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BlobBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BlobBuf, E> {
                Ok(BlobBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BlobBuf, E> {
                Ok(BlobBuf(v))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct EventInsert<'a> {
    project_id: u64,
    issue_id: u64,
    id: u64,
    event_id: &'a str,
    timestamp: f64,
    received: f64,
    level: &'a str,
    title: &'a str,
    culprit: &'a str,
    platform: &'a str,
    environment: Option<&'a str>,
    release: Option<&'a str>,
    user: Option<&'a str>,
    hash: &'a str,
    grouped_by: &'a str,
    tags: &'a str,
    payload: Blob<'a>,
    version: u64,
}

/// Columns of [`EventOut`], in its order; `{payload}` is the payload or `''`.
const EVENT_COLUMNS: &str = "id, event_id, issue_id, project_id, timestamp, received, level,
    title, culprit, platform, environment, release, user, hash, grouped_by, tags";

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct EventOut {
    id: u64,
    event_id: String,
    issue_id: u64,
    project_id: u64,
    timestamp: f64,
    received: f64,
    level: String,
    title: String,
    culprit: String,
    platform: String,
    environment: Option<String>,
    release: Option<String>,
    user: Option<String>,
    hash: String,
    grouped_by: String,
    tags: String,
    payload: BlobBuf,
}

impl EventOut {
    /// As SQLite's reader makes it: unreadable tags read as none, an unreadable payload
    /// as JSON `null`.
    fn stored(self, full: bool) -> StoredEvent {
        StoredEvent {
            id: self.id,
            event_id: self.event_id,
            issue_id: self.issue_id,
            project_id: self.project_id,
            timestamp: self.timestamp,
            received: self.received,
            level: self.level,
            title: self.title,
            culprit: self.culprit,
            platform: self.platform,
            environment: self.environment,
            release: self.release,
            user: self.user,
            hash: self.hash,
            grouped_by: self.grouped_by,
            tags: serde_json::from_str(&self.tags).unwrap_or_default(),
            payload: full.then(|| {
                StoredPayload::json(&self.payload.0)
                    .and_then(|json| serde_json::from_slice(&json).ok())
                    .unwrap_or(Value::Null)
            }),
        }
    }
}

/// A float bound exactly: by its bits, rebuilt on the server. A decimal literal would go
/// through ClickHouse's float parser, which need not round to the same double, and a
/// cursor one ulp off skips or repeats the event at a page boundary.
const EXACT_F64: &str = "reinterpretAsFloat64(reinterpretAsString(toUInt64(?)))";

impl ClickHouseEvents {
    /// Stores `rows` in one insert. Idempotent: inserting an event again (a retried
    /// batch, a replayed spool) never shows it twice, and the first copy stays the one
    /// read.
    pub(crate) async fn insert_events(&self, rows: &[EventRow<'_>]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.insert::<EventInsert<'_>>("events").await?;
        for row in rows {
            let event = row.event;
            insert
                .write(&EventInsert {
                    project_id: row.project_id,
                    issue_id: row.issue_id,
                    id: event_key(row.project_id, &event.event_id),
                    event_id: &event.event_id,
                    timestamp: event.timestamp,
                    received: row.received_at,
                    level: event.level,
                    title: &event.title,
                    culprit: &event.culprit,
                    platform: &event.platform,
                    environment: event.environment.as_deref(),
                    release: event.release.as_deref(),
                    user: event.user.as_deref(),
                    hash: &event.hash,
                    grouped_by: event.grouped_by,
                    tags: &event.tags_json,
                    payload: Blob(&event.payload.0),
                    version: version(row.received_at),
                })
                .await
                .map_err(db)?;
        }
        insert.end().await.map_err(db)
    }

    /// An issue's events, newest first (by timestamp, then id), one page after `cursor`;
    /// payloads only when `full`.
    pub(crate) async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        let payload = if full { "payload" } else { "'' AS payload" };
        let after = if cursor.is_some() {
            format!("AND (timestamp < {EXACT_F64} OR (timestamp = {EXACT_F64} AND id < ?))")
        } else {
            String::new()
        };
        // Copies of one event share (timestamp, id) and sort together; `LIMIT 1 BY id`
        // keeps the one with the highest version, the copy merges would keep, before the
        // page's `LIMIT` applies.
        let mut query = self
            .client
            .query(&format!(
                "SELECT {EVENT_COLUMNS}, {payload} FROM events
                 WHERE issue_id = ? {after}
                 ORDER BY timestamp DESC, id DESC, version DESC
                 LIMIT 1 BY id
                 LIMIT ?"
            ))
            .bind(issue_id);
        if let Some(cursor) = cursor {
            query = query
                .bind(cursor.value.to_bits())
                .bind(cursor.value.to_bits())
                .bind(cursor.id);
        }
        let rows: Vec<EventOut> = query.bind(limit).fetch_all().await.map_err(db)?;
        Ok(rows.into_iter().map(|row| row.stored(full)).collect())
    }

    /// One event of a project with its payload, `None` when unknown.
    pub(crate) async fn event(
        &self,
        project_id: u64,
        event_id: &str,
    ) -> Result<Option<StoredEvent>, Error> {
        let id = event_key(project_id, event_id);
        // The lookup table names the issue, so the read covers one issue's key range.
        let row: Option<EventOut> = self
            .client
            .query(&format!(
                "SELECT {EVENT_COLUMNS}, payload FROM events
                 WHERE issue_id IN (
                         SELECT issue_id FROM event_ids WHERE project_id = ? AND id = ?)
                   AND project_id = ? AND id = ? AND event_id = ?
                 ORDER BY version DESC
                 LIMIT 1"
            ))
            .bind(project_id)
            .bind(id)
            .bind(project_id)
            .bind(id)
            .bind(event_id)
            .fetch_optional()
            .await
            .map_err(db)?;
        Ok(row.map(|row| row.stored(true)))
    }
}
