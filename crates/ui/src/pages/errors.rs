//! `/projects/{id}/issues`: the project's error issues, searchable and filterable (a GET
//! form, so the filters are in the URL), with a sparkline of each issue's events over the
//! page's range and bulk resolve/ignore (a POST form around the table); and
//! `/projects/{id}/issues/{issue}?event=…`: one issue with one of its events — stack
//! trace, tags, feature flags, breadcrumbs, request — and why its events were grouped.
//!
//! Everything shown here comes from events an SDK sent, so all of it is text: Leptos
//! escapes it, nothing is ever rendered as markup.

use leptos::prelude::*;
use serde_json::Value;
use sightline_collector::{Issue, IssueFilter, IssueSort, IssueStatus, StoredEvent, TagValue};

use super::{Chrome, Ctx, Notice, NoticeLine, PageHead, TopBar};
use crate::format;
use crate::range::Window;

/// Issues per page of the list.
pub(crate) const PAGE_SIZE: u32 = 50;

/// Longest text, environment or release filter (as the API's).
pub(crate) const MAX_FILTER_LEN: usize = 200;

/// Levels an issue can have, most severe first.
pub(crate) const LEVELS: [&str; 5] = ["fatal", "error", "warning", "info", "debug"];

/// The list's filters as the URL and the form carry them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct IssueFilters {
    /// Words to find in the title or culprit.
    pub(crate) text: String,
    /// `None`: every status (`?status=all`).
    pub(crate) status: Option<IssueStatus>,
    pub(crate) level: Option<&'static str>,
    pub(crate) environment: String,
    pub(crate) release: String,
    pub(crate) sort: IssueSort,
    /// Where the page continues (`<sort value>:<id>`), from the previous page's link.
    pub(crate) cursor: Option<String>,
}

/// A filter parameter that names nothing we know, or is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadFilter;

fn sort_name(sort: IssueSort) -> &'static str {
    match sort {
        IssueSort::LastSeen => "date",
        IssueSort::Count => "freq",
        IssueSort::FirstSeen => "new",
    }
}

impl IssueFilters {
    /// From the query parameters; absent status means unresolved, as Sentry's.
    pub(crate) fn from_params(
        text: Option<&str>,
        status: Option<&str>,
        level: Option<&str>,
        environment: Option<&str>,
        release: Option<&str>,
        sort: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<IssueFilters, BadFilter> {
        let bounded = |v: Option<&str>| -> Result<String, BadFilter> {
            let v = v.unwrap_or("").trim();
            if v.len() > MAX_FILTER_LEN {
                return Err(BadFilter);
            }
            Ok(v.to_owned())
        };
        let status = match status.unwrap_or("unresolved") {
            "" | "all" => None,
            other => Some(IssueStatus::parse(other).ok_or(BadFilter)?),
        };
        let level = match level.unwrap_or("") {
            "" => None,
            other => Some(*LEVELS.iter().find(|l| **l == other).ok_or(BadFilter)?),
        };
        let sort = match sort.unwrap_or("") {
            "" | "date" => IssueSort::LastSeen,
            "freq" => IssueSort::Count,
            "new" => IssueSort::FirstSeen,
            _ => return Err(BadFilter),
        };
        let cursor = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                sightline_collector::Cursor::decode(c).ok_or(BadFilter)?;
                Some(c.to_owned())
            }
        };
        Ok(IssueFilters {
            text: bounded(text)?,
            status,
            level,
            environment: bounded(environment)?,
            release: bounded(release)?,
            sort,
            cursor,
        })
    }

    /// The store's filter for one page.
    pub(crate) fn filter(&self) -> IssueFilter {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        IssueFilter {
            status: self.status,
            level: self.level.map(str::to_owned),
            environment: some(&self.environment),
            release: some(&self.release),
            text: some(&self.text),
            sort: self.sort,
            limit: PAGE_SIZE,
            cursor: self
                .cursor
                .as_deref()
                .and_then(sightline_collector::Cursor::decode),
        }
    }

    /// The URL parameters; defaults left out, so a plain list has a plain URL.
    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.text.is_empty() {
            out.push(("query", self.text.clone()));
        }
        match self.status {
            Some(IssueStatus::Unresolved) => {}
            Some(status) => out.push(("status", status.as_str().to_owned())),
            None => out.push(("status", "all".to_owned())),
        }
        if let Some(level) = self.level {
            out.push(("level", level.to_owned()));
        }
        if !self.release.is_empty() {
            out.push(("release", self.release.clone()));
        }
        if self.sort != IssueSort::LastSeen {
            out.push(("sort", sort_name(self.sort).to_owned()));
        }
        if let Some(cursor) = &self.cursor {
            out.push(("cursor", cursor.clone()));
        }
        out
    }
}

/// Events of one issue per step of the page's range, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Volume {
    pub(crate) counts: Vec<u64>,
    /// More events than were read: the earliest steps may be short.
    pub(crate) capped: bool,
}

impl Volume {
    /// Steps in a sparkline.
    pub(crate) const STEPS: usize = 24;

