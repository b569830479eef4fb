//! RFC 5424, "the syslog protocol":
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP [BOM]MSG]`,
//! every header field `-` (NILVALUE) when absent.

use super::message::{Format, SdElement, SyslogMessage, parse_pri, parse_rfc3339, trim_line_end};

/// Longest header field accepted. RFC 5424 caps HOSTNAME at 255 and the others lower;
/// senders overshoot (long container names), so one generous bound serves all four.
const MAX_FIELD: usize = 255;

/// Longest SD-ID or PARAM-NAME (RFC 5424 §6.3.2).
const MAX_SD_NAME: usize = 32;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a message is not RFC 5424; every variant makes the message a raw log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rfc5424Error {
    /// No valid `<PRI>`.
    #[error("bad pri")]
    Pri,
    /// The version is not `1` followed by a space.
    #[error("bad version")]
    Version,
    /// A header field is missing, empty or too long.
    #[error("bad header field")]
    Header,
    /// The timestamp is neither `-` nor RFC 3339.
    #[error("bad timestamp")]
    Timestamp,
    /// Structured data does not follow the grammar.
    #[error("bad structured data")]
    StructuredData,
}

/// Parses one RFC 5424 message (without any transport framing).
pub fn parse(input: &[u8]) -> Result<SyslogMessage, Rfc5424Error> {
    let (facility, severity, rest) = parse_pri(input).ok_or(Rfc5424Error::Pri)?;
    let rest = rest.strip_prefix(b"1 ").ok_or(Rfc5424Error::Version)?;
    let (timestamp, rest) = field(rest)?;
    let timestamp_ms = match timestamp {
        None => None,
        Some(text) => Some(parse_rfc3339(text).ok_or(Rfc5424Error::Timestamp)?),
    };
    let (host, rest) = field(rest)?;
    let (app, rest) = field(rest)?;
    let (procid, rest) = field(rest)?;
    let (msgid, rest) = field(rest)?;
    let (structured_data, rest) = structured_data(rest)?;
    let message = match rest {
        [] => &[][..],
        [b' ', msg @ ..] => msg,
        _ => return Err(Rfc5424Error::StructuredData),
    };
    let message = message.strip_prefix(BOM).unwrap_or(message);
    Ok(SyslogMessage {
        format: Format::Rfc5424,
        facility: Some(facility),
        severity: Some(severity),
        timestamp_ms,
        host: host.map(lossy),
        app: app.map(lossy),
        procid: procid.map(lossy),
        msgid: msgid.map(lossy),
        structured_data,
        message: String::from_utf8_lossy(trim_line_end(message)).into_owned(),
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One space-terminated header field; `-` is `None`.
fn field(input: &[u8]) -> Result<(Option<&[u8]>, &[u8]), Rfc5424Error> {
    let end = input
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Rfc5424Error::Header)?;
    let value = &input[..end];
    if value.is_empty() || value.len() > MAX_FIELD || value.iter().any(|&b| b < 0x21) {
        return Err(Rfc5424Error::Header);
    }
    let value = (value != b"-").then_some(value);
    Ok((value, &input[end + 1..]))
}

/// `-` or one or more `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]`.
fn structured_data(input: &[u8]) -> Result<(Vec<SdElement>, &[u8]), Rfc5424Error> {
    if let Some(rest) = input.strip_prefix(b"-") {
        return Ok((Vec::new(), rest));
    }
    let mut elements = Vec::new();
    let mut rest = input;
    while let Some(after) = rest.strip_prefix(b"[") {
        let (element, after) = sd_element(after)?;
        elements.push(element);
        rest = after;
    }
    if elements.is_empty() {
        return Err(Rfc5424Error::StructuredData);
    }
    Ok((elements, rest))
}

/// After `[`: the id, its parameters and the closing `]`.
fn sd_element(input: &[u8]) -> Result<(SdElement, &[u8]), Rfc5424Error> {
    let (id, mut rest) = sd_name(input)?;
    let mut params = Vec::new();
    loop {
        match rest {
            [b']', after @ ..] => {
                return Ok((SdElement { id, params }, after));
            }
            [b' ', after @ ..] => {
                let (name, after) = sd_name(after)?;
                let after = after
                    .strip_prefix(b"=\"")
                    .ok_or(Rfc5424Error::StructuredData)?;
                let (value, after) = param_value(after)?;
                params.push((name, value));
                rest = after;
            }
            _ => return Err(Rfc5424Error::StructuredData),
        }
    }
}

/// SD-NAME: 1–32 printable US-ASCII except `=`, space, `]` and `"`.
fn sd_name(input: &[u8]) -> Result<(String, &[u8]), Rfc5424Error> {
    let len = input
        .iter()
        .position(|&b| !(0x21..=0x7e).contains(&b) || matches!(b, b'=' | b']' | b'"'))
        .unwrap_or(input.len());
    if len == 0 || len > MAX_SD_NAME {
        return Err(Rfc5424Error::StructuredData);
    }
    Ok((lossy(&input[..len]), &input[len..]))
}

