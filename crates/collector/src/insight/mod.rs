//! Performance insight on the collector side: rollup tiers and their retention, the
//! storage trait of the insight tables, and the rows the query API answers with.
//!
//! Every window an agent sends is merged into four tiers in the same transaction — raw
//! (the agent's windows), 1-minute, 1-hour and 1-day rollups — as Ganglia keeps its
//! round-robin archives. A background task deletes what is past each tier's retention, a
//! bounded number of rows per run. Queries pick the finest tier that still holds the whole
//! range and whose row count stays small for its length ([`tier_for`]); an hour-tier read
//! takes the whole days inside its range from the day tier ([`day_split`]).

pub(crate) mod api;
mod exemplars;
mod read;
mod retention;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sightline_protocol::quantile_of;

use crate::{Error, TimeRange};

pub use read::{CallingRoute, RouteInsight, SlowQuery};
pub(crate) use retention::spawn as spawn_retention;

/// How long each tier is kept, in seconds, and how often retention runs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw agent windows and exemplars; default 86 400 (24 h).
    pub raw_secs: i64,
    /// 1-minute rollups; default 604 800 (7 days).
    pub minute_secs: i64,
    /// 1-hour rollups; default 7 776 000 (90 days).
    pub hour_secs: i64,
    /// 1-day rollups; default 34 560 000 (400 days).
    pub day_secs: i64,
    /// Seconds between retention runs; default 60.
    pub interval_secs: u64,
    /// Most rows one run deletes per table and tier; default 20 000.
    pub max_rows_per_run: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw_secs: 86_400,
            minute_secs: 7 * 86_400,
            hour_secs: 90 * 86_400,
            day_secs: 400 * 86_400,
            interval_secs: 60,
            max_rows_per_run: 20_000,
        }
    }
}

impl RetentionConfig {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.raw_secs <= 0
            || self.minute_secs < self.raw_secs
            || self.hour_secs < self.minute_secs
            || self.day_secs < self.hour_secs
        {
            return Err(Error::Config(
                "retention must be positive and raw ≤ minute ≤ hour ≤ day",
            ));
        }
        if self.interval_secs == 0 || self.max_rows_per_run == 0 {
            return Err(Error::Config(
                "retention interval_secs and max_rows_per_run must be at least 1",
            ));
        }
        Ok(())
    }

    /// Retention of `tier`, seconds.
    pub(crate) fn keep_secs(&self, tier: Tier) -> i64 {
        match tier {
            Tier::Raw => self.raw_secs,
            Tier::Minute => self.minute_secs,
            Tier::Hour => self.hour_secs,
            Tier::Day => self.day_secs,
        }
    }
}

/// A storage tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The agents' own windows (10 s by default).
    Raw,
    /// 1-minute rollups.
    Minute,
    /// 1-hour rollups.
    Hour,
    /// 1-day rollups (UTC days).
    Day,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::Minute, Tier::Hour, Tier::Day];

    /// The `tier` column value.
    pub(crate) fn id(self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 1,
            Tier::Hour => 2,
            Tier::Day => 3,
        }
    }

    /// Rollup resolution in seconds (`None` for raw: whatever the agents used).
    pub(crate) fn secs(self) -> Option<i64> {
        match self {
            Tier::Raw => None,
            Tier::Minute => Some(60),
            Tier::Hour => Some(3_600),
            Tier::Day => Some(DAY),
        }
    }

    /// Suffix of the route-window tables of this tier (`route_windows{suffix}`).
    pub(crate) fn route_suffix(self) -> &'static str {
        match self {
            Tier::Raw => "",
            Tier::Minute => "_1m",
            Tier::Hour => "_1h",
            Tier::Day => "_1d",
        }
    }

    /// Longest range this tier answers, seconds: beyond it a coarser tier is read so a
    /// query scans a bounded number of rows (≤ 360 windows per key), each carrying its
    /// histograms as one blob that the read adds up in Rust. The hour tier answers every
    /// longer range, with its whole days read from the day tier ([`day_split`]); the day
    /// tier alone is read only where the hour tier's retention no longer holds the start.
    fn max_span(self) -> i64 {
        match self {
            Tier::Raw => 30 * 60,
            Tier::Minute => 6 * 3_600,
            Tier::Hour | Tier::Day => i64::MAX,
        }
    }
}

