//! The wire format (see `docs/wire-format.md`): the body is the job as MessagePack
//! with field names; AMQP properties and headers carry the metadata.

use std::time::{SystemTime, UNIX_EPOCH};

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue};
use serde::de::DeserializeOwned;

use crate::{Error, Job, JobId};

/// The body format of every job message; a message whose `content_type` is set
/// must name it (the Rust client leaves it unset: it is the only format).
pub const CONTENT_TYPE: &str = "application/msgpack";

/// Names of the AMQP headers the framework reads and writes.
pub mod headers {
    /// Which attempt the message is for, from 1 (integer); missing means 1.
    pub const ATTEMPT: &str = "x-attempt";
    /// How many times the job came back unacked (its worker died), on classic queues.
    pub const CRASHES: &str = "x-crashes";
    /// Set by a quorum queue on a message it delivers again: how many times
    /// it came back. An ordered type's shard counts crashes by it (a shard's
    /// job is never copied to the tail).
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
    /// How many of the job's runs a graceful stop ended before they were done
    /// (handed back to the queue, not counted as crashes).
    pub const INTERRUPTED: &str = "x-interrupted";
    /// On a job requeued after the broker's `consumer_timeout` ended a run of
    /// it: that timeout, in milliseconds (0: the broker did not say).
    pub const CONSUMER_TIMEOUT: &str = "x-consumer-timeout";
    /// How many times the job said it hit a rate limit
    /// (`JobError::rate_limited`), each sent back to wait (integer).
    pub const RATE_LIMITED: &str = "x-rate-limited";
    /// On a retried or dead job: when its first attempt failed (timestamp).
    pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
    /// On a retried or dead job: the host of the worker that settled it.
    pub const HOST: &str = "x-host";
    /// On a retried or dead job: the last error's text.
    pub const ERROR: &str = "x-error";
    /// On a retried or dead job: the kind of failure, one of
    /// [`FailureKind::as_str`](crate::FailureKind::as_str) (`failed`, `fatal`,
    /// `panicked`, `timeout`, `crashed`, `undecodable`, `unknown_type`, `bad_message`).
    pub const ERROR_KIND: &str = "x-error-kind";
    /// On a retried or dead job: when it last failed (timestamp, seconds since the epoch).
    pub const FAILED_AT: &str = "x-failed-at";
    /// On a retried or dead job: the worker that settled it.
    pub const WORKER: &str = "x-worker";
    /// On an RPC answer: `ok` (the body is the output) or the failure's kind
    /// (the body is the error text, MessagePack string).
    pub const REPLY_STATUS: &str = "x-reply-status";
    /// On a retried, requeued or dead job: the queue it came from (for a job
    /// taken from an exchange: the exchange).
    pub const QUEUE: &str = "x-queue";
    /// On a dead job taken from an exchange (a broadcast, a routed job): the
    /// exchange, where a retry of it goes back to.
    pub const EXCHANGE: &str = "x-exchange";
    /// On a dead job taken from an exchange: the routing key it was published with.
    pub const ROUTING_KEY: &str = "x-routing-key";
    /// On a copy of a message whose header table was too large to carry
    /// (over 64 KiB): how many bytes of headers were left out (only the
    /// framework's own were kept).
    pub const HEADERS_DROPPED: &str = "x-headers-dropped";
    /// On a step of a chain: the chain's id, the step's place, and the steps
    /// still to run after it, encoded (MessagePack, a byte array; see `docs/workflows.md`).
    pub const CHAIN: &str = "x-chain";
    /// On a step of a chain after the first: what the step before handed on
    /// (its output, MessagePack, a byte array).
    pub const CHAIN_INPUT: &str = "x-chain-input";
    /// On a batch's job (and its child jobs): the batch's id.
    pub const BATCH: &str = "x-batch";
    /// On a batch's callback: the batch and its counts (MessagePack, a byte
    /// array; see `docs/workflows.md`).
    pub const BATCH_OUTCOME: &str = "x-batch-outcome";
    /// A job not started by this time (ms since the epoch) is not run: dead as `expired`.
    pub const EXPIRES_AT: &str = "x-expires-at";
    /// On a dead job that said its progress (`ctx.progress`): the last
    /// fraction done, per mille (integer, 0 to 1000).
    pub const PROGRESS: &str = "x-progress";
    /// On a dead job that said its progress: the last text.
    pub const PROGRESS_TEXT: &str = "x-progress-text";
    /// On a unique job: the key it holds (`<Type>:<key>`).
    pub const UNIQUE_KEY: &str = "x-unique-key";
    /// On a unique job: its `unique_for`, in milliseconds.
    pub const UNIQUE_FOR: &str = "x-unique-for";
    /// On a unique job: the token of its hold of the key (its release names it).
    pub const UNIQUE_TOKEN: &str = "x-unique-token";
    /// On a unique job held for its whole window: `window`.
    pub const UNIQUE_UNTIL: &str = "x-unique-until";
}

