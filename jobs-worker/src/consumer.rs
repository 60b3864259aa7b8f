//! One consumer per queue: its own channel, `basic.qos(prefetch)`, manual acks.
//! Each delivery runs in a task of its own; the prefetch bounds how many.

use std::sync::Arc;

use jobs_core::amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage, QueueBindArguments,
    QueueDeclareArguments,
};
use jobs_core::amqprs::connection::Connection;
use jobs_core::topology::ExchangeKind;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use crate::dispatch::{Dispatcher, Outcome};
use crate::settle::{Delivery, Settler};
use crate::systemd::Health;
use crate::{Error, Subscription};
use jobs_core::{header_u64, headers, BROKER_ANSWER};

/// What every delivery's task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) settler: Settler,
    /// Classic queues: count returns of unacked jobs ourselves (quorum queues count).
    pub(crate) count_crashes: bool,
    pub(crate) max_crashes: u32,
    pub(crate) max_message_size: usize,
    pub(crate) health: Arc<Health>,
}

/// Maps an amqprs error of operation `op`.
fn amqp(op: &'static str) -> impl Fn(jobs_core::amqprs::error::Error) -> jobs_core::Error {
    move |source| jobs_core::Error::Amqp { op, source }
}

pub(crate) struct Consumer {
    channel: Channel,
    /// The job queue, or for a subscription the exchange: what failures are
    /// dead-lettered under (`<home>.dead`) and what `ctx.queue()` says.
    queue: Arc<str>,
    /// A subscription's queue: exclusive to this worker and gone with it, so
    /// failures are not retried (a retry could not find its way back) and
    /// returns are not counted as crashes.
    transient: bool,
    tag: String,
    rx: UnboundedReceiver<ConsumerMessage>,
    /// At prefetch 1 a delivery runs in the consumer's own task: no hand-off
    /// to another task per job (it showed on the drain's hot path).
    inline: bool,
}

impl Consumer {
    /// Opens a channel and starts consuming `queue` with `prefetch` unacked at most.
    pub(crate) async fn start(
        connection: &Connection,
        queue: &str,
        prefetch: u16,
        worker: &str,
    ) -> Result<Self, Error> {
        let channel = connection.open_channel(None).await.map_err(amqp("channel.open"))?;
        Self::consume(channel, queue, queue, false, prefetch, worker).await
    }

    /// Starts consuming `queue` on `channel`; `home` names it in settling and logs.
    async fn consume(
        channel: Channel,
        queue: &str,
        home: &str,
        transient: bool,
        prefetch: u16,
        worker: &str,
    ) -> Result<Self, Error> {
        channel.basic_qos(BasicQosArguments::new(0, prefetch, false)).await.map_err(amqp("basic.qos"))?;
        let tag = format!("{worker}:{home}");
        let args = BasicConsumeArguments::new(queue, &tag).manual_ack(true).finish();
        let (tag, rx) = channel.basic_consume_rx(args).await.map_err(amqp("basic.consume"))?;
        Ok(Consumer { channel, queue: home.into(), transient, tag, rx, inline: prefetch == 1 })
    }

    /// Subscribes to an exchange: a server-named exclusive queue of this
    /// connection, bound with the subscription's keys, consumed like a job queue.
    pub(crate) async fn subscribe(
        connection: &Connection,
        subscription: &Subscription,
        prefetch: u16,
        worker: &str,
    ) -> Result<Self, Error> {
        let channel = connection.open_channel(None).await.map_err(amqp("channel.open"))?;
        let (queue, _, _) = channel
            .queue_declare(QueueDeclareArguments::exclusive_server_named())
            .await
            .map_err(amqp("queue.declare"))?
            .ok_or_else(|| Error::ConnectionLost { queue: "(no declare-ok)".into() })?;
        let keys = match subscription.kind {
            ExchangeKind::Fanout => vec![String::new()],
            _ => subscription.keys.clone(),
        };
        for key in &keys {
            channel
                .queue_bind(QueueBindArguments::new(&queue, &subscription.exchange, key))
                .await
                .map_err(amqp("queue.bind"))?;
        }
        Self::consume(channel, &queue, &subscription.exchange, true, prefetch, worker).await
    }

