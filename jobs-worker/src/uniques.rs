//! The unique keeper: every worker stands for the leadership
//! `jobs.unique.keeper` (a [`Leader`]), and the one that leads holds the
//! unique keys of the vhost in memory ([`Keys`]) and answers the enqueues'
//! asks on `jobs.unique.ask` (direct reply-to).
//!
//! An ask's answer goes only after its reservation is recorded in the
//! stream `jobs.unique` (confirmed): asks that come together are decided
//! together, their reservations recorded in one message. Releases (a job
//! that ended, acked or dead; an enqueue the broker refused) are appended
//! to the stream by whoever gives the key back, and the keeper follows the
//! stream. A new keeper appends a marker and reads the stream from the
//! longest window ago ([`MAX_UNIQUE_FOR`]) up to it before it answers: it
//! holds every key the last keeper granted. Asks wait meanwhile in their
//! queue (5 s at most, then the enqueue says no keeper answered).
//!
//! Exact with one keeper at a time. Two could answer at once only if the
//! old one went on past its fence (the broker gave the leadership away
//! while the old one still heard its probes: a partition); a reservation
//! that finds the key held by another job in the stream is counted then
//! (`jobs_unique_conflicts_total`), and the first in the stream holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jobs_core::plumbing::amqprs::channel::{
    BasicConsumeArguments, BasicPublishArguments, Channel, QueueDeclareArguments,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::plumbing::unique::{
    decode_records, encode_records, epoch_ms, short_key, UniqueAnswer, UniqueAsk, UniqueRecord, UNIQUE, UNIQUE_ASK,
    UNIQUE_ASK_TIMEOUT, UNIQUE_KIND,
};
use jobs_core::plumbing::{set_header, Hold, JournalReader, Leader, Publisher, StartAt};
use jobs_core::{report, AmqpConfig, JobId, QueueType, MAX_UNIQUE_FOR};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::activity::Activity;
use crate::leadership::{self, Acting, Ended, JournalLink};

/// The leadership of the unique keepers of a vhost.
pub(crate) const LEADERSHIP: Leader = Leader::new("jobs.unique.keeper");
/// The most keys held at once; an ask for a new key past it is answered `Full`.
pub(crate) const MAX_KEYS: usize = 1_000_000;
/// How often the keeper renews its hold.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// The longest a reading of the stream may go without a record.
const READ_QUIET: Duration = Duration::from_secs(60);
/// The most asks decided (and recorded) together.
const BATCH: usize = 512;

/// What the keeper knows now, for heartbeats and metrics.
#[derive(Debug)]
pub(crate) struct Status {
    acting: Acting,
    keys: AtomicU64,
}

impl Default for Status {
    fn default() -> Self {
        Status { acting: Acting::new("jobs_unique_keeper_leader"), keys: AtomicU64::new(0) }
    }
}

impl Status {
    /// Whether this worker keeps the unique keys now.
    fn keeping(&self) -> bool {
        self.acting.acts()
    }

    /// The keys held, when this worker keeps them.
    pub(crate) fn keys(&self) -> Option<u64> {
        self.keeping().then(|| self.keys.load(Ordering::Relaxed))
    }

    fn held(&self, keys: usize) {
        self.keys.store(keys as u64, Ordering::Relaxed);
        metrics::gauge!("jobs_unique_keys").set(keys as f64);
    }
}

/// A key's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    id: String,
    until_ms: u64,
    /// The hold's token: only a release naming it frees the key.
    token: String,
}

/// Holds given back before their reservation was read, remembered at most this many.
const MAX_RELEASED: usize = 100_000;
/// And for this long (an unanswered enqueue gives its hold back within seconds).
const REMEMBER_RELEASED_MS: u64 = 10 * 60_000;

/// The keys held, and who holds each until when.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    held: HashMap<String, Held>,
    /// Tokens of holds released before their reservation was read (an
    /// enqueue that gave up on its answer), and until when they are kept:
    /// their reservation, when it comes, holds nothing.
    released: HashMap<String, u64>,
    /// Reservations read from the stream for a key another job held.
    conflicts: u64,
}

fn longest_ms() -> u64 {
    u64::try_from(MAX_UNIQUE_FOR.as_millis()).unwrap_or(u64::MAX)
}

