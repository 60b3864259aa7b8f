//! One consumer per queue: its own channel, `basic.qos(prefetch)`, manual acks.
//! Each delivery runs in a task of its own; the prefetch bounds how many.

use std::sync::Arc;

use jobs_core::plumbing::amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage, QueueBindArguments,
    QueueDeclareArguments,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::{amqp_error as amqp, ChannelWatch, Closure, Origin, BROKER_ANSWER};
use jobs_core::{ExchangeKind, Paused};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::delivery::{Delivery, Meta};
use crate::dispatch::{Dispatcher, Place};
use crate::placement::Placement;
use crate::policy::{self, Home, Limits, Ran};
use crate::settle::Settler;
use crate::shard::Leaving;
use crate::systemd::Health;
use crate::{Error, Subscription};

/// What every delivery's task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dispatcher: Arc<Dispatcher>,
    /// Where jobs run (the link's thread, the jobs' runtime, the blocking pool).
    pub(crate) placement: Arc<Placement>,
    pub(crate) settler: Settler,
    pub(crate) limits: Limits,
    pub(crate) health: Arc<Health>,
    /// The worker's own client: the one its jobs enqueue on (`Job::enqueue`,
    /// child jobs), whatever the process-wide one is (another worker's, on
    /// another vhost, in a process with several).
    pub(crate) client: Option<jobs_core::Client>,
    /// The queues paused now (`jobs.control`).
    pub(crate) pauses: Arc<crate::pauses::Pauses>,
    /// The cancels of jobs (`jobs.control`), and the running jobs they reach.
    pub(crate) cancels: Arc<crate::cancels::Cancels>,
    /// The shards' jobs still running after their consumer stopped, and what
    /// drops them when the session ends otherwise than by a stop.
    pub(crate) shard_tails: crate::shard::Tails,
}

pub(crate) struct Consumer {
    channel: Channel,
    /// The job queue, or for a subscription the exchange: what failures are
    /// dead-lettered under (`<home>.dead`) and what `ctx.queue()` says.
    queue: Arc<str>,
    /// A job queue, or a subscription's queue (exclusive to this worker and
    /// gone with it, so failures are not retried and returns are not crashes).
    home: Home,
    /// The queue consumed (for a subscription, its own queue).
    consumed: String,
    tag: String,
    /// Deliveries; none while the queue is paused (after those delivered
    /// before the cancel).
    rx: Option<UnboundedReceiver<ConsumerMessage>>,
    /// What `jobs.control` says is paused (a job queue's consumer only).
    paused: Option<watch::Receiver<Paused>>,
    /// Consuming now (not cancelled for a pause).
    consuming: bool,
    /// For a limited type's queue: the slots this worker holds, which its
    /// prefetch follows (no consumer while none).
    held: Option<watch::Receiver<u16>>,
    /// The prefetch of the consumer (the worker's concurrency, or for a
    /// limited type's queue the slots held, up to it).
    prefetch: u16,
    concurrency: u16,
    /// The broker did not answer a cancel of this consumer: it may still
    /// deliver, and a new consumer cannot be started beside it.
    cancel_unanswered: bool,
    /// At prefetch 1 a delivery runs in the consumer's own task: no hand-off
    /// to another task per job (it showed on the drain's hot path).
    inline: bool,
    /// Cancelled when this consumer ends (a stop, a lost session, its
    /// channel closed): its deliveries still waiting to start (for a turn,
    /// a token, a slot) give up, and go back unstarted.
    exit: CancellationToken,
    /// A child of `exit`, cancelled too (and made anew) at each pause: a
    /// paused queue's waiting deliveries do not start either.
    waiting: CancellationToken,
    /// What the broker says when it closes the channel (its
    /// `consumer_timeout`, say): the running jobs are dropped at once.
    watch: Arc<ChannelWatch>,
}

