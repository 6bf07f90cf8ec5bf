//! Budget periods: the window `[start, end)` (UTC microseconds) that contains a given instant, for days,
//! ISO weeks and calendar months that begin at local midnight in the budget's time zone, or a fixed window.

use chrono::{Datelike, Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
    Fixed,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Fixed => "fixed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeriodSpec {
    pub period: Period,
    pub tz: Tz,
    /// `fixed` only: (start, end) in UTC microseconds.
    pub fixed: Option<(i64, i64)>,
}

/// Local midnight of `d` in `tz` as UTC microseconds. A midnight skipped by a DST change (some zones
/// move clocks at 00:00) becomes the first instant of that day that exists.
fn local_midnight(tz: Tz, d: NaiveDate) -> Option<i64> {
    let naive = d.and_hms_opt(0, 0, 0)?;
    for h in 0..3 {
        let t = naive + Duration::hours(h);
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return Some(dt.timestamp_micros());
        }
    }
    None
}

impl PeriodSpec {
    /// The window containing `now_us`, or `None` when a fixed window does not contain it (the budget
    /// then covers no calls).
    pub fn window(&self, now_us: i64) -> Option<(i64, i64)> {
        if let Some((s, e)) = self.fixed {
            return (now_us >= s && now_us < e).then_some((s, e));
        }
        let now = self.tz.from_utc_datetime(&chrono::DateTime::from_timestamp_micros(now_us)?.naive_utc());
        let today = now.date_naive();
        let (first, next) = match self.period {
            Period::Day => (today, today.succ_opt()?),
            Period::Week => {
                let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
                (monday, monday + Duration::days(7))
            }
            Period::Month => {
                let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1)?;
                let next = if today.month() == 12 {
                    NaiveDate::from_ymd_opt(today.year() + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)?
                };
                (first, next)
            }
            Period::Fixed => return None,
        };
        Some((local_midnight(self.tz, first)?, local_midnight(self.tz, next)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    fn spec(period: Period, tz: &str) -> PeriodSpec {
        PeriodSpec { period, tz: tz.parse().unwrap(), fixed: None }
    }

    #[test]
    fn month_rolls_over_at_local_midnight() {
        let p = spec(Period::Month, "America/New_York");
        // 2026-01-31 23:59:59 in New York is 2026-02-01 04:59:59 UTC: still January there.
        let jan = p.window(us("2026-02-01T04:59:59Z")).unwrap();
        assert_eq!(jan, (us("2026-01-01T05:00:00Z"), us("2026-02-01T05:00:00Z")));
        let feb = p.window(us("2026-02-01T05:00:00Z")).unwrap();
        assert_eq!(feb, (us("2026-02-01T05:00:00Z"), us("2026-03-01T05:00:00Z")));
        // March has the DST change: the window ends at midnight EDT (04:00 UTC).
        let mar = p.window(us("2026-03-15T12:00:00Z")).unwrap();
        assert_eq!(mar, (us("2026-03-01T05:00:00Z"), us("2026-04-01T04:00:00Z")));
        let dec = spec(Period::Month, "Pacific/Auckland").window(us("2026-12-31T11:00:00Z")).unwrap();
        assert_eq!(dec.0, us("2026-12-31T11:00:00Z"), "already January 2027 in Auckland");
    }

    #[test]
    fn day_week_and_fixed() {
        let d = spec(Period::Day, "Europe/Berlin").window(us("2026-06-10T21:59:00Z")).unwrap();
        assert_eq!(d, (us("2026-06-09T22:00:00Z"), us("2026-06-10T22:00:00Z")));
        // 2026-06-10 is a Wednesday.
        let w = spec(Period::Week, "UTC").window(us("2026-06-10T12:00:00Z")).unwrap();
        assert_eq!(w, (us("2026-06-08T00:00:00Z"), us("2026-06-15T00:00:00Z")));
        let f = PeriodSpec { period: Period::Fixed, tz: Tz::UTC, fixed: Some((10, 20)) };
        assert_eq!(f.window(9), None);
        assert_eq!(f.window(10), Some((10, 20)));
        assert_eq!(f.window(20), None);
    }
}
