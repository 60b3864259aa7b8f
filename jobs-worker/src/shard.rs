//! The consumer of one shard of an ordered type (`#[job(ordered_by)]`):
//! `<queue>.shard.<n>`, a single-active-consumer quorum queue, consumed at
//! prefetch 1, one job at a time, in this consumer's own task.
//!
//! The broker makes the next consumer of such a queue active as soon as
//! this one is cancelled or its channel closes, whatever this one still
//! holds, and delivers it the shard's next job. So the order of a key's
//! jobs rests on how this consumer stops (a stop, a pause, a lost
//! connection):
//! - it is never cancelled while a delivery may be on its way to it: idle,
//!   it closes its channel instead, which gives back what was in flight
//!   (to the head) and hands the shard on in one step;
//! - while its job runs it keeps consuming; once the run is over and its
//!   copy (if any) stored, it is cancelled just before the job's ack, when
//!   nothing else can be in flight (prefetch 1), and then closes its
//!   channel; a job it still holds unfinished (a retry waiting in place, a
//!   run past the grace period) goes back with that close;
//! - when the connection goes while its job runs, the job is dropped at
//!   once: the broker gives the shard to another worker, which must not run
//!   the key's jobs beside this one.
//!
//! After a pause it opens a new channel and consumes again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{BasicCancelArguments, BasicConsumeArguments, BasicQosArguments, Channel};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::{amqp_error as amqp, ChannelWatch, BROKER_ANSWER};
use jobs_core::Paused;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::consumer::{changed, consumer_tag, handle, Shared};
use crate::policy::Home;
use crate::Error;

/// How often a running shard job's connection is looked at: a job whose
/// connection went is dropped (another worker now holds its shard).
const CONNECTION_CHECK: Duration = Duration::from_millis(200);

/// Set while a shard's consumer leaves (a stop or a pause while its job
/// runs): the job's ack is preceded by the consumer's cancel.
#[derive(Debug, Default)]
pub(crate) struct Leaving {
    wanted: CancellationToken,
    done: AtomicBool,
    tag: String,
}

impl Leaving {
    fn new(tag: String) -> Self {
        Leaving { tag, ..Leaving::default() }
    }

    /// Cancels the consumer on `channel` when it is leaving (once): called
    /// just before the ack of its job, whose run is over and copy stored.
    pub(crate) async fn before_ack(&self, channel: &Channel) {
        if !self.wanted.is_cancelled() || self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let cancel = channel.basic_cancel(BasicCancelArguments::new(&self.tag));
        if !matches!(tokio::time::timeout(BROKER_ANSWER, cancel).await, Ok(Ok(_))) {
            // Its channel closes next: whatever came meanwhile goes back then.
            debug!(tag = self.tag, "a shard consumer's cancel before its ack went unanswered");
        }
    }
}

type Deliveries = tokio::sync::mpsc::UnboundedReceiver<jobs_core::plumbing::amqprs::channel::ConsumerMessage>;

/// The jobs of shards whose consumer stopped while they ran (they finish
/// within the grace period), and what drops them at once when the session
/// ends otherwise than by a stop: before its connection closes, as the
/// broker then hands their shards to other workers.
#[derive(Debug, Default)]
pub(crate) struct Tails {
    tracker: TaskTracker,
    drop: CancellationToken,
}

impl Tails {
    /// Drops the shards' running jobs and waits (a few seconds at most) until they are gone.
    pub(crate) async fn drop_all(&self) {
        self.drop.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            tracing::warn!(
                running = self.tracker.len(),
                "shard jobs not dropped within 5 s (a job that blocks its thread cannot be dropped)"
            );
        }
    }
}

/// One shard's consumer.
pub(crate) struct ShardConsumer {
    connection: Connection,
    /// The base queue: what failures are dead-lettered under and `ctx.queue()` says.
    queue: Arc<str>,
    /// The shard queue consumed.
    shard: String,
    tag: String,
    /// What `jobs.control` says is paused; `None` once nothing more will tell.
    paused: Option<watch::Receiver<Paused>>,
    /// The channel opened at setup (unless paused then), consumed first.
    first: Option<(Channel, Arc<ChannelWatch>, Deliveries)>,
}

/// How serving a channel ended.
enum Served {
    /// The worker stops.
    Stopped,
    /// The base queue was paused: consume again once it is resumed.
    Paused,
}

impl ShardConsumer {
    /// Starts consuming `shard` of `queue`, unless `queue` is paused (then
    /// once it is resumed).
    pub(crate) async fn start(
        connection: &Connection,
        queue: &str,
        shard: String,
        worker: &str,
        paused: watch::Receiver<Paused>,
    ) -> Result<Self, Error> {
        let tag = consumer_tag(worker, &shard);
        let mut consumer = ShardConsumer {
            connection: connection.clone(),
            queue: queue.into(),
            shard,
            tag,
            paused: Some(paused),
            first: None,
        };
        if !consumer.is_paused() {
            consumer.first = Some(consumer.open().await?);
        }
        Ok(consumer)
    }

    fn is_paused(&self) -> bool {
        self.paused.as_ref().is_some_and(|p| p.borrow().is_paused(&self.queue))
    }

    /// Once what is paused changed; never once nothing more will tell.
    async fn pause_changed(&mut self) {
        if !changed(&mut self.paused).await {
            self.paused = None;
        }
    }

