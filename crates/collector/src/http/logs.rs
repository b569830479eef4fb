//! `GET /api/0/projects/{project_id}/logs/`: searching the log lines the syslog
//! listeners stored.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;

use super::AppState;
use super::extract::{ApiQuery, ProjectId};
use crate::syslog::message::severity_from_name;
use crate::{Error, LogFilter, LogLine, MAX_LOG_LIMIT, Query};

/// Lines returned when a request names no limit.
const DEFAULT_LIMIT: u32 = 100;

/// Longest text, host or app filter.
const MAX_FILTER_LEN: usize = 200;

/// The log endpoints, for the `/api/0/` router.
pub(crate) fn endpoints() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![("/api/0/projects/{project_id}/logs/", get(list_logs))]
}

/// `?query=&severity=&host=&app=&since=&until=&limit=`; times in unix seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    query: Option<String>,
    severity: Option<String>,
    host: Option<String>,
    app: Option<String>,
    since: Option<f64>,
    until: Option<f64>,
    limit: Option<u32>,
}

impl LogParams {
    fn filter(self) -> Result<LogFilter, Error> {
        let bad = |reason: &str| Error::BadRequest(reason.to_owned());
        let text = |value: Option<String>, name: &str| -> Result<Option<String>, Error> {
            match value.filter(|v| !v.is_empty()) {
                Some(v) if v.len() > MAX_FILTER_LEN => Err(Error::BadRequest(format!(
                    "{name} must be at most {MAX_FILTER_LEN} bytes"
                ))),
                other => Ok(other),
            }
        };
        let severity = match self.severity.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => Some(severity_from_name(name).ok_or_else(|| {
                bad("severity must be 0-7 or a name: emerg, alert, crit, err, warning, notice, info, debug")
            })?),
            None => None,
        };
        let millis = |secs: Option<f64>| -> Result<Option<i64>, Error> {
            match secs {
                None => Ok(None),
                Some(s) if s.is_finite() && (0.0..=253_402_300_799.0).contains(&s) => {
                    Ok(Some((s * 1_000.0) as i64))
                }
                Some(_) => Err(bad("since and until must be unix seconds")),
            }
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LOG_LIMIT).contains(&limit) {
            return Err(Error::BadRequest(format!(
                "limit must be from 1 to {MAX_LOG_LIMIT}"
            )));
        }
        Ok(LogFilter {
            text: text(self.query, "query")?,
            severity,
            host: text(self.host, "host")?,
            app: text(self.app, "app")?,
            since_ms: millis(self.since)?,
            until_ms: millis(self.until)?,
            limit,
        })
    }
}

/// `GET /api/0/projects/{project_id}/logs/`: newest first.
async fn list_logs(
    State(query): State<Query>,
    ProjectId(project_id): ProjectId,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Json<Vec<LogLine>>, Error> {
    let filter = params.filter()?;
    Ok(Json(query.logs(project_id, &filter).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_filter() {
        let filter = LogParams {
            query: Some("disk".into()),
            severity: Some("warning".into()),
            host: Some(String::new()),
            since: Some(1.5),
            ..LogParams::default()
        }
        .filter()
        .unwrap();
        assert_eq!(filter.text.as_deref(), Some("disk"));
        assert_eq!(filter.severity, Some(4));
        assert_eq!(filter.host, None);
        assert_eq!(filter.since_ms, Some(1_500));
        assert_eq!(filter.limit, DEFAULT_LIMIT);
        for bad in [
            LogParams {
                severity: Some("loud".into()),
                ..LogParams::default()
            },
            LogParams {
                limit: Some(0),
                ..LogParams::default()
            },
            LogParams {
                since: Some(-1.0),
                ..LogParams::default()
            },
        ] {
            assert!(bad.filter().is_err());
        }
    }
}
