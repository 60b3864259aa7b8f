//! Settling a delivery: ack after success; after a failure, publish the dead copy,
//! wait for its confirm, then ack. Never ack first.

use std::sync::Arc;
use std::time::Duration;

use jobs_core::amqprs::channel::{BasicAckArguments, BasicRejectArguments, Channel};
use jobs_core::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::{headers, now_secs, set_header, topology, JobId, Outgoing, Publisher};
use tracing::{error, warn};

/// What a worker needs to settle deliveries.
#[derive(Debug)]
pub(crate) struct Settler {
    pub(crate) publisher: Publisher,
    pub(crate) worker: Arc<str>,
}

impl Settler {
    /// Acks a delivery whose job is done.
    pub(crate) async fn ack(&self, channel: &Channel, tag: u64) {
        if let Err(err) = channel.basic_ack(BasicAckArguments::new(tag, false)).await {
            // The channel is gone: the broker hands the job out again (at-least-once).
            error!(error = %err, "could not ack a finished job; it will be delivered again");
        }
    }

    /// Sends a delivery to `<queue>.dead` with the reason, then acks it. If the
    /// dead copy is not confirmed, the delivery goes back to its queue instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter(
        &self,
        channel: &Channel,
        tag: u64,
        queue: &str,
        props: &BasicProperties,
        body: Vec<u8>,
        kind: &'static str,
        reason: &str,
    ) {
        let mut table = props.headers().cloned().unwrap_or_else(FieldTable::new);
        set_header(
            &mut table,
            headers::ERROR,
            FieldValue::from(truncate(reason, 4096)),
        );
        set_header(&mut table, headers::ERROR_KIND, FieldValue::from(kind));
        set_header(&mut table, headers::FAILED_AT, FieldValue::T(now_secs()));
        set_header(&mut table, headers::WORKER, FieldValue::from(&*self.worker));
        set_header(&mut table, headers::QUEUE, FieldValue::from(queue));
        let id = props
            .message_id()
            .map(|s| JobId::from(s.as_str()))
            .unwrap_or_default();
        let mut properties = props.clone();
        properties
            .with_headers(table)
            .with_message_id(id.as_str())
            .with_persistence(true);
        let message = Outgoing {
            id: id.clone(),
            exchange: String::new(),
            routing_key: topology::dead_queue(queue),
            properties,
            body,
        };
        match self.publisher.publish(message).await {
            Ok(()) => {
                warn!(queue, job.id = %id, job.name = props.message_type().map(String::as_str), kind, reason, "dead-lettered");
                self.ack(channel, tag).await;
            }
            Err(err) => {
                error!(queue, job.id = %id, error = %err, "could not dead-letter a job; returning it to its queue");
                // Not in a hot loop: give the broker a moment before the job comes back.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(err) = channel
                    .basic_reject(BasicRejectArguments::new(tag, true))
                    .await
                {
                    error!(error = %err, "could not return the job; the broker will when the channel closes");
                }
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
