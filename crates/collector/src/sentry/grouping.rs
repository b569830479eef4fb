//! How events become issues.
//!
//! In order, the first that applies decides:
//! 1. an explicit `fingerprint` (where `{{ default }}` expands to the default grouping),
//! 2. the stack trace: exception types plus the in-app frames' module and function
//!    (never line numbers, so a deploy that shifts code does not split an issue), across
//!    the whole exception chain,
//! 3. exception types plus their parameterised values,
//! 4. the parameterised message,
//! 5. a fallback that puts everything else together.
//!
//! Parameterisation replaces the variable parts of a text (numbers, hex, UUIDs, emails,
//! IPs, URLs, dates, durations) with placeholders, so `user 1234 not found` and `user 98
//! not found` group together, while different messages with the same exception type stay
//! apart.

use std::borrow::Cow;
use std::sync::LazyLock;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Serialize;
use sightline_protocol::json::Value;

/// Which rule decided an event's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupedBy {
    Fingerprint,
    Stacktrace,
    Exception,
    Message,
    Fallback,
}

impl GroupedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupedBy::Fingerprint => "fingerprint",
            GroupedBy::Stacktrace => "stacktrace",
            GroupedBy::Exception => "exception",
            GroupedBy::Message => "message",
            GroupedBy::Fallback => "fallback",
        }
    }
}

/// The grouping decision for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grouping {
    /// 32 hex characters identifying the group.
    pub hash: String,
    pub grouped_by: GroupedBy,
    /// The values that went into the hash, in order — shown to users as "why grouped".
    pub values: Vec<String>,
}

/// Decides the group of a (normalised) Sentry event.
pub fn group(event: &Value) -> Grouping {
    let default = default_grouping(event);
    let Some(fingerprint) = event
        .get("fingerprint")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
    else {
        return default;
    };
    let mut values = Vec::new();
    for part in fingerprint {
        let text = match part {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        };
        if is_default_marker(&text) {
            values.extend(default.values.iter().cloned());
        } else {
            values.push(text);
        }
    }
    Grouping {
        hash: hash(GroupedBy::Fingerprint, &values),
        grouped_by: GroupedBy::Fingerprint,
        values,
    }
}

fn is_default_marker(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    compact.eq_ignore_ascii_case("{{default}}")
}

fn hash(by: GroupedBy, values: &[String]) -> String {
    let mut md5 = Md5::new();
    md5.update(by.as_str().as_bytes());
    for v in values {
        md5.update([0u8]);
        md5.update(v.as_bytes());
    }
    format!("{:032x}", u128::from_be_bytes(md5.finalize().into()))
}

fn default_grouping(event: &Value) -> Grouping {
    let exceptions = exceptions(event);
    // Stack trace: every exception in the chain with frames contributes its type and
    // frames; in-app frames only when any are marked in-app, else all frames.
    let mut values = Vec::new();
    let mut any_frames = false;
    for exc in &exceptions {
        let frames = frames(exc);
        if frames.is_empty() {
            continue;
        }
        any_frames = true;
        values.push(exception_type(exc));
        for frame in frames {
            values.push(frame_key(frame));
        }
    }
    if any_frames {
        return Grouping {
            hash: hash(GroupedBy::Stacktrace, &values),
            grouped_by: GroupedBy::Stacktrace,
            values,
        };
    }
    if !exceptions.is_empty() {
        let values: Vec<String> = exceptions
            .iter()
            .flat_map(|exc| {
                let value = exc
                    .get("value")
                    .and_then(Value::as_str)
                    .map(parameterize)
                    .unwrap_or_default();
                [exception_type(exc), value]
            })
            .collect();
        return Grouping {
            hash: hash(GroupedBy::Exception, &values),
            grouped_by: GroupedBy::Exception,
            values,
        };
    }
    if let Some(message) = message_template(event) {
        let values = vec![parameterize(&message)];
        return Grouping {
            hash: hash(GroupedBy::Message, &values),
            grouped_by: GroupedBy::Message,
            values,
        };
    }
    let values = vec!["<no exception, stack trace or message>".to_owned()];
    Grouping {
        hash: hash(GroupedBy::Fallback, &values),
        grouped_by: GroupedBy::Fallback,
        values,
    }
}

