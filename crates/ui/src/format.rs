//! Number and time formatting for people (tables, axis labels, tooltips).
//!
//! Exact values for machines go into `data-*` attributes with [`exact`].
//!
//! Compiled on both sides: the hydrated chart tooltips format with the same functions the
//! server labels with, so a value reads the same in a table and under the pointer.

/// An `f64` in its shortest round-trip form (`1.5`, `0.1`, `42`), for `data-*` attributes.
pub(crate) fn exact(value: f64) -> String {
    format!("{value}")
}

/// A value for a tooltip: up to three decimals, trailing zeros dropped (`12.5`, `0.333`).
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub(crate) fn precise(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `12345` → `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency in milliseconds with about three significant digits.
pub(crate) fn ms(value: f64) -> String {
    if !value.is_finite() {
        "–".to_owned()
    } else if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A fraction (0.0‥1.0) as a percentage; tiny non-zero values do not round to a misleading 0.
pub(crate) fn percent(fraction: f64) -> String {
    if !fraction.is_finite() {
        "–".to_owned()
    } else if fraction <= 0.0 {
        "0%".to_owned()
    } else if fraction < 0.001 {
        "<0.1%".to_owned()
    } else {
        format!("{:.1}%", fraction * 100.0)
    }
}

/// A rate or axis value: up to three significant digits, `k`/`M` suffixes past a thousand.
pub(crate) fn compact(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let text = match scaled.abs() {
        v if v >= 100.0 || v == 0.0 => format!("{scaled:.0}"),
        v if v >= 10.0 => format!("{scaled:.1}"),
        _ => format!("{scaled:.2}"),
    };
    // "2.50" → "2.5", "3.00" → "3"
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// `HH:MM` (UTC) of a unix timestamp.
pub(crate) fn clock(ts: i64) -> String {
    let secs = ts.rem_euclid(86_400);
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// `Mon DD` (UTC) of a unix timestamp, e.g. `Mar 07`.
pub(crate) fn day(ts: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, month, day) = civil_from_days(ts.div_euclid(86_400));
    format!("{} {day:02}", MONTHS[(month - 1) as usize])
}

/// `YYYY-MM-DD` (UTC).
fn date(ts: i64) -> String {
    let (year, month, day) = civil_from_days(ts.div_euclid(86_400));
    format!("{year}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD HH:MM UTC`, for tooltips where the date matters.
pub(crate) fn date_time(ts: i64) -> String {
    format!("{} {} UTC", date(ts), clock(ts))
}

/// How long before `now` `ts` was, for people: `just now`, `5 min ago`, `3 h ago`,
/// `12 d ago`; the date past 60 days.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
pub(crate) fn ago(ts: i64, now: i64) -> String {
    let secs = now.saturating_sub(ts).max(0);
    match secs {
        0..60 => "just now".to_owned(),
        60..3_600 => format!("{} min ago", secs / 60),
        3_600..86_400 => format!("{} h ago", secs / 3_600),
        86_400..5_184_000 => format!("{} d ago", secs / 86_400),
        _ => date(ts),
    }
}

/// A `[since, until)` range: `2023-11-14 21:14–22:14 UTC` within a day, both dates otherwise.
pub(crate) fn span(since: i64, until: i64) -> String {
    if since.div_euclid(86_400) == until.div_euclid(86_400) {
        format!("{} {}–{} UTC", date(since), clock(since), clock(until))
    } else {
        format!(
            "{} {} – {} {} UTC",
            date(since),
            clock(since),
            date(until),
            clock(until)
        )
    }
}

/// `YYYY-MM-DDTHH:MM` (UTC): the value format of `<input type="datetime-local">`.
pub(crate) fn datetime_local(ts: i64) -> String {
    format!("{}T{}", date(ts), clock(ts))
}

/// `text` with `&`, `<` and `>` as entities, for the one place Leptos does not escape:
/// the children of `<textarea>` (like `<script>` and `<style>`, it renders them raw).
/// Everywhere else views escape text themselves.
pub(crate) fn textarea_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Parses a time as the dashboard's URLs and forms carry it: unix seconds, or
/// `YYYY-MM-DDTHH:MM[:SS]` (what a `datetime-local` input submits), read as UTC.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    let (date, time) = text.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute) = (hms.next()??, hms.next()??);
    let second = hms.next().flatten().unwrap_or(0);
    let valid = (1970..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..60).contains(&second);
    if !valid {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // 31 February and the like: refuse rather than roll over into March
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// (year, month 1‥12, day 1‥31) → days since 1970-01-01; the inverse of
/// [`civil_from_days`] (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month 1‥12, day 1‥31) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`); saves a date-time dependency for one label.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_people_say_them() {
        let now = 1_700_000_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now + 5, now), "just now", "clock skew");
        assert_eq!(ago(now - 300, now), "5 min ago");
        assert_eq!(ago(now - 7_200, now), "2 h ago");
        assert_eq!(ago(now - 3 * 86_400, now), "3 d ago");
        assert_eq!(ago(0, now), "1970-01-01");
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn compact_keeps_three_significant_digits() {
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(compact(40.0), "40");
        assert_eq!(compact(12.34), "12.3");
        assert_eq!(compact(250.0), "250");
        assert_eq!(compact(1500.0), "1.5k");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(f64::NAN), "–");
    }

    #[test]
    fn latency_and_percent() {
        assert_eq!(ms(1.234), "1.23");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(1234.5), "1234");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.0004), "<0.1%");
        assert_eq!(percent(0.025), "2.5%");
        assert_eq!(exact(0.1), "0.1");
        assert_eq!(exact(42.0), "42");
    }

    #[test]
    fn utc_clock_and_calendar() {
        // 2023-11-14 22:13:20 UTC
        let ts = 1_700_000_000;
        assert_eq!(clock(ts), "22:13");
        assert_eq!(day(ts), "Nov 14");
        assert_eq!(date_time(ts), "2023-11-14 22:13 UTC");
        assert_eq!(date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(span(ts - 3600, ts), "2023-11-14 21:13–22:13 UTC");
        assert_eq!(
            span(ts - 86_400, ts),
            "2023-11-13 22:13 – 2023-11-14 22:13 UTC"
        );
        // leap day
        assert_eq!(day(951_782_400), "Feb 29");
    }

    #[test]
    fn times_parse_from_urls_and_forms() {
        let ts = 1_700_000_000;
        assert_eq!(parse_time("1700000000"), Some(ts));
        assert_eq!(datetime_local(ts), "2023-11-14T22:13");
        assert_eq!(parse_time("2023-11-14T22:13"), Some(ts - 20));
        assert_eq!(parse_time("2023-11-14T22:13:20"), Some(ts));
        assert_eq!(parse_time("2000-02-29T00:00"), Some(951_782_400));
        for bad in [
            "",
            "soon",
            "2023-02-31T00:00",
            "2023-13-01T00:00",
            "2023-11-14T24:00",
            "2023-11-14",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for days in [-1, 0, 59, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn precise_values_for_tooltips() {
        assert_eq!(precise(12.5), "12.5");
        assert_eq!(precise(1.0 / 3.0), "0.333");
        assert_eq!(precise(40.0), "40");
        assert_eq!(precise(f64::INFINITY), "–");
    }
}
