//! End to end: syslog with real peers nobody here wrote.
//!
//! - util-linux `logger` sends RFC 5424 and RFC 3164 over UDP and TCP (octet-counted and
//!   newline-framed) to `sightline serve --syslog-udp … --syslog-tcp …`; the logs API must
//!   show each message with the fields `logger` was told to send.
//! - rsyslog, started with a config in the test's temp dir, receives the agent's syslog
//!   messages on a loopback TCP port and forwards them to the collector with its standard
//!   `omfwd` action (octet-counted, RSYSLOG_SyslogProtocol23Format). A tap between agent
//!   and rsyslog keeps a copy of what the agent sent; those same batches and error events
//!   (joined from their parts) are POSTed over HTTP to a second server, and both servers
//!   must answer the route, series and issue queries identically.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Sightline, eventually};
use serde_json::Value;

const SYSLOG_FLAGS: [&str; 4] = ["--syslog-udp", "127.0.0.1:0", "--syslog-tcp", "127.0.0.1:0"];

/// `(udp, tcp)` from the `syslog udp: …` / `syslog tcp: …` start-up lines.
fn syslog_addrs(server: &Sightline) -> (SocketAddr, SocketAddr) {
    let find = |prefix: &str| -> SocketAddr {
        server
            .lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:?}", server.lines))
            .parse()
            .expect("address")
    };
    (find("syslog udp: "), find("syslog tcp: "))
}

