//! The queues paused now, as this worker knows them from the journal
//! `jobs.control` (see `jobs_core::Paused`). A session reads the journal
//! from its start before it consumes anything, so a worker started while a
//! queue is paused starts with it paused; then it follows the journal, and
//! each queue's consumer cancels itself on a pause (its running jobs
//! finish) and consumes again on a resume. The journal's cancels of jobs
//! are read and followed here too, and handed to `cancels.rs`.

use std::sync::Arc;
use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::events::now_ms;
use jobs_core::plumbing::{read_control, JournalReader, Publisher, CONTROL_KIND};
use jobs_core::{report, ControlCommand, JobId, Paused, CONTROL};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cancels::{Cancels, Request};
use crate::consumer::Shared;

/// How often a follower looks for pauses to refresh.
const REFRESH_EVERY: Duration = Duration::from_secs(6 * 3_600);

/// What this worker knows of paused queues, for its consumers to watch.
#[derive(Debug)]
pub(crate) struct Pauses {
    paused: watch::Sender<Paused>,
    /// Whether the journal was read to its end once (by any session).
    known: std::sync::atomic::AtomicBool,
}

impl Default for Pauses {
    fn default() -> Self {
        Pauses { paused: watch::Sender::new(Paused::default()), known: false.into() }
    }
}

impl Pauses {
    /// What a consumer watches.
    pub(crate) fn watch(&self) -> watch::Receiver<Paused> {
        self.paused.subscribe()
    }

    /// Whether the journal was read to its end once: until then this worker
    /// cannot know what is paused, and consumes nothing.
    pub(crate) fn known(&self) -> bool {
        self.known.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `queue` is paused now.
    pub(crate) fn is_paused(&self, queue: &str) -> bool {
        self.paused.borrow().is_paused(queue)
    }

    /// Reads every command so far (before the session consumes anything),
    /// appending its mark with the session's `publisher` (the settler's):
    /// the pauses, and the cancels into `cancels`.
    ///
    /// # Errors
    /// Why the journal could not be read to its end; what was known before
    /// (an earlier session's) stays.
    pub(crate) async fn catch_up(
        &self,
        connection: &Connection,
        publisher: &Publisher,
        cancels: &Cancels,
    ) -> Result<JournalReader, jobs_core::Error> {
        let mut paused = Paused::default();
        // The cancels not spent yet, in the order given: only those are
        // applied (a job cancelled, dead-lettered and retried since runs).
        let mut open: Vec<(String, Request)> = Vec::new();
        let mut spent: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let reader = read_control(connection, publisher, |command| match command {
            ControlCommand::Cancel { id, by, at_ms } => open.push((id, Request { by, at_ms })),
            ControlCommand::Cancelled { id, .. } => {
                cancels.spent(&id);
                spent.insert(id, open.len());
            }
            command => {
                paused.apply(command);
            }
        })
        .await?;
        let now = now_ms();
        for (n, (id, request)) in open.into_iter().enumerate() {
            // A cancel given after the job's last `cancelled` record still stands.
            if spent.get(&id).map_or(true, |&before| n >= before) {
                cancels.cancel(id, request, now);
            }
        }
        for queue in paused.queues().keys() {
            if !self.is_paused(queue) {
                info!(queue, "queue paused (`worker queues resume {queue}` resumes it): not consuming it");
            }
            gauge(queue, true);
        }
        let before = self.paused.send_replace(paused);
        self.known.store(true, std::sync::atomic::Ordering::Relaxed);
        for queue in before.queues().keys().filter(|q| !self.is_paused(q)) {
            gauge(queue, false);
        }
        Ok(reader)
    }

    /// Follows the journal until `halt`, from `first` (a session's catch-up)
    /// when there is one; when the reading ends (the stream's channel closed,
    /// a catch-up failed) it reads the journal again from its start, after
    /// 1 s and up to 30 s between tries, so a pause is never missed for the
    /// rest of a session.
    pub(crate) async fn keep_following(
        self: Arc<Self>,
        connection: Connection,
        shared: Arc<Shared>,
        halt: CancellationToken,
        first: Option<JournalReader>,
    ) {
        let publisher = &shared.settler.publisher;
        let mut next = first;
        let mut pause = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            if let Some(reader) = next.take() {
                self.follow(reader, publisher, &shared.settler.worker, &shared.cancels, halt.clone()).await;
                if halt.is_cancelled() {
                    return;
                }
                warn!("stopped following jobs.control (its channel closed); reading it again");
            }
            tokio::select! {
                _ = halt.cancelled() => return,
                _ = tokio::time::sleep(pause.next()) => {}
            }
            match self.catch_up(&connection, publisher, &shared.cancels).await {
                Ok(read) => {
                    info!("reading jobs.control again: pauses are followed");
                    pause.reset();
                    next = Some(read);
                }
                Err(err) => debug!(reason = report(&err), "jobs.control cannot be read yet; trying again"),
            }
        }
    }

