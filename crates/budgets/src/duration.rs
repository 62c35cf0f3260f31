//! Budget durations (`30s`, `15m`, `1h`, `1d`, `7d`, `2w`, `1mo`, `daily`...) and the calendar
//! math of their windows, in UTC.

use std::fmt;
use std::str::FromStr;

use crate::BudgetError;

const SECOND: u64 = 1_000;
const DAY: u64 = 86_400 * SECOND;

/// How long a budget window lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetDuration {
    /// A fixed number of milliseconds (`30s`, `1h`, `7d`, `2w`...).
    Millis(u64),
    /// Calendar months (`1mo`, `3mo`): from a start, the same day and time `n` months later,
    /// clamped to the end of a shorter month (Jan 31 + 1mo = Feb 28, or 29 in a leap year).
    Months(u32),
}

impl BudgetDuration {
    /// Parses LiteLLM's duration strings: `N` followed by `s`, `m`, `h`, `d`, `w` or `mo` (a
    /// bare `N` is seconds, as LiteLLM's `(\d+)(mo|[smhdw]?)`), or `hourly`, `daily`, `weekly`,
    /// `monthly` (LiteLLM's aliases: 1h, 24h, 7d, 30d).
    ///
    /// ```
    /// use ferrolite_budgets::BudgetDuration;
    /// assert_eq!("1d".parse(), Ok(BudgetDuration::Millis(86_400_000)));
    /// assert_eq!("1mo".parse(), Ok(BudgetDuration::Months(1)));
    /// assert!("0d".parse::<BudgetDuration>().is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, BudgetError> {
        let invalid = |reason: &'static str| BudgetError::InvalidDuration {
            value: value.to_string(),
            reason,
        };
        let text = value.trim();
        match text {
            "hourly" => return Ok(BudgetDuration::Millis(3_600 * SECOND)),
            "daily" => return Ok(BudgetDuration::Millis(DAY)),
            "weekly" => return Ok(BudgetDuration::Millis(7 * DAY)),
            "monthly" => return Ok(BudgetDuration::Millis(30 * DAY)),
            _ => {}
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid(
                "expected a positive whole number then s, m, h, d, w or mo (e.g. 30d), or hourly/daily/weekly/monthly",
            ));
        }
        let (number, unit) = text.split_at(digits);
        let n: u64 = number
            .parse()
            .map_err(|_| invalid("the number is too large"))?;
        if n == 0 {
            return Err(invalid("a budget window must be longer than 0"));
        }
        let unit_ms = match unit {
            "" | "s" => SECOND,
            "m" => 60 * SECOND,
            "h" => 3_600 * SECOND,
            "d" => DAY,
            "w" => 7 * DAY,
            "mo" => {
                let months = u32::try_from(n).ok().filter(|m| *m <= 12_000);
                return months
                    .map(BudgetDuration::Months)
                    .ok_or_else(|| invalid("at most 12000 months"));
            }
            _ => return Err(invalid("the unit must be s, m, h, d, w or mo")),
        };
        // Windows must fit the millisecond clock comfortably: at most ~1000 years.
        n.checked_mul(unit_ms)
            .filter(|ms| *ms <= 366 * 1_000 * DAY)
            .map(BudgetDuration::Millis)
            .ok_or_else(|| invalid("the duration is too long"))
    }

    /// The end of the window that starts at `start_ms` (Unix ms, UTC).
    pub fn end_of_window(self, start_ms: u64) -> u64 {
        match self {
            BudgetDuration::Millis(ms) => start_ms.saturating_add(ms),
            BudgetDuration::Months(n) => add_months(start_ms, n),
        }
    }

    /// The start of the calendar-aligned window containing `now_ms` (UTC): for whole days and
    /// weeks, midnight (weeks begin on Monday); for months, the first of the month, with
    /// `n`-month windows counted from January; other durations are multiples of the duration
    /// since the Unix epoch.
    pub fn aligned_start(self, now_ms: u64) -> u64 {
        match self {
            BudgetDuration::Months(n) => {
                let (year, month, _) = civil_from_days((now_ms / DAY) as i64);
                let index = year * 12 + i64::from(month - 1);
                let start = index - index.rem_euclid(i64::from(n));
                // A block that began before 1970 is clamped to the epoch (clocks do not go there).
                let days =
                    days_from_civil(start.div_euclid(12), (start.rem_euclid(12) + 1) as u32, 1);
                u64::try_from(days).unwrap_or(0).saturating_mul(DAY)
            }
            BudgetDuration::Millis(ms) if ms % (7 * DAY) == 0 => {
                // 1970-01-01 was a Thursday: Mondays are 4 days later, modulo 7.
                let monday = 4 * DAY;
                if now_ms < monday {
                    return 0;
                }
                now_ms - (now_ms - monday) % ms
            }
            BudgetDuration::Millis(ms) => now_ms - now_ms % ms,
        }
    }
}

impl FromStr for BudgetDuration {
    type Err = BudgetError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl fmt::Display for BudgetDuration {
    /// The canonical spelling (`1d`, `90m`, `1mo`), used in keys: it parses back to the same
    /// duration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BudgetDuration::Months(n) => write!(f, "{n}mo"),
            BudgetDuration::Millis(ms) => {
                for (unit, size) in [
                    ("w", 7 * DAY),
                    ("d", DAY),
                    ("h", 3_600 * SECOND),
                    ("m", 60 * SECOND),
                ] {
                    if ms % size == 0 {
                        return write!(f, "{}{unit}", ms / size);
                    }
                }
                if ms % SECOND == 0 {
                    write!(f, "{}s", ms / SECOND)
                } else {
                    // Not reachable from `parse`; shown in seconds with a fraction for humans.
                    write!(f, "{}ms", ms)
                }
            }
        }
    }
}

