//! Dead jobs: count, list, find, retry (attempts reset) and purge what sits
//! in `<queue>.dead`. Dead jobs stay until someone acts: the framework sets no
//! expiry on them.
//!
//! A dead-letter queue is read by walking it (`browse.rs`): the count is the
//! broker's and costs nothing, a page of the oldest jobs costs reading up to
//! that page, and what needs the whole queue (the newest jobs, a filter's
//! matches, one job by id) reads up to a budget and says when it stopped
//! short. Retry and purge walk the whole queue in windows, memory bounded,
//! and report their progress.

use amqprs::connection::Connection;
use amqprs::BasicProperties;
use serde::Serialize;

use crate::browse::{self, Held, Seen, Walk};
use crate::codec::{header_str, header_u64, headers, message_job_id};
use crate::confirm::{Outgoing, Publisher};
use crate::connection::{close_connection, connect};
use crate::destination::Destination;
use crate::message::{exchange_origin, Message};
use crate::topology::{dead_queue, Topology};
use crate::{untyped, AmqpConfig, Error, JobId};

/// Which dead jobs a listing or an action takes: those that match everything
/// set (nothing set: every one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadFilter {
    id: Option<String>,
    job_type: Option<String>,
    text: Option<String>,
    first: Option<u64>,
    /// Retry unique jobs whose key another job holds too.
    force: bool,
}

impl DeadFilter {
    /// Every dead job.
    pub fn all() -> Self {
        DeadFilter::default()
    }

    /// The job with this id.
    pub fn id(id: impl Into<String>) -> Self {
        DeadFilter { id: Some(id.into()), ..DeadFilter::default() }
    }

    /// Jobs of this type (job name).
    pub fn of_type(job_type: impl Into<String>) -> Self {
        DeadFilter::all().with_type(job_type)
    }

    /// Only jobs of this type too.
    #[must_use]
    pub fn with_type(mut self, job_type: impl Into<String>) -> Self {
        self.job_type = Some(job_type.into());
        self
    }

    /// Only jobs whose error contains `text` (ignoring case) too.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into().to_lowercase());
        self
    }

    /// Only among the first `n` dead jobs (the oldest) too: an action reads
    /// no further (the dashboard's Retry of one job reads at most its budget).
    #[must_use]
    pub fn among_first(mut self, n: u64) -> Self {
        self.first = Some(n);
        self
    }

    /// A retry takes unique jobs whose key another job holds now too (`dead
    /// retry --force`): both then run. Without it they stay dead, counted in
    /// [`Progress::held`].
    #[must_use]
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }

    /// Whether it takes every dead job.
    pub fn is_all(&self) -> bool {
        self.id.is_none() && self.job_type.is_none() && self.text.is_none() && self.first.is_none()
    }

    /// Whether it names one job by id.
    pub fn is_id(&self) -> bool {
        self.id.is_some()
    }

    fn matches(&self, job: &DeadJob) -> bool {
        self.first.map_or(true, |n| job.position < n)
            && self.id.as_deref().map_or(true, |id| job.id == id)
            && self.job_type.as_deref().map_or(true, |t| job.job_type.as_deref() == Some(t))
            && self
                .text
                .as_deref()
                .map_or(true, |text| job.error.as_deref().unwrap_or("").to_lowercase().contains(text))
    }
}

