//! The storage conformance suite: every test here runs against every backend through
//! the [`Store`] trait alone — the embedded SQLite store, and ClickHouse + PostgreSQL
//! (real servers: `eval "$(scripts/services start)"` exports their URLs, and
//! `scripts/test` does it for the whole suite). A behaviour the API relies on belongs
//! here, so both backends answer it the same way; what only one backend has (SQLite's
//! pragmas and old-schema migrations, ClickHouse's partitions) is tested beside it.

use std::sync::Arc;

use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow};
use tempfile::TempDir;

use super::{
    EnvelopeIngest, EventRecord, Ingest, Issue, IssueFilter, IssueSort, IssueStatus, LogFilter,
    MetricsIngest, NewLogLine, Steps, Store, StoredPayload,
};
use crate::TimeRange;

/// A store under test, with whatever keeps it alive.
pub(super) struct Backend {
    pub store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Backend {
    /// A fresh SQLite file in a temp dir.
    pub async fn sqlite() -> Backend {
        let dir = TempDir::new().expect("temp dir");
        let store = super::SqliteStore::open(&dir.path().join("test.db"))
            .await
            .expect("open sqlite");
        store.ensure_default_project().await.expect("project");
        Backend {
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    /// Fresh databases on the ClickHouse and PostgreSQL servers the environment names.
    pub async fn scaled() -> Backend {
        let (events, meta) = tokio::join!(
            super::clickhouse::testing::fresh_database(),
            super::postgres::testing::fresh_database()
        );
        let store = super::ScaledStore::connect(&events, &meta)
            .await
            .expect("connect clickhouse + postgres");
        store.ensure_default_project().await.expect("project");
        Backend {
            store: Arc::new(store),
            _dir: None,
        }
    }
}

/// Runs each named test function against every backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let backend = super::Backend::sqlite().await;
                    super::$test(&*backend.store).await;
                }
            )*
        }
        mod scaled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = super::Backend::scaled().await;
                    super::$test(&*backend.store).await;
                }
            )*
        }
    };
}

conformance!(
    the_default_project_is_created_once,
    windows_add_up_across_instances_in_every_read,
    one_commit_of_many_events_counts_each_exactly,
    a_resolved_issue_regresses_within_one_commit,
    an_issue_of_duplicates_only_is_not_created,
    an_issue_follows_its_newest_stored_event,
    events_page_newest_first_and_read_back_whole,
    issue_lists_filter_sort_and_page,
    environments_come_from_agents_and_events,
    log_lines_are_searched_newest_first_with_every_filter,
);

// ---- fixtures -----------------------------------------------------------------------

/// An event of issue `hash` (one character, repeated to a 32-character hash), seen at
/// `timestamp`.
pub(super) fn record(
    n: usize,
    hash: &str,
    timestamp: f64,
    user: Option<&str>,
    release: Option<&str>,
    environment: Option<&str>,
) -> EventRecord {
    // As ingest builds them: the environment and release are tags too.
    let mut tags = vec![("worker".to_owned(), format!("w{}", n % 3))];
    if let Some(release) = release {
        tags.push(("release".to_owned(), release.to_owned()));
    }
    if let Some(environment) = environment {
        tags.push(("environment".to_owned(), environment.to_owned()));
    }
    EventRecord {
        event_id: format!("{n:032x}"),
        timestamp,
        level: "error",
        title: format!("boom {hash}"),
        culprit: "f in m".to_owned(),
        platform: "python".to_owned(),
        environment: environment.map(str::to_owned),
        release: release.map(str::to_owned),
        user: user.map(str::to_owned),
        tags_json: serde_json::to_string(&tags).expect("tags"),
        tags,
        hash: hash.repeat(32),
        grouped_by: "message",
        grouping_values: "[\"boom\"]".to_owned(),
        payload: StoredPayload::compress(&format!("{{\"n\":{n}}}")),
    }
}

/// The events as one envelope of project 1.
pub(super) fn envelope(events: Vec<EventRecord>) -> Ingest {
    Ingest::Envelope(EnvelopeIngest {
        project_id: 1,
        received_at: 2_000.0,
        items: vec![("event", events.len() as u64)],
        events,
    })
}

async fn issue_of(store: &dyn Store, hash: &str) -> Issue {
    let filter = IssueFilter {
        limit: 100,
        ..IssueFilter::default()
    };
    store
        .issues(1, &filter)
        .await
        .expect("issues")
        .into_iter()
        .find(|i| i.hash == hash.repeat(32))
        .expect("issue stored")
}