/// `start_ms` plus `n` calendar months, same time of day, the day clamped to the month's end.
fn add_months(start_ms: u64, n: u32) -> u64 {
    let day_index = (start_ms / DAY) as i64;
    let time_of_day = start_ms % DAY;
    let (year, month, day) = civil_from_days(day_index);
    let index = year * 12 + i64::from(month - 1) + i64::from(n);
    let (y, m) = (index.div_euclid(12), (index.rem_euclid(12) + 1) as u32);
    let d = day.min(days_in_month(y, m));
    (days_from_civil(y, m, d) as u64) * DAY + time_of_day
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant, "chrono-compatible
/// low-level date algorithms").
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(y: i64, mo: u32, d: u32, h: u64) -> u64 {
        days_from_civil(y, mo, d) as u64 * DAY + h * 3_600_000
    }

    #[test]
    fn good_durations_parse() {
        for (text, want) in [
            ("30s", BudgetDuration::Millis(30_000)),
            ("15m", BudgetDuration::Millis(900_000)),
            ("1h", BudgetDuration::Millis(3_600_000)),
            ("1d", BudgetDuration::Millis(DAY)),
            ("7d", BudgetDuration::Millis(7 * DAY)),
            ("2w", BudgetDuration::Millis(14 * DAY)),
            ("1mo", BudgetDuration::Months(1)),
            ("12mo", BudgetDuration::Months(12)),
            ("45", BudgetDuration::Millis(45_000)),
            ("hourly", BudgetDuration::Millis(3_600_000)),
            ("daily", BudgetDuration::Millis(DAY)),
            ("weekly", BudgetDuration::Millis(7 * DAY)),
            ("monthly", BudgetDuration::Millis(30 * DAY)),
        ] {
            assert_eq!(BudgetDuration::parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_name_the_value() {
        for bad in [
            "0d",
            "-1h",
            "1x",
            "",
            "d",
            "1.5h",
            "99999999999999999999d",
            "4000000d",
            "1 d",
            "mo",
            "0mo",
        ] {
            match BudgetDuration::parse(bad) {
                Err(BudgetError::InvalidDuration { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn months_clamp_to_the_end_of_shorter_months_and_know_leap_years() {
        let one = BudgetDuration::Months(1);
        assert_eq!(one.end_of_window(ms(2025, 1, 31, 10)), ms(2025, 2, 28, 10));
        assert_eq!(one.end_of_window(ms(2024, 1, 31, 10)), ms(2024, 2, 29, 10));
        assert_eq!(one.end_of_window(ms(2024, 2, 29, 0)), ms(2024, 3, 29, 0));
        assert_eq!(one.end_of_window(ms(2025, 12, 15, 23)), ms(2026, 1, 15, 23));
        assert_eq!(
            BudgetDuration::Months(12).end_of_window(ms(2024, 2, 29, 0)),
            ms(2025, 2, 28, 0)
        );
        assert_eq!(one.end_of_window(ms(2025, 3, 31, 0)), ms(2025, 4, 30, 0));
    }

    #[test]
    fn calendar_alignment() {
        let now = ms(2026, 11, 22, 15) + 1_234; // a Sunday afternoon
        assert_eq!(
            BudgetDuration::Millis(DAY).aligned_start(now),
            ms(2026, 11, 22, 0)
        );
        assert_eq!(
            BudgetDuration::Millis(7 * DAY).aligned_start(now),
            ms(2026, 11, 16, 0)
        ); // Monday
        assert_eq!(
            BudgetDuration::Months(1).aligned_start(now),
            ms(2026, 11, 1, 0)
        );
        assert_eq!(
            BudgetDuration::Months(3).aligned_start(now),
            ms(2026, 10, 1, 0)
        );
        assert_eq!(
            BudgetDuration::Millis(3_600_000).aligned_start(now),
            ms(2026, 11, 22, 15)
        );
        assert_eq!(
            BudgetDuration::Months(1).aligned_start(ms(2024, 2, 29, 23)),
            ms(2024, 2, 1, 0)
        );
    }

    proptest! {
        #[test]
        fn civil_dates_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn durations_print_and_parse_back(n in 1u64..100_000, unit in 0usize..6) {
            let text = format!("{n}{}", ["s", "m", "h", "d", "w", "mo"][unit]);
            match BudgetDuration::parse(&text) {
                Ok(parsed) => prop_assert_eq!(BudgetDuration::parse(&parsed.to_string()), Ok(parsed)),
                // Out of range (e.g. more than 12000 months): a typed error naming the value.
                Err(BudgetError::InvalidDuration { value, .. }) => prop_assert_eq!(value, text),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn month_windows_end_later_and_aligned_windows_contain_now(start_day in 0u64..40_000, h in 0u64..24, n in 1u32..25) {
            let start = start_day * DAY + h * 3_600_000;
            let d = BudgetDuration::Months(n);
            let end = d.end_of_window(start);
            prop_assert!(end > start + u64::from(n) * 27 * DAY && end <= start + u64::from(n) * 31 * DAY + DAY);
            let aligned = d.aligned_start(start);
            prop_assert!(aligned <= start && d.end_of_window(aligned) > start);
        }
    }
}
