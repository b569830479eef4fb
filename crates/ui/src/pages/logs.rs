//! `/projects/{id}/logs`: the log lines the syslog listeners stored for the page's range,
//! newest first, under a chart of the requests and errors of the same span, so a burst of
//! errors can be read next to what the hosts logged. Filters (text, severity or worse,
//! host, app) are a GET form: they live in the URL.
//!
//! Hosts, apps and messages come off the network from anyone who can reach the syslog
//! port: they are only ever text (Leptos escapes it), never markup.

use leptos::prelude::*;
use sightline_collector::{LogFilter, LogLine};
use sightline_protocol::SeriesPoint;

use super::series::{fill, rpm};
use super::{Chrome, Ctx, PageHead, TopBar};
use crate::chart::{Marker, MultiChart, Series};
use crate::format;
use crate::range::Window;

/// Lines shown at most; the page says so when there are more.
pub(crate) const LOG_LINES: u32 = 200;

/// Longest text, host or app filter (as the logs API's).
const MAX_FILTER_LEN: usize = 200;

/// Syslog severities (RFC 5424), index = severity: 0 is the most severe.
pub(crate) const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The filters as the URL and the form carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogFilters {
    /// Substring of the message.
    pub(crate) text: String,
    /// This severity or worse (a lower number).
    pub(crate) severity: Option<u8>,
    pub(crate) host: String,
    pub(crate) app: String,
}

/// A filter parameter that names no severity, or is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadLogFilter;

impl LogFilters {
    /// From `?query=&severity=&host=&app=`; the severity by name (`warning`) or number.
    pub(crate) fn from_params(
        text: Option<&str>,
        severity: Option<&str>,
        host: Option<&str>,
        app: Option<&str>,
    ) -> Result<LogFilters, BadLogFilter> {
        let bounded = |v: Option<&str>| -> Result<String, BadLogFilter> {
            let v = v.unwrap_or("").trim();
            if v.len() > MAX_FILTER_LEN {
                return Err(BadLogFilter);
            }
            Ok(v.to_owned())
        };
        let severity = match severity.map(str::trim).unwrap_or("") {
            "" => None,
            name => Some(
                SEVERITIES
                    .iter()
                    .position(|s| *s == name)
                    .or_else(|| name.parse::<usize>().ok().filter(|n| *n < SEVERITIES.len()))
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(BadLogFilter)?,
            ),
        };
        Ok(LogFilters {
            text: bounded(text)?,
            severity,
            host: bounded(host)?,
            app: bounded(app)?,
        })
    }

    /// The store's filter over `window`.
    pub(crate) fn filter(&self, window: Window) -> LogFilter {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        LogFilter {
            text: some(&self.text),
            severity: self.severity,
            host: some(&self.host),
            app: some(&self.app),
            since_ms: Some(window.since.saturating_mul(1000)),
            until_ms: Some(window.until.saturating_mul(1000)),
            limit: LOG_LINES,
        }
    }

    /// The URL parameters; empty ones left out.
    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.text.is_empty() {
            out.push(("query", self.text.clone()));
        }
        if let Some(name) = self.severity.and_then(|s| SEVERITIES.get(usize::from(s))) {
            out.push(("severity", (*name).to_owned()));
        }
        if !self.host.is_empty() {
            out.push(("host", self.host.clone()));
        }
        if !self.app.is_empty() {
            out.push(("app", self.app.clone()));
        }
        out
    }
}

/// What the logs page shows, fetched by the handler.
#[derive(Debug, Clone)]
pub(crate) struct LogsList {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    pub(crate) now: i64,
    /// Requests and errors of the window, as the collector's series.
    pub(crate) series: Vec<SeriesPoint>,
    pub(crate) filters: LogFilters,
    /// Newest first, at most [`LOG_LINES`].
    pub(crate) lines: Vec<LogLine>,
    /// Switch flips in the range, drawn on the chart.
    pub(crate) markers: Vec<Marker>,
}

/// `HH:MM:SS` (UTC) of unix milliseconds.
fn clock_seconds(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    format!("{}:{:02}", format::clock(secs), secs.rem_euclid(60))
}

/// The severity as a small coloured label; unknown severities show as `—`.
#[component]
fn SeverityBadge(severity: Option<u8>) -> impl IntoView {
    match severity.and_then(|s| SEVERITIES.get(usize::from(s)).copied()) {
        Some(name) => {
            view! { <span class=format!("badge sev sev-{name}") data-severity=name>{name}</span> }
                .into_any()
        }
        None => view! { <span class="badge sev" data-severity="">"—"</span> }.into_any(),
    }
}

/// The search and filter form (GET: the filters land in the URL).
#[component]
fn LogFilterForm(ctx: Ctx, filters: LogFilters) -> impl IntoView {
    let options = std::iter::once((String::new(), "Any severity".to_owned()))
        .chain(SEVERITIES.iter().enumerate().map(|(i, name)| {
            let label = if i == 0 {
                (*name).to_owned()
            } else {
                format!("{name} or worse")
            };
            ((*name).to_owned(), label)
        }))
        .map(|(value, label)| {
            let selected = filters
                .severity
                .and_then(|s| SEVERITIES.get(usize::from(s)))
                .map_or(value.is_empty(), |name| *name == value);
            view! { <option value=value selected=selected>{label}</option> }
        })
        .collect_view();
    let hidden = ctx.hidden_fields();
    view! {
        <form class="filters" method="get" action=ctx.path.clone() role="search">
            {hidden}
            <label class="grow">
                <span>"Search"</span>
                <input type="search" name="query" value=filters.text.clone()
                    maxlength=MAX_FILTER_LEN placeholder="text in the message"/>
            </label>
            <label><span>"Severity"</span><select name="severity">{options}</select></label>
            <label>
                <span>"Host"</span>
                <input type="text" name="host" value=filters.host.clone()
                    maxlength=MAX_FILTER_LEN size="12"/>
            </label>
            <label>
                <span>"App"</span>
                <input type="text" name="app" value=filters.app.clone()
                    maxlength=MAX_FILTER_LEN size="12"/>
            </label>
            <button type="submit">"Apply"</button>
        </form>
    }
}