    async fn cancel(&self) {
        match tokio::time::timeout(BROKER_ANSWER, self.channel.basic_cancel(BasicCancelArguments::new(&self.tag))).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                debug!(queue = &*self.queue, error = %err, "consumer cancel failed (channel already closed)")
            }
            Err(_) => warn!(
                queue = &*self.queue,
                timeout = ?BROKER_ANSWER,
                "the broker did not answer the consumer's cancel; stopping anyway (what it still delivers is not started and goes back to the queue)"
            ),
        }
    }

    /// Hands deliveries to tasks until `stop` (then cancels the consumer and
    /// returns `Ok`) or until the channel dies (`Err`).
    pub(crate) async fn run(
        mut self,
        stop: CancellationToken,
        tasks: TaskTracker,
        shared: Arc<Shared>,
    ) -> Result<(), Error> {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.cancel().await;
                    return Ok(());
                }
                message = self.rx.recv() => match message {
                    Some(message) => {
                        let job = tasks.track_future(handle(
                            shared.clone(),
                            self.channel.clone(),
                            self.queue.clone(),
                            self.transient,
                            message,
                        ));
                        if !self.inline {
                            tokio::spawn(job);
                            continue;
                        }
                        let mut job = Box::pin(job);
                        tokio::select! {
                            biased;
                            _ = &mut job => {}
                            _ = stop.cancelled() => {
                                // Stop taking jobs now; the running one finishes on its own
                                // (still tracked, so the grace period applies to it).
                                tokio::spawn(job);
                                self.cancel().await;
                                return Ok(());
                            }
                        }
                    }
                    None => return Err(Error::ConnectionLost { queue: self.queue.to_string() }),
                },
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, channel: Channel, queue: Arc<str>, transient: bool, message: ConsumerMessage) {
    settle_one(&shared, channel, queue, transient, message).await;
    shared.health.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

async fn settle_one(shared: &Shared, channel: Channel, queue: Arc<str>, transient: bool, message: ConsumerMessage) {
    let (Some(deliver), Some(props), Some(body)) = (message.deliver, message.basic_properties, message.content) else {
        error!(queue = &*queue, "incomplete delivery from amqprs; it stays unacked and returns to the queue");
        return;
    };
    let d = Delivery { channel: &channel, tag: deliver.delivery_tag(), queue: &queue, props: &props, body: &body };
    let settler = &shared.settler;
    if body.len() > shared.max_message_size {
        let reason =
            format!("body of {} bytes is over worker.max_message_size ({} bytes)", body.len(), shared.max_message_size);
        return settler.dead_letter(&d, "bad-message", &reason).await;
    }
    if deliver.redelivered() && shared.count_crashes && !transient {
        let crashes = header_u64(&props, headers::CRASHES).unwrap_or(0) + 1;
        if crashes > u64::from(shared.max_crashes) {
            let reason = format!(
                "came back unacked {crashes} times (amqp.max_crashes = {}): it kills its worker, or its workers kept losing the broker",
                shared.max_crashes
            );
            return settler.dead_letter(&d, "crashed", &reason).await;
        }
        return settler.requeue_crashed(&d, crashes).await;
    }
    let outcome = shared.dispatcher.run(&props, &body, &queue, &settler.worker).await;
    if let Some(reply_to) = props.reply_to() {
        // A call: its answer, or its failure, goes back to the caller; calls are not retried.
        match &outcome {
            Outcome::Done { reply: Some(bytes) } => settler.reply(&d, reply_to, "ok", bytes.clone()).await,
            Outcome::Failed { kind, error, .. } | Outcome::Rejected { kind, reason: error } => {
                let error = rmp_serde::to_vec(error).unwrap_or_default();
                settler.reply(&d, reply_to, kind, error).await;
                if matches!(outcome, Outcome::Failed { .. }) {
                    return settler.ack(&channel, d.tag).await;
                }
            }
            Outcome::Done { reply: None } => {}
        }
    }
    match outcome {
        Outcome::Done { .. } => settler.ack(&channel, d.tag).await,
        Outcome::Failed { kind, error, retry_in: Some(delay) } if !transient => {
            settler.retry(&d, kind, &error, delay).await
        }
        Outcome::Failed { kind, error, .. } => settler.dead_letter(&d, kind, &error).await,
        Outcome::Rejected { kind, reason } => settler.dead_letter(&d, kind, &reason).await,
    }
}
