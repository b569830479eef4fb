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

/// A chromedriver process and a Chromium session on a fresh profile; both stopped on drop.
struct Browser {
    client: Client,
    driver: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// Asks chromedriver to shut down, which quits its session and so Chromium; killing
    /// chromedriver alone would leave Chromium running, adopted by init. Kills it if it
    /// has not exited within a few seconds (a panicking test still gets here).
    fn drop(&mut self) {
        shut_down_driver(self.port);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `GET /shutdown` on chromedriver, blocking (a drop cannot await), bounded by timeouts.
fn shut_down_driver(port: u16) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut Vec::new());
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
            port,
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
    // the demo agent's environment from the selector: the table is its routes, and
    // every link and form from here on keeps it
    pick(&browser, "details.environments > summary").await;
    pick(&browser, "details.environments a[href$='environment=demo']").await;
    let query = query_once(&browser, "environment=demo").await;
    assert!(query.contains("statsPeriod=24h"), "{query}");
    assert_eq!(
        text_of(&browser, "details.environments > summary").await,
        "demo"
    );
    assert!(
        !browser
            .client
            .find_all(Locator::Css("table.routes tbody tr"))
            .await
            .expect("rows")
            .is_empty()
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
    let query = query_once(&browser, "sort=p95").await;
    assert!(
        query.contains("statsPeriod=24h") && query.contains("environment=demo"),
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
    query_once(&browser, "route=").await;
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
    let query = query_once(&browser, "since=").await;
    assert!(
        query.contains("route=")
            && query.contains("method=")
            && query.contains("until=")
            && query.contains("environment=demo"),
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

/// Sends one Sentry event to the server's `store` endpoint; answers once it is stored.
async fn send_event(server: &Sightline, event: Value) {
    let (project, key) = key_of(&server.dsns[0]);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/{project}/store/?sentry_key={key}",
            server.base
        ))
        .json(&event)
        .send()
        .await
        .expect("store");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap_or_default()
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// An error event as a Python SDK sends one: a chained stack with framework and app
/// frames, tags, breadcrumbs, a request, and the switches that were on.
fn checkout_event(id: u32, title: &str, level: &str, environment: &str) -> Value {
    json!({
        "event_id": format!("{id:0>32x}"),
        "timestamp": unix_now() - 30,
        "level": level,
        "platform": "python",
        "environment": environment,
        "release": "shop@2.4.1",
        "culprit": "shop.views.checkout",
        "tags": {"browser": "Firefox 128", "region": "eu-west"},
        "user": {"id": "4711"},
        "exception": {"values": [{
            "type": "CheckoutError",
            "value": title,
            "stacktrace": {"frames": [
                {"function": "wsgi_app", "module": "flask.app", "filename": "flask/app.py", "lineno": 1473, "in_app": false},
                {"function": "dispatch_request", "module": "flask.app", "filename": "flask/app.py", "lineno": 882, "in_app": false},
                {"function": "checkout", "module": "shop.views", "filename": "shop/views.py", "lineno": 57, "in_app": true,
                 "pre_context": ["    cart = load_cart(request)", "    total = cart.total()"],
                 "context_line": "    charge(card, total)",
                 "post_context": ["    return redirect('/thanks')"]},
                {"function": "charge", "module": "shop.payments", "filename": "shop/payments.py", "lineno": 21, "in_app": true,
                 "context_line": "    raise CheckoutError(f'card declined for {amount}')"},
            ]},
        }]},
        "breadcrumbs": {"values": [
            {"timestamp": unix_now() - 31, "category": "http", "message": "POST /cart/checkout"},
            {"timestamp": unix_now() - 30, "category": "query", "message": "SELECT total FROM carts WHERE id = ?"},
        ]},
        "request": {"method": "POST", "url": "http://shop.test/cart/checkout",
                    "headers": {"User-Agent": "Firefox/128.0", "Accept": "text/html"}},
        "contexts": {"flags": {"values": [
            {"flag": "checkout:new_flow", "result": true},
            {"flag": "comments:rich_preview", "result": true},
        ]}},
    })
}

/// `(id, status)` of the issue whose title contains `needle`, from the issues API.
async fn issue_by_title(server: &Sightline, needle: &str) -> Option<(String, String)> {
    let (project, _) = key_of(&server.dsns[0]);
    let issues = get_json(&format!(
        "{}/api/0/projects/{project}/issues/?status=all",
        server.base
    ))
    .await;
    issues.as_array()?.iter().find_map(|i| {
        i["title"].as_str()?.contains(needle).then(|| {
            (
                i["id"].as_str().unwrap_or_default().to_owned(),
                i["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}

async fn pick(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

async fn type_into(browser: &Browser, css: &str, text: &str) {
    let input = browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

/// Presses the filter form's Apply and waits for the page whose query has `expect`;
/// returns that query.
async fn apply_filters(browser: &Browser, expect: &str) -> String {
    pick(browser, "form.filters button[type='submit']").await;
    query_once(browser, expect).await
}

/// The query of the page the browser shows once its URL has `expect` and the page is
/// there (a click's navigation may still be on its way when the click returns).
async fn query_once(browser: &Browser, expect: &str) -> String {
    eventually(Duration::from_secs(10), expect, || async {
        let url = browser.client.current_url().await.ok()?;
        let query = url.query()?.to_owned();
        let state = browser
            .client
            .execute("return document.readyState;", Vec::new())
            .await
            .ok()?;
        let ready = state == json!("complete");
        (query.contains(expect) && ready).then_some(query)
    })
    .await
}

async fn text_of(browser: &Browser, css: &str) -> String {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn open_an_issue_from_the_list_and_resolve_it() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &[], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);
    // an issue of our own beside the demo's, so no further event reopens it mid-test
    send_event(
        &server,
        checkout_event(1, "card declined for 12.50 EUR", "error", "demo"),
    )
    .await;
    let (issue, status) = issue_by_title(&server, "card declined")
        .await
        .expect("the issue in the API");
    assert_eq!(status, "unresolved");

    let browser = Browser::start(true).await;
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/issues?statsPeriod=1h",
            server.base
        ))
        .await
        .expect("issues list");
    browser.hydrated().await;
    browser.screenshot("issues_list").await;
    browser
        .client
        .find(Locator::Css(&format!(
            "tr[data-issue='{issue}'] a.issue-title"
        )))
        .await
        .expect("the issue in the list")
        .click()
        .await
        .expect("open the issue");
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(url.path(), format!("/projects/{project}/issues/{issue}"));
    let title = text_of(&browser, "h1").await;
    assert_eq!(title, "CheckoutError: card declined for 12.50 EUR");
    // in-app frames are open and highlighted, the framework's folded away
    let in_app = browser
        .client
        .find_all(Locator::Css(".frame.in-app"))
        .await
        .expect("frames");
    assert_eq!(in_app.len(), 2);
    assert!(in_app[0].is_displayed().await.expect("visible"));
    let folded = browser
        .client
        .find(Locator::Css("details.other-frames .frame"))
        .await
        .expect("folded frame");
    assert!(!folded.is_displayed().await.expect("hidden"));
    let flags = text_of(&browser, "#flags").await;
    assert!(flags.contains("checkout:new_flow"), "{flags}");
    let grouping = text_of(&browser, "#grouping").await;
    assert!(grouping.contains("Grouped by"), "{grouping}");
    browser.screenshot("issue_page").await;
    browser
        .js("document.querySelector('details.other-frames').open = true; document.getElementById('flags').scrollIntoView();")
        .await;
    browser.screenshot("issue_page_flags_breadcrumbs").await;
    browser.js("window.scrollTo(0, 0);").await;

    browser
        .client
        .find(Locator::Css("form.actions button[value='resolved']"))
        .await
        .expect("resolve button")
        .click()
        .await
        .expect("resolve");
    let notice = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-notice='resolved']"))
        .await
        .expect("back on the issue with a notice");
    assert_eq!(notice.text().await.expect("text"), "Marked as resolved.");
    let (_, status) = issue_by_title(&server, "card declined")
        .await
        .expect("the issue in the API");
    assert_eq!(status, "resolved", "the API sees the change");
    let badges = text_of(&browser, ".issue-meta").await;
    assert!(
        badges.contains("resolved") && badges.contains("Unresolve"),
        "{badges}"
    );
    browser.screenshot("issue_resolved").await;

    // the same page on a phone, in the dark scheme
    browser
        .client
        .find(Locator::Css("form.theme button"))
        .await
        .expect("theme button")
        .click()
        .await
        .expect("dark");
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone size");
    let overflow = browser
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(0) <= 1,
        "the page scrolls sideways on a phone: {overflow}"
    );
    browser.screenshot("issue_phone_dark").await;
}

#[tokio::test]
async fn filter_the_issues_list_and_bulk_ignore_without_javascript() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("serve", &[], "dashboard:");
    let (project, _) = key_of(&server.dsns[0]);
    send_event(
        &server,
        checkout_event(1, "card declined", "error", "production"),
    )
    .await;
    let mut slow = checkout_event(2, "cart slow to load", "warning", "staging");
    slow["exception"]["values"][0]["type"] = json!("SlowCart");
    send_event(&server, slow).await;
    let mut timeout = checkout_event(3, "payment provider timed out", "error", "staging");
    timeout["exception"]["values"][0]["type"] = json!("PaymentTimeout");
    send_event(&server, timeout).await;

    let browser = Browser::start(false).await;
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/issues?statsPeriod=24h",
            server.base
        ))
        .await
        .expect("issues list");
    let rows = |browser: &Browser| {
        let client = browser.client.clone();
        async move {
            let mut titles = Vec::new();
            for row in client
                .find_all(Locator::Css("table.issues a.issue-title"))
                .await
                .expect("rows")
            {
                titles.push(row.text().await.expect("title"));
            }
            titles
        }
    };
    assert_eq!(rows(&browser).await.len(), 3);

    // level: warning → only the slow cart; the filter is in the URL, the range kept
    pick(
        &browser,
        "form.filters select[name='level'] option[value='warning']",
    )
    .await;
    let query = apply_filters(&browser, "level=warning").await;
    assert!(query.contains("statsPeriod=24h"), "{query}");
    assert_eq!(rows(&browser).await, ["SlowCart: cart slow to load"]);

    // the environment from the top bar's selector (the filters stay), then search text
    // at any level
    pick(&browser, "details.environments > summary").await;
    browser.screenshot("environment_selector").await;
    pick(
        &browser,
        "details.environments a[href*='environment=staging']",
    )
    .await;
    let query = query_once(&browser, "environment=staging").await;
    assert!(query.contains("level=warning"), "{query}");
    pick(
        &browser,
        "form.filters select[name='level'] option[value='']",
    )
    .await;
    type_into(&browser, "form.filters input[name='query']", "payment").await;
    apply_filters(&browser, "query=payment").await;
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(
        rows(&browser).await,
        ["PaymentTimeout: payment provider timed out"],
        "{url}"
    );
    let shared = url.to_string();
    assert!(
        shared.contains("environment=staging")
            && shared.contains("query=payment")
            && shared.contains("status=unresolved"),
        "{shared}"
    );

    // bulk ignore: tick the row, press Ignore; it leaves the unresolved list
    browser
        .client
        .find(Locator::Css("table.issues input[name='id']"))
        .await
        .expect("checkbox")
        .click()
        .await
        .expect("tick");
    browser
        .client
        .find(Locator::Css("form.bulk button[value='ignored']"))
        .await
        .expect("ignore")
        .click()
        .await
        .expect("ignore");
    let notice = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-notice='ignored']"))
        .await
        .expect("back on the list with a notice");
    assert_eq!(notice.text().await.expect("text"), "Marked as ignored.");
    assert!(rows(&browser).await.is_empty());
    let (_, status) = issue_by_title(&server, "payment provider")
        .await
        .expect("in the API");
    assert_eq!(status, "ignored");

    // the shared URL reproduces the page; status=all brings the ignored issue back
    browser
        .client
        .goto(&shared.replace("status=unresolved", "status=all"))
        .await
        .expect("shared url");
    assert_eq!(
        rows(&browser).await,
        ["PaymentTimeout: payment provider timed out"]
    );
    let status = text_of(&browser, "table.issues .badge.status-ignored").await;
    assert_eq!(status, "ignored");
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/issues?statsPeriod=24h&sort=freq&status=all",
            server.base
        ))
        .await
        .expect("all issues");
    assert_eq!(rows(&browser).await.len(), 3);
    browser.screenshot("issues_filtered_no_javascript").await;
}

#[tokio::test]
async fn flip_a_switch_with_a_reason_and_see_it_in_the_audit_log() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &[], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);
    let key = "leaderboard:cache";
    let api = format!("{}/api/0/switches/{key}/", server.base);
    assert_eq!(get_json(&api).await["state"], "off");

    let browser = Browser::start(true).await;
    browser
        .client
        .goto(&format!("{}/projects/{project}/switches", server.base))
        .await
        .expect("switches");
    browser.hydrated().await;
    let row = format!("tr[data-key='{key}']");
    let state = text_of(&browser, &format!("{row} .state-cell")).await;
    assert_eq!(state, "off");
    browser
        .client
        .find(Locator::Css(&format!("{row} details.flip-inline summary")))
        .await
        .expect("flip")
        .click()
        .await
        .expect("open");
    browser
        .client
        .find(Locator::Css(&format!(
            "{row} input[name='state'][value='on']"
        )))
        .await
        .expect("on")
        .click()
        .await
        .expect("choose on");
    let reason = "leaderboard p95 at 900 ms during the evening peak";
    browser
        .client
        .find(Locator::Css(&format!("{row} input[name='reason']")))
        .await
        .expect("reason")
        .send_keys(reason)
        .await
        .expect("type");
    browser.screenshot("switch_flip_form").await;
    browser
        .client
        .find(Locator::Css(&format!(
            "{row} form.flip button[type='submit']"
        )))
        .await
        .expect("apply")
        .click()
        .await
        .expect("apply");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-notice='flipped']"))
        .await
        .expect("flipped notice");
    assert_eq!(get_json(&api).await["state"], "on", "the API sees the flip");
    let state = text_of(&browser, &format!("{row} .state-cell")).await;
    assert_eq!(state, "on");

    // the switch's page: the change heads its audit log, who, old → new, why
    browser
        .client
        .find(Locator::Css(&format!("{row} td.key a")))
        .await
        .expect("switch link")
        .click()
        .await
        .expect("open switch");
    let first = browser
        .client
        .find(Locator::Css("table.audit tbody tr"))
        .await
        .expect("audit row");
    assert_eq!(
        first.attr("data-version").await.expect("attr").as_deref(),
        Some("2")
    );
    let text = first.text().await.expect("row text");
    assert!(
        text.contains("state off → on")
            && text.contains(reason)
            && text.contains("admin (dashboard)"),
        "{text}"
    );
    let history = get_json(&format!("{}/api/0/switches/{key}/history/", server.base)).await;
    assert_eq!(history[0]["reason"], reason);
    assert_eq!(history[0]["new"]["state"], "on");
    browser.screenshot("switch_audit_log").await;

    // an exclusion through the add form: the API sees it, the page lists it in words
    pick(
        &browser,
        "form.condition-add input[name='list'][value='exclusions']",
    )
    .await;
    pick(
        &browser,
        "form.condition-add select[name='kind'] option[value='environment']",
    )
    .await;
    type_into(
        &browser,
        "form.condition-add input[name='values']",
        "staging, load-test",
    )
    .await;
    type_into(
        &browser,
        "form.condition-add input[name='reason']",
        "keep the cache off where the load test runs",
    )
    .await;
    pick(&browser, "form.condition-add button[type='submit']").await;
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-notice='conditions']"))
        .await
        .expect("conditions notice");
    let switch = get_json(&api).await;
    assert_eq!(
        switch["exclusions"],
        json!([{"kind": "environment", "environments": ["staging", "load-test"]}])
    );
    let listed = text_of(&browser, "ul.exclusions li .condition-text").await;
    assert_eq!(listed, "environment in staging, load-test");
    browser.screenshot("switch_conditions").await;

    // who owns it and what it is for, through the details form
    pick(&browser, "details.edit-details > summary").await;
    type_into(
        &browser,
        "form.details input[name='owner']",
        "payments-oncall",
    )
    .await;
    type_into(
        &browser,
        "form.details textarea[name='description']",
        "Serves cached prices.\nFlip off when prices look stale.",
    )
    .await;
    type_into(
        &browser,
        "form.details input[name='reason']",
        "handover to payments",
    )
    .await;
    browser.screenshot("switch_details_form").await;
    pick(&browser, "form.details button[type='submit']").await;
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("[data-notice='details']"))
        .await
        .expect("details notice");
    let switch = get_json(&api).await;
    assert_eq!(switch["owner"], "payments-oncall");
    assert_eq!(
        switch["description"],
        "Serves cached prices.\nFlip off when prices look stale."
    );
    let history = get_json(&format!("{}/api/0/switches/{key}/history/", server.base)).await;
    assert_eq!(history[0]["reason"], "handover to payments");
}