    /// Counts `timestamps` (any order) into [`Volume::STEPS`] steps of `window`.
    pub(crate) fn of(
        timestamps: impl IntoIterator<Item = f64>,
        window: Window,
        capped: bool,
    ) -> Volume {
        let mut counts = vec![0u64; Self::STEPS];
        let span = (window.until - window.since).max(1) as f64;
        for ts in timestamps {
            let offset = ts - window.since as f64;
            if offset < 0.0 || ts >= window.until as f64 {
                continue;
            }
            let i = ((offset / span) * Self::STEPS as f64) as usize;
            if let Some(slot) = counts.get_mut(i.min(Self::STEPS - 1)) {
                *slot += 1;
            }
        }
        Volume { counts, capped }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One row of the list.
#[derive(Debug, Clone)]
pub(crate) struct IssueRow {
    pub(crate) issue: Issue,
    pub(crate) volume: Volume,
}

/// What the issues list shows.
#[derive(Debug, Clone)]
pub(crate) struct IssuesList {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    pub(crate) now: i64,
    pub(crate) filters: IssueFilters,
    pub(crate) rows: Vec<IssueRow>,
    /// The next page's cursor, when this page was full.
    pub(crate) next: Option<String>,
    pub(crate) notice: Option<Notice>,
}

/// A level as a small coloured label.
#[component]
pub(crate) fn LevelBadge(#[prop(into)] level: String) -> impl IntoView {
    // only known levels become a class; anything else is shown, not styled
    let class = match level.as_str() {
        "fatal" | "error" | "warning" | "info" | "debug" => format!("badge level-{level}"),
        _ => "badge".to_owned(),
    };
    view! { <span class=class>{level}</span> }
}

#[component]
fn StatusBadge(status: IssueStatus, substatus: Option<String>) -> impl IntoView {
    let label = match (status, substatus.as_deref()) {
        (IssueStatus::Unresolved, Some("regressed")) => "regressed",
        (IssueStatus::Unresolved, Some("new")) => "new",
        (status, _) => status.as_str(),
    };
    view! { <span class=format!("badge status-{}", status.as_str())>{label}</span> }
}

/// Bars of an issue's events per step; the exact counts are in `data-counts`.
#[component]
fn Sparkline(volume: Volume, #[prop(into)] range_label: String) -> impl IntoView {
    let max = volume.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let total = volume.total();
    let label = format!(
        "{}{} events, {range_label}",
        if volume.capped { "at least " } else { "" },
        format::count(total)
    );
    let bar_width = 100.0 / Volume::STEPS as f64;
    let bars = volume
        .counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let h = (*n as f64 / max * 18.0).max(1.5);
            view! {
                <rect
                    x=format!("{:.2}", i as f64 * bar_width + 0.4)
                    y=format!("{:.2}", 20.0 - h)
                    width=format!("{:.2}", bar_width - 0.8)
                    height=format!("{h:.2}")
                ></rect>
            }
        })
        .collect_view();
    let counts = volume
        .counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let aria = label.clone();
    view! {
        <svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none" role="img"
            aria-label=aria data-counts=counts>
            <title>{label}</title>
            <line class="spark-base" x1="0" y1="19.75" x2="100" y2="19.75"></line>
            {bars}
        </svg>
    }
}

/// The search and filter form (GET: the filters land in the URL).
#[component]
fn IssueFilterForm(ctx: Ctx, filters: IssueFilters) -> impl IntoView {
    let status = filters.status.map_or("all", IssueStatus::as_str);
    let status_options = [
        ("unresolved", "Unresolved"),
        ("resolved", "Resolved"),
        ("ignored", "Ignored"),
        ("all", "Any status"),
    ]
    .into_iter()
    .map(|(value, label)| view! { <option value=value selected=value == status>{label}</option> })
    .collect_view();
    let level_options = std::iter::once(("", "Any level"))
        .chain(LEVELS.iter().map(|l| (*l, *l)))
        .map(|(value, label)| {
            let selected = filters.level.unwrap_or("") == value;
            view! { <option value=value selected=selected>{label}</option> }
        })
        .collect_view();
    let sort_options = [
        (IssueSort::LastSeen, "Last seen"),
        (IssueSort::Count, "Events"),
        (IssueSort::FirstSeen, "First seen"),
    ]
    .into_iter()
    .map(|(sort, label)| {
        view! { <option value=sort_name(sort) selected=sort == filters.sort>{label}</option> }
    })
    .collect_view();
    // the range, live mode and environment ride along; the cursor does not (new filters,
    // first page)
    let hidden = ctx.hidden_fields();
    view! {
        <form class="filters" method="get" action=ctx.path.clone() role="search">
            {hidden}
            <label class="grow">
                <span>"Search"</span>
                <input type="search" name="query" value=filters.text.clone()
                    maxlength=MAX_FILTER_LEN placeholder="title or culprit"/>
            </label>
            <label><span>"Status"</span><select name="status">{status_options}</select></label>
            <label><span>"Level"</span><select name="level">{level_options}</select></label>
            <label>
                <span>"Release"</span>
                <input type="text" name="release" value=filters.release.clone()
                    maxlength=MAX_FILTER_LEN size="10"/>
            </label>
            <label><span>"Sort by"</span><select name="sort">{sort_options}</select></label>
            <button type="submit">"Apply"</button>
        </form>
    }
}

/// The link to an issue's page.
pub(crate) fn issue_href(ctx: &Ctx, id: u64) -> String {
    ctx.link(&format!("/issues/{id}"), &[])
}