fn project_id(dsn: &str) -> String {
    dsn.rsplit('/').next().expect("project id").to_owned()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("run logger (util-linux, Debian package bsdutils)");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn logs(server: &Sightline, query: &str) -> Vec<Value> {
    let project = project_id(&server.dsns[0]);
    let url = format!(
        "{}/api/0/projects/{project}/logs/?limit=1000{query}",
        server.base
    );
    let response = reqwest::get(&url).await.expect("logs api");
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_rfc5424_and_rfc3164_over_udp_and_tcp() {
    let server = Sightline::start("serve", &SYSLOG_FLAGS, "dashboard:");
    let (udp, tcp) = syslog_addrs(&server);
    let (udp_port, tcp_port) = (udp.port().to_string(), tcp.port().to_string());
    let cases = [
        // (transport flags, format flag, tag, message)
        (
            vec!["-d"],
            "--rfc5424",
            "l5424udp",
            "hello over udp in 5424",
        ),
        (
            vec!["-d"],
            "--rfc3164",
            "l3164udp",
            "hello over udp in 3164",
        ),
        (
            vec!["-T", "--octet-count"],
            "--rfc5424",
            "l5424tcp",
            "hello over tcp, octet-counted 5424",
        ),
        (
            vec!["-T"],
            "--rfc3164",
            "l3164tcp",
            "hello over tcp, newline 3164",
        ),
    ];
    for (transport, format, tag, message) in &cases {
        let port = if transport[0] == "-d" {
            &udp_port
        } else {
            &tcp_port
        };
        let mut args = transport.clone();
        args.extend([
            *format,
            "-n",
            "127.0.0.1",
            "-P",
            port,
            "-t",
            tag,
            "--id=4242",
            "-p",
            "local3.warning",
        ]);
        if *format == "--rfc5424" {
            args.extend([
                "--msgid",
                "MID42",
                "--sd-id",
                "zoo@32473",
                "--sd-param",
                "tiger=\"hungry\"",
            ]);
        }
        args.push(message);
        logger(&args);
    }
    let lines = eventually(Duration::from_secs(20), "four logger lines", || async {
        let lines = logs(&server, "").await;
        (lines.len() >= cases.len()).then_some(lines)
    })
    .await;
    let host = hostname();
    for (transport, format, tag, message) in &cases {
        let line = lines
            .iter()
            .find(|l| l["message"] == *message)
            .unwrap_or_else(|| panic!("no line {message:?} in {lines:#?}"));
        let udp = transport[0] == "-d";
        assert_eq!(
            line["transport"],
            if udp { "udp" } else { "tcp" },
            "{line:#}"
        );
        assert_eq!(line["format"], &format[2..], "{line:#}");
        assert_eq!(line["app"], *tag, "{line:#}");
        assert_eq!(line["procid"], "4242", "{line:#}");
        assert_eq!(line["host"], host.as_str(), "{line:#}");
        assert_eq!(line["facility"], 19, "local3: {line:#}");
        assert_eq!(line["severity"], 4, "warning: {line:#}");
        assert_eq!(line["severity_name"], "warning", "{line:#}");
        assert_eq!(line["truncated"], false, "{line:#}");
        // logger stamps the current time; the collector's clock is the same one.
        let age_ms = line["received_ms"].as_i64().unwrap() - line["timestamp_ms"].as_i64().unwrap();
        assert!(
            age_ms.abs() < 60_000,
            "timestamp off by {age_ms} ms: {line:#}"
        );
        if *format == "--rfc5424" {
            assert_eq!(line["msgid"], "MID42", "{line:#}");
            assert_eq!(
                line["structured_data"]["zoo@32473"]["tiger"], "hungry",
                "{line:#}"
            );
            assert!(
                line["structured_data"]["timeQuality"].is_object(),
                "logger's own SD element: {line:#}"
            );
        } else {
            assert_eq!(line["msgid"], Value::Null, "{line:#}");
        }
    }
    // Searchable by app, host, text and severity.
    assert_eq!(logs(&server, "&app=l3164tcp").await.len(), 1);
    assert_eq!(logs(&server, &format!("&host={host}")).await.len(), 4);
    assert_eq!(logs(&server, "&query=OCTET-COUNTED").await.len(), 1);
    assert_eq!(logs(&server, "&severity=err").await.len(), 0);
    assert_eq!(logs(&server, "&severity=warning").await.len(), 4);

    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "sightline_syslog_messages_total{transport=\"udp\",outcome=\"log\"} 2",
        "sightline_syslog_messages_total{transport=\"tcp\",outcome=\"log\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    let _ = server.stop();
}

#[test]
fn syslog_listeners_are_off_unless_asked_for() {
    let server = Sightline::start("serve", &[], "dashboard:");
    assert!(
        !server.lines.iter().any(|l| l.starts_with("syslog")),
        "{:?}",
        server.lines
    );
}

// ---------------------------------------------------------------- rsyslog

/// rsyslogd on a loopback port, forwarding to `forward_to`; killed on drop.
struct Rsyslog {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start(forward_to: SocketAddr) -> Rsyslog {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("work dir");
        let port = free_port();
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}")
action(type="omfwd" target="{host}" port="{fport}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" action.resumeRetryCount="-1")
"#,
                work = work.display(),
                host = forward_to.ip(),
                fport = forward_to.port(),
            ),
        )
        .expect("write config");
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd (Debian package rsyslog)");
        let rsyslog = Rsyslog {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        rsyslog
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rsyslogd() -> &'static str {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("rsyslogd")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Accepts connections on a loopback port and copies them to `upstream`, keeping a
/// copy of every byte that went through.
fn tap(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind tap");
    let addr = listener.local_addr().expect("tap addr");
    let copy = Arc::new(Mutex::new(Vec::new()));
    let seen = copy.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            seen.lock().expect("tap copy").extend_from_slice(&buf[..n]);
                            if server.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, copy)
}

/// `(header, body)` of each whole message in an octet-counted stream of the agent's
/// syslog messages; the body is what follows the BOM.
fn messages(stream: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').expect("octet count");
        let len: usize = std::str::from_utf8(&rest[..space])
            .expect("digits")
            .parse()
            .expect("count");
        let Some(message) = rest.get(space + 1..space + 1 + len) else {
            break; // the tap has not copied all of it yet
        };
        let bom = message
            .windows(3)
            .position(|w| w == b"\xEF\xBB\xBF")
            .expect("bom before the json");
        let header = String::from_utf8(message[..bom].to_vec()).expect("ascii header");
        out.push((header, message[bom + 3..].to_vec()));
        rest = &rest[space + 1 + len..];
    }
    out
}

/// A structured-data parameter of a message header.
fn sd_param<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    let (_, rest) = header.split_once(&format!(" {name}=\""))?;
    rest.split_once('"').map(|(value, _)| value)
}

/// The metric batches' JSON, in order.
fn batches(messages: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .filter(|(header, _)| sd_param(header, "kind") == Some("metrics"))
        .map(|(_, body)| body.clone())
        .collect()
}

