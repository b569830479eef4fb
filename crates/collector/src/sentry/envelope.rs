//! The Sentry envelope format: a JSON header line, then items, each a JSON header line
//! and a payload that is either `length` bytes long or runs to the next newline.

use serde_json::{Map, Value};

/// Most items one envelope may hold.
pub const MAX_ITEMS: usize = 1_000;

/// Item types counted under their own name; any other type counts as `unknown`, so
/// clients cannot grow the counters' label set.
pub const ITEM_TYPES: [&str; 27] = [
    "event",
    "transaction",
    "session",
    "sessions",
    "client_report",
    "attachment",
    "check_in",
    "feedback",
    "user_report",
    "log",
    "otel_log",
    "span",
    "otel_span",
    "profile",
    "profile_chunk",
    "replay_event",
    "replay_recording",
    "replay_video",
    "statsd",
    "metric_buckets",
    "security",
    "raw_security",
    "nel",
    "form_data",
    "unreal_report",
    "trace_metric",
    "unknown",
];

/// The counted name of an item type: itself when listed in [`ITEM_TYPES`], else
/// `unknown`.
pub fn counted_type(ty: &str) -> &'static str {
    ITEM_TYPES
        .iter()
        .find(|&&known| known == ty)
        .copied()
        .unwrap_or("unknown")
}

/// The public key in an envelope header's `dsn` (`scheme://public[:secret]@host/…`).
pub fn dsn_public_key(headers: &Map<String, Value>) -> Option<&str> {
    let dsn = headers.get("dsn")?.as_str()?;
    let (_, rest) = dsn.split_once("://")?;
    let (userinfo, _) = rest.split_once('@')?;
    let key = userinfo.split(':').next()?;
    (!key.is_empty()).then_some(key)
}

/// A parsed envelope borrowing its payloads from the request body.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Envelope headers (`event_id`, `dsn`, `sent_at`, `sdk`, …).
    pub headers: Map<String, Value>,
    pub items: Vec<Item<'a>>,
}

/// One item of an envelope.
#[derive(Debug)]
pub struct Item<'a> {
    /// `event`, `transaction`, `session`, `attachment`, … (`""` if absent).
    pub ty: String,
    pub payload: &'a [u8],
}

/// An envelope that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body is empty.
    #[error("envelope is empty")]
    Empty,
    /// The first line is not a JSON object.
    #[error("envelope header is not a json object")]
    BadHeader,
    /// An item header is not a JSON object.
    #[error("item {0} header is not a json object")]
    BadItemHeader(usize),
    /// An item's `length` is not a non-negative integer or runs past the body.
    #[error("item {0} length is invalid or runs past the end of the envelope")]
    BadLength(usize),
    /// A length-delimited payload is followed by something other than a newline.
    #[error("item {0} payload is not followed by a newline")]
    MissingNewline(usize),
    /// Too many items.
    #[error("envelope has more than {MAX_ITEMS} items")]
    TooManyItems,
}

fn json_object(line: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(line).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Splits off the next line (without its `\n`, and without a `\r` before it).
fn next_line(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &input[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &input[i + 1..])
        }
        None => (input, &[]),
    }
}

