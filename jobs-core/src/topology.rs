//! Names, arguments and declarations of every broker object the framework uses,
//! in one place. Declarations are idempotent; client and worker both make them.
//!
//! - `<queue>`: durable queue the jobs wait in (classic, or quorum by config);
//! - `<queue>.dead`: jobs that failed for good or could not be read; no expiry;
//! - `jobs.delay.00` … `jobs.delay.27` and `jobs.delay.delivery` (with quorum
//!   queues `jobs.delay.quorum.00` …): the delay
//!   cascade (see [`delay_route`]): level `n` is a topic exchange and a queue
//!   holding messages `2ⁿ` seconds by queue TTL, then dead-lettering them to
//!   level `n-1`; the routing key spells the remaining delay in bits, then the
//!   destination queue. Bounded objects, no head-of-line blocking, durable.

use std::time::Duration;

use amqprs::channel::{ExchangeBindArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments};
use amqprs::{FieldName, FieldTable, FieldValue};
use serde::Deserialize;

use crate::codec::set_header;
use crate::refusal::ChannelWatch;
use crate::Error;

/// Delay levels: delays up to `2^LEVELS - 1` seconds (about 8.5 years).
pub const LEVELS: u32 = 28;

/// The longest delay the cascade can hold.
pub const MAX_DELAY: Duration = Duration::from_secs((1 << LEVELS) - 1);

/// The longest job queue name: a delayed job's routing key is 56 bytes of bits,
/// then the queue name, and the broker allows 255.
pub const MAX_QUEUE_NAME: usize = 190;

/// Prefix of the delay cascade's objects with classic queues; with quorum
/// queues it is `jobs.delay.quorum` (so both kinds can share a vhost).
pub const DELAY_PREFIX: &str = "jobs.delay";

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

/// The exchange and queue of delay level `level` of the cascade named `prefix`.
pub fn delay_level(prefix: &str, level: u32) -> String {
    format!("{prefix}.{level:02}")
}

/// The exchange of the cascade named `prefix` that hands due messages to their queue.
pub fn delivery_exchange(prefix: &str) -> String {
    format!("{prefix}.delivery")
}