fn histogram(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

/// One agent's batch of one route window.
pub(super) fn window(
    instance: &str,
    environment: Option<&str>,
    start: i64,
    route: &str,
    status_class: u8,
    latency: &[u64],
) -> Ingest {
    Ingest::Metrics(MetricsIngest {
        project_id: 1,
        received_at: start + 10,
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
            windows: vec![RouteWindow {
                start,
                window_secs: 10,
                route: route.into(),
                method: "GET".into(),
                status_class,
                latency: histogram(latency),
            }],
        },
    })
}

/// The histogram a read's buckets of one key describe.
fn read_histogram<K: PartialEq>(buckets: &[(K, i32, u64)], key: &K) -> Histogram {
    let mut h = Histogram::new();
    for (k, bucket, count) in buckets {
        if k == key {
            *h.buckets.entry(*bucket).or_default() += count;
        }
    }
    h
}

/// Values a histogram holds.
fn total(h: &Histogram) -> u64 {
    h.buckets.values().sum()
}

// ---- projects -------------------------------------------------------------------------

async fn the_default_project_is_created_once(store: &dyn Store) {
    store.ensure_default_project().await.expect("again");
    let projects = store.projects().await.expect("projects");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].name, "default");
    assert_eq!(projects[0].public_key.len(), 32);
    assert_eq!(
        store
            .project(projects[0].id)
            .await
            .expect("project")
            .as_ref(),
        Some(&projects[0])
    );
    assert_eq!(store.project(u64::MAX / 4).await.expect("missing"), None);
}

// ---- metric windows -----------------------------------------------------------------

async fn windows_add_up_across_instances_in_every_read(store: &dyn Store) {
    // Recent, so every tier a range may pick still holds them.
    let now = crate::query::unix_now();
    let start = (now - 600) / 60 * 60;
    let a = [1_000, 2_000, 3_000, 250_000];
    let b = [1_500, 2_500];
    let c = [9_000];
    store
        .write(&[
            window("i-1", Some("prod"), start, "/a", 2, &a),
            window("i-2", Some("prod"), start, "/a", 2, &b),
            window("i-2", Some("staging"), start + 10, "/a", 5, &c),
            window("i-1", Some("prod"), start + 70, "/b", 2, &[4_000]),
        ])
        .await
        .expect("write");

    let range = TimeRange {
        since: start - 60,
        until: start + 120,
    };
    let routes = store
        .route_aggregates(1, range, None)
        .await
        .expect("routes");
    let key = ("/a".to_owned(), "GET".to_owned());
    let ok = routes
        .classes
        .iter()
        .find(|c| c.key == key && c.status_class == 2)
        .expect("/a 2xx");
    assert_eq!(ok.count, 6);
    assert_eq!((ok.min_us, ok.max_us), (1_000, 250_000));
    let errors = routes
        .classes
        .iter()
        .find(|c| c.key == key && c.status_class == 5)
        .expect("/a 5xx");
    assert_eq!(errors.count, 1);
    // Buckets add up across instances and status classes: the merged histogram is the
    // one of every value recorded at once.
    let all = histogram(&[a.as_slice(), &b, &c].concat());
    let merged = read_histogram(&routes.buckets, &key);
    assert_eq!(total(&merged), total(&all));
    let quantile = |h: &Histogram, q: f64| {
        sightline_protocol::quantile_of(h.buckets.iter().map(|(b, c)| (*b, *c)), q)
    };
    for q in [0.5, 0.9, 0.99] {
        assert_eq!(quantile(&merged, q), quantile(&all, q), "q{q}");
        assert!(quantile(&merged, q).is_some());
    }

    // One environment only.
    let staging = store
        .route_aggregates(1, range, Some("staging"))
        .await
        .expect("staging");
    assert_eq!(staging.classes.len(), 1);
    assert_eq!(staging.classes[0].count, 1);
    assert_eq!(staging.classes[0].status_class, 5);

    // A series of minute steps over every route, and over one route.
    let steps = Steps {
        origin: start - 60,
        step_secs: 60,
    };
    let series = store
        .series_aggregates(1, range, steps, None, None)
        .await
        .expect("series");
    let count_at = |series: &super::Aggregates<i64>, step: i64| -> u64 {
        series
            .classes
            .iter()
            .filter(|c| c.key == step)
            .map(|c| c.count)
            .sum()
    };
    assert_eq!(count_at(&series, start), 7);
    assert_eq!(count_at(&series, start + 60), 1);
    assert_eq!(count_at(&series, start - 60), 0);
    let only_b = store
        .series_aggregates(1, range, steps, Some(("/b", "GET")), Some("prod"))
        .await
        .expect("series of /b");
    assert_eq!(count_at(&only_b, start), 0);
    assert_eq!(count_at(&only_b, start + 60), 1);
    assert_eq!(total(&read_histogram(&only_b.buckets, &(start + 60))), 1);
}

