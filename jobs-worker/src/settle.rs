//! Settling a delivery. Exactly one of: ack (done); publish a copy (retry,
//! crash-counted requeue, or dead letter), wait for its confirm, then ack; or
//! leave it unacked (the broker hands it out again). Never ack first.

use std::sync::Arc;
use std::time::Duration;

use jobs_core::amqprs::channel::{BasicAckArguments, BasicRejectArguments, Channel};
use jobs_core::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::topology::{dead_queue, Topology};
use jobs_core::{header_u64, headers, now_secs, set_header, JobId, Outgoing, Publisher};
use tracing::{debug, error, info, warn};

/// Where a settled copy goes.
struct Copy<'a> {
    exchange: String,
    routing_key: String,
    what: &'a str,
}

/// What a worker needs to settle deliveries on one connection.
#[derive(Debug)]
pub(crate) struct Settler {
    pub(crate) publisher: Publisher,
    pub(crate) worker: Arc<str>,
    pub(crate) host: String,
    pub(crate) topology: Topology,
}

impl Settler {
    /// Acks a delivery whose job is done.
    pub(crate) async fn ack(&self, channel: &Channel, tag: u64) {
        if let Err(err) = channel.basic_ack(BasicAckArguments::new(tag, false)).await {
            // The channel is gone: the broker hands the job out again (at-least-once).
            error!(error = %err, "could not ack a settled job; it will be delivered again");
        }
    }

    /// Sends a delivery to `<queue>.dead` with the reason, then acks it.
    pub(crate) async fn dead_letter(&self, d: &Delivery<'_>, kind: &'static str, reason: &str) {
        let copy = Copy { exchange: String::new(), routing_key: dead_queue(d.queue), what: "dead-lettered" };
        // The attempt it ended on, said even for a first attempt (which goes without).
        let done = self.forward(d, copy, |t| self.failure_headers(t, d, kind, reason, d.attempt())).await;
        if done {
            let job = d.name().unwrap_or("(none)").to_owned();
            metrics::counter!("jobs_dead_total", "job" => job, "kind" => kind).increment(1);
            warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), kind, reason, "dead-lettered");
        }
    }

    /// Publishes the next attempt to run after `delay`, then acks this one.
    pub(crate) async fn retry(&self, d: &Delivery<'_>, kind: &'static str, reason: &str, delay: Duration) {
        let attempt = d.attempt();
        let (exchange, routing_key) =
            self.topology.delay_route(delay, d.queue).unwrap_or_else(|| (String::new(), d.queue.to_owned()));
        let copy = Copy { exchange, routing_key, what: "retry" };
        let done = self.forward(d, copy, |t| self.failure_headers(t, d, kind, reason, attempt + 1)).await;
        if done {
            metrics::counter!("jobs_retried_total", "job" => d.name().unwrap_or("(none)").to_owned()).increment(1);
            info!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt, kind, reason, retry_in = ?delay, "job failed; retry scheduled");
        }
    }

    /// Puts a redelivered job back at the end of its queue with its crash count
    /// raised, so it runs again after the jobs waiting behind it.
    pub(crate) async fn requeue_crashed(&self, d: &Delivery<'_>, crashes: u64) {
        let copy = Copy { exchange: String::new(), routing_key: d.queue.to_owned(), what: "crash requeue" };
        let done = self.forward(d, copy, |t| set_header(t, headers::CRASHES, FieldValue::l(crashes as i64))).await;
        if done {
            warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), crashes, "job came back unacked (its worker died or lost the broker); requeued");
        }
    }

    /// Sends a call's answer to its caller (direct reply-to). A caller that gave
    /// up is no error: its answer is dropped.
    pub(crate) async fn reply(&self, d: &Delivery<'_>, reply_to: &str, status: &str, body: Vec<u8>) {
        let id = d.id();
        let mut table = FieldTable::new();
        set_header(&mut table, headers::REPLY_STATUS, FieldValue::from(status));
        let correlation = d.props.correlation_id().cloned().unwrap_or_else(|| id.to_string());
        let properties = BasicProperties::default()
            .with_content_type(jobs_core::CONTENT_TYPE)
            .with_correlation_id(&correlation)
            .with_message_id(id.as_str())
            .with_headers(table)
            .finish();
        let message =
            Outgoing { id: id.clone(), exchange: String::new(), routing_key: reply_to.to_owned(), properties, body };
        if let Err(err) = self.publisher.publish(message).await {
            debug!(job.id = %id, error = %err, "the caller is gone; answer dropped");
        }
    }

    /// What failed, when and where, and the attempt the copy is for.
    fn failure_headers(
        &self,
        table: &mut FieldTable,
        d: &Delivery<'_>,
        kind: &'static str,
        reason: &str,
        attempt: u32,
    ) {
        let now = now_secs();
        set_header(table, headers::ATTEMPT, FieldValue::l(i64::from(attempt)));
        set_header(table, headers::ERROR, FieldValue::from(truncate(reason, 4096)));
        set_header(table, headers::ERROR_KIND, FieldValue::from(kind));
        set_header(table, headers::FAILED_AT, FieldValue::T(now));
        if header_u64(d.props, headers::FIRST_FAILED_AT).is_none() {
            set_header(table, headers::FIRST_FAILED_AT, FieldValue::T(now));
        }
        set_header(table, headers::WORKER, FieldValue::from(&*self.worker));
        set_header(table, headers::HOST, FieldValue::from(self.host.as_str()));
    }

    /// Publishes a copy of the delivery with edited headers, waits for the
    /// confirm, then acks. If the copy is not confirmed the delivery goes back
    /// to its queue instead. Returns whether the copy was stored.
    async fn forward(&self, d: &Delivery<'_>, copy: Copy<'_>, edit: impl FnOnce(&mut FieldTable)) -> bool {
        let mut table = d.props.headers().cloned().unwrap_or_default();
        // The broker's own dead-letter history from the delay cascade: not ours to keep.
        if let Ok(key) = "x-death".try_into() {
            table.remove(&key);
        }
        set_header(&mut table, headers::QUEUE, FieldValue::from(d.queue));
        edit(&mut table);
        let id = d.id();
        let mut properties = d.props.clone();
        properties.with_headers(table).with_message_id(id.as_str()).with_persistence(true);
        let message = Outgoing {
            id: id.clone(),
            exchange: copy.exchange,
            routing_key: copy.routing_key,
            properties,
            body: d.body.to_vec(),
        };
        match self.publisher.publish(message).await {
            Ok(()) => {
                self.ack(d.channel, d.tag).await;
                true
            }
            Err(err) => {
                error!(queue = d.queue, job.id = %id, error = %jobs_core::report(&err), what = copy.what, "could not store the job's copy; returning it to its queue");
                // Not in a hot loop: give the broker a moment before the job comes back.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(err) = d.channel.basic_reject(BasicRejectArguments::new(d.tag, true)).await {
                    error!(error = %err, "could not return the job; the broker will when the channel closes");
                }
                false
            }
        }
    }
}

/// One delivery being settled.
pub(crate) struct Delivery<'a> {
    pub(crate) channel: &'a Channel,
    pub(crate) tag: u64,
    pub(crate) queue: &'a str,
    pub(crate) props: &'a BasicProperties,
    pub(crate) body: &'a [u8],
}

impl Delivery<'_> {
    /// The job id, or a new one for a message that had none (so its dead copy has one).
    fn id(&self) -> JobId {
        jobs_core::message_job_id(self.props)
    }

    fn attempt(&self) -> u32 {
        jobs_core::message_attempt(self.props)
    }

    fn name(&self) -> Option<&str> {
        self.props.message_type().map(String::as_str)
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