/// Where to publish a message delayed by `delay` (rounded up to whole seconds,
/// capped at [`MAX_DELAY`]) for `queue`, in the cascade named `prefix`: the
/// exchange of the highest level it needs, and the routing key
/// `b27.b26.….b0.<queue>`. `None` for no delay.
pub fn delay_route(prefix: &str, delay: Duration, queue: &str) -> Option<(String, String)> {
    let secs = whole_seconds(delay).as_secs();
    if secs == 0 {
        return None;
    }
    let top = 63 - secs.leading_zeros();
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for level in (0..LEVELS).rev() {
        key.push(if secs & (1 << level) != 0 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    Some((delay_level(prefix, top), key))
}

/// `delay` as the cascade holds it: rounded up to whole seconds (never
/// early), capped at [`MAX_DELAY`].
pub fn whole_seconds(delay: Duration) -> Duration {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    Duration::from_secs(secs.min(MAX_DELAY.as_secs()))
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

/// Ready messages and consumers of `queue`, by a passive declare on a channel of
/// its own (a missing queue closes the channel it is asked on); `None` when the
/// queue does not exist or the broker does not answer.
pub async fn queue_counts(connection: &amqprs::connection::Connection, queue: &str) -> Option<(u32, u32)> {
    let channel = connection.open_channel(None).await.ok()?;
    let declared = channel.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish()).await;
    let _ = channel.close().await;
    declared.ok().flatten().map(|(_, ready, consumers)| (ready, consumers))
}

/// Declares the framework's objects with the settings of one config.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    queue_type: QueueType,
    delivery_limit: u32,
    events_max_age: Duration,
}

impl Topology {
    /// Queues of `queue_type`; on quorum queues a message delivered more than
    /// `delivery_limit` times (returned by crashed workers) is dead-lettered.
    pub fn new(queue_type: QueueType, delivery_limit: u32) -> Self {
        Topology { queue_type, delivery_limit, events_max_age: Duration::from_secs(7 * 86400) }
    }

    /// How long the heartbeat stream keeps beats (`amqp.events_max_age`).
    #[must_use]
    pub fn with_events_max_age(mut self, max_age: Duration) -> Self {
        self.events_max_age = max_age;
        self
    }

    /// Declares the stream of worker heartbeats, [`EVENTS_STREAM`](crate::events::EVENTS_STREAM):
    /// beats older than `amqp.events_max_age` are dropped by the broker.
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn declare_events(&self, on: &Declarer) -> Result<(), Error> {
        let mut args = FieldTable::new();
        set_header(&mut args, "x-queue-type", FieldValue::from("stream"));
        let max_age = crate::events::max_age_argument(self.events_max_age);
        set_header(&mut args, "x-max-age", FieldValue::from(max_age.as_str()));
        declare_queue(on, crate::events::EVENTS_STREAM, args).await
    }

    /// The queue type.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// The name prefix of this topology's delay cascade.
    pub fn delay_prefix(&self) -> &'static str {
        match self.queue_type {
            QueueType::Classic => DELAY_PREFIX,
            QueueType::Quorum => "jobs.delay.quorum",
        }
    }

    /// [`delay_route`] in this topology's cascade.
    pub fn delay_route(&self, delay: Duration, queue: &str) -> Option<(String, String)> {
        delay_route(self.delay_prefix(), delay, queue)
    }

    fn queue_args(&self, dead_letter_to: Option<(&str, Option<&str>)>, ttl: Option<u64>) -> FieldTable {
        let mut args = FieldTable::new();
        if self.queue_type == QueueType::Quorum {
            set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
        }
        if let Some(ttl) = ttl {
            set_header(&mut args, "x-message-ttl", FieldValue::l(ttl as i64));
        }
        if let Some((exchange, routing_key)) = dead_letter_to {
            set_header(&mut args, "x-dead-letter-exchange", FieldValue::from(exchange));
            if let Some(key) = routing_key {
                set_header(&mut args, "x-dead-letter-routing-key", FieldValue::from(key));
            }
            if self.queue_type == QueueType::Quorum {
                set_header(&mut args, "x-dead-letter-strategy", FieldValue::from("at-least-once"));
                set_header(&mut args, "x-overflow", FieldValue::from("reject-publish"));
            }
        }
        args
    }

    /// Declares `queue` and `<queue>.dead`.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::TopologyMismatch`] when a queue of that
    /// name exists with other arguments; [`Error::Amqp`] otherwise.
    pub async fn declare_job_queue(&self, on: &Declarer, queue: &str) -> Result<(), Error> {
        validate_queue_name(queue)?;
        let dead = dead_queue(queue);
        let args = if self.queue_type == QueueType::Quorum {
            let mut args = self.queue_args(Some(("", Some(&dead))), None);
            set_header(&mut args, "x-delivery-limit", FieldValue::l(i64::from(self.delivery_limit)));
            args
        } else {
            self.queue_args(None, None)
        };
        declare_queue(on, queue, args).await?;
        declare_queue(on, &dead, self.queue_args(None, None)).await
    }

    /// Declares a durable exchange of `kind` and its dead-letter queue
    /// `<exchange>.dead` (a queue of this topology's type, so that with quorum
    /// queues it survives the loss of a node like the job queues do).
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn declare_exchange(&self, on: &Declarer, name: &str, kind: ExchangeKind) -> Result<(), Error> {
        validate_queue_name(name)?;
        on.channel
            .exchange_declare(ExchangeDeclareArguments::new(name, kind.as_str()).durable(true).finish())
            .await
            .map_err(|source| on.watch.error("exchange.declare", name, source))?;
        declare_queue(on, &dead_queue(name), self.queue_args(None, None)).await
    }

    /// Binds `queue` to the delivery exchange, so delayed jobs reach it.
    /// Needs [`Topology::declare_delays`] first.
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn bind_delayed(&self, on: &Declarer, queue: &str) -> Result<(), Error> {
        let pattern = format!("{}{queue}", "*.".repeat(LEVELS as usize));
        on.channel
            .queue_bind(QueueBindArguments::new(queue, &delivery_exchange(self.delay_prefix()), &pattern))
            .await
            .map_err(|source| on.watch.error("queue.bind", queue, source))
    }

    /// Declares the delay cascade: `LEVELS` exchanges and queues, the delivery
    /// exchange, and their bindings.
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn declare_delays(&self, on: &Declarer) -> Result<(), Error> {
        let channel = &on.channel;
        let exchange = |name: &str| ExchangeDeclareArguments::new(name, "topic").durable(true).finish();
        let prefix = self.delay_prefix();
        let delivery = delivery_exchange(prefix);
        channel
            .exchange_declare(exchange(&delivery))
            .await
            .map_err(|source| on.watch.error("exchange.declare", &delivery, source))?;
        for level in 0..LEVELS {
            let name = delay_level(prefix, level);
            let next = if level == 0 { delivery.clone() } else { delay_level(prefix, level - 1) };
            channel
                .exchange_declare(exchange(&name))
                .await
                .map_err(|source| on.watch.error("exchange.declare", &name, source))?;
            let ttl = (1u64 << level) * 1000;
            declare_queue(on, &name, self.queue_args(Some((&next, None)), Some(ttl))).await?;
            // Bits above this level are any; this level's bit decides: 1 waits here, 0 goes on down.
            let above = "*.".repeat((LEVELS - 1 - level) as usize);
            channel
                .queue_bind(QueueBindArguments::new(&name, &name, &format!("{above}1.#")))
                .await
                .map_err(|source| on.watch.error("queue.bind", &name, source))?;
            channel
                .exchange_bind(ExchangeBindArguments::new(&next, &name, &format!("{above}0.#")))
                .await
                .map_err(|source| on.watch.error("exchange.bind", &name, source))?;
        }
        Ok(())
    }
}

