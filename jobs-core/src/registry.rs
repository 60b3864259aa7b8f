//! The job types linked into this binary, collected at link time by
//! `#[derive(Job)]`, so that a worker needs no hand-kept list.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{codec, JobContext, JobError, Perform, Respond, Step};

/// A running job's future; its output is the encoded reply of an RPC job
/// (`#[job(rpc)]`) or what a chain's step hands on (`#[job(step)]`), `None`
/// for other jobs.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, JobError>> + Send>>;

type Prepare = fn(&[u8], JobContext) -> Result<JobFuture, Undecodable>;

/// Why a delivery could not be made into a running job: what a dead copy's reason says.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    /// The body does not decode as the job type.
    #[error("body does not decode as `{job}`: {source}")]
    Body {
        /// The job type.
        job: &'static str,
        /// The decoder's words.
        source: rmp_serde::decode::Error,
    },
    /// A chain's step: what the step before handed on does not decode as its input.
    #[error("the input the chain's step before handed on does not decode as `{job}`'s input `{input}`: {source}")]
    Input {
        /// The job type.
        job: &'static str,
        /// Its input type.
        input: &'static str,
        /// The decoder's words.
        source: rmp_serde::decode::Error,
    },
}

/// One job type: its name, its queue, and how to decode and run it.
pub struct Registration {
    name: &'static str,
    queue: &'static str,
    route: crate::topology::Route,
    max_attempts: u32,
    timeout: Duration,
    blocking: bool,
    max_running: Option<u16>,
    rate: Option<crate::Rate>,
    burst: Option<u32>,
    rate_key: Option<&'static str>,
    fields: &'static [&'static str],
    unique_for: Option<Duration>,
    unique_key: Option<&'static str>,
    unique_until: crate::UniqueUntil,
    expires_in: Option<Duration>,
    priorities: bool,
    priority: Option<u8>,
    ordered: Option<crate::Ordered>,
    backoff: fn(u32) -> Duration,
    prepare: Prepare,
    check: fn(&[u8]) -> Result<(), rmp_serde::decode::Error>,
}

impl Registration {
    /// The registration of an RPC job type (`#[job(rpc)]`).
    pub const fn new_rpc<J: Respond>() -> Self {
        Self::of::<J>(prepare_rpc::<J>)
    }

    /// The registration of a chain's step type (`#[job(step)]`).
    pub const fn new_step<J: Step>() -> Self {
        Self::of::<J>(prepare_step::<J>)
    }

    /// The registration of `J`; `#[derive(Job)]` submits one per type.
    pub const fn new<J: Perform>() -> Self {
        Self::of::<J>(prepare::<J>)
    }

    const fn of<J: crate::Job>(prepare: Prepare) -> Self {
        Registration {
            name: J::NAME,
            queue: J::QUEUE,
            route: J::ROUTE,
            max_attempts: J::MAX_ATTEMPTS,
            timeout: J::TIMEOUT,
            blocking: J::BLOCKING,
            max_running: J::MAX_RUNNING,
            rate: J::RATE,
            burst: J::BURST,
            rate_key: J::RATE_KEY,
            fields: J::FIELDS,
            unique_for: J::UNIQUE_FOR,
            unique_key: J::UNIQUE_KEY,
            unique_until: J::UNIQUE_UNTIL,
            expires_in: J::EXPIRES_IN,
            priorities: J::PRIORITIES,
            priority: J::PRIORITY,
            ordered: crate::Ordered::of::<J>(),
            backoff: J::backoff,
            prepare,
            check: check::<J>,
        }
    }

