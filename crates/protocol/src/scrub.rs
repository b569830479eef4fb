//! Default data scrubbing, applied to every incoming event before it is stored.
//!
//! Sensitive headers (`Authorization`, `Cookie`, `Set-Cookie`, …), any field whose name
//! looks like a credential (password, secret, token, api_key, …) and credit-card-shaped
//! numbers anywhere in a string become `[Filtered]`. The agent applies the same function
//! before sending, so secrets never leave the app; the collector applies it again to
//! whatever any other SDK sent.
//!
//! It runs on every string of every event at ingest, so each check starts with a cheap
//! byte scan and only then runs a regex. [`scrub_json`] does the same to an event's JSON
//! text without building a tree of it, and hands the text back as it came when nothing
//! needed scrubbing (the usual case), so ingest can store it without re-serialising.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::json;

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

/// For each byte value, the words of [`SENSITIVE_PARTS`] that begin with it (bit `i` for
/// word `i`).
const PARTS_BY_FIRST: [u16; 256] = {
    assert!(SENSITIVE_PARTS.len() <= 16);
    let mut by_first = [0u16; 256];
    let mut i = 0;
    while i < SENSITIVE_PARTS.len() {
        by_first[SENSITIVE_PARTS[i].as_bytes()[0] as usize] |= 1 << i;
        i += 1;
    }
    by_first
};

/// Compares without allocating, in one pass over the key: this runs for every key of
/// every event (~80 in a typical one). At each position only the words of
/// [`SENSITIVE_PARTS`] that begin with the key's (folded) byte there are tried.
fn is_sensitive_key(key: &str) -> bool {
    let key = key.as_bytes();
    let at = |start: usize, word: &str| {
        key.len() - start >= word.len()
            && word.bytes().zip(&key[start..]).all(|(w, &k)| w == fold(k))
    };
    if SENSITIVE_KEYS
        .iter()
        .any(|k| k.len() == key.len() && at(0, k))
    {
        return true;
    }
    key.iter().enumerate().any(|(start, &b)| {
        let mut words = PARTS_BY_FIRST[usize::from(fold(b))];
        while words != 0 {
            if at(start, SENSITIVE_PARTS[words.trailing_zeros() as usize]) {
                return true;
            }
            words &= words - 1;
        }
        false
    })
}

/// Whether a member named `key` has its value replaced (unless the value is null).
fn is_sensitive_member(key: &str) -> bool {
    is_sensitive_key(key) || key == "cookies"
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
                if is_sensitive_member(key) && !v.is_null() {
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

/// Scrubs an event given as JSON text: parsing the result gives the same value as
/// parsing `json` and applying [`scrub_event`] (where an object repeats a key, both keep
/// the last). Returns the text itself when nothing needed scrubbing, and `None` when
/// `json` is not one well-formed JSON value (callers parse it first).
pub fn scrub_json(json: &str) -> Option<Cow<'_, str>> {
    let mut scan = Scanner {
        text: json,
        pos: 0,
        edits: Vec::new(),
    };
    scan.ws();
    scan.walk(0)?;
    scan.ws();
    if scan.pos != json.len() {
        return None;
    }
    if scan.edits.is_empty() {
        return Some(Cow::Borrowed(json));
    }
    let mut out = String::with_capacity(json.len() + 16 * scan.edits.len());
    let mut at = 0;
    for (range, replacement) in &scan.edits {
        out.push_str(&json[at..range.start]);
        out.push_str(replacement);
        at = range.end;
    }
    out.push_str(&json[at..]);
    Some(Cow::Owned(out))
}

/// Whether [`scrub_json`] changes the text `value` was parsed from: the same walk, on a
/// tree already at hand, without producing anything. Nearly every event needs nothing,
/// and reading the tree is far cheaper than reading the text again.
pub fn needs_scrubbing(value: &json::Value<'_>) -> bool {
    needs_scrubbing_at(value, 0)
}

fn needs_scrubbing_at(value: &json::Value<'_>, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match value {
        json::Value::Object(members) => members.iter().any(|(key, v)| {
            if is_sensitive_member(key) {
                !matches!(v, json::Value::Null)
            } else {
                needs_scrubbing_at(v, depth + 1)
            }
        }),
        json::Value::Array(items) => items.iter().any(|item| {
            let sensitive_pair = matches!(
                item.as_array(),
                Some([name, _]) if name.as_str().is_some_and(is_sensitive_key)
            );
            sensitive_pair || needs_scrubbing_at(item, depth + 1)
        }),
        json::Value::String(text) => scrub_text(text).is_some(),
        _ => false,
    }
}

