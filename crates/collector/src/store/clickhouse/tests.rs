//! Tests against a real ClickHouse (`SIGHTLINE_TEST_CLICKHOUSE`), each in a database of
//! its own so they run in parallel. Reads are compared with what the SQLite backend
//! answers for the same writes: the two must agree exactly.

use std::collections::BTreeMap;

use serde::Deserialize;
use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow, quantile_of};
use tempfile::TempDir;

use super::*;
use crate::TimeRange;
use crate::insight::{Tier, aligned_since};
use crate::store::{
    Aggregates, Cursor, EnvelopeIngest, EventRecord, Ingest, MetricsIngest, SqliteStore, Steps,
    Store, StoredEvent, StoredPayload,
};

async fn connected() -> (String, ClickHouseEvents) {
    let url = testing::fresh_database().await;
    let events = ClickHouseEvents::connect(&url).await.unwrap();
    (url, events)
}

/// Drops the test's database: tests leave nothing behind on a shared server.
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

// ---- connection and migrations ----

#[test]
fn urls_map_to_an_http_endpoint_and_a_database() {
    let target = parse_url("clickhouse://127.0.0.1:8123/metrics").unwrap();
    assert_eq!(
        target,
        Target {
            endpoint: "http://127.0.0.1:8123".into(),
            database: "metrics".into(),
            user: None,
            password: None,
            cluster: None,
        }
    );
    let clustered = parse_url("clickhouse://ch-1:8123/sightline?cluster=prod_2").unwrap();
    assert_eq!(clustered.cluster.as_deref(), Some("prod_2"));
    assert_eq!(clustered.database, "sightline");
    let target = parse_url("http://ops:s3cret@ch.local:8123").unwrap();
    assert_eq!(target.endpoint, "http://ch.local:8123");
    assert_eq!(target.database, DEFAULT_DATABASE);
    assert_eq!(target.user.as_deref(), Some("ops"));
    assert_eq!(target.password.as_deref(), Some("s3cret"));
    assert_eq!(parse_url("http://h:1/").unwrap().database, DEFAULT_DATABASE);
    for bad in [
        "127.0.0.1:8123",
        "postgres://h/db",
        "http:///db",
        "http://h/db;DROP",
        "http://h/a/b",
        "http://h/db?x=1",
        "http://h/db?cluster=",
        "http://h/db?cluster=a;DROP",
    ] {
        assert!(
            matches!(parse_url(bad), Err(Error::Config(_))),
            "{bad} accepted"
        );
    }
}

#[test]
fn migrations_split_into_single_statements() {
    for migration in migrate::CLICKHOUSE {
        let statements = statements(migration.sql);
        assert!(!statements.is_empty());
        for statement in &statements {
            assert!(
                !statement.contains(';'),
                "two statements in one: {statement}"
            );
            assert!(
                statement.contains("IF NOT EXISTS"),
                "not idempotent: {statement}"
            );
        }
    }
    assert_eq!(
        statements("-- a; comment\nSELECT 1;\n\n  SELECT 2\n  FROM x;\nSELECT 3"),
        ["SELECT 1", "SELECT 2\n  FROM x", "SELECT 3"]
    );
}

#[tokio::test]
async fn connecting_again_and_at_once_migrates_once() {
    let url = testing::fresh_database().await;
    // Two collectors starting together, then one restarting.
    let (a, b) = tokio::join!(
        ClickHouseEvents::connect(&url),
        ClickHouseEvents::connect(&url)
    );
    let (a, _b) = (a.unwrap(), b.unwrap());
    let again = ClickHouseEvents::connect(&url).await.unwrap();
    again.ping().await.unwrap();
    let versions: Vec<i64> = again
        .client
        .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .unwrap();
    let known: Vec<i64> = migrate::CLICKHOUSE.iter().map(|m| m.version).collect();
    assert_eq!(versions, known);
    let tables: Vec<String> = again
        .client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    for table in [
        "events",
        "windows_in",
        "route_windows_1d",
        "project_windows_1m_mv",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    // A version this build does not know: a newer build migrated the database.
    again
        .client
        .query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)")
        .bind(i64::MAX)
        .execute()
        .await
        .unwrap();
    assert!(matches!(
        ClickHouseEvents::connect(&url).await,
        Err(Error::SchemaTooNew(i64::MAX))
    ));
    drop_database(&a).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_store_error() {
    // Port 9 (discard) on loopback: nothing listens there.
    let error = ClickHouseEvents::connect("clickhouse://127.0.0.1:9/x")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
}

#[tokio::test]
async fn a_server_that_does_not_answer_fails_the_ping_in_time() {
    // Accepts connections and reads nothing: a hung server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let events = ClickHouseEvents {
        client: ::clickhouse::Client::default()
            .with_url(format!("http://{addr}"))
            .with_validation(false),
        retention: RetentionConfig::default(),
        cluster: None,
    };
    let started = std::time::Instant::now();
    assert!(matches!(events.ping().await, Err(Error::Store(_))));
    assert!(started.elapsed() < PING_WAIT * 2, "{:?}", started.elapsed());
}

