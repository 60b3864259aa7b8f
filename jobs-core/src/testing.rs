//! A testing mode for app code: a [`Client`] that talks to no broker. Enqueued
//! jobs are recorded (assert on type, fields, queue, delay) and can be run
//! inline, one by one or until none is left, including the jobs they enqueue in
//! turn. App code takes a [`Client`] (or uses the global one) and works with
//! the real client and the test one alike.
//!
//! It answers as the broker would, with one difference: it knows no
//! bindings, so a job routed through an exchange with a key no queue is
//! bound for (which the broker returns, [`Error::Unroutable`]) is recorded
//! and `Ok`. Assert on [`EnqueuedJob::routing_key`] for what should reach whom.
//!
//! ```
//! use jobs_core::{Client, Job, JobContext, JobError, Perform, TestClient};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Job)]
//! #[job(queue = "signups")]
//! struct Welcome { user: String }
//!
//! #[derive(Serialize, Deserialize, Job)]
//! #[job(queue = "emails")]
//! struct SendEmail { to: String, subject: String }
//!
//! impl Perform for Welcome {
//!     async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
//!         let mail = SendEmail { to: self.user, subject: "Welcome!".into() };
//!         mail.enqueue().await?; // the process-wide client: the test one here
//!         Ok(())
//!     }
//! }
//!
//! impl Perform for SendEmail {
//!     async fn perform(self, _ctx: JobContext) -> Result<(), JobError> { Ok(()) }
//! }
//!
//! // The app code under test:
//! async fn sign_up(client: &Client, user: &str) -> Result<(), jobs_core::Error> {
//!     client.enqueue(&Welcome { user: user.into() }).await?;
//!     Ok(())
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let test = TestClient::new();
//! // App code that takes a client gets the test one; `job.enqueue()` inside
//! // the scope records into it too.
//! test.scope(async { sign_up(&Client::current()?, "ann@example.com").await }).await?;
//!
//! let queued = test.enqueued();
//! assert_eq!((queued[0].name.as_str(), queued[0].queue.as_str()), ("Welcome", "signups"));
//! assert_eq!(test.jobs::<Welcome>()[0].user, "ann@example.com");
//!
//! assert_eq!(test.run_all().await?, 2); // Welcome, then the SendEmail it enqueued
//! assert!(test.enqueued().is_empty());
//! assert_eq!(test.performed().iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["Welcome", "SendEmail"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::destination::{Declare, Destination};
use crate::registry::{find_registration, Registration};
use crate::{Client, Error, Job, JobContext, JobError, JobId};

/// A job the test client recorded.
#[derive(Debug, Clone)]
pub struct EnqueuedJob {
    /// Its id.
    pub id: JobId,
    /// The job type's name.
    pub name: String,
    /// The queue (or, for exchange-routed jobs, the exchange).
    pub queue: String,
    /// The routing key of a job routed through an exchange (empty for fanout);
    /// `None` for a job sent to a queue.
    pub routing_key: Option<String>,
    /// The delay asked for (`enqueue_in` / `enqueue_at`), in whole seconds
    /// rounded up as the broker holds it; `None` for no delay.
    pub delay: Option<Duration>,
    /// The encoded job, exactly as it would go on the wire.
    pub body: Vec<u8>,
    /// When it was enqueued (what `ctx.enqueued_at()` says when it runs).
    pub enqueued_at: std::time::SystemTime,
    /// How to run it: known from the type at enqueue, so the testing mode
    /// needs no link-time registry.
    registration: Option<&'static Registration>,
    /// A chain's step: its `x-chain` header, and what the step before handed on.
    chain: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// A batch's job: its batch.
    batch: Option<String>,
}

impl EnqueuedJob {
    /// The record of job `J` sent to `destination`, as the real client would send it.
    pub(crate) fn new<J: Job>(id: JobId, destination: &Destination, body: Vec<u8>) -> Self {
        Self::of(J::NAME, J::__registration(), id, destination, body)
    }

    /// The record of a job of type `name` sent to `destination`.
    pub(crate) fn of(
        name: &str,
        registration: Option<&'static Registration>,
        id: JobId,
        destination: &Destination,
        body: Vec<u8>,
    ) -> Self {
        let routed = matches!(destination.declare, Declare::Exchange { .. });
        EnqueuedJob {
            id,
            name: name.to_owned(),
            queue: destination.target().to_owned(),
            routing_key: routed.then(|| destination.routing_key.clone()),
            delay: destination.delay,
            body,
            enqueued_at: std::time::SystemTime::now(),
            registration,
            chain: None,
            batch: None,
        }
    }

    /// The record as a job of batch `batch`.
    pub(crate) fn in_batch(mut self, batch: &str) -> Self {
        self.batch = Some(batch.to_owned());
        self
    }

    /// The batch the job belongs to, for a batch's job. (The testing mode
    /// records a batch's jobs; it runs no callbacks.)
    pub fn batch(&self) -> Option<&str> {
        self.batch.as_deref()
    }

    /// The record as a chain's step, with its `x-chain` header and input.
    pub(crate) fn in_chain(mut self, header: Option<Vec<u8>>, input: Option<Vec<u8>>) -> Self {
        self.chain = header.map(|header| (header, input));
        self
    }