/// A job in a dead-letter queue, as the worker left it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    /// Job id (`message_id`).
    pub id: String,
    /// Its place in the dead queue when it was read (0: the oldest).
    pub position: u64,
    /// Job type (`type`), if the message had one.
    pub job_type: Option<String>,
    /// The queue it came from (for a job taken from an exchange: the exchange).
    pub queue: Option<String>,
    /// For a job taken from an exchange: the exchange a retry sends it back to.
    pub exchange: Option<String>,
    /// And the routing key it goes with.
    pub routing_key: Option<String>,
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
    /// The body as JSON (read without its type, within bounds); `null` when
    /// it is not shown, or not read (listings read no bodies).
    pub payload: serde_json::Value,
    /// Why the body is not shown, when it was read and is not.
    pub payload_error: Option<String>,
    /// The body's size in bytes.
    pub size: usize,
    /// A chain's step: where it stands in its chain, and the steps a retry
    /// of it runs after it (`null` for a job in no chain, or whose `x-chain`
    /// header does not decode).
    pub chain: Option<crate::ChainPlace>,
    /// The fraction done it said last (`ctx.progress`) before it ended dead, 0 to 1.
    pub progress: Option<f64>,
    /// The text it said with it.
    pub progress_text: Option<String>,
}

impl DeadJob {
    /// The job as its message says; with `body`, its payload too.
    fn of(props: &BasicProperties, body: Option<&[u8]>, size: usize, position: u64) -> Self {
        let text = |name| header_str(props, name).map(str::to_owned);
        // Dead-lettered by the broker itself (a quorum queue's delivery limit,
        // say): no framework headers, but the broker's own say why.
        let broker = text("x-first-death-reason");
        let error = text(headers::ERROR).or_else(|| broker.as_deref().map(|reason| broker_words(props, reason)));
        let (payload, payload_error) = match body.map(untyped::to_json) {
            Some(Ok(payload)) => (payload, None),
            Some(Err(why)) => (serde_json::Value::Null, Some(format!("cannot be shown: {why}"))),
            None => (serde_json::Value::Null, None),
        };
        let origin = exchange_origin(props);
        DeadJob {
            id: props.message_id().cloned().unwrap_or_default(),
            position,
            job_type: props.message_type().cloned(),
            queue: text(headers::QUEUE),
            exchange: origin.map(|(exchange, _)| exchange.to_owned()),
            routing_key: origin.map(|(_, key)| key.to_owned()),
            attempt: header_u64(props, headers::ATTEMPT),
            error_kind: text(headers::ERROR_KIND).or(broker),
            error,
            first_failed_at: header_u64(props, headers::FIRST_FAILED_AT),
            failed_at: header_u64(props, headers::FAILED_AT),
            worker: text(headers::WORKER),
            host: text(headers::HOST),
            payload,
            payload_error,
            size,
            chain: crate::chain::header_bytes(props, headers::CHAIN)
                .and_then(|bytes| crate::chain::ChainHeader::decode(&bytes).ok())
                .map(|header| header.place()),
            progress: header_u64(props, headers::PROGRESS).map(|per_mille| per_mille.min(1000) as f64 / 1000.0),
            progress_text: text(headers::PROGRESS_TEXT),
        }
    }
}

/// What the broker's dead-letter headers say, for a job it dead-lettered.
/// (Their `x-delivery-count` counts deliveries from the dead queue itself,
/// not from the queue the job died in: no count is claimed.)
fn broker_words(props: &BasicProperties, reason: &str) -> String {
    let queue = header_str(props, "x-first-death-queue").unwrap_or("its queue");
    match reason {
        "delivery_limit" => format!(
            "dead-lettered by RabbitMQ: delivered from {queue} more times than its x-delivery-limit without an ack"
        ),
        reason => format!("dead-lettered by RabbitMQ from {queue}: {reason}"),
    }
}

/// Which end of the dead queue a listing starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// The oldest first: the queue's own order; a page costs reading up to it.
    #[default]
    Oldest,
    /// The newest first: the whole queue is read (up to the budget).
    Newest,
}

/// What a listing asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadQuery {
    /// Which jobs.
    pub filter: DeadFilter,
    /// From which end.
    pub order: Order,
    /// Matches to pass over first (the pages before).
    pub skip: u64,
    /// Matches to return (a page).
    pub limit: usize,
    /// The most messages to read; past it the page says it stopped short.
    pub budget: u64,
    /// Read on to the end (within the budget) to count every match, not only up to the page.
    pub count: bool,
}