impl Keys {
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Decides `ask` at `now_ms`: its answer, and the reservation to record
    /// before the answer goes; `None` for an ask its enqueue gave up on.
    pub(crate) fn ask(&mut self, ask: &UniqueAsk, now_ms: u64) -> Option<(UniqueAnswer, Option<UniqueRecord>)> {
        if self.released.contains_key(&ask.token) {
            return None;
        }
        match self.held.get(&ask.key) {
            Some(held) if held.until_ms > now_ms && held.id != ask.id => {
                return Some((UniqueAnswer::Duplicate { existing: held.id.clone() }, None));
            }
            // Past the most, a new key waits for windows to end (the sweep's, each second).
            None if self.held.len() >= MAX_KEYS => {
                return Some((UniqueAnswer::Full { keys: self.held.len() as u64 }, None));
            }
            _ => {}
        }
        let until_ms = now_ms.saturating_add(ask.for_ms.clamp(1, longest_ms()));
        let held = Held { id: ask.id.clone(), until_ms, token: ask.token.clone() };
        self.held.insert(ask.key.clone(), held);
        let record =
            UniqueRecord::Reserve { key: ask.key.clone(), id: ask.id.clone(), until_ms, token: ask.token.clone() };
        Some((UniqueAnswer::New, Some(record)))
    }

    /// Folds in a record of the stream (this keeper's own come back too).
    pub(crate) fn apply(&mut self, record: UniqueRecord, now_ms: u64) {
        match record {
            UniqueRecord::Reserve { token, .. } if self.released.remove(&token).is_some() => {}
            UniqueRecord::Reserve { until_ms, .. } if until_ms <= now_ms => {}
            UniqueRecord::Reserve { key, id, until_ms, token } => {
                // Whoever wrote it: a bounded key, and no hold past the longest window from now.
                let until_ms = until_ms.min(now_ms.saturating_add(longest_ms()));
                self.reserve(short_key(key), Held { id, until_ms, token }, now_ms);
            }
            UniqueRecord::Release { key, token, .. } => {
                if self.held.get(&key).is_some_and(|held| held.token == token) {
                    self.held.remove(&key);
                } else if self.released.len() < MAX_RELEASED {
                    self.released.insert(token, now_ms.saturating_add(REMEMBER_RELEASED_MS));
                }
            }
        }
    }

    /// A reservation read from the stream.
    fn reserve(&mut self, key: String, new: Held, now_ms: u64) {
        let full = self.held.len() >= MAX_KEYS;
        match self.held.get_mut(&key) {
            Some(held) if held.token == new.token => held.until_ms = held.until_ms.max(new.until_ms),
            // The same job holding it again (its `dead retry`, a producer's retry): the newer hold.
            Some(held) if held.id == new.id => *held = new,
            Some(held) if held.until_ms > now_ms => {
                self.conflicts += 1;
                metrics::counter!("jobs_unique_conflicts_total").increment(1);
                warn!(
                    key,
                    holder = held.id,
                    other = new.id,
                    "two jobs were given one unique key (two keepers at once?); the one this keeper held keeps it"
                );
            }
            None if full => {}
            _ => {
                self.held.insert(key, new);
            }
        }
    }

    /// Forgets the keys whose window is over, and released holds past their time.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        self.held.retain(|_, held| held.until_ms > now_ms);
        self.released.retain(|_, until| *until > now_ms);
    }
}

/// Stands for the leadership and keeps the keys while leading, until
/// `stopping` is cancelled (the worker stops) or this is dropped.
pub(crate) async fn run(
    amqp: AmqpConfig,
    worker: String,
    queue_type: QueueType,
    status: Arc<Status>,
    activity: Arc<Activity>,
    stopping: CancellationToken,
) {
    status.acting.lead(false); // the gauge shown from the start
    let fenced = {
        let status = status.clone();
        move |fenced| status.acting.fence(fenced)
    };
    let role = (LEADERSHIP, "unique keeper", RENEW);
    leadership::serve(&amqp, &worker.clone(), role, fenced, |hold, fence| {
        let keeping = Keeping {
            amqp: amqp.clone(),
            worker: worker.clone(),
            queue_type,
            status,
            activity,
            hold: hold.clone(),
            fence,
        };
        async move { leadership::act(keeping, hold, fence, &worker, stopping).await }
    })
    .await;
}

