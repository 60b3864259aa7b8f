//! The worker: connect, declare, consume; reconnect when the broker goes; stop
//! gracefully.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::{close_connection, connect_watched_with_retry, Publisher};
use jobs_core::{report, AmqpConfig, Client, Route};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::consumer::{Consumer, Shared};
use crate::dispatch::Dispatcher;
use crate::policy::Limits;
use crate::settle::{Settler, Throttle};
use crate::systemd::{self, Health, Notifier};
use crate::{Error, Jobs, Subscription, WorkerBuilder, WorkerConfig};

static WORKERS_IN_PROCESS: AtomicU32 = AtomicU32::new(0);

/// A worker: serves its job types from their queues.
///
/// ```no_run
/// # use jobs_core::prelude::*;
/// # #[derive(Serialize, Deserialize, Job)] struct EmailJob;
/// # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use jobs_worker::Worker;
/// let worker = Worker::builder().job::<EmailJob>().build()?;
/// worker.run(jobs_worker::stop_signal()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    amqp: AmqpConfig,
    config: WorkerConfig,
    dispatcher: Arc<Dispatcher>,
    queues: Vec<String>,
    subscriptions: Vec<Subscription>,
    id: Arc<str>,
    health: Arc<Health>,
    unknown: Arc<Throttle>,
}

/// How a connection's session ended.
enum SessionEnd {
    /// The stop future resolved.
    Stopped,
    /// The connection or a consumer went away.
    Lost(Error),
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

