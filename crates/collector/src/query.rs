//! The read side: time ranges, and turning merged store aggregates into the
//! [`RouteStats`] and [`SeriesPoint`] rows the query API and the UI show.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sightline_protocol::{RouteStats, SeriesPoint, quantile_of};

use crate::Error;
use crate::store::{
    Aggregates, Cursor, Issue, IssueFilter, IssueStatus, ItemCount, Project, Steps, Store,
    StoredEvent, TagValue,
};

/// Most points one series may have; a longer range needs a larger step.
pub const MAX_SERIES_POINTS: i64 = 1_500;

/// Latest timestamp a range may name (the end of year 9999): keeps step arithmetic far
/// from overflow whatever a client sends.
const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// Current unix time in seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A half-open time range `[since, until)` in unix seconds. A window belongs to the range
/// when its start does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// First second in the range.
    pub since: i64,
    /// First second after the range.
    pub until: i64,
}

impl TimeRange {
    /// The `secs` seconds up to now.
    pub fn last(secs: i64) -> TimeRange {
        let until = unix_now();
        TimeRange {
            since: until.saturating_sub(secs),
            until,
        }
    }

    /// Length in seconds.
    fn secs(self) -> i64 {
        self.until - self.since
    }

    fn check(self) -> Result<(), Error> {
        if !(0..=MAX_TIMESTAMP).contains(&self.since) || !(0..=MAX_TIMESTAMP).contains(&self.until)
        {
            return Err(Error::BadRequest(format!(
                "since and until must be unix seconds between 0 and {MAX_TIMESTAMP}"
            )));
        }
        if self.since >= self.until {
            return Err(Error::BadRequest("since must be before until".to_owned()));
        }
        Ok(())
    }
}

/// Read handle on the store, used by the query API and the UI. Cheap to clone.
#[derive(Clone)]
pub struct Query {
    store: Arc<dyn Store>,
    /// Projects looked up recently: every ingest request authenticates against one, and
    /// at tens of thousands of requests a second that must not be a store round trip.
    projects: Arc<std::sync::Mutex<HashMap<u64, (Project, Instant)>>>,
    /// Switch administration for the dashboard, which holds only this handle.
    switchboard: crate::switches::Switchboard,
}

/// How long a looked-up project (and so its key) is trusted before it is read again.
const PROJECT_CACHE_TTL: Duration = Duration::from_secs(5);

impl Query {
    pub(crate) fn new(store: Arc<dyn Store>, switchboard: crate::switches::Switchboard) -> Query {
        Query {
            store,
            projects: Arc::default(),
            switchboard,
        }
    }

    /// The feature switches: list, history and audit, and changes guarded by the admin
    /// credential, with the same checks and audit as `/api/0/switches/`.
    pub fn switchboard(&self) -> &crate::switches::Switchboard {
        &self.switchboard
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Every project, by id.
    pub async fn projects(&self) -> Result<Vec<Project>, Error> {
        self.store.projects().await
    }

    /// One project, `None` when the id is unknown.
    pub(crate) async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        let cached = |projects: &HashMap<u64, (Project, Instant)>| {
            projects
                .get(&id)
                .filter(|(_, at)| at.elapsed() < PROJECT_CACHE_TTL)
                .map(|(project, _)| project.clone())
        };
        let lock = || {
            self.projects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(project) = cached(&lock()) {
            return Ok(Some(project));
        }
        let project = self.store.project(id).await?;
        if let Some(project) = &project {
            // Unknown ids are not cached, so the map holds real projects only.
            lock().insert(id, (project.clone(), Instant::now()));
        }
        Ok(project)
    }

    async fn require_project(&self, id: u64) -> Result<(), Error> {
        match self.store.project(id).await? {
            Some(_) => Ok(()),
            None => Err(Error::ProjectNotFound),
        }
    }

    /// The deployment environments a project's agents report and its events name,
    /// sorted (at most [`crate::store::MAX_ENVIRONMENTS`]); 404 for an unknown project.
    pub async fn environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        self.require_project(project_id).await?;
        self.store.environments(project_id).await
    }

