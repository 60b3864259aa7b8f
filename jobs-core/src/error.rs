//! [`Error`]: what can go wrong in the framework's own operations (connecting,
//! declaring, enqueueing, calling). What a job reports is `job_error.rs`.

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
        source: Cause,
    },
    /// RabbitMQ refused the login (`403 ACCESS_REFUSED` on connecting).
    #[error("RabbitMQ refused the login of user `{user}` at {at}: wrong user or password?")]
    LoginRefused {
        /// The user of `amqp.url`.
        user: String,
        /// Host and port.
        at: String,
    },
    /// The vhost of `amqp.url` does not exist (`530 NOT_ALLOWED` on connecting).
    #[error("vhost `{vhost}` does not exist on {at} (amqp.url)")]
    NoVhost {
        /// The vhost.
        vhost: String,
        /// Host and port.
        at: String,
    },
    /// The user lacks a permission (`403 ACCESS_REFUSED` on a declare, publish
    /// or consume; `530` for the vhost itself).
    #[error("RabbitMQ refused user `{user}` the {permission} permission on {resource}")]
    AccessRefused {
        /// The user.
        user: String,
        /// The permission, quoted: `` `configure` ``, `` `write` ``, `` `read` ``
        /// (`` `configure` or `read` `` for a queue that dead-letters), `` `access` `` (to a vhost).
        permission: &'static str,
        /// What it was refused on, with its vhost.
        resource: String,
        /// The broker's words.
        detail: String,
    },
    /// The broker blocks publishers (a memory or disk alarm) and did not
    /// confirm the message within `amqp.confirm_timeout`; it is not stored.
    #[error("RabbitMQ is blocking publishers ({reason}) and did not take message {id} within {after:?}: an alarm on the broker must clear first")]
    Blocked {
        /// The message (job) id.
        id: JobId,
        /// The broker's reason (`low on memory`, `low on disk`).
        reason: String,
        /// The configured confirm timeout.
        after: Duration,
    },
    /// A batch ([`Client::enqueue_many`](crate::Client::enqueue_many),
    /// [`Client::enqueue_iter`](crate::Client::enqueue_iter)) stopped after
    /// sending some of its jobs: which are confirmed, which are not, and why.
    #[error(transparent)]
    BatchIncomplete(Box<crate::BatchIncomplete>),
    /// The broker refused the message for good (over its `max_message_size`,
    /// say): it is not stored, and sending it again would not help.
    #[error("RabbitMQ refused message {id}: {detail}")]
    MessageRefused {
        /// The message (job) id.
        id: JobId,
        /// The broker's words.
        detail: String,
    },
    /// The encoded job is larger than `amqp.max_message_size`: not sent.
    #[error("message {id} is {size} bytes, over amqp.max_message_size ({limit} bytes); not sent")]
    TooLarge {
        /// The message (job) id.
        id: JobId,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The steps of a chain after its first are too large to travel in its
    /// first step's headers (a content header is one frame): not sent.
    #[error("a chain of {steps} steps is too large to enqueue: its steps after the first encode to {bytes} bytes, over the {limit} that travel with a job in its headers; hand the steps keys to what they need instead of the data")]
    ChainTooLarge {
        /// The chain's steps.
        steps: usize,
        /// What its steps after the first encode to.
        bytes: usize,
        /// The limit ([`MAX_CHAIN_BYTES`](crate::MAX_CHAIN_BYTES)).
        limit: usize,
    },
    /// A broker operation (declare, open channel, consume...) failed.
    #[error("RabbitMQ operation `{op}` failed")]
    Amqp {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: Cause,
    },
    /// The job could not be encoded as MessagePack.
    #[error("could not encode job `{job}`")]
    Encode {
        /// The job type.
        job: &'static str,
        /// The cause.
        #[source]
        source: Cause,
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
    #[error("`{name}` exists on the broker with other settings: {detail}; {migration}")]
    TopologyMismatch {
        /// The queue or exchange.
        name: String,
        /// The broker's words, naming the differing argument.
        detail: String,
        /// What to do, and where the docs say how.
        migration: &'static str,
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
        kind: crate::FailureKind,
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
        source: Cause,
    },
    /// A queue could not be read to its end (a channel of the reading closed
    /// under it): what it held went back to the queue.
    #[error("could not read `{queue}`: {reason}")]
    QueueRead {
        /// The queue.
        queue: String,
        /// Why.
        reason: String,
    },
    /// Another job holds the unique key ([`EnqueueOptions::unique_key`](crate::EnqueueOptions),
    /// `#[job(unique_for = "10m")]`): nothing was published. Not a failure:
    /// `existing` is the job that will run.
    #[error("a job with the same unique key is queued or running already: {existing}")]
    Duplicate {
        /// The id of the job that holds the key.
        existing: JobId,
    },
    /// A unique job could not be checked (no unique keeper answered, a bad
    /// `unique_key`): nothing was published.
    #[error("the unique job {job} was not enqueued: {reason}")]
    Unique {
        /// The job type.
        job: String,
        /// Why.
        reason: String,
    },
    /// A priority the job's queue cannot take: out of 0–9, for a type whose
    /// queue has no priorities, or on quorum queues (which have none on
    /// RabbitMQ 3.10): nothing was published.
    #[error("job {job} was not enqueued: {reason}")]
    Priority {
        /// The job type.
        job: String,
        /// Why.
        reason: String,
    },
    /// The call does not apply to this kind of job.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// [`Job::enqueue`](crate::Job::enqueue) was called with no client set:
    /// neither [`Client::init_global`](crate::Client::init_global) nor a [`Client::scope`](crate::Client::scope).
    #[error("no jobs client: call `jobs_core::Client::init_global_from_config()` at start (workers do this for you), or run inside `Client::scope`")]
    NoGlobalClient,
    /// [`Client::init_global`](crate::Client::init_global) was called twice.
    #[error("the global jobs client is already set")]
    GlobalClientAlreadySet,
}

/// The underlying cause of an [`Error`], from the broker client or the
/// MessagePack codec. Opaque, so that their versions are not part of this API;
/// its `Display` is the cause's message and `source()` goes on down the chain.
pub struct Cause(Box<dyn StdError + Send + Sync>);

impl Cause {
    pub(crate) fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Cause(error.into())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl Error {
    /// Whether trying again cannot help: a config error, a refused login, a
    /// missing vhost or permission, a topology mismatch, a refused message.
    /// A worker stops at start for these; network trouble and closed channels
    /// are retried instead.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::LoginRefused { .. }
                | Error::NoVhost { .. }
                | Error::AccessRefused { .. }
                | Error::TopologyMismatch { .. }
                | Error::InvalidName { .. }
                | Error::MessageRefused { .. }
                | Error::TooLarge { .. }
                | Error::ChainTooLarge { .. }
                | Error::Unsupported(_)
                | Error::Priority { .. }
        )
    }

    /// Maps an amqprs error of operation `op`.
    pub(crate) fn amqp(op: &'static str) -> impl Fn(amqprs::error::Error) -> Error {
        move |source| Error::Amqp { op, source: Cause::new(source) }
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
    fn a_report_has_the_causes_on_one_line() {
        assert_eq!(report(&Outer(std::io::Error::other("disk full"))), "outer: disk full");
    }
}