// ---- issues and events --------------------------------------------------------------

async fn one_commit_of_many_events_counts_each_exactly(store: &dyn Store) {
    // 300 events of issue "a" and 7 of issue "b" in one commit, spread over several
    // envelopes and insert statements, with repeated users and an in-commit duplicate.
    let mut a: Vec<EventRecord> = (0..300)
        .map(|n| {
            let user = format!("id:{}", n % 40);
            let release = (n % 2 == 0).then_some("r1");
            record(
                n,
                "a",
                1_000.0 + n as f64,
                Some(&user),
                release,
                Some("prod"),
            )
        })
        .collect();
    // Newest by commit order has no release: the last one seen stays.
    a.push(record(300, "a", 900.0, None, None, None));
    let duplicate = record(7, "a", 5_000.0, Some("id:other"), None, None);
    let b: Vec<EventRecord> = (1_000..1_007)
        .map(|n| record(n, "b", 1_500.0, None, Some("r2"), Some("staging")))
        .collect();
    let (first, rest) = a.split_at(150);
    let summary = store
        .write(&[
            envelope(first.to_vec()),
            envelope(b),
            envelope(rest.to_vec()),
            envelope(vec![duplicate]),
        ])
        .await
        .expect("write");
    assert_eq!((summary.events, summary.duplicate_events), (308, 1));

    let issue = issue_of(store, "a").await;
    assert_eq!(issue.times_seen, 301);
    assert_eq!(issue.user_count, 40);
    assert_eq!((issue.first_seen, issue.last_seen), (900.0, 1_299.0));
    assert_eq!(issue.last_release.as_deref(), Some("r1"));
    assert_eq!(issue.last_environment.as_deref(), Some("prod"));
    assert_eq!(issue.substatus.as_deref(), Some("new"));
    let tags = store.issue_tags(issue.id, 10).await.expect("tags");
    let count = |key: &str, value: &str| {
        tags.iter()
            .find(|t| t.key == key && t.value == value)
            .map(|t| t.count)
    };
    assert_eq!(count("worker", "w0"), Some(101));
    assert_eq!(count("worker", "w1"), Some(100));
    assert_eq!(count("worker", "w2"), Some(100));
    assert_eq!(count("release", "r1"), Some(150));

    let issue = issue_of(store, "b").await;
    assert_eq!((issue.times_seen, issue.user_count), (7, 0));
    assert_eq!(issue.last_release.as_deref(), Some("r2"));

    // A second commit adds to the first: only new users and new events count.
    store
        .write(&[envelope(vec![
            record(5_000, "a", 2_000.0, Some("id:1"), None, None),
            record(5_001, "a", 2_001.0, Some("id:new"), None, Some("dev")),
            record(0, "a", 3_000.0, Some("id:dup"), None, None),
        ])])
        .await
        .expect("second write");
    let issue = issue_of(store, "a").await;
    assert_eq!((issue.times_seen, issue.user_count), (303, 41));
    assert_eq!(issue.last_seen, 2_001.0);
    assert_eq!(issue.last_environment.as_deref(), Some("dev"));
    assert_eq!(issue.substatus.as_deref(), Some("new"));

    let counts = store.item_counts(1, "1970-01-01").await.expect("counts");
    let events: u64 = counts
        .iter()
        .filter(|c| c.item_type == "event")
        .map(|c| c.count)
        .sum();
    assert_eq!(events, 312, "every event item received, duplicates too");
}

