//! `/projects/{id}`: a project's requests per minute and p95 latency over a period, and its
//! routes by total time spent.

use leptos::prelude::*;
use sightline_protocol::{RouteStats, SeriesPoint};

use super::{ProjectLink, TopBar, project_href};
use crate::{
    chart::{Chart, ChartPoint},
    format,
    period::Period,
};

/// Everything the overview shows, fetched by the handler.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub(crate) project: ProjectLink,
    /// All projects, for the top bar.
    pub(crate) projects: Vec<ProjectLink>,
    pub(crate) period: Period,
    /// `[since, until)`, unix seconds, multiples of the period's step.
    pub(crate) since: i64,
    pub(crate) until: i64,
    /// When the data was read: the step containing it is still filling.
    pub(crate) now: i64,
    pub(crate) routes: Vec<RouteStats>,
    pub(crate) series: Vec<SeriesPoint>,
    /// The DSN to instrument an app with, shown while there is no data.
    pub(crate) dsn: String,
}

/// One chart step after filling gaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    ts: i64,
    requests: u64,
    p95_ms: Option<f64>,
}

/// One step per `step` seconds over `[since, until)`, whether or not the series has a point
/// for it: the collector may leave out empty steps.
fn steps(series: &[SeriesPoint], since: i64, until: i64, step: i64) -> Vec<Step> {
    let step = step.max(1);
    let mut steps: Vec<Step> = (since..until)
        .step_by(step as usize)
        .map(|ts| Step {
            ts,
            requests: 0,
            p95_ms: None,
        })
        .collect();
    for point in series {
        let Some(slot) = usize::try_from((point.ts - since).div_euclid(step))
            .ok()
            .and_then(|i| steps.get_mut(i))
        else {
            continue;
        };
        // Normally one point per slot. Should two land in one, add the counts and keep the
        // worse p95: percentiles cannot be averaged.
        slot.requests += point.requests;
        slot.p95_ms = match (slot.p95_ms, point.p95_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    steps
}

/// Requests per minute per step. The step still in progress has no rate yet (its count is
/// partial, and would show as a false drop at the right edge), so it is left out.
fn rpm_points(steps: &[Step], step: i64, now: i64) -> Vec<ChartPoint> {
    let per_minute = 60.0 / step as f64;
    steps
        .iter()
        .map(|s| ChartPoint {
            ts: s.ts,
            value: (s.ts + step <= now).then_some(s.requests as f64 * per_minute),
        })
        .collect()
}

fn p95_points(steps: &[Step]) -> Vec<ChartPoint> {
    steps
        .iter()
        .map(|s| ChartPoint {
            ts: s.ts,
            value: s.p95_ms,
        })
        .collect()
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
        project,
        projects,
        period,
        since,
        until,
        now,
        routes,
        series,
        dsn,
    } = data;
    let range = format!("{} · {}", period.long_name(), format::span(since, until));
    let picker = Period::ALL
        .into_iter()
        .map(|p| {
            let here = (p == period).then_some("page");
            view! {
                <a href=project_href(project.id, p) aria-current=here title=p.long_name()>
                    {p.as_str()}
                </a>
            }
        })
        .collect_view();

    let steps = steps(&series, since, until, period.step_secs());
    let empty = routes.is_empty() && steps.iter().all(|s| s.requests == 0);
    let body = if empty {
        view! { <EmptyState dsn=dsn/> }.into_any()
    } else {
        view! {
            <Summary
                requests=routes.iter().map(|r| r.requests).sum()
                errors=routes.iter().map(|r| r.errors).sum()
                throughput=routes.iter().map(|r| r.throughput).sum()
                routes=routes.len()
            />
            <section class="charts" aria-label="Charts">
                <Chart
                    title="Requests per minute"
                    unit="req/min"
                    points=rpm_points(&steps, period.step_secs(), now)
                />
                <Chart title="p95 latency" unit="ms" points=p95_points(&steps)/>
            </section>
            <RoutesTable routes=by_total_time(routes)/>
        }
        .into_any()
    };

    view! {
        <TopBar projects=projects current=Some(project.id) period=period/>
        <main class="page">
            <div class="page-head">
                <div>
                    <h1>{project.name}</h1>
                    <p class="sub">{range}</p>
                </div>
                <nav class="periods" aria-label="Time range">{picker}</nav>
            </div>
            {body}
        </main>
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

/// The routes table, in the order given.
#[component]
fn RoutesTable(routes: Vec<RouteStats>) -> impl IntoView {
    let total_ms: f64 = routes.iter().map(|r| r.total_ms).sum();
    let rows = routes
        .into_iter()
        .map(|r| {
            let share = if total_ms > 0.0 {
                r.total_ms / total_ms
            } else {
                0.0
            };
            // an error rate worth a look; a few errors in many requests are not
            let rate_class = if r.error_rate >= 0.01 {
                "num bad"
            } else {
                "num"
            };
            let full_name = r.route.clone();
            view! {
                <tr>
                    <td class="route" title=full_name><code>{r.route}</code></td>
                    <td><span class="method">{r.method}</span></td>
                    <td class="num">{format::count(r.requests)}</td>
                    <td class="num opt">{format::count(r.errors)}</td>
                    <td class=rate_class>{format::percent(r.error_rate)}</td>
                    <td class="num opt">{format::ms(r.p50_ms)}</td>
                    <td class="num">{format::ms(r.p95_ms)}</td>
                    <td class="num opt">{format::ms(r.p99_ms)}</td>
                    <td class="num opt">{format!("{}/min", format::compact(r.throughput * 60.0))}</td>
                    <td>
                        <div class="share">
                            <svg viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true">
                                <rect class="track" width="100" height="6"></rect>
                                <rect class="fill" width=format!("{:.1}", share * 100.0) height="6"></rect>
                            </svg>
                            <span>{format::percent(share)}</span>
                        </div>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section aria-labelledby="routes-heading">
            <h2 id="routes-heading">"Routes"</h2>
            <div class="table-wrap">
                <table>
                    <thead>
                        <tr>
                            <th scope="col">"Route"</th>
                            <th scope="col">"Method"</th>
                            <th scope="col" class="num">"Requests"</th>
                            <th scope="col" class="num opt">"Errors"</th>
                            <th scope="col" class="num">"Error rate"</th>
                            <th scope="col" class="num opt">"p50 ms"</th>
                            <th scope="col" class="num">"p95 ms"</th>
                            <th scope="col" class="num opt">"p99 ms"</th>
                            <th scope="col" class="num opt">"Throughput"</th>
                            <th scope="col">"Share of time"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </section>
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
    use crate::pages::document;

    const NOW: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

    fn route(name: &str, method: &str, requests: u64, total_ms: f64) -> RouteStats {
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

    fn overview(name: &str, routes: Vec<RouteStats>, series: Vec<SeriesPoint>) -> Overview {
        let period = Period::Hour1;
        let (since, until) = period.range_at(NOW);
        Overview {
            project: ProjectLink {
                id: 7,
                name: name.to_owned(),
            },
            projects: vec![ProjectLink {
                id: 7,
                name: name.to_owned(),
            }],
            period,
            since,
            until,
            now: NOW,
            routes,
            series,
            dsn: "http://abc123@localhost:7070/7".to_owned(),
        }
    }

    fn render(data: Overview) -> String {
        document(view! { <OverviewPage data=data/> })
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
    fn steps_fill_gaps_and_ignore_points_outside_the_range() {
        let (since, until) = Period::Hour1.range_at(NOW);
        let series = vec![
            point(since, 5, Some(2.0)),
            point(since + 120, 7, Some(9.0)),
            point(since + 130, 1, Some(4.0)), // same step: counts add, worse p95 wins
            point(since - 60, 99, Some(1.0)),
            point(until, 99, Some(1.0)),
        ];
        let steps = steps(&series, since, until, 60);
        assert_eq!(steps.len(), 60);
        assert_eq!(steps[0].requests, 5);
        assert_eq!(
            steps[1],
            Step {
                ts: since + 60,
                requests: 0,
                p95_ms: None
            }
        );
        assert_eq!(steps[2].requests, 8);
        assert_eq!(steps[2].p95_ms, Some(9.0));
        assert_eq!(steps.iter().map(|s| s.requests).sum::<u64>(), 13);
    }

    #[test]
    fn rates_are_per_minute_and_skip_the_unfinished_step() {
        let steps = [
            Step {
                ts: 0,
                requests: 30,
                p95_ms: None,
            },
            Step {
                ts: 900,
                requests: 45,
                p95_ms: None,
            },
        ];
        let points = rpm_points(&steps, 900, 1000);
        assert_eq!(points[0].value, Some(2.0));
        assert_eq!(points[1].value, None);
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
    }

    #[test]
    fn full_page_has_picker_charts_and_table() {
        let (since, _) = Period::Hour1.range_at(NOW);
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
        for p in Period::ALL {
            assert!(html.contains(&format!("statsPeriod={}", p.as_str())) || p == Period::Hour1);
        }
        assert!(
            html.contains(r#"<a href="/projects/7" aria-current="page" title="Last hour">1h</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/projects/7?statsPeriod=7d" title="Last 7 days">7d</a>"#)
        );

        // both charts, with the exact values of the first step
        assert_eq!(html.matches("<figure class=\"chart\">").count(), 2);
        assert!(html.contains(&format!(r#"data-ts="{since}" data-value="600""#)));
        assert!(html.contains(&format!(r#"data-ts="{since}" data-value="11""#)));

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
