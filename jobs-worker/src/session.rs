//! One connection's work: set up what the worker consumes, consume it, and
//! keep setting up what could not be set up yet.
//!
//! Everything is declared before anything is consumed, so a setup that fails
//! half-way has taken no job (a job taken and then dropped with the connection
//! would come back counted as a crash). What cannot be set up now (a queue
//! whose node is down) does not hold up the rest: the worker consumes what it
//! can, says what it cannot (log, `/healthz`, systemd `STATUS=`), and tries
//! the rest again in the background with capped backoff. A consumer that ends
//! while its connection lives (its queue went away with a node) is set up
//! again the same way.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::{Declarer, Topology};
use jobs_core::report;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::consumer::{Consumer, Shared};
use crate::heartbeat::Current;
use crate::shard::ShardConsumer;
use crate::systemd::Health;
use crate::{Error, Subscription};

/// How long a worker that never read `jobs.control` waits for it before it
/// consumes as if nothing were paused (with a WARN).
const UNKNOWN_PAUSES_WAIT: Duration = Duration::from_secs(60);

/// One thing a session sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit {
    /// The delay cascade, which retries and delayed jobs go through; job
    /// queues are consumed only once it is there.
    Delays,
    /// A job queue and `<queue>.dead`, bound to the cascade, then consumed.
    Queue(String),
    /// Shard `n` of an ordered type's queue (`<queue>.shard.<n>`), then consumed.
    Shard { queue: String, n: u16 },
    /// An exchange and `<exchange>.dead`, then a queue of this worker's own bound to it.
    Subscription(Subscription),
    /// The stream heartbeats go to.
    Events,
    /// The journal of runs the broker's `consumer_timeout` ended.
    Returns,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Delays => f.write_str("the delay queues"),
            Unit::Queue(queue) => write!(f, "queue `{queue}`"),
            Unit::Shard { queue, n } => {
                write!(f, "queue `{}`", jobs_core::plumbing::topology::shard_queue(queue, *n))
            }
            Unit::Subscription(s) => write!(f, "exchange `{}`", s.exchange),
            Unit::Events => write!(f, "the stream `{}`", jobs_core::plumbing::events::EVENTS_STREAM),
            Unit::Returns => write!(f, "the stream `{}`", crate::returns::JOURNAL.name()),
        }
    }
}

/// How a session ended.
pub(crate) enum SessionEnd {
    /// The stop future resolved.
    Stopped,
    /// The connection went away.
    Lost(Error),
}

/// What a session needs of its worker.
pub(crate) struct Setup<'a> {
    pub(crate) connection: &'a Connection,
    pub(crate) topology: Topology,
    pub(crate) units: &'a [Unit],
    pub(crate) concurrency: u16,
    /// The broker's `consumer_timeout` (`worker.consumer_timeout`): held slot tokens are renewed well within it.
    pub(crate) consumer_timeout: Duration,
    pub(crate) worker: &'a str,
    pub(crate) health: &'a Health,
    pub(crate) current: &'a Current,
}

/// Units set up, and those still to set up with why not.
struct Progress {
    declared: Vec<Unit>,
    pending: Vec<(Unit, String)>,
}

