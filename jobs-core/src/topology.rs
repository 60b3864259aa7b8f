//! Names and declarations of the broker objects jobs use. Everything the
//! framework declares is declared here, idempotently, by client and worker alike.
//!
//! - `<queue>`: durable classic queue the jobs wait in;
//! - `<queue>.dead`: durable queue of jobs that failed for good or could not be read.

use amqprs::channel::{Channel, QueueDeclareArguments};

use crate::Error;

/// The dead-letter queue of `queue`.
pub fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Checks that `queue` can name a job queue (and its `.dead` twin).
///
/// # Errors
/// [`Error::InvalidName`] with the reason.
pub fn validate_queue_name(queue: &str) -> Result<(), Error> {
    let reason = if queue.is_empty() {
        "a queue name cannot be empty"
    } else if queue.len() > 250 {
        "longer than 250 bytes (the broker allows 255, and `.dead` is added)"
    } else if queue.starts_with("amq.") {
        "names starting with `amq.` are reserved by RabbitMQ"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: queue.to_owned(),
        reason,
    })
}

/// Declares `queue` and `<queue>.dead`, durable.
///
/// # Errors
/// [`Error::InvalidName`] for a bad name; [`Error::Amqp`] when the broker refuses
/// (for example a queue of that name exists with other arguments).
pub async fn declare_job_queue(channel: &Channel, queue: &str) -> Result<(), Error> {
    validate_queue_name(queue)?;
    for name in [queue.to_owned(), dead_queue(queue)] {
        channel
            .queue_declare(QueueDeclareArguments::durable_client_named(&name))
            .await
            .map_err(|source| Error::Amqp {
                op: "queue.declare",
                source,
            })?;
    }
    Ok(())
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
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("amq.direct").is_err());
        assert!(validate_queue_name(&"x".repeat(251)).is_err());
    }
}
