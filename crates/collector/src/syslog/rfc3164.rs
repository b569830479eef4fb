//! RFC 3164, BSD syslog: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, read tolerantly.
//!
//! What real senders emit and this accepts:
//! - `logger --rfc3164`: `<13>Jan  5 12:34:56 myhost alice: hello` (day space-padded);
//! - local `/dev/log` lines without a host: `<13>Jan  5 12:34:56 cron[42]: job done`;
//! - rsyslog's forward format, an RFC 3339 timestamp with microseconds in place of the
//!   BSD one: `<13>2024-01-05T12:34:56.123456+01:00 myhost app: msg`;
//! - no timestamp at all: `<13>app: msg`, or just `<13>msg`.
//!
//! A BSD timestamp has neither year nor zone: it is read as UTC, in the year that puts it
//! closest before "now" (a December line received on 1 January is last year's).

use super::message::{Format, SyslogMessage, parse_pri, parse_rfc3339, trim_line_end, unix_ms};

/// Longest hostname or tag accepted; longer means the guess was wrong.
const MAX_TOKEN: usize = 255;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Why a message is not even BSD syslog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rfc3164Error {
    /// No valid `<PRI>`.
    #[error("bad pri")]
    Pri,
}

/// Parses one BSD syslog message; `now_ms` supplies the year a BSD timestamp lacks.
pub fn parse(input: &[u8], now_ms: i64) -> Result<SyslogMessage, Rfc3164Error> {
    let (facility, severity, rest) = parse_pri(input).ok_or(Rfc3164Error::Pri)?;
    let rest = trim_line_end(rest);
    let (timestamp_ms, rest) = match timestamp(rest, now_ms) {
        Some((ts, rest)) => (Some(ts), rest),
        None => (None, rest),
    };
    let mut host = None;
    let mut rest = rest;
    // With a timestamp, a host comes next unless the next token already is the tag.
    if timestamp_ms.is_some()
        && let Some((token, after)) = token(rest)
        && tag(token).is_none()
    {
        host = Some(token);
        rest = after;
    }
    let (app, procid, message) = match token(rest).and_then(|(t, after)| Some((tag(t)?, after))) {
        Some(((app, procid), after)) => (Some(app), procid, after),
        None => (None, None, rest),
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(SyslogMessage {
        format: Format::Rfc3164,
        facility: Some(facility),
        severity: Some(severity),
        timestamp_ms,
        host: host.map(text),
        app: app.map(text),
        procid: procid.map(text),
        msgid: None,
        structured_data: Vec::new(),
        message: text(message),
    })
}

/// The next space-terminated token and what follows its space.
fn token(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.iter().position(|&b| b == b' ')?;
    let token = &input[..end];
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some((token, &input[end + 1..]))
}

/// `app:` or `app[pid]:` → `(app, pid)`.
fn tag(token: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let body = token.strip_suffix(b":")?;
    let (app, procid) = match body.iter().position(|&b| b == b'[') {
        Some(open) => {
            let pid = body[open + 1..].strip_suffix(b"]")?;
            (&body[..open], (!pid.is_empty()).then_some(pid))
        }
        None => (body, None),
    };
    let printable = |b: &u8| (0x21..=0x7e).contains(b) && !matches!(b, b'[' | b']');
    (!app.is_empty() && app.iter().all(printable)).then_some((app, procid))
}

/// A BSD or RFC 3339 timestamp followed by a space.
fn timestamp(input: &[u8], now_ms: i64) -> Option<(i64, &[u8])> {
    let (first, _) = token(input)?;
    if first.len() >= 20
        && let Some(ms) = parse_rfc3339(first)
    {
        return Some((ms, &input[first.len() + 1..]));
    }
    bsd_timestamp(input, now_ms)
}

/// `Mmm dd hh:mm:ss ` (day padded with a space or a zero).
fn bsd_timestamp(input: &[u8], now_ms: i64) -> Option<(i64, &[u8])> {
    let stamp = input.get(..16)?;
    if stamp[3] != b' ' || stamp[6] != b' ' || stamp[9] != b':' || stamp[12] != b':' {
        return None;
    }
    if stamp[15] != b' ' {
        return None;
    }
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(&stamp[..3]))?;
    let month = u32::try_from(month).ok()? + 1;
    let two = |a: u8, b: u8| -> Option<u32> {
        let high = if a == b' ' { 0 } else { digit(a)? };
        Some(high * 10 + digit(b)?)
    };
    let day = two(stamp[4], stamp[5])?;
    let hour = two(stamp[7], stamp[8])?;
    let minute = two(stamp[10], stamp[11])?;
    let second = two(stamp[13], stamp[14])?;
    let year = super::message::civil_from_days(now_ms.div_euclid(86_400_000)).0;
    // The latest year that does not put the message more than two days in the future.
    let ms = [year + 1, year, year - 1]
        .into_iter()
        .filter_map(|y| unix_ms(y, month, day, hour, minute, second, 0))
        .find(|&ms| ms <= now_ms + 2 * 86_400_000)?;
    Some((ms, &input[16..]))
}