/// A day, seconds: the day tier's slot.
const DAY: i64 = 86_400;

/// The whole days `[first, end)` of an hour-tier read over `range` (its `since` already
/// aligned to the hour) that are read from the day tier instead, `(range.until,
/// range.until)` when none is. A day slot holds exactly the hour slots of its day (both
/// are aligned to multiples of their length since the epoch, and a window lands in the
/// slot holding its start in every tier), so the split read adds up the same windows as
/// the hour tier alone, with 24 times fewer rows per whole day. Other tiers are not split:
/// finer ones answer ranges of hours, and a day-tier read has no finer tier left.
pub(crate) fn day_split(tier: Tier, range: TimeRange) -> (i64, i64) {
    let none = (range.until, range.until);
    if tier != Tier::Hour {
        return none;
    }
    let first = range.since.saturating_add(DAY - 1).div_euclid(DAY) * DAY;
    let end = range.until.div_euclid(DAY) * DAY;
    if first < end { (first, end) } else { none }
}

/// The tier a query over `range` reads: the finest one whose rows for that length stay
/// few; if its retention no longer holds the start of the range, the finest coarser tier
/// that does (and when none does, the data is older than every retention and whatever
/// is left is most precise in the first choice).
pub(crate) fn tier_for(range: TimeRange, now: i64, retention: &RetentionConfig) -> Tier {
    let span = range.until.saturating_sub(range.since);
    let by_span = Tier::ALL
        .into_iter()
        .find(|tier| span <= tier.max_span())
        .unwrap_or(Tier::Day);
    covering_from(by_span, range, now, retention)
}

/// `first`, or the finest coarser tier whose retention holds `range.since`; `first` when
/// none does.
fn covering_from(first: Tier, range: TimeRange, now: i64, retention: &RetentionConfig) -> Tier {
    Tier::ALL
        .into_iter()
        .filter(|&tier| tier >= first)
        .find(|&tier| range.since >= now.saturating_sub(retention.keep_secs(tier)))
        .unwrap_or(first)
}

/// The tier a series with steps of `step_secs` reads: as [`tier_for`], but never one
/// coarser than a step (it would leave steps empty) unless only a coarser one still holds
/// the range.
pub(crate) fn tier_for_series(
    range: TimeRange,
    step_secs: i64,
    now: i64,
    retention: &RetentionConfig,
) -> Tier {
    let chosen = tier_for(range, now, retention);
    let fits = |tier: &Tier| tier.secs().is_none_or(|s| s <= step_secs);
    if fits(&chosen) {
        return chosen;
    }
    // The coarsest tier that fits the step; finer if that one lost the start.
    let coarsest_fit = Tier::ALL.into_iter().rev().find(fits).unwrap_or(Tier::Raw);
    let holds = |tier: Tier| range.since >= now.saturating_sub(retention.keep_secs(tier));
    if holds(coarsest_fit) || !holds(chosen) {
        coarsest_fit
    } else {
        chosen
    }
}

/// Start of the first slot of `tier` a range starting at `since` reads: rollup slots
/// that begin before `since` but overlap it are included.
pub(crate) fn aligned_since(tier: Tier, since: i64) -> i64 {
    tier.secs().map_or(since, |s| since.div_euclid(s) * s)
}

/// A fingerprint as the API shows it: 16 hex digits.
pub(crate) fn hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// Merged figures of one statement shape.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryTotals {
    pub fingerprint: u64,
    pub sql: String,
    pub count: u64,
    pub sum_us: f64,
    pub min_us: u64,
    pub max_us: u64,
    pub buckets: Vec<(i32, u64)>,
    pub routes: Vec<(String, String, u64)>,
}

