//! Rate limits: `#[job(rate = "100/s")]` (with `burst`, by default the
//! rate's count) or `[[limits]] rate`: jobs of the type start at no more
//! than that rate across every worker of the vhost. With `rate_key =
//! "field"` each value of the field has the rate on its own.
//!
//! State lives in the broker, kept by one leader per rate-limited type
//! (single active consumer on `jobs.rate.<Type>.leader`, as the scheduler's):
//!
//! - A type's rate is a token bucket, the queue `jobs.rate.<Type>`: the
//!   acting leader publishes `count` tokens per period into it, evenly, and
//!   never lets it hold more than `burst` ready (it starts empty, so a new
//!   leader adds no burst of its own). A job of the type takes a token before
//!   it starts: its worker consumes the token queue (prefetch 1) while it
//!   has jobs waiting, acks a token and starts one job with it. A waiting job
//!   holds a place in its type's own queue's prefetch, nothing else (so no
//!   other type waits behind it); one that gets no token within a minute goes
//!   to wait in the delay cascade for a second (a very slow rate, or no
//!   leader). A worker takes tokens a tenth of the burst at a time (1 to 32,
//!   its prefetch on the token queue); with no job waiting it holds those it
//!   has (unacked) for 2 s at most, then closes its channel and they go back.
//! - A keyed rate is a GCRA per key, in the leader's memory: a worker asks
//!   the leader (`jobs.rate.<Type>.ask`, direct reply-to, 5 s to answer) as
//!   a job comes up; the answer is "go", or the time until the key's next
//!   turn, which the job waits in the delay cascade (whole seconds, rounded
//!   up: never early) before it asks again. The leader tracks a key only
//!   while its bucket is not full, at most [`MAX_KEYS`] at once; a new key
//!   past that waits a second. A new leader starts every key empty for one
//!   period (what the last leader granted in it is not known).
//!
//! Bounds (documented in `docs/flow-control.md`, measured in
//! `jobs-worker/tests/rates.rs` and the bench): starts in any window of `t`
//! are at most `burst + rate × t`, plus each worker's token prefetch;
//! under a leader change the new leader starts empty, so none are added.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel, QueueDeclareArguments,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::plumbing::{close_connection, connect, set_header, Hold, Leader};
use jobs_core::{report, AmqpConfig, QueueType, Rate};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::leadership::{self, Ended};

/// The most keys a keyed rate's leader tracks at once.
pub(crate) const MAX_KEYS: usize = 100_000;
/// The longest a job waits for a token before it waits in the cascade (and
/// at most a third of the broker's `consumer_timeout`, which would take
/// the waiting delivery's channel back).
const TOKEN_WAIT: Duration = Duration::from_secs(60);
/// The longest a worker waits for the leader's answer for a key.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// What a job waits when no answer or no token came: then it asks again.
const AGAIN: Duration = Duration::from_secs(1);
/// How long a worker with no job waiting keeps its token consumer.
const LINGER: Duration = Duration::from_secs(2);
/// How often a leader renews its leadership.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// Returns of a token before a quorum queue would drop it (20 by default on
/// RabbitMQ 4.x): high, so tokens are never dropped.
const TOKEN_DELIVERY_LIMIT: i64 = 1_000_000;

/// The token queue of a rate-limited type.
pub(crate) fn token_queue(job: &str) -> String {
    format!("jobs.rate.{job}")
}

/// The queue of the type's rate leadership.
pub(crate) fn leader_queue(job: &str) -> String {
    format!("jobs.rate.{job}.leader")
}

/// The queue a keyed rate's leader answers on.
pub(crate) fn ask_queue(job: &str) -> String {
    format!("jobs.rate.{job}.ask")
}

/// A request of a job to its worker's session: a token, or the leader's word for a key.
enum Request {
    Token(oneshot::Sender<()>),
    Ask { key: Vec<u8>, answer: oneshot::Sender<Duration> },
}

/// Whether a job may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It may; `held_back` when it waited longer than a token's interval.
    Go { held_back: bool },
    /// Not yet: it waits this long in the cascade, then asks again.
    Wait(Duration),
    /// The worker stops (or the session ended) while it waited.
    Stopped,
}

