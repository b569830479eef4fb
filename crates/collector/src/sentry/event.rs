//! Reading a Sentry event: the fields an issue is built from, normalised and bounded,
//! whatever shape the SDK sent (strings or objects for `message`, maps or pair lists for
//! tags and headers, RFC 3339 strings or unix numbers for timestamps).

use std::borrow::Cow;

use sightline_protocol::json::Value;
use sightline_protocol::scrub;

use super::grouping::{self, Grouping};
use crate::time::days_from_civil;

/// Largest event payload accepted, as Sentry's.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Tag key and value bounds, as Sentry's.
pub const MAX_TAG_KEY: usize = 32;
pub const MAX_TAG_VALUE: usize = 200;
/// Most tags kept per event.
pub const MAX_TAGS: usize = 100;
const MAX_TITLE: usize = 256;

/// An event ready to store.
#[derive(Debug, Clone)]
pub struct Event {
    /// 32 lowercase hex characters.
    pub event_id: String,
    /// Unix seconds.
    pub timestamp: f64,
    pub level: &'static str,
    pub title: String,
    pub culprit: String,
    pub platform: String,
    pub environment: Option<String>,
    pub release: Option<String>,
    /// `id:…`, `email:…`, `username:…` or `ip:…` — whichever the SDK sent first.
    pub user: Option<String>,
    pub tags: Vec<(String, String)>,
    pub grouping: Grouping,
    /// The whole event after scrubbing, as JSON text to store and serve back: the text
    /// as it came when nothing needed scrubbing and its `event_id` was already in
    /// normal form.
    pub payload: String,
}

/// An event that cannot be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// Larger than [`MAX_EVENT_BYTES`].
    #[error("event exceeds {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    /// Not a JSON object.
    #[error("event is not a json object")]
    NotAnObject,
    /// `event_id` present but not a UUID.
    #[error("event_id is not a uuid")]
    BadEventId,
}

/// Reads, scrubs and groups one event payload. `fallback_id` is used when the event has
/// no `event_id` (the envelope header's, or a fresh one).
///
/// The event is scrubbed as text ([`scrub::scrub_json`]) and read through a borrowing
/// tree ([`Value`]); the result is what parsing it into a `serde_json::Value`, scrubbing
/// that ([`scrub::scrub_event`]) and setting its `event_id` would give.
pub fn read(payload: &[u8], fallback_id: &str, now: f64) -> Result<Event, EventError> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge);
    }
    // Text that is not UTF-8 is not JSON either (serde_json rejects it in strings, and
    // anywhere else it is a syntax error).
    let text = std::str::from_utf8(payload).map_err(|_| EventError::NotAnObject)?;
    let raw = Value::parse(text).map_err(|_| EventError::NotAnObject)?;
    if !raw.is_object() {
        return Err(EventError::NotAnObject);
    }
    let event_id = match raw.get("event_id") {
        None | Some(Value::Null) => fallback_id.to_owned(),
        Some(Value::String(id)) => normalize_uuid(id).ok_or(EventError::BadEventId)?,
        Some(_) => return Err(EventError::BadEventId),
    };
    // The tree says whether anything needs scrubbing (rarely): only then is the text
    // walked again to scrub it.
    let scrubbed = if scrub::needs_scrubbing(&raw) {
        scrub::scrub_json(text).ok_or(EventError::NotAnObject)?
    } else {
        Cow::Borrowed(text)
    };
    let reparsed;
    let value = match &scrubbed {
        Cow::Borrowed(_) => &raw,
        Cow::Owned(clean) => {
            reparsed = Value::parse(clean).map_err(|_| EventError::NotAnObject)?;
            &reparsed
        }
    };
    let grouping = grouping::group(value);
    let timestamp = value
        .get("timestamp")
        .and_then(parse_timestamp)
        .unwrap_or(now);
    let text_field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| truncate(s, 200))
    };
    let level = level(value.get("level").and_then(Value::as_str));
    let payload = if value.get("event_id").and_then(Value::as_str) == Some(event_id.as_str()) {
        // A copy in either case (the scrubbed text is rare and small next to the rest).
        scrubbed.as_ref().to_owned()
    } else {
        with_event_id(&scrubbed, &event_id)?
    };
    Ok(Event {
        timestamp,
        level,
        title: title(value),
        culprit: culprit(value),
        platform: text_field("platform").unwrap_or_else(|| "other".to_owned()),
        environment: text_field("environment"),
        release: text_field("release"),
        user: user(value),
        tags: tags(value, level),
        grouping,
        payload,
        event_id,
    })
}

