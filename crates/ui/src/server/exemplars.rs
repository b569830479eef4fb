//! The exemplar page's handler: one kept request with its waterfall, through the same read
//! as `/api/0/projects/{id}/exemplars/{exemplar_id}/`. Statement text and span names are
//! stored from the apps, so like the Queries page it needs the admin credential.

use axum::{
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use leptos::prelude::*;

use super::{PageError, PageParams, UiState, frame, html_page, require_admin};
use crate::pages::{self, ExemplarData, ExemplarPage, Section};

/// `GET /projects/{id}/exemplars/{exemplar}`
pub(super) async fn exemplar_detail(
    State(state): State<UiState>,
    Path((id, exemplar)): Path<(String, String)>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let frame = frame(&state.query, &id, &params).await?;
    let exemplar: u64 = exemplar.parse().map_err(|_| PageError::ExemplarNotFound)?;
    // exemplar ids belong to one project: switching project goes to its routes
    let mut chrome = frame.chrome(
        Section::Routes,
        "/routes",
        Vec::new(),
        &headers,
        &state.site,
    );
    chrome.ctx.path = format!("/projects/{}/exemplars/{exemplar}", frame.project.id);
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let detail = state
        .query
        .exemplar(frame.project.id, exemplar)
        .await?
        .ok_or(PageError::ExemplarNotFound)?;
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = ExemplarData { chrome, detail };
    let html = pages::document(theme, bundle, move || view! { <ExemplarPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use sightline_protocol::{Entry, EntryKind, Exemplar, InsightBatch, reason};

    use crate::server::logs::tests::get;
    use crate::server::queries::tests::{collector, ingest, page_with, unix_now};

    fn entry(kind: EntryKind, name: &str, offset_us: u64, duration_us: u64) -> Entry {
        Entry {
            fingerprint: matches!(kind, EntryKind::Query).then_some(0xfeed),
            kind,
            name: name.to_owned(),
            offset_us,
            duration_us,
        }
    }

    #[tokio::test]
    async fn route_lists_exemplars_and_the_waterfall_draws_each_entry_in_order() {
        let (collector, _dir, ui) = collector().await;
        let img = r#"handler"><img src=x onerror=alert(1)>"#;
        let sql = "SELECT name FROM users WHERE note = '</code><script>alert(1)</script>'";
        ingest(
            &collector,
            "web-1",
            InsightBatch {
                exemplars: vec![Exemplar {
                    route: "/orders/{id}".to_owned(),
                    method: "GET".to_owned(),
                    status: 200,
                    start_ms: (unix_now() - 60) * 1000,
                    duration_us: 40_000,
                    reasons: reason::SLOW | reason::N_PLUS_ONE,
                    queries: 2,
                    query_us: 15_000,
                    allocs: 1_234,
                    alloc_bytes: 56_789,
                    dropped_entries: 0,
                    entries: vec![
                        entry(EntryKind::Span, img, 0, 40_000),
                        entry(EntryKind::Query, sql, 5_000, 10_000),
                        entry(EntryKind::Query, "SELECT ?", 20_000, 5_000),
                        entry(EntryKind::Span, "render", 30_000, 8_000),
                    ],
                }],
                ..InsightBatch::default()
            },
        )
        .await;

        let route = "/projects/1/route?statsPeriod=1h&method=GET&route=%2Forders%2F%7Bid%7D";
        let html = page_with(&ui, route, "data-exemplar=").await;
        assert!(html.contains("slow, N+1"), "{html}");
        assert!(html.contains("40.0 ms"), "{html}");
        let start = html.find(r#"href="/projects/1/exemplars/"#).expect("link") + 6;
        let href = &html[start..start + html[start..].find('"').expect("quote")];
        let href = href.replace("&amp;", "&");

        let (status, page) = get(&ui, &href).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        // one row per entry, in start order, each bar placed and sized in thousandths of
        // the 40 ms request
        let bars: Vec<(String, String)> = page
            .split(r#"<rect x=""#)
            .skip(1)
            .map(|rest| {
                let x = &rest[..rest.find('"').expect("quote")];
                let at = rest.find(r#"width=""#).expect("width") + 7;
                let width = &rest[at..at + rest[at..].find('"').expect("quote")];
                (x.to_owned(), width.to_owned())
            })
            .collect();
        let expected = [
            ("0.0", "1000.0"),
            ("125.0", "250.0"),
            ("500.0", "125.0"),
            ("750.0", "200.0"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(x, w)| (x.to_string(), w.to_string()))
            .collect();
        assert_eq!(bars, expected, "{page}");
        let kinds: Vec<&str> = page
            .match_indices(r#"<tr data-kind=""#)
            .map(|(i, m)| &page[i + m.len()..i + m.len() + 4])
            .collect();
        assert_eq!(kinds, ["span", "quer", "quer", "span"]);
        let order: Vec<usize> = [
            "handler&quot;&gt;&lt;img",
            "users WHERE note",
            "SELECT ?",
            "render",
        ]
        .iter()
        .map(|needle| page.find(needle).expect(needle))
        .collect();
        assert!(order.is_sorted(), "{page}");
        // names are text, never markup
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;/code&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        // the request's allocation counts
        assert!(
            page.contains(r#"data-allocs="1234" data-alloc-bytes="56789""#),
            "{page}"
        );
        assert!(page.contains("1,234 · 56,789 bytes"), "{page}");

        // another id, or not a number: a 404 page
        let (status, _) = get(&ui, "/projects/1/exemplars/999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(&ui, "/projects/1/exemplars/abc").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        collector.shutdown().await;
    }

    #[tokio::test]
    async fn the_route_page_pages_through_its_exemplars_newest_first() {
        let (collector, _dir, ui) = collector().await;
        // 120 exemplars, two per start second (ties are ordered by id), newest is
        // duration 119 ms
        let start = (unix_now() - 600) * 1000;
        let exemplars = (0..120u64)
            .map(|i| Exemplar {
                route: "/feed".to_owned(),
                method: "GET".to_owned(),
                status: 200,
                start_ms: start + (i as i64 / 2) * 1000,
                duration_us: (i + 1) * 1000,
                reasons: reason::SAMPLED,
                queries: 0,
                query_us: 0,
                allocs: 0,
                alloc_bytes: 0,
                dropped_entries: 0,
                entries: Vec::new(),
            })
            .collect();
        ingest(
            &collector,
            "web-1",
            InsightBatch {
                exemplars,
                ..InsightBatch::default()
            },
        )
        .await;
        let durations = |html: &str| -> Vec<u64> {
            html.split("<tr data-exemplar=")
                .skip(1)
                .map(|row| {
                    let cell = &row[row.find(r#"<td class="num">"#).expect("duration") + 16..];
                    cell[..cell.find(" ms").expect("ms")]
                        .parse::<f64>()
                        .expect("number") as u64
                })
                .collect()
        };
        let next = |html: &str| -> Option<String> {
            let at = html.find(r#"rel="next""#)?;
            let href = &html[html[..at].rfind("href=\"").expect("href") + 6..at];
            Some(href[..href.find('"').expect("quote")].replace("&amp;", "&"))
        };
        let mut page = "/projects/1/route?statsPeriod=1h&method=GET&route=%2Ffeed".to_owned();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (status, html) = get(&ui, &page).await;
            assert_eq!(status, StatusCode::OK, "{html}");
            let rows = durations(&html);
            assert!(rows.len() <= 50, "{} rows on one page", rows.len());
            // later pages link back to the newest
            assert_eq!(html.contains("Newest exemplars"), pages > 0, "{html}");
            seen.extend(rows);
            pages += 1;
            match next(&html) {
                Some(href) => {
                    assert!(href.contains("before="), "{href}");
                    assert!(href.contains("route=%2Ffeed"), "{href}");
                    page = href;
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        // every exemplar once, newest first
        assert_eq!(seen, (1..=120).rev().collect::<Vec<u64>>());
        let (status, _) = get(&ui, "/projects/1/route?method=GET&route=%2Ffeed&before=x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        collector.shutdown().await;
    }

    #[tokio::test]
    async fn with_an_admin_token_waterfalls_and_flip_markers_need_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let collector = sightline_collector::Collector::open(sightline_collector::Config {
            data_dir: dir.path().to_owned(),
            admin_token: Some("s3cret-token".to_owned()),
            ..sightline_collector::Config::default()
        })
        .await
        .expect("open collector");
        let ui =
            crate::server::routes_with_site(collector.query(), crate::site::Site::without_bundle());
        let (status, html) = get(&ui, "/projects/1/exemplars/1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{html}");
        assert!(html.contains(r#"action="/signin""#));
        assert!(
            html.contains(r#"value="/projects/1/exemplars/1""#),
            "{html}"
        );
        // the route page stays open, its charts without the switch audit (admin data): the
        // switch's creation is in range but not shown
        let switch = sightline_protocol::Switch {
            key: "checkout".to_owned(),
            label: String::new(),
            description: String::new(),
            owner: String::new(),
            default: false,
            state: sightline_protocol::SwitchState::Off,
            conditions: Vec::new(),
            exclusions: Vec::new(),
        };
        collector
            .ensure_switch(switch, "seed", "initial")
            .await
            .expect("switch");
        let (status, html) = get(&ui, "/projects/1/route?method=GET&route=%2F").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains("<svg"));
        assert!(!html.contains("checkout"), "{html}");
        collector.shutdown().await;
    }
}
