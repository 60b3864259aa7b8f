//! One way to build an outgoing message: a new job's ([`Message::job`]), or a
//! copy of one received ([`Message::copy`]) with its headers edited: a retry,
//! a dead letter, a crash requeue, a revived dead job. Every sender (the
//! client, settling, dead-job actions, heartbeats, answers to calls, the admin
//! commands) builds its message here and sends it to a
//! [`Destination`](crate::destination::Destination), which says where it goes.

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue};

use crate::codec::{header_str, headers, job_properties, now_secs, set_header, table_size, table_u64, CONTENT_TYPE};
use crate::confirm::Outgoing;
use crate::destination::Destination;
use crate::{FailureKind, JobId};

/// Headers the broker adds as it dead-letters a message (through the delay
/// cascade, at a quorum queue's delivery limit): its history, not ours to
/// copy (a stale `x-first-death-reason` would read as the broker's verdict).
const BROKER_HISTORY: [&str; 7] = [
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
];

/// The largest header table of a received message that a copy carries over:
/// a copy adds its own (the failure's, up to about 4.5 KB), and a content
/// header must fit in one frame (128 KiB by default). A larger one keeps only
/// the framework's headers, and says how many bytes went (`x-headers-dropped`).
const MAX_COPIED_HEADERS: usize = 64 << 10;

/// The framework's own headers: what a copy keeps of a table too large to carry.
const OURS: [&str; 24] = [
    headers::ATTEMPT,
    headers::RATE_LIMITED,
    headers::UNIQUE_KEY,
    headers::UNIQUE_FOR,
    headers::UNIQUE_TOKEN,
    headers::EXPIRES_AT,
    headers::UNIQUE_UNTIL,
    headers::CRASHES,
    headers::INTERRUPTED,
    headers::CONSUMER_TIMEOUT,
    headers::FIRST_FAILED_AT,
    headers::HOST,
    headers::ERROR,
    headers::ERROR_KIND,
    headers::FAILED_AT,
    headers::WORKER,
    headers::REPLY_STATUS,
    headers::QUEUE,
    headers::EXCHANGE,
    headers::ROUTING_KEY,
    headers::CHAIN,
    headers::CHAIN_INPUT,
    headers::BATCH,
    headers::BATCH_OUTCOME,
];

/// The properties a copy carries over: not `expiration` (a producer's
/// per-message TTL would expire the copy out of `<queue>.dead`), not
/// `user_id` (the broker refuses one that is not the publishing user's),
/// not `cluster_id`; `reply_to` and `correlation_id` only when `call` (a
/// revived dead call has no caller left).
fn carried(props: &BasicProperties, call: bool) -> BasicProperties {
    let mut out = BasicProperties::default();
    fn text(value: Option<&String>) -> Option<&str> {
        value.map(String::as_str)
    }
    if let Some(v) = text(props.content_type()) {
        out.with_content_type(v);
    }
    if let Some(v) = text(props.content_encoding()) {
        out.with_content_encoding(v);
    }
    if let Some(v) = props.priority() {
        out.with_priority(v);
    }
    if let Some(v) = props.timestamp() {
        out.with_timestamp(v);
    }
    if let Some(v) = text(props.message_type()) {
        out.with_message_type(v);
    }
    if let Some(v) = text(props.app_id()) {
        out.with_app_id(v);
    }
    if call {
        if let Some(v) = text(props.reply_to()) {
            out.with_reply_to(v);
        }
        if let Some(v) = text(props.correlation_id()) {
            out.with_correlation_id(v);
        }
    }
    out.finish()
}

/// The longest error text a copy carries in `x-error` (a header table must fit
/// in one frame).
pub(crate) const MAX_ERROR_LEN: usize = 4096;

/// A message on its way out: its id, properties and body. Headers are
/// edited on it; [`Message::to`] addresses it.
#[derive(Debug, Clone)]
pub struct Message {
    id: JobId,
    properties: BasicProperties,
    headers: Option<FieldTable>,
    body: Vec<u8>,
}

/// Why an attempt failed, and where: what a retried or dead copy says in its headers.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The kind of failure.
    pub kind: FailureKind,
    /// The error's text (cut at [`MAX_ERROR_LEN`]).
    pub reason: &'a str,
    /// The worker that settled it.
    pub worker: &'a str,
    /// Its host.
    pub host: &'a str,
}

