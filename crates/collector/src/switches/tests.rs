//! Router tests of the switch API, the stream, the snapshot and OFREP: the whole
//! collector on a temporary SQLite file, called with `oneshot`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sightline_protocol::{AgentInfo, MetricBatch};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;
use tower::ServiceExt;

use crate::{Collector, Config, Project};

async fn open(dir: &TempDir, admin_token: Option<&str>) -> (Collector, Router, Project) {
    let collector = Collector::open(Config {
        data_dir: dir.path().to_owned(),
        admin_token: admin_token.map(str::to_owned),
        ..Config::default()
    })
    .await
    .expect("open collector");
    let project = collector.projects().await.expect("projects").remove(0);
    let router = collector.router();
    (collector, router, project)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} not json ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn request(method: &str, uri: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder().method(method).uri(uri);
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Sends and expects `status`; returns the JSON body (or `null` when empty).
async fn expect(router: &Router, req: Request<Body>, status: StatusCode) -> Value {
    let answer = call(router, req).await;
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    }
}

async fn create(router: &Router, body: Value) -> Value {
    expect(
        router,
        request("POST", "/api/0/switches/", Some(body)),
        StatusCode::CREATED,
    )
    .await
}

async fn patch(router: &Router, key: &str, body: Value, status: StatusCode) -> Value {
    expect(
        router,
        request("PATCH", &format!("/api/0/switches/{key}"), Some(body)),
        status,
    )
    .await
}

