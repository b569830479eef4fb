//! Metric windows: one insert per group commit into `windows_in`, folded by materialized
//! views into every tier of the route tables and of the per-project rollup, and the range
//! reads with the SQLite backend's semantics (same tier choice, same slot alignment, same
//! day split, same results).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClickHouseEvents, db};
use crate::insight::{Tier, aligned_since, day_split, tier_for, tier_for_series};
use crate::query::unix_now;
use crate::store::{Aggregates, ClassTotals, MetricsIngest, Steps, to_i64, to_u64};
use crate::{Error, TimeRange};

/// What SQLite stores for a count or sum: signed 64-bit, saturating.
pub(super) fn stored(value: u64) -> u64 {
    to_u64(to_i64(value))
}

/// A histogram's bucket indexes, written as an `Array(Int32)` straight from the map.
pub(super) struct Buckets<'a>(pub(super) &'a BTreeMap<i32, u64>);

impl Serialize for Buckets<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.keys())
    }
}

/// A histogram's bucket counts, in [`Buckets`]' order, as an `Array(UInt64)`.
pub(super) struct Counts<'a>(pub(super) &'a BTreeMap<i32, u64>);

impl Serialize for Counts<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values())
    }
}

/// One agent window as `windows_in` takes it.
#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct WindowIn<'a> {
    project_id: u64,
    environment: &'a str,
    route: &'a str,
    method: &'a str,
    status_class: u8,
    start: i64,
    secs: u32,
    requests: u64,
    total_us: u64,
    fastest_us: u64,
    slowest_us: u64,
    buckets: Buckets<'a>,
    counts: Counts<'a>,
}

/// Merged totals of one route × method and status class.
#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct RouteRow {
    route: String,
    method: String,
    status_class: u8,
    count: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
    /// `sumMap`'s result: bucket indexes and their counts.
    hist: (Vec<i32>, Vec<u64>),
}

/// Merged totals of one step and status class.
#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct StepRow {
    step: i64,
    status_class: u8,
    count: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
    hist: (Vec<i32>, Vec<u64>),
}

/// The merged aggregate columns of a tier table, in [`RouteRow`]'s and [`StepRow`]'s
/// order after their keys. No aliases: an alias equal to a column name inside an
/// aggregate is an error on 18.16, and RowBinary reads by position anyway.
const MERGED: &str = "sumMerge(count), sumMerge(sum_us), minMerge(min_us), maxMerge(max_us),
    sumMapMerge(hist)";

/// A value bound into a read, in the order its `?` appears.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    U64(u64),
    I64(i64),
    Str(&'a str),
}

/// Binds `params` to `query` in order.
pub(super) fn bind_all(
    mut query: ::clickhouse::query::Query,
    params: &[Param<'_>],
) -> ::clickhouse::query::Query {
    for param in params {
        query = match *param {
            Param::U64(value) => query.bind(value),
            Param::I64(value) => query.bind(value),
            Param::Str(value) => query.bind(value),
        };
    }
    query
}

/// Which rows of a tier table a read keeps besides the time range: one project, and
/// optionally one environment and one route × method.
#[derive(Debug, Clone, Copy)]
pub(super) struct Filter<'a> {
    pub(super) project_id: u64,
    pub(super) environment: Option<&'a str>,
    pub(super) route: Option<(&'a str, &'a str)>,
}

impl<'a> Filter<'a> {
    /// The filter as a `WHERE` condition, its values appended to `params` in the order
    /// of their `?`. Environments and routes are bound, never formatted in.
    fn condition(&self, params: &mut Vec<Param<'a>>) -> String {
        let mut sql = String::from("project_id = ?");
        params.push(Param::U64(self.project_id));
        if let Some(environment) = self.environment {
            sql.push_str(" AND environment = ?");
            params.push(Param::Str(environment));
        }
        if let Some((route, method)) = self.route {
            sql.push_str(" AND route = ? AND method = ?");
            params.push(Param::Str(route));
            params.push(Param::Str(method));
        }
        sql
    }
}

