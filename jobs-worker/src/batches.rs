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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::batch_book::{Book, CallbackKind, Record, State};
use jobs_core::plumbing::events::{BatchBeat, BatchDeadJob, BatchesBeat};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, Hold, JournalReader, Leader, Publisher, StartAt};
use jobs_core::{report, AmqpConfig, BatchOutcome, Client, JobId, BATCHES, MAX_DEAD_IDS};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::leadership::{self, Acting, Role};

/// The leadership of the batch aggregators of a vhost.
pub(crate) const LEADERSHIP: Leader = Leader::new("jobs.batches.aggregator");
/// How often the leader renews its hold.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// How often the leader appends a snapshot of the open batches.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(10 * 60);
/// How far back a new leader first looks for a snapshot.
pub(crate) const SNAPSHOT_WINDOW: Duration = Duration::from_secs(30 * 60);
/// The longest a rebuild's reading may take.
const READ_LIMIT: Duration = Duration::from_secs(300);
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stands for the leadership and aggregates while leading, until `stopping`
/// is cancelled (the worker stops) or this is dropped.
pub(crate) async fn run(
    amqp: AmqpConfig,
    worker: String,
    status: Arc<Status>,
    client: Client,
    stopping: CancellationToken,
) {
    let (tx, hold) = watch::channel(Hold::default());
    let fence = leadership::fence(&amqp);
    status.lead(false); // the gauge shown from the start
    let mut tasks = JoinSet::new(); // aborted when this is dropped
    tasks.spawn({
        let status = status.clone();
        leadership::watch_fence(hold.clone(), fence, worker.clone(), "batch aggregator", move |fenced| {
            status.acting.fence(fenced)
        })
    });
    let released = CancellationToken::new();
    let aggregating = Aggregating { amqp: amqp.clone(), status, client, hold, fence, worker: worker.clone() };
    tasks.spawn({
        let released = released.clone();
        async move {
            aggregating.run(stopping).await;
            released.cancel();
        }
    });
    let role = Role { leader: LEADERSHIP, name: "batch aggregator", renew: RENEW, fence };
    leadership::stand_until(&amqp, &worker, &role, &tx, &released).await;
}

/// Why a lead ended.
enum Ended {
    /// The leadership went to another, or was won again since, or the fence closed.
    Lost,
    /// The stream could not be read or written: lead again on a new connection.
    Failed(String),
    /// The worker stops.
    Gone,
}

struct Aggregating {
    amqp: AmqpConfig,
    status: Arc<Status>,
    client: Client,
    hold: watch::Receiver<Hold>,
    fence: Duration,
    worker: String,
}

/// A lead's link to the stream: its connection, a publisher for records, a reader.
struct Link {
    connection: Connection,
    publisher: Publisher,
}

impl Aggregating {
    async fn run(mut self, stopping: CancellationToken) {
        loop {
            let fence = self.fence;
            tokio::select! {
                held = self.hold.wait_for(|h| h.holds(fence)) => if held.is_err() { return },
                _ = stopping.cancelled() => return,
            }
            let term = self.hold.borrow().term;
            self.status.lead(true);
            info!(worker = %self.worker, "this worker aggregates the batches");
            let ended = self.lead(term, &stopping).await;
            self.status.lead(false);
            match ended {
                Ended::Lost => info!(worker = %self.worker, "this worker no longer aggregates the batches"),
                Ended::Failed(why) => {
                    warn!(worker = %self.worker, error = %why, "the batch aggregator lost the stream; leading again");
                    tokio::select! {
                        _ = tokio::time::sleep(FIRE_AGAIN) => {}
                        _ = stopping.cancelled() => return,
                    }
                }
                Ended::Gone => return,
            }
        }
    }

    /// Whether the lead of `term` still holds.
    fn holds(&self, term: u64) -> bool {
        let hold = *self.hold.borrow();
        hold.leading && hold.term == term && hold.holds(self.fence)
    }

    async fn open(&self) -> Result<Link, jobs_core::Error> {
        let connection = connect(&self.amqp, &format!("{}:batches", self.worker)).await?;
        let opened = async {
            let declarer = Declarer::open(&connection).await?;
            BATCHES.declare(&declarer).await?;
            declarer.close().await;
            Publisher::open(&connection, self.amqp.confirm_timeout).await
        }
        .await;
        match opened {
            Ok(publisher) => Ok(Link { connection, publisher }),
            Err(err) => {
                close_connection(connection).await;
                Err(err)
            }
        }
    }

    async fn lead(&mut self, term: u64, stopping: &CancellationToken) -> Ended {
        let link = match self.open().await {
            Ok(link) => link,
            Err(err) => return Ended::Failed(report(&err)),
        };
        let ended = self.lead_on(&link, term, stopping).await;
        close_connection(link.connection).await;
        ended
    }