/// `(i, n, piece)` of an event's parts.
type Part<'m> = (usize, usize, &'m [u8]);

/// Each whole event's JSON, joined from its parts, in the order the agent sent them
/// (an issue's title follows its latest event); events missing a part are left out.
fn events(messages: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut events: Vec<(&str, Vec<Part>)> = Vec::new();
    for (header, body) in messages {
        if sd_param(header, "kind") != Some("event") {
            continue;
        }
        let id = sd_param(header, "id").expect("event id");
        let (i, n) = sd_param(header, "part")
            .and_then(|p| p.split_once('/'))
            .map_or((1, 1), |(i, n)| {
                (i.parse().expect("part"), n.parse().expect("parts"))
            });
        match events.iter_mut().find(|(seen, _)| *seen == id) {
            Some((_, parts)) => parts.push((i, n, body)),
            None => events.push((id, vec![(i, n, body)])),
        }
    }
    events
        .into_iter()
        .filter_map(|(_, mut parts)| {
            parts.sort_by_key(|&(i, _, _)| i);
            let n = parts[0].1;
            let whole = parts.len() == n && parts.iter().enumerate().all(|(k, p)| p.0 == k + 1);
            whole.then(|| parts.iter().flat_map(|p| p.2.iter().copied()).collect())
        })
        .collect()
}

