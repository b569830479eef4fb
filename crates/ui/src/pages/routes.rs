//! `/projects/{id}/routes`: every route × method, sortable by any column (links, so it
//! works without JavaScript and the order is in the URL); and
//! `/projects/{id}/route?method=…&route=…`: one route's charts and numbers.

use leptos::prelude::*;
use sightline_protocol::{RouteStats, SeriesPoint};

use super::exemplars::{ExemplarList, ExemplarRows};
use super::series::{TrafficCharts, fill};
use super::{Chrome, Ctx, PageHead, TopBar};
use crate::chart::Marker;
use crate::format;
use crate::range::Window;

/// A column the routes table sorts by (`?sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SortKey {
    Route,
    Method,
    Requests,
    Errors,
    ErrorRate,
    P50,
    P95,
    P99,
    Throughput,
    /// Share of total server time, the default.
    #[default]
    Total,
}

impl SortKey {
    const ALL: [SortKey; 10] = [
        SortKey::Route,
        SortKey::Method,
        SortKey::Requests,
        SortKey::Errors,
        SortKey::ErrorRate,
        SortKey::P50,
        SortKey::P95,
        SortKey::P99,
        SortKey::Throughput,
        SortKey::Total,
    ];

    pub(crate) fn parse(value: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == value)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SortKey::Route => "route",
            SortKey::Method => "method",
            SortKey::Requests => "requests",
            SortKey::Errors => "errors",
            SortKey::ErrorRate => "error_rate",
            SortKey::P50 => "p50",
            SortKey::P95 => "p95",
            SortKey::P99 => "p99",
            SortKey::Throughput => "throughput",
            SortKey::Total => "total",
        }
    }

    /// Names sort A→Z first, numbers largest first.
    fn default_descending(self) -> bool {
        !matches!(self, SortKey::Route | SortKey::Method)
    }

    fn compare(self, a: &RouteStats, b: &RouteStats) -> std::cmp::Ordering {
        match self {
            SortKey::Route => a.route.cmp(&b.route),
            SortKey::Method => a.method.cmp(&b.method),
            SortKey::Requests => a.requests.cmp(&b.requests),
            SortKey::Errors => a.errors.cmp(&b.errors),
            SortKey::ErrorRate => a.error_rate.total_cmp(&b.error_rate),
            SortKey::P50 => a.p50_ms.total_cmp(&b.p50_ms),
            SortKey::P95 => a.p95_ms.total_cmp(&b.p95_ms),
            SortKey::P99 => a.p99_ms.total_cmp(&b.p99_ms),
            SortKey::Throughput => a.throughput.total_cmp(&b.throughput),
            SortKey::Total => a.total_ms.total_cmp(&b.total_ms),
        }
    }
}

/// A sort order: column and direction (`?sort=p95&dir=asc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sort {
    pub(crate) key: SortKey,
    pub(crate) descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort {
            key: SortKey::default(),
            descending: true,
        }
    }
}

impl Sort {
    /// From `?sort=&dir=`; `None` when either names nothing we know.
    pub(crate) fn from_params(sort: Option<&str>, dir: Option<&str>) -> Option<Sort> {
        let key = match sort {
            None | Some("") => SortKey::default(),
            Some(s) => SortKey::parse(s)?,
        };
        let descending = match dir {
            None | Some("") => key.default_descending(),
            Some("desc") => true,
            Some("asc") => false,
            Some(_) => return None,
        };
        Some(Sort { key, descending })
    }

    /// The page parameters; the default order is left out.
    pub(crate) fn params(self) -> Vec<(&'static str, String)> {
        if self == Sort::default() {
            return Vec::new();
        }
        vec![
            ("sort", self.key.as_str().to_owned()),
            (
                "dir",
                if self.descending { "desc" } else { "asc" }.to_owned(),
            ),
        ]
    }

    /// Sorts in place; ties by route, then method, so the order is stable across reloads.
    pub(crate) fn apply(self, routes: &mut [RouteStats]) {
        routes.sort_by(|a, b| {
            let primary = self.key.compare(a, b);
            let primary = if self.descending {
                primary.reverse()
            } else {
                primary
            };
            primary
                .then_with(|| a.route.cmp(&b.route))
                .then_with(|| a.method.cmp(&b.method))
        });
    }
}

/// The link to a route's page.
fn route_href(ctx: &Ctx, route: &RouteStats) -> String {
    ctx.link(
        "/route",
        &[
            ("method", route.method.clone()),
            ("route", route.route.clone()),
        ],
    )
}

