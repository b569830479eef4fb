//! `/projects/{id}/memory`: the live heap and its peak over the range for every instance
//! running the counting allocator — instances whose heap grew over the range first and
//! marked, since steady growth is what a leak looks like — and what each route allocates
//! per request.

use leptos::prelude::*;
use sightline_collector::{HeapSeries, RouteInsight};

use super::{Chrome, Ctx, PageHead, TopBar};
use crate::chart::{Marker, MultiChart, Series};
use crate::format;
use crate::range::Window;

/// A heap that ended the range at least this much above where it started (as a share of
/// the start) is marked as growing.
const GROWTH_SHARE: f64 = 0.10;

/// What the memory page shows, fetched by the handler.
#[derive(Debug, Clone)]
pub(crate) struct MemoryData {
    pub(crate) chrome: Chrome,
    pub(crate) window: Window,
    /// Per instance, points in steps of `window.step`.
    pub(crate) heap: Vec<HeapSeries>,
    pub(crate) routes: Vec<RouteInsight>,
    /// Switch flips in the range, drawn on every heap chart.
    pub(crate) markers: Vec<Marker>,
}

/// `1536` → `1.5 KiB`.
pub(crate) fn bytes(value: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = value.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{} {}", format::compact(v), UNITS[unit])
    }
}

/// How an instance's live heap changed over the range: first and last measured step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Growth {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl Growth {
    pub(crate) fn of(series: &HeapSeries) -> Option<Growth> {
        Some(Growth {
            first: series.points.first()?.live_bytes,
            last: series.points.last()?.live_bytes,
        })
    }

    /// Bytes more at the end than at the start (negative: it shrank).
    pub(crate) fn delta(self) -> f64 {
        self.last as f64 - self.first as f64
    }

    /// Grew by at least [`GROWTH_SHARE`] of where it started.
    pub(crate) fn growing(self) -> bool {
        self.last > self.first && self.delta() >= GROWTH_SHARE * self.first as f64
    }
}

/// One instance's live and peak heap, in MiB, over every step of the window.
#[component]
fn HeapChart(series: HeapSeries, window: Window, markers: Vec<Marker>) -> impl IntoView {
    const MIB: f64 = 1024.0 * 1024.0;
    let step = window.step.max(1);
    let ts: Vec<i64> = (window.since..window.until)
        .step_by(step as usize)
        .collect();
    let mut live = vec![None; ts.len()];
    let mut peak = vec![None; ts.len()];
    for p in &series.points {
        let Some(i) = usize::try_from((p.ts - window.since).div_euclid(step))
            .ok()
            .filter(|i| *i < ts.len())
        else {
            continue;
        };
        live[i] = Some(p.live_bytes as f64 / MIB);
        peak[i] = Some(p.peak_bytes as f64 / MIB);
    }
    let title = format!("{} · {}", series.service, series.instance);
    let series = vec![
        Series {
            name: "live",
            values: live,
        },
        Series {
            name: "peak",
            values: peak,
        },
    ];
    view! { <MultiChart title=title unit="MiB" ts=ts series=series markers=markers/> }
}

/// An instance: its chart and how its heap changed.
#[component]
fn Instance(series: HeapSeries, window: Window, markers: Vec<Marker>) -> impl IntoView {
    let growth = Growth::of(&series);
    let growing = growth.is_some_and(Growth::growing);
    let peak = series
        .points
        .iter()
        .map(|p| p.peak_bytes)
        .max()
        .unwrap_or(0);
    let summary = growth.map(|g| {
        let delta = g.delta();
        let sign = if delta >= 0.0 { "+" } else { "−" };
        let share = if g.first > 0 {
            format!(" ({sign}{})", format::percent(delta.abs() / g.first as f64))
        } else {
            String::new()
        };
        format!(
            "live {} → {}, {sign}{}{share} · peak {}",
            bytes(g.first as f64),
            bytes(g.last as f64),
            bytes(delta.abs()),
            bytes(peak as f64)
        )
    });
    let badge = growing.then(|| view! { <span class="badge growing">"growing"</span> });
    let instance = series.instance.clone();
    let class = if growing {
        "instance growing"
    } else {
        "instance"
    };
    let flag = if growing { "true" } else { "false" };
    view! {
        <div class=class data-instance=instance data-growing=flag>
            <p class="instance-head">{badge}<span class="muted">{summary}</span></p>
            <HeapChart series=series window=window markers=markers/>
        </div>
    }
}

