//! History benchmark: 30 days of aggregates for 20 routes × 10 instances in SQLite, then
//! every query the dashboard makes, over 15m, 1h, 24h, 7d and 30d, 30 times each; prints
//! p50/p95/max per query and range. A benchmark, not a test: the target (≤ 100 ms at p95)
//! is read off its output and recorded in BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p sightline-collector --bench history
//! # keep the seeded database and reuse it next time (topped up to the current hour):
//! SIGHTLINE_HISTORY_DIR=/tmp/sightline-history cargo bench -p sightline-collector --bench history
//! ```
//!
//! Seeding. The current hour is ingested through the collector's own ingest path
//! (`POST /api/1/metrics`, the bounded queue, the writer's group commit, which merges every
//! window into the raw, 1-minute, 1-hour and 1-day tiers): 360 ten-second windows, each
//! reported by 10 instances. The rows that leaves are then copied back in time with SQL, 24
//! hours for the raw tier and exemplars, 7 days for the 1-minute tier and 30 days for the
//! 1-hour tier — what ingest plus retention would have left after 30 days of the same hour
//! repeating. Ingesting 30 days through the writer would take hours; the copies have the
//! same keys, shapes and histogram blobs as ingested rows because they are ingested rows.
//! The day tier is then rebuilt from the hours by the schema's own migration (version 8;
//! the per-project day rows as version 11 builds them) and each day's histograms merged
//! into one blob, as the writer would have stored them.
//!
//! Traffic model: every route serves 5 requests a second in all (50 per 10-second window,
//! spread over the instances), log-normal latency around a route-specific median, 1 % 5xx
//! and 4 % 4xx; 2 statement shapes per route plus one shared by all; 2 routes are N+1;
//! one heap sample per instance per second; about one exemplar per instance per 20 s.
//! The route tables have no instance column, so each instance's batch carries the full
//! traffic of 2 of the 20 routes: the stored rows are those of 10 instances each reporting
//! every route, for a tenth of the statements. Heap samples and exemplars are per instance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sightline_collector::{Collector, Config, RetentionConfig};
use sightline_protocol::{
    AgentInfo, EncodedSum, Entry, EntryKind, Exemplar, HeapSample, Histogram, InsightBatch,
    MetricBatch, NPlusOne, QueryWindow, RouteInsight, RouteWindow, encode_buckets, reason,
};
use sqlx::Row;
use tower::ServiceExt;

mod common;
use common::get;

const ROUTES: usize = 20;
// Each instance's batch carries two routes' traffic (see above).
const _: () = assert!(ROUTES == 2 * INSTANCES);
const INSTANCES: usize = 10;
const WINDOW_SECS: i64 = 10;
/// Requests per route per 10-second window, all instances together.
const REQUESTS_PER_WINDOW: usize = 50;
/// Routes whose every request repeats one statement (N+1).
const N_PLUS_ONE_ROUTES: [usize; 2] = [3, 7];
const RUNS: usize = 30;
const HOUR: i64 = 3_600;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Log-normal around `median` with log-spread `sigma`.
    fn lognormal(&mut self, median: f64, sigma: f64) -> u64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (median * (sigma * z).exp()).max(1.0) as u64
    }
}

fn route(r: usize) -> String {
    format!("/api/resource{r}/{{id}}")
}

fn statement(r: usize, s: usize) -> (u64, String) {
    let sql = format!("SELECT id, name, body FROM table_{r}_{s} WHERE owner_id = ? LIMIT ?");
    (fnv(&sql), sql)
}

