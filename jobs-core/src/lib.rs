//! # jobs-core
//!
//! Background jobs on RabbitMQ. A job is a serde struct with `#[derive(Job)]`
//! and an async [`Perform::perform`]; [`Job::enqueue`] returns once the broker
//! has the job safely (durable queue, persistent message, publisher confirm).
//! Workers (the `jobs-worker` crate) run them with prefetch 1 and manual acks,
//! retry failures with backoff, and keep what fails for good in `<queue>.dead`.
//!
//! ## Define a job
//!
//! ```
//! use jobs_core::prelude::*;
//!
//! #[derive(Serialize, Deserialize, Job)]
//! #[job(queue = "emails", max_attempts = 10, timeout = "2m")] // defaults: "default", 25, 25 min
//! struct EmailJob {
//!     to: String,
//! }
//!
//! impl Perform for EmailJob {
//!     async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
//!         // `?` on any error retries the job with backoff (attempt⁴ + 15 s + jitter);
//!         // JobError::fatal(e) sends it to `emails.dead` now; JobError::retry_after(e, d) waits d.
//!         println!("job {} attempt {}: mail {}", ctx.job_id(), ctx.attempt(), self.to);
//!         Ok(())
//!     }
//! }
//! ```
//!
//! [`Job`] lists every `#[job(...)]` option; [`JobContext`] what a running job
//! can see; [`JobError`] and [`Retry`] how a failure is retried.
//!
//! ## Enqueue
//!
//! ```no_run
//! # use jobs_core::prelude::*;
//! # #[derive(Serialize, Deserialize, Job)] struct EmailJob { to: String }
//! # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::{Duration, SystemTime};
//!
//! // Once at start: `[amqp]` from jobs.toml / JOBS__AMQP__URL (default: the local broker).
//! Client::init_global_from_config()?;
//!
//! let id = EmailJob { to: "ann@example.com".into() }.enqueue().await?;      // confirmed by the broker
//! EmailJob { to: "bob@example.com".into() }.enqueue_in(Duration::from_secs(600)).await?;
//! EmailJob { to: "cy@example.com".into() }.enqueue_at(SystemTime::now() + Duration::from_secs(3600)).await?;
//!
//! // An explicit client: options, batches.
//! let client = Client::current()?;
//! client.enqueue_with(&EmailJob { to: "di@example.com".into() }, EnqueueOptions::new().queue("emails-bulk")).await?;
//! let jobs = vec![EmailJob { to: "ed@example.com".into() }, EmailJob { to: "flo@example.com".into() }];
//! let ids = client.enqueue_many(&jobs).await?; // pipelined through a window of confirms
//! let rows = (0..1_000_000).map(|n| EmailJob { to: format!("user{n}@example.com") });
//! let count = client.enqueue_iter(rows).await?; // any size; memory of the window only
//! # Ok(()) }
//! ```
//!
//! Every way of enqueueing goes one path: the job type and its
//! [`EnqueueOptions`] decide where the message goes, and a message whose
//! connection was lost before the broker's confirm is published again on a new
//! connection (so it can run twice, never zero times). Only `Ok` means stored;
//! [`Error`] says why not.
//!
//! ## Dead jobs
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use jobs_core::{AmqpConfig, DeadFilter, DeadLetters};
//! let dead = DeadLetters::connect(&AmqpConfig::load()?).await?;
//! for job in dead.list("emails", 50).await? {
//!     println!("{} {:?} {:?}: {:?}", job.id, job.job_type, job.error_kind, job.error);
//! }
//! let retried = dead.retry("emails", &DeadFilter::of_type("EmailJob")).await?; // attempts reset
//! # Ok(()) }
//! ```
//!
//! ## Broadcasts, routed jobs and calls
//!
//! `#[job(exchange = "logs")]` broadcasts a job to every running worker
//! subscribed to it; `exchange_type = "direct" | "topic"` routes by key
//! ([`Job::enqueue_routed`]); `#[job(rpc)]` with [`Respond`] makes a job
//! answer its caller ([`Respond::call`]). See `docs/patterns.md`.
//!
//! ## Testing app code
//!
//! [`TestClient`] records jobs instead of sending them and runs them inline;
//! [`TestClient::scope`] gives each test its own:
//!
//! ```
//! # use jobs_core::prelude::*;
//! # #[derive(Serialize, Deserialize, Job)] struct EmailJob { to: String }
//! # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let test = TestClient::new();
//! test.scope(async {
//!     EmailJob { to: "ann@example.com".into() }.enqueue().await // app code, unchanged
//! }).await?;
//! assert_eq!(test.jobs::<EmailJob>()[0].to, "ann@example.com");
//! assert_eq!(test.run_all().await?, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Modules, one concept each
//! - `job`: [`Job`], [`Perform`], [`Respond`], [`JobContext`], [`JobId`];
//! - `chain`: [`Chain`], [`Step`], [`chain!`]: jobs run one after another, a value handed along;
//! - `batch`: [`Batch`], [`BatchOutcome`]: jobs enqueued as one, with callbacks; `batch_book`:
//!   its records in `jobs.batches` and the sets they fold into;
//! - `client`: [`Client`], the process-wide and scoped clients; `options`:
//!   [`EnqueueOptions`]; `session`: the client's connection and publisher;
//!   `declared`: the queues a client has declared; `call`: RPC calls;
//!   `replies`: the answers to calls;
//! - `destination`: where a job type and its options send a job (one resolution for every path);
//! - `message`: every message the framework publishes (a job, a copy, an answer), built one way;
//! - `codec`: the wire codec, its headers and properties; `reply`: an answer's status;
//! - `error`: [`Error`] (what enqueue and setup report); `job_error`: [`JobError`]
//!   and [`Retry`] (what a job reports);
//! - `failure`: [`FailureKind`], why an attempt failed (headers, logs, metrics);
//! - [`backoff`]: retry delays and reconnect pauses;
//! - `config`: [`AmqpConfig`], `[amqp]`; `broker_url`: [`BrokerUrl`]; `tls`: [`TlsConfig`];
//!   `layers`: layered loading ([`load_config`], [`ConfigSource`]);
//! - `topology`: queues, exchanges and their arguments; `names`: what a queue
//!   may be called and what each is named after; `delay`: the delay cascade;
//! - `connection`: connecting, with retries and TLS; `confirm`: publishing
//!   with publisher confirms;
//! - `dead`: [`DeadLetters`]: count, page, find, retry and purge dead jobs;
//!   `browse`: reading a queue without taking its messages (a walk);
//!   `untyped`: a MessagePack body as JSON without its type, within bounds;
//! - `testing`: [`TestClient`], the testing mode (no broker);
//! - `journal`: a stream of records every reader reads whole (the
//!   coordination primitive "a durable, replayable log");
//! - `events`: worker heartbeats on the journal `jobs.events`, for the
//!   dashboard (under [`plumbing::events`]);
//! - `management`: the broker's management HTTP API (unacked counts);
//! - `refusal`: what the broker refuses and why, as errors that say what to do;
//! - `registry`: the job types linked into the binary;
//! - [`plumbing`]: what the worker and tools build on (raw AMQP, the codec,
//!   confirms, topology, the registry); not for app code.