impl Message {
    /// A new job of type `name`: persistent, typed, with its id and timestamp,
    /// and no headers (a first attempt goes without: see `docs/wire-format.md`).
    pub fn job(name: &str, id: JobId, body: Vec<u8>) -> Self {
        Message { properties: job_properties(name, &id, 1), id, headers: None, body }
    }

    /// A copy of a message received with `properties` and `body`, under job
    /// id `id` (its `message_id`, or the one made for it when it had none):
    /// the same properties and headers, persistent, without the broker's
    /// dead-letter history.
    pub fn copy(properties: &BasicProperties, body: Vec<u8>, id: JobId) -> Self {
        let mut table = properties.headers().cloned().unwrap_or_default();
        for name in BROKER_HISTORY {
            remove(&mut table, name);
        }
        let size = table_size(&table);
        if size > MAX_COPIED_HEADERS {
            let mut ours = FieldTable::new();
            for name in OURS {
                if let Some(value) = FieldName::try_from(name).ok().and_then(|key| table.get(&key).cloned()) {
                    set_header(&mut ours, name, value);
                }
            }
            set_header(&mut ours, headers::HEADERS_DROPPED, FieldValue::l(size as i64));
            table = ours;
        }
        let mut properties = carried(properties, true);
        properties.with_message_id(id.as_str()).with_persistence(true);
        Message { id, properties, headers: Some(table), body }
    }

