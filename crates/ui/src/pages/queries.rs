//! `/projects/{id}/queries?sort=total|p95|count`: the statement shapes the apps ran in
//! the range — normalised SQL, executions, total time, p95, the routes that called them —
//! and the N+1 suspects: routes that ran one shape many times in a single request.
//!
//! SQL and route names come from instrumented apps: text only, escaped by Leptos.

use leptos::prelude::*;
use sightline_collector::{NPlusOneRow, SlowQuery};

use super::{Chrome, Ctx, PageHead, TopBar};
use crate::format;
use crate::range::Window;

/// Statement shapes listed at most.
pub(crate) const MAX_QUERIES: usize = 100;
/// Calling routes listed per statement at most.
const MAX_CALLERS: usize = 5;

/// What the statements are ordered by (`?sort=`), largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum QuerySort {
    /// Total time, the default: where database time goes.
    #[default]
    Total,
    P95,
    Count,
}

impl QuerySort {
    const ALL: [QuerySort; 3] = [QuerySort::Total, QuerySort::P95, QuerySort::Count];

    /// From `?sort=`; `None` when it names no column.
    pub(crate) fn parse(value: Option<&str>) -> Option<QuerySort> {
        match value.unwrap_or("") {
            "" => Some(QuerySort::default()),
            v => QuerySort::ALL.into_iter().find(|s| s.as_str() == v),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QuerySort::Total => "total",
            QuerySort::P95 => "p95",
            QuerySort::Count => "count",
        }
    }

    /// The page parameters; the default order is left out.
    pub(crate) fn params(self) -> Vec<(&'static str, String)> {
        if self == QuerySort::default() {
            Vec::new()
        } else {
            vec![("sort", self.as_str().to_owned())]
        }
    }

