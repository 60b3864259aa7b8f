//! The worker's settings: `[amqp]`, `[worker]` and `[log]` of `jobs.toml`.

use std::time::Duration;

use jobs_core::{load_config, AmqpConfig, ConfigSource, Job};
use jobs_core::{ExchangeKind, Route};
use jobs_runtime::LogConfig;
use serde::Deserialize;

use crate::Error;

/// Everything a worker daemon reads from config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[amqp]`: how to reach the broker.
    pub amqp: AmqpConfig,
    /// `[worker]`: what to consume and how.
    pub worker: WorkerConfig,
    /// `[log]`: log format and filter.
    pub log: LogConfig,
    /// `[[schedules]]`: periodic jobs an operator adds without a build.
    pub schedules: Vec<crate::ScheduleConfig>,
    /// `[scheduler]`: how the leader fires them.
    pub scheduler: SchedulerConfig,
    /// `[[limits]]`: global limits of job types, beside (and over) their
    /// `#[job(max_running = ..)]`.
    pub limits: Vec<crate::LimitConfig>,
}

/// `[scheduler]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The most missed ticks one schedule with `catch_up = "all"` fires when
    /// a new leader catches up (`scheduler.max_catch_up`, default 100).
    pub max_catch_up: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig { max_catch_up: 100 }
    }
}

impl SchedulerConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] naming the bad key.
    pub fn validate(&self) -> Result<(), jobs_core::Error> {
        if self.max_catch_up == 0 {
            let message = "must be at least 1 (`catch_up = \"skip\"` fires none)".into();
            return Err(jobs_core::Error::Config { key: "scheduler.max_catch_up".into(), message });
        }
        Ok(())
    }
}

impl Settings {
    /// Loads and validates the layered config.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] naming the first bad key.
    pub fn load(source: &ConfigSource) -> Result<Self, Error> {
        let mut settings: Settings = load_config(source)?;
        // A table given as a flag replaces the file's (the config crate would merge them).
        for (key, value) in &source.overrides {
            if let ("worker.queue_weights", jobs_core::Override::Table(table)) = (key.as_str(), value) {
                settings.worker.queue_weights = table
                    .iter()
                    .map(|(queue, weight)| (queue.clone(), u16::try_from(*weight).unwrap_or(u16::MAX)))
                    .collect();
            }
        }
        settings.amqp.validate()?;
        settings.worker.validate()?;
        settings.scheduler.validate()?;
        Ok(settings)
    }
}

