//! Router tests of Sentry ingest and the issue API: envelopes and events in every form
//! SDKs send them, every way to get them wrong, grouping and the issue workflow as the
//! API shows them. Expected values come from the events' own text (what a person would
//! expect to see), never from what the collector answered before; the store is counted
//! through a connection of its own.

use std::io::Write;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;

use super::{
    Answer, T0, call, config, expect_error, get, metric, open, open_gated, open_with, queue_depth,
    wait_until,
};
use crate::Project;

// ---------------------------------------------------------------- building requests

/// An envelope: header line, then each item's header (with its length) and payload.
fn envelope(header: Value, items: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut body = serde_json::to_vec(&header).unwrap();
    body.push(b'\n');
    for (ty, payload) in items {
        let item = json!({"type": ty, "length": payload.len()});
        body.extend(serde_json::to_vec(&item).unwrap());
        body.push(b'\n');
        body.extend(payload);
        body.push(b'\n');
    }
    body
}

fn event_envelope(event: &Value) -> Vec<u8> {
    envelope(
        json!({"event_id": event["event_id"], "sent_at": "2023-11-14T22:14:00Z"}),
        &[("event", serde_json::to_vec(event).unwrap())],
    )
}

/// An exception event as the Python SDK sends one, trimmed to what grouping reads.
fn exception(id: u32, ty: &str, value: &str, function: &str, user: &str) -> Value {
    json!({
        "event_id": format!("{id:032x}"),
        "timestamp": (T0 + i64::from(id)) as f64,
        "platform": "python",
        "level": "error",
        "environment": "production",
        "release": "shop@1.0.0",
        "user": {"id": user},
        "tags": {"flow": "checkout"},
        "exception": {"values": [{
            "type": ty,
            "value": value,
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {"module": "django.core.handlers", "function": "get_response", "lineno": 181, "in_app": false},
                {"module": "shop.views", "function": function, "lineno": 40 + id, "in_app": true},
            ]},
        }]},
        "request": {
            "url": "https://shop.example.com/checkout",
            "method": "POST",
            "headers": {"Authorization": "Bearer abc", "User-Agent": "curl/8"},
            "data": {"password": "hunter2", "item": "book"},
        },
    })
}

