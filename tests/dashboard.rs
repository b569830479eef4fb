//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against the real `sightline` binary.
//!
//! Needs `chromium` and `chromedriver` (Debian: chromium, chromium-driver; `scripts/test`
//! installs them). When the server has the WebAssembly bundle (`scripts/build-ui`, which
//! `scripts/test` runs first) the tests also check what hydration adds — tooltips,
//! drag-to-zoom, live mode; without it they check the plain-HTML pages only.
//!
//! Every test saves a screenshot to `target/test-artifacts/<test>.png`.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sightline, eventually};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// One browser at a time: each test runs its own server, chromedriver and Chromium, and
/// two cores do not run several of those well side by side.
static BROWSER_SLOT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver process and a Chromium session on a fresh profile; killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn find_program(names: &[&str]) -> PathBuf {
    names
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{names:?} not found: install chromium and chromium-driver (scripts/test does)")
        })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a 1280×900 headless session,
    /// with JavaScript on or off.
    async fn start(javascript: bool) -> Browser {
        let chromedriver = find_program(&["chromedriver"]);
        let chromium = find_program(&["chromium", "chromium-browser"]);
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".to_owned());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".to_owned(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Saves a screenshot as `target/test-artifacts/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("script")
    }

    /// Whether the page loads the bundle; if so, waits until boot.js says it hydrated.
    async fn hydrated(&self) -> bool {
        let html = self.client.source().await.expect("source");
        if !html.contains("data-wasm=") {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = self
                .js("return document.documentElement.dataset.hydrated === 'true';")
                .await;
            if done == json!(true) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the page loads the bundle but never hydrated"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `(title, [(ts, value)])` of every chart on the page, read from the SVG's data attributes.
async fn charts(browser: &Browser) -> Vec<(String, Vec<(i64, f64)>)> {
    let value = browser
        .js(
            "return [...document.querySelectorAll('figure.chart')].map(f => [
                f.querySelector('.chart-title').textContent,
                [...f.querySelectorAll('g.pt')].map(g => [Number(g.dataset.ts), Number(g.dataset.value)])
            ]);",
        )
        .await;
    serde_json::from_value(value).expect("chart data")
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// `(project id, public key)` from a DSN line `http://<key>@<host>/<id>`.
fn key_of(dsn: &str) -> (u64, String) {
    let rest = dsn.strip_prefix("http://").expect("http dsn");
    let (key, rest) = rest.split_once('@').expect("key");
    let id = rest
        .rsplit('/')
        .next()
        .expect("id")
        .parse()
        .expect("numeric id");
    (id, key.to_owned())
}

#[tokio::test]
async fn overview_with_live_demo_data_shows_chart_values_tooltips_and_zoom() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &["--demo-rate", "40"], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);
    let api = format!(
        "{}/api/0/projects/{project}/series/?statsPeriod=15m&interval=60",
        server.base
    );
    // a finished minute with requests in it, so the throughput chart has a value for it
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    };
    let (minute, requests) = eventually(
        Duration::from_secs(150),
        "a finished minute of demo traffic",
        || async {
            let points = get_json(&api).await;
            points.as_array()?.iter().find_map(|p| {
                let ts = p["ts"].as_i64()?;
                let n = p["requests"].as_u64()?;
                (ts + 60 + 5 <= now() && n > 0).then_some((ts, n))
            })
        },
    )
    .await;

    let browser = Browser::start(true).await;
    let page = format!("{}/projects/{project}?statsPeriod=15m", server.base);
    browser.client.goto(&page).await.expect("overview");
    let charts = charts(&browser).await;
    let titles: Vec<&str> = charts.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles, ["Throughput", "Error rate (5xx)", "Latency"]);
    // the chart's value for that minute is the query API's count for it (req/min, 60 s step)
    let throughput = &charts[0].1;
    let shown = throughput
        .iter()
        .find(|(ts, _)| *ts == minute)
        .map(|(_, v)| *v)
        .expect("a point for the finished minute");
    let again = get_json(&api).await;
    let now_requests = again
        .as_array()
        .and_then(|a| a.iter().find(|p| p["ts"].as_i64() == Some(minute)))
        .and_then(|p| p["requests"].as_u64())
        .expect("api point");
    assert!(
        shown >= requests as f64 && shown <= now_requests as f64,
        "{shown} vs {requests}..{now_requests}"
    );
    assert!(
        charts[2].1.iter().any(|(_, p50)| *p50 > 0.0),
        "latency values"
    );
    // the demo's routes are in the table
    let rows = browser
        .client
        .find_all(Locator::Css("table.routes tbody tr"))
        .await
        .expect("rows");
    assert!(rows.len() >= 3, "{} routes", rows.len());

    if browser.hydrated().await {
        // hover: the tooltip shows the step's time and exact value
        let svg = browser
            .client
            .find(Locator::Css("figure.chart svg"))
            .await
            .expect("chart");
        browser
            .client
            .perform_actions(MouseActions::new("mouse".to_owned()).then(
                PointerAction::MoveToElement {
                    element: svg.clone(),
                    duration: None,
                    x: 120.0,
                    y: 0.0,
                },
            ))
            .await
            .expect("hover");
        let tip = browser
            .client
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css("figure.chart .tip:not([hidden])"))
            .await
            .expect("tooltip");
        let text = tip.text().await.expect("tooltip text");
        assert!(text.contains("UTC") && text.contains("req/min"), "{text}");
        browser.screenshot("overview_tooltip").await;

        // drag across the plot: the page reloads with that span as since/until
        browser
            .client
            .perform_actions(
                MouseActions::new("mouse".to_owned())
                    .then(PointerAction::MoveToElement {
                        element: svg,
                        duration: None,
                        x: -120.0,
                        y: 0.0,
                    })
                    .then(PointerAction::Down {
                        button: MOUSE_BUTTON_LEFT,
                    })
                    .then(PointerAction::MoveBy {
                        duration: Some(Duration::from_millis(200)),
                        x: 200.0,
                        y: 0.0,
                    })
                    .then(PointerAction::Up {
                        button: MOUSE_BUTTON_LEFT,
                    }),
            )
            .await
            .expect("drag");
        let url = eventually(Duration::from_secs(10), "zoomed URL", || async {
            let url = browser.client.current_url().await.ok()?;
            url.query()
                .filter(|q| q.contains("since=") && q.contains("until="))
                .map(str::to_owned)
        })
        .await;
        assert!(!url.contains("statsPeriod"), "{url}");
        browser
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("details.custom[open]"))
            .await
            .expect("custom range shown after zoom");
    } else {
        eprintln!(
            "no WebAssembly bundle: checked the server-rendered page only (run scripts/build-ui)"
        );
    }
    browser.screenshot("overview_demo").await;
}

