//! The progress row: one job making 1,000,000 `ctx.progress` calls inside a
//! worker (heartbeats on, every 5 s) beside the same job looping as many
//! times without them. The right-hand column is that job, not raw amqprs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::{AmqpConfig, Client, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::{declare, delete, performed, run_drain, Table};

/// How long the last `Progressing` job's loop took.
static LOOP: Mutex<Duration> = Mutex::new(Duration::ZERO);

/// Loops `calls` times, saying its progress each time when `say`.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "bench.progress")]
pub(crate) struct Progressing {
    calls: u64,
    say: bool,
}

impl Perform for Progressing {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let start = Instant::now();
        for i in 0..self.calls {
            if self.say {
                ctx.progress(i as f64 / self.calls as f64, "resizing the images");
            } else {
                std::hint::black_box(i);
            }
        }
        *LOOP.lock().unwrap_or_else(|e| e.into_inner()) = start.elapsed();
        performed();
        Ok(())
    }
}

/// The time of one job's loop of `calls`, saying its progress or not.
async fn one(
    amqp: &AmqpConfig,
    client: &Client,
    calls: u64,
    say: bool,
) -> Result<Duration, Box<dyn std::error::Error>> {
    client.enqueue(&Progressing { calls, say }).await?;
    let config = WorkerConfig { queues: vec![Progressing::QUEUE.to_owned()], ..WorkerConfig::default() };
    let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, ..Default::default() };
    run_drain(Worker::builder().job::<Progressing>().settings(settings).build()?, 1).await;
    Ok(*LOOP.lock().unwrap_or_else(|e| e.into_inner()))
}

pub(crate) async fn rows(
    connection: &Connection,
    amqp: &AmqpConfig,
    table: &mut Table,
    label: &str,
    calls: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    declare(connection, Progressing::QUEUE, amqp.queue_type).await;
    let client = Client::new(amqp.clone());
    let with = one(amqp, &client, calls, true).await?;
    let without = one(amqp, &client, calls, false).await?;
    let per_call = with.saturating_sub(without).as_nanos() as f64 / calls as f64;
    println!("  ctx.progress: {per_call:.1} ns a call");
    table.note(
        "ctx.progress, per call",
        per_call,
        "ns",
        "in one job: its loop's time with the calls, less without, over the calls",
    );
    let what = format!(
        "{label}: {calls} ctx.progress calls in one job (framework column) ÷ the loop without them (raw column)"
    );
    table.rate(&what, calls, with, without);
    client.close().await;
    delete(connection, Progressing::QUEUE).await;
    Ok(())
}
