//! The PostgreSQL metadata backend (scale-out mode, sqlx): projects, agents, switches and
//! issues, shared by every collector of a deployment. Events and metric windows live in
//! ClickHouse ([`super::clickhouse`]); [`super::scaled::ScaledStore`] puts the two together.

mod issues;
mod switches;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::migrate::{self, Migration};
use crate::{Error, query::unix_now};

/// Connections in the pool: the writer task, the query-API readers and the switch
/// listener.
const MAX_CONNECTIONS: u32 = 8;

/// How long a request waits for a connection before the store counts as down.
const WAIT: Duration = Duration::from_secs(5);

/// Any number; only migrating collectors take this advisory lock, so two collectors
/// starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x5167_6874_6c69_6e65;

/// The one place PostgreSQL driver errors become domain errors.
pub(super) fn db(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolClosed => Error::ShuttingDown,
        other => Error::Store(Arc::new(other)),
    }
}

/// Metadata in PostgreSQL through a sqlx pool.
#[derive(Clone)]
pub(crate) struct PgMeta {
    pool: PgPool,
}

impl PgMeta {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to date.
    pub(crate) async fn connect(url: &str) -> Result<PgMeta, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(WAIT)
            .connect(url)
            .await
            .map_err(db)?;
        let meta = PgMeta { pool };
        meta.migrate(migrate::POSTGRES).await?;
        Ok(meta)
    }

    /// The pool, for the backend's own modules.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies every pending migration in one transaction, under a transaction-scoped
    /// advisory lock so concurrent collectors apply each once.
    async fn migrate(&self, migrations: &[Migration]) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        for migration in migrate::pending(migrations, &applied)? {
            let failed = |e: sqlx::Error| Error::Migration {
                version: migration.version,
                source: Arc::new(e),
            };
            sqlx::raw_sql(migration.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(migration.version)
                .bind(unix_now())
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(version = migration.version, "applied postgres migration");
        }
        tx.commit().await.map_err(db)
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}