/// What follows `FROM` in a read of `family` (`route_windows`, `project_windows`, or an
/// insight family such as `query_windows`: any table with the tier suffixes) over
/// `range` in `tier`: the tier's rows in `range`, or, with whole days `days` (from
/// [`day_split`]), the tier's rows outside them and the day tier's rows inside them, as
/// SQLite's `split_rows` reads (a day slot holds exactly its hour slots, so the sums are
/// the same, from 24 times fewer rows). `columns` are what the subquery passes on.
pub(super) fn rows_from<'a>(
    family: &str,
    columns: &str,
    tier: Tier,
    days: (i64, i64),
    filter: Filter<'a>,
    range: TimeRange,
    params: &mut Vec<Param<'a>>,
) -> String {
    let fine = format!("{family}{}", tier.route_suffix());
    if days.0 >= days.1 {
        let condition = filter.condition(params);
        params.extend([Param::I64(range.since), Param::I64(range.until)]);
        return format!("{fine} WHERE {condition} AND window_start >= ? AND window_start < ?");
    }
    let fine_condition = filter.condition(params);
    params.extend([
        Param::I64(range.since),
        Param::I64(days.0),
        Param::I64(days.1),
        Param::I64(range.until),
    ]);
    let day_condition = filter.condition(params);
    params.extend([Param::I64(days.0), Param::I64(days.1)]);
    format!(
        "(SELECT {columns} FROM {fine}
          WHERE {fine_condition}
            AND ((window_start >= ? AND window_start < ?)
                 OR (window_start >= ? AND window_start < ?))
          UNION ALL
          SELECT {columns} FROM {family}{day}
          WHERE {day_condition} AND window_start >= ? AND window_start < ?)",
        day = Tier::Day.route_suffix(),
    )
}

/// Adds `(buckets, counts)` into `into`, saturating as SQLite's `EncodedSum` does.
fn add_buckets(into: &mut BTreeMap<i32, u64>, (buckets, counts): &(Vec<i32>, Vec<u64>)) {
    for (&bucket, &count) in buckets.iter().zip(counts) {
        let slot = into.entry(bucket).or_insert(0);
        *slot = slot.saturating_add(count);
    }
}

/// Merged histograms per key, flattened to `(key, bucket, count)` in key and bucket
/// order, empty buckets left out: SQLite's `flatten` of its `EncodedSum`s.
fn flatten<K: Clone>(sums: BTreeMap<K, BTreeMap<i32, u64>>) -> Vec<(K, i32, u64)> {
    sums.into_iter()
        .flat_map(|(key, buckets)| {
            buckets
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(move |(bucket, n)| (key.clone(), bucket, n))
        })
        .collect()
}

impl ClickHouseEvents {
    /// Stores every window of `batches` in one insert into `windows_in`; its materialized
    /// views add each window into the route tables and the per-project rollup of every
    /// tier, under the agent's environment ('' without one, as SQLite stores it). Empty
    /// windows are skipped, as SQLite skips them: they add nothing to any sum and would
    /// drag `min_us` to 0.
    pub(crate) async fn insert_windows(&self, batches: &[&MetricsIngest]) -> Result<(), Error> {
        // Collected first: an iterator of closures held across the awaits below would
        // make the future not `Send` for every lifetime (async-trait callers need that).
        let windows: Vec<WindowIn<'_>> = batches
            .iter()
            .flat_map(|ingest| {
                let environment = crate::store::sqlite::stored_environment(&ingest.batch.agent);
                ingest
                    .batch
                    .windows
                    .iter()
                    .filter(|w| !w.latency.is_empty())
                    .map(move |w| WindowIn {
                        project_id: ingest.project_id,
                        environment,
                        route: &w.route,
                        method: &w.method,
                        status_class: w.status_class,
                        start: w.start,
                        secs: w.window_secs,
                        requests: stored(w.latency.count),
                        total_us: stored(w.latency.sum),
                        fastest_us: stored(w.latency.min),
                        slowest_us: stored(w.latency.max),
                        buckets: Buckets(&w.latency.buckets),
                        counts: Counts(&w.latency.buckets),
                    })
            })
            .collect();
        if windows.is_empty() {
            return Ok(());
        }
        let mut insert = self.insert::<WindowIn<'_>>("windows_in").await?;
        for window in &windows {
            insert.write(window).await.map_err(db)?;
        }
        insert.end().await.map_err(db)
    }