    /// The job type's name (`type` property).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The job type's default queue.
    pub fn queue(&self) -> &'static str {
        self.queue
    }

    /// Checks that `body` decodes as this job type, without running it.
    ///
    /// # Errors
    /// The decode error.
    pub fn check(&self, body: &[u8]) -> Result<(), rmp_serde::decode::Error> {
        (self.check)(body)
    }

    /// Where the job type's jobs go.
    pub fn route(&self) -> crate::topology::Route {
        self.route
    }

    /// Attempts in all before the job is dead (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// How long one attempt may run.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// At most this many run at once across the vhost (`#[job(max_running = N)]`).
    pub fn max_running(&self) -> Option<u16> {
        self.max_running
    }

    /// Its jobs start at no more than this rate across the vhost (`#[job(rate = "100/s")]`).
    pub fn rate(&self) -> Option<crate::Rate> {
        self.rate
    }

    /// How many may start at once after a quiet spell (`#[job(burst = N)]`; `None`: the rate's count).
    pub fn burst(&self) -> Option<u32> {
        self.burst
    }

    /// The field each of whose values has a rate of its own (`#[job(rate_key = "field")]`).
    pub fn rate_key(&self) -> Option<&'static str> {
        self.rate_key
    }

    /// How long a job of the type holds its unique key at most (`#[job(unique_for = "10m")]`).
    pub fn unique_for(&self) -> Option<Duration> {
        self.unique_for
    }

    /// The field that is the unique key (`#[job(unique_key = "field")]`).
    pub fn unique_key(&self) -> Option<&'static str> {
        self.unique_key
    }

    /// When the unique key is given back (`#[job(unique_until = "window")]`).
    pub fn unique_until(&self) -> crate::UniqueUntil {
        self.unique_until
    }

    /// How long after its enqueue a job of the type may still start (`#[job(expires_in = "1h")]`).
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// Whether the type's queue takes priorities (`#[job(priorities)]`).
    pub fn priorities(&self) -> bool {
        self.priorities
    }

    /// The type's default priority (`#[job(priority = 7)]`).
    pub fn priority(&self) -> Option<u8> {
        self.priority
    }

    /// What an ordered type says (`#[job(ordered_by = "..", shards = N)]`).
    pub fn ordered(&self) -> Option<crate::Ordered> {
        self.ordered
    }

    /// The names of the job's fields in its body; empty when not known (serde renames).
    pub fn fields(&self) -> &'static [&'static str] {
        self.fields
    }

    /// Whether `perform` blocks its thread (`#[job(blocking)]`).
    pub fn blocking(&self) -> bool {
        self.blocking
    }

    /// The delay before the retry after failed attempt `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        (self.backoff)(attempt)
    }

    /// The job type's backoff function (`#[job(backoff = ...)]`).
    pub fn backoff_fn(&self) -> fn(u32) -> Duration {
        self.backoff
    }

    /// Decodes `body` (and a step's input, from `ctx`) and returns the future that performs the job.
    ///
    /// # Errors
    /// When the body does not decode into the job type, or a step's input into its input type.
    pub fn prepare(&self, body: &[u8], ctx: JobContext) -> Result<JobFuture, Undecodable> {
        (self.prepare)(body, ctx)
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("name", &self.name).field("queue", &self.queue).finish()
    }
}

fn check<J: crate::Job>(body: &[u8]) -> Result<(), rmp_serde::decode::Error> {
    codec::decode::<J>(body).map(drop)
}

fn body<J: crate::Job>(body: &[u8]) -> Result<J, Undecodable> {
    codec::decode(body).map_err(|source| Undecodable::Body { job: J::NAME, source })
}

fn prepare<J: Perform>(bytes: &[u8], ctx: JobContext) -> Result<JobFuture, Undecodable> {
    let job: J = body(bytes)?;
    let future = job.perform(ctx);
    Ok(Box::pin(async move { future.await.map(|()| None) }))
}

fn prepare_step<J: Step>(bytes: &[u8], ctx: JobContext) -> Result<JobFuture, Undecodable> {
    let job: J = body(bytes)?;
    let input = crate::chain::decode_input::<J::Input>(ctx.chain_input()).map_err(|source| Undecodable::Input {
        job: J::NAME,
        input: std::any::type_name::<J::Input>(),
        source,
    })?;
    let future = job.run(input, ctx);
    Ok(Box::pin(async move {
        let output = future.await?;
        rmp_serde::to_vec_named(&output).map(Some).map_err(JobError::fatal)
    }))
}

fn prepare_rpc<J: Respond>(bytes: &[u8], ctx: JobContext) -> Result<JobFuture, Undecodable> {
    let job: J = body(bytes)?;
    let future = job.respond(ctx);
    Ok(Box::pin(async move {
        let output = future.await?;
        rmp_serde::to_vec_named(&output).map(Some).map_err(JobError::fatal)
    }))
}

/// An entry of the link-time registry: `#[derive(Job)]` submits one per job
/// type, pointing at the type's [`Job::__registration`](crate::Job).
#[derive(Debug)]
pub struct Linked(pub fn() -> Option<&'static Registration>);

inventory::collect!(Linked);

/// Every job type linked into this binary, found at link time. A convenience:
/// a linker that drops a job crate's registrations (nothing else of it used)
/// drops its types from here; workers that list their job types explicitly
/// (`Worker::builder().job::<J>()`) do not depend on it.
pub fn registrations() -> impl Iterator<Item = &'static Registration> {
    linked()
}

/// Whether `queue` takes priorities: a job type linked into this binary
/// whose queue it is says `#[job(priorities)]` (types sharing a queue agree:
/// a worker refuses them at start otherwise).
pub fn queue_has_priorities(queue: &str) -> bool {
    linked().any(|r| r.priorities && r.queue == queue && r.route == crate::topology::Route::Queue)
}

fn linked() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Linked>.into_iter().filter_map(|linked| (linked.0)())
}

/// The job type named `name`, if linked into this binary.
pub(crate) fn find_registration(name: &str) -> Option<&'static Registration> {
    registrations().find(|r| r.name == name)
}
