//! One delivery and what its properties say, read once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::plumbing::amqprs::channel::Channel;
use jobs_core::plumbing::amqprs::BasicProperties;
use jobs_core::plumbing::{header_u64, headers, message_attempt, message_job_id};
use jobs_core::JobId;

/// What the worker knows of a message before it runs it, from its properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Meta<'a> {
    /// The job type's name (`type`), if any.
    pub(crate) name: Option<&'a str>,
    /// The job id (`message_id`), if any and not empty.
    pub(crate) id: Option<&'a str>,
    /// Which attempt this is, from 1 (`x-attempt`, missing means 1).
    pub(crate) attempt: u32,
    /// Returns of this job unacked so far, as counted in `x-crashes`.
    pub(crate) crashes: u64,
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
}

impl<'a> Meta<'a> {
    pub(crate) fn of(props: &'a BasicProperties, redelivered: bool, size: usize) -> Self {
        Meta {
            name: props.message_type().map(String::as_str),
            id: props.message_id().map(String::as_str).filter(|id| !id.is_empty()),
            attempt: message_attempt(props),
            crashes: header_u64(props, headers::CRASHES).unwrap_or(0),
            redelivered,
            reply_to: props.reply_to().map(String::as_str),
            content_type: props.content_type().map(String::as_str),
            enqueued_at: props.timestamp().map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
            size,
        }
    }
}

/// One delivery being settled.
pub(crate) struct Delivery<'a> {
    pub(crate) channel: &'a Channel,
    pub(crate) tag: u64,
    /// The job queue, or for a subscription its exchange.
    pub(crate) queue: &'a str,
    pub(crate) props: &'a BasicProperties,
    pub(crate) body: &'a [u8],
    pub(crate) meta: Meta<'a>,
}

impl<'a> Delivery<'a> {
    /// The job id, or a new one for a message that had none (so its dead copy has one).
    pub(crate) fn id(&self) -> JobId {
        message_job_id(self.props)
    }

    /// The job type's name, or `(none)`.
    pub(crate) fn name(&self) -> &'a str {
        self.meta.name.unwrap_or("(none)")
    }
}
