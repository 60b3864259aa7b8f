//! The enqueue client: durable, confirmed, pipelined publishing of jobs.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use amqprs::channel::BasicConsumeArguments;
use amqprs::connection::Connection;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::confirm::Outgoing;
use crate::confirm::Publisher;
use crate::connection::{close_connection, connect_watched_with_retry, ConnectionState};
use crate::destination::{Declare, Destination};
use crate::error::Cause;
use crate::testing::{self, EnqueuedJob, Recorder};
use crate::topology::Declarer;
use crate::{codec, AmqpConfig, Error, Job, JobId, Respond};

static GLOBAL: OnceLock<Client> = OnceLock::new();

tokio::task_local! {
    /// The client of the innermost [`Client::scope`] around a task.
    static SCOPED: Client;
}

/// Per-call settings of an enqueue.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Send to this queue instead of the job type's own.
    pub queue: Option<String>,
    /// Use this job id instead of a new one (for producers that dedupe).
    pub id: Option<JobId>,
    /// Run no earlier than this long from now (whole seconds, rounded up).
    pub delay: Option<Duration>,
    /// Run no earlier than this time (overrides `delay`).
    pub at: Option<SystemTime>,
    /// For jobs routed through a direct or topic exchange: the routing key.
    pub routing_key: Option<String>,
}

impl EnqueueOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the job to `queue` instead of the job type's own.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Gives the job this id.
    pub fn id(mut self, id: JobId) -> Self {
        self.id = Some(id);
        self
    }

    /// Runs the job no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Runs the job no earlier than `at`.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Routes the job with `key` (direct and topic exchanges: `warning`, `kern.critical`).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// The delay asked for, if any: until `at` (zero once it is past), else `delay`.
    pub(crate) fn resolved_delay(&self) -> Option<Duration> {
        match self.at {
            Some(at) => Some(at.duration_since(SystemTime::now()).unwrap_or_default()),
            None => self.delay,
        }
    }
}

/// A connection to the broker for enqueueing jobs. Cheap to clone; clones share
/// one connection and one confirm channel, on which concurrent enqueues pipeline.
///
/// It connects on first use, and again after the connection was lost: an
/// enqueue during an outage waits up to `amqp.reconnect_timeout` for the broker.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set in the testing mode: jobs are recorded, no broker is used.
    test: Option<Arc<Recorder>>,
    config: AmqpConfig,
    name: String,
    /// The live session, read without waiting on the hot path.
    current: std::sync::RwLock<Option<Arc<Session>>>,
    /// Held while a new session is opened, so only one task connects.
    connecting: tokio::sync::Mutex<()>,
    /// What the broker says about the connection (blocked publishers).
    state: Arc<ConnectionState>,
}

struct Session {
    connection: Connection,
    publisher: Publisher,
    /// Answers to calls, consumed from direct reply-to on the publisher's channel.
    replies: tokio::sync::OnceCell<Arc<Replies>>,
    /// What this connection has declared, read without waiting on the hot path.
    declared: std::sync::RwLock<Declared>,
    /// The channel declarations go on (opened when first needed, again after
    /// a refusal closed it); held while declaring.
    declaring: tokio::sync::Mutex<Option<Declarer>>,
}

#[derive(Default)]
struct Declared {
    exchanges: HashSet<String>,
    queues: HashSet<String>,
    bound: HashSet<String>,
    delays: bool,
}

impl Declared {
    fn ready(&self, declare: &Declare) -> bool {
        match declare {
            Declare::Exchange { name, .. } => self.exchanges.contains(*name),
            Declare::Queue { queue, delayed } => {
                self.queues.contains(queue) && (!delayed || (self.delays && self.bound.contains(queue)))
            }
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.inner.config.url).field("name", &self.inner.name).finish()
    }
}

impl Client {
    /// A client that connects on first use.
    pub fn new(config: AmqpConfig) -> Self {
        let name = format!("jobs-client:{}:{}", hostname(), std::process::id());
        Client {
            inner: Arc::new(Inner {
                test: None,
                config,
                name,
                current: Default::default(),
                connecting: Default::default(),
                state: Default::default(),
            }),
        }
    }