impl Setup<'_> {
    /// Declares every unit, before any is consumed. Units that cannot be set
    /// up now are returned as pending, with why.
    ///
    /// # Errors
    /// What trying again cannot fix (a queue that exists with other
    /// arguments, a missing permission), every such unit named.
    async fn declare_all(&self, units: &[Unit]) -> Result<Progress, Error> {
        let mut declarer: Option<Declarer> = None;
        let mut progress = Progress { declared: Vec::new(), pending: Vec::new() };
        let mut refused = Vec::new();
        for unit in units {
            match self.declare(&mut declarer, unit).await {
                Ok(()) => progress.declared.push(unit.clone()),
                Err(err) if err.is_permanent() => refused.push(err),
                Err(err) => progress.pending.push((unit.clone(), report(&err))),
            }
        }
        if let Some(declarer) = declarer {
            declarer.close().await;
        }
        match refused.len() {
            0 => Ok(progress),
            1 => Err(refused.remove(0)),
            _ => Err(Error::Setup(refused)),
        }
    }

    /// Declares one unit, on `declarer` (a new one when it is closed).
    async fn declare(&self, declarer: &mut Option<Declarer>, unit: &Unit) -> Result<(), Error> {
        let on = match declarer.take().filter(Declarer::is_open) {
            Some(on) => declarer.insert(on),
            None => declarer.insert(Declarer::open(self.connection).await?),
        };
        match unit {
            Unit::Delays => self.topology.declare_delays(on).await?,
            Unit::Queue(queue) => {
                self.topology.declare_job_queue(on, queue).await?;
                self.topology.bind_delayed(on, queue).await?;
            }
            Unit::Shard { queue, n } => self.topology.declare_shard(on, queue, *n).await?,
            Unit::Subscription(s) => self.topology.declare_exchange(on, &s.exchange, s.kind).await?,
            Unit::Events => self.topology.declare_events(on).await?,
            Unit::Returns => crate::returns::JOURNAL.declare(on).await?,
        }
        Ok(())
    }

    /// Starts consuming a declared unit (the cascade has nothing to consume).
    async fn consume(&self, unit: &Unit, shared: &Shared) -> Result<Option<Consuming>, Error> {
        match unit {
            Unit::Delays | Unit::Events | Unit::Returns => Ok(None),
            Unit::Queue(queue) => {
                let paused = shared.pauses.watch();
                let held = shared.dispatcher.gate_of_queue(queue).map(|gate| gate.held());
                let consumer = Consumer::start(self.connection, queue, self.concurrency, self.worker, paused, held);
                consumer.await.map(|c| Some(Consuming::Queue(c)))
            }
            Unit::Shard { queue, n } => {
                let shard = jobs_core::plumbing::topology::shard_queue(queue, *n);
                let consumer = ShardConsumer::start(self.connection, queue, shard, self.worker, shared.pauses.watch());
                consumer.await.map(|c| Some(Consuming::Shard(c)))
            }
            Unit::Subscription(s) => {
                let consumer = Consumer::subscribe(self.connection, s, self.concurrency, self.worker);
                consumer.await.map(|c| Some(Consuming::Queue(c)))
            }
        }
    }

    fn show_pending(&self, pending: &[(Unit, String)]) {
        let names = pending.iter().map(|(unit, why)| format!("{unit} ({why})")).collect();
        *self.health.pending.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// Sets up, then serves until `stop` or until the connection goes.
    ///
    /// # Errors
    /// What trying again cannot fix; the connection is the caller's to close.
    pub(crate) async fn run(
        &self,
        shared: Arc<Shared>,
        tasks: &TaskTracker,
        stop: &mut (impl Future<Output = ()> + Unpin),
        ready: impl FnOnce(),
    ) -> Result<SessionEnd, Error> {
        let halt = CancellationToken::new();
        let mut loops: JoinSet<(Unit, Result<(), Error>)> = JoinSet::new();
        let end = self.serve(&shared, tasks, stop, ready, &halt, &mut loops).await;
        // However the session ended (a stop, a lost connection, a refusal):
        // nothing is consumed any more, and health says so.
        self.health.consuming.store(false, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.show_pending(&[]);
        halt.cancel();
        while loops.join_next().await.is_some() {}
        end
    }

    async fn serve(
        &self,
        shared: &Arc<Shared>,
        tasks: &TaskTracker,
        stop: &mut (impl Future<Output = ()> + Unpin),
        ready: impl FnOnce(),
        halt: &CancellationToken,
        loops: &mut JoinSet<(Unit, Result<(), Error>)>,
    ) -> Result<SessionEnd, Error> {
        // Listening starts when first polled: poll it once now, so that a
        // failure during the setup below is not missed.
        let failure = self.connection.listen_network_io_failure();
        tokio::pin!(failure);
        tokio::select! {
            biased;
            _ = &mut failure => return Ok(lost("a network failure")),
            _ = std::future::ready(()) => {}
        }
        // What is paused, read to its end before anything is consumed (a
        // worker started while a queue is paused starts with it paused), then followed.
        // A worker that never read it (started while the broker's streams
        // come back after a restart) waits for it up to `UNKNOWN_PAUSES_WAIT`:
        // consuming then could run a paused queue's jobs.
        let mut waited = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let since = Instant::now();
        let read = loop {
            let read = tokio::select! {
                biased;
                _ = &mut *stop => return Ok(SessionEnd::Stopped),
                _ = &mut failure => return Ok(lost("a network failure")),
                read = shared.pauses.catch_up(self.connection, &shared.settler.publisher, &shared.cancels) => read,
            };
            match read {
                // A refusal (a permission missing) is not waited out: it is said, as before.
                Err(err) if !err.is_permanent() && !shared.pauses.known() && since.elapsed() < UNKNOWN_PAUSES_WAIT => {
                    info!(
                        reason = report(&err),
                        "cannot read the journal jobs.control yet: consuming nothing until it is read, for up to 60 s"
                    );
                    tokio::select! {
                        biased;
                        _ = &mut *stop => return Ok(SessionEnd::Stopped),
                        _ = &mut failure => return Ok(lost("a network failure")),
                        _ = tokio::time::sleep(waited.next()) => {}
                    }
                }
                read => break read,
            }
        };
        let first = read
            .map_err(|err| warn!(reason = report(&err), "cannot read the journal jobs.control: consuming as the last reading said (no queue paused if there was none), and reading it again in the background"))
            .ok();
        let following =
            shared.pauses.clone().keep_following(self.connection.clone(), shared.clone(), halt.clone(), first);
        let _control = AbortOnDrop(tokio::spawn(following));
        // The slots of the limited job types, held while the session lasts.
        let how = crate::limits::Holding {
            most: self.concurrency,
            renew: (self.consumer_timeout / 3).max(Duration::from_secs(1)),
            queue_type: self.topology.queue_type(),
        };
        // A holder takes slots once the worker runs the type: at once for a
        // type whose queue it consumes, else when one of its jobs comes (a
        // worker that does not run a type must not take its slots).
        // Detached: at a stop a holder keeps its slots until its type's
        // running jobs have ended.
        for unit in self.units {
            if let Some(gate) = match unit {
                Unit::Queue(queue) => shared.dispatcher.gate_of_queue(queue),
                _ => None,
            } {
                gate.want();
            }
        }
        // A limited type's job from another queue is moved to the type's own
        // queue: it must exist, whether this worker consumes it or not.
        let consumed: Vec<&str> =
            self.units.iter().filter_map(|u| if let Unit::Queue(q) = u { Some(q.as_str()) } else { None }).collect();
        let elsewhere: Vec<&'static str> =
            shared.dispatcher.limited_queues().into_iter().filter(|q| !consumed.contains(q)).collect();
        if !elsewhere.is_empty() {
            let declared = async {
                let declarer = Declarer::open(self.connection).await?;
                for queue in &elsewhere {
                    self.topology.declare_job_queue(&declarer, queue).await?;
                    self.topology.bind_delayed(&declarer, queue).await?;
                }
                declarer.close().await;
                Ok::<_, jobs_core::Error>(())
            };
            if let Err(err) = declared.await {
                warn!(queues = ?elsewhere, error = %report(&err), "cannot declare the queues of limited job types this worker does not consume: their jobs sent to its queues cannot be moved there");
            }
        }
        for gate in shared.dispatcher.gates().values() {
            let (gate, connection, worker) = (gate.clone(), self.connection.clone(), Arc::<str>::from(self.worker));
            tokio::spawn(crate::limits::keep_holding(gate, connection, worker, how, halt.clone()));
        }
        // The rates' tokens and asks, served on this connection while the session lasts.
        for limit in shared.dispatcher.rates().values() {
            let (limit, connection) = (limit.clone(), self.connection.clone());
            tokio::spawn(crate::rates::keep_serving(limit, connection, self.topology.queue_type(), halt.clone()));
        }
        let mut pending = self.set_up(self.units, false, loops, halt, tasks, shared).await?;
        for (unit, why) in &pending {
            warn!(%unit, reason = why, "cannot set up {unit} yet; consuming the rest, trying it again in the background");
        }
        self.show_pending(&pending);
        // Every worker follows the journal of runs the broker's consumer_timeout ended.
        let follower = {
            let (returns, connection, halt) = (shared.settler.returns.clone(), self.connection.clone(), halt.clone());
            tokio::spawn(async move { returns.follow(&connection, halt).await })
        };
        let _follower = AbortOnDrop(follower);
        self.health.consuming.store(true, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared.clone());
        ready();
        let mut pause = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut next_try = Instant::now() + pause.next();
        loop {
            tokio::select! {
                _ = &mut *stop => return Ok(SessionEnd::Stopped),
                _ = &mut failure => return Ok(lost("a network failure")),
                _ = shared.settler.broken.cancelled() => return Ok(lost("the channel that stores settled copies closed")),
                Some(ended) = loops.join_next() => {
                    let (unit, result) = match ended {
                        Ok(ended) => ended,
                        Err(join) => return Ok(lost(&format!("consumer task failed: {join}"))),
                    };
                    if !self.connection.is_open() {
                        let err = result.err().unwrap_or(Error::ConnectionLost { reason: format!("while consuming {unit}") });
                        return Ok(SessionEnd::Lost(err));
                    }
                    let why = result.err().map(|e| report(&e)).unwrap_or_else(|| "its consumer ended".into());
                    warn!(%unit, reason = why, "stopped consuming {unit}; setting it up again in the background");
                    pending.push((unit, why));
                    self.show_pending(&pending);
                    pause.reset();
                    next_try = Instant::now() + pause.next();
                }
                _ = tokio::time::sleep_until(next_try), if !pending.is_empty() => {
                    // With nothing consumed, no consumer ends to tell of a lost connection.
                    if !self.connection.is_open() {
                        return Ok(lost("the connection closed"));
                    }
                    let (mut units, _): (Vec<Unit>, Vec<String>) = std::mem::take(&mut pending).into_iter().unzip();
                    // The cascade first: queues wait for it.
                    units.sort_by_key(|unit| *unit != Unit::Delays);
                    pending = self.set_up(&units, true, loops, halt, tasks, shared).await?;
                    self.show_pending(&pending);
                    next_try = Instant::now() + pause.next();
                }
            }
        }
    }

    /// Declares `units`, then consumes those declared (job queues once the
    /// cascade is there); returns those still to set up, with why. `again`:
    /// they were pending, and each that is set up now is said so.
    async fn set_up(
        &self,
        units: &[Unit],
        again: bool,
        loops: &mut JoinSet<(Unit, Result<(), Error>)>,
        halt: &CancellationToken,
        tasks: &TaskTracker,
        shared: &Arc<Shared>,
    ) -> Result<Vec<(Unit, String)>, Error> {
        let Progress { declared, mut pending } = self.declare_all(units).await?;
        let delays_ready = !pending.iter().any(|(unit, _)| *unit == Unit::Delays);
        for unit in declared {
            if matches!(unit, Unit::Queue(_) | Unit::Shard { .. }) && !delays_ready {
                pending.push((unit, "waiting for the delay queues".into()));
                continue;
            }
            match self.consume(&unit, shared).await {
                Ok(consumer) => {
                    if again {
                        info!(%unit, "{unit} set up; consuming it");
                    }
                    if let Some(consumer) = consumer {
                        loops.spawn(run_consumer(unit, consumer, halt.clone(), tasks.clone(), shared.clone()));
                    }
                }
                Err(err) if err.is_permanent() => return Err(err),
                Err(err) => pending.push((unit, report(&err))),
            }
        }
        Ok(pending)
    }
}

/// A task that ends with the scope that holds it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lost(why: &str) -> SessionEnd {
    SessionEnd::Lost(Error::ConnectionLost { reason: why.into() })
}

/// A consumer of a job queue or subscription, or of an ordered type's shard.
enum Consuming {
    Queue(Consumer),
    Shard(ShardConsumer),
}

async fn run_consumer(
    unit: Unit,
    consumer: Consuming,
    halt: CancellationToken,
    tasks: TaskTracker,
    shared: Arc<Shared>,
) -> (Unit, Result<(), Error>) {
    let result = match consumer {
        Consuming::Queue(consumer) => consumer.run(halt.clone(), tasks, shared).await,
        Consuming::Shard(consumer) => consumer.run(halt.clone(), tasks, shared).await,
    };
    // A consumer that ends by itself, not by the halt, is an error to handle.
    let result = match result {
        Ok(()) if !halt.is_cancelled() => {
            Err(Error::ConnectionLost { reason: format!("the consumer of {unit} ended") })
        }
        other => other,
    };
    (unit, result)
}
