//! The names of the framework's queues and exchanges, and what a job type
//! says about where its jobs go: a queue and its `<queue>.dead`, or an
//! exchange of a kind; the queue type they are declared as.

use serde::Deserialize;

use crate::Error;

/// The longest job queue name: a delayed job's routing key is 56 bytes of bits,
/// then the queue name, and the broker allows 255.
pub const MAX_QUEUE_NAME: usize = 190;

/// The kind of queue jobs wait in (`amqp.queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Durable classic queues: one broker, or no replication needed.
    #[default]
    Classic,
    /// Replicated quorum queues (RabbitMQ clusters), with a delivery limit and
    /// at-least-once dead-lettering to `<queue>.dead`.
    Quorum,
}

/// The kind of an exchange that routed jobs go through (tutorials 3 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// Every bound queue gets every job: broadcast to the running workers.
    Fanout,
    /// Queues bound with the job's routing key get it.
    Direct,
    /// Queues bound with a matching pattern (`kern.*`, `*.critical`, `#`) get it.
    Topic,
}

impl ExchangeKind {
    /// The AMQP exchange type.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
        }
    }
}

/// Where a job type's jobs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To its queue (work queues: one worker runs each job).
    Queue,
    /// Through an exchange, to the queues of the workers subscribed to it.
    Exchange {
        /// The exchange's name.
        name: &'static str,
        /// Its kind.
        kind: ExchangeKind,
    },
}

/// The dead-letter queue of `queue`.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Shard `n` of base queue `queue`, for an ordered type's jobs (`<queue>.shard.<n>`).
pub fn shard_queue(queue: &str, n: u16) -> String {
    format!("{queue}.shard.{n}")
}

/// Checks that `queue` can name a job queue (and its `.dead` twin and delay keys).
///
/// # Errors
/// [`Error::InvalidName`] with the reason.
pub fn validate_queue_name(queue: &str) -> Result<(), Error> {
    let reason = if queue.is_empty() {
        "a queue name cannot be empty"
    } else if queue.len() > MAX_QUEUE_NAME {
        "longer than 190 bytes (a delayed job's routing key adds 56 to it, and the broker allows 255)"
    } else if queue.starts_with("amq.") {
        "names starting with `amq.` are reserved by RabbitMQ"
    } else if queue.split('.').any(|w| w == "*" || w == "#") {
        "a queue name cannot have `*` or `#` as a dot-separated word"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName { name: queue.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_queue_is_named_after_its_queue() {
        assert_eq!(dead_queue("emails"), "emails.dead");
    }

    #[test]
    fn bad_queue_names_are_refused() {
        assert!(validate_queue_name("emails").is_ok());
        assert!(validate_queue_name("a.b-c_d").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("amq.direct").is_err());
        assert!(validate_queue_name("a.*.b").is_err());
        assert!(validate_queue_name("#").is_err());
        assert!(validate_queue_name(&"x".repeat(191)).is_err());
        assert!(validate_queue_name(&"x".repeat(190)).is_ok());
    }
}
