//! Real Sentry SDKs against the real `sightline` binary: the official Python `sentry-sdk`
//! (with gzip, brotli and no compression), the `sentry` Rust crate, and raw envelopes in
//! the encodings no SDK here sends (zstd, deflate). Errors must arrive, group as a
//! developer expects, and every item the SDKs send along must be accepted and counted.
//!
//! The Python interpreter comes from `SIGHTLINE_TEST_PYTHON` (`scripts/test` makes a
//! virtualenv with `sentry-sdk` and `brotli` and exports it).

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::Sightline;
use serde_json::{Value, json};

fn python() -> String {
    std::env::var("SIGHTLINE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SIGHTLINE_TEST_PYTHON is not set: point it at a Python with sentry-sdk and brotli \
             installed (scripts/test creates target/pyenv and sets it)"
        )
    })
}

/// `http://key@host:port/1` → `1`.
fn project_of(dsn: &str) -> String {
    dsn.rsplit('/')
        .next()
        .expect("dsn has a project")
        .to_owned()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.expect("request");
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.expect("json")
}

async fn all_issues(client: &reqwest::Client, server: &Sightline) -> Vec<Value> {
    let project = project_of(&server.dsns[0]);
    let url = format!(
        "{}/api/0/projects/{project}/issues/?status=all&sort=freq",
        server.base
    );
    get_json(client, &url)
        .await
        .as_array()
        .expect("array")
        .clone()
}

/// Envelope items the project received today, by type.
async fn item_count(client: &reqwest::Client, server: &Sightline, item_type: &str) -> u64 {
    let project = project_of(&server.dsns[0]);
    let url = format!(
        "{}/api/0/projects/{project}/item-counts/?days=2",
        server.base
    );
    get_json(client, &url)
        .await
        .as_array()
        .expect("array")
        .iter()
        .filter(|c| c["type"] == item_type)
        .map(|c| c["count"].as_u64().expect("count"))
        .sum()
}

async fn event(client: &reqwest::Client, server: &Sightline, event_id: &str) -> Value {
    let project = project_of(&server.dsns[0]);
    let url = format!(
        "{}/api/0/projects/{project}/events/{event_id}/",
        server.base
    );
    get_json(client, &url).await
}

fn find<'a>(issues: &'a [Value], title_prefix: &str) -> &'a Value {
    issues
        .iter()
        .find(|i| i["title"].as_str().unwrap_or("").starts_with(title_prefix))
        .unwrap_or_else(|| panic!("no issue titled {title_prefix}… in {issues:#?}"))
}