/// Deeper than serde_json parses (128), so any text it accepted can be skipped.
const MAX_SKIP_DEPTH: usize = 256;

/// A JSON string holding [`FILTERED`].
const FILTERED_JSON: &str = "\"[Filtered]\"";

/// Walks JSON text the way [`scrub_value`] walks a tree, noting replacements (in text
/// order, never overlapping) instead of making them.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    edits: Vec<(std::ops::Range<usize>, Cow<'static, str>)>,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.pos += 1)
    }

    /// The value at `pos` (no leading whitespace), scrubbed as at `depth`.
    fn walk(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return self.skip(depth);
        }
        match self.peek()? {
            b'{' => {
                self.pos += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    if is_sensitive_member(&key) && self.peek()? != b'n' {
                        let start = self.pos;
                        self.skip(depth + 1)?;
                        self.edits
                            .push((start..self.pos, Cow::Borrowed(FILTERED_JSON)));
                    } else {
                        self.walk(depth + 1)?;
                    }
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b'}');
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    if !self.sensitive_pair(depth + 1) {
                        self.walk(depth + 1)?;
                    }
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b'"' => {
                let start = self.pos;
                let text = self.string()?;
                if let Some(clean) = scrub_text(&text) {
                    let json = serde_json::to_string(&clean).ok()?;
                    self.edits.push((start..self.pos, Cow::Owned(json)));
                }
                Some(())
            }
            _ => self.skip(depth),
        }
    }

    /// A header pair `[name, value]` with a sensitive name: notes its value's
    /// replacement and moves past it. Anything else is left where it was.
    fn sensitive_pair(&mut self, depth: usize) -> bool {
        let start = self.pos;
        let found = (|| {
            self.eat(b'[')?;
            self.ws();
            if self.peek()? != b'"' || !is_sensitive_key(&self.string()?) {
                return None;
            }
            self.ws();
            self.eat(b',')?;
            self.ws();
            let value_start = self.pos;
            self.skip(depth + 1)?;
            let value_end = self.pos;
            self.ws();
            self.eat(b']')?;
            Some(value_start..value_end)
        })();
        match found {
            Some(range) => {
                self.edits.push((range, Cow::Borrowed(FILTERED_JSON)));
                true
            }
            None => {
                self.pos = start;
                false
            }
        }
    }

    /// Reads a string token, unescaped.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.pos;
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let mut escaped = false;
        loop {
            match *bytes.get(self.pos)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
        self.pos += 1;
        let token = self.text.get(start..self.pos)?;
        if escaped {
            serde_json::from_str::<String>(token).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&token[1..token.len() - 1]))
        }
    }

    /// Moves past one value without looking inside it; gives up past serde_json's own
    /// nesting limit rather than recurse without bound.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let bytes = self.text.as_bytes();
                self.pos += 1;
                loop {
                    match *bytes.get(self.pos)? {
                        b'"' => break,
                        b'\\' => self.pos += 2,
                        _ => self.pos += 1,
                    }
                }
                self.pos += 1;
                Some(())
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.pos += 1;
                self.ws();
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(close);
                    }
                }
            }
            _ => {
                let start = self.pos;
                while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.pos += 1;
                }
                (self.pos > start).then_some(())
            }
        }
    }
}