async fn a_resolved_issue_regresses_within_one_commit(store: &dyn Store) {
    store
        .write(&[envelope(vec![record(1, "a", 1_000.0, None, None, None)])])
        .await
        .expect("write");
    let issue = issue_of(store, "a").await;
    store
        .set_issue_status(None, &[issue.id], IssueStatus::Resolved, 1_500.0)
        .await
        .expect("resolve");
    assert_eq!(issue_of(store, "a").await.status, IssueStatus::Resolved);

    // Only duplicates: nothing recurred, it stays resolved.
    store
        .write(&[envelope(vec![record(1, "a", 1_600.0, None, None, None)])])
        .await
        .expect("duplicate");
    assert_eq!(issue_of(store, "a").await.status, IssueStatus::Resolved);

    let events: Vec<_> = (2..50)
        .map(|n| record(n, "a", 2_000.0, Some("id:9"), None, None))
        .collect();
    store.write(&[envelope(events)]).await.expect("recur");
    let issue = issue_of(store, "a").await;
    assert_eq!(issue.status, IssueStatus::Unresolved);
    assert_eq!(issue.substatus.as_deref(), Some("regressed"));
    assert_eq!((issue.times_seen, issue.user_count), (49, 1));

    // Ignored stays ignored whatever arrives; a status change names only this project's
    // issues when a project is given.
    assert_eq!(
        store
            .set_issue_status(Some(2), &[issue.id], IssueStatus::Ignored, 2_500.0)
            .await
            .expect("other project"),
        Vec::<u64>::new()
    );
    assert_eq!(
        store
            .set_issue_status(Some(1), &[issue.id], IssueStatus::Ignored, 2_500.0)
            .await
            .expect("ignore"),
        vec![issue.id]
    );
    store
        .write(&[envelope(vec![record(60, "a", 3_000.0, None, None, None)])])
        .await
        .expect("more");
    let issue = issue_of(store, "a").await;
    assert_eq!(issue.status, IssueStatus::Ignored);
    assert_eq!(issue.times_seen, 50);
}

async fn an_issue_of_duplicates_only_is_not_created(store: &dyn Store) {
    store
        .write(&[envelope(vec![record(1, "a", 1_000.0, None, None, None)])])
        .await
        .expect("write");
    // Same event id, different content (so another hash): a duplicate, no issue.
    store
        .write(&[envelope(vec![record(1, "b", 1_000.0, None, None, None)])])
        .await
        .expect("duplicate");
    let filter = IssueFilter {
        limit: 100,
        ..IssueFilter::default()
    };
    let issues = store.issues(1, &filter).await.expect("issues");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].times_seen, 1);
    let events = store
        .issue_events(issues[0].id, 10, None, false)
        .await
        .expect("events");
    assert_eq!(events.len(), 1, "a duplicate is listed once");
}

/// An issue's title, culprit and level follow its newest stored event. An SDK's retry
/// carries the same event id and may differ in anything else: it is not stored, so it
/// neither counts nor renames its issue, alone in a commit or beside new events.
async fn an_issue_follows_its_newest_stored_event(store: &dyn Store) {
    let titled = |n, hash, timestamp, title: &str, level| {
        let mut e = record(n, hash, timestamp, None, None, None);
        e.title = title.to_owned();
        e.culprit = format!("{title} in m");
        e.level = level;
        e
    };
    store
        .write(&[envelope(vec![titled(1, "a", 1_000.0, "first", "error")])])
        .await
        .expect("write");
    let issue = issue_of(store, "a").await;
    assert_eq!((issue.title.as_str(), issue.times_seen), ("first", 1));

    // A later commit: its newest event names the issue, an older one in it does not.
    store
        .write(&[envelope(vec![
            titled(3, "a", 1_003.0, "newest", "warning"),
            titled(2, "a", 1_002.0, "older", "error"),
        ])])
        .await
        .expect("two more");
    let before = issue_of(store, "a").await;
    assert_eq!(
        (
            before.title.as_str(),
            before.culprit.as_str(),
            before.level.as_str()
        ),
        ("newest", "newest in m", "warning")
    );
    assert_eq!((before.times_seen, before.last_seen), (3, 1_003.0));

    // The same event id again, newer and with other content: nothing changes.
    let mut retry = titled(3, "a", 5_000.0, "retried", "fatal");
    retry.user = Some("id:late".to_owned());
    retry.release = Some("r9".to_owned());
    retry.environment = Some("prod".to_owned());
    store
        .write(&[envelope(vec![retry.clone()])])
        .await
        .expect("duplicate only");
    assert_eq!(issue_of(store, "a").await, before);

    // Beside a new event, a newer retry still describes nothing.
    let mut newer_retry = retry;
    newer_retry.timestamp = 9_000.0;
    store
        .write(&[envelope(vec![
            titled(4, "a", 2_000.0, "second", "error"),
            newer_retry,
        ])])
        .await
        .expect("new and duplicate");
    let after = issue_of(store, "a").await;
    assert_eq!(after.title, "second");
    assert_eq!(
        (after.culprit.as_str(), after.level.as_str()),
        ("second in m", "error")
    );
    assert_eq!((after.times_seen, after.user_count), (4, 0));
    assert_eq!((after.first_seen, after.last_seen), (1_000.0, 2_000.0));
    assert_eq!(after.last_release, None);

    // A new issue beside a duplicate that now hashes to it (an SDK retry whose content
    // changed): the issue is the new event's alone, its first seen included.
    store
        .write(&[envelope(vec![
            titled(1, "c", 500.0, "old content", "error"),
            titled(5, "c", 3_000.0, "fresh", "error"),
        ])])
        .await
        .expect("new issue and duplicate");
    let c = issue_of(store, "c").await;
    assert_eq!(c.title, "fresh");
    assert_eq!(c.times_seen, 1);
    assert_eq!((c.first_seen, c.last_seen), (3_000.0, 3_000.0));
}

