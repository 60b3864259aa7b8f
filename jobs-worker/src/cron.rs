//! Cron expressions and the instants they fire at.
//!
//! Five fields (`minute hour day-of-month month day-of-week`), or six with
//! seconds first. Each field takes `*`, numbers, ranges `a-b`, steps `*/n` and
//! `a-b/n`, lists `a,b,c`; months and days also by name (`JAN`, `MON`), Sunday
//! as 0 or 7. When both day fields are restricted, a day matches either (as
//! in Vixie cron).
//!
//! Ticks are instants (UTC), computed in the schedule's time zone, with the
//! daylight-saving rules of Vixie cron:
//! - a schedule with a fixed hour (`30 2 * * *`, `0 9-17 * * *`) fires once on
//!   both change days: a time in the skipped hour fires right after the
//!   change (at the first instant of the new offset); a time in the repeated
//!   hour fires the first time only;
//! - a schedule whose hour field is a wildcard or a step (`0 * * * *`,
//!   `*/15 * * * *`) fires at every real instant that matches: the repeated
//!   hour counts twice, the skipped hour not at all.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: Field,
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    weekdays: Field,
    /// Day of month given as `*`: only the weekday restricts days.
    days_any: bool,
    /// Day of week given as `*`: only the day of month restricts days.
    weekdays_any: bool,
    /// The hour field is a wildcard or a step: every real matching instant fires.
    interval: bool,
}

/// Why a cron expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {reason}")]
pub struct CronError {
    text: String,
    reason: String,
}

/// The values a field allows, as bits 0 to 59.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field(u64);