enum Auth<'a> {
    /// `X-Sentry-Auth: Sentry sentry_key=…`
    Header(&'a str),
    /// `Authorization: Sentry sentry_key=…`
    Authorization(&'a str),
    /// `?sentry_key=…`
    Query(&'a str),
    /// Nothing outside the body.
    None,
}

fn post(path: &str, auth: Auth<'_>, encoding: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let uri = match auth {
        Auth::Query(key) => format!("{path}?sentry_key={key}"),
        _ => path.to_owned(),
    };
    let mut request =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-sentry-envelope");
    match auth {
        Auth::Header(key) => {
            request = request.header(
                "X-Sentry-Auth",
                format!(
                    "Sentry sentry_version=7, sentry_client=sentry.python/2.0.0, sentry_key={key}"
                ),
            );
        }
        Auth::Authorization(key) => {
            request = request.header(
                header::AUTHORIZATION,
                format!("Sentry sentry_key={key}, sentry_version=7"),
            );
        }
        Auth::Query(_) | Auth::None => {}
    }
    if let Some(encoding) = encoding {
        request = request.header(header::CONTENT_ENCODING, encoding);
    }
    request.body(Body::from(body)).unwrap()
}

fn post_envelope(project: &Project, body: Vec<u8>) -> Request<Body> {
    post(
        &format!("/api/{}/envelope/", project.id),
        Auth::Header(&project.public_key),
        None,
        body,
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn send_ok(router: &axum::Router, request: Request<Body>) -> Value {
    let answer = call(router, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()
}

// ---------------------------------------------------------------- reading back

/// The collector's database, read-only, on connections of its own.
async fn read_only_pool(dir: &TempDir) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("sightline.db"))
        .read_only(true);
    SqlitePool::connect_with(options).await.unwrap()
}

/// Rows of `issues`, `events`, `issue_tags`, `issue_users`, `item_counts`, read through a
/// connection of its own.
async fn error_rows(dir: &TempDir) -> [i64; 5] {
    let pool = read_only_pool(dir).await;
    let mut counts = [0; 5];
    for (slot, table) in counts.iter_mut().zip([
        "issues",
        "events",
        "issue_tags",
        "issue_users",
        "item_counts",
    ]) {
        let row: (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        *slot = row.0;
    }
    pool.close().await;
    counts
}

async fn api(router: &axum::Router, uri: &str) -> Answer {
    let answer = call(router, get(uri)).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
    answer
}

async fn issues(router: &axum::Router, project: &Project, query: &str) -> Vec<Value> {
    let uri = format!("/api/0/projects/{}/issues/?{query}", project.id);
    api(router, &uri).await.json().as_array().unwrap().clone()
}

fn put(uri: &str, body: Value) -> Request<Body> {
    Request::put(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn titles(issues: &[Value]) -> Vec<&str> {
    issues
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------- ingest

#[tokio::test]
async fn an_envelope_event_becomes_an_issue_with_its_details() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let event = exception(1, "LookupError", "user 1234 not found", "show_user", "42");
    let answer = send_ok(&router, post_envelope(&project, event_envelope(&event))).await;
    assert_eq!(answer, json!({"id": format!("{:032x}", 1)}));
    // A 200 means committed: another connection sees it.
    let [issue_rows, events, _, users, item_counts] = error_rows(&dir).await;
    assert_eq!((issue_rows, events, users, item_counts), (1, 1, 1, 1));

    let list = issues(&router, &project, "").await;
    assert_eq!(list.len(), 1);
    let issue = &list[0];
    assert_eq!(issue["title"], "LookupError: user 1234 not found");
    assert_eq!(issue["culprit"], "show_user in shop.views");
    assert_eq!(issue["level"], "error");
    assert_eq!(issue["status"], "unresolved");
    assert_eq!(issue["substatus"], "new");
    assert_eq!(issue["count"], "1");
    assert_eq!(issue["userCount"], 1);
    assert_eq!(issue["groupedBy"], "stacktrace");
    assert_eq!(issue["firstSeen"], "2023-11-14T22:14:01.000Z");
    assert_eq!(issue["lastSeen"], "2023-11-14T22:14:01.000Z");
    assert_eq!(issue["project"]["id"], project.id.to_string());
    let id = issue["id"].as_str().unwrap();
    assert_eq!(
        issue["shortId"],
        format!("DEFAULT-{}", id.to_ascii_uppercase())
    );

    let detail = api(&router, &format!("/api/0/issues/{id}/")).await.json();
    assert_eq!(detail["environments"], json!(["production"]));
    assert_eq!(detail["releases"], json!(["shop@1.0.0"]));
    assert_eq!(
        detail["grouping"]["values"],
        json!(["LookupError", "shop.views:show_user"]),
        "why grouped: the exception type and the in-app frame, no line numbers"
    );
    let flow = detail["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "flow")
        .unwrap();
    assert_eq!(flow["topValues"][0]["value"], "checkout");
    assert_eq!(flow["totalValues"], 1);
    let latest = &detail["latestEvent"];
    assert_eq!(latest["eventID"], format!("{:032x}", 1));
    // Scrubbed before it was stored.
    assert_eq!(
        latest["payload"]["request"]["headers"]["Authorization"],
        "[Filtered]"
    );
    assert_eq!(
        latest["payload"]["request"]["data"]["password"],
        "[Filtered]"
    );
    assert_eq!(latest["payload"]["request"]["data"]["item"], "book");

    let event_uri = format!("/api/0/projects/{}/events/{:032x}/", project.id, 1);
    let stored = api(&router, &event_uri).await.json();
    assert_eq!(stored["event_id"], format!("{:032x}", 1));
    assert_eq!(stored["groupID"], id);
    assert_eq!(
        stored["payload"]["exception"]["values"][0]["value"],
        "user 1234 not found"
    );
    assert_eq!(stored["user"], "id:42");

    let text = api(&router, "/metrics").await.text();
    assert_eq!(
        metric(&text, "sightline_envelope_items_total{type=\"event\"}"),
        1.0
    );
    assert_eq!(metric(&text, "sightline_events_stored_total"), 1.0);
    assert_eq!(
        metric(
            &text,
            "sightline_ingest_requests_total{endpoint=\"envelope\",outcome=\"accepted\",status=\"200\"}"
        ),
        1.0
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn every_place_sdks_put_the_key_is_accepted_and_wrong_keys_are_refused() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let key = project.public_key.as_str();
    let path = format!("/api/{}/envelope/", project.id);
    let body = |id: u32| event_envelope(&exception(id, "E", "x", "f", "u"));
    let with_dsn = |id: u32, key: &str| {
        let event = exception(id, "E", "x", "f", "u");
        envelope(
            json!({"event_id": event["event_id"], "dsn": format!("http://{key}@127.0.0.1:7070/{}", project.id)}),
            &[("event", serde_json::to_vec(&event).unwrap())],
        )
    };
    let wrong = "0123456789abcdef0123456789abcdef";

    let refused: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "no key anywhere",
            post(&path, Auth::None, None, body(1)),
            StatusCode::UNAUTHORIZED,
            "sentry_key",
        ),
        (
            "wrong header key",
            post(&path, Auth::Header(wrong), None, body(1)),
            StatusCode::FORBIDDEN,
            "sentry_key",
        ),
        (
            "wrong dsn key",
            post(&path, Auth::None, None, with_dsn(1, wrong)),
            StatusCode::FORBIDDEN,
            "sentry_key",
        ),
        // A wrong header key is not rescued by a right dsn.
        (
            "wrong header, right dsn",
            post(&path, Auth::Header(wrong), None, with_dsn(1, key)),
            StatusCode::FORBIDDEN,
            "sentry_key",
        ),
        (
            "unknown project",
            post("/api/999/envelope/", Auth::Header(key), None, body(1)),
            StatusCode::NOT_FOUND,
            "project",
        ),
        (
            "bad project id",
            post("/api/x/envelope/", Auth::Header(key), None, body(1)),
            StatusCode::BAD_REQUEST,
            "project id",
        ),
    ];
    for (what, request, status, reason) in refused {
        let answer = call(&router, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        assert!(
            answer.json()["error"].as_str().unwrap().contains(reason),
            "{what}"
        );
        assert_eq!(error_rows(&dir).await, [0; 5], "{what} stored something");
    }

    let accepted = [
        post(&path, Auth::Header(key), None, body(1)),
        post(&path, Auth::Authorization(key), None, body(2)),
        post(&path, Auth::Query(key), None, body(3)),
        // Browser SDKs put the key only in the envelope header's dsn.
        post(&path, Auth::None, None, with_dsn(4, key)),
    ];
    for (i, request) in accepted.into_iter().enumerate() {
        let answer = send_ok(&router, request).await;
        assert_eq!(answer["id"], format!("{:032x}", i + 1));
    }
    let list = issues(&router, &project, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["count"], "4");
    let text = api(&router, "/metrics").await.text();
    let rejected = |status: &str| {
        metric(
            &text,
            &format!(
                "sightline_ingest_requests_total{{endpoint=\"envelope\",outcome=\"rejected\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        (rejected("401"), rejected("403"), rejected("404")),
        (1.0, 3.0, 1.0)
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn compressed_bodies_are_decoded_and_bad_or_huge_ones_refused() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.max_decompressed_bytes = 256 * 1024;
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    let path = format!("/api/{}/envelope/", project.id);
    let key = Auth::Header(&project.public_key);
    let body = |id: u32| event_envelope(&exception(id, "E", "x", "f", "u"));
    let zstd = |data: &[u8]| {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    };
    let mut raw_deflate =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    raw_deflate.write_all(&body(4)).unwrap();
    let encoded: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("gzip"), gzip(&body(1))),
        (Some("deflate"), zlib(&body(2))),
        (Some("zstd"), zstd(&body(3))),
        (Some("deflate"), raw_deflate.finish().unwrap()),
        (Some("UTF-8"), body(5)),
        (Some(""), body(6)),
        (None, body(7)),
    ];
    for (i, (encoding, data)) in encoded.into_iter().enumerate() {
        let request = post(&path, Auth::Header(&project.public_key), encoding, data);
        let answer = send_ok(&router, request).await;
        assert_eq!(answer["id"], format!("{:032x}", i + 1), "{encoding:?}");
    }
    assert_eq!(error_rows(&dir).await[1], 7);

    // 10 MiB of zeros in a ~10 KiB gzip body: cut off at the 256 KiB cap.
    let bomb = gzip(&vec![b'0'; 10 << 20]);
    assert!(bomb.len() < 64 << 10);
    let refused: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "bomb",
            post(&path, Auth::Header(&project.public_key), Some("gzip"), bomb),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds",
        ),
        (
            "unknown encoding",
            post(
                &path,
                Auth::Header(&project.public_key),
                Some("compress"),
                body(8),
            ),
            StatusCode::BAD_REQUEST,
            "content-encoding",
        ),
        (
            "not gzip",
            post(
                &path,
                Auth::Header(&project.public_key),
                Some("gzip"),
                body(8),
            ),
            StatusCode::BAD_REQUEST,
            "gzip",
        ),
        (
            "not zstd",
            post(
                &path,
                Auth::Header(&project.public_key),
                Some("zstd"),
                body(8),
            ),
            StatusCode::BAD_REQUEST,
            "zstd",
        ),
        (
            "not br",
            post(
                &path,
                Auth::Header(&project.public_key),
                Some("br"),
                body(8),
            ),
            StatusCode::BAD_REQUEST,
            "br",
        ),
        (
            "plain but over the cap",
            post(&path, key, None, vec![b' '; 300 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds",
        ),
    ];
    for (what, request, status, reason) in refused {
        let answer = call(&router, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(reason), "{what}: {error}");
    }
    assert_eq!(
        error_rows(&dir).await[1],
        7,
        "refused bodies stored nothing"
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn malformed_envelopes_are_400_with_a_reason_and_store_nothing() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.max_envelope_bytes = 2 << 20;
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    let good = serde_json::to_vec(&exception(1, "E", "x", "f", "u")).unwrap();
    let huge_event = serde_json::to_vec(&json!({"message": "a".repeat(1 << 20)})).unwrap();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("empty body", Vec::new(), StatusCode::BAD_REQUEST, "empty"),
        (
            "header not json",
            b"hello\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "envelope header",
        ),
        (
            "item header not json",
            b"{}\n{type:event}\n{}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "item 0 header",
        ),
        (
            "length past the end",
            b"{}\n{\"type\":\"event\",\"length\":500}\n{}\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "length",
        ),
        // A good event next to a broken one: the whole envelope is refused.
        (
            "event not an object",
            envelope(
                json!({}),
                &[("event", good.clone()), ("event", b"[1,2]".to_vec())],
            ),
            StatusCode::BAD_REQUEST,
            "not a json object",
        ),
        (
            "event id not a uuid",
            envelope(
                json!({}),
                &[
                    ("event", good.clone()),
                    ("event", br#"{"event_id":"nope"}"#.to_vec()),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "event_id",
        ),
        (
            "event over 1 MiB",
            envelope(json!({}), &[("event", good.clone()), ("event", huge_event)]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds 1048576",
        ),
        (
            "body over the endpoint limit",
            vec![b'x'; 3 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large",
        ),
    ];
    for (what, body, status, reason) in cases {
        let answer = call(&router, post_envelope(&project, body)).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(reason), "{what}: {error:?} lacks {reason:?}");
        assert_eq!(error_rows(&dir).await, [0; 5], "{what} stored something");
    }
    collector.shutdown().await;
}

#[tokio::test]
async fn every_other_item_type_is_accepted_and_counted() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let items: Vec<(&str, Vec<u8>)> = vec![
        ("transaction", br#"{"type":"transaction","transaction":"/checkout","spans":[]}"#.to_vec()),
        ("session", br#"{"sid":"7c7b6e15-0b8e-4c5e-9b1a-3f7a2b9d8c11","init":true,"status":"ok"}"#.to_vec()),
        ("sessions", br#"{"aggregates":[{"started":"2024-03-01T12:00:00Z","exited":3}]}"#.to_vec()),
        ("client_report", br#"{"discarded_events":[{"reason":"sample_rate","category":"transaction","quantity":2}]}"#.to_vec()),
        ("attachment", b"line one\nline two\x00\xff binary".to_vec()),
        ("check_in", br#"{"check_in_id":"a","monitor_slug":"nightly","status":"ok"}"#.to_vec()),
        ("feedback", br#"{"contexts":{"feedback":{"message":"it broke"}}}"#.to_vec()),
        ("log", br#"{"items":[]}"#.to_vec()),
        ("span", b"{}".to_vec()),
        ("profile", b"{}".to_vec()),
        ("replay_event", b"{}".to_vec()),
        ("replay_recording", b"\x00\x01compressed".to_vec()),
        ("something_from_2030", b"whatever".to_vec()),
        ("transaction", b"not even json".to_vec()),
    ];
    let answer = send_ok(
        &router,
        post_envelope(&project, envelope(json!({}), &items)),
    )
    .await;
    assert_eq!(answer, json!({}), "no event, no id");
    // Only events become issues.
    assert_eq!(error_rows(&dir).await[..2], [0, 0]);

    let counts = api(
        &router,
        &format!("/api/0/projects/{}/item-counts/", project.id),
    )
    .await
    .json();
    let count_of = |ty: &str| {
        counts
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == ty)
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count_of("transaction"), 2);
    for ty in [
        "session",
        "sessions",
        "client_report",
        "attachment",
        "check_in",
        "feedback",
        "log",
        "span",
        "profile",
        "replay_event",
        "replay_recording",
    ] {
        assert_eq!(count_of(ty), 1, "{ty}");
    }
    assert_eq!(count_of("unknown"), 1);
    assert_eq!(
        count_of("something_from_2030"),
        0,
        "unknown types share one label"
    );
    let text = api(&router, "/metrics").await.text();
    assert_eq!(
        metric(
            &text,
            "sightline_envelope_items_total{type=\"transaction\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "sightline_envelope_items_total{type=\"unknown\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "sightline_envelope_items_total{type=\"event\"}"),
        0.0
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn store_and_envelope_are_served_with_and_without_the_slash() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let key = &project.public_key;
    let id = project.id;
    let event = |n: u32| exception(n, "E", "x", "f", "u");
    let bare = |n: u32| serde_json::to_vec(&event(n)).unwrap();
    let requests = [
        post(
            &format!("/api/{id}/store/"),
            Auth::Header(key),
            None,
            bare(1),
        ),
        post(
            &format!("/api/{id}/store"),
            Auth::Header(key),
            Some("gzip"),
            gzip(&bare(2)),
        ),
        post(
            &format!("/api/{id}/envelope"),
            Auth::Header(key),
            None,
            event_envelope(&event(3)),
        ),
        post(
            &format!("/api/{id}/envelope/"),
            Auth::Header(key),
            None,
            event_envelope(&event(4)),
        ),
    ];
    for (n, request) in requests.into_iter().enumerate() {
        assert_eq!(
            send_ok(&router, request).await["id"],
            format!("{:032x}", n + 1)
        );
    }
    // `store` takes no dsn from the body: a bare event has no envelope header.
    let answer = call(
        &router,
        post(&format!("/api/{id}/store/"), Auth::None, None, bare(5)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // A store body is one event: an envelope there is not an event object.
    expect_error(
        &router,
        post(
            &format!("/api/{id}/store/"),
            Auth::Header(key),
            None,
            event_envelope(&event(6)),
        ),
        StatusCode::BAD_REQUEST,
        "invalid event",
    )
    .await;
    // An event without an id gets one.
    let answer = send_ok(
        &router,
        post(
            &format!("/api/{id}/store/"),
            Auth::Header(key),
            None,
            br#"{"message":"no id"}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(answer["id"].as_str().unwrap().len(), 32);
    assert_eq!(issues(&router, &project, "").await.len(), 2);
    let text = api(&router, "/metrics").await.text();
    assert_eq!(
        metric(
            &text,
            "sightline_ingest_requests_total{endpoint=\"store\",outcome=\"accepted\",status=\"200\"}"
        ),
        3.0
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn browsers_get_cors_on_preflights_answers_and_errors() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    for path in ["envelope/", "envelope", "store/"] {
        let preflight = Request::options(format!("/api/{}/{path}", project.id))
            .header(header::ORIGIN, "https://shop.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type, x-sentry-auth",
            )
            .body(Body::empty())
            .unwrap();
        let answer = call(&router, preflight).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let allowed = answer.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap();
        for name in ["x-sentry-auth", "content-type", "content-encoding"] {
            assert!(allowed.contains(name), "{path}: {allowed}");
        }
        assert!(
            answer.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    let ok = call(
        &router,
        post_envelope(&project, event_envelope(&exception(1, "E", "x", "f", "u"))),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let refused = call(
        &router,
        post(
            &format!("/api/{}/envelope/", project.id),
            Auth::None,
            None,
            b"{}\n".to_vec(),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    // Preflights are not ingest requests.
    let text = api(&router, "/metrics").await.text();
    assert_eq!(
        metric(
            &text,
            "sightline_ingest_requests_total{endpoint=\"envelope\",outcome=\"accepted\",status=\"200\"}"
        ),
        1.0
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_refuses_envelopes_with_429() {
    let dir = TempDir::new().unwrap();
    let (collector, store, project) = open_gated(&dir, 1).await;
    let router = collector.router();
    let send = |n: u32| {
        let (router, request) = (
            router.clone(),
            post_envelope(&project, event_envelope(&exception(n, "E", "x", "f", "u"))),
        );
        tokio::spawn(async move { call(&router, request).await })
    };
    let first = send(1);
    wait_until("the writer to hold the first envelope", async || {
        store
            .batches_at_gate
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
    let queued = send(2);
    wait_until("one queued envelope", async || {
        queue_depth(&router).await == Some(1)
    })
    .await;
    let refused = call(
        &router,
        post_envelope(&project, event_envelope(&exception(3, "E", "x", "f", "u"))),
    )
    .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    store.gate.add_permits(100);
    for task in [first, queued] {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    let list = issues(&router, &project, "").await;
    assert_eq!(list[0]["count"], "2", "the refused envelope is not stored");
    collector.shutdown().await;
}

// ---------------------------------------------------------------- grouping and workflow

#[tokio::test]
async fn grouping_puts_the_same_bug_together_and_different_bugs_apart() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let no_frames = |id: u32, ty: &str, value: &str, user: &str| {
        let mut e = exception(id, ty, value, "f", user);
        e["exception"]["values"][0]
            .as_object_mut()
            .unwrap()
            .remove("stacktrace");
        e
    };
    let events = [
        // Same bug, different ids in the message: one issue.
        no_frames(1, "LookupError", "user 1234 not found", "a"),
        no_frames(2, "LookupError", "user 98 not found", "b"),
        // Same exception type, a different bug: its own issue.
        no_frames(3, "LookupError", "thread 7 is locked", "a"),
        // Same frames, different lines and messages: one issue by stack trace.
        exception(4, "ValueError", "bad payload '{' at byte 1", "parse", "a"),
        exception(5, "ValueError", "bad payload '[1,' at byte 3", "parse", "a"),
        // A message event, parameterised.
        json!({"event_id": format!("{:032x}", 6), "timestamp": (T0 + 6) as f64, "message": "disk 91% full on 10.0.0.3", "level": "warning"}),
        json!({"event_id": format!("{:032x}", 7), "timestamp": (T0 + 7) as f64, "message": "disk 97% full on 10.0.0.9", "level": "warning"}),
        // An explicit fingerprint overrides everything.
        {
            let mut e = no_frames(8, "LookupError", "user 1234 not found", "c");
            e["fingerprint"] = json!(["lookup-in-billing"]);
            e
        },
    ];
    for event in &events {
        send_ok(&router, post_envelope(&project, event_envelope(event))).await;
    }
    let list = issues(&router, &project, "sort=new&limit=100").await;
    let summary: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|i| {
            (
                i["title"].as_str().unwrap(),
                i["count"].as_str().unwrap(),
                i["groupedBy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("LookupError: user 1234 not found", "1", "fingerprint"),
            ("disk 97% full on 10.0.0.9", "2", "message"),
            ("ValueError: bad payload '[1,' at byte 3", "2", "stacktrace"),
            ("LookupError: thread 7 is locked", "1", "exception"),
            ("LookupError: user 98 not found", "2", "exception"),
        ],
        "newest first; each issue is titled by its newest event"
    );
    // User counts are distinct users.
    assert_eq!(list[4]["userCount"], 2);
    assert_eq!(list[2]["userCount"], 1);
    let lookup_id = list[4]["id"].as_str().unwrap();
    let detail = api(&router, &format!("/api/0/issues/{lookup_id}/"))
        .await
        .json();
    assert_eq!(
        detail["grouping"]["values"],
        json!(["LookupError", "user <int> not found"])
    );
    assert_eq!(detail["latestEvent"]["eventID"], format!("{:032x}", 2));
    let events = api(&router, &format!("/api/0/issues/{lookup_id}/events/"))
        .await
        .json();
    let ids: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [format!("{:032x}", 2), format!("{:032x}", 1)],
        "newest first"
    );
    assert!(
        events[0]["payload"].is_null(),
        "payloads only with full=true"
    );
    let full = api(
        &router,
        &format!("/api/0/issues/{lookup_id}/events/?full=true"),
    )
    .await
    .json();
    assert_eq!(
        full[0]["payload"]["exception"]["values"][0]["value"],
        "user 98 not found"
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn duplicates_count_once_and_one_commit_of_many_events_counts_them_all() {
    let dir = TempDir::new().unwrap();
    let first = exception(1, "LookupError", "user 1 not found", "show", "u1");
    let (collector, project) = open(&dir).await;
    send_ok(
        &collector.router(),
        post_envelope(&project, event_envelope(&first)),
    )
    .await;
    collector.shutdown().await;
    let (collector, store, project) = open_gated(&dir, 64).await;
    let router = collector.router();

    // Hold the writer, queue many events of one issue plus duplicates of each other and
    // of the first, and let them commit together.
    let mut tasks = Vec::new();
    for n in 2..=21u32 {
        let event = exception(
            n,
            "LookupError",
            &format!("user {n} not found"),
            "show",
            &format!("u{}", n % 5),
        );
        for _ in 0..2 {
            let (router, request) = (
                router.clone(),
                post_envelope(&project, event_envelope(&event)),
            );
            tasks.push(tokio::spawn(async move { call(&router, request).await }));
        }
    }
    let (router2, again) = (
        router.clone(),
        post_envelope(&project, event_envelope(&first)),
    );
    tasks.push(tokio::spawn(async move { call(&router2, again).await }));
    wait_until("41 envelopes queued or held", async || {
        let queued = queue_depth(&router).await.unwrap();
        queued as usize
            + store
                .batches_at_gate
                .load(std::sync::atomic::Ordering::SeqCst)
            == 41
    })
    .await;
    store.gate.add_permits(100);
    for task in tasks {
        assert_eq!(
            task.await.unwrap().status,
            StatusCode::OK,
            "duplicates are accepted"
        );
    }
    let commits = store.commits.lock().await.clone();
    assert!(
        commits.len() <= 2,
        "{commits:?}: the held envelopes commit together"
    );

    // Before anything reads them, the writer writes the kept-back tag counts once its
    // queue has stayed empty.
    let flow_rows = async || {
        let pool = read_only_pool(&dir).await;
        let (sum,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(count), 0) FROM issue_tags WHERE key = 'flow'")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        sum
    };
    wait_until("the tag counts written while idle", async || {
        flow_rows().await == 21
    })
    .await;
    let list = issues(&router, &project, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["count"], "21",
        "21 distinct events, duplicates not counted"
    );
    // u1 (first), then u2..u21 by n % 5: u0..u4, so five distinct users.
    assert_eq!(list[0]["userCount"], 5);
    assert_eq!(error_rows(&dir).await[1], 21);
    let id = list[0]["id"].as_str().unwrap();
    let detail = api(&router, &format!("/api/0/issues/{id}/")).await.json();
    let flow = detail["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "flow")
        .unwrap()
        .clone();
    // The held group was a busy spell: its tag counts were kept back from the commit and
    // written before this read of them.
    assert_eq!(flow["topValues"][0]["count"], 21);
    // This collector stored 20 of them; the first came before its restart.
    let text = api(&router, "/metrics").await.text();
    assert_eq!(metric(&text, "sightline_events_stored_total"), 20.0);
    assert_eq!(metric(&text, "sightline_events_duplicate_total"), 21.0);
    collector.shutdown().await;
}

#[tokio::test]
async fn resolve_regress_ignore_and_bulk_changes() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    let send = async |n: u32, function: &str| {
        let event = exception(n, "KeyError", "'sku'", function, "u");
        send_ok(&router, post_envelope(&project, event_envelope(&event))).await;
    };
    send(1, "checkout").await;
    send(2, "refund").await;
    send(3, "invoice").await;
    let list = issues(&router, &project, "sort=new").await;
    let id_of = |function: &str| {
        list.iter()
            .find(|i| i["culprit"].as_str().unwrap().starts_with(function))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (checkout, refund, invoice) = (id_of("checkout"), id_of("refund"), id_of("invoice"));

    let resolved = call(
        &router,
        put(
            &format!("/api/0/issues/{checkout}/"),
            json!({"status": "resolved"}),
        ),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text());
    assert_eq!(resolved.json()["status"], "resolved");
    assert_eq!(resolved.json()["substatus"], Value::Null);
    assert_eq!(
        titles(&issues(&router, &project, "").await).len(),
        2,
        "resolved issues leave the default list"
    );
    assert_eq!(
        issues(&router, &project, "status=resolved").await[0]["id"],
        checkout.as_str()
    );

    // It happens again: unresolved, regressed, counted.
    send(4, "checkout").await;
    let detail = api(&router, &format!("/api/0/issues/{checkout}/"))
        .await
        .json();
    assert_eq!(
        (detail["status"].as_str(), detail["substatus"].as_str()),
        (Some("unresolved"), Some("regressed"))
    );
    assert_eq!(detail["count"], "2");
    let regressed = issues(&router, &project, "").await;
    assert!(
        regressed
            .iter()
            .any(|i| i["id"] == checkout.as_str() && i["substatus"] == "regressed")
    );

    // Ignored issues keep counting but stay out of the default list.
    let ignored = call(
        &router,
        put(
            &format!("/api/0/issues/{refund}/"),
            json!({"status": "ignored"}),
        ),
    )
    .await;
    assert_eq!(ignored.json()["substatus"], "archived_forever");
    send(5, "refund").await;
    let detail = api(&router, &format!("/api/0/issues/{refund}/"))
        .await
        .json();
    assert_eq!(
        (detail["status"].as_str(), detail["count"].as_str()),
        (Some("ignored"), Some("2"))
    );
    let unresolved: Vec<String> = issues(&router, &project, "")
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!unresolved.contains(&refund));
    assert_eq!(issues(&router, &project, "status=").await.len(), 3);
    assert_eq!(issues(&router, &project, "query=is:ignored").await.len(), 1);

    // Bulk: two of this project's issues resolved at once; ids of nothing are ignored.
    let bulk = call(
        &router,
        put(
            &format!(
                "/api/0/projects/{}/issues/?id={invoice}&id={refund}&id=99999",
                project.id
            ),
            json!({"status": "resolved"}),
        ),
    )
    .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.text());
    let mut updated: Vec<String> = serde_json::from_value(bulk.json()["updated"].clone()).unwrap();
    updated.sort();
    let mut expected = vec![invoice.clone(), refund.clone()];
    expected.sort();
    assert_eq!(updated, expected);
    assert_eq!(issues(&router, &project, "status=resolved").await.len(), 2);
    // Back to unresolved: ongoing, not new.
    let reopened = call(
        &router,
        put(
            &format!("/api/0/issues/{invoice}/"),
            json!({"status": "unresolved"}),
        ),
    )
    .await;
    assert_eq!(
        (
            reopened.json()["status"].as_str(),
            reopened.json()["substatus"].as_str()
        ),
        (Some("unresolved"), Some("ongoing"))
    );
    collector.shutdown().await;
}

#[tokio::test]
async fn issue_lists_filter_sort_and_paginate() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    // Five issues: "bug 0" … "bug 4"; bug n seen n + 1 times; odd ones in staging,
    // bug 4 a warning in release 2.0 and with a `%` in its message.
    let mut id = 0;
    for n in 0..5u32 {
        for _ in 0..=n {
            id += 1;
            let mut event = exception(
                id,
                &format!("Bug{n}Error"),
                if n == 4 { "100% broken" } else { "broken" },
                "f",
                "u",
            );
            if n % 2 == 1 {
                event["environment"] = json!("staging");
            }
            if n == 4 {
                event["level"] = json!("warning");
                event["release"] = json!("shop@2.0.0");
            }
            send_ok(&router, post_envelope(&project, event_envelope(&event))).await;
        }
    }
    let by = |list: Vec<Value>| -> Vec<String> {
        list.iter()
            .map(|i| {
                i["title"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        by(issues(&router, &project, "sort=freq").await),
        [
            "Bug4Error",
            "Bug3Error",
            "Bug2Error",
            "Bug1Error",
            "Bug0Error"
        ]
    );
    assert_eq!(
        by(issues(&router, &project, "sort=new").await),
        [
            "Bug4Error",
            "Bug3Error",
            "Bug2Error",
            "Bug1Error",
            "Bug0Error"
        ]
    );
    assert_eq!(
        by(issues(&router, &project, "environment=staging").await),
        ["Bug3Error", "Bug1Error"]
    );
    assert_eq!(
        by(issues(&router, &project, "query=environment:staging+bug1").await),
        ["Bug1Error"]
    );
    assert_eq!(
        by(issues(&router, &project, "level=warning").await),
        ["Bug4Error"]
    );
    assert_eq!(
        by(issues(&router, &project, "release=shop@2.0.0").await),
        ["Bug4Error"]
    );
    assert_eq!(
        by(issues(&router, &project, "query=100%25").await),
        ["Bug4Error"],
        "% is literal"
    );
    assert_eq!(
        by(issues(&router, &project, "query=1_0").await),
        Vec::<String>::new(),
        "_ is literal"
    );
    assert_eq!(
        by(issues(&router, &project, "query=BUG2ERROR").await),
        ["Bug2Error"],
        "case-insensitive"
    );

    // Pages of two by count, following the cursor of each Link header.
    let mut seen = Vec::new();
    let mut uri = format!("/api/0/projects/{}/issues/?sort=freq&limit=2", project.id);
    for _ in 0..5 {
        let answer = api(&router, &uri).await;
        seen.extend(by(answer.json().as_array().unwrap().clone()));
        let Some(link) = answer.headers.get(header::LINK) else {
            break;
        };
        let link = link.to_str().unwrap();
        let cursor = link
            .split("cursor=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches('"');
        uri = format!(
            "/api/0/projects/{}/issues/?sort=freq&limit=2&cursor={cursor}",
            project.id
        );
    }
    assert_eq!(
        seen,
        [
            "Bug4Error",
            "Bug3Error",
            "Bug2Error",
            "Bug1Error",
            "Bug0Error"
        ]
    );

    // Events of bug 4, in pages of two.
    let bug4 = issues(&router, &project, "level=warning").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = api(&router, &format!("/api/0/issues/{bug4}/events/?limit=2")).await;
    let link = first.headers[header::LINK].to_str().unwrap().to_owned();
    let cursor = link
        .split("cursor=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    let second = api(
        &router,
        &format!("/api/0/issues/{bug4}/events/?limit=2&cursor={cursor}"),
    )
    .await
    .json();
    let first = first.json();
    let stamps: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
        .map(|e| e["dateCreated"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(stamps, sorted, "newest first across pages");
    assert_eq!(stamps.len(), 4, "5 events: 2 + 2 on the first two pages");
    collector.shutdown().await;
}

#[tokio::test]
async fn the_issue_api_refuses_bad_input_with_a_reason() {
    let dir = TempDir::new().unwrap();
    let (collector, project) = open(&dir).await;
    let router = collector.router();
    send_ok(
        &router,
        post_envelope(&project, event_envelope(&exception(1, "E", "x", "f", "u"))),
    )
    .await;
    let issue = issues(&router, &project, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = project.id;
    let long = "a".repeat(201);
    for (uri, status, reason) in [
        (
            format!("/api/0/projects/{p}/issues/?limit=0"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            format!("/api/0/projects/{p}/issues/?limit=101"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            format!("/api/0/projects/{p}/issues/?sort=best"),
            StatusCode::BAD_REQUEST,
            "sort",
        ),
        (
            format!("/api/0/projects/{p}/issues/?status=open"),
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            format!("/api/0/projects/{p}/issues/?level=loud"),
            StatusCode::BAD_REQUEST,
            "level",
        ),
        (
            format!("/api/0/projects/{p}/issues/?cursor=x"),
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            format!("/api/0/projects/{p}/issues/?query={long}"),
            StatusCode::BAD_REQUEST,
            "query",
        ),
        (
            format!("/api/0/projects/{p}/issues/?environment={long}"),
            StatusCode::BAD_REQUEST,
            "environment",
        ),
        (
            "/api/0/projects/999/issues/".to_owned(),
            StatusCode::NOT_FOUND,
            "project",
        ),
        (
            "/api/0/issues/x/".to_owned(),
            StatusCode::BAD_REQUEST,
            "issue id",
        ),
        (
            "/api/0/issues/999999/".to_owned(),
            StatusCode::NOT_FOUND,
            "issue",
        ),
        (
            "/api/0/issues/999999/events/".to_owned(),
            StatusCode::NOT_FOUND,
            "issue",
        ),
        (
            format!("/api/0/issues/{issue}/events/?limit=500"),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            format!("/api/0/projects/{p}/events/nope/"),
            StatusCode::BAD_REQUEST,
            "uuid",
        ),
        (
            format!("/api/0/projects/{p}/events/{:032x}/", 2),
            StatusCode::NOT_FOUND,
            "event",
        ),
        (
            format!("/api/0/projects/999/events/{:032x}/", 1),
            StatusCode::NOT_FOUND,
            "project",
        ),
        (
            format!("/api/0/projects/{p}/item-counts/?days=0"),
            StatusCode::BAD_REQUEST,
            "days",
        ),
    ] {
        expect_error(&router, get(&uri), status, reason).await;
    }
    for (uri, body, status, reason) in [
        (
            format!("/api/0/issues/{issue}/"),
            json!({"status": "done"}),
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            format!("/api/0/issues/{issue}/"),
            json!({}),
            StatusCode::BAD_REQUEST,
            "status",
        ),
        (
            "/api/0/issues/999999/".to_owned(),
            json!({"status": "resolved"}),
            StatusCode::NOT_FOUND,
            "issue",
        ),
        (
            format!("/api/0/projects/{p}/issues/"),
            json!({"status": "resolved"}),
            StatusCode::BAD_REQUEST,
            "id=",
        ),
        (
            format!("/api/0/projects/{p}/issues/?id=abc"),
            json!({"status": "resolved"}),
            StatusCode::BAD_REQUEST,
            "number",
        ),
    ] {
        expect_error(&router, put(&uri, body), status, reason).await;
    }
    let not_json = Request::put(format!("/api/0/issues/{issue}/"))
        .body(Body::from("status=resolved"))
        .unwrap();
    expect_error(&router, not_json, StatusCode::BAD_REQUEST, "invalid json").await;
    // Nothing above changed the issue.
    let detail = api(&router, &format!("/api/0/issues/{issue}/"))
        .await
        .json();
    assert_eq!(detail["status"], "unresolved");
    collector.shutdown().await;
}

#[tokio::test]
async fn the_admin_token_guards_the_issue_api() {
    let dir = TempDir::new().unwrap();
    let mut config = config(&dir);
    config.admin_token = Some("t0ken".to_owned());
    let (collector, project) = open_with(config).await;
    let router = collector.router();
    // Ingest authenticates by project key, not the admin token.
    send_ok(
        &router,
        post_envelope(&project, event_envelope(&exception(1, "E", "x", "f", "u"))),
    )
    .await;
    let uris = [
        format!("/api/0/projects/{}/issues/", project.id),
        "/api/0/issues/1/".to_owned(),
        "/api/0/issues/1/events/".to_owned(),
        format!("/api/0/projects/{}/events/{:032x}/", project.id, 1),
        format!("/api/0/projects/{}/item-counts/", project.id),
    ];
    for uri in &uris {
        expect_error(&router, get(uri), StatusCode::UNAUTHORIZED, "admin token").await;
        let with = Request::get(uri)
            .header(header::AUTHORIZATION, "Bearer t0ken")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&router, with).await.status, StatusCode::OK, "{uri}");
    }
    expect_error(
        &router,
        put("/api/0/issues/1/", json!({"status": "resolved"})),
        StatusCode::UNAUTHORIZED,
        "admin token",
    )
    .await;
    collector.shutdown().await;
}
