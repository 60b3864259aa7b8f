//! Batches: many jobs enqueued as one, with callbacks once they all ended
//! (`on_complete`) and once they all succeeded (`on_success`), Sidekiq Pro's
//! meaning. Jobs running in a batch may add more jobs to it ([`JobContext::add_to_batch`]).
//!
//! A batch is records in the stream `jobs.batches` ([`BATCHES`]): its
//! definition, its members (before their jobs are sent), that it is sealed,
//! and each member's outcome, which the worker that settles the member
//! appends, confirmed, before its ack. One worker at a time (the leader of
//! `jobs.batches.aggregator`) folds the records into each batch's sets
//! ([`crate::plumbing::batch_book`]) and enqueues the callbacks that come
//! due, under ids made from the batch's id and the callback's kind
//! (`<batch>-complete`, `<batch>-success`), recording each after its
//! confirm. See `docs/workflows.md`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqprs::FieldValue;
use serde::{Deserialize, Serialize};

use crate::batch_book::{Callback, CallbackKind, Counts, Definition, Record};
use crate::codec::headers;
use crate::destination::{Declare, Destination, JobRoute};
use crate::journal::Journal;
use crate::message::Message;
use crate::testing::EnqueuedJob;
use crate::window::Stopped;
use crate::{codec, Client, Error, Job, JobContext, JobId, Route};

/// The record of batches: 30 days in 16 MB segments. Open batches are
/// carried forward in the aggregator's snapshots, so that no open batch
/// goes with its oldest records.
pub const BATCHES: Journal =
    Journal::new("jobs.batches", Duration::from_secs(30 * 86_400)).with_segment_bytes(16 * 1024 * 1024);

/// Members recorded per `members` record at enqueue (and jobs sent between two).
const CHUNK: usize = 10_000;

/// The longest description a batch keeps, in bytes.
pub const MAX_DESCRIPTION: usize = 1_000;

/// The most dead ids a callback is told ([`BatchOutcome::dead_ids`]).
pub const MAX_DEAD_IDS: usize = 1_000;

/// Jobs enqueued as one, with callbacks when they have all ended.
///
/// ```no_run
/// use jobs_core::prelude::*;
/// use jobs_core::Batch;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Invoice { customer: u64 }
/// #[derive(Serialize, Deserialize, Job)]
/// struct Report;
/// # impl Perform for Invoice { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
///
/// impl Perform for Report {
///     async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
///         let outcome = ctx.batch_outcome().ok_or_else(|| JobError::fatal("not a batch's callback"))?;
///         println!("batch {}: {} of {} sent, {} dead", outcome.batch, outcome.succeeded, outcome.total, outcome.dead);
///         Ok(())
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// let invoices: Vec<Invoice> = (0..10_000).map(|customer| Invoice { customer }).collect();
/// let batch = Batch::new().description("July invoices").on_complete(&Report).jobs(&invoices);
/// let id = batch.enqueue().await?;
/// # let _ = id; Ok(()) }
/// ```
#[must_use = "a batch does nothing until it is enqueued"]
#[derive(Debug, Default)]
pub struct Batch {
    description: Option<String>,
    on_complete: Option<Callback>,
    on_success: Option<Callback>,
    jobs: Vec<Member>,
    error: Option<Error>,
}

#[derive(Debug)]
struct Member {
    route: JobRoute<'static>,
    registration: Option<&'static crate::registry::Registration>,
    id: JobId,
    body: Vec<u8>,
}

fn queue_route<J: Job>() -> Result<JobRoute<'static>, Error> {
    if J::UNIQUE_FOR.is_some() {
        return Err(Error::Unsupported(
            "a unique job (unique_for) in a batch or as its callback: each may be a duplicate, so enqueue it with enqueue()",
        ));
    }
    match J::ROUTE {
        Route::Queue => Ok(JobRoute::of::<J>()),
        Route::Exchange { .. } => Err(Error::Unsupported(
            "a batch's jobs and callbacks go to a queue: a job routed through an exchange runs on every subscriber, or none",
        )),
    }
}

