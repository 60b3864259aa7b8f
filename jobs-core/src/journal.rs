//! A journal: a RabbitMQ stream of records, kept for a while (`x-max-age`)
//! and read whole by every reader, from where it asks (a time, an offset, or
//! from now on); reading removes nothing. The coordination primitive of
//! "a durable, replayable log" (`design.md`), in one shape for every use:
//! the workers' heartbeats (`jobs.events`), the runs the broker's
//! `consumer_timeout` ended (`jobs.returns`).
//!
//! A record is appended after the thing it tells of, confirmed; a reader
//! that reconnects goes on from the offset after the last it read, so it
//! sees no record twice within a connection and misses none it was there
//! for. Records carry ids of their own: readers that need to can drop repeats.

use std::time::{Duration, SystemTime};

use amqprs::channel::{BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage};
use amqprs::connection::Connection;
use amqprs::{FieldTable, FieldValue};

use crate::codec::{header_u64, set_header};
use crate::confirm::Publisher;
use crate::destination::Destination;
use crate::message::Message;
use crate::refusal::ChannelWatch;
use crate::topology::{declare_queue, Declarer};
use crate::{Error, JobId};

/// A stream of records and how long the broker keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journal {
    name: &'static str,
    max_age: Duration,
    /// The size of its segments, when not the broker's (500 MB): records go
    /// by age a whole segment at a time, and never from the segment being
    /// written, so a journal of small records needs small segments to be
    /// bounded by age.
    segment_bytes: Option<u64>,
}

/// Where a reader of a journal starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first record appended at or after this time (whole seconds).
    Time(SystemTime),
    /// The record at this offset (the one after the last read, on a reconnect).
    Offset(u64),
    /// The records appended from now on.
    Next,
}

impl Journal {
    /// The journal `name`, whose records the broker drops after `max_age`.
    pub const fn new(name: &'static str, max_age: Duration) -> Self {
        Journal { name, max_age, segment_bytes: None }
    }

    /// The same journal in segments of `bytes` (`x-stream-max-segment-size-bytes`).
    pub const fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = Some(bytes);
        self
    }

    /// The stream's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Declares the stream (idempotent).
    ///
    /// # Errors
    /// When the broker refuses it (a queue of that name with other arguments).
    pub async fn declare(&self, on: &Declarer) -> Result<(), Error> {
        let mut args = FieldTable::new();
        set_header(&mut args, "x-queue-type", FieldValue::from("stream"));
        set_header(&mut args, "x-max-age", FieldValue::from(max_age_argument(self.max_age).as_str()));
        if let Some(bytes) = self.segment_bytes {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            set_header(&mut args, "x-stream-max-segment-size-bytes", FieldValue::l(bytes));
        }
        declare_queue(on, self.name, args).await
    }

    /// Appends a record (`kind` names what it is, as a message's `type`), and
    /// waits for the broker's confirm.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub async fn append(&self, publisher: &Publisher, kind: &str, body: Vec<u8>) -> Result<(), Error> {
        let message = Message::job(kind, JobId::new(), body).transient();
        publisher.publish(message.into_outgoing(&Destination::direct(self.name))).await
    }

    /// Starts reading at `start`, on a channel of its own.
    ///
    /// # Errors
    /// When the channel cannot be opened or the consume is refused (the
    /// stream does not exist: declare it first).
    pub async fn read(&self, connection: &Connection, start: StartAt) -> Result<JournalReader, Error> {
        let channel = connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        // A stream is read with a prefetch and acks (the acks only give credit).
        let qos = BasicQosArguments::new(0, 500, false);
        channel.basic_qos(qos).await.map_err(|e| watch.error("basic.qos", self.name, e))?;
        let offset = match start {
            StartAt::Time(at) => FieldValue::T(at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())),
            StartAt::Offset(offset) => FieldValue::l(i64::try_from(offset).unwrap_or(i64::MAX)),
            StartAt::Next => FieldValue::from("next"),
        };
        let mut arguments = FieldTable::new();
        set_header(&mut arguments, "x-stream-offset", offset);
        let mut args = BasicConsumeArguments::new(self.name, "").manual_ack(true).finish();
        args.arguments = arguments;
        let (_, rx) = channel.basic_consume_rx(args).await.map_err(|e| watch.error("basic.consume", self.name, e))?;
        Ok(JournalReader { channel, rx, unacked: 0, to_ack: None })
    }
}

/// A reader of a journal.
pub struct JournalReader {
    channel: Channel,
    rx: tokio::sync::mpsc::UnboundedReceiver<ConsumerMessage>,
    /// Delivered and not yet acked (acked together: the acks only give credit).
    unacked: u32,
    /// The delivery tag to ack (with those before it) as the next record is asked for.
    to_ack: Option<u64>,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader").field("channel", &self.channel.channel_id()).finish()
    }
}

impl JournalReader {
    /// The next record, its offset and its kind; `None` when the channel closed.
    ///
    /// Cancel-safe: a `next` dropped before it returns (a `select!` that took
    /// another branch) loses no record. (Acks wait for the next call, and only
    /// give credit.)
    pub async fn next(&mut self) -> Option<(u64, Option<String>, Vec<u8>)> {
        if let Some(tag) = self.to_ack {
            let _ = self.channel.basic_ack(BasicAckArguments::new(tag, true)).await;
            self.to_ack = None;
        }
        loop {
            let message = self.rx.recv().await?;
            let (Some(deliver), Some(props), Some(body)) = (message.deliver, message.basic_properties, message.content)
            else {
                continue;
            };
            // Half the prefetch: the credit never runs out, and a trickle of
            // records (the live fold) costs one ack per 250, not one each.
            self.unacked += 1;
            if self.unacked >= 250 {
                self.to_ack = Some(deliver.delivery_tag());
                self.unacked = 0;
            }
            let offset = header_u64(&props, "x-stream-offset").unwrap_or(0);
            return Some((offset, props.message_type().cloned(), body));
        }
    }

    /// Stops reading.
    pub async fn close(self) {
        let _ = self.channel.close().await;
    }
}

/// `x-max-age` for a stream: whole seconds, as RabbitMQ writes them (`604800s`).
pub fn max_age_argument(max_age: Duration) -> String {
    format!("{}s", max_age.as_secs().max(1))
}
