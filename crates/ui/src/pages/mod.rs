//! Pages: each renders plain data (no store access) into a complete HTML document, inside
//! one frame: the top bar (projects, sections, live mode, theme) and a page head with the
//! time-range picker. Every link and form keeps the page's filters in the URL.

mod errors;
mod exemplars;
mod logs;
mod memory;
mod message;
mod overview;
mod queries;
mod routes;
mod series;
mod switches;

use leptos::prelude::*;

pub(crate) use errors::{
    EventNav, IssueDetail, IssueFilters, IssuePage, IssueRow, IssuesList, IssuesPage,
    MAX_FILTER_LEN, Volume,
};
pub(crate) use exemplars::{ExemplarData, ExemplarPage, ExemplarRows};
pub(crate) use logs::{LogFilters, LogsList, LogsPage};
pub(crate) use memory::{MemoryData, MemoryPage};
pub(crate) use message::{Message, SignIn};
pub(crate) use overview::{OVERVIEW_ISSUES, Overview, OverviewIssues, OverviewPage};
pub(crate) use queries::{QueriesList, QueriesPage, QuerySort};
pub(crate) use routes::{RouteDetail, RoutePage, RoutesList, RoutesPage, Sort};
pub(crate) use switches::{
    SwitchDetail, SwitchFilters, SwitchPage, SwitchesList, SwitchesPage, condition_from_form,
    parse_state,
};

use crate::islands::LiveToggle;
use crate::range::{Period, Range, Window};
use crate::{assets, format};

/// A project as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectLink {
    pub(crate) id: u64,
    pub(crate) name: String,
}

/// The colour scheme chosen on the theme form (a cookie); `None` follows the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Theme {
    Light,
    Dark,
}

impl Theme {
    pub(crate) fn parse(value: &str) -> Option<Theme> {
        match value {
            "light" => Some(Theme::Light),
            "dark" => Some(Theme::Dark),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }
}

/// Dashboard sections, for the top bar's tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Overview,
    Routes,
    Queries,
    Errors,
    Logs,
    Memory,
    Switches,
}

/// The outcome of a form, shown once on the page it returns to (`?notice=`). Only these
/// fixed sentences can appear: nothing from the URL is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    Resolved,
    Ignored,
    Unresolved,
    NoneSelected,
    Flipped,
    Reverted,
    ConditionsChanged,
    DetailsChanged,
    Unchanged,
    ReasonMissing,
    Conflict,
    Invalid,
}

impl Notice {
    const ALL: [Notice; 12] = [
        Notice::Resolved,
        Notice::Ignored,
        Notice::Unresolved,
        Notice::NoneSelected,
        Notice::Flipped,
        Notice::Reverted,
        Notice::ConditionsChanged,
        Notice::DetailsChanged,
        Notice::Unchanged,
        Notice::ReasonMissing,
        Notice::Conflict,
        Notice::Invalid,
    ];

    pub(crate) fn parse(value: &str) -> Option<Notice> {
        Notice::ALL.into_iter().find(|n| n.as_str() == value)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Notice::Resolved => "resolved",
            Notice::Ignored => "ignored",
            Notice::Unresolved => "unresolved",
            Notice::NoneSelected => "none-selected",
            Notice::Flipped => "flipped",
            Notice::Reverted => "reverted",
            Notice::ConditionsChanged => "conditions",
            Notice::DetailsChanged => "details",
            Notice::Unchanged => "unchanged",
            Notice::ReasonMissing => "reason-missing",
            Notice::Conflict => "conflict",
            Notice::Invalid => "invalid",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Notice::Resolved => "Marked as resolved.",
            Notice::Ignored => "Marked as ignored.",
            Notice::Unresolved => "Marked as unresolved.",
            Notice::NoneSelected => "Select at least one issue first.",
            Notice::Flipped => "Switch changed. Connected agents pick it up within a second.",
            Notice::Reverted => "Switch reverted. Connected agents pick it up within a second.",
            Notice::ConditionsChanged => {
                "Conditions changed. Connected agents pick them up within a second."
            }
            Notice::DetailsChanged => "Label, owner, description and default saved.",
            Notice::Unchanged => "Nothing changed: the switch is already in that state.",
            Notice::ReasonMissing => "Not changed: every change needs a reason.",
            Notice::Conflict => {
                "Not changed: someone changed the switch since this page was loaded. Check the \
                 history below and try again."
            }
            Notice::Invalid => "Not changed: the switch would not be valid that way.",
        }
    }

    fn is_error(self) -> bool {
        matches!(
            self,
            Notice::NoneSelected | Notice::ReasonMissing | Notice::Conflict | Notice::Invalid
        )
    }
}