    /// Sorts largest first; ties by fingerprint so the order is stable across reloads.
    pub(crate) fn apply(self, rows: &mut [SlowQuery]) {
        rows.sort_by(|a, b| {
            let primary = match self {
                QuerySort::Total => b.total_ms.total_cmp(&a.total_ms),
                QuerySort::P95 => b.p95_ms.total_cmp(&a.p95_ms),
                QuerySort::Count => b.count.cmp(&a.count),
            };
            primary.then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
    }
}

/// What the queries page shows, fetched by the handler.
#[derive(Debug, Clone)]
pub(crate) struct QueriesList {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    /// Every statement shape of the range, in any order.
    pub(crate) queries: Vec<SlowQuery>,
    pub(crate) suspects: Vec<NPlusOneRow>,
    pub(crate) sort: QuerySort,
}

/// The link to a route's page.
fn route_href(ctx: &Ctx, route: &str, method: &str) -> String {
    ctx.link(
        "/route",
        &[("method", method.to_owned()), ("route", route.to_owned())],
    )
}

/// The slow-queries table, in the order given; headers of sortable columns are links.
#[component]
fn QueriesTable(ctx: Ctx, queries: Vec<SlowQuery>, sort: QuerySort) -> impl IntoView {
    let header = |key: QuerySort, label: &'static str| {
        let here = key == sort;
        let href = Ctx {
            keep: key.params(),
            ..ctx.clone()
        }
        .here();
        view! {
            <th scope="col" class="num" aria-sort=here.then_some("descending")>
                <a href=href>{if here { format!("{label} ↓") } else { label.to_owned() }}</a>
            </th>
        }
    };
    let rows = queries
        .into_iter()
        .map(|q| {
            let callers_total = q.routes.len();
            let callers = q
                .routes
                .iter()
                .take(MAX_CALLERS)
                .map(|r| {
                    let href = route_href(&ctx, &r.route, &r.method);
                    view! {
                        <li>
                            <span class="method">{r.method.clone()}</span>" "
                            <a href=href><code>{r.route.clone()}</code></a>
                            <span class="muted">{format!(" ×{}", format::count(r.count))}</span>
                        </li>
                    }
                })
                .collect_view();
            let more = (callers_total > MAX_CALLERS).then(|| {
                view! { <li class="muted">{format!("and {} more", callers_total - MAX_CALLERS)}</li> }
            });
            let none = (callers_total == 0)
                .then(|| view! { <li class="muted">"outside any request"</li> });
            view! {
                <tr data-fingerprint=q.fingerprint>
                    <td class="sql"><code>{q.sql}</code></td>
                    <td class="num" data-count=q.count>{format::count(q.count)}</td>
                    <td class="num" data-total-ms=format::exact(q.total_ms)>
                        {format!("{} ms", format::ms(q.total_ms))}
                        <span class="share-text muted">{format::percent(q.share)}</span>
                    </td>
                    <td class="num opt">{format!("{} ms", format::ms(q.mean_ms))}</td>
                    <td class="num" data-p95-ms=format::exact(q.p95_ms)>{format!("{} ms", format::ms(q.p95_ms))}</td>
                    <td class="callers"><ul>{callers}{more}{none}</ul></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="queries">
                <thead>
                    <tr>
                        <th scope="col">"Statement"</th>
                        {header(QuerySort::Count, "Count")}
                        {header(QuerySort::Total, "Total time")}
                        <th scope="col" class="num opt">"Mean"</th>
                        {header(QuerySort::P95, "p95")}
                        <th scope="col">"Calling routes"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// The N+1 suspects: most flagged requests first.
#[component]
fn SuspectsTable(ctx: Ctx, mut suspects: Vec<NPlusOneRow>) -> impl IntoView {
    suspects.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.route.cmp(&b.route))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    let rows = suspects
        .into_iter()
        .map(|s| {
            let href = route_href(&ctx, &s.route, &s.method);
            let share = if s.route_requests > 0 {
                s.requests as f64 / s.route_requests as f64
            } else {
                0.0
            };
            let full = s.route.clone();
            let fingerprint = s.fingerprint.clone();
            view! {
                <tr data-fingerprint=fingerprint>
                    <td class="route" title=full>
                        <span class="method">{s.method}</span>" "
                        <a href=href><code>{s.route}</code></a>
                    </td>
                    <td class="sql">
                        <code>{s.sql}</code>
                        <span class="fingerprint muted">{s.fingerprint}</span>
                    </td>
                    <td class="num" data-requests=s.requests>
                        {if s.route_requests > 0 {
                            format!("{} of {}", format::count(s.requests), format::count(s.route_requests))
                        } else {
                            format::count(s.requests)
                        }}
                        {(s.route_requests > 0).then(|| view! {
                            <span class="share-text muted">{format::percent(share)}</span>
                        })}
                    </td>
                    <td class="num" data-max-repeats=s.max_repeats>{format!("{}×", format::count(s.max_repeats))}</td>
                    <td class="num opt">{format!("{}×", format::compact(s.mean_repeats))}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="suspects">
                <thead>
                    <tr>
                        <th scope="col">"Route"</th>
                        <th scope="col">"Repeated statement"</th>
                        <th scope="col" class="num">"Requests flagged"</th>
                        <th scope="col" class="num">"Most in one request"</th>
                        <th scope="col" class="num opt">"Mean per flagged"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// The queries page.
#[component]
pub(crate) fn QueriesPage(data: QueriesList) -> impl IntoView {
    let QueriesList {
        chrome,
        window,
        mut queries,
        suspects,
        sort,
    } = data;
    let ctx = chrome.ctx.clone();
    let total_ms: f64 = queries.iter().map(|q| q.total_ms).sum();
    let executions: u64 = queries.iter().map(|q| q.count).sum();
    let shapes = queries.len();
    sort.apply(&mut queries);
    queries.truncate(MAX_QUERIES);
    let suspects_body = if suspects.is_empty() {
        view! { <p class="muted">"No request ran one statement shape often enough to be flagged in this range."</p> }
            .into_any()
    } else {
        view! { <SuspectsTable ctx=ctx.clone() suspects=suspects/> }.into_any()
    };
    let body = if queries.is_empty() {
        view! {
            <p class="empty">
                "No queries recorded in this range. Apps with the agent's tracing layer report \
                 their SQL (sqlx events, or record_query for other drivers) here."
            </p>
        }
        .into_any()
    } else {
        let more = (shapes > MAX_QUERIES)
            .then(|| view! { <p class="muted">{format!("The top {MAX_QUERIES} of {shapes} statement shapes are shown.")}</p> });
        view! {
            <dl class="tiles">
                <div class="tile"><dt>"Statement shapes"</dt><dd>{format::count(shapes as u64)}</dd></div>
                <div class="tile"><dt>"Executions"</dt><dd>{format::count(executions)}</dd></div>
                <div class="tile"><dt>"Time in queries"</dt><dd>{format!("{} ms", format::ms(total_ms))}</dd></div>
            </dl>
            <section aria-labelledby="queries-heading">
                <h2 id="queries-heading">"Slow queries"</h2>
                <QueriesTable ctx=ctx.clone() queries=queries sort=sort/>
                {more}
            </section>
        }
        .into_any()
    };
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title="Queries" ctx=ctx window=window/>
            {body}
            <section aria-labelledby="suspects-heading">
                <h2 id="suspects-heading">"N+1 suspects"</h2>
                {suspects_body}
            </section>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_collector::CallingRoute;

    fn query(fingerprint: &str, count: u64, total_ms: f64, p95_ms: f64) -> SlowQuery {
        SlowQuery {
            fingerprint: fingerprint.to_owned(),
            sql: format!("SELECT {fingerprint}"),
            count,
            total_ms,
            mean_ms: total_ms / count as f64,
            p95_ms,
            max_ms: p95_ms,
            share: 0.0,
            routes: vec![CallingRoute {
                route: "/a".to_owned(),
                method: "GET".to_owned(),
                count,
            }],
        }
    }

    #[test]
    fn sorts_by_the_named_column_largest_first() {
        let mut rows = vec![
            query("a", 10, 50.0, 9.0),
            query("b", 500, 20.0, 1.0),
            query("c", 2, 80.0, 40.0),
        ];
        let order = |rows: &[SlowQuery]| -> Vec<String> {
            rows.iter().map(|r| r.fingerprint.clone()).collect()
        };
        QuerySort::Total.apply(&mut rows);
        assert_eq!(order(&rows), ["c", "a", "b"]);
        QuerySort::Count.apply(&mut rows);
        assert_eq!(order(&rows), ["b", "a", "c"]);
        QuerySort::P95.apply(&mut rows);
        assert_eq!(order(&rows), ["c", "a", "b"]);
        assert_eq!(QuerySort::parse(None), Some(QuerySort::Total));
        assert_eq!(QuerySort::parse(Some("count")), Some(QuerySort::Count));
        assert_eq!(QuerySort::parse(Some("name")), None);
        assert!(QuerySort::Total.params().is_empty());
    }
}
