//! The time ranges the dashboard offers: presets ending now (`?statsPeriod=`, named as the
//! query API names them) and custom ranges (`?since=&until=`, unix seconds or UTC
//! `YYYY-MM-DDTHH:MM`, what the custom-range form and chart zoom produce).

use crate::format;

/// A preset range, always ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Period {
    /// `15m`
    Minutes15,
    /// `1h`, the default, as in the query API.
    #[default]
    Hour1,
    /// `24h`
    Hours24,
    /// `7d`
    Days7,
    /// `30d`
    Days30,
}

impl Period {
    /// Every preset, in the order the picker shows them.
    pub(crate) const ALL: [Period; 5] = [
        Period::Minutes15,
        Period::Hour1,
        Period::Hours24,
        Period::Days7,
        Period::Days30,
    ];

    /// Parses a `statsPeriod` value; `None` for anything not offered.
    pub(crate) fn parse(value: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == value)
    }

    /// The `statsPeriod` value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Period::Minutes15 => "15m",
            Period::Hour1 => "1h",
            Period::Hours24 => "24h",
            Period::Days7 => "7d",
            Period::Days30 => "30d",
        }
    }

    /// Spelled out, for link titles and the page sub-heading.
    pub(crate) fn long_name(self) -> &'static str {
        match self {
            Period::Minutes15 => "Last 15 minutes",
            Period::Hour1 => "Last hour",
            Period::Hours24 => "Last 24 hours",
            Period::Days7 => "Last 7 days",
            Period::Days30 => "Last 30 days",
        }
    }

    /// Length in seconds.
    pub(crate) fn secs(self) -> i64 {
        match self {
            Period::Minutes15 => 15 * 60,
            Period::Hour1 => 3600,
            Period::Hours24 => 24 * 3600,
            Period::Days7 => 7 * 24 * 3600,
            Period::Days30 => 30 * 24 * 3600,
        }
    }

    /// Chart step in seconds: 15 to 168 points per chart, enough to see shape without
    /// sending a point per pixel.
    pub(crate) fn step_secs(self) -> i64 {
        match self {
            Period::Minutes15 | Period::Hour1 => 60,
            Period::Hours24 => 15 * 60,
            Period::Days7 => 3600,
            Period::Days30 => 6 * 3600,
        }
    }
}

/// Longest custom range, as the query API's longest `statsPeriod`.
pub(crate) const MAX_CUSTOM_SECS: i64 = 90 * 86_400;

/// Steps a custom range may use; the finest that gives at most [`MAX_STEPS`] points wins.
const CUSTOM_STEPS: [i64; 9] = [60, 300, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400];
const MAX_STEPS: i64 = 200;

/// What a page shows: a preset ending now, or a fixed `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    Preset(Period),
    Custom { since: i64, until: i64 },
}

impl Default for Range {
    fn default() -> Self {
        Range::Preset(Period::default())
    }
}

/// Why `?statsPeriod=`/`?since=&until=` could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeError {
    /// `statsPeriod` is not one of the presets.
    UnknownPeriod,
    /// `since`/`until` are not times, not in order, or span more than 90 days.
    BadCustom,
}

impl Range {
    /// From the URL's parameters; empty values count as absent (an empty form field).
    pub(crate) fn from_params(
        stats_period: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        now: i64,
    ) -> Result<Range, RangeError> {
        fn present(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        match (present(since), present(until)) {
            (None, None) => match present(stats_period) {
                None => Ok(Range::default()),
                Some(p) => Period::parse(p)
                    .map(Range::Preset)
                    .ok_or(RangeError::UnknownPeriod),
            },
            (since, until) => {
                let until = match until {
                    Some(u) => format::parse_time(u).ok_or(RangeError::BadCustom)?,
                    None => now,
                };
                let since = match since {
                    Some(s) => format::parse_time(s).ok_or(RangeError::BadCustom)?,
                    None => until - Period::default().secs(),
                };
                if since < 0 || since >= until || until - since > MAX_CUSTOM_SECS {
                    return Err(RangeError::BadCustom);
                }
                Ok(Range::Custom { since, until })
            }
        }
    }

    /// The preset, if this is one (the picker marks it).
    pub(crate) fn preset(self) -> Option<Period> {
        match self {
            Range::Preset(p) => Some(p),
            Range::Custom { .. } => None,
        }
    }

    /// `statsPeriod=…` or `since=…&until=…`, for links; the default preset is left out.
    pub(crate) fn query_pairs(self) -> Vec<(&'static str, String)> {
        match self {
            Range::Preset(p) if p == Period::default() => Vec::new(),
            Range::Preset(p) => vec![("statsPeriod", p.as_str().to_owned())],
            Range::Custom { since, until } => {
                vec![("since", since.to_string()), ("until", until.to_string())]
            }
        }
    }

    /// Where a page rendered at `now` reads from: step-aligned `[since, until)` and the
    /// chart step. Both ends are multiples of the step, so chart steps line up with the
    /// collector's step buckets; for presets the last (still filling) step is included.
    pub(crate) fn resolve(self, now: i64) -> Window {
        match self {
            Range::Preset(p) => {
                let step = p.step_secs();
                let until = (now.div_euclid(step) + 1) * step;
                Window {
                    since: until - p.secs(),
                    until,
                    step,
                }
            }
            Range::Custom { since, until } => {
                let span = until - since;
                let step = CUSTOM_STEPS
                    .into_iter()
                    .find(|s| (span + s - 1) / s <= MAX_STEPS)
                    .unwrap_or(86_400);
                Window {
                    since: since.div_euclid(step) * step,
                    until: until.div_euclid(step) * step + if until % step == 0 { 0 } else { step },
                    step,
                }
            }
        }
    }

    /// For the page sub-heading.
    pub(crate) fn label(self) -> String {
        match self {
            Range::Preset(p) => p.long_name().to_owned(),
            Range::Custom { .. } => "Custom range".to_owned(),
        }
    }
}

/// A resolved range: what the store is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) since: i64,
    pub(crate) until: i64,
    pub(crate) step: i64,
}

