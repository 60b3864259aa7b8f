//! The worker's command line. Flags override config file and environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use jobs_core::{ConfigSource, DeadFilter};

/// Runs the background jobs linked into this binary.
///
/// Config comes from, lowest first: defaults, the file (`--config`, `$JOBS_CONFIG`
/// or `./jobs.toml`), `JOBS__SECTION__KEY` environment variables (for example
/// `JOBS__AMQP__URL`), then these flags.
#[derive(Debug, Clone, Default, Parser)]
#[command(version)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Queues to consume, comma-separated [default: every queue of the linked job types].
    #[arg(long, short = 'q', value_delimiter = ',', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Queues no job type names that jobs are sent to with `EnqueueOptions::queue`,
    /// comma-separated: consumed too, and `--queues` may name them.
    #[arg(long, value_delimiter = ',', value_name = "QUEUE")]
    pub extra_queues: Vec<String>,
    /// Jobs run at once per queue, and the prefetch [default: 1].
    #[arg(long, short = 'n')]
    pub concurrency: Option<u16>,
    /// Queues sharing the concurrency by weight, comma-separated, such as
    /// `critical=6,default=3,low=1`: their jobs start in that proportion, and
    /// an idle queue's share goes to the others (names holding `=` or `,`:
    /// `[worker.queue_weights]` in the config file).
    #[arg(long, value_delimiter = ',', value_name = "QUEUE=WEIGHT", value_parser = crate::weights::parse_pair)]
    pub queue_weights: Vec<(String, u16)>,
    /// How long a stop waits for running jobs, such as `30s` or `2m` [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub grace_period: Option<String>,
    /// This worker's id in logs [default: host:pid:n].
    #[arg(long)]
    pub id: Option<String>,
    /// Serve Prometheus metrics and /healthz on this address, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Without a command: run the worker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands besides running the worker.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// The queues of the job types linked into this binary: ready jobs,
    /// consumers and dead jobs of each.
    Queues {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Pause or resume a queue.
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// Enqueues one job of a type linked into this binary, given as JSON, as
    /// `Job::enqueue` would: to its queue, or through its exchange. A unique
    /// job whose key another job holds is not sent: exit code 3, its id said.
    Enqueue {
        /// The job type's name (its `type`), e.g. `Task`.
        job_type: String,
        /// The job's fields as a JSON object.
        #[arg(long)]
        json: String,
        /// Run it no earlier than this from now, such as `90s` or `2h` (queue-routed types).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        delay: Option<std::time::Duration>,
        /// The routing key, for types routed through a direct or topic exchange.
        #[arg(long, value_name = "KEY")]
        routing_key: Option<String>,
        /// Its priority, 0 to 9 (9 first), on a queue whose types say #[job(priorities)].
        #[arg(long, value_name = "0-9")]
        priority: Option<u8>,
        /// Worthless after this from now, such as `15m`: it is dead-lettered
        /// as `expired` instead of run when it comes after that.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Dead jobs (in `<queue>.dead`): list, retry or purge them.
    Dead {
        /// What to do.
        #[command(subcommand)]
        action: DeadAction,
    },
    /// The schedules of this binary and its config: cron, time zone, the
    /// next three ticks, the last tick fired and the worker that leads the
    /// scheduler now; `run <name>` fires one now.
    Schedules {
        /// A JSON list of objects (`name`, `next`, `last_fired`, `leader`, ..) instead of a table.
        #[arg(long)]
        json: bool,
        /// What to do instead of listing them.
        #[command(subcommand)]
        action: Option<ScheduleAction>,
    },
    /// Batches, as the record `jobs.batches` tells: the open ones (members
    /// still running, or dead ones not retried to success) with their counts
    /// and pending callbacks, then the ones that ended lately.
    Batches {
        /// One JSON object per batch (`id`, `state`, `total`, `succeeded`, `dead`, ..) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancels a job by its id: the worker running it tells its context and
    /// drops it after `worker.cancel_grace`; a job not running now is
    /// cancelled when it comes up from its queue or its delay (the cancel is
    /// kept for `worker.cancel_retention`). Either way it is dead-lettered as
    /// `cancelled`, and `dead retry` can run it again. Says which happened.
    Cancel {
        /// The job's id (as `enqueue` returned it, or the dashboard shows it).
        job_id: String,
    },
}

/// What to do with a queue, for every worker of the vhost.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueAction {
    /// Every worker stops taking jobs from the queue within 2 s (running
    /// ones finish), until it is resumed; workers started meanwhile start
    /// with it paused. Kept in the journal `jobs.control`.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Every worker takes jobs from the queue again.
    Resume {
        /// The queue.
        queue: String,
    },
}

/// What to do with a schedule.
#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleAction {
    /// Asks the scheduler's leader to enqueue the schedule's job once, now,
    /// under a fresh id (not a tick's), and prints that id.
    Run {
        /// The schedule's name.
        name: String,
    },
}