impl DeadQuery {
    /// The first `limit` jobs, oldest first, of every kind.
    pub fn new(limit: usize) -> Self {
        DeadQuery { filter: DeadFilter::all(), order: Order::Oldest, skip: 0, limit, budget: u64::MAX, count: false }
    }

    /// Only the jobs `filter` takes.
    #[must_use]
    pub fn filter(mut self, filter: DeadFilter) -> Self {
        self.filter = filter;
        self
    }

    /// From this end.
    #[must_use]
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// After passing over `skip` matches.
    #[must_use]
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    /// Reading at most `budget` messages.
    #[must_use]
    pub fn budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }

    /// Counting every match (within the budget).
    #[must_use]
    pub fn counting(mut self) -> Self {
        self.count = true;
        self
    }
}

/// A page of dead jobs, and how much of the queue it saw.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DeadPage {
    /// Dead jobs in the queue when it was read: the true count.
    pub total: u64,
    /// Messages read to make the page.
    pub scanned: u64,
    /// Matches among those read.
    pub matched: u64,
    /// Whether every message was read (so `matched` is the count of all matches).
    pub complete: bool,
    /// The page: jobs in the order asked for, without their bodies.
    pub jobs: Vec<DeadJob>,
}

/// What a retry or purge has done, so far or in all: the progress a long
/// one reports as it goes, and its result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Progress {
    /// Dead jobs in the queue when it began.
    pub total: u64,
    /// Read so far.
    pub scanned: u64,
    /// Retried or deleted.
    pub acted: u64,
    /// Taken by the filter but not retried: the broker refused the copy (a
    /// routed job no queue takes now, say). They stay dead.
    pub failed: u64,
    /// Why the first of those was refused.
    pub first_failure: Option<String>,
    /// Taken by the filter but not retried: unique jobs whose key another
    /// job holds now (`--force` retries them anyway). They stay dead.
    pub held: u64,
    /// The first of those: its id and the holder's.
    pub first_held: Option<String>,
    /// Not read at all: the queue had none left to give before the end
    /// (another reader held them). They stay dead.
    pub not_reached: u64,
}

/// A connection for managing dead jobs.
pub struct DeadLetters {
    connection: Connection,
    /// Where retried jobs are published; opened again when the broker closes it.
    publisher: tokio::sync::Mutex<Publisher>,
    /// Asks the unique keeper for the keys of unique jobs retried (connects on first use).
    client: crate::Client,
    confirm_timeout: std::time::Duration,
    topology: Topology,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("connection", &self.connection.connection_name()).finish()
    }
}

/// Copies published back to back before their confirms are awaited, in a retry.
const RETRY_BATCH: usize = 500;

/// What finding one dead job by id found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Found {
    /// The job, with its payload.
    Job(Box<DeadJob>),
    /// No dead job has that id among those read: `complete` when every one was.
    Missing {
        /// Dead jobs read.
        scanned: u64,
        /// Dead jobs in the queue.
        total: u64,
        /// Whether every one was read.
        complete: bool,
    },
}

impl DeadLetters {
    /// Connects to the broker.
    ///
    /// # Errors
    /// [`Error::Connect`] when it cannot.
    pub async fn connect(config: &AmqpConfig) -> Result<Self, Error> {
        let connection = connect(config, &format!("jobs-admin:{}", std::process::id())).await?;
        let publisher = Publisher::open(&connection, config.confirm_timeout).await?;
        Ok(DeadLetters {
            connection,
            publisher: tokio::sync::Mutex::new(publisher),
            client: crate::Client::new(config.clone()),
            confirm_timeout: config.confirm_timeout,
            topology: config.topology(),
        })
    }

    /// `<queue>.dead`, for a job queue name that names one.
    fn dead(queue: &str) -> Result<String, Error> {
        crate::names::validate_queue_name(queue)?;
        Ok(dead_queue(queue))
    }

