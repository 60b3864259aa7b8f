//! The outcomes of a session's batch jobs, appended to the stream
//! `jobs.batches` before each job's ack: the one record per job on the hot
//! path, and only for a batch's jobs (plain jobs publish nothing). The
//! outcomes of jobs settling at the same time share one record, one publish
//! and one confirm: each record takes every outcome waiting as it goes out,
//! and goes out at once, while earlier ones wait for their confirms (at most
//! eight at a time; the record's order does not matter to its fold).

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::batch_book::{Outcome, Record};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::Publisher;
use jobs_core::{report, JobId, BATCHES};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Outcomes gathered into one record at most.
const MAX_GROUP: usize = 1_000;
/// Records waiting for their confirms at once.
const MAX_IN_FLIGHT: usize = 8;

type Request = (Outcome, oneshot::Sender<Result<(), String>>);

/// Where a session's settling sends its batch jobs' outcomes.
#[derive(Debug)]
pub(crate) struct Outcomes {
    tx: mpsc::UnboundedSender<Request>,
}

impl Outcomes {
    /// Records on `connection` (a channel of their own, opened on first
    /// use), until the session's connection goes.
    pub(crate) fn start(connection: Connection, confirm_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(connection, confirm_timeout, rx));
        Outcomes { tx }
    }

    /// Appends that job `id` of batch `batch`, from `queue`, ended (`ok`:
    /// succeeded), and waits for the broker's confirm.
    ///
    /// # Errors
    /// Why it is not recorded (the delivery then goes back to its queue).
    pub(crate) async fn record(&self, batch: &str, id: &JobId, ok: bool, queue: &str) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        let outcome = Outcome { batch: batch.to_owned(), id: id.to_string(), ok, queue: queue.to_owned() };
        self.tx.send((outcome, done)).map_err(|_| "the session is over".to_owned())?;
        wait.await.unwrap_or_else(|_| Err("the session is over".into()))
    }
}

async fn run(connection: Connection, confirm_timeout: Duration, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut publisher: Option<Arc<Publisher>> = None;
    // Records in flight at once: each group goes out at once, without waiting
    // for the confirm of the one before (the fold does not care about order).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let (outcomes, waiters): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let open = match publisher.as_ref().filter(|p| p.is_open()) {
            Some(open) => Ok(open.clone()),
            None => open(&connection, confirm_timeout).await.map(Arc::new),
        };
        let open = match open {
            Ok(open) => open,
            Err(why) => {
                publisher = None;
                for waiter in waiters {
                    let _ = waiter.send(Err(why.clone()));
                }
                continue;
            }
        };
        publisher = Some(open.clone());
        tokio::spawn(async move {
            let result = append(&open, outcomes).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            drop(permit);
        });
    }
}

/// A channel to record on, the stream declared.
async fn open(connection: &Connection, confirm_timeout: Duration) -> Result<Publisher, String> {
    let declarer = Declarer::open(connection).await.map_err(|e| report(&e))?;
    BATCHES.declare(&declarer).await.map_err(|e| report(&e))?;
    declarer.close().await;
    Publisher::open(connection, confirm_timeout).await.map_err(|e| report(&e))
}

async fn append(publisher: &Publisher, outcomes: Vec<Outcome>) -> Result<(), String> {
    let record = Record::Outcomes(outcomes);
    let body = record.encode().map_err(|e| e.to_string())?;
    BATCHES.append(publisher, record.kind(), body).await.map_err(|e| report(&e))
}