struct Keeping {
    amqp: AmqpConfig,
    worker: String,
    queue_type: QueueType,
    status: Arc<Status>,
    activity: Arc<Activity>,
    hold: watch::Receiver<Hold>,
    fence: Duration,
}

impl leadership::Acts for Keeping {
    const LEADS: &'static str = "keeps the unique keys";
    const NAME: &'static str = "unique keeper";

    async fn lead(&mut self, term: u64, stopping: &CancellationToken) -> Ended {
        let name = format!("{}:unique", self.worker);
        let link = match JournalLink::open(&self.amqp, &name, &UNIQUE).await {
            Ok(link) => link,
            Err(err) => return Ended::Failed(report(&err)),
        };
        let ended = match link.connection.open_channel(None).await {
            Ok(channel) => self.lead_on(&link, &channel, term, stopping).await,
            Err(err) => Ended::Failed(format!("opening a channel for {UNIQUE_ASK}: {err}")),
        };
        link.close().await;
        ended
    }

    fn leading(&self, leading: bool) {
        self.status.acting.lead(leading);
        if !leading {
            self.status.held(0);
        }
    }
}

impl Keeping {
    fn holds(&self, term: u64) -> bool {
        self.hold.borrow().holds_in(term, self.fence)
    }

    async fn lead_on(
        &mut self,
        link: &JournalLink,
        channel: &Channel,
        term: u64,
        stopping: &CancellationToken,
    ) -> Ended {
        if let Err(why) = declare_asks(&link.connection, self.queue_type).await {
            return Ended::Failed(why);
        }
        let started = tokio::time::Instant::now();
        let (mut keys, mut reader) = match rebuild(&link.connection, &link.publisher).await {
            Ok(rebuilt) => rebuilt,
            Err(why) => return Ended::Failed(why),
        };
        keys.expire(epoch_ms(SystemTime::now()));
        self.status.held(keys.len());
        info!(keys = keys.len(), took = ?started.elapsed(), "the unique keys are read back; answering");
        let args = BasicConsumeArguments::new(UNIQUE_ASK, "").manual_ack(false).finish();
        let mut asks = match channel.basic_consume_rx(args).await {
            Ok((_, asks)) => asks,
            Err(err) => return Ended::Failed(format!("consuming {UNIQUE_ASK}: {err}")),
        };
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return Ended::Gone,
                _ = sweep.tick() => {
                    if !self.holds(term) {
                        return Ended::Lost;
                    }
                    keys.expire(epoch_ms(SystemTime::now()));
                    self.status.held(keys.len());
                }
                ask = asks.recv() => {
                    let Some(first) = ask else { return Ended::Failed(format!("the consumer of {UNIQUE_ASK} ended")) };
                    if !self.holds(term) {
                        return Ended::Lost;
                    }
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match asks.try_recv() {
                            Ok(ask) => batch.push(ask),
                            Err(_) => break,
                        }
                    }
                    match self.answer(link, channel, term, &mut keys, batch).await {
                        Ok(true) => {}
                        Ok(false) => return Ended::Lost,
                        Err(why) => return Ended::Failed(why),
                    }
                }
                read = tokio::time::timeout(READ_QUIET, reader.next()) => {
                    let Ok(read) = read else { continue };
                    let Some((_, kind, body)) = read else { return Ended::Failed(format!("the reading of {} ended", UNIQUE.name())) };
                    if kind.as_deref() == Some(UNIQUE_KIND) {
                        let now = epoch_ms(SystemTime::now());
                        for record in decode_records(&body).unwrap_or_default() {
                            keys.apply(record, now);
                        }
                    }
                }
            }
        }
    }

    /// Decides a batch of asks, records its reservations (confirmed), then answers each.
    /// `Ok(false)`: the lead of `term` ended meanwhile.
    async fn answer(
        &self,
        link: &JournalLink,
        channel: &Channel,
        term: u64,
        keys: &mut Keys,
        batch: Vec<jobs_core::plumbing::amqprs::channel::ConsumerMessage>,
    ) -> Result<bool, String> {
        let now = epoch_ms(SystemTime::now());
        let mut records = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for message in batch {
            let (Some(props), Some(body)) = (message.basic_properties, message.content) else { continue };
            let (Some(reply_to), Some(correlation)) = (props.reply_to(), props.correlation_id()) else { continue };
            let ask = match rmp_serde::from_slice::<UniqueAsk>(&body) {
                // Whatever an asker sends, a key of bounded size.
                Ok(ask) if ask.id.len() <= 255 && ask.job.len() <= 255 && ask.token.len() <= 64 => {
                    UniqueAsk { key: short_key(ask.key), ..ask }
                }
                Ok(_) => {
                    debug!("an ask for a unique key with an id, type or token too long; not answered");
                    continue;
                }
                Err(err) => {
                    debug!(error = %err, "an ask for a unique key does not decode; not answered");
                    continue;
                }
            };
            let Some((answer, record)) = keys.ask(&ask, now) else { continue };
            if matches!(answer, UniqueAnswer::Duplicate { .. }) {
                self.activity.duplicate(&ask.job);
            }
            records.extend(record);
            answers.push((reply_to.clone(), correlation.clone(), answer));
        }
        if !records.is_empty() {
            let body = encode_records(&records).map_err(|e| report(&e))?;
            UNIQUE.append(&link.publisher, UNIQUE_KIND, body).await.map_err(|e| report(&e))?;
        }
        // Still the keeper now that they are recorded? (A lead that ended
        // meanwhile answers nothing: the next keeper may have granted since.)
        if !self.holds(term) {
            return Ok(false);
        }
        for (reply_to, correlation, answer) in answers {
            let body = rmp_serde::to_vec(&answer).map_err(|e| e.to_string())?;
            let props = BasicProperties::default().with_correlation_id(&correlation).finish();
            channel
                .basic_publish(props, body, BasicPublishArguments::new("", &reply_to))
                .await
                .map_err(|e| format!("answering an ask for a unique key: {e}"))?;
        }
        Ok(true)
    }
}