/// The address the demo's syslog `transport` listener bound (`syslog tcp: …`).
fn syslog_addr(server: &Sightline, transport: &str) -> std::net::SocketAddr {
    let prefix = format!("syslog {transport}: ");
    server
        .lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line in {:?}", server.lines))
}

#[tokio::test]
async fn queries_logs_and_memory_pages_show_live_demo_data() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &["--demo-rate", "40"], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);

    // log lines from a peer over the demo's syslog TCP port (newline framing), one with
    // markup in it
    let xss = "<img src=x onerror=alert(1)> login failed for <b>root</b>";
    let lines = [
        "<14>1 - web-1 nginx - - - GET /health 200".to_owned(),
        "<11>1 - db-1 postgres - - - could not write block: disk full".to_owned(),
        format!("<12>1 - web-1 sshd - - - {xss}"),
    ];
    {
        use std::io::Write;
        let mut stream =
            std::net::TcpStream::connect(syslog_addr(&server, "tcp")).expect("syslog tcp");
        for line in &lines {
            writeln!(stream, "{line}").expect("send");
        }
    }
    let logs_api = format!("{}/api/0/projects/{project}/logs/", server.base);
    eventually(Duration::from_secs(20), "the log lines stored", || async {
        (get_json(&logs_api).await.as_array()?.len() >= 3).then_some(())
    })
    .await;
    // statements the demo app ran, as the query API ranks them
    let queries_api = format!(
        "{}/api/0/projects/{project}/queries/?statsPeriod=1h&sort=count",
        server.base
    );
    let top = eventually(Duration::from_secs(60), "demo queries", || async {
        let rows = get_json(&queries_api).await;
        let first = rows.as_array()?.first()?.clone();
        Some(first)
    })
    .await;

    let browser = Browser::start(true).await;

    // Logs, at desktop width in the light scheme: the lines newest first, the markup as text
    browser
        .client
        .goto(&format!("{}/projects/{project}/logs", server.base))
        .await
        .expect("logs");
    let rows = browser
        .client
        .find_all(Locator::Css("table.logs tbody tr"))
        .await
        .expect("log rows");
    assert!(rows.len() >= 3, "{} log rows", rows.len());
    let first = rows[0].text().await.expect("row text");
    assert!(first.contains(xss) && first.contains("warning"), "{first}");
    let injected = browser
        .js("return document.querySelectorAll('table.logs img, table.logs b').length;")
        .await;
    assert_eq!(injected, json!(0), "markup in a message stays text");
    let charts = charts(&browser).await;
    assert_eq!(charts[0].0, "Requests and errors (5xx)");
    // the chart leaves the unfinished step out; the totals above it count it
    let totals = text_of(&browser, "p.traffic-note").await;
    let requests: u64 = totals
        .split(' ')
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .expect("request count");
    assert!(requests > 0, "{totals}");
    // severity filter through the form: err or worse keeps the disk line only
    browser
        .client
        .find(Locator::Css("select[name='severity'] option[value='err']"))
        .await
        .expect("severity option")
        .click()
        .await
        .expect("pick err");
    browser
        .client
        .find(Locator::Css("form.filters button[type='submit']"))
        .await
        .expect("apply")
        .click()
        .await
        .expect("apply");
    let url = eventually(Duration::from_secs(10), "filtered URL", || async {
        let url = browser.client.current_url().await.ok()?;
        url.query()
            .filter(|q| q.contains("severity=err"))
            .map(str::to_owned)
    })
    .await;
    assert!(url.contains("severity=err"), "{url}");
    let text = text_of(&browser, "table.logs tbody").await;
    assert!(
        text.contains("disk full") && !text.contains("GET /health"),
        "{text}"
    );
    browser.screenshot("logs_demo").await;

    // Queries, at phone width: ranked by count, with the API's top statement and its count
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone");
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/queries?statsPeriod=1h&sort=count",
            server.base
        ))
        .await
        .expect("queries");
    // The demo keeps running between the API read and the page, so two statements with
    // close counts may swap places: the page is checked against itself (ranked by count)
    // and against the API (the statement the API ranked first, with no fewer executions).
    let rows = browser
        .js("return Array.from(document.querySelectorAll('table.queries tbody tr'), \
             r => [r.dataset.fingerprint, Number(r.querySelector('td[data-count]').dataset.count)]);")
        .await;
    let rows: Vec<(String, u64)> = serde_json::from_value(rows).expect("query rows");
    assert!(!rows.is_empty(), "no query rows");
    assert!(
        rows.windows(2).all(|w| w[0].1 >= w[1].1),
        "ranked by count: {rows:?}"
    );
    let fingerprint = top["fingerprint"].as_str().expect("fingerprint");
    let count = rows
        .iter()
        .find(|(f, _)| f == fingerprint)
        .unwrap_or_else(|| panic!("{fingerprint} not in {rows:?}"))
        .1;
    assert!(count >= top["count"].as_u64().expect("count"), "{count}");
    let sql = text_of(
        &browser,
        &format!("table.queries tbody tr[data-fingerprint='{fingerprint}'] td.sql"),
    )
    .await;
    assert_eq!(sql, top["sql"].as_str().expect("sql"));
    browser.screenshot("queries_demo_phone").await;

    // Memory, at desktop width in the dark scheme: a chart per instance
    browser
        .client
        .set_window_size(1280, 900)
        .await
        .expect("desktop");
    browser
        .client
        .goto(&format!(
            "{}/projects/{project}/memory?statsPeriod=1h",
            server.base
        ))
        .await
        .expect("memory");
    browser
        .client
        .find(Locator::Css("form.theme button[value='dark']"))
        .await
        .expect("theme button")
        .click()
        .await
        .expect("dark");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("html[data-theme='dark']"))
        .await
        .expect("dark page");
    browser.screenshot("memory_demo_dark").await;
}