async fn events_page_newest_first_and_read_back_whole(store: &dyn Store) {
    let events: Vec<_> = (1..=25)
        .map(|n| record(n, "a", 1_000.0 + n as f64, None, Some("r1"), Some("prod")))
        .collect();
    store.write(&[envelope(events)]).await.expect("write");
    // A retried commit (same event ids again) lists nothing twice.
    store
        .write(&[envelope(vec![record(3, "a", 1_003.0, None, None, None)])])
        .await
        .expect("retry");
    let issue = issue_of(store, "a").await;

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .issue_events(issue.id, 10, cursor, false)
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        assert!(
            page.iter()
                .all(|e| e.payload.is_none() && e.issue_id == issue.id)
        );
        let last = page.last().expect("non-empty");
        cursor = Some(super::Cursor {
            value: last.timestamp,
            id: last.id,
        });
        seen.extend(page.into_iter().map(|e| e.event_id));
    }
    let expected: Vec<String> = (1..=25).rev().map(|n| format!("{n:032x}")).collect();
    assert_eq!(seen, expected);

    let event = store
        .event(1, &format!("{:032x}", 7))
        .await
        .expect("event")
        .expect("stored");
    assert_eq!(event.payload, Some(serde_json::json!({ "n": 7 })));
    assert_eq!(event.issue_id, issue.id);
    assert_eq!(event.timestamp, 1_007.0);
    assert_eq!(event.release.as_deref(), Some("r1"));
    assert_eq!(event.environment.as_deref(), Some("prod"));
    assert_eq!(event.hash, "a".repeat(32));
    assert!(event.tags.contains(&("worker".to_owned(), "w1".to_owned())));
    assert_eq!(
        store.event(2, &format!("{:032x}", 7)).await.expect("other"),
        None
    );
    assert_eq!(
        store.event(1, &"f".repeat(32)).await.expect("unknown"),
        None
    );
}