/// Allocations per request, routes allocating the most bytes in total first.
#[component]
fn AllocationsTable(ctx: Ctx, routes: Vec<RouteInsight>) -> impl IntoView {
    let rows = routes
        .into_iter()
        .map(|r| {
            let href = ctx.link(
                "/route",
                &[("method", r.method.clone()), ("route", r.route.clone())],
            );
            let full = r.route.clone();
            let name = r.route.clone();
            let total = r.bytes_per_request * r.alloc_requests as f64;
            view! {
                <tr data-route=name>
                    <td class="route" title=full><a href=href><code>{r.route}</code></a></td>
                    <td><span class="method">{r.method}</span></td>
                    <td class="num opt">{format::count(r.alloc_requests)}</td>
                    <td class="num" data-allocs=format::exact(r.allocs_per_request)>
                        {format::compact(r.allocs_per_request)}
                    </td>
                    <td class="num" data-bytes=format::exact(r.bytes_per_request)>
                        {bytes(r.bytes_per_request)}
                    </td>
                    <td class="num opt">{bytes(r.bytes_p95)}</td>
                    <td class="num opt">{bytes(total)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="allocations">
                <thead>
                    <tr>
                        <th scope="col">"Route"</th>
                        <th scope="col">"Method"</th>
                        <th scope="col" class="num opt">"Requests measured"</th>
                        <th scope="col" class="num">"Allocations / request"</th>
                        <th scope="col" class="num">"Bytes / request"</th>
                        <th scope="col" class="num opt">"Bytes p95"</th>
                        <th scope="col" class="num opt">"Bytes in total"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

/// The memory page.
#[component]
pub(crate) fn MemoryPage(data: MemoryData) -> impl IntoView {
    let MemoryData {
        chrome,
        window,
        mut heap,
        routes,
        markers,
    } = data;
    let ctx = chrome.ctx.clone();
    // growing instances first, largest growth first; then by name
    heap.retain(|s| !s.points.is_empty());
    heap.sort_by(|a, b| {
        let key = |s: &HeapSeries| {
            let g = Growth::of(s);
            (g.is_some_and(Growth::growing), g.map_or(0.0, Growth::delta))
        };
        let (ga, da) = key(a);
        let (gb, db) = key(b);
        gb.cmp(&ga)
            .then_with(|| {
                if ga {
                    db.total_cmp(&da)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.instance.cmp(&b.instance))
    });
    let growing = heap
        .iter()
        .filter(|s| Growth::of(s).is_some_and(Growth::growing))
        .count();
    let live_now: u64 = heap
        .iter()
        .filter_map(|s| s.points.last())
        .map(|p| p.live_bytes)
        .sum();
    let highest_peak = heap
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.peak_bytes))
        .max()
        .unwrap_or(0);
    let mut routes: Vec<RouteInsight> = routes
        .into_iter()
        .filter(|r| r.alloc_requests > 0)
        .collect();
    routes.sort_by(|a, b| {
        (b.bytes_per_request * b.alloc_requests as f64)
            .total_cmp(&(a.bytes_per_request * a.alloc_requests as f64))
            .then_with(|| a.route.cmp(&b.route))
            .then_with(|| a.method.cmp(&b.method))
    });

    let heap_body = if heap.is_empty() {
        view! {
            <p class="empty">
                "No heap samples in this range. Apps that install sightline_agent::CountingAllocator \
                 as their global allocator report their live heap here."
            </p>
        }
        .into_any()
    } else {
        let count = heap.len();
        let tile_class = if growing > 0 { "tile growing" } else { "tile" };
        let instances = heap
            .into_iter()
            .map(|s| view! { <Instance series=s window=window markers=markers.clone()/> })
            .collect_view();
        view! {
            <dl class="tiles">
                <div class="tile"><dt>"Instances"</dt><dd>{format::count(count as u64)}</dd></div>
                <div class=tile_class>
                    <dt>"Growing over the range"</dt><dd data-growing-count=growing>{format::count(growing as u64)}</dd>
                </div>
                <div class="tile"><dt>"Live heap, latest"</dt><dd>{bytes(live_now as f64)}</dd></div>
                <div class="tile"><dt>"Highest peak"</dt><dd>{bytes(highest_peak as f64)}</dd></div>
            </dl>
            <section class="charts instances" aria-label="Heap per instance">{instances}</section>
        }
        .into_any()
    };
    let routes_body = if routes.is_empty() {
        view! { <p class="muted">"No request was measured by a counting allocator in this range."</p> }
            .into_any()
    } else {
        view! { <AllocationsTable ctx=ctx.clone() routes=routes/> }.into_any()
    };
    view! {
        <TopBar chrome=chrome/>
        <main class="page">
            <PageHead title="Memory" ctx=ctx window=window/>
            {heap_body}
            <section aria-labelledby="alloc-heading">
                <h2 id="alloc-heading">"Allocations per route"</h2>
                {routes_body}
            </section>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3 MiB");
    }

    #[test]
    fn growth_needs_a_tenth_more_at_the_end() {
        let g = |first, last| Growth { first, last };
        assert!(g(100, 110).growing());
        assert!(!g(100, 109).growing());
        assert!(!g(100, 50).growing());
        assert!(g(0, 1).growing());
        assert_eq!(g(100, 50).delta(), -50.0);
    }
}
