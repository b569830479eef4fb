//! `/projects/{id}`: a project's throughput, error rate and latency over the range, its
//! totals, and the routes taking the largest share of server time.

use leptos::prelude::*;
use sightline_collector::Issue;
use sightline_protocol::RouteStats;

use super::errors::{LevelBadge, issue_href};
use super::routes::RoutesTable;
use super::series::{TrafficCharts, fill};
use super::{Chrome, PageHead, TopBar};
use crate::chart::Marker;
use crate::format;
use crate::range::Window;

/// Routes shown on the overview; the routes page has them all.
const TOP_ROUTES: usize = 10;

/// Everything the overview shows, fetched by the handler.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub(crate) chrome: Chrome,
    pub(crate) project_name: String,
    /// What was read: step-aligned `[since, until)` and the chart step.
    pub(crate) window: Window,
    /// When the data was read: the step containing it is still filling.
    pub(crate) now: i64,
    pub(crate) routes: Vec<RouteStats>,
    pub(crate) series: Vec<sightline_protocol::SeriesPoint>,
    /// Switch flips in the range, drawn on every chart.
    pub(crate) markers: Vec<Marker>,
    /// The DSN to instrument an app with, shown while there is no data.
    pub(crate) dsn: String,
    /// Newest and regressed issues; `None` without the admin credential (when one is
    /// configured), as the Errors pages ask for it.
    pub(crate) issues: Option<OverviewIssues>,
}

/// Routes by total time spent, most first, ties by name: the query API's order, enforced
/// here because the table's meaning depends on it.
fn by_total_time(mut routes: Vec<RouteStats>) -> Vec<RouteStats> {
    routes.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then_with(|| a.route.cmp(&b.route))
            .then_with(|| a.method.cmp(&b.method))
    });
    routes
}

/// The overview page.
#[component]
pub(crate) fn OverviewPage(data: Overview) -> impl IntoView {
    let Overview {
        chrome,
        project_name,
        window,
        now,
        routes,
        series,
        markers,
        dsn,
        issues,
    } = data;
    let ctx = chrome.ctx.clone();
    let steps = fill(&series, window);
    let empty = routes.is_empty() && steps.iter().all(|s| s.requests == 0);
    // Shown with or without request data: an app may report only errors.
    let issues = issues
        .filter(|i| !empty || !i.newest.is_empty() || !i.regressed.is_empty())
        .map(|issues| view! { <IssuesPanel ctx=ctx.clone() issues=issues now=now/> });
    let body = if empty {
        view! { <EmptyState dsn=dsn/> }.into_any()
    } else {
        let total_ms: f64 = routes.iter().map(|r| r.total_ms).sum();
        let count = routes.len();
        let summary = view! {
            <Summary
                requests=routes.iter().map(|r| r.requests).sum()
                errors=routes.iter().map(|r| r.errors).sum()
                throughput=routes.iter().map(|r| r.throughput).sum()
                routes=count
            />
        };
        let top: Vec<RouteStats> = by_total_time(routes).into_iter().take(TOP_ROUTES).collect();
        let all = (count > TOP_ROUTES).then(|| {
            view! { <p class="more"><a href=ctx.link("/routes", &[])>{format!("All {count} routes →")}</a></p> }
        });
        view! {
            {summary}
            <TrafficCharts steps=steps step=window.step now=now markers=markers/>
            <section aria-labelledby="routes-heading">
                <h2 id="routes-heading">"Top routes by share of time"</h2>
                <RoutesTable ctx=ctx.clone() routes=top total_ms=total_ms sort=None/>
                {all}
            </section>
        }
        .into_any()
    };

    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title=project_name ctx=ctx window=window/>
            {body}
            {issues}
        </main>
    }
}

/// Issues shown on the overview.
#[derive(Debug, Clone, Default)]
pub(crate) struct OverviewIssues {
    /// Unresolved issues, newest first.
    pub(crate) newest: Vec<Issue>,
    /// Resolved issues that came back, most recently seen first.
    pub(crate) regressed: Vec<Issue>,
}

/// Most issues in each overview list.
pub(crate) const OVERVIEW_ISSUES: usize = 5;

