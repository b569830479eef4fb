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
                 WHERE database = currentDatabase() AND table = ? AND active
                 GROUP BY partition",
            )
            .bind(self.parts_of("log_lines"))
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
                .query(&self.drop_partition_sql("log_lines"))
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

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::super::testing;
    use super::*;
    use crate::store::{Ingest, SqliteStore, Store};

    /// The second that every `ts` below counts from, unix milliseconds.
    const T0: i64 = 1_700_000_000_000;

    /// Line `n` of a listener batch that arrived at `received_ms`: a spread of
    /// severities, hosts and apps (some missing), messages that tell case, `%`, `_`,
    /// quotes and non-ASCII apart, and sender times that tie (RFC 3164 has whole seconds).
    fn line(project_id: u64, n: i64, received_ms: i64) -> NewLogLine {
        let messages = [
            "Disk 100% FULL on /var",
            "disk 100x full",
            "user_id=7 logged in",
            "userXid=7 logged in",
            "quote ' and back\\slash",
            "ÉCOLE fermée",
            "école ouverte",
            "plain",
        ];
        NewLogLine {
            project_id,
            received_ms,
            // Every third line has no sender time: it sorts by arrival.
            timestamp_ms: (n % 3 != 0).then(|| T0 + (n / 7) * 1_000),
            facility: (n % 5 != 0).then(|| u8::try_from(n % 24).unwrap()),
            severity: (n % 9 != 0).then(|| u8::try_from(n % 8).unwrap()),
            host: (n % 4 != 0).then(|| format!("host{}", n % 3)),
            app: (n % 6 != 0).then(|| ["nginx", "Nginx", "cron"][(n % 3) as usize].to_owned()),
            procid: (n % 2 == 0).then(|| n.to_string()),
            msgid: (n % 10 == 0).then(|| "ID47".to_owned()),
            message: format!("{} #{n}", messages[(n % 8) as usize]),
            structured_data: (n % 11 == 0)
                .then(|| format!(r#"{{"meta@1":{{"n":"{n}","q":"a\"b"}}}}"#)),
            format: ["rfc5424", "rfc3164", "raw"][(n % 3) as usize],
            transport: if n % 2 == 0 { "udp" } else { "tcp" },
            truncated: n % 13 == 0,
        }
    }

    /// Listener batches of project 1 as several reads deliver them: arrival never goes
    /// back, several lines share an arrival millisecond within a batch, and sender times
    /// tie across batches (the tie is then broken by arrival, in both stores).
    fn batches() -> Vec<Vec<NewLogLine>> {
        let mut n = 0;
        (0..12)
            .map(|b| {
                (0..25)
                    .map(|i| {
                        n += 1;
                        // Four lines per millisecond, the batch's own milliseconds.
                        line(1, n, T0 + 500 + b * 100 + i / 4)
                    })
                    .collect()
            })
            .collect()
    }

    async fn connected() -> ClickHouseEvents {
        let url = testing::fresh_database().await;
        ClickHouseEvents::connect(&url).await.unwrap()
    }

    async fn drop_database(events: &ClickHouseEvents) {
        events
            .client
            .query("DROP DATABASE IF EXISTS ?")
            .bind(::clickhouse::sql::Identifier(
                events.client.database().unwrap(),
            ))
            .execute()
            .await
            .unwrap();
    }

    /// Both stores' answers with ids left out: they number lines differently.
    fn without_ids(lines: Vec<LogLine>) -> Vec<LogLine> {
        lines.into_iter().map(|l| LogLine { id: 0, ..l }).collect()
    }

    /// Every filter field alone and in combination, with limits that cut.
    fn filters() -> Vec<LogFilter> {
        let all = LogFilter {
            limit: MAX,
            ..LogFilter::default()
        };
        let mut filters = vec![all.clone()];
        for text in [
            "100% full",
            "100%",
            "user_id",
            "_",
            "%",
            "' and back\\",
            "école",
            "É",
            "X",
            "nothing",
        ] {
            filters.push(LogFilter {
                text: Some(text.into()),
                ..all.clone()
            });
        }
        for severity in 0..8 {
            filters.push(LogFilter {
                severity: Some(severity),
                ..all.clone()
            });
        }
        for host in ["host0", "host1", "HOST1", "host"] {
            filters.push(LogFilter {
                host: Some(host.into()),
                ..all.clone()
            });
        }
        for app in ["nginx", "Nginx", "cron", "ngin"] {
            filters.push(LogFilter {
                app: Some(app.into()),
                ..all.clone()
            });
        }
        for (since, until) in [
            (Some(T0 + 5_000), None),
            (None, Some(T0 + 5_000)),
            (Some(T0 + 2_000), Some(T0 + 9_000)),
            (Some(T0 + 700), Some(T0 + 701)),
            (Some(T0 + 9_000), Some(T0 + 2_000)),
        ] {
            filters.push(LogFilter {
                since_ms: since,
                until_ms: until,
                ..all.clone()
            });
        }
        filters.push(LogFilter {
            text: Some("DISK".into()),
            severity: Some(5),
            host: Some("host1".into()),
            app: Some("nginx".into()),
            since_ms: Some(T0),
            until_ms: Some(T0 + 40_000),
            limit: MAX,
        });
        for limit in [1, 2, 7, 100] {
            filters.push(LogFilter {
                limit,
                ..all.clone()
            });
            filters.push(LogFilter {
                severity: Some(3),
                limit,
                ..all.clone()
            });
        }
        filters
    }

    const MAX: u32 = crate::store::MAX_LOG_LIMIT;

    #[tokio::test]
    async fn searches_answer_as_the_sqlite_backend() {
        let dir = TempDir::new().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        sqlite.ensure_default_project().await.unwrap();
        let events = connected().await;
        let batches = batches();
        // Two group commits of several listener batches each.
        let (first, second) = batches.split_at(5);
        for commit in [first, second] {
            let ingests: Vec<Ingest> = commit.iter().cloned().map(Ingest::Logs).collect();
            sqlite.write(&ingests).await.unwrap();
            let slices: Vec<&[NewLogLine]> = commit.iter().map(Vec::as_slice).collect();
            events.insert_logs(&slices).await.unwrap();
        }
        // Another project's lines (only here: SQLite's projects table has one) never show.
        let other: Vec<NewLogLine> = (0..50).map(|n| line(2, n, T0 + 600)).collect();
        events.insert_logs(&[&other]).await.unwrap();

        let total = batches.iter().map(Vec::len).sum::<usize>();
        for filter in filters() {
            let want = sqlite.logs(1, &filter).await.unwrap();
            let got = events.search_logs(1, &filter).await.unwrap();
            assert_eq!(
                without_ids(got.clone()),
                without_ids(want.clone()),
                "{filter:?}"
            );
            assert!(got.len() <= filter.limit as usize);
            // Ids are unique, as SQLite's are.
            let mut ids: Vec<u64> = got.iter().map(|l| l.id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), got.len(), "{filter:?}");
        }
        // The fixture exercises what it should: ties, cut limits, every line reachable.
        let all = events
            .search_logs(
                1,
                &LogFilter {
                    limit: MAX,
                    ..LogFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.len(), total);
        assert!(
            all.windows(2)
                .any(|w| w[0].timestamp_ms == w[1].timestamp_ms)
        );
        // Ids increase with arrival: ordered by (received, place in its batch) they rise.
        let arrival: Vec<(i64, &str)> = batches
            .iter()
            .flatten()
            .map(|l| (l.received_ms, l.message.as_str()))
            .collect();
        let mut by_id = all.clone();
        by_id.sort_by_key(|l| l.id);
        let by_id: Vec<(i64, &str)> = by_id
            .iter()
            .map(|l| (l.received_ms, l.message.as_str()))
            .collect();
        assert_eq!(by_id, arrival);
        // Paging as the dashboard does, by `until` = the last line's time: the same pages.
        let mut until = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 100, "paging does not end");
            let page = LogFilter {
                until_ms: until,
                limit: 7,
                ..LogFilter::default()
            };
            let want = sqlite.logs(1, &page).await.unwrap();
            let got = events.search_logs(1, &page).await.unwrap();
            assert_eq!(without_ids(got.clone()), without_ids(want), "{page:?}");
            let Some(last) = got.last() else { break };
            until = Some(last.timestamp_ms);
        }
        assert!(pages > 5, "{pages} pages");
        let other = events
            .search_logs(
                2,
                &LogFilter {
                    limit: MAX,
                    ..LogFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(other.len(), 50);
        assert!(other.iter().all(|l| l.received_ms == T0 + 600));
        assert_eq!(
            events
                .search_logs(
                    3,
                    &LogFilter {
                        limit: MAX,
                        ..LogFilter::default()
                    }
                )
                .await
                .unwrap(),
            []
        );
        drop_database(&events).await;
    }

    #[tokio::test]
    async fn a_retried_insert_keeps_each_line_once() {
        let events = connected().await;
        let batches = batches();
        let slices: Vec<&[NewLogLine]> = batches.iter().map(Vec::as_slice).collect();
        events.insert_logs(&slices).await.unwrap();
        let filter = LogFilter {
            limit: MAX,
            ..LogFilter::default()
        };
        let once = events.search_logs(1, &filter).await.unwrap();
        // The commit again, whole and in pieces (a spool round with more files in it).
        events.insert_logs(&slices).await.unwrap();
        events.insert_logs(&slices[3..5]).await.unwrap();
        let page = LogFilter {
            limit: 10,
            ..filter.clone()
        };
        assert_eq!(events.search_logs(1, &filter).await.unwrap(), once);
        assert_eq!(events.search_logs(1, &page).await.unwrap(), once[..10]);
        // And after the copies are merged away.
        events
            .client
            .query("OPTIMIZE TABLE log_lines FINAL")
            .execute()
            .await
            .unwrap();
        assert_eq!(events.search_logs(1, &filter).await.unwrap(), once);
        let rows: u64 = events
            .client
            .query("SELECT count() FROM log_lines")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(rows, once.len() as u64);
        // Two identical lines of one batch are two lines, as in SQLite.
        // (Line 3 has no sender time: it is searched by its arrival, which no other has.)
        let twice = vec![line(1, 3, T0 + 50_000), line(1, 3, T0 + 50_000)];
        events.insert_logs(&[&twice]).await.unwrap();
        let found = events
            .search_logs(
                1,
                &LogFilter {
                    since_ms: Some(T0 + 50_000),
                    until_ms: Some(T0 + 50_001),
                    ..filter
                },
            )
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert!(found[0].id > found[1].id);
        drop_database(&events).await;
    }

    #[test]
    fn ids_rise_within_a_batch_and_follow_the_arrival_millisecond() {
        let lines: Vec<NewLogLine> = [5, 5, 5, 6, 5, 7]
            .into_iter()
            .enumerate()
            .map(|(n, ms)| line(1, n as i64, T0 + ms))
            .collect();
        let batch = batch_key(&lines);
        let ids = line_ids(&lines, batch);
        let tag = batch % TAG_SPACE;
        let ms = |d: i64| (T0 + d) as u64 * PER_MS;
        assert_eq!(
            ids,
            [
                ms(5) + tag,
                ms(5) + 1_000 + tag,
                ms(5) + 2_000 + tag,
                ms(6) + tag,
                ms(5) + 3_000 + tag,
                ms(7) + tag,
            ]
        );
        // Computed from the lines alone; any change of a line changes the batch.
        assert_eq!(batch_key(&lines), batch);
        let mut changed = lines.clone();
        changed[2].message.push('!');
        assert_ne!(batch_key(&changed), batch);
        let mut moved = lines.clone();
        moved.swap(0, 1);
        assert_ne!(batch_key(&moved), batch);
        // A burst past the rank's room keeps the last rank, inside its millisecond.
        let burst: Vec<NewLogLine> = (0..1_500).map(|n| line(1, n, T0)).collect();
        let ids = line_ids(&burst, 0);
        assert_eq!(ids[999], ms(0) + 999_000);
        assert_eq!(ids[1_499], ms(0) + 999_000);
        assert!(ids[1_499] < ms(1));
    }

    /// Lines received on `day` (days after the epoch day of `T0`) at `hour`.
    fn on_day(day: i64, hour: i64, count: i64) -> Vec<NewLogLine> {
        let start = T0 - T0.rem_euclid(DAY_MS) + day * DAY_MS + hour * 3_600_000;
        (0..count).map(|n| line(1, n, start + n)).collect()
    }

    #[tokio::test]
    async fn prune_drops_whole_days_past_the_cutoff_and_the_bound() {
        let events = connected().await;
        let days = [
            on_day(0, 1, 30),
            on_day(1, 1, 20),
            on_day(2, 1, 10),
            on_day(3, 1, 5),
        ];
        let slices: Vec<&[NewLogLine]> = days.iter().map(Vec::as_slice).collect();
        events.insert_logs(&slices).await.unwrap();
        let left = || async {
            let mut received: Vec<i64> = events
                .search_logs(
                    1,
                    &LogFilter {
                        limit: MAX,
                        ..LogFilter::default()
                    },
                )
                .await
                .unwrap()
                .iter()
                .map(|l| l.received_ms)
                .collect();
            received.sort_unstable();
            received
        };
        let day_start = |d: usize| days[d][0].received_ms - 3_600_000;
        // Nothing to do: under the bound and nothing expired.
        assert_eq!(events.prune_logs(1_000, 0).await.unwrap(), 0);
        assert_eq!(left().await.len(), 65);
        // A cutoff inside day 1 drops day 0 only: day 1 still has lines after it, and its
        // lines before it stay (the partition granularity).
        let inside_day_1 = days[1][5].received_ms;
        assert_eq!(events.prune_logs(1_000, inside_day_1).await.unwrap(), 30);
        assert_eq!(left().await.first(), Some(&days[1][0].received_ms));
        // A cutoff at the end of day 1 drops it.
        assert_eq!(events.prune_logs(1_000, day_start(2)).await.unwrap(), 20);
        assert_eq!(left().await.len(), 15);
        // The bound: 15 lines, at most 12 → day 2 (10) goes, day 3 (5) stays.
        assert_eq!(events.prune_logs(12, 0).await.unwrap(), 10);
        assert_eq!(
            left().await,
            days[3].iter().map(|l| l.received_ms).collect::<Vec<_>>()
        );
        // The newest day is never dropped for the bound, only when it has expired.
        assert_eq!(events.prune_logs(1, 0).await.unwrap(), 0);
        assert_eq!(left().await.len(), 5);
        assert_eq!(events.prune_logs(1, i64::MAX).await.unwrap(), 5);
        assert!(left().await.is_empty());
        assert_eq!(events.prune_logs(1, i64::MAX).await.unwrap(), 0);
        drop_database(&events).await;
    }
}