impl Consumer {
    /// Opens a channel and starts consuming `queue` with `prefetch` unacked
    /// at most, unless `paused` says it is paused (then once it is resumed).
    pub(crate) async fn start(
        connection: &Connection,
        queue: &str,
        prefetch: u16,
        worker: &str,
        paused: watch::Receiver<Paused>,
        held: Option<watch::Receiver<u16>>,
    ) -> Result<Self, Error> {
        let channel = connection.open_channel(None).await.map_err(amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        let mut consumer = Self::consume(channel, watch, queue, queue, Home::Queue, prefetch, worker, true).await?;
        consumer.paused = Some(paused);
        if held.is_some() {
            // Its jobs run in tasks of their own: the prefetch changes.
            consumer.inline = false;
        }
        consumer.held = held;
        consumer.follow_pause(&Health::default()).await?;
        Ok(consumer)
    }

    /// The prefetch to consume at now; `None`: not consuming (paused, or no slot held).
    fn wanted(&self) -> Option<u16> {
        if self.paused.as_ref().is_some_and(|p| p.borrow().is_paused(&self.queue)) {
            return None;
        }
        match &self.held {
            None => Some(self.concurrency),
            Some(held) => Some((*held.borrow()).min(self.concurrency)).filter(|n| *n > 0),
        }
    }

    /// Starts consuming `queue` on `channel` (unless `paused`); `name` names
    /// it in settling and logs.
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        channel: Channel,
        watch: Arc<ChannelWatch>,
        queue: &str,
        name: &str,
        home: Home,
        prefetch: u16,
        worker: &str,
        paused: bool,
    ) -> Result<Self, Error> {
        let qos = BasicQosArguments::new(0, prefetch, false);
        channel.basic_qos(qos).await.map_err(|e| watch.error("basic.qos", queue, e))?;
        let tag = consumer_tag(worker, name);
        let mut consumer = Consumer {
            channel,
            queue: name.into(),
            consumed: queue.to_owned(),
            home,
            tag,
            rx: None,
            paused: None,
            consuming: false,
            held: None,
            prefetch,
            concurrency: prefetch,
            cancel_unanswered: false,
            inline: prefetch == 1,
            watch,
            exit: CancellationToken::new(),
            waiting: CancellationToken::new(),
        };
        consumer.waiting = consumer.exit.child_token();
        if !paused {
            consumer.resume().await?;
        }
        Ok(consumer)
    }

    /// Consumes again (the tag is free once cancelled).
    async fn resume(&mut self) -> Result<(), Error> {
        let args = BasicConsumeArguments::new(&self.consumed, &self.tag).manual_ack(true).finish();
        let (tag, rx) =
            self.channel.basic_consume_rx(args).await.map_err(|e| self.watch.error("basic.consume", &self.queue, e))?;
        (self.tag, self.rx, self.consuming) = (tag, Some(rx), true);
        Ok(())
    }

    /// What the watch of paused queues said: a change is followed; once it
    /// can tell nothing more (`changed` false), it is not watched again.
    async fn paused_changed(&mut self, changed: bool, health: &Health) -> Result<(), Error> {
        if !changed {
            self.paused = None;
            return Ok(());
        }
        self.follow_pause(health).await
    }

    /// Cancels or consumes again as `jobs.control` now says of this queue
    /// (and, for a limited type's, as the slots held say).
    async fn follow_pause(&mut self, health: &Health) -> Result<(), Error> {
        let paused = self.paused.as_ref().is_some_and(|p| p.borrow().is_paused(&self.queue));
        let wanted = self.wanted();
        if self.consuming && wanted != Some(self.prefetch) {
            self.cancel(health).await;
            if self.cancel_unanswered {
                // Set up again on a new channel, rather than consume beside it.
                return Err(Error::ConnectionLost {
                    reason: format!("the broker did not answer the cancel of the consumer of `{}`", self.queue),
                });
            }
            if paused {
                // Those delivered and waiting for their turn do not start now.
                self.waiting.cancel();
                self.waiting = self.exit.child_token();
                info!(queue = &*self.queue, "paused: taking no more jobs from this queue (running ones finish)");
            }
        } else if !self.consuming && self.rx.is_none() {
            // Only once what the cancelled consumer was sent has all come
            // (its rx ended): a new one must not drop those deliveries.
            let Some(prefetch) = wanted else { return Ok(()) };
            if prefetch != self.prefetch {
                let qos = BasicQosArguments::new(0, prefetch, false);
                self.channel.basic_qos(qos).await.map_err(|e| self.watch.error("basic.qos", &self.queue, e))?;
                self.prefetch = prefetch;
            }
            self.resume().await?;
            if self.held.is_some() {
                debug!(queue = &*self.queue, prefetch, "consuming a limited type's queue as the slots held allow");
            } else if self.paused.is_some() {
                info!(queue = &*self.queue, "resumed: taking jobs from this queue again");
            }
        }
        Ok(())
    }

