//! The PostgreSQL metadata backend (scale-out mode, sqlx): projects, agents, switches and
//! issues, shared by every collector of a deployment. Events and metric windows live in
//! ClickHouse ([`super::clickhouse`]); [`super::scaled::ScaledStore`] puts the two together.

mod issues;
mod switches;

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub(super) use super::meta_rows::db;
use super::meta_rows::project;
use super::migrate::{self, Migration};
use super::{MAX_ENVIRONMENTS, MetricsIngest, Project, to_i64, to_u64};
use crate::switches::{Notice, Switches};
use crate::{Error, query::unix_now};

/// Connections in the pool: the writer task, the query-API readers and the switch
/// listener.
const MAX_CONNECTIONS: u32 = 8;

/// How long a request waits for a connection before the store counts as down.
const WAIT: Duration = Duration::from_secs(5);

/// Any number; only migrating collectors take this advisory lock, so two collectors
/// starting together apply each migration once.
const MIGRATION_LOCK: i64 = 0x5167_6874_6c69_6e65;

/// Another advisory lock key: collectors creating the default project take it, so two
/// starting on an empty database create one project, not two.
const DEFAULT_PROJECT_LOCK: i64 = 0x5167_6874_6c69_6e66;

/// The channel switch changes are announced on (`pg_notify` in the change's
/// transaction, delivered at commit); the payload is the new set version.
pub(super) const SWITCH_CHANNEL: &str = "sightline_switches";

/// Notices buffered between the listener and the switch service. A full buffer drops
/// the newest: the follower has notices pending, and the reload they trigger reads
/// everything committed before it, the dropped change included.
const NOTICE_BUFFER: usize = 16;

/// First wait before the listener reconnects; it doubles per failure up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between reconnection attempts: short, since a missed change waits for it.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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

    /// Cheap liveness check for `/health`: a connection answers within the pool's wait.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db)
    }

    /// Closes every connection; a running switch listener ends too.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Every project, by id.
    pub(crate) async fn projects(&self) -> Result<Vec<Project>, Error> {
        sqlx::query("SELECT id, name, public_key FROM projects ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(project)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// One project, `None` when the id is unknown.
    pub(crate) async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        sqlx::query("SELECT id, name, public_key FROM projects WHERE id = $1")
            .bind(to_i64(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .as_ref()
            .map(project)
            .transpose()
            .map_err(db)
    }

    /// Creates the project `default` when the database has no project yet (the first
    /// run), once even when several collectors start together.
    pub(crate) async fn ensure_default_project(&self) -> Result<(), Error> {
        // Under READ COMMITTED two concurrent `INSERT … WHERE NOT EXISTS` both see an
        // empty table; behind the lock the second one's statement sees the first's row.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DEFAULT_PROJECT_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let created = sqlx::query(
            "INSERT INTO projects (name, public_key, created_at)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM projects)",
        )
        .bind("default")
        .bind(uuid::Uuid::new_v4().simple().to_string())
        .bind(unix_now())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        if created.rows_affected() > 0 {
            tracing::info!("created the default project");
        }
        Ok(())
    }

    /// The metadata part of a group commit, in one transaction: each batch's agent row
    /// and its switch check counts. Returns the increase of the agents' dropped-window
    /// totals, summed over agents (what `WriteSummary::agent_dropped` reports).
    pub(crate) async fn write_metrics_meta(
        &self,
        batches: &[&MetricsIngest],
    ) -> Result<u64, Error> {
        if batches.is_empty() {
            return Ok(0);
        }
        // Rows are locked in key order (agents, then evaluation rows), the same in every
        // collector's transaction, so concurrent writers wait for each other rather than
        // deadlock. The sort is stable: batches of one agent keep their order.
        let mut by_agent: Vec<&MetricsIngest> = batches.to_vec();
        by_agent.sort_by(|a, b| agent_key(a).cmp(&agent_key(b)));
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut dropped = 0u64;
        for ingest in by_agent {
            dropped = dropped.saturating_add(upsert_agent(&mut tx, ingest).await.map_err(db)?);
        }
        switches::record_evaluations(&mut tx, batches)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(dropped)
    }

    /// The non-empty environments a project's agents report, sorted (bytewise, as
    /// SQLite sorts), at most [`MAX_ENVIRONMENTS`].
    pub(crate) async fn agent_environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT environment COLLATE \"C\" FROM agents
             WHERE project_id = $1 AND environment IS NOT NULL AND environment <> ''
             ORDER BY 1
             LIMIT $2",
        )
        .bind(to_i64(project_id))
        .bind(i64::from(MAX_ENVIRONMENTS))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Makes `switches` follow changes committed through any collector of the database:
    /// starts a task that LISTENs on [`SWITCH_CHANNEL`] and hands each notification to
    /// [`Switches::follow`], which reloads the set and broadcasts what changed. After
    /// every (re)connection it asks for a reload, since notifications sent while it was
    /// not listening are lost. Reconnects with a backoff of [`MIN_BACKOFF`] to
    /// [`MAX_BACKOFF`]; ends when `shutdown` turns true, when the pool closes
    /// ([`PgMeta::close`]) or when the switch service is gone.
    pub(crate) fn spawn_switch_listener(
        &self,
        switches: &Switches,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let (notices, received) = mpsc::channel(NOTICE_BUFFER);
        switches.follow(received);
        tokio::spawn(listen(self.pool.clone(), notices, shutdown))
    }
}

