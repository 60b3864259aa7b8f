//! The job traits and what a running job can see.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{de::DeserializeOwned, Serialize};

use crate::{Client, Error, JobError};

/// Attempts in all of a job type that does not set `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;

/// A type of background job: its name on the wire and the queue it goes to.
///
/// Implement it with `#[derive(Job)]`, which also registers the type so that a
/// worker binary finds every job type linked into it. The attribute
/// `#[job(...)]` sets, each optional:
/// - `queue = "emails"`: the queue (default `"default"`);
/// - `exchange = "logs"`, `exchange_type = "fanout" | "direct" | "topic"`: route
///   through an exchange instead, to the workers subscribed to it (fanout by default);
/// - `name = "EmailJob"`: the name on the wire (default: the type's name);
/// - `max_attempts = 5`: attempts before the job goes to `<queue>.dead` (default 25);
/// - `blocking`: `perform` blocks its thread (a synchronous library, CPU-heavy
///   work, `std::thread::sleep`): the worker runs it on a thread of the
///   runtime's blocking pool (at most `worker.blocking_threads` at once), not on
///   the threads async jobs share; its `timeout` still settles it (as timed
///   out), though its thread cannot be stopped and runs on to its end;
/// - `timeout = "90s"`: how long one attempt may run (default 25 minutes, below
///   RabbitMQ's 30-minute consumer timeout); units `ms`, `s`, `m`, `h`;
/// - `backoff = path::to::fn`: a `fn(u32) -> Duration` giving the delay before the
///   retry that follows failed attempt `n` (default [`crate::backoff::exponential`]);
/// - `rpc`: a call ([`Respond`] instead of [`Perform`]);
/// - `step`: a chain's step that takes a value from the step before and hands
///   one on ([`Step`](crate::Step) instead of [`Perform`]); see [`Chain`](crate::Chain).
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The job's name, carried in the AMQP `type` property; workers dispatch on it.
    const NAME: &'static str;
    /// The queue that [`Job::enqueue`] sends the job to.
    const QUEUE: &'static str;
    /// Where jobs go: their queue, or an exchange (`#[job(exchange = "logs")]`).
    const ROUTE: crate::Route = crate::Route::Queue;
    /// Attempts in all, the first included; after the last failure the job is dead.
    const MAX_ATTEMPTS: u32 = DEFAULT_MAX_ATTEMPTS;
    /// How long one attempt may run before it is cancelled and counted as failed.
    const TIMEOUT: Duration = Duration::from_secs(25 * 60);
    /// Whether `perform` blocks its thread (`#[job(blocking)]`): it then runs
    /// on a thread of the blocking pool.
    const BLOCKING: bool = false;
    /// At most this many jobs of the type run at once across every worker of
    /// the vhost (`#[job(max_running = 5)]`, or `[[limits]]` in the worker's
    /// config); `None`: no limit.
    const MAX_RUNNING: Option<u16> = None;
    /// Jobs of the type start at no more than this rate across every worker
    /// of the vhost (`#[job(rate = "100/s")]`, or `[[limits]]`); `None`: no limit.
    const RATE: Option<crate::Rate> = None;
    /// How many may start at once after a quiet spell (`#[job(burst = 20)]`);
    /// `None`: the rate's count.
    const BURST: Option<u32> = None;
    /// The field whose value each has a rate of its own (`#[job(rate_key =
    /// "customer_id")]`); `None`: one rate for the whole type.
    const RATE_KEY: Option<&'static str> = None;
    /// The names of the job's fields in its body (set by the derive for a
    /// struct without `#[serde(...)]` renames; empty: not known).
    const FIELDS: &'static [&'static str] = &[];
    /// While a job of the type with the same key is queued, delayed or
    /// running, for at most this long, another enqueue returns
    /// [`Error::Duplicate`] (`#[job(unique_for = "10m")]`); `None`: not unique.
    const UNIQUE_FOR: Option<Duration> = None;
    /// The field that is the unique key (`#[job(unique_key = "user_id")]`);
    /// `None`: the type and all its fields.
    const UNIQUE_KEY: Option<&'static str> = None;
    /// When the key is given back (`#[job(unique_until = "window")]`).
    const UNIQUE_UNTIL: crate::UniqueUntil = crate::UniqueUntil::End;
    /// A job of the type not started within this long of its enqueue is not
    /// run: dead as `expired` (`#[job(expires_in = "1h")]`); `None`: never.
    const EXPIRES_IN: Option<Duration> = None;
    /// Its queue takes priorities (`#[job(priorities)]`; a classic queue
    /// declared with `x-max-priority` 9).
    const PRIORITIES: bool = false;
    /// Its jobs' priority, 0 to 9, when none is given at enqueue
    /// (`#[job(priority = 7)]`; without one, 0).
    const PRIORITY: Option<u8> = None;
    /// `#[job(ordered_by = "account_id")]`: the field whose value is the
    /// key; jobs of one key run one at a time, in the order they were
    /// enqueued, across all workers (`docs/job-control.md`).
    const ORDERED_BY: Option<&'static str> = None;
    /// `#[job(shards = 16)]`: how many shard queues an ordered type's keys
    /// are spread over (`<queue>.shard.<n>`), 1 to 256.
    const SHARDS: u16 = crate::ordered::DEFAULT_SHARDS;

    /// The delay before the retry that follows failed attempt `attempt` (from 1).
    fn backoff(attempt: u32) -> Duration {
        crate::backoff::exponential(attempt)
    }

    /// How a worker decodes and runs this type; `#[derive(Job)]` provides it.
    #[doc(hidden)]
    fn __registration() -> Option<&'static crate::plumbing::Registration>
    where
        Self: Sized,
    {
        None
    }

    /// Enqueues this job on the current client ([`Client::current`]: the
    /// scoped one, else the process-wide one) and returns its id once the
    /// broker has confirmed it.
    ///
    /// # Errors
    /// [`Error::NoGlobalClient`] when no client is set; otherwise as
    /// [`Client::enqueue`].
    fn enqueue(&self) -> impl Future<Output = Result<JobId, Error>> + Send
    where
        Self: Sized,
    {
        async move { Client::current()?.enqueue(self).await }
    }

    /// Publishes this exchange-routed job with `routing_key` (direct and topic
    /// exchanges), on the current client.
    ///
    /// # Errors
    /// As [`Job::enqueue`]; [`Error::Unroutable`] when no queue is bound for the key.
    fn enqueue_routed(&self, routing_key: &str) -> impl Future<Output = Result<JobId, Error>> + Send
    where
        Self: Sized,
    {
        async move { Client::current()?.enqueue_with(self, crate::EnqueueOptions::new().routing_key(routing_key)).await }
    }

    /// Enqueues this job to run after `delay` (whole seconds, rounded up), on the current client.
    ///
    /// # Errors
    /// As [`Job::enqueue`].
    fn enqueue_in(&self, delay: Duration) -> impl Future<Output = Result<JobId, Error>> + Send
    where
        Self: Sized,
    {
        async move { Client::current()?.enqueue_with(self, crate::EnqueueOptions::new().delay(delay)).await }
    }

    /// Enqueues this job to run at `at` (now if `at` is past).
    ///
    /// # Errors
    /// As [`Job::enqueue`].
    fn enqueue_at(&self, at: SystemTime) -> impl Future<Output = Result<JobId, Error>> + Send
    where
        Self: Sized,
    {
        async move { Client::current()?.enqueue_with(self, crate::EnqueueOptions::new().at(at)).await }
    }
}

