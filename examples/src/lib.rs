//! The RabbitMQ tutorials on jobs-core, as binaries:
//!
//! - tutorial 1, hello world: `send` / `receive` ([`tutorials::Hello`] on `hello`);
//! - tutorial 2, work queues: `manager` enqueues [`Task`]s on `task_queue`;
//!   `worker` runs them, one second per `.` in the message;
//! - tutorial 3, publish/subscribe: `emit_log` / `receive_logs` (fanout `logs`);
//! - tutorial 4, routing: `emit_log_direct` / `receive_logs_direct` (direct `direct_logs`);
//! - tutorial 5, topics: `emit_log_topic` / `receive_logs_topic` (topic `topic_logs`);
//! - tutorial 6, RPC: `rpc_client` / `rpc_server` ([`tutorials::Fib`] on `rpc_queue`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The README's Rust snippets, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

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
        // A run that a deploy's stop ended before it was done comes again from the start.
        let again = match ctx.interrupted_runs() {
            0 => String::new(),
            n => format!(" after {n} interrupted run{}", if n == 1 { "" } else { "s" }),
        };
        println!("{} [{}] Received '{}' (job {}){again}", clock(), ctx.worker(), self.message, ctx.job_id());
        let dots = self.message.chars().filter(|c| *c == '.').count() as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(dots)) => {}
            // `worker cancel <id>`: stop now (the job is dead-lettered as cancelled).
            _ = ctx.cancelled() => {
                println!("{} [{}] Cancelled '{}'", clock(), ctx.worker(), self.message);
                return Ok(());
            }
        }
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
pub fn amqp_config() -> Result<jobs_core::AmqpConfig, jobs_core::Error> {
    jobs_core::AmqpConfig::load()
}

/// The job types of the examples, for their workers.
pub fn jobs() -> jobs_worker::Jobs {
    use tutorials::{DirectLog, Fib, Hello, Log, TopicLog};
    jobs_worker::jobs![
        Task,
        chaos::Abort,
        chaos::Fail,
        chaos::Block,
        chaos::Crunch,
        Hello,
        Log,
        DirectLog,
        TopicLog,
        Fib,
        workflows::Resize,
        workflows::Upload,
        workflows::Notify,
        workflows::Invoice,
        workflows::Report,
        flow::ChargeCard,
        flow::SendSms,
        flow::SyncAccount,
        flow::RebuildIndex,
        ordered::ApplyEntry
    ]
}

pub mod flow;
pub mod ordered;

/// Chains and batches (`docs/workflows.md`), on the queue `workflows`:
/// binaries `workflow_chain` and `workflow_batch` enqueue them, `worker`
/// runs them.
pub mod workflows {
    use std::time::Duration;

    use jobs_core::{Job, JobContext, JobError, Perform, Step};
    use serde::{Deserialize, Serialize};

    /// A chain's first step: hands on the resized image's path.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(step, queue = "workflows")]
    pub struct Resize {
        /// The image.
        pub path: String,
    }

    impl Step for Resize {
        type Input = ();
        type Output = String;
        async fn run(self, (): (), ctx: JobContext) -> Result<String, JobError> {
            let small = format!("{}.small", self.path);
            println!("[{}] resized {} to {small} (chain step 1, job {})", ctx.worker(), self.path, ctx.job_id());
            Ok(small)
        }
    }

    /// Takes the resized image's path and hands on where it was uploaded.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(step, queue = "workflows")]
    pub struct Upload {
        /// The bucket.
        pub bucket: String,
    }

    impl Step for Upload {
        type Input = String;
        type Output = String;
        async fn run(self, path: String, ctx: JobContext) -> Result<String, JobError> {
            let url = format!("s3://{}/{path}", self.bucket);
            println!("[{}] uploaded {path} to {url} (chain step 2, job {})", ctx.worker(), ctx.job_id());
            Ok(url)
        }
    }

    /// The chain's last step: tells the user where the image is.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(step, queue = "workflows")]
    pub struct Notify {
        /// Whom to tell.
        pub user: String,
    }

    impl Step for Notify {
        type Input = String;
        type Output = ();
        async fn run(self, url: String, ctx: JobContext) -> Result<(), JobError> {
            println!(
                "[{}] told {} their image is at {url} (chain step 3, job {})",
                ctx.worker(),
                self.user,
                ctx.job_id()
            );
            Ok(())
        }
    }