/// The rate limit of one job type, in one worker.
#[derive(Debug)]
pub(crate) struct RateLimit {
    pub(crate) job: &'static str,
    pub(crate) rate: Rate,
    pub(crate) burst: u32,
    pub(crate) key: Option<&'static str>,
    /// How long a job waits for a token before it waits in the cascade.
    token_wait: Duration,
    requests: mpsc::UnboundedSender<Request>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>,
    /// Whether this worker keeps the rate now (`jobs_rate_leader{job}`).
    acting: leadership::Acting,
    warned_key: AtomicBool,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Token(_) => "Token",
            Request::Ask { .. } => "Ask",
        })
    }
}

impl RateLimit {
    /// The rate of `job`; a waiting delivery is held no longer than a third of `consumer_timeout`.
    pub(crate) fn new(
        job: &'static str,
        (rate, burst, key): (Rate, u32, Option<&'static str>),
        consumer_timeout: Duration,
    ) -> Self {
        let (requests, inbox) = mpsc::unbounded_channel();
        RateLimit {
            job,
            rate,
            burst,
            key,
            token_wait: TOKEN_WAIT.min(consumer_timeout / 3).max(Duration::from_secs(1)),
            requests,
            inbox: tokio::sync::Mutex::new(inbox),
            acting: leadership::Acting::of_job("jobs_rate_leader", job),
            warned_key: AtomicBool::new(false),
        }
    }

    /// How many tokens a worker takes per round trip: a tenth of the burst,
    /// 1 to 32 (each one more a worker may hold while no job of its waits).
    pub(crate) fn token_prefetch(&self) -> u16 {
        u16::try_from((self.burst / 10).clamp(1, 32)).unwrap_or(1)
    }

    /// How long a job waits for a token before it waits in the cascade.
    #[cfg(test)]
    pub(crate) fn token_wait(&self) -> Duration {
        self.token_wait
    }

    /// What a heartbeat says of it.
    pub(crate) fn beat(&self) -> jobs_core::plumbing::events::RateBeat {
        jobs_core::plumbing::events::RateBeat {
            job: self.job.to_owned(),
            rate: self.rate.to_string(),
            burst: self.burst,
            key: self.key.map(str::to_owned),
            leading: self.acting.acts(),
        }
    }

    /// Waits for the job's turn (body `body`), until `end`. Cancel-safe: a
    /// dropped wait takes no token (one handed to it meanwhile is lost: under rate).
    pub(crate) async fn admit(&self, body: &[u8], end: &CancellationToken) -> Admit {
        let asked = Instant::now();
        match self.key {
            None => {
                let (tx, rx) = oneshot::channel();
                if self.requests.send(Request::Token(tx)).is_err() {
                    return Admit::Wait(AGAIN);
                }
                tokio::select! {
                    got = rx => match got {
                        Ok(()) => Admit::Go { held_back: asked.elapsed() > self.rate.interval().max(Duration::from_millis(10)) },
                        Err(_) => Admit::Wait(AGAIN),
                    },
                    _ = end.cancelled() => Admit::Stopped,
                    _ = tokio::time::sleep(self.token_wait) => {
                        debug!(job = self.job, "no token for a rate-limited job in time: it waits in the delay cascade");
                        Admit::Wait(AGAIN)
                    }
                }
            }
            Some(field) => {
                let key = self.key_of(body, field);
                let (tx, rx) = oneshot::channel();
                if self.requests.send(Request::Ask { key, answer: tx }).is_err() {
                    return Admit::Wait(AGAIN);
                }
                tokio::select! {
                    got = rx => match got {
                        Ok(wait) if wait.is_zero() => Admit::Go { held_back: false },
                        Ok(wait) => Admit::Wait(wait),
                        Err(_) => Admit::Wait(AGAIN),
                    },
                    _ = end.cancelled() => Admit::Stopped,
                    _ = tokio::time::sleep(ASK_TIMEOUT) => {
                        debug!(job = self.job, "no answer from the rate leader within 5 s: the job waits a second and asks again");
                        Admit::Wait(AGAIN)
                    }
                }
            }
        }
    }

    /// The key of a job: its field's value, as JSON bytes; a body without
    /// the field (it will not decode either) has the empty key.
    fn key_of(&self, body: &[u8], field: &str) -> Vec<u8> {
        match field_of(body, field) {
            Some(value) => short_key(value),
            None => {
                if !self.warned_key.swap(true, Ordering::Relaxed) {
                    warn!(
                        job = self.job,
                        rate_key = field,
                        "a job's body has no field of its rate_key: such jobs share one rate (this line comes once)"
                    );
                }
                Vec::new()
            }
        }
    }
}

/// The longest key kept as it is; a longer one is its first
/// `MAX_KEY_BYTES` and a 64-bit hash of the whole (so a producer's huge
/// values cannot grow the leader's memory past `MAX_KEYS` × about 140 bytes).
const MAX_KEY_BYTES: usize = 128;

/// `key`, or its first [`MAX_KEY_BYTES`] and a hash of it when longer.
pub(crate) fn short_key(mut key: Vec<u8>) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    if key.len() <= MAX_KEY_BYTES + 8 {
        return key;
    }
    // Keys (0, 0): every worker of a build hashes a key alike.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    key.truncate(MAX_KEY_BYTES);
    key.extend_from_slice(&hasher.finish().to_be_bytes());
    key
}