/// `[worker]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Queues to consume (`worker.queues`). When both this and `subscriptions`
    /// are empty: every queue of the linked job types, and a subscription to
    /// every fanout exchange of theirs.
    pub queues: Vec<String>,
    /// Exchanges to take jobs from (`[[worker.subscriptions]]`): each gets a
    /// queue of this worker's own (exclusive, deleted when it stops), bound with `keys`.
    pub subscriptions: Vec<Subscription>,
    /// Queues that none of the worker's job types names but that jobs are
    /// sent to with `EnqueueOptions::queue` (`worker.extra_queues`, e.g.
    /// `emails-bulk`). Consumed along with the job types' queues, and
    /// `worker.queues` may name them; a queue in `worker.queues` that is in
    /// neither stops the worker at start (a typo must not make an idle worker).
    pub extra_queues: Vec<String>,
    /// Jobs run at once per queue; also the prefetch (`worker.concurrency`, default 1).
    pub concurrency: u16,
    /// Queues that share `concurrency` by weight instead of each running
    /// `concurrency` jobs (`[worker.queue_weights]`, `critical = 6`, or
    /// `--queue-weights critical=6,default=3,low=1`): while all have work,
    /// their jobs start in proportion to the weights; an idle queue's share
    /// is lent to the others until it has work again. Weighted queues are
    /// consumed along with `worker.queues` (docs/job-control.md).
    pub queue_weights: std::collections::BTreeMap<String, u16>,
    /// How long a stop waits for running jobs (`worker.grace_period`, default `30s`).
    /// Jobs still running then are handed back to their queues (not crashes).
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// This worker's id in logs and dead-letter headers (`worker.id`, default `host:pid:n`).
    pub id: Option<String>,
    /// Serve Prometheus metrics and `/healthz` here (`worker.metrics_addr`, e.g.
    /// `127.0.0.1:9090`; default off).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Larger message bodies go to `<queue>.dead` unread (`worker.max_message_size`,
    /// bytes, default 16 MiB).
    pub max_message_size: usize,
    /// How often the worker sends a heartbeat to the stream `jobs.events`, for
    /// the dashboard (`worker.heartbeat_interval`, default `5s`; `0s` turns
    /// heartbeats off).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The broker's `consumer_timeout` (`worker.consumer_timeout`, default `30m`, as
    /// RabbitMQ's): the worker warns at start about job timeouts not below it.
    #[serde(with = "humantime_serde")]
    pub consumer_timeout: Duration,
    /// Run the link to the broker (its connection, AMQP heartbeats, the
    /// worker's heartbeats, the systemd watchdog, metrics) on a thread of its
    /// own, so that a job that blocks the runtime's threads does not cut it
    /// (`worker.link_thread`, default `true`; `false` keeps it on the app's runtime).
    pub link_thread: bool,
    /// How many `#[job(blocking)]` jobs run at once, each on a thread of the
    /// blocking pool, counting those whose timeout passed but whose thread
    /// still runs (`worker.blocking_threads`, default twice the jobs the
    /// worker runs at once: `concurrency` × its queues and subscriptions).
    pub blocking_threads: Option<usize>,
    /// How long a cancelled running job has to stop by itself (it sees
    /// `ctx.is_cancelled()`) before it is dropped (`worker.cancel_grace`,
    /// default `10s`). A `#[job(blocking)]` job's thread cannot be stopped:
    /// it is settled then, and its code runs on.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// How long a cancel of a job that is not running is kept, waiting for
    /// the job to come up from its queue or its delay (`worker.cancel_retention`,
    /// default `7d`; at most 100,000 cancels are kept, the oldest dropped first).
    #[serde(with = "humantime_serde")]
    pub cancel_retention: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: Vec::new(),
            subscriptions: Vec::new(),
            extra_queues: Vec::new(),
            concurrency: 1,
            queue_weights: std::collections::BTreeMap::new(),
            grace_period: Duration::from_secs(30),
            id: None,
            metrics_addr: None,
            max_message_size: 16 << 20,
            consumer_timeout: Duration::from_secs(30 * 60),
            heartbeat_interval: Duration::from_secs(5),
            link_thread: true,
            blocking_threads: None,
            cancel_grace: Duration::from_secs(10),
            cancel_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

impl WorkerConfig {
    /// Checks values that serde cannot.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] naming the key.
    pub fn validate(&self) -> Result<(), jobs_core::Error> {
        let bad = |key: &str, message: String| jobs_core::Error::Config { key: key.into(), message };
        if self.concurrency == 0 {
            return Err(bad("worker.concurrency", "must be at least 1".into()));
        }
        if self.blocking_threads == Some(0) {
            return Err(bad("worker.blocking_threads", "must be at least 1".into()));
        }
        for queue in &self.queues {
            jobs_core::plumbing::topology::validate_queue_name(queue)
                .map_err(|e| bad("worker.queues", e.to_string()))?;
        }
        for queue in &self.extra_queues {
            jobs_core::plumbing::topology::validate_queue_name(queue)
                .map_err(|e| bad("worker.extra_queues", e.to_string()))?;
        }
        for (queue, weight) in &self.queue_weights {
            let key = format!("worker.queue_weights.{queue}");
            jobs_core::plumbing::topology::validate_queue_name(queue).map_err(|e| bad(&key, e.to_string()))?;
            if *weight == 0 {
                return Err(bad(&key, "must be at least 1 (leave the queue out to give it no share)".into()));
            }
        }
        Ok(())
    }
}