#[tokio::test]
async fn open_an_exemplar_waterfall_from_the_routes_table() {
    let _slot = BROWSER_SLOT.lock().await;
    let server = Sightline::start("demo", &["--demo-rate", "40"], "demo app:");
    let (project, _) = key_of(&server.dsns[0]);
    // The demo's N+1 route: every request that repeats a statement is kept whole, its
    // statements in a waterfall (threads with few comments repeat too little, and a
    // sampled one of those may be the newest row, so the test picks an N+1 row).
    let route = "/threads/{id}";
    let list_api = reqwest::Url::parse_with_params(
        &format!("{}/api/0/projects/{project}/exemplars/", server.base),
        [("statsPeriod", "1h"), ("method", "GET"), ("route", route)],
    )
    .expect("url");
    eventually(Duration::from_secs(60), "an N+1 exemplar", || async {
        let list = get_json(list_api.as_str()).await;
        list.as_array()?
            .iter()
            .any(|e| {
                e["reasons"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("n_plus_one")))
            })
            .then_some(())
    })
    .await;

    let browser = Browser::start(true).await;
    // the routes table links the route's own page, which lists its exemplars; the
    // route's first window may land after its first exemplar, so reload until it shows
    let routes = format!("{}/projects/{project}/routes?statsPeriod=1h", server.base);
    let link = format!("//table//td[contains(@class,'route')]/a[code[text()='{route}']]");
    let link = eventually(
        Duration::from_secs(30),
        "the route in the table",
        || async {
            browser.client.goto(&routes).await.expect("routes");
            browser.client.find(Locator::XPath(&link)).await.ok()
        },
    )
    .await;
    link.click().await.expect("open route");
    let row = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//table[contains(@class,'exemplars')]/tbody/tr[@data-exemplar][td[4][contains(text(),'N+1')]]",
        ))
        .await
        .expect("an exemplar row kept because of its N+1");
    let id = row
        .attr("data-exemplar")
        .await
        .expect("attr")
        .expect("exemplar id");
    row.find(Locator::Css("a"))
        .await
        .expect("exemplar link")
        .click()
        .await
        .expect("open exemplar");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("table.waterfall tbody tr.wf-row"))
        .await
        .expect("waterfall rows");
    let url = browser.client.current_url().await.expect("url");
    assert!(
        url.path().ends_with(&format!("/exemplars/{id}")),
        "{url}: not exemplar {id}"
    );

    // every span and statement the API holds for it, in its order, with its timing
    let detail = get_json(&format!(
        "{}/api/0/projects/{project}/exemplars/{id}/",
        server.base
    ))
    .await;
    assert_eq!(detail["route"], route);
    let shown = browser
        .js(
            "return [...document.querySelectorAll('table.waterfall tr.wf-row')].map(r => ({
                kind: r.dataset.kind,
                name: r.querySelector('.wf-name').textContent,
                offset: Number(r.dataset.offsetMs),
                duration: Number(r.dataset.durationMs),
                x: Number(r.querySelector('rect.fill').getAttribute('x')),
            }));",
        )
        .await;
    let shown = shown.as_array().expect("rows");
    let entries = detail["entries"].as_array().expect("entries");
    assert_eq!(shown.len(), entries.len(), "{shown:?}");
    for (row, entry) in shown.iter().zip(entries) {
        assert_eq!(row["kind"], entry["kind"], "{row} vs {entry}");
        assert_eq!(row["name"], entry["name"], "{row} vs {entry}");
        let close = |a: &Value, b: &Value| {
            (a.as_f64().expect("number") - b.as_f64().expect("number")).abs() < 1e-6
        };
        assert!(
            close(&row["offset"], &entry["offset_ms"]),
            "{row} vs {entry}"
        );
        assert!(
            close(&row["duration"], &entry["duration_ms"]),
            "{row} vs {entry}"
        );
    }
    // the N+1: one statement shape at least five times, as many as the tile counts
    let mut repeats = std::collections::BTreeMap::<&str, usize>::new();
    for row in shown.iter().filter(|r| r["kind"] == "query") {
        *repeats
            .entry(row["name"].as_str().expect("name"))
            .or_default() += 1;
    }
    assert!(
        repeats.values().any(|&n| n >= 5),
        "no repeated statement: {repeats:?}"
    );
    assert_eq!(
        repeats.values().sum::<usize>() as u64,
        detail["queries"].as_u64().expect("queries")
    );
    // bars start left to right in start order, placed by offset within the request
    let xs: Vec<f64> = shown.iter().map(|r| r["x"].as_f64().expect("x")).collect();
    assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{xs:?}");
    assert!(
        xs.iter().any(|&x| x > 0.0),
        "every bar at the start: {xs:?}"
    );
    let tiles = text_of(&browser, "dl.tiles").await;
    assert!(tiles.contains("Queries"), "{tiles}");
    browser.screenshot("exemplar_waterfall").await;
}
