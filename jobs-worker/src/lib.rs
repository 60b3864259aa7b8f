//! # jobs-worker
//!
//! The worker of jobs-core. It consumes job queues with a prefetch equal to its
//! concurrency (default 1) and manual acks, so each worker takes a new job only
//! when it has finished one, and a job a dead worker never acknowledged goes to
//! another. A job is acked only after `perform` returned `Ok`; a failed or
//! panicking job, or a message it cannot read, goes to `<queue>.dead` with the
//! reason in its headers (the dead copy is confirmed before the original is acked).
//!
//! An app's worker binary is one line; every job type linked into it is served:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     jobs_worker::main()
//! }
//! ```
//!
//! Modules: `config` ([`Settings`], [`WorkerConfig`]), `cli` ([`Cli`]),
//! `logging`, `worker` ([`Worker`]), `consumer`, `dispatch`, `settle`, `shutdown`.

mod admin;
mod cli;
mod config;
mod consumer;
mod dispatch;
mod error;
mod logging;
mod metrics;
mod settle;
mod shutdown;
mod systemd;
mod worker;

pub use cli::{Cli, Command, DeadAction, Which};
pub use config::{LogConfig, LogFormat, Settings, Subscription, WorkerConfig};
pub use error::Error;
pub use logging::init_logging;
pub use shutdown::stop_signal;
pub use worker::Worker;

use std::process::ExitCode;

use clap::Parser;

/// The whole daemon: parses the command line, loads config, sets up logging,
/// runs the worker until SIGTERM or SIGINT, and returns the exit code (0 after a
/// normal stop). A second signal stops at once.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_some() {
        return admin::main(cli);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %jobs_core::report(&err), "worker stopped with an error");
            eprintln!("error: {}", jobs_core::report(&err));
            ExitCode::FAILURE
        }
    }
}

/// [`main`] for apps that run their own tokio runtime.
///
/// # Errors
/// A config error naming the key, or a broker error that stopped the worker.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let settings = Settings::load(&cli.config_source())?;
    init_logging(&settings.log)?;
    let worker = Worker::new(settings.amqp, settings.worker)?;
    worker.run(stop_signal()).await
}