/// The work of a job. `#[derive(Job)]` requires it; write it as an `async fn`.
///
/// Returning `Err` marks the attempt failed (see [`JobError`] for how the worker
/// reacts); a panic counts as a failure too.
///
/// ```
/// use jobs_core::prelude::*;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Resize { path: String }
///
/// impl Perform for Resize {
///     async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
/// ```
///
/// Mistakes the compiler refuses (their messages are the compiler's and
/// serde's, so they are checked here rather than word for word in the
/// derive's UI tests): a `perform` that is not `async`,
///
/// ```compile_fail
/// use jobs_core::prelude::*;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Resize { path: String }
///
/// impl Perform for Resize {
///     fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
/// ```
///
/// and a field that serde cannot encode:
///
/// ```compile_fail
/// use jobs_core::prelude::*;
///
/// struct Handle;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Resize { file: Handle }
///
/// impl Perform for Resize {
///     async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` derives `Job` but does not implement `Perform`",
    label = "this job has no `perform`",
    note = "add `impl jobs_core::Perform for {Self} {{ async fn perform(self, ctx: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {{ .. }} }}`"
)]
pub trait Perform: Job {
    /// Runs the job once. `self` is the decoded job; `ctx` tells its id and attempt.
    fn perform(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// The work of an RPC job (`#[job(rpc)]`, tutorial 6): it returns an output that
/// goes back to the caller of [`Respond::call`] over RabbitMQ's direct reply-to.
///
/// A call's failure is its answer: the caller gets the error, and the job is not
/// retried.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is an RPC job (`#[job(rpc)]`) but does not implement `Respond`",
    label = "this job has no `respond`",
    note = "add `impl jobs_core::Respond for {Self} {{ type Output = ...; async fn respond(self, ctx: jobs_core::JobContext) -> Result<Self::Output, jobs_core::JobError> {{ .. }} }}`"
)]
pub trait Respond: Job {
    /// What the job answers.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the job once and returns its answer.
    fn respond(self, ctx: JobContext) -> impl Future<Output = Result<Self::Output, JobError>> + Send;