/// The value of `field` in a MessagePack map (a job's body), as JSON bytes.
pub(crate) use jobs_core::plumbing::unique::field_of;

/// The arguments of a token or ask queue (durable, of the worker's queue type).
async fn declare(channel: &Channel, queue: &str, queue_type: QueueType, ttl: Option<i64>) -> Result<(), String> {
    let mut args = FieldTable::new();
    if queue_type == QueueType::Quorum {
        set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
        set_header(&mut args, "x-delivery-limit", FieldValue::l(TOKEN_DELIVERY_LIMIT));
    }
    if let Some(ms) = ttl {
        set_header(&mut args, "x-message-ttl", FieldValue::l(ms));
    }
    let mut declare = QueueDeclareArguments::durable_client_named(queue);
    declare.arguments(args);
    channel.queue_declare(declare).await.map(drop).map_err(|e| format!("declaring {queue}: {e}"))
}

/// How long an ask waits in its queue for a leader.
const ASK_TTL_MS: i64 = 5_000;

/// Serves the rate's requests of this session's jobs on `connection` until
/// `halt` (or the connection closes; a channel error is tried again, 1 s to
/// 30 s apart). Run it detached.
pub(crate) async fn keep_serving(
    limit: Arc<RateLimit>,
    connection: Connection,
    queue_type: QueueType,
    halt: CancellationToken,
) {
    // One session at a time serves the requests (the last one's is winding down).
    let mut inbox = tokio::select! {
        inbox = limit.inbox.lock() => inbox,
        _ = halt.cancelled() => return,
    };
    let mut pause = jobs_core::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let serving = async {
            let channel = connection.open_channel(None).await.map_err(|e| e.to_string())?;
            let served = match limit.key {
                None => take_tokens(&limit, &connection, channel.clone(), queue_type, &mut inbox, &halt).await,
                Some(_) => ask(&limit, &channel, queue_type, &mut inbox, &halt).await,
            };
            let _ = channel.close().await;
            served
        };
        // A call hanging on a dead link does not keep the inbox from the next session.
        let served = tokio::select! {
            served = serving => served,
            _ = halt.cancelled() => return,
        };
        match served {
            Ok(()) => return,
            Err(why) => {
                if halt.is_cancelled() || !connection.is_open() {
                    return;
                }
                warn!(job = limit.job, reason = why, "cannot reach the rate limit of a job type; trying again");
            }
        }
        tokio::select! {
            _ = halt.cancelled() => return,
            _ = tokio::time::sleep(pause.next()) => {}
        }
    }
}

/// Hands tokens to waiting jobs: consumes the token queue while jobs wait
/// (and [`LINGER`] after), on a channel of its own each time.
async fn take_tokens(
    limit: &RateLimit,
    connection: &Connection,
    first: Channel,
    queue_type: QueueType,
    inbox: &mut mpsc::UnboundedReceiver<Request>,
    halt: &CancellationToken,
) -> Result<(), String> {
    let queue = token_queue(limit.job);
    declare(&first, &queue, queue_type, None).await?;
    let _ = first.close().await;
    let mut waiting: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    loop {
        // Idle: no consumer, until a job waits.
        while waiting.is_empty() {
            tokio::select! {
                _ = halt.cancelled() => return Ok(()),
                request = inbox.recv() => match request {
                    Some(Request::Token(waiter)) => waiting.push_back(waiter),
                    Some(Request::Ask { .. }) => {}
                    None => return Ok(()),
                },
            }
        }
        let channel = connection.open_channel(None).await.map_err(|e| e.to_string())?;
        let taken = take_on(limit, &channel, &queue, &mut waiting, inbox, halt).await;
        // A token held for no one goes back with the channel.
        let _ = channel.close().await;
        if !taken? {
            return Ok(());
        }
    }
}