    /// An answer to a call with id `id`: `status`, then the body (the output,
    /// or the error's text), correlated as the caller asked.
    pub fn answer(id: JobId, correlation_id: &str, status: crate::plumbing::ReplyStatus, body: Vec<u8>) -> Self {
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE)
            .with_correlation_id(correlation_id)
            .with_message_id(id.as_str())
            .finish();
        Message { id, properties, headers: None, body }.header(headers::REPLY_STATUS, FieldValue::from(status.as_str()))
    }

    /// The message's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Sets header `name`.
    #[must_use]
    pub fn header(mut self, name: &str, value: FieldValue) -> Self {
        set_header(self.headers.get_or_insert_with(FieldTable::new), name, value);
        self
    }

    /// Marks the copy as for attempt `attempt`.
    #[must_use]
    pub fn attempt(self, attempt: u32) -> Self {
        self.header(headers::ATTEMPT, FieldValue::l(i64::from(attempt)))
    }

    /// Says why an attempt failed, when and where: `x-error`, `x-error-kind`,
    /// `x-failed-at`, `x-first-failed-at` (kept from the first failure),
    /// `x-worker`, `x-host`.
    #[must_use]
    pub fn failure(self, failure: &Failure<'_>) -> Self {
        let now = now_secs();
        let first = self.headers.as_ref().and_then(|t| table_u64(t, headers::FIRST_FAILED_AT)).unwrap_or(now);
        self.header(headers::ERROR, FieldValue::from(cut(failure.reason, MAX_ERROR_LEN)))
            .header(headers::ERROR_KIND, FieldValue::from(failure.kind.as_str()))
            .header(headers::FAILED_AT, FieldValue::T(now))
            .header(headers::FIRST_FAILED_AT, FieldValue::T(first))
            .header(headers::WORKER, FieldValue::from(failure.worker))
            .header(headers::HOST, FieldValue::from(failure.host))
    }

    /// The copy as a fresh first attempt: the failure, crash count, origin
    /// and route headers taken off, `x-attempt` 1, and no caller to answer.
    #[must_use]
    pub fn revived(mut self) -> Self {
        self.properties = carried(&self.properties, false);
        self.properties.with_message_id(self.id.as_str()).with_persistence(true);
        if let Some(table) = self.headers.as_mut() {
            for name in [
                headers::PROGRESS,
                headers::PROGRESS_TEXT,
                headers::ERROR,
                headers::ERROR_KIND,
                headers::FAILED_AT,
                headers::FIRST_FAILED_AT,
                headers::WORKER,
                headers::HOST,
                headers::QUEUE,
                headers::CRASHES,
                headers::EXCHANGE,
                headers::ROUTING_KEY,
                // A retried job gets its chance: no deadline of its first life.
                headers::EXPIRES_AT,
            ] {
                remove(table, name);
            }
        }
        self.attempt(1)
    }

    /// Not persistent (a heartbeat: worth nothing after a broker restart).
    #[must_use]
    pub fn transient(mut self) -> Self {
        self.properties.with_persistence(false);
        self
    }

    /// Lets the broker drop it unread once it has waited `after` in its queue
    /// (the AMQP `expiration`, whole milliseconds).
    #[must_use]
    pub fn expires(mut self, after: std::time::Duration) -> Self {
        self.properties.with_expiration(&after.as_millis().max(1).to_string());
        self
    }

    /// Not run if not started by `at` (`x-expires-at`, ms since the epoch).
    #[must_use]
    pub fn expires_at(self, at: std::time::SystemTime) -> Self {
        self.deadline(Some(at))
    }

    /// With `x-expires-at = at`, when there is a deadline.
    #[must_use]
    pub(crate) fn deadline(self, at: Option<std::time::SystemTime>) -> Self {
        let Some(at) = at else { return self };
        let ms = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.header(headers::EXPIRES_AT, FieldValue::l(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Asks for an answer on `reply_to`, correlated by the message's id (a call).
    #[must_use]
    pub fn reply_to(mut self, reply_to: &str) -> Self {
        self.properties.with_reply_to(reply_to).with_correlation_id(self.id.as_str());
        self
    }

    /// The message addressed to `destination`, ready for a [`Publisher`](crate::plumbing::Publisher).
    pub fn to(&self, destination: &Destination) -> Outgoing {
        let mut properties = self.properties.clone();
        if let Some(table) = &self.headers {
            properties.with_headers(table.clone());
        }
        if let Some(priority) = destination.priority {
            properties.with_priority(priority);
        }
        Outgoing {
            id: self.id.clone(),
            exchange: destination.exchange.clone(),
            routing_key: destination.routing_key_of(&self.body),
            properties,
            body: self.body.clone(),
        }
    }

    /// Like [`Message::to`], consuming the message (no copy of the body).
    pub fn into_outgoing(self, destination: &Destination) -> Outgoing {
        let Message { id, mut properties, headers, body } = self;
        if let Some(table) = headers {
            properties.with_headers(table);
        }
        if let Some(priority) = destination.priority {
            properties.with_priority(priority);
        }
        Outgoing {
            id,
            exchange: destination.exchange.clone(),
            routing_key: destination.routing_key_of(&body),
            properties,
            body,
        }
    }
}

/// Where a copy of a message came from: its queue, or for a job taken from
/// an exchange (a broadcast, a routed job), the exchange and routing key it
/// came by, so that a revived dead copy goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A job queue.
    Queue(&'a str),
    /// An exchange, and the routing key the job was published with.
    Exchange {
        /// The exchange.
        name: &'a str,
        /// The routing key.
        routing_key: &'a str,
    },
}

impl Message {
    /// Records where the job came from (`x-queue`; for jobs from an exchange
    /// `x-queue` names the exchange, and `x-exchange` and `x-routing-key` say
    /// how to send it back there).
    #[must_use]
    pub fn origin(mut self, origin: Origin<'_>) -> Self {
        match origin {
            // A job from a queue came by no exchange, whatever its producer wrote.
            Origin::Queue(queue) => {
                if let Some(table) = self.headers.as_mut() {
                    remove(table, headers::EXCHANGE);
                    remove(table, headers::ROUTING_KEY);
                }
                self.header(headers::QUEUE, FieldValue::from(queue))
            }
            Origin::Exchange { name, routing_key } => self
                .header(headers::QUEUE, FieldValue::from(name))
                .header(headers::EXCHANGE, FieldValue::from(name))
                .header(headers::ROUTING_KEY, FieldValue::from(routing_key)),
        }
    }
}

/// Where a dead copy with `properties` came from, as [`Message::origin`] wrote
/// it: its exchange and routing key, for a job taken from an exchange.
pub(crate) fn exchange_origin(properties: &BasicProperties) -> Option<(&str, &str)> {
    let exchange = header_str(properties, headers::EXCHANGE).filter(|e| !e.is_empty())?;
    Some((exchange, header_str(properties, headers::ROUTING_KEY).unwrap_or("")))
}

fn remove(table: &mut FieldTable, name: &str) {
    if let Ok(key) = FieldName::try_from(name) {
        table.remove(&key);
    }
}

/// The longest start of `text` of at most `max` bytes that ends on a char
/// boundary, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    format!("{}…", prefix(text, max))
}

/// The longest start of `text` of at most `max` bytes that ends on a char boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::header_u64;
    use crate::topology::{QueueType, Topology};

    fn received() -> BasicProperties {
        let mut table = FieldTable::new();
        set_header(&mut table, "x-death", FieldValue::from("history"));
        set_header(&mut table, "x-first-death-reason", FieldValue::from("expired"));
        set_header(&mut table, "x-app", FieldValue::from("kept"));
        set_header(&mut table, headers::FIRST_FAILED_AT, FieldValue::T(7));
        BasicProperties::default()
            .with_message_type("Mail")
            .with_headers(table)
            .with_expiration("60000")
            .with_user_id("someone-else")
            .with_reply_to("amq.rabbitmq.reply-to.x")
            .with_correlation_id("c1")
            .with_timestamp(42)
            .finish()
    }

    fn table(outgoing: &Outgoing) -> &FieldTable {
        outgoing.properties.headers().expect("headers")
    }

    #[test]
    fn a_copy_keeps_properties_and_headers_but_not_the_broker_history() {
        let copy = Message::copy(&received(), b"body".to_vec(), JobId::from("made-once"));
        let out = copy.to(&Destination::direct("q"));
        assert_eq!(out.properties.message_id().map(String::as_str), Some("made-once"));
        assert_eq!(out.id.as_str(), "made-once");
        assert_eq!(out.properties.message_type().map(String::as_str), Some("Mail"));
        assert_eq!(out.properties.delivery_mode(), Some(2));
        assert_eq!(header_str(&out.properties, "x-app"), Some("kept"));
        assert!(table(&out).get(&FieldName::try_from("x-death").unwrap()).is_none());
        assert_eq!(header_str(&out.properties, "x-first-death-reason"), None, "the broker's history is not copied");
        assert_eq!((out.exchange.as_str(), out.routing_key.as_str(), out.body.as_slice()), ("", "q", &b"body"[..]));
        assert_eq!(out.properties.expiration(), None, "no producer TTL on a copy (a dead copy must not expire)");
        assert_eq!(out.properties.user_id(), None, "no user id the broker would refuse");
        assert_eq!(out.properties.timestamp(), Some(42), "the first enqueue time is kept");
        assert_eq!(
            out.properties.reply_to().map(String::as_str),
            Some("amq.rabbitmq.reply-to.x"),
            "a call's requeue still answers"
        );
    }

    #[test]
    fn a_copy_of_a_huge_header_table_keeps_only_the_frameworks_headers() {
        let mut table = FieldTable::new();
        for n in 0..100 {
            set_header(&mut table, &format!("x-app-{n}"), FieldValue::from("v".repeat(1000).as_str()));
        }
        set_header(&mut table, headers::CRASHES, FieldValue::l(2));
        let props = BasicProperties::default().with_headers(table).finish();
        let out = Message::copy(&props, vec![], JobId::from("h")).to(&Destination::direct("q"));
        assert_eq!(header_u64(&out.properties, headers::CRASHES), Some(2), "ours are kept");
        assert_eq!(header_str(&out.properties, "x-app-7"), None, "the app's went");
        assert!(header_u64(&out.properties, headers::HEADERS_DROPPED).is_some_and(|n| n > 100_000));
        assert!(table_size(out.properties.headers().unwrap()) < 100);
    }

    #[test]
    fn a_queue_job_came_by_no_exchange_whatever_its_producer_wrote() {
        let mut planted = FieldTable::new();
        set_header(&mut planted, headers::EXCHANGE, FieldValue::from("amq.topic"));
        set_header(&mut planted, headers::ROUTING_KEY, FieldValue::from("elsewhere"));
        let props = BasicProperties::default().with_headers(planted).finish();
        let dead =
            Message::copy(&props, vec![], JobId::from("p")).origin(Origin::Queue("q")).to(&Destination::dead("q"));
        assert_eq!(exchange_origin(&dead.properties), None);
        assert_eq!(header_str(&dead.properties, headers::QUEUE), Some("q"));
    }

    #[test]
    fn a_failure_is_told_in_headers_and_keeps_the_first_failure_time() {
        let failure = Failure { kind: FailureKind::Timeout, reason: &"é".repeat(3000), worker: "w1", host: "h" };
        let out = Message::copy(&received(), vec![], JobId::from("a"))
            .failure(&failure)
            .attempt(3)
            .to(&Destination::direct("q"));
        let p = &out.properties;
        assert_eq!(header_str(p, headers::ERROR_KIND), Some("timeout"));
        assert!(header_str(p, headers::ERROR).is_some_and(|e| e.len() <= MAX_ERROR_LEN + 3 && e.ends_with('…')));
        assert_eq!(header_u64(p, headers::FIRST_FAILED_AT), Some(7), "kept from the first failure");
        assert_eq!(header_u64(p, headers::ATTEMPT), Some(3));
        assert_eq!((header_str(p, headers::WORKER), header_str(p, headers::HOST)), (Some("w1"), Some("h")));
        let fresh = Message::copy(&BasicProperties::default(), vec![], JobId::from("b")).failure(&failure);
        let fresh = fresh.to(&Destination::direct("q"));
        assert_eq!(
            header_u64(&fresh.properties, headers::FIRST_FAILED_AT),
            header_u64(&fresh.properties, headers::FAILED_AT)
        );
    }

    #[test]
    fn a_revived_copy_is_a_first_attempt_without_failure_or_route_headers() {
        let failure = Failure { kind: FailureKind::Failed, reason: "boom", worker: "w", host: "h" };
        let dead = Message::copy(&received(), vec![1], JobId::from("a"))
            .failure(&failure)
            .attempt(5)
            .origin(Origin::Exchange { name: "logs", routing_key: "kern.critical" })
            .header(headers::CRASHES, FieldValue::l(2))
            .to(&Destination::direct("logs.dead"));
        assert_eq!(exchange_origin(&dead.properties), Some(("logs", "kern.critical")));
        assert_eq!(header_str(&dead.properties, headers::QUEUE), Some("logs"));
        let revived = Message::copy(&dead.properties, dead.body.clone(), JobId::from("a")).revived();
        let out = revived.to(&Destination::direct("q"));
        for gone in
            [headers::ERROR, headers::ERROR_KIND, headers::QUEUE, headers::CRASHES, headers::WORKER, headers::EXCHANGE]
        {
            assert_eq!(header_str(&out.properties, gone), None, "{gone}");
        }
        assert_eq!(header_u64(&out.properties, headers::FAILED_AT), None);
        assert_eq!(header_u64(&out.properties, headers::ATTEMPT), Some(1));
        assert_eq!(exchange_origin(&out.properties), None);
        assert_eq!(header_str(&out.properties, "x-app"), Some("kept"), "the app's own headers stay");
        assert_eq!(
            (out.properties.reply_to(), out.properties.correlation_id()),
            (None, None),
            "no caller left to answer"
        );
    }

    #[test]
    fn a_new_job_has_no_headers_and_a_delayed_one_goes_through_the_cascade() {
        let job = Message::job("Mail", JobId::from("j"), vec![]);
        let topology = Topology::new(QueueType::Classic, 3);
        let delayed = Destination::to_queue(topology, "emails", Some(std::time::Duration::from_secs(5))).unwrap();
        let out = job.to(&delayed);
        assert!(out.properties.headers().is_none());
        assert_eq!(out.exchange, "jobs.delay.02");
        assert!(out.routing_key.ends_with("1.0.1.emails"), "{}", out.routing_key);
        let out = Message::job("Mail", JobId::from("j"), vec![]).transient().into_outgoing(&Destination::direct("s"));
        assert_eq!(out.properties.delivery_mode(), Some(1));
    }

    #[test]
    fn an_answer_carries_its_status_and_correlation() {
        use crate::plumbing::ReplyStatus;
        let out = Message::answer(JobId::from("c"), "corr", ReplyStatus::Failed(FailureKind::Panicked), vec![])
            .to(&Destination::direct("amq.rabbitmq.reply-to.x"));
        assert_eq!(header_str(&out.properties, headers::REPLY_STATUS), Some("panicked"));
        assert_eq!(out.properties.correlation_id().map(String::as_str), Some("corr"));
        assert_eq!(out.properties.content_type().map(String::as_str), Some(CONTENT_TYPE));
    }

    #[test]
    fn cuts_end_on_a_char_boundary() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é…");
        assert_eq!(prefix("ééé", 5), "éé");
    }
}
