//! Carrying out the policy's [`Settlement`] for a delivery. Exactly one of: ack
//! (done); publish a copy (retry, crash-counted requeue, or dead letter), wait
//! for its confirm, then ack; or leave it unacked (the broker hands it out
//! again). Never ack first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{BasicAckArguments, BasicRejectArguments, Channel};
use jobs_core::plumbing::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::plumbing::topology::{dead_queue, Topology};
use jobs_core::plumbing::{header_u64, headers, now_secs, set_header, Outgoing, Publisher};
use jobs_core::FailureKind;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::activity::Activity;
use crate::delivery::Delivery;
use crate::policy::{Action, Reply, Settlement};

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
    /// Job types this worker does not know, and when each was last warned about.
    pub(crate) unknown: Arc<Throttle>,
    /// Where failures, retries and dead letters are counted.
    pub(crate) activity: Arc<Activity>,
}

impl Settler {
    /// Carries out `settlement` for `d`.
    pub(crate) async fn settle(&self, d: &Delivery<'_>, settlement: Settlement) {
        if let Some(reply) = settlement.reply {
            if let Some(reply_to) = d.meta.reply_to {
                self.reply(d, reply_to, reply).await;
            }
        }
        if let Some(kind) = settlement.failure {
            self.activity.failed(d.name(), kind);
        }
        match settlement.action {
            Action::Ack => self.ack(d.channel, d.tag).await,
            Action::Retry { kind, error, attempt, delay } => {
                if self.retry(d, kind, &error, attempt, delay).await {
                    self.activity.retried(d.name());
                    let failed = attempt - 1;
                    if kind == FailureKind::UnknownType {
                        if self.unknown.first_in_a_minute(d.name()) {
                            warn!(queue = d.queue, job.name = d.name(), "no job type of this name in this worker: retrying such jobs with the default backoff, so that a worker that knows the type runs them (a newer deploy?); this line comes at most once a minute per type");
                        }
                        debug!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = failed, retry_in = ?delay, "unknown job type; retry scheduled");
                    } else {
                        info!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = failed, %kind, reason = error, retry_in = ?delay, "job failed; retry scheduled");
                    }
                }
            }
            Action::Dead { kind, reason } => {
                if self.dead_letter(d, kind, &reason).await {
                    self.activity.dead(d.name(), kind);
                    warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), %kind, reason, "dead-lettered");
                }
            }
            Action::Requeue { crashes } => {
                if self.requeue_crashed(d, crashes).await {
                    warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), crashes, "job came back unacked (its worker died or lost the broker); requeued");
                }
            }
        }
    }

    /// Acks a delivery whose job is done.
    async fn ack(&self, channel: &Channel, tag: u64) {
        if let Err(err) = channel.basic_ack(BasicAckArguments::new(tag, false)).await {
            // The channel is gone: the broker hands the job out again (at-least-once).
            error!(error = %err, "could not ack a settled job; it will be delivered again");
        }
    }

    /// Sends a delivery to `<queue>.dead` with the reason, then acks it.
    async fn dead_letter(&self, d: &Delivery<'_>, kind: FailureKind, reason: &str) -> bool {
        let copy = Copy { exchange: String::new(), routing_key: dead_queue(d.queue), what: "dead-lettered" };
        // The attempt it ended on, said even for a first attempt (which goes without).
        self.forward(d, copy, |t| self.failure_headers(t, d, kind, reason, d.meta.attempt)).await
    }

    /// Publishes attempt `attempt` to run after `delay`, then acks this one.
    async fn retry(&self, d: &Delivery<'_>, kind: FailureKind, reason: &str, attempt: u32, delay: Duration) -> bool {
        let (exchange, routing_key) =
            self.topology.delay_route(delay, d.queue).unwrap_or_else(|| (String::new(), d.queue.to_owned()));
        let copy = Copy { exchange, routing_key, what: "retry" };
        self.forward(d, copy, |t| self.failure_headers(t, d, kind, reason, attempt)).await
    }

    /// Puts a redelivered job back at the end of its queue with its crash count
    /// raised, so it runs again after the jobs waiting behind it.
    async fn requeue_crashed(&self, d: &Delivery<'_>, crashes: u64) -> bool {
        let copy = Copy { exchange: String::new(), routing_key: d.queue.to_owned(), what: "crash requeue" };
        self.forward(d, copy, |t| set_header(t, headers::CRASHES, FieldValue::l(crashes as i64))).await
    }

    /// Sends a call's answer to its caller (direct reply-to). A caller that gave
    /// up is no error: its answer is dropped.
    async fn reply(&self, d: &Delivery<'_>, reply_to: &str, Reply { status, body }: Reply) {
        let id = d.id();
        let mut table = FieldTable::new();
        set_header(&mut table, headers::REPLY_STATUS, FieldValue::from(status));
        let correlation = d.props.correlation_id().cloned().unwrap_or_else(|| id.to_string());
        let properties = BasicProperties::default()
            .with_content_type(jobs_core::plumbing::CONTENT_TYPE)
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
    fn failure_headers(&self, table: &mut FieldTable, d: &Delivery<'_>, kind: FailureKind, reason: &str, attempt: u32) {
        let now = now_secs();
        set_header(table, headers::ATTEMPT, FieldValue::l(i64::from(attempt)));
        set_header(table, headers::ERROR, FieldValue::from(truncate(reason, 4096)));
        set_header(table, headers::ERROR_KIND, FieldValue::from(kind.as_str()));
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

/// Remembers when each name was last reported, to say a thing at most once a
/// minute per name (a rolling deploy can bring thousands of jobs of a type
/// the old workers do not know).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// Whether `name` was not reported in the last minute; if so, it is now.
    pub(crate) fn first_in_a_minute(&self, name: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(name) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                // Names come from messages: forget those said over a minute ago
                // before the map grows past a thousand.
                if last.len() >= 1000 {
                    last.retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
                }
                last.insert(name.to_owned(), now);
                true
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}…", prefix(text, max))
}

/// The longest start of `text` of at most `max` bytes that ends on a char boundary.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::{truncate, Throttle};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_name_is_reported_at_most_once_a_minute() {
        let throttle = Throttle::default();
        assert!(throttle.first_in_a_minute("NewJob"));
        assert!(!throttle.first_in_a_minute("NewJob"));
        assert!(throttle.first_in_a_minute("OtherJob"), "per name");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!throttle.first_in_a_minute("NewJob"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(throttle.first_in_a_minute("NewJob"));
        assert!(!throttle.first_in_a_minute("NewJob"));
    }

    #[tokio::test(start_paused = true)]
    async fn names_said_over_a_minute_ago_are_forgotten_past_a_thousand() {
        let throttle = Throttle::default();
        for n in 0..1000 {
            assert!(throttle.first_in_a_minute(&format!("Bogus{n}")));
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(throttle.first_in_a_minute("Another"));
        assert_eq!(throttle.last.lock().unwrap().len(), 1, "the stale names went");
        assert!(!throttle.first_in_a_minute("Another"));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