/// Encodes a job as MessagePack with field names.
///
/// # Errors
/// [`Error::Encode`] when serde refuses the value.
pub fn encode<J: Job>(job: &J) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(job)
        .map_err(|source| Error::Encode { job: J::NAME, source: crate::error::Cause::new(source) })
}

/// Decodes a MessagePack body into a job (or any serde type).
///
/// # Errors
/// When the body is not MessagePack or does not match the type's fields.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(body)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Seconds since the Unix epoch, as AMQP timestamps count.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The properties of a job message: persistent, typed, with id and timestamp,
/// and the attempt from the second on (for code that publishes jobs itself,
/// such as tools and other producers). No `content_type`: msgpack is the only
/// format, and a first attempt's properties stay small (see `docs/wire-format.md`).
pub fn job_properties(name: &str, id: &JobId, attempt: u32) -> BasicProperties {
    let mut properties = BasicProperties::default();
    properties.with_message_type(name).with_message_id(id.as_str()).with_timestamp(now_secs()).with_persistence(true);
    if attempt > 1 {
        let mut headers = FieldTable::new();
        set_header(&mut headers, headers::ATTEMPT, FieldValue::l(i64::from(attempt)));
        properties.with_headers(headers);
    }
    properties.finish()
}

/// The job id a message carries: its `message_id`, when it has one that is not empty.
pub fn message_id(props: &BasicProperties) -> Option<JobId> {
    props.message_id().filter(|s| !s.is_empty()).map(|s| JobId::from(s.as_str()))
}

/// The job id of a message: its `message_id`, or a new id when it has none
/// (so that a dead or revived copy of a foreign message still has one).
pub(crate) fn message_job_id(props: &BasicProperties) -> JobId {
    message_id(props).unwrap_or_default()
}

/// Which attempt a message is for: its `x-attempt` header, 1 when it has none
/// (a first attempt goes without) or one that is not a positive `u32`.
pub fn message_attempt(props: &BasicProperties) -> u32 {
    header_u64(props, headers::ATTEMPT).and_then(|a| u32::try_from(a).ok()).unwrap_or(1).max(1)
}

/// Sets a header; header names are our constants, always valid short strings.
///
/// Removes any old value first: amqprs's `FieldTable::insert` adds the new
/// entry's size to the table's encoded length without taking the replaced
/// entry's off, and a wrong length makes the broker drop the connection.
pub fn set_header(table: &mut FieldTable, name: &str, value: FieldValue) {
    if let Ok(key) = FieldName::try_from(name) {
        table.remove(&key);
        table.insert(key, value);
    }
}

/// The size of a header table on the wire, in bytes. (amqprs keeps it as the
/// table's first field, which only its serde form shows.)
pub(crate) fn table_size(table: &FieldTable) -> usize {
    rmp_serde::to_vec(table)
        .ok()
        .and_then(|bytes| rmp_serde::from_slice::<(u32, serde::de::IgnoredAny)>(&bytes).ok())
        .map_or(usize::MAX, |(size, _)| size as usize)
}

/// Reads a header as text, if present and textual.
pub fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let value = props.headers()?.get(&FieldName::try_from(name).ok()?)?;
    match value {
        FieldValue::S(s) => Some(s.as_ref().as_str()),
        _ => None,
    }
}

/// Reads a header as an unsigned integer, whatever integer type the producer used.
pub fn header_u64(props: &BasicProperties, name: &str) -> Option<u64> {
    table_u64(props.headers()?, name)
}