/// The routes table, in the order given. With `sort`, headers are links that sort by
/// their column (the current one marked with `aria-sort`).
#[component]
pub(crate) fn RoutesTable(
    ctx: Ctx,
    routes: Vec<RouteStats>,
    /// Total server time of all routes (the share column's denominator).
    total_ms: f64,
    sort: Option<Sort>,
) -> impl IntoView {
    let header = |key: SortKey, label: &'static str, class: &'static str| {
        let Some(current) = sort else {
            return view! { <th scope="col" class=class>{label}</th> }.into_any();
        };
        let here = current.key == key;
        let next = Sort {
            key,
            descending: if here {
                !current.descending
            } else {
                key.default_descending()
            },
        };
        let aria = here.then_some(if current.descending {
            "descending"
        } else {
            "ascending"
        });
        let arrow = match (here, current.descending) {
            (false, _) => "",
            (true, true) => " ↓",
            (true, false) => " ↑",
        };
        let href = Ctx {
            keep: next.params(),
            ..ctx.clone()
        }
        .here();
        view! {
            <th scope="col" class=class aria-sort=aria>
                <a href=href>{label}{arrow}</a>
            </th>
        }
        .into_any()
    };
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
            let href = route_href(&ctx, &r);
            let full_name = r.route.clone();
            view! {
                <tr>
                    <td class="route" title=full_name><a href=href><code>{r.route}</code></a></td>
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
        <div class="table-wrap">
            <table class="routes">
                <thead>
                    <tr>
                        {header(SortKey::Route, "Route", "")}
                        {header(SortKey::Method, "Method", "")}
                        {header(SortKey::Requests, "Requests", "num")}
                        {header(SortKey::Errors, "Errors", "num opt")}
                        {header(SortKey::ErrorRate, "Error rate", "num")}
                        {header(SortKey::P50, "p50 ms", "num opt")}
                        {header(SortKey::P95, "p95 ms", "num")}
                        {header(SortKey::P99, "p99 ms", "num opt")}
                        {header(SortKey::Throughput, "Throughput", "num opt")}
                        {header(SortKey::Total, "Share of time", "")}
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// What the routes page shows.
#[derive(Debug, Clone)]
pub(crate) struct RoutesList {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    pub(crate) routes: Vec<RouteStats>,
    pub(crate) sort: Sort,
}

#[component]
pub(crate) fn RoutesPage(data: RoutesList) -> impl IntoView {
    let RoutesList {
        chrome,
        window,
        mut routes,
        sort,
    } = data;
    let ctx = chrome.ctx.clone();
    let total_ms: f64 = routes.iter().map(|r| r.total_ms).sum();
    sort.apply(&mut routes);
    let body = if routes.is_empty() {
        view! { <p class="empty">"No requests recorded in this range."</p> }.into_any()
    } else {
        view! { <RoutesTable ctx=ctx.clone() routes=routes total_ms=total_ms sort=Some(sort)/> }
            .into_any()
    };
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title="Routes" ctx=ctx window=window/>
            {body}
        </main>
    }
}

/// What a route's page shows.
#[derive(Debug, Clone)]
pub(crate) struct RouteDetail {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    pub(crate) now: i64,
    pub(crate) route: String,
    pub(crate) method: String,
    /// The route's numbers over the range; `None` when it had no requests in it.
    pub(crate) stats: Option<RouteStats>,
    pub(crate) series: Vec<SeriesPoint>,
    /// Switch flips in the range, drawn on every chart.
    pub(crate) markers: Vec<Marker>,
    /// A page of the route's exemplars in the range, newest first.
    pub(crate) exemplars: ExemplarRows,
}

#[component]
pub(crate) fn RoutePage(data: RouteDetail) -> impl IntoView {
    let RouteDetail {
        chrome,
        window,
        now,
        route,
        method,
        stats,
        series,
        markers,
        exemplars,
    } = data;
    let ctx = chrome.ctx.clone();
    let tiles = stats.map(|s| {
        view! {
            <dl class="tiles">
                <div class="tile"><dt>"Requests"</dt><dd>{format::count(s.requests)}</dd></div>
                <div class="tile">
                    <dt>"Errors (5xx)"</dt>
                    <dd>{format!("{} · {}", format::count(s.errors), format::percent(s.error_rate))}</dd>
                </div>
                <div class="tile"><dt>"p50 / p95 / p99"</dt>
                    <dd>{format!("{} / {} / {} ms", format::ms(s.p50_ms), format::ms(s.p95_ms), format::ms(s.p99_ms))}</dd>
                </div>
                <div class="tile"><dt>"Throughput"</dt><dd>{format!("{}/min", format::compact(s.throughput * 60.0))}</dd></div>
                <div class="tile"><dt>"Total time"</dt><dd>{format!("{} s", format::compact(s.total_ms / 1000.0))}</dd></div>
            </dl>
        }
    });
    let none = tiles
        .is_none()
        .then(|| view! { <p class="empty">"This route had no requests in this range."</p> });
    let steps = fill(&series, window);
    let back = ctx.link("/routes", &[]);
    let exemplar_ctx = ctx.clone();
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <p class="crumbs"><a href=back>"← Routes"</a></p>
            <PageHead title=route ctx=ctx window=window note=format!("{method} requests")/>
            {tiles}
            {none}
            <TrafficCharts steps=steps step=window.step now=now markers=markers/>
            <ExemplarList ctx=exemplar_ctx page=exemplars/>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(route: &str, requests: u64, p95: f64) -> RouteStats {
        RouteStats {
            route: route.to_owned(),
            method: "GET".to_owned(),
            requests,
            errors: 0,
            status_classes: [0, requests, 0, 0, 0],
            error_rate: 0.0,
            throughput: 0.0,
            p50_ms: 1.0,
            p95_ms: p95,
            p99_ms: p95,
            mean_ms: 1.0,
            total_ms: requests as f64,
        }
    }

    #[test]
    fn sort_parameters_parse_and_apply() {
        assert_eq!(Sort::from_params(None, None), Some(Sort::default()));
        assert_eq!(
            Sort::from_params(Some("route"), None),
            Some(Sort {
                key: SortKey::Route,
                descending: false
            })
        );
        assert_eq!(Sort::from_params(Some("nope"), None), None);
        assert_eq!(Sort::from_params(Some("p95"), Some("sideways")), None);
        assert!(Sort::default().params().is_empty());

        let mut routes = vec![
            stats("/b", 5, 9.0),
            stats("/a", 7, 3.0),
            stats("/c", 5, 30.0),
        ];
        Sort::from_params(Some("p95"), Some("desc"))
            .expect("sort")
            .apply(&mut routes);
        let names: Vec<_> = routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["/c", "/b", "/a"]);
        Sort::from_params(Some("requests"), Some("asc"))
            .expect("sort")
            .apply(&mut routes);
        let names: Vec<_> = routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["/b", "/c", "/a"], "ties by name");
    }
}