#[tokio::test]
async fn the_python_sdk_reports_errors_with_every_compression() {
    let python = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python_client.py");
    let client = reqwest::Client::new();
    for compression in ["gzip", "br", "none"] {
        // A fresh server per run: the counts below are this run's alone.
        let server = Sightline::start("serve", &[], "dashboard:");
        let dsn = server.dsns[0].clone();
        let (python, dsn_arg) = (python.clone(), dsn.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(&python)
                .args([script, &dsn_arg, compression])
                .output()
                .expect("run the python client")
        })
        .await
        .expect("join");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{compression}: {stderr}");
        let ids: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{compression}: {e}: {stderr}"));
        let expected_algo = match compression {
            "none" => Value::Null,
            algo => json!(algo),
        };
        assert_eq!(
            ids["compression"], expected_algo,
            "the SDK compressed as asked"
        );

        let issues = all_issues(&client, &server).await;
        assert_eq!(issues.len(), 3, "{compression}: {issues:#?}");
        // Three LookupErrors for three users: one issue.
        let lookup = find(&issues, "LookupError: user ");
        assert_eq!(lookup["count"], "3", "{compression}");
        assert_eq!(lookup["userCount"], 3, "{compression}");
        assert_eq!(lookup["groupedBy"], "stacktrace");
        assert_eq!(lookup["status"], "unresolved");
        assert!(
            lookup["culprit"]
                .as_str()
                .unwrap_or("")
                .contains("report-errors"),
            "the transaction names the culprit: {lookup}"
        );
        let parse = find(&issues, "ValueError: bad payload");
        assert_eq!(parse["count"], "2", "{compression}");
        assert_ne!(parse["id"], lookup["id"]);
        let message = find(&issues, "disk 91% full on 10.0.0.3");
        assert_eq!(message["count"], "1");
        assert_eq!(message["level"], "warning");
        assert_eq!(message["groupedBy"], "message");

        // Every id the SDK handed out can be looked up, in the issue it belongs to.
        for (kind, issue) in [("lookup", lookup), ("parse", parse), ("message", message)] {
            for id in ids[kind].as_array().expect("ids") {
                let id = id.as_str().expect("id string");
                let stored = event(&client, &server, id).await;
                assert_eq!(stored["eventID"], id, "{compression} {kind}");
                assert_eq!(stored["groupID"], issue["id"], "{compression} {kind}");
                assert_eq!(stored["release"], "shop@1.4.2");
                assert_eq!(stored["environment"], "staging");
                assert_eq!(stored["payload"]["sdk"]["name"], "sentry.python");
            }
        }
        let detail = get_json(
            &client,
            &format!(
                "{}/api/0/issues/{}/",
                server.base,
                lookup["id"].as_str().expect("id")
            ),
        )
        .await;
        assert_eq!(detail["environments"], json!(["staging"]));
        assert_eq!(detail["releases"], json!(["shop@1.4.2"]));
        let flow = detail["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .find(|t| t["key"] == "checkout_flow")
            .expect("checkout_flow tag");
        assert_eq!(flow["topValues"][0]["value"], "v2");
        assert_eq!(flow["topValues"][0]["count"], 3);

        // What the SDK sent besides errors was accepted and counted.
        assert_eq!(
            item_count(&client, &server, "event").await,
            6,
            "{compression}"
        );
        assert_eq!(
            item_count(&client, &server, "transaction").await,
            1,
            "{compression}"
        );
        assert!(
            item_count(&client, &server, "session").await >= 1,
            "{compression}"
        );
        assert!(
            item_count(&client, &server, "client_report").await >= 1,
            "{compression}"
        );
        let metrics = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics
                .lines()
                .any(|l| l == "sightline_envelope_items_total{type=\"transaction\"} 1"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn the_rust_sdk_reports_an_error_and_a_message() {
    let server = Sightline::start("serve", &[], "dashboard:");
    let dsn = server.dsns[0].clone();
    // The SDK's transport has a runtime of its own; it runs on a plain thread.
    let (error_id, message_id) = std::thread::spawn(move || {
        let mut options = sentry::ClientOptions::default();
        options.release = Some("inventory@3.1.0".into());
        options.environment = Some("e2e".into());
        let guard = sentry::init((dsn.as_str(), options));
        assert!(guard.is_enabled(), "the DSN is accepted");
        let error = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "config file /etc/inventory/7.toml missing",
        );
        let error_id = sentry::capture_error(&error);
        let message_id =
            sentry::capture_message("stock sync lagging 42s behind", sentry::Level::Warning);
        assert!(
            guard.flush(Some(Duration::from_secs(15))),
            "flushed in time"
        );
        (error_id, message_id)
    })
    .join()
    .expect("sdk thread");

    let client = reqwest::Client::new();
    let stored_error = event(&client, &server, &error_id.simple().to_string()).await;
    assert_eq!(stored_error["payload"]["sdk"]["name"], "sentry.rust");
    assert_eq!(stored_error["release"], "inventory@3.1.0");
    assert_eq!(stored_error["environment"], "e2e");
    assert!(
        stored_error["title"]
            .as_str()
            .unwrap_or("")
            .contains("config file /etc/inventory/7.toml missing"),
        "{stored_error}"
    );
    let stored_message = event(&client, &server, &message_id.simple().to_string()).await;
    assert_eq!(stored_message["level"], "warning");
    assert_eq!(stored_message["title"], "stock sync lagging 42s behind");
    assert_eq!(stored_message["groupedBy"], "message");
    assert_ne!(stored_error["groupID"], stored_message["groupID"]);
    let issues = all_issues(&client, &server).await;
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[tokio::test]
async fn raw_zstd_and_deflate_envelopes_are_accepted() {
    let server = Sightline::start("serve", &[], "dashboard:");
    let dsn: sightline_protocol::Dsn = server.dsns[0].parse().expect("dsn");
    let client = reqwest::Client::new();
    let envelope = |id: &str, value: &str| {
        let event = json!({
            "event_id": id,
            "platform": "go",
            "exception": {"values": [{"type": "*errors.errorString", "value": value}]},
        })
        .to_string();
        format!(
            "{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
            event.len()
        )
        .into_bytes()
    };
    let zstd = ruzstd::encoding::compress_to_vec(
        &envelope("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1", "order 17 not found")[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate
        .write_all(&envelope(
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2",
            "order 90210 not found",
        ))
        .expect("compress");
    let deflate = deflate.finish().expect("compress");
    for (encoding, body, id) in [
        ("zstd", zstd, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"),
        ("deflate", deflate, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"),
    ] {
        let response = client
            .post(dsn.envelope_url())
            .header("X-Sentry-Auth", dsn.auth_header("raw-e2e/1.0"))
            .header("Content-Type", "application/x-sentry-envelope")
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200, "{encoding}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer, json!({"id": id}), "{encoding}");
    }
    let issues = all_issues(&client, &server).await;
    assert_eq!(issues.len(), 1, "one bug, two order numbers: {issues:#?}");
    assert_eq!(issues[0]["count"], "2");
    assert_eq!(issues[0]["groupedBy"], "exception");
}
