//! Insight against a real ClickHouse (`SIGHTLINE_TEST_CLICKHOUSE`), each test in a
//! database of its own: every read compared with what the SQLite backend answers for the
//! same writes, over every tier, environment filters, paging and retention.

use serde::Deserialize;
use sightline_protocol::{
    AgentInfo, Entry, EntryKind, Exemplar, HeapSample, Histogram, InsightBatch, MetricBatch,
    NPlusOne, QueryWindow, RouteInsight, reason,
};
use tempfile::TempDir;

use super::super::{ClickHouseEvents, DAY, testing};
use crate::TimeRange;
use crate::insight::{
    ExemplarSummary, InsightStore, NPlusOneRow, QueryTotals, RetentionConfig, Tier, aligned_since,
};
use crate::store::{Ingest, MetricsIngest, SqliteStore, Store};

/// Above `i64::MAX`: SQLite stores it negative, and orders it first.
const FP_HIGH: u64 = 0xf00d_0000_0000_0001;
const FP_LOW: u64 = 0x0000_0000_0000_00aa;
/// Runs only with an empty latency: its text is kept, its window is not.
const FP_IDLE: u64 = 0x0000_0000_0000_0bbb;
/// Flagged as N+1 but never reported as a query: no text.
const FP_UNSEEN: u64 = 0x0000_0000_0000_0ccc;

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

async fn sqlite() -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    store.ensure_default_project().await.unwrap();
    (dir, store)
}