/// A subscription of a worker to an exchange (tutorials 3 to 5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The exchange.
    pub exchange: String,
    /// Its kind (`fanout`, `direct`, `topic`).
    pub kind: ExchangeKind,
    /// Binding keys: routing keys (direct) or patterns such as `kern.*` (topic);
    /// ignored by fanout exchanges.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl Subscription {
    /// A subscription to the exchange that job type `J` is published to, of
    /// its kind, with no binding keys yet (fanout needs none):
    /// `Subscription::of::<DirectLog>()?.with_keys(["warning", "error"])`.
    ///
    /// # Errors
    /// [`jobs_core::Error::Unsupported`] when `J` goes to a queue, not to an exchange.
    pub fn of<J: Job>() -> Result<Self, jobs_core::Error> {
        match J::ROUTE {
            Route::Exchange { name, kind } => Ok(Subscription { exchange: name.to_owned(), kind, keys: Vec::new() }),
            Route::Queue => Err(jobs_core::Error::Unsupported(
                "a subscription needs a job type published to an exchange (#[job(exchange = \"...\")])",
            )),
        }
    }

    /// The binding keys: routing keys (direct) or patterns such as `kern.*` (topic).
    #[must_use]
    pub fn with_keys<K: Into<String>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, jobs_core::Job)]
    #[job(exchange = "sub_test_logs", exchange_type = "topic")]
    struct Routed {}

    #[derive(serde::Serialize, serde::Deserialize, jobs_core::Job)]
    #[job(queue = "sub_test_queue")]
    struct Queued {}

    impl jobs_core::Perform for Routed {
        async fn perform(self, _ctx: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {
            Ok(())
        }
    }

    impl jobs_core::Perform for Queued {
        async fn perform(self, _ctx: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {
            Ok(())
        }
    }

    #[test]
    fn a_subscription_takes_the_exchange_and_kind_of_its_job_type() {
        let subscription = Subscription::of::<Routed>().unwrap().with_keys(["kern.*", "*.critical"]);
        assert_eq!(subscription.exchange, "sub_test_logs");
        assert_eq!(subscription.kind, ExchangeKind::Topic);
        assert_eq!(subscription.keys, ["kern.*", "*.critical"]);
        let err = Subscription::of::<Queued>().unwrap_err();
        assert!(err.to_string().contains("published to an exchange"), "{err}");
    }

    fn load(toml: &str) -> Result<Settings, Error> {
        let path = std::env::temp_dir().join(format!("jobs-worker-cfg-{}-{}.toml", std::process::id(), toml.len()));
        std::fs::write(&path, toml).unwrap();
        let source =
            ConfigSource { file: Some(path.clone()), env_prefix: Some("JOBSWTEST".into()), ..Default::default() };
        let result = Settings::load(&source);
        std::fs::remove_file(path).unwrap();
        result
    }

    fn key_of(result: Result<Settings, Error>) -> String {
        match result {
            Err(Error::Core(jobs_core::Error::Config { key, .. })) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_file_values() {
        let s = load(
            "[worker]\nqueues = [\"a\", \"b\"]\nconcurrency = 4\ngrace_period = \"5s\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(s.worker.queues, ["a", "b"]);
        assert_eq!(s.worker.concurrency, 4);
        assert_eq!(s.worker.grace_period, Duration::from_secs(5));
        assert_eq!(s.log.format, jobs_runtime::LogFormat::Json);
        assert_eq!(s.amqp.heartbeat, 30);
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key_of(load("[worker]\nconcurrency = 0\n")), "worker.concurrency");
        assert_eq!(key_of(load("[worker.queue_weights]\nlow = 0\n")), "worker.queue_weights.low");
        assert_eq!(key_of(load("[worker.queue_weights]\nlow = \"lots\"\n")), "worker.queue_weights.low");
        let weights = load("[worker.queue_weights]\n\"a=b,c\" = 6\nlow = 1\n").unwrap().worker.queue_weights;
        assert_eq!(weights.into_iter().collect::<Vec<_>>(), vec![("a=b,c".to_string(), 6), ("low".to_string(), 1)]);
        assert_eq!(key_of(load("[worker]\nconcurrency = \"lots\"\n")), "worker.concurrency");
        assert_eq!(key_of(load("[worker]\ngrace_period = \"a while\"\n")), "worker.grace_period");
        assert_eq!(key_of(load("[log]\nformat = \"xml\"\n")), "log.format");
        assert_eq!(key_of(load("[worker]\nqueues = [\"amq.x\"]\n")), "worker.queues");
        let unknown = load("[worker]\nconcurency = 2\n").unwrap_err().to_string();
        assert!(unknown.contains("concurency"), "{unknown}");
    }
}
