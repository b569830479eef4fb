//! Calendar arithmetic for the few places that show or parse dates: RFC 3339 for the
//! API (as Sentry's), UTC days for per-day counters. No time zone database needed.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day number since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whole seconds and milliseconds of a timestamp, kept inside years 0..=9999.
fn split(secs: f64) -> (i64, i64) {
    let ms = (secs * 1000.0)
        .round()
        .clamp(-62_167_219_200_000.0, 253_402_300_799_999.0) as i64;
    (ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `2024-03-01T12:00:00.250Z`: unix seconds as RFC 3339 in UTC, millisecond precision.
pub(crate) fn rfc3339(secs: f64) -> String {
    let (whole, ms) = split(secs);
    let (y, m, d) = civil_from_days(whole.div_euclid(86_400));
    let s = whole.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3_600,
        s % 3_600 / 60,
        s % 60
    )
}

/// `2024-03-01`: the UTC day of unix seconds.
pub(crate) fn utc_day(secs: f64) -> String {
    let (whole, _) = split(secs);
    let (y, m, d) = civil_from_days(whole.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 60, 11_016, 19_783, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn formats_like_sentry() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_294_400.25), "2024-03-01T12:00:00.250Z");
        assert_eq!(rfc3339(1_709_294_399.999_6), "2024-03-01T12:00:00.000Z");
        assert_eq!(utc_day(1_709_294_400.25), "2024-03-01");
        assert_eq!(utc_day(f64::MAX), "9999-12-31");
    }
}