/// The exception chain: `exception.values` (or a bare array), oldest first.
pub fn exceptions<'v, 'a>(event: &'v Value<'a>) -> Vec<&'v Value<'a>> {
    let exc = match event.get("exception") {
        Some(o @ Value::Object(_)) => o.get("values"),
        other => other,
    };
    exc.and_then(Value::as_array)
        .map(|a| a.iter().filter(|v| v.is_object()).collect())
        .unwrap_or_default()
}

fn exception_type(exc: &Value) -> String {
    let ty = exc.get("type").and_then(Value::as_str).unwrap_or("Error");
    match exc.get("module").and_then(Value::as_str) {
        Some(module) if !module.is_empty() => format!("{module}.{ty}"),
        _ => ty.to_owned(),
    }
}

/// The frames of an exception that grouping looks at.
fn frames<'v, 'a>(exc: &'v Value<'a>) -> Vec<&'v Value<'a>> {
    let all: Vec<&Value> = exc
        .get("stacktrace")
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|v| v.is_object()).collect())
        .unwrap_or_default();
    let in_app: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|f| f.get("in_app") == Some(&Value::Bool(true)))
        .collect();
    if in_app.is_empty() { all } else { in_app }
}

/// `module:function` of a frame — file name when there is no module — never a line.
fn frame_key(frame: &Value) -> String {
    let location = frame
        .get("module")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            frame
                .get("filename")
                .and_then(Value::as_str)
                .map(normalize_filename)
        })
        .unwrap_or_else(|| "?".to_owned());
    let function = frame
        .get("function")
        .and_then(Value::as_str)
        .map(normalize_function)
        .unwrap_or_default();
    format!("{location}:{function}")
}

fn normalize_filename(path: &str) -> String {
    // Strip query strings and cache-busting hashes of bundled JavaScript.
    let path = path.split(['?', '#']).next().unwrap_or(path);
    static HASHED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"[.-][0-9a-f]{8,}(\.[a-z]+)$").expect("static regex"));
    HASHED.replace(path, "$1").into_owned()
}

pub(crate) fn normalize_function(function: &str) -> String {
    // Rust symbol hashes (`::h0123456789abcdef`), closure numbering and anonymous
    // lambda addresses change between builds without changing the code path.
    static RUST_HASH: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"::h[0-9a-f]{16}$").expect("static regex"));
    static CLOSURE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{\{closure\}\}#?\d*").expect("static regex"));
    static LAMBDA: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"lambda\$\d+|\$\$Lambda\$[0-9/x]+").expect("static regex"));
    // Each regex runs only where its literal part appears: this runs for every frame of
    // every event, and nearly no name holds any of them.
    let f = if function.contains("::h") {
        RUST_HASH.replace(function, "")
    } else {
        Cow::Borrowed(function)
    };
    let f = if f.contains("{{closure}}") {
        Cow::Owned(CLOSURE.replace_all(&f, "{{closure}}").into_owned())
    } else {
        f
    };
    if f.contains("lambda$") || f.contains("$$Lambda$") {
        LAMBDA.replace_all(&f, "lambda").into_owned()
    } else {
        f.into_owned()
    }
}

/// The message to group by: the unformatted template when the SDK sent one.
pub fn message_template(event: &Value) -> Option<String> {
    let logentry = event
        .get("logentry")
        .or_else(|| event.get("message").filter(|m| m.is_object()));
    if let Some(entry) = logentry {
        if let Some(m) = entry
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            return Some(m.to_owned());
        }
        if let Some(m) = entry
            .get("formatted")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            return Some(m.to_owned());
        }
    }
    event
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

/// One parameterisation rule: a pattern and what its matches become.
struct Rule {
    pattern: Regex,
    placeholder: &'static str,
    /// Only matches that pass this check are replaced.
    keep_if: Option<fn(&str) -> bool>,
}