#[component]
pub(crate) fn IssuesPage(data: IssuesList) -> impl IntoView {
    let IssuesList {
        chrome,
        window,
        now,
        filters,
        rows,
        next,
        notice,
    } = data;
    let ctx = chrome.ctx.clone();
    let range_label = ctx.range.label().to_lowercase();
    let back = ctx.here();
    let count = rows.len();
    let body = if rows.is_empty() {
        let text = if filters == IssueFilters::default() {
            "No unresolved issues. Errors your apps report show up here."
        } else {
            "No issues match these filters."
        };
        view! { <p class="empty">{text}</p> }.into_any()
    } else {
        let table_rows = rows
            .into_iter()
            .map(|IssueRow { issue, volume }| {
                let href = issue_href(&ctx, issue.id);
                let id = issue.id.to_string();
                let row_id = id.clone();
                let check_label = format!("Select issue {}", issue.id);
                let culprit = (!issue.culprit.is_empty()).then(|| {
                    view! { <span class="culprit">{issue.culprit.clone()}</span> }
                });
                view! {
                    <tr data-issue=row_id>
                        <td class="pick">
                            <input type="checkbox" name="id" value=id aria-label=check_label/>
                        </td>
                        <td class="issue">
                            <a href=href class="issue-title">{issue.title.clone()}</a>
                            {culprit}
                        </td>
                        <td><LevelBadge level=issue.level.clone()/></td>
                        <td class="opt"><StatusBadge status=issue.status substatus=issue.substatus.clone()/></td>
                        <td class="spark-cell opt"><Sparkline volume=volume range_label=range_label.clone()/></td>
                        <td class="num">{format::count(issue.times_seen)}</td>
                        <td class="num opt">{format::count(issue.user_count)}</td>
                        <td class="opt" title=format::date_time(issue.first_seen as i64)>
                            {format::ago(issue.first_seen as i64, now)}
                        </td>
                        <td title=format::date_time(issue.last_seen as i64)>
                            {format::ago(issue.last_seen as i64, now)}
                        </td>
                    </tr>
                }
            })
            .collect_view();
        let unresolve = (filters.status != Some(IssueStatus::Unresolved)).then(|| {
            view! { <button type="submit" name="status" value="unresolved">"Unresolve"</button> }
        });
        let action = format!("/projects/{}/issues/status", ctx.project);
        view! {
            <form class="bulk" method="post" action=action>
                <input type="hidden" name="back" value=back/>
                <div class="bulk-bar">
                    <span class="muted">"Selected issues:"</span>
                    <button type="submit" name="status" value="resolved">"Resolve"</button>
                    <button type="submit" name="status" value="ignored">"Ignore"</button>
                    {unresolve}
                </div>
                <div class="table-wrap">
                    <table class="issues">
                        <thead>
                            <tr>
                                <th scope="col" class="pick"><span class="sr-only">"Select"</span></th>
                                <th scope="col">"Issue"</th>
                                <th scope="col">"Level"</th>
                                <th scope="col" class="opt">"Status"</th>
                                <th scope="col" class="opt">{format!("Events, {range_label}")}</th>
                                <th scope="col" class="num">"Events"</th>
                                <th scope="col" class="num opt">"Users"</th>
                                <th scope="col" class="opt">"First seen"</th>
                                <th scope="col">"Last seen"</th>
                            </tr>
                        </thead>
                        <tbody>{table_rows}</tbody>
                    </table>
                </div>
            </form>
        }
        .into_any()
    };
    let pager = {
        let first = filters.cursor.is_some().then(|| {
            let href = Ctx {
                keep: IssueFilters {
                    cursor: None,
                    ..filters.clone()
                }
                .params(),
                ..ctx.clone()
            }
            .here();
            view! { <a href=href>"← First page"</a> }
        });
        let more = next.map(|cursor| {
            let href = Ctx {
                keep: IssueFilters {
                    cursor: Some(cursor),
                    ..filters.clone()
                }
                .params(),
                ..ctx.clone()
            }
            .here();
            view! { <a href=href rel="next">"Next page →"</a> }
        });
        (first.is_some() || more.is_some())
            .then(|| view! { <nav class="pager">{first}{more}</nav> })
    };
    let note = format!("{count} shown · sparklines cover the range");
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title="Issues" ctx=ctx.clone() window=window note=note/>
            <NoticeLine notice=notice/>
            <IssueFilterForm ctx=ctx filters=filters/>
            {body}
            {pager}
        </main>
    }
}

// ---------------------------------------------------------------- the issue page

/// Where the shown event sits among the issue's events.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventNav {
    /// Event ids of the newer and older neighbours.
    pub(crate) newer: Option<String>,
    pub(crate) older: Option<String>,
    /// 1 for the newest, when it was found among the newest events read.
    pub(crate) position: Option<u64>,
}

/// What an issue's page shows.
#[derive(Debug, Clone)]
pub(crate) struct IssueDetail {
    pub(crate) chrome: Chrome,
    pub(crate) now: i64,
    pub(crate) issue: Issue,
    pub(crate) tags: Vec<TagValue>,
    /// The event shown, with its payload; `None` when the issue has none stored.
    pub(crate) event: Option<StoredEvent>,
    pub(crate) nav: EventNav,
    pub(crate) notice: Option<Notice>,
}

/// A JSON value as one line of text (strings without their quotes).
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Sentry sends lists either bare or as `{"values": [...]}`.
fn values_of(value: Option<&Value>) -> &[Value] {
    match value {
        Some(Value::Array(items)) => items,
        Some(Value::Object(map)) => map
            .get("values")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice),
        _ => &[],
    }
}

