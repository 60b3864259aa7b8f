//! The worker: connect, declare, consume; reconnect when the broker goes; stop
//! gracefully.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::{close_connection, connect_watched_with_retry, Management, Publisher};
use jobs_core::{report, AmqpConfig, Client, Route};
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::activity::Activity;
use crate::batch_outcomes::Outcomes;
use crate::consumer::Shared;
use crate::dispatch::Dispatcher;
use crate::heartbeat::{self, Beats, Current};
use crate::link::Link;
use crate::placement::Placement;
use crate::policy::Limits;
use crate::returns::Returns;
use crate::schedule::Resolved;
use crate::scheduler::Status;
use crate::session::{SessionEnd, Setup, Unit};
use crate::settle::{Settler, Throttle};
use crate::systemd::{self, Health, Notifier};
use crate::SchedulerConfig;
use crate::{Error, Jobs, Subscription, WorkerConfig};

static WORKERS_IN_PROCESS: AtomicU32 = AtomicU32::new(0);

/// How long a stop waits, after the grace period, for the running jobs to be
/// handed back (a publish and its confirm each).
const HAND_BACK: Duration = Duration::from_secs(10);

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
    activity: Arc<Activity>,
    /// Heartbeats, unless `worker.heartbeat_interval` is 0.
    beats: Option<Arc<Beats>>,
    /// The session consuming now: where heartbeats go.
    current: Current,
    /// Cancelled when a stop's grace period is over: running jobs are dropped and handed back.
    interrupt: CancellationToken,
    /// Runs the broker's consumer_timeout ended, as this worker knows of them.
    returns: Arc<Returns>,
    /// The queues paused now, kept across sessions.
    pauses: Arc<crate::pauses::Pauses>,
    cancels: Arc<crate::cancels::Cancels>,
    /// Its schedules and its scheduler's state, when it has schedules.
    scheduler: Option<Arc<Status>>,
    /// Its batch aggregator's state (every worker stands for the aggregation).
    batches: Arc<crate::batches::Status>,
    /// Its unique keeper's state (every worker stands for the keeping).
    uniques: Arc<crate::uniques::Status>,
    /// Where the keys of unique jobs that ended go back: set as it runs.
    releases: Option<crate::uniques::Releases>,
    /// Its own client, set as it runs.
    client: Option<Client>,
    /// Where jobs run: set as it starts (it knows the jobs' runtime then).
    placement: Arc<Placement>,
}

impl Worker {
    /// The same worker, firing `schedules` while it leads the scheduler.
    pub(crate) fn with_schedules(mut self, schedules: Vec<Resolved>, config: SchedulerConfig) -> Self {
        if schedules.is_empty() {
            return self;
        }
        let status = Arc::new(Status::new(schedules, &config));
        if let Some(beats) = &self.beats {
            let _ = beats.scheduler.set(status.clone());
        }
        self.scheduler = Some(status);
        self
    }