/// The event text with its `event_id` set (rare: SDKs send ids in normal form).
fn with_event_id(text: &str, event_id: &str) -> Result<String, EventError> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|_| EventError::NotAnObject)?;
    let object = value.as_object_mut().ok_or(EventError::NotAnObject)?;
    object.insert(
        "event_id".to_owned(),
        serde_json::Value::String(event_id.to_owned()),
    );
    serde_json::to_string(&value).map_err(|_| EventError::NotAnObject)
}

/// `550e8400-e29b-…` or `550e8400e29b…` → 32 lowercase hex characters.
pub fn normalize_uuid(id: &str) -> Option<String> {
    let hex: String = id
        .chars()
        .filter(|&c| c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn level(level: Option<&str>) -> &'static str {
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("fatal" | "critical") => "fatal",
        Some("warning" | "warn") => "warning",
        Some("info" | "log") => "info",
        Some("debug" | "trace") => "debug",
        _ => "error",
    }
}

/// `Type: value` of the raised (last) exception, else the message's first line.
fn title(event: &Value) -> String {
    let exceptions = grouping::exceptions(event);
    if let Some(exc) = exceptions.last() {
        let ty = exc.get("type").and_then(Value::as_str).unwrap_or("Error");
        let value = exc
            .get("value")
            .and_then(Value::as_str)
            .and_then(|v| v.lines().next())
            .unwrap_or("");
        let title = if value.is_empty() {
            ty.to_owned()
        } else {
            format!("{ty}: {value}")
        };
        return truncate(&title, MAX_TITLE);
    }
    let formatted = event
        .get("logentry")
        .or_else(|| event.get("message").filter(|m| m.is_object()))
        .and_then(|e| e.get("formatted").or_else(|| e.get("message")))
        .and_then(Value::as_str)
        .or_else(|| event.get("message").and_then(Value::as_str));
    match formatted.and_then(|m| m.lines().find(|l| !l.trim().is_empty())) {
        Some(line) => truncate(line.trim(), MAX_TITLE),
        None => "<unlabeled event>".to_owned(),
    }
}

/// Where it happened: the SDK's `culprit`, else the transaction, else the crashing
/// in-app frame.
fn culprit(event: &Value) -> String {
    for key in ["culprit", "transaction"] {
        if let Some(c) = event
            .get(key)
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            return truncate(c, 200);
        }
    }
    let exceptions = grouping::exceptions(event);
    let frames: Vec<&Value> = exceptions
        .last()
        .and_then(|e| e.get("stacktrace"))
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array)
        .map(|f| f.iter().collect())
        .unwrap_or_default();
    // Frames are ordered caller first: the crash site is the last in-app frame.
    let frame = frames
        .iter()
        .rev()
        .find(|f| f.get("in_app") == Some(&Value::Bool(true)))
        .or_else(|| frames.last());
    let Some(frame) = frame else {
        return String::new();
    };
    let location = ["module", "filename"]
        .iter()
        .find_map(|k| {
            frame
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("?");
    // Without cache-busting query strings and build-specific symbol hashes: the culprit
    // names a place in the code, the same in every build.
    let location = location.split(['?', '#']).next().unwrap_or(location);
    match frame.get("function").and_then(Value::as_str) {
        Some(function) => {
            let function = grouping::normalize_function(function);
            truncate(&format!("{function} in {location}"), 200)
        }
        None => truncate(location, 200),
    }
}

fn user(event: &Value) -> Option<String> {
    let user = event.get("user")?;
    for (key, prefix) in [
        ("id", "id"),
        ("email", "email"),
        ("username", "username"),
        ("ip_address", "ip"),
    ] {
        match user.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {
                return Some(format!("{prefix}:{}", truncate(s, 128)));
            }
            Some(Value::Number(n)) => return Some(format!("{prefix}:{n}")),
            _ => {}
        }
    }
    None
}