fn callback<J: Job>(job: &J) -> Result<Callback, Error> {
    if J::EXPIRES_IN.is_some() {
        // Its deadline would run from the batch's enqueue, not from its own.
        return Err(Error::Unsupported("a job with a deadline (expires_in) as a batch's callback: not carried yet"));
    }
    let route = queue_route::<J>()?;
    Ok(Callback { name: route.name.to_owned(), queue: route.queue.to_owned(), body: codec::encode(job)? })
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// What the batch is for: shown by `worker batches` and the dashboard
    /// (cut at [`MAX_DESCRIPTION`] bytes: it travels in the callbacks' headers).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        let text: String = text.into();
        self.description = Some(crate::message::cut(&text, MAX_DESCRIPTION));
        self
    }

    /// The job to run once every job of the batch ended: succeeded or went dead.
    pub fn on_complete<J: Job>(mut self, job: &J) -> Self {
        match callback(job) {
            Ok(callback) => self.on_complete = Some(callback),
            Err(err) => self.fail(err),
        }
        self
    }

    /// The job to run once every job of the batch succeeded (also later,
    /// when its last dead job is retried and succeeds).
    pub fn on_success<J: Job>(mut self, job: &J) -> Self {
        match callback(job) {
            Ok(callback) => self.on_success = Some(callback),
            Err(err) => self.fail(err),
        }
        self
    }

    /// Adds `job` to the batch; returns the id it will have.
    pub fn add<J: Job>(&mut self, job: &J) -> JobId {
        let id = JobId::new();
        match queue_route::<J>().and_then(|route| Ok((route, codec::encode(job)?))) {
            Ok((route, body)) => {
                self.jobs.push(Member { route, registration: J::__registration(), id: id.clone(), body })
            }
            Err(err) => self.fail(err),
        }
        id
    }

    /// The batch with `job` added.
    pub fn job<J: Job>(mut self, job: &J) -> Self {
        self.add(job);
        self
    }

    /// The batch with `jobs` added.
    pub fn jobs<'a, J: Job + 'a>(mut self, jobs: impl IntoIterator<Item = &'a J>) -> Self {
        for job in jobs {
            self.add(job);
        }
        self
    }

    /// How many jobs it has.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether it has no job (an empty batch completes at once).
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn fail(&mut self, err: Error) {
        self.error.get_or_insert(err);
    }

    /// Enqueues the batch on the current client ([`Client::current`]) and
    /// returns its id once every job and record is confirmed.
    ///
    /// # Errors
    /// As [`Client::enqueue_batch`].
    pub async fn enqueue(self) -> Result<JobId, Error> {
        Client::current()?.enqueue_batch(self).await
    }
}

/// What a batch's callback learns of its batch ([`JobContext::batch_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// The batch id.
    pub batch: String,
    /// Its description.
    pub description: Option<String>,
    /// Which callback this is: `complete` or `success`.
    pub callback: CallbackKind,
    /// Jobs in the batch, child jobs included.
    pub total: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that went dead (and were not retried to success).
    pub dead: u64,
    /// The dead jobs' ids, sorted, at most [`MAX_DEAD_IDS`] of them.
    pub dead_ids: Vec<String>,
}

impl BatchOutcome {
    /// The outcome of `batch` with `counts`, for callback `callback`.
    pub fn new(definition: &Definition, callback: CallbackKind, counts: Counts, dead_ids: Vec<String>) -> Self {
        BatchOutcome {
            batch: definition.batch.clone(),
            description: definition.description.clone(),
            callback,
            total: counts.total,
            succeeded: counts.succeeded,
            dead: counts.dead,
            dead_ids,
        }
    }

    /// The id of callback `kind` of batch `batch`: `<batch>-complete`, `<batch>-success`.
    pub fn callback_id(batch: &str, kind: CallbackKind) -> JobId {
        JobId::from(format!("{batch}-{}", kind.as_str()).as_str())
    }

    /// The callback's message: its job, under its id, with this outcome in `x-batch-outcome`.
    pub fn message(&self, callback: &Callback) -> Message {
        let id = Self::callback_id(&self.batch, self.callback);
        let outcome = rmp_serde::to_vec_named(self).unwrap_or_default();
        Message::job(&callback.name, id, callback.body.clone())
            .header(headers::BATCH_OUTCOME, crate::chain::bytes(outcome))
    }
}

/// What a job running in a batch knows of it.
#[derive(Debug)]
pub(crate) struct BatchRun {
    /// A member's batch.
    pub(crate) batch: Option<String>,
    /// A callback's outcome.
    pub(crate) outcome: Option<BatchOutcome>,
    /// Child jobs added so far by this run.
    children: AtomicU32,
}

impl BatchRun {
    pub(crate) fn new(batch: Option<String>, outcome: Option<BatchOutcome>) -> Arc<Self> {
        Arc::new(BatchRun { batch, outcome, children: AtomicU32::new(0) })
    }
}

