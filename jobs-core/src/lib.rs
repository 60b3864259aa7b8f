//! # jobs-core
//!
//! Background jobs on RabbitMQ. A job is a serde struct with `#[derive(Job)]` and
//! an async [`Perform::perform`]; [`Job::enqueue`] returns once the broker has the
//! job safely (durable queue, persistent message, publisher confirm).
//!
//! ```no_run
//! use jobs_core::{Job, JobContext, JobError, Perform};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Job)]
//! #[job(queue = "emails")]
//! struct EmailJob {
//!     to: String,
//! }
//!
//! impl Perform for EmailJob {
//!     async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
//!         println!("job {} (attempt {}): mail to {}", ctx.job_id(), ctx.attempt(), self.to);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! jobs_core::Client::init_global(jobs_core::Client::new(jobs_core::AmqpConfig::default()))?;
//! let id = EmailJob { to: "ann@example.com".into() }.enqueue().await?;
//! println!("enqueued {id}");
//! # Ok(())
//! # }
//! ```
//!
//! Modules, one concept each:
//! - `job`: the [`Job`] and [`Perform`] traits, [`JobContext`], [`JobId`];
//! - `error`: [`Error`] (what enqueue and setup report) and [`JobError`] (what a job reports);
//! - `codec`: the wire format (MessagePack body, AMQP properties, [`headers`]);
//! - [`backoff`]: retry delays;
//! - `client`: [`Client`], the durable enqueue client, and the process-wide default;
//! - `confirm`: publisher-confirm tracking shared by the client and the worker;
//! - [`topology`]: queue names, queue types, the delay cascade, declarations;
//! - `config`: [`AmqpConfig`], [`BrokerUrl`] and layered config loading ([`load_config`]);
//! - `dead`: [`DeadLetters`], list, retry and purge dead jobs;
//! - `testing`: [`TestClient`], the testing mode (no broker);
//! - `registry`: the link-time list of job types that workers dispatch on.

pub mod backoff;
mod client;
mod codec;
mod config;
mod confirm;
mod connection;
mod dead;
mod error;
mod job;
mod registry;
mod testing;
pub mod topology;

pub use client::{hostname, Client, EnqueueOptions};
pub use codec::{
    decode, encode, header_str, header_u64, headers, job_properties, message_attempt, message_job_id, now_secs,
    set_header, CONTENT_TYPE,
};
pub use config::{load_config, AmqpConfig, BrokerUrl, ConfigSource, TlsConfig};
pub use confirm::{Outgoing, Publisher};
pub use connection::{close_connection, connect, connect_with_retry, BROKER_ANSWER};
pub use dead::{DeadFilter, DeadJob, DeadLetters};
pub use error::{report, Error, FailureKind, JobError};
pub use job::{Job, JobContext, JobId, Perform, Respond};
pub use jobs_macros::Job;
pub use registry::{find_registration, registrations, JobFuture, Registration};
pub use testing::{EnqueuedJob, TestClient, TestJobFailed};

/// Re-exports of the broker client, for code that needs raw AMQP (tests, tools).
pub use amqprs;

#[doc(hidden)]
pub mod __private {
    //! Paths used by the code that `#[derive(Job)]` generates. Not a public API.
    pub use crate::job::JobContext;
    pub use crate::registry::Registration;
    pub use inventory;
}
