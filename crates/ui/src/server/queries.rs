//! The Queries page's handler: slow statement shapes and N+1 suspects of the range, read
//! through the same insight reads as `/api/0/projects/{id}/queries/`. SQL text is stored
//! from the apps, so the page needs the admin credential as the API does.

use axum::{
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use leptos::prelude::*;

use super::{PageError, PageParams, UiState, frame, html_page, require_admin};
use crate::pages::{self, QueriesList, QueriesPage, QuerySort, Section};

/// `GET /projects/{id}/queries?sort=total|p95|count`
pub(super) async fn queries_list(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let sort = QuerySort::parse(params.sort.as_deref()).ok_or(PageError::BadSort)?;
    let frame = frame(&state.query, &id, &params).await?;
    let chrome = frame.chrome(
        Section::Queries,
        "/queries",
        sort.params(),
        &headers,
        &state.site,
    );
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let project = frame.project.id;
    let queries = state
        .query
        .slow_queries(project, range, frame.environment.as_deref())
        .await?;
    let suspects = state
        .query
        .n_plus_one_suspects(project, range, frame.environment.as_deref())
        .await?;
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = QueriesList {
        chrome,
        window,
        queries,
        suspects,
        sort,
    };
    let html = pages::document(theme, bundle, move || view! { <QueriesPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

#[cfg(test)]
pub(crate) mod tests {
    use axum::{
        Router,
        body::Body,
        http::{Request, header},
    };
    use sightline_collector::{Collector, Config};
    use sightline_protocol::{
        AgentInfo, Histogram, InsightBatch, MetricBatch, NPlusOne, QueryWindow,
    };
    use tower::ServiceExt;

    use super::*;
    use crate::server::logs::tests::get;

    pub(crate) fn unix_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64
    }

    pub(crate) async fn collector() -> (Collector, tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let collector = Collector::open(config).await.expect("open collector");
        let ui =
            crate::server::routes_with_site(collector.query(), crate::site::Site::without_bundle());
        (collector, dir, ui)
    }

    /// Sends `insight` from `instance` through the collector's ingest endpoint, as an
    /// agent does, and waits until the writer has stored it.
    pub(crate) async fn ingest(collector: &Collector, instance: &str, insight: InsightBatch) {
        let project = collector.projects().await.expect("projects")[0].clone();
        let batch = MetricBatch {
            agent: AgentInfo {
                service: "shop".to_owned(),
                instance: instance.to_owned(),
                sdk: "sightline-agent/0.1.0".to_owned(),
                environment: None,
                release: None,
            },
            sent_at_ms: unix_now() * 1000,
            dropped_windows: 0,
            switch_evaluations: Default::default(),
            insight,
            windows: Vec::new(),
        };
        let response = collector
            .router()
            .oneshot(
                Request::post(format!("/api/{}/metrics", project.id))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(
                        "x-sentry-auth",
                        format!("Sentry sentry_key={}", project.public_key),
                    )
                    .body(Body::from(serde_json::to_vec(&batch).expect("json")))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    fn latency(us: u64, n: u64) -> Histogram {
        let mut h = Histogram::new();
        h.record_n(us, n);
        h
    }

    /// Polls `uri` until its page contains `needle` (the writer stores asynchronously).
    pub(crate) async fn page_with(ui: &Router, uri: &str, needle: &str) -> String {
        for _ in 0..200 {
            let (status, html) = get(ui, uri).await;
            assert_eq!(status, StatusCode::OK, "{html}");
            if html.contains(needle) {
                return html;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("{uri} never showed {needle:?}");
    }

    #[tokio::test]
    async fn queries_page_ranks_statements_and_lists_n_plus_one_suspects() {
        let (collector, _dir, ui) = collector().await;
        let start = unix_now() / 10 * 10 - 60;
        let xss = "SELECT '<script>alert(1)</script>' FROM \"<img src=x onerror=alert(2)>\"";
        let window = |fingerprint: u64, sql: &str, us: u64, n: u64, route: &str| QueryWindow {
            start,
            window_secs: 10,
            fingerprint,
            sql: sql.to_owned(),
            latency: latency(us, n),
            routes: vec![(route.to_owned(), "GET".to_owned(), n)],
        };
        ingest(
            &collector,
            "web-1",
            InsightBatch {
                queries: vec![
                    // many fast: most executions
                    window(
                        1,
                        "SELECT * FROM comments WHERE thread_id = ?",
                        500,
                        400,
                        "/threads/{id}",
                    ),
                    // few slow: highest p95 and total
                    window(
                        2,
                        "SELECT count(*) FROM votes GROUP BY ?",
                        250_000,
                        3,
                        "/leaderboard",
                    ),
                    window(3, xss, 1_000, 1, "/<b>evil</b>"),
                ],
                n_plus_one: vec![NPlusOne {
                    start,
                    window_secs: 10,
                    route: "/threads/{id}".to_owned(),
                    method: "GET".to_owned(),
                    fingerprint: 1,
                    requests: 20,
                    total_repeats: 400,
                    max_repeats: 25,
                }],
                ..InsightBatch::default()
            },
        )
        .await;

        let html = page_with(&ui, "/projects/1/queries?statsPeriod=15m", "FROM votes").await;
        let rows: Vec<&str> = html.split("<tr data-fingerprint=\"").skip(1).collect();
        let order: Vec<&str> = rows.iter().map(|r| &r[..16]).collect();
        // by total time: votes (750 ms), comments (200 ms), the XSS one (1 ms); then the
        // N+1 table's comments row
        assert_eq!(
            order,
            [
                "0000000000000002",
                "0000000000000001",
                "0000000000000003",
                "0000000000000001"
            ],
            "{html}"
        );
        assert!(html.contains(r#"data-count="400""#));
        assert!(html.contains(r#"data-total-ms="750""#), "{html}");
        assert!(html.contains("SELECT * FROM comments WHERE thread_id = ?"));
        // calling routes link to their route page
        assert!(
            html.contains(r#"href="/projects/1/route?method=GET&amp;route=%2Fleaderboard&amp;statsPeriod=15m""#),
            "{html}"
        );
        // the N+1 suspect: route, how often, most repeats in one request
        assert!(html.contains(r#"data-requests="20""#), "{html}");
        assert!(html.contains(r#"data-max-repeats="25""#));
        // SQL and route names are text
        assert!(
            html.contains("SELECT &#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;")
                || html.contains("SELECT '&lt;script&gt;alert(1)&lt;/script&gt;'"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;"));
        assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>"));

        // by count: comments first; by p95: votes first
        let html = get(&ui, "/projects/1/queries?statsPeriod=15m&sort=count")
            .await
            .1;
        let first = html.find("<tr data-fingerprint=\"").expect("a row");
        assert_eq!(&html[first + 22..first + 38], "0000000000000001", "{html}");
        assert!(html.contains(r#"aria-sort="descending" class="num"><a href="/projects/1/queries?sort=count&amp;statsPeriod=15m">Count ↓</a>"#), "{html}");
        let html = get(&ui, "/projects/1/queries?statsPeriod=15m&sort=p95")
            .await
            .1;
        let first = html.find("<tr data-fingerprint=\"").expect("a row");
        assert_eq!(&html[first + 22..first + 38], "0000000000000002");

        let (status, _) = get(&ui, "/projects/1/queries?sort=name").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        collector.shutdown().await;
    }
}
