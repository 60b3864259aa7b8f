//! `job_control`: priorities, weighted queues and progress, in one process.
//!
//! 1. Priorities: 300 `Render` jobs at the default priority, then 5 at
//!    priority 9 (`EnqueueOptions::priority`), on one worker at prefetch 1:
//!    where each urgent one started.
//! 2. Weighted queues: `critical`, `default` and `low` filled 6:3:1 and
//!    drained by one worker with `queue_weights` 6, 3, 1 sharing a
//!    concurrency of 10: the starts of each queue in the first 90%.
//! 3. Progress: a job that says `ctx.progress` as it goes; the dashboard's
//!    Workers page (`jobs-web`) shows its bar while it runs.
//!
//! `--quick` for smaller counts. Its types are its own (not in the
//! examples' `worker`): a type with `priorities` is refused in quorum mode.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

/// Shows priorities, weighted queues and progress.
#[derive(Parser)]
struct Args {
    /// Smaller counts (a smoke run).
    #[arg(long)]
    quick: bool,
}

/// The tags of the jobs that started, in order.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PROGRESS_DONE: AtomicUsize = AtomicUsize::new(0);

/// A page to render; its queue takes priorities 0 to 9.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "job-control-render", priorities)]
struct Render {
    tag: String,
}

impl Perform for Render {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED.lock().unwrap_or_else(|e| e.into_inner()).push(self.tag);
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// A thumbnail, sent to one of the weighted queues; says which.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "job-control-default")]
struct Thumbnail {
    queue: String,
}

impl Perform for Thumbnail {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED.lock().unwrap_or_else(|e| e.into_inner()).push(self.queue);
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }
}

/// Resizes `images` images, saying how far it is.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "job-control-resize")]
struct ResizeAll {
    images: u32,
}

impl Perform for ResizeAll {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        for n in 1..=self.images {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.progress(f64::from(n) / f64::from(self.images), &format!("resized {n} of {}", self.images));
        }
        PROGRESS_DONE.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const QUEUES: [(&str, u16); 3] = [("job-control-critical", 6), ("job-control-default", 3), ("job-control-low", 1)];

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}

/// Runs `worker` until `done` says so (or a minute passed), then stops it.
async fn run_until(worker: Worker, done: impl Fn() -> bool) -> Result<(), Box<dyn std::error::Error>> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move { drop(stopped.await) }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    handle.await??;
    if done() {
        Ok(())
    } else {
        Err("the jobs did not all run within 120 s".into())
    }
}

fn started() -> Vec<String> {
    STARTED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let amqp = examples::amqp_config()?;
    let client = Client::new(amqp.clone());

    // 1. Priorities.
    let low = if args.quick { 100 } else { 300 };
    let pages: Vec<Render> = (0..low).map(|n| Render { tag: format!("page-{n}") }).collect();
    client.enqueue_many(&pages).await?;
    for n in 0..5 {
        client.enqueue_with(&Render { tag: format!("urgent-{n}") }, EnqueueOptions::new().priority(9)).await?;
    }
    let config = WorkerConfig { queues: vec![Render::QUEUE.into()], ..WorkerConfig::default() };
    let worker = Worker::builder().job::<Render>().amqp(amqp.clone()).config(config).build()?;
    run_until(worker, || started().len() == low + 5).await?;
    let order = started();
    let places: Vec<String> =
        order.iter().enumerate().filter(|(_, t)| t.starts_with("urgent")).map(|(i, _)| (i + 1).to_string()).collect();
    println!(
        "priorities: {low} pages queued, then 5 urgent ones (priority 9): they started {} of {}",
        places.join(", "),
        order.len()
    );
    STARTED.lock().unwrap_or_else(|e| e.into_inner()).clear();

    // 2. Weighted queues.
    let total: usize = if args.quick { 1_000 } else { 10_000 };
    for (queue, weight) in QUEUES {
        let n = total * usize::from(weight) / 10;
        let jobs: Vec<Thumbnail> = (0..n).map(|_| Thumbnail { queue: queue.into() }).collect();
        client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(queue)).await?;
    }
    let config = WorkerConfig {
        queues: QUEUES.iter().map(|(q, _)| (*q).into()).collect(),
        extra_queues: QUEUES.iter().map(|(q, _)| (*q).into()).collect(),
        concurrency: 10,
        queue_weights: QUEUES.iter().map(|(q, w)| ((*q).to_owned(), *w)).collect(),
        ..WorkerConfig::default()
    };
    let worker = Worker::builder().job::<Thumbnail>().amqp(amqp.clone()).config(config).build()?;
    run_until(worker, || started().len() == total).await?;
    let order = started();
    let first = total * 9 / 10;
    let shares: Vec<String> = QUEUES
        .iter()
        .map(|(queue, weight)| {
            let n = order[..first].iter().filter(|q| q == queue).count();
            format!("{queue} (weight {weight}): {n} ({:.1}%)", n as f64 * 100.0 / first as f64)
        })
        .collect();
    println!("weighted queues, concurrency 10 shared 6:3:1: of the first {first} starts, {}", shares.join(", "));

    // 3. Progress.
    let images = if args.quick { 20 } else { 250 };
    client.enqueue(&ResizeAll { images }).await?;
    let config = WorkerConfig {
        queues: vec![ResizeAll::QUEUE.into()],
        heartbeat_interval: Duration::from_millis(500),
        ..WorkerConfig::default()
    };
    println!("progress: a job resizing {images} images says ctx.progress after each; the dashboard's Workers page shows its bar (`cargo run -p jobs-web`)");
    let worker = Worker::builder().job::<ResizeAll>().amqp(amqp).config(config).build()?;
    run_until(worker, || PROGRESS_DONE.load(Ordering::SeqCst) == 1).await?;
    println!("progress: done");
    client.close().await;
    Ok(())
}
