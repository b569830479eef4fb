//! What the SQLite and PostgreSQL metadata backends share where their SQL is the same:
//! both tables of projects, issues and switches have the same columns under the same
//! names and types (TEXT, 64-bit integers, doubles), so one decoder per record reads a
//! row of either database through [`Columns`], and the column lists and the helpers that
//! build query parameters are written once.
//!
//! The statements themselves differ (`?1` against `$1`, `ON CONFLICT` forms, `unnest`
//! batches, PostgreSQL's row locks and LISTEN/NOTIFY) and stay in each backend.

use std::sync::Arc;

use sightline_protocol::Switch;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Postgres, Row, Sqlite, Type};

use super::{Issue, IssueSort, IssueStatus, Project, to_u64};
use crate::Error;
use crate::switches::{Action, ChangeRecord, SwitchRecord};

/// The one place driver errors of either database become domain errors.
pub(super) fn db(e: sqlx::Error) -> Error {
    match e {
        // A pool is closed only by `Collector::shutdown`.
        sqlx::Error::PoolClosed => Error::ShuttingDown,
        other => Error::Store(Arc::new(other)),
    }
}

/// A value both databases decode: `String`, `i64`, `f64` and their `Option`s here.
pub(super) trait Cell:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Cell for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A row of either metadata database, read by column name.
pub(super) trait Columns {
    fn get<T: Cell>(&self, column: &str) -> Result<T, sqlx::Error>;
}

impl Columns for SqliteRow {
    fn get<T: Cell>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
}

impl Columns for PgRow {
    fn get<T: Cell>(&self, column: &str) -> Result<T, sqlx::Error> {
        self.try_get(column)
    }
}

/// `id, name, public_key` of `projects`.
pub(super) fn project(row: &impl Columns) -> Result<Project, sqlx::Error> {
    Ok(Project {
        id: to_u64(row.get("id")?),
        name: row.get("name")?,
        public_key: row.get("public_key")?,
    })
}

/// The columns [`issue`] reads.
pub(super) const ISSUE_COLUMNS: &str =
    "id, project_id, hash, title, culprit, level, platform, status,
    substatus, first_seen, last_seen, times_seen, user_count, grouped_by, grouping_values,
    last_release, last_environment";

pub(super) fn issue(row: &impl Columns) -> Result<Issue, sqlx::Error> {
    let status: String = row.get("status")?;
    let values: String = row.get("grouping_values")?;
    Ok(Issue {
        id: to_u64(row.get("id")?),
        project_id: to_u64(row.get("project_id")?),
        hash: row.get("hash")?,
        title: row.get("title")?,
        culprit: row.get("culprit")?,
        level: row.get("level")?,
        platform: row.get("platform")?,
        status: IssueStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Protocol(format!("unknown issue status {status:?}")))?,
        substatus: row.get("substatus")?,
        first_seen: row.get("first_seen")?,
        last_seen: row.get("last_seen")?,
        times_seen: to_u64(row.get("times_seen")?),
        user_count: to_u64(row.get("user_count")?),
        grouped_by: row.get("grouped_by")?,
        grouping_values: serde_json::from_str(&values).unwrap_or_default(),
        last_release: row.get("last_release")?,
        last_environment: row.get("last_environment")?,
    })
}

/// The sort column of an issue list; a closed set, never client text.
pub(super) fn sort_column(sort: IssueSort) -> &'static str {
    match sort {
        IssueSort::LastSeen => "last_seen",
        IssueSort::Count => "times_seen",
        IssueSort::FirstSeen => "first_seen",
    }
}

/// `%text%` for (I)LIKE, with LIKE's own wildcards escaped by `\` (both backends' statements
/// say `ESCAPE '\'`).
pub(super) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Stored JSON that no longer parses is a store fault, not the client's.
pub(super) fn corrupt(e: serde_json::Error) -> Error {
    Error::Store(Arc::new(e))
}

fn definition(text: &str) -> Result<Switch, Error> {
    serde_json::from_str(text).map_err(corrupt)
}

/// The columns [`switch_record`] reads.
pub(super) const RECORD_COLUMNS: &str =
    "key, version, definition, created_at, updated_at, state_since";
/// The columns [`switch_change`] reads.
pub(super) const CHANGE_COLUMNS: &str = "id, key, version, action, actor, reason, at, old, new";

/// A switch and its version stamps, from `switches`.
pub(super) fn switch_record(row: &impl Columns) -> Result<SwitchRecord, Error> {
    Ok(SwitchRecord {
        switch: definition(&row.get::<String>("definition").map_err(db)?)?,
        version: to_u64(row.get("version").map_err(db)?),
        created_at: row.get("created_at").map_err(db)?,
        updated_at: row.get("updated_at").map_err(db)?,
        state_since: row.get("state_since").map_err(db)?,
    })
}

/// One entry of the audit log, from `switch_changes`.
pub(super) fn switch_change(row: &impl Columns) -> Result<ChangeRecord, Error> {
    let action: String = row.get("action").map_err(db)?;
    let old: Option<String> = row.get("old").map_err(db)?;
    Ok(ChangeRecord {
        id: to_u64(row.get("id").map_err(db)?),
        key: row.get("key").map_err(db)?,
        version: to_u64(row.get("version").map_err(db)?),
        action: Action::parse(&action).ok_or_else(|| {
            let message = format!("unknown switch action {action:?}");
            Error::Store(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                message,
            )))
        })?,
        actor: row.get("actor").map_err(db)?,
        reason: row.get("reason").map_err(db)?,
        at: row.get("at").map_err(db)?,
        old: old.as_deref().map(definition).transpose()?,
        new: definition(&row.get::<String>("new").map_err(db)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_pattern_escapes_the_wildcards_and_the_escape() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern(""), "%%");
    }
}