    /// Statistics per route × method over `range`, the routes taking the most total
    /// server time first. Quantiles come from latency buckets merged over every window
    /// and instance in the range, of one environment or (`None`) all.
    pub async fn routes(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Vec<RouteStats>, Error> {
        range.check()?;
        self.require_project(project_id).await?;
        let aggregates = self
            .store
            .route_aggregates(project_id, range, environment)
            .await?;
        let secs = range.secs() as f64;
        let mut stats: Vec<RouteStats> = merge(aggregates)
            .into_iter()
            .map(|((route, method), merged)| merged.route_stats(route, method, secs))
            .collect();
        stats.sort_by(|a, b| {
            b.total_ms
                .total_cmp(&a.total_ms)
                .then_with(|| a.route.cmp(&b.route))
                .then_with(|| a.method.cmp(&b.method))
        });
        Ok(stats)
    }

    /// A time series over `range` in steps of `step_secs`, aligned to multiples of it; all
    /// routes, or one `(route, method)`; one environment, or (`None`) all. Steps without
    /// data are present with zero requests.
    pub async fn series(
        &self,
        project_id: u64,
        range: TimeRange,
        step_secs: i64,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Vec<SeriesPoint>, Error> {
        range.check()?;
        if !(1..=MAX_TIMESTAMP).contains(&step_secs) {
            return Err(Error::BadRequest(
                "interval must be a positive number of seconds".to_owned(),
            ));
        }
        let origin = range.since.div_euclid(step_secs) * step_secs;
        let points = (range.until - origin + step_secs - 1) / step_secs;
        if points > MAX_SERIES_POINTS {
            return Err(Error::BadRequest(format!(
                "{points} points requested, at most {MAX_SERIES_POINTS}: use a larger interval"
            )));
        }
        self.require_project(project_id).await?;
        let steps = Steps { origin, step_secs };
        let mut merged = merge(
            self.store
                .series_aggregates(project_id, range, steps, route, environment)
                .await?,
        );
        Ok((0..points)
            .map(|i| {
                let ts = origin + i * step_secs;
                merged.remove(&ts).unwrap_or_default().series_point(ts)
            })
            .collect())
    }
}

/// Reads of error issues and events; limits are checked by the caller (the API).
impl Query {
    /// One page of a project's issues; 404 for an unknown project.
    pub async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error> {
        self.require_project(project_id).await?;
        self.store.issues(project_id, filter).await
    }

    /// One issue, `None` when the id is unknown.
    pub async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        self.store.issue(issue_id).await
    }

    /// Per tag key of an issue, its `top` most frequent values.
    pub async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        self.store.issue_tags(issue_id, top).await
    }

    /// One page of an issue's events, newest first.
    pub async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.store.issue_events(issue_id, limit, cursor, full).await
    }

    /// One event of a project, with its payload.
    pub async fn event(
        &self,
        project_id: u64,
        event_id: &str,
    ) -> Result<Option<StoredEvent>, Error> {
        self.store.event(project_id, event_id).await
    }

    /// Sets the status of issues (of one project, when given); returns the ids updated.
    pub async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
    ) -> Result<Vec<u64>, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.store
            .set_issue_status(project_id, ids, status, now)
            .await
    }

    /// Envelope items a project received per UTC day and type, the last `days` days.
    pub async fn item_counts(&self, project_id: u64, days: u32) -> Result<Vec<ItemCount>, Error> {
        self.require_project(project_id).await?;
        let since = unix_now().saturating_sub(i64::from(days.saturating_sub(1)) * 86_400);
        self.store
            .item_counts(project_id, &crate::time::utc_day(since as f64))
            .await
    }
}

/// Everything known about one group (a route × method, or a step) after merging.
#[derive(Debug, Default)]
struct Merged {
    status_classes: [u64; 5],
    sum_us: f64,
    min_us: Option<u64>,
    max_us: u64,
    /// Ascending by bucket index.
    buckets: Vec<(i32, u64)>,
}

impl Merged {
    fn requests(&self) -> u64 {
        self.status_classes
            .iter()
            .fold(0u64, |total, &n| total.saturating_add(n))
    }

    fn errors(&self) -> u64 {
        self.status_classes[4]
    }