#[tokio::test]
async fn live_mode_reloads_the_data_in_place() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &[], "demo app:");
    let browser = Browser::start(true).await;
    browser
        .client
        .goto(&format!("{}/?statsPeriod=15m", server.base))
        .await
        .expect("overview");
    if !browser.hydrated().await {
        // without the bundle the toggle is a link that puts live=1 in the URL
        browser
            .client
            .find(Locator::Css("a.live"))
            .await
            .expect("toggle")
            .click()
            .await
            .expect("click");
        let url = browser.client.current_url().await.expect("url");
        assert!(url.as_str().contains("live=1"), "{url}");
        browser.screenshot("live_mode").await;
        return;
    }
    browser
        .js("document.querySelector('main').dataset.stale = 'yes';")
        .await;
    let toggle = browser
        .client
        .find(Locator::Css("a.live"))
        .await
        .expect("toggle");
    toggle.click().await.expect("click");
    assert_eq!(
        toggle.attr("aria-checked").await.expect("attr").as_deref(),
        Some("true")
    );
    let url = browser.client.current_url().await.expect("url");
    assert!(
        url.as_str().contains("live=1"),
        "the URL keeps the mode: {url}"
    );
    // within one interval (10 s) <main> is swapped for a fresh copy, its charts hydrated
    eventually(Duration::from_secs(25), "a live refresh", || async {
        let fresh = browser
            .js("return document.querySelector('main').dataset.stale === undefined;")
            .await;
        (fresh == json!(true)).then_some(())
    })
    .await;
    let svg = browser
        .client
        .find(Locator::Css("figure.chart svg"))
        .await
        .expect("chart");
    browser
        .client
        .perform_actions(
            MouseActions::new("mouse".to_owned()).then(PointerAction::MoveToElement {
                element: svg,
                duration: None,
                x: 0.0,
                y: 0.0,
            }),
        )
        .await
        .expect("hover");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("figure.chart .tip:not([hidden])"))
        .await
        .expect("the swapped-in chart is interactive");
    browser.screenshot("live_mode").await;
}