    async fn lead_on(&mut self, link: &Link, term: u64, stopping: &CancellationToken) -> Ended {
        let (mut book, mut reader) = match rebuild(link).await {
            Ok(rebuilt) => rebuilt,
            Err(why) => return Ended::Failed(why),
        };
        book.prune(now_ms(), true);
        info!(batches = book.batches().count(), "the batch record is read");
        let mut pending: Vec<(String, CallbackKind)> = Vec::new();
        for state in book.batches() {
            if let Some(batch) = state.definition.as_ref().map(|d| d.batch.clone()) {
                pending.extend(state.due().into_iter().map(|kind| (batch.clone(), kind)));
            }
        }
        if let Err(err) = append(link, &book.snapshot()).await {
            return Ended::Failed(report(&err));
        }
        self.status.publish(&book, &pending);
        let start = tokio::time::Instant::now();
        let mut snapshots = tokio::time::interval_at(start + SNAPSHOT_EVERY, SNAPSHOT_EVERY);
        let mut again = tokio::time::interval_at(start, FIRE_AGAIN);
        let mut hold = self.hold.clone();
        loop {
            if !self.holds(term) {
                return Ended::Lost;
            }
            // Fire what is due; what could not be enqueued waits for the next round.
            let mut left = Vec::new();
            let succeeded = pending.iter().any(|(_, kind)| *kind == CallbackKind::Success);
            for (batch, kind) in std::mem::take(&mut pending) {
                if !self.holds(term) {
                    return Ended::Lost;
                }
                match self.fire(link, &mut book, &batch, kind, term).await {
                    Ok(()) => {}
                    Err(why) => {
                        warn!(batch = %batch, callback = kind.as_str(), error = %why, "a batch's callback could not be enqueued; trying again");
                        left.push((batch, kind));
                    }
                }
            }
            pending = left;
            if succeeded {
                // Batches whose success fired leave the book for the recent list now (and
                // records of batches gone already, a repeated job's, with them).
                book.prune(now_ms(), true);
            }
            self.status.publish(&book, &pending);
            let fence_closes = self.hold.borrow().heard.map(|heard| heard + self.fence);
            tokio::select! {
                read = reader.next() => {
                    let Some((_, kind, body)) = read else {
                        return Ended::Failed("the stream's channel closed".into());
                    };
                    if kind.as_deref() == Some("mark") {
                        continue;
                    }
                    let Some(record) = Record::decode(&body) else { continue };
                    for batch in book.apply(record, now_ms()) {
                        let due = book.get(&batch).map(State::due).unwrap_or_default();
                        for kind in due {
                            if !pending.contains(&(batch.clone(), kind)) {
                                pending.push((batch.clone(), kind));
                            }
                        }
                    }
                }
                _ = snapshots.tick() => {
                    book.prune(now_ms(), true);
                    if let Err(err) = append(link, &book.snapshot()).await {
                        return Ended::Failed(report(&err));
                    }
                }
                _ = again.tick(), if !pending.is_empty() => {}
                _ = async { match fence_closes { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
                changed = hold.changed() => if changed.is_err() { return Ended::Gone },
                _ = stopping.cancelled() => return Ended::Gone,
            }
        }
    }

    /// Enqueues callback `kind` of `batch` (when it has one), then records it fired.
    async fn fire(
        &self,
        link: &Link,
        book: &mut Book,
        batch: &str,
        kind: CallbackKind,
        term: u64,
    ) -> Result<(), String> {
        let Some(state) = book.get(batch) else { return Ok(()) };
        if !state.due().contains(&kind) {
            return Ok(());
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
            self.client.enqueue_callback(&message, &callback.queue, &still_leads).await.map_err(|e| report(&e))?;
            info!(
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
        book.apply(fired.clone(), now_ms());
        // Not recorded: the next leader enqueues it again, under the same id.
        append(link, &fired).await.map_err(|e| report(&e))
    }
}

/// Appends `record` on the lead's link, confirmed.
async fn append(link: &Link, record: &Record) -> Result<(), jobs_core::Error> {
    let body = record
        .encode()
        .map_err(|e| jobs_core::Error::QueueRead { queue: BATCHES.name().into(), reason: e.to_string() })?;
    BATCHES.append(&link.publisher, record.kind(), body).await
}

/// Reads the record back into a book, up to a marker appended first: from
/// [`SNAPSHOT_WINDOW`] ago when a snapshot is there, else from the start.
/// Returns the book and the reader, which reads on past the marker.
async fn rebuild(link: &Link) -> Result<(Book, JournalReader), String> {
    rebuild_on(&link.connection, &link.publisher).await
}

/// [`rebuild`] on any connection and publisher (the admin command's).
pub(crate) async fn rebuild_on(
    connection: &Connection,
    publisher: &Publisher,
) -> Result<(Book, JournalReader), String> {
    let now = SystemTime::now();
    let (book, reader, snapshot) = read_book(connection, publisher, StartAt::Time(now - SNAPSHOT_WINDOW)).await?;
    if snapshot {
        return Ok((book, reader));
    }
    reader.close().await;
    let (book, reader, _) = read_book(connection, publisher, StartAt::Offset(0)).await?;
    Ok((book, reader))
}

/// The book folded from `start` up to a marker appended first, the reader
/// (which reads on past it), and whether a snapshot was read.
async fn read_book(
    connection: &Connection,
    publisher: &Publisher,
    start: StartAt,
) -> Result<(Book, JournalReader, bool), String> {
    let mark = JobId::new();
    BATCHES.append(publisher, "mark", mark.as_str().as_bytes().to_vec()).await.map_err(|e| report(&e))?;
    let mut reader = BATCHES.read(connection, start).await.map_err(|e| report(&e))?;
    let mut book = Book::new();
    let mut snapshot = false;
    let read = tokio::time::timeout(READ_LIMIT, async {
        while let Some((_, kind, body)) = reader.next().await {
            match kind.as_deref() {
                Some("mark") if body == mark.as_str().as_bytes() => return true,
                Some("mark") => {}
                _ => {
                    if let Some(record) = Record::decode(&body) {
                        snapshot |= matches!(record, Record::Snapshot(_));
                        book.apply(record, now_ms());
                    }
                }
            }
        }
        false
    })
    .await;
    match read {
        Ok(true) => Ok((book, reader, snapshot)),
        Ok(false) => Err("the stream's channel closed before the reading was complete".into()),
        Err(_) => Err(format!("the reading of {} did not complete within {READ_LIMIT:?}", BATCHES.name())),
    }
}