/// One spell of consuming tokens: `Ok(true)` when no job waited for
/// [`LINGER`], `Ok(false)` at `halt`.
async fn take_on(
    limit: &RateLimit,
    channel: &Channel,
    queue: &str,
    waiting: &mut VecDeque<oneshot::Sender<()>>,
    inbox: &mut mpsc::UnboundedReceiver<Request>,
    halt: &CancellationToken,
) -> Result<bool, String> {
    channel.basic_qos(BasicQosArguments::new(0, limit.token_prefetch(), false)).await.map_err(|e| e.to_string())?;
    let args = BasicConsumeArguments::new(queue, "").manual_ack(true).finish();
    let (_, mut tokens) = channel.basic_consume_rx(args).await.map_err(|e| format!("consuming {queue}: {e}"))?;
    // Tokens delivered here and not given to a job yet (at most the prefetch).
    let mut held: VecDeque<u64> = VecDeque::new();
    loop {
        waiting.retain(|waiter| !waiter.is_closed());
        while !held.is_empty() && !waiting.is_empty() {
            let (Some(tag), Some(waiter)) = (held.pop_front(), waiting.pop_front()) else { break };
            channel.basic_ack(BasicAckArguments::new(tag, false)).await.map_err(|e| e.to_string())?;
            let _ = waiter.send(());
        }
        tokio::select! {
            _ = halt.cancelled() => return Ok(false),
            request = inbox.recv() => match request {
                Some(Request::Token(waiter)) => waiting.push_back(waiter),
                Some(Request::Ask { .. }) => {}
                None => return Ok(false),
            },
            token = tokens.recv() => {
                let Some(token) = token else {
                    return Err(format!("the consumer of {} ended (its channel closed)", limit.job));
                };
                if let Some(deliver) = token.deliver {
                    held.push_back(deliver.delivery_tag());
                }
            }
            _ = tokio::time::sleep(LINGER), if waiting.is_empty() => return Ok(true),
        }
    }
}

/// Asks the leader for each key's turn, and hands the answers to the jobs.
async fn ask(
    limit: &RateLimit,
    channel: &Channel,
    queue_type: QueueType,
    inbox: &mut mpsc::UnboundedReceiver<Request>,
    halt: &CancellationToken,
) -> Result<(), String> {
    let queue = ask_queue(limit.job);
    declare(channel, &queue, queue_type, Some(ASK_TTL_MS)).await?;
    let args = BasicConsumeArguments::new("amq.rabbitmq.reply-to", "").manual_ack(false).finish();
    let (_, mut answers) = channel.basic_consume_rx(args).await.map_err(|e| format!("consuming answers: {e}"))?;
    let mut pending: HashMap<String, oneshot::Sender<Duration>> = HashMap::new();
    let mut next: u64 = 0;
    loop {
        tokio::select! {
            _ = halt.cancelled() => return Ok(()),
            request = inbox.recv() => match request {
                Some(Request::Ask { key, answer }) => {
                    if answer.is_closed() {
                        continue;
                    }
                    next += 1;
                    let id = next.to_string();
                    let props = BasicProperties::default()
                        .with_reply_to("amq.rabbitmq.reply-to")
                        .with_correlation_id(&id)
                        .finish();
                    channel
                        .basic_publish(props, key, BasicPublishArguments::new("", &queue))
                        .await
                        .map_err(|e| format!("asking on {queue}: {e}"))?;
                    if pending.len() > 1_000 {
                        pending.retain(|_, answer| !answer.is_closed());
                    }
                    pending.insert(id, answer);
                }
                Some(Request::Token(_)) => {}
                None => return Ok(()),
            },
            answer = answers.recv() => {
                let Some(answer) = answer else {
                    return Err(format!("the answers of {}'s rate leader stopped (the channel closed)", limit.job));
                };
                let (Some(props), Some(body)) = (answer.basic_properties, answer.content) else { continue };
                let Some(waiter) = props.correlation_id().and_then(|id| pending.remove(id.as_str())) else { continue };
                let ms = <[u8; 8]>::try_from(body.as_slice()).map(u64::from_be_bytes).unwrap_or(AGAIN.as_millis() as u64);
                let _ = waiter.send(answered(ms));
            }
        }
    }
}