    /// A batch's job: takes `millis` to send invoice `n`; `fail` makes it dead.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "workflows", max_attempts = 1)]
    pub struct Invoice {
        /// Its number.
        pub n: u64,
        /// How long it takes.
        pub millis: u64,
        /// Whether it fails (fatally: dead at once).
        pub fail: bool,
    }

    impl Perform for Invoice {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            tokio::time::sleep(Duration::from_millis(self.millis)).await;
            if self.fail {
                return Err(JobError::fatal(format!("invoice {} has no address", self.n)));
            }
            println!("invoice {} sent at {}", self.n, crate::epoch_ms());
            Ok(())
        }
    }

    /// A batch's callback: prints the batch's counts.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "workflows")]
    pub struct Report;

    impl Perform for Report {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            let outcome = ctx.batch_outcome().ok_or_else(|| JobError::fatal("Report runs as a batch's callback"))?;
            println!(
                "batch {} {}: total={} succeeded={} dead={} at={} (job {})",
                outcome.batch,
                outcome.callback.as_str(),
                outcome.total,
                outcome.succeeded,
                outcome.dead,
                crate::epoch_ms(),
                ctx.job_id()
            );
            Ok(())
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A rolling deploy: version 2 of an app adds a job type that version 1's
/// workers do not know (binaries `worker_v1` and `worker_v2`).
pub mod rollout {
    use jobs_core::{Job, JobContext, JobError, Perform};
    use serde::{Deserialize, Serialize};

    /// Known to both versions.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "rollout")]
    pub struct Resize {
        /// The image.
        pub image: String,
    }

    /// New in version 2.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "rollout")]
    pub struct Thumbnail {
        /// The image.
        pub image: String,
    }

    impl Perform for Resize {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!("[{}] ran Resize {} (job {})", ctx.worker(), self.image, ctx.job_id());
            Ok(())
        }
    }

    impl Perform for Thumbnail {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!(
                "[{}] ran Thumbnail {} (job {}, attempt {})",
                ctx.worker(),
                self.image,
                ctx.job_id(),
                ctx.attempt()
            );
            Ok(())
        }
    }
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

    /// Fails every attempt, to watch retries and dead letters: retried once
    /// after a second, then in `chaos.dead`.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "chaos", max_attempts = 2, backoff = one_second)]
    pub struct Fail {
        /// Printed, then it fails.
        pub note: String,
    }

    /// Blocks its thread for `secs` seconds inside an async `perform`, as a
    /// synchronous library or CPU-heavy code does: the worker's link to the
    /// broker runs on a thread of its own and goes on, and the worker says
    /// once, at WARN, to mark such a type `#[job(blocking)]`.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "chaos")]
    pub struct Block {
        /// Printed when it starts and ends.
        pub note: String,
        /// How long it blocks.
        pub secs: u64,
    }

    /// Blocking work where it belongs: `#[job(blocking)]` runs it on a thread
    /// of the blocking pool. Its timeout (3 s) still settles it: a run of 8 s
    /// is dead as timed out after 3 s, while its thread runs out.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "chaos", blocking, timeout = "3s", max_attempts = 1)]
    pub struct Crunch {
        /// Printed when it starts and ends.
        pub note: String,
        /// How long it blocks.
        pub secs: u64,
    }

    impl Perform for Block {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!(
                "{} [{}] blocking {} s for '{}' (job {})",
                crate::clock(),
                ctx.worker(),
                self.secs,
                self.note,
                ctx.job_id()
            );
            std::thread::sleep(std::time::Duration::from_secs(self.secs));
            println!("{} [{}] unblocked '{}'", crate::clock(), ctx.worker(), self.note);
            Ok(())
        }
    }

    impl Perform for Crunch {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!(
                "{} [{}] crunching {} s for '{}' (job {})",
                crate::clock(),
                ctx.worker(),
                self.secs,
                self.note,
                ctx.job_id()
            );
            std::thread::sleep(std::time::Duration::from_secs(self.secs));
            println!("{} [{}] crunched '{}'", crate::clock(), ctx.worker(), self.note);
            Ok(())
        }
    }

    fn one_second(_attempt: u32) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    impl Perform for Fail {
        async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
            println!("{} [{}] failing '{}' (attempt {})", crate::clock(), ctx.worker(), self.note, ctx.attempt());
            Err(JobError::msg(format!("{} fails on purpose", self.note)))
        }
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