async fn issue_lists_filter_sort_and_page(store: &dyn Store) {
    let mut events = Vec::new();
    // Issue "a": 5 events, oldest, in prod; "b": 2 events, in release r2, staging; "c":
    // 1 event, newest, in prod.
    for n in 0..5 {
        events.push(record(
            n,
            "a",
            1_000.0 + n as f64,
            None,
            Some("r1"),
            Some("prod"),
        ));
    }
    for n in 10..12 {
        events.push(record(n, "b", 2_000.0, None, Some("r2"), Some("staging")));
    }
    events.push(record(20, "c", 3_000.0, None, None, Some("prod")));
    store.write(&[envelope(events)]).await.expect("write");
    let list = |filter: IssueFilter| async move {
        store
            .issues(1, &filter)
            .await
            .expect("issues")
            .into_iter()
            .map(|i| i.hash[..1].to_owned())
            .collect::<Vec<_>>()
    };
    let all = IssueFilter {
        limit: 100,
        ..IssueFilter::default()
    };
    assert_eq!(list(all.clone()).await, ["c", "b", "a"]);
    assert_eq!(
        list(IssueFilter {
            sort: IssueSort::Count,
            ..all.clone()
        })
        .await,
        ["a", "b", "c"]
    );
    assert_eq!(
        list(IssueFilter {
            sort: IssueSort::FirstSeen,
            ..all.clone()
        })
        .await,
        ["c", "b", "a"]
    );
    assert_eq!(
        list(IssueFilter {
            release: Some("r2".into()),
            ..all.clone()
        })
        .await,
        ["b"]
    );
    assert_eq!(
        list(IssueFilter {
            environment: Some("prod".into()),
            ..all.clone()
        })
        .await,
        ["c", "a"]
    );
    assert_eq!(
        list(IssueFilter {
            text: Some("BOOM B".into()),
            ..all.clone()
        })
        .await,
        ["b"]
    );
    // LIKE wildcards in the text are literal.
    assert!(
        list(IssueFilter {
            text: Some("boom_%".into()),
            ..all.clone()
        })
        .await
        .is_empty()
    );
    // Keyset paging: two pages of two and one, no row twice.
    let first = store
        .issues(
            1,
            &IssueFilter {
                limit: 2,
                ..all.clone()
            },
        )
        .await
        .expect("first page");
    assert_eq!(first.len(), 2);
    let last = &first[1];
    let rest = list(IssueFilter {
        limit: 2,
        cursor: Some(super::Cursor {
            value: last.sort_value(IssueSort::LastSeen),
            id: last.id,
        }),
        ..all.clone()
    })
    .await;
    assert_eq!(rest, ["a"]);
    let a = issue_of(store, "a").await;
    store
        .set_issue_status(None, &[a.id], IssueStatus::Resolved, 4_000.0)
        .await
        .expect("resolve");
    assert_eq!(
        list(IssueFilter {
            status: Some(IssueStatus::Unresolved),
            ..all.clone()
        })
        .await,
        ["c", "b"]
    );
    assert_eq!(
        list(IssueFilter {
            status: Some(IssueStatus::Resolved),
            ..all
        })
        .await,
        ["a"]
    );
}

async fn environments_come_from_agents_and_events(store: &dyn Store) {
    let now = crate::query::unix_now();
    store
        .write(&[
            window("i-1", Some("canary"), now / 10 * 10, "/a", 2, &[1_000]),
            window("i-2", None, now / 10 * 10, "/a", 2, &[1_000]),
            envelope(vec![
                record(1, "a", 1_000.0, None, None, Some("prod")),
                record(2, "a", 1_000.0, None, None, None),
            ]),
        ])
        .await
        .expect("write");
    assert_eq!(
        store.environments(1).await.expect("environments"),
        ["canary", "prod"]
    );
    assert!(store.environments(2).await.expect("none").is_empty());
}

// ---- log lines ------------------------------------------------------------------------

