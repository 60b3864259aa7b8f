//! Declarations of every broker object the framework uses, in one place,
//! with the settings of one config; idempotent, made by client and worker
//! alike. Their names are `names.rs`, the delay cascade's arithmetic `delay.rs`:
//!
//! - `<queue>`: durable queue the jobs wait in (classic, or quorum by config);
//! - `<queue>.dead`: jobs that failed for good or could not be read; no expiry;
//! - `jobs.delay.00` … `jobs.delay.27` and `jobs.delay.delivery` (with quorum
//!   queues `jobs.delay.quorum.00` …): the delay cascade;
//! - `jobs.events`: the stream of worker heartbeats.

use std::time::Duration;

use amqprs::channel::{ExchangeBindArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments};
use amqprs::{FieldName, FieldTable, FieldValue};

use crate::codec::set_header;
use crate::refusal::ChannelWatch;
use crate::Error;

pub use crate::delay::*;
pub use crate::names::*;

/// Ready messages and consumers of `queue`, by a passive declare on a channel of
/// its own (a missing queue closes the channel it is asked on); `None` when the
/// queue does not exist or the broker does not answer.
pub async fn queue_counts(connection: &amqprs::connection::Connection, queue: &str) -> Option<(u32, u32)> {
    let channel = connection.open_channel(None).await.ok()?;
    let declared = channel.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish()).await;
    let _ = channel.close().await;
    declared.ok().flatten().map(|(_, ready, consumers)| (ready, consumers))
}

/// The highest priority a job takes (`x-max-priority` of a queue whose job
/// types say `#[job(priorities)]`; classic queues only).
pub const MAX_PRIORITY: u8 = 9;

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
        crate::events::journal(self.events_max_age).declare(on).await
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
            let mut args = self.queue_args(None, None);
            if crate::registry::queue_has_priorities(queue) {
                set_header(&mut args, "x-max-priority", FieldValue::l(i64::from(MAX_PRIORITY)));
            }
            args
        };
        declare_queue(on, queue, args).await?;
        declare_queue(on, &dead, self.queue_args(None, None)).await
    }

    /// Declares the `shards` shard queues of an ordered type's `queue`
    /// (`<queue>.shard.<n>`): quorum queues whatever `amqp.queue_type` says,
    /// with a single active consumer (one worker runs a shard's jobs, one at
    /// a time, and another takes over when it goes), returns kept near the
    /// head by the broker, and what comes back more than the delivery limit
    /// dead-lettered to `<queue>.dead`. `queue` and `<queue>.dead` must exist.
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn declare_shards(&self, on: &Declarer, queue: &str, shards: u16) -> Result<(), Error> {
        for n in 0..shards {
            self.declare_shard(on, queue, n).await?;
        }
        Ok(())
    }

    /// Declares shard `n` of `queue`, as [`Topology::declare_shards`] does.
    ///
    /// # Errors
    /// As [`Topology::declare_job_queue`].
    pub async fn declare_shard(&self, on: &Declarer, queue: &str, n: u16) -> Result<(), Error> {
        validate_queue_name(queue)?;
        let dead = dead_queue(queue);
        let quorum = Topology { queue_type: QueueType::Quorum, ..*self };
        let mut args = quorum.queue_args(Some(("", Some(&dead))), None);
        set_header(&mut args, "x-single-active-consumer", FieldValue::t(true));
        set_header(&mut args, "x-delivery-limit", FieldValue::l(i64::from(self.delivery_limit)));
        declare_queue(on, &shard_queue(queue, n), args).await
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

pub(crate) async fn declare_queue(on: &Declarer, name: &str, args: FieldTable) -> Result<(), Error> {
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
