//! Default data scrubbing, applied to every incoming event before it is stored.
//!
//! Sensitive headers (`Authorization`, `Cookie`, `Set-Cookie`, …), any field whose name
//! looks like a credential (password, secret, token, api_key, …) and credit-card-shaped
//! numbers anywhere in a string become `[Filtered]`. The agent applies the same function
//! before sending, so secrets never leave the app; the collector applies it again to
//! whatever any other SDK sent.
//!
//! It runs on every string of every event at ingest, so each check starts with a cheap
//! byte scan and only then runs a regex.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What scrubbed values are replaced with.
pub const FILTERED: &str = "[Filtered]";

/// Field and header names whose values are always removed (compared lowercase, with
/// `-` treated as `_`).
const SENSITIVE_KEYS: &[&str] = &[
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
    "x_api_key",
    "x_auth_token",
    "x_csrf_token",
    "x_sentry_auth",
];

/// Substrings that make a field name sensitive.
const SENSITIVE_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "credentials",
    "session_id",
    "sessionid",
    "csrf",
];

/// One byte of a field name as compared: ASCII lowercase, `-` read as `_`.
fn fold(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Compares without allocating: this runs for every key of every event.
fn is_sensitive_key(key: &str) -> bool {
    let key = key.as_bytes();
    let equals =
        |word: &str| word.len() == key.len() && word.bytes().zip(key).all(|(w, &k)| w == fold(k));
    let contains = |part: &str| {
        key.windows(part.len())
            .any(|window| part.bytes().zip(window).all(|(p, &k)| p == fold(k)))
    };
    SENSITIVE_KEYS.iter().any(|k| equals(k)) || SENSITIVE_PARTS.iter().any(|p| contains(p))
}

/// Scrubs a whole event in place.
pub fn scrub_event(event: &mut Value) {
    scrub_value(event, 0);
}

/// Deep enough for any real event; deeper values are left to the size limits.
const MAX_DEPTH: usize = 64;

fn scrub_value(value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if (is_sensitive_key(key) || key == "cookies") && !v.is_null() {
                    *v = Value::String(FILTERED.to_owned());
                } else {
                    scrub_value(v, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            // Header lists come as `[[name, value], …]`.
            for item in items.iter_mut() {
                if let Value::Array(pair) = item
                    && pair.len() == 2
                    && pair[0].as_str().is_some_and(is_sensitive_key)
                {
                    pair[1] = Value::String(FILTERED.to_owned());
                    continue;
                }
                scrub_value(item, depth + 1);
            }
        }
        Value::String(s) => {
            if let Some(clean) = scrub_text(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Replaces credit-card numbers (13–19 digits, optionally grouped by spaces or dashes,
/// passing the Luhn check) and `key=value` credentials in query strings inside a text.
/// Returns `None` when nothing changed.
pub fn scrub_text(text: &str) -> Option<String> {
    static CARD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b(?:\d[ -]?){12,18}\d\b").expect("static regex"));
    static QUERY_SECRET: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)\b((?:password|passwd|secret|token|api_key|apikey|access_token|auth)=)[^&\s]+",
        )
        .expect("static regex")
    });
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let has_card = digits >= 13 && CARD.is_match(text);
    let has_secret = text.contains('=') && QUERY_SECRET.is_match(text);
    if !has_card && !has_secret {
        return None;
    }
    let mut changed = false;
    let mut out = text.to_owned();
    if has_card {
        let replaced = CARD.replace_all(&out, |c: &regex::Captures<'_>| {
            if luhn(&c[0]) {
                changed = true;
                FILTERED.to_owned()
            } else {
                c[0].to_owned()
            }
        });
        out = replaced.into_owned();
    }
    if has_secret {
        out = QUERY_SECRET
            .replace_all(&out, format!("${{1}}{FILTERED}"))
            .into_owned();
        changed = true;
    }
    changed.then_some(out)
}

fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn headers_fields_and_cards_are_filtered() {
        let mut event = json!({
            "request": {
                "headers": {"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "text/html"},
                "cookies": {"sid": "1"},
                "query_string": "page=2&token=s3cr3t",
                "data": {"user": "bob", "password": "hunter2", "card": "4111 1111 1111 1111"}
            },
            "extra": {"api_key": "k", "Set-Cookie": "x", "order": "4111111111111112"},
            "breadcrumbs": {"values": [{"message": "charged 4012-8888-8888-1881 ok"}]},
            "contexts": {"headers": [["X-Api-Key", "k"], ["Host", "example.com"]]}
        });
        scrub_event(&mut event);
        let r = &event["request"];
        assert_eq!(r["headers"]["Authorization"], FILTERED);
        assert_eq!(r["headers"]["Cookie"], FILTERED);
        assert_eq!(r["headers"]["Accept"], "text/html");
        assert_eq!(r["cookies"], FILTERED);
        assert_eq!(r["query_string"], "page=2&token=[Filtered]");
        assert_eq!(r["data"]["password"], FILTERED);
        assert_eq!(r["data"]["user"], "bob");
        assert_eq!(r["data"]["card"], FILTERED);
        assert_eq!(event["extra"]["api_key"], FILTERED);
        assert_eq!(event["extra"]["Set-Cookie"], FILTERED);
        // Not Luhn-valid: an order number, kept.
        assert_eq!(event["extra"]["order"], "4111111111111112");
        assert_eq!(
            event["breadcrumbs"]["values"][0]["message"],
            "charged [Filtered] ok"
        );
        assert_eq!(event["contexts"]["headers"][0][1], FILTERED);
        assert_eq!(event["contexts"]["headers"][1][1], "example.com");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        assert_eq!(scrub_text("user 1234 not found"), None);
        assert_eq!(scrub_text("a=b&c=d"), None);
        assert_eq!(scrub_text("order 4111111111111112"), None);
        assert_eq!(scrub_text("oauth=x"), None);
    }

    #[test]
    fn key_names_match_whatever_their_case_and_separator() {
        for key in [
            "Authorization",
            "X-API-KEY",
            "db_password",
            "AccessToken",
            "Set-Cookie",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["author", "user", "cookie_jar_size", "sessions", ""] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }
}
