//! The time ranges the dashboard offers (`?statsPeriod=`), named as the query API names them.

/// A dashboard time range, always ending now.
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
}

impl Period {
    /// Every period, in the order the picker shows them.
    pub(crate) const ALL: [Period; 4] = [
        Period::Minutes15,
        Period::Hour1,
        Period::Hours24,
        Period::Days7,
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
        }
    }

    /// Spelled out, for link titles and the page sub-heading.
    pub(crate) fn long_name(self) -> &'static str {
        match self {
            Period::Minutes15 => "Last 15 minutes",
            Period::Hour1 => "Last hour",
            Period::Hours24 => "Last 24 hours",
            Period::Days7 => "Last 7 days",
        }
    }

    /// Length in seconds.
    pub(crate) fn secs(self) -> i64 {
        match self {
            Period::Minutes15 => 15 * 60,
            Period::Hour1 => 3600,
            Period::Hours24 => 24 * 3600,
            Period::Days7 => 7 * 24 * 3600,
        }
    }

    /// Chart step in seconds: 15 to 168 points per chart, enough to see shape without
    /// sending a point per pixel.
    pub(crate) fn step_secs(self) -> i64 {
        match self {
            Period::Minutes15 | Period::Hour1 => 60,
            Period::Hours24 => 15 * 60,
            Period::Days7 => 3600,
        }
    }

    /// The `[since, until)` range in unix seconds for a page rendered at `now`.
    ///
    /// Both ends are multiples of the step, so chart steps line up with the collector's
    /// step buckets and the last (still filling) step is included.
    pub(crate) fn range_at(self, now: i64) -> (i64, i64) {
        let step = self.step_secs();
        let until = (now.div_euclid(step) + 1) * step;
        (until - self.secs(), until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_nothing_else() {
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Some(p));
            assert_eq!(p.secs() % p.step_secs(), 0);
        }
        assert_eq!(Period::parse("1y"), None);
        assert_eq!(Period::parse(""), None);
        assert_eq!(Period::default(), Period::Hour1);
    }

    #[test]
    fn range_is_step_aligned_and_covers_now() {
        let now = 1_700_000_123;
        for p in Period::ALL {
            let (since, until) = p.range_at(now);
            assert_eq!(until - since, p.secs());
            assert_eq!(since % p.step_secs(), 0);
            assert!(since <= now && now < until);
        }
    }
}