/// A form's outcome, when there is one.
#[component]
fn NoticeLine(notice: Option<Notice>) -> impl IntoView {
    notice.map(|n| {
        let (class, role) = if n.is_error() {
            ("notice error", "alert")
        } else {
            ("notice", "status")
        };
        view! { <p class=class role=role data-notice=n.as_str()>{n.text()}</p> }
    })
}

/// Where a page is and what it filters by: every link on it is built from this, so the
/// filters survive navigation and the URL alone reproduces the page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ctx {
    /// The page's path, e.g. `/projects/1/routes`.
    pub(crate) path: String,
    pub(crate) project: u64,
    pub(crate) range: Range,
    pub(crate) live: bool,
    /// The deployment environment the page shows (`?environment=`); `None`: all of them.
    pub(crate) environment: Option<String>,
    /// The page's own parameters (sort order, route), kept when the range changes.
    pub(crate) keep: Vec<(&'static str, String)>,
}

impl Ctx {
    /// The range, live and environment parameters, which every page of the project
    /// shares.
    fn shared(&self, range: Range, live: bool) -> Vec<(&'static str, String)> {
        let mut params = range.query_pairs();
        if live {
            params.push(("live", "1".to_owned()));
        }
        if let Some(environment) = &self.environment {
            params.push(("environment", environment.clone()));
        }
        params
    }

    /// The shared parameters as hidden fields, for a `GET` form on this page (its own
    /// fields are the page's parameters).
    pub(crate) fn hidden_fields(&self) -> impl IntoView + use<> {
        self.shared(self.range, self.live)
            .into_iter()
            .map(|(name, value)| view! { <input type="hidden" name=name value=value/> })
            .collect_view()
    }

    /// This page in another environment (`None`: all of them), its parameters kept but
    /// the cursor (another environment has other pages).
    pub(crate) fn with_environment(&self, environment: Option<&str>) -> String {
        let ctx = Ctx {
            environment: environment.map(str::to_owned),
            keep: self
                .keep
                .iter()
                .filter(|(name, _)| !matches!(*name, "cursor" | "before"))
                .cloned()
                .collect(),
            ..self.clone()
        };
        ctx.here()
    }

    /// This page with another range (the picker, chart zoom).
    pub(crate) fn with_range(&self, range: Range) -> String {
        let mut params = self.keep.clone();
        params.extend(self.shared(range, self.live));
        url(&self.path, &params)
    }

    /// This page with live mode on or off.
    pub(crate) fn with_live(&self, live: bool) -> String {
        let mut params = self.keep.clone();
        params.extend(self.shared(self.range, live));
        url(&self.path, &params)
    }

    /// This page as it is.
    pub(crate) fn here(&self) -> String {
        self.with_range(self.range)
    }

