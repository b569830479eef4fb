//! Snapshot tests over real SDK payloads: the envelopes under `tests/fixtures/sentry/`,
//! as the Python (written by the official `sentry-sdk`, see `tests/sdk/python_fixtures.py`),
//! JavaScript and Rust SDKs send them. Each snapshot shows what ingest makes of every
//! item: the normalised issue fields of events, their grouping and what was scrubbed.
//! Review a changed snapshot as a change of behaviour users will see.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::envelope::{self, counted_type};
use super::event;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sentry")
}

fn load(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.envelope"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Paths (`a.b.0.c`) whose value is the scrubber's `[Filtered]`.
fn filtered_paths(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains(sightline_protocol::scrub::FILTERED) => {
            out.push(path.to_owned())
        }
        Value::Object(map) => {
            for (k, v) in map {
                filtered_paths(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                filtered_paths(v, &format!("{path}.{i}"), out);
            }
        }
        _ => {}
    }
}

/// What ingest makes of one envelope.
fn normalise(name: &str) -> Value {
    let body = load(name);
    let parsed = envelope::parse(&body).expect("fixture envelopes are valid");
    let items: Vec<Value> = parsed
        .items
        .iter()
        .map(|item| {
            let mut out = json!({
                "type": item.ty,
                "counted_as": counted_type(&item.ty),
                "bytes": item.payload.len(),
            });
            if item.ty == "event" {
                let e = event::read(item.payload, "00000000000000000000000000000000", 0.0)
                    .expect("valid event");
                let mut filtered = Vec::new();
                let payload: Value = serde_json::from_str(&e.payload).expect("stored json");
                filtered_paths(&payload, "", &mut filtered);
                out["event"] = json!({
                    "event_id": e.event_id,
                    "timestamp": e.timestamp,
                    "level": e.level,
                    "title": e.title,
                    "culprit": e.culprit,
                    "platform": e.platform,
                    "environment": e.environment,
                    "release": e.release,
                    "user": e.user,
                    "tags": e.tags,
                    "grouping": e.grouping,
                    "filtered": filtered,
                });
            }
            out
        })
        .collect();
    json!({
        "dsn_key": envelope::dsn_public_key(&parsed.headers),
        "header_event_id": parsed.headers.get("event_id"),
        "items": items,
    })
}

macro_rules! fixture {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                insta::assert_json_snapshot!(stringify!($name), normalise(stringify!($name)));
            }
        )*
    };
}

fixture!(
    python_exception_chain,
    python_message,
    python_transaction,
    python_session,
    python_event_with_attachment,
    js_error,
    js_transaction,
    js_session,
    js_client_report,
    rust_panic,
    rust_message,
);

#[test]
fn every_fixture_has_a_snapshot_test() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".envelope").map(str::to_owned))
        .collect();
    names.sort();
    let source = include_str!("fixtures.rs");
    for name in names {
        assert!(
            source.contains(&format!("    {name},")),
            "{name}.envelope has no test"
        );
    }
}

#[test]
fn the_same_bug_from_another_request_groups_with_the_fixture() {
    // The Python exception chain again, as a later request would send it: other order
    // number, amount, line numbers, timestamps and event id. Same issue.
    let body = load("python_exception_chain");
    let parsed = envelope::parse(&body).expect("valid");
    let original = &parsed
        .items
        .iter()
        .find(|i| i.ty == "event")
        .expect("event")
        .payload;
    let mut later: Value = serde_json::from_slice(original).expect("json");
    later["event_id"] = json!("ffffffffffffffffffffffffffffffff");
    for exc in later["exception"]["values"].as_array_mut().expect("chain") {
        if let Some(value) = exc["value"].as_str() {
            exc["value"] = json!(value.replace("981", "1207").replace("12.50", "99.90"));
        }
        for frame in exc["stacktrace"]["frames"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(line) = frame["lineno"].as_u64() {
                frame["lineno"] = json!(line + 17);
            }
        }
    }
    let a = event::read(original, "0", 0.0).expect("valid");
    let b = event::read(later.to_string().as_bytes(), "0", 0.0).expect("valid");
    assert_eq!(a.grouping.hash, b.grouping.hash);
    assert_ne!(a.title, b.title, "the titles differ, the issue does not");
}