/// One frame: function, where, and the source lines around it when the SDK sent them.
#[component]
fn Frame(frame: Value) -> impl IntoView {
    let in_app = frame.get("in_app").and_then(Value::as_bool) == Some(true);
    let function = str_at(&frame, "function").unwrap_or("?").to_owned();
    let file = str_at(&frame, "filename")
        .or_else(|| str_at(&frame, "abs_path"))
        .or_else(|| str_at(&frame, "module"))
        .unwrap_or("")
        .to_owned();
    let line = frame.get("lineno").and_then(Value::as_u64);
    let place = match (file.is_empty(), line) {
        (true, _) => String::new(),
        (false, Some(line)) => format!("{file}:{line}"),
        (false, None) => file,
    };
    let context = str_at(&frame, "context_line").map(|current| {
        let before: Vec<String> = values_of(frame.get("pre_context")).iter().map(text_of).collect();
        let after: Vec<String> = values_of(frame.get("post_context")).iter().map(text_of).collect();
        let first = line.map(|l| l.saturating_sub(before.len() as u64));
        let number = move |i: usize| first.map(|f| format!("{:>5} ", f + i as u64)).unwrap_or_default();
        let n = before.len();
        let lines = before
            .into_iter()
            .enumerate()
            .map(|(i, text)| view! { <span class="ctx">{number(i)}{text}"\n"</span> })
            .collect_view();
        let after_lines = after
            .into_iter()
            .enumerate()
            .map(|(i, text)| view! { <span class="ctx">{number(n + 1 + i)}{text}"\n"</span> })
            .collect_view();
        view! {
            <pre class="source">{lines}<span class="hl">{number(n)}{current.to_owned()}"\n"</span>{after_lines}</pre>
        }
    });
    let class = if in_app { "frame in-app" } else { "frame" };
    view! {
        <li class=class>
            <div class="frame-head">
                <code class="fn">{function}</code>
                {(!place.is_empty()).then(|| view! { <span class="where">{place}</span> })}
                {in_app.then(|| view! { <span class="badge in-app-badge">"in app"</span> })}
            </div>
            {context}
        </li>
    }
}

/// Frames, most recent call first: in-app frames open, runs of other frames folded.
#[component]
fn Frames(frames: Vec<Value>) -> impl IntoView {
    let mut groups: Vec<(bool, Vec<Value>)> = Vec::new();
    for frame in frames.into_iter().rev() {
        let in_app = frame.get("in_app").and_then(Value::as_bool) == Some(true);
        match groups.last_mut() {
            Some((app, run)) if *app == in_app => run.push(frame),
            _ => groups.push((in_app, vec![frame])),
        }
    }
    // without in-app information nothing is folded: there would be nothing left to show
    let any_in_app = groups.iter().any(|(app, _)| *app);
    groups
        .into_iter()
        .map(|(in_app, run)| {
            let items = run
                .into_iter()
                .map(|frame| view! { <Frame frame=frame/> })
                .collect_view();
            if in_app || !any_in_app {
                view! { <ol class="frames">{items}</ol> }.into_any()
            } else {
                let n = items.len();
                let label = if n == 1 {
                    "1 other frame".to_owned()
                } else {
                    format!("{n} other frames")
                };
                view! {
                    <details class="other-frames">
                        <summary>{label}</summary>
                        <ol class="frames">{items}</ol>
                    </details>
                }
                .into_any()
            }
        })
        .collect_view()
}

/// The exceptions of an event (outermost first, as people read them), or its message.
#[component]
fn Exceptions(payload: Value) -> impl IntoView {
    let exceptions: Vec<Value> = values_of(payload.get("exception")).to_vec();
    if exceptions.is_empty() {
        let message = payload
            .get("logentry")
            .or_else(|| payload.get("message"))
            .map(|m| match m {
                Value::Object(_) => str_at(m, "formatted")
                    .or_else(|| str_at(m, "message"))
                    .unwrap_or("")
                    .to_owned(),
                other => text_of(other),
            })
            .unwrap_or_default();
        let frames = payload
            .get("stacktrace")
            .map(|s| values_of(s.get("frames")).to_vec())
            .unwrap_or_default();
        return view! {
            <section class="panel">
                <h2>"Message"</h2>
                <pre class="message-text">{message}</pre>
                {(!frames.is_empty()).then(|| view! { <Frames frames=frames/> })}
            </section>
        }
        .into_any();
    }
    let chained = exceptions.len() > 1;
    exceptions
        .into_iter()
        .rev()
        .enumerate()
        .map(|(i, exception)| {
            let kind = str_at(&exception, "type").unwrap_or("Error").to_owned();
            let value = str_at(&exception, "value").unwrap_or("").to_owned();
            let mechanism = exception
                .get("mechanism")
                .and_then(|m| str_at(m, "type"))
                .map(str::to_owned);
            let frames = exception
                .get("stacktrace")
                .map(|s| values_of(s.get("frames")).to_vec())
                .unwrap_or_default();
            let caused = (chained && i > 0).then(|| view! { <p class="muted">"which was caused by"</p> });
            view! {
                <section class="panel exception">
                    {caused}
                    <h2><code>{kind}</code></h2>
                    <p class="exc-value">{value}</p>
                    {mechanism.map(|m| view! { <p class="muted">"mechanism: " <code>{m}</code></p> })}
                    {if frames.is_empty() {
                        view! { <p class="muted">"No stack trace was sent."</p> }.into_any()
                    } else {
                        view! {
                            <p class="muted">"Most recent call first; in-app frames highlighted."</p>
                            <Frames frames=frames/>
                        }
                        .into_any()
                    }}
                </section>
            }
        })
        .collect_view()
        .into_any()
}

