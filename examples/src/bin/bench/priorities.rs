//! The priority and weighted-queue rows, each beside the plain path in the
//! same run (the right-hand column is the framework without the feature,
//! not raw amqprs): on classic queues, sequential enqueues with priorities
//! 0-9 to a queue with `x-max-priority` vs plain enqueues to a plain queue;
//! draining such a queue (mixed priorities) at prefetch 1 and 300 beside
//! raw amqprs draining it, and what the broker's priorities cost (raw
//! amqprs on it ÷ on a plain queue), and with every job at the default
//! priority beside a plain queue; on both queue types, draining three
//! weighted queues (6:3:1) sharing a concurrency of 50 vs one unweighted
//! queue at 50. Which side goes first alternates by round.

use std::time::{Duration, Instant};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Job, JobContext, JobError, Perform, QueueType};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::{declare, delete, fill, framework_drain, framework_drain_with, performed, run_drain, Noop, Table};

/// A no-op job of a queue with priorities.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "bench.priorities", priorities)]
pub(crate) struct Ranked {
    n: u64,
}

impl Perform for Ranked {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        performed();
        Ok(())
    }
}

/// `n` jobs with priorities 0 to 9 in turn, one at a time.
async fn enqueue_ranked(client: &Client, n: u64) -> Result<Duration, jobs_core::Error> {
    let t = Instant::now();
    for i in 0..n {
        client.enqueue_with(&Ranked { n: i }, EnqueueOptions::new().priority((i % 10) as u8)).await?;
    }
    Ok(t.elapsed())
}

/// `n` jobs with priorities 0 to 9 in turn (`mixed`) or none, from 64 enqueuers.
async fn fill_ranked(client: &Client, n: u64, mixed: bool) -> Result<(), jobs_core::Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                let options =
                    if mixed { EnqueueOptions::new().priority((i % 10) as u8) } else { EnqueueOptions::new() };
                client.enqueue_with(&Ranked { n: i }, options).await?;
                i += 64;
            }
            Ok::<_, jobs_core::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| jobs_core::Error::Unsupported(if e.is_panic() { "a filler panicked" } else { "cancelled" }))??;
    }
    Ok(())
}

/// A worker of `Ranked` at `concurrency`.
fn ranked_worker(amqp: &AmqpConfig, concurrency: u16) -> Worker {
    let config = WorkerConfig { queues: vec![Ranked::QUEUE.to_owned()], concurrency, ..WorkerConfig::default() };
    let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, ..Default::default() };
    Worker::builder().job::<Ranked>().settings(settings).build().expect("worker")
}

/// The rows of one queue type; `(sequential, drain)` are the counts.
pub(crate) async fn rows(
    connection: &Connection,
    amqp: &AmqpConfig,
    table: &mut Table,
    label: &str,
    (sequential, drain): (u64, u64),
    round: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new(amqp.clone());
    let plain = "bench.priorities.plain";
    let first_ranked = round % 2 == 1;
    if amqp.queue_type == QueueType::Classic {
        let mut times = [Duration::ZERO; 2];
        for ranked in [first_ranked, !first_ranked] {
            if ranked {
                declare(connection, Ranked::QUEUE, amqp.queue_type).await;
                times[0] = enqueue_ranked(&client, sequential).await?;
            } else {
                declare(connection, plain, amqp.queue_type).await;
                let t = Instant::now();
                for i in 0..sequential {
                    client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(plain)).await?;
                }
                times[1] = t.elapsed();
            }
        }
        let what =
            format!("{label}: enqueue, sequential awaited, priorities 0-9 (framework column) ÷ none (raw column)");
        table.rate(&what, sequential, times[0], times[1]);
        for concurrency in [1u16, 300] {
            // The framework beside raw amqprs on the same queue with priorities.
            declare(connection, Ranked::QUEUE, amqp.queue_type).await;
            fill_ranked(&client, drain, true).await?;
            let ours = run_drain(ranked_worker(amqp, concurrency), drain).await;
            declare(connection, Ranked::QUEUE, amqp.queue_type).await;
            fill_ranked(&client, drain, true).await?;
            let raw_ranked = crate::raw::drain(connection, Ranked::QUEUE, concurrency, drain, |_| {}).await;
            let what = format!("{label}: drain, prefetch {concurrency}, a queue with priorities, mixed 0-9");
            table.rate(&what, drain, ours, raw_ranked);
            // The framework on it with every job at the default priority, beside a plain queue.
            declare(connection, Ranked::QUEUE, amqp.queue_type).await;
            fill_ranked(&client, drain, false).await?;
            let ours_default = run_drain(ranked_worker(amqp, concurrency), drain).await;
            declare(connection, plain, amqp.queue_type).await;
            fill(&client, plain, drain).await?;
            let ours_plain = framework_drain(amqp, plain, drain, concurrency).await;
            let what = format!(
                "{label}: drain, prefetch {concurrency}, a queue with priorities, all at the default (framework column) ÷ a plain queue (raw column)"
            );
            table.rate(&what, drain, ours_default, ours_plain);
            // What the broker's priorities cost: raw amqprs on both queues.
            declare(connection, plain, amqp.queue_type).await;
            fill(&client, plain, drain).await?;
            let raw_plain = crate::raw::drain(connection, plain, concurrency, drain, |_| {}).await;
            let what = format!(
                "{label}: raw amqprs drain, prefetch {concurrency}, a queue with priorities, mixed (framework column) ÷ a plain queue (raw column)"
            );
            table.rate(&what, drain, raw_ranked, raw_plain);
        }
        delete(connection, Ranked::QUEUE).await;
    }
    // Three weighted queues sharing 50 turns (each at prefetch 50: 100
    // deliveries wait, and each start is a hand-off) beside one unweighted
    // queue at concurrency 50; the same jobs, 50 running at once in both.
    let weighted = ["bench.weights.a", "bench.weights.b", "bench.weights.c"];
    let mut times = [Duration::ZERO; 2];
    for with_weights in [first_ranked, !first_ranked] {
        if with_weights {
            for queue in weighted {
                declare(connection, queue, amqp.queue_type).await;
                fill(&client, queue, drain / 3).await?;
            }
            let config = WorkerConfig {
                queues: weighted.iter().map(|q| (*q).to_owned()).collect(),
                extra_queues: weighted.iter().map(|q| (*q).to_owned()).collect(),
                concurrency: 50,
                queue_weights: weighted.iter().zip([6, 3, 1]).map(|(q, w)| ((*q).to_owned(), w)).collect(),
                ..WorkerConfig::default()
            };
            let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, ..Default::default() };
            let worker = Worker::builder().job::<Noop>().settings(settings).build().expect("worker");
            times[0] = run_drain(worker, drain / 3 * 3).await;
        } else {
            declare(connection, plain, amqp.queue_type).await;
            fill(&client, plain, drain / 3 * 3).await?;
            let config = WorkerConfig { concurrency: 50, ..WorkerConfig::default() };
            times[1] = framework_drain_with(amqp, plain, drain / 3 * 3, config).await;
        }
    }
    let what = format!(
        "{label}: drain, concurrency 50, three weighted queues 6:3:1 (framework column) ÷ one unweighted queue (raw column)"
    );
    table.rate(&what, drain / 3 * 3, times[0], times[1]);
    for queue in weighted {
        delete(connection, queue).await;
    }
    delete(connection, plain).await;
    client.close().await;
    Ok(())
}
