//! The Logs page's handler: the syslog lines of the range, filtered, with the requests
//! and errors of the same span. Log messages are stored text from the network, so the
//! page needs the admin credential as the logs API does.

use axum::{
    extract::{self, Path, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use leptos::prelude::*;
use serde::Deserialize;

use super::{PageError, PageParams, UiState, frame, html_page, require_admin};
use crate::pages::{self, LogFilters, LogsList, LogsPage, Section};

/// The page's own parameters (the search text is `query`, as on the issues list).
#[derive(Debug, Default, Deserialize)]
pub(super) struct LogParams {
    query: Option<String>,
    severity: Option<String>,
    host: Option<String>,
    app: Option<String>,
}

/// `GET /projects/{id}/logs?query=&severity=&host=&app=`
pub(super) async fn logs_list(
    State(state): State<UiState>,
    Path(id): Path<String>,
    params: Result<extract::Query<PageParams>, QueryRejection>,
    own: Result<extract::Query<LogParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = PageParams::from(params)?;
    let own = own.map(|p| p.0).map_err(|_| PageError::BadFilter)?;
    let filters = LogFilters::from_params(
        own.query.as_deref(),
        own.severity.as_deref(),
        own.host.as_deref(),
        own.app.as_deref(),
    )
    .map_err(|_| PageError::BadFilter)?;
    let frame = frame(&state.query, &id, &params).await?;
    let chrome = frame.chrome(
        Section::Logs,
        "/logs",
        filters.params(),
        &headers,
        &state.site,
    );
    require_admin(&state.query, &headers, chrome.ctx.here())?;
    let window = frame.range.resolve(frame.now);
    let range = window.range();
    let project = frame.project.id;
    let lines = state.query.logs(project, &filters.filter(window)).await?;
    let series = state
        .query
        .series(
            project,
            range,
            window.step,
            None,
            frame.environment.as_deref(),
        )
        .await?;
    let markers = super::markers::flip_markers(&state.query, &headers, window).await?;
    let (theme, bundle) = (chrome.theme, chrome.bundle.clone());
    let data = LogsList {
        chrome,
        window,
        now: frame.now,
        series,
        filters,
        lines,
        markers,
    };
    let html = pages::document(theme, bundle, move || view! { <LogsPage data=data/> });
    Ok(html_page(StatusCode::OK, html))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use axum::{Router, body::Body, http::Request};
    use http_body_util::BodyExt;
    use sightline_collector::{Collector, Config, LogFilter};
    use tokio::io::AsyncWriteExt;
    use tower::ServiceExt;

    use super::*;

    pub(crate) async fn get(router: &Router, uri: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    /// A collector with its syslog TCP listener on an ephemeral port.
    async fn collector() -> (Collector, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.syslog.tcp = Some("127.0.0.1:0".parse().expect("addr"));
        let collector = Collector::open(config).await.expect("open collector");
        (collector, dir)
    }

    /// Sends RFC 5424 lines (newline framing) to the collector's syslog port and waits
    /// until the writer has stored them all.
    async fn send_lines(collector: &Collector, lines: &[String]) {
        let addr = collector.syslog_addrs().tcp.expect("tcp listener");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for line in lines {
            stream
                .write_all(format!("{line}\n").as_bytes())
                .await
                .expect("send");
        }
        stream.shutdown().await.expect("close");
        let query = collector.query();
        let all = LogFilter {
            limit: 1_000,
            ..LogFilter::default()
        };
        for _ in 0..200 {
            if query.logs(1, &all).await.expect("logs").len() >= lines.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the log lines were not stored");
    }

    fn rfc5424(severity: u8, host: &str, app: &str, message: &str) -> String {
        // facility 1 (user)
        let pri = 8 + u32::from(severity);
        format!("<{pri}>1 - {host} {app} - - - {message}")
    }

    #[tokio::test]
    async fn logs_page_shows_lines_newest_first_filtered_and_escaped() {
        let (collector, _dir) = collector().await;
        let xss = r#"<script>alert(1)</script><img src=x onerror=alert(2)>"#;
        send_lines(
            &collector,
            &[
                rfc5424(6, "web-1", "nginx", "GET /health 200"),
                rfc5424(4, "db-1", "postgres", "checkpoint took 9.2 s"),
                rfc5424(3, "web-2", "app", xss),
                rfc5424(2, "db-1", "postgres", "disk full on /var/lib"),
            ],
        )
        .await;
        let ui =
            crate::server::routes_with_site(collector.query(), crate::site::Site::without_bundle());

        let (status, html) = get(&ui, "/projects/1/logs?statsPeriod=15m").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(html.matches("<tr data-log=").count(), 4, "{html}");
        // newest first: the last line sent comes first
        let disk = html.find("disk full on /var/lib").expect("disk line");
        let health = html.find("GET /health 200").expect("health line");
        assert!(disk < health);
        assert!(html.contains(r#"data-severity="crit""#));
        assert!(html.contains(r#"<td class="host">db-1</td>"#), "{html}");
        assert!(html.contains(r#"<td class="app">postgres</td>"#));
        // the message is text, never markup
        assert!(
            html.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
            ),
            "{html}"
        );
        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        // the traffic chart of the same span sits above the lines
        let chart = html.find("Requests and errors (5xx)").expect("chart");
        assert!(chart < disk);
        // the navigation links here and keeps the range
        assert!(
            html.contains(
                r#"<a href="/projects/1/logs?statsPeriod=15m" aria-current="page">Logs</a>"#
            ),
            "{html}"
        );

        // severity: that or worse
        let (_, html) = get(&ui, "/projects/1/logs?statsPeriod=15m&severity=err").await;
        assert_eq!(html.matches("<tr data-log=").count(), 2, "{html}");
        assert!(!html.contains("checkpoint took"));
        assert!(
            html.contains(r#"<option value="err" selected>err or worse</option>"#),
            "{html}"
        );
        // host, app and text filters, kept in the range links
        let (_, html) = get(&ui, "/projects/1/logs?host=db-1&app=postgres&query=DISK").await;
        assert_eq!(html.matches("<tr data-log=").count(), 1, "{html}");
        assert!(html.contains("disk full on /var/lib"));
        assert!(
            html.contains(r#"href="/projects/1/logs?query=DISK&amp;host=db-1&amp;app=postgres&amp;statsPeriod=24h""#),
            "{html}"
        );
        let (_, html) = get(&ui, "/projects/1/logs?host=nowhere").await;
        assert!(html.contains("No log lines match these filters"), "{html}");

        // unknown severity: a 400 page
        let (status, _) = get(&ui, "/projects/1/logs?severity=loud").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        collector.shutdown().await;
    }
}