fn shared_statement() -> (u64, String) {
    let sql = "SELECT user_id, expires_at FROM sessions WHERE token = ?".to_owned();
    (fnv(&sql), sql)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Instance `instance`'s batch for the window starting at `start`: the whole traffic of
/// its two routes, its heap samples and exemplars.
fn batch(rng: &mut Rng, instance: usize, start: i64) -> MetricBatch {
    let mut windows = Vec::new();
    let mut insight = InsightBatch::default();
    let mut shared = QueryWindow {
        start,
        window_secs: WINDOW_SECS as u32,
        fingerprint: shared_statement().0,
        sql: shared_statement().1,
        latency: Histogram::new(),
        routes: Vec::new(),
    };
    for r in [2 * instance, 2 * instance + 1] {
        let median_us = 2_000.0 * (1.0 + r as f64 * 1.5);
        let n_plus_one = N_PLUS_ONE_ROUTES.contains(&r);
        let mut latency: BTreeMap<u8, Histogram> = BTreeMap::new();
        let mut ri = RouteInsight {
            start,
            window_secs: WINDOW_SECS as u32,
            route: route(r),
            method: "GET".into(),
            queries: Histogram::new(),
            query_us: Histogram::new(),
            allocs: Histogram::new(),
            alloc_bytes: Histogram::new(),
            n_plus_one: 0,
        };
        let mut own = [statement(r, 0), statement(r, 1)].map(|(fingerprint, sql)| QueryWindow {
            start,
            window_secs: WINDOW_SECS as u32,
            fingerprint,
            sql,
            latency: Histogram::new(),
            routes: Vec::new(),
        });
        let mut repeats = (0u64, 0u64, 0u64);
        for _ in 0..REQUESTS_PER_WINDOW {
            let roll = rng.below(100);
            let class = if roll == 0 {
                5
            } else if roll < 5 {
                4
            } else {
                2
            };
            latency
                .entry(class)
                .or_default()
                .record(rng.lognormal(median_us, 0.35));
            let mut request_queries = 0u64;
            let mut request_query_us = 0u64;
            let mut run = |h: &mut Histogram, rng: &mut Rng| {
                let us = rng.lognormal(300.0, 0.5);
                h.record(us);
                request_queries += 1;
                request_query_us += us;
            };
            run(&mut shared.latency, rng);
            run(&mut own[0].latency, rng);
            let second = if n_plus_one {
                20 + rng.below(10)
            } else {
                rng.below(4)
            };
            for _ in 0..second {
                run(&mut own[1].latency, rng);
            }
            if n_plus_one {
                repeats = (repeats.0 + 1, repeats.1 + second, repeats.2.max(second));
            }
            ri.queries.record(request_queries);
            ri.query_us.record(request_query_us);
            ri.allocs.record(rng.lognormal(400.0, 0.6));
            ri.alloc_bytes.record(rng.lognormal(60_000.0, 0.8));
        }
        ri.n_plus_one = repeats.0;
        shared
            .routes
            .push((route(r), "GET".into(), REQUESTS_PER_WINDOW as u64));
        for (i, q) in own.iter_mut().enumerate() {
            if !q.latency.is_empty() {
                q.routes.push((route(r), "GET".into(), q.latency.count));
            }
            if i == 1 && n_plus_one {
                insight.n_plus_one.push(NPlusOne {
                    start,
                    window_secs: WINDOW_SECS as u32,
                    route: route(r),
                    method: "GET".into(),
                    fingerprint: q.fingerprint,
                    requests: repeats.0,
                    total_repeats: repeats.1,
                    max_repeats: repeats.2,
                });
            }
        }
        insight
            .queries
            .extend(own.into_iter().filter(|q| !q.latency.is_empty()));
        insight.routes.push(ri);
        windows.extend(latency.into_iter().map(|(class, latency)| RouteWindow {
            start,
            window_secs: WINDOW_SECS as u32,
            route: route(r),
            method: "GET".into(),
            status_class: class,
            latency,
        }));
    }
    insight.queries.push(shared);
    let base = 40_000_000 + instance as u64 * 1_000_000;
    insight.heap = (0..WINDOW_SECS)
        .map(|s| {
            let live = base + rng.below(8_000_000);
            HeapSample {
                ts_ms: (start + s) * 1000,
                live_bytes: live,
                peak_bytes: live + rng.below(2_000_000),
            }
        })
        .collect();
    if rng.below(2) == 0 {
        let r = 2 * instance + rng.below(2) as usize;
        let (fingerprint, sql) = statement(r, 1);
        let entries: Vec<Entry> = (0..20u64)
            .map(|i| Entry {
                kind: if i % 5 == 0 {
                    EntryKind::Span
                } else {
                    EntryKind::Query
                },
                name: if i % 5 == 0 {
                    "render".into()
                } else {
                    sql.clone()
                },
                fingerprint: (i % 5 != 0).then_some(fingerprint),
                offset_us: i * 400,
                duration_us: 350,
            })
            .collect();
        insight.exemplars.push(Exemplar {
            route: route(r),
            method: "GET".into(),
            status: 200,
            start_ms: start * 1000 + rng.below(10_000) as i64,
            duration_us: 9_000,
            reasons: reason::SAMPLED,
            queries: 16,
            query_us: 5_600,
            allocs: 500,
            alloc_bytes: 70_000,
            dropped_entries: 0,
            entries,
        });
    }
    MetricBatch {
        agent: AgentInfo {
            service: "shop".into(),
            instance: format!("shop-{instance}"),
            sdk: "sightline-agent/bench".into(),
            environment: None,
            release: None,
        },
        sent_at_ms: (start + WINDOW_SECS) * 1000,
        dropped_windows: 0,
        windows,
        switch_evaluations: BTreeMap::new(),
        insight,
    }
}

/// Copies every row in `[from, from + HOUR)` of `table` (`time` column, `scale` units per
/// second) `count` times, shifted by `step` seconds each time (negative: back in time).
#[allow(clippy::too_many_arguments)]
async fn copy_hour(
    pool: &sqlx::SqlitePool,
    table: &str,
    time: &str,
    scale: i64,
    tier: Option<i64>,
    from: i64,
    count: i64,
    step: i64,
) -> u64 {
    let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?1)")
        .bind(table)
        .fetch_all(pool)
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|c| c != "id")
        .collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            if c == time {
                format!("{c} + k.n * {}", step * scale)
            } else {
                c.clone()
            }
        })
        .collect();
    // `project_id` and `tier` lead the primary keys: without them every copy would scan
    // the whole table.
    let tier_filter = tier.map_or(String::new(), |t| format!("AND tier = {t}"));
    let sql = format!(
        "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {count})
         INSERT INTO {table} ({}) SELECT {} FROM k CROSS JOIN {table}
         WHERE project_id = 1 {tier_filter} AND {time} >= {} AND {time} < {}
         ORDER BY k.n",
        columns.join(", "),
        select.join(", "),
        from * scale,
        (from + HOUR) * scale,
    );
    sqlx::query(&sql)
        .execute(pool)
        .await
        .expect("copy rows")
        .rows_affected()
}