impl JobContext {
    /// Adds `job` to this job's batch (a child job), enqueued and recorded
    /// before this returns, so that the batch cannot complete before it ends.
    /// Its id is `<this job's id>.<n>` for the `n`-th child this run adds
    /// (from 0): a run repeated (a retry, a crash) adds the same ids again,
    /// and a job run twice counts once.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when this job is in no batch, or `job` is routed
    /// through an exchange; otherwise as [`Client::enqueue`].
    pub async fn add_to_batch<J: Job>(&self, job: &J) -> Result<JobId, Error> {
        let run =
            self.batch_run().ok_or(Error::Unsupported("this job is in no batch: only a batch's jobs add to it"))?;
        let batch =
            run.batch.clone().ok_or(Error::Unsupported("this job is in no batch: only a batch's jobs add to it"))?;
        let route = queue_route::<J>()?;
        let n = run.children.fetch_add(1, Ordering::Relaxed);
        let id = JobId::from(format!("{}.{n}", self.job_id()).as_str());
        let client = Client::current()?;
        let member = Member { route, registration: J::__registration(), id: id.clone(), body: codec::encode(job)? };
        client.send_member(&JobId::from(batch.as_str()), &member).await?;
        let record = Record::Members { batch, ids: vec![id.to_string()], parent: Some(self.job_id().to_string()) };
        client.append_batch_record(&record).await?;
        Ok(id)
    }

    /// The batch this job belongs to, for a batch's job.
    pub fn batch_id(&self) -> Option<&str> {
        self.batch_run().and_then(|run| run.batch.as_deref())
    }

    /// For a batch's callback: its batch and the batch's counts.
    pub fn batch_outcome(&self) -> Option<&BatchOutcome> {
        self.batch_run().and_then(|run| run.outcome.as_ref())
    }
}

impl Client {
    /// Enqueues `batch`: its definition, then its members and their jobs
    /// 10,000 at a time (each chunk's members recorded before its jobs are
    /// sent, the jobs pipelined as [`Client::enqueue_many`] sends them), then
    /// its seal; returns the batch id once all are confirmed.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a job or callback routed through an
    /// exchange; as [`Client::enqueue_many`] otherwise. A batch that stopped
    /// part-way is never sealed, so it never completes: enqueue it again
    /// (it is a new batch).
    pub async fn enqueue_batch(&self, batch: Batch) -> Result<JobId, Error> {
        if let Some(err) = batch.error {
            return Err(err);
        }
        let id = JobId::new();
        let definition = Definition {
            batch: id.to_string(),
            description: batch.description,
            at_ms: crate::codec::now_millis(),
            on_complete: batch.on_complete,
            on_success: batch.on_success,
        };
        if let Some(recorder) = self.recorder() {
            for member in &batch.jobs {
                recorder.record(member.recorded(&id, self)?);
            }
            return Ok(id);
        }
        for queue in [definition.on_complete.as_ref(), definition.on_success.as_ref()].into_iter().flatten() {
            crate::topology::validate_queue_name(&queue.queue)?;
        }
        self.append_batch_record(&Record::Open(definition)).await?;
        for chunk in batch.jobs.chunks(CHUNK) {
            let ids = chunk.iter().map(|m| m.id.to_string()).collect();
            self.append_batch_record(&Record::Members { batch: id.to_string(), ids, parent: None }).await?;
            self.send_members(&id, chunk).await?;
        }
        self.append_batch_record(&Record::Sealed { batch: id.to_string() }).await?;
        tracing::debug!(batch = %id, jobs = batch.jobs.len(), "batch enqueued");
        Ok(id)
    }

    /// Appends `record` to [`BATCHES`] (declared first, once per connection), confirmed.
    pub(crate) async fn append_batch_record(&self, record: &Record) -> Result<(), Error> {
        let body = record.encode().map_err(|e| Error::Encode { job: "batch record", source: crate::Cause::new(e) })?;
        let message = Message::job(record.kind(), JobId::new(), body).transient();
        let destination = Destination { declare: Declare::Journal(BATCHES), ..Destination::direct(BATCHES.name()) };
        self.publish_one(&message, &destination, None).await
    }

    /// Sends one member's job (a child job), confirmed.
    async fn send_member(&self, batch: &JobId, member: &Member) -> Result<(), Error> {
        if let Some(recorder) = self.recorder() {
            recorder.record(member.recorded(batch, self)?);
            return Ok(());
        }
        let destination =
            Destination::resolve_for(member.route, &crate::EnqueueOptions::default(), self.config().topology())?;
        self.publish_one(&member.message(batch), &destination, None).await
    }

