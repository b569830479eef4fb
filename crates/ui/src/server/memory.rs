//! The Memory page's handler: heap series per instance and allocation tallies per route
//! of the range, through the same insight reads as `/api/0/projects/{id}/heap/` and
//! `/routes/insight/`. Figures only, like the overview, so no admin credential.

use axum::{
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use leptos::prelude::*;

use super::{PageError, PageParams, UiState, frame, html_page};
use crate::pages::{self, MemoryData, MemoryPage, Section};

/// `GET /projects/{id}/memory`
pub(super) async fn memory(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let frame = frame(&state.query, &id, &params).await?;
    let chrome = frame.chrome(
        Section::Memory,
        "/memory",
        Vec::new(),
        &headers,
        &state.site,
    );
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let project = frame.project.id;
    let heap = state
        .query
        .heap_series(project, range, window.step, frame.environment.as_deref())
        .await?;
    let routes = state
        .query
        .route_insight(project, range, frame.environment.as_deref())
        .await?;
    let markers = super::markers::flip_markers(&state.query, &headers, window).await?;
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = MemoryData {
        chrome,
        window,
        heap,
        routes,
        markers,
    };
    let html = pages::document(theme, bundle, move || view! { <MemoryPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

#[cfg(test)]
mod tests {
    use sightline_protocol::{HeapSample, Histogram, InsightBatch, RouteInsight};

    use crate::server::queries::tests::{collector, ingest, page_with, unix_now};

    const MIB: u64 = 1024 * 1024;

    #[tokio::test]
    async fn memory_page_charts_heap_per_instance_and_marks_growth() {
        let (collector, _dir, ui) = collector().await;
        let minute = unix_now() / 60 * 60;
        let samples = |live: [u64; 3]| {
            live.iter()
                .enumerate()
                .map(|(i, &mib)| HeapSample {
                    ts_ms: (minute - 240 + 60 * i as i64) * 1000,
                    live_bytes: mib * MIB,
                    peak_bytes: (mib + 4) * MIB,
                })
                .collect::<Vec<_>>()
        };
        let hist = |v: u64, n: u64| {
            let mut h = Histogram::new();
            h.record_n(v, n);
            h
        };
        // one instance leaks, one holds steady
        ingest(
            &collector,
            "web-leaky",
            InsightBatch {
                heap: samples([10, 15, 20]),
                routes: vec![RouteInsight {
                    start: (minute - 60) / 10 * 10,
                    window_secs: 10,
                    route: "/export/<script>alert(1)</script>".to_owned(),
                    method: "GET".to_owned(),
                    queries: hist(2, 4),
                    query_us: hist(100, 4),
                    allocs: hist(1_000, 4),
                    alloc_bytes: hist(64 * 1024, 4),
                    n_plus_one: 0,
                }],
                ..InsightBatch::default()
            },
        )
        .await;
        ingest(
            &collector,
            "web-steady",
            InsightBatch {
                heap: samples([30, 31, 30]),
                ..InsightBatch::default()
            },
        )
        .await;

        let html = page_with(&ui, "/projects/1/memory?statsPeriod=1h", "web-steady").await;
        let html = if html.contains("web-leaky") {
            html
        } else {
            page_with(&ui, "/projects/1/memory?statsPeriod=1h", "web-leaky").await
        };
        // the leaking instance comes first, marked; the steady one is not
        let leaky = html.find(r#"data-instance="web-leaky""#).expect("leaky");
        let steady = html.find(r#"data-instance="web-steady""#).expect("steady");
        assert!(leaky < steady, "{html}");
        assert!(
            html.contains(r#"data-instance="web-leaky" data-growing="true""#),
            "{html}"
        );
        assert!(html.contains(r#"data-instance="web-steady" data-growing="false""#));
        assert!(html.contains(r#"data-growing-count="1""#));
        assert!(
            html.contains("live 10 MiB → 20 MiB, +10 MiB (+100.0%)"),
            "{html}"
        );
        // live and peak, exact per step, in MiB
        let ts = minute - 240;
        assert!(
            html.contains(&format!(r#"data-ts="{ts}" data-value="10""#)),
            "{html}"
        );
        assert!(html.contains(r#"data-series="peak" data-value="14""#));
        // allocations per request of the route, its name as text
        assert!(html.contains(r#"data-allocs="1000""#), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script"));
        collector.shutdown().await;
    }
}