impl Window {
    /// `[since, until)` as the collector's reads take it.
    pub(crate) fn range(self) -> sightline_collector::TimeRange {
        sightline_collector::TimeRange {
            since: self.since,
            until: self.until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_123;

    #[test]
    fn parses_what_it_prints_and_nothing_else() {
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Some(p));
            assert_eq!(p.secs() % p.step_secs(), 0);
            assert!(p.secs() / p.step_secs() <= MAX_STEPS);
        }
        assert_eq!(Period::parse("1y"), None);
        assert_eq!(Period::parse(""), None);
        assert_eq!(Period::default(), Period::Hour1);
    }

    #[test]
    fn presets_are_step_aligned_and_cover_now() {
        for p in Period::ALL {
            let w = Range::Preset(p).resolve(NOW);
            assert_eq!(w.until - w.since, p.secs());
            assert_eq!(w.since % w.step, 0);
            assert!(w.since <= NOW && NOW < w.until);
        }
    }

    #[test]
    fn ranges_come_from_either_parameter_form() {
        let parse = |p, s, u| Range::from_params(p, s, u, NOW);
        assert_eq!(parse(None, None, None), Ok(Range::default()));
        assert_eq!(parse(Some(""), Some(""), Some("")), Ok(Range::default()));
        assert_eq!(
            parse(Some("7d"), None, None),
            Ok(Range::Preset(Period::Days7))
        );
        assert_eq!(
            parse(Some("2y"), None, None),
            Err(RangeError::UnknownPeriod)
        );
        assert_eq!(
            parse(None, Some("1000"), Some("2000")),
            Ok(Range::Custom {
                since: 1000,
                until: 2000
            })
        );
        // datetime-local form values, UTC; the custom range wins over a stale statsPeriod
        assert_eq!(
            parse(
                Some("1h"),
                Some("2023-11-14T21:00"),
                Some("2023-11-14T22:00")
            ),
            Ok(Range::Custom {
                since: 1_699_995_600,
                until: 1_699_999_200
            })
        );
        let recent = (NOW - 1000).to_string();
        assert_eq!(
            parse(None, Some(&recent), None),
            Ok(Range::Custom {
                since: NOW - 1000,
                until: NOW
            })
        );
        for (s, u) in [("2000", "1000"), ("x", "1000"), ("0", "99999999")] {
            assert_eq!(
                parse(None, Some(s), Some(u)),
                Err(RangeError::BadCustom),
                "{s} {u}"
            );
        }
    }

    #[test]
    fn custom_ranges_pick_a_step_with_at_most_200_points() {
        let w = Range::Custom {
            since: 1_000_030,
            until: 1_003_630,
        }
        .resolve(NOW);
        assert_eq!(w.step, 60);
        assert_eq!((w.since, w.until), (1_000_020, 1_003_680));
        let w = Range::Custom {
            since: 0,
            until: MAX_CUSTOM_SECS,
        }
        .resolve(NOW);
        assert_eq!(w.step, 43_200);
        assert!((w.until - w.since) / w.step <= MAX_STEPS);
    }

    #[test]
    fn links_carry_the_range() {
        assert!(Range::default().query_pairs().is_empty());
        assert_eq!(
            Range::Preset(Period::Days30).query_pairs(),
            [("statsPeriod", "30d".to_owned())]
        );
        assert_eq!(
            Range::Custom { since: 5, until: 9 }.query_pairs(),
            [("since", "5".to_owned()), ("until", "9".to_owned())]
        );
    }
}