/// Merged figures of one route × method.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTotals {
    pub route: String,
    pub method: String,
    pub requests: u64,
    pub queries: u64,
    pub query_us: f64,
    pub alloc_requests: u64,
    pub allocs: u64,
    pub alloc_bytes: f64,
    pub n_plus_one: u64,
    /// Per metric (0 queries, 1 query µs, 2 allocations, 3 bytes): merged buckets.
    pub buckets: BTreeMap<u8, Vec<(i32, u64)>>,
}

/// One N+1 suspect.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NPlusOneRow {
    pub route: String,
    pub method: String,
    pub fingerprint: String,
    pub sql: String,
    /// Requests flagged.
    pub requests: u64,
    /// Requests of the route in the range.
    pub route_requests: u64,
    /// Most executions of the statement in one request.
    pub max_repeats: u64,
    /// Executions per flagged request.
    pub mean_repeats: f64,
}

/// One point of a heap series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeapPoint {
    pub ts: i64,
    pub live_bytes: u64,
    pub peak_bytes: u64,
}

/// The live heap of one instance over time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeapSeries {
    pub service: String,
    pub instance: String,
    pub points: Vec<HeapPoint>,
}

/// An exemplar in a list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExemplarSummary {
    pub id: u64,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub start_ms: i64,
    pub duration_ms: f64,
    pub reasons: Vec<&'static str>,
    pub queries: u64,
    pub query_ms: f64,
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub instance: String,
}

/// One entry of an exemplar's waterfall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WaterfallEntry {
    pub kind: sightline_protocol::EntryKind,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub offset_ms: f64,
    pub duration_ms: f64,
}

/// An exemplar with its waterfall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExemplarDetail {
    #[serde(flatten)]
    pub summary: ExemplarSummary,
    pub dropped_entries: u64,
    pub entries: Vec<WaterfallEntry>,
}

/// Row count of one table (and tier).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableRows {
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    pub rows: u64,
}

/// What the store occupies.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StorageReport {
    /// Database file plus its WAL, bytes.
    pub db_bytes: u64,
    pub tables: Vec<TableRows>,
}

