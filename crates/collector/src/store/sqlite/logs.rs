//! The SQLite side of log lines (`log_lines`, migration 0005): many-row inserts for
//! group commits, filtered searches, retention.

use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow};
use sqlx::{QueryBuilder, Row};

use super::{SqliteStore, db};
use crate::Error;
use crate::store::logs::{LogFilter, LogLine, NewLogLine};
use crate::store::meta_rows::like_pattern;
use crate::store::{to_i64, to_u64};

/// Rows per INSERT: 15 columns × 400 stays far below SQLite's 32,766 bound parameters,
/// and one statement per few hundred lines is what makes 50,000 lines/s affordable.
const ROWS_PER_INSERT: usize = 400;

/// Most rows one retention pass deletes, so it never holds the write lock for long.
const MAX_PRUNE_ROWS: i64 = 100_000;

const COLUMNS: &str = "id, ts_ms, received_ms, timestamp_ms, facility, severity, host, app,
                       procid, msgid, message, structured_data, format, transport, truncated";

/// Inserts every line, inside the caller's group-commit transaction.
pub(super) async fn insert_logs(
    conn: &mut SqliteConnection,
    lines: &[NewLogLine],
) -> Result<(), sqlx::Error> {
    for chunk in lines.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO log_lines (project_id, ts_ms, received_ms, timestamp_ms, facility,
                     severity, host, app, procid, msgid, message, structured_data, format,
                     transport, truncated) ",
        );
        insert.push_values(chunk, |mut row, line| {
            row.push_bind(to_i64(line.project_id))
                .push_bind(line.time_ms())
                .push_bind(line.received_ms)
                .push_bind(line.timestamp_ms)
                .push_bind(line.facility)
                .push_bind(line.severity)
                .push_bind(line.host.as_deref())
                .push_bind(line.app.as_deref())
                .push_bind(line.procid.as_deref())
                .push_bind(line.msgid.as_deref())
                .push_bind(line.message.as_str())
                .push_bind(line.structured_data.as_deref())
                .push_bind(line.format)
                .push_bind(line.transport)
                .push_bind(line.truncated);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Newest first, filtered.
    pub(super) async fn search_logs(
        &self,
        project_id: u64,
        filter: &LogFilter,
    ) -> Result<Vec<LogLine>, Error> {
        let pattern = filter.text.as_deref().map(like_pattern);
        let sql = format!(
            "SELECT {COLUMNS} FROM log_lines
             WHERE project_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
               AND (?4 IS NULL OR severity <= ?4)
               AND (?5 IS NULL OR host = ?5)
               AND (?6 IS NULL OR app = ?6)
               AND (?7 IS NULL OR message LIKE ?7 ESCAPE '\\')
             ORDER BY ts_ms DESC, id DESC
             LIMIT ?8"
        );
        sqlx::query(&sql)
            .bind(to_i64(project_id))
            .bind(filter.since_ms.unwrap_or(i64::MIN))
            .bind(filter.until_ms.unwrap_or(i64::MAX))
            .bind(filter.severity)
            .bind(filter.host.as_deref())
            .bind(filter.app.as_deref())
            .bind(pattern)
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(log_line)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Deletes lines past the count bound and lines received before `received_before_ms`,
    /// oldest first (ids grow with arrival), at most [`MAX_PRUNE_ROWS`] per call.
    pub(super) async fn prune_log_lines(
        &self,
        max_lines: u64,
        received_before_ms: i64,
    ) -> Result<u64, Error> {
        let deleted = sqlx::query(
            "DELETE FROM log_lines
             WHERE id < MIN(
                 (SELECT MIN(id) FROM log_lines) + ?3,
                 MAX(
                     (SELECT MAX(id) FROM log_lines) - ?1 + 1,
                     COALESCE(
                         (SELECT id FROM log_lines WHERE received_ms >= ?2 ORDER BY id LIMIT 1),
                         (SELECT MAX(id) FROM log_lines) + 1
                     )
                 )
             )",
        )
        .bind(to_i64(max_lines))
        .bind(received_before_ms)
        .bind(MAX_PRUNE_ROWS)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(deleted.rows_affected())
    }
}

fn log_line(row: &SqliteRow) -> Result<LogLine, sqlx::Error> {
    let time_ms: i64 = row.try_get("ts_ms")?;
    let severity: Option<u8> = row.try_get("severity")?;
    let structured_data: Option<String> = row.try_get("structured_data")?;
    Ok(LogLine {
        id: to_u64(row.try_get("id")?),
        timestamp: LogLine::format_time(time_ms),
        timestamp_ms: time_ms,
        received_ms: row.try_get("received_ms")?,
        facility: row.try_get("facility")?,
        severity,
        severity_name: LogLine::severity_name(severity),
        host: row.try_get("host")?,
        app: row.try_get("app")?,
        procid: row.try_get("procid")?,
        msgid: row.try_get("msgid")?,
        message: row.try_get("message")?,
        // Written by the collector as JSON; a row that is not reads as no data.
        structured_data: structured_data.and_then(|text| serde_json::from_str(&text).ok()),
        format: row.try_get("format")?,
        transport: row.try_get("transport")?,
        truncated: row.try_get("truncated")?,
    })
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::store::{Ingest, Store};

    fn line(n: i64, message: &str) -> NewLogLine {
        NewLogLine {
            project_id: 1,
            received_ms: 1_700_000_000_000 + n,
            timestamp_ms: None,
            facility: Some(1),
            severity: Some(u8::try_from(n % 8).unwrap()),
            host: Some(format!("host{}", n % 2)),
            app: Some("app".into()),
            procid: None,
            msgid: None,
            message: message.to_owned(),
            structured_data: None,
            format: "rfc5424",
            transport: "tcp",
            truncated: false,
        }
    }

    async fn store(dir: &TempDir) -> SqliteStore {
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        store.ensure_default_project().await.unwrap();
        store
    }

    #[tokio::test]
    async fn searches_filter_and_order_newest_first() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        let lines: Vec<_> = (0..1_000)
            .map(|n| line(n, if n % 10 == 0 { "disk 100% FULL" } else { "ok" }))
            .collect();
        store.write(&[Ingest::Logs(lines)]).await.unwrap();
        let search = |filter: LogFilter| {
            let store = &store;
            async move {
                store
                    .logs(
                        1,
                        &LogFilter {
                            limit: 1_000,
                            ..filter
                        },
                    )
                    .await
            }
        };
        assert_eq!(search(LogFilter::default()).await.unwrap().len(), 1_000);
        let full = search(LogFilter {
            text: Some("100% full".into()),
            ..LogFilter::default()
        })
        .await
        .unwrap();
        assert_eq!(full.len(), 100);
        assert!(
            full.windows(2)
                .all(|w| w[0].timestamp_ms >= w[1].timestamp_ms)
        );
        // `%` is literal, not a wildcard.
        assert!(
            search(LogFilter {
                text: Some("1%L".into()),
                ..LogFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
        );
        let severe = search(LogFilter {
            severity: Some(2),
            host: Some("host0".into()),
            ..LogFilter::default()
        })
        .await
        .unwrap();
        assert!(!severe.is_empty());
        assert!(
            severe
                .iter()
                .all(|l| l.severity <= Some(2) && l.host.as_deref() == Some("host0"))
        );
        let window = search(LogFilter {
            since_ms: Some(1_700_000_000_100),
            until_ms: Some(1_700_000_000_200),
            ..LogFilter::default()
        })
        .await
        .unwrap();
        assert_eq!(window.len(), 100);
        assert_eq!(
            store
                .logs(
                    2,
                    &LogFilter {
                        limit: 10,
                        ..LogFilter::default()
                    }
                )
                .await
                .unwrap(),
            []
        );
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_lines() {
        let dir = TempDir::new().unwrap();
        let store = store(&dir).await;
        let lines: Vec<_> = (0..100).map(|n| line(n, "x")).collect();
        store.write(&[Ingest::Logs(lines)]).await.unwrap();
        assert_eq!(store.prune_logs(1_000, 0).await.unwrap(), 0);
        assert_eq!(store.prune_logs(60, 0).await.unwrap(), 40);
        // Received before …050: ten more go.
        assert_eq!(store.prune_logs(60, 1_700_000_000_050).await.unwrap(), 10);
        let left = store
            .logs(
                1,
                &LogFilter {
                    limit: 1_000,
                    ..LogFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(left.len(), 50);
        assert_eq!(left.last().unwrap().received_ms, 1_700_000_000_050);
        // Everything too old: everything goes.
        assert_eq!(store.prune_logs(60, i64::MAX).await.unwrap(), 50);
    }
}