/// Card-number-shaped digit runs: 13–19 digits, optionally grouped by spaces or dashes.
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:\d[ -]?){12,18}\d\b").expect("static regex"));

/// Names whose `name=value` in a query string is a credential; [`QUERY_SECRET`] is
/// built from them and [`may_hold_query_secret`] looks for them, so the two cannot drift.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_token",
    "auth",
];

/// `key=value` credentials in query strings.
static QUERY_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)\b((?:{})=)[^&\s]+", SECRET_WORDS.join("|"))).expect("static regex")
});

/// Whether [`CARD`] can match `text`: only with 13 ASCII digits, and for ASCII text
/// (nearly every string of an event) only with a run of 13 digits that has at most one
/// space or dash between two of them. The count is one fast pass; the run scan follows
/// only when it passes.
fn may_hold_card(text: &str) -> bool {
    if text.bytes().filter(u8::is_ascii_digit).count() < 13 {
        return false;
    }
    if !text.is_ascii() {
        return true;
    }
    let (mut run, mut after_separator) = (0, false);
    for b in text.bytes() {
        if b.is_ascii_digit() {
            run += 1;
            if run >= 13 {
                return true;
            }
            after_separator = false;
        } else if matches!(b, b' ' | b'-') && run > 0 && !after_separator {
            after_separator = true;
        } else {
            run = 0;
            after_separator = false;
        }
    }
    false
}

/// Whether [`QUERY_SECRET`] can match `text`: only with a `=`, and for ASCII text only
/// when one of its words (any case) comes right before one (the regex folds case the
/// Unicode way, so other text goes to it whole).
fn may_hold_query_secret(text: &str) -> bool {
    if !text.contains('=') {
        return false;
    }
    if !text.is_ascii() {
        return true;
    }
    let bytes = text.as_bytes();
    text.match_indices('=').any(|(at, _)| {
        SECRET_WORDS.iter().any(|word| {
            at >= word.len() && bytes[at - word.len()..at].eq_ignore_ascii_case(word.as_bytes())
        })
    })
}

