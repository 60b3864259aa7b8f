//! Global concurrency limits: `#[job(max_running = 5)]` or `[[limits]]` in
//! the config. At most 5 jobs of the type run at once across every worker
//! of the vhost, and a killed worker's share comes back by itself, with no
//! lock timeout.
//!
//! The limit is K *slots*, each a queue of its own, `jobs.limit.<Type>.<i>`,
//! declared with `x-single-active-consumer`: every worker consumes every
//! slot queue of the type (prefetch 1), the broker makes one consumer of
//! each the active one, and the token in it is delivered to that consumer
//! only, which holds it unacked. So each slot is held by one worker at a
//! time, and when that worker dies (its connection closes) the broker hands
//! the token to the next consumer in line at once.
//!
//! - Tokens: every worker publishes one token to each slot queue when it
//!   subscribes and again at each renewal (below), and each slot queue
//!   keeps at most one ready token (`x-max-length = 1`, `x-overflow =
//!   drop-head`), so tokens are never missing for long and there is never
//!   more than one to hand out per slot. (A token given back by a dead
//!   holder counts as a return: a quorum queue of RabbitMQ 4.x drops it
//!   after 20; the next publish replaces it.)
//! - A worker holding `h` slots consumes the type's queue at prefetch `h`
//!   (none while `h` is 0) and starts at most `h` jobs of the type at once
//!   (its [`Gate`]): the others wait in the queue, in the broker, holding no
//!   worker.
//! - A worker takes at most its `worker.concurrency` slots; a slot past that
//!   is passed on (its consumer cancelled, the token given back), so slots
//!   go where they can run.
//! - The broker's `consumer_timeout` would take a token held longer back
//!   (and give it to another worker while jobs run here): the holder renews
//!   each token well before it (a new token published, then the old one
//!   acked, while it is still the active consumer, so no one else can take
//!   the slot meanwhile).
//! - When the slots' channel closes under running jobs, those jobs are
//!   handed back to their queue (not failures): their slots may already run
//!   another worker's jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
    BasicRejectArguments, Channel, ConsumerMessage, QueueDeclareArguments,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::plumbing::set_header;
use jobs_core::QueueType;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// `[[limits]]`: a limit set in the config, beside the derive's (each key
/// given here replaces the derive's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The job type's name.
    pub job: String,
    /// At most this many of its jobs run at once across every worker of the vhost.
    #[serde(default)]
    pub max_running: Option<u16>,
    /// Its jobs start at no more than this rate across the vhost: `"100/s"`, `"10/m"`, `"1/h"`.
    #[serde(default)]
    pub rate: Option<String>,
    /// How many may start at once after a quiet spell (default: the rate's count).
    #[serde(default)]
    pub burst: Option<u32>,
    /// A field of the job: each of its values has the rate on its own.
    #[serde(default)]
    pub rate_key: Option<String>,
}

/// The slot queues of job type `job`: `jobs.limit.<job>.<i>`.
pub(crate) fn slot_queue(job: &str, slot: u16) -> String {
    format!("jobs.limit.{job}.{slot}")
}

/// The jobs of one limited type this worker may start: as many as the
/// slots it holds.
#[derive(Debug)]
pub(crate) struct Gate {
    job: &'static str,
    max: u16,
    state: Mutex<Counts>,
    notify: Notify,
    held: watch::Sender<u16>,
    /// Cancelled when the slots are lost under running jobs (a new one per holding).
    lost: Mutex<CancellationToken>,
    /// Whether this worker runs the type: it consumes its queue, or one of
    /// its jobs came (sent to another queue). Until then it holds no slot.
    wanted: watch::Sender<bool>,
    /// The holding whose word counts: a holder of an earlier session still
    /// winding down cannot change the count of the current one.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Counts {
    running: u16,
    held: u16,
}

