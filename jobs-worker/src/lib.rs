//! # jobs-worker
//!
//! The worker of jobs-core. It consumes job queues with a prefetch equal to its
//! concurrency (default 1) and manual acks, so each worker takes a new job only
//! when it has finished one, and a job a dead worker never acknowledged goes to
//! another. A job is acked only after `perform` returned `Ok`; a failed or
//! panicking job is retried with backoff and then goes to `<queue>.dead` with
//! the reason in its headers (each copy is confirmed before the original is acked).
//!
//! An app's worker binary is one line that names its job types:
//!
//! ```no_run
//! # mod my_app { pub mod jobs {
//! # use jobs_core::prelude::*;
//! # #[derive(Serialize, Deserialize, Job)] pub struct EmailJob;
//! # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
//! # #[derive(Serialize, Deserialize, Job)] pub struct ReportJob;
//! # impl Perform for ReportJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
//! # } }
//! use my_app::jobs::{EmailJob, ReportJob};
//!
//! fn main() -> std::process::ExitCode {
//!     jobs_worker::main_with(jobs_worker::jobs![EmailJob, ReportJob])
//! }
//! ```
//!
//! Modules: `config` ([`Settings`], [`WorkerConfig`]), `cli` ([`Cli`]),
//! `jobs` ([`Jobs`], [`jobs!`]), `builder` ([`WorkerBuilder`]),
//! `worker` ([`Worker`]), `session` (one connection's setup and consuming), `consumer`, `delivery`, `dispatch`, `policy` (what
//! happens to a delivery), `settle` (carrying it out), `returns` (runs the
//! broker's `consumer_timeout` ended, told to every worker), `link` (the
//! broker link's thread of its own), `placement` (where a job's `perform`
//! runs: the link's thread, the jobs' runtime, the blocking pool), `systemd`,
//! `metrics`, `admin`.

mod activity;
mod admin;
mod batch_outcomes;
mod batches;
mod batches_admin;
mod builder;
mod cancel_admin;
mod cancels;
mod cli;
mod config;
mod consumer;
pub mod cron;
mod definitions;
mod delivery;
mod dispatch;
mod error;
mod heartbeat;
mod jobs;
mod leadership;
mod limits;
mod link;
mod metrics;
mod pauses;
mod placement;
mod policy;
mod rates;
mod returns;
mod schedule;
mod scheduler;
mod schedules_admin;
mod session;
mod settle;
mod shard;
mod systemd;
mod ticks;
mod uniques;
mod weights;
mod worker;

pub use builder::WorkerBuilder;
pub use cli::{Cli, Command, DeadAction, QueueAction, ScheduleAction, Which};
pub use config::{SchedulerConfig, Settings, Subscription, WorkerConfig};
pub use error::Error;
pub use jobs::Jobs;
pub use jobs_runtime::{init_logging, stop_signal, LogConfig, LogFormat};
pub use limits::LimitConfig;
pub use schedule::{CatchUp, Schedule, ScheduleConfig};
pub use worker::Worker;

use std::process::ExitCode;

use clap::Parser;
use jobs_runtime::Threads;

/// The whole daemon for the given job types: parses the command line, loads
/// config, sets up logging, runs the worker until SIGTERM or SIGINT, and
/// returns the exit code (0 after a normal stop). A second signal stops at
/// once. The admin commands (`queues`, `enqueue`, `dead`, `schedules`) work on these job types.
pub fn main_with(jobs: Jobs) -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_some() {
        return jobs_runtime::run(Threads::Current, "the command", admin::run(cli, &jobs));
    }
    jobs_runtime::run(Threads::Multi, "the worker", async { run_with(cli, jobs).await.map(|()| ExitCode::SUCCESS) })
}

/// [`main_with`] for every job type the link-time registry found in the
/// binary. A convenience; [`main_with`] and [`jobs!`] name them for sure.
pub fn main() -> ExitCode {
    main_with(Jobs::linked())
}

/// [`main_with`] for apps that run their own tokio runtime.
///
/// # Errors
/// A config error naming the key, or a broker error that stopped the worker.
pub async fn run_with(cli: Cli, jobs: Jobs) -> Result<(), Error> {
    let settings = Settings::load(&cli.config_source())?;
    init_logging(&settings.log)?;
    let worker = Worker::builder().jobs(jobs).settings(settings).build()?;
    worker.run(stop_signal()).await
}