/// What to do with dead jobs.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadAction {
    /// Lists dead jobs of a queue, oldest first; they stay dead.
    List {
        /// The job queue (not `.dead`).
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead job in full (JSON): headers, error, payload.
    Show {
        /// The job queue (not `.dead`).
        queue: String,
        /// The job's id.
        #[arg(long)]
        id: String,
    },
    /// Sends dead jobs back to their queue with attempts reset. A unique job
    /// takes its key again; one whose key another job holds now stays dead
    /// (said), unless `--force`.
    Retry {
        /// The job queue (not `.dead`).
        queue: String,
        /// Which jobs.
        #[command(flatten)]
        which: Which,
        /// Retry unique jobs whose key another job holds too (both then run).
        #[arg(long)]
        force: bool,
    },
    /// Deletes dead jobs for good.
    Purge {
        /// The job queue (not `.dead`).
        queue: String,
        /// Which jobs.
        #[command(flatten)]
        which: Which,
    },
}

/// Which dead jobs: exactly one of `--id`, `--type`, `--all`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// The job with this id.
    #[arg(long)]
    pub id: Option<String>,
    /// Jobs of this type.
    #[arg(long = "type", value_name = "JOB_TYPE")]
    pub job_type: Option<String>,
    /// All dead jobs of the queue.
    #[arg(long)]
    pub all: bool,
}

impl Which {
    /// As a filter.
    pub fn filter(&self) -> DeadFilter {
        match (&self.id, &self.job_type) {
            (Some(id), _) => DeadFilter::id(id.clone()),
            (None, Some(name)) => DeadFilter::of_type(name.clone()),
            (None, None) => DeadFilter::all(),
        }
    }
}

impl Cli {
    /// The layered config source these flags describe.
    pub fn config_source(&self) -> ConfigSource {
        let mut source = ConfigSource { file: self.config.clone(), ..ConfigSource::default() };
        if !self.queues.is_empty() {
            source = source.set("worker.queues", self.queues.clone());
        }
        if !self.extra_queues.is_empty() {
            source = source.set("worker.extra_queues", self.extra_queues.clone());
        }
        if let Some(n) = self.concurrency {
            source = source.set("worker.concurrency", n);
        }
        if !self.queue_weights.is_empty() {
            let table = self.queue_weights.iter().map(|(queue, weight)| (queue.clone(), i64::from(*weight))).collect();
            source = source.set("worker.queue_weights", jobs_core::Override::Table(table));
        }
        if let Some(grace) = &self.grace_period {
            source = source.set("worker.grace_period", grace.clone());
        }
        if let Some(id) = &self.id {
            source = source.set("worker.id", id.clone());
        }
        if let Some(addr) = &self.metrics_addr {
            source = source.set("worker.metrics_addr", addr.clone());
        }
        if let Some(format) = &self.log_format {
            source = source.set("log.format", format.clone());
        }
        source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Settings};

    #[test]
    fn flags_override_the_file() {
        let path = std::env::temp_dir().join(format!("jobs-cli-{}.toml", std::process::id()));
        std::fs::write(&path, "[worker]\nconcurrency = 2\nqueues = [\"file\"]\n").unwrap();
        let cli =
            Cli::parse_from(["w", "--config", path.to_str().unwrap(), "-q", "a,b", "-n", "8", "--grace-period", "3s"]);
        let s = Settings::load(&cli.config_source()).unwrap();
        assert_eq!((s.worker.queues, s.worker.concurrency), (vec!["a".to_string(), "b".to_string()], 8));
        assert_eq!(s.worker.grace_period, std::time::Duration::from_secs(3));

        std::fs::write(&path, "[worker.queue_weights]\nfile = 5\n").unwrap();
        let cli = Cli::parse_from(["w", "--config", path.to_str().unwrap(), "--queue-weights", "critical=6,low=1"]);
        let s = Settings::load(&cli.config_source()).unwrap();
        let weights: Vec<(String, u16)> = s.worker.queue_weights.into_iter().collect();
        assert_eq!(
            weights,
            [("critical".to_string(), 6), ("low".to_string(), 1)],
            "the flag's table replaces the file's"
        );
        let refused = Cli::try_parse_from(["w", "--queue-weights", "critical"]).unwrap_err().to_string();
        assert!(refused.contains("name=weight"), "{refused}");

        let cli = Cli::parse_from(["w", "--config", path.to_str().unwrap(), "--log-format", "yaml"]);
        match Settings::load(&cli.config_source()) {
            Err(Error::Core(jobs_core::Error::Config { key, .. })) => assert_eq!(key, "log.format"),
            other => panic!("expected a config error, got {other:?}"),
        }
        std::fs::remove_file(path).unwrap();
    }
}