/// What two servers must agree on about an issue.
fn issue_summary(issue: &Value) -> Value {
    serde_json::json!([
        issue["title"],
        issue["culprit"],
        issue["level"],
        issue["count"],
        issue["groupedBy"],
        issue["status"],
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_through_rsyslog_equals_http() {
    use axum::routing::get;
    use tower::ServiceExt;

    let via_syslog = Sightline::start("serve", &SYSLOG_FLAGS, "dashboard:");
    let via_http = Sightline::start("serve", &[], "dashboard:");
    let (_, collector_tcp) = syslog_addrs(&via_syslog);
    let rsyslog = Rsyslog::start(collector_tcp);
    let (tap_addr, sent) = tap(SocketAddr::from(([127, 0, 0, 1], rsyslog.port)));

    // Small messages, so batches are split by window on the way as well.
    let (agent, guard) = sightline_agent::Agent::builder(&via_syslog.dsns[0])
        .expect("dsn")
        .service("via-rsyslog")
        .window(Duration::from_secs(1))
        .transport_syslog(sightline_agent::SyslogTarget::Tcp(tap_addr))
        .syslog_max_message(1024)
        .start()
        .expect("agent");
    let app = axum::Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                "slow"
            }),
        )
        .route(
            "/fail",
            get(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .layer(agent.layer());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let mut requests = 0u64;
    for i in 0..600u32 {
        let path = match i % 10 {
            0..=5 => format!("/items/{i}"),
            6..=8 => "/slow".to_owned(),
            _ => "/fail".to_owned(),
        };
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let _ = app.clone().oneshot(request).await.expect("response");
        requests += 1;
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    // Error events: two of one issue (the numbers differ), one of another whose message
    // alone is larger than a syslog message, so every event travels in parts.
    for order in [1_234, 98] {
        agent.capture_error(&std::io::Error::other(format!("order {order} not found")));
    }
    let long = "d\u{e9}j\u{e0} vu \u{1f501} ".repeat(300);
    agent.capture_message(&long, sightline_agent::Level::Warning);
    let stats = guard.shutdown(Duration::from_secs(10)).await;
    assert_eq!(stats.requests, requests);
    assert_eq!(stats.windows_dropped, 0, "{stats:?}");
    assert!(stats.windows_sent > 0, "{stats:?}");
    assert_eq!(
        (stats.events_sent, stats.events_dropped),
        (3, 0),
        "{stats:?}"
    );

    // The same batches, as the agent wrote them, over HTTP to the other server.
    // The tap copies on its own threads: wait until the copy holds every request.
    let requests_in = |batches: &[Vec<u8>]| -> u64 {
        batches
            .iter()
            .filter_map(|b| serde_json::from_slice::<Value>(b).ok())
            .flat_map(|b| b["windows"].as_array().cloned().unwrap_or_default())
            .map(|w| w["latency"]["count"].as_u64().unwrap_or(0))
            .sum()
    };
    let (batches, events) = eventually(Duration::from_secs(10), "the tap's whole copy", || {
        let copy = sent.lock().expect("copy").clone();
        let messages = messages(&copy);
        let (batches, events) = (batches(&messages), events(&messages));
        let complete = requests_in(&batches) == requests && events.len() == 3;
        async move { complete.then_some((batches, events)) }
    })
    .await;
    let longest = events.iter().map(Vec::len).max().unwrap_or(0);
    assert!(longest > 2_048, "the long event is {longest} bytes");
    assert!(
        batches.len() > 1,
        "expected split batches, got {}",
        batches.len()
    );
    let dsn: sightline_protocol::Dsn = via_http.dsns[0].parse().expect("dsn");
    let client = reqwest::Client::new();
    for batch in &batches {
        let response = client
            .post(dsn.metrics_url())
            .header("x-sentry-auth", dsn.auth_header("test"))
            .header("content-type", "application/json")
            .body(batch.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
    }
    for event in &events {
        let response = client
            .post(format!(
                "{}/api/{}/store/",
                via_http.base,
                project_id(&via_http.dsns[0])
            ))
            .header("x-sentry-auth", dsn.auth_header("test"))
            .header("content-type", "application/json")
            .body(event.clone())
            .send()
            .await
            .expect("post event");
        assert_eq!(response.status(), 200);
    }

    // Both servers hold the same numbers: every window went through rsyslog intact.
    let range = format!("since={}&until={}", started - 60, started + 600);
    let query = |server: &Sightline, what: &str| {
        let url = format!(
            "{}/api/0/projects/{}/{what}/?{range}",
            server.base,
            project_id(&server.dsns[0])
        );
        async move {
            reqwest::get(&url)
                .await
                .expect("query")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    // The agent's last window (closed early at shutdown) may start in the current second,
    // which query ranges exclude until it has passed: wait for every request.
    let expected = eventually(Duration::from_secs(10), "every request over HTTP", || {
        let query = &query;
        let via_http = &via_http;
        async move {
            let routes = query(via_http, "routes").await;
            let total: u64 = routes
                .as_array()
                .expect("routes")
                .iter()
                .map(|r| r["requests"].as_u64().unwrap_or(0))
                .sum();
            (total == requests).then_some(routes)
        }
    })
    .await;
    let got = eventually(
        Duration::from_secs(30),
        "rsyslog to forward everything",
        || {
            let query = &query;
            let expected = &expected;
            let via_syslog = &via_syslog;
            async move {
                let got = query(via_syslog, "routes").await;
                (got == *expected).then_some(got)
            }
        },
    )
    .await;
    assert_eq!(got, expected);
    for what in ["series"] {
        assert_eq!(query(&via_syslog, what).await, query(&via_http, what).await);
    }
    // The events, too: the same issues with the same counts, grouped the same way.
    let issues = |server: &Sightline| {
        let url = format!(
            "{}/api/0/projects/{}/issues/?sort=freq",
            server.base,
            project_id(&server.dsns[0])
        );
        async move {
            let issues: Vec<Value> = reqwest::get(&url)
                .await
                .expect("issues")
                .json()
                .await
                .expect("issues json");
            let mut summary: Vec<Value> = issues.iter().map(issue_summary).collect();
            summary.sort_by_key(|s| s.to_string());
            summary
        }
    };
    let expected_issues = issues(&via_http).await;
    assert_eq!(expected_issues.len(), 2, "{expected_issues:#?}");
    assert!(
        expected_issues.iter().any(|i| i[3] == "2"),
        "{expected_issues:#?}"
    );
    let got_issues = eventually(
        Duration::from_secs(30),
        "rsyslog to forward every event",
        || {
            let issues = &issues;
            let (via_syslog, expected) = (&via_syslog, &expected_issues);
            async move {
                let got = issues(via_syslog).await;
                (got == *expected).then_some(got)
            }
        },
    )
    .await;
    assert_eq!(got_issues, expected_issues);
    // rsyslog forwarded payloads only: no log lines appeared.
    assert_eq!(logs(&via_syslog, "").await.len(), 0);
    drop(rsyslog);
}