/// Requests and 5xx answers per minute over the window: one chart, two lines.
#[component]
fn TrafficStrip(
    steps: Vec<SeriesPoint>,
    step: i64,
    now: i64,
    markers: Vec<Marker>,
) -> impl IntoView {
    let ts: Vec<i64> = steps.iter().map(|s| s.ts).collect();
    let per_minute = 60.0 / step.max(1) as f64;
    let requests = rpm(&steps, step, now)
        .into_iter()
        .map(|p| p.value)
        .collect();
    let errors = steps
        .iter()
        .map(|s| (s.ts + step <= now).then_some(s.errors as f64 * per_minute))
        .collect();
    let series = vec![
        Series {
            name: "requests",
            values: requests,
        },
        Series {
            name: "errors",
            values: errors,
        },
    ];
    view! {
        <section class="charts logs-charts" aria-label="Requests and errors in this range">
            <MultiChart title="Requests and errors (5xx)" unit="req/min" ts=ts series=series markers=markers/>
        </section>
    }
}

/// The logs page.
#[component]
pub(crate) fn LogsPage(data: LogsList) -> impl IntoView {
    let LogsList {
        chrome,
        window,
        now,
        series,
        filters,
        lines,
        markers,
    } = data;
    let steps = fill(&series, window);
    let ctx = chrome.ctx.clone();
    let requests: u64 = steps.iter().map(|s| s.requests).sum();
    let errors: u64 = steps.iter().map(|s| s.errors).sum();
    let errors_link = ctx.link("/issues", &[]);
    let shown = lines.len();
    let body = if lines.is_empty() {
        let text = if filters == LogFilters::default() {
            "No log lines in this range. Point rsyslog, syslog-ng or `logger` at the \
             collector's syslog port (UDP or TCP) and lines show up here."
        } else {
            "No log lines match these filters in this range."
        };
        view! { <p class="empty">{text}</p> }.into_any()
    } else {
        let rows = lines
            .into_iter()
            .map(|line| {
                let host = line.host.unwrap_or_default();
                let app = line.app.unwrap_or_default();
                let day = format::day(line.timestamp_ms.div_euclid(1000));
                let truncated = line
                    .truncated
                    .then(|| view! { <span class="muted">" (cut)"</span> });
                view! {
                    <tr data-log=line.id>
                        <td class="when" title=line.timestamp>
                            <span class="opt">{day}" "</span>{clock_seconds(line.timestamp_ms)}
                        </td>
                        <td class="host">{host}</td>
                        <td class="app">{app}</td>
                        <td><SeverityBadge severity=line.severity/></td>
                        <td class="msg">{line.message}{truncated}</td>
                    </tr>
                }
            })
            .collect_view();
        let more = (shown == LOG_LINES as usize).then(|| {
            view! {
                <p class="muted">
                    {format!("The newest {LOG_LINES} lines are shown; narrow the filters or the range for older ones.")}
                </p>
            }
        });
        view! {
            <div class="table-wrap">
                <table class="logs">
                    <thead>
                        <tr>
                            <th scope="col">"Time (UTC)"</th>
                            <th scope="col">"Host"</th>
                            <th scope="col">"App"</th>
                            <th scope="col">"Severity"</th>
                            <th scope="col">"Message"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            {more}
        }
        .into_any()
    };
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title="Logs" ctx=ctx.clone() window=window/>
            <p class="note traffic-note">
                {format!(
                    "{} requests, {} answered 5xx in this range · ",
                    format::count(requests),
                    format::count(errors)
                )}
                <a href=errors_link>"Errors in this range →"</a>
            </p>
            <TrafficStrip steps=steps step=window.step now=now markers=markers/>
            <LogFilterForm ctx=ctx filters=filters/>
            {body}
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_what_they_print() {
        let filters =
            LogFilters::from_params(Some(" disk "), Some("warning"), Some("db-1"), None).unwrap();
        assert_eq!(filters.text, "disk");
        assert_eq!(filters.severity, Some(4));
        assert_eq!(
            filters.params(),
            vec![
                ("query", "disk".to_owned()),
                ("severity", "warning".to_owned()),
                ("host", "db-1".to_owned()),
            ]
        );
        assert_eq!(
            LogFilters::from_params(Some("disk"), Some("4"), Some("db-1"), None),
            Ok(filters)
        );
        assert_eq!(
            LogFilters::from_params(None, Some(""), None, None),
            Ok(LogFilters::default())
        );
        assert!(LogFilters::from_params(None, Some("loud"), None, None).is_err());
        assert!(LogFilters::from_params(None, Some("8"), None, None).is_err());
        assert!(LogFilters::from_params(Some(&"x".repeat(201)), None, None, None).is_err());
    }

    #[test]
    fn seconds_clock() {
        assert_eq!(clock_seconds(1_700_000_000_123), "22:13:20");
    }
}