/// Hashes and ids: hex words that mix digits and letters (pure digits are numbers and
/// pure letters are words such as "deadbeef" or "facade").
fn mixes_digits_and_letters(word: &str) -> bool {
    word.bytes().any(|b| b.is_ascii_digit()) && word.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Replaces the variable parts of a text with placeholders.
pub fn parameterize(text: &str) -> String {
    static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
        let rule = |pattern: &str, placeholder, keep_if| Rule {
            pattern: Regex::new(pattern).expect("static regex"),
            placeholder,
            keep_if,
        };
        vec![
            rule(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\x22<>]+", "<url>", None),
            rule(
                r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b",
                "<email>",
                None,
            ),
            rule(
                r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
                "<uuid>",
                None,
            ),
            rule(
                r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
                "<date>",
                None,
            ),
            rule(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b", "<time>", None),
            rule(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b", "<ip>", None),
            // At least three groups, so `std::io` or `a::b` in a message stay as they are.
            rule(
                r"(?i)\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){3,7}\b",
                "<ip>",
                None,
            ),
            rule(r"(?i)\b0x[0-9a-f]+\b", "<hex>", None),
            rule(
                r"(?i)\b[0-9a-f]{8,}\b",
                "<hex>",
                Some(mixes_digits_and_letters),
            ),
            rule(
                r"(?i)\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)\b",
                "<duration>",
                None,
            ),
            rule(r"[-+]?\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b", "<int>", None),
        ]
    });
    let mut out = text.to_owned();
    for rule in RULES.iter() {
        if !rule.pattern.is_match(&out) {
            continue;
        }
        out = rule
            .pattern
            .replace_all(&out, |c: &regex::Captures<'_>| match rule.keep_if {
                Some(check) if !check(&c[0]) => c[0].to_owned(),
                _ => rule.placeholder.to_owned(),
            })
            .into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Groups an event written as a `serde_json::Value`.
    fn group(event: &Value) -> Grouping {
        let text = event.to_string();
        super::group(&super::Value::parse(&text).expect("json"))
    }

    fn exc_event(ty: &str, value: &str) -> Value {
        json!({"exception": {"values": [{"type": ty, "value": value}]}})
    }

    #[test]
    fn parameterisation_covers_variable_parts() {
        let cases = [
            ("user 1234 not found", "user <int> not found"),
            ("user 98 not found", "user <int> not found"),
            (
                "timeout after 30ms talking to 10.0.0.12:5432",
                "timeout after <duration> talking to <ip>",
            ),
            (
                "row 550e8400-e29b-41d4-a716-446655440000 locked",
                "row <uuid> locked",
            ),
            ("mail to bob@example.com bounced", "mail to <email> bounced"),
            (
                "GET https://api.example.com/v1/users/7?x=1 failed",
                "GET <url> failed",
            ),
            (
                "at 2024-03-01T12:00:00Z and 12:30:01",
                "at <date> and <time>",
            ),
            (
                "pointer 0xdeadbeef, sha 9f86d081884c7d65",
                "pointer <hex>, sha <hex>",
            ),
            ("took 1.5 s", "took <duration>"),
            ("ipv6 fe80::1ff:fe23:4567:890a down", "ipv6 <ip> down"),
        ];
        for (input, want) in cases {
            assert_eq!(parameterize(input), want, "{input}");
        }
    }

    #[test]
    fn same_bug_with_different_ids_groups_together() {
        let a = group(&exc_event("LookupError", "user 1234 not found"));
        let b = group(&exc_event("LookupError", "user 98 not found"));
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.grouped_by, GroupedBy::Exception);
        // Two different bugs that share an exception type stay apart.
        let c = group(&exc_event("LookupError", "thread 5 is locked"));
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn stack_frames_decide_and_line_numbers_do_not_matter() {
        let ev = |line: u32, function: &str| {
            json!({"exception": {"values": [{"type": "ValueError", "value": format!("bad {line}"),
            "stacktrace": {"frames": [
                {"module": "django.core", "function": "dispatch", "lineno": 1, "in_app": false},
                {"module": "app.views", "function": function, "lineno": line, "in_app": true},
            ]}}]}})
        };
        let a = group(&ev(10, "show_user"));
        let b = group(&ev(99, "show_user"));
        assert_eq!(a.grouped_by, GroupedBy::Stacktrace);
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.values, vec!["ValueError", "app.views:show_user"]);
        assert_ne!(a.hash, group(&ev(10, "edit_user")).hash);
    }

    #[test]
    fn rust_symbol_hashes_are_ignored() {
        let ev = |f: &str| json!({"exception": [{"type": "panic", "stacktrace": {"frames": [{"function": f, "in_app": true}]}}]});
        assert_eq!(
            group(&ev("app::handler::{{closure}}::h0123456789abcdef")).hash,
            group(&ev("app::handler::{{closure}}::hfedcba9876543210")).hash
        );
    }

    #[test]
    fn the_hash_is_the_md5_of_the_rule_and_its_values_in_hex() {
        // md5(b"message\0user <int> not found"), by Python's hashlib.
        assert_eq!(
            hash(GroupedBy::Message, &["user <int> not found".to_owned()]),
            "d6a440b37b2f4dd6726589922ecb93ca"
        );
    }

    #[test]
    fn function_names_lose_what_changes_between_builds() {
        for (name, normal) in [
            ("app::handler::h0123456789abcdef", "app::handler"),
            ("app::run::{{closure}}#3", "app::run::{{closure}}"),
            (
                "app::run::{{closure}}::{{closure}}12",
                "app::run::{{closure}}::{{closure}}",
            ),
            (
                "com.shop.Cart.lambda$checkout$12",
                "com.shop.Cart.lambda$checkout$12",
            ),
            ("com.shop.Cart.lambda$12", "com.shop.Cart.lambda"),
            ("Cart$$Lambda$14/0x000000080", "Cartlambda"),
            // Look-alikes stay as they are.
            ("app::handle::hello", "app::handle::hello"),
            ("app::h0123456789abcdef::run", "app::h0123456789abcdef::run"),
            ("lambda", "lambda"),
        ] {
            assert_eq!(normalize_function(name), normal, "{name}");
        }
    }

    #[test]
    fn chained_exceptions_use_the_whole_chain() {
        let chain = |inner: &str| {
            json!({"exception": {"values": [
                {"type": inner, "stacktrace": {"frames": [{"module": "db", "function": "query", "in_app": true}]}},
                {"type": "RequestError", "stacktrace": {"frames": [{"module": "app", "function": "handle", "in_app": true}]}},
            ]}})
        };
        assert_ne!(
            group(&chain("Timeout")).hash,
            group(&chain("Deadlock")).hash
        );
    }

    #[test]
    fn fingerprint_overrides_and_expands_default() {
        let mut ev = exc_event("E", "x 1");
        ev["fingerprint"] = json!(["payments", "{{ default }}"]);
        let g = group(&ev);
        assert_eq!(g.grouped_by, GroupedBy::Fingerprint);
        assert_eq!(g.values, vec!["payments", "E", "x <int>"]);
        let mut other = exc_event("E", "x 2");
        other["fingerprint"] = json!(["payments", "{{default}}"]);
        assert_eq!(group(&other).hash, g.hash);
        let mut plain = exc_event("E", "x 1");
        plain["fingerprint"] = json!(["payments"]);
        assert_ne!(group(&plain).hash, g.hash);
    }

    #[test]
    fn messages_group_by_template() {
        let a = json!({"logentry": {"message": "user %s not found", "formatted": "user 5 not found", "params": [5]}});
        let b = json!({"logentry": {"message": "user %s not found", "formatted": "user bob not found", "params": ["bob"]}});
        assert_eq!(group(&a).hash, group(&b).hash);
        assert_eq!(group(&a).grouped_by, GroupedBy::Message);
        assert_eq!(
            group(&json!({"message": "disk 91% full"})).values,
            vec!["disk <int>% full"]
        );
        assert_eq!(group(&json!({})).grouped_by, GroupedBy::Fallback);
    }

    proptest! {
        #[test]
        fn numbers_never_split_a_group(a in 0u64..u64::MAX, b in 0u64..u64::MAX, word in "[a-z]{3,10}") {
            let ga = group(&exc_event("KeyError", &format!("{word} {a} missing")));
            let gb = group(&exc_event("KeyError", &format!("{word} {b} missing")));
            prop_assert_eq!(ga.hash, gb.hash);
        }

        #[test]
        fn grouping_never_panics(msg in ".{0,200}", ty in ".{0,40}") {
            let g = group(&exc_event(&ty, &msg));
            prop_assert_eq!(g.hash.len(), 32);
            let _ = parameterize(&msg);
        }
    }
}