#[tokio::test]
async fn pages_work_without_javascript_and_keep_filters_in_the_url() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &[], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);
    let api = format!(
        "{}/api/0/projects/{project}/routes/?statsPeriod=15m",
        server.base
    );
    eventually(Duration::from_secs(60), "demo routes", || async {
        let routes = get_json(&api).await;
        (routes.as_array()?.len() >= 3).then_some(())
    })
    .await;

    let browser = Browser::start(false).await;
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/routes?statsPeriod=24h",
            server.base
        ))
        .await
        .expect("routes page");
    assert!(
        !browser
            .client
            .source()
            .await
            .expect("source")
            .contains("data-hydrated")
    );
    // sort by p95 through the header link: order and filters land in the URL
    browser
        .client
        .find(Locator::LinkText("p95 ms"))
        .await
        .expect("p95 header")
        .click()
        .await
        .expect("sort");
    let url = browser.client.current_url().await.expect("url");
    let query = url.query().unwrap_or_default().to_owned();
    assert!(
        query.contains("sort=p95") && query.contains("statsPeriod=24h"),
        "{query}"
    );
    let p95: Vec<f64> = {
        let cells = browser
            .client
            .find_all(Locator::Css("table.routes tbody tr td:nth-child(7)"))
            .await
            .expect("cells");
        let mut values = Vec::new();
        for cell in cells {
            values.push(cell.text().await.expect("text").parse().expect("number"));
        }
        values
    };
    assert!(
        p95.windows(2).all(|w| w[0] >= w[1]),
        "descending p95: {p95:?}"
    );

    // a route's own page, then a custom range through the form
    browser
        .client
        .find(Locator::Css("table.routes td.route a"))
        .await
        .expect("route link")
        .click()
        .await
        .expect("open route");
    assert_eq!(
        browser
            .client
            .find_all(Locator::Css("figure.chart"))
            .await
            .expect("charts")
            .len(),
        3
    );
    browser
        .client
        .find(Locator::Css("details.custom summary"))
        .await
        .expect("summary")
        .click()
        .await
        .expect("open");
    browser
        .client
        .find(Locator::Css("details.custom button[type=submit]"))
        .await
        .expect("apply")
        .click()
        .await
        .expect("submit");
    let url = browser.client.current_url().await.expect("url");
    let query = url.query().unwrap_or_default().to_owned();
    assert!(
        query.contains("route=")
            && query.contains("method=")
            && query.contains("since=")
            && query.contains("until="),
        "{query}"
    );
    let sub = browser
        .client
        .find(Locator::Css(".sub"))
        .await
        .expect("sub")
        .text()
        .await
        .expect("text");
    assert!(sub.starts_with("Custom range"), "{sub}");
    browser.screenshot("no_javascript_route_page").await;
}

#[tokio::test]
async fn attacker_controlled_names_render_as_text_before_and_after_hydration() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("serve", &[], "dashboard:");
    let (project, key) = key_of(&server.dsns[0]);
    let script = "<script>window.__xss=1</script>";
    let img = "<img src=x onerror=\"window.__xss=2\">";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let window = |route: &str, method: &str| {
        let mut latency = sightline_protocol::Histogram::new();
        latency.record(5_000);
        json!({
            "start": now / 10 * 10 - 120, "window_secs": 10, "route": route, "method": method,
            "status_class": 2, "latency": latency,
        })
    };
    let batch = json!({
        "agent": { "service": "xss", "instance": "xss-1", "sdk": "test" },
        "sent_at_ms": now * 1000,
        "windows": [window(script, "GET"), window(img, "POST")],
    });
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/{project}/metrics?sentry_key={key}",
            server.base
        ))
        .json(&batch)
        .send()
        .await
        .expect("ingest");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );

    let browser = Browser::start(true).await;
    for page in [
        format!("{}/projects/{project}?statsPeriod=15m", server.base),
        format!("{}/projects/{project}/routes?statsPeriod=15m", server.base),
        format!(
            "{}/projects/{project}/route?method=GET&route=%3Cscript%3Ewindow.__xss%3D1%3C%2Fscript%3E&statsPeriod=15m",
            server.base
        ),
    ] {
        browser.client.goto(&page).await.expect("page");
        let hydrated = browser.hydrated().await;
        let state = browser
            .js(
                "return {
                    xss: window.__xss === undefined ? 0 : window.__xss,
                    injected: document.querySelectorAll('main script, main img, header script').length,
                    text: document.querySelector('main').textContent,
                };",
            )
            .await;
        assert_eq!(state["xss"], json!(0), "{page}: a payload ran");
        assert_eq!(state["injected"], json!(0), "{page}: markup from data");
        let text = state["text"].as_str().expect("text");
        assert!(
            text.contains(script),
            "{page}: shown as text (hydrated: {hydrated})"
        );
    }
    browser.screenshot("xss_route_page").await;
}
