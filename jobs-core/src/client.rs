//! The enqueue client: durable, confirmed, pipelined publishing of jobs.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use amqprs::connection::Connection;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::confirm::Outgoing;
use crate::topology::{self, ExchangeKind, Route, Topology};
use crate::{codec, connect_with_retry, AmqpConfig, Error, Job, JobId, Publisher, Respond};
use amqprs::channel::BasicConsumeArguments;

use crate::testing::{self, EnqueuedJob, Recorder};

static GLOBAL: OnceLock<Client> = OnceLock::new();

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

    fn resolved_delay(&self) -> Duration {
        match self.at {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => self.delay.unwrap_or_default(),
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
}

struct Session {
    connection: Connection,
    publisher: Publisher,
    /// Answers to calls, consumed from direct reply-to on the publisher's channel.
    replies: tokio::sync::OnceCell<Arc<Replies>>,
    /// What this connection has declared, read without waiting on the hot path.
    declared: std::sync::RwLock<Declared>,
    /// Held while declaring.
    declaring: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Declared {
    exchanges: HashSet<String>,
    queues: HashSet<String>,
    bound: HashSet<String>,
    delays: bool,
}

impl Declared {
    fn ready(&self, queue: &str, delayed: bool) -> bool {
        self.queues.contains(queue) && (!delayed || (self.delays && self.bound.contains(queue)))
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
        };
        Client { inner: Arc::new(inner) }
    }

    /// Records a job in the testing mode.
    fn record<J: Job>(&self, recorder: &Recorder, job: &J, options: &EnqueueOptions) -> Result<JobId, Error> {
        let id = options.id.clone().unwrap_or_default();
        let queue = match J::ROUTE {
            Route::Queue => options.queue.clone().unwrap_or_else(|| J::QUEUE.to_owned()),
            Route::Exchange { name, .. } => name.to_owned(),
        };
        let delay = options.at.is_some() || options.delay.is_some();
        recorder.record(EnqueuedJob {
            id: id.clone(),
            name: J::NAME.to_owned(),
            queue,
            routing_key: options.routing_key.clone(),
            delay: delay.then(|| options.resolved_delay()),
            body: codec::encode(job)?,
            enqueued_at: std::time::SystemTime::now(),
        });
        Ok(id)
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

    /// The process-wide client.
    ///
    /// # Errors
    /// [`Error::NoGlobalClient`] when none was set.
    pub fn global() -> Result<&'static Client, Error> {
        GLOBAL.get().ok_or(Error::NoGlobalClient)
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

    /// [`Client::enqueue`] with per-call options: another queue, a given id, a delay.
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_with<J: Job>(&self, job: &J, options: EnqueueOptions) -> Result<JobId, Error> {
        if let Some(recorder) = &self.inner.test {
            return self.record(recorder, job, &options);
        }
        if let Route::Exchange { name, kind } = J::ROUTE {
            return self.publish_routed(job, name, kind, options).await;
        }
        let queue = options.queue.as_deref().unwrap_or(J::QUEUE);
        let delay = options.resolved_delay();
        let id = options.id.clone().unwrap_or_default();
        let deadline = Instant::now() + self.inner.config.reconnect_timeout;
        loop {
            let message = outgoing(job, self.inner.config.topology(), queue, id.clone(), delay)?;
            let session = self.session(deadline).await?;
            session.prepare(&self.inner.config, queue, !delay.is_zero()).await?;
            match session.publisher.publish(message).await {
                // The connection went before the confirm: send again on a new one.
                // (If the first copy was stored after all, the job runs twice: at-least-once.)
                Err(Error::Closed { reason, .. }) if Instant::now() < deadline => {
                    warn!(job.id = %id, %reason, "connection lost before the confirm; publishing again");
                    self.drop_session(&session).await;
                }
                Err(err) => return Err(err),
                Ok(()) => {
                    debug!(job.name = J::NAME, job.id = %id, queue, ?delay, "enqueued");
                    return Ok(id);
                }
            }
        }
    }

    /// Publishes a job of an exchange-routed type: every queue bound for its
    /// routing key gets a copy; none is [`Error::Unroutable`].
    async fn publish_routed<J: Job>(
        &self,
        job: &J,
        exchange: &str,
        kind: ExchangeKind,
        options: EnqueueOptions,
    ) -> Result<JobId, Error> {
        if options.delay.is_some() || options.at.is_some() || options.queue.is_some() {
            return Err(Error::Unsupported(
                "delays and queue overrides are for queue-routed jobs, not exchange-routed ones",
            ));
        }
        let id = options.id.unwrap_or_default();
        let routing_key = options.routing_key.unwrap_or_default();
        let deadline = Instant::now() + self.inner.config.reconnect_timeout;
        let session = self.session(deadline).await?;
        session.prepare_exchange(exchange, kind).await?;
        let message = Outgoing {
            properties: codec::job_properties(J::NAME, &id, 1),
            body: codec::encode(job)?,
            id: id.clone(),
            exchange: exchange.to_owned(),
            routing_key,
        };
        session.publisher.publish(message).await?;
        Ok(id)
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
        let id = JobId::new();
        if let Some(recorder) = &self.inner.test {
            // The testing mode answers calls at once, running the job inline.
            let enqueued = EnqueuedJob {
                id: id.clone(),
                name: J::NAME.to_owned(),
                queue: J::QUEUE.to_owned(),
                routing_key: None,
                delay: None,
                body: codec::encode(job)?,
                enqueued_at: std::time::SystemTime::now(),
            };
            return testing::answer(id, recorder.run(&enqueued).await?);
        }
        let deadline = Instant::now() + self.inner.config.reconnect_timeout;
        let session = self.session(deadline).await?;
        session.prepare(&self.inner.config, J::QUEUE, false).await?;
        let replies = session.replies().await?;
        let answer = replies.expect(&id);
        let mut message = outgoing(job, self.inner.config.topology(), J::QUEUE, id.clone(), Duration::ZERO)?;
        message.properties.with_reply_to(DIRECT_REPLY_TO).with_correlation_id(id.as_str());
        if let Err(err) = session.publisher.publish(message).await {
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
            Some("ok") => codec::decode(&body).map_err(|source| Error::BadReply { id, source }),
            kind => {
                let error: String = codec::decode(&body).unwrap_or_else(|_| "(unreadable error)".into());
                Err(Error::CallFailed { id, kind: kind.unwrap_or("failed").to_owned(), error })
            }
        }
    }

    /// Enqueues many jobs of one type: all are published back to back, then all
    /// confirms awaited. Returns their ids, in order, when every one was confirmed.
    ///
    /// # Errors
    /// The first job's error when any was not confirmed; the others may be stored.
    pub async fn enqueue_many<J: Job>(&self, jobs: &[J]) -> Result<Vec<JobId>, Error> {
        if let Some(recorder) = &self.inner.test {
            return jobs.iter().map(|job| self.record(recorder, job, &EnqueueOptions::default())).collect();
        }
        let messages = jobs
            .iter()
            .map(|job| outgoing(job, self.inner.config.topology(), J::QUEUE, JobId::new(), Duration::ZERO))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<JobId> = messages.iter().map(|m| m.id.clone()).collect();
        let deadline = Instant::now() + self.inner.config.reconnect_timeout;
        let session = self.session(deadline).await?;
        session.prepare(&self.inner.config, J::QUEUE, false).await?;
        for result in session.publisher.publish_many(messages).await? {
            result?;
        }
        Ok(ids)
    }

    /// Closes the connection; the next enqueue opens a new one.
    pub async fn close(&self) {
        let session = self.slot().take();
        if let Some(session) = session {
            crate::close_connection(session.connection.clone()).await;
        }
    }

    fn slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Session>>> {
        self.inner.current.write().unwrap_or_else(|e| e.into_inner())
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| s.connection.is_open() && s.publisher.is_open()).cloned()
    }

    async fn drop_session(&self, session: &Arc<Session>) {
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
        let connection = connect_with_retry(&self.inner.config, &self.inner.name, deadline).await?;
        let publisher = Publisher::open(&connection, self.inner.config.confirm_timeout).await?;
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
                    .map_err(|source| Error::Amqp { op: "basic.consume (direct reply-to)", source })?;
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

    /// Declares an exchange, once per connection.
    async fn prepare_exchange(&self, exchange: &str, kind: ExchangeKind) -> Result<(), Error> {
        if self.declared.read().unwrap_or_else(|e| e.into_inner()).exchanges.contains(exchange) {
            return Ok(());
        }
        let _declaring = self.declaring.lock().await;
        topology::declare_exchange(&self.publisher, exchange, kind).await?;
        self.declared.write().unwrap_or_else(|e| e.into_inner()).exchanges.insert(exchange.to_owned());
        Ok(())
    }

    /// Declares what publishing to `queue` needs, once per connection.
    async fn prepare(&self, config: &AmqpConfig, queue: &str, delayed: bool) -> Result<(), Error> {
        let read = |s: &Self| s.declared.read().unwrap_or_else(|e| e.into_inner()).ready(queue, delayed);
        if read(self) {
            return Ok(());
        }
        let _declaring = self.declaring.lock().await;
        let topology = config.topology();
        let (queue_done, delays_done, bound_done) = {
            let d = self.declared.read().unwrap_or_else(|e| e.into_inner());
            (d.queues.contains(queue), d.delays, d.bound.contains(queue))
        };
        if !queue_done {
            topology.declare_job_queue(&self.publisher, queue).await?;
            self.declared.write().unwrap_or_else(|e| e.into_inner()).queues.insert(queue.to_owned());
        }
        if delayed && !delays_done {
            topology.declare_delays(&self.publisher).await?;
            self.declared.write().unwrap_or_else(|e| e.into_inner()).delays = true;
        }
        if delayed && !bound_done {
            topology.bind_delayed(&self.publisher, queue).await?;
            self.declared.write().unwrap_or_else(|e| e.into_inner()).bound.insert(queue.to_owned());
        }
        Ok(())
    }
}

fn outgoing<J: Job>(job: &J, topology: Topology, queue: &str, id: JobId, delay: Duration) -> Result<Outgoing, Error> {
    topology::validate_queue_name(queue)?;
    let (exchange, routing_key) =
        topology.delay_route(delay, queue).unwrap_or_else(|| (String::new(), queue.to_owned()));
    Ok(Outgoing {
        properties: codec::job_properties(J::NAME, &id, 1),
        body: codec::encode(job)?,
        id,
        exchange,
        routing_key,
    })
}

/// This host's name, for connection names and dead-letter headers.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
