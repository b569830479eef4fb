//! Exemplars: requests the agent kept whole. The route page lists the route's exemplars in
//! the range; `/projects/{id}/exemplars/{exemplar_id}` shows one as a waterfall, a row per
//! span and query in start order with a bar placed and sized by its offset and duration
//! within the request.

use leptos::prelude::*;
use sightline_collector::{ExemplarDetail, ExemplarSummary, WaterfallEntry};
use sightline_protocol::EntryKind;

use super::{Chrome, Ctx, TopBar};
use crate::format;

/// Width of a waterfall bar's SVG coordinate space; bars are placed in thousandths of the
/// request.
const TRACK: f64 = 1000.0;

/// Why the agent kept a request, as the list shows it.
fn reason_label(reason: &str) -> &str {
    match reason {
        "n_plus_one" => "N+1",
        other => other,
    }
}

/// The link to an exemplar's page, range and mode kept.
fn exemplar_href(ctx: &Ctx, id: u64) -> String {
    ctx.link(&format!("/exemplars/{id}"), &[])
}

/// One page of a route's exemplars, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExemplarRows {
    pub(crate) rows: Vec<ExemplarSummary>,
    /// Whether this is a later page (it continues after some exemplar).
    pub(crate) paged: bool,
    /// The last row's id when older exemplars follow: the next page's `before`.
    pub(crate) older: Option<u64>,
}