/// A header of `table` as an unsigned integer, whatever integer type the producer used.
pub(crate) fn table_u64(table: &FieldTable, name: &str) -> Option<u64> {
    let value = table.get(&FieldName::try_from(name).ok()?)?;
    match *value {
        FieldValue::b(v) => u64::try_from(v).ok(),
        FieldValue::B(v) => Some(u64::from(v)),
        FieldValue::s(v) => u64::try_from(v).ok(),
        FieldValue::u(v) => Some(u64::from(v)),
        FieldValue::I(v) => u64::try_from(v).ok(),
        FieldValue::i(v) => Some(u64::from(v)),
        FieldValue::l(v) => u64::try_from(v).ok(),
        FieldValue::T(v) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        to: String,
        n: u32,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        to: String,
        n: u32,
        #[serde(default)]
        cc: Option<String>,
    }

    #[test]
    fn adding_an_optional_field_reads_old_messages() {
        let old = rmp_serde::to_vec_named(&V1 { to: "a".into(), n: 3 }).unwrap();
        let new: V2 = decode(&old).unwrap();
        assert_eq!(new, V2 { to: "a".into(), n: 3, cc: None });
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode::<V1>(b"\xc1\xff not msgpack").is_err());
        assert!(decode::<V1>(&rmp_serde::to_vec_named(&42u8).unwrap()).is_err());
    }

    #[test]
    fn replacing_a_header_keeps_the_encoded_table_length_right() {
        let mut replaced = FieldTable::new();
        set_header(&mut replaced, headers::ATTEMPT, FieldValue::l(1));
        set_header(&mut replaced, headers::ATTEMPT, FieldValue::l(2));
        let mut fresh = FieldTable::new();
        set_header(&mut fresh, headers::ATTEMPT, FieldValue::l(2));
        assert_eq!(replaced, fresh, "same entries and same encoded length");
    }

    #[test]
    fn a_table_knows_its_size_on_the_wire() {
        let mut table = FieldTable::new();
        assert_eq!(table_size(&table), 0);
        // name: 1 + 3 bytes; value: tag 1 + length 4 + 1 byte.
        set_header(&mut table, "x-a", FieldValue::from("b"));
        assert_eq!(table_size(&table), 10);
        set_header(&mut table, "x-n", FieldValue::l(7));
        assert_eq!(table_size(&table), 10 + 4 + 1 + 8);
    }

    #[test]
    fn properties_carry_type_id_attempt_and_persistence() {
        let id = JobId::from("abc");
        let p = job_properties("EmailJob", &id, 3);
        assert_eq!(p.message_type().map(String::as_str), Some("EmailJob"));
        assert_eq!(p.message_id().map(String::as_str), Some("abc"));
        assert_eq!(p.delivery_mode(), Some(2));
        assert_eq!(header_u64(&p, headers::ATTEMPT), Some(3));
        assert_eq!(header_str(&p, headers::ATTEMPT), None);
    }

    #[test]
    fn a_message_without_a_positive_attempt_is_on_its_first() {
        let id = JobId::from("abc");
        assert_eq!(message_attempt(&job_properties("J", &id, 1)), 1, "no header");
        assert_eq!(message_attempt(&job_properties("J", &id, 3)), 3);
        let mut zero = FieldTable::new();
        set_header(&mut zero, headers::ATTEMPT, FieldValue::l(0));
        assert_eq!(message_attempt(&BasicProperties::default().with_headers(zero).finish()), 1);
    }

    #[test]
    fn a_first_attempt_carries_no_headers_and_no_content_type() {
        // Missing `x-attempt` means 1, and msgpack is the only body format: a
        // fresh job leaves both out, which keeps its properties within the
        // ~60 bytes past which RabbitMQ 3.10's classic queues take ~20% fewer
        // jobs/s (README, Speed).
        let name = "SendMonthlyReportEmails"; // 23 bytes
        let p = job_properties(name, &JobId::new(), 1);
        assert!(p.headers().is_none(), "{:?}", p.headers());
        assert!(p.content_type().is_none() && p.correlation_id().is_none() && p.reply_to().is_none());
        assert!(p.expiration().is_none() && p.priority().is_none() && p.app_id().is_none());
        assert!(p.content_encoding().is_none() && p.user_id().is_none() && p.cluster_id().is_none());
        assert_eq!(p.delivery_mode(), Some(2));
        assert!(p.timestamp().is_some());
        // Encoded: 2 bytes of flags, short strings 1 + their length, delivery_mode 1, timestamp 8.
        let id = p.message_id().map_or(0, String::len);
        let size = 2 + (1 + p.message_type().map_or(0, String::len)) + (1 + id) + 1 + 8;
        assert!(size <= 60, "{size} bytes of properties");
    }
}
