//! The unique rows, each beside plain enqueues in the same run (the
//! right-hand column is the plain path, not raw amqprs): the latency of an
//! enqueue with `unique_for` (an ask to the keeper, its reservation
//! recorded, then the publish) vs without, at 16 concurrent callers; the
//! rate of filling the keeper with 100,000 keys vs as many plain enqueues;
//! and how long a new keeper takes to read those keys back.

use std::time::{Duration, Instant};

use jobs_core::plumbing::amqprs::channel::QueueDeleteArguments;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::queue_counts;
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::{declare, delete, Noop, Table};

/// The queue of the workers that keep the keys (no job goes there).
const KEEPER_QUEUE: &str = "bench.unique.keeper";
/// Where the plain side's jobs go.
const PLAIN_QUEUE: &str = "bench.unique.plain";

/// A no-op job, unique by its fields for 10 minutes.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "bench.unique", unique_for = "10m")]
pub(crate) struct UniqueNoop {
    n: u64,
}

impl Perform for UniqueNoop {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// A worker that runs nothing here and stands for the keeping.
struct Keeper {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), jobs_worker::Error>>,
}

impl Keeper {
    fn start(amqp: &AmqpConfig, id: &str) -> Self {
        let config = WorkerConfig { queues: vec![KEEPER_QUEUE.into()], id: Some(id.into()), ..WorkerConfig::default() };
        let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, ..Default::default() };
        let worker = Worker::builder().job::<Noop>().queue(KEEPER_QUEUE).settings(settings).build().expect("worker");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Keeper { stop, handle }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

/// Waits (10 s at most) until `queue` has a consumer.
async fn consumed(connection: &Connection, queue: &str) {
    for _ in 0..1_000 {
        if queue_counts(connection, queue).await.is_some_and(|(_, consumers)| consumers > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Enqueues `n` jobs `make(i)` from `width` concurrent callers; each call's microseconds.
async fn enqueue_timed<J: Job + Send + Sync + 'static>(
    client: &Client,
    n: u64,
    width: u64,
    options: EnqueueOptions,
    make: fn(u64) -> J,
) -> Result<Vec<u64>, Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..width {
        let (client, options) = (client.clone(), options.clone());
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut i = w;
            while i < n {
                let t = Instant::now();
                client.enqueue_with(&make(i), options.clone()).await?;
                times.push(t.elapsed().as_micros() as u64);
                i += width;
            }
            Ok::<_, Error>(times)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.map_err(|e| Error::Unsupported(if e.is_panic() { "a task panicked" } else { "cancelled" }))??);
    }
    Ok(all)
}

/// The unique rows of queue type `label`; `latency_n` enqueues a side for
/// the latency row, `keys` keys for the fill and the keeper change.
pub(crate) async fn rows(
    connection: &Connection,
    amqp: &AmqpConfig,
    table: &mut Table,
    label: &str,
    (latency_n, keys): (u64, u64),
) -> Result<(), Box<dyn std::error::Error>> {
    let kind = amqp.queue_type;
    cleanup(connection).await;
    for queue in [UniqueNoop::QUEUE, PLAIN_QUEUE] {
        declare(connection, queue, kind).await;
    }
    let first = Keeper::start(amqp, "bench-unique-1");
    consumed(connection, jobs_core::plumbing::unique::UNIQUE_ASK).await;
    let client = Client::new(amqp.clone());
    let plain = EnqueueOptions::new().queue(PLAIN_QUEUE);
    // Warm both paths (connections, declarations).
    enqueue_timed(&client, 100, 4, plain.clone(), |i| Noop { sent_micros: i }).await?;
    enqueue_timed(&client, 100, 4, EnqueueOptions::new(), |i| UniqueNoop { n: u64::MAX - i }).await?;

    let ours = enqueue_timed(&client, latency_n, 16, EnqueueOptions::new(), |n| UniqueNoop { n }).await?;
    let theirs = enqueue_timed(&client, latency_n, 16, plain.clone(), |i| Noop { sent_micros: i }).await?;
    table.latency(
        &format!("{label}: enqueue, 16 concurrent, unique_for (framework column) vs plain (raw column)"),
        &ours,
        &theirs,
    );

    // The keeper filled with `keys` keys (those above, and more), vs as many plain enqueues.
    let t = Instant::now();
    enqueue_timed(&client, keys, 64, EnqueueOptions::new(), |n| UniqueNoop { n: 1_000_000_000 + n }).await?;
    let filled = t.elapsed();
    let t = Instant::now();
    enqueue_timed(&client, keys, 64, plain, |i| Noop { sent_micros: i }).await?;
    let plain_fill = t.elapsed();
    table.rate(
        &format!("{label}: enqueue, 64 concurrent, {keys} unique keys held at the end (framework column) vs plain (raw column)"),
        keys,
        filled,
        plain_fill,
    );

    // A new keeper reads the keys back: from the stop of the first to the first answer.
    let second = Keeper::start(amqp, "bench-unique-2");
    tokio::time::sleep(Duration::from_secs(2)).await; // it stands (not timed)
    let t = Instant::now();
    first.stop().await;
    let took = loop {
        match client.enqueue(&UniqueNoop { n: 1_000_000_000 }).await {
            Err(Error::Duplicate { .. }) => break t.elapsed(),
            Err(Error::Unique { .. }) if t.elapsed() < Duration::from_secs(120) => continue,
            other => return Err(format!("a held key after the keeper change: {other:?}").into()),
        }
    };
    println!("  {label}: the next keeper answered {took:?} after the first stopped, with {keys} keys and more held");
    table.note(
        &format!("{label}: keeper change, {keys} keys held: first answer after"),
        took.as_secs_f64(),
        "s",
        "stop of the keeper to a Duplicate answered by the next",
    );
    second.stop().await;
    client.close().await;
    cleanup(connection).await;
    Ok(())
}

/// Deletes the rows' queues and the unique keeper's (its stream too).
async fn cleanup(connection: &Connection) {
    for queue in [UniqueNoop::QUEUE, PLAIN_QUEUE, KEEPER_QUEUE] {
        delete(connection, queue).await;
    }
    if let Ok(channel) = connection.open_channel(None).await {
        for queue in ["jobs.unique", "jobs.unique.ask", "jobs.unique.keeper"] {
            let _ = channel.queue_delete(QueueDeleteArguments::new(queue)).await;
        }
        let _ = channel.close().await;
    }
}