/// Newest and regressed issues side by side, each linking to its issue page.
#[component]
fn IssuesPanel(ctx: super::Ctx, issues: OverviewIssues, now: i64) -> impl IntoView {
    let list = |issues: Vec<Issue>, seen: fn(&Issue) -> f64, empty: &'static str| {
        if issues.is_empty() {
            return view! { <p class="muted">{empty}</p> }.into_any();
        }
        let rows = issues
            .into_iter()
            .map(|issue| {
                let href = issue_href(&ctx, issue.id);
                let when = format::ago(seen(&issue) as i64, now);
                view! {
                    <li>
                        <LevelBadge level=issue.level.clone()/>
                        " "
                        <a href=href>{issue.title.clone()}</a>
                        <span class="muted">{format!(" · {} events · {when}", format::count(issue.times_seen))}</span>
                    </li>
                }
            })
            .collect_view();
        view! { <ul class="issue-list">{rows}</ul> }.into_any()
    };
    view! {
        <section class="overview-issues" aria-labelledby="issues-heading">
            <h2 id="issues-heading">"Issues"</h2>
            <div class="columns">
                <div>
                    <h3>"Newest"</h3>
                    {list(issues.newest, |i| i.first_seen, "No unresolved issues.")}
                </div>
                <div>
                    <h3>"Regressed"</h3>
                    {list(issues.regressed, |i| i.last_seen, "No regressed issues.")}
                </div>
            </div>
        </section>
    }
}

/// Totals over all routes.
#[component]
fn Summary(
    requests: u64,
    errors: u64,
    /// Sum of the routes' throughput, per second.
    throughput: f64,
    routes: usize,
) -> impl IntoView {
    let error_rate = if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    };
    let per_minute = throughput * 60.0;
    view! {
        <dl class="tiles">
            <div class="tile"><dt>"Requests"</dt><dd>{format::count(requests)}</dd></div>
            <div class="tile">
                <dt>"Errors (5xx)"</dt>
                <dd>{format!("{} · {}", format::count(errors), format::percent(error_rate))}</dd>
            </div>
            <div class="tile"><dt>"Throughput"</dt><dd>{format!("{}/min", format::compact(per_minute))}</dd></div>
            <div class="tile"><dt>"Routes"</dt><dd>{format::count(routes as u64)}</dd></div>
        </dl>
    }
}