fn histogram(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

fn batch(instance: &str, environment: Option<&str>, insight: InsightBatch) -> MetricsIngest {
    MetricsIngest {
        project_id: 1,
        received_at: 1_733_390_100,
        batch: MetricBatch {
            agent: AgentInfo {
                service: "svc".into(),
                instance: instance.into(),
                sdk: "test".into(),
                environment: environment.map(str::to_owned),
                release: None,
            },
            sent_at_ms: 0,
            dropped_windows: 0,
            switch_evaluations: Default::default(),
            insight,
            windows: Vec::new(),
        },
    }
}

/// An insight section of a 10 s window at `start`, its figures varied by `n`.
fn insight_at(start: i64, n: u64) -> InsightBatch {
    let allocs = |values: &[u64]| {
        if n.is_multiple_of(3) {
            Histogram::new()
        } else {
            histogram(values)
        }
    };
    let mut routes: Vec<RouteInsight> = ["/a", "/b"]
        .into_iter()
        .map(|route| RouteInsight {
            start,
            window_secs: 10,
            route: route.into(),
            method: "GET".into(),
            queries: histogram(&[n % 7 + 1, 3]),
            query_us: histogram(&[100 + n * 13 % 5_000, 40]),
            allocs: allocs(&[n % 50 + 1, 7]),
            alloc_bytes: allocs(&[1_000 + n * 97 % 100_000]),
            n_plus_one: n % 2,
        })
        .collect();
    // No requests: skipped.
    routes.push(RouteInsight {
        start,
        window_secs: 10,
        route: "/idle".into(),
        method: "GET".into(),
        queries: Histogram::new(),
        query_us: Histogram::new(),
        allocs: Histogram::new(),
        alloc_bytes: Histogram::new(),
        n_plus_one: 0,
    });
    let query = |fingerprint: u64, sql: &str, latency: Histogram| QueryWindow {
        start,
        window_secs: 10,
        fingerprint,
        sql: sql.into(),
        latency,
        routes: vec![
            ("/a".into(), "GET".into(), n % 4 + 1),
            ("/b".into(), "POST".into(), 2),
        ],
    };
    InsightBatch {
        routes,
        queries: vec![
            query(
                FP_HIGH,
                "SELECT * FROM comments WHERE id = ?",
                histogram(&[50 + n % 900, 3_000]),
            ),
            query(
                FP_LOW,
                "UPDATE scores SET n = ?",
                histogram(&[n * 31 % 20_000 + 1]),
            ),
            query(FP_IDLE, "SELECT 1", Histogram::new()),
        ],
        n_plus_one: vec![
            NPlusOne {
                start,
                window_secs: 10,
                route: "/a".into(),
                method: "GET".into(),
                fingerprint: FP_HIGH,
                requests: n % 3 + 1,
                total_repeats: (n % 3 + 1) * 12,
                max_repeats: 10 + n % 9,
            },
            NPlusOne {
                start,
                window_secs: 10,
                route: "/b".into(),
                method: "GET".into(),
                fingerprint: FP_UNSEEN,
                requests: 1,
                total_repeats: 20 + n % 5,
                max_repeats: 20 + n % 5,
            },
        ],
        heap: vec![HeapSample {
            ts_ms: start * 1_000 + 1_234,
            live_bytes: 1_000_000 + n * 7_919 % 500_000,
            peak_bytes: 2_000_000 + n * 104_729 % 900_000,
        }],
        exemplars: vec![Exemplar {
            route: if n.is_multiple_of(2) { "/a" } else { "/b" }.into(),
            method: "GET".into(),
            status: if n.is_multiple_of(5) { 500 } else { 200 },
            // Distinct starts: ties are broken by id, which each backend makes its own way.
            start_ms: start * 1_000 + n as i64 % 1_000,
            duration_us: 20_000 + n * 17,
            reasons: if n.is_multiple_of(5) {
                reason::ERROR | reason::SLOW
            } else {
                reason::SAMPLED
            },
            queries: 3 + n % 4,
            query_us: 900 + n,
            allocs: n * 11,
            alloc_bytes: n * 1_024,
            dropped_entries: n % 2,
            entries: vec![
                Entry {
                    kind: EntryKind::Span,
                    name: "handler".into(),
                    fingerprint: None,
                    offset_us: 0,
                    duration_us: 19_000,
                },
                Entry {
                    kind: EntryKind::Query,
                    name: "SELECT * FROM comments WHERE id = ?".into(),
                    fingerprint: Some(FP_HIGH),
                    offset_us: 100 + n,
                    duration_us: 900,
                },
            ],
        }],
    }
}

/// Four days of insight up to `now` from two instances in two environments, and a dense
/// last half hour from a third.
fn days_of_insight(now: i64) -> Vec<MetricsIngest> {
    let mut batches = Vec::new();
    let end = now.div_euclid(10) * 10;
    let mut start = end - 4 * 86_400;
    let mut n = 0u64;
    while start < end {
        for (instance, environment) in [("i-1", Some("prod")), ("i-2", None)] {
            batches.push(batch(instance, environment, insight_at(start, n)));
            n += 1;
        }
        start += 37 * 60 + 10;
    }
    let mut dense = end - 1_800;
    while dense < end {
        batches.push(batch("i-3", Some("prod"), insight_at(dense, n)));
        n += 1;
        dense += 10;
    }
    batches
}

/// Query totals as comparable text, calling routes sorted (their order within equal
/// counts is the backend's).
fn query_text(mut totals: Vec<QueryTotals>) -> String {
    for q in &mut totals {
        q.routes
            .sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.cmp(b)));
    }
    format!("{totals:#?}")
}

/// N+1 rows in one order (SQLite leaves rows with equal requests, route and method in
/// no particular order).
fn suspects(mut rows: Vec<NPlusOneRow>) -> Vec<NPlusOneRow> {
    rows.sort_by(|a, b| {
        b.requests.cmp(&a.requests).then_with(|| {
            (&a.route, &a.method, &a.fingerprint).cmp(&(&b.route, &b.method, &b.fingerprint))
        })
    });
    rows
}

/// Every page of exemplars, `limit` at a time, following `before`.
async fn all_exemplars(
    store: &dyn InsightStore,
    range: TimeRange,
    route: Option<(&str, &str)>,
    limit: u32,
    environment: Option<&str>,
) -> Vec<ExemplarSummary> {
    let mut all: Vec<ExemplarSummary> = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .exemplars(1, range, route, before, limit, environment)
            .await
            .unwrap();
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        all.extend(page);
    }
    all
}