    /// A walk of the dead queue of `queue`, with a first window of `first`
    /// messages. Whoever starts one ends it with [`Walk::finish`], also on an
    /// error, so that what it held is back in the queue before the next.
    async fn walk(&self, queue: &str, first: u64) -> Result<Walk, Error> {
        Walk::start(&self.connection, &Self::dead(queue)?, first).await
    }

    /// How many dead jobs `queue` (the job queue's name, not `.dead`) has: the broker's count.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn count(&self, queue: &str) -> Result<u64, Error> {
        Ok(u64::from(browse::ready(&self.connection, &Self::dead(queue)?).await?))
    }

    /// Lists up to `limit` dead jobs of `queue`, oldest first, leaving them
    /// where they are; with their payloads.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, Error> {
        if limit == 0 {
            Self::dead(queue)?;
            return Ok(Vec::new());
        }
        let mut walk = self.walk(queue, (limit as u64).saturating_add(1)).await?;
        let jobs = read_list(&mut walk, limit).await;
        walk.finish().await;
        jobs
    }

    /// A page of the dead jobs of `queue` (without their payloads), as `query` asks.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn page(&self, queue: &str, query: &DeadQuery) -> Result<DeadPage, Error> {
        let first = match (query.order, query.count) {
            (Order::Oldest, false) => query.skip.saturating_add(query.limit as u64).saturating_add(1),
            _ => u64::MAX,
        };
        let mut walk = self.walk(queue, first).await?;
        let page = read_page(&mut walk, query).await;
        walk.finish().await;
        page
    }

    /// The dead job of `queue` with id `id`, with its payload, reading at
    /// most `budget` dead jobs (`u64::MAX`: the whole queue).
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn find(&self, queue: &str, id: &str, budget: u64) -> Result<Found, Error> {
        let mut walk = self.walk(queue, budget.min(2_000)).await?;
        let found = read_find(&mut walk, id, budget).await;
        walk.finish().await;
        found
    }

    /// Sends the matching dead jobs back with the attempt count reset and the
    /// failure headers removed: a job from a queue to that queue, a job taken
    /// from an exchange (a broadcast, a routed job: its dead queue is
    /// `<exchange>.dead`) to that exchange with its routing key. Each copy is
    /// confirmed before the dead one is removed; one the broker refuses (a
    /// routed job no queue takes now) stays dead and is counted, and the rest
    /// go on.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails; the jobs not
    /// yet moved stay dead.
    pub async fn retry(&self, queue: &str, filter: &DeadFilter) -> Result<Progress, Error> {
        self.retry_with(queue, filter, |_| {}).await
    }

    /// [`DeadLetters::retry`], telling `progress` how far it got as it goes
    /// (after each batch of copies).
    ///
    /// # Errors
    /// As [`DeadLetters::retry`].
    pub async fn retry_with(
        &self,
        queue: &str,
        filter: &DeadFilter,
        progress: impl FnMut(&Progress),
    ) -> Result<Progress, Error> {
        self.act(queue, filter, true, progress).await
    }

    /// Deletes the matching dead jobs for good.
    ///
    /// # Errors
    /// When the dead queue does not exist or the broker fails.
    pub async fn purge(&self, queue: &str, filter: &DeadFilter) -> Result<Progress, Error> {
        self.purge_with(queue, filter, |_| {}).await
    }

    /// [`DeadLetters::purge`], telling `progress` how far it got as it goes.
    ///
    /// # Errors
    /// As [`DeadLetters::purge`].
    pub async fn purge_with(
        &self,
        queue: &str,
        filter: &DeadFilter,
        progress: impl FnMut(&Progress),
    ) -> Result<Progress, Error> {
        self.act(queue, filter, false, progress).await
    }

    /// Walks the dead queue once, retrying or deleting what `filter` takes.
    async fn act(
        &self,
        queue: &str,
        filter: &DeadFilter,
        retry: bool,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Progress, Error> {
        let mut walk = self.walk(queue, 2 * RETRY_BATCH as u64).await?;
        let done = self.act_on(&mut walk, queue, filter, retry, &mut progress).await;
        walk.finish().await;
        done
    }

    async fn act_on(
        &self,
        walk: &mut Walk,
        queue: &str,
        filter: &DeadFilter,
        retry: bool,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<Progress, Error> {
        let mut done = Progress { total: walk.total(), ..Progress::default() };
        let mut batch: Vec<Seen> = Vec::new();
        let first = filter.first.unwrap_or(u64::MAX);
        loop {
            let next = if walk.seen() < first { walk.next().await? } else { None };
            // One id is one job: the walk ends at it.
            let mut last = next.is_none();
            if let Some(seen) = next {
                if filter.matches(&DeadJob::of(&seen.props, None, seen.body.len(), seen.index)) {
                    last = filter.is_id();
                    batch.push(seen);
                }
            }
            if batch.len() >= RETRY_BATCH || (last && !batch.is_empty()) {
                let action = if retry { Action::Retry { force: filter.force } } else { Action::Purge };
                let settled = self.settle(walk, queue, std::mem::take(&mut batch), action, &mut done).await;
                done.scanned = walk.seen();
                progress(&done);
                settled?;
            }
            if last {
                break;
            }
        }
        done.scanned = walk.seen();
        if walk.ended_early() {
            done.not_reached = done.total.saturating_sub(done.scanned);
        }
        progress(&done);
        Ok(done)
    }

    /// Retries (copies confirmed, then acked) or deletes a batch of dead
    /// jobs. A copy the broker refuses leaves its job dead (counted); an ack
    /// that fails ends the walk, after the rest of the batch is acked.
    async fn settle(
        &self,
        walk: &mut Walk,
        queue: &str,
        batch: Vec<Seen>,
        action: Action,
        done: &mut Progress,
    ) -> Result<(), Error> {
        let mut take = Vec::with_capacity(batch.len());
        if let Action::Retry { force } = action {
            let mut copies = Vec::with_capacity(batch.len());
            let mut held: Vec<(Held, Option<KeyHold>)> = Vec::with_capacity(batch.len());
            for seen in batch {
                let Some(key) = self.takes_key(&seen.props, force, done).await else { continue };
                match self.revived(queue, seen.props, seen.body, key.as_ref()) {
                    Ok(copy) => {
                        copies.push(copy);
                        held.push((seen.held, key));
                    }
                    Err(err) => {
                        self.give_back(key).await;
                        refused(done, &err);
                    }
                }
            }
            let mut publisher = self.publisher.lock().await;
            let mut uncertain = Vec::new();
            for ((held, copy), stored) in
                held.into_iter().zip(copies.clone()).zip(publisher.publish_many(copies).await?)
            {
                match stored {
                    Ok(()) => take.push(held.0),
                    // An innocent bystander of a channel the broker closed for another copy's fault.
                    Err(Error::Closed { .. }) => uncertain.push((held, copy)),
                    Err(err) => {
                        self.give_back(held.1).await;
                        refused(done, &err);
                    }
                }
            }
            if !uncertain.is_empty() || !publisher.is_open() {
                // The broker closed the channel (a copy it refused for good, say): a new
                // one, and the copies it had not confirmed once more on it.
                *publisher = Publisher::open(&self.connection, self.confirm_timeout).await?;
                let (held, copies): (Vec<(Held, Option<KeyHold>)>, Vec<Outgoing>) = uncertain.into_iter().unzip();
                for (held, stored) in held.into_iter().zip(publisher.publish_many(copies).await?) {
                    match stored {
                        Ok(()) => take.push(held.0),
                        Err(err) => {
                            self.give_back(held.1).await;
                            refused(done, &err);
                        }
                    }
                }
            }
            drop(publisher);
        } else {
            take.extend(batch.into_iter().map(|seen| seen.held));
        }
        let mut first_error = None;
        for held in take {
            match walk.ack(held).await {
                Ok(()) => done.acted += 1,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether a dead job may run again as far as its unique key goes, and
    /// with which hold of it: `Some(None)` for one without a key (or forced
    /// while another job holds it), `Some(Some(hold))` when the keeper gave it
    /// the key again; `None` (it stays dead) when another job holds it (counted
    /// held) or the keeper could not be asked (counted failed), unless `force`.
    async fn takes_key(&self, props: &BasicProperties, force: bool, done: &mut Progress) -> Option<Option<KeyHold>> {
        let Some(unique) = crate::unique::Uniqueness::marked(props) else { return Some(None) };
        let id = message_job_id(props);
        let job = props.message_type().map_or("", String::as_str);
        match self.client.reserve_unique(&unique, &id, job).await {
            Ok(token) => Some(Some(KeyHold { unique, id, token })),
            Err(_) if force => Some(None),
            Err(Error::Duplicate { existing }) => {
                done.held += 1;
                done.first_held.get_or_insert_with(|| {
                    format!("{id}: its unique key is held by job {existing}, queued or running now")
                });
                None
            }
            Err(err) => {
                refused(done, &err);
                None
            }
        }
    }

    /// Gives back the key a retried job took, when its copy was not stored.
    async fn give_back(&self, key: Option<KeyHold>) {
        if let Some(KeyHold { unique, id, token }) = key {
            self.client.give_back(&unique, &id, &token).await;
        }
    }

    /// The dead job as a fresh first attempt, to where it came from: its
    /// exchange, for a job taken from one (its dead queue is the exchange's),
    /// else its queue.
    /// A unique job goes with its new hold's token (none: a forced one, with no hold of its own).
    fn revived(
        &self,
        queue: &str,
        props: BasicProperties,
        body: Vec<u8>,
        key: Option<&KeyHold>,
    ) -> Result<Outgoing, Error> {
        let destination = match exchange_origin(&props).filter(|(exchange, _)| *exchange == queue) {
            Some((exchange, routing_key)) => {
                crate::confirm::validate_name(routing_key)?;
                Destination::exchange(exchange, routing_key)
            }
            None => Destination::to_queue(self.topology, queue, None)?,
        };
        let id = message_job_id(&props);
        let mut copy = Message::copy(&props, body, id).revived();
        if header_str(&props, headers::UNIQUE_KEY).is_some() {
            let token = key.map_or("", |k| k.token.as_str());
            copy = copy.header(headers::UNIQUE_TOKEN, amqprs::FieldValue::from(token));
        }
        Ok(copy.into_outgoing(&destination))
    }

    /// Whether its connection is open.
    pub fn is_open(&self) -> bool {
        self.connection.is_open()
    }

    /// Closes the connection (shared handles too: what they do next fails).
    pub async fn close(&self) {
        self.client.close().await;
        close_connection(self.connection.clone()).await;
    }
}

/// Up to `limit` dead jobs of a walk, with their payloads.
async fn read_list(walk: &mut Walk, limit: usize) -> Result<Vec<DeadJob>, Error> {
    let mut jobs = Vec::new();
    while let Some(seen) = walk.next().await? {
        jobs.push(DeadJob::of(&seen.props, Some(&seen.body), seen.body.len(), seen.index));
        if jobs.len() >= limit {
            break;
        }
    }
    Ok(jobs)
}

/// The page `query` asks for, from a walk.
async fn read_page(walk: &mut Walk, query: &DeadQuery) -> Result<DeadPage, Error> {
    let total = walk.total();
    let wanted = query.skip.saturating_add(query.limit as u64);
    // Oldest first: the page itself. Newest first: the last `wanted` matches seen.
    let mut kept: std::collections::VecDeque<DeadJob> = std::collections::VecDeque::new();
    let mut matched = 0u64;
    while walk.seen() < query.budget {
        let Some(seen) = walk.next().await? else { break };
        let job = DeadJob::of(&seen.props, None, seen.body.len(), seen.index);
        if !query.filter.matches(&job) {
            continue;
        }
        matched += 1;
        match query.order {
            Order::Oldest => {
                if matched > query.skip && matched <= wanted {
                    kept.push_back(job);
                }
                if matched >= wanted && !query.count {
                    break;
                }
            }
            Order::Newest => {
                kept.push_back(job);
                // The last `wanted` matches, no more than the budget lets be read.
                if kept.len() as u64 > wanted.min(query.budget) {
                    kept.pop_front();
                }
            }
        }
    }
    let jobs = match query.order {
        Order::Oldest => kept.into_iter().collect(),
        Order::Newest => {
            let skip = query.skip.min(kept.len() as u64) as usize;
            kept.into_iter().rev().skip(skip).collect()
        }
    };
    Ok(DeadPage { total, scanned: walk.seen(), matched, complete: walk.seen() >= total, jobs })
}

/// The dead job with id `id`, reading at most `budget` of a walk.
async fn read_find(walk: &mut Walk, id: &str, budget: u64) -> Result<Found, Error> {
    while walk.seen() < budget {
        let Some(seen) = walk.next().await? else { break };
        let job = DeadJob::of(&seen.props, Some(&seen.body), seen.body.len(), seen.index);
        if job.id == id {
            return Ok(Found::Job(Box::new(job)));
        }
    }
    Ok(Found::Missing { scanned: walk.seen(), total: walk.total(), complete: walk.seen() >= walk.total() })
}

/// A retried unique job's new hold of its key.
struct KeyHold {
    unique: crate::unique::Uniqueness,
    id: JobId,
    token: String,
}

/// What a walk does with the dead jobs it takes.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Sends them back; `force`: unique ones whose key is held too.
    Retry { force: bool },
    /// Deletes them.
    Purge,
}

/// Counts a dead job the filter took that stays dead, and why the first one did.
fn refused(done: &mut Progress, err: &Error) {
    done.failed += 1;
    done.first_failure.get_or_insert_with(|| crate::report(err));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, job_type: &str, error: &str) -> DeadJob {
        let mut table = amqprs::FieldTable::new();
        crate::codec::set_header(&mut table, headers::ERROR, amqprs::FieldValue::from(error));
        let props =
            BasicProperties::default().with_message_id(id).with_message_type(job_type).with_headers(table).finish();
        DeadJob::of(&props, None, 0, 0)
    }

    #[test]
    fn a_filter_takes_what_matches_everything_set() {
        let a = job("a", "Mail", "SMTP refused: 550");
        let b = job("b", "Report", "timed out");
        assert!(DeadFilter::all().matches(&a) && DeadFilter::all().is_all());
        assert!(DeadFilter::id("a").matches(&a) && !DeadFilter::id("a").matches(&b));
        assert!(DeadFilter::of_type("Mail").matches(&a) && !DeadFilter::of_type("Mail").matches(&b));
        assert!(DeadFilter::all().with_text("smtp").matches(&a), "text ignores case");
        assert!(!DeadFilter::of_type("Mail").with_text("timed").matches(&a), "every part must match");
        assert!(DeadFilter::of_type("Report").with_text("TIMED").matches(&b));
    }

    #[test]
    fn a_dead_job_says_why_its_body_is_not_shown() {
        let props = BasicProperties::default().with_message_id("x").finish();
        let deep = [vec![0x91u8; 1000], vec![0xc0]].concat();
        let shown = DeadJob::of(&props, Some(&deep), deep.len(), 3);
        assert!(shown.payload.is_null());
        assert_eq!(shown.payload_error.as_deref(), Some("cannot be shown: it nests deeper than 128 levels"));
        assert_eq!((shown.size, shown.position), (1001, 3));
        let fine = DeadJob::of(&props, Some(&[0x81, 0xa1, b'a', 0x01]), 4, 0);
        assert_eq!((fine.payload, fine.payload_error), (serde_json::json!({ "a": 1 }), None));
    }
}
