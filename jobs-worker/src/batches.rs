//! The batch aggregator: every worker stands for the leadership
//! `jobs.batches.aggregator` (a [`Leader`]: the broker makes one consumer
//! active), and the one that leads folds the stream `jobs.batches` into
//! each batch's sets ([`Book`]) and enqueues the callbacks that come due.
//!
//! A new leader rebuilds the book: it appends a marker, reads back from
//! [`SNAPSHOT_WINDOW`] ago up to the marker (the whole stream when no
//! snapshot is there), folds what it read, and reads on from there as
//! records come. Snapshots of every open batch are appended as a lead
//! starts and each [`SNAPSHOT_EVERY`], so open batches outlive the stream's
//! retention and a rebuild reads minutes, not weeks.
//!
//! A callback is enqueued under the id `<batch>-complete` or
//! `<batch>-success`, and a `fired` record appended after its confirm. The one
//! window where a callback is enqueued twice: the leader dies between the
//! callback's confirm and its record; the repeat carries the same id. A
//! leader whose link went silent fires nothing (the same fence as the
//! scheduler's), and a callback whose connection went before its confirm
//! goes again only while this worker still leads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::batch_book::{Book, CallbackKind, Record, State};
use jobs_core::plumbing::events::{BatchBeat, BatchDeadJob, BatchesBeat};
use jobs_core::plumbing::{Hold, JournalReader, Leader, Publisher, StartAt};
use jobs_core::{report, AmqpConfig, BatchOutcome, Client, JobId, BATCHES, MAX_DEAD_IDS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::leadership::{self, Acting, Ended, JournalLink};

/// The leadership of the batch aggregators of a vhost.
pub(crate) const LEADERSHIP: Leader = Leader::new("jobs.batches.aggregator");
/// How often the leader renews its hold.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// How often the leader appends a snapshot of the open batches.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(30 * 60);
/// How often the leader appends a snapshot of a book that did not change.
const SNAPSHOT_ANYWAY: Duration = Duration::from_secs(6 * 3600);
/// How far back a new leader first looks for a snapshot.
pub(crate) const SNAPSHOT_WINDOW: Duration = Duration::from_secs(90 * 60);
/// The longest a reading of the stream may go without a record.
const READ_QUIET: Duration = Duration::from_secs(60);
/// A snapshot's parts, about (a batch larger goes in a part of its own).
const SNAPSHOT_PART_BYTES: usize = 4 << 20;
/// How often the leader's beats are given what it knows now.
const SHOW_EVERY: Duration = Duration::from_secs(1);
/// How long a callback that could not be enqueued waits before it is tried again.
const FIRE_AGAIN: Duration = Duration::from_secs(1);
/// Dead ids a beat lists per batch.
const BEAT_DEAD_IDS: usize = 20;

/// What the aggregator knows now, shared with the heartbeats.
#[derive(Debug)]
pub(crate) struct Status {
    acting: Acting,
    beat: Mutex<BatchesBeat>,
}

impl Default for Status {
    fn default() -> Self {
        Status { acting: Acting::new("jobs_batch_aggregator_leader"), beat: Mutex::default() }
    }
}

impl Status {
    /// Whether this worker aggregates (and acts) now.
    pub(crate) fn leading(&self) -> bool {
        self.acting.acts()
    }

    fn lead(&self, leading: bool) {
        if !leading {
            *self.beat.lock().unwrap_or_else(|e| e.into_inner()) = BatchesBeat::default();
        }
        self.acting.lead(leading);
    }

    /// What the next heartbeat says of batches.
    pub(crate) fn beat(&self) -> BatchesBeat {
        let mut beat = self.beat.lock().unwrap_or_else(|e| e.into_inner()).clone();
        beat.leading = self.leading();
        if !beat.leading {
            beat.open.clear();
            beat.recent.clear();
            beat.open_total = 0;
        }
        beat
    }

    fn publish(&self, book: &Book, pending: &[(String, CallbackKind)]) {
        let mut open: Vec<&State> = book.batches().filter(|s| s.definition.is_some()).collect();
        open.sort_by_key(|s| std::cmp::Reverse(s.definition.as_ref().map_or(0, |d| d.at_ms)));
        let open_total = open.len() as u64;
        let listed = open.into_iter().take(BatchesBeat::MAX_LISTED).map(|state| summary(state, pending)).collect();
        let recent = book
            .recent()
            .map(|done| BatchBeat {
                id: done.batch.clone(),
                description: done.description.clone(),
                total: done.counts.total,
                succeeded: done.counts.succeeded,
                dead: done.counts.dead,
                sealed: true,
                fired: vec!["complete".into(), "success".into()],
                ..BatchBeat::default()
            })
            .collect();
        *self.beat.lock().unwrap_or_else(|e| e.into_inner()) =
            BatchesBeat { leading: true, open: listed, recent, open_total };
    }
}

fn summary(state: &State, pending: &[(String, CallbackKind)]) -> BatchBeat {
    let definition = state.definition.as_ref();
    let id = definition.map(|d| d.batch.clone()).unwrap_or_default();
    let counts = state.counts();
    BatchBeat {
        description: definition.and_then(|d| d.description.clone()),
        at_ms: definition.map_or(0, |d| d.at_ms),
        total: counts.total,
        succeeded: counts.succeeded,
        dead: counts.dead,
        dead_jobs: state
            .dead(BEAT_DEAD_IDS)
            .into_iter()
            .map(|(id, queue)| BatchDeadJob { id, queue: queue.unwrap_or_default() })
            .collect(),
        sealed: state.sealed,
        fired: state.fired.iter().map(|k| k.as_str().to_owned()).collect(),
        pending: pending.iter().filter(|(b, _)| *b == id).map(|(_, k)| k.as_str().to_owned()).collect(),
        on_complete: definition.and_then(|d| d.on_complete.as_ref()).map(|c| c.name.clone()),
        on_success: definition.and_then(|d| d.on_success.as_ref()).map(|c| c.name.clone()),
        id,
    }
}

pub(crate) use jobs_core::plumbing::events::now_ms;

/// Stands for the leadership and aggregates while leading, until `stopping`
/// is cancelled (the worker stops) or this is dropped.
pub(crate) async fn run(
    amqp: AmqpConfig,
    worker: String,
    status: Arc<Status>,
    client: Client,
    stopping: CancellationToken,
) {
    status.lead(false); // the gauge shown from the start
    let fenced = {
        let status = status.clone();
        move |fenced| status.acting.fence(fenced)
    };
    let role = (LEADERSHIP, "batch aggregator", RENEW);
    leadership::serve(&amqp, &worker.clone(), role, fenced, |hold, fence| {
        let unrecorded = Vec::new();
        let worker_id = worker.clone();
        let aggregating =
            Aggregating { amqp: amqp.clone(), status, client, hold: hold.clone(), fence, worker, unrecorded };
        async move { leadership::act(aggregating, hold, fence, &worker_id, stopping).await }
    })
    .await;
}

struct Aggregating {
    amqp: AmqpConfig,
    status: Arc<Status>,
    client: Client,
    hold: watch::Receiver<Hold>,
    fence: Duration,
    worker: String,
    /// Callbacks enqueued whose `fired` record did not go: recorded as the next lead starts.
    unrecorded: Vec<(String, CallbackKind)>,
}

impl leadership::Acts for Aggregating {
    const LEADS: &'static str = "aggregates the batches";
    const NAME: &'static str = "batch aggregator";

    async fn lead(&mut self, term: u64, stopping: &CancellationToken) -> Ended {
        let name = format!("{}:batches", self.worker);
        let link = match JournalLink::open(&self.amqp, &name, &BATCHES).await {
            Ok(link) => link,
            Err(err) => return Ended::Failed(report(&err)),
        };
        let ended = self.lead_on(&link, term, stopping).await;
        link.close().await;
        ended
    }

    fn leading(&self, leading: bool) {
        self.status.lead(leading);
    }
}

impl Aggregating {
    /// Whether the lead of `term` still holds.
    fn holds(&self, term: u64) -> bool {
        let hold = *self.hold.borrow();
        hold.leading && hold.term == term && hold.holds(self.fence)
    }

    async fn lead_on(&mut self, link: &JournalLink, term: u64, stopping: &CancellationToken) -> Ended {
        let Rebuilt { mut book, mut reader, mut covered } = match rebuild_on(&link.connection, &link.publisher).await {
            Ok(rebuilt) => rebuilt,
            Err(why) => return Ended::Failed(why),
        };
        book.prune(now_ms(), true);
        info!(batches = book.batches().count(), "the batch record is read");
        // Callbacks this worker enqueued in an earlier lead and could not record: recorded now, not sent again.
        for (batch, kind) in std::mem::take(&mut self.unrecorded) {
            let fired = Record::Fired { batch: batch.clone(), kind };
            if let Err(err) = append(link, &fired).await {
                self.unrecorded.push((batch, kind));
                return Ended::Failed(report(&err));
            }
            book.apply(fired, now_ms());
        }
        let mut pending: Vec<(String, CallbackKind)> = Vec::new();
        for state in book.batches() {
            if let Some(batch) = state.definition.as_ref().map(|d| d.batch.clone()) {
                pending.extend(state.due().into_iter().map(|kind| (batch.clone(), kind)));
            }
        }
        self.snapshot(link, &book, covered).await;
        let mut last_snapshot = tokio::time::Instant::now();
        let mut changed = false;
        self.status.publish(&book, &pending);
        let start = tokio::time::Instant::now();
        let mut snapshots = tokio::time::interval_at(start + SNAPSHOT_EVERY, SNAPSHOT_EVERY);
        let mut again = tokio::time::interval_at(start, FIRE_AGAIN);
        let mut shown = tokio::time::interval_at(start, SHOW_EVERY);
        let mut hold = self.hold.clone();
        loop {
            if !self.holds(term) {
                return Ended::Lost;
            }
            // Fire what is due; what could not be enqueued waits for the next round.
            if !pending.is_empty() {
                let mut left = Vec::new();
                let mut succeeded = false;
                for (batch, kind) in std::mem::take(&mut pending) {
                    if !self.holds(term) {
                        return Ended::Lost;
                    }
                    match self.fire(link, &mut book, &batch, kind, term).await {
                        Ok(()) => succeeded |= kind == CallbackKind::Success,
                        Err(Unfired::Waits) => left.push((batch, kind)),
                        Err(Unfired::NotSent(why)) => {
                            warn!(batch = %batch, callback = kind.as_str(), error = %why, "a batch's callback could not be enqueued; trying again");
                            left.push((batch, kind));
                        }
                        Err(Unfired::NotRecorded(why)) => return Ended::Failed(why),
                    }
                }
                pending = left;
                if succeeded {
                    // Batches whose callbacks have all fired leave the book for the recent
                    // list now (and records of batches gone already, a repeated job's, with them).
                    book.prune(now_ms(), true);
                }
            }
            let fence_closes = self.hold.borrow().heard.map(|heard| heard + self.fence);
            tokio::select! {
                read = tokio::time::timeout(READ_QUIET, reader.next()) => {
                    let Ok(read) = read else { continue };
                    let Some((offset, kind, body)) = read else {
                        return Ended::Failed("the stream's channel closed".into());
                    };
                    covered = covered.max(offset);
                    // A snapshot read back is this leader's own, of what it knew as it wrote
                    // it: older than its book (and a batch finished since must not come back).
                    let Some(record) = Record::decode(&body)
                        .filter(|_| kind.as_deref() != Some("mark"))
                        .filter(|r| !matches!(r, Record::SnapshotPart { .. } | Record::SnapshotDone { .. }))
                    else {
                        continue;
                    };
                    let touched = book.apply(record, now_ms());
                    changed |= !touched.is_empty();
                    for batch in touched {
                        let due = book.get(&batch).map(State::due).unwrap_or_default();
                        for kind in due {
                            if !pending.contains(&(batch.clone(), kind)) {
                                pending.push((batch.clone(), kind));
                            }
                        }
                    }
                }
                // A snapshot when the book changed, or at least each SNAPSHOT_ANYWAY (a
                // rebuild then finds one within a day): an idle book is not written again.
                _ = snapshots.tick(), if self.holds(term) => {
                    if changed || last_snapshot.elapsed() >= SNAPSHOT_ANYWAY {
                        book.prune(now_ms(), true);
                        self.snapshot(link, &book, covered).await;
                        (changed, last_snapshot) = (false, tokio::time::Instant::now());
                    }
                }
                _ = shown.tick() => self.status.publish(&book, &pending),
                _ = again.tick(), if !pending.is_empty() => {}
                _ = async { match fence_closes { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
                changed = hold.changed() => if changed.is_err() { return Ended::Gone },
                _ = stopping.cancelled() => return Ended::Gone,
            }
        }
    }

    /// Appends a snapshot of `book` covering the stream up to `covered`. One
    /// not stored is said, not fatal: the callbacks go on, and the next lead
    /// reads back further.
    async fn snapshot(&self, link: &JournalLink, book: &Book, covered: u64) {
        let id = JobId::new();
        for record in book.snapshot(id.as_str(), covered, SNAPSHOT_PART_BYTES) {
            if let Err(err) = append(link, &record).await {
                return warn!(error = %report(&err), "a snapshot of the open batches could not be recorded");
            }
        }
    }

    /// Enqueues callback `kind` of `batch` (when it has one), then records it
    /// fired; a `success` waits for its batch's `complete`.
    async fn fire(
        &mut self,
        link: &JournalLink,
        book: &mut Book,
        batch: &str,
        kind: CallbackKind,
        term: u64,
    ) -> Result<(), Unfired> {
        let Some(state) = book.get(batch) else { return Ok(()) };
        if !state.due().contains(&kind) {
            return Ok(());
        }
        if kind == CallbackKind::Success && !state.fired.contains(&CallbackKind::Complete) {
            return Err(Unfired::Waits);
        }
        let Some(definition) = state.definition.as_ref() else { return Ok(()) };
        let callback = match kind {
            CallbackKind::Complete => definition.on_complete.as_ref(),
            CallbackKind::Success => definition.on_success.as_ref(),
        };
        if let Some(callback) = callback {
            let outcome = BatchOutcome::new(definition, kind, state.counts(), state.dead_ids(MAX_DEAD_IDS));
            let message = outcome.message(callback);
            let still_leads = || self.holds(term);
            let sent = self.client.enqueue_callback(&message, &callback.queue, &still_leads).await;
            sent.map_err(|e| Unfired::NotSent(report(&e)))?;
            info!(
                worker = %self.worker,
                term,
                batch,
                callback = kind.as_str(),
                job.name = callback.name,
                job.id = %BatchOutcome::callback_id(batch, kind),
                total = outcome.total,
                succeeded = outcome.succeeded,
                dead = outcome.dead,
                "a batch's callback is enqueued"
            );
            metrics::counter!("jobs_batch_callbacks_total", "callback" => kind.as_str()).increment(1);
        }
        let fired = Record::Fired { batch: batch.to_owned(), kind };
        if let Err(err) = append(link, &fired).await {
            // Enqueued and not recorded: recorded as the next lead starts, not sent again.
            self.unrecorded.push((batch.to_owned(), kind));
            return Err(Unfired::NotRecorded(report(&err)));
        }
        book.apply(fired, now_ms());
        Ok(())
    }
}

/// Why a callback did not fire this round.
enum Unfired {
    /// A success whose complete has not fired yet.
    Waits,
    /// Its enqueue failed: tried again.
    NotSent(String),
    /// Enqueued, and its record failed: the lead ends.
    NotRecorded(String),
}

/// Appends `record` on the lead's link, confirmed.
async fn append(link: &JournalLink, record: &Record) -> Result<(), jobs_core::Error> {
    let body = record
        .encode()
        .map_err(|e| jobs_core::Error::QueueRead { queue: BATCHES.name().into(), reason: e.to_string() })?;
    BATCHES.append(&link.publisher, record.kind(), body).await
}

/// A book read back, the reader that goes on past it, and the last offset folded in.
pub(crate) struct Rebuilt {
    pub(crate) book: Book,
    pub(crate) reader: JournalReader,
    pub(crate) covered: u64,
}

/// Reads the record back into a book: from the last whole snapshot in the
/// last [`SNAPSHOT_WINDOW`] (then a day, then the whole stream, until one is
/// found), from the first record that snapshot does not cover, up to a marker
/// appended first.
pub(crate) async fn rebuild_on(connection: &Connection, publisher: &Publisher) -> Result<Rebuilt, String> {
    let now = SystemTime::now();
    for back in [Some(SNAPSHOT_WINDOW), Some(Duration::from_secs(86_400)), None] {
        let start = back.map_or(StartAt::Offset(0), |back| StartAt::Time(now - back));
        let read = read_book(connection, publisher, start, Book::new()).await?;
        let Some(covered) = read.snapshot else {
            if back.is_none() {
                return Ok(Rebuilt { book: read.book, reader: read.reader, covered: read.mark });
            }
            read.reader.close().await;
            continue;
        };
        if read.first.is_some_and(|first| covered + 1 < first) {
            // The snapshot covers up to a record before the window: read on from there.
            read.reader.close().await;
            let again = read_book(connection, publisher, StartAt::Offset(covered + 1), read.book).await?;
            return Ok(Rebuilt { book: again.book, reader: again.reader, covered: again.mark });
        }
        return Ok(Rebuilt { book: read.book, reader: read.reader, covered: read.mark });
    }
    Err("no reading of the stream".into())
}

/// What one reading gave.
struct Read {
    book: Book,
    reader: JournalReader,
    /// The offset of the marker it read to.
    mark: u64,
    /// The first offset read.
    first: Option<u64>,
    /// What the last whole snapshot read covers.
    snapshot: Option<u64>,
}

/// Folds into `book` the records from `start` up to a marker appended
/// first. Complete or an error, never partial; it may take as long as the
/// records keep coming (at most [`READ_QUIET`] between two).
async fn read_book(
    connection: &Connection,
    publisher: &Publisher,
    start: StartAt,
    mut book: Book,
) -> Result<Read, String> {
    let mark = JobId::new();
    BATCHES.append(publisher, "mark", mark.as_str().as_bytes().to_vec()).await.map_err(|e| report(&e))?;
    let mut reader = BATCHES.read(connection, start).await.map_err(|e| report(&e))?;
    let (mut first, mut snapshot) = (None, None);
    let mut parts: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    loop {
        let Ok(next) = tokio::time::timeout(READ_QUIET, reader.next()).await else {
            reader.close().await;
            return Err(format!("the reading of {} heard no record for {READ_QUIET:?}", BATCHES.name()));
        };
        let Some((offset, kind, body)) = next else {
            return Err("the stream's channel closed before the reading was complete".into());
        };
        first.get_or_insert(offset);
        if kind.as_deref() == Some("mark") {
            if body == mark.as_str().as_bytes() {
                return Ok(Read { book, reader, mark: offset, first, snapshot });
            }
            continue;
        }
        let Some(record) = Record::decode(&body) else { continue };
        match &record {
            Record::SnapshotPart { snapshot: id, .. } => *parts.entry(id.clone()).or_default() += 1,
            Record::SnapshotDone { snapshot: id, parts: n, covered } if parts.get(id).copied().unwrap_or(0) == *n => {
                snapshot = Some(*covered);
            }
            _ => {}
        }
        book.apply(record, now_ms());
    }
}
