//! What a job's `perform` reports: [`JobError`], and [`Retry`], whether and
//! when the worker tries it again.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Whether and when the worker retries a failed attempt ([`JobError::retry`]).
/// The worker's policy matches every variant (there is no catch-all): a new
/// one is a new rule there, decided on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retry after the job type's backoff, while attempts are left.
    Backoff,
    /// Retry after this delay, while attempts are left.
    After(Duration),
    /// Do not retry: the job goes to `<queue>.dead` now.
    Never,
    /// Not a failure: an outside service's rate limit was hit
    /// ([`JobError::rate_limited`]). The job comes back after this delay as
    /// the same attempt (at least a second later); after [`RATE_LIMITED_RUNS`]
    /// such returns in all (counted in `x-rate-limited` over the job's life),
    /// each further one counts as a failed attempt (then as [`Retry::After`]).
    RateLimited(Duration),
}

/// How many rate-limited returns of a job ([`JobError::rate_limited`]) are
/// free: each one past it counts as a failed attempt.
pub const RATE_LIMITED_RUNS: u64 = 20;

/// The error a job's `perform` returns. Any `std::error::Error` converts into it
/// with `?` (a retryable failure); [`JobError::fatal`] and
/// [`JobError::retry_after`] say more.
///
/// The worker reacts by [`JobError::retry`]: it publishes the next attempt
/// through the delay cascade, or, once no attempts are left or for
/// [`Retry::Never`], sends the job to `<queue>.dead` with this error's text in
/// its `x-error` header and the kind `failed` or `fatal` in `x-error-kind`.
pub struct JobError {
    retry: Retry,
    error: Box<dyn StdError + Send + Sync>,
}

impl JobError {
    /// A retryable failure with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        JobError { retry: Retry::Backoff, error: message.to_string().into() }
    }

    /// A failure that must not be retried (bad data, a permanent refusal).
    pub fn fatal(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        JobError { retry: Retry::Never, error: error.into() }
    }

    /// A failure to retry after `delay` (a rate limit, a service asking to wait).
    pub fn retry_after(error: impl Into<Box<dyn StdError + Send + Sync>>, delay: Duration) -> Self {
        JobError { retry: Retry::After(delay), error: error.into() }
    }

    /// The job hit an outside service's rate limit: it runs again after
    /// `after`, as the same attempt, not counted as a failure (Sidekiq's
    /// `OverLimit`). The wait goes through the broker's delay cascade, in
    /// whole seconds, rounded up.
    pub fn rate_limited(after: Duration) -> Self {
        JobError { retry: Retry::RateLimited(after), error: "rate limited".into() }
    }

    /// Whether and when the worker retries.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError { retry: Retry::Backoff, error: Box::new(error) }
    }
}

impl fmt::Display for JobError {
    /// The error and its chain of causes, `: `-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        let mut source = self.error.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError").field("retry", &self.retry).field("error", &self.error).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn question_mark_makes_a_retryable_error_with_its_causes() {
        fn fails() -> Result<(), JobError> {
            Err(Outer(std::io::Error::other("disk full")))?;
            Ok(())
        }
        let err = fails().unwrap_err();
        assert_eq!(err.retry(), Retry::Backoff);
        assert_eq!(err.to_string(), "outer: disk full");
    }

    #[test]
    fn fatal_and_retry_after_keep_their_kind() {
        assert_eq!(JobError::fatal("bad address").retry(), Retry::Never);
        let e = JobError::retry_after("rate limited", Duration::from_secs(5));
        assert_eq!(e.retry(), Retry::After(Duration::from_secs(5)));
        assert_eq!(e.to_string(), "rate limited");
        let e = JobError::rate_limited(Duration::from_secs(2));
        assert_eq!(e.retry(), Retry::RateLimited(Duration::from_secs(2)));
    }
}