// Lets this crate's own unit tests use `#[derive(Job)]`, whose code names `::jobs_core`.
#[cfg(test)]
extern crate self as jobs_core;

pub mod backoff;
mod batch;
mod batch_book;
mod broker_url;
mod browse;
mod call;
mod chain;
mod client;
mod codec;
mod config;
mod confirm;
mod connection;
mod control;
mod dead;
mod declared;
mod delay;
mod destination;
mod error;
mod events;
mod failure;
mod job;
mod job_error;
mod journal;
mod layers;
mod leader;
mod management;
mod message;
mod names;
mod options;
mod ordered;
mod progress;
mod rate;
mod refusal;
mod registry;
mod replies;
mod reply;
mod run_schedule;
mod session;
mod testing;
mod tls;
mod topology;
mod unique;
mod untyped;
mod window;

pub use batch::{Batch, BatchOutcome, BATCHES, MAX_DEAD_IDS, MAX_DESCRIPTION};
pub use batch_book::CallbackKind;
pub use broker_url::{BrokerUrl, UrlError};
pub use chain::{Chain, ChainPlace, Step, MAX_CHAIN_BYTES, MAX_STEP_OUTPUT};
pub use client::Client;
pub use config::AmqpConfig;
pub use control::{Command as ControlCommand, Pause, Paused, CONTROL};
pub use dead::{DeadFilter, DeadJob, DeadLetters, DeadPage, DeadQuery, Found, Order, Progress};
pub use error::{report, Cause, Error};
pub use failure::FailureKind;
pub use job::{Job, JobContext, JobId, Perform, Respond};
pub use job_error::{JobError, Retry, RATE_LIMITED_RUNS};
pub use jobs_macros::Job;
pub use layers::{load_config, ConfigSource, Override};
pub use options::EnqueueOptions;
pub use ordered::{Ordered, DEFAULT_SHARDS, MAX_SHARDS};
pub use rate::Rate;
pub use testing::{EnqueuedJob, TestClient, TestJobFailed};
pub use tls::TlsConfig;
pub use topology::{ExchangeKind, QueueType, Route};
pub use unique::{UniqueUntil, MAX_UNIQUE_FOR};
pub use window::BatchIncomplete;

/// What app code needs in one `use`: the job traits and derive, the client,
/// the errors, and serde's derives.
///
/// ```
/// use jobs_core::prelude::*;
///
/// #[derive(Serialize, Deserialize, Job)]
/// struct Ping;
///
/// impl Perform for Ping {
///     async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
/// ```
pub mod prelude {
    pub use crate::{
        chain, Chain, Client, EnqueueOptions, Error, Job, JobContext, JobError, JobId, Perform, Respond, Step,
        TestClient,
    };
    pub use serde::{Deserialize, Serialize};
}