fn digit(b: u8) -> Option<u32> {
    b.is_ascii_digit().then(|| u32::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-10T12:00:00Z
    const NOW: i64 = 1_710_072_000_000;

    #[test]
    fn logger_and_rsyslog_variants() {
        let m = parse(b"<13>Mar  9 08:07:06 myhost alice: hello world", NOW).unwrap();
        assert_eq!((m.facility, m.severity), (Some(1), Some(5)));
        assert_eq!(m.timestamp_ms, Some(1_709_971_626_000));
        assert_eq!(m.host.as_deref(), Some("myhost"));
        assert_eq!(m.app.as_deref(), Some("alice"));
        assert_eq!(m.message, "hello world");

        let m = parse(b"<78>Mar 09 08:07:06 cron[4242]: job done\n", NOW).unwrap();
        assert_eq!(m.host, None);
        assert_eq!(m.app.as_deref(), Some("cron"));
        assert_eq!(m.procid.as_deref(), Some("4242"));
        assert_eq!(m.message, "job done");

        let m = parse(
            b"<30>2024-03-09T08:07:06.123456+01:00 web1 nginx[12]: GET / 200",
            NOW,
        )
        .unwrap();
        assert_eq!(m.timestamp_ms, Some(1_709_968_026_123));
        assert_eq!(m.host.as_deref(), Some("web1"));
        assert_eq!(m.app.as_deref(), Some("nginx"));
        assert_eq!(m.message, "GET / 200");

        let m = parse(b"<13>app: no time", NOW).unwrap();
        assert_eq!((m.timestamp_ms, m.host.as_deref()), (None, None));
        assert_eq!(m.app.as_deref(), Some("app"));
        assert_eq!(m.message, "no time");

        let m = parse(b"<13>just text here", NOW).unwrap();
        assert_eq!(m.app, None);
        assert_eq!(m.message, "just text here");

        let m = parse(b"<13>Mar  9 08:07:06 host text without a tag", NOW).unwrap();
        assert_eq!(m.host.as_deref(), Some("host"));
        assert_eq!(m.app, None);
        assert_eq!(m.message, "text without a tag");
    }

    #[test]
    fn a_december_line_read_in_january_is_last_year() {
        let jan_1 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        let m = parse(b"<13>Dec 31 23:59:59 h a: m", jan_1).unwrap();
        assert_eq!(m.timestamp_ms, Some(jan_1 - 1_000));
        // 29 February exists only in leap years; 2025 has none.
        let m = parse(b"<13>Feb 29 00:00:00 h a: m", 1_741_000_000_000).unwrap();
        assert_eq!(m.timestamp_ms, Some(1_709_164_800_000));
    }

    #[test]
    fn without_pri_it_is_not_syslog() {
        assert_eq!(
            parse(b"Mar  9 08:07:06 h a: m", NOW),
            Err(Rfc3164Error::Pri)
        );
    }
}