/// Tags from a map or a list of pairs, plus level/environment/release as Sentry shows
/// them, bounded in count and length.
fn tags(event: &Value, level: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &Value| {
        let k = k.trim();
        if matches!(v, Value::Null)
            || k.is_empty()
            || k.len() > MAX_TAG_KEY
            || out.len() >= MAX_TAGS
            || out.iter().any(|(ek, _)| ek == k)
        {
            return;
        }
        let v = match v {
            Value::String(s) => truncate(s, MAX_TAG_VALUE),
            other => truncate(&other.to_string(), MAX_TAG_VALUE),
        };
        out.push((k.to_owned(), v));
    };
    match event.get("tags") {
        // Sorted and one per key, as a `serde_json::Map` iterates: which tags make the
        // cut of [`MAX_TAGS`] must not depend on how the SDK ordered them.
        Some(map @ Value::Object(_)) => map
            .members()
            .unwrap_or_default()
            .into_iter()
            .for_each(|(k, v)| push(k, v)),
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                if let Some([Value::String(k), v]) = pair.as_array() {
                    push(k, v);
                }
            }
        }
        _ => {}
    }
    for key in ["environment", "release", "server_name", "transaction"] {
        if let Some(v) = event.get(key) {
            push(key, v);
        }
    }
    push("level", &Value::String(Cow::Borrowed(level)));
    out.sort();
    out
}

