//! The enqueue client: durable, confirmed, pipelined publishing of jobs.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use amqprs::connection::Connection;
use tracing::debug;

use crate::confirm::Outgoing;
use crate::{codec, connect, topology, AmqpConfig, Error, Job, JobId, Publisher};

static GLOBAL: OnceLock<Client> = OnceLock::new();

/// Per-call settings of an enqueue.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Send to this queue instead of the job type's own.
    pub queue: Option<String>,
    /// Use this job id instead of a new one (for producers that dedupe).
    pub id: Option<JobId>,
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
}

/// A connection to the broker for enqueueing jobs. Cheap to clone; clones share
/// one connection and one confirm channel, on which concurrent enqueues pipeline.
///
/// It connects on first use and again on the next use after the connection was lost.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    name: String,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

struct Session {
    connection: Connection,
    publisher: Publisher,
    declared: tokio::sync::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.config.url)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Client {
    /// A client that connects on first use.
    pub fn new(config: AmqpConfig) -> Self {
        let name = format!("jobs-client:{}:{}", hostname(), std::process::id());
        Client {
            inner: Arc::new(Inner {
                config,
                name,
                session: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// A client connected now, so that a wrong URL or password shows at start.
    ///
    /// # Errors
    /// [`Error::Connect`] when the broker cannot be reached.
    pub async fn connect(config: AmqpConfig) -> Result<Self, Error> {
        let client = Client::new(config);
        client.session().await?;
        Ok(client)
    }

    /// Makes `client` the process-wide client that [`Job::enqueue`] uses.
    ///
    /// # Errors
    /// [`Error::GlobalClientAlreadySet`] when one is set already.
    pub fn init_global(client: Client) -> Result<(), Error> {
        GLOBAL
            .set(client)
            .map_err(|_| Error::GlobalClientAlreadySet)
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
    /// [`Error::Connect`] when the broker cannot be reached; [`Error::Nacked`],
    /// [`Error::Unroutable`], [`Error::Closed`] or [`Error::ConfirmTimeout`] when
    /// the broker did not confirm it. Only `Ok` means the job is stored.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<JobId, Error> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// [`Client::enqueue`] with per-call options (another queue, a given id).
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_with<J: Job>(
        &self,
        job: &J,
        options: EnqueueOptions,
    ) -> Result<JobId, Error> {
        let queue = options.queue.as_deref().unwrap_or(J::QUEUE);
        let message = outgoing(job, queue, options.id.clone().unwrap_or_default())?;
        let id = message.id.clone();
        let session = self.session().await?;
        session.declare(queue).await?;
        session.publisher.publish(message).await?;
        debug!(job.name = J::NAME, job.id = %id, queue, "enqueued");
        Ok(id)
    }

    /// Enqueues many jobs of one type: all are published back to back, then all
    /// confirms awaited. Returns their ids, in order, when every one was confirmed.
    ///
    /// # Errors
    /// The first job's error when any was not confirmed; the others may be stored.
    pub async fn enqueue_many<J: Job>(&self, jobs: &[J]) -> Result<Vec<JobId>, Error> {
        let messages = jobs
            .iter()
            .map(|job| outgoing(job, J::QUEUE, JobId::new()))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<JobId> = messages.iter().map(|m| m.id.clone()).collect();
        let session = self.session().await?;
        session.declare(J::QUEUE).await?;
        for result in session.publisher.publish_many(messages).await? {
            result?;
        }
        Ok(ids)
    }

    /// Closes the connection; the next enqueue opens a new one.
    pub async fn close(&self) {
        if let Some(session) = self.inner.session.lock().await.take() {
            let _ = session.connection.clone().close().await;
        }
    }

    async fn session(&self) -> Result<Arc<Session>, Error> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            if session.connection.is_open() && session.publisher.is_open() {
                return Ok(session.clone());
            }
        }
        let connection = connect(&self.inner.config, &self.inner.name).await?;
        let publisher = Publisher::open(&connection, self.inner.config.confirm_timeout).await?;
        let session = Arc::new(Session {
            connection,
            publisher,
            declared: Default::default(),
        });
        *slot = Some(session.clone());
        Ok(session)
    }
}

impl Session {
    async fn declare(&self, queue: &str) -> Result<(), Error> {
        let mut declared = self.declared.lock().await;
        if !declared.contains(queue) {
            topology::declare_job_queue(self.publisher.channel(), queue).await?;
            declared.insert(queue.to_owned());
        }
        Ok(())
    }
}

fn outgoing<J: Job>(job: &J, queue: &str, id: JobId) -> Result<Outgoing, Error> {
    topology::validate_queue_name(queue)?;
    Ok(Outgoing {
        properties: codec::job_properties(J::NAME, &id, 1),
        body: codec::encode(job)?,
        id,
        exchange: String::new(),
        routing_key: queue.to_owned(),
    })
}

/// This host's name, for connection names and dead-letter headers.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
