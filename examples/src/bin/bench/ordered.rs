//! The ordered rows, beside the plain path in the same run: sequential
//! awaited enqueues of an ordered type (the client reads the key from the
//! body and picks the shard) beside plain ones; draining an
//! ordered type (`ordered_by`, 16 shards: single-active-consumer quorum
//! queues, whatever the queue type) with three workers, 1,000 keys, beside
//! the same no-op jobs on an unordered queue of the run's type drained by
//! three workers at concurrency 16 each (the most an ordered type's worker
//! runs at once: one job per shard). Which side goes first alternates by round.

use std::time::Duration;

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::{AmqpConfig, Client, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::{declare, delete, fill, performed, run_drain_all, Noop, Table};

const SHARDS: u16 = 16;

/// A no-op job of an ordered type.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "bench.ordered", ordered_by = "key", shards = 16)]
pub(crate) struct Keyed {
    key: u64,
    n: u64,
}

impl Perform for Keyed {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        performed();
        Ok(())
    }
}

/// Three workers of `queue` at `concurrency` each, with `J`.
fn workers<J: Job>(amqp: &AmqpConfig, queue: &str, concurrency: u16) -> Vec<Worker> {
    (0..3)
        .map(|_| {
            let config = WorkerConfig { queues: vec![queue.to_owned()], concurrency, ..WorkerConfig::default() };
            let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, ..Default::default() };
            Worker::builder().job::<J>().queue(queue).settings(settings).build().expect("worker")
        })
        .collect()
}

async fn delete_ordered(connection: &Connection) {
    delete(connection, Keyed::QUEUE).await;
    for n in 0..SHARDS {
        delete(connection, &jobs_core::plumbing::topology::shard_queue(Keyed::QUEUE, n)).await;
    }
}

pub(crate) async fn rows(
    connection: &Connection,
    amqp: &AmqpConfig,
    table: &mut Table,
    label: &str,
    drain: u64,
    round: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new(amqp.clone());
    let plain = "bench.ordered.plain";
    let first_ordered = round % 2 == 1;
    let mut times = [Duration::ZERO; 2];
    let sequential = (drain / 10).max(100);
    for ordered in [first_ordered, !first_ordered] {
        let t = std::time::Instant::now();
        if ordered {
            delete_ordered(connection).await;
            for n in 0..sequential {
                client.enqueue(&Keyed { key: n % 1_000, n }).await?;
            }
        } else {
            declare(connection, plain, amqp.queue_type).await;
            for n in 0..sequential {
                client.enqueue_with(&Noop { sent_micros: n }, jobs_core::EnqueueOptions::new().queue(plain)).await?;
            }
        }
        times[usize::from(!ordered)] = t.elapsed();
    }
    let what = format!("{label}: enqueue, sequential awaited, an ordered type (framework column) ÷ plain (raw column)");
    table.rate(&what, sequential, times[0], times[1]);
    // The queues are deleted and made again below: a new connection declares them again.
    client.close().await;
    let mut times = [Duration::ZERO; 2];
    for ordered in [first_ordered, !first_ordered] {
        if ordered {
            delete_ordered(connection).await;
            let jobs: Vec<Keyed> = (0..drain).map(|n| Keyed { key: n % 1_000, n }).collect();
            client.enqueue_many(&jobs).await?;
            times[0] = run_drain_all(workers::<Keyed>(amqp, Keyed::QUEUE, 1), drain).await;
        } else {
            declare(connection, plain, amqp.queue_type).await;
            fill(&client, plain, drain).await?;
            times[1] = run_drain_all(workers::<Noop>(amqp, plain, SHARDS), drain).await;
        }
    }
    let what = format!(
        "{label}: drain, three workers, an ordered type of 16 shards, 1,000 keys (framework column) ÷ unordered at concurrency 16 each (raw column)"
    );
    table.rate(&what, drain, times[0], times[1]);
    delete_ordered(connection).await;
    delete(connection, plain).await;
    client.close().await;
    Ok(())
}