    /// Another page of this project (`suffix` after `/projects/{id}`), same range and mode.
    pub(crate) fn link(&self, suffix: &str, params: &[(&'static str, String)]) -> String {
        let mut all = params.to_vec();
        all.extend(self.shared(self.range, self.live));
        url(&format!("/projects/{}{suffix}", self.project), &all)
    }

    /// The same page of another project (range and mode kept; page parameters and the
    /// environment, which is the project's own, dropped).
    fn project(&self, id: u64, suffix: &str) -> String {
        let ctx = Ctx {
            environment: None,
            ..self.clone()
        };
        url(
            &format!("/projects/{id}{suffix}"),
            &ctx.shared(self.range, self.live),
        )
    }
}

/// `path?k=v&…` with the values percent-encoded.
pub(crate) fn url(path: &str, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return path.to_owned();
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Percent-encodes a path segment; `:` (switch keys) stays readable.
pub(crate) fn encode_path(segment: &str) -> String {
    encode(segment).replace("%3A", ":")
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Everything the frame around a page shows.
#[derive(Debug, Clone)]
pub(crate) struct Chrome {
    pub(crate) ctx: Ctx,
    pub(crate) projects: Vec<ProjectLink>,
    /// The environments this project's agents and events name, for the selector.
    pub(crate) environments: Vec<String>,
    pub(crate) section: Section,
    /// Path suffix of this section's page, for the project links (`""`, `/routes`).
    pub(crate) section_suffix: &'static str,
    pub(crate) theme: Option<Theme>,
    /// The bundle's version when one is served: pages then load it.
    pub(crate) bundle: Option<String>,
}

/// Renders a page component (built by `page`) into a complete HTML5 document.
pub(crate) fn document<V>(
    theme: Option<Theme>,
    bundle: Option<String>,
    page: impl FnOnce() -> V + Send + 'static,
) -> String
where
    V: IntoView + 'static,
{
    to_html(move || view! { <Shell theme=theme bundle=bundle>{page()}</Shell> })
}

/// Renders a view to HTML. Islands render their props and hydration markers through a
/// shared context; in islands mode everything outside them renders as plain HTML.
/// Components run as the view is built, so `view` is called inside the context.
pub(crate) fn to_html<V: IntoView + 'static>(view: impl FnOnce() -> V) -> String {
    let context = hydration_context::SsrSharedContext::new_islands();
    let owner = Owner::new_root(Some(std::sync::Arc::new(context)));
    owner.with(|| view().to_html())
}

/// `<!DOCTYPE html>`, `<head>` and `<body>` around a page.
#[component]
fn Shell(theme: Option<Theme>, bundle: Option<String>, children: Children) -> impl IntoView {
    let boot = bundle.map(|v| {
        view! {
            <script
                type="module"
                src=assets::boot_href()
                data-js=format!("/pkg/{}?v={v}", crate::site::JS_FILE)
                data-wasm=format!("/pkg/{}?v={v}", crate::site::WASM_FILE)
            ></script>
        }
    });
    view! {
        <!DOCTYPE html>
        <html lang="en" data-theme=theme.map(Theme::as_str)>
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <title>"Sightline"</title>
                <link rel="stylesheet" href=assets::css_href()/>
                {boot}
            </head>
            <body>{children()}</body>
        </html>
    }
}

/// The top bar: the product name, the project selector, the sections, live mode and theme.
#[component]
fn TopBar(chrome: Chrome) -> impl IntoView {
    let Chrome {
        ctx,
        projects,
        environments,
        section,
        section_suffix,
        theme,
        bundle: _,
    } = chrome;
    let links = projects
        .into_iter()
        .map(|p| {
            let here = (p.id == ctx.project).then_some("page");
            view! { <a href=ctx.project(p.id, section_suffix) aria-current=here>{p.name}</a> }
        })
        .collect_view();
    let tab = |s: Section, label: &'static str, suffix: &str| {
        let here = (s == section).then_some("page");
        view! { <a href=ctx.link(suffix, &[]) aria-current=here>{label}</a> }
    };
    let tabs = view! {
        {tab(Section::Overview, "Overview", "")}
        {tab(Section::Routes, "Routes", "/routes")}
        {tab(Section::Queries, "Queries", "/queries")}
        {tab(Section::Errors, "Errors", "/issues")}
        {tab(Section::Logs, "Logs", "/logs")}
        {tab(Section::Memory, "Memory", "/memory")}
        {tab(Section::Switches, "Switches", "/switches")}
    };
    let back = ctx.here();
    let next_theme = match theme {
        None => (Theme::Dark, "Dark"),
        Some(Theme::Dark) => (Theme::Light, "Light"),
        Some(Theme::Light) => (Theme::Dark, "Dark"),
    };
    let environment = environments_picker(&ctx, environments);
    view! {
        <header class="bar">
            <a class="brand" href="/">"Sightline"</a>
            <nav class="projects" aria-label="Projects">{links}</nav>
            {environment}
            <nav class="sections" aria-label="Sections">{tabs}</nav>
            <div class="bar-end">
                <LiveToggle live=ctx.live on_href=ctx.with_live(true) off_href=ctx.with_live(false)/>
                <form class="theme" method="post" action="/theme">
                    <input type="hidden" name="back" value=back/>
                    <button type="submit" name="theme" value=next_theme.0.as_str()
                        title="Switch the colour scheme (remembered in a cookie)">
                        {next_theme.1}
                    </button>
                </form>
            </div>
        </header>
    }
}

/// The environment selector: a disclosure listing "All environments" and every
/// environment the project knows, each a link to this page in it (keyboard reachable, no
/// JavaScript needed). An environment in the URL that nothing names yet is listed too.
fn environments_picker(ctx: &Ctx, mut environments: Vec<String>) -> impl IntoView + use<> {
    if let Some(current) = &ctx.environment
        && !environments.contains(current)
    {
        environments.push(current.clone());
        environments.sort();
    }
    if environments.is_empty() {
        return None;
    }
    let current = ctx.environment.clone();
    let label = current
        .clone()
        .unwrap_or_else(|| "All environments".to_owned());
    let all_here = current.is_none().then_some("page");
    let items = environments
        .into_iter()
        .map(|e| {
            let here = (current.as_deref() == Some(e.as_str())).then_some("page");
            let href = ctx.with_environment(Some(&e));
            view! { <li><a href=href aria-current=here>{e}</a></li> }
        })
        .collect_view();
    Some(view! {
        <details class="environments">
            <summary title="Deployment environment">{label}</summary>
            <ul role="list">
                <li><a href=ctx.with_environment(None) aria-current=all_here>"All environments"</a></li>
                {items}
            </ul>
        </details>
    })
}

/// Heading, range sub-heading, the preset links and the custom-range form.
#[component]
fn PageHead(
    #[prop(into)] title: String,
    ctx: Ctx,
    window: Window,
    /// Extra line under the heading (e.g. the route's method).
    #[prop(optional, into)]
    note: Option<String>,
) -> impl IntoView {
    let sub = format!(
        "{} · {}",
        ctx.range.label(),
        format::span(window.since, window.until)
    );
    let presets = Period::ALL
        .into_iter()
        .map(|p| {
            let here = (ctx.range.preset() == Some(p)).then_some("page");
            view! {
                <a href=ctx.with_range(Range::Preset(p)) aria-current=here title=p.long_name()>
                    {p.as_str()}
                </a>
            }
        })
        .collect_view();
    let custom = ctx.range.preset().is_none();
    let (since, until) = match ctx.range {
        Range::Custom { since, until } => (since, until),
        Range::Preset(_) => (window.since, window.until),
    };
    // the page's own parameters and live mode and environment ride along; the range is
    // the form's
    let hidden = ctx
        .keep
        .iter()
        .cloned()
        .chain(ctx.live.then(|| ("live", "1".to_owned())))
        .chain(ctx.environment.clone().map(|e| ("environment", e)))
        .map(|(name, value)| view! { <input type="hidden" name=name value=value/> })
        .collect_view();
    view! {
        <div class="page-head">
            <div>
                <h1>{title}</h1>
                {note.map(|n| view! { <p class="note">{n}</p> })}
                <p class="sub">{sub}</p>
            </div>
            <div class="controls">
                <nav class="periods" aria-label="Time range">{presets}</nav>
                <details class="custom" open=custom>
                    <summary>"Custom range"</summary>
                    <form method="get" action=ctx.path.clone()>
                        {hidden}
                        <label>"From (UTC) "
                            <input type="datetime-local" name="since" required=true
                                value=format::datetime_local(since)/>
                        </label>
                        <label>"To (UTC) "
                            <input type="datetime-local" name="until" required=true
                                value=format::datetime_local(until)/>
                        </label>
                        <button type="submit">"Apply"</button>
                    </form>
                </details>
            </div>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            path: "/projects/3/route".to_owned(),
            project: 3,
            range: Range::Preset(Period::Days7),
            live: true,
            environment: None,
            keep: vec![
                ("method", "GET".to_owned()),
                ("route", "/threads/{id}".to_owned()),
            ],
        }
    }

    #[test]
    fn links_keep_every_filter_and_encode_values() {
        let ctx = ctx();
        assert_eq!(
            ctx.here(),
            "/projects/3/route?method=GET&route=%2Fthreads%2F%7Bid%7D&statsPeriod=7d&live=1"
        );
        assert_eq!(
            ctx.with_live(false),
            "/projects/3/route?method=GET&route=%2Fthreads%2F%7Bid%7D&statsPeriod=7d"
        );
        assert_eq!(
            ctx.with_range(Range::Custom { since: 1, until: 2 }),
            "/projects/3/route?method=GET&route=%2Fthreads%2F%7Bid%7D&since=1&until=2&live=1"
        );
        assert_eq!(
            ctx.link("/routes", &[("sort", "p95".to_owned())]),
            "/projects/3/routes?sort=p95&statsPeriod=7d&live=1"
        );
        assert_eq!(ctx.project(4, ""), "/projects/4?statsPeriod=7d&live=1");
        assert_eq!(url("/x", &[]), "/x");
        assert_eq!(encode("a b&c=<d>é"), "a%20b%26c%3D%3Cd%3E%C3%A9");
    }
}
