//! One delivery and what its properties say, read once: its job id too, made
//! once for a message that has none, so that its log line, its dead copy and
//! the dashboard all name the same id.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::plumbing::amqprs::channel::Channel;
use jobs_core::plumbing::amqprs::BasicProperties;
use jobs_core::plumbing::{
    header_bytes, header_str, header_u64, headers, message_attempt, message_id, ChainHeader, Origin,
};
use jobs_core::{JobId, UniqueUntil};

/// What the worker knows of a message before it runs it, from its properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Meta<'a> {
    /// The job type's name (`type`), if any.
    pub(crate) name: Option<&'a str>,
    /// The job id: `message_id`, or one made for a message without (once).
    pub(crate) id: JobId,
    /// Whether the message had a `message_id` of its own.
    pub(crate) has_id: bool,
    /// Which attempt this is, from 1 (`x-attempt`, missing means 1).
    pub(crate) attempt: u32,
    /// Returns of this job unacked so far, as counted in `x-crashes`.
    pub(crate) crashes: u64,
    /// Returns of it counted by a quorum queue (`x-delivery-count`).
    pub(crate) delivery_count: u64,
    /// Runs of it that a graceful stop ended, as counted in `x-interrupted`.
    pub(crate) interrupted: u64,
    /// Its rate-limited returns so far, as counted in `x-rate-limited`.
    pub(crate) rate_limited: u64,
    /// The broker's `consumer_timeout` (ms) that ended a run of it, when its
    /// header or a record in `jobs.returns` says so.
    pub(crate) consumer_timeout: Option<u64>,
    /// Whether the broker delivered it before (`redelivered`): it came back unacked.
    pub(crate) redelivered: bool,
    /// Where a call's answer goes (`reply_to`), for RPC jobs.
    pub(crate) reply_to: Option<&'a str>,
    /// The `content_type`, if set.
    pub(crate) content_type: Option<&'a str>,
    /// When it was first enqueued (`timestamp`).
    pub(crate) enqueued_at: Option<SystemTime>,
    /// The body's size in bytes.
    pub(crate) size: usize,
    /// A chain's step: its `x-chain` header decoded (or why it does not decode).
    pub(crate) chain: Option<Result<ChainHeader, String>>,
    /// A chain's step: what the step before handed on (`x-chain-input`).
    pub(crate) input: Option<Vec<u8>>,
    /// A batch's job: its batch (`x-batch`).
    pub(crate) batch: Option<&'a str>,
    /// A batch's callback: the batch's outcome (`x-batch-outcome`), encoded.
    pub(crate) batch_outcome: Option<Vec<u8>>,
    /// A unique job: the key it gives back as it ends and its hold's token
    /// (`x-unique-key`, `x-unique-token`; none for a job that holds it for
    /// its whole window, `x-unique-until`, or has no hold of its own).
    pub(crate) unique: Option<(&'a str, &'a str)>,
    /// Not run if not started by this time, ms since the epoch (`x-expires-at`).
    pub(crate) expires_at_ms: Option<u64>,
}

impl<'a> Meta<'a> {
    pub(crate) fn of(props: &'a BasicProperties, redelivered: bool, size: usize) -> Self {
        let own = message_id(props);
        Meta {
            name: props.message_type().map(String::as_str),
            has_id: own.is_some(),
            id: own.unwrap_or_default(),
            attempt: message_attempt(props),
            crashes: header_u64(props, headers::CRASHES).unwrap_or(0),
            delivery_count: header_u64(props, headers::DELIVERY_COUNT).unwrap_or(0),
            interrupted: header_u64(props, headers::INTERRUPTED).unwrap_or(0),
            rate_limited: header_u64(props, headers::RATE_LIMITED).unwrap_or(0),
            consumer_timeout: header_u64(props, headers::CONSUMER_TIMEOUT),
            redelivered,
            reply_to: props.reply_to().map(String::as_str),
            content_type: props.content_type().map(String::as_str),
            // Any producer writes it: a time past what `SystemTime` holds is none, not a panic.
            enqueued_at: props.timestamp().and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs))),
            size,
            // Only a chain's steps have these (a first attempt has no headers at all).
            chain: header_bytes(props, headers::CHAIN).map(|bytes| ChainHeader::decode(&bytes)),
            input: header_bytes(props, headers::CHAIN_INPUT),
            batch: header_str(props, headers::BATCH).filter(|b| !b.is_empty()),
            batch_outcome: header_bytes(props, headers::BATCH_OUTCOME),
            unique: header_str(props, headers::UNIQUE_KEY)
                .zip(header_str(props, headers::UNIQUE_TOKEN).filter(|t| !t.is_empty()))
                .filter(|_| header_str(props, headers::UNIQUE_UNTIL) != Some(UniqueUntil::Window.as_str())),
            expires_at_ms: header_u64(props, headers::EXPIRES_AT),
        }
    }

    /// Whether it is a call: someone waits for its answer.
    pub(crate) fn is_call(&self) -> bool {
        self.reply_to.is_some()
    }

    /// How long past its expiry it is at `now_ms`, if it is.
    pub(crate) fn expired(&self, now_ms: u64) -> Option<Duration> {
        let at = self.expires_at_ms?;
        (now_ms >= at).then(|| Duration::from_millis(now_ms - at))
    }
}

/// One delivery being settled.
pub(crate) struct Delivery<'a> {
    pub(crate) channel: &'a Channel,
    pub(crate) tag: u64,
    /// The job queue, or for a subscription its exchange.
    pub(crate) queue: &'a str,
    /// Where it came from: its queue, or the exchange and routing key of a subscription's job.
    pub(crate) origin: Origin<'a>,
    pub(crate) props: &'a BasicProperties,
    pub(crate) body: &'a [u8],
    pub(crate) meta: Meta<'a>,
    /// What the job said of its progress (read only for a dead copy, which keeps it).
    pub(crate) progress: &'a jobs_core::plumbing::ProgressCell,
    /// A shard's: its consumer, cancelled before the ack when it is leaving.
    pub(crate) leaving: Option<&'a crate::shard::Leaving>,
}

impl<'a> Delivery<'a> {
    /// The job id (read, or made, once).
    pub(crate) fn id(&self) -> &JobId {
        &self.meta.id
    }

    /// The job type's name, or `(none)`.
    pub(crate) fn name(&self) -> &'a str {
        self.meta.name.unwrap_or("(none)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_without_an_id_gets_one_once() {
        let props = BasicProperties::default().with_message_type("J").finish();
        let meta = Meta::of(&props, false, 3);
        assert!(!meta.has_id);
        assert_eq!(meta.id.as_str().len(), 24);
        assert_eq!(meta.clone().id, meta.id, "the id is made once and kept");
        let empty = BasicProperties::default().with_message_id("").finish();
        assert!(!Meta::of(&empty, false, 0).has_id, "an empty id is none");
        let own = BasicProperties::default().with_message_id("abc").finish();
        let meta = Meta::of(&own, true, 0);
        assert_eq!((meta.id.as_str(), meta.has_id, meta.redelivered), ("abc", true, true));
        let far = BasicProperties::default().with_timestamp(u64::MAX).finish();
        assert_eq!(Meta::of(&far, false, 0).enqueued_at, None, "a time no clock holds is none, not a panic");
    }
}