/// `contexts.flags` (Sentry's shape): the feature switches on for the event.
#[component]
fn Flags(payload: Value) -> impl IntoView {
    let flags: Vec<(String, String)> = payload
        .get("contexts")
        .and_then(|c| c.get("flags"))
        .map(|f| values_of(Some(f)).to_vec())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| {
            let name = str_at(f, "flag")?.to_owned();
            Some((name, f.get("result").map(text_of).unwrap_or_default()))
        })
        .collect();
    let body = if flags.is_empty() {
        view! { <p class="muted">"No feature switches were reported on for this event."</p> }
            .into_any()
    } else {
        let items = flags
            .into_iter()
            .map(|(flag, result)| {
                view! { <li><code>{flag}</code>" "<span class="badge">{result}</span></li> }
            })
            .collect_view();
        view! { <ul class="flags">{items}</ul> }.into_any()
    };
    view! {
        <section class="panel" id="flags">
            <h2>"Feature switches"</h2>
            {body}
        </section>
    }
}

#[component]
fn Breadcrumbs(payload: Value) -> impl IntoView {
    let crumbs = values_of(payload.get("breadcrumbs")).to_vec();
    if crumbs.is_empty() {
        return None;
    }
    let rows = crumbs
        .iter()
        .rev()
        .map(|c| {
            let when = c
                .get("timestamp")
                .map(|t| match t {
                    Value::Number(n) => n
                        .as_f64()
                        .map(|s| format::date_time(s as i64))
                        .unwrap_or_default(),
                    other => text_of(other),
                })
                .unwrap_or_default();
            let category = str_at(c, "category")
                .or_else(|| str_at(c, "type"))
                .unwrap_or("")
                .to_owned();
            let level = str_at(c, "level").unwrap_or("").to_owned();
            let message = str_at(c, "message")
                .map(str::to_owned)
                .or_else(|| c.get("data").filter(|d| !d.is_null()).map(Value::to_string));
            view! {
                <tr>
                    <td class="opt">{when}</td>
                    <td><code>{category}</code></td>
                    <td class="opt">{level}</td>
                    <td class="wrap">{message}</td>
                </tr>
            }
        })
        .collect_view();
    Some(view! {
        <section class="panel">
            <h2>"Breadcrumbs"</h2>
            <p class="muted">"Newest first."</p>
            <div class="table-wrap">
                <table class="kv">
                    <thead><tr>
                        <th scope="col" class="opt">"Time"</th>
                        <th scope="col">"Category"</th>
                        <th scope="col" class="opt">"Level"</th>
                        <th scope="col">"Message"</th>
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </section>
    })
}

#[component]
fn RequestPanel(payload: Value) -> impl IntoView {
    let request = payload.get("request").filter(|r| r.is_object())?.clone();
    let method = str_at(&request, "method").unwrap_or("").to_owned();
    let url = str_at(&request, "url").unwrap_or("").to_owned();
    let query = request
        .get("query_string")
        .map(text_of)
        .filter(|q| !q.is_empty());
    let headers: Vec<(String, String)> = match request.get("headers") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), text_of(v))).collect(),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| Some((text_of(p.get(0)?), text_of(p.get(1)?))))
            .collect(),
        _ => Vec::new(),
    };
    let data = request
        .get("data")
        .filter(|d| !d.is_null())
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default());
    let header_rows = headers
        .into_iter()
        .map(|(k, v)| view! { <tr><th scope="row"><code>{k}</code></th><td class="wrap">{v}</td></tr> })
        .collect_view();
    Some(view! {
        <section class="panel">
            <h2>"Request"</h2>
            <p class="request-line"><span class="method">{method}</span>" "<code>{url}</code></p>
            {query.map(|q| view! { <p>"Query: " <code>{q}</code></p> })}
            <div class="table-wrap"><table class="kv"><tbody>{header_rows}</tbody></table></div>
            {data.map(|d| view! { <h3>"Body"</h3><pre>{d}</pre> })}
        </section>
    })
}

/// The issue's tag summary: per key, its most frequent values with their share.
#[component]
fn TagSummary(tags: Vec<TagValue>) -> impl IntoView {
    if tags.is_empty() {
        return None;
    }
    let groups = tags
        .chunk_by(|a, b| a.key == b.key)
        .map(|chunk| {
            let key = chunk[0].key.clone();
            let total = chunk[0].total.max(1) as f64;
            let values = chunk
                .iter()
                .map(|v| {
                    let share = v.count as f64 / total;
                    view! {
                        <li>
                            <span class="tag-value">{v.value.clone()}</span>
                            <span class="muted">{format!(" {} · {}", format::count(v.count), format::percent(share))}</span>
                        </li>
                    }
                })
                .collect_view();
            view! { <div class="tag"><dt><code>{key}</code></dt><dd><ul>{values}</ul></dd></div> }
        })
        .collect_view();
    Some(view! {
        <section class="panel">
            <h2>"Tags"</h2>
            <dl class="tags">{groups}</dl>
        </section>
    })
}

