//! What a parsed syslog message is, whichever of the two formats it came in, and the
//! date arithmetic both parsers share.

use serde::Serialize;

/// Which grammar a message was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 5424, "the syslog protocol".
    Rfc5424,
    /// RFC 3164, BSD syslog, in the variants `logger` and rsyslog emit.
    Rfc3164,
    /// Neither: kept verbatim as the message text.
    Raw,
}

impl Format {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
            Format::Raw => "raw",
        }
    }
}

/// One structured-data element, `[id name="value" …]`, parameters in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SdElement {
    /// The SD-ID, e.g. `timeQuality` or `sightline@32473`.
    pub id: String,
    /// `(name, value)` pairs, values unescaped.
    pub params: Vec<(String, String)>,
}

impl SdElement {
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A syslog message, every field optional except the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    pub format: Format,
    /// 0–23 (kern … local7).
    pub facility: Option<u8>,
    /// 0–7 (emerg … debug).
    pub severity: Option<u8>,
    /// When the sender says the event happened, unix milliseconds.
    pub timestamp_ms: Option<i64>,
    pub host: Option<String>,
    pub app: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub structured_data: Vec<SdElement>,
    pub message: String,
}

impl SyslogMessage {
    /// A message no grammar could read: the bytes, lossily decoded, are the text.
    pub fn raw(bytes: &[u8]) -> SyslogMessage {
        SyslogMessage {
            format: Format::Raw,
            facility: None,
            severity: None,
            timestamp_ms: None,
            host: None,
            app: None,
            procid: None,
            msgid: None,
            structured_data: Vec::new(),
            message: String::from_utf8_lossy(trim_line_end(bytes)).into_owned(),
        }
    }

    /// The structured-data element with this id.
    pub fn sd(&self, id: &str) -> Option<&SdElement> {
        self.structured_data.iter().find(|e| e.id == id)
    }
}

/// Severity names as syslog.conf spells them, index = severity.
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// `warning`, `warn`, `error`, `4` … → 0–7.
pub fn severity_from_name(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return (n < 8).then_some(n);
    }
    let lower = text.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "emergency" | "panic" => "emerg",
        "critical" => "crit",
        "error" => "err",
        "warn" => "warning",
        "information" | "informational" => "info",
        other => other,
    };
    SEVERITIES
        .iter()
        .position(|&s| s == alias)
        .and_then(|i| u8::try_from(i).ok())
}

/// Reads `<PRI>` at the start: 1–3 digits, no leading zero unless `<0>`, value ≤ 191.
/// Returns `(facility, severity, rest)`.
pub(crate) fn parse_pri(input: &[u8]) -> Option<(u8, u8, &[u8])> {
    let rest = input.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    let value: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if value > 191 {
        return None;
    }
    let value = u8::try_from(value).ok()?;
    Some((value / 8, value % 8, &rest[end + 1..]))
}

/// Strips the line ending a sender may leave after a message (LF, CRLF, NUL).
pub(crate) fn trim_line_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r' | 0] = bytes {
        bytes = rest;
    }
    bytes
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day number since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Unix milliseconds of a UTC civil time, or `None` when a field is out of range.
pub(crate) fn unix_ms(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // 60: a leap second, which RFC 3339 allows; it reads as the next second.
        || second > 60
        || millis > 999
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second);
    Some(secs * 1_000 + i64::from(millis))
}

/// Parses an RFC 3339 timestamp as RFC 5424 restricts it
/// (`2003-10-11T22:14:15.003Z`, `…+02:00`); `None` if it is not one.
pub(crate) fn parse_rfc3339(text: &[u8]) -> Option<i64> {
    fn num(bytes: &[u8]) -> Option<u32> {
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b't') {
        return None;
    }
    if text[13] != b':' || text[16] != b':' {
        return None;
    }
    let year = i64::from(num(&text[0..4])?);
    let month = num(&text[5..7])?;
    let day = num(&text[8..10])?;
    let hour = num(&text[11..13])?;
    let minute = num(&text[14..16])?;
    let second = num(&text[17..19])?;
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        // RFC 5424 allows up to six fraction digits.
        if digits == 0 || digits > 6 {
            return None;
        }
        let mut ms = [b'0'; 3];
        for (slot, digit) in ms.iter_mut().zip(&frac[..digits]) {
            *slot = *digit;
        }
        millis = num(&ms)?;
        rest = &frac[digits..];
    }
    let offset_mins: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(num(&[*h1, *h2])?);
            let mins = i64::from(num(&[*m1, *m2])?);
            if hours > 23 || mins > 59 {
                return None;
            }
            let total = hours * 60 + mins;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let local = unix_ms(year, month, day, hour, minute, second, millis)?;
    Some(local - offset_mins * 60_000)
}

/// `2024-05-01T12:00:00.123Z` for unix milliseconds.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1_000);
    let millis = ms.rem_euclid(1_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        tod / 3_600,
        tod % 3_600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_is_strict() {
        assert_eq!(parse_pri(b"<34>1"), Some((4, 2, &b"1"[..])));
        assert_eq!(parse_pri(b"<0>x"), Some((0, 0, &b"x"[..])));
        assert_eq!(parse_pri(b"<191>"), Some((23, 7, &b""[..])));
        for bad in [
            &b"<192>"[..],
            b"<01>",
            b"<>",
            b"<1234>",
            b"34>",
            b"<3a>",
            b"<",
        ] {
            assert_eq!(parse_pri(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn rfc3339_examples_from_rfc5424() {
        assert_eq!(
            parse_rfc3339(b"1985-04-12T23:20:50.52Z"),
            Some(482_196_050_520)
        );
        assert_eq!(
            parse_rfc3339(b"1985-04-12T19:20:50.52-04:00"),
            Some(482_196_050_520)
        );
        assert_eq!(
            parse_rfc3339(b"2003-10-11T22:14:15.003Z"),
            Some(1_065_910_455_003)
        );
        assert_eq!(
            parse_rfc3339(b"2003-08-24T05:14:15.000003-07:00"),
            Some(1_061_727_255_000)
        );
        for bad in [
            &b"2003-08-24T05:14:15.000000003-07:00"[..],
            b"2003-02-29T05:14:15Z",
            b"2003-13-01T05:14:15Z",
            b"2003-10-11 22:14:15Z",
            b"2003-10-11T22:14:15",
            b"-",
        ] {
            assert_eq!(
                parse_rfc3339(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            format_rfc3339(1_065_910_455_003),
            "2003-10-11T22:14:15.003Z"
        );
    }

    #[test]
    fn severity_names() {
        assert_eq!(severity_from_name("warning"), Some(4));
        assert_eq!(severity_from_name("WARN"), Some(4));
        assert_eq!(severity_from_name("error"), Some(3));
        assert_eq!(severity_from_name("7"), Some(7));
        assert_eq!(severity_from_name("8"), None);
        assert_eq!(severity_from_name("loud"), None);
    }
}