/// Shown while the project has no requests in the period.
#[component]
fn EmptyState(dsn: String) -> impl IntoView {
    let snippet = format!(
        "let (agent, guard) = sightline_agent::Agent::builder(\"{dsn}\")?\n    \
         .service(\"my-app\")\n    \
         .start()?;\n\
         let app = app.layer(agent.layer());\n\
         // keep `guard` while the app runs; `guard.shutdown(timeout).await` flushes on exit"
    );
    view! {
        <section class="empty">
            <h2>"Waiting for data"</h2>
            <p>
                "There are no requests recorded in this period — instrument your app with the DSN \
                 below and they show up here within seconds."
            </p>
            <pre><code class="dsn">{dsn}</code></pre>
            <p>"With the Rust agent, as a tower layer on an axum app:"</p>
            <pre><code>{snippet}</code></pre>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::{Ctx, ProjectLink, Section, document};
    use crate::range::{Period, Range};
    use sightline_protocol::SeriesPoint;

    const NOW: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    pub(crate) fn route(name: &str, method: &str, requests: u64, total_ms: f64) -> RouteStats {
        RouteStats {
            route: name.to_owned(),
            method: method.to_owned(),
            requests,
            errors: 1,
            status_classes: [0, requests - 1, 0, 0, 1],
            error_rate: 1.0 / requests as f64,
            throughput: requests as f64 / 3600.0,
            p50_ms: 3.0,
            p95_ms: 12.5,
            p99_ms: 40.0,
            mean_ms: total_ms / requests as f64,
            total_ms,
        }
    }

    fn chrome(name: &str) -> Chrome {
        Chrome {
            ctx: Ctx {
                path: "/projects/7".to_owned(),
                project: 7,
                range: Range::Preset(Period::Hour1),
                live: false,
                environment: None,
                keep: Vec::new(),
            },
            projects: vec![ProjectLink {
                id: 7,
                name: name.to_owned(),
            }],
            environments: Vec::new(),
            section: Section::Overview,
            section_suffix: "",
            theme: None,
            bundle: None,
        }
    }

    fn overview(name: &str, routes: Vec<RouteStats>, series: Vec<SeriesPoint>) -> Overview {
        Overview {
            chrome: chrome(name),
            project_name: name.to_owned(),
            window: Range::Preset(Period::Hour1).resolve(NOW),
            now: NOW,
            routes,
            series,
            markers: Vec::new(),
            dsn: "http://abc123@localhost:7070/7".to_owned(),
            issues: None,
        }
    }

    fn render(data: Overview) -> String {
        document(None, None, move || view! { <OverviewPage data=data/> })
    }

    fn point(ts: i64, requests: u64, p95: Option<f64>) -> SeriesPoint {
        SeriesPoint {
            ts,
            requests,
            errors: 0,
            p50_ms: p95,
            p95_ms: p95,
            p99_ms: p95,
        }
    }

    #[test]
    fn routes_sorted_by_total_time() {
        let sorted = by_total_time(vec![
            route("/a", "GET", 10, 50.0),
            route("/b", "GET", 10, 500.0),
            route("/c", "POST", 10, 5.0),
        ]);
        let names: Vec<_> = sorted.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["/b", "/a", "/c"]);
    }

    #[test]
    fn empty_project_shows_how_to_send_data() {
        let html = render(overview("backend", vec![], vec![]));
        assert!(
            html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
            "{html}"
        );
        assert!(html.contains("<title>Sightline</title>"));
        assert!(
            html.contains(
                r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#
            )
        );
        assert!(
            html.contains("no requests recorded in this period — instrument your app with the DSN")
        );
        assert!(html.contains("<code class=\"dsn\">http://abc123@localhost:7070/7</code>"));
        assert!(!html.contains("<table"));
        assert!(!html.contains("<svg"));
        // no bundle: no script at all
        assert!(!html.contains("<script"));
    }

    #[test]
    fn full_page_has_picker_charts_and_table() {
        let since = Range::Preset(Period::Hour1).resolve(NOW).since;
        let routes = vec![
            route("/api/comments", "GET", 1200, 6000.0),
            route("/api/leaderboard", "GET", 100, 9000.0),
        ];
        let series = vec![
            point(since, 600, Some(11.0)),
            point(since + 60, 700, Some(12.5)),
        ];
        let html = render(overview("backend", routes, series));

        // period picker: plain links, the current one marked
        assert!(
            html.contains(r#"<a href="/projects/7" aria-current="page" title="Last hour">1h</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/projects/7?statsPeriod=30d" title="Last 30 days">30d</a>"#)
        );
        // custom range: a GET form back to this page
        assert!(html.contains(r#"<form method="get" action="/projects/7">"#));
        assert!(html.contains(r#"type="datetime-local" name="since""#));

        // three charts, with the exact values of the first step, each an island
        assert_eq!(html.matches("<figure class=\"chart\">").count(), 3);
        assert_eq!(
            html.matches("<leptos-island").count(),
            3 + 1,
            "3 charts + live"
        );
        assert!(html.contains(&format!(r#"data-ts="{since}" data-value="600""#)));
        assert!(html.contains(r#"data-series="p95" data-value="11""#));
        assert!(html.contains(r#"data-series="p99" data-value="12.5""#));

        // table sorted by total time: leaderboard (9 s) before comments (6 s)
        let leaderboard = html
            .find("/api/leaderboard</code>")
            .expect("leaderboard row");
        let comments = html.find("/api/comments</code>").expect("comments row");
        assert!(leaderboard < comments);
        assert!(html.contains("1,200"));
        assert!(html.contains("60.0%"), "share of total time: {html}");
        assert!(!html.contains("no requests recorded"));
    }

    #[test]
    fn bundle_is_loaded_when_there_is_one() {
        let mut data = overview("backend", vec![], vec![]);
        data.chrome.bundle = Some("abc".to_owned());
        let html = document(
            None,
            Some("abc".to_owned()),
            move || view! { <OverviewPage data=data/> },
        );
        assert!(
            html.contains(r#"<script type="module" src="/assets/boot.js?v="#),
            "{html}"
        );
        assert!(html.contains(r#"data-wasm="/pkg/sightline_ui_bg.wasm?v=abc""#));
    }

    #[test]
    fn attacker_controlled_names_are_escaped_everywhere() {
        let script = "<script>alert(1)</script>";
        let img = r#""><img src=x onerror=alert(1)>"#;
        let routes = vec![route(script, img, 10, 10.0), route(img, script, 10, 5.0)];
        let html = render(overview(&format!("{script}{img}"), routes, vec![]));

        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("onerror=alert(1)>"), "{html}");
        // shown as text, in text nodes and in the route cell's title attribute
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains(r#"title="&lt;script&gt;alert(1)&lt;/script&gt;""#),
            "{html}"
        );
        assert!(
            html.contains(r#"title="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;""#),
            "{html}"
        );
    }
}