    /// Quantile `q` in milliseconds, kept inside the observed min/max (a bucket
    /// representative can lie just outside them).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let us = quantile_of(self.buckets.iter().copied(), q)?;
        let min = self.min_us.unwrap_or(0) as f64;
        Some(us.max(min).min(self.max_us as f64) / 1000.0)
    }

    fn route_stats(&self, route: String, method: String, range_secs: f64) -> RouteStats {
        let requests = self.requests();
        let errors = self.errors();
        let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
        RouteStats {
            route,
            method,
            requests,
            errors,
            status_classes: self.status_classes,
            error_rate: ratio(errors as f64, requests as f64),
            throughput: ratio(requests as f64, range_secs),
            p50_ms: self.quantile_ms(0.50).unwrap_or(0.0),
            p95_ms: self.quantile_ms(0.95).unwrap_or(0.0),
            p99_ms: self.quantile_ms(0.99).unwrap_or(0.0),
            mean_ms: ratio(self.sum_us, requests as f64) / 1000.0,
            total_ms: self.sum_us / 1000.0,
        }
    }

    fn series_point(&self, ts: i64) -> SeriesPoint {
        SeriesPoint {
            ts,
            requests: self.requests(),
            errors: self.errors(),
            p50_ms: self.quantile_ms(0.50),
            p95_ms: self.quantile_ms(0.95),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

/// Folds per-class totals and per-bucket counts into one [`Merged`] per key.
fn merge<K: Ord>(aggregates: Aggregates<K>) -> BTreeMap<K, Merged> {
    let mut groups: BTreeMap<K, Merged> = BTreeMap::new();
    for row in aggregates.classes {
        let Some(slot) = usize::from(row.status_class)
            .checked_sub(1)
            .filter(|&i| i < 5)
        else {
            continue;
        };
        let group = groups.entry(row.key).or_default();
        group.status_classes[slot] = group.status_classes[slot].saturating_add(row.count);
        group.sum_us += row.sum_us;
        group.min_us = Some(group.min_us.map_or(row.min_us, |m| m.min(row.min_us)));
        group.max_us = group.max_us.max(row.max_us);
    }
    for (key, bucket, count) in aggregates.buckets {
        groups.entry(key).or_default().buckets.push((bucket, count));
    }
    for group in groups.values_mut() {
        // Stores return buckets in order; sorting again costs little and guards quantile_of.
        group.buckets.sort_unstable_by_key(|&(bucket, _)| bucket);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClassTotals;

    fn class(key: i64, status_class: u8, count: u64, sum_us: f64) -> ClassTotals<i64> {
        ClassTotals {
            key,
            status_class,
            count,
            sum_us,
            min_us: 1_000,
            max_us: 9_000,
        }
    }

    #[test]
    fn merges_classes_and_buckets_per_key() {
        let merged = merge(Aggregates {
            classes: vec![
                class(0, 2, 3, 6_000.0),
                class(0, 5, 1, 9_000.0),
                class(60, 2, 1, 1.0),
            ],
            buckets: vec![(0, 460, 1), (0, 230, 3), (60, 0, 1)],
        });
        let first = &merged[&0];
        assert_eq!(first.status_classes, [0, 3, 0, 0, 1]);
        assert_eq!(first.requests(), 4);
        assert_eq!(first.errors(), 1);
        assert_eq!(first.buckets, [(230, 3), (460, 1)]);
        let stats = first.route_stats("/a".into(), "GET".into(), 10.0);
        assert_eq!(stats.error_rate, 0.25);
        assert_eq!(stats.throughput, 0.4);
        assert_eq!(stats.total_ms, 15.0);
        assert_eq!(stats.mean_ms, 3.75);
        assert_eq!(merged[&60].requests(), 1);
    }

    #[test]
    fn empty_groups_have_no_quantiles() {
        let point = Merged::default().series_point(120);
        assert_eq!(point.requests, 0);
        assert_eq!(point.p50_ms, None);
        assert_eq!(point.p99_ms, None);
    }

    #[test]
    fn ranges_are_checked() {
        assert!(
            TimeRange {
                since: 10,
                until: 10
            }
            .check()
            .is_err()
        );
        assert!(
            TimeRange {
                since: -1,
                until: 10
            }
            .check()
            .is_err()
        );
        assert!(
            TimeRange {
                since: 0,
                until: i64::MAX
            }
            .check()
            .is_err()
        );
        assert!(TimeRange { since: 0, until: 1 }.check().is_ok());
        let last = TimeRange::last(3_600);
        assert_eq!(last.secs(), 3_600);
    }
}