/// Reason bits as words.
pub(crate) fn reason_names(bits: u8) -> Vec<&'static str> {
    use sightline_protocol::reason;
    [
        (reason::SLOW, "slow"),
        (reason::ERROR, "error"),
        (reason::N_PLUS_ONE, "n_plus_one"),
        (reason::SAMPLED, "sampled"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// Quantile of merged buckets, kept within min/max.
pub(crate) fn quantile(buckets: &[(i32, u64)], q: f64, min: u64, max: u64) -> Option<f64> {
    quantile_of(buckets.iter().copied(), q).map(|v| v.clamp(min as f64, max.max(min) as f64))
}

/// Storage of the insight tables. A separate trait from the main store so backends (and
/// test wrappers) opt in through `Store::insight`.
#[async_trait]
pub(crate) trait InsightStore: Send + Sync {
    // Every read takes `environment`: one deployment environment's rows, or all of them
    // when `None`.

    /// Per fingerprint over `range` in `tier`.
    async fn query_totals(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<QueryTotals>, Error>;

    /// Per route × method over `range` in `tier`.
    async fn route_totals(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<RouteTotals>, Error>;

    /// N+1 suspects over `range` in `tier`.
    async fn n_plus_one(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<NPlusOneRow>, Error>;

    /// Heap series per instance in steps of `step_secs`.
    async fn heap(
        &self,
        project_id: u64,
        tier: Tier,
        range: TimeRange,
        step_secs: i64,
        environment: Option<&str>,
    ) -> Result<Vec<HeapSeries>, Error>;

    /// Exemplars started in `range`, newest first (by start, then id); with `before`,
    /// only those listed after that exemplar.
    async fn exemplars(
        &self,
        project_id: u64,
        range: TimeRange,
        route: Option<(&str, &str)>,
        before: Option<u64>,
        limit: u32,
        environment: Option<&str>,
    ) -> Result<Vec<ExemplarSummary>, Error>;

    /// One exemplar with its waterfall.
    async fn exemplar(&self, project_id: u64, id: u64) -> Result<Option<ExemplarDetail>, Error>;

    /// Database size and rows per table and tier.
    async fn storage(&self) -> Result<StorageReport, Error>;

    /// Deletes rows past each tier's retention, at most `retention.max_rows_per_run` per
    /// table and tier; returns how many.
    async fn prune(&self, retention: &RetentionConfig, now: i64) -> Result<u64, Error>;

    /// The retention the store was opened with (tier choice depends on it).
    fn retention(&self) -> RetentionConfig;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_range_and_retention() {
        let r = RetentionConfig::default();
        let now = 10_000_000;
        let last = |secs| TimeRange {
            since: now - secs,
            until: now,
        };
        assert_eq!(tier_for(last(900), now, &r), Tier::Raw);
        assert_eq!(tier_for(last(1_800), now, &r), Tier::Raw);
        assert_eq!(tier_for(last(3_600), now, &r), Tier::Minute);
        assert_eq!(tier_for(last(6 * 3_600), now, &r), Tier::Minute);
        assert_eq!(tier_for(last(86_400), now, &r), Tier::Hour);
        assert_eq!(tier_for(last(7 * 86_400), now, &r), Tier::Hour);
        assert_eq!(tier_for(last(30 * 86_400), now, &r), Tier::Hour);
        // An hour two days ago is past raw retention.
        let old = TimeRange {
            since: now - 2 * 86_400,
            until: now - 2 * 86_400 + 3_600,
        };
        assert_eq!(tier_for(old, now, &r), Tier::Minute);
        // A day of minute steps reads the minute tier, a day of 10 s steps too (raw is
        // gone for most of it only if it were older than 24 h).
        assert_eq!(tier_for_series(last(86_400), 60, now, &r), Tier::Minute);
        assert_eq!(tier_for_series(last(86_400), 10, now, &r), Tier::Raw);
        assert_eq!(
            tier_for_series(last(7 * 86_400), 3_600, now, &r),
            Tier::Hour
        );
        assert_eq!(
            tier_for_series(last(7 * 86_400), 600, now, &r),
            Tier::Minute
        );
        assert!(r.check().is_ok());
        assert!(
            RetentionConfig {
                raw_secs: 10,
                minute_secs: 5,
                ..RetentionConfig::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn hour_reads_take_whole_days_from_the_day_tier() {
        const H: i64 = 3_600;
        let midnight = 1_699_920_000;
        let range = |since, until| TimeRange { since, until };
        // 30 days from 07:00: 29 whole days between the first and the last midnight.
        let month = range(midnight + 7 * H, midnight + 30 * DAY + 7 * H);
        assert_eq!(
            day_split(Tier::Hour, month),
            (midnight + DAY, midnight + 30 * DAY)
        );
        // Edges on midnights are whole days themselves.
        assert_eq!(
            day_split(Tier::Hour, range(midnight, midnight + 2 * DAY)),
            (midnight, midnight + 2 * DAY)
        );
        // No whole day inside, or another tier: nothing from the day tier.
        let day = range(midnight + H, midnight + DAY + H);
        assert_eq!(day_split(Tier::Hour, day), (day.until, day.until));
        assert_eq!(day_split(Tier::Minute, month), (month.until, month.until));
        assert_eq!(day_split(Tier::Day, month), (month.until, month.until));
        // Past the hour retention only the day tier is left.
        let r = RetentionConfig::default();
        let now = midnight + 200 * DAY;
        assert_eq!(tier_for(month, now, &r), Tier::Day);
        assert_eq!(tier_for(range(now - 30 * DAY, now), now, &r), Tier::Hour);
        // A week of daily steps reads hours (whole days from the day tier).
        let week = range(now - 7 * DAY, now);
        assert_eq!(tier_for_series(week, DAY, now, &r), Tier::Hour);
        assert!(
            RetentionConfig {
                day_secs: 60 * DAY,
                ..RetentionConfig::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn reasons_read_as_words() {
        use sightline_protocol::reason;
        assert_eq!(
            reason_names(reason::SLOW | reason::N_PLUS_ONE),
            ["slow", "n_plus_one"]
        );
    }
}