/// What `jobs-worker` and tools build on: raw AMQP ([`amqprs`]),
/// connections, publisher confirms, the wire codec and its headers, the
/// broker topology, and the registry of job types linked into a binary.
///
/// **Not for app code**: app code uses the crate root and [`prelude`]. What
/// is here follows the worker's needs and may change in any release; the wire
/// format itself is specified in `docs/wire-format.md`.
pub mod plumbing {
    pub use crate::chain::{header_bytes, ChainHeader, NextStep};

    /// The records of the stream `jobs.batches` and the book they fold into.
    pub mod batch_book {
        pub use crate::batch_book::*;
    }
    pub use crate::client::hostname;
    pub use crate::codec::{
        decode, encode, header_str, header_u64, headers, job_properties, message_attempt, message_id, set_header,
        CONTENT_TYPE,
    };
    pub use crate::confirm::{Outgoing, Publisher};
    pub use crate::connection::{
        close_connection, connect, connect_watched, connect_watched_with_retry, ConnectionState, BROKER_ANSWER,
    };
    pub use crate::control::{read_control, read_paused, CONTROL_KIND, PAUSE_REFRESH};
    pub use crate::destination::Destination;
    pub use crate::job::DEFAULT_MAX_ATTEMPTS;
    pub use crate::journal::{Journal, JournalReader, StartAt};
    pub use crate::leader::{Hold, Leader, LEADER_PROBE};
    pub use crate::management::{percent_encode, tag_worker, Management, ManagementError, QueueStats};
    pub use crate::message::{cut, prefix, Failure, Message, Origin};
    pub use crate::ordered::shard_of_key;
    pub use crate::progress::{ProgressCell, MAX_PROGRESS_TEXT};
    pub use crate::refusal::{ChannelWatch, Closure};
    pub use crate::registry::{queue_has_priorities, registrations, JobFuture, Linked, Registration, Undecodable};
    pub use crate::reply::ReplyStatus;
    /// Unique jobs: the keeper's queue and record, its wire, and how a key is made.
    pub mod unique {
        pub use crate::unique::*;
    }
    pub use crate::run_schedule::{declare_run_schedule_queue, run_schedule, RunSchedule, RUN_SCHEDULE_QUEUE};
    pub use amqprs;

    /// Worker heartbeats on the stream `jobs.events`, for the dashboard: the
    /// beat, its encoding, and a reader of the stream.
    pub mod events {
        pub use crate::events::*;
    }

    /// Names, arguments and declarations of the broker objects: job queues,
    /// `<queue>.dead`, the delay cascade, exchanges.
    pub mod topology {
        pub use crate::topology::*;
    }

    /// Enqueues a job already encoded as MessagePack, of the type `registration`
    /// describes, through `client`'s one publish path (the admin command's
    /// `worker enqueue`, for JSON given at the command line).
    ///
    /// # Errors
    /// As [`Client::enqueue_with`](crate::Client::enqueue_with).
    pub async fn enqueue_encoded(
        client: &crate::Client,
        registration: &'static Registration,
        body: Vec<u8>,
        options: crate::EnqueueOptions,
    ) -> Result<crate::JobId, crate::Error> {
        let route = job_route(registration);
        client.enqueue_encoded(route, Some(registration), body, options, None).await
    }

    fn job_route(registration: &'static Registration) -> crate::destination::JobRoute<'static> {
        crate::destination::JobRoute::registered(registration)
    }

    /// [`enqueue_encoded`], except that a job whose connection went before its
    /// confirm is sent again on a new connection only while `may_go_again`
    /// says so (a scheduler's tick: only while its worker still leads, or a
    /// deposed leader's late tick would be a second firing).
    ///
    /// # Errors
    /// As [`enqueue_encoded`]; [`Error::Closed`](crate::Error::Closed) when
    /// the job was not sent again.
    pub async fn enqueue_encoded_while(
        client: &crate::Client,
        registration: &'static Registration,
        body: Vec<u8>,
        options: crate::EnqueueOptions,
        may_go_again: &(dyn Fn() -> bool + Sync),
    ) -> Result<crate::JobId, crate::Error> {
        let route = job_route(registration);
        client.enqueue_encoded(route, Some(registration), body, options, Some(may_go_again)).await
    }

    /// Maps an amqprs error of operation `op` into an [`Error`](crate::Error).
    pub fn amqp_error(op: &'static str) -> impl Fn(amqprs::error::Error) -> crate::Error {
        crate::Error::amqp(op)
    }
}

#[doc(hidden)]
pub mod __private {
    //! Paths used by the code that `#[derive(Job)]` generates. Not a public API.
    pub use crate::chain::Follows;
    pub use crate::job::JobContext;
    pub use crate::registry::{Linked, Registration};
    pub use crate::topology::{ExchangeKind, Route};
    pub use inventory;
}