/// Status changes as forms: they POST, then come back here.
#[component]
fn StatusActions(project: u64, issue: u64, status: IssueStatus, back: String) -> impl IntoView {
    let action = format!("/projects/{project}/issues/{issue}/status");
    let buttons = [
        (IssueStatus::Resolved, "Resolve"),
        (IssueStatus::Ignored, "Ignore"),
        (IssueStatus::Unresolved, "Unresolve"),
    ]
    .into_iter()
    .filter(|(s, _)| *s != status)
    .map(|(s, label)| {
        let class = if s == IssueStatus::Resolved {
            "primary"
        } else {
            ""
        };
        view! { <button type="submit" name="status" value=s.as_str() class=class>{label}</button> }
    })
    .collect_view();
    view! {
        <form class="actions" method="post" action=action>
            <input type="hidden" name="back" value=back/>
            {buttons}
        </form>
    }
}

#[component]
pub(crate) fn IssuePage(data: IssueDetail) -> impl IntoView {
    let IssueDetail {
        chrome,
        now,
        issue,
        tags,
        event,
        nav,
        notice,
    } = data;
    let ctx = chrome.ctx.clone();
    let back = ctx.link("/issues", &[]);
    let here = ctx.here();
    let event_link = |id: &str| {
        Ctx {
            keep: vec![("event", id.to_owned())],
            ..ctx.clone()
        }
        .here()
    };
    let tiles = view! {
        <dl class="tiles">
            <div class="tile"><dt>"Events"</dt><dd>{format::count(issue.times_seen)}</dd></div>
            <div class="tile"><dt>"Users"</dt><dd>{format::count(issue.user_count)}</dd></div>
            <div class="tile"><dt>"First seen"</dt>
                <dd title=format::date_time(issue.first_seen as i64)>{format::ago(issue.first_seen as i64, now)}</dd></div>
            <div class="tile"><dt>"Last seen"</dt>
                <dd title=format::date_time(issue.last_seen as i64)>{format::ago(issue.last_seen as i64, now)}</dd></div>
            <div class="tile"><dt>"Last release"</dt><dd class="small">{issue.last_release.clone().unwrap_or_else(|| "–".to_owned())}</dd></div>
            <div class="tile"><dt>"Last environment"</dt><dd class="small">{issue.last_environment.clone().unwrap_or_else(|| "–".to_owned())}</dd></div>
        </dl>
    };
    let grouping_values = issue
        .grouping_values
        .iter()
        .map(|v| view! { <li><code>{v.clone()}</code></li> })
        .collect_view();
    let why = view! {
        <section class="panel" id="grouping">
            <h2>"Why these events are grouped"</h2>
            <p>"Grouped by " <strong class="grouped-by">{issue.grouped_by.clone()}</strong>
               ": events whose " {issue.grouped_by.clone()} " gives these values share this issue."</p>
            <ol class="grouping-values">{grouping_values}</ol>
            <p class="muted">"Hash " <code>{issue.hash.clone()}</code></p>
        </section>
    };
    let event_view = match event {
        None => {
            view! { <p class="empty">"No event of this issue is stored any more."</p> }.into_any()
        }
        Some(event) => {
            let payload = event.payload.clone().unwrap_or(Value::Null);
            let newer = nav
                .newer
                .as_deref()
                .map(|id| view! { <a href=event_link(id) rel="prev">"← Newer"</a> });
            let older = nav
                .older
                .as_deref()
                .map(|id| view! { <a href=event_link(id) rel="next">"Older →"</a> });
            let latest_href = Ctx {
                keep: Vec::new(),
                ..ctx.clone()
            }
            .here();
            let latest = nav
                .newer
                .is_some()
                .then(|| view! { <a href=latest_href>"Latest"</a> });
            let position = nav.position.map(|p| {
                format!(
                    "event {} of {}",
                    format::count(p),
                    format::count(issue.times_seen)
                )
            });
            let event_tags = event
                .tags
                .iter()
                .map(|(k, v)| view! { <li><code>{k.clone()}</code>" = "<span class="tag-value">{v.clone()}</span></li> })
                .collect_view();
            let user = event
                .user
                .clone()
                .map(|u| view! { <p>"User: " <code>{u}</code></p> });
            view! {
                <section class="panel event-head">
                    <div class="event-nav">
                        <div>
                            <h2>"Event " <code class="event-id">{event.event_id.clone()}</code></h2>
                            <p class="muted">{format::date_time(event.timestamp as i64)}
                                {position.map(|p| format!(" · {p}"))}</p>
                        </div>
                        <nav class="pager" aria-label="Events">{newer}{latest}{older}</nav>
                    </div>
                    {user}
                    <ul class="event-tags">{event_tags}</ul>
                </section>
                <Exceptions payload=payload.clone()/>
                <Flags payload=payload.clone()/>
                <Breadcrumbs payload=payload.clone()/>
                <RequestPanel payload=payload/>
            }
            .into_any()
        }
    };
    let title = issue.title.clone();
    let culprit = (!issue.culprit.is_empty()).then(|| issue.culprit.clone());
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <p class="crumbs"><a href=back>"← Issues"</a></p>
            <div class="page-head">
                <div>
                    <h1 class="issue-heading">{title}</h1>
                    {culprit.map(|c| view! { <p class="note culprit">{c}</p> })}
                </div>
            </div>
            <NoticeLine notice=notice/>
            <div class="issue-meta">
                <LevelBadge level=issue.level.clone()/>
                <StatusBadge status=issue.status substatus=issue.substatus.clone()/>
                <span class="muted">{issue.platform.clone()}</span>
                <StatusActions project=ctx.project issue=issue.id status=issue.status back=here/>
            </div>
            {tiles}
            <div class="issue-grid">
                <div class="issue-main">{event_view}</div>
                <aside class="issue-side">
                    <TagSummary tags=tags/>
                    {why}
                </aside>
            </div>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::{ProjectLink, Section, document};
    use crate::range::{Period, Range};
    use serde_json::json;

    const SCRIPT: &str = "<script>alert(1)</script>";
    const IMG: &str = "<img src=x onerror=alert(2)>";

    fn chrome(path: &str) -> Chrome {
        Chrome {
            ctx: Ctx {
                path: path.to_owned(),
                project: 1,
                range: Range::Preset(Period::Hours24),
                live: false,
                environment: None,
                keep: Vec::new(),
            },
            projects: vec![ProjectLink {
                id: 1,
                name: "default".to_owned(),
            }],
            environments: Vec::new(),
            section: Section::Errors,
            section_suffix: "/issues",
            theme: None,
            bundle: None,
        }
    }

    fn issue() -> Issue {
        Issue {
            id: 7,
            project_id: 1,
            hash: "abc123".to_owned(),
            title: format!("ValueError: {SCRIPT}"),
            culprit: format!("app.views in {IMG}"),
            level: "error".to_owned(),
            platform: "python".to_owned(),
            status: IssueStatus::Unresolved,
            substatus: Some("new".to_owned()),
            first_seen: 1_700_000_000.0,
            last_seen: 1_700_003_000.0,
            times_seen: 12,
            user_count: 3,
            grouped_by: "stacktrace".to_owned(),
            grouping_values: vec!["ValueError".to_owned(), "app.views:handler".to_owned()],
            last_release: Some("shop@1.2".to_owned()),
            last_environment: Some("production".to_owned()),
        }
    }

    fn event() -> StoredEvent {
        let frame = |function: &str, in_app: bool| {
            json!({"function": function, "filename": "app/views.py", "lineno": 42, "in_app": in_app,
                   "context_line": format!("raise ValueError({SCRIPT:?})"),
                   "pre_context": ["def handler(request):"], "post_context": []})
        };
        StoredEvent {
            id: 99,
            event_id: "bc3d031ef90846bb84c3520e28c01c4f".to_owned(),
            issue_id: 7,
            project_id: 1,
            timestamp: 1_700_003_000.0,
            received: 1_700_003_000.5,
            level: "error".to_owned(),
            title: issue().title,
            culprit: issue().culprit,
            platform: "python".to_owned(),
            environment: Some("production".to_owned()),
            release: Some("shop@1.2".to_owned()),
            user: Some("id:4711".to_owned()),
            hash: "abc123".to_owned(),
            grouped_by: "stacktrace".to_owned(),
            tags: vec![("browser".to_owned(), IMG.to_owned())],
            payload: Some(json!({
                "exception": {"values": [{
                    "type": "ValueError",
                    "value": SCRIPT,
                    "stacktrace": {"frames": [
                        frame("wsgi_app", false),
                        frame("dispatch", false),
                        frame("handler", true),
                    ]},
                }]},
                "contexts": {"flags": {"values": [
                    {"flag": "comments:new_editor", "result": true},
                    {"flag": IMG, "result": true},
                ]}},
                "breadcrumbs": {"values": [
                    {"timestamp": 1_700_002_999.0, "category": "http", "message": SCRIPT},
                ]},
                "request": {"method": "POST", "url": "http://shop.test/cart",
                            "headers": {"User-Agent": IMG}},
            })),
        }
    }

    fn issue_page(event: Option<StoredEvent>) -> String {
        let data = IssueDetail {
            chrome: chrome("/projects/1/issues/7"),
            now: 1_700_003_100,
            issue: issue(),
            tags: vec![TagValue {
                key: "browser".to_owned(),
                value: SCRIPT.to_owned(),
                count: 4,
                first_seen: 1_700_000_000.0,
                last_seen: 1_700_003_000.0,
                distinct_values: 1,
                total: 4,
            }],
            event,
            nav: EventNav {
                newer: None,
                older: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned()),
                position: Some(1),
            },
            notice: Some(Notice::Resolved),
        };
        document(None, None, move || view! { <IssuePage data=data/> })
    }

    /// Payloads appear only escaped: no tag an attacker wrote survives as markup.
    fn assert_escaped(html: &str) {
        assert!(!html.contains("<script>alert"), "raw script tag");
        assert!(!html.contains("<img src=x"), "raw img tag");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "script shown as text"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;"),
            "img shown as text"
        );
    }

    #[test]
    fn issue_page_shows_the_event_and_escapes_everything_it_sent() {
        let html = issue_page(Some(event()));
        assert_escaped(&html);
        // title, culprit, counts, status forms
        assert!(html.contains("ValueError: &lt;script&gt;"));
        assert!(html.contains("app.views in &lt;img"));
        assert!(html.contains(r#"action="/projects/1/issues/7/status""#));
        assert!(html.contains(r#"value="resolved""#) && html.contains(r#"value="ignored""#));
        assert!(
            !html.contains(r#"value="unresolved""#),
            "already unresolved"
        );
        // the in-app frame highlighted, the two others folded, most recent first
        assert_eq!(html.matches(r#"class="frame in-app""#).count(), 1);
        assert!(html.contains("<summary>2 other frames</summary>"));
        assert!(
            html.find("handler").expect("in-app frame") < html.find("wsgi_app").expect("frame")
        );
        // flags, breadcrumbs, request, why grouped, event navigation
        assert!(html.contains("comments:new_editor"));
        assert!(html.contains("Breadcrumbs") && html.contains("http://shop.test/cart"));
        assert!(html.contains(r#"class="grouped-by">stacktrace<"#));
        assert!(html.contains("app.views:handler"));
        assert!(
            html.contains("event=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "older link"
        );
        assert!(!html.contains("Newer"), "the newest event has no newer one");
        assert!(html.contains(r#"data-notice="resolved""#));
    }

    #[test]
    fn issue_page_without_a_stored_event_says_so() {
        let html = issue_page(None);
        assert!(html.contains("No event of this issue is stored any more."));
        assert_escaped(&html);
    }

    #[test]
    fn issues_list_escapes_titles_and_keeps_filters_in_links() {
        let filters = IssueFilters::from_params(
            Some("Value"),
            Some("all"),
            Some("error"),
            Some("prod"),
            None,
            Some("freq"),
            None,
        )
        .expect("valid filters");
        let window = Window {
            since: 1_700_000_000 - 86_400 + 3_600,
            until: 1_700_003_600,
            step: 3_600,
        };
        let mut c = chrome("/projects/1/issues");
        c.ctx.keep = filters.params();
        c.ctx.environment = Some("prod".to_owned());
        c.environments = vec!["prod".to_owned(), "staging <b>".to_owned()];
        let data = IssuesList {
            chrome: c,
            window,
            now: 1_700_003_100,
            filters: filters.clone(),
            rows: vec![IssueRow {
                issue: issue(),
                volume: Volume::of([1_700_003_000.0, 1_700_002_900.0], window, false),
            }],
            next: Some("1700000000:7".to_owned()),
            notice: None,
        };
        let html = document(None, None, move || view! { <IssuesPage data=data/> });
        assert_escaped(&html.replace(SCRIPT, "").replace(IMG, "")); // nothing raw at all
        assert!(html.contains("ValueError: &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains(r#"href="/projects/1/issues/7?statsPeriod=24h&amp;environment=prod""#)
        );
        assert!(html.contains(
            "/projects/1/issues?query=Value&amp;status=all&amp;level=error&amp;sort=freq&amp;cursor=1700000000%3A7&amp;statsPeriod=24h&amp;environment=prod"
        ), "next page keeps the filters");
        // the environment selector: this environment current, the others a link to this
        // list in them (filters kept, the cursor dropped), names as text
        assert!(html.contains(r#"<summary title="Deployment environment">prod</summary>"#));
        assert!(html.contains(
            r#"href="/projects/1/issues?query=Value&amp;status=all&amp;level=error&amp;sort=freq&amp;statsPeriod=24h&amp;environment=staging%20%3Cb%3E">staging &lt;b&gt;</a>"#
        ), "{html}");
        assert!(html.contains(
            r#"href="/projects/1/issues?query=Value&amp;status=all&amp;level=error&amp;sort=freq&amp;statsPeriod=24h">All environments</a>"#
        ));
        assert!(html.contains(r#"<input type="hidden" name="environment" value="prod">"#));
        assert!(html.contains(r#"<option value="all" selected"#));
        assert!(html.contains(r#"name="query" value="Value""#));
        assert!(html.contains(r#"data-counts="0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2""#));
        assert!(html.contains(r#"action="/projects/1/issues/status""#));
        assert!(html.contains(r#"name="id" value="7""#));
        assert!(
            html.contains(">Unresolve<"),
            "offered when the list is not only unresolved"
        );
    }

    #[test]
    fn filters_parse_what_they_print() {
        let f = IssueFilters::from_params(None, None, None, None, None, None, None).expect("empty");
        assert_eq!(
            f,
            IssueFilters {
                status: Some(IssueStatus::Unresolved),
                ..IssueFilters::default()
            }
        );
        assert!(f.params().is_empty());
        for bad in [
            (Some("open"), None, None),
            (None, Some("loud"), None),
            (None, None, Some("priority")),
        ] {
            assert!(
                IssueFilters::from_params(None, bad.0, bad.1, None, None, bad.2, None).is_err()
            );
        }
        let long = "x".repeat(MAX_FILTER_LEN + 1);
        assert!(
            IssueFilters::from_params(Some(&long), None, None, None, None, None, None).is_err()
        );
        assert!(
            IssueFilters::from_params(None, None, None, None, None, None, Some("nope")).is_err()
        );
    }

    #[test]
    fn volume_counts_into_steps_of_the_window() {
        let window = Window {
            since: 0,
            until: 2_400,
            step: 100,
        };
        let v = Volume::of([0.0, 99.0, 100.0, 2_399.0, 2_400.0, -1.0], window, true);
        assert_eq!(v.counts.len(), Volume::STEPS);
        assert_eq!(v.counts[0], 2);
        assert_eq!(v.counts[1], 1);
        assert_eq!(v.counts[23], 1);
        assert_eq!(v.total(), 4);
        assert!(v.capped);
    }
}