    pub(crate) fn from_parts(
        jobs: Jobs,
        extra_queues: Vec<String>,
        amqp: AmqpConfig,
        config: WorkerConfig,
        limits: &[crate::LimitConfig],
    ) -> Result<Self, Error> {
        amqp.validate()?;
        config.validate()?;
        if let Some(name) = jobs.unregistered() {
            return Err(Error::Unregistered(name));
        }
        let weights: Vec<(String, u16)> = config.queue_weights.iter().map(|(q, w)| (q.clone(), *w)).collect();
        if weights.len() > usize::from(config.concurrency) {
            warn!(
                concurrency = config.concurrency,
                weighted = weights.len(),
                "worker.concurrency is shared by the weighted queues: with fewer turns than weighted queues, at most {} of their jobs run at once in all; raise worker.concurrency",
                config.concurrency
            );
        }
        let dispatcher = Dispatcher::new(jobs.registrations().iter().copied())?
            .with_limits(limits, config.consumer_timeout)?
            .check_priorities(amqp.queue_type)?
            .check_ordered()?
            // Half the broker's consumer_timeout: a held delivery's clock runs.
            .with_weights(&weights, config.concurrency, config.consumer_timeout / 2);
        let mut known = dispatcher.queues();
        for queue in extra_queues.iter().chain(&config.extra_queues) {
            jobs_core::plumbing::topology::validate_queue_name(queue)?;
            known.push(queue.clone());
        }
        known.sort();
        known.dedup();
        if let Some((queue, _)) = weights.iter().find(|(q, _)| !known.contains(q)) {
            return Err(Error::UnknownWeightedQueue { queue: queue.clone(), served: served(&dispatcher) });
        }
        let (queues, subscriptions) = if config.queues.is_empty() && config.subscriptions.is_empty() {
            (known, dispatcher.broadcasts())
        } else {
            if let Some(queue) = config.queues.iter().find(|q| !known.contains(q)) {
                return Err(Error::UnknownQueue { queue: queue.clone(), served: served(&dispatcher) });
            }
            // Weighted queues are consumed too.
            let mut queues = config.queues.clone();
            queues.extend(weights.iter().map(|(q, _)| q.clone()).filter(|q| !config.queues.contains(q)));
            (queues, config.subscriptions.clone())
        };
        if queues.is_empty() && subscriptions.is_empty() {
            return Err(Error::NoQueues);
        }
        let n = WORKERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed);
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| format!("{}:{}:{}", jobs_core::plumbing::hostname(), std::process::id(), n));
        let heartbeats = !config.heartbeat_interval.is_zero();
        let activity = Arc::new(Activity::new(dispatcher.types().iter().map(|r| r.name()), heartbeats));
        let beats = heartbeats.then(|| {
            Arc::new(Beats {
                worker: id.clone(),
                queues: queues.clone(),
                exchanges: subscriptions.iter().map(|s| s.exchange.clone()).collect(),
                concurrency: config.concurrency,
                interval: config.heartbeat_interval,
                activity: activity.clone(),
                started_at: std::time::SystemTime::now(),
                scheduler: std::sync::OnceLock::new(),
                batches: std::sync::OnceLock::new(),
                limits: queues.iter().filter_map(|q| dispatcher.gate_of_queue(q).cloned()).collect(),
                rates: queues.iter().filter_map(|q| dispatcher.rate_of_queue(q).cloned()).collect(),
                uniques: std::sync::OnceLock::new(),
                weights: dispatcher.weights().cloned(),
            })
        });
        let batches = Arc::new(crate::batches::Status::default());
        if let Some(beats) = &beats {
            let _ = beats.batches.set(batches.clone());
        }
        let uniques = Arc::new(crate::uniques::Status::default());
        if let Some(beats) = &beats {
            let _ = beats.uniques.set(uniques.clone());
        }
        let cancels = Arc::new(crate::cancels::Cancels::new(config.cancel_grace, config.cancel_retention));
        Ok(Worker {
            amqp,
            config,
            dispatcher: Arc::new(dispatcher),
            queues,
            subscriptions,
            id: id.into(),
            health: Arc::default(),
            unknown: Arc::default(),
            activity,
            beats,
            current: Current::default(),
            interrupt: CancellationToken::new(),
            returns: Arc::default(),
            pauses: Arc::default(),
            cancels,
            scheduler: None,
            batches,
            uniques,
            releases: None,
            client: None,
            placement: Arc::new(Placement::new([], None, None, 1)),
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
    /// Also sets the process-wide client (if none is set), so jobs can enqueue
    /// jobs; its connection's IO runs on a thread of its own too.
    ///
    /// `stop` runs on the link's thread (so a stop signal is heard while jobs
    /// hold every thread of the app's runtime): it must be `Send + 'static`.
    ///
    /// # Errors
    /// When no broker answers within `amqp.reconnect_timeout` at start, or the
    /// broker refuses the topology ([`jobs_core::Error::TopologyMismatch`]).
    pub async fn run(mut self, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let client = Client::new(self.amqp.clone());
        let client = match self.config.link_thread.then(crate::link::client_io).flatten() {
            Some(io) => client.with_io_on(io),
            None => client,
        };
        // The scheduler enqueues through this worker's own client (the global
        // one may be another worker's, on another vhost).
        let own_client = client.clone();
        self.client = Some(client.clone());
        let _ = Client::init_global(client);
        self.dispatcher.check_timeouts(self.config.consumer_timeout, None);
        let tasks = TaskTracker::new();
        // The link to the broker runs on a thread of its own (with what must go
        // on while jobs stall their runtime); jobs run on this runtime.
        let link = Link::start(self.config.link_thread).map_err(Error::LinkThread)?;
        let jobs = self.config.link_thread.then(Handle::current);
        let units = (self.queues.len() + self.subscriptions.len()).max(1);
        let blocking = self.config.blocking_threads.unwrap_or(2 * usize::from(self.config.concurrency) * units);
        self.placement = Arc::new(Placement::new(self.dispatcher.types(), jobs, Some(Handle::current()), blocking));
        let notifier = Notifier::from_env().map(Arc::new);
        let watchdog = notifier.clone().map(|notifier| {
            let (health, tasks) = (self.health.clone(), tasks.clone());
            link.spawn(systemd::watchdog(notifier, health, move || tasks.len()))
        });
        let metrics = match self.config.metrics_addr {
            Some(addr) => Some(link.run(crate::metrics::serve(addr, self.health.clone())).await?),
            None => None,
        };
        let beating = self.beats.clone().map(|beats| link.spawn(heartbeat::run(beats, self.current.clone())));
        let watching = link.spawn(self.placement.clone().watch());
        // The scheduler stops firing (and lets the leadership go) as the stop begins.
        let stopping = tokio_util::sync::CancellationToken::new();
        let aggregating = {
            let (amqp, id, status) = (self.amqp.clone(), self.id.to_string(), self.batches.clone());
            link.spawn(crate::batches::run(amqp, id, status, own_client.clone(), stopping.clone()))
        };
        let uniques = {
            let (amqp, id, queue_type) = (self.amqp.clone(), self.id.to_string(), self.amqp.topology().queue_type());
            let (status, activity) = (self.uniques.clone(), self.activity.clone());
            link.spawn(crate::uniques::run(amqp, id, queue_type, status, activity, stopping.clone()))
        };
        let released = CancellationToken::new();
        let (releases, releasing) = crate::uniques::Releases::start(own_client.clone(), released.clone());
        self.releases = Some(releases);
        let releasing = link.spawn(releasing);
        // A rate-limited type's rate is kept by one of the workers that run it.
        let keeping: Vec<_> = self
            .queues
            .iter()
            .filter_map(|q| self.dispatcher.rate_of_queue(q).cloned())
            .map(|limit| {
                let (amqp, id, queue_type) =
                    (self.amqp.clone(), self.id.to_string(), self.amqp.topology().queue_type());
                link.spawn(crate::rates::lead(limit, amqp, id, queue_type, stopping.clone()))
            })
            .collect();
        let scheduling = self.scheduler.clone().map(|status| {
            let (amqp, id) = (self.amqp.clone(), self.id.to_string());
            link.spawn(crate::scheduler::run(amqp, id, status, own_client, stopping.clone()))
        });
        let dispatcher = self.dispatcher.clone();
        let stop = async move {
            stop.await;
            stopping.cancel();
            // The deliveries waiting for a weighted queue's turn go back now.
            if let Some(weights) = dispatcher.weights() {
                weights.stop();
            }
        };
        // The worker itself runs on the link, and so does `stop` (a stop signal
        // is heard there while jobs hold every thread of this runtime).
        let worker = Arc::new(self);
        let serving = {
            let (worker, tasks, notifier) = (worker.clone(), tasks.clone(), notifier.clone());
            link.spawn(async move { worker.serve_until(stop, &tasks, notifier.as_deref()).await })
        };
        let served = serving.await;
        // The keys of the jobs that ended go back before the worker is gone.
        released.cancel();
        if tokio::time::timeout(Duration::from_secs(10), releasing).await.is_err() {
            warn!("unique keys were still being given back as the worker stopped");
        }
        for task in [watchdog, metrics, beating, Some(watching), scheduling, Some(aggregating), Some(uniques)]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        for task in keeping {
            task.abort();
        }
        match served {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(Error::ConnectionLost { reason: format!("the link's thread went away: {join}") }),
        }
    }

    async fn serve_until(
        &self,
        stop: impl Future<Output = ()>,
        tasks: &TaskTracker,
        notifier: Option<&Notifier>,
    ) -> Result<(), Error> {
        tokio::pin!(stop);
        // Set once a session is ready: from then on, what fails is the broker's
        // trouble to wait out, not a setup to refuse.
        let ever_connected = std::sync::atomic::AtomicBool::new(false);
        let mut reconnect = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut short_sessions = SessionPacing::default();
        let units = self.units();
        let result = loop {
            let deadline = Instant::now() + self.amqp.reconnect_timeout;
            let connected = tokio::select! {
                _ = &mut stop => break Ok(()),
                connected = self.connect(deadline) => connected,
            };
            let (connection, shared) = match connected {
                Ok(session) => session,
                Err(err) if stops(&err, ever_connected.load(Ordering::Relaxed)) => break Err(err),
                Err(err) => {
                    warn!(error = %report(&err), retry_in = ?reconnect.peek(), "cannot reach RabbitMQ; retrying");
                    tokio::select! {
                        _ = &mut stop => break Ok(()),
                        _ = reconnect.wait() => {}
                    }
                    continue;
                }
            };
            reconnect.reset();
            let setup = Setup {
                connection: &connection,
                topology: self.amqp.topology(),
                units: &units,
                concurrency: self.config.concurrency,
                consumer_timeout: self.config.consumer_timeout,
                worker: &self.id,
                health: &self.health,
                current: &self.current,
            };
            let started = Instant::now();
            let ready = || {
                let first_ready = !ever_connected.swap(true, Ordering::Relaxed);
                if first_ready {
                    if let Some(notifier) = notifier {
                        notifier.notify("READY=1");
                    }
                }
                ::metrics::gauge!("broker_connected").set(1.0);
                if first_ready {
                    // Where the broker says its queues' own consumer_timeout (3.12+), hold the job types to it.
                    let (management, dispatcher) = (Management::new(&self.amqp), self.dispatcher.clone());
                    let queues = self.queues.clone();
                    tokio::spawn(async move {
                        for queue in queues {
                            if let Some(timeout) = management.queue(&queue).await.and_then(|q| q.consumer_timeout) {
                                dispatcher.check_timeouts(timeout, Some(&queue));
                            }
                        }
                    });
                }
                let exchanges: Vec<&str> = self.subscriptions.iter().map(|s| s.exchange.as_str()).collect();
                info!(worker.id = &*self.id, queues = ?self.queues, ?exchanges, concurrency = self.config.concurrency, "worker ready");
            };
            // A broker that went silent in an earlier session may answer this one.
            self.health.silent.store(false, Ordering::Relaxed);
            let end = setup.run(shared.clone(), tasks, &mut stop, ready).await;
            ::metrics::gauge!("broker_connected").set(0.0);
            match end {
                Ok(SessionEnd::Stopped) => {
                    if let Some(notifier) = notifier {
                        notifier.notify("STOPPING=1");
                    }
                    self.drain(tasks).await;
                    if let Some(beats) = self.beats.as_ref().filter(|_| !self.health.silent.load(Ordering::Relaxed)) {
                        // The last beat says the worker stopped; a broker that
                        // did not answer the cancel is not waited for again.
                        let beat = beats.make(true);
                        let _ = tokio::time::timeout(Duration::from_secs(2), beats.send(&shared, &beat)).await;
                    }
                    close_connection(connection).await;
                    break Ok(());
                }
                Ok(SessionEnd::Lost(err)) => {
                    warn!(error = %report(&err), running = tasks.len(), "lost the broker; reconnecting (running jobs go on, but for ordered types' jobs, dropped; the broker hands out again what they cannot ack)");
                    // Before the connection closes: the broker then hands their shards on.
                    shared.shard_tails.drop_all().await;
                    close_connection(connection).await;
                }
                Err(err) if stops(&err, ever_connected.load(Ordering::Relaxed)) => {
                    shared.shard_tails.drop_all().await;
                    close_connection(connection).await;
                    break Err(err);
                }
                Err(err) => {
                    warn!(error = %report(&err), "cannot set up consuming; retrying");
                    shared.shard_tails.drop_all().await;
                    close_connection(connection).await;
                }
            }
            if let Some(pause) = short_sessions.after(started.elapsed()) {
                tokio::select! {
                    _ = &mut stop => break Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        };
        // Stopped while reconnecting or pausing: jobs of the lost session may
        // still run; they get the grace period too.
        if !tasks.is_closed() {
            self.drain(tasks).await;
        }
        info!(worker.id = &*self.id, "worker stopped");
        result
    }

    /// What each session sets up: the delay cascade, the queues, the subscriptions.
    fn units(&self) -> Vec<Unit> {
        let queues = self.queues.iter().cloned().map(Unit::Queue);
        // The shards of the ordered types of the queues it consumes.
        let shards: Vec<Unit> = self
            .dispatcher
            .shards()
            .into_iter()
            .filter(|(queue, _)| self.queues.contains(queue))
            .flat_map(|(queue, ordered)| (0..ordered.shards).map(move |n| Unit::Shard { queue: queue.clone(), n }))
            .collect();
        let queues = queues.chain(shards);
        let subscriptions = self.subscriptions.iter().cloned().map(Unit::Subscription);
        let events = self.beats.as_ref().map(|_| Unit::Events);
        [Unit::Delays, Unit::Returns].into_iter().chain(events).chain(queues).chain(subscriptions).collect()
    }

    /// Connects and opens the channel that settles deliveries.
    async fn connect(&self, deadline: Instant) -> Result<(Connection, Arc<Shared>), Error> {
        let state = self.health.connection.clone();
        // On the link (where the worker runs): the connection's reading and writing run there.
        let connection = connect_watched_with_retry(&self.amqp, &self.id, state.clone(), deadline).await?;
        let publisher = match Publisher::open(&connection, self.amqp.confirm_timeout).await {
            Ok(publisher) => publisher.watching(state),
            Err(err) => {
                close_connection(connection).await;
                return Err(err.into());
            }
        };
        let settler = Settler {
            publisher,
            worker: self.id.clone(),
            host: jobs_core::plumbing::hostname(),
            topology: self.amqp.topology(),
            unknown: self.unknown.clone(),
            activity: self.activity.clone(),
            broken: CancellationToken::new(),
            interrupt: self.interrupt.clone(),
            returns: self.returns.clone(),
            outcomes: Outcomes::start(connection.clone(), self.amqp.confirm_timeout),
            releases: self.releases.clone(),
        };
        let limits = Limits {
            max_message_size: self.config.max_message_size,
            max_crashes: self.amqp.max_crashes,
            consumer_timeout: self.config.consumer_timeout,
        };
        let shared = Arc::new(Shared {
            dispatcher: self.dispatcher.clone(),
            placement: self.placement.clone(),
            settler,
            limits,
            health: self.health.clone(),
            client: self.client.clone(),
            pauses: self.pauses.clone(),
            cancels: self.cancels.clone(),
            shard_tails: crate::shard::Tails::default(),
        });
        Ok((connection, shared))
    }

    /// Waits up to the grace period for running jobs; then drops those still
    /// running and hands each back to its queue (a copy, confirmed, then the
    /// delivery acked), waiting up to [`HAND_BACK`] for that.
    async fn drain(&self, tasks: &TaskTracker) {
        tasks.close();
        let running = tasks.len();
        if running > 0 {
            info!(running, grace_period = ?self.config.grace_period, "waiting for running jobs");
        }
        if tokio::time::timeout(self.config.grace_period, tasks.wait()).await.is_ok() {
            return;
        }
        info!(running = tasks.len(), "grace period over: handing the running jobs back to their queues");
        self.interrupt.cancel();
        if tokio::time::timeout(HAND_BACK, tasks.wait()).await.is_err() {
            warn!(
                running = tasks.len(),
                "jobs not handed back in time: leaving them unacked; the broker hands them to another worker (counted as a crash)"
            );
        }
    }
}

/// How long to pause before the next session. A session that did not last
/// took jobs it could not settle: the pause grows (0.1 s doubling to 30 s)
/// while sessions keep ending within 10 s, so that broker trouble does not turn
/// into a loop of taking and dropping jobs (each return counts as a crash); a
/// session that lasted starts the pauses again, and is followed by none.
#[derive(Debug)]
struct SessionPacing(Backoff);

impl Default for SessionPacing {
    fn default() -> Self {
        SessionPacing(Backoff::new(Duration::from_millis(100), Duration::from_secs(30)))
    }
}

impl SessionPacing {
    /// A session that ran for `lasted` ended: the pause before the next, if any.
    fn after(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted >= Duration::from_secs(10) {
            self.0.reset();
            None
        } else {
            Some(self.0.next())
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
        Error::Setup(errors) => errors.iter().any(|e| stops(e, ever_connected)),
        Error::Core(core) => core.is_permanent() && !ever_connected,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_that_end_within_ten_seconds_back_off_up_to_thirty() {
        let mut pacing = SessionPacing::default();
        let short = Duration::from_secs(2);
        let pauses: Vec<u128> = (0..12).map(|_| pacing.after(short).unwrap().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
        assert_eq!(pacing.after(Duration::from_secs(10)), None, "a session that lasted is followed by no pause");
        assert_eq!(pacing.after(short), Some(Duration::from_millis(100)), "and the pauses start again");
    }
}