    /// Sends a chunk of members' jobs, pipelined; what their destinations need declared first.
    async fn send_members(&self, batch: &JobId, members: &[Member]) -> Result<(), Error> {
        let topology = self.config().topology();
        // As one member alone would go (an ordered type's to its key's shard).
        let options = crate::EnqueueOptions::default();
        let destinations = members
            .iter()
            .map(|m| Destination::resolve_for(m.route, &options, topology))
            .collect::<Result<Vec<_>, _>>()?;
        let messages: Vec<Message> = members.iter().map(|m| m.message(batch)).collect();
        let config = self.config().clone();
        let mut declares: Vec<Declare> = Vec::new();
        for destination in &destinations {
            if !declares.contains(&destination.declare) {
                declares.push(destination.declare.clone());
            }
        }
        let declare = |session: Arc<crate::session::Session>| {
            let (config, declares) = (config.clone(), declares.clone());
            async move {
                for declare in &declares {
                    session.prepare(&config, declare).await?;
                }
                Ok(())
            }
        };
        let mut source = crate::window::Prepared { messages: &messages, destinations: &destinations, at: 0 };
        let first = destinations.first().cloned().unwrap_or_else(|| Destination::direct(BATCHES.name()));
        let (published, _): (_, Option<()>) = self.publish_source(&first, declare, &mut source, false).await;
        published.map(drop).map_err(Stopped::into_batch_error)
    }

    /// Enqueues a batch's callback `message` on `queue` (declared first); a
    /// message whose connection went before its confirm goes again only
    /// while `may_go_again` says so (while the aggregator still leads).
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_callback(
        &self,
        message: &Message,
        queue: &str,
        may_go_again: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), Error> {
        let mut destination = Destination::to_queue(self.config().topology(), queue, None)?;
        destination.declare = Declare::Queue { queue: queue.to_owned(), delayed: false, shards: 0 };
        self.publish_one(message, &destination, Some(may_go_again)).await
    }
}

impl Member {
    fn message(&self, batch: &JobId) -> Message {
        // Its type's deadline runs from the batch's enqueue.
        let deadline = crate::EnqueueOptions::default().deadline(self.registration.and_then(|r| r.expires_in()));
        Message::job(self.route.name, self.id.clone(), self.body.clone())
            .header(headers::BATCH, FieldValue::from(batch.as_str()))
            .deadline(deadline)
    }

    fn recorded(&self, batch: &JobId, client: &Client) -> Result<EnqueuedJob, Error> {
        let destination =
            Destination::resolve_for(self.route, &crate::EnqueueOptions::default(), client.config().topology())?;
        Ok(EnqueuedJob::of(self.route.name, self.registration, self.id.clone(), &destination, self.body.clone())
            .in_batch(batch.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;
    use crate::Batch;

    #[derive(Serialize, Deserialize, Job)]
    #[job(queue = "batch-unit")]
    struct Invoice {
        n: u32,
    }

    #[derive(Serialize, Deserialize, Job)]
    #[job(queue = "batch-unit")]
    struct Child;

    impl Perform for Invoice {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            assert!(ctx.batch_id().is_some(), "a member knows its batch");
            if self.n == 0 {
                let child = ctx.add_to_batch(&Child).await?;
                assert_eq!(child.as_str(), format!("{}.0", ctx.job_id()));
            }
            Ok(())
        }
    }

    impl Perform for Child {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            assert!(ctx.batch_id().is_some(), "a child is in its parent's batch");
            Ok(())
        }
    }

    #[derive(Serialize, Deserialize, Job)]
    #[job(exchange = "batch-unit-logs")]
    struct Broadcast;

    impl Perform for Broadcast {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_testing_mode_records_a_batchs_jobs_and_their_children() {
        let test = TestClient::new();
        let jobs = [Invoice { n: 0 }, Invoice { n: 1 }];
        let id = test.scope(Batch::new().description("July").jobs(&jobs).enqueue()).await.unwrap();
        let queued = test.enqueued();
        assert_eq!(queued.len(), 2);
        assert!(queued.iter().all(|j| j.batch() == Some(id.as_str())));
        assert_eq!(test.run_all().await.unwrap(), 3, "two invoices and the child the first added");
    }

    #[tokio::test]
    async fn a_broadcast_cannot_be_in_a_batch() {
        let test = TestClient::new();
        let err = test.scope(Batch::new().job(&Broadcast).enqueue()).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        let err = test.scope(Batch::new().on_complete(&Broadcast).enqueue()).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
    }
}