/// Parses a whole envelope.
pub fn parse(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EnvelopeError::Empty);
    }
    let (line, mut rest) = next_line(body);
    let headers = json_object(line).ok_or(EnvelopeError::BadHeader)?;
    let mut items = Vec::new();
    loop {
        // Blank lines between items are tolerated, as relay does.
        while let Some(stripped) = rest
            .strip_prefix(b"\n")
            .or_else(|| rest.strip_prefix(b"\r\n"))
        {
            rest = stripped;
        }
        if rest.is_empty() {
            break;
        }
        let index = items.len();
        if index >= MAX_ITEMS {
            return Err(EnvelopeError::TooManyItems);
        }
        let (line, after) = next_line(rest);
        let item_headers = json_object(line).ok_or(EnvelopeError::BadItemHeader(index))?;
        let (payload, after_payload) = match item_headers.get("length") {
            None | Some(Value::Null) => next_line(after),
            Some(length) => {
                let n = length
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n <= after.len())
                    .ok_or(EnvelopeError::BadLength(index))?;
                let (payload, tail) = after.split_at(n);
                let tail = if tail.is_empty() {
                    tail
                } else if let Some(t) = tail.strip_prefix(b"\n") {
                    t
                } else if let Some(t) = tail.strip_prefix(b"\r\n") {
                    t
                } else {
                    return Err(EnvelopeError::MissingNewline(index));
                };
                (payload, tail)
            }
        };
        let ty = item_headers
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        items.push(Item { ty, payload });
        rest = after_payload;
    }
    Ok(Envelope { headers, items })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn length_delimited_and_newline_delimited_items() {
        let body = b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\
{\"type\":\"attachment\",\"length\":10}\nhelloworld\n\
{\"type\":\"event\"}\n{\"message\":\"hi\"}\n\
{\"type\":\"session\",\"length\":0}\n\n";
        let env = parse(body).expect("valid");
        assert_eq!(env.headers["event_id"], "9ec79c33ec9942ab8353589fcb2e04dc");
        let items: Vec<(&str, &[u8])> = env
            .items
            .iter()
            .map(|i| (i.ty.as_str(), i.payload))
            .collect();
        assert_eq!(
            items,
            vec![
                ("attachment", &b"helloworld"[..]),
                ("event", &b"{\"message\":\"hi\"}"[..]),
                ("session", &b""[..])
            ]
        );
    }

    #[test]
    fn payload_may_contain_newlines_when_length_is_given() {
        let body = b"{}\n{\"type\":\"attachment\",\"length\":3}\na\nb";
        let env = parse(body).expect("valid");
        assert_eq!(env.items[0].payload, b"a\nb");
    }

    #[test]
    fn types_and_dsn_keys() {
        assert_eq!(counted_type("replay_recording"), "replay_recording");
        assert_eq!(counted_type("something_new"), "unknown");
        let env = parse(b"{\"dsn\":\"https://abc:def@o1.example.com/42\"}\n").expect("valid");
        assert_eq!(dsn_public_key(&env.headers), Some("abc"));
        for header in [
            &b"{\"dsn\":\"https://o1.example.com/42\"}"[..],
            b"{\"dsn\":\"https://@o1.example.com/42\"}",
            b"{\"dsn\":42}",
            b"{}",
        ] {
            let env = parse(header).expect("valid");
            assert_eq!(dsn_public_key(&env.headers), None);
        }
    }

    #[test]
    fn broken_envelopes_are_named() {
        assert_eq!(parse(b"").err(), Some(EnvelopeError::Empty));
        assert_eq!(parse(b"[1]\n").err(), Some(EnvelopeError::BadHeader));
        assert_eq!(
            parse(b"{}\nnot json\n").err(),
            Some(EnvelopeError::BadItemHeader(0))
        );
        assert_eq!(
            parse(b"{}\n{\"length\":99}\nabc").err(),
            Some(EnvelopeError::BadLength(0))
        );
        assert_eq!(
            parse(b"{}\n{\"length\":-1}\nabc").err(),
            Some(EnvelopeError::BadLength(0))
        );
        assert_eq!(
            parse(b"{}\n{\"length\":1}\nabc").err(),
            Some(EnvelopeError::MissingNewline(0))
        );
    }

    proptest! {
        #[test]
        fn never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body);
        }

        #[test]
        fn round_trips_length_delimited_items(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut body = b"{\"sdk\":{\"name\":\"x\"}}\n".to_vec();
            for p in &payloads {
                body.extend_from_slice(format!("{{\"type\":\"attachment\",\"length\":{}}}\n", p.len()).as_bytes());
                body.extend_from_slice(p);
                body.push(b'\n');
            }
            let env = parse(&body).expect("valid");
            let got: Vec<&[u8]> = env.items.iter().map(|i| i.payload).collect();
            let want: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
        }
    }
}