    /// Aggregates per route × method over `range`, of one environment or (`None`) all,
    /// from the tier [`tier_for`] picks: SQLite's `route_aggregates`.
    pub(crate) async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        let tier = tier_for(range, unix_now(), &self.retention);
        self.route_aggregates_in(tier, project_id, range, environment)
            .await
    }

    /// [`ClickHouseEvents::route_aggregates`] from `tier`: the range starts at the slot
    /// holding `since`, and whole days come from the day tier.
    pub(super) async fn route_aggregates_in(
        &self,
        tier: Tier,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        let range = TimeRange {
            since: aligned_since(tier, range.since),
            ..range
        };
        let filter = Filter {
            project_id,
            environment,
            route: None,
        };
        let mut params = Vec::new();
        let rows = rows_from(
            "route_windows",
            "route, method, status_class, count, sum_us, min_us, max_us, hist",
            tier,
            day_split(tier, range),
            filter,
            range,
            &mut params,
        );
        // One statement: totals and histograms from the same snapshot.
        let sql = format!(
            "SELECT route, method, status_class, {MERGED}
             FROM {rows}
             GROUP BY route, method, status_class
             ORDER BY route, method, status_class"
        );
        let rows: Vec<RouteRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        let mut classes = Vec::with_capacity(rows.len());
        let mut sums: BTreeMap<(String, String), BTreeMap<i32, u64>> = BTreeMap::new();
        for row in rows {
            let key = (row.route, row.method);
            add_buckets(sums.entry(key.clone()).or_default(), &row.hist);
            classes.push(ClassTotals {
                key,
                status_class: row.status_class,
                count: stored(row.count),
                sum_us: row.sum_us as f64,
                min_us: row.min_us,
                max_us: row.max_us,
            });
        }
        Ok(Aggregates {
            classes,
            buckets: flatten(sums),
        })
    }

    /// Aggregates per step over `range`, for one `(route, method)` or every route (the
    /// per-project rollup), of one environment or all, from the tier
    /// [`tier_for_series`] picks: SQLite's `series_aggregates`. A window counts in the
    /// step its start falls in; `range.since` is not aligned (as in SQLite), and whole
    /// days come from the day tier only when steps are whole days.
    pub(crate) async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        let tier = tier_for_series(range, steps.step_secs, unix_now(), &self.retention);
        self.series_aggregates_in(tier, project_id, range, steps, route, environment)
            .await
    }

    /// [`ClickHouseEvents::series_aggregates`] from `tier`.
    pub(super) async fn series_aggregates_in(
        &self,
        tier: Tier,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        if steps.step_secs <= 0 {
            return Err(Error::BadRequest("a series step must be positive".into()));
        }
        let days = if steps.step_secs % 86_400 == 0 {
            day_split(tier, range)
        } else {
            (range.until, range.until)
        };
        let filter = Filter {
            project_id,
            environment,
            route,
        };
        // All routes: the per-project rollup, a row per status class rather than per route
        // and status class.
        let family = if route.is_some() {
            "route_windows"
        } else {
            "project_windows"
        };
        // Step start: origin + whole steps; `intDiv` truncates toward zero as SQLite's
        // integer `/` does.
        let mut params = vec![
            Param::I64(steps.origin),
            Param::I64(steps.origin),
            Param::I64(steps.step_secs),
            Param::I64(steps.step_secs),
        ];
        let rows = rows_from(
            family,
            "window_start, status_class, count, sum_us, min_us, max_us, hist",
            tier,
            days,
            filter,
            range,
            &mut params,
        );
        let sql = format!(
            "SELECT toInt64(?) + intDiv(window_start - toInt64(?), toInt64(?)) * toInt64(?)
                        AS step,
                    status_class, {MERGED}
             FROM {rows}
             GROUP BY step, status_class
             ORDER BY step, status_class"
        );
        let rows: Vec<StepRow> = bind_all(self.client.query(&sql), &params)
            .fetch_all()
            .await
            .map_err(db)?;
        let mut classes = Vec::with_capacity(rows.len());
        let mut sums: BTreeMap<i64, BTreeMap<i32, u64>> = BTreeMap::new();
        for row in rows {
            add_buckets(sums.entry(row.step).or_default(), &row.hist);
            classes.push(ClassTotals {
                key: row.step,
                status_class: row.status_class,
                count: stored(row.count),
                sum_us: row.sum_us as f64,
                min_us: row.min_us,
                max_us: row.max_us,
            });
        }
        Ok(Aggregates {
            classes,
            buckets: flatten(sums),
        })
    }
}