/// The route page's exemplar table, newest first, with links to the newest and the next
/// older page.
#[component]
pub(crate) fn ExemplarList(ctx: Ctx, page: ExemplarRows) -> impl IntoView {
    let ExemplarRows {
        rows: exemplars,
        paged,
        older,
    } = page;
    // this page with `before` set (or dropped, for the newest page)
    let page_href = |before: Option<u64>| {
        let mut keep = ctx.keep.clone();
        keep.retain(|(k, _)| *k != "before");
        keep.extend(before.map(|id| ("before", id.to_string())));
        Ctx {
            keep,
            ..ctx.clone()
        }
        .here()
    };
    let newest = paged.then(|| view! { <a href=page_href(None)>"← Newest exemplars"</a> });
    let next = older.map(|id| {
        view! { <a href=page_href(Some(id)) rel="next">"Older exemplars →"</a> }
    });
    let pager = (newest.is_some() || next.is_some())
        .then(|| view! { <nav class="pager">{newest}{next}</nav> });
    if exemplars.is_empty() {
        return view! {
            <section aria-labelledby="exemplars-heading">
                <h2 id="exemplars-heading">"Exemplars"</h2>
                <p class="empty">"No exemplars kept for this route in this range."</p>
                {pager}
            </section>
        }
        .into_any();
    }
    let rows = exemplars
        .into_iter()
        .map(|e| {
            let href = exemplar_href(&ctx, e.id);
            let reasons = e
                .reasons
                .iter()
                .map(|r| reason_label(r))
                .collect::<Vec<_>>()
                .join(", ");
            let status_class = if e.status >= 500 { "num bad" } else { "num" };
            view! {
                <tr data-exemplar=e.id>
                    <td><a href=href>{format::date_time(e.start_ms.div_euclid(1000))}</a></td>
                    <td class="num">{format!("{} ms", format::ms(e.duration_ms))}</td>
                    <td class=status_class>{e.status}</td>
                    <td>{reasons}</td>
                    <td class="num opt">{format::count(e.queries)}</td>
                    <td class="opt">{e.instance}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <section aria-labelledby="exemplars-heading">
            <h2 id="exemplars-heading">"Exemplars"</h2>
            <div class="table-wrap">
                <table class="exemplars">
                    <thead>
                        <tr>
                            <th scope="col">"Started"</th>
                            <th scope="col" class="num">"Duration"</th>
                            <th scope="col" class="num">"Status"</th>
                            <th scope="col">"Kept because"</th>
                            <th scope="col" class="num opt">"Queries"</th>
                            <th scope="col" class="opt">"Instance"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
            {pager}
        </section>
    }
    .into_any()
}

/// What the exemplar page shows.
#[derive(Debug, Clone)]
pub(crate) struct ExemplarData {
    pub(crate) chrome: Chrome,
    pub(crate) detail: ExemplarDetail,
}

/// Where a bar starts and how wide it is, in [`TRACK`] units: proportional to the entry's
/// offset and duration within `total_ms`. A bar is at least one unit wide so that an
/// instant entry still shows.
fn bar(entry: &WaterfallEntry, total_ms: f64) -> (f64, f64) {
    if total_ms <= 0.0 {
        return (0.0, TRACK);
    }
    let x = (entry.offset_ms / total_ms * TRACK).clamp(0.0, TRACK);
    let width = (entry.duration_ms / total_ms * TRACK).clamp(1.0, TRACK - x.min(TRACK - 1.0));
    (x, width)
}

/// The exemplar page.
#[component]
pub(crate) fn ExemplarPage(data: ExemplarData) -> impl IntoView {
    let ExemplarData { chrome, detail } = data;
    let ctx = chrome.ctx.clone();
    let ExemplarDetail {
        summary,
        dropped_entries,
        entries,
    } = detail;
    // the request's duration, or the last entry's end should an entry outlast it
    let total_ms = entries
        .iter()
        .map(|e| e.offset_ms + e.duration_ms)
        .fold(summary.duration_ms, f64::max);
    let back = ctx.link(
        "/route",
        &[
            ("method", summary.method.clone()),
            ("route", summary.route.clone()),
        ],
    );
    let reasons = summary
        .reasons
        .iter()
        .map(|r| reason_label(r))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (x, width) = bar(&e, total_ms);
            let kind = match e.kind {
                EntryKind::Span => "span",
                EntryKind::Query => "query",
            };
            let name = e.name.clone();
            view! {
                <tr class="wf-row" data-kind=kind data-offset-ms=format::exact(e.offset_ms)
                    data-duration-ms=format::exact(e.duration_ms)>
                    <td class="num">{i + 1}</td>
                    <td><span class=format!("kind {kind}")>{kind}</span></td>
                    <td class="wf-name" title=name><code>{e.name}</code></td>
                    <td class="wf-bar">
                        <svg viewBox=format!("0 0 {TRACK} 10") preserveAspectRatio="none"
                            aria-hidden="true">
                            <rect class="track" width=TRACK height="10"></rect>
                            <rect class=format!("fill {kind}") x=format!("{x:.1}")
                                width=format!("{width:.1}") height="10"></rect>
                        </svg>
                    </td>
                    <td class="num">{format!("+{} ms", format::ms(e.offset_ms))}</td>
                    <td class="num">{format!("{} ms", format::ms(e.duration_ms))}</td>
                </tr>
            }
        })
        .collect_view();
    let dropped = (dropped_entries > 0).then(|| {
        view! {
            <p class="note">
                {format!("{} more entries were not kept (the agent bounds each exemplar).",
                    format::count(dropped_entries))}
            </p>
        }
    });
    let allocs = if summary.allocs == 0 && summary.alloc_bytes == 0 {
        "not measured".to_owned()
    } else {
        format!(
            "{} · {} bytes",
            format::count(summary.allocs),
            format::count(summary.alloc_bytes)
        )
    };
    let title = format!("{} {}", summary.method, summary.route);
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <p class="crumbs"><a href=back>"← Route"</a></p>
            <div class="page-head">
                <div>
                <h1>{title}</h1>
                <p class="sub">
                    {format!("{} · {} · kept because: {reasons}",
                        format::date_time(summary.start_ms.div_euclid(1000)),
                        summary.instance)}
                </p>
                </div>
            </div>
            <dl class="tiles">
                <div class="tile"><dt>"Duration"</dt><dd>{format!("{} ms", format::ms(summary.duration_ms))}</dd></div>
                <div class="tile"><dt>"Status"</dt><dd>{summary.status}</dd></div>
                <div class="tile"><dt>"Queries"</dt>
                    <dd>{format!("{} · {} ms", format::count(summary.queries), format::ms(summary.query_ms))}</dd>
                </div>
                <div class="tile" data-allocs=summary.allocs data-alloc-bytes=summary.alloc_bytes>
                    <dt>"Allocations"</dt><dd>{allocs}</dd>
                </div>
            </dl>
            <section aria-labelledby="waterfall-heading">
                <h2 id="waterfall-heading">"Waterfall"</h2>
                <div class="table-wrap">
                    <table class="waterfall">
                        <thead>
                            <tr>
                                <th scope="col" class="num">"#"</th>
                                <th scope="col">"Kind"</th>
                                <th scope="col">"Span or statement"</th>
                                <th scope="col">"Timeline"</th>
                                <th scope="col" class="num">"Start"</th>
                                <th scope="col" class="num">"Duration"</th>
                            </tr>
                        </thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
                {dropped}
            </section>
        </main>
    }
}
