//! Retry delays.

use std::time::Duration;

/// The longest default delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Sidekiq's schedule: `attempt⁴ + 15 s` plus a jitter of up to `10 × (attempt + 1)` s,
/// capped at [`MAX_DELAY`]. After attempt 1 about 16–36 s, after 5 about 11 min,
/// after 10 about 2.8 h, after 20 about 1.9 days; 25 attempts span about 3 weeks.
pub fn exponential(attempt: u32) -> Duration {
    let n = u64::from(attempt);
    let base = n.saturating_pow(4).saturating_add(15);
    let jitter = fastrand::u64(0..=10) * (n + 1);
    Duration::from_secs(base.saturating_add(jitter)).min(MAX_DELAY)
}

/// The same delay after every failure.
pub fn constant(delay: Duration) -> impl Fn(u32) -> Duration {
    move |_| delay
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_grows_with_jitter_in_bounds_and_is_capped() {
        for attempt in 1..=30u32 {
            let n = u64::from(attempt);
            for _ in 0..20 {
                let d = exponential(attempt).as_secs();
                let low = (n.pow(4) + 15).min(MAX_DELAY.as_secs());
                let high = (n.pow(4) + 15 + 10 * (n + 1)).min(MAX_DELAY.as_secs());
                assert!((low..=high).contains(&d), "attempt {attempt}: {d} not in {low}..={high}");
            }
        }
        assert!(exponential(2) < exponential(6));
        assert_eq!(exponential(u32::MAX), MAX_DELAY);
        assert_eq!(constant(Duration::from_secs(3))(9), Duration::from_secs(3));
    }
}