/// Stands for the leadership of `limit`'s type and keeps its rate while
/// leading, until `stopping` (the worker stops) or this is dropped.
pub(crate) async fn lead(
    limit: Arc<RateLimit>,
    amqp: AmqpConfig,
    worker: String,
    queue_type: QueueType,
    stopping: CancellationToken,
) {
    let name: &'static str = Box::leak(leader_queue(limit.job).into_boxed_str());
    let fenced = {
        let limit = limit.clone();
        move |fenced| limit.acting.fence(fenced)
    };
    let role = (Leader::new(name), "rate limiter", RENEW);
    leadership::serve(&amqp, &worker.clone(), role, fenced, |hold, fence| {
        let keeping =
            Keeping { limit, amqp: amqp.clone(), worker: worker.clone(), queue_type, hold: hold.clone(), fence };
        async move { leadership::act(keeping, hold, fence, &worker, stopping).await }
    })
    .await;
}

struct Keeping {
    limit: Arc<RateLimit>,
    amqp: AmqpConfig,
    worker: String,
    queue_type: QueueType,
    hold: watch::Receiver<Hold>,
    fence: Duration,
}

impl leadership::Acts for Keeping {
    const LEADS: &'static str = "keeps the rate of a job type";
    const NAME: &'static str = "rate keeper";

    async fn lead(&mut self, term: u64, stopping: &CancellationToken) -> Ended {
        self.keep(term, stopping).await
    }

    fn leading(&self, leading: bool) {
        self.limit.acting.lead(leading);
    }

    fn job(&self) -> Option<&'static str> {
        Some(self.limit.job)
    }
}

impl Keeping {
    fn holds(&self, term: u64) -> bool {
        self.hold.borrow().holds_in(term, self.fence)
    }

    /// One lead: the bucket filled, or the keys' asks answered, on a connection of its own.
    async fn keep(&mut self, term: u64, stopping: &CancellationToken) -> Ended {
        let connection = match connect(&self.amqp, &format!("{}:rate:{}", self.worker, self.limit.job)).await {
            Ok(connection) => connection,
            Err(err) => return Ended::Failed(report(&err)),
        };
        let ended = match connection.open_channel(None).await {
            Ok(channel) => {
                let ended = match self.limit.key {
                    None => self.fill(&channel, term, stopping).await,
                    Some(_) => self.answer(&channel, term, stopping).await,
                };
                let _ = channel.close().await;
                ended
            }
            Err(err) => Ended::Failed(err.to_string()),
        };
        close_connection(connection).await;
        ended
    }

    /// Keeps the token bucket: `count` tokens per period, at most `burst` ready.
    async fn fill(&self, channel: &Channel, term: u64, stopping: &CancellationToken) -> Ended {
        let limit = &self.limit;
        let queue = token_queue(limit.job);
        if let Err(why) = declare(channel, &queue, self.queue_type, None).await {
            return Ended::Failed(why);
        }
        let tick = limit.rate.interval().clamp(Duration::from_millis(10), Duration::from_millis(100));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bucket = Bucket::new(limit.rate, limit.burst, Instant::now());
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return Ended::Gone,
                _ = ticks.tick() => {}
            }
            if !self.holds(term) {
                return Ended::Lost;
            }
            let ready = match channel.queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish()).await {
                Ok(Some((_, ready, _))) => ready,
                Ok(None) => return Ended::Failed(format!("no answer declaring {queue}")),
                Err(err) => return Ended::Failed(format!("counting the tokens of {queue}: {err}")),
            };
            let n = bucket.refill(Instant::now(), ready);
            for _ in 0..n {
                let props = BasicProperties::default().finish();
                if let Err(err) = channel.basic_publish(props, Vec::new(), BasicPublishArguments::new("", &queue)).await
                {
                    return Ended::Failed(format!("publishing a token to {queue}: {err}"));
                }
            }
        }
    }

    /// Answers the workers' asks for keys' turns.
    async fn answer(&self, channel: &Channel, term: u64, stopping: &CancellationToken) -> Ended {
        let limit = &self.limit;
        let queue = ask_queue(limit.job);
        if let Err(why) = declare(channel, &queue, self.queue_type, Some(ASK_TTL_MS)).await {
            return Ended::Failed(why);
        }
        let args = BasicConsumeArguments::new(&queue, "").manual_ack(false).finish();
        let mut asks = match channel.basic_consume_rx(args).await {
            Ok((_, asks)) => asks,
            Err(err) => return Ended::Failed(format!("consuming {queue}: {err}")),
        };
        let mut keys = Keys::new(limit.rate, limit.burst, Instant::now());
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return Ended::Gone,
                _ = sweep.tick() => {
                    if !self.holds(term) {
                        return Ended::Lost;
                    }
                    keys.forget_full(Instant::now());
                    metrics::gauge!("jobs_rate_keys", "job" => limit.job).set(keys.len() as f64);
                }
                ask = asks.recv() => {
                    let Some(ask) = ask else { return Ended::Failed(format!("the consumer of {queue} ended")) };
                    if !self.holds(term) {
                        return Ended::Lost;
                    }
                    let (Some(props), Some(key)) = (ask.basic_properties, ask.content) else { continue };
                    let (Some(reply_to), Some(id)) = (props.reply_to(), props.correlation_id()) else { continue };
                    let wait = keys.turn(&short_key(key), Instant::now());
                    let ms = answer_ms(wait);
                    let answer = BasicProperties::default().with_correlation_id(id).finish();
                    if let Err(err) = channel.basic_publish(answer, ms.to_be_bytes().to_vec(), BasicPublishArguments::new("", reply_to)).await {
                        return Ended::Failed(format!("answering an ask: {err}"));
                    }
                }
            }
        }
    }
}

