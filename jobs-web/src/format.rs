//! How the pages write things: times, spans, missing values, duration
//! bounds, numbers, and percent-encoded parts of links.

use std::time::Duration;

/// The last millisecond of year 9999, the last an RFC 3339 time can write.
const LAST_MS: u64 = 253_402_300_799_999;

/// A time as `2026-11-25 19:11:53 UTC` (times come from headers anyone can
/// write: one past year 9999 is written as a number).
pub(crate) fn time(ms: u64) -> String {
    if ms > LAST_MS {
        return format!("{ms} ms after 1970");
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', " UTC")
}

/// A time in seconds since the epoch, or `-`.
pub(crate) fn secs_to_time(secs: Option<u64>) -> String {
    show(secs.map(|s| time(s.saturating_mul(1000))))
}

/// A span as `3m 12s` (whole seconds).
pub(crate) fn span(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// A value, or `-` when there is none.
pub(crate) fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A count with thousands separated: `50,000`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A histogram bucket's upper bound as a duration.
pub(crate) fn bound(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s < 1.0 => format!("≤ {} ms", (s * 1000.0).round()),
        Some(s) => format!("≤ {s} s"),
        None => "> 30 min".into(),
    }
}

/// What a path segment or query value keeps as it is: RFC 3986's unreserved characters.
/// Percent-encodes a path segment or query value for a link.
pub(crate) use jobs_core::plumbing::percent_encode as encode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_are_written_plainly() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(span(192_500), "3m 12s");
        assert_eq!(show::<u8>(None), "-");
        assert_eq!(
            (count(0), count(999), count(1000), count(1_000_000)),
            ("0".into(), "999".into(), "1,000".into(), "1,000,000".into())
        );
        assert_eq!(bound(Some(0.005)), "≤ 5 ms");
        assert_eq!(encode("odd/id?x y#1"), "odd%2Fid%3Fx%20y%231");
        assert_eq!(secs_to_time(Some(u64::MAX)), "18446744073709551615 ms after 1970");
        assert_eq!(time(LAST_MS), "9999-12-31 23:59:59 UTC");
    }
}
