//! The ClickHouse event and metric backend (scale-out mode, the `clickhouse` crate over
//! HTTP): error events and metric windows. Works on ClickHouse 18.16 (Debian's package)
//! and on current releases: no `DateTime64`, `Map`, `JSON`, TTL or
//! `RowBinaryWithNamesAndTypes` (hence `with_validation(false)`).
//!
//! Every collector of a deployment writes here at once, so nothing relies on a single
//! writer: events collapse by key in a `ReplacingMergeTree` and reads take one row per
//! event; metric windows go into a `Null` table whose materialized views fold them into
//! `AggregatingMergeTree` tiers that add up whatever any collector inserted. Tables are
//! partitioned by UTC day, and retention drops whole partitions ([`ClickHouseEvents::prune`]).

mod cluster;
mod events;
mod insight;
mod logs;
mod windows;

pub(crate) use cluster::cluster_schema;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::migrate::{self, Migration};
use crate::Error;
use crate::insight::{RetentionConfig, Tier};

/// One event to store, with where it belongs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow<'a> {
    pub project_id: u64,
    /// The issue grouping put it in (PostgreSQL decides).
    pub issue_id: u64,
    /// When the collector accepted it, unix seconds.
    pub received_at: f64,
    pub event: &'a crate::store::EventRecord,
}

/// The database a URL without a path names.
const DEFAULT_DATABASE: &str = "sightline";

/// A day, seconds: the partition of every metric table.
const DAY: i64 = 86_400;

/// How long `/health`'s ping waits: a server that accepts connections but does not answer
/// is down, not slow.
const PING_WAIT: Duration = Duration::from_secs(5);

/// How long an insert may take to send its rows, and then for the server to answer (it
/// runs every materialized view before it does). The client has no timeout of its own,
/// and a hung server must fail the group commit (so the collector spools it) rather than
/// stall the writer.
const INSERT_SEND_WAIT: Duration = Duration::from_secs(30);
const INSERT_END_WAIT: Duration = Duration::from_secs(60);

/// The one place ClickHouse driver errors become domain errors.
fn db(e: ::clickhouse::error::Error) -> Error {
    Error::Store(Arc::new(e))
}

/// Events and metric windows in one ClickHouse database.
#[derive(Clone)]
pub(crate) struct ClickHouseEvents {
    client: ::clickhouse::Client,
    /// Tier retention: decides which rollup tier a range query reads, as in SQLite.
    retention: RetentionConfig,
    /// Cluster mode: the cluster's name. Reads and inserts go through the `Distributed`
    /// tables under the plain names; partitions live in the `_local` tables.
    cluster: Option<String>,
}

/// Where a connection URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `http://host:port`, what the client sends requests to.
    endpoint: String,
    database: String,
    user: Option<String>,
    password: Option<String>,
    /// Cluster mode (`?cluster=NAME`): the schema as replicated tables behind
    /// `Distributed` ones, created `ON CLUSTER NAME` ([`cluster`]).
    cluster: Option<String>,
}

/// Reads `http://[user[:password]@]host:port[/database][?cluster=NAME]`, or the same
/// with `clickhouse://` (the `--events` form), which means plain HTTP.
fn parse_url(url: &str) -> Result<Target, Error> {
    const BAD: Error = Error::Config(
        "the clickhouse url must look like clickhouse://host:port/database[?cluster=NAME] or http://host:port/database",
    );
    let (scheme, rest) = url.split_once("://").ok_or(BAD)?;
    let scheme = match scheme {
        "clickhouse" | "http" => "http",
        "https" => "https",
        _ => return Err(BAD),
    };
    let (rest, cluster) = match rest.split_once('?') {
        Some((rest, query)) => match query.strip_prefix("cluster=") {
            Some(name)
                if !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                (rest, Some(name.to_owned()))
            }
            _ => return Err(BAD),
        },
        None => (rest, None),
    };
    if rest.contains('#') {
        return Err(BAD);
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((credentials, host)) => (Some(credentials), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(BAD);
    }
    let (user, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((user, password)) => (
            Some(user.to_owned()),
            (!password.is_empty()).then(|| password.to_owned()),
        ),
        None => (None, None),
    };
    let database = path.trim_end_matches('/');
    let database = if database.is_empty() {
        DEFAULT_DATABASE
    } else {
        database
    };
    // The name goes into `CREATE DATABASE` and every request; keep it a plain identifier.
    if !database
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::Config(
            "the clickhouse database name may hold only letters, digits and _",
        ));
    }
    Ok(Target {
        endpoint: format!("{scheme}://{host}"),
        database: database.to_owned(),
        user,
        password,
        cluster,
    })
}