/// Tutorials 1, 3, 4 and 5: hello world, publish/subscribe, routing, topics.
pub mod tutorials {
    use jobs_core::{Job, JobContext, JobError, Perform};
    use serde::{Deserialize, Serialize};

    /// Tutorial 1: the smallest job, on queue `hello`.
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "hello")]
    pub struct Hello {
        /// What to print.
        pub message: String,
    }

    impl Perform for Hello {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            println!(" [x] Received {}", self.message);
            Ok(())
        }
    }

    /// Tutorial 3: a log line broadcast to every running `receive_logs` (fanout `logs`).
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(exchange = "logs")]
    pub struct Log {
        /// The line.
        pub message: String,
    }

    impl Perform for Log {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            println!(" [x] {}", self.message);
            Ok(())
        }
    }

    /// Tutorial 4: a log line routed by severity (direct `direct_logs`).
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(exchange = "direct_logs", exchange_type = "direct")]
    pub struct DirectLog {
        /// The severity, also the routing key.
        pub severity: String,
        /// The line.
        pub message: String,
    }

    impl Perform for DirectLog {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            println!(" [x] {}:{}", self.severity, self.message);
            Ok(())
        }
    }

    /// Tutorial 5: a log line routed by `<facility>.<severity>` (topic `topic_logs`).
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(exchange = "topic_logs", exchange_type = "topic")]
    pub struct TopicLog {
        /// The routing key, such as `kern.critical`.
        pub key: String,
        /// The line.
        pub message: String,
    }

    /// Tutorial 6: computes a Fibonacci number and answers the caller (queue `rpc_queue`).
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(queue = "rpc_queue", rpc, timeout = "60s")]
    pub struct Fib {
        /// Which Fibonacci number.
        pub n: u32,
    }

    impl jobs_core::Respond for Fib {
        type Output = u64;

        async fn respond(self, _ctx: JobContext) -> Result<u64, JobError> {
            if self.n > 90 {
                return Err(JobError::fatal(format!("fib({}) does not fit in 64 bits", self.n)));
            }
            println!(" [.] fib({})", self.n);
            Ok(fib(self.n))
        }
    }

    fn fib(n: u32) -> u64 {
        let (mut a, mut b) = (0u64, 1u64);
        for _ in 0..n {
            (a, b) = (b, a + b);
        }
        a
    }

    impl Perform for TopicLog {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            println!(" [x] {}:{}", self.key, self.message);
            Ok(())
        }
    }
}

/// Sends one job with the layered config's broker settings, printing
/// ` [x] Sent ...` as the tutorials do, or the error (exit code 1).
pub async fn send<J: Job>(job: &J, options: jobs_core::EnqueueOptions, shown: &str) -> std::process::ExitCode {
    let result = async {
        let client = jobs_core::Client::new(amqp_config()?);
        let id = client.enqueue_with(job, options).await;
        client.close().await;
        Ok::<_, Box<dyn std::error::Error>>(id?)
    };
    match result.await {
        Ok(_) => {
            println!(" [x] Sent {shown}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a worker subscribed to the exchange job type `J` is published to, bound
/// with `keys` (none for fanout), as [`receive`] does.
pub fn receive_from<J: jobs_core::Job>(keys: Vec<String>) -> std::process::ExitCode {
    match jobs_worker::Subscription::of::<J>() {
        Ok(subscription) => receive(Vec::new(), vec![subscription.with_keys(keys)]),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a worker on `queues` and `subscriptions` (config, environment and
/// `RUST_LOG` apply) until SIGTERM or Ctrl-C.
pub fn receive(queues: Vec<String>, subscriptions: Vec<jobs_worker::Subscription>) -> std::process::ExitCode {
    let run = async {
        let mut settings = jobs_worker::Settings::load(&jobs_core::ConfigSource::default())?;
        settings.log.filter = "warn".into();
        jobs_worker::init_logging(&settings.log)?;
        // The queues named here are the binary's own choice (`--queue`): allowed.
        let builder = queues.iter().fold(jobs_worker::Worker::builder().jobs(jobs()), |b, q| b.queue(q.clone()));
        settings.worker.queues = queues;
        settings.worker.subscriptions = subscriptions;
        let worker = builder.settings(settings).build()?;
        println!(" [*] Waiting for messages. To exit press CTRL+C");
        worker.run(jobs_worker::stop_signal()).await.map(|()| std::process::ExitCode::SUCCESS)
    };
    jobs_runtime::run(jobs_runtime::Threads::Multi, "the worker", run)
}
