//! Dead jobs: list, retry (attempts reset) and purge what sits in `<queue>.dead`.
//! Dead jobs stay until someone acts: the framework sets no expiry on them.

use amqprs::channel::{BasicAckArguments, BasicGetArguments, Channel};
use amqprs::connection::Connection;
use amqprs::{BasicProperties, FieldValue};
use serde::Serialize;

use crate::codec::{header_str, header_u64, headers, message_job_id, set_header};
use crate::confirm::Outgoing;
use crate::confirm::Publisher;
use crate::connection::{close_connection, connect};
use crate::topology::dead_queue;
use crate::{AmqpConfig, Error};

/// Which dead jobs an action takes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadFilter {
    /// Every one.
    All,
    /// The job with this id.
    Id(String),
    /// Jobs of this type (job name).
    Type(String),
}

impl DeadFilter {
    fn matches(&self, job: &DeadJob) -> bool {
        match self {
            DeadFilter::All => true,
            DeadFilter::Id(id) => job.id == *id,
            DeadFilter::Type(name) => job.job_type.as_deref() == Some(name.as_str()),
        }
    }
}

/// A job in a dead-letter queue, as the worker left it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    /// Job id (`message_id`).
    pub id: String,
    /// Job type (`type`), if the message had one.
    pub job_type: Option<String>,
    /// The queue it came from.
    pub queue: Option<String>,
    /// The last attempt's number.
    pub attempt: Option<u64>,
    /// The kind of failure (`failed`, `crashed`, `undecodable`…).
    pub error_kind: Option<String>,
    /// The last error's text.
    pub error: Option<String>,
    /// When it first failed (seconds since the epoch).
    pub first_failed_at: Option<u64>,
    /// When it last failed (seconds since the epoch).
    pub failed_at: Option<u64>,
    /// The worker that dead-lettered it.
    pub worker: Option<String>,
    /// The host of that worker.
    pub host: Option<String>,
    /// The body decoded from MessagePack, or `null` when it does not decode.
    pub payload: serde_json::Value,
    /// The body's size in bytes.
    pub size: usize,
}

impl DeadJob {
    fn of(props: &BasicProperties, body: &[u8]) -> Self {
        let text = |name| header_str(props, name).map(str::to_owned);
        // Dead-lettered by the broker itself (a quorum queue's delivery limit,
        // say): no framework headers, but the broker's own say why.
        let broker = text("x-first-death-reason");
        let error = text(headers::ERROR).or_else(|| broker.as_deref().map(|reason| broker_words(props, reason)));
        DeadJob {
            id: props.message_id().cloned().unwrap_or_default(),
            job_type: props.message_type().cloned(),
            queue: text(headers::QUEUE),
            attempt: header_u64(props, headers::ATTEMPT),
            error_kind: text(headers::ERROR_KIND).or(broker),
            error,
            first_failed_at: header_u64(props, headers::FIRST_FAILED_AT),
            failed_at: header_u64(props, headers::FAILED_AT),
            worker: text(headers::WORKER),
            host: text(headers::HOST),
            payload: rmp_serde::from_slice(body).unwrap_or(serde_json::Value::Null),
            size: body.len(),
        }
    }
}

/// What the broker's dead-letter headers say, for a job it dead-lettered.
fn broker_words(props: &BasicProperties, reason: &str) -> String {
    let deliveries = header_u64(props, "x-delivery-count");
    let queue = header_str(props, "x-first-death-queue").unwrap_or("its queue");
    match (reason, deliveries) {
        ("delivery_limit", Some(n)) => format!(
            "dead-lettered by RabbitMQ: delivered {n} times from {queue} without an ack, past its x-delivery-limit"
        ),
        (reason, _) => format!("dead-lettered by RabbitMQ from {queue}: {reason}"),
    }
}

/// A connection for managing dead jobs.
pub struct DeadLetters {
    connection: Connection,
    publisher: Publisher,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("connection", &self.connection.connection_name()).finish()
    }
}