    pub(crate) fn from_parts(
        jobs: Jobs,
        extra_queues: Vec<String>,
        amqp: AmqpConfig,
        config: WorkerConfig,
    ) -> Result<Self, Error> {
        amqp.validate()?;
        config.validate()?;
        if let Some(name) = jobs.unregistered() {
            return Err(Error::Unregistered(name));
        }
        let dispatcher = Dispatcher::new(jobs.registrations().iter().copied())?;
        let mut known = dispatcher.queues();
        for queue in extra_queues.iter().chain(&config.extra_queues) {
            jobs_core::plumbing::topology::validate_queue_name(queue)?;
            known.push(queue.clone());
        }
        known.sort();
        known.dedup();
        let (queues, subscriptions) = if config.queues.is_empty() && config.subscriptions.is_empty() {
            (known, dispatcher.broadcasts())
        } else {
            if let Some(queue) = config.queues.iter().find(|q| !known.contains(q)) {
                return Err(Error::UnknownQueue { queue: queue.clone(), served: served(&dispatcher) });
            }
            (config.queues.clone(), config.subscriptions.clone())
        };
        if queues.is_empty() && subscriptions.is_empty() {
            return Err(Error::NoQueues);
        }
        let n = WORKERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed);
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| format!("{}:{}:{}", jobs_core::plumbing::hostname(), std::process::id(), n));
        Ok(Worker {
            amqp,
            config,
            dispatcher: Arc::new(dispatcher),
            queues,
            subscriptions,
            id: id.into(),
            health: Arc::default(),
            unknown: Arc::default(),
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

    /// The exchanges it subscribes to.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Runs until `stop` resolves, then stops gracefully: cancels its consumers,
    /// waits up to `worker.grace_period` for running jobs, and closes the
    /// connection. Jobs still running then stay unacked; the broker hands them
    /// to another worker. A normal stop returns `Ok`.
    ///
    /// When the connection drops it reconnects (capped backoff, every URL in
    /// turn), declares its topology again and goes on; jobs running meanwhile
    /// finish, and as their acks are lost the broker hands them out again.
    ///
    /// Also sets the process-wide client (if none is set), so jobs can enqueue jobs.
    ///
    /// # Errors
    /// When no broker answers within `amqp.reconnect_timeout` at start, or the
    /// broker refuses the topology ([`jobs_core::Error::TopologyMismatch`]).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), Error> {
        let _ = Client::init_global(Client::new(self.amqp.clone()));
        self.dispatcher.check_timeouts(self.config.consumer_timeout);
        let tasks = TaskTracker::new();
        let notifier = Notifier::from_env().map(Arc::new);
        let watchdog = notifier.clone().map(|notifier| {
            let (health, tasks) = (self.health.clone(), tasks.clone());
            tokio::spawn(systemd::watchdog(notifier, health, move || tasks.len()))
        });
        let metrics = match self.config.metrics_addr {
            Some(addr) => Some(crate::metrics::serve(addr, self.health.clone()).await?),
            None => None,
        };
        let result = self.serve_until(stop, &tasks, notifier.as_deref()).await;
        for task in [watchdog, metrics].into_iter().flatten() {
            task.abort();
        }
        result
    }

    async fn serve_until(
        &self,
        stop: impl Future<Output = ()>,
        tasks: &TaskTracker,
        notifier: Option<&Notifier>,
    ) -> Result<(), Error> {
        tokio::pin!(stop);
        let mut ever_connected = false;
        let mut pause = Duration::from_millis(100);
        let result = loop {
            let deadline = Instant::now() + self.amqp.reconnect_timeout;
            let connected = tokio::select! {
                _ = &mut stop => break Ok(()),
                connected = self.open_session(deadline) => connected,
            };
            let (connection, consumers, shared) = match connected {
                Ok(session) => session,
                Err(err) if stops(&err, ever_connected) => break Err(err),
                Err(err) => {
                    warn!(error = %report(&err), retry_in = ?pause, "cannot set up consuming; retrying");
                    tokio::select! {
                        _ = &mut stop => break Ok(()),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if !ever_connected {
                if let Some(notifier) = notifier {
                    notifier.notify("READY=1");
                }
            }
            ever_connected = true;
            self.health.consuming.store(true, Ordering::Relaxed);
            ::metrics::gauge!("broker_connected").set(1.0);
            pause = Duration::from_millis(100);
            let exchanges: Vec<&str> = self.subscriptions.iter().map(|s| s.exchange.as_str()).collect();
            info!(worker.id = &*self.id, queues = ?self.queues, ?exchanges, concurrency = self.config.concurrency, "worker ready");
            let end = self.serve(&connection, consumers, shared, tasks, &mut stop).await;
            self.health.consuming.store(false, Ordering::Relaxed);
            ::metrics::gauge!("broker_connected").set(0.0);
            match end {
                SessionEnd::Stopped => {
                    if let Some(notifier) = notifier {
                        notifier.notify("STOPPING=1");
                    }
                    self.drain(tasks).await;
                    close_connection(connection).await;
                    break Ok(());
                }
                SessionEnd::Lost(err) => {
                    warn!(error = %report(&err), running = tasks.len(), "lost the broker; reconnecting (running jobs go on; the broker hands out again what they cannot ack)");
                    close_connection(connection).await;
                }
            }
        };
        info!(worker.id = &*self.id, "worker stopped");
        result
    }

    /// Connects, declares the topology and starts a consumer per queue.
    async fn open_session(&self, deadline: Instant) -> Result<(Connection, Vec<Consumer>, Arc<Shared>), Error> {
        let state = self.health.connection.clone();
        let connection = connect_watched_with_retry(&self.amqp, &self.id, state.clone(), deadline).await?;
        let publisher = Publisher::open(&connection, self.amqp.confirm_timeout).await?.watching(state);
        let topology = self.amqp.topology();
        topology.declare_delays(&publisher).await?;
        for queue in &self.queues {
            topology.declare_job_queue(&publisher, queue).await?;
            topology.bind_delayed(&publisher, queue).await?;
        }
        let mut consumers = Vec::with_capacity(self.queues.len() + self.subscriptions.len());
        for queue in &self.queues {
            consumers.push(Consumer::start(&connection, queue, self.config.concurrency, &self.id).await?);
        }
        for subscription in &self.subscriptions {
            topology.declare_exchange(&publisher, &subscription.exchange, subscription.kind).await?;
            consumers.push(Consumer::subscribe(&connection, subscription, self.config.concurrency, &self.id).await?);
        }
        let settler = Settler {
            publisher,
            worker: self.id.clone(),
            host: jobs_core::plumbing::hostname(),
            topology,
            unknown: self.unknown.clone(),
        };
        let limits = Limits { max_message_size: self.config.max_message_size, max_crashes: self.amqp.max_crashes };
        let shared =
            Arc::new(Shared { dispatcher: self.dispatcher.clone(), settler, limits, health: self.health.clone() });
        Ok((connection, consumers, shared))
    }

    /// Consumes until `stop` resolves or a consumer ends.
    async fn serve(
        &self,
        connection: &Connection,
        consumers: Vec<Consumer>,
        shared: Arc<Shared>,
        tasks: &TaskTracker,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> SessionEnd {
        let halt = CancellationToken::new();
        let mut loops = JoinSet::new();
        for consumer in consumers {
            loops.spawn(consumer.run(halt.clone(), tasks.clone(), shared.clone()));
        }
        let end = tokio::select! {
            _ = stop => SessionEnd::Stopped,
            _ = connection.listen_network_io_failure() => SessionEnd::Lost(Error::ConnectionLost { queue: "(network failure)".into() }),
            Some(ended) = loops.join_next() => match ended {
                Ok(Err(err)) => SessionEnd::Lost(err),
                Ok(Ok(())) => SessionEnd::Lost(Error::ConnectionLost { queue: "(consumer ended)".into() }),
                Err(join) => SessionEnd::Lost(Error::ConnectionLost { queue: format!("consumer task failed: {join}") }),
            },
        };
        halt.cancel();
        while loops.join_next().await.is_some() {}
        end
    }

    /// Waits up to the grace period for running jobs.
    async fn drain(&self, tasks: &TaskTracker) {
        tasks.close();
        let running = tasks.len();
        if running > 0 {
            info!(running, grace_period = ?self.config.grace_period, "waiting for running jobs");
        }
        if tokio::time::timeout(self.config.grace_period, tasks.wait()).await.is_err() {
            warn!(
                running = tasks.len(),
                "grace period over: leaving running jobs unacked; the broker hands them to another worker"
            );
        }
    }
}

/// The job types of a worker and where they go, for messages.
fn served(dispatcher: &Dispatcher) -> String {
    let types: Vec<String> = dispatcher
        .types()
        .iter()
        .map(|r| match r.route() {
            Route::Queue => format!("{} → {}", r.name(), r.queue()),
            Route::Exchange { name, .. } => format!("{} → exchange {name}", r.name()),
        })
        .collect();
    if types.is_empty() {
        "(no job types)".into()
    } else {
        types.join(", ")
    }
}

/// Whether a failed setup stops the worker. What trying again cannot fix stops
/// it at start (a wrong password, no such vhost, a missing permission, bad
/// config); later, credentials and permissions may be changing under it, so it
/// says why and tries again. A topology mismatch or a bad name stops it
/// always: the app's settings contradict the broker. Everything else (a node
/// down, a refused connection, a closed channel) is tried again for as long as
/// the worker runs.
fn stops(err: &Error, ever_connected: bool) -> bool {
    match err {
        Error::Core(jobs_core::Error::TopologyMismatch { .. } | jobs_core::Error::InvalidName { .. }) => true,
        Error::Core(core) => core.is_permanent() && !ever_connected,
        _ => false,
    }
}
