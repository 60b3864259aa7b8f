//! The enqueue client: durable, confirmed, pipelined publishing of jobs.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;
use tracing::debug;

use crate::confirm::Publisher;
use crate::connection::{close_connection, connect_watched_with_retry, ConnectionState};
use crate::destination::{Destination, JobRoute};
use crate::message::Message;
use crate::registry::Registration;
use crate::session::Session;
use crate::testing::{EnqueuedJob, Recorder};
use crate::unique::Uniqueness;
use crate::window::{Guarded, Iter, One, Slice, Stopped};
use crate::{codec, AmqpConfig, Cause, EnqueueOptions, Error, Job, JobId};

static GLOBAL: OnceLock<Client> = OnceLock::new();

tokio::task_local! {
    /// The client of the innermost [`Client::scope`] around a task.
    static SCOPED: Client;
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
    /// Where the connection's reading and writing run (its tasks are spawned
    /// when it opens): this runtime, or the caller's.
    io: Option<tokio::runtime::Handle>,
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
                io: None,
            }),
        }
    }

    /// This client with its connection's reading and writing (AMQP
    /// heartbeats, confirms) on `runtime`, wherever it is used from: the
    /// worker gives the process-wide client its link's runtime, so that jobs
    /// that block their runtime do not silence the connection they enqueue on.
    #[must_use]
    pub fn with_io_on(self, runtime: tokio::runtime::Handle) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            // Shared already: a client of its own with the same settings.
            Err(shared) => Inner {
                test: shared.test.clone(),
                config: shared.config.clone(),
                name: shared.name.clone(),
                current: Default::default(),
                connecting: Default::default(),
                state: Default::default(),
                io: None,
            },
        };
        Client { inner: Arc::new(Inner { io: Some(runtime), ..inner }) }
    }

    pub(crate) fn for_testing(recorder: Arc<Recorder>) -> Self {
        let inner = Inner {
            test: Some(recorder),
            config: AmqpConfig::default(),
            name: "jobs-test-client".into(),
            current: Default::default(),
            connecting: Default::default(),
            state: Default::default(),
            io: None,
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
        let route = JobRoute::of::<J>();
        self.enqueue_encoded(route, J::__registration(), codec::encode(job)?, options, None).await
    }

    /// Enqueues a job already encoded: `body` is the job as MessagePack, of
    /// the type `job` describes (the admin command's path, for JSON given at
    /// the command line). `registration` lets the testing mode run it. A
    /// message whose connection went before its confirm goes again on a new
    /// one only while `may_go_again` says so (always, when `None`).
    pub(crate) async fn enqueue_encoded(
        &self,
        job: JobRoute<'_>,
        registration: Option<&'static Registration>,
        body: Vec<u8>,
        options: EnqueueOptions,
        may_go_again: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<JobId, Error> {
        let destination = Destination::resolve_for(job, &options, self.inner.config.topology())?;
        let id = options.id.clone().unwrap_or_default();
        if let Some(recorder) = &self.inner.test {
            recorder.record(EnqueuedJob::of(job.name, registration, id.clone(), &destination, body));
            return Ok(id);
        }
        let unique = Uniqueness::of(job.name, registration, &options, &body)?;
        let mut message = Message::job(job.name, id.clone(), body)
            .deadline(options.deadline(registration.and_then(|r| r.expires_in())));
        let mut token = None;
        if let Some(unique) = &unique {
            let held = self.reserve_unique(unique, &id, job.name).await?;
            message = unique.mark(message, &held);
            token = Some(held);
        }
        if let Err(err) = self.publish_one(&message, &destination, may_go_again).await {
            if let (Some(unique), Some(token)) = (&unique, &token) {
                if matches!(err, Error::Nacked { .. } | Error::Unroutable { .. }) {
                    // Not stored, said the broker: the key is free again (an
                    // unsure outcome keeps it, for its unique_for at most).
                    self.give_back(unique, &id, token).await;
                }
            }
            return Err(err);
        }
        debug!(job.name = job.name, job.id = %id, to = destination.target(), delay = ?destination.delay, "enqueued");
        Ok(id)
    }

    /// Publishes `message` to `destination` (declared as it says, once per
    /// connection) and waits for its confirm. A message whose connection went
    /// before its confirm goes again on the next, while `may_go_again` says
    /// so (always, without one).
    pub(crate) async fn publish_one(
        &self,
        message: &Message,
        destination: &Destination,
        may_go_again: Option<&(dyn Fn() -> bool + Sync)>,
    ) -> Result<(), Error> {
        let one = One { message, destination, done: false };
        let no_setup = |_| async { Ok(()) };
        let published = match may_go_again {
            None => self.publish_source(destination, no_setup, &mut { one }, false).await,
            Some(may_go_again) => {
                self.publish_source(destination, no_setup, &mut Guarded { one, may_go_again }, false).await
            }
        };
        published.0.map(drop).map_err(Stopped::into_error)
    }

    /// Enqueues many jobs of one type, pipelined: each is encoded as it goes
    /// out, at most a window of 4,096 waits for its confirm at once, and the
    /// confirm timeout passes only when no confirm comes for that long, so a
    /// batch of any size succeeds while the broker keeps confirming. Returns
    /// their ids, in order, once every one was confirmed.
    ///
    /// # Errors
    /// [`Error::BatchIncomplete`] when the batch stopped after sending some
    /// jobs: it says which are confirmed and which are not, so that only
    /// those go again (its docs show how). Any other error: nothing was sent.
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
        refuse_one_at_a_time::<J>(&options)?;
        let destination = Destination::resolve::<J>(&options, self.inner.config.topology())?;
        let ids: Vec<JobId> = jobs.iter().map(|_| JobId::new()).collect();
        if let Some(recorder) = &self.inner.test {
            for (id, job) in ids.iter().zip(jobs) {
                recorder.record(EnqueuedJob::new::<J>(id.clone(), &destination, codec::encode(job)?));
            }
            return Ok(ids);
        }
        let expires_at = options.deadline(J::EXPIRES_IN);
        let mut slice = Slice { jobs, ids: &ids, destination: &destination, at: 0, expires_at };
        let no_setup = |_| async { Ok(()) };
        self.publish_source(&destination, no_setup, &mut slice, false).await.0.map_err(Stopped::into_batch_error)?;
        Ok(ids)
    }

    /// Enqueues the jobs an iterator gives, as [`Client::enqueue_many`] does,
    /// for loads that are not all in memory (rows of a file or a cursor): it
    /// takes each job only when the window has room, and holds no more than
    /// the window (each message until its confirm). Returns how many jobs were
    /// enqueued, all confirmed.
    ///
    /// # Errors
    /// [`Error::BatchIncomplete`] when it stopped after taking some jobs: the
    /// jobs are numbered in the iterator's order, and `taken` says how many it
    /// took (the iterator holds the rest). Any other error: it took none.
    pub async fn enqueue_iter<J: Job>(&self, jobs: impl IntoIterator<Item = J>) -> Result<usize, Error> {
        self.enqueue_iter_with(jobs, EnqueueOptions::default()).await
    }

    /// [`Client::enqueue_iter`] with options shared by every job.
    ///
    /// # Errors
    /// As [`Client::enqueue_iter`] and [`Client::enqueue_many_with`].
    pub async fn enqueue_iter_with<J: Job>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        options: EnqueueOptions,
    ) -> Result<usize, Error> {
        if options.id.is_some() {
            return Err(Error::Unsupported("one id for many jobs; each job of a batch gets its own"));
        }
        refuse_one_at_a_time::<J>(&options)?;
        let destination = Destination::resolve::<J>(&options, self.inner.config.topology())?;
        if let Some(recorder) = &self.inner.test {
            let mut count = 0;
            for job in jobs {
                recorder.record(EnqueuedJob::new::<J>(JobId::new(), &destination, codec::encode(&job)?));
                count += 1;
            }
            return Ok(count);
        }
        let expires_at = options.deadline(J::EXPIRES_IN);
        let mut iter = Iter { jobs: jobs.into_iter(), destination: &destination, expires_at };
        let no_setup = |_| async { Ok(()) };
        let (published, _) = self.publish_source(&destination, no_setup, &mut iter, true).await;
        published.map_err(Stopped::into_batch_error)
    }

    /// The testing mode's recorder, when this is a test client.
    pub(crate) fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.inner.test.as_ref()
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
        current.as_ref().filter(|s| s.is_open()).cloned()
    }

    pub(crate) fn drop_session(&self, session: &Arc<Session>) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *slot = None;
        }
    }

    pub(crate) async fn session(&self, deadline: Instant) -> Result<Arc<Session>, Error> {
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(session) = self.live_session() {
            return Ok(session);
        }
        let (config, name, state) = (self.inner.config.clone(), self.inner.name.clone(), self.inner.state.clone());
        let url = config.url.redacted();
        let open = async move {
            let connection = connect_watched_with_retry(&config, &name, state.clone(), deadline).await?;
            let publisher = Publisher::open(&connection, config.confirm_timeout).await?.watching(state);
            Ok::<_, Error>((connection, publisher))
        };
        let (connection, publisher) = match &self.inner.io {
            Some(io) => match io.spawn(open).await {
                Ok(opened) => opened?,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(join) => {
                    return Err(Error::Connect {
                        url,
                        source: Cause::new(format!("the connecting task ended: {join}")),
                    })
                }
            },
            None => open.await?,
        };
        let session = Arc::new(Session::new(connection, publisher));
        *self.slot() = Some(session.clone());
        Ok(session)
    }
}

/// Unique jobs go one at a time (each asks the unique keeper first).
fn refuse_one_at_a_time<J: Job>(options: &EnqueueOptions) -> Result<(), Error> {
    if J::UNIQUE_FOR.is_some() || options.unique_for.is_some() || options.unique_key.is_some() {
        return Err(Error::Unsupported(
            "unique jobs in a bulk enqueue: enqueue each with enqueue() (each may be a duplicate)",
        ));
    }
    Ok(())
}

/// This host's name, for connection names and dead-letter headers.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