/// The key batches of one agent share: the agents table's primary key.
fn agent_key(ingest: &MetricsIngest) -> (u64, &str, &str) {
    let agent = &ingest.batch.agent;
    (ingest.project_id, &agent.service, &agent.instance)
}

/// Merges one batch's agent row and returns how much its dropped-window total grew.
async fn upsert_agent(conn: &mut PgConnection, ingest: &MetricsIngest) -> Result<u64, sqlx::Error> {
    let agent = &ingest.batch.agent;
    let project_id = to_i64(ingest.project_id);
    let reported = to_i64(ingest.batch.dropped_windows);
    // The previous total must be read under the row lock the update takes, or another
    // collector's update in between would be counted twice. A missing row is inserted;
    // if another collector inserted it first (no row inserted), it now exists: lock it.
    for _ in 0..2 {
        let previous: Option<i64> = sqlx::query_scalar(
            "SELECT dropped_windows FROM agents
             WHERE project_id = $1 AND service = $2 AND instance = $3
             FOR UPDATE",
        )
        .bind(project_id)
        .bind(&agent.service)
        .bind(&agent.instance)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(previous) = previous {
            sqlx::query(
                "UPDATE agents SET
                     sdk = $4,
                     environment = $5,
                     release = $6,
                     last_seen = GREATEST(last_seen, $7),
                     -- a running total: a retried older batch must not lower it
                     dropped_windows = GREATEST(dropped_windows, $8)
                 WHERE project_id = $1 AND service = $2 AND instance = $3",
            )
            .bind(project_id)
            .bind(&agent.service)
            .bind(&agent.instance)
            .bind(&agent.sdk)
            .bind(agent.environment.as_deref())
            .bind(agent.release.as_deref())
            .bind(ingest.received_at)
            .bind(reported)
            .execute(&mut *conn)
            .await?;
            return Ok(to_u64(reported.saturating_sub(previous)));
        }
        let inserted = sqlx::query(
            "INSERT INTO agents (project_id, service, instance, sdk, environment, release,
                                 first_seen, last_seen, dropped_windows)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
             ON CONFLICT (project_id, service, instance) DO NOTHING",
        )
        .bind(project_id)
        .bind(&agent.service)
        .bind(&agent.instance)
        .bind(&agent.sdk)
        .bind(agent.environment.as_deref())
        .bind(agent.release.as_deref())
        .bind(ingest.received_at)
        .bind(reported)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted > 0 {
            return Ok(to_u64(reported));
        }
    }
    // Agent rows are never deleted while a project lives, so the second pass finds the
    // row the conflicting insert committed; only a deleted project ends up here.
    Err(sqlx::Error::RowNotFound)
}