    async fn open(&self) -> Result<(Channel, Arc<ChannelWatch>, Deliveries), Error> {
        let channel = self.connection.open_channel(None).await.map_err(amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, 1, false))
            .await
            .map_err(|e| watch.error("basic.qos", &self.shard, e))?;
        let args = BasicConsumeArguments::new(&self.shard, &self.tag).manual_ack(true).finish();
        let (_, rx) = channel.basic_consume_rx(args).await.map_err(|e| watch.error("basic.consume", &self.shard, e))?;
        Ok((channel, watch, rx))
    }

    /// Runs the shard's jobs until `stop` (`Ok`) or until its channel or
    /// connection goes (`Err`), pausing and resuming with its base queue.
    pub(crate) async fn run(
        mut self,
        stop: CancellationToken,
        tasks: TaskTracker,
        shared: Arc<Shared>,
    ) -> Result<(), Error> {
        // Cancelled when the channel or connection goes (the job is dropped),
        // and with the worker's end of a stop's grace period.
        let end = shared.settler.interrupt.child_token();
        // A retry waiting in place ends its wait when this consumer ends.
        let exit = CancellationToken::new();
        let _exit = exit.clone().drop_guard();
        loop {
            // Paused: nothing consumed (and no channel) until it is resumed.
            while self.first.is_none() && self.is_paused() {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    _ = self.pause_changed() => {}
                }
            }
            let (channel, watch, rx) = match self.first.take() {
                Some(first) => first,
                None => self.open().await?,
            };
            let served = self.serve(&channel, &watch, rx, &stop, &tasks, &shared, (&end, &exit)).await;
            match served {
                Ok(Served::Paused) => {
                    let _ = tokio::time::timeout(BROKER_ANSWER, channel.close()).await;
                    debug!(queue = &*self.queue, shard = self.shard, "paused: this shard's consumer closed");
                }
                Ok(Served::Stopped) => return Ok(()),
                Err(err) => {
                    end.cancel();
                    return Err(err);
                }
            }
        }
    }

    /// Serves one channel: its deliveries, one at a time.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        channel: &Channel,
        watch: &Arc<ChannelWatch>,
        mut rx: Deliveries,
        stop: &CancellationToken,
        tasks: &TaskTracker,
        shared: &Arc<Shared>,
        (end, exit): (&CancellationToken, &CancellationToken),
    ) -> Result<Served, Error> {
        let shard = self.shard.clone();
        let lost = |what: String| Error::ChannelClosed { queue: shard.clone(), reason: what };
        loop {
            let message = tokio::select! {
                biased;
                // Idle: the channel's close gives back what may be on its way.
                _ = stop.cancelled() => {
                    let _ = tokio::time::timeout(BROKER_ANSWER, channel.clone().close()).await;
                    return Ok(Served::Stopped);
                }
                closure = watch.closed() => return Err(lost(closure.to_string())),
                _ = self.pause_changed() => {
                    if self.is_paused() {
                        return Ok(Served::Paused);
                    }
                    continue;
                }
                message = rx.recv() => match message {
                    Some(message) => message,
                    None => return Err(Error::ConnectionLost { reason: format!("the consumer of `{shard}` ended") }),
                },
            };
            let leaving = Arc::new(Leaving::new(self.tag.clone()));
            let job = tasks.track_future(handle(
                shared.clone(),
                channel.clone(),
                self.queue.clone(),
                Home::Shard,
                message,
                (end.clone(), watch.clone(), exit.clone(), Some(leaving.clone())),
            ));
            let mut job = Box::pin(job);
            let connection = self.connection.clone();
            loop {
                tokio::select! {
                    biased;
                    _ = &mut job => break,
                    _ = stop.cancelled() => {
                        // The job finishes within the grace period, then the
                        // consumer is cancelled before its ack and the channel
                        // closed; a connection that goes meanwhile drops it.
                        leaving.wanted.cancel();
                        let (channel, connection, end) = (channel.clone(), connection.clone(), end.clone());
                        let (watch, drop) = (watch.clone(), shared.shard_tails.drop.clone());
                        let tail = async move {
                            tokio::select! {
                                biased;
                                _ = &mut job => {}
                                // The shard goes to another worker: this run must not go on beside its next one.
                                _ = drop.cancelled() => {
                                    end.cancel();
                                    job.await;
                                }
                                _ = connection_gone(&connection) => {
                                    end.cancel();
                                    job.await;
                                }
                                _ = watch.closed() => {
                                    end.cancel();
                                    job.await;
                                }
                            }
                            let _ = tokio::time::timeout(BROKER_ANSWER, channel.close()).await;
                        };
                        tokio::spawn(shared.shard_tails.tracker.track_future(tail));
                        return Ok(Served::Stopped);
                    }
                    closure = watch.closed() => {
                        // The broker took the job back: it is dropped, and says so as it ends.
                        end.cancel();
                        job.await;
                        return Err(lost(closure.to_string()));
                    }
                    _ = connection_gone(&connection) => {
                        end.cancel();
                        job.await;
                        return Err(Error::ConnectionLost { reason: format!("while a job of `{shard}` ran") });
                    }
                    // Paused while the job runs: cancelled once its run is over, before its ack.
                    _ = self.pause_changed(), if !leaving.wanted.is_cancelled() => {
                        if self.is_paused() {
                            leaving.wanted.cancel();
                        }
                    }
                }
            }
            if leaving.wanted.is_cancelled() {
                // Cancelled before its ack (or it left its job to the close):
                // the channel's close gives back anything it still holds.
                return Ok(Served::Paused);
            }
        }
    }
}

/// Once the connection is closed (looked at every [`CONNECTION_CHECK`]).
async fn connection_gone(connection: &Connection) {
    while connection.is_open() {
        tokio::time::sleep(CONNECTION_CHECK).await;
    }
}