    pub(crate) fn for_testing(recorder: Arc<Recorder>) -> Self {
        let inner = Inner {
            test: Some(recorder),
            config: AmqpConfig::default(),
            name: "jobs-test-client".into(),
            current: Default::default(),
            connecting: Default::default(),
            state: Default::default(),
        };
        Client { inner: Arc::new(inner) }
    }

    /// A client connected now, so that a wrong URL or password shows at start.
    ///
    /// # Errors
    /// [`Error::Connect`] when no broker answers within `amqp.reconnect_timeout`.
    pub async fn connect(config: AmqpConfig) -> Result<Self, Error> {
        let client = Client::new(config);
        let deadline = Instant::now() + client.inner.config.reconnect_timeout;
        client.session(deadline).await?;
        Ok(client)
    }

    /// Makes `client` the process-wide client that [`Job::enqueue`] uses.
    ///
    /// # Errors
    /// [`Error::GlobalClientAlreadySet`] when one is set already.
    pub fn init_global(client: Client) -> Result<(), Error> {
        GLOBAL.set(client).map_err(|_| Error::GlobalClientAlreadySet)
    }

    /// Reads `[amqp]` from the layered config ([`AmqpConfig::load`]: `jobs.toml`,
    /// `$JOBS_CONFIG`, `JOBS__AMQP__...` variables) and makes a client for it the
    /// process-wide one. It connects on first use.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad key; [`Error::GlobalClientAlreadySet`].
    pub fn init_global_from_config() -> Result<(), Error> {
        Client::init_global(Client::new(AmqpConfig::load()?))
    }