/// Why one listening session ended.
enum Ended {
    /// Shut down, pool closed or nobody follows any more: stop for good.
    Stop,
    /// The connection failed: reconnect after the backoff.
    Failed(sqlx::Error),
}

/// The switch listener task: listening sessions, reconnecting between them.
async fn listen(pool: PgPool, notices: mpsc::Sender<Notice>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let ended = tokio::select! {
            // `wait_for` fails only when the sender is gone: nobody can stop us but the pool.
            _ = shutdown.wait_for(|stop| *stop) => Ended::Stop,
            ended = listen_once(&pool, &notices, &mut backoff) => ended,
        };
        match ended {
            Ended::Stop => return,
            Ended::Failed(sqlx::Error::PoolClosed) => return,
            Ended::Failed(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "switch listener lost postgres; reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening session: LISTEN, ask for a reload (anything committed before LISTEN
/// took effect was not announced to us), then pass notifications on until it fails.
async fn listen_once(
    pool: &PgPool,
    notices: &mpsc::Sender<Notice>,
    backoff: &mut Duration,
) -> Ended {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(e) => return Ended::Failed(e),
    };
    if let Err(e) = listener.listen(SWITCH_CHANNEL).await {
        return Ended::Failed(e);
    }
    *backoff = MIN_BACKOFF;
    tracing::debug!("listening for switch changes");
    let mut notice = Notice::Resync;
    loop {
        match notices.try_send(notice) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Stop,
        }
        notice = match listener.try_recv().await {
            // A payload that is no version (sent by hand, say) still means "look".
            Ok(Some(notification)) => match notification.payload().parse() {
                Ok(version) => Notice::Changed(version),
                Err(_) => Notice::Resync,
            },
            // The connection dropped and the listener reconnected and listens again:
            // notifications in between are lost.
            Ok(None) => {
                tracing::debug!("switch listener reconnected");
                Notice::Resync
            }
            Err(e) => return Ended::Failed(e),
        };
    }
}

/// Databases for tests: each test gets its own, so tests run in parallel.
#[cfg(test)]
pub(crate) mod testing {
    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgConnection};

    /// The environment variable naming the test server's maintenance database.
    pub(crate) const ENV: &str = "SIGHTLINE_TEST_POSTGRES";

    /// Creates a fresh, empty database on the server `SIGHTLINE_TEST_POSTGRES` names and
    /// returns its URL. Panics (failing the test) when the variable is missing: these
    /// tests need a real server.
    pub(crate) async fn fresh_database() -> String {
        let url = std::env::var(ENV).unwrap_or_else(|_| {
            panic!(
                "{ENV} is not set: these tests need a PostgreSQL server; run \
                 `eval \"$(scripts/services start)\"` first"
            )
        });
        let options: PgConnectOptions = url
            .parse()
            .unwrap_or_else(|e| panic!("{ENV}={url:?} is not a postgres url: {e}"));
        let name = format!("sightline_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&options)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {ENV}={url:?}: {e}"));
        // An identifier cannot be a bind parameter; the name is ours, made of [a-z0-9_].
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        admin.close().await.ok();
        with_database(&url, &name)
    }

    /// `url` with its database (the path) replaced by `name`, its query kept.
    fn with_database(url: &str, name: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let authority = base.find("://").map_or(0, |at| at + 3);
        let path = base[authority..]
            .find('/')
            .map_or(base.len(), |at| authority + at);
        let mut out = format!("{}/{name}", &base[..path]);
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use sightline_protocol::{AgentInfo, MetricBatch};

    use super::*;

    /// A fresh database, migrated, through a new pool.
    pub(super) async fn meta() -> (PgMeta, String) {
        let url = testing::fresh_database().await;
        let meta = PgMeta::connect(&url).await.expect("connect and migrate");
        (meta, url)
    }

    pub(super) fn batch(
        project_id: u64,
        instance: &str,
        environment: Option<&str>,
        dropped: u64,
        received_at: i64,
        evaluations: &[(&str, u64)],
    ) -> MetricsIngest {
        MetricsIngest {
            project_id,
            received_at,
            batch: MetricBatch {
                agent: AgentInfo {
                    service: "svc".into(),
                    instance: instance.into(),
                    sdk: format!("test/{received_at}"),
                    environment: environment.map(str::to_owned),
                    release: None,
                },
                sent_at_ms: 0,
                dropped_windows: dropped,
                switch_evaluations: evaluations
                    .iter()
                    .map(|&(key, n)| (key.to_owned(), n))
                    .collect::<BTreeMap<_, _>>(),
                insight: Default::default(),
                windows: Vec::new(),
            },
        }
    }

    async fn default_project(meta: &PgMeta) -> u64 {
        meta.ensure_default_project().await.unwrap();
        meta.projects().await.unwrap()[0].id
    }

    #[tokio::test]
    async fn the_default_project_is_created_once() {
        let (meta, _) = meta().await;
        assert_eq!(meta.projects().await.unwrap(), Vec::new());
        meta.ensure_default_project().await.unwrap();
        meta.ensure_default_project().await.unwrap();
        let projects = meta.projects().await.unwrap();
        assert_eq!(projects.len(), 1);
        let project = &projects[0];
        assert_eq!(project.name, "default");
        assert_eq!(project.public_key.len(), 32);
        assert!(project.public_key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            meta.project(project.id).await.unwrap().as_ref(),
            Some(project)
        );
        assert_eq!(meta.project(project.id + 1).await.unwrap(), None);
        // Past i64: saturates to a key no row has rather than failing.
        assert_eq!(meta.project(u64::MAX).await.unwrap(), None);
    }

    #[tokio::test]
    async fn projects_are_listed_by_id() {
        let (meta, _) = meta().await;
        for (name, key) in [("b", "k1"), ("a", "k2")] {
            sqlx::query("INSERT INTO projects (name, public_key, created_at) VALUES ($1, $2, 0)")
                .bind(name)
                .bind(key)
                .execute(meta.pool())
                .await
                .unwrap();
        }
        meta.ensure_default_project().await.unwrap();
        let names: Vec<_> = meta
            .projects()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["b", "a"], "no default project once one exists");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn collectors_starting_together_create_one_default_project() {
        // The race window is a statement long: several rounds of many callers, released
        // together.
        for _ in 0..5 {
            let url = testing::fresh_database().await;
            // Both migrate the empty database at once too.
            let (a, b) = tokio::join!(PgMeta::connect(&url), PgMeta::connect(&url));
            let (a, b) = (a.unwrap(), b.unwrap());
            let start = Arc::new(tokio::sync::Barrier::new(16));
            let calls = (0..16).map(|i| {
                let meta = if i % 2 == 0 { a.clone() } else { b.clone() };
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    meta.ensure_default_project().await
                })
            });
            for call in futures_util::future::join_all(calls).await {
                call.unwrap().unwrap();
            }
            assert_eq!(a.projects().await.unwrap().len(), 1);
            assert_eq!(b.projects().await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn agents_report_the_growth_of_their_dropped_totals() {
        let (meta, _) = meta().await;
        let project = default_project(&meta).await;
        assert_eq!(meta.write_metrics_meta(&[]).await.unwrap(), 0);
        let first = batch(project, "i-1", None, 5, 100, &[]);
        assert_eq!(meta.write_metrics_meta(&[&first]).await.unwrap(), 5);
        let grown = batch(project, "i-1", Some("prod"), 8, 200, &[]);
        assert_eq!(meta.write_metrics_meta(&[&grown]).await.unwrap(), 3);
        // A retried older batch: no growth, and the total stays.
        let retried = batch(project, "i-1", None, 6, 150, &[]);
        assert_eq!(meta.write_metrics_meta(&[&retried]).await.unwrap(), 0);
        // Several batches of several agents in one commit, in any order.
        let a = batch(project, "i-1", None, 10, 300, &[]);
        let b = batch(project, "i-2", None, 4, 300, &[]);
        let a2 = batch(project, "i-1", None, 12, 310, &[]);
        assert_eq!(
            meta.write_metrics_meta(&[&a, &b, &a2]).await.unwrap(),
            2 + 4 + 2
        );
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT instance, sdk, first_seen, last_seen, dropped_windows FROM agents
             ORDER BY instance",
        )
        .fetch_all(meta.pool())
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                ("i-1".into(), "test/310".into(), 100, 310, 12),
                ("i-2".into(), "test/300".into(), 300, 300, 4),
            ]
        );
        // The retried batch did not move last_seen back.
        let batch_older = batch(project, "i-2", None, 4, 1, &[]);
        meta.write_metrics_meta(&[&batch_older]).await.unwrap();
        let last_seen: i64 =
            sqlx::query_scalar("SELECT last_seen FROM agents WHERE instance = 'i-2'")
                .fetch_one(meta.pool())
                .await
                .unwrap();
        assert_eq!(last_seen, 300);
    }

    #[tokio::test]
    async fn concurrent_writers_neither_deadlock_nor_double_count() {
        let url = testing::fresh_database().await;
        let a = PgMeta::connect(&url).await.unwrap();
        let b = PgMeta::connect(&url).await.unwrap();
        let project = default_project(&a).await;
        // Each writer touches the same agents in the opposite order, growing each total
        // by one per round; the reported growth must add up to the final totals.
        let rounds = 20u64;
        let writer = |meta: PgMeta, reversed: bool| {
            tokio::spawn(async move {
                let mut grown = 0;
                for round in 1..=rounds {
                    let mut batches: Vec<MetricsIngest> = (0..5)
                        .map(|i| batch(project, &format!("i-{i}"), None, round, 1, &[]))
                        .collect();
                    if reversed {
                        batches.reverse();
                    }
                    let refs: Vec<&MetricsIngest> = batches.iter().collect();
                    grown += meta.write_metrics_meta(&refs).await.expect("no deadlock");
                }
                grown
            })
        };
        let (x, y) = tokio::join!(writer(a, false), writer(b, true));
        assert_eq!(x.unwrap() + y.unwrap(), 5 * rounds);
    }

    #[tokio::test]
    async fn environments_are_the_agents_non_empty_ones_sorted_bytewise() {
        let (meta, _) = meta().await;
        let project = default_project(&meta).await;
        sqlx::query("INSERT INTO projects (name, public_key, created_at) VALUES ('o', 'k', 0)")
            .execute(meta.pool())
            .await
            .unwrap();
        let other = project + 1;
        let batches = [
            batch(project, "a", Some("staging"), 0, 1, &[]),
            batch(project, "b", Some("Zeta"), 0, 1, &[]),
            batch(project, "c", Some("production"), 0, 1, &[]),
            batch(project, "d", Some("production"), 0, 1, &[]),
            batch(project, "e", Some(""), 0, 1, &[]),
            batch(project, "f", None, 0, 1, &[]),
            batch(other, "g", Some("other"), 0, 1, &[]),
        ];
        let refs: Vec<_> = batches.iter().collect();
        meta.write_metrics_meta(&refs).await.unwrap();
        assert_eq!(
            meta.agent_environments(project).await.unwrap(),
            ["Zeta", "production", "staging"]
        );
        assert_eq!(meta.agent_environments(other).await.unwrap(), ["other"]);

        let many: Vec<_> = (0..MAX_ENVIRONMENTS + 5)
            .map(|i| {
                batch(
                    other,
                    &format!("m{i}"),
                    Some(&format!("env-{i:03}")),
                    0,
                    1,
                    &[],
                )
            })
            .collect();
        let refs: Vec<_> = many.iter().collect();
        meta.write_metrics_meta(&refs).await.unwrap();
        let listed = meta.agent_environments(other).await.unwrap();
        assert_eq!(listed.len(), MAX_ENVIRONMENTS as usize);
        assert_eq!(listed[0], "env-000");
    }
}
