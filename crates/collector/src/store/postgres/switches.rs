//! The PostgreSQL side of feature switches: definitions, their audit log and the check
//! counts agents report, with the semantics of the SQLite tables
//! (`store/sqlite/switches.rs`), made safe for several collectors writing at once: the
//! one-row `switch_set` counter serialises changes and numbers them in commit order, and
//! every change is announced on [`SWITCH_CHANNEL`] at commit.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row, Transaction};

use super::{PgMeta, SWITCH_CHANNEL, db};
use crate::Error;
use crate::store::meta_rows::{
    CHANGE_COLUMNS, RECORD_COLUMNS, corrupt, switch_change, switch_record,
};
use crate::store::{MetricsIngest, to_i64, to_u64};
use crate::switches::{
    AuditFilter, ChangeRecord, NewChange, SwitchRecord, SwitchStore, SwitchUsage,
};

/// Adds the batches' switch check counts to today's row of each switch they name, in one
/// statement; counts for keys that are no switch (deleted, or an agent's typo) are
/// dropped, so the table only grows with real switches.
pub(super) async fn record_evaluations(
    conn: &mut PgConnection,
    batches: &[&MetricsIngest],
) -> Result<(), sqlx::Error> {
    // Added up first: one statement may not update a row twice. The map's key order is
    // the order rows are locked in, the same in every collector (no deadlock).
    let mut counts: BTreeMap<(&str, i64), u64> = BTreeMap::new();
    for ingest in batches {
        let day = ingest.received_at.div_euclid(86_400);
        for (key, &count) in &ingest.batch.switch_evaluations {
            if count > 0 {
                let total = counts.entry((key.as_str(), day)).or_insert(0);
                *total = total.saturating_add(count);
            }
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(counts.len());
    let mut days = Vec::with_capacity(counts.len());
    let mut totals = Vec::with_capacity(counts.len());
    for ((key, day), count) in counts {
        keys.push(key);
        days.push(day);
        totals.push(to_i64(count));
    }
    // The sum saturates at the largest BIGINT rather than fail the whole group commit.
    sqlx::query(
        "INSERT INTO switch_evaluations (key, day, count)
         SELECT t.key, t.day, t.count
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY
              AS t (key, day, count, n)
         WHERE EXISTS (SELECT 1 FROM switches s WHERE s.key = t.key)
         ORDER BY t.n
         ON CONFLICT (key, day) DO UPDATE SET
             count = LEAST(switch_evaluations.count, 9223372036854775807 - excluded.count)
                     + excluded.count",
    )
    .bind(keys)
    .bind(days)
    .bind(totals)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One switch, locked until the transaction ends.
async fn lock_switch(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
) -> Result<Option<SwitchRecord>, Error> {
    sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM switches WHERE key = $1 FOR UPDATE"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?
    .as_ref()
    .map(switch_record)
    .transpose()
}

#[async_trait]
impl SwitchStore for PgMeta {
    async fn load_switches(&self) -> Result<(u64, Vec<SwitchRecord>), Error> {
        // One snapshot for both reads: the version matches the rows.
        let mut tx = self.pool().begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM switch_set")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        // Bytewise key order, as SQLite sorts and as the snapshot is kept.
        let records = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM switches ORDER BY key COLLATE \"C\""
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
            "SELECT {RECORD_COLUMNS} FROM switches WHERE key = $1"
        ))
        .bind(key)
        .fetch_optional(self.pool())
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
        let mut tx = self.pool().begin().await.map_err(db)?;
        // The set's row lock first: it serialises changes across collectors, so the
        // version check below and the write see the same state, and set versions commit
        // in increasing order. An error rolls the increment back with the rest.
        let set_version: i64 =
            sqlx::query_scalar("UPDATE switch_set SET version = version + 1 RETURNING version")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let existing = lock_switch(&mut tx, &change.new.key).await?;
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)
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
        sqlx::query(
            "INSERT INTO switch_changes (id, key, version, action, actor, reason, at, old, new)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(set_version)
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
        .map_err(db)?;
        // Delivered to every listening collector when (and only if) this commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SWITCH_CHANNEL)
            .bind(set_version.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let change = ChangeRecord {
            id: to_u64(set_version),
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
            "SELECT {CHANGE_COLUMNS} FROM switch_changes WHERE key = $1 ORDER BY id DESC"
        ))
        .bind(key)
        .fetch_all(self.pool())
        .await
        .map_err(db)?
        .iter()
        .map(switch_change)
        .collect()
    }

    async fn switch_change(&self, key: &str, version: u64) -> Result<Option<ChangeRecord>, Error> {
        sqlx::query(&format!(
            "SELECT {CHANGE_COLUMNS} FROM switch_changes WHERE key = $1 AND version = $2"
        ))
        .bind(key)
        .bind(to_i64(version))
        .fetch_optional(self.pool())
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
             WHERE ($1::bigint IS NULL OR id < $1) AND ($2::bigint IS NULL OR at >= $2)
                   AND ($3::bigint IS NULL OR at < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.before.map(to_i64))
        .bind(filter.since)
        .bind(filter.until)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(db)?
        .iter()
        .map(switch_change)
        .collect()
    }

    async fn switch_usage(&self, since_day: i64) -> Result<Vec<SwitchUsage>, Error> {
        // SUM of BIGINT is NUMERIC: saturate it back into BIGINT.
        sqlx::query(
            "SELECT s.key, s.version, s.definition, s.created_at, s.updated_at, s.state_since,
                    (SELECT MAX(day) FROM switch_evaluations e
                     WHERE e.key = s.key AND e.count > 0) AS last_day,
                    (SELECT LEAST(COALESCE(SUM(count), 0), 9223372036854775807)::bigint
                     FROM switch_evaluations e
                     WHERE e.key = s.key AND e.day >= $1) AS recent
             FROM switches s ORDER BY s.key COLLATE \"C\"",
        )
        .bind(since_day)
        .fetch_all(self.pool())
        .await
        .map_err(db)?
        .iter()
        .map(|row| {
            Ok(SwitchUsage {
                record: switch_record(row)?,
                last_evaluated_day: row.try_get("last_day").map_err(db)?,
                recent_evaluations: to_u64(row.try_get("recent").map_err(db)?),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use sightline_protocol::{Switch, SwitchState};
    use tokio::sync::watch;

    use super::*;
    use crate::TimeRange;
    use crate::store::postgres::testing;
    use crate::store::postgres::tests::{batch, meta};
    use crate::store::{
        Aggregates, Cursor, Ingest, Issue, IssueFilter, IssueStatus, ItemCount, Project, Steps,
        Store, StoredEvent, TagValue, WriteSummary,
    };
    use crate::switches::Action;
    use crate::switches::{Notice, Switchboard, Switches};

    fn switch(key: &str, state: SwitchState) -> Switch {
        Switch {
            key: key.to_owned(),
            label: String::new(),
            description: String::new(),
            owner: String::new(),
            default: false,
            state,
            conditions: Vec::new(),
            exclusions: Vec::new(),
        }
    }

    fn create(key: &str, at: i64) -> NewChange {
        NewChange {
            action: Action::Create,
            actor: "tester".to_owned(),
            reason: "because".to_owned(),
            at,
            expected_version: None,
            new: switch(key, SwitchState::Off),
        }
    }

    fn update(key: &str, state: SwitchState, expected: u64, at: i64) -> NewChange {
        NewChange {
            action: Action::Update,
            actor: "tester".to_owned(),
            reason: format!("to {}", state.as_str()),
            at,
            expected_version: Some(expected),
            new: switch(key, state),
        }
    }

    #[tokio::test]
    async fn changes_are_versioned_checked_and_audited() {
        let (meta, _) = meta().await;
        assert_eq!(meta.load_switches().await.unwrap(), (0, Vec::new()));

        let (record, change) = meta.apply_switch_change(create("a", 10)).await.unwrap();
        assert_eq!(
            (record.version, record.created_at, record.state_since),
            (1, 10, 10)
        );
        assert_eq!(
            (change.id, change.version, change.old.as_ref()),
            (1, 1, None)
        );
        assert!(matches!(
            meta.apply_switch_change(create("a", 11)).await,
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            meta.apply_switch_change(update("missing", SwitchState::On, 1, 11))
                .await,
            Err(Error::NotFound("switch"))
        ));
        assert!(matches!(
            meta.apply_switch_change(update("a", SwitchState::On, 2, 11))
                .await,
            Err(Error::Conflict(_))
        ));

        // Same state, other label: state_since stays. Failed changes used no version.
        let mut relabelled = update("a", SwitchState::Off, 1, 20);
        relabelled.new.label = "A".to_owned();
        let (record, change) = meta.apply_switch_change(relabelled).await.unwrap();
        assert_eq!(
            (
                record.version,
                record.created_at,
                record.updated_at,
                record.state_since
            ),
            (2, 10, 20, 10)
        );
        assert_eq!(change.id, 2);
        assert_eq!(change.old.as_ref().map(|s| s.label.as_str()), Some(""));
        let (record, change) = meta
            .apply_switch_change(update("a", SwitchState::On, 2, 30))
            .await
            .unwrap();
        assert_eq!((record.version, record.state_since), (3, 30));
        assert_eq!(change.id, 3);
        meta.apply_switch_change(create("b", 40)).await.unwrap();

        let (version, records) = meta.load_switches().await.unwrap();
        assert_eq!(version, 4);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], record);
        assert_eq!(meta.switch("a").await.unwrap(), Some(record));
        assert_eq!(meta.switch("nope").await.unwrap(), None);

        let history = meta.switch_history("a").await.unwrap();
        let versions: Vec<_> = history.iter().map(|c| (c.id, c.version)).collect();
        assert_eq!(versions, [(3, 3), (2, 2), (1, 1)]);
        assert_eq!(history[0].action, Action::Update);
        assert_eq!(history[0].reason, "to on");
        assert_eq!(history[2].action, Action::Create);
        let first = meta.switch_change("a", 1).await.unwrap().unwrap();
        assert_eq!(first, history[2]);
        assert_eq!(first.new.state, SwitchState::Off);
        assert_eq!(meta.switch_change("a", 4).await.unwrap(), None);
        assert_eq!(
            meta.switch_change("b", 1).await.unwrap().map(|c| c.id),
            Some(4)
        );
    }

    #[tokio::test]
    async fn the_audit_filter_narrows_by_id_and_time() {
        let (meta, _) = meta().await;
        for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            meta.apply_switch_change(create(key, 100 * (i as i64 + 1)))
                .await
                .unwrap();
        }
        let ids = |changes: Vec<ChangeRecord>| changes.iter().map(|c| c.id).collect::<Vec<_>>();
        let all = AuditFilter::default();
        assert_eq!(
            ids(meta.switch_audit(10, &all).await.unwrap()),
            [5, 4, 3, 2, 1]
        );
        assert_eq!(ids(meta.switch_audit(2, &all).await.unwrap()), [5, 4]);
        let page = AuditFilter {
            before: Some(4),
            ..all
        };
        assert_eq!(ids(meta.switch_audit(2, &page).await.unwrap()), [3, 2]);
        let window = AuditFilter {
            since: Some(200),
            until: Some(400),
            ..all
        };
        assert_eq!(ids(meta.switch_audit(10, &window).await.unwrap()), [3, 2]);
        let everything = AuditFilter {
            before: Some(3),
            since: Some(150),
            until: Some(1_000),
        };
        assert_eq!(ids(meta.switch_audit(10, &everything).await.unwrap()), [2]);
    }

    #[tokio::test]
    async fn checks_are_counted_per_switch_and_day() {
        let (meta, _) = meta().await;
        meta.ensure_default_project().await.unwrap();
        let project = meta.projects().await.unwrap()[0].id;
        meta.apply_switch_change(create("a", 1)).await.unwrap();
        meta.apply_switch_change(create("b", 1)).await.unwrap();
        meta.apply_switch_change(create("c", 1)).await.unwrap();
        let day = 20_000i64;
        let today = day * 86_400 + 5;
        let batches = [
            // `ghost` is no switch: dropped, not an error.
            batch(
                project,
                "i-1",
                None,
                0,
                today,
                &[("a", 3), ("ghost", 5), ("b", 0)],
            ),
            batch(project, "i-2", None, 0, today + 60, &[("a", 4)]),
            batch(
                project,
                "i-1",
                None,
                0,
                today - 3 * 86_400,
                &[("a", 1), ("b", 2)],
            ),
            batch(project, "i-3", None, 0, today, &[("c", u64::MAX)]),
        ];
        let refs: Vec<_> = batches.iter().collect();
        meta.write_metrics_meta(&refs).await.unwrap();
        // Adding to a saturated count stays saturated.
        let more = batch(project, "i-3", None, 0, today, &[("c", 5)]);
        meta.write_metrics_meta(&[&more]).await.unwrap();

        let usage = meta.switch_usage(day - 1).await.unwrap();
        let seen: Vec<_> = usage
            .iter()
            .map(|u| {
                (
                    u.record.switch.key.as_str(),
                    u.last_evaluated_day,
                    u.recent_evaluations,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", Some(day), 7),
                ("b", Some(day - 3), 0),
                ("c", Some(day), i64::MAX as u64),
            ]
        );
        let all = meta.switch_usage(0).await.unwrap();
        assert_eq!(all[0].recent_evaluations, 8);
        let ghosts: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM switch_evaluations WHERE key = 'ghost'")
                .fetch_one(meta.pool())
                .await
                .unwrap();
        assert_eq!(ghosts, 0);
    }

    #[tokio::test]
    async fn concurrent_changes_through_two_collectors_stay_consistent() {
        let url = testing::fresh_database().await;
        let a = PgMeta::connect(&url).await.unwrap();
        let b = PgMeta::connect(&url).await.unwrap();
        a.apply_switch_change(create("s", 1)).await.unwrap();
        // Both saw version 1: exactly one update wins, whichever it is.
        for round in 1..=5u64 {
            let (x, y) = tokio::join!(
                a.apply_switch_change(update("s", SwitchState::On, round, 2)),
                b.apply_switch_change(update("s", SwitchState::Off, round, 2)),
            );
            let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: {x:?} / {y:?}");
            for lost in [x, y].into_iter().filter_map(Result::err) {
                assert!(matches!(lost, Error::Conflict(_)), "{lost:?}");
            }
        }
        // Creations from both at once: every set version once, no gaps.
        let creations = (0..20).map(|i| {
            let meta = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { meta.apply_switch_change(create(&format!("k{i}"), 3)).await })
        });
        let mut ids: Vec<u64> = futures_util::future::join_all(creations)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap().1.id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (7..=26).collect::<Vec<_>>());
        assert_eq!(a.load_switches().await.unwrap().0, 26);
        assert_eq!(b.switch("s").await.unwrap().unwrap().version, 6);
    }

    // ------------------------------------------------------------ propagation

    /// A store whose only capability is PgMeta's switch tables: what `Switches` needs.
    /// (The scaled store will put PgMeta behind the whole trait.)
    struct SwitchesOnly(PgMeta);

    fn unused() -> Error {
        Error::Config("not part of this test store")
    }

    #[async_trait]
    impl Store for SwitchesOnly {
        async fn ping(&self) -> Result<(), Error> {
            Ok(())
        }
        async fn projects(&self) -> Result<Vec<Project>, Error> {
            self.0.projects().await
        }
        async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
            self.0.project(id).await
        }
        async fn ensure_default_project(&self) -> Result<(), Error> {
            self.0.ensure_default_project().await
        }
        async fn write(&self, _: &[Ingest]) -> Result<WriteSummary, Error> {
            Err(unused())
        }
        async fn route_aggregates(
            &self,
            _: u64,
            _: TimeRange,
            _: Option<&str>,
        ) -> Result<Aggregates<(String, String)>, Error> {
            Err(unused())
        }
        async fn series_aggregates(
            &self,
            _: u64,
            _: TimeRange,
            _: Steps,
            _: Option<(&str, &str)>,
            _: Option<&str>,
        ) -> Result<Aggregates<i64>, Error> {
            Err(unused())
        }
        async fn issues(&self, _: u64, _: &IssueFilter) -> Result<Vec<Issue>, Error> {
            Err(unused())
        }
        async fn issue(&self, _: u64) -> Result<Option<Issue>, Error> {
            Err(unused())
        }
        async fn issue_tags(&self, _: u64, _: u32) -> Result<Vec<TagValue>, Error> {
            Err(unused())
        }
        async fn issue_events(
            &self,
            _: u64,
            _: u32,
            _: Option<Cursor>,
            _: bool,
        ) -> Result<Vec<StoredEvent>, Error> {
            Err(unused())
        }
        async fn event(&self, _: u64, _: &str) -> Result<Option<StoredEvent>, Error> {
            Err(unused())
        }
        async fn set_issue_status(
            &self,
            _: Option<u64>,
            _: &[u64],
            _: IssueStatus,
            _: f64,
        ) -> Result<Vec<u64>, Error> {
            Err(unused())
        }
        async fn item_counts(&self, _: u64, _: &str) -> Result<Vec<ItemCount>, Error> {
            Err(unused())
        }
        async fn close(&self) {
            self.0.close().await;
        }
        fn switches(&self) -> Option<&dyn SwitchStore> {
            Some(&self.0)
        }
    }

    /// One collector's switch side: its pool, its service and its listener.
    async fn collector(url: &str, shutdown: &watch::Receiver<bool>) -> (PgMeta, Switches) {
        let meta = PgMeta::connect(url).await.unwrap();
        let switches = Switches::open(Arc::new(SwitchesOnly(meta.clone())))
            .await
            .unwrap();
        meta.spawn_switch_listener(&switches, shutdown.clone());
        (meta, switches)
    }

    /// Waits up to `within` for `done`, checking every few milliseconds.
    async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    }

    fn state_of(switches: &Switches, key: &str) -> Option<SwitchState> {
        switches.current().set.get(key).map(|s| s.state)
    }

    #[tokio::test]
    async fn a_change_through_one_collector_reaches_the_other_within_a_second() {
        let url = testing::fresh_database().await;
        let (stop, shutdown) = watch::channel(false);
        let (meta_a, a) = collector(&url, &shutdown).await;
        let (meta_b, b) = collector(&url, &shutdown).await;
        let mut a_stream = a.subscribe();
        let mut b_stream = b.subscribe();
        // Give both listeners their LISTEN: a change before it is found by the resync
        // that follows it, but this test is about notifications.
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Created directly in the store, as another collector would: both follow.
        meta_b
            .apply_switch_change(create("checkout", 1))
            .await
            .unwrap();
        for (name, switches) in [("a", &a), ("b", &b)] {
            assert!(
                eventually(Duration::from_secs(1), || state_of(switches, "checkout")
                    == Some(SwitchState::Off))
                .await,
                "collector {name} never saw the creation"
            );
        }

        // Flipped through collector a's service: b's snapshot and stream get it.
        let board = Switchboard::new(a.clone(), None);
        let started = Instant::now();
        board
            .set_state("checkout", SwitchState::On, "oncall", "peak load", Some(1))
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(1), || state_of(&b, "checkout")
                == Some(SwitchState::On))
            .await,
            "collector b's snapshot never saw the flip"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(b.current().version(), 2);

        // Each stream got the creation then the flip, once each, chained by `previous`.
        for (name, stream) in [("a", &mut a_stream), ("b", &mut b_stream)] {
            let mut got = Vec::new();
            while got.len() < 2 {
                let published = tokio::time::timeout(Duration::from_secs(1), stream.recv())
                    .await
                    .unwrap_or_else(|_| panic!("collector {name}: no change broadcast"))
                    .unwrap();
                got.push(serde_json::from_str::<serde_json::Value>(&published.json).unwrap());
            }
            assert_eq!(got[0]["version"], 1, "{name}: {got:?}");
            assert_eq!(got[0]["previous"], 0, "{name}: {got:?}");
            assert_eq!(got[1]["version"], 2, "{name}: {got:?}");
            assert_eq!(got[1]["previous"], 1, "{name}: {got:?}");
            assert_eq!(got[1]["switch"]["state"], "on", "{name}: {got:?}");
            // Nothing twice: a's own change came back as a notification and was skipped.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                stream.try_recv().is_err(),
                "collector {name} broadcast twice"
            );
        }
        // Closing the pool ends the listener, which would otherwise hold a connection
        // and keep `close` waiting.
        for meta in [meta_a, meta_b] {
            tokio::time::timeout(Duration::from_secs(2), meta.close())
                .await
                .expect("close does not hang on the listener");
        }
        drop(stop);
    }

    #[tokio::test]
    async fn the_listener_reconnects_and_reloads_after_losing_its_connection() {
        let url = testing::fresh_database().await;
        let (stop, shutdown) = watch::channel(false);
        let (meta, switches) = collector(&url, &shutdown).await;
        let listening = "SELECT COUNT(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND query LIKE 'LISTEN%'";
        let count = |meta: PgMeta| async move {
            sqlx::query_scalar::<_, i64>(listening)
                .fetch_one(meta.pool())
                .await
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(meta.clone()).await == 0 {
            assert!(Instant::now() < deadline, "the listener never listened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Cut the listener's connection, then change a switch while it may be away.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .execute(meta.pool())
        .await
        .unwrap();
        let other = PgMeta::connect(&url).await.unwrap();
        other.apply_switch_change(create("after", 1)).await.unwrap();
        assert!(
            eventually(Duration::from_secs(3), || state_of(&switches, "after")
                .is_some())
            .await,
            "the change made while reconnecting never arrived"
        );
        // And it listens again: a later change arrives too.
        other
            .apply_switch_change(update("after", SwitchState::On, 1, 2))
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(1), || state_of(&switches, "after")
                == Some(SwitchState::On))
            .await
        );
        stop.send_replace(true);
    }

    #[tokio::test]
    async fn a_local_change_after_an_unseen_remote_one_keeps_both() {
        let url = testing::fresh_database().await;
        let meta = PgMeta::connect(&url).await.unwrap();
        meta.apply_switch_change(create("x", 1)).await.unwrap();
        meta.apply_switch_change(create("y", 1)).await.unwrap();
        let switches = Switches::open(Arc::new(SwitchesOnly(meta.clone())))
            .await
            .unwrap();
        // Following, but with no listener: the remote change below goes unannounced.
        let (_notices, received) = tokio::sync::mpsc::channel(1);
        switches.follow(received);
        let mut stream = switches.subscribe();
        let other = PgMeta::connect(&url).await.unwrap();
        other
            .apply_switch_change(update("x", SwitchState::On, 1, 2))
            .await
            .unwrap();
        Switchboard::new(switches.clone(), None)
            .set_state("y", SwitchState::On, "oncall", "local", Some(1))
            .await
            .unwrap();
        assert_eq!(state_of(&switches, "x"), Some(SwitchState::On));
        assert_eq!(state_of(&switches, "y"), Some(SwitchState::On));
        assert_eq!(switches.current().version(), 4);
        let first = stream.try_recv().unwrap();
        let second = stream.try_recv().unwrap();
        assert_eq!((first.version, second.version), (3, 4));
        assert!(first.json.contains("\"previous\":2"), "{}", first.json);
        assert!(second.json.contains("\"previous\":3"), "{}", second.json);
    }

    #[tokio::test]
    async fn a_resync_finds_changes_missed_while_not_listening() {
        let url = testing::fresh_database().await;
        let meta = PgMeta::connect(&url).await.unwrap();
        let switches = Switches::open(Arc::new(SwitchesOnly(meta.clone())))
            .await
            .unwrap();
        let (notices, received) = tokio::sync::mpsc::channel(4);
        switches.follow(received);
        meta.apply_switch_change(create("late", 1)).await.unwrap();
        // An old notice is no news; a resync is.
        notices.send(Notice::Changed(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(switches.current().version(), 0);
        notices.send(Notice::Resync).await.unwrap();
        assert!(eventually(Duration::from_secs(1), || switches.current().version() == 1).await);
        assert_eq!(state_of(&switches, "late"), Some(SwitchState::Off));
    }
}