/// A log line of project 1 that arrived at `received_ms`.
fn log_line(
    received_ms: i64,
    timestamp_ms: Option<i64>,
    severity: Option<u8>,
    host: Option<&str>,
    app: Option<&str>,
    message: &str,
) -> NewLogLine {
    NewLogLine {
        project_id: 1,
        received_ms,
        timestamp_ms,
        facility: severity.map(|_| 3),
        severity,
        host: host.map(str::to_owned),
        app: app.map(str::to_owned),
        procid: Some("42".to_owned()),
        msgid: None,
        message: message.to_owned(),
        structured_data: (message == "a").then(|| r#"{"x@1":{"k":"v"}}"#.to_owned()),
        format: "rfc5424",
        transport: "udp",
        truncated: message.starts_with('e'),
    }
}

async fn log_lines_are_searched_newest_first_with_every_filter(store: &dyn Store) {
    const T: i64 = 1_700_000_000_000;
    // Two listener batches in one commit with an event between them, then one more.
    let first = vec![
        log_line(T + 10, Some(T), Some(3), Some("web1"), Some("nginx"), "a"),
        // Same sender time as `a`, later arrival: after it, newest first before it.
        log_line(
            T + 11,
            Some(T),
            Some(6),
            Some("web2"),
            Some("nginx"),
            "b 100% FULL",
        ),
        log_line(T + 11, None, None, None, None, "c user_id=1"),
    ];
    let second = vec![log_line(
        T + 20,
        Some(T + 5),
        Some(0),
        Some("web1"),
        Some("cron"),
        "d disk 100x full",
    )];
    let summary = store
        .write(&[
            Ingest::Logs(first),
            envelope(vec![record(1, "a", 1_000.0, None, None, None)]),
            Ingest::Logs(second),
        ])
        .await
        .expect("write");
    assert_eq!((summary.log_lines, summary.events), (4, 1));
    store
        .write(&[Ingest::Logs(vec![log_line(
            T + 30,
            Some(T - 1_000),
            Some(7),
            Some("web2"),
            Some("nginx"),
            "e userXid=2",
        )])])
        .await
        .expect("write");

    let all = LogFilter {
        limit: 10,
        ..LogFilter::default()
    };
    let search = |filter: LogFilter| async move {
        store
            .logs(1, &filter)
            .await
            .expect("search")
            .into_iter()
            .map(|l| l.message.chars().next().unwrap_or(' '))
            .collect::<String>()
    };
    // Newest first by the sender's time, else arrival; ties by arrival, newest first.
    assert_eq!(search(all.clone()).await, "cdbae");
    let lines = store.logs(1, &all).await.expect("search");
    let a = &lines[3];
    assert_eq!(
        (a.timestamp_ms, a.received_ms, a.severity, a.severity_name),
        (T, T + 10, Some(3), Some("err"))
    );
    assert_eq!(a.timestamp, "2023-11-14T22:13:20.000Z");
    assert_eq!(
        a.structured_data,
        Some(serde_json::json!({"x@1": {"k": "v"}}))
    );
    assert_eq!(
        (a.facility, a.procid.as_deref(), a.msgid.as_deref()),
        (Some(3), Some("42"), None)
    );
    assert_eq!(
        (a.format.as_str(), a.transport.as_str()),
        ("rfc5424", "udp")
    );
    assert!(!a.truncated && lines[4].truncated);
    let c = &lines[0];
    assert_eq!(
        (c.timestamp_ms, c.severity, c.host.as_deref()),
        (T + 11, None, None)
    );
    // Ids increase with arrival.
    let id = |m: char| {
        lines
            .iter()
            .find(|l| l.message.starts_with(m))
            .expect("line")
            .id
    };
    assert!(id('a') < id('b') && id('b') < id('c') && id('c') < id('d') && id('d') < id('e'));

    let with = |f: fn(&mut LogFilter)| {
        let mut filter = all.clone();
        f(&mut filter);
        search(filter)
    };
    // Text: a substring, ASCII case-insensitive, `%` and `_` literal.
    assert_eq!(with(|f| f.text = Some("100% full".into())).await, "b");
    assert_eq!(with(|f| f.text = Some("FULL".into())).await, "db");
    assert_eq!(with(|f| f.text = Some("user_id".into())).await, "c");
    assert_eq!(with(|f| f.text = Some("_".into())).await, "c");
    // Severity: this or more severe; unknown severities never match.
    assert_eq!(with(|f| f.severity = Some(3)).await, "da");
    assert_eq!(with(|f| f.severity = Some(7)).await, "dbae");
    // Host and app: exact.
    assert_eq!(with(|f| f.host = Some("web1".into())).await, "da");
    assert_eq!(with(|f| f.host = Some("web".into())).await, "");
    assert_eq!(with(|f| f.app = Some("nginx".into())).await, "bae");
    assert_eq!(with(|f| f.app = Some("NGINX".into())).await, "");
    // Time: since inclusive, until exclusive.
    assert_eq!(with(|f| f.since_ms = Some(T + 5)).await, "cd");
    assert_eq!(with(|f| f.until_ms = Some(T + 5)).await, "bae");
    assert_eq!(
        with(|f| {
            f.since_ms = Some(T);
            f.until_ms = Some(T + 11);
        })
        .await,
        "dba"
    );
    // Everything at once, and limits that keep the newest.
    assert_eq!(
        with(|f| {
            f.text = Some("1".into());
            f.severity = Some(6);
            f.host = Some("web2".into());
            f.app = Some("nginx".into());
            f.since_ms = Some(T);
        })
        .await,
        "b"
    );
    assert_eq!(with(|f| f.limit = 2).await, "cd");
    assert_eq!(with(|f| f.limit = 1).await, "c");
    // Paging by `until` = the last line's time.
    assert_eq!(with(|f| f.until_ms = Some(T)).await, "e");
    // Other projects see none.
    assert!(store.logs(2, &all).await.expect("search").is_empty());

    // Retention: nothing past either bound is kept; nothing else goes.
    assert_eq!(store.prune_logs(100, 0).await.expect("prune"), 0);
    assert_eq!(search(all.clone()).await, "cdbae");
    assert_eq!(store.prune_logs(100, i64::MAX).await.expect("prune"), 5);
    assert_eq!(search(all).await, "");
}