/// Copies hour `from` of every table: `counts[tier]` times for the raw, 1-minute and
/// 1-hour tier (exemplars with the raw tier), `step` seconds apart.
async fn copy_tiers(dir: &Path, from: i64, counts: [i64; 3], step: i64) -> u64 {
    let started = Instant::now();
    // Seeding only: no fsync per statement, a large page cache for the index inserts.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("sightline.db"))
        .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
        .pragma("cache_size", "-262144");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open db");
    let mut copied = 0;
    for table in ["route_windows", "project_windows"] {
        for (suffix, count) in [("", counts[0]), ("_1m", counts[1]), ("_1h", counts[2])] {
            let table = format!("{table}{suffix}");
            copied += copy_hour(&pool, &table, "window_start", 1, None, from, count, step).await;
        }
    }
    for (table, time) in [
        ("insight_routes", "window_start"),
        ("query_windows", "window_start"),
        ("query_routes", "window_start"),
        ("n_plus_one", "window_start"),
        ("heap_samples", "ts"),
    ] {
        for (tier, count) in [(0, counts[0]), (1, counts[1]), (2, counts[2])] {
            copied += copy_hour(&pool, table, time, 1, Some(tier), from, count, step).await;
        }
        println!(
            "  {table}: {copied} rows so far, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    copied += copy_hour(
        &pool,
        "exemplars",
        "start_ms",
        1000,
        None,
        from,
        counts[0],
        step,
    )
    .await;
    rebuild_days(&pool).await;
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpoint");
    pool.close().await;
    copied
}

/// Rebuilds the day tier from the hour tier (see the header): migration 8's statements,
/// then every day row's concatenated blobs merged into one.
async fn rebuild_days(pool: &sqlx::SqlitePool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::raw_sql(
        "DROP TABLE route_windows_1d;
         DELETE FROM insight_routes WHERE tier = 3;
         DELETE FROM query_windows WHERE tier = 3;
         DELETE FROM query_routes WHERE tier = 3;
         DELETE FROM n_plus_one WHERE tier = 3;
         DELETE FROM heap_samples WHERE tier = 3;",
    )
    .execute(&mut *tx)
    .await
    .expect("drop days");
    sqlx::raw_sql(include_str!("../../../migrations/sqlite/0008_day_tier.sql"))
        .execute(&mut *tx)
        .await
        .expect("build days");
    // Migration 8 makes the day table as version 8 had it; version 10's rebuild of that
    // table gives it the environment key the readers filter on.
    let v10 = include_str!("../../../migrations/sqlite/0010_environments.sql");
    let start = v10
        .find("CREATE TABLE route_windows_1d_v10")
        .expect("version 10 rebuilds route_windows_1d");
    let end = v10[start..]
        .find("RENAME TO route_windows_1d;")
        .map(|at| start + at + "RENAME TO route_windows_1d;".len())
        .expect("version 10 renames route_windows_1d back");
    sqlx::raw_sql(&v10[start..end])
        .execute(&mut *tx)
        .await
        .expect("day table at version 10");
    // The per-project day rows from its hour rows, as version 11 builds them.
    sqlx::raw_sql(
        "DELETE FROM project_windows_1d;
         INSERT INTO project_windows_1d (project_id, window_start, status_class, environment,
             window_secs, count, sum_us, min_us, max_us, hist)
         SELECT project_id, window_start / 86400 * 86400, status_class, environment,
                MAX(86400, MAX(window_secs)),
                CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
                CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
                MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
         FROM project_windows_1h
         GROUP BY project_id, window_start / 86400 * 86400, status_class, environment;",
    )
    .execute(&mut *tx)
    .await
    .expect("project day rows");
    let insight_hists = [
        "queries_hist",
        "query_us_hist",
        "allocs_hist",
        "alloc_bytes_hist",
    ];
    for (table, tier, keys, hists) in [
        (
            "route_windows_1d",
            "",
            "route, method, status_class",
            &["hist"][..],
        ),
        (
            "insight_routes",
            "AND tier = 3",
            "route, method",
            &insight_hists[..],
        ),
        (
            "query_windows",
            "AND tier = 3",
            "fingerprint",
            &["hist"][..],
        ),
        (
            "project_windows_1d",
            "",
            "status_class, environment",
            &["hist"][..],
        ),
    ] {
        let rows = sqlx::query(&format!(
            "SELECT window_start, json_array({keys}), {} FROM {table} WHERE project_id = 1 {tier}",
            hists.join(", ")
        ))
        .fetch_all(&mut *tx)
        .await
        .expect("day rows");
        let set: Vec<String> = (0..hists.len())
            .map(|i| format!("{} = ?{}", hists[i], i + 3))
            .collect();
        let update = format!(
            "UPDATE {table} SET {} WHERE project_id = 1 {tier} AND window_start = ?1
               AND json_array({keys}) = ?2",
            set.join(", ")
        );
        for row in rows {
            let mut query = sqlx::query(&update)
                .bind(row.get::<i64, _>(0))
                .bind(row.get::<String, _>(1));
            for i in 0..hists.len() {
                let mut sum = EncodedSum::new();
                sum.add_concatenated(&row.get::<Vec<u8>, _>(2 + i))
                    .expect("blobs");
                let merged: BTreeMap<i32, u64> = sum.pairs().collect();
                query = query.bind(encode_buckets(&merged).expect("encode"));
            }
            query.execute(&mut *tx).await.expect("merge day");
        }
    }
    tx.commit().await.expect("commit days");
}

/// Ingests hour `hour` through `app`, 32 batches in flight so the writer group-commits
/// them as it would under load.
async fn ingest_hour(app: &axum::Router, key: &str, hour: i64) {
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let bodies: Vec<Vec<u8>> = (0..HOUR / WINDOW_SECS)
        .flat_map(|w| (0..INSTANCES).map(move |i| (w, i)))
        .map(|(w, i)| {
            serde_json::to_vec(&batch(&mut rng, i, hour + w * WINDOW_SECS)).expect("json")
        })
        .collect();
    let batches = bodies.len();
    futures_util::stream::iter(bodies)
        .map(|body| {
            let request = Request::post("/api/1/metrics")
                .header("content-type", "application/json")
                .header("x-sentry-auth", format!("Sentry sentry_key={key}"))
                .body(Body::from(body))
                .expect("request");
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.expect("infallible");
                assert_eq!(response.status(), StatusCode::OK, "ingest refused a batch");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!(
        "ingested {batches} batches (1 hour) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    // SIGHTLINE_HISTORY_DIR keeps the seeded database there and reuses it on the next run
    // (topped up to the current hour), so query changes can be measured without seeding.
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("SIGHTLINE_HISTORY_DIR")
        .map_or_else(|| temp.path().to_owned(), PathBuf::from);
    let reuse = dir.join("sightline.db").exists();
    let config = Config {
        data_dir: dir.clone(),
        // The seeded state is already what retention leaves; a run mid-benchmark would
        // only add noise.
        retention: RetentionConfig {
            interval_secs: 86_400,
            ..RetentionConfig::default()
        },
        ..Config::default()
    };
    let collector = Collector::open(config).await.expect("open collector");
    let app = collector.router();
    let key = collector.projects().await.expect("projects")[0]
        .public_key
        .clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let hour = now.div_euclid(HOUR) * HOUR;

    if reuse {
        // The last seeded hour, copied forward to the current one.
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("sightline.db")),
        )
        .await
        .expect("open db");
        let last: i64 = sqlx::query_scalar("SELECT MAX(window_start) FROM route_windows")
            .fetch_one(&pool)
            .await
            .expect("last window");
        pool.close().await;
        let last = last.div_euclid(HOUR) * HOUR;
        if hour > last {
            let n = (hour - last) / HOUR;
            let copied = copy_tiers(&dir, last, [n; 3], HOUR).await;
            println!("reused {}: {copied} rows copied forward", dir.display());
        }
    } else {
        // 1. The current hour through the ingest path.
        ingest_hour(&app, &key, hour).await;
        // 2. Copies of that hour back in time, as far as each tier's retention keeps them.
        let started = Instant::now();
        let copied = copy_tiers(&dir, hour, [24, 7 * 24, 30 * 24], -HOUR).await;
        println!(
            "copied {copied} rows back in time in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // 3. Every dashboard query, every range.
    let (_, storage) = {
        let response = app
            .clone()
            .oneshot(
                Request::get("/api/0/storage/")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            (),
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
        )
    };
    println!(
        "db_bytes {} ({:.0} MiB)",
        storage["db_bytes"],
        storage["db_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    );
    for t in storage["tables"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<7} {:>10}",
            t["table"].as_str().unwrap_or(""),
            t["tier"].as_str().unwrap_or("-"),
            t["rows"]
        );
    }
    let exemplar_id = {
        let response = app
            .clone()
            .oneshot(
                Request::get("/api/0/projects/1/exemplars/?statsPeriod=1h&limit=1")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")[0]["id"].clone()
    };
    let one = "route=/api/resource7/%7Bid%7D&method=GET";
    common::print_header();
    for (period, step) in [
        ("15m", 60),
        ("1h", 60),
        ("24h", 900),
        ("7d", 3_600),
        ("30d", 21_600),
    ] {
        let p = format!("statsPeriod={period}");
        let queries = [
            ("routes", format!("/api/0/projects/1/routes/?{p}")),
            (
                "series (all routes)",
                format!("/api/0/projects/1/series/?{p}&interval={step}"),
            ),
            (
                "series (one route)",
                format!("/api/0/projects/1/series/?{p}&interval={step}&{one}"),
            ),
            (
                "routes/insight",
                format!("/api/0/projects/1/routes/insight/?{p}"),
            ),
            (
                "routes/top",
                format!("/api/0/projects/1/routes/top/?{p}&limit=10"),
            ),
            (
                "queries (slow, by p95)",
                format!("/api/0/projects/1/queries/?{p}&sort=p95"),
            ),
            (
                "queries/n_plus_one",
                format!("/api/0/projects/1/queries/n_plus_one/?{p}"),
            ),
            ("heap", format!("/api/0/projects/1/heap/?{p}")),
            ("exemplars", format!("/api/0/projects/1/exemplars/?{p}")),
            (
                "exemplars (one route)",
                format!("/api/0/projects/1/exemplars/?{p}&{one}"),
            ),
        ];
        for (name, uri) in queries {
            report(&app, name, period, &uri).await;
        }
    }
    report(
        &app,
        "exemplar waterfall",
        "-",
        &format!("/api/0/projects/1/exemplars/{exemplar_id}/"),
    )
    .await;
    report(&app, "storage", "-", "/api/0/storage/").await;
    collector.shutdown().await;
}

/// Runs `uri` once to warm up, then [`RUNS`] times (5 when one run takes over a second:
/// its p95 is far past the target either way), and prints p50/p95/max.
async fn report(app: &axum::Router, name: &str, period: &str, uri: &str) {
    let runs = if get(app, uri).await.0 > Duration::from_secs(1) {
        5
    } else {
        RUNS
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(get(app, uri).await.0);
    }
    common::print_times(name, period, &mut times);
}