/// The statements of a migration file: comment lines dropped, split after each line that
/// ends with `;` (ClickHouse's HTTP interface takes one statement per request).
fn statements(sql: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim();
            if !statement.is_empty() {
                all.push(statement.to_owned());
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        all.push(rest.to_owned());
    }
    all
}

/// The metric and insight tables of every tier, with the tier whose retention they
/// follow: what retention prunes.
fn window_tables() -> impl Iterator<Item = (String, Tier)> {
    Tier::ALL
        .into_iter()
        .flat_map(|tier| {
            ["route_windows", "project_windows"]
                .into_iter()
                .map(move |table| (format!("{table}{}", tier.route_suffix()), tier))
        })
        .chain(insight::pruned_tables())
}

#[derive(Debug, ::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct PartRow {
    table: String,
    partition: String,
    rows: u64,
}

impl ClickHouseEvents {
    /// Connects to `url` (`clickhouse://host:port/database` or `http://…`; database
    /// `sightline` when the path is empty), creates the database when missing and applies
    /// the pending migrations. Safe when several collectors start at once: every statement
    /// is idempotent.
    pub(crate) async fn connect(url: &str) -> Result<ClickHouseEvents, Error> {
        let target = parse_url(url)?;
        let mut server = ::clickhouse::Client::default()
            .with_url(&target.endpoint)
            // 18.16 lacks RowBinaryWithNamesAndTypes, which validation needs.
            .with_validation(false);
        if let Some(user) = &target.user {
            server = server.with_user(user);
        }
        if let Some(password) = &target.password {
            server = server.with_password(password);
        }
        // Without a database: the one named may not exist yet.
        let on_cluster = match &target.cluster {
            Some(cluster) => format!(" ON CLUSTER {cluster}"),
            None => String::new(),
        };
        server
            .query(&format!("CREATE DATABASE IF NOT EXISTS ?{on_cluster}"))
            .bind(::clickhouse::sql::Identifier(&target.database))
            .execute()
            .await
            .map_err(db)?;
        let events = ClickHouseEvents {
            client: server.with_database(&target.database),
            retention: RetentionConfig::default(),
            cluster: target.cluster.clone(),
        };
        let schema = match &target.cluster {
            None => migrate::CLICKHOUSE
                .iter()
                .map(|m| statements(m.sql))
                .collect(),
            Some(cluster) => cluster::cluster_migrations(
                migrate::CLICKHOUSE.iter().map(|m| m.sql),
                cluster,
                &target.database,
            )
            .map_err(|e| Error::Store(Arc::new(e)))?,
        };
        events.migrate(migrate::CLICKHOUSE, &schema).await?;
        Ok(events)
    }

    /// Keeps tiers for `retention` (and reads the tier that fits each range).
    pub(crate) fn with_retention(mut self, retention: RetentionConfig) -> Self {
        self.retention = retention;
        self
    }

