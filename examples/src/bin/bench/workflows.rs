//! The workflow rows, each beside plain jobs in the same run (the right-hand
//! column is the plain path, not raw amqprs): no-op jobs drained as one
//! batch vs as plain jobs, at concurrency 50 and at prefetch 1; chains of
//! three no-op steps vs as many independent jobs; and the time from a
//! batch's last job to its callback's start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::{chain, AmqpConfig, Batch, Client, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::{delete, Table};

const QUEUE: &str = "bench.wf";
/// The queue of the worker that aggregates batches throughout the part.
const AGGREGATOR_QUEUE: &str = "bench.wf.agg";

static DONE: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);
static LAST: Mutex<Option<Instant>> = Mutex::new(None);
static DRAINED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static CALLBACK: tokio::sync::Notify = tokio::sync::Notify::const_new();
static CALLED: Mutex<Option<Instant>> = Mutex::new(None);

/// A no-op job (a batch's member, a chain's step, or a plain job).
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "bench.wf")]
pub(crate) struct WfNoop;

impl Perform for WfNoop {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let now = Instant::now();
        if DONE.fetch_add(1, Ordering::Relaxed) == 0 {
            FIRST.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(now);
        }
        *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        if DONE.load(Ordering::Relaxed) == TARGET.load(Ordering::Relaxed) {
            DRAINED.notify_one();
        }
        Ok(())
    }
}

/// A batch's callback: when it started.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "bench.wf")]
pub(crate) struct WfDone;

impl Perform for WfDone {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        *CALLED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        CALLBACK.notify_one();
        Ok(())
    }
}

/// The aggregating worker's warm-up callback: it aggregates once this runs.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "bench.wf.agg")]
pub(crate) struct WfWarm;

impl Perform for WfWarm {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        WARM.notify_one();
        Ok(())
    }
}

static WARM: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A worker that serves only its own queue, started before any row and
/// warmed up (an empty batch's callback run), so it is the aggregator
/// throughout, as in a deployment where it has run for a while: no row
/// times an aggregator's takeover and its rebuild from the stream, which
/// every fresh drain worker would otherwise start with.
async fn aggregator(amqp: &AmqpConfig) -> Result<Running, Box<dyn std::error::Error>> {
    let config = WorkerConfig { queues: vec![AGGREGATOR_QUEUE.to_owned()], ..WorkerConfig::default() };
    let worker = Worker::builder().job::<WfWarm>().queue(AGGREGATOR_QUEUE).amqp(amqp.clone()).config(config).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let warm = WARM.notified();
    Client::new(amqp.clone()).enqueue_batch(Batch::new().on_complete(&WfWarm)).await?;
    tokio::time::timeout(Duration::from_secs(120), warm).await.map_err(|_| "no warm-up callback within 120 s")?;
    Ok(Running { stop, handle })
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), jobs_worker::Error>>,
}

fn start(amqp: &AmqpConfig, concurrency: u16) -> Running {
    let config = WorkerConfig { queues: vec![QUEUE.to_owned()], concurrency, ..WorkerConfig::default() };
    let worker = Worker::builder()
        .job::<WfNoop>()
        .job::<WfDone>()
        .queue(QUEUE)
        .amqp(amqp.clone())
        .config(config)
        .build()
        .expect("worker");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, handle }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// Drains `n` jobs already in the queue with a worker at `concurrency`: first start to last end.
async fn drain(amqp: &AmqpConfig, n: u64, concurrency: u16) -> Duration {
    DONE.store(0, Ordering::SeqCst);
    TARGET.store(n, Ordering::SeqCst);
    *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let worker = start(amqp, concurrency);
    DRAINED.notified().await;
    let first = FIRST.lock().unwrap_or_else(|e| e.into_inner()).take();
    let last = LAST.lock().unwrap_or_else(|e| e.into_inner()).take();
    worker.stop().await;
    match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    }
}

/// The rows: batch vs plain at concurrency 50 and prefetch 1 (`n` and
/// `n_prefetch_1` jobs), chains vs plain, callback latency over `batches` batches.
pub(crate) async fn rows(
    connection: &Connection,
    amqp: &AmqpConfig,
    table: &mut Table,
    n: u64,
    n_prefetch_1: u64,
    batches: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    // A client of its own after each deletion of the queue (a client declares a queue once per connection).
    let fresh = || Client::new(amqp.clone());
    delete(connection, AGGREGATOR_QUEUE).await;
    let aggregating = aggregator(amqp).await?;
    for (concurrency, n) in [(50u16, n), (1, n_prefetch_1)] {
        let jobs: Vec<WfNoop> = (0..n).map(|_| WfNoop).collect();
        delete(connection, QUEUE).await;
        fresh().enqueue_many(&jobs).await?;
        let plain = drain(amqp, n, concurrency).await;
        delete(connection, QUEUE).await;
        fresh().enqueue_batch(Batch::new().jobs(&jobs)).await?;
        let batch = drain(amqp, n, concurrency).await;
        let what = format!("{n} no-op jobs as one batch ÷ as plain jobs, concurrency {concurrency}");
        table.rate(&what, n, batch, plain);
    }

    // Chains of three no-op steps vs three times as many plain jobs, at concurrency 50.
    let chains = (n / 3).max(1);
    delete(connection, QUEUE).await;
    fresh().enqueue_many(&(0..chains * 3).map(|_| WfNoop).collect::<Vec<_>>()).await?;
    let plain = drain(amqp, chains * 3, 50).await;
    delete(connection, QUEUE).await;
    let client = fresh();
    let mut sending = tokio::task::JoinSet::new();
    for w in 0..64 {
        let client = client.clone();
        let per = chains / 64 + u64::from(w < chains % 64);
        sending.spawn(async move {
            for _ in 0..per {
                client.enqueue_chain(chain![WfNoop, WfNoop, WfNoop]).await?;
            }
            Ok::<_, jobs_core::Error>(())
        });
    }
    while let Some(sent) = sending.join_next().await {
        sent??;
    }
    let chained = drain(amqp, chains * 3, 50).await;
    table.rate(
        &format!("{chains} chains of 3 steps ÷ {} plain jobs, concurrency 50 (steps/s)", chains * 3),
        chains * 3,
        chained,
        plain,
    );

    // From a batch's last job to its callback's start, a batch of 100 at a time.
    delete(connection, QUEUE).await;
    let client = fresh();
    let worker = start(amqp, 50);
    let mut latencies = Vec::new();
    for _ in 0..batches {
        DONE.store(0, Ordering::SeqCst);
        TARGET.store(u64::MAX, Ordering::SeqCst);
        *CALLED.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let jobs: Vec<WfNoop> = (0..100).map(|_| WfNoop).collect();
        let called = CALLBACK.notified();
        client.enqueue_batch(Batch::new().on_complete(&WfDone).jobs(&jobs)).await?;
        tokio::time::timeout(Duration::from_secs(60), called).await.map_err(|_| "no callback within 60 s")?;
        let last = LAST.lock().unwrap_or_else(|e| e.into_inner()).take();
        let called = CALLED.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(last), Some(called)) = (last, called) {
            latencies.push(called.saturating_duration_since(last).as_micros() as u64);
        }
    }
    worker.stop().await;
    aggregating.stop().await;
    delete(connection, QUEUE).await;
    delete(connection, AGGREGATOR_QUEUE).await;
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        table.note(
            &format!("a batch's last job to its callback's start, {label}"),
            crate::quantile(&latencies, p),
            "ms",
            "batches of 100 at concurrency 50; the last job's outcome record, the aggregator's fold, the callback's enqueue and delivery",
        );
    }
    Ok(())
}
