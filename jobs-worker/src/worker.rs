//! The worker: connect, declare, consume, and stop gracefully.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use jobs_core::{connect, topology, AmqpConfig, Client, Publisher};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::consumer::{Consumer, Shared};
use crate::dispatch::Dispatcher;
use crate::settle::Settler;
use crate::{Error, WorkerConfig};

static WORKERS_IN_PROCESS: AtomicU32 = AtomicU32::new(0);

/// A worker: serves every job type linked into the binary from its queues.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use jobs_worker::{Worker, WorkerConfig};
/// let worker = Worker::new(jobs_core::AmqpConfig::default(), WorkerConfig::default())?;
/// worker.run(jobs_worker::stop_signal()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    amqp: AmqpConfig,
    config: WorkerConfig,
    dispatcher: Dispatcher,
    queues: Vec<String>,
    id: Arc<str>,
}

impl Worker {
    /// A worker for the linked job types, with the given settings.
    ///
    /// # Errors
    /// A config error naming the key, [`Error::DuplicateJobName`], or
    /// [`Error::NoQueues`] when there is nothing to consume.
    pub fn new(amqp: AmqpConfig, config: WorkerConfig) -> Result<Self, Error> {
        amqp.validate()?;
        config.validate()?;
        let dispatcher = Dispatcher::from_registry()?;
        let queues = if config.queues.is_empty() {
            dispatcher.queues()
        } else {
            config.queues.clone()
        };
        if queues.is_empty() {
            return Err(Error::NoQueues);
        }
        let n = WORKERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed);
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| format!("{}:{}:{}", jobs_core::hostname(), std::process::id(), n));
        Ok(Worker {
            amqp,
            config,
            dispatcher,
            queues,
            id: id.into(),
        })
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queues it consumes.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Runs until `stop` resolves, then stops gracefully: cancels its consumers,
    /// waits up to `worker.grace_period` for running jobs, and closes the
    /// connection. Jobs still running then stay unacked; the broker hands them
    /// to another worker. A normal stop returns `Ok`.
    ///
    /// Also sets the process-wide client (if none is set), so jobs can enqueue jobs.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the topology, and
    /// [`Error::ConnectionLost`] when the connection drops while consuming.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), Error> {
        let _ = Client::init_global(Client::new(self.amqp.clone()));
        let connection = connect(&self.amqp, &self.id).await?;
        let publisher = Publisher::open(&connection, self.amqp.confirm_timeout).await?;
        for queue in &self.queues {
            topology::declare_job_queue(publisher.channel(), queue).await?;
        }
        let mut consumers = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            consumers.push(
                Consumer::start(&connection, queue, self.config.concurrency, &self.id).await?,
            );
        }
        let shared = Arc::new(Shared {
            dispatcher: self.dispatcher,
            settler: Settler {
                publisher,
                worker: self.id.clone(),
            },
        });
        let halt = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut loops = JoinSet::new();
        for consumer in consumers {
            loops.spawn(consumer.run(halt.clone(), tasks.clone(), shared.clone()));
        }
        info!(worker.id = &*self.id, queues = ?self.queues, concurrency = self.config.concurrency, "worker ready");

        let result = tokio::select! {
            _ = stop => Ok(()),
            Some(ended) = loops.join_next() => match ended {
                Ok(Err(err)) => Err(err),
                Ok(Ok(())) => Ok(()),
                Err(join) => Err(Error::ConnectionLost { queue: format!("consumer task failed: {join}") }),
            },
        };
        halt.cancel();
        while loops.join_next().await.is_some() {}
        if result.is_ok() {
            tasks.close();
            let running = tasks.len();
            if running > 0 {
                info!(running, grace_period = ?self.config.grace_period, "waiting for running jobs");
            }
            if tokio::time::timeout(self.config.grace_period, tasks.wait())
                .await
                .is_err()
            {
                warn!(running = tasks.len(), "grace period over: leaving running jobs unacked; the broker hands them to another worker");
            }
        }
        let _ = connection.close().await;
        info!(worker.id = &*self.id, "worker stopped");
        result
    }
}