    /// The process-wide client.
    ///
    /// # Errors
    /// [`Error::NoGlobalClient`] when none was set.
    pub fn global() -> Result<&'static Client, Error> {
        GLOBAL.get().ok_or(Error::NoGlobalClient)
    }

    /// The client that [`Job::enqueue`] and the other shortcuts use here: the
    /// one of the innermost [`Client::scope`] around this task, else the
    /// process-wide one.
    ///
    /// # Errors
    /// [`Error::NoGlobalClient`] outside any scope when no global client is set.
    pub fn current() -> Result<Client, Error> {
        SCOPED.try_with(Client::clone).or_else(|_| Client::global().cloned())
    }

    /// Runs `future` with this client as the one [`Job::enqueue`] and the other
    /// shortcuts use, in this task (not in tasks it spawns). For tests: each
    /// test scopes its own [`TestClient`](crate::TestClient), and tests run in
    /// parallel in one binary.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        SCOPED.scope(self, future).await
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// Enqueues `job` on its queue and returns its id once the broker confirmed it.
    ///
    /// # Errors
    /// [`Error::Connect`] when no broker answers within `amqp.reconnect_timeout`;
    /// [`Error::Nacked`], [`Error::Unroutable`], [`Error::Closed`] or
    /// [`Error::ConfirmTimeout`] when the broker did not confirm it. Only `Ok`
    /// means the job is stored.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<JobId, Error> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// [`Client::enqueue`] with per-call options: another queue, a given id, a
    /// delay, a routing key.
    ///
    /// # Errors
    /// As [`Client::enqueue`]; [`Error::Unsupported`] for options that do not
    /// fit the job type's route (a delay for a job routed through an exchange).
    pub async fn enqueue_with<J: Job>(&self, job: &J, options: EnqueueOptions) -> Result<JobId, Error> {
        let destination = Destination::resolve::<J>(&options, self.inner.config.topology())?;
        let id = options.id.unwrap_or_default();
        if let Some(recorder) = &self.inner.test {
            recorder.record(EnqueuedJob::new::<J>(id.clone(), &destination, codec::encode(job)?));
            return Ok(id);
        }
        let body = codec::encode(job)?;
        let mut results = self.publish(&destination, 1, |_| message::<J>(&id, &destination, body.clone())).await?;
        results.pop().unwrap_or(Ok(()))?;
        debug!(job.name = J::NAME, job.id = %id, to = destination.target(), delay = ?destination.delay, "enqueued");
        Ok(id)
    }

    /// Enqueues many jobs of one type: all are published back to back, then all
    /// confirms awaited. Returns their ids, in order, when every one was confirmed.
    ///
    /// # Errors
    /// The first job's error when any was not confirmed; the others may be stored.
    pub async fn enqueue_many<J: Job>(&self, jobs: &[J]) -> Result<Vec<JobId>, Error> {
        self.enqueue_many_with(jobs, EnqueueOptions::default()).await
    }

    /// [`Client::enqueue_many`] with options shared by every job: another
    /// queue, a delay, a routing key (for job types routed through an exchange).
    ///
    /// # Errors
    /// As [`Client::enqueue_many`]; [`Error::Unsupported`] for options that do
    /// not fit the route, and for an id (each job gets its own).
    pub async fn enqueue_many_with<J: Job>(&self, jobs: &[J], options: EnqueueOptions) -> Result<Vec<JobId>, Error> {
        if options.id.is_some() {
            return Err(Error::Unsupported("one id for many jobs; each job of a batch gets its own"));
        }
        let destination = Destination::resolve::<J>(&options, self.inner.config.topology())?;
        let ids: Vec<JobId> = jobs.iter().map(|_| JobId::new()).collect();
        let bodies = jobs.iter().map(codec::encode).collect::<Result<Vec<_>, _>>()?;
        if let Some(recorder) = &self.inner.test {
            for (id, body) in ids.iter().zip(bodies) {
                recorder.record(EnqueuedJob::new::<J>(id.clone(), &destination, body));
            }
            return Ok(ids);
        }
        let results =
            self.publish(&destination, jobs.len(), |i| message::<J>(&ids[i], &destination, bodies[i].clone())).await?;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        Ok(ids)
    }

    /// Enqueues an RPC job and waits (at most `amqp.call_timeout`) for its answer,
    /// which comes back over RabbitMQ's direct reply-to. Many calls may be in
    /// flight on one client; an answer that comes after its caller gave up is dropped.
    ///
    /// # Errors
    /// [`Error::CallFailed`] with the worker's error, [`Error::CallTimeout`],
    /// [`Error::BadReply`], or as [`Client::enqueue`].
    pub async fn call<J: Respond>(&self, job: &J) -> Result<J::Output, Error> {
        self.call_with(job, self.inner.config.call_timeout).await
    }

    /// [`Client::call`] with its own timeout.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_with<J: Respond>(&self, job: &J, timeout: Duration) -> Result<J::Output, Error> {
        let destination = Destination::resolve::<J>(&EnqueueOptions::default(), self.inner.config.topology())?;
        let id = JobId::new();
        let body = codec::encode(job)?;
        if let Some(recorder) = &self.inner.test {
            // The testing mode answers calls at once, running the job inline.
            let enqueued = EnqueuedJob::new::<J>(id.clone(), &destination, body);
            return testing::answer(id, recorder.run(self, &enqueued).await?);
        }
        // The answer comes on the channel that published the call: a call
        // whose connection went is published again, and waits on the new one.
        let listen = |session: Arc<Session>| {
            let id = id.clone();
            async move {
                let replies = session.replies().await?;
                let answer = replies.expect(&id);
                Ok((replies, answer))
            }
        };
        let make = |_| {
            let mut message = message::<J>(&id, &destination, body.clone());
            message.properties.with_reply_to(DIRECT_REPLY_TO).with_correlation_id(id.as_str());
            message
        };
        let (mut results, listening) = self.publish_on(&destination, 1, listen, make).await?;
        let Some((replies, answer)) = listening else {
            return Err(Error::Closed { id, reason: "no connection to wait for the answer on".into() });
        };
        if let Err(err) = results.pop().unwrap_or(Ok(())) {
            replies.forget(&id);
            return Err(err);
        }
        let (props, body) = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                return Err(Error::Closed { id, reason: "the connection closed before the answer came".into() })
            }
            Err(_) => {
                replies.forget(&id);
                return Err(Error::CallTimeout { id, after: timeout });
            }
        };
        match codec::header_str(&props, codec::headers::REPLY_STATUS) {
            Some("ok") => codec::decode(&body).map_err(|source| Error::BadReply { id, source: Cause::new(source) }),
            kind => {
                let error: String = codec::decode(&body).unwrap_or_else(|_| "(unreadable error)".into());
                Err(Error::CallFailed { id, kind: kind.unwrap_or("failed").to_owned(), error })
            }
        }
    }

    /// Publishes `count` messages to `destination` and waits for their
    /// confirms: the one publish path of every enqueue. Declares what the
    /// destination needs first (once per connection). A message whose
    /// connection or channel went before its confirm is published again on a
    /// new connection, until `amqp.reconnect_timeout`: the broker may have
    /// stored the first copy, so such a job can run twice (at-least-once,
    /// never lost). Every other outcome is final. One result per message.
    async fn publish(
        &self,
        destination: &Destination,
        count: usize,
        make: impl FnMut(usize) -> Outgoing,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let (results, _) = self.publish_on(destination, count, |_| async { Ok(()) }, make).await?;
        Ok(results)
    }

    /// [`Client::publish`] with `setup` run on each session before its
    /// publishes (a call starts listening for its answer there); returns what
    /// the last session's setup gave.
    async fn publish_on<T, Fut>(
        &self,
        destination: &Destination,
        count: usize,
        mut setup: impl FnMut(Arc<Session>) -> Fut,
        mut make: impl FnMut(usize) -> Outgoing,
    ) -> Result<(Vec<Result<(), Error>>, Option<T>), Error>
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + self.inner.config.reconnect_timeout;
        let mut results: Vec<Option<Result<(), Error>>> = (0..count).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..count).collect();
        let mut last = None;
        while !todo.is_empty() {
            let session = self.session(deadline).await?;
            session.prepare(&self.inner.config, &destination.declare).await?;
            last = Some(setup(session.clone()).await?);
            // Refused here, not sent: a body over `amqp.max_message_size`.
            let limit = self.inner.config.max_message_size;
            let mut messages = Vec::with_capacity(todo.len());
            todo.retain(|&i| {
                let message = make(i);
                if message.body.len() > limit {
                    let (id, size) = (message.id, message.body.len());
                    results[i] = Some(Err(Error::TooLarge { id, size, limit }));
                    return false;
                }
                messages.push(message);
                true
            });
            let ids: Vec<JobId> = messages.iter().map(|m| m.id.clone()).collect();
            let outcomes = match session.publisher.publish_many(messages).await {
                Ok(outcomes) => outcomes,
                // The channel went before every message was handed over: none is stored.
                Err(Error::Closed { reason, .. }) => {
                    ids.into_iter().map(|id| Err(Error::Closed { id, reason: reason.clone() })).collect()
                }
                // A message that cannot be sent at all (a name over 255 bytes): none was sent.
                Err(err) => return Err(err),
            };
            let mut again = Vec::new();
            for (i, outcome) in todo.iter().copied().zip(outcomes) {
                match outcome {
                    // The connection went before the confirm: send again on a new one.
                    Err(Error::Closed { id, reason }) if Instant::now() < deadline => {
                        warn!(job.id = %id, %reason, "connection lost before the confirm; publishing again");
                        again.push(i);
                    }
                    outcome => results[i] = Some(outcome),
                }
            }
            if !again.is_empty() {
                self.drop_session(&session);
            }
            todo = again;
        }
        Ok((results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect(), last))
    }

    /// Closes the connection; the next enqueue opens a new one.
    pub async fn close(&self) {
        let session = self.slot().take();
        if let Some(session) = session {
            close_connection(session.connection.clone()).await;
        }
    }

    fn slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Session>>> {
        self.inner.current.write().unwrap_or_else(|e| e.into_inner())
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| s.connection.is_open() && s.publisher.is_open()).cloned()
    }

    fn drop_session(&self, session: &Arc<Session>) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *slot = None;
        }
    }

    async fn session(&self, deadline: Instant) -> Result<Arc<Session>, Error> {
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        let (config, state) = (&self.inner.config, self.inner.state.clone());
        let connection = connect_watched_with_retry(config, &self.inner.name, state.clone(), deadline).await?;
        let publisher = Publisher::open(&connection, config.confirm_timeout).await?.watching(state);
        let session = Arc::new(Session {
            connection,
            publisher,
            replies: Default::default(),
            declared: Default::default(),
            declaring: Default::default(),
        });
        *self.slot() = Some(session.clone());
        Ok(session)
    }
}

