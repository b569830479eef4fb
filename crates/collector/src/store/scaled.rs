//! The scale-out backend: ClickHouse for what grows with traffic (error events, syslog
//! lines, metric windows and their rollup tiers), PostgreSQL for what is looked up and
//! changed by id (projects, agents, issues, switches). Every collector of a deployment is
//! stateless and identical: they share the two databases, and PostgreSQL's row locks and
//! unique keys keep issue creation and counts right when several of them ingest the same
//! fingerprint at once.
//!
//! A group commit is written in steps ([`step`]): PostgreSQL's agents and switch check
//! counts, then the issues (the event ids PostgreSQL has seen make a retry count nothing
//! twice) with their events in ClickHouse (a retried event id collapses), then ClickHouse's
//! log lines, insight windows and metric windows. The spool's shipper retries a round that
//! failed part-way with the steps already done ([`Store::write_resumable`]), so the steps
//! that add up — switch check counts, dropped-window counts, insight and metric windows —
//! are applied once. Only a collector that dies between a step and the round's end
//! repeats that round's done steps when it ships the spool again after its restart.

use async_trait::async_trait;

use super::clickhouse::{ClickHouseEvents, EventRow};
use super::postgres::PgMeta;
use super::{
    Aggregates, Cursor, EnvelopeIngest, Ingest, Issue, IssueFilter, IssueStatus, ItemCount,
    LogFilter, LogLine, MetricsIngest, NewLogLine, Project, Steps, Store, StoredEvent, TagValue,
    WriteSummary,
};
use crate::{Error, TimeRange};

/// The steps of a scale-out write, as bits of [`Store::write_resumable`]'s `done`.
mod step {
    pub(super) const METRICS_META: u32 = 1;
    pub(super) const EVENTS: u32 = 1 << 1;
    pub(super) const LOGS: u32 = 1 << 2;
    pub(super) const INSIGHT: u32 = 1 << 3;
    pub(super) const WINDOWS: u32 = 1 << 4;
}

/// ClickHouse plus PostgreSQL behind the [`Store`] trait.
pub(crate) struct ScaledStore {
    meta: PgMeta,
    events: ClickHouseEvents,
}

impl ScaledStore {
    /// Connects to both databases and brings both schemas up to date. `events` is a
    /// ClickHouse URL (`clickhouse://host:8123/db` or `http://…`), `meta` a PostgreSQL
    /// one (`postgres://user:password@host:5432/db`).
    pub(crate) async fn connect(events: &str, meta: &str) -> Result<ScaledStore, Error> {
        let (events, meta) = tokio::try_join!(ClickHouseEvents::connect(events), async {
            PgMeta::connect(meta).await
        })?;
        Ok(ScaledStore { meta, events })
    }

    /// Keeps tiers for `retention` (and reads the tier that fits each range).
    pub(crate) fn with_retention(mut self, retention: crate::insight::RetentionConfig) -> Self {
        self.events = self.events.with_retention(retention);
        self
    }

    /// The metadata side, for the switch listener.
    pub(crate) fn meta(&self) -> &PgMeta {
        &self.meta
    }
}

/// The commit's envelopes' events with the issues PostgreSQL filed them under.
fn event_rows<'a>(envelopes: &[&'a EnvelopeIngest], issue_ids: &[Vec<u64>]) -> Vec<EventRow<'a>> {
    envelopes
        .iter()
        .zip(issue_ids)
        .flat_map(|(envelope, ids)| {
            envelope
                .events
                .iter()
                .zip(ids)
                .map(|(event, &issue_id)| EventRow {
                    project_id: envelope.project_id,
                    issue_id,
                    received_at: envelope.received_at,
                    event,
                })
        })
        .collect()
}

#[async_trait]
impl Store for ScaledStore {
    fn switches(&self) -> Option<&dyn crate::switches::SwitchStore> {
        Some(&self.meta)
    }

    fn insight(&self) -> Option<&dyn crate::insight::InsightStore> {
        Some(&self.events)
    }

    async fn ping(&self) -> Result<(), Error> {
        let (events, meta) = tokio::join!(self.events.ping(), self.meta.ping());
        events.and(meta)
    }

    async fn projects(&self) -> Result<Vec<Project>, Error> {
        self.meta.projects().await
    }

    async fn project(&self, id: u64) -> Result<Option<Project>, Error> {
        self.meta.project(id).await
    }

    async fn ensure_default_project(&self) -> Result<(), Error> {
        self.meta.ensure_default_project().await
    }

    async fn write(&self, batches: &[Ingest]) -> Result<WriteSummary, Error> {
        self.write_resumable(batches, &mut 0).await
    }

    async fn write_resumable(
        &self,
        batches: &[Ingest],
        done: &mut u32,
    ) -> Result<WriteSummary, Error> {
        let mut metrics: Vec<&MetricsIngest> = Vec::new();
        let mut envelopes: Vec<&EnvelopeIngest> = Vec::new();
        let mut logs: Vec<&[NewLogLine]> = Vec::new();
        let mut summary = WriteSummary::default();
        for ingest in batches {
            match ingest {
                Ingest::Metrics(batch) => metrics.push(batch),
                Ingest::Envelope(envelope) => envelopes.push(envelope),
                Ingest::Logs(lines) => logs.push(lines),
            }
        }
        let todo = |step: u32, done: &u32| *done & step == 0;
        if !metrics.is_empty() && todo(step::METRICS_META, done) {
            summary.agent_dropped = self.meta.write_metrics_meta(&metrics).await?;
            *done |= step::METRICS_META;
        }
        if !envelopes.is_empty() && todo(step::EVENTS, done) {
            let written = self.meta.write_envelopes(&envelopes).await?;
            summary.events = written.events;
            summary.duplicate_events = written.duplicates;
            self.events
                .insert_events(&event_rows(&envelopes, &written.issue_ids))
                .await?;
            *done |= step::EVENTS;
        }
        if !logs.is_empty() && todo(step::LOGS, done) {
            self.events.insert_logs(&logs).await?;
            summary.log_lines = logs.iter().map(|lines| lines.len() as u64).sum();
            *done |= step::LOGS;
        }
        if !metrics.is_empty() && todo(step::INSIGHT, done) {
            self.events.insert_insight(&metrics).await?;
            *done |= step::INSIGHT;
        }
        if !metrics.is_empty() && todo(step::WINDOWS, done) {
            self.events.insert_windows(&metrics).await?;
            summary.windows = metrics.iter().map(|m| m.batch.windows.len() as u64).sum();
            *done |= step::WINDOWS;
        }
        Ok(summary)
    }