#[tokio::test]
async fn create_read_update_and_every_refusal() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, _) = open(&dir, None).await;

    let created = create(
        &router,
        json!({"key": "comments:new_editor", "label": "New editor", "owner": "web",
               "reason": "ship it dark"}),
    )
    .await;
    assert_eq!(created["state"], "off");
    assert_eq!(created["version"], 1);
    assert_eq!(created["label"], "New editor");

    let refusals = [
        // Same key again.
        (
            json!({"key": "comments:new_editor", "reason": "again"}),
            StatusCode::CONFLICT,
            "exists",
        ),
        (
            json!({"key": "Bad Key", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "key",
        ),
        (json!({"key": "a"}), StatusCode::BAD_REQUEST, "reason"),
        (
            json!({"key": "a", "reason": "  "}),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (
            json!({"key": "stream", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "reserved",
        ),
        (
            json!({"key": "a", "reason": "x", "state": "inherit"}),
            StatusCode::BAD_REQUEST,
            "inherit",
        ),
        (
            json!({"key": "a", "reason": "x", "state": "selective",
                   "conditions": [{"kind": "ip", "cidrs": ["10.0.0.0/40"]}]}),
            StatusCode::BAD_REQUEST,
            "CIDR",
        ),
        (
            json!({"key": "a", "reason": "x", "colour": 1}),
            StatusCode::BAD_REQUEST,
            "colour",
        ),
    ];
    for (body, status, reason) in refusals {
        let error = expect(
            &router,
            request("POST", "/api/0/switches", Some(body.clone())),
            status,
        )
        .await;
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{body}: {text}");
    }

    let read = expect(
        &router,
        request("GET", "/api/0/switches/comments:new_editor", None),
        StatusCode::OK,
    )
    .await;
    assert_eq!(read, created);
    expect(
        &router,
        request("GET", "/api/0/switches/nope", None),
        StatusCode::NOT_FOUND,
    )
    .await;

    patch(
        &router,
        "comments:new_editor",
        json!({"state": "on"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    patch(
        &router,
        "nope",
        json!({"state": "on", "reason": "x"}),
        StatusCode::NOT_FOUND,
    )
    .await;
    patch(
        &router,
        "comments:new_editor",
        json!({"state": "on", "reason": "x", "expected_version": 7}),
        StatusCode::CONFLICT,
    )
    .await;
    patch(
        &router,
        "comments:new_editor",
        json!({"state": "sideways", "reason": "x"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let on = patch(
        &router,
        "comments:new_editor",
        json!({"state": "on", "reason": "rollout done", "expected_version": 1}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (on["state"].as_str(), on["version"].as_u64()),
        (Some("on"), Some(2))
    );
    assert_eq!(on["label"], "New editor", "unnamed fields stay");
    // The same state again changes nothing and writes no version.
    let same = patch(
        &router,
        "comments:new_editor",
        json!({"state": "on", "reason": "again"}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(same["version"], 2);

    create(
        &router,
        json!({"key": "comments", "state": "on", "reason": "parent"}),
    )
    .await;
    let list = expect(
        &router,
        request("GET", "/api/0/switches/", None),
        StatusCode::OK,
    )
    .await;
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["comments", "comments:new_editor"]);
}

#[tokio::test]
async fn every_change_is_audited_and_any_version_can_be_restored() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, _) = open(&dir, None).await;
    create(&router, json!({"key": "search:v2", "reason": "r1"})).await;
    patch(
        &router,
        "search:v2",
        json!({"state": "selective", "reason": "r2",
               "conditions": [{"kind": "percentage", "percent": 10}]}),
        StatusCode::OK,
    )
    .await;
    patch(
        &router,
        "search:v2",
        json!({"state": "on", "reason": "r3"}),
        StatusCode::OK,
    )
    .await;
    create(&router, json!({"key": "other", "reason": "r4"})).await;

    let history = expect(
        &router,
        request("GET", "/api/0/switches/search:v2/history", None),
        StatusCode::OK,
    )
    .await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0]["version"], 3);
    assert_eq!(history[0]["reason"], "r3");
    assert_eq!(history[0]["actor"], "admin");
    assert_eq!(history[0]["action"], "update");
    assert_eq!(history[0]["old"]["state"], "selective");
    assert_eq!(history[0]["new"]["state"], "on");
    assert_eq!(history[2]["action"], "create");
    assert_eq!(history[2]["old"], Value::Null);
    assert!(history[0]["at"].as_i64().unwrap() > 1_600_000_000);

    // Back to version 2: a new version 4 with version 2's definition.
    expect(
        &router,
        request(
            "POST",
            "/api/0/switches/search:v2/revert",
            Some(json!({"version": 2})),
        ),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect(
        &router,
        request(
            "POST",
            "/api/0/switches/search:v2/revert",
            Some(json!({"version": 9, "reason": "x"})),
        ),
        StatusCode::NOT_FOUND,
    )
    .await;
    let reverted = expect(
        &router,
        request(
            "POST",
            "/api/0/switches/search:v2/revert",
            Some(json!({"version": 2, "reason": "p99 regressed"})),
        ),
        StatusCode::OK,
    )
    .await;
    assert_eq!(reverted["version"], 4);
    assert_eq!(reverted["state"], "selective");
    assert_eq!(reverted["conditions"][0]["percent"], 10.0);
    expect(
        &router,
        request(
            "POST",
            "/api/0/switches/search:v2/revert",
            Some(json!({"version": 1, "reason": "x", "expected_version": 3})),
        ),
        StatusCode::CONFLICT,
    )
    .await;

    let audit = expect(
        &router,
        request("GET", "/api/0/audit/", None),
        StatusCode::OK,
    )
    .await;
    let audit = audit.as_array().unwrap();
    let seen: Vec<(&str, &str)> = audit
        .iter()
        .map(|c| (c["key"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("search:v2", "p99 regressed"),
            ("other", "r4"),
            ("search:v2", "r3"),
            ("search:v2", "r2"),
            ("search:v2", "r1"),
        ]
    );
    assert_eq!(audit[0]["action"], "revert");
    let ids: Vec<u64> = audit.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let page = expect(
        &router,
        request(
            "GET",
            &format!("/api/0/audit/?limit=2&before={}", ids[1]),
            None,
        ),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["id"].as_u64(), Some(ids[2]));

    // a time window (what the charts' flip markers read): move r1, r2, r3 an hour back,
    // a second apart
    let pool = rw_pool(&dir).await;
    let hour_ago = crate::query::unix_now() - 3_600;
    for (second, id) in ids[2..].iter().rev().enumerate() {
        sqlx::query("UPDATE switch_changes SET at = ?1 WHERE id = ?2")
            .bind(hour_ago + second as i64)
            .bind(*id as i64)
            .execute(&pool)
            .await
            .unwrap();
    }
    let reasons = |page: Value| -> Vec<String> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|c| c["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, expected) in [
        (
            format!("since={}&until={}", hour_ago + 1, hour_ago + 3),
            &["r3", "r2"][..],
        ),
        (format!("until={}", hour_ago + 1), &["r1"][..]),
        (
            format!("since={}", hour_ago + 3),
            &["p99 regressed", "r4"][..],
        ),
        (
            format!("since={hour_ago}&limit=1&before={}", ids[3]),
            &["r1"][..],
        ),
    ] {
        let page = expect(
            &router,
            request("GET", &format!("/api/0/audit/?{query}"), None),
            StatusCode::OK,
        )
        .await;
        assert_eq!(reasons(page), expected, "{query}");
    }
    expect(
        &router,
        request("GET", "/api/0/audit/?limit=0", None),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect(
        &router,
        request("GET", "/api/0/switches/nope/history", None),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn the_snapshot_answers_304_until_something_changes() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, _) = open(&dir, None).await;
    let first = call(&router, request("GET", "/api/0/switches/snapshot", None)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json(), json!({"version": 0, "switches": []}));
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    let conditional = |etag: &str| {
        Request::get("/api/0/switches/snapshot")
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap()
    };
    let unchanged = call(&router, conditional(&etag)).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());

    create(&router, json!({"key": "a", "state": "on", "reason": "x"})).await;
    let changed = call(&router, conditional(&etag)).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.headers[header::ETAG].to_str().unwrap(), etag);
    let snapshot = changed.json();
    assert_eq!(snapshot["version"], 1);
    assert_eq!(snapshot["switches"][0]["key"], "a");
    assert_eq!(snapshot["switches"][0]["state"], "on");
}

/// Reads SSE frames from a streaming body until one full event (`\n\n`) is in.
struct EventReader {
    body: Body,
    buffer: String,
}

impl EventReader {
    /// The next event's `(event, id, data)`, skipping comments.
    async fn next(&mut self) -> Option<(String, String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(|v| v.trim_start().to_owned())
                };
                let Some(data) = field("data") else {
                    continue; // a keep-alive comment
                };
                return Some((
                    field("event").unwrap_or_default(),
                    field("id").unwrap_or_default(),
                    serde_json::from_str(&data).unwrap(),
                ));
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event within 5 s")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
}

async fn open_stream(router: &Router, request: Request<Body>) -> EventReader {
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    EventReader {
        body: response.into_body(),
        buffer: String::new(),
    }
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_then_each_change_and_ends_on_shutdown() {
    let dir = TempDir::new().unwrap();
    let (collector, router, _) = open(&dir, None).await;
    create(&router, json!({"key": "a", "state": "on", "reason": "x"})).await;

    let mut events = open_stream(&router, request("GET", "/api/0/switches/stream", None)).await;
    let (kind, id, data) = events.next().await.unwrap();
    assert_eq!((kind.as_str(), id.as_str()), ("snapshot", "1"));
    assert_eq!(data["switches"][0]["key"], "a");

    patch(
        &router,
        "a",
        json!({"state": "off", "reason": "incident"}),
        StatusCode::OK,
    )
    .await;
    create(&router, json!({"key": "b", "reason": "y"})).await;
    let (kind, id, data) = events.next().await.unwrap();
    assert_eq!((kind.as_str(), id.as_str()), ("change", "2"));
    assert_eq!(data["previous"], 1);
    assert_eq!(data["switch"]["key"], "a");
    assert_eq!(data["switch"]["state"], "off");
    let (_, id, data) = events.next().await.unwrap();
    assert_eq!((id.as_str(), data["previous"].as_u64()), ("3", Some(2)));
    assert_eq!(data["switch"]["key"], "b");

    // A client that connects now starts from the latest snapshot.
    let mut late = open_stream(&router, request("GET", "/api/0/switches/stream/", None)).await;
    let (kind, id, data) = late.next().await.unwrap();
    assert_eq!((kind.as_str(), id.as_str()), ("snapshot", "3"));
    assert_eq!(data["switches"].as_array().unwrap().len(), 2);

    collector.close_streams();
    assert!(events.next().await.is_none(), "the stream ends on shutdown");
    assert!(late.next().await.is_none());
}

#[tokio::test]
async fn a_lagging_stream_gets_a_fresh_snapshot() {
    let dir = TempDir::new().unwrap();
    let (collector, router, _) = open(&dir, None).await;
    let mut events = open_stream(&router, request("GET", "/api/0/switches/stream", None)).await;
    assert_eq!(events.next().await.unwrap().0, "snapshot");
    // More changes than the broadcast keeps, while the client reads nothing.
    let switches = collector.state.switches.clone();
    for i in 0..super::BROADCAST_CAPACITY + 10 {
        let key = format!("s{i}");
        switches
            .change(
                &key,
                super::Action::Create,
                super::ChangeMeta {
                    actor: "test".into(),
                    reason: "load".into(),
                    expected_version: None,
                },
                |_| {
                    Ok(sightline_protocol::Switch {
                        key: key.clone(),
                        label: String::new(),
                        description: String::new(),
                        owner: String::new(),
                        default: false,
                        state: sightline_protocol::SwitchState::On,
                        conditions: vec![],
                        exclusions: vec![],
                    })
                },
            )
            .await
            .unwrap();
    }
    // Frames already in the body's buffer may come first; a snapshot follows them.
    let total = (super::BROADCAST_CAPACITY + 10) as u64;
    loop {
        let (kind, id, data) = events.next().await.unwrap();
        if kind == "snapshot" {
            assert_eq!(id, total.to_string());
            assert_eq!(data["switches"].as_array().unwrap().len() as u64, total);
            break;
        }
        assert_eq!(kind, "change");
    }
}

#[tokio::test]
async fn apps_read_with_their_project_key_and_only_admins_change() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, project) = open(&dir, Some("s3cret")).await;
    let admin = |method: &str, uri: &str, body: Option<Value>| {
        let mut req = request(method, uri, body);
        req.headers_mut()
            .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        req
    };
    expect(
        &router,
        request(
            "POST",
            "/api/0/switches/",
            Some(json!({"key": "a", "reason": "x"})),
        ),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect(
        &router,
        admin(
            "POST",
            "/api/0/switches/",
            Some(json!({"key": "a", "state": "on", "reason": "x"})),
        ),
        StatusCode::CREATED,
    )
    .await;

    let with_key = |uri: &str, scheme: &str, key: &str| {
        let mut req = request("GET", uri, None);
        let value = match scheme {
            "bearer" => format!("Bearer {key}"),
            _ => format!("Sentry sentry_key={key}"),
        };
        let name = if scheme == "bearer" {
            "authorization"
        } else {
            "x-sentry-auth"
        };
        req.headers_mut().insert(name, value.parse().unwrap());
        req
    };
    for scheme in ["bearer", "sentry"] {
        expect(
            &router,
            with_key("/api/0/switches/snapshot", scheme, &project.public_key),
            StatusCode::OK,
        )
        .await;
        expect(
            &router,
            with_key("/api/0/switches/snapshot", scheme, "wrong"),
            StatusCode::UNAUTHORIZED,
        )
        .await;
        // A project key reads the live set, never the admin API.
        expect(
            &router,
            with_key("/api/0/switches/", scheme, &project.public_key),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    expect(
        &router,
        request("GET", "/api/0/switches/snapshot", None),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    expect(
        &router,
        admin("GET", "/api/0/switches/snapshot", None),
        StatusCode::OK,
    )
    .await;
    let mut events = open_stream(
        &router,
        with_key("/api/0/switches/stream", "sentry", &project.public_key),
    )
    .await;
    assert_eq!(events.next().await.unwrap().0, "snapshot");

    let mut ofrep = request("POST", "/ofrep/v1/evaluate/flags/a", Some(json!({})));
    expect(&router, ofrep, StatusCode::UNAUTHORIZED).await;
    ofrep = request("POST", "/ofrep/v1/evaluate/flags/a", Some(json!({})));
    ofrep.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", project.public_key).parse().unwrap(),
    );
    let answer = expect(&router, ofrep, StatusCode::OK).await;
    assert_eq!(answer["value"], true);
}

#[tokio::test]
async fn ofrep_evaluates_single_and_bulk() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, _) = open(&dir, None).await;
    create(&router, json!({"key": "on", "state": "on", "reason": "x"})).await;
    create(&router, json!({"key": "off", "reason": "x"})).await;
    create(
        &router,
        json!({"key": "beta", "state": "selective", "reason": "x",
               "conditions": [{"kind": "users", "ids": ["alice"]},
                              {"kind": "attribute", "name": "plan", "op": "in", "values": ["pro"]}],
               "exclusions": [{"kind": "ip", "cidrs": ["192.0.2.0/24"]}]}),
    )
    .await;
    create(
        &router,
        json!({"key": "beta:child", "state": "inherit", "reason": "x"}),
    )
    .await;
    let eval = |key: &str, context: Value| {
        request(
            "POST",
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            Some(json!({ "context": context })),
        )
    };
    let on = expect(&router, eval("on", json!({})), StatusCode::OK).await;
    assert_eq!(
        on,
        json!({"key": "on", "value": true, "reason": "STATIC", "variant": "on",
               "metadata": {"state": "on", "version": 4}})
    );
    let off = expect(&router, eval("off", json!({})), StatusCode::OK).await;
    assert_eq!(
        (off["value"].as_bool(), off["reason"].as_str()),
        (Some(false), Some("DISABLED"))
    );
    for (context, value) in [
        (json!({"targetingKey": "alice"}), true),
        (json!({"targetingKey": "bob"}), false),
        (json!({"targetingKey": "bob", "plan": "pro"}), true),
        (json!({"targetingKey": "alice", "ip": "192.0.2.7"}), false),
    ] {
        for key in ["beta", "beta:child"] {
            let answer = expect(&router, eval(key, context.clone()), StatusCode::OK).await;
            assert_eq!(answer["value"], value, "{key} {context}");
            assert_eq!(answer["variant"], if value { "on" } else { "off" });
        }
    }

    let missing = expect(&router, eval("nope", json!({})), StatusCode::NOT_FOUND).await;
    assert_eq!(missing["errorCode"], "FLAG_NOT_FOUND");
    assert_eq!(missing["key"], "nope");
    let bad = Request::post("/ofrep/v1/evaluate/flags/on")
        .body(Body::from("{not json"))
        .unwrap();
    let bad = expect(&router, bad, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        (bad["errorCode"].as_str(), bad["key"].as_str()),
        (Some("PARSE_ERROR"), Some("on"))
    );
    let bad = expect(
        &router,
        eval("on", json!({"ip": "nowhere"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(bad["errorCode"], "INVALID_CONTEXT");

    let bulk = |etag: Option<&str>| {
        let mut req = request(
            "POST",
            "/ofrep/v1/evaluate/flags",
            Some(json!({"context": {"targetingKey": "alice"}})),
        );
        if let Some(etag) = etag {
            req.headers_mut()
                .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
        }
        req
    };
    let all = call(&router, bulk(None)).await;
    assert_eq!(all.status, StatusCode::OK);
    let flags = all.json()["flags"].as_array().unwrap().clone();
    let values: Vec<(&str, bool)> = flags
        .iter()
        .map(|f| (f["key"].as_str().unwrap(), f["value"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        values,
        [
            ("beta", true),
            ("beta:child", true),
            ("off", false),
            ("on", true)
        ]
    );
    let etag = all.headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(
        call(&router, bulk(Some(&etag))).await.status,
        StatusCode::NOT_MODIFIED
    );
    // Another context is another answer, so another tag.
    let other = Request::post("/ofrep/v1/evaluate/flags")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::from(r#"{"context": {"targetingKey": "bob"}}"#))
        .unwrap();
    assert_eq!(call(&router, other).await.status, StatusCode::OK);
    patch(
        &router,
        "on",
        json!({"state": "off", "reason": "x"}),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        call(&router, bulk(Some(&etag))).await.status,
        StatusCode::OK
    );
    let bad = Request::post("/ofrep/v1/evaluate/flags")
        .body(Body::from(r#"{"context": []}"#))
        .unwrap();
    let bad = expect(&router, bad, StatusCode::BAD_REQUEST).await;
    assert_eq!(bad["errorCode"], "INVALID_CONTEXT");

    let config = expect(
        &router,
        request("GET", "/ofrep/v1/configuration", None),
        StatusCode::OK,
    )
    .await;
    assert_eq!(config["name"], "sightline");
}

fn batch(evaluations: &[(&str, u64)]) -> MetricBatch {
    MetricBatch {
        agent: AgentInfo {
            service: "svc".into(),
            instance: "i-1".into(),
            sdk: "test".into(),
            environment: None,
            release: None,
        },
        sent_at_ms: 0,
        dropped_windows: 0,
        windows: vec![],
        insight: Default::default(),
        switch_evaluations: evaluations
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect(),
    }
}

async fn rw_pool(dir: &TempDir) -> SqlitePool {
    SqlitePool::connect_with(SqliteConnectOptions::new().filename(dir.path().join("sightline.db")))
        .await
        .unwrap()
}

#[tokio::test]
async fn agents_report_checks_and_stale_switches_are_hinted() {
    let dir = TempDir::new().unwrap();
    let (_collector, router, project) = open(&dir, None).await;
    for (key, state) in [
        ("used", "on"),
        ("unused", "off"),
        ("done", "on"),
        ("fresh", "off"),
    ] {
        create(&router, json!({"key": key, "state": state, "reason": "x"})).await;
    }
    let post = |body: &MetricBatch| {
        Request::post(format!("/api/{}/metrics", project.id))
            .header(
                "x-sentry-auth",
                format!("Sentry sentry_key={}", project.public_key),
            )
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    };
    for _ in 0..2 {
        expect(
            &router,
            post(&batch(&[("used", 5), ("done", 1), ("no-such-switch", 3)])),
            StatusCode::OK,
        )
        .await;
    }
    let pool = rw_pool(&dir).await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, count FROM switch_evaluations ORDER BY key")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, [("done".to_owned(), 2), ("used".to_owned(), 10)]);

    // Everything but `fresh` was created 40 days ago; `done` has been on since then and
    // `unused` was never checked.
    sqlx::query(
        "UPDATE switches SET created_at = created_at - 40 * 86400,
                             state_since = state_since - 40 * 86400
         WHERE key <> 'fresh'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stale = expect(
        &router,
        request("GET", "/api/0/switches/stale?days=30", None),
        StatusCode::OK,
    )
    .await;
    let hints: Vec<(&str, Vec<&str>)> = stale
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap(),
                h["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        hints,
        [
            ("done", vec!["fully_on"]),
            ("unused", vec!["not_evaluated"]),
            ("used", vec!["fully_on"]),
        ]
    );
    expect(
        &router,
        request("GET", "/api/0/switches/stale?days=0", None),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn switches_survive_a_restart() {
    let dir = TempDir::new().unwrap();
    let (collector, router, _) = open(&dir, None).await;
    create(&router, json!({"key": "a", "state": "on", "reason": "x"})).await;
    patch(
        &router,
        "a",
        json!({"state": "off", "reason": "y"}),
        StatusCode::OK,
    )
    .await;
    collector.shutdown().await;
    let (_collector, router, _) = open(&dir, None).await;
    let snapshot = expect(
        &router,
        request("GET", "/api/0/switches/snapshot", None),
        StatusCode::OK,
    )
    .await;
    assert_eq!(snapshot["version"], 2);
    assert_eq!(snapshot["switches"][0]["state"], "off");
}