impl Field {
    fn has(self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    /// The smallest allowed value at or above `n`.
    fn at_or_after(self, n: u32) -> Option<u32> {
        if n >= 64 {
            return None;
        }
        let rest = self.0 >> n;
        (rest != 0).then(|| n + rest.trailing_zeros())
    }
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's text: its bits, and whether it was a wildcard or stepped.
fn field(text: &str, what: &str, low: u32, high: u32, names: &[&str], base: u32) -> Result<(Field, bool), String> {
    let value = |part: &str| -> Result<u32, String> {
        if let Some(at) = names.iter().position(|n| n.eq_ignore_ascii_case(part)) {
            return Ok(at as u32 + base);
        }
        let n: u32 = part.parse().map_err(|_| format!("the {what} field has `{part}`, not a number"))?;
        if n < low || n > high {
            return Err(format!("the {what} field has {n}, outside {low}-{high}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    let mut loose = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("the {what} field has an empty item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 =
                    step.parse().map_err(|_| format!("the {what} field has step `{step}`, not a number"))?;
                if step == 0 {
                    return Err(format!("the {what} field has a step of 0"));
                }
                loose = true;
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            loose = true;
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("the {what} field has the range {a}-{b}, which runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15`: from 5 to the end, every 15.
            (a, if step > 1 { high } else { a })
        };
        let mut n = from;
        while n <= to {
            bits |= 1 << n;
            n += step;
        }
    }
    Ok((Field(bits), loose))
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, CronError> {
        let error = |reason: String| CronError { text: text.to_owned(), reason };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (seconds, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(error(format!(
                    "{n} fields; a cron expression has five (minute hour day month weekday), or six with seconds first"
                )))
            }
        };
        let (seconds, _) = field(seconds, "seconds", 0, 59, &[], 0).map_err(error)?;
        let (minutes, _) = field(rest[0], "minute", 0, 59, &[], 0).map_err(error)?;
        let (hours, hours_loose) = field(rest[1], "hour", 0, 23, &[], 0).map_err(error)?;
        let (days, _) = field(rest[2], "day-of-month", 1, 31, &[], 0).map_err(error)?;
        let (months, _) = field(rest[3], "month", 1, 12, &MONTHS, 1).map_err(error)?;
        let (weekdays, _) = field(rest[4], "day-of-week", 0, 7, &WEEKDAYS, 0).map_err(error)?;
        // Sunday is 0 or 7.
        let weekdays = Field((weekdays.0 | (weekdays.0 >> 7)) & 0x7f);
        let cron = Cron {
            text: text.to_owned(),
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any: rest[2] == "*",
            weekdays_any: rest[4] == "*",
            interval: hours_loose,
        };
        // A day that never comes (`0 0 30 2 *`) is an error now, not a schedule that never fires.
        let start = DateTime::constant(2000, 1, 1, 0, 0, 0, 0);
        if cron.next_civil(start).is_none() {
            return Err(error("it matches no day (the day of month never falls in those months)".into()));
        }
        Ok(cron)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

/// Days searched for a match before giving up: past any leap-day gap (8 years).
const SEARCH_DAYS: u32 = 9 * 366;

impl Cron {
    /// Whether the hour field is a wildcard or a step (its ticks follow real time through a change).
    pub fn is_interval(&self) -> bool {
        self.interval
    }

    fn matches_date(&self, date: Date) -> bool {
        if !self.months.has(date.month() as u32) {
            return false;
        }
        let day = self.days.has(date.day() as u32);
        let weekday = self.weekdays.has(date.weekday().to_sunday_zero_offset() as u32);
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        }
    }

    /// The first time of day at or after `h:m:s` that matches.
    fn time_at_or_after(&self, h: u32, m: u32, s: u32) -> Option<Time> {
        let mut hour = self.hours.at_or_after(h)?;
        loop {
            let (min_from, sec_from) = if hour == h { (m, s) } else { (0, 0) };
            let mut minute = self.minutes.at_or_after(min_from);
            while let Some(mi) = minute {
                let from = if hour == h && mi == m { sec_from } else { 0 };
                if let Some(second) = self.seconds.at_or_after(from) {
                    return Time::new(hour as i8, mi as i8, second as i8, 0).ok();
                }
                minute = self.minutes.at_or_after(mi + 1);
            }
            hour = self.hours.at_or_after(hour + 1)?;
        }
    }

    /// The first matching wall-clock time strictly after `after`.
    fn next_civil(&self, after: DateTime) -> Option<DateTime> {
        let mut date = after.date();
        let (h, m, s) = (after.hour() as u32, after.minute() as u32, after.second() as u32 + 1);
        // Carry a second past :59 into the next minute, and so on.
        let (h, m, s) = if s < 60 {
            (h, m, s)
        } else if m < 59 {
            (h, m + 1, 0)
        } else {
            (h + 1, 0, 0)
        };
        let mut from = (h < 24).then_some((h, m, s));
        for _ in 0..SEARCH_DAYS {
            if self.matches_date(date) {
                let (h, m, s) = from.unwrap_or((0, 0, 0));
                if let Some(time) = self.time_at_or_after(h, m, s) {
                    return Some(date.to_datetime(time));
                }
            }
            date = date.tomorrow().ok()?;
            from = Some((0, 0, 0));
        }
        None
    }

    /// The instants wall-clock time `at` fires at in `tz`: one; none (skipped
    /// by a change, for an interval schedule); the first instant after the
    /// change (skipped, fixed hour); or both passes of a repeated time (interval),
    /// the first only (fixed hour).
    fn instants(&self, tz: &TimeZone, at: DateTime) -> [Option<Timestamp>; 2] {
        let ambiguous = tz.to_ambiguous_timestamp(at);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => [offset.to_timestamp(at).ok(), None],
            AmbiguousOffset::Gap { before, .. } => {
                if self.interval {
                    return [None, None];
                }
                // The change itself: the last transition at or before this time read in the old offset.
                let late = before.to_timestamp(at).ok();
                let change = late.and_then(|late| {
                    let just_after = late.checked_add(SignedDuration::from_nanos(1)).ok()?;
                    tz.preceding(just_after).next().map(|t| t.timestamp())
                });
                [change, None]
            }
            AmbiguousOffset::Fold { before, after } => {
                let first = before.to_timestamp(at).ok();
                let second = if self.interval { after.to_timestamp(at).ok() } else { None };
                [first, second]
            }
        }
    }

    /// The first tick strictly after `after`, in `tz`; `None` if none comes
    /// within the next nine years.
    pub fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        // Wall-clock times before `after`'s own can fire after it when a
        // change is near (the repeated hour): start as far back as offsets
        // around it differ.
        let day = SignedDuration::from_hours(24);
        let offsets = [after.checked_sub(day).ok(), Some(after), after.checked_add(day).ok()]
            .into_iter()
            .flatten()
            .map(|t| tz.to_offset(t).seconds());
        let (low, high) = offsets.fold((i32::MAX, i32::MIN), |(l, h), o| (l.min(o), h.max(o)));
        let swing = SignedDuration::from_secs(i64::from(high - low));
        let mut at = tz.to_datetime(after).checked_sub(swing).ok()?;
        let mut best: Option<Timestamp> = None;
        loop {
            at = self.next_civil(at)?;
            let instants = self.instants(tz, at);
            // The earliest instant of later wall-clock times only grows: past the best, stop.
            if let (Some(best), Some(earliest)) = (best, instants.iter().flatten().min()) {
                if *earliest >= best {
                    return Some(best);
                }
            }
            for instant in instants.into_iter().flatten() {
                if instant > after && best.map_or(true, |b| instant < b) {
                    best = Some(instant);
                }
            }
            if let Some(b) = best {
                // Far past it in wall-clock time: nothing later can come first.
                if at > tz.to_datetime(b).checked_add(swing + SignedDuration::from_hours(1)).ok()? {
                    return Some(b);
                }
            }
        }
    }

    /// The ticks after `after` up to `until` (inclusive), at most `limit`, oldest first.
    pub fn between(&self, tz: &TimeZone, after: Timestamp, until: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut ticks = Vec::new();
        let mut at = after;
        while ticks.len() < limit {
            match self.next_after(tz, at) {
                Some(next) if next <= until => {
                    ticks.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> Cron {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The ticks of `text` in `zone` after `from` up to `until`, as UTC texts.
    fn ticks(text: &str, zone: &str, from: &str, until: &str) -> Vec<String> {
        cron(text).between(&tz(zone), ts(from), ts(until), 10_000).iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn fields_parse_with_names_ranges_steps_and_lists() {
        let c = cron("*/15 9-17 * JAN,jul MON-FRI");
        assert!(c.minutes.has(45) && !c.minutes.has(50) && c.hours.has(17) && !c.hours.has(18));
        assert!(c.months.has(1) && c.months.has(7) && !c.months.has(2));
        assert!(c.weekdays.has(1) && c.weekdays.has(5) && !c.weekdays.has(0));
        assert!(!c.is_interval(), "a fixed hour range");
        assert!(cron("0 */2 * * *").is_interval() && cron("0 * * * *").is_interval());
        assert!(cron("0 0 * * 7").weekdays.has(0), "Sunday as 7");
        assert_eq!(cron("5/20 * * * * *").seconds, Field((1 << 5) | (1 << 25) | (1 << 45)));
        assert_eq!(ticks("*/5 * * * * *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:00:15Z").len(), 3);
    }

    #[test]
    fn bad_expressions_say_why() {
        for (text, says) in [
            ("* * * *", "4 fields"),
            ("61 * * * *", "outside 0-59"),
            ("* 24 * * *", "outside 0-23"),
            ("* * 0 * *", "outside 1-31"),
            ("* * * FOO *", "`FOO`, not a number"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("1,,2 * * * *", "empty item"),
            ("0 0 30 2 *", "matches no day"),
        ] {
            let err = text.parse::<Cron>().expect_err(text).to_string();
            assert!(err.contains(says) && err.contains(text), "{text}: {err}");
        }
    }

    #[test]
    fn a_day_matches_either_day_field_when_both_are_given() {
        // The 13th, or any Friday (Vixie cron).
        let got = ticks("0 12 13 * FRI", "UTC", "2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            got,
            ["2026-03-06T12:00:00Z", "2026-03-13T12:00:00Z", "2026-03-20T12:00:00Z", "2026-03-27T12:00:00Z"]
        );
        assert_eq!(
            ticks("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", "2029-01-01T00:00:00Z"),
            ["2028-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn berlin_a_fixed_hour_in_the_skipped_hour_fires_right_after_the_change() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        let got = ticks("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(got, ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
        // Two times in the skipped hour fire once, at the change.
        let got = ticks("0,30 2 * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", "2026-03-29T12:00:00Z");
        assert_eq!(got, ["2026-03-29T01:00:00Z"]);
    }

    #[test]
    fn berlin_a_fixed_hour_in_the_repeated_hour_fires_the_first_time_only() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 comes twice.
        let got = ticks("30 2 * * *", "Europe/Berlin", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(got, ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        // From inside the second pass, the first is not fired again.
        let got = ticks("30 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", "2026-10-26T00:00:00Z");
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn berlin_hourly_counts_the_repeated_hour_twice_and_the_skipped_hour_not_at_all() {
        let got = ticks("0 * * * *", "Europe/Berlin", "2026-10-24T21:30:00Z", "2026-10-25T03:30:00Z");
        // 00:00, 01:00, 02:00 CEST, then 02:00, 03:00, 04:00 CET.
        let want = ["22:00", "23:00", "00:00", "01:00", "02:00", "03:00"];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (got, want) in got.iter().zip(want) {
            assert!(got.contains(&format!("T{want}:00Z")), "{got} vs {want}");
        }
        // Every hour inside the second pass too: from 02:40 CEST the next is 02:00 CET.
        assert_eq!(
            ticks("0 * * * *", "Europe/Berlin", "2026-10-25T00:40:00Z", "2026-10-25T01:00:00Z"),
            ["2026-10-25T01:00:00Z"]
        );
        let got = ticks("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", "2026-03-29T02:30:00Z");
        // 01:00 CET, then 03:00 and 04:00 CEST: no 02:00.
        assert_eq!(got, ["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]);
        let minutes = ticks("* * * * *", "Europe/Berlin", "2026-10-24T23:59:30Z", "2026-10-25T02:00:00Z");
        assert_eq!(minutes.len(), 121, "every real minute, the repeated hour's too");
        let minutes = ticks("* * * * *", "Europe/Berlin", "2026-03-29T00:29:30Z", "2026-03-29T01:30:00Z");
        assert_eq!(minutes.len(), 61, "every real minute across the skipped hour");
    }

    #[test]
    fn new_york_both_changes() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
        assert_eq!(
            ticks("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 comes twice.
        assert_eq!(
            ticks("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        let quarters = ticks("*/15 * * * *", "America/New_York", "2026-11-01T04:59:00Z", "2026-11-01T07:00:00Z");
        assert_eq!(quarters.len(), 9, "every real quarter hour: {quarters:?}");
        let hours = ticks("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", "2026-03-08T08:30:00Z");
        // 01:00 EST, then 03:00 and 04:00 EDT.
        assert_eq!(hours, ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]);
    }

    #[test]
    fn utc_has_no_changes_and_next_is_strictly_after() {
        let c = cron("0 3 * * *");
        let utc = TimeZone::UTC;
        assert_eq!(c.next_after(&utc, ts("2026-06-01T03:00:00Z")), Some(ts("2026-06-02T03:00:00Z")));
        assert_eq!(c.next_after(&utc, ts("2026-06-01T02:59:59Z")), Some(ts("2026-06-01T03:00:00Z")));
        assert_eq!(c.between(&utc, ts("2026-06-01T00:00:00Z"), ts("2026-07-01T00:00:00Z"), 5).len(), 5, "bounded");
    }
}
