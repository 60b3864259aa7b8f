//! Errors: [`Error`] for the framework's own operations, [`JobError`] for a job's outcome.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::JobId;

/// What can go wrong when connecting, declaring or enqueueing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or wrong; `key` names it (`amqp.url`).
    #[error("invalid configuration `{key}`: {message}")]
    Config {
        /// The config key, dotted (`worker.concurrency`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The connection to RabbitMQ could not be opened.
    #[error("could not connect to RabbitMQ at {url}")]
    Connect {
        /// The broker URL, password hidden.
        url: String,
        /// The cause.
        #[source]
        source: amqprs::error::Error,
    },
    /// A broker operation (declare, open channel, consume...) failed.
    #[error("RabbitMQ operation `{op}` failed")]
    Amqp {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: amqprs::error::Error,
    },
    /// The job could not be encoded as MessagePack.
    #[error("could not encode job `{job}`")]
    Encode {
        /// The job type.
        job: &'static str,
        /// The cause.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// A queue or exchange name the broker cannot take.
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A queue or exchange exists with other settings than the config asks for.
    #[error("`{name}` exists on the broker with other settings: {detail}; delete it or change the config")]
    TopologyMismatch {
        /// The queue or exchange.
        name: String,
        /// The broker's words, naming the differing argument.
        detail: String,
    },
    /// The broker refused a declaration for another reason (permissions...).
    #[error("RabbitMQ refused `{op}` for `{name}`: {detail}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// The queue or exchange.
        name: String,
        /// The broker's words.
        detail: String,
    },
    /// The broker refused the message (`basic.nack`): it is not stored.
    #[error("RabbitMQ refused (nacked) message {id}")]
    Nacked {
        /// The message (job) id.
        id: JobId,
    },
    /// No queue is bound for the message's exchange and routing key: it was returned.
    #[error("message {id} is unroutable: no queue for routing key `{routing_key}` on exchange `{exchange}`")]
    Unroutable {
        /// The message (job) id.
        id: JobId,
        /// The exchange (empty: the default exchange).
        exchange: String,
        /// The routing key (for the default exchange, the queue name).
        routing_key: String,
    },
    /// The channel or connection closed before the broker confirmed the message:
    /// it may or may not be stored.
    #[error("the connection to RabbitMQ closed before message {id} was confirmed ({reason})")]
    Closed {
        /// The message (job) id.
        id: JobId,
        /// Why the channel closed, as far as known.
        reason: String,
    },
    /// The broker did not confirm the message within `amqp.confirm_timeout`.
    #[error("RabbitMQ did not confirm message {id} within {after:?}")]
    ConfirmTimeout {
        /// The message (job) id.
        id: JobId,
        /// The configured timeout.
        after: Duration,
    },
    /// The worker ran the called job and it failed; this is its error.
    #[error("call {id} failed ({kind}): {error}")]
    CallFailed {
        /// The job id.
        id: JobId,
        /// The kind of failure (`failed`, `panicked`, `timeout`…).
        kind: String,
        /// The worker's error text.
        error: String,
    },
    /// No answer came within the timeout; the job may still run (its late answer is dropped).
    #[error("no answer to call {id} within {after:?}")]
    CallTimeout {
        /// The job id.
        id: JobId,
        /// The timeout.
        after: Duration,
    },
    /// The answer did not decode as the job type's output.
    #[error("the answer to call {id} does not decode as the expected output")]
    BadReply {
        /// The job id.
        id: JobId,
        /// The cause.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The call does not apply to this kind of job.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// [`Job::enqueue`](crate::Job::enqueue) was called before [`Client::init_global`](crate::Client::init_global).
    #[error("no global jobs client: call `jobs_core::Client::init_global` at start (workers do this for you)")]
    NoGlobalClient,
    /// [`Client::init_global`](crate::Client::init_global) was called twice.
    #[error("the global jobs client is already set")]
    GlobalClientAlreadySet,
}

/// How the worker treats a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Retry with the job type's backoff (until retries exist: dead-letter).
    Retry,
    /// Retry after the given delay.
    RetryAfter(Duration),
    /// Do not retry: dead-letter now.
    Fatal,
}

/// The error a job's `perform` returns. Any `std::error::Error` converts into it
/// with `?` (a retryable failure); [`JobError::fatal`] and
/// [`JobError::retry_after`] say more.
///
/// The worker reacts by [`FailureKind`]: the failed job goes to `<queue>.dead`
/// with this error's text in its `x-error` header.
pub struct JobError {
    kind: FailureKind,
    error: Box<dyn StdError + Send + Sync>,
}

impl JobError {
    /// A retryable failure with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        JobError { kind: FailureKind::Retry, error: message.to_string().into() }
    }

    /// A failure that must not be retried (bad data, a permanent refusal).
    pub fn fatal(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        JobError { kind: FailureKind::Fatal, error: error.into() }
    }

    /// A failure to retry after `delay` (a rate limit, a service asking to wait).
    pub fn retry_after(error: impl Into<Box<dyn StdError + Send + Sync>>, delay: Duration) -> Self {
        JobError { kind: FailureKind::RetryAfter(delay), error: error.into() }
    }

    /// How the worker is to treat this failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for JobError {
    fn from(error: E) -> Self {
        JobError { kind: FailureKind::Retry, error: Box::new(error) }
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
        f.debug_struct("JobError").field("kind", &self.kind).field("error", &self.error).finish()
    }
}

/// An error and its causes on one line, for logs.
pub fn report(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
        assert_eq!(err.kind(), FailureKind::Retry);
        assert_eq!(err.to_string(), "outer: disk full");
    }

    #[test]
    fn fatal_and_retry_after_keep_their_kind() {
        assert_eq!(JobError::fatal("bad address").kind(), FailureKind::Fatal);
        let e = JobError::retry_after("rate limited", Duration::from_secs(5));
        assert_eq!(e.kind(), FailureKind::RetryAfter(Duration::from_secs(5)));
        assert_eq!(e.to_string(), "rate limited");
    }
}