    /// Where the job stands in its chain, when it is a chain's step.
    pub fn chain(&self) -> Option<crate::ChainPlace> {
        let (header, _) = self.chain.as_ref()?;
        crate::plumbing::ChainHeader::decode(header).ok().map(|h| h.place())
    }

    /// The job, decoded as `J`; `None` when it is another type.
    pub fn decode<J: Job>(&self) -> Option<J> {
        if self.name != J::NAME {
            return None;
        }
        crate::codec::decode(&self.body).ok()
    }
}

/// A job that failed when run by the test client.
#[derive(Debug, thiserror::Error)]
#[error("job {name} ({id}) failed: {error}")]
pub struct TestJobFailed {
    /// The job's id.
    pub id: JobId,
    /// The job type.
    pub name: String,
    /// The error, as text.
    pub error: String,
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    queued: Mutex<VecDeque<EnqueuedJob>>,
    performed: Mutex<Vec<EnqueuedJob>>,
}

impl Recorder {
    fn queued(&self) -> MutexGuard<'_, VecDeque<EnqueuedJob>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, job: EnqueuedJob) {
        self.queued().push_back(job);
    }

    /// Runs one job inline, as a worker would, with `client` as the client of
    /// the jobs it enqueues; returns an RPC job's encoded answer.
    pub(crate) async fn run(&self, client: &Client, job: &EnqueuedJob) -> Result<Option<Vec<u8>>, TestJobFailed> {
        let failed = |error: String| TestJobFailed { id: job.id.clone(), name: job.name.clone(), error };
        let registration = job
            .registration
            .or_else(|| find_registration(&job.name))
            .ok_or_else(|| failed("the job type has no #[derive(Job)] registration".into()))?;
        let mut ctx = JobContext::new(job.id.clone(), registration.name(), job.queue.as_str().into(), 1, "test".into())
            .with_enqueued_at(Some(job.enqueued_at))
            .with_batch(job.batch.clone(), None);
        let chain = match &job.chain {
            Some((header, input)) => {
                let header = crate::plumbing::ChainHeader::decode(header).map_err(failed)?;
                ctx = ctx.with_chain(header.place(), input.clone());
                Some(header)
            }
            None => None,
        };
        let future = registration.prepare(&job.body, ctx).map_err(|e| failed(e.to_string()))?;
        let answer = client.clone().scope(future).await.map_err(|e: JobError| failed(e.to_string()))?;
        self.performed.lock().unwrap_or_else(|e| e.into_inner()).push(job.clone());
        // As a worker would: the chain's next step, with what this one handed on.
        if let Some(next) = chain.map(|c| c.next(answer.clone())).transpose().map_err(failed)?.flatten() {
            self.record(next.recorded());
        }
        Ok(answer)
    }
}

/// The testing mode: a recorder behind a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct TestClient {
    recorder: Arc<Recorder>,
}

impl TestClient {
    /// A new, empty test client.
    pub fn new() -> Self {
        TestClient::default()
    }

    /// The [`Client`] to hand to app code (or to [`Client::init_global`]).
    pub fn client(&self) -> Client {
        Client::for_testing(self.recorder.clone())
    }

    /// The jobs waiting, oldest first.
    pub fn enqueued(&self) -> Vec<EnqueuedJob> {
        self.recorder.queued().iter().cloned().collect()
    }

    /// The waiting jobs of type `J`, decoded.
    pub fn jobs<J: Job>(&self) -> Vec<J> {
        self.recorder.queued().iter().filter_map(EnqueuedJob::decode).collect()
    }

    /// The jobs run so far, in order.
    pub fn performed(&self) -> Vec<EnqueuedJob> {
        self.recorder.performed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `future` with this test client as the one [`Job::enqueue`] and the
    /// other shortcuts use in this task ([`Client::scope`]): tests running in
    /// parallel in one binary each see only their own jobs.
    pub async fn scope<F: std::future::Future>(&self, future: F) -> F::Output {
        self.client().scope(future).await
    }

    /// Forgets the waiting jobs.
    pub fn clear(&self) {
        self.recorder.queued().clear();
    }

    /// Runs the oldest waiting job (delays are not waited for). `Ok(false)` when none waits.
    ///
    /// # Errors
    /// The job's failure; the job is not put back.
    pub async fn run_next(&self) -> Result<bool, TestJobFailed> {
        let next = self.recorder.queued().pop_front();
        match next {
            Some(job) => self.recorder.run(&self.client(), &job).await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Runs jobs, oldest first, until none waits, including the jobs they
    /// enqueue. Returns how many ran.
    ///
    /// # Errors
    /// The first failure; the jobs after it still wait.
    pub async fn run_all(&self) -> Result<usize, TestJobFailed> {
        let mut ran = 0;
        while self.run_next().await? {
            ran += 1;
        }
        Ok(ran)
    }
}

impl From<TestJobFailed> for Error {
    fn from(failed: TestJobFailed) -> Self {
        Error::CallFailed { id: failed.id, kind: crate::FailureKind::Failed, error: failed.error }
    }
}

/// Decodes an inline call's answer.
pub(crate) fn answer<T: DeserializeOwned>(id: JobId, bytes: Option<Vec<u8>>) -> Result<T, Error> {
    let bytes = bytes.unwrap_or_default();
    crate::codec::decode(&bytes).map_err(|source| Error::BadReply { id, source: crate::error::Cause::new(source) })
}