// ---- events ----

fn record(n: usize, timestamp: f64, environment: Option<&str>) -> EventRecord {
    let tags = vec![("worker".to_owned(), format!("w{}", n % 3))];
    EventRecord {
        event_id: format!("{n:032x}"),
        timestamp,
        level: "error",
        title: format!("boom {n}"),
        culprit: "f in m".to_owned(),
        platform: "python".to_owned(),
        environment: environment.map(str::to_owned),
        release: n.is_multiple_of(2).then(|| "1.0".to_owned()),
        user: None,
        tags_json: serde_json::to_string(&tags).unwrap(),
        tags,
        hash: "a".repeat(32),
        grouped_by: "message",
        grouping_values: "[\"boom\"]".to_owned(),
        payload: StoredPayload::compress(&format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(n))),
    }
}

/// Every page of an issue's events, `limit` at a time, following the cursor.
async fn all_pages(events: &ClickHouseEvents, issue_id: u64, limit: u32) -> Vec<StoredEvent> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = events
            .issue_events(issue_id, limit, cursor, false)
            .await
            .unwrap();
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor {
            value: last.timestamp,
            id: last.id,
        });
        all.extend(page);
    }
    all
}

#[tokio::test]
async fn events_read_newest_first_and_page_without_skips_or_repeats() {
    let (_, events) = connected().await;
    // Ties on the timestamp (the id breaks them) and fractions a decimal round trip may
    // not reproduce exactly.
    let times = [
        1_733_390_000.1 + 0.2,
        1_733_390_000.3,
        1_733_390_000.3,
        1_733_390_000.3,
        1_733_390_001.000_000_1,
        1_733_389_999.999_999_9,
        1_733_390_002.0,
    ];
    let records: Vec<EventRecord> = times
        .iter()
        .enumerate()
        .map(|(n, &t)| record(n, t, Some("prod")))
        .collect();
    let mut rows: Vec<EventRow<'_>> = records
        .iter()
        .map(|event| EventRow {
            project_id: 1,
            issue_id: 10,
            received_at: 1_733_390_005.5,
            event,
        })
        .collect();
    let other = record(99, 1_733_390_003.0, Some("staging"));
    rows.push(EventRow {
        project_id: 1,
        issue_id: 11,
        received_at: 1_733_390_005.5,
        event: &other,
    });
    events.insert_events(&rows).await.unwrap();

    let first = events.issue_events(10, 100, None, true).await.unwrap();
    assert_eq!(first.len(), times.len(), "only the issue's own events");
    let order: Vec<(f64, u64)> = first.iter().map(|e| (e.timestamp, e.id)).collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.partial_cmp(a).unwrap());
    assert_eq!(order, expected, "newest first, ties by id descending");
    for page_size in [1, 2, 3] {
        let paged = all_pages(&events, 10, page_size).await;
        let ids: Vec<&str> = paged.iter().map(|e| e.event_id.as_str()).collect();
        let all: Vec<&str> = first.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, all, "pages of {page_size}");
        assert!(paged.iter().all(|e| e.payload.is_none()));
    }

    let newest = &first[0];
    assert_eq!(newest.event_id, format!("{:032x}", 6));
    assert_eq!(newest.id, events::event_key(1, &newest.event_id));
    assert_eq!((newest.issue_id, newest.project_id), (10, 1));
    assert_eq!(newest.received, 1_733_390_005.5);
    assert_eq!(newest.release.as_deref(), Some("1.0"));
    assert_eq!(newest.tags, [("worker".to_owned(), "w0".to_owned())]);
    assert_eq!(
        newest.payload,
        Some(serde_json::json!({"n": 6, "pad": "xxxxxx"}))
    );

    let one = events.event(1, &other.event_id).await.unwrap().unwrap();
    assert_eq!((one.issue_id, one.timestamp), (11, 1_733_390_003.0));
    assert_eq!(
        one.payload,
        Some(serde_json::json!({"n": 99, "pad": "x".repeat(99)}))
    );
    assert_eq!(events.event(2, &other.event_id).await.unwrap(), None);
    assert_eq!(events.event(1, &"f".repeat(32)).await.unwrap(), None);
    drop_database(&events).await;
}