/// A job of a limited type running here; leaves its slot when dropped.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    gate: &'a Gate,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let running = {
            let mut counts = self.gate.lock();
            counts.running = counts.running.saturating_sub(1);
            counts.running
        };
        metrics::gauge!("jobs_limit_running", "job" => self.gate.job).set(f64::from(running));
        self.gate.notify.notify_waiters();
    }
}

impl Gate {
    pub(crate) fn new(job: &'static str, max: u16) -> Self {
        Gate {
            job,
            max,
            state: Mutex::default(),
            notify: Notify::new(),
            held: watch::Sender::new(0),
            lost: Mutex::new(CancellationToken::new()),
            wanted: watch::Sender::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A new holding starts: from now on only its word counts.
    fn begin(&self) -> u64 {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    fn current(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
    }

    /// This worker runs the type: its holder takes slots from now on.
    pub(crate) fn want(&self) {
        self.wanted.send_if_modified(|wanted| !std::mem::replace(wanted, true));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a heartbeat says of it.
    pub(crate) fn beat(&self) -> jobs_core::plumbing::events::LimitBeat {
        let counts = self.lock();
        jobs_core::plumbing::events::LimitBeat {
            job: self.job.to_owned(),
            max_running: self.max,
            slots: counts.held,
            running: counts.running,
        }
    }

    /// The slots held here, for the type's consumer to follow.
    pub(crate) fn held(&self) -> watch::Receiver<u16> {
        self.held.subscribe()
    }

    /// What ends the runs of the type when the slots are lost.
    pub(crate) fn lost(&self) -> CancellationToken {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a free slot (cancel-safe: a dropped wait takes none).
    pub(crate) async fn enter(&self) -> Entry<'_> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut counts = self.lock();
                if counts.running < counts.held {
                    counts.running += 1;
                    metrics::gauge!("jobs_limit_running", "job" => self.job).set(f64::from(counts.running));
                    return Entry { gate: self };
                }
            }
            notified.await;
        }
    }

    /// Resolves once none of the type's jobs runs here.
    async fn idle(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().running == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Holding `generation` holds `held` slots (ignored from an older holding).
    fn set_held(&self, generation: u64, held: u16) {
        if !self.current(generation) {
            return;
        }
        self.lock().held = held;
        self.held.send_replace(held);
        metrics::gauge!("jobs_limit_slots", "job" => self.job).set(f64::from(held));
        self.notify.notify_waiters();
    }

    /// The slots are gone (their channel closed): none held, and the runs
    /// of the type are ended (handed back).
    fn lose(&self, generation: u64) {
        if !self.current(generation) {
            return;
        }
        self.set_held(generation, 0);
        let lost =
            std::mem::replace(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()), CancellationToken::new());
        if self.lock().running > 0 {
            warn!(job = self.job, "lost the slots of a limited job type while its jobs ran: handing them back to their queue (another worker may hold the slots now)");
        }
        lost.cancel();
    }
}

/// The gates of the limited types, by type name.
pub(crate) type Gates = HashMap<&'static str, Arc<Gate>>;

/// How a worker holds slots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holding {
    /// The most slots of a type it takes (its concurrency).
    pub(crate) most: u16,
    /// How often it renews a held token (below the broker's consumer_timeout).
    pub(crate) renew: Duration,
    pub(crate) queue_type: QueueType,
}

/// The longest a stopping worker keeps its slots for its running jobs of
/// the type (its grace period hands them back before that).
const KEEP_FOR_RUNNING: Duration = Duration::from_secs(600);

/// Loses the gate's slots when dropped (the holder ended, or was aborted).
struct LoseOnDrop<'a>(&'a Gate, u64);

impl Drop for LoseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lose(self.1);
    }
}

