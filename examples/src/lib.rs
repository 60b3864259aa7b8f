//! The RabbitMQ tutorials on jobs-core, as binaries:
//!
//! - tutorial 2, work queues: `manager` enqueues [`Task`]s on `task_queue`;
//!   `worker` runs them, one second per `.` in the message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

/// A task of the work-queues tutorial: takes one second per `.` in `message`.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "task_queue")]
pub struct Task {
    /// The message; each `.` is a second of work.
    pub message: String,
}

impl Perform for Task {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!("{} [{}] Received '{}' (job {})", clock(), ctx.worker(), self.message, ctx.job_id());
        let dots = self.message.chars().filter(|c| *c == '.').count() as u64;
        tokio::time::sleep(Duration::from_secs(dots)).await;
        println!("{} [{}] Done '{}'", clock(), ctx.worker(), self.message);
        Ok(())
    }
}

/// The time of day (UTC) as `HH:MM:SS.mmm`, for the tutorial's output.
pub fn clock() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, now.subsec_millis())
}

/// The broker settings of the layered config (`jobs.toml`, `JOBS__AMQP__URL`...).
///
/// # Errors
/// A config error naming the key.
pub fn amqp_config() -> Result<jobs_core::AmqpConfig, jobs_worker::Error> {
    Ok(jobs_worker::Settings::load(&jobs_core::ConfigSource::default())?.amqp)
}

/// The job types of the examples, so binaries that only link the crate keep them.
pub fn job_names() -> [&'static str; 2] {
    [Task::NAME, chaos::Abort::NAME]
}

/// Jobs that misbehave on purpose, to watch the framework's guards at work.
pub mod chaos {
    use jobs_core::{Job, JobContext, JobError, Perform};
    use serde::{Deserialize, Serialize};

    /// Kills the worker process that runs it (`abort`), as an out-of-memory kill
    /// or a segfault would. After `amqp.max_crashes` returns it lands in `chaos.dead`.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "chaos")]
    pub struct Abort {
        /// Printed before the process dies.
        pub note: String,
    }

    impl Perform for Abort {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!(
                "{} [{}] aborting the process for '{}' (job {})",
                crate::clock(),
                ctx.worker(),
                self.note,
                ctx.job_id()
            );
            std::process::abort()
        }
    }
}
