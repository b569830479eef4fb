//! The SQLite side of feature switches: definitions, their audit log, and the check
//! counts agents report (written inside the metric group commit).

use async_trait::async_trait;
use sightline_protocol::MetricBatch;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, db};
use crate::Error;
use crate::store::meta_rows::{
    CHANGE_COLUMNS, RECORD_COLUMNS, corrupt, switch_change, switch_record,
};
use crate::store::{to_i64, to_u64};
use crate::switches::{
    AuditFilter, ChangeRecord, NewChange, SwitchRecord, SwitchStore, SwitchUsage,
};

async fn read_switch(
    tx: &mut Transaction<'_, Sqlite>,
    key: &str,
) -> Result<Option<SwitchRecord>, Error> {
    sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM switches WHERE key = ?1"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?
    .as_ref()
    .map(switch_record)
    .transpose()
}

/// Adds a batch's switch check counts to today's row of each switch it names; counts
/// for keys that are no switch (deleted, or an agent's typo) are dropped, so the table
/// only grows with real switches.
pub(in crate::store) async fn record_evaluations(
    conn: &mut SqliteConnection,
    batch: &MetricBatch,
    received_at: i64,
) -> Result<(), sqlx::Error> {
    let day = received_at.div_euclid(86_400);
    for (key, &count) in &batch.switch_evaluations {
        if count == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO switch_evaluations (key, day, count)
             SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM switches WHERE key = ?1)
             ON CONFLICT (key, day) DO UPDATE SET
                 count = MIN(count + excluded.count, 9223372036854775807)",
        )
        .bind(key)
        .bind(day)
        .bind(to_i64(count))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl SwitchStore for SqliteStore {
    async fn load_switches(&self) -> Result<(u64, Vec<SwitchRecord>), Error> {
        // One read transaction: the version matches the rows.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let version: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM switch_changes")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        let records = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM switches ORDER BY key"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .iter()
        .map(switch_record)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db)?;
        Ok((to_u64(version), records))
    }

    async fn switch(&self, key: &str) -> Result<Option<SwitchRecord>, Error> {
        sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM switches WHERE key = ?1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(switch_record)
        .transpose()
    }

    async fn apply_switch_change(
        &self,
        change: NewChange,
    ) -> Result<(SwitchRecord, ChangeRecord), Error> {
        // IMMEDIATE: the version check and the write see the same state even with
        // another process on the file.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let existing = read_switch(&mut tx, &change.new.key).await?;
        match (&existing, change.expected_version) {
            (Some(_), None) => {
                return Err(Error::Conflict("a switch with this key exists".to_owned()));
            }
            (None, Some(_)) => return Err(Error::NotFound("switch")),
            (Some(existing), Some(expected)) if existing.version != expected => {
                return Err(Error::Conflict(format!(
                    "switch is at version {}, not {expected}",
                    existing.version
                )));
            }
            _ => {}
        }
        let new_json = serde_json::to_string(&change.new).map_err(corrupt)?;
        let old_json = existing
            .as_ref()
            .map(|r| serde_json::to_string(&r.switch))
            .transpose()
            .map_err(corrupt)?;
        let record = SwitchRecord {
            switch: change.new.clone(),
            version: existing.as_ref().map_or(1, |r| r.version + 1),
            created_at: existing.as_ref().map_or(change.at, |r| r.created_at),
            updated_at: change.at,
            state_since: match &existing {
                Some(r) if r.switch.state == change.new.state => r.state_since,
                _ => change.at,
            },
        };
        sqlx::query(
            "INSERT INTO switches (key, version, state, definition, created_at, updated_at,
                                   state_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (key) DO UPDATE SET
                 version = excluded.version,
                 state = excluded.state,
                 definition = excluded.definition,
                 updated_at = excluded.updated_at,
                 state_since = excluded.state_since",
        )
        .bind(&record.switch.key)
        .bind(to_i64(record.version))
        .bind(record.switch.state.as_str())
        .bind(&new_json)
        .bind(record.created_at)
        .bind(record.updated_at)
        .bind(record.state_since)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let id = sqlx::query(
            "INSERT INTO switch_changes (key, version, action, actor, reason, at, old, new)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&record.switch.key)
        .bind(to_i64(record.version))
        .bind(change.action.as_str())
        .bind(&change.actor)
        .bind(&change.reason)
        .bind(change.at)
        .bind(old_json.as_deref())
        .bind(&new_json)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .last_insert_rowid();
        tx.commit().await.map_err(db)?;
        let change = ChangeRecord {
            id: to_u64(id),
            key: record.switch.key.clone(),
            version: record.version,
            action: change.action,
            actor: change.actor,
            reason: change.reason,
            at: change.at,
            old: existing.map(|r| r.switch),
            new: change.new,
        };
        Ok((record, change))
    }

    async fn switch_history(&self, key: &str) -> Result<Vec<ChangeRecord>, Error> {
        sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM switch_changes WHERE key = ?1 ORDER BY id DESC"
        ))
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(switch_change)
        .collect()
    }

    async fn switch_change(&self, key: &str, version: u64) -> Result<Option<ChangeRecord>, Error> {
        sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM switch_changes WHERE key = ?1 AND version = ?2"
        ))
        .bind(key)
        .bind(to_i64(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(switch_change)
        .transpose()
    }

    async fn switch_audit(
        &self,
        limit: u32,
        filter: &AuditFilter,
    ) -> Result<Vec<ChangeRecord>, Error> {
        sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM switch_changes
             WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR at >= ?2)
                   AND (?3 IS NULL OR at < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))
        .bind(filter.before.map(to_i64))
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(switch_change)
        .collect()
    }

    async fn switch_usage(&self, since_day: i64) -> Result<Vec<SwitchUsage>, Error> {
        sqlx::query(
            "SELECT s.key, s.version, s.definition, s.created_at, s.updated_at, s.state_since,
                    (SELECT MAX(day) FROM switch_evaluations e
                     WHERE e.key = s.key AND e.count > 0) AS last_day,
                    (SELECT TOTAL(count) FROM switch_evaluations e
                     WHERE e.key = s.key AND e.day >= ?1) AS recent
             FROM switches s ORDER BY s.key",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            let recent: f64 = row.try_get("recent").map_err(db)?;
            Ok(SwitchUsage {
                record: switch_record(row)?,
                last_evaluated_day: row.try_get("last_day").map_err(db)?,
                // TOTAL is a float; counts are whole and far below 2^53 per window.
                recent_evaluations: recent.max(0.0) as u64,
            })
        })
        .collect()
    }
}