#[tokio::test]
async fn a_retried_insert_shows_each_event_once() {
    let (url, events) = connected().await;
    // Thousands of rows in one insert, as a busy group commit writes them.
    let records: Vec<EventRecord> = (0..2_000)
        .map(|n| record(n, 1_733_390_000.0 + n as f64, None))
        .collect();
    let rows = |received_at: f64| -> Vec<EventRow<'_>> {
        records
            .iter()
            .map(|event| EventRow {
                project_id: 1,
                issue_id: 10,
                received_at,
                event,
            })
            .collect()
    };
    events.insert_events(&rows(1_733_390_100.0)).await.unwrap();
    // The same batch again (a retry), from another collector, a moment later.
    let other = ClickHouseEvents::connect(&url).await.unwrap();
    other.insert_events(&rows(1_733_390_160.0)).await.unwrap();
    other.insert_events(&rows(1_733_390_160.0)).await.unwrap();

    let listed = events.issue_events(10, 5_000, None, false).await.unwrap();
    assert_eq!(listed.len(), 2_000);
    let paged = all_pages(&events, 10, 97).await;
    assert_eq!(paged, listed);
    // The first copy is the one kept, as SQLite keeps it.
    assert!(listed.iter().all(|e| e.received == 1_733_390_100.0));
    let one = events
        .event(1, &records[3].event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.received, 1_733_390_100.0);

    // After merges too.
    events
        .client
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    let merged = events.issue_events(10, 5_000, None, false).await.unwrap();
    assert_eq!(merged, listed);
    drop_database(&events).await;
}

#[tokio::test]
async fn events_read_as_the_sqlite_backend_reads_them() {
    let (_, events) = connected().await;
    let dir = TempDir::new().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    sqlite.ensure_default_project().await.unwrap();
    // Two issues (two hashes).
    let records: Vec<EventRecord> = (0..12)
        .map(|n| {
            // No two at the same time: ties are broken by row id, which each backend
            // assigns its own way.
            let mut r = record(n, 1_733_390_000.25 + n as f64 * 0.5, Some("prod"));
            if n.is_multiple_of(4) {
                r.hash = "b".repeat(32);
            }
            r
        })
        .collect();
    sqlite
        .write(&[Ingest::Envelope(EnvelopeIngest {
            project_id: 1,
            received_at: 1_733_390_050.0,
            items: vec![("event", records.len() as u64)],
            events: records.clone(),
        })])
        .await
        .unwrap();
    // The issue each event went to, as the metadata store decided.
    let mut issues = BTreeMap::new();
    for record in &records {
        let stored = sqlite.event(1, &record.event_id).await.unwrap().unwrap();
        issues.insert(record.event_id.clone(), stored.issue_id);
    }
    let rows: Vec<EventRow<'_>> = records
        .iter()
        .map(|event| EventRow {
            project_id: 1,
            issue_id: issues[&event.event_id],
            received_at: 1_733_390_050.0,
            event,
        })
        .collect();
    events.insert_events(&rows).await.unwrap();

    // Equal but for the row id, which each backend makes its own way.
    let same = |mut a: StoredEvent, b: &StoredEvent| {
        a.id = b.id;
        assert_eq!(&a, b);
    };
    for issue_id in issues
        .values()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        for full in [false, true] {
            let theirs = sqlite
                .issue_events(issue_id, 100, None, full)
                .await
                .unwrap();
            let ours = events
                .issue_events(issue_id, 100, None, full)
                .await
                .unwrap();
            assert_eq!(ours.len(), theirs.len());
            for (ours, theirs) in ours.into_iter().zip(&theirs) {
                same(ours, theirs);
            }
        }
    }
    for record in &records {
        let theirs = sqlite.event(1, &record.event_id).await.unwrap().unwrap();
        same(
            events.event(1, &record.event_id).await.unwrap().unwrap(),
            &theirs,
        );
    }
    drop_database(&events).await;
}

