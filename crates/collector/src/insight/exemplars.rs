//! Exemplar reads for the dashboard: the requests kept whole with their waterfall, as the
//! `/api/0/projects/{id}/exemplars/` endpoints answer them, through [`Query`].

use super::{ExemplarDetail, ExemplarSummary};
use crate::{Error, Query, TimeRange};

/// Most exemplars one list read returns.
const MAX_EXEMPLARS: u32 = 1_000;

impl Query {
    /// Exemplars started in `range`, newest first, at most `limit` (capped at
    /// `MAX_EXEMPLARS`); with `route`, only that `(route, method)`; with `before` (an
    /// exemplar id), the next page after that exemplar; with `environment`, only that
    /// environment's. Empty when the store keeps no insight.
    pub async fn exemplars(
        &self,
        project_id: u64,
        range: TimeRange,
        route: Option<(&str, &str)>,
        before: Option<u64>,
        limit: u32,
        environment: Option<&str>,
    ) -> Result<Vec<ExemplarSummary>, Error> {
        if range.since >= range.until {
            return Err(Error::BadRequest("since must be before until".to_owned()));
        }
        if self.project(project_id).await?.is_none() {
            return Err(Error::ProjectNotFound);
        }
        let Some(store) = self.store().insight() else {
            return Ok(Vec::new());
        };
        store
            .exemplars(
                project_id,
                range,
                route,
                before,
                limit.clamp(1, MAX_EXEMPLARS),
                environment,
            )
            .await
    }

    /// One exemplar of the project with its waterfall; `None` when there is no such
    /// exemplar (or it was pruned, or the store keeps no insight).
    pub async fn exemplar(
        &self,
        project_id: u64,
        id: u64,
    ) -> Result<Option<ExemplarDetail>, Error> {
        if self.project(project_id).await?.is_none() {
            return Err(Error::ProjectNotFound);
        }
        let Some(store) = self.store().insight() else {
            return Ok(None);
        };
        store.exemplar(project_id, id).await
    }
}