/// Holds slots of `gate`'s type until `halt` (or the channel closes; then
/// tries again, 1 s to 30 s apart), publishing the gate's count. On `halt`
/// (a stop) it takes no more jobs of the type but keeps the slots until the
/// type's running jobs have ended (or been handed back by the grace period),
/// so no other worker runs more meanwhile. Run it detached: it ends by itself.
pub(crate) async fn keep_holding(
    gate: Arc<Gate>,
    connection: Connection,
    worker: Arc<str>,
    how: Holding,
    halt: CancellationToken,
) {
    // A worker that does not run the type takes none of its slots.
    let mut wanted = gate.wanted.subscribe();
    tokio::select! {
        _ = halt.cancelled() => return,
        _ = wanted.wait_for(|wanted| *wanted) => {}
    }
    let generation = gate.begin();
    let _lose = LoseOnDrop(&gate, generation);
    let mut pause = jobs_core::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match hold(&gate, generation, &connection, &worker, how, &halt).await {
            Ok(()) => return,
            Err(why) => {
                gate.lose(generation);
                if halt.is_cancelled() || !connection.is_open() {
                    return;
                }
                warn!(job = gate.job, reason = why, "cannot hold the slots of a limited job type; trying again");
            }
        }
        tokio::select! {
            _ = halt.cancelled() => return,
            _ = tokio::time::sleep(pause.next()) => {}
        }
    }
}

/// One holding: on a channel of its own, until `halt` (`Ok`) or the channel closes.
async fn hold(
    gate: &Gate,
    generation: u64,
    connection: &Connection,
    worker: &str,
    how: Holding,
    halt: &CancellationToken,
) -> Result<(), String> {
    let channel = connection.open_channel(None).await.map_err(|e| e.to_string())?;
    let result = hold_on(gate, generation, &channel, worker, how, halt).await;
    let _ = channel.close().await;
    result
}

