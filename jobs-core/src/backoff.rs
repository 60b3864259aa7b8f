//! Waiting before trying again: the delays between a job's attempts
//! ([`exponential`], [`constant`]), and [`Backoff`], the capped doubling pause
//! of every loop that retries the broker (connecting, reconnecting, setting up
//! queues, reading a stream, accepting connections).

use std::time::Duration;

/// A pause that starts at `first`, doubles after each use up to `max`, and
/// starts again from `first` after [`Backoff::reset`] (a success).
///
/// ```
/// use std::time::Duration;
/// let mut pause = jobs_core::backoff::Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
/// assert_eq!(pause.next(), Duration::from_millis(100));
/// assert_eq!(pause.next(), Duration::from_millis(200));
/// assert_eq!(pause.next(), Duration::from_millis(300)); // capped
/// pause.reset();
/// assert_eq!(pause.peek(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// The pause to wait now; the next one is twice as long, up to the cap.
    #[allow(clippy::should_implement_trait)] // an endless pause, not an iterator
    pub fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = now.saturating_mul(2).min(self.max);
        now
    }

    /// The pause [`Backoff::next`] would give, without moving on.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts again from the first pause.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for [`Backoff::next`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

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

    #[tokio::test(start_paused = true)]
    async fn a_backoff_doubles_to_its_cap_and_starts_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut waited = Vec::new();
        for _ in 0..6 {
            let before = tokio::time::Instant::now();
            backoff.wait().await;
            waited.push(before.elapsed().as_millis());
        }
        assert_eq!(waited, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        let before = tokio::time::Instant::now();
        backoff.wait().await;
        assert_eq!(before.elapsed(), Duration::from_millis(100));
        assert_eq!(backoff.peek(), Duration::from_millis(200));
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        assert_eq!(
            (huge.next(), huge.next(), huge.next()),
            (Duration::MAX / 2, Duration::MAX - Duration::from_nanos(1), Duration::MAX)
        );
    }

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