    /// Follows the journal until `halt` or its channel closes, and appends
    /// again each pause older than the refresh age (so that the journal's
    /// retention never ends a pause). A cancel of a job running here is
    /// applied, and said back (`Cancelling`), so `worker cancel` can tell.
    async fn follow(
        &self,
        mut reader: JournalReader,
        publisher: &Publisher,
        worker: &str,
        cancels: &Cancels,
        halt: CancellationToken,
    ) {
        let mut refresh = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                _ = halt.cancelled() => break,
                _ = refresh.tick() => {
                    let stale = self.paused.borrow().stale(now_ms());
                    for queue in stale {
                        // Who paused it stays; only the time is new.
                        let by = self.paused.borrow().queues().get(&queue).map_or_else(|| worker.to_owned(), |p| p.by.clone());
                        let command = ControlCommand::Pause { queue, by, at_ms: now_ms() };
                        if let Err(err) = append(publisher, &command).await {
                            warn!(error = %err, "could not refresh a long pause in jobs.control; trying again later");
                        }
                    }
                }
                next = reader.next() => {
                    let Some((_, kind, body)) = next else { break };
                    let Some(command) = ControlCommand::of_record(kind.as_deref(), &body) else { continue };
                    let (queue, by, paused) = match &command {
                        ControlCommand::Pause { queue, by, .. } => (queue.clone(), by.clone(), true),
                        ControlCommand::Resume { queue, by, .. } => (queue.clone(), by.clone(), false),
                        ControlCommand::Cancel { id, by, at_ms } => {
                            let request = Request { by: by.clone(), at_ms: *at_ms };
                            if cancels.cancel(id.clone(), request, now_ms()) {
                                info!(job.id = id, by, "job cancelled while it runs: told to stop, dropped if it has not within worker.cancel_grace");
                                let word = ControlCommand::Cancelling { id: id.clone(), worker: worker.to_owned(), at_ms: now_ms() };
                                if let Err(err) = append(publisher, &word).await {
                                    debug!(error = %err, "could not say in jobs.control that a cancelled job runs here");
                                }
                            }
                            continue;
                        }
                        ControlCommand::Cancelled { id, .. } => {
                            cancels.spent(id);
                            continue;
                        }
                        ControlCommand::Cancelling { .. } => continue,
                    };
                    if self.paused.send_if_modified(|known| known.apply(command)) {
                        gauge(&queue, paused);
                        info!(queue, by, "queue {}", if paused { "paused" } else { "resumed" });
                    }
                }
            }
        }
        reader.close().await;
    }
}

/// `jobs_queue_paused{queue}`: 1 while paused.
fn gauge(queue: &str, paused: bool) {
    metrics::gauge!("jobs_queue_paused", "queue" => queue.to_owned()).set(if paused { 1.0 } else { 0.0 });
}

/// Says in `jobs.control` that the job `id` was dead-lettered as cancelled
/// (`running`: it ran when cancelled), so every worker forgets its cancel.
pub(crate) async fn cancelled(publisher: &Publisher, id: &JobId, worker: &str, running: bool) {
    let word =
        ControlCommand::Cancelled { id: id.as_str().to_owned(), worker: worker.to_owned(), running, at_ms: now_ms() };
    if let Err(err) = append(publisher, &word).await {
        warn!(job.id = %id, error = %err, "could not say in jobs.control that a cancelled job is dead-lettered: other workers keep its cancel (for worker.cancel_retention), and would cancel a `dead retry` of it again");
    }
}

async fn append(publisher: &Publisher, command: &ControlCommand) -> Result<(), String> {
    let body = command.encode().map_err(|e| report(&e))?;
    CONTROL.append(publisher, CONTROL_KIND, body).await.map_err(|e| report(&e))
}