// ---- metric windows ----

fn histogram(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

fn window(start: i64, route: &str, status_class: u8, latency: Histogram) -> RouteWindow {
    RouteWindow {
        start,
        window_secs: 10,
        route: route.into(),
        method: "GET".into(),
        status_class,
        latency,
    }
}

fn batch(instance: &str, environment: Option<&str>, windows: Vec<RouteWindow>) -> MetricsIngest {
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
            insight: Default::default(),
            windows,
        },
    }
}

/// The buckets of one key of an aggregate, as a map.
fn buckets_of<K: PartialEq>(aggregates: &Aggregates<K>, key: &K) -> BTreeMap<i32, u64> {
    aggregates
        .buckets
        .iter()
        .filter(|(k, _, _)| k == key)
        .map(|&(_, bucket, n)| (bucket, n))
        .collect()
}

#[tokio::test]
async fn windows_merge_across_inserts_and_instances_in_every_tier() {
    let (url, events) = connected().await;
    const T: i64 = 1_733_390_000; // a multiple of 10, inside one minute with T + 10
    let a = histogram(&[900, 1_000, 1_100, 250_000]);
    let b = histogram(&[1, 2, 3, 40_000, 41_000]);
    let c = histogram(&[5_000; 7]);
    let errors = histogram(&[77_000]);
    // Two instances, two collectors, three inserts; windows of one slot in every tier.
    events
        .insert_windows(&[&batch(
            "i-1",
            None,
            vec![
                window(T, "/r", 2, a.clone()),
                window(T, "/r", 5, errors.clone()),
            ],
        )])
        .await
        .unwrap();
    let other = ClickHouseEvents::connect(&url).await.unwrap();
    other
        .insert_windows(&[
            &batch("i-2", None, vec![window(T, "/r", 2, b.clone())]),
            &batch(
                "i-2",
                None,
                vec![
                    window(T + 10, "/r", 2, c.clone()),
                    // Empty: adds nothing, and must not drag min_us to 0.
                    window(T + 10, "/r", 2, Histogram::new()),
                    window(T + 10, "/other", 2, histogram(&[3])),
                ],
            ),
        ])
        .await
        .unwrap();
    let mut ok = a.clone();
    ok.merge(&b);
    ok.merge(&c);
    let mut all = ok.clone();
    all.merge(&errors);
    let key = ("/r".to_owned(), "GET".to_owned());

    for tier in Tier::ALL {
        let range = TimeRange {
            since: T,
            until: T + 20,
        };
        let routes = events
            .route_aggregates_in(tier, 1, range, None)
            .await
            .unwrap();
        let classes: Vec<_> = routes
            .classes
            .iter()
            .map(|c| {
                (
                    c.key.0.as_str(),
                    c.status_class,
                    c.count,
                    c.sum_us,
                    c.min_us,
                    c.max_us,
                )
            })
            .collect();
        assert_eq!(
            classes,
            [
                ("/other", 2, 1, 3.0, 3, 3),
                ("/r", 2, ok.count, ok.sum as f64, ok.min, ok.max),
                ("/r", 5, 1, 77_000.0, 77_000, 77_000),
            ],
            "{tier:?}"
        );
        // Buckets added up, across status classes, exactly as the merged histogram.
        let buckets = buckets_of(&routes, &key);
        assert_eq!(buckets, all.buckets, "{tier:?}");
        for q in [0.5, 0.9, 0.99] {
            assert_eq!(
                quantile_of(buckets.iter().map(|(&b, &n)| (b, n)), q),
                quantile_of(all.buckets.iter().map(|(&b, &n)| (b, n)), q),
                "{tier:?} q{q}"
            );
        }

        // The per-project rollup holds the same sums, every route together.
        let series = events
            .series_aggregates_in(
                tier,
                1,
                TimeRange {
                    since: aligned_since(tier, T),
                    until: T + 20,
                },
                Steps {
                    origin: aligned_since(tier, T),
                    step_secs: 86_400,
                },
                None,
                None,
            )
            .await
            .unwrap();
        let counts: Vec<(u8, u64)> = series
            .classes
            .iter()
            .map(|c| (c.status_class, c.count))
            .collect();
        assert_eq!(counts, [(2, ok.count + 1), (5, 1)], "{tier:?}");
        let mut with_other = all.clone();
        with_other.merge(&histogram(&[3]));
        assert_eq!(
            buckets_of(&series, &aligned_since(tier, T)),
            with_other.buckets,
            "{tier:?}"
        );
    }

    // Raw windows keep their own slots: a step per window start.
    let series = events
        .series_aggregates_in(
            Tier::Raw,
            1,
            TimeRange {
                since: T,
                until: T + 20,
            },
            Steps {
                origin: T,
                step_secs: 10,
            },
            Some(("/r", "GET")),
            None,
        )
        .await
        .unwrap();
    let steps: Vec<(i64, u8, u64)> = series
        .classes
        .iter()
        .map(|c| (c.key, c.status_class, c.count))
        .collect();
    let mut first = a.clone();
    first.merge(&b);
    assert_eq!(
        steps,
        [(T, 2, first.count), (T, 5, 1), (T + 10, 2, c.count)]
    );
    // After background merges the answers are the same.
    for table in ["route_windows", "route_windows_1m", "project_windows_1d"] {
        events
            .client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let merged = events
        .series_aggregates_in(
            Tier::Raw,
            1,
            TimeRange {
                since: T,
                until: T + 20,
            },
            Steps {
                origin: T,
                step_secs: 10,
            },
            Some(("/r", "GET")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(merged, series);
    drop_database(&events).await;
}

#[tokio::test]
async fn environment_and_route_filters_keep_to_their_rows() {
    let (_, events) = connected().await;
    const T: i64 = 1_733_390_000;
    events
        .insert_windows(&[
            &batch(
                "i-1",
                Some("prod"),
                vec![window(T, "/r", 2, histogram(&[10, 20]))],
            ),
            &batch(
                "i-2",
                Some("staging"),
                vec![window(T, "/r", 2, histogram(&[30]))],
            ),
            &batch("i-3", None, vec![window(T, "/s", 2, histogram(&[40; 4]))]),
        ])
        .await
        .unwrap();
    let range = TimeRange {
        since: T,
        until: T + 10,
    };
    for tier in Tier::ALL {
        let count = |a: &Aggregates<(String, String)>| -> Vec<(String, u64)> {
            a.classes
                .iter()
                .map(|c| (c.key.0.clone(), c.count))
                .collect()
        };
        let of = |environment: Option<&'static str>| {
            events.route_aggregates_in(tier, 1, range, environment)
        };
        assert_eq!(
            count(&of(None).await.unwrap()),
            [("/r".to_owned(), 3), ("/s".to_owned(), 4)]
        );
        assert_eq!(
            count(&of(Some("prod")).await.unwrap()),
            [("/r".to_owned(), 2)]
        );
        assert_eq!(
            count(&of(Some("staging")).await.unwrap()),
            [("/r".to_owned(), 1)]
        );
        // Windows without an environment are stored under ''.
        assert_eq!(count(&of(Some("")).await.unwrap()), [("/s".to_owned(), 4)]);
        assert!(of(Some("nope")).await.unwrap().classes.is_empty());
        // Another project sees nothing.
        assert!(
            events
                .route_aggregates_in(tier, 2, range, None)
                .await
                .unwrap()
                .classes
                .is_empty()
        );

        let since = aligned_since(tier, T);
        let steps = Steps {
            origin: since,
            step_secs: 86_400,
        };
        let range = TimeRange { since, ..range };
        let series = |route: Option<(&'static str, &'static str)>,
                      environment: Option<&'static str>| {
            events.series_aggregates_in(tier, 1, range, steps, route, environment)
        };
        let total = |a: Aggregates<i64>| a.classes.iter().map(|c| c.count).sum::<u64>();
        assert_eq!(total(series(None, None).await.unwrap()), 7, "{tier:?}");
        assert_eq!(total(series(Some(("/r", "GET")), None).await.unwrap()), 3);
        assert_eq!(total(series(Some(("/r", "POST")), None).await.unwrap()), 0);
        assert_eq!(
            total(series(Some(("/r", "GET")), Some("prod")).await.unwrap()),
            2
        );
        assert_eq!(total(series(None, Some("staging")).await.unwrap()), 1);
    }
    drop_database(&events).await;
}

/// A few days of windows up to `now`: sparse ones on two routes, two status classes and
/// two environments, and dense ones over the last half hour.
fn days_of_windows(now: i64) -> Vec<MetricsIngest> {
    let mut batches = Vec::new();
    let end = now.div_euclid(10) * 10;
    let mut start = end - 4 * 86_400;
    let mut n = 0u64;
    while start < end {
        for (instance, environment) in [("i-1", Some("prod")), ("i-2", None)] {
            let windows = ["/a", "/b"]
                .iter()
                .flat_map(|route| {
                    [2u8, 5].map(|class| {
                        let values: Vec<u64> =
                            (0..1 + n % 5).map(|k| 100 + 37 * (n + k) % 9_000).collect();
                        window(start, route, class, histogram(&values))
                    })
                })
                .collect();
            batches.push(batch(instance, environment, windows));
            n += 1;
        }
        start += 37 * 60 + 10;
    }
    let mut dense = end - 1_800;
    while dense < end {
        batches.push(batch(
            "i-3",
            Some("prod"),
            vec![window(dense, "/a", 2, histogram(&[n % 700 + 1, 5_000]))],
        ));
        n += 1;
        dense += 10;
    }
    batches
}

#[tokio::test]
async fn range_reads_equal_the_sqlite_backend() {
    let (_, events) = connected().await;
    let dir = TempDir::new().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    sqlite.ensure_default_project().await.unwrap();
    // Short retention so a three-day range is read from the day tier alone.
    let retention = RetentionConfig {
        raw_secs: 86_400,
        minute_secs: 36 * 3_600,
        hour_secs: 3 * 86_400,
        ..RetentionConfig::default()
    };
    let sqlite = sqlite.with_retention(retention.clone());
    let events = events.with_retention(retention);

    let now = crate::query::unix_now();
    let batches = days_of_windows(now);
    let ingests: Vec<Ingest> = batches.iter().cloned().map(Ingest::Metrics).collect();
    sqlite.write(&ingests).await.unwrap();
    let refs: Vec<&MetricsIngest> = batches.iter().collect();
    events.insert_windows(&refs).await.unwrap();

    let day = 86_400;
    let today = now.div_euclid(day) * day;
    let ranges = [
        (Tier::Raw, now - 1_200, now + 60),
        (Tier::Minute, now - 5 * 3_600 - 7, now),
        (Tier::Hour, now - 30 * 3_600 - 1, now),
        // Whole days inside: read from the day tier, the edges from the hour tier.
        (Tier::Hour, today - 2 * day + 3_600, now),
        // Past the hour tier's retention.
        (Tier::Day, now - 3 * day - 5, now),
    ];
    let mut compared = 0;
    for (what, since, until) in ranges {
        assert_eq!(
            crate::insight::tier_for(TimeRange { since, until }, now, &events.retention),
            what
        );
        let range = TimeRange { since, until };
        for environment in [None, Some("prod"), Some(""), Some("nope")] {
            let ours = events
                .route_aggregates(1, range, environment)
                .await
                .unwrap();
            let theirs = sqlite
                .route_aggregates(1, range, environment)
                .await
                .unwrap();
            assert_eq!(ours, theirs, "routes, {what:?}, {environment:?}");
            compared += ours.classes.len();

            for step_secs in [60, 600, 3_600, day] {
                for origin in [since, aligned_since(Tier::Hour, since) - 7 * 60] {
                    let steps = Steps { origin, step_secs };
                    for route in [None, Some(("/a", "GET"))] {
                        let ours = events
                            .series_aggregates(1, range, steps, route, environment)
                            .await
                            .unwrap();
                        let theirs = sqlite
                            .series_aggregates(1, range, steps, route, environment)
                            .await
                            .unwrap();
                        assert_eq!(
                            ours, theirs,
                            "series, {what:?}, {environment:?}, {steps:?}, {route:?}"
                        );
                        compared += ours.classes.len();
                    }
                }
            }
        }
    }
    assert!(compared > 1_000, "compared only {compared} rows");
    drop_database(&events).await;
}

// ---- retention ----

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
             WHERE database = currentDatabase() AND active AND table LIKE '%windows%'
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
async fn prune_drops_only_days_past_their_tiers_retention() {
    let (_, events) = connected().await;
    const D: i64 = 20_000; // a day number
    let day = |d: i64| d * DAY;
    // Windows at the first and last minute of day D, and in the middle of day D + 3.
    events
        .insert_windows(&[&batch(
            "i-1",
            None,
            vec![
                window(day(D), "/r", 2, histogram(&[1])),
                window(day(D + 1) - 10, "/r", 2, histogram(&[2])),
                window(day(D + 3) + 43_200, "/r", 2, histogram(&[3])),
            ],
        )])
        .await
        .unwrap();
    let record = record(1, day(D) as f64, None);
    events
        .insert_events(&[EventRow {
            project_id: 1,
            issue_id: 1,
            received_at: day(D) as f64,
            event: &record,
        }])
        .await
        .unwrap();
    let retention = RetentionConfig {
        raw_secs: DAY,
        minute_secs: 2 * DAY,
        hour_secs: 3 * DAY,
        day_secs: 10 * DAY,
        ..RetentionConfig::default()
    };
    // Raw keeps one day: at D + 2, day D ended exactly one day ago (gone); D + 3 stays.
    // Minute keeps two days: day D ended one day ago, still in.
    let now = day(D + 2);
    // Before: every table holds days D and D + 3.
    let before = partitions(&events).await;
    assert_eq!(before.len(), 16, "{before:?}");
    let dropped = events.prune(&retention, now).await.unwrap();
    // Raw route and project tables each lose day D: two windows there.
    assert_eq!(dropped, 4);
    let after = partitions(&events).await;
    let gone: Vec<_> = before.iter().filter(|p| !after.contains(p)).collect();
    assert_eq!(
        gone,
        [
            &("project_windows".to_owned(), D),
            &("route_windows".to_owned(), D)
        ]
    );
    // Nothing more to drop at the same time; the other tiers still answer for day D.
    assert_eq!(events.prune(&retention, now).await.unwrap(), 0);
    let range = TimeRange {
        since: day(D),
        until: day(D + 1),
    };
    let count = |a: Aggregates<(String, String)>| a.classes.iter().map(|c| c.count).sum::<u64>();
    assert_eq!(
        count(
            events
                .route_aggregates_in(Tier::Raw, 1, range, None)
                .await
                .unwrap()
        ),
        0
    );
    assert_eq!(
        count(
            events
                .route_aggregates_in(Tier::Minute, 1, range, None)
                .await
                .unwrap()
        ),
        2
    );
    // Just before a day has wholly aged out it stays; at the moment it has, it goes.
    assert_eq!(events.prune(&retention, day(D + 3) - 1).await.unwrap(), 0);
    // Minute keeps two days: day D's two minute slots, in the route and project tables.
    assert_eq!(events.prune(&retention, day(D + 3)).await.unwrap(), 4);
    // Far later only the events remain (they are kept, as in SQLite).
    events.prune(&retention, day(D + 100)).await.unwrap();
    assert!(partitions(&events).await.is_empty());
    assert!(events.event(1, &record.event_id).await.unwrap().is_some());
    drop_database(&events).await;
}