    /// Applies every pending migration, statement by statement (`schema[i]` holds the
    /// statements of `migrations[i]`), and records its version after the last one.
    /// ClickHouse has no transactions or locks: a collector that dies midway, or two that
    /// start together, run statements again, which `IF NOT EXISTS` makes harmless; a
    /// version recorded twice collapses in the table and reads once. In cluster mode each
    /// node keeps its own `schema_migrations`: the `ON CLUSTER` statements are idempotent
    /// too, so a collector on another node applying them again changes nothing.
    async fn migrate(&self, migrations: &[Migration], schema: &[Vec<String>]) -> Result<(), Error> {
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    Int64,
                     applied_at Int64
                 ) ENGINE = ReplacingMergeTree() ORDER BY version",
            )
            .execute()
            .await
            .map_err(db)?;
        let applied: Vec<i64> = self
            .client
            .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
            .fetch_all()
            .await
            .map_err(db)?;
        for migration in migrate::pending(migrations, &applied)? {
            let failed = |e: ::clickhouse::error::Error| Error::Migration {
                version: migration.version,
                source: Arc::new(e),
            };
            let index = migrations
                .iter()
                .position(|m| m.version == migration.version)
                .unwrap_or(0);
            for statement in schema.get(index).into_iter().flatten() {
                // Verbatim: the schema is ours, and `?` must not read as a placeholder.
                self.client
                    .query_raw(statement)
                    .execute()
                    .await
                    .map_err(failed)?;
            }
            self.client
                .query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(migration.version)
                .bind(crate::query::unix_now())
                .execute()
                .await
                .map_err(failed)?;
            tracing::info!(version = migration.version, "applied clickhouse migration");
        }
        Ok(())
    }

    /// Cheap liveness check for `/health`.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let answer = self.client.query("SELECT 1").fetch_one::<u8>();
        match tokio::time::timeout(PING_WAIT, answer).await {
            Ok(answer) => answer.map(drop).map_err(db),
            Err(_) => Err(db(::clickhouse::error::Error::TimedOut)),
        }
    }

    /// Starts one insert into `table`, bounded by the insert timeouts.
    async fn insert<T: ::clickhouse::Row>(
        &self,
        table: &str,
    ) -> Result<::clickhouse::insert::Insert<T>, Error> {
        Ok(self
            .client
            .insert::<T>(table)
            .await
            .map_err(db)?
            .with_timeouts(Some(INSERT_SEND_WAIT), Some(INSERT_END_WAIT)))
    }

    /// The name `table`'s parts are listed under in `system.parts`: the table itself, or in
    /// cluster mode its `_local` table (each node lists its own shard's parts).
    pub(super) fn parts_of(&self, table: &str) -> String {
        match self.cluster {
            Some(_) => format!("{table}_local"),
            None => table.to_owned(),
        }
    }

    /// `ALTER TABLE … DROP PARTITION ?` for one of our own tables: in cluster mode on the
    /// `_local` table of every node.
    pub(super) fn drop_partition_sql(&self, table: &str) -> String {
        match &self.cluster {
            Some(cluster) => {
                format!("ALTER TABLE {table}_local ON CLUSTER {cluster} DROP PARTITION ?")
            }
            None => format!("ALTER TABLE {table} DROP PARTITION ?"),
        }
    }

    /// Drops the daily partitions of each tier's tables that lie wholly before the tier's
    /// retention (`now - keep_secs`), as SQLite deletes the rows that start before it;
    /// returns the rows dropped. Partitions are found through `system.parts`, so this works
    /// where TTL does not (18.16). Insight tables go the same way (exemplars with the raw
    /// tier, statement texts with the day tier). Events are kept, as SQLite keeps them.
    pub(crate) async fn prune(&self, retention: &RetentionConfig, now: i64) -> Result<u64, Error> {
        let tables: Vec<(String, Tier)> = window_tables().collect();
        let names: Vec<String> = tables.iter().map(|(name, _)| self.parts_of(name)).collect();
        let parts: Vec<PartRow> = self
            .client
            .query(
                "SELECT table, partition, sum(rows) FROM system.parts
                 WHERE database = currentDatabase() AND active AND has(?, table)
                 GROUP BY table, partition",
            )
            .bind(names)
            .fetch_all()
            .await
            .map_err(db)?;
        let mut dropped = 0u64;
        for part in parts {
            let Some((table, tier)) = tables
                .iter()
                .find(|(name, _)| self.parts_of(name) == part.table)
            else {
                continue;
            };
            // The partition value is `intDiv(window_start, 86400)`: the day number.
            let Ok(day) = part.partition.parse::<i64>() else {
                tracing::warn!(%table, partition = %part.partition, "unexpected partition");
                continue;
            };
            let cutoff = now.saturating_sub(retention.keep_secs(*tier));
            if day.saturating_add(1).saturating_mul(DAY) > cutoff {
                continue;
            }
            // `table` comes from our own list; the partition value is bound. Dropping a
            // partition another collector dropped already is a no-op.
            self.client
                .query(&self.drop_partition_sql(table))
                .bind(day)
                .execute()
                .await
                .map_err(db)?;
            dropped = dropped.saturating_add(part.rows);
        }
        Ok(dropped)
    }
}

/// Fresh databases for tests against a real ClickHouse.
#[cfg(test)]
pub(crate) mod testing {
    /// The environment variable naming the test server (`http://127.0.0.1:PORT`).
    pub(crate) const SERVER_VAR: &str = "SIGHTLINE_TEST_CLICKHOUSE";

    /// The URL of a database no other test uses (`sightline_test_<uuid>`) on the server
    /// that [`SERVER_VAR`] names; `connect` creates it. Panics with what to run when the
    /// variable is missing: a test that silently skips proves nothing.
    pub(crate) async fn fresh_database() -> String {
        let server = std::env::var(SERVER_VAR).unwrap_or_else(|_| {
            panic!(
                "{SERVER_VAR} is not set: start the test servers with \
                 `eval \"$(scripts/services start)\"` and run the tests again"
            )
        });
        format!(
            "{}/sightline_test_{}",
            server.trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        )
    }
}