    /// What the slots held said: followed; once it can tell nothing more, not watched again.
    async fn held_changed(&mut self, changed: bool, health: &Health) -> Result<(), Error> {
        if !changed {
            self.held = None;
            return Ok(());
        }
        self.follow_pause(health).await
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
        let watch = ChannelWatch::on(&channel).await?;
        let (queue, _, _) = channel
            .queue_declare(QueueDeclareArguments::exclusive_server_named())
            .await
            .map_err(|e| watch.error("queue.declare", "(a subscription queue)", e))?
            .ok_or_else(|| Error::ConnectionLost { reason: "no declare-ok for a subscription queue".into() })?;
        let keys = match subscription.kind {
            ExchangeKind::Fanout => vec![String::new()],
            _ => subscription.keys.clone(),
        };
        for key in &keys {
            channel
                .queue_bind(QueueBindArguments::new(&queue, &subscription.exchange, key))
                .await
                .map_err(|e| watch.error("queue.bind", &subscription.exchange, e))?;
        }
        Self::consume(channel, watch, &queue, &subscription.exchange, Home::Subscription, prefetch, worker, false).await
    }

    /// Cancels the consumer; notes in `health` a broker that does not answer.
    async fn cancel(&mut self, health: &Health) {
        if !std::mem::replace(&mut self.consuming, false) {
            return;
        }
        match tokio::time::timeout(BROKER_ANSWER, self.channel.basic_cancel(BasicCancelArguments::new(&self.tag))).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                debug!(queue = &*self.queue, error = %err, "consumer cancel failed (channel already closed)")
            }
            Err(_) => {
                self.cancel_unanswered = true;
                health.silent.store(true, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    queue = &*self.queue,
                    timeout = ?BROKER_ANSWER,
                    "the broker did not answer the consumer's cancel; stopping anyway (what it still delivers is not started and goes back to the queue)"
                )
            }
        }
    }

    /// Hands deliveries to tasks until `stop` (then cancels the consumer and
    /// returns `Ok`) or until the channel dies (`Err`). When the broker closes
    /// the channel, the jobs running on it are dropped at once: the broker
    /// has taken their deliveries back, and another worker may run them.
    pub(crate) async fn run(
        mut self,
        stop: CancellationToken,
        tasks: TaskTracker,
        shared: Arc<Shared>,
    ) -> Result<(), Error> {
        // Cancelled when the channel closes, and with the worker's end of a stop's grace period.
        let end = shared.settler.interrupt.child_token();
        // However this ends, the deliveries still waiting to start give up.
        let _exit = self.exit.clone().drop_guard();
        let watch = self.watch.clone();
        let closed = watch.closed();
        tokio::pin!(closed);
        let lost = |queue: &str, closure: Closure| Error::ChannelClosed {
            queue: queue.to_owned(),
            reason: closure.to_string(),
        };
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.cancel(&shared.health).await;
                    return Ok(());
                }
                closure = &mut closed => {
                    end.cancel();
                    return Err(lost(&self.queue, closure));
                }
                changed = changed(&mut self.paused) => self.paused_changed(changed, &shared.health).await?,
                changed = held_changed(&mut self.held) => self.held_changed(changed, &shared.health).await?,
                message = next(&mut self.rx) => match message {
                    Some(message) => {
                        let job = tasks.track_future(handle(
                            shared.clone(),
                            self.channel.clone(),
                            self.queue.clone(),
                            self.home,
                            message,
                            (end.clone(), self.watch.clone(), self.waiting.clone(), None),
                        ));
                        if !self.inline {
                            tokio::spawn(job);
                            continue;
                        }
                        let mut job = Box::pin(job);
                        loop {
                            tokio::select! {
                                biased;
                                _ = &mut job => break,
                                _ = stop.cancelled() => {
                                    // Stop taking jobs now; the running one finishes on its own
                                    // (still tracked, so the grace period applies to it).
                                    tokio::spawn(job);
                                    self.cancel(&shared.health).await;
                                    return Ok(());
                                }
                                closure = &mut closed => {
                                    // The job is dropped, and says so as it ends.
                                    end.cancel();
                                    job.await;
                                    return Err(lost(&self.queue, closure));
                                }
                                // A pause while the job runs: cancelled now, before its ack
                                // lets the broker deliver the next one.
                                changed = changed(&mut self.paused) => self.paused_changed(changed, &shared.health).await?,
                            }
                        }
                    }
                    // What was delivered before a pause's cancel has all come;
                    // a resume that came meanwhile is followed now.
                    None if !self.consuming => {
                        self.rx = None;
                        self.follow_pause(&shared.health).await?;
                    }
                    None => return Err(Error::ConnectionLost { reason: format!("the consumer of `{}` ended", self.queue) }),
                },
            }
        }
    }
}