/// Declares the ask queue: durable, of the worker's queue type, asks
/// dropped after [`UNIQUE_ASK_TIMEOUT`] (their enqueues gave up by then).
/// One there already is used as it is (of the other queue type, from before
/// a vhost's switch to quorum queues, say): asks are worth seconds, so its
/// type does not matter.
async fn declare_asks(connection: &Connection, queue_type: QueueType) -> Result<(), String> {
    let channel = connection.open_channel(None).await.map_err(|e| format!("opening a channel: {e}"))?;
    let there = channel.queue_declare(QueueDeclareArguments::new(UNIQUE_ASK).passive(true).finish()).await.is_ok();
    let _ = channel.close().await;
    if there {
        return Ok(());
    }
    let channel = connection.open_channel(None).await.map_err(|e| format!("opening a channel: {e}"))?;
    let declared = declare_new_asks(&channel, queue_type).await;
    let _ = channel.close().await;
    declared
}

async fn declare_new_asks(channel: &Channel, queue_type: QueueType) -> Result<(), String> {
    let mut args = FieldTable::new();
    if queue_type == QueueType::Quorum {
        set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
    }
    let ttl = i64::try_from(UNIQUE_ASK_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    set_header(&mut args, "x-message-ttl", FieldValue::l(ttl));
    let mut declare = QueueDeclareArguments::durable_client_named(UNIQUE_ASK);
    declare.arguments(args);
    channel.queue_declare(declare).await.map(drop).map_err(|e| format!("declaring {UNIQUE_ASK}: {e}"))
}

/// Reads the keys back: appends a marker, then folds the stream from the
/// longest window ago up to it. Complete or an error, never partial.
async fn rebuild(connection: &Connection, publisher: &Publisher) -> Result<(Keys, JournalReader), String> {
    let mark = JobId::new();
    UNIQUE.append(publisher, "mark", mark.as_str().as_bytes().to_vec()).await.map_err(|e| report(&e))?;
    let from = SystemTime::now() - MAX_UNIQUE_FOR - Duration::from_secs(60);
    let mut reader = UNIQUE.read(connection, StartAt::Time(from)).await.map_err(|e| report(&e))?;
    let mut keys = Keys::default();
    loop {
        let Ok(next) = tokio::time::timeout(READ_QUIET, reader.next()).await else {
            reader.close().await;
            return Err(format!("the reading of {} heard no record for {READ_QUIET:?}", UNIQUE.name()));
        };
        let Some((_, kind, body)) = next else {
            return Err("the stream's channel closed before the reading was complete".into());
        };
        match kind.as_deref() {
            Some("mark") if body == mark.as_str().as_bytes() => return Ok((keys, reader)),
            Some(UNIQUE_KIND) => {
                let now = epoch_ms(SystemTime::now());
                for record in decode_records(&body).unwrap_or_default() {
                    keys.apply(record, now);
                }
            }
            _ => {}
        }
    }
}

/// Gives the keys of ended jobs back: a settle hands them here (never
/// waiting), and they are appended to the stream together, at most
/// [`BATCH`] a record.
#[derive(Debug, Clone)]
pub(crate) struct Releases {
    tx: tokio::sync::mpsc::UnboundedSender<UniqueRecord>,
}

impl Releases {
    /// Releases appended through `client` by the task returned (to spawn),
    /// until `done`: then what is left is appended (5 s at most in all).
    pub(crate) fn start(
        client: jobs_core::Client,
        done: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<UniqueRecord>();
        let releasing = async move {
            let mut pause = jobs_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            // Taken and not yet stored.
            let mut records: Vec<UniqueRecord> = Vec::new();
            loop {
                if records.is_empty() {
                    tokio::select! {
                        first = rx.recv() => match first {
                            Some(first) => records.push(first),
                            None => return,
                        },
                        _ = done.cancelled() => {}
                    }
                }
                while records.len() < BATCH {
                    match rx.try_recv() {
                        Ok(record) => records.push(record),
                        Err(_) => break,
                    }
                }
                if done.is_cancelled() {
                    return Self::last(&client, records, &mut rx).await;
                }
                // Until it is stored: a key not given back is held for its unique_for.
                match client.release_unique(&records).await {
                    Ok(()) => {
                        records.clear();
                        pause.reset();
                    }
                    Err(err) => {
                        warn!(error = %report(&err), keys = records.len(), "unique keys could not be given back; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(pause.next()) => {}
                            _ = done.cancelled() => {}
                        }
                    }
                }
            }
        };
        (Releases { tx }, releasing)
    }

    /// As the worker stops: `records` and all still queued appended, 5 s at most.
    async fn last(
        client: &jobs_core::Client,
        mut records: Vec<UniqueRecord>,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<UniqueRecord>,
    ) {
        while let Ok(record) = rx.try_recv() {
            records.push(record);
        }
        let total = records.len();
        let appended = tokio::time::timeout(Duration::from_secs(5), async {
            for chunk in records.chunks(BATCH) {
                client.release_unique(chunk).await?;
            }
            Ok::<(), jobs_core::Error>(())
        })
        .await;
        if total > 0 && !matches!(appended, Ok(Ok(()))) {
            warn!(keys = total, "unique keys not given back as the worker stopped; each is held for its unique_for");
        }
    }

    /// Gives the hold `token` of `key` by job `id` back.
    pub(crate) fn release(&self, key: &str, token: &str, id: &JobId) {
        let _ =
            self.tx.send(UniqueRecord::Release { key: key.to_owned(), id: id.to_string(), token: token.to_owned() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(key: &str, id: &str, token: &str) -> UniqueAsk {
        UniqueAsk { key: key.into(), id: id.into(), job: "Job".into(), for_ms: 1_000, token: token.into() }
    }

    fn answer(keys: &mut Keys, ask: &UniqueAsk, now_ms: u64) -> UniqueAnswer {
        keys.ask(ask, now_ms).expect("answered").0
    }

    fn release(key: &str, id: &str, token: &str) -> UniqueRecord {
        UniqueRecord::Release { key: key.into(), id: id.into(), token: token.into() }
    }

    #[test]
    fn a_key_is_the_first_askers_until_its_hold_is_released_or_its_window_is_over() {
        let mut keys = Keys::default();
        let (new, record) = keys.ask(&ask("k", "a", "t1"), 10).unwrap();
        assert_eq!(new, UniqueAnswer::New);
        let reserve = UniqueRecord::Reserve { key: "k".into(), id: "a".into(), until_ms: 1_010, token: "t1".into() };
        assert_eq!(record, Some(reserve.clone()));
        assert_eq!(keys.ask(&ask("k", "b", "t2"), 20), Some((UniqueAnswer::Duplicate { existing: "a".into() }, None)));
        // Its own reservation read back changes nothing.
        keys.apply(reserve, 25);
        // A release of another hold frees nothing, nor one of another job.
        keys.apply(release("k", "b", "t2"), 30);
        keys.apply(release("k", "a", "t0"), 30);
        assert_eq!(answer(&mut keys, &ask("k", "b", "t3"), 40), UniqueAnswer::Duplicate { existing: "a".into() });
        keys.apply(release("k", "a", "t1"), 50);
        assert_eq!(answer(&mut keys, &ask("k", "b", "t4"), 50), UniqueAnswer::New);
        // Past its window the key is free, whoever held it.
        assert_eq!(answer(&mut keys, &ask("k", "c", "t5"), 1_051), UniqueAnswer::New);
        keys.expire(10_000);
        assert_eq!(keys.len(), 0);
    }

    #[test]
    fn a_late_release_of_an_earlier_hold_of_the_same_job_frees_nothing() {
        // A dead job's release, read after its `dead retry` took the key again.
        let mut keys = Keys::default();
        keys.ask(&ask("k", "a", "first"), 10).unwrap();
        keys.apply(release("k", "a", "first"), 20);
        assert_eq!(answer(&mut keys, &ask("k", "a", "retry"), 30), UniqueAnswer::New);
        keys.apply(release("k", "a", "first"), 40);
        assert_eq!(answer(&mut keys, &ask("k", "b", "other"), 50), UniqueAnswer::Duplicate { existing: "a".into() });
    }

    #[test]
    fn a_hold_given_back_before_its_reservation_was_read_holds_nothing() {
        // An enqueue gave up on its answer and gave its hold back; the keeper's
        // record of it comes after, in a rebuild or in its own slow append.
        let mut keys = Keys::default();
        keys.apply(release("k", "a", "gave-up"), 10);
        let reserve =
            UniqueRecord::Reserve { key: "k".into(), id: "a".into(), until_ms: 5_000, token: "gave-up".into() };
        keys.apply(reserve, 20);
        assert_eq!(answer(&mut keys, &ask("k", "b", "t"), 30), UniqueAnswer::New);
        // Its ask, still on its way, gets no answer and holds nothing.
        keys.apply(release("k2", "c", "late"), 40);
        assert_eq!(keys.ask(&ask("k2", "c", "late"), 50), None);
        assert_eq!(answer(&mut keys, &ask("k2", "d", "t2"), 60), UniqueAnswer::New);
    }

    #[test]
    fn a_rebuild_holds_what_was_recorded_and_counts_a_second_holder() {
        let mut keys = Keys::default();
        let reserve = |id: &str, until_ms, token: &str| UniqueRecord::Reserve {
            key: "k".into(),
            id: id.into(),
            until_ms,
            token: token.into(),
        };
        keys.apply(reserve("a", 100, "t0"), 150); // over already
        assert_eq!(keys.len(), 0);
        keys.apply(reserve("a", 1_000, "t1"), 150);
        keys.apply(reserve("b", 1_000, "t2"), 150);
        assert_eq!(keys.conflicts, 1);
        assert_eq!(answer(&mut keys, &ask("k", "c", "t3"), 200), UniqueAnswer::Duplicate { existing: "a".into() });
        // A forged reservation holds no longer than the longest window, and its key is bounded.
        let forged =
            UniqueRecord::Reserve { key: "f".repeat(10_000), id: "x".into(), until_ms: u64::MAX, token: "f".into() };
        keys.apply(forged, 150);
        let (key, held) = keys.held.iter().find(|(_, h)| h.id == "x").unwrap();
        assert!(key.len() <= 200, "{}", key.len());
        assert_eq!(held.until_ms, 150 + longest_ms());
    }

    #[test]
    fn past_the_most_keys_a_new_key_is_refused_and_held_ones_still_answer() {
        let mut keys = Keys::default();
        for n in 0..MAX_KEYS {
            keys.held.insert(n.to_string(), Held { id: "x".into(), until_ms: 1_000, token: "t".into() });
        }
        assert_eq!(answer(&mut keys, &ask("new", "a", "t1"), 0), UniqueAnswer::Full { keys: MAX_KEYS as u64 });
        assert_eq!(answer(&mut keys, &ask("1", "a", "t2"), 0), UniqueAnswer::Duplicate { existing: "x".into() });
        // Once windows are over (the sweep), room again.
        keys.expire(1_000);
        assert_eq!(answer(&mut keys, &ask("new", "a", "t3"), 1_000), UniqueAnswer::New);
    }
}