    async fn route_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        environment: Option<&str>,
    ) -> Result<Aggregates<(String, String)>, Error> {
        self.events
            .route_aggregates(project_id, range, environment)
            .await
    }

    async fn series_aggregates(
        &self,
        project_id: u64,
        range: TimeRange,
        steps: Steps,
        route: Option<(&str, &str)>,
        environment: Option<&str>,
    ) -> Result<Aggregates<i64>, Error> {
        self.events
            .series_aggregates(project_id, range, steps, route, environment)
            .await
    }

    async fn issues(&self, project_id: u64, filter: &IssueFilter) -> Result<Vec<Issue>, Error> {
        self.meta.issues(project_id, filter).await
    }

    async fn issue(&self, issue_id: u64) -> Result<Option<Issue>, Error> {
        self.meta.issue(issue_id).await
    }

    async fn issue_tags(&self, issue_id: u64, top: u32) -> Result<Vec<TagValue>, Error> {
        self.meta.issue_tags(issue_id, top).await
    }

    async fn issue_events(
        &self,
        issue_id: u64,
        limit: u32,
        cursor: Option<Cursor>,
        full: bool,
    ) -> Result<Vec<StoredEvent>, Error> {
        self.events
            .issue_events(issue_id, limit, cursor, full)
            .await
    }

    async fn event(&self, project_id: u64, event_id: &str) -> Result<Option<StoredEvent>, Error> {
        self.events.event(project_id, event_id).await
    }

    async fn set_issue_status(
        &self,
        project_id: Option<u64>,
        ids: &[u64],
        status: IssueStatus,
        now: f64,
    ) -> Result<Vec<u64>, Error> {
        self.meta
            .set_issue_status(project_id, ids, status, now)
            .await
    }

    async fn item_counts(&self, project_id: u64, since_day: &str) -> Result<Vec<ItemCount>, Error> {
        self.meta.item_counts(project_id, since_day).await
    }

    async fn close(&self) {
        self.meta.close().await;
    }

    async fn environments(&self, project_id: u64) -> Result<Vec<String>, Error> {
        let (agents, events) = tokio::try_join!(
            self.meta.agent_environments(project_id),
            self.meta.event_environments(project_id)
        )?;
        let mut all: Vec<String> = agents.into_iter().chain(events).collect();
        all.sort();
        all.dedup();
        all.truncate(super::MAX_ENVIRONMENTS as usize);
        Ok(all)
    }

    async fn prune_expired(
        &self,
        retention: &crate::insight::RetentionConfig,
        now: i64,
    ) -> Result<u64, Error> {
        self.events.prune(retention, now).await
    }

    async fn logs(&self, project_id: u64, filter: &LogFilter) -> Result<Vec<LogLine>, Error> {
        self.events.search_logs(project_id, filter).await
    }

    async fn prune_logs(&self, max_lines: u64, received_before_ms: i64) -> Result<u64, Error> {
        self.events.prune_logs(max_lines, received_before_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::step;
    use crate::TimeRange;
    use crate::store::conformance::{Backend, window};

    /// Requests of `/a` the store counts around `start`.
    async fn requests(store: &dyn super::Store, start: i64) -> u64 {
        let range = TimeRange {
            since: start - 60,
            until: start + 120,
        };
        let routes = store
            .route_aggregates(1, range, None)
            .await
            .expect("routes");
        routes.classes.iter().map(|c| c.count).sum()
    }

    #[tokio::test]
    async fn a_resumed_write_skips_the_steps_already_done() {
        let backend = Backend::scaled().await;
        let store = &*backend.store;
        let start = (crate::query::unix_now() - 600) / 60 * 60;
        let batch = [window("i-1", None, start, "/a", 2, &[1_000, 2_000, 3_000])];

        let mut done = 0;
        store
            .write_resumable(&batch, &mut done)
            .await
            .expect("write");
        assert_eq!(done, step::METRICS_META | step::INSIGHT | step::WINDOWS);
        assert_eq!(requests(store, start).await, 3);

        // A retry of a round whose windows were already inserted inserts nothing again.
        let mut done = step::METRICS_META | step::INSIGHT | step::WINDOWS;
        store
            .write_resumable(&batch, &mut done)
            .await
            .expect("skip");
        assert_eq!(requests(store, start).await, 3);

        // One that failed before its windows inserts them (and only them).
        let mut done = step::METRICS_META | step::INSIGHT;
        store
            .write_resumable(&batch, &mut done)
            .await
            .expect("resume");
        assert_eq!(done, step::METRICS_META | step::INSIGHT | step::WINDOWS);
        assert_eq!(requests(store, start).await, 6);
    }
}