/// Replaces credit-card numbers (13–19 digits, optionally grouped by spaces or dashes,
/// passing the Luhn check) and `key=value` credentials in query strings inside a text.
/// Returns `None` when nothing changed. The regexes run only where a byte scan says they
/// can match: this runs on every string of every event.
pub fn scrub_text(text: &str) -> Option<String> {
    let has_card = may_hold_card(text) && CARD.is_match(text);
    let has_secret = may_hold_query_secret(text) && QUERY_SECRET.is_match(text);
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
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// What [`scrub_event`] makes of the parsed text.
    fn scrubbed_tree(text: &str) -> Value {
        let mut value: Value = serde_json::from_str(text).expect("valid json");
        scrub_event(&mut value);
        value
    }

    /// What [`scrub_json`] makes of the text, parsed.
    fn scrubbed_text(text: &str) -> Value {
        let out = scrub_json(text).expect("valid json is scanned");
        serde_json::from_str(&out).expect("scrubbed text is json")
    }

    #[test]
    fn text_scrubbing_matches_tree_scrubbing() {
        let event = json!({
            "request": {
                "headers": {"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "text/html"},
                "cookies": {"sid": "1"},
                "query_string": "page=2&token=s3cr3t",
                "data": {"user": "bob", "password": "hunter2", "card": "4111 1111 1111 1111"}
            },
            "extra": {"api_key": null, "Set-Cookie": ["x"], "order": "4111111111111112"},
            "breadcrumbs": {"values": [{"message": "charged 4012-8888-8888-1881 ok"}]},
            "contexts": {"headers": [["X-Api-Key", {"a": 1}], ["Host", "example.com"], ["token", "a", "b"]]},
            "escaped": "card\t4111 1111 1111 1111 \u{e9} \"q\"",
            "numbers": [1, -2.5e3, 0, true, false, null, {}, []]
        });
        for text in [
            event.to_string(),
            serde_json::to_string_pretty(&event).unwrap(),
        ] {
            assert_eq!(scrubbed_text(&text), scrubbed_tree(&text));
        }
    }

    #[test]
    fn text_comes_back_as_is_when_clean() {
        let text = r#"{ "message": "user 1234 not found", "tags": [["a", "b"]], "n": 1.50 }"#;
        assert!(matches!(scrub_json(text), Some(Cow::Borrowed(t)) if t == text));
    }

    #[test]
    fn repeated_keys_keep_the_last_as_a_tree_does() {
        for text in [
            r#"{"password": "x", "password": null}"#,
            r#"{"password": null, "password": "x"}"#,
            r#"{"a": "4111 1111 1111 1111", "a": "plain"}"#,
            r#"{"h": [["Cookie", "1"]], "h": [["Cookie", "2"], ["Host", "x"]]}"#,
        ] {
            assert_eq!(scrubbed_text(text), scrubbed_tree(text), "{text}");
        }
    }

    #[test]
    fn escaped_keys_are_read_unescaped() {
        let text = r#"{"pass\u0077ord": "x", "\u0063ookies": {"a": 1}}"#;
        assert_eq!(
            scrubbed_text(text),
            json!({"password": FILTERED, "cookies": FILTERED})
        );
    }

    #[test]
    fn depth_limit_is_the_trees() {
        let mut deep = json!({"password": "x", "note": "token=abc"});
        for _ in 0..70 {
            deep = json!({"next": deep, "secret": 1, "list": [["Cookie", "c"]]});
        }
        let text = deep.to_string();
        assert_eq!(scrubbed_text(&text), scrubbed_tree(&text));
    }

    /// Around the depth limit, by every rule: the tree check and the text walk stop at the
    /// same depth.
    #[test]
    fn the_tree_check_stops_where_text_scrubbing_does() {
        let bottoms = [
            json!({"password": "x"}),
            json!([["Cookie", "c"]]),
            json!([["Authorization", null]]),
            json!("4111 1111 1111 1111"),
        ];
        for bottom in bottoms {
            let mut seen = Vec::new();
            for levels in 60..70 {
                let mut deep = bottom.clone();
                for level in 0..levels {
                    deep = if level % 2 == 0 {
                        json!({"next": deep})
                    } else {
                        json!([deep])
                    };
                }
                let text = deep.to_string();
                let changed = matches!(scrub_json(&text), Some(Cow::Owned(_)));
                let tree = json::Value::parse(&text).unwrap();
                assert_eq!(needs_scrubbing(&tree), changed, "{bottom} under {levels}");
                seen.push(changed);
            }
            assert!(seen.contains(&true) && seen.contains(&false), "{bottom}");
        }
    }

    #[test]
    fn malformed_text_is_refused_without_panicking() {
        for text in ["", "{", "[1,", r#"{"a" 1}"#, r#""open"#, "{} x", "[[[[[[[["] {
            assert_eq!(scrub_json(text), None, "{text}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(scrub_json(&deep), None);
    }

    /// Keys that exercise every rule: sensitive, `cookies`, and ordinary.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("password".to_owned()),
            Just("Set-Cookie".to_owned()),
            Just("cookies".to_owned()),
            Just("db_token".to_owned()),
            Just("user".to_owned()),
            Just("headers".to_owned()),
            "[a-zA-Z_-]{0,8}",
            ".{0,6}",
        ]
    }

    /// Strings that exercise every rule: cards, query secrets, escapes, anything.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("4111 1111 1111 1111".to_owned()),
            Just("paid 4012-8888-8888-1881, ok".to_owned()),
            Just("a=1&token=xyz".to_owned()),
            Just("Cookie".to_owned()),
            Just("Authorization".to_owned()),
            "[0-9 =&a-z\"\\\n]{0,24}",
            ".{0,12}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                (text(), inner.clone())
                    .prop_map(|(name, value)| Value::Array(vec![Value::String(name), value])),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// Texts made of what the scrubbing regexes look for: digit runs, separators, `=`,
    /// `&`, their words in mixed case (listed here rather than taken from
    /// [`SECRET_WORDS`]), and a little of everything else.
    fn regex_bait() -> impl Strategy<Value = String> {
        let words = [
            "password",
            "PassWD",
            "Secret",
            "TOKEN",
            "api_key",
            "ApiKey",
            "access_token",
            "auth",
        ];
        let piece = prop_oneof![
            3 => "[0-9]{1,13}",
            2 => prop::sample::select(vec![" ", "-", "=", "&", "é", "x"]).prop_map(str::to_owned),
            2 => prop::sample::select(words.to_vec()).prop_map(str::to_owned),
            2 => prop::sample::select(words.to_vec()).prop_map(|w| format!("{w}=")),
            1 => "[a-z_?/]{1,3}",
        ];
        prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn byte_scans_never_skip_a_regex_match(text in regex_bait()) {
            prop_assert!(may_hold_card(&text) || !CARD.is_match(&text), "{text:?}");
            prop_assert!(
                may_hold_query_secret(&text) || !QUERY_SECRET.is_match(&text),
                "{text:?}"
            );
        }

        /// Scrubbing the text and scrubbing the tree give the same event, and the check
        /// on the parsed tree says whether the text changes.
        #[test]
        fn text_and_tree_scrubbing_agree(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            prop_assert_eq!(scrubbed_text(&text), scrubbed_tree(&text));
            let changed = matches!(scrub_json(&text), Some(Cow::Owned(_)));
            let tree = json::Value::parse(&text).unwrap();
            prop_assert_eq!(needs_scrubbing(&tree), changed, "{}", text);
        }

        /// The one-pass key check says what the plain reading of the lists says: the
        /// folded key equals a sensitive key or contains a sensitive part.
        #[test]
        fn key_check_is_the_lists_plain_reading(
            key in prop_oneof![
                "[a-zA-Z_-]{0,24}",
                "[pasetcokiwrdnyfx_-]{0,24}",
                (".{0,4}", prop::sample::select(SENSITIVE_PARTS), ".{0,4}")
                    .prop_map(|(a, part, b)| format!("{a}{}{b}", part.to_uppercase())),
                prop::sample::select(SENSITIVE_KEYS).prop_map(|k| k.replace('_', "-")),
                ".{0,12}",
            ]
        ) {
            let folded: String = key.bytes().map(|b| char::from(fold(b))).collect();
            let plain = SENSITIVE_KEYS.contains(&folded.as_str())
                || SENSITIVE_PARTS.iter().any(|part| folded.contains(part));
            prop_assert_eq!(is_sensitive_key(&key), plain, "{:?}", key);
        }

        #[test]
        fn text_scrubbing_never_panics(text in ".{0,256}") {
            let _ = scrub_json(&text);
        }
    }

    #[test]
    fn byte_scans_pass_what_the_regexes_look_for_and_skip_the_rest() {
        assert!(may_hold_card("card 4111 1111-1111 1111 here"));
        assert!(!may_hold_card("line 123, 2024-11-05 10:30:00, id 98765432"));
        assert!(
            !may_hold_card("12 34  56 78 90 12 34"),
            "two separators break a run"
        );
        assert!(may_hold_query_secret("/login?user=a&PassWord=hunter2"));
        assert!(!may_hold_query_secret("x = compute(a, b)"));
        assert!(!may_hold_query_secret("no equals sign: password token"));
        // Outside ASCII the regexes fold case and read digits the Unicode way, so only
        // the rough checks apply.
        assert!(may_hold_query_secret("paſſword=1"));
    }

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