/// RabbitMQ's pseudo-queue for answers on the caller's own channel.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

type Reply = (amqprs::BasicProperties, Vec<u8>);

/// Callers waiting for answers, by job id.
#[derive(Default)]
struct Replies {
    waiting: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Reply>>>,
}

impl Replies {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::sync::oneshot::Sender<Reply>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expect(&self, id: &JobId) -> tokio::sync::oneshot::Receiver<Reply> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert(id.to_string(), tx);
        rx
    }

    fn forget(&self, id: &JobId) {
        self.lock().remove(id.as_str());
    }
}

impl Session {
    /// Starts consuming answers on the publisher's channel, once per connection.
    async fn replies(&self) -> Result<Arc<Replies>, Error> {
        self.replies
            .get_or_try_init(|| async {
                let args = BasicConsumeArguments::new(DIRECT_REPLY_TO, "").manual_ack(false).finish();
                let (_, mut rx) = self
                    .publisher
                    .channel()
                    .basic_consume_rx(args)
                    .await
                    .map_err(Error::amqp("basic.consume (direct reply-to)"))?;
                let replies = Arc::new(Replies::default());
                let waiting = replies.clone();
                tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        let (Some(props), Some(body)) = (message.basic_properties, message.content) else { continue };
                        let waiter = props.correlation_id().and_then(|id| waiting.lock().remove(id.as_str()));
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send((props, body));
                            }
                            None => debug!(correlation_id = ?props.correlation_id(), "answer to a call nobody waits for; dropped"),
                        }
                    }
                    // The channel is gone: dropping the senders fails every waiting call.
                    waiting.lock().clear();
                });
                Ok(replies)
            })
            .await
            .cloned()
    }

    fn declared(&self) -> std::sync::RwLockReadGuard<'_, Declared> {
        self.declared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn declared_mut(&self) -> std::sync::RwLockWriteGuard<'_, Declared> {
        self.declared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares what publishing to a destination needs, once per connection.
    async fn prepare(&self, config: &AmqpConfig, declare: &Declare) -> Result<(), Error> {
        if self.declared().ready(declare) {
            return Ok(());
        }
        let mut declaring = self.declaring.lock().await;
        let declarer = match declaring.take().filter(Declarer::is_open) {
            Some(declarer) => declarer,
            None => Declarer::open(&self.connection).await?,
        };
        let on = &declarer;
        let topology = config.topology();
        let declared = async {
            match declare {
                Declare::Exchange { name, kind } => {
                    if !self.declared().exchanges.contains(*name) {
                        topology.declare_exchange(on, name, *kind).await?;
                        self.declared_mut().exchanges.insert((*name).to_owned());
                    }
                }
                Declare::Queue { queue, delayed } => {
                    if !self.declared().queues.contains(queue) {
                        topology.declare_job_queue(on, queue).await?;
                        self.declared_mut().queues.insert(queue.clone());
                    }
                    if *delayed && !self.declared().delays {
                        topology.declare_delays(on).await?;
                        self.declared_mut().delays = true;
                    }
                    if *delayed && !self.declared().bound.contains(queue) {
                        topology.bind_delayed(on, queue).await?;
                        self.declared_mut().bound.insert(queue.clone());
                    }
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        *declaring = Some(declarer);
        declared
    }
}

/// The message of job type `J` with id `id` for `destination`.
fn message<J: Job>(id: &JobId, destination: &Destination, body: Vec<u8>) -> Outgoing {
    Outgoing {
        properties: codec::job_properties(J::NAME, id, 1),
        body,
        id: id.clone(),
        exchange: destination.exchange.clone(),
        routing_key: destination.routing_key.clone(),
    }
}

/// This host's name, for connection names and dead-letter headers.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
