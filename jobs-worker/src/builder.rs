//! Building a [`Worker`]: which job types it serves, which queues it may
//! consume besides theirs, and its settings.

use jobs_core::{AmqpConfig, Job};

use crate::schedule::{Schedule, ScheduleConfig};
use crate::{Error, Jobs, SchedulerConfig, Settings, Worker, WorkerConfig};

/// Builds a [`Worker`]. Job types are listed explicitly (`.job::<EmailJob>()`,
/// [`jobs!`](crate::jobs!)), or taken from the link-time registry
/// ([`WorkerBuilder::linked_jobs`]), or both.
///
/// ```no_run
/// # use jobs_core::prelude::*;
/// # #[derive(Serialize, Deserialize, Job)] #[job(queue = "emails")] struct EmailJob;
/// # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let worker = jobs_worker::Worker::builder()
///     .job::<EmailJob>()
///     .queue("emails-bulk") // jobs sent there with EnqueueOptions::queue
///     .settings(jobs_worker::Settings::load(&Default::default())?)
///     .build()?;
/// worker.run(jobs_worker::stop_signal()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct WorkerBuilder {
    jobs: Jobs,
    queues: Vec<String>,
    amqp: AmqpConfig,
    config: WorkerConfig,
    schedules_config: Vec<ScheduleConfig>,
    scheduler: SchedulerConfig,
    limits: Vec<crate::LimitConfig>,
}

impl Worker {
    /// A worker for every job type the link-time registry found in the binary
    /// ([`Worker::builder`] lists them explicitly), with the given settings.
    ///
    /// # Errors
    /// As [`WorkerBuilder::build`].
    pub fn new(amqp: AmqpConfig, config: WorkerConfig) -> Result<Self, Error> {
        Worker::builder().linked_jobs().amqp(amqp).config(config).build()
    }

    /// A builder: job types, extra queues, settings.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }
}

impl WorkerBuilder {
    /// Serves job type `J`.
    #[must_use]
    pub fn job<J: Job>(mut self) -> Self {
        self.jobs = self.jobs.with::<J>();
        self
    }

    /// Serves these job types (see [`jobs!`](crate::jobs!)).
    #[must_use]
    pub fn jobs(mut self, jobs: Jobs) -> Self {
        self.jobs = self.jobs.and(jobs);
        self
    }

    /// Serves every job type the link-time registry found in the binary.
    #[must_use]
    pub fn linked_jobs(self) -> Self {
        self.jobs(Jobs::linked())
    }

    /// Consumes `queue` too, a queue no job type names but jobs are sent to
    /// with `EnqueueOptions::queue`; `worker.queues` may then name it.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// How to reach the broker (default: the local one).
    #[must_use]
    pub fn amqp(mut self, amqp: AmqpConfig) -> Self {
        self.amqp = amqp;
        self
    }

    /// The worker's settings (default: [`WorkerConfig::default`]).
    #[must_use]
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// `[amqp]` and `[worker]` of loaded settings.
    #[must_use]
    pub fn settings(mut self, settings: Settings) -> Self {
        self.schedules_config = settings.schedules;
        self.scheduler = settings.scheduler;
        self.limits = settings.limits;
        self.amqp(settings.amqp).config(settings.worker)
    }

    /// A periodic job: `Schedule::new("nightly-report", "0 3 * * *", ReportJob { .. })`.
    /// Its job type must be one of the worker's; the config's `[[schedules]]`
    /// come with [`WorkerBuilder::settings`].
    #[must_use]
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.jobs = self.jobs.schedule(schedule);
        self
    }

    /// The worker.
    ///
    /// # Errors
    /// A config error naming the key; [`Error::UnknownQueue`] for a queue in
    /// `worker.queues` that no job type goes to; [`Error::DuplicateJobName`];
    /// [`Error::NoQueues`] when there is nothing to consume.
    pub fn build(self) -> Result<Worker, Error> {
        self.scheduler.validate()?;
        let schedules =
            crate::schedule::resolve(self.jobs.schedules(), &self.schedules_config, self.jobs.registrations())?;
        Worker::from_parts(self.jobs, self.queues, self.amqp, self.config, &self.limits)
            .map(|worker| worker.with_schedules(schedules, self.scheduler))
    }
}