async fn hold_on(
    gate: &Gate,
    generation: u64,
    channel: &Channel,
    worker: &str,
    how: Holding,
    halt: &CancellationToken,
) -> Result<(), String> {
    // Nothing held yet, whatever an earlier try left.
    gate.set_held(generation, 0);
    let slots = gate.max;
    for slot in 0..slots {
        let name = slot_queue(gate.job, slot);
        let mut args = FieldTable::new();
        set_header(&mut args, "x-single-active-consumer", FieldValue::t(true));
        set_header(&mut args, "x-max-length", FieldValue::l(1));
        set_header(&mut args, "x-overflow", FieldValue::from("drop-head"));
        if how.queue_type == QueueType::Quorum {
            set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
        }
        let mut declare = QueueDeclareArguments::durable_client_named(&name);
        declare.arguments(args);
        channel.queue_declare(declare).await.map_err(|e| format!("declaring {name}: {e}"))?;
        publish_token(channel, &name).await?;
    }
    channel.basic_qos(BasicQosArguments::new(0, 1, false)).await.map_err(|e| e.to_string())?;
    // One consumer per slot queue; their deliveries merged, by slot.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u16, ConsumerMessage)>();
    let mut tags = Vec::new();
    for slot in 0..slots {
        let name = slot_queue(gate.job, slot);
        let tag = format!("{}:slot:{slot}", jobs_core::plumbing::prefix(worker, 200));
        let args = BasicConsumeArguments::new(&name, &tag).manual_ack(true).finish();
        let (tag, mut deliveries) =
            channel.basic_consume_rx(args).await.map_err(|e| format!("consuming {name}: {e}"))?;
        tags.push(tag);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(message) = deliveries.recv().await {
                if tx.send((slot, message)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // Held slots: the delivery tag of each one's token; and those whose
    // token is being renewed (still counted: it comes back here at once).
    let mut held: HashMap<u16, u64> = HashMap::new();
    let mut renewing: std::collections::HashSet<u16> = std::collections::HashSet::new();
    let mut renew = tokio::time::interval(how.renew);
    renew.tick().await;
    // Set at a stop: no more jobs of the type start here, but the slots stay
    // held (and renewed) until those running have ended, or until this.
    let mut stopping: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = halt.cancelled(), if stopping.is_none() => {
                gate.set_held(generation, 0);
                stopping = Some(tokio::time::Instant::now() + KEEP_FOR_RUNNING);
            }
            _ = gate.idle(), if stopping.is_some() => return Ok(()),
            _ = tokio::time::sleep_until(stopping.unwrap_or_else(tokio::time::Instant::now)), if stopping.is_some() => return Ok(()),
            _ = renew.tick() => {
                // A slot whose token a broker dropped (a quorum queue's
                // delivery limit, after many holders died) gets one again.
                for slot in (0..slots).filter(|slot| !held.contains_key(slot)) {
                    publish_token(channel, &slot_queue(gate.job, slot)).await?;
                }
                for (slot, tag) in held.clone() {
                    // A new token first: the slot is never without one; the
                    // old one acked while this is still its active consumer,
                    // so the new one comes here (and replaces the tag).
                    let name = slot_queue(gate.job, slot);
                    publish_token(channel, &name).await?;
                    channel.basic_ack(BasicAckArguments::new(tag, false)).await.map_err(|e| e.to_string())?;
                    // Still counted in the gate: its token comes back at once.
                    held.remove(&slot);
                    renewing.insert(slot);
                    debug!(job = gate.job, slot, "renewed a slot's token");
                }
            }
            next = rx.recv() => {
                let Some((slot, message)) = next else {
                    return Err("the slots' consumers ended (the channel closed)".into());
                };
                let Some(deliver) = message.deliver else { continue };
                let tag = deliver.delivery_tag();
                if renewing.remove(&slot) {
                    held.insert(slot, tag);
                    continue;
                }
                if held.contains_key(&slot) {
                    // A second token while one is held cannot be (prefetch 1).
                    channel.basic_ack(BasicAckArguments::new(tag, false)).await.map_err(|e| e.to_string())?;
                    continue;
                }
                if stopping.is_some() || held.len() + renewing.len() >= usize::from(how.most) {
                    // More than it can run (or it stops): pass it on to the next in line.
                    let consumer = &tags[usize::from(slot)];
                    channel.basic_cancel(BasicCancelArguments::new(consumer)).await.map_err(|e| e.to_string())?;
                    channel.basic_reject(BasicRejectArguments::new(tag, true)).await.map_err(|e| e.to_string())?;
                    debug!(job = gate.job, slot, "passed a slot on: this worker holds as many as it runs");
                    continue;
                }
                held.insert(slot, tag);
                let count = u16::try_from(held.len() + renewing.len()).unwrap_or(u16::MAX);
                if count != *gate.held.borrow() {
                    info!(job = gate.job, held = count, max_running = gate.max, "holding slots of a limited job type");
                }
                gate.set_held(generation, count);
            }
        }
    }
}

async fn publish_token(channel: &Channel, queue: &str) -> Result<(), String> {
    let props = BasicProperties::default().with_delivery_mode(2).finish();
    channel
        .basic_publish(props, b"slot".to_vec(), BasicPublishArguments::new("", queue))
        .await
        .map_err(|e| format!("publishing a token to {queue}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_gate_lets_as_many_in_as_slots_are_held() {
        let gate = Gate::new("T", 3);
        assert!(tokio::time::timeout(Duration::from_secs(1), gate.enter()).await.is_err(), "no slot held: waits");
        let old = gate.begin();
        let generation = gate.begin();
        gate.set_held(generation, 2);
        gate.set_held(old, 0);
        gate.lose(old);
        assert_eq!(*gate.held().borrow(), 2, "an older holding's word does not count");
        let a = gate.enter().await;
        let _b = gate.enter().await;
        assert!(tokio::time::timeout(Duration::from_secs(1), gate.enter()).await.is_err(), "both slots in use");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(1), gate.enter()).await.expect("a slot came free");
        let lost = gate.lost();
        gate.lose(generation);
        assert!(lost.is_cancelled(), "runs are ended when the slots are lost");
        assert!(!gate.lost().is_cancelled(), "the next holding has a token of its own");
        assert_eq!(*gate.held().borrow(), 0);
    }
}
