//! A rate: so many jobs per second, minute or hour (`"100/s"`, `"10/m"`,
//! `"1/h"`), as `#[job(rate = "...")]` and `[[limits]] rate` say it.

use std::fmt;
use std::time::Duration;

/// The longest period of a rate: a day.
const MAX_PERIOD_MS: u64 = 86_400_000;

/// So many per period: at most `count` starts in any `per`, evenly spaced
/// once the burst is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    per_ms: u64,
}

impl Rate {
    /// `count` per `per` (what the derive emits for `rate = "100/s"`).
    ///
    /// # Panics
    /// When `count` is 0 or `per` is under a millisecond (the derive and
    /// [`Rate::parse`] never make one).
    pub const fn new(count: u32, per: Duration) -> Self {
        let per_ms = per.as_millis();
        assert!(
            count > 0 && per_ms > 0 && per_ms <= u64::MAX as u128,
            "a rate is at least 1 per a millisecond or more"
        );
        Rate { count, per_ms: per_ms as u64 }
    }

    /// `"100/s"`, `"10/m"`, `"1/h"` (also `sec`, `min`, `hour`, and a number
    /// of units, as in `"5/10s"`).
    ///
    /// # Errors
    /// What is wrong with the text, in words.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad =
            || format!("`{text}` is not a rate: write a count and a period, as in \"100/s\", \"10/m\" or \"1/h\"");
        let (count, period) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{text}`: the count must be at least 1 (remove the rate for no limit)"));
        }
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = period.split_at(split);
        let number: u64 = if number.is_empty() { 1 } else { number.parse().map_err(|_| bad())? };
        let unit_ms = match unit.trim() {
            "ms" => 1,
            "s" | "sec" | "second" => 1_000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            _ => return Err(bad()),
        };
        let per_ms = number.checked_mul(unit_ms).filter(|ms| *ms > 0).ok_or_else(bad)?;
        if per_ms > MAX_PERIOD_MS {
            return Err(format!("`{text}`: the period is at most a day (24h)"));
        }
        Ok(Rate { count, per_ms })
    }

    /// How many in each period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn per(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }

    /// The time between two starts at this rate (`per / count`).
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.per_ms as f64 / 1_000.0 / f64::from(self.count))
    }

    /// Starts per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) * 1_000.0 / self.per_ms as f64
    }
}

impl fmt::Display for Rate {
    /// As it is written: `100/s`, `10/m`, `5/10s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (number, unit) = match self.per_ms {
            ms if ms % 3_600_000 == 0 => (ms / 3_600_000, "h"),
            ms if ms % 60_000 == 0 => (ms / 60_000, "m"),
            ms if ms % 1_000 == 0 => (ms / 1_000, "s"),
            ms => (ms, "ms"),
        };
        match number {
            1 => write!(f, "{}/{unit}", self.count),
            n => write!(f, "{}/{n}{unit}", self.count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_written_and_say_what_is_wrong() {
        assert_eq!(Rate::parse("100/s"), Ok(Rate::new(100, Duration::from_secs(1))));
        assert_eq!(Rate::parse("10/m").map(|r| r.per()), Ok(Duration::from_secs(60)));
        assert_eq!(Rate::parse(" 1 / h ").map(|r| r.to_string()), Ok("1/h".into()));
        assert_eq!(Rate::parse("5/10s").map(|r| r.to_string()), Ok("5/10s".into()));
        assert_eq!(Rate::parse("20/s").map(|r| r.interval()), Ok(Duration::from_millis(50)));
        assert!(Rate::parse("0/s").unwrap_err().contains("at least 1"));
        assert!(Rate::parse("1/25h").unwrap_err().contains("at most a day"));
        for bad in ["100", "100/", "/s", "x/s", "10/d", "10/0s", "-1/s"] {
            assert!(Rate::parse(bad).unwrap_err().contains("not a rate"), "{bad}");
        }
    }
}