/// The next delivery; never, with no consumer (paused).
async fn next(rx: &mut Option<UnboundedReceiver<ConsumerMessage>>) -> Option<ConsumerMessage> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether what is paused changed; `false` once nothing will tell.
pub(crate) async fn changed(paused: &mut Option<watch::Receiver<Paused>>) -> bool {
    match paused {
        Some(paused) => paused.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Whether the slots held changed; `false` once nothing will tell.
async fn held_changed(held: &mut Option<watch::Receiver<u16>>) -> bool {
    match held {
        Some(held) => held.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// What ends a delivery's run early, what the broker said if it closed its
/// channel, and what ends its wait to start.
/// A shard's delivery also has its consumer's [`Leaving`].
pub(crate) type Ends = (CancellationToken, Arc<ChannelWatch>, CancellationToken, Option<Arc<Leaving>>);

pub(crate) async fn handle(
    shared: Arc<Shared>,
    channel: Channel,
    queue: Arc<str>,
    home: Home,
    message: ConsumerMessage,
    ends: Ends,
) {
    settle_one(&shared, channel, queue, home, message, ends).await;
    shared.health.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Screens, runs and settles one delivery, as the policy decides.
async fn settle_one(
    shared: &Shared,
    channel: Channel,
    queue: Arc<str>,
    home: Home,
    message: ConsumerMessage,
    (end, watch, waiting, leaving): Ends,
) {
    let (Some(deliver), Some(props), Some(body)) = (message.deliver, message.basic_properties, message.content) else {
        error!(queue = &*queue, "incomplete delivery from amqprs; it stays unacked and returns to the queue");
        return;
    };
    let settler = &shared.settler;
    let mut meta = Meta::of(&props, deliver.redelivered(), body.len());
    // Whether it was cancelled, and was running then.
    let mut cancelled = None;
    if meta.redelivered && meta.consumer_timeout.is_none() {
        // Another worker may have told why it came back.
        meta.consumer_timeout = settler.returns.timeout_of(&meta.id);
    }
    let progress = Arc::new(jobs_core::plumbing::ProgressCell::default());
    let held_since = std::time::Instant::now();
    let decision = loop {
        let decision = match policy::screen(&meta, home, &shared.limits) {
            Ok(name) => {
                let place = Place {
                    progress: &progress,
                    waiting: &waiting,
                    queue: &queue,
                    worker: &settler.worker,
                    activity: &settler.activity,
                    end: &end,
                    placement: &shared.placement,
                    client: shared.client.as_ref(),
                    cancels: &shared.cancels,
                    home,
                };
                let started = std::time::Instant::now();
                let ran = match shared.dispatcher.run(name, &meta, &body, place).await {
                    // Ended early: by the broker closing the channel (it has the
                    // job back: a cancel stays kept for when it comes up again),
                    // or by the stop.
                    ran @ (Ran::Interrupted { .. } | Ran::Cancelled { .. }) => match watch.closure() {
                        Some(closure) => Ran::Abandoned {
                            after: started.elapsed(),
                            timeout: closure.consumer_timeout(),
                            reason: closure.to_string(),
                        },
                        None => ran,
                    },
                    ran => ran,
                };
                if let Ran::Cancelled { running, .. } = &ran {
                    cancelled = Some(*running);
                }
                match ran {
                    // Never started, and its channel is gone: the broker has it back.
                    Ran::NotStarted if watch.closure().is_some() || !channel.is_open() => policy::Decision::Leave,
                    ran => policy::decide(ran, &meta, home),
                }
            }
            Err(decision) => decision,
        };
        // In a shard, a failed attempt waits here, the delivery held, and runs again.
        let policy::Decision::Hold { .. } = decision else {
            break decision;
        };
        let run = meta.name.and_then(|name| shared.dispatcher.timeout_of(name)).unwrap_or_default();
        let decision = policy::bound_hold(decision, held_since.elapsed(), run, shared.limits.consumer_timeout);
        let policy::Decision::Hold { attempt: next, delay: wait, .. } = decision else {
            break decision;
        };
        // Counted and said as a retry; nothing is published.
        let delivery = Delivery {
            channel: &channel,
            tag: deliver.delivery_tag(),
            queue: &queue,
            origin: Origin::Queue(&queue),
            props: &props,
            body: &body,
            meta: meta.clone(),
            progress: &progress,
            leaving: None,
        };
        settler.settle(&delivery, decision).await;
        // How many of this worker's shards a failing job holds now.
        let holds = metrics::gauge!("jobs_shard_holds", "queue" => queue.to_string());
        holds.increment(1.0);
        let _holding = scopeguard_decrement(holds);
        tokio::select! {
            biased;
            // A stop, its consumer's end, its channel's close: back to the head of its shard.
            _ = waiting.cancelled() => break policy::Decision::Leave,
            _ = end.cancelled() => break policy::Decision::Leave,
            _ = tokio::time::sleep(wait) => meta.attempt = next,
        }
    };
    let origin = match home {
        Home::Queue | Home::Shard => Origin::Queue(&queue),
        Home::Subscription => Origin::Exchange { name: &queue, routing_key: deliver.routing_key() },
    };
    let delivery = Delivery {
        channel: &channel,
        tag: deliver.delivery_tag(),
        queue: &queue,
        origin,
        props: &props,
        body: &body,
        meta,
        progress: &progress,
        leaving: leaving.as_deref(),
    };
    let id = delivery.meta.id.clone();
    let settled = settler.settle(&delivery, decision).await;
    // Only once dead-lettered: a job that comes back must still be cancelled then.
    if let (Some(running), true) = (cancelled, settled) {
        // The cancel is spent: this worker and then every worker forget it
        // (`dead retry` runs the job again).
        shared.cancels.spent(id.as_str());
        crate::pauses::cancelled(&settler.publisher, &id, &settler.worker, running).await;
    }
    if let Some(timeout) = settler.returns.news() {
        // The broker's consumer_timeout, learned from a close: which job types outlast it.
        shared.dispatcher.check_timeouts(timeout, None);
    }
}

/// Decrements `gauge` when dropped (however the wait it counts ends).
fn scopeguard_decrement(gauge: metrics::Gauge) -> impl Drop {
    struct Down(metrics::Gauge);
    impl Drop for Down {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }
    Down(gauge)
}

/// `<worker>:<queue>`, cut to the 255 bytes AMQP allows (amqprs panics past it).
/// Each consumer has a channel of its own, so a cut tag stays unique there.
pub(crate) fn consumer_tag(worker: &str, queue: &str) -> String {
    jobs_core::plumbing::prefix(&format!("{worker}:{queue}"), 255).to_owned()
}

#[cfg(test)]
mod tests {
    use super::consumer_tag;

    #[test]
    fn a_consumer_tag_fits_in_255_bytes_on_a_char_boundary() {
        assert_eq!(consumer_tag("host-1", "emails"), "host-1:emails");
        let long = consumer_tag(&"é".repeat(200), "emails");
        assert!(long.len() <= 255 && long.len() >= 254, "{}", long.len());
        assert!(long.starts_with('é'));
    }
}