/// A leader's answer on the wire: 0 is "go"; a wait, in whole
/// milliseconds rounded up (a wait under a millisecond is 1, never "go").
pub(crate) fn answer_ms(wait: Duration) -> u64 {
    if wait.is_zero() {
        return 0;
    }
    u64::try_from(wait.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX).max(1)
}

/// What a worker reads of an answer: zero is "go".
pub(crate) fn answered(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A token bucket kept as a queue's ready count: what to publish at each tick.
#[derive(Debug)]
pub(crate) struct Bucket {
    per_second: f64,
    burst: u32,
    due: f64,
    last: Instant,
}

impl Bucket {
    /// Empty at `now`.
    pub(crate) fn new(rate: Rate, burst: u32, now: Instant) -> Self {
        Bucket { per_second: rate.per_second(), burst, due: 0.0, last: now }
    }

    /// How many tokens to publish at `now`, `ready` being in the queue:
    /// those earned since the last tick, up to `burst` ready (what a full
    /// bucket earns is dropped; a fraction is carried).
    pub(crate) fn refill(&mut self, now: Instant, ready: u32) -> u32 {
        self.due += now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.last = now;
        let space = self.burst.saturating_sub(ready);
        let whole = self.due.floor();
        let n = if whole >= f64::from(space) { space } else { whole as u32 };
        self.due -= f64::from(n);
        if n == space {
            self.due = self.due.fract();
        }
        n
    }
}

/// A keyed rate's turns: the theoretical arrival time (GCRA) of each key
/// whose bucket is not full.
#[derive(Debug)]
pub(crate) struct Keys {
    interval: Duration,
    window: Duration,
    /// Before this, a key not tracked starts empty (a new leader does not
    /// know what the last one granted).
    fresh: Instant,
    tat: HashMap<Vec<u8>, Instant>,
}

impl Keys {
    pub(crate) fn new(rate: Rate, burst: u32, started: Instant) -> Self {
        let interval = rate.interval();
        // A rate's period is at most a day (`Rate::parse`); bounded anyway.
        let window =
            interval.checked_mul(burst).unwrap_or(Duration::from_secs(86_400)).min(Duration::from_secs(86_400));
        Keys { interval, window, fresh: started + window, tat: HashMap::new() }
    }

    /// How many keys are tracked.
    pub(crate) fn len(&self) -> usize {
        self.tat.len()
    }

    /// Zero when `key` may start at `now` (its turn taken), else how long until its next turn.
    pub(crate) fn turn(&mut self, key: &[u8], now: Instant) -> Duration {
        let known = self.tat.get(key).copied();
        let tat = known.unwrap_or(self.fresh).max(now);
        let next = tat + self.interval;
        if next <= now + self.window {
            if known.is_none() && self.tat.len() >= MAX_KEYS {
                return AGAIN;
            }
            self.tat.insert(key.to_vec(), next);
            return Duration::ZERO;
        }
        next - self.window - now
    }

    /// Forgets the keys whose bucket is full again (their state is the default).
    pub(crate) fn forget_full(&mut self, now: Instant) {
        if now >= self.fresh {
            self.tat.retain(|_, tat| *tat > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_starts_empty_fills_at_its_rate_and_holds_at_most_its_burst() {
        let rate = Rate::new(20, Duration::from_secs(1));
        let start = Instant::now();
        let mut bucket = Bucket::new(rate, 20, start);
        assert_eq!(bucket.refill(start, 0), 0, "empty at start");
        let mut published = 0;
        let mut ready = 0;
        for tick in 1..=20 {
            let n = bucket.refill(start + Duration::from_millis(50) * tick, ready);
            published += n;
            ready += n;
        }
        assert_eq!(published, 20, "20 in the first second");
        // Full: a second more earns nothing.
        assert_eq!(bucket.refill(start + Duration::from_secs(2), ready), 0);
        // Ten taken: ten back at once, but no more than the burst.
        assert_eq!(
            bucket.refill(start + Duration::from_millis(2050), ready - 10),
            1,
            "what a full bucket earned was dropped"
        );
        // A fraction is carried.
        let mut bucket = Bucket::new(Rate::new(3, Duration::from_secs(1)), 3, start);
        let mut total = 0;
        for tick in 1..=11 {
            total += bucket.refill(start + Duration::from_millis(100) * tick, 0);
        }
        assert_eq!(total, 3, "3 per second, from ticks of 0.3");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_a_rate_each_and_start_empty_under_a_new_leader() {
        let rate = Rate::new(5, Duration::from_secs(1));
        let start = Instant::now();
        let mut keys = Keys::new(rate, 5, start);
        // A new leader: no key goes in its first period beyond the rate itself.
        assert_eq!(keys.turn(b"a", start), Duration::from_millis(200));
        let later = start + Duration::from_secs(2);
        for n in 0..5 {
            assert_eq!(keys.turn(b"a", later), Duration::ZERO, "burst {n}");
        }
        assert_eq!(keys.turn(b"a", later), Duration::from_millis(200), "a's burst is used");
        assert_eq!(keys.turn(b"b", later), Duration::ZERO, "b has its own");
        assert_eq!(keys.turn(b"a", later + Duration::from_millis(200)), Duration::ZERO, "a's next turn");
        keys.forget_full(later + Duration::from_secs(5));
        assert_eq!(keys.len(), 0, "full buckets are forgotten");
        // Past the bound a new key waits; a known key goes on.
        let now = later + Duration::from_secs(10);
        for n in 0..MAX_KEYS {
            keys.turn(&(n as u64).to_be_bytes(), now);
        }
        assert_eq!(keys.turn(b"new", now), AGAIN);
        assert_eq!(keys.turn(&0u64.to_be_bytes(), now), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_under_a_millisecond_is_never_a_go_on_the_wire() {
        let mut keys = Keys::new(Rate::new(4_000, Duration::from_secs(1)), 1, Instant::now());
        let now = Instant::now() + Duration::from_secs(5);
        assert_eq!(answered(answer_ms(keys.turn(b"k", now))), Duration::ZERO, "its first turn");
        let wait = keys.turn(b"k", now);
        assert!(wait > Duration::ZERO && wait < Duration::from_millis(1), "{wait:?}");
        assert_eq!(answered(answer_ms(wait)), Duration::from_millis(1), "a wait, not a go");
        assert_eq!(answer_ms(Duration::from_micros(1_001)), 2, "rounded up");
    }

    #[test]
    fn a_key_is_its_fields_value() {
        #[derive(serde::Serialize)]
        struct Charge {
            customer_id: u64,
            note: String,
        }
        let body = rmp_serde::to_vec_named(&Charge { customer_id: 42, note: "x".into() }).unwrap();
        assert_eq!(field_of(&body, "customer_id"), Some(b"42".to_vec()));
        assert_eq!(field_of(&body, "note"), Some(b"\"x\"".to_vec()));
        assert_eq!(field_of(&body, "missing"), None);
        assert_eq!(field_of(b"\xc1garbage", "customer_id"), None);
        let long = vec![b'x'; 10_000];
        let short = short_key(long.clone());
        assert_eq!(short.len(), MAX_KEY_BYTES + 8, "a huge value is kept short");
        assert_eq!(short, short_key(long), "and alike each time");
        assert_ne!(
            short_key([vec![b'x'; 200], vec![b'y']].concat()),
            short_key([vec![b'x'; 200], vec![b'z']].concat())
        );
        assert_eq!(short_key(b"42".to_vec()), b"42".to_vec());
    }
}