impl DeadLetters {
    /// Connects to the broker.
    ///
    /// # Errors
    /// [`Error::Connect`] when it cannot.
    pub async fn connect(config: &AmqpConfig) -> Result<Self, Error> {
        let connection = connect(config, &format!("jobs-admin:{}", std::process::id())).await?;
        let publisher = Publisher::open(&connection, config.confirm_timeout).await?;
        Ok(DeadLetters { connection, publisher })
    }

    /// Lists up to `limit` dead jobs of `queue` (the job queue's name, not `.dead`),
    /// oldest first, leaving them where they are.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, Error> {
        let mut jobs = Vec::new();
        if limit == 0 {
            return Ok(jobs);
        }
        self.each(queue, |job, _, _| {
            jobs.push(job);
            // Got no further than the page asks: a long dead queue is not walked.
            if jobs.len() < limit {
                Action::Keep
            } else {
                Action::Stop
            }
        })
        .await?;
        Ok(jobs)
    }

    /// Sends the matching dead jobs back to `queue` with the attempt count reset
    /// and the failure headers removed (each copy confirmed before the dead one
    /// is removed). Returns how many.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails; the jobs not yet
    /// moved stay dead.
    pub async fn retry(&self, queue: &str, filter: &DeadFilter) -> Result<usize, Error> {
        self.each(queue, |job, _, _| if filter.matches(&job) { Action::Retry } else { Action::Keep }).await
    }

    /// Deletes the matching dead jobs for good. Returns how many.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn purge(&self, queue: &str, filter: &DeadFilter) -> Result<usize, Error> {
        self.each(queue, |job, _, _| if filter.matches(&job) { Action::Delete } else { Action::Keep }).await
    }

    /// Walks the dead queue once on a channel of its own: each message is got
    /// unacked, so none is seen twice; those kept go back when the channel closes.
    async fn each(
        &self,
        queue: &str,
        mut decide: impl FnMut(DeadJob, &BasicProperties, &[u8]) -> Action,
    ) -> Result<usize, Error> {
        let amqp = Error::amqp;
        let dead = dead_queue(queue);
        let channel = self.connection.open_channel(None).await.map_err(amqp("channel.open"))?;
        let mut acted = 0;
        let result = async {
            while let Some((get_ok, props, body)) =
                channel.basic_get(BasicGetArguments::new(&dead)).await.map_err(amqp("basic.get"))?
            {
                let tag = get_ok.delivery_tag();
                match decide(DeadJob::of(&props, &body), &props, &body) {
                    Action::Keep => {}
                    Action::Stop => break,
                    Action::Delete => {
                        ack(&channel, tag).await?;
                        acted += 1;
                    }
                    Action::Retry => {
                        self.publisher.publish(revived(queue, &props, body)).await?;
                        ack(&channel, tag).await?;
                        acted += 1;
                    }
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        let _ = channel.close().await;
        result.map(|()| acted)
    }

    /// Closes the connection.
    pub async fn close(self) {
        close_connection(self.connection).await;
    }
}

enum Action {
    Keep,
    /// Keep this one and get no more.
    Stop,
    Delete,
    Retry,
}

async fn ack(channel: &Channel, tag: u64) -> Result<(), Error> {
    channel.basic_ack(BasicAckArguments::new(tag, false)).await.map_err(Error::amqp("basic.ack"))
}

/// The dead job as a fresh first attempt on `queue`.
fn revived(queue: &str, props: &BasicProperties, body: Vec<u8>) -> Outgoing {
    let mut table = props.headers().cloned().unwrap_or_default();
    for name in [
        headers::ERROR,
        headers::ERROR_KIND,
        headers::FAILED_AT,
        headers::FIRST_FAILED_AT,
        headers::WORKER,
        headers::HOST,
        headers::QUEUE,
        headers::CRASHES,
        "x-death",
    ] {
        if let Ok(key) = name.try_into() {
            table.remove(&key);
        }
    }
    set_header(&mut table, headers::ATTEMPT, FieldValue::l(1));
    let id = message_job_id(props);
    let mut properties = props.clone();
    properties.with_headers(table).with_message_id(id.as_str()).with_persistence(true);
    Outgoing { id, exchange: String::new(), routing_key: queue.to_owned(), properties, body }
}