/// Unix seconds from a number or an RFC 3339 string.
pub fn parse_timestamp(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|t| t.is_finite() && *t > 0.0),
        Value::String(s) => s.parse::<f64>().ok().or_else(|| parse_rfc3339(s)),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]`; no zone means UTC, as Sentry reads it.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits.min(9)]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = rest[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (hm[..2].parse::<i64>().ok()? * 3600 + hm[2..].parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn read_json(v: serde_json::Value) -> Event {
        read(
            v.to_string().as_bytes(),
            "0123456789abcdef0123456789abcdef",
            1_000.0,
        )
        .expect("valid event")
    }

    #[test]
    fn exception_event() {
        let e = read_json(json!({
            "event_id": "9EC79C33-EC99-42AB-8353-589FCB2E04DC",
            "timestamp": "2024-03-01T12:00:00.250Z",
            "level": "warn",
            "platform": "python",
            "environment": "production",
            "user": {"id": 42, "email": "a@b.c"},
            "tags": [["browser", "Firefox"], ["a", 1]],
            "exception": {"values": [
                {"type": "KeyError", "value": "'x'"},
                {"type": "ValueError", "value": "bad input 7\nmore", "stacktrace": {"frames": [
                    {"module": "app.views", "function": "show", "in_app": true},
                    {"module": "lib", "function": "parse", "in_app": false}
                ]}}
            ]}
        }));
        assert_eq!(e.event_id, "9ec79c33ec9942ab8353589fcb2e04dc");
        assert_eq!(e.timestamp, 1_709_294_400.25);
        assert_eq!(e.level, "warning");
        assert_eq!(e.title, "ValueError: bad input 7");
        assert_eq!(e.culprit, "show in app.views");
        assert_eq!(e.user.as_deref(), Some("id:42"));
        assert_eq!(
            e.tags,
            vec![
                ("a".into(), "1".into()),
                ("browser".into(), "Firefox".into()),
                ("environment".into(), "production".into()),
                ("level".into(), "warning".into())
            ]
        );
        let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(payload["event_id"], "9ec79c33ec9942ab8353589fcb2e04dc");
    }

    #[test]
    fn message_event_and_defaults() {
        let e = read_json(
            json!({"message": {"formatted": "disk full on /var"}, "timestamp": 1700000000.5}),
        );
        assert_eq!(e.title, "disk full on /var");
        assert_eq!(e.level, "error");
        assert_eq!(e.timestamp, 1_700_000_000.5);
        assert_eq!(e.event_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(read_json(json!({})).title, "<unlabeled event>");
        assert_eq!(read_json(json!({})).timestamp, 1_000.0);
    }

    #[test]
    fn bad_events() {
        assert_eq!(
            read(b"[1,2]", "x", 0.0).err(),
            Some(EventError::NotAnObject)
        );
        assert_eq!(
            read(b"{\"event_id\":\"nope\"}", "x", 0.0).err(),
            Some(EventError::BadEventId)
        );
        let big = format!("{{\"message\":\"{}\"}}", "a".repeat(MAX_EVENT_BYTES));
        assert_eq!(
            read(big.as_bytes(), "x", 0.0).err(),
            Some(EventError::TooLarge)
        );
    }

    /// What the old path stored and read: the event parsed into a `serde_json::Value`,
    /// scrubbed as a tree and written out again (sorted keys, repeats gone).
    fn tree_scrubbed(text: &str) -> String {
        let mut value: serde_json::Value = serde_json::from_str(text).expect("json");
        scrub::scrub_event(&mut value);
        value.to_string()
    }

    fn same_event(a: &Event, b: &Event) -> Result<(), TestCaseError> {
        let payload = |e: &Event| serde_json::from_str::<serde_json::Value>(&e.payload).unwrap();
        prop_assert_eq!(payload(a), payload(b));
        prop_assert_eq!(&a.event_id, &b.event_id);
        prop_assert_eq!(a.timestamp.to_bits(), b.timestamp.to_bits());
        prop_assert_eq!(a.level, b.level);
        prop_assert_eq!(&a.title, &b.title);
        prop_assert_eq!(&a.culprit, &b.culprit);
        prop_assert_eq!(&a.platform, &b.platform);
        prop_assert_eq!(&a.environment, &b.environment);
        prop_assert_eq!(&a.release, &b.release);
        prop_assert_eq!(&a.user, &b.user);
        prop_assert_eq!(&a.tags, &b.tags);
        prop_assert_eq!(&a.grouping, &b.grouping);
        Ok(())
    }

    /// Event-shaped JSON text: the fields ingest reads, in any shape, with secrets,
    /// repeated keys and escapes.
    fn event_text() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            Just("user 1234 not found".to_owned()),
            Just("card 4111 1111 1111 1111".to_owned()),
            Just("GET /a?token=abc".to_owned()),
            Just("".to_owned()),
            Just("9EC79C33-EC99-42AB-8353-589FCB2E04DC".to_owned()),
            Just("9ec79c33ec9942ab8353589fcb2e04dc".to_owned()),
            "[a-zA-Z0-9 :.\"\\\n{}]{0,16}",
        ];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i32>().prop_map(|n| n.to_string()),
            Just("1.5e3".to_owned()),
            text.prop_map(|t| serde_json::to_string(&t).unwrap()),
        ];
        let key = prop_oneof![
            Just("event_id"),
            Just("timestamp"),
            Just("level"),
            Just("platform"),
            Just("environment"),
            Just("release"),
            Just("server_name"),
            Just("transaction"),
            Just("culprit"),
            Just("message"),
            Just("logentry"),
            Just("formatted"),
            Just("exception"),
            Just("values"),
            Just("type"),
            Just("value"),
            Just("module"),
            Just("stacktrace"),
            Just("frames"),
            Just("function"),
            Just("filename"),
            Just("in_app"),
            Just("fingerprint"),
            Just("tags"),
            Just("user"),
            Just("id"),
            Just("email"),
            Just("password"),
            Just("headers"),
            Just("Cookie"),
        ];
        leaf.prop_recursive(6, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                    let members: Vec<String> =
                        members.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                    format!("{{{}}}", members.join(", "))
                }),
            ]
        })
        .prop_filter("an object", |t| t.starts_with('{'))
    }

    proptest! {
        #[test]
        fn reads_as_the_tree_path_did(text in event_text()) {
            let fallback = "0123456789abcdef0123456789abcdef";
            let ours = read(text.as_bytes(), fallback, 1_000.0);
            let tree = tree_scrubbed(&text);
            let theirs = read(tree.as_bytes(), fallback, 1_000.0);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => same_event(&a, &b)?,
                (a, b) => prop_assert_eq!(a.err(), b.err()),
            }
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00+01:00"),
            Some(951_778_800.0)
        );
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(
            parse_timestamp(&Value::String("1700000000".into())),
            Some(1_700_000_000.0)
        );
    }
}