/// Without their ids, which each backend makes its own way.
fn without_ids(mut rows: Vec<ExemplarSummary>) -> Vec<ExemplarSummary> {
    for row in &mut rows {
        row.id = 0;
    }
    rows
}

#[derive(Debug, ::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct TableName {
    name: String,
}

/// Merges every table's parts, so stored rows are one per key as in SQLite.
async fn optimize(events: &ClickHouseEvents) {
    let tables: Vec<TableName> = events
        .client
        .query(
            "SELECT name FROM system.tables
             WHERE database = currentDatabase() AND engine LIKE '%MergeTree'",
        )
        .fetch_all()
        .await
        .unwrap();
    for table in tables {
        events
            .client
            .query(&format!("OPTIMIZE TABLE {} FINAL", table.name))
            .execute()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn insight_reads_equal_the_sqlite_backend() {
    let events = connected().await;
    let (_dir, sqlite) = sqlite().await;
    let now = crate::query::unix_now();
    let batches = days_of_insight(now);
    let ingests: Vec<Ingest> = batches.iter().cloned().map(Ingest::Metrics).collect();
    sqlite.write(&ingests).await.unwrap();
    // In two inserts: the tiers add them up.
    let refs: Vec<&MetricsIngest> = batches.iter().collect();
    let (first, second) = refs.split_at(refs.len() / 2);
    events.insert_insight(first).await.unwrap();
    events.insert_insight(second).await.unwrap();

    let ours: &dyn InsightStore = &events;
    let theirs: &dyn InsightStore = &sqlite;
    let day = 86_400;
    let today = now.div_euclid(day) * day;
    let ranges = [
        (Tier::Raw, now - 1_200, now + 60),
        (Tier::Minute, now - 5 * 3_600 - 7, now),
        (Tier::Hour, now - 30 * 3_600 - 1, now),
        // Whole days inside: read from the day tier, the edges from the hour tier.
        (Tier::Hour, today - 2 * day + 3_600, now),
        (Tier::Day, now - 3 * day - 5, now),
    ];
    let mut compared = 0;
    for (tier, since, until) in ranges {
        let range = TimeRange {
            since: aligned_since(tier, since),
            until,
        };
        for environment in [None, Some("prod"), Some(""), Some("nope")] {
            let what = format!("{tier:?} {environment:?}");
            let q = ours
                .query_totals(1, tier, range, environment)
                .await
                .unwrap();
            compared += q.len();
            let expected = theirs
                .query_totals(1, tier, range, environment)
                .await
                .unwrap();
            assert_eq!(query_text(q), query_text(expected), "queries, {what}");

            let r = ours
                .route_totals(1, tier, range, environment)
                .await
                .unwrap();
            compared += r.len();
            let expected = theirs
                .route_totals(1, tier, range, environment)
                .await
                .unwrap();
            assert_eq!(
                format!("{r:#?}"),
                format!("{expected:#?}"),
                "routes, {what}"
            );

            let n = ours.n_plus_one(1, tier, range, environment).await.unwrap();
            compared += n.len();
            let expected = theirs
                .n_plus_one(1, tier, range, environment)
                .await
                .unwrap();
            assert_eq!(suspects(n), suspects(expected), "n+1, {what}");

            for step_secs in [10, 60, 3_600, day] {
                let h = ours
                    .heap(1, tier, range, step_secs, environment)
                    .await
                    .unwrap();
                compared += h.iter().map(|s| s.points.len()).sum::<usize>();
                let expected = theirs
                    .heap(1, tier, range, step_secs, environment)
                    .await
                    .unwrap();
                assert_eq!(h, expected, "heap, {what}, step {step_secs}");
            }
        }
    }
    assert!(compared > 1_000, "compared only {compared} rows");

    // What the data looks like, so an empty answer on both sides cannot pass.
    let all = TimeRange {
        since: now - 5 * day,
        until: now + 60,
    };
    let totals = ours.query_totals(1, Tier::Day, all, None).await.unwrap();
    let order: Vec<u64> = totals.iter().map(|q| q.fingerprint).collect();
    assert_eq!(
        order,
        [FP_HIGH, FP_LOW],
        "signed order; idle windows skipped"
    );
    assert_eq!(totals[0].sql, "SELECT * FROM comments WHERE id = ?");
    assert_eq!(totals[0].routes.len(), 2);
    let suspects_all = ours.n_plus_one(1, Tier::Day, all, None).await.unwrap();
    let unseen = suspects_all
        .iter()
        .find(|s| s.fingerprint == crate::insight::hex(FP_UNSEEN))
        .unwrap();
    assert_eq!(unseen.sql, "");
    assert!(unseen.route_requests > 0);
    let routes = ours.route_totals(1, Tier::Day, all, None).await.unwrap();
    let names: Vec<&str> = routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(names, ["/a", "/b"]);
    assert_eq!(routes[0].buckets.len(), 4);

    // Exemplars: the same list, the same pages, the same details.
    for route in [None, Some(("/a", "GET")), Some(("/a", "POST"))] {
        for environment in [None, Some("prod"), Some(""), Some("nope")] {
            let what = format!("{route:?} {environment:?}");
            let listed = ours
                .exemplars(1, all, route, None, 1_000, environment)
                .await
                .unwrap();
            let expected = theirs
                .exemplars(1, all, route, None, 1_000, environment)
                .await
                .unwrap();
            assert_eq!(
                without_ids(listed.clone()),
                without_ids(expected.clone()),
                "exemplars, {what}"
            );
            for limit in [7, 64] {
                let paged = all_exemplars(ours, all, route, limit, environment).await;
                assert_eq!(paged, listed, "pages of {limit}, {what}");
            }
            for (one, other) in listed.iter().zip(&expected).take(5) {
                let mut detail = ours.exemplar(1, one.id).await.unwrap().unwrap();
                let mut expected = theirs.exemplar(1, other.id).await.unwrap().unwrap();
                detail.summary.id = 0;
                expected.summary.id = 0;
                assert_eq!(detail, expected, "{what}");
            }
        }
    }
    let newest = ours
        .exemplars(1, all, None, None, 1, None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(ours.exemplar(2, newest.id).await.unwrap(), None);
    assert_eq!(ours.exemplar(1, newest.id ^ 1).await.unwrap(), None);
    assert!(
        ours.exemplars(1, all, None, Some(newest.id ^ 1), 10, None)
            .await
            .unwrap()
            .is_empty(),
        "an unknown `before` lists nothing"
    );
    let hour = TimeRange {
        since: now - 3_600,
        until: now - 1_800,
    };
    let in_hour = ours
        .exemplars(1, hour, None, None, 1_000, None)
        .await
        .unwrap();
    assert!(!in_hour.is_empty());
    assert!(
        in_hour
            .iter()
            .all(|e| e.start_ms >= hour.since * 1_000 && e.start_ms < hour.until * 1_000)
    );

    // Storage: once merged, one row per key, as SQLite counts them.
    optimize(&events).await;
    let report = ours.storage().await.unwrap();
    let expected = theirs.storage().await.unwrap();
    assert_eq!(report.tables, expected.tables);
    assert!(report.db_bytes > 0);
    let rows = |table: &str, tier: Option<Tier>| {
        report
            .tables
            .iter()
            .find(|t| t.table == table && t.tier == tier)
            .unwrap()
            .rows
    };
    assert!(rows("insight_routes", Some(Tier::Raw)) > rows("insight_routes", Some(Tier::Day)));
    assert_eq!(rows("query_fingerprints", None), 3);
    drop_database(&events).await;
}

#[tokio::test]
async fn a_retried_insert_keeps_exemplars_once_and_pages_through_ties() {
    let events = connected().await;
    const T: i64 = 1_733_390_000;
    // Five exemplars with one start: ties broken by id.
    let mut insight = insight_at(T, 1);
    let template = insight.exemplars.remove(0);
    insight.exemplars = (0..5)
        .map(|k| Exemplar {
            start_ms: T * 1_000,
            duration_us: 1_000 + k,
            ..template.clone()
        })
        .collect();
    let retried = batch("i-1", Some("prod"), insight);
    events.insert_insight(&[&retried]).await.unwrap();
    events.insert_insight(&[&retried]).await.unwrap();
    let range = TimeRange {
        since: T,
        until: T + 1,
    };
    let listed = events
        .exemplars(1, range, None, None, 100, None)
        .await
        .unwrap();
    assert_eq!(listed.len(), 5, "a retried exemplar is listed once");
    let ids: Vec<u64> = listed.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "ties newest id first");
    assert!(ids.iter().all(|&id| id <= i64::MAX as u64));
    assert_eq!(all_exemplars(&events, range, None, 2, None).await, listed);
    optimize(&events).await;
    assert_eq!(all_exemplars(&events, range, None, 1, None).await, listed);
    // Windows count twice, as the metric windows do (the commit is retried whole).
    let totals = events
        .route_totals(
            1,
            Tier::Minute,
            TimeRange {
                since: aligned_since(Tier::Minute, T),
                until: T + 60,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(totals[0].requests, 4);
    drop_database(&events).await;
}

#[derive(Debug, ::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct Partition {
    table: String,
    partition: String,
}

async fn partitions(events: &ClickHouseEvents) -> Vec<(String, i64)> {
    let parts: Vec<Partition> = events
        .client
        .query(
            "SELECT DISTINCT table, partition FROM system.parts
             WHERE database = currentDatabase() AND active AND table != 'schema_migrations'
             ORDER BY table, partition",
        )
        .fetch_all()
        .await
        .unwrap();
    parts
        .into_iter()
        .map(|p| (p.table, p.partition.parse().unwrap()))
        .collect()
}

#[tokio::test]
async fn prune_drops_insight_days_past_their_tiers_retention() {
    let events = connected().await;
    const D: i64 = 20_000; // a day number
    let day = |d: i64| d * DAY;
    let mut early = batch("i-1", None, insight_at(day(D) + 30, 1));
    early.received_at = day(D) + 40;
    let mut late = batch("i-1", None, insight_at(day(D + 3) + 43_200, 2));
    late.received_at = day(D + 3) + 43_210;
    // Two commits: one commit keeps one text per statement, seen last in the later one.
    events.insert_insight(&[&early]).await.unwrap();
    events.insert_insight(&[&late]).await.unwrap();
    let retention = RetentionConfig {
        raw_secs: DAY,
        minute_secs: 2 * DAY,
        hour_secs: 3 * DAY,
        day_secs: 10 * DAY,
        ..RetentionConfig::default()
    };
    let before = partitions(&events).await;
    // 5 tiered families × 4 tiers, exemplars and texts: days D and D + 3 each.
    assert_eq!(before.len(), 44, "{before:?}");
    let range = TimeRange {
        since: day(D),
        until: day(D + 1),
    };
    let exemplars = |events: &ClickHouseEvents| {
        let events = events.clone();
        async move {
            events
                .exemplars(1, range, None, None, 10, None)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(exemplars(&events).await, 1);

    // Raw keeps a day: at D + 2, day D of the raw tables and the exemplars goes.
    let dropped = InsightStore::prune(&events, &retention, day(D + 2))
        .await
        .unwrap();
    assert!(dropped > 0);
    let after = partitions(&events).await;
    let gone: Vec<&(String, i64)> = before.iter().filter(|p| !after.contains(p)).collect();
    let expected: Vec<(String, i64)> = [
        "exemplars",
        "heap_samples",
        "insight_routes",
        "n_plus_one",
        "query_routes",
        "query_windows",
    ]
    .into_iter()
    .map(|t| (t.to_owned(), D))
    .collect();
    assert_eq!(gone, expected.iter().collect::<Vec<_>>());
    assert_eq!(exemplars(&events).await, 0);
    let requests = |tier| {
        let events = events.clone();
        async move {
            events
                .route_totals(1, tier, range, None)
                .await
                .unwrap()
                .iter()
                .map(|r| r.requests)
                .sum::<u64>()
        }
    };
    assert_eq!(requests(Tier::Raw).await, 0);
    assert_eq!(requests(Tier::Minute).await, 4);
    assert_eq!(
        InsightStore::prune(&events, &retention, day(D + 2))
            .await
            .unwrap(),
        0
    );
    // Statement texts last as long as the day tier: still named at D + 10.
    InsightStore::prune(&events, &retention, day(D + 10))
        .await
        .unwrap();
    let suspects = events.n_plus_one(1, Tier::Day, range, None).await.unwrap();
    assert_eq!(suspects[0].sql, "SELECT * FROM comments WHERE id = ?");
    assert!(
        partitions(&events)
            .await
            .contains(&("query_fingerprints".to_owned(), D))
    );
    // Past it only day D + 3's text is left.
    InsightStore::prune(&events, &retention, day(D + 11))
        .await
        .unwrap();
    let left = partitions(&events).await;
    assert!(!left.contains(&("query_fingerprints".to_owned(), D)));
    assert!(left.contains(&("query_fingerprints".to_owned(), D + 3)));
    InsightStore::prune(&events, &retention, day(D + 100))
        .await
        .unwrap();
    assert!(partitions(&events).await.is_empty());
    drop_database(&events).await;
}

#[tokio::test]
async fn the_scaled_store_writes_and_reads_insight_as_sqlite_does() {
    let (events, meta) = tokio::join!(
        testing::fresh_database(),
        crate::store::postgres::testing::fresh_database()
    );
    let scaled = crate::store::ScaledStore::connect(&events, &meta)
        .await
        .unwrap();
    scaled.ensure_default_project().await.unwrap();
    let (_dir, sqlite) = sqlite().await;
    let now = crate::query::unix_now();
    let end = now.div_euclid(10) * 10;
    let ingests: Vec<Ingest> = (0..30)
        .map(|n| {
            let environment = if n % 3 == 0 { None } else { Some("prod") };
            let instance = format!("i-{}", n % 2);
            Ingest::Metrics(batch(
                &instance,
                environment,
                insight_at(end - 1_800 + 60 * n as i64, n),
            ))
        })
        .collect();
    // One group commit, as the writer sends it.
    scaled.write(&ingests).await.unwrap();
    sqlite.write(&ingests).await.unwrap();
    let ours = scaled.insight().expect("the scaled store keeps insight");
    let theirs = sqlite.insight().unwrap();
    let range = TimeRange {
        since: aligned_since(Tier::Minute, now - 3_600),
        until: now + 60,
    };
    for environment in [None, Some("prod"), Some("")] {
        let q = ours
            .query_totals(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        assert_eq!(q.len(), 2);
        let expected = theirs
            .query_totals(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        assert_eq!(query_text(q), query_text(expected));
        let r = ours
            .route_totals(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        let expected = theirs
            .route_totals(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        assert_eq!(format!("{r:#?}"), format!("{expected:#?}"));
        let n = ours
            .n_plus_one(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        let expected = theirs
            .n_plus_one(1, Tier::Minute, range, environment)
            .await
            .unwrap();
        assert_eq!(suspects(n), suspects(expected));
        let h = ours
            .heap(1, Tier::Minute, range, 300, environment)
            .await
            .unwrap();
        assert_eq!(h.len(), 2, "both instances report in each environment");
        let expected = theirs
            .heap(1, Tier::Minute, range, 300, environment)
            .await
            .unwrap();
        assert_eq!(h, expected);
        let listed = ours
            .exemplars(1, range, None, None, 100, environment)
            .await
            .unwrap();
        let expected = theirs
            .exemplars(1, range, None, None, 100, environment)
            .await
            .unwrap();
        assert!(!listed.is_empty());
        assert_eq!(without_ids(listed), without_ids(expected));
    }
    assert_eq!(ours.retention(), theirs.retention());
    // Retention through the store drops the insight tables too.
    let far = RetentionConfig::default();
    scaled.prune_expired(&far, now + 500 * DAY).await.unwrap();
    assert!(
        ours.route_totals(1, Tier::Minute, range, None)
            .await
            .unwrap()
            .is_empty()
    );
    let url = events;
    let events = ClickHouseEvents::connect(&url).await.unwrap();
    drop_database(&events).await;
}