async fn declare_queue(on: &Declarer, name: &str, args: FieldTable) -> Result<(), Error> {
    let dead_letters = FieldName::try_from("x-dead-letter-exchange").is_ok_and(|key| args.get(&key).is_some());
    let op = if dead_letters { crate::refusal::DECLARE_DEAD_LETTERING } else { "queue.declare" };
    let mut declare = QueueDeclareArguments::durable_client_named(name);
    declare.arguments(args);
    on.channel.queue_declare(declare).await.map(|_| ()).map_err(|source| on.watch.error(op, name, source))
}

/// A channel for declarations. The broker closes a channel on a refused
/// declaration and says why in the close: the declarer keeps that, so the
/// error names the queue, the argument or the permission. After a refusal it
/// is closed; open another.
pub struct Declarer {
    channel: amqprs::channel::Channel,
    watch: std::sync::Arc<ChannelWatch>,
}

impl std::fmt::Debug for Declarer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Declarer").field("channel", &self.channel.channel_id()).finish()
    }
}

impl Declarer {
    /// Opens a channel for declarations on `connection`.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the channel cannot be opened.
    pub async fn open(connection: &amqprs::connection::Connection) -> Result<Self, Error> {
        let channel = connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        Ok(Declarer { channel, watch })
    }

    /// Whether it can still declare (the broker closes it on a refusal).
    pub fn is_open(&self) -> bool {
        self.channel.is_open() && self.watch.closure().is_none()
    }

    /// Closes the channel.
    pub async fn close(self) {
        let _ = self.channel.close().await;
    }
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

    #[test]
    fn delay_routes_spell_the_seconds_in_bits_and_start_at_the_top_level() {
        assert_eq!(delay_route(DELAY_PREFIX, Duration::ZERO, "q"), None);
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(5), "emails").unwrap();
        assert_eq!(exchange, "jobs.delay.02");
        assert_eq!(key, format!("{}1.0.1.emails", "0.".repeat(25)));
        // Rounded up: never early.
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_millis(1500), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.01");
        assert!(key.ends_with(".0.1.0.q"), "{key}");
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(3600), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.11");
        let bits: String = key.split('.').take(LEVELS as usize).collect();
        assert_eq!(u64::from_str_radix(&bits, 2).unwrap(), 3600);
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(u64::MAX), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.27");
        assert!(key.starts_with(&"1.".repeat(28)));
        let longest = "q".repeat(MAX_QUEUE_NAME);
        assert!(delay_route(DELAY_PREFIX, Duration::from_secs(1), &longest).unwrap().1.len() <= 255);
    }
}
