//! The dashboard router against a real collector on a temporary directory, called with
//! `oneshot`.
#![cfg(feature = "ssr")]

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    response::Response,
};
use http_body_util::BodyExt;
use sightline_collector::{Collector, Config};
use sightline_protocol::{AgentInfo, Histogram, MetricBatch, RouteWindow};
use tower::ServiceExt;

const EMPTY_STATE: &str = "no requests recorded in this period — instrument your app with the DSN";

async fn collector() -> (Collector, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let collector = Collector::open(config).await.expect("open collector");
    (collector, dir)
}

async fn get(router: &Router, uri: &str) -> Response {
    router
        .clone()
        .oneshot(
            Request::get(uri)
                .header(header::HOST, "sightline.test:7070")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible")
}

async fn text(response: Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

fn assert_html(response: &Response) {
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn new_project_page_shows_the_empty_state_with_its_dsn() {
    let (collector, _dir) = collector().await;
    let project = collector.projects().await.expect("projects")[0].clone();
    let ui = sightline_ui::routes(collector.query());

    let response = get(&ui, &format!("/projects/{}", project.id)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_html(&response);
    let html = text(response).await;
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{html}"
    );
    assert!(html.contains("<title>Sightline</title>"));
    assert!(html.contains(EMPTY_STATE), "{html}");
    let dsn = format!(
        "http://{}@sightline.test:7070/{}",
        project.public_key, project.id
    );
    assert!(html.contains(&dsn), "{html}");
    collector.shutdown().await;
}

#[tokio::test]
async fn project_one_renders_for_every_period() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    for period in [
        "",
        "?statsPeriod=15m",
        "?statsPeriod=1h",
        "?statsPeriod=24h",
        "?statsPeriod=7d",
    ] {
        let response = get(&ui, &format!("/projects/1{period}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{period}");
        assert!(text(response).await.contains(EMPTY_STATE), "{period}");
    }
    collector.shutdown().await;
}

#[tokio::test]
async fn index_redirects_to_the_first_project() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    let response = get(&ui, "/").await;
    assert!(response.status().is_redirection(), "{}", response.status());
    assert_eq!(response.headers()[header::LOCATION], "/projects/1");

    let response = get(&ui, "/?statsPeriod=7d").await;
    assert_eq!(
        response.headers()[header::LOCATION],
        "/projects/1?statsPeriod=7d"
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn unknown_project_is_a_404_page() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    for uri in ["/projects/999", "/projects/abc", "/projects/-1"] {
        let response = get(&ui, uri).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_html(&response);
        let html = text(response).await;
        assert!(html.contains("Project not found"), "{uri}: {html}");
    }
    collector.shutdown().await;
}

#[tokio::test]
async fn unknown_period_is_a_400_page() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    let response = get(&ui, "/projects/1?statsPeriod=2y").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.contains("15m, 1h, 24h, 7d"));
    collector.shutdown().await;
}

#[tokio::test]
async fn stylesheet_linked_from_pages_is_served() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    let html = text(get(&ui, "/projects/1").await).await;
    let start = html
        .find("href=\"/assets/sightline.css")
        .expect("stylesheet link")
        + 6;
    let href = &html[start..start + html[start..].find('"').expect("quote")];

    let response = get(&ui, href).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert!(
        response.headers()[header::CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert!(text(response).await.contains("prefers-color-scheme: dark"));
    collector.shutdown().await;
}

#[tokio::test]
async fn ingested_requests_show_up_in_charts_and_table_escaped() {
    let (collector, _dir) = collector().await;
    let project = collector.projects().await.expect("projects")[0].clone();
    // a completed minute two minutes ago, so the rate chart has a value for it
    let minute = unix_now() / 60 * 60 - 120;
    let script = "<script>alert(1)</script>";
    let img = r#""><img src=x onerror=alert(1)>"#;
    let window = |route: &str, method: &str, n: u64| {
        let mut latency = Histogram::new();
        latency.record_n(12_000, n);
        RouteWindow {
            start: minute + 10,
            window_secs: 10,
            route: route.to_owned(),
            method: method.to_owned(),
            status_class: 2,
            latency,
        }
    };
    let batch = MetricBatch {
        agent: AgentInfo {
            service: "test".to_owned(),
            instance: "test-1".to_owned(),
            sdk: "sightline-agent/0.1.0".to_owned(),
            environment: None,
            release: None,
        },
        sent_at_ms: unix_now() * 1000,
        dropped_windows: 0,
        switch_evaluations: Default::default(),
        insight: Default::default(),
        windows: vec![window(script, "GET", 2), window(img, "POST", 1)],
    };
    let ingest = collector
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
    assert_eq!(ingest.status(), StatusCode::OK, "{}", text(ingest).await);

    let ui = sightline_ui::routes(collector.query());
    let response = get(&ui, &format!("/projects/{}?statsPeriod=15m", project.id)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = text(response).await;

    assert!(!html.contains(EMPTY_STATE), "{html}");
    // 3 requests in that minute → 3 req/min, exact in the rate chart's data attribute
    assert!(
        html.contains(&format!(r#"data-ts="{minute}" data-value="3""#)),
        "{html}"
    );
    // throughput, error rate, latency
    assert_eq!(html.matches(&format!(r#"data-ts="{minute}""#)).count(), 3);

    // route names shown, as text and in attributes, never as markup
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains(r#"title="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;""#));
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<img"));
    // the routes page lists both, and links each to its own page, which charts it alone
    let html = text(
        get(
            &ui,
            &format!(
                "/projects/{}/routes?statsPeriod=15m&sort=p95&dir=asc",
                project.id
            ),
        )
        .await,
    )
    .await;
    assert!(html.contains(r#"aria-sort="ascending""#), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"));
    let route_page = format!(
        "/projects/{}/route?method=GET&route=%3Cscript%3Ealert(1)%3C%2Fscript%3E&statsPeriod=15m",
        project.id
    );
    let response = get(&ui, &route_page).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = text(response).await;
    assert!(
        html.contains(&format!(r#"data-ts="{minute}" data-value="2""#)),
        "{html}"
    );
    assert!(
        html.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    collector.shutdown().await;
}

#[tokio::test]
async fn store_failure_is_a_503_page_without_internals() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    // after shutdown the store is closed: every read fails
    collector.shutdown().await;

    let response = get(&ui, "/projects/1").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_html(&response);
    let html = text(response).await;
    assert!(html.contains("Data temporarily unavailable"), "{html}");
    for internal in ["sqlx", "sqlite", "pool", "closed", "Store("] {
        assert!(
            !html.to_lowercase().contains(&internal.to_lowercase()),
            "{internal}: {html}"
        );
    }
}

#[tokio::test]
async fn pages_refuse_bad_filters_with_400_pages() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    for uri in [
        "/projects/1?since=2000&until=1000",
        "/projects/1?since=yesterday",
        "/projects/1/routes?sort=nope",
        "/projects/1/routes?dir=sideways",
        "/projects/1/route?route=/x",
    ] {
        let response = get(&ui, uri).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert_html(&response);
    }
    // a custom range as the form submits it
    let response = get(
        &ui,
        "/projects/1?since=2024-01-01T00%3A00&until=2024-01-02T00%3A00",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = text(response).await;
    assert!(html.contains("Custom range"), "{html}");
    assert!(html.contains(r#"value="2024-01-01T00:00""#), "{html}");
    collector.shutdown().await;
}

#[tokio::test]
async fn theme_form_sets_a_cookie_and_never_redirects_off_site() {
    let (collector, _dir) = collector().await;
    let ui = sightline_ui::routes(collector.query());
    let post = |body: &'static str| {
        ui.clone().oneshot(
            Request::post("/theme")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .expect("request"),
        )
    };
    let response = post("theme=dark&back=%2Fprojects%2F1%3Flive%3D1")
        .await
        .expect("infallible");
    assert!(response.status().is_redirection());
    assert_eq!(response.headers()[header::LOCATION], "/projects/1?live=1");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii");
    assert!(cookie.starts_with("sightline_theme=dark;"), "{cookie}");
    for evil in [
        "theme=dark&back=%2F%2Fevil.example",
        "theme=dark&back=https%3A%2F%2Fevil.example",
    ] {
        let response = post(evil).await.expect("infallible");
        assert_eq!(response.headers()[header::LOCATION], "/", "{evil}");
    }

    let response = ui
        .clone()
        .oneshot(
            Request::get("/projects/1")
                .header(header::COOKIE, "sightline_theme=dark")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert!(
        text(response)
            .await
            .contains(r#"<html lang="en" data-theme="dark">"#)
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn bundle_is_served_precompressed_and_loaded_by_pages() {
    let (collector, _dir) = collector().await;
    let site = tempfile::tempdir().expect("tempdir");
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(pkg.join("sightline_ui.js"), "export default async () => {}").expect("js");
    std::fs::write(pkg.join("sightline_ui_bg.wasm"), b"\0asm\x01\0\0\0").expect("wasm");
    std::fs::write(pkg.join("sightline_ui_bg.wasm.br"), b"brotli!").expect("br");
    let ui = sightline_ui::routes_with_site(
        collector.query(),
        sightline_ui::Site::from_dir(site.path()),
    );

    let response = get(&ui, "/projects/1").await;
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    let html = text(response).await;
    let start = html.find(r#"data-wasm=""#).expect("bundle script") + 11;
    let wasm_url = &html[start..start + html[start..].find('"').expect("quote")];
    assert!(
        wasm_url.starts_with("/pkg/sightline_ui_bg.wasm?v="),
        "{wasm_url}"
    );

    let response = ui
        .clone()
        .oneshot(
            Request::get(wasm_url)
                .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "br");
    assert!(
        response.headers()[header::CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert_eq!(text(response).await, "brotli!");

    // no brotli accepted: the plain file
    let response = get(&ui, "/pkg/sightline_ui_bg.wasm").await;
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING));
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    for missing in ["/pkg/other.js", "/pkg/..%2FCargo.toml"] {
        assert_eq!(
            get(&ui, missing).await.status(),
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }
    let boot = get(&ui, "/assets/boot.js").await;
    assert_eq!(boot.status(), StatusCode::OK);
    assert!(text(boot).await.contains("hydrate"));

    // without a bundle pages carry no script at all
    let plain =
        sightline_ui::routes_with_site(collector.query(), sightline_ui::Site::without_bundle());
    assert!(
        !text(get(&plain, "/projects/1").await)
            .await
            .contains("<script")
    );
    assert_eq!(
        get(&plain, "/pkg/sightline_ui_bg.wasm").await.status(),
        StatusCode::NOT_FOUND
    );
    collector.shutdown().await;
}

async fn post_form(router: &Router, uri: &str, body: String, extra: &[(&str, &str)]) -> Response {
    let mut request = Request::post(uri)
        .header(header::HOST, "sightline.test:7070")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    router
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible")
}

fn location(response: &Response) -> String {
    assert!(response.status().is_redirection(), "{}", response.status());
    response.headers()[header::LOCATION]
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// Sends one Sentry event through the collector's `store` endpoint; answers once stored.
async fn send_event(
    collector: &Collector,
    project: &sightline_collector::Project,
    event: serde_json::Value,
) {
    ingest(collector, project, "store/", &event).await;
}

/// POSTs `body` as JSON to the project's ingest endpoint `/api/<id>/<endpoint>` with its
/// key; asserts it was accepted (and so stored).
async fn ingest(
    collector: &Collector,
    project: &sightline_collector::Project,
    endpoint: &str,
    body: &impl serde::Serialize,
) {
    let response = collector
        .router()
        .oneshot(
            Request::post(format!(
                "/api/{}/{endpoint}?sentry_key={}",
                project.id, project.public_key
            ))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        text(response).await
    );
}

async fn api_json(collector: &Collector, uri: &str) -> serde_json::Value {
    let response = collector
        .router()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_str(&text(response).await).expect("json")
}

#[tokio::test]
async fn issue_pages_show_event_data_as_text_and_status_forms_change_it() {
    let (collector, _dir) = collector().await;
    let project = collector.projects().await.expect("projects")[0].clone();
    let script = "<script>window.__xss=1</script>";
    let img = "<img src=x onerror=\"window.__xss=2\">";
    for n in 0..2 {
        send_event(
            &collector,
            &project,
            serde_json::json!({
                "event_id": format!("{n:0>32}"),
                "timestamp": unix_now() - 60 + n,
                "level": "error",
                "platform": "python",
                "culprit": format!("views.checkout {img}"),
                "tags": {"browser": script, "page": img},
                "exception": {"values": [{"type": "CheckoutError", "value": format!("{script} {img}"),
                    "stacktrace": {"frames": [
                        {"function": "dispatch", "module": "framework", "in_app": false},
                        {"function": "checkout", "module": "shop.views", "in_app": true, "lineno": 12},
                    ]}}]},
                "contexts": {"flags": {"values": [{"flag": "checkout:new_flow", "result": true}]}},
            }),
        )
        .await;
    }
    let issues = api_json(
        &collector,
        &format!("/api/0/projects/{}/issues/", project.id),
    )
    .await;
    let issue = issues[0]["id"].as_str().expect("issue id").to_owned();
    let ui = sightline_ui::routes(collector.query());

    // the list: escaped title and culprit, a sparkline of both events, the bulk form
    let response = get(
        &ui,
        &format!("/projects/{}/issues?statsPeriod=1h", project.id),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_html(&response);
    let html = text(response).await;
    assert!(
        !html.contains("<script>window") && !html.contains("<img src=x"),
        "{html}"
    );
    assert!(
        html.contains("CheckoutError: &lt;script&gt;window.__xss=1&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("views.checkout &lt;img src=x onerror="),
        "{html}"
    );
    assert!(
        html.contains(r#"aria-label="2 events, last hour""#),
        "{html}"
    );
    // filters: a level nothing has, then a search nothing matches
    let html = text(get(&ui, &format!("/projects/{}/issues?level=fatal", project.id)).await).await;
    assert!(html.contains("No issues match these filters."));
    let html = text(
        get(
            &ui,
            &format!("/projects/{}/issues?query=Checkout", project.id),
        )
        .await,
    )
    .await;
    assert!(html.contains(&format!(r#"data-issue="{issue}""#)));
    let response = get(&ui, &format!("/projects/{}/issues?status=open", project.id)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // the issue page: tags, flags, frames, and the newest event links to the older one
    let page = format!("/projects/{}/issues/{issue}", project.id);
    let html = text(get(&ui, &page).await).await;
    assert!(
        !html.contains("<script>window") && !html.contains("<img src=x"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(html.contains("checkout:new_flow"), "flags shown");
    assert!(html.contains(r#"class="frame in-app""#));
    assert!(
        html.contains(&format!("event={:0>32}", 0)),
        "older event link"
    );
    let html = text(get(&ui, &format!("{page}?event={:0>32}", 0)).await).await;
    assert!(
        html.contains(&format!("event={:0>32}", 1)),
        "newer event link"
    );
    let response = get(&ui, &format!("{page}?event=nope")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // resolve through the form: back to the page with a notice, resolved in the API
    let response = post_form(
        &ui,
        &format!("{page}/status"),
        format!(
            "status=resolved&back=%2Fprojects%2F{}%2Fissues%2F{issue}",
            project.id
        ),
        &[
            ("origin", "http://sightline.test:7070"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=resolved"));
    let api = api_json(&collector, &format!("/api/0/issues/{issue}/")).await;
    assert_eq!(api["status"], "resolved");

    // bulk: ignore the ticked issue; nothing ticked changes nothing
    let back = format!("%2Fprojects%2F{}%2Fissues%3Fstatus%3Dall", project.id);
    let response = post_form(
        &ui,
        &format!("/projects/{}/issues/status", project.id),
        format!("id={issue}&status=ignored&back={back}"),
        &[],
    )
    .await;
    assert_eq!(
        location(&response),
        format!("/projects/{}/issues?status=all&notice=ignored", project.id)
    );
    let api = api_json(&collector, &format!("/api/0/issues/{issue}/")).await;
    assert_eq!(api["status"], "ignored");
    let response = post_form(
        &ui,
        &format!("/projects/{}/issues/status", project.id),
        format!("status=resolved&back={back}"),
        &[],
    )
    .await;
    assert!(location(&response).ends_with("notice=none-selected"));
    let api = api_json(&collector, &format!("/api/0/issues/{issue}/")).await;
    assert_eq!(api["status"], "ignored");

    // a form posted from another site is refused
    let response = post_form(
        &ui,
        &format!("{page}/status"),
        "status=unresolved&back=%2F".to_owned(),
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    collector.shutdown().await;
}

fn demo_switch(key: &str) -> sightline_protocol::Switch {
    sightline_protocol::Switch {
        key: key.to_owned(),
        label: "New <b>editor</b>".to_owned(),
        description: String::new(),
        owner: "comments-team".to_owned(),
        default: false,
        state: sightline_protocol::SwitchState::Off,
        conditions: Vec::new(),
        exclusions: Vec::new(),
    }
}

#[tokio::test]
async fn switch_forms_flip_and_revert_with_a_reason_into_the_audit_log() {
    let (collector, _dir) = collector().await;
    collector
        .ensure_switch(demo_switch("comments:new_editor"), "seed", "initial")
        .await
        .expect("switch");
    let ui = sightline_ui::routes(collector.query());
    let list = "/projects/1/switches";
    let html = text(get(&ui, list).await).await;
    assert!(html.contains(r#"data-key="comments:new_editor""#), "{html}");
    assert!(
        html.contains("New &lt;b&gt;editor&lt;/b&gt;"),
        "label escaped"
    );
    assert!(html.contains("comments-team"));

    let page = "/projects/1/switches/comments:new_editor";
    let state_action = format!("{page}/state");
    let flip = |body: &str| post_form(&ui, &state_action, body.to_owned(), &[]);
    // no reason: refused, nothing changes
    let response = flip("state=on&reason=+&expected_version=1&back=%2Fprojects%2F1%2Fswitches%2Fcomments%3Anew_editor").await;
    assert_eq!(location(&response), format!("{page}?notice=reason-missing"));
    // with one: on, audited with the reason
    let response = flip("state=on&reason=%3Cb%3Epeak%3C%2Fb%3E+load&expected_version=1&back=%2Fprojects%2F1%2Fswitches%2Fcomments%3Anew_editor").await;
    assert_eq!(location(&response), format!("{page}?notice=flipped"));
    let html = text(get(&ui, page).await).await;
    assert!(html.contains("state off → on"), "{html}");
    assert!(
        html.contains("&lt;b&gt;peak&lt;/b&gt; load"),
        "reason shown escaped"
    );
    assert!(html.contains("admin (dashboard)"));
    assert!(html.contains(">Revert to v1<"));
    // a stale page (version 1 again) conflicts instead of overwriting
    let response = flip("state=off&reason=late&expected_version=1&back=%2F").await;
    assert_eq!(location(&response), "/?notice=conflict");
    // revert to version 1: off again, as a new version
    let response = post_form(
        &ui,
        &format!("{page}/revert"),
        "version=1&reason=rollback&expected_version=2&back=%2Fprojects%2F1%2Fswitches".to_owned(),
        &[],
    )
    .await;
    assert_eq!(location(&response), "/projects/1/switches?notice=reverted");
    let html = text(get(&ui, "/projects/1/switches?state=off").await).await;
    assert!(html.contains(r#"data-key="comments:new_editor""#));
    assert!(html.contains("rollback"), "latest changes list the revert");
    let html = text(get(&ui, "/projects/1/switches?state=on").await).await;
    assert!(html.contains("No switch matches these filters."));
    let response = get(&ui, "/projects/1/switches/nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    collector.shutdown().await;
}

/// What the collector's OFREP endpoint answers for `key` and user `user`.
async fn evaluate(collector: &Collector, key: &str, user: &str) -> serde_json::Value {
    let response = collector
        .router()
        .oneshot(
            Request::post(format!("/ofrep/v1/evaluate/flags/{key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"context": {"targetingKey": user}}).to_string(),
                ))
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&text(response).await).expect("json");
    body["value"].clone()
}

#[tokio::test]
async fn condition_forms_add_and_remove_what_agents_evaluate() {
    let (collector, _dir) = collector().await;
    collector
        .ensure_switch(demo_switch("checkout"), "seed", "initial")
        .await
        .expect("switch");
    let ui = sightline_ui::routes(collector.query());
    let page = "/projects/1/switches/checkout";
    let action = format!("{page}/conditions");
    let edit = |body: String| {
        post_form(
            &ui,
            &action,
            format!("{body}&back=%2Fprojects%2F1%2Fswitches%2Fcheckout"),
            &[],
        )
    };
    let html = text(get(&ui, page).await).await;
    assert!(html.contains(r#"class="flip condition-add""#), "{html}");

    // users alice and bob turn it on; bob is excluded; then selective
    let response = edit(
        "edit=add&list=conditions&kind=users&values=alice%2C+bob&reason=beta&expected_version=1"
            .to_owned(),
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=conditions"));
    let response = edit(
        "edit=add&list=exclusions&kind=users&values=bob&reason=not+bob&expected_version=2"
            .to_owned(),
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=conditions"));
    // what no switch may hold is refused, the switch unchanged
    for body in [
        "edit=add&list=conditions&kind=ip&values=not-an-ip&reason=x&expected_version=3",
        "edit=add&list=conditions&kind=percentage&values=150&reason=x&expected_version=3",
        "edit=add&list=conditions&kind=attribute&values=pro&op=equals&reason=x&expected_version=3",
        "edit=add&list=conditions&kind=users&values=+%2C+&reason=x&expected_version=3",
        "edit=remove&list=conditions&index=7&reason=x&expected_version=3",
        "edit=drop&list=conditions&index=0&reason=x&expected_version=3",
    ] {
        let response = edit(body.to_owned()).await;
        assert_eq!(
            location(&response),
            format!("{page}?notice=invalid"),
            "{body}"
        );
    }
    let response = edit(
        "edit=add&list=conditions&kind=host&values=web-1&reason=+&expected_version=3".to_owned(),
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=reason-missing"));
    // a stale page conflicts
    let response = edit(
        "edit=add&list=conditions&kind=host&values=web-1&reason=x&expected_version=1".to_owned(),
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=conflict"));
    let response = post_form(
        &ui,
        &format!("{page}/state"),
        "state=selective&reason=beta+starts&expected_version=3&back=%2F".to_owned(),
        &[],
    )
    .await;
    assert_eq!(location(&response), "/?notice=flipped");
    let record = collector
        .query()
        .switchboard()
        .get("checkout")
        .await
        .expect("read")
        .expect("switch");
    assert_eq!(
        record.switch.conditions,
        [sightline_protocol::Condition::Users {
            ids: vec!["alice".to_owned(), "bob".to_owned()]
        }]
    );
    assert_eq!(record.version, 4);
    // agents evaluate what the forms made: alice in, bob excluded, carol not listed
    assert_eq!(evaluate(&collector, "checkout", "alice").await, true);
    assert_eq!(evaluate(&collector, "checkout", "bob").await, false);
    assert_eq!(evaluate(&collector, "checkout", "carol").await, false);
    let html = text(get(&ui, page).await).await;
    assert!(html.contains("user id in alice, bob"), "{html}");
    assert!(html.contains("conditions changed") && html.contains("exclusions changed"));

    // a percentage and an attribute, then the user list goes
    let response = edit("edit=add&list=conditions&kind=attribute&name=plan&op=in&values=pro%2Cteam&reason=paying&expected_version=4".to_owned()).await;
    assert_eq!(location(&response), format!("{page}?notice=conditions"));
    let response =
        edit("edit=remove&list=conditions&index=0&reason=beta+over&expected_version=5".to_owned())
            .await;
    assert_eq!(location(&response), format!("{page}?notice=conditions"));
    assert_eq!(evaluate(&collector, "checkout", "alice").await, false);
    let html = text(get(&ui, page).await).await;
    assert!(html.contains("attribute plan in pro, team"), "{html}");
    assert!(!html.contains("user id in alice, bob"), "{html}");
    collector.shutdown().await;
}

#[tokio::test]
async fn the_details_form_sets_label_owner_description_and_default() {
    let (collector, _dir) = collector().await;
    collector
        .ensure_switch(demo_switch("checkout"), "seed", "initial")
        .await
        .expect("switch");
    let ui = sightline_ui::routes(collector.query());
    let page = "/projects/1/switches/checkout";
    let action = format!("{page}/details");
    let save = |body: String| {
        post_form(
            &ui,
            &action,
            format!("{body}&back=%2Fprojects%2F1%2Fswitches%2Fcheckout"),
            &[],
        )
    };
    let html = text(get(&ui, page).await).await;
    assert!(html.contains(r#"class="flip details""#), "{html}");
    let read = || async {
        collector
            .query()
            .switchboard()
            .get("checkout")
            .await
            .expect("read")
            .expect("switch")
    };

    let fields = "label=+New+checkout+&owner=payments&description=Guards+the+new+flow.%0D%0A%3C%2Ftextarea%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E&default=on";
    let response = save(format!("{fields}&reason=+&expected_version=1")).await;
    assert_eq!(location(&response), format!("{page}?notice=reason-missing"));
    let response = save(format!("{fields}&reason=handover&expected_version=1")).await;
    assert_eq!(location(&response), format!("{page}?notice=details"));
    let record = read().await;
    assert_eq!(record.version, 2);
    let s = &record.switch;
    assert_eq!(
        (s.label.as_str(), s.owner.as_str(), s.default),
        ("New checkout", "payments", true)
    );
    assert_eq!(
        s.description,
        "Guards the new flow.\n</textarea><script>alert(1)</script>"
    );
    // state and conditions are not the form's to touch
    assert_eq!(s.state, sightline_protocol::SwitchState::Off);
    let html = text(get(&ui, &format!("{page}?notice=details")).await).await;
    assert!(html.contains(r#"data-notice="details""#), "{html}");
    assert!(
        html.contains("owner “comments-team” → “payments”"),
        "{html}"
    );
    assert!(html.contains("handover"), "{html}");
    assert!(
        !html.contains("<script>alert(1)")
            && !html.contains("</textarea><script>")
            && html.contains("&lt;script")
            && html.contains("\n&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;</textarea>"),
        "the description is text, in the page and in the form: {html}"
    );

    // the same again changes nothing; an unchecked box turns the default off
    let response = save(format!("{fields}&reason=again&expected_version=2")).await;
    assert_eq!(location(&response), format!("{page}?notice=unchanged"));
    let response = save(
        "label=New+checkout&owner=payments&description=x&reason=off+by+default&expected_version=2"
            .to_owned(),
    )
    .await;
    assert_eq!(location(&response), format!("{page}?notice=details"));
    assert!(!read().await.switch.default);
    // a stale page conflicts; a label longer than a switch may hold is refused
    let response = save(format!("{fields}&reason=late&expected_version=2")).await;
    assert_eq!(location(&response), format!("{page}?notice=conflict"));
    let long = "x".repeat(sightline_protocol::MAX_VALUE_LEN + 1);
    let response = save(format!("label={long}&reason=long&expected_version=3")).await;
    assert_eq!(location(&response), format!("{page}?notice=invalid"));
    assert_eq!(read().await.version, 3);
    collector.shutdown().await;
}

#[tokio::test]
async fn with_an_admin_token_the_new_pages_need_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = Collector::open(Config {
        data_dir: dir.path().to_owned(),
        admin_token: Some("s3cret-token".to_owned()),
        ..Config::default()
    })
    .await
    .expect("open collector");
    collector
        .ensure_switch(demo_switch("checkout"), "seed", "initial")
        .await
        .expect("switch");
    let ui = sightline_ui::routes(collector.query());
    for page in [
        "/projects/1/switches",
        "/projects/1/issues",
        "/projects/1/switches/checkout",
    ] {
        let response = get(&ui, page).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{page}");
        let html = text(response).await;
        assert!(
            html.contains(r#"action="/signin""#)
                && html.contains("checkout") == page.ends_with("checkout")
        );
    }
    // changes too
    let response = post_form(
        &ui,
        "/projects/1/switches/checkout/state",
        "state=on&reason=x&back=%2F".to_owned(),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = post_form(
        &ui,
        "/projects/1/switches/checkout/details",
        "label=x&reason=x&back=%2F".to_owned(),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let wrong = post_form(
        &ui,
        "/signin",
        "token=guess&back=%2Fprojects%2F1%2Fswitches".to_owned(),
        &[],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(!wrong.headers().contains_key(header::SET_COOKIE));
    let right = post_form(
        &ui,
        "/signin",
        "token=s3cret-token&back=%2Fprojects%2F1%2Fswitches".to_owned(),
        &[],
    )
    .await;
    assert_eq!(location(&right), "/projects/1/switches");
    let cookie = right.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();
    let response = ui
        .clone()
        .oneshot(
            Request::get("/projects/1/switches")
                .header(header::COOKIE, &session)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let response = post_form(
        &ui,
        "/projects/1/switches/checkout/state",
        "state=on&reason=signed+in&back=%2F".to_owned(),
        &[("cookie", &session)],
    )
    .await;
    assert_eq!(location(&response), "/?notice=flipped");
    collector.shutdown().await;
}

#[tokio::test]
async fn the_overview_lists_newest_and_regressed_issues() {
    let (collector, _dir) = collector().await;
    let project = collector.projects().await.expect("projects")[0].clone();
    let ui = sightline_ui::routes(collector.query());
    let now = unix_now();
    let event = |message: &str, at: i64| {
        serde_json::json!({
            "message": message,
            "level": "error",
            "timestamp": at,
            "platform": "python",
        })
    };
    send_event(
        &collector,
        &project,
        event("cache <b>evicted</b> too early", now - 120),
    )
    .await;
    send_event(&collector, &project, event("brand new failure", now - 60)).await;
    let issues = api_json(
        &collector,
        &format!("/api/0/projects/{}/issues/", project.id),
    )
    .await;
    let id_of = |needle: &str| {
        issues
            .as_array()
            .expect("issues")
            .iter()
            .find(|i| i["title"].as_str().is_some_and(|t| t.contains(needle)))
            .and_then(|i| i["id"].as_str())
            .expect("issue")
            .to_owned()
    };
    let (old, new) = (id_of("evicted"), id_of("brand new"));

    // Before anything regressed: both are newest (newest first), none regressed.
    let overview = format!("/projects/{}?statsPeriod=1h", project.id);
    let html = text(get(&ui, &overview).await).await;
    let newest = html.find("brand new failure").expect("newest issue shown");
    let older = html
        .find("cache &lt;b&gt;evicted&lt;/b&gt; too early")
        .expect("escaped");
    assert!(newest < older, "newest first");
    assert!(!html.contains("<b>evicted"), "title is text");
    assert!(html.contains("No regressed issues."));

    // Resolve the old one; its next event makes it regressed.
    let response = post_form(
        &ui,
        &format!("/projects/{}/issues/{old}/status", project.id),
        "status=resolved&back=%2F".to_owned(),
        &[
            ("origin", "http://sightline.test:7070"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert!(response.status().is_redirection(), "{}", response.status());
    send_event(
        &collector,
        &project,
        event("cache <b>evicted</b> too early", now),
    )
    .await;
    let html = text(get(&ui, &overview).await).await;
    let regressed = html.find("Regressed").expect("regressed list");
    let old_at = html
        .rfind("cache &lt;b&gt;evicted&lt;/b&gt; too early")
        .expect("shown");
    assert!(
        old_at > regressed,
        "the recurring issue is listed as regressed"
    );
    assert!(!html.contains("No regressed issues."));
    assert!(html.contains(&format!("/projects/{}/issues/{old}", project.id)));
    assert!(html.contains(&format!("/projects/{}/issues/{new}", project.id)));
}

/// Sends `windows` as one metric batch from an agent in `environment`.
async fn send_windows(
    collector: &Collector,
    project: &sightline_collector::Project,
    instance: &str,
    environment: Option<&str>,
    windows: Vec<RouteWindow>,
) {
    let batch = MetricBatch {
        agent: AgentInfo {
            service: "shop".to_owned(),
            instance: instance.to_owned(),
            sdk: "sightline-agent/0.1.0".to_owned(),
            environment: environment.map(str::to_owned),
            release: None,
        },
        sent_at_ms: unix_now() * 1000,
        dropped_windows: 0,
        switch_evaluations: Default::default(),
        insight: Default::default(),
        windows,
    };
    ingest(collector, project, "metrics", &batch).await;
}

#[tokio::test]
async fn the_environment_selector_shows_one_environment_everywhere() {
    let (collector, _dir) = collector().await;
    let project = collector.projects().await.expect("projects")[0].clone();
    let id = project.id;
    let start = unix_now() / 60 * 60 - 120;
    let window = |route: &str, n: u64, us: u64| {
        let mut latency = Histogram::new();
        latency.record_n(us, n);
        RouteWindow {
            start,
            window_secs: 10,
            route: route.to_owned(),
            method: "GET".to_owned(),
            status_class: 2,
            latency,
        }
    };
    let staging = "staging <b>";
    send_windows(
        &collector,
        &project,
        "web-1",
        Some("production"),
        vec![window("/checkout", 3, 12_000)],
    )
    .await;
    send_windows(
        &collector,
        &project,
        "web-2",
        Some(staging),
        vec![
            window("/checkout", 5, 50_000),
            window("/debug/<i>", 1, 1_000),
        ],
    )
    .await;
    for (n, environment) in [(1, "production"), (2, staging), (3, "qa")] {
        send_event(
            &collector,
            &project,
            serde_json::json!({
                "event_id": format!("{n:0>32}"),
                "timestamp": unix_now() - 30,
                "level": "error",
                "environment": environment,
                "message": format!("failure number {n} in {environment}"),
                "fingerprint": [format!("bug-{n}")],
            }),
        )
        .await;
    }
    let environments = api_json(&collector, &format!("/api/0/projects/{id}/environments/")).await;
    assert_eq!(
        environments,
        serde_json::json!([{"name": "production"}, {"name": "qa"}, {"name": staging}])
    );
    let ui = sightline_ui::routes(collector.query());

    // every environment in the selector, all of them shown by default
    let html = text(get(&ui, &format!("/projects/{id}/routes?statsPeriod=15m")).await).await;
    assert!(
        html.contains(r#"<summary title="Deployment environment">All environments</summary>"#),
        "{html}"
    );
    let staging_href =
        format!("/projects/{id}/routes?statsPeriod=15m&amp;environment=staging%20%3Cb%3E");
    assert!(
        html.contains(&format!(r#"href="{staging_href}">staging &lt;b&gt;</a>"#)),
        "{html}"
    );
    assert!(html.contains(r#">qa</a>"#));
    let requests = |html: &str, route: &str| -> Option<u64> {
        let at = html.find(&format!("<code>{route}</code>"))?;
        let row = &html[at..at + html[at..].find("</tr>")?];
        let cell = row.split("<td class=\"num\"").nth(1)?;
        let value = &cell[cell.find('>')? + 1..cell.find("</td>")?];
        value.replace(',', "").parse().ok()
    };
    assert_eq!(requests(&html, "/checkout"), Some(8), "{html}");
    assert_eq!(requests(&html, "/debug/&lt;i&gt;"), Some(1), "{html}");

    // one environment: its routes and requests only, and every link keeps it
    let html = text(
        get(
            &ui,
            &format!("/projects/{id}/routes?statsPeriod=15m&environment=staging+%3Cb%3E"),
        )
        .await,
    )
    .await;
    assert!(
        html.contains(r#"<summary title="Deployment environment">staging &lt;b&gt;</summary>"#),
        "{html}"
    );
    assert_eq!(requests(&html, "/checkout"), Some(5), "{html}");
    assert_eq!(requests(&html, "/debug/&lt;i&gt;"), Some(1), "{html}");
    assert!(html.contains(&format!(
        r#"href="/projects/{id}/issues?statsPeriod=15m&amp;environment=staging%20%3Cb%3E""#
    )));
    let html = text(
        get(
            &ui,
            &format!("/projects/{id}/routes?statsPeriod=15m&environment=production"),
        )
        .await,
    )
    .await;
    assert_eq!(requests(&html, "/checkout"), Some(3), "{html}");
    assert_eq!(requests(&html, "/debug/&lt;i&gt;"), None, "{html}");
    // the API answers the same
    let routes = api_json(
        &collector,
        &format!("/api/0/projects/{id}/routes/?statsPeriod=15m&environment=production"),
    )
    .await;
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
    assert_eq!(routes[0]["requests"], 3);
    let series = api_json(
        &collector,
        &format!(
            "/api/0/projects/{id}/series/?statsPeriod=15m&interval=60&environment=staging+%3Cb%3E"
        ),
    )
    .await;
    let total: u64 = series
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["requests"].as_u64().expect("requests"))
        .sum();
    assert_eq!(total, 6, "{series}");

    // issues of that environment only
    let html = text(get(&ui, &format!("/projects/{id}/issues?environment=qa")).await).await;
    assert!(html.contains("failure number 3 in qa"), "{html}");
    assert!(!html.contains("failure number 1"), "{html}");
    assert!(html.contains(r#"<input type="hidden" name="environment" value="qa">"#));
    // a name longer than any environment is a bad filter
    let long = "e".repeat(201);
    let response = get(&ui, &format!("/projects/{id}/routes?environment={long}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    collector.shutdown().await;
}