/// After the opening quote: the value up to the closing one, with `\"`, `\\` and `\]`
/// unescaped. Any other backslash is kept, as RFC 5424 §6.3.3 says; an unescaped `]` is
/// accepted because the quotes already delimit the value.
fn param_value(input: &[u8]) -> Result<(String, &[u8]), Rfc5424Error> {
    let mut value = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'"' => return Ok((lossy(&value), &input[i + 1..])),
            b'\\' => match input.get(i + 1) {
                Some(&escaped @ (b'"' | b'\\' | b']')) => {
                    value.push(escaped);
                    i += 2;
                }
                _ => {
                    value.push(b'\\');
                    i += 1;
                }
            },
            other => {
                value.push(other);
                i += 1;
            }
        }
    }
    Err(Rfc5424Error::StructuredData)
}

/// Escapes a PARAM-VALUE for writing: `"`, `\` and `]` get a backslash.
pub fn escape_param_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_examples() {
        let m = parse(
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
        )
        .unwrap();
        assert_eq!((m.facility, m.severity), (Some(4), Some(2)));
        assert_eq!(m.timestamp_ms, Some(1_065_910_455_003));
        assert_eq!(m.host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.app.as_deref(), Some("su"));
        assert_eq!(m.procid, None);
        assert_eq!(m.msgid.as_deref(), Some("ID47"));
        assert_eq!(m.message, "'su root' failed for lonvick on /dev/pts/8");

        let m = parse(
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
        )
        .unwrap();
        assert_eq!(m.structured_data.len(), 2);
        assert_eq!(m.structured_data[0].param("eventID"), Some("1011"));
        assert_eq!(
            m.sd("examplePriority@32473").unwrap().param("class"),
            Some("high")
        );
        assert_eq!(m.message, "");

        let m = parse(b"<0>1 - - - - - -").unwrap();
        assert_eq!(m.host, None);
        assert_eq!(m.timestamp_ms, None);
        assert!(m.structured_data.is_empty());
    }

    #[test]
    fn escapes_in_param_values() {
        let m = parse(br#"<14>1 - h a - - [x@1 v="a\"b\\c\]d\e]f" w=""] msg"#).unwrap();
        let sd = &m.structured_data[0];
        assert_eq!(sd.param("v"), Some(r#"a"b\c]d\e]f"#));
        assert_eq!(sd.param("w"), Some(""));
        assert_eq!(m.message, "msg");
        assert_eq!(escape_param_value(r#"a"b\c]"#), r#"a\"b\\c\]"#);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &b"<14>2 - - - - - -"[..],
            b"<14>1 - - - - -",
            b"<14>1 yesterday h a - - - msg",
            b"<14>1 - h a - - [x@1 v=\"unterminated] msg",
            b"<14>1 - h a - - [x@1 v=unquoted] msg",
            b"<14>1 - h a - - [] msg",
            b"<14>1 - h a - - -msg",
            b"<14>1 - h a - - [x@1]msg",
            b"14>1 - - - - - -",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