    /// Enqueues the job and waits for its answer (at most `amqp.call_timeout`),
    /// on the current client.
    ///
    /// # Errors
    /// [`Error::CallFailed`] with the worker's error, [`Error::CallTimeout`], or
    /// as [`Job::enqueue`].
    fn call(&self) -> impl Future<Output = Result<Self::Output, Error>> + Send
    where
        Self: Sized,
    {
        async move { Client::current()?.call(self).await }
    }
}

/// A job's id: the AMQP `message_id`, kept across retries.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

impl JobId {
    /// A new random id: 24 lowercase hex digits, 96 random bits (as Sidekiq's
    /// job ids). Shorter than a UUID so that a job's properties stay within
    /// the ~60 bytes past which RabbitMQ 3.10's classic queues slow down
    /// (README, Speed). Ids given with [`EnqueueOptions::id`](crate::EnqueueOptions::id) may be anything.
    pub fn new() -> Self {
        // From a fast thread-local generator: one `getrandom` syscall per id
        // showed in the enqueue profile. Unique, not secret.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bits = fastrand::u128(..) >> 32;
        let mut text = [0u8; 24];
        for digit in text.iter_mut().rev() {
            *digit = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        JobId(std::str::from_utf8(&text).unwrap_or_default().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.into())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// What a running job can know about its delivery.
#[derive(Debug, Clone)]
pub struct JobContext {
    id: JobId,
    name: &'static str,
    queue: Arc<str>,
    attempt: u32,
    worker: Arc<str>,
    enqueued_at: Option<SystemTime>,
    interrupted_runs: u32,
    chain: Option<Arc<ChainRun>>,
    batch: Option<Arc<crate::batch::BatchRun>>,
    /// Cancelled when someone cancels the job (`worker cancel <id>`).
    cancel: Option<tokio_util::sync::CancellationToken>,
    /// Where `progress` writes (the worker reads it for heartbeats).
    progress: Option<Arc<crate::progress::ProgressCell>>,
}

/// A chain's step as it runs: where it stands, and what the step before handed on.
#[derive(Debug)]
struct ChainRun {
    place: crate::ChainPlace,
    input: Option<Vec<u8>>,
}

impl JobContext {
    /// Built by the worker for each delivery.
    #[doc(hidden)]
    pub fn new(id: JobId, name: &'static str, queue: Arc<str>, attempt: u32, worker: Arc<str>) -> Self {
        JobContext {
            id,
            name,
            queue,
            attempt,
            worker,
            enqueued_at: None,
            interrupted_runs: 0,
            chain: None,
            batch: None,
            cancel: None,
            progress: None,
        }
    }

    /// Set by the worker: where [`JobContext::progress`] writes.
    #[doc(hidden)]
    #[must_use]
    pub fn with_progress(mut self, cell: Arc<crate::progress::ProgressCell>) -> Self {
        self.progress = Some(cell);
        self
    }

    /// Says how far the job is: `done` from 0.0 to 1.0 and a line for a
    /// person ("resized 42 of 100"). Cheap enough to call in a loop: it
    /// sends nothing; the worker's next heartbeat carries the latest value
    /// to the dashboard's Workers page (a bar and the text), `/api/workers`
    /// and `/api/running/<job-id>`, and a job that ends dead keeps its last
    /// value (`progress` and `progress_text` of `worker dead show`). `done`
    /// is clamped to 0..=1 (a NaN is ignored), the text cut at 200 bytes.
    /// Outside a worker (`TestClient`, a job's `perform` called directly) it
    /// does nothing.
    ///
    /// ```
    /// # async fn run(ctx: jobs_core::JobContext, images: Vec<String>) -> Result<(), jobs_core::JobError> {
    /// for (n, image) in images.iter().enumerate() {
    ///     // resize(image).await?;
    ///     ctx.progress((n + 1) as f64 / images.len() as f64, &format!("resized {} of {}", n + 1, images.len()));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn progress(&self, done: f64, text: &str) {
        if let Some(cell) = &self.progress {
            cell.set(done, text);
        }
    }

    /// Set by the worker: the token a cancel of this job cancels.
    #[doc(hidden)]
    #[must_use]
    pub fn with_cancel(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Whether someone has cancelled this job (`worker cancel <id>`, the
    /// dashboard's Cancel button). A job that checks it can stop cleanly;
    /// one that does not is dropped after `worker.cancel_grace` (default
    /// 10 s). Either way the job is dead-lettered as `cancelled`, whatever
    /// `perform` returns, and `worker dead retry` can run it again.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|t| t.is_cancelled())
    }

    /// Resolves when someone cancels this job (never, if no one does): for a
    /// `select!` beside the job's own work.
    ///
    /// ```
    /// # async fn work() {}
    /// # async fn run(ctx: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {
    /// tokio::select! {
    ///     _ = ctx.cancelled() => return Err(jobs_core::JobError::msg("cancelled: stopped cleanly")),
    ///     _ = work() => {}
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Set by the worker from a chain step's `x-chain` and `x-chain-input` headers.
    #[doc(hidden)]
    #[must_use]
    pub fn with_chain(mut self, place: crate::ChainPlace, input: Option<Vec<u8>>) -> Self {
        self.chain = Some(Arc::new(ChainRun { place, input }));
        self
    }

    /// Set by the worker from a batch's job's `x-batch` header, or a
    /// callback's `x-batch-outcome`.
    #[doc(hidden)]
    #[must_use]
    pub fn with_batch(mut self, batch: Option<String>, outcome: Option<crate::BatchOutcome>) -> Self {
        if batch.is_some() || outcome.is_some() {
            self.batch = Some(crate::batch::BatchRun::new(batch, outcome));
        }
        self
    }

    pub(crate) fn batch_run(&self) -> Option<&crate::batch::BatchRun> {
        self.batch.as_deref()
    }

    /// Where this job stands in its chain (its id, the step's place, the
    /// steps still to run), when it is a chain's step.
    pub fn chain(&self) -> Option<&crate::ChainPlace> {
        self.chain.as_deref().map(|c| &c.place)
    }

    /// What the chain's step before handed on, encoded.
    pub(crate) fn chain_input(&self) -> Option<&[u8]> {
        self.chain.as_deref().and_then(|c| c.input.as_deref())
    }

    /// Set by the worker from the message's `x-interrupted` header.
    #[doc(hidden)]
    #[must_use]
    pub fn with_interrupted_runs(mut self, runs: u32) -> Self {
        self.interrupted_runs = runs;
        self
    }

    /// How many earlier runs of this attempt a graceful stop of their worker
    /// ended before they were done (a deploy whose grace period was shorter
    /// than the job): 0 for a run from the start. A job that keeps its own
    /// checkpoints (keyed by [`JobContext::job_id`]) can resume from the last
    /// one when this is above 0. Runs that ended with a crash (`kill -9`, a
    /// lost connection) are not counted here.
    pub fn interrupted_runs(&self) -> u32 {
        self.interrupted_runs
    }

    /// Set by the worker from the message's `timestamp`.
    #[doc(hidden)]
    #[must_use]
    pub fn with_enqueued_at(mut self, at: Option<SystemTime>) -> Self {
        self.enqueued_at = at;
        self
    }

    /// When the job was first enqueued (whole seconds: the message's
    /// `timestamp`), kept across retries; `None` when its producer set none.
    pub fn enqueued_at(&self) -> Option<SystemTime> {
        self.enqueued_at
    }

    /// The job's id.
    pub fn job_id(&self) -> &JobId {
        &self.id
    }

    /// The job type's name.
    pub fn job_name(&self) -> &'static str {
        self.name
    }

    /// The queue the job was consumed from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The id of the worker running the job (`host:pid:n` unless configured).
    pub fn worker(&self) -> &str {
        &self.worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_unique_and_print_plainly() {
        let a = JobId::new();
        let b = JobId::new();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 24);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{a}");
        assert_eq!(format!("{:?}", JobId::from("x")), "\"x\"");
    }
}
