//! `rate_check`: how exactly a rate holds. Runs three workers in this
//! process on `sms` ([`examples::flow::SendSms`], `rate = "100/s"`), fills
//! the queue, and records every start for `--seconds` (default 60): prints
//! the starts of each second, their least, most and mean after the first
//! second, and the most in any one second (sliding). `docs/flow-control.md`
//! has a run's numbers.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use jobs_core::{Client, Job};
use jobs_worker::{Worker, WorkerConfig};

/// Measures the accuracy of a rate limit over three workers.
#[derive(Parser)]
struct Args {
    /// How long to record starts.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// How many workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", jobs_core::report(&*err));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let amqp = examples::amqp_config()?;
    let starts = examples::flow::SMS_STARTS.get_or_init(|| Mutex::new(Vec::new()));
    let queue = examples::flow::SendSms::QUEUE;
    let mut workers = Vec::new();
    for n in 0..args.workers {
        let config = WorkerConfig {
            queues: vec![queue.into()],
            concurrency: 8,
            id: Some(format!("rate-check-{n}")),
            ..WorkerConfig::default()
        };
        let worker = Worker::builder().job::<examples::flow::SendSms>().amqp(amqp.clone()).config(config).build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        workers.push((stop, tokio::spawn(worker.run(async move { drop(stopped.await) }))));
    }
    let client = Client::new(amqp);
    let rate = 100;
    let total = rate * (args.seconds + 10);
    println!("enqueueing {total} SendSms jobs (rate 100/s, burst 100) for {} workers", args.workers);
    let jobs: Vec<_> = (0..total).map(|n| examples::flow::SendSms { to: format!("+1555{n:07}") }).collect();
    client.enqueue_many(&jobs).await?;
    let wanted = usize::try_from(rate * args.seconds)? + 150;
    let deadline = Instant::now() + Duration::from_secs(args.seconds * 3 + 60);
    while starts.lock().unwrap_or_else(|e| e.into_inner()).len() < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut times = starts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    times.sort();
    let Some(&first) = times.first() else { return Err("no job started".into()) };
    let seconds = usize::try_from(args.seconds)?;
    let mut bins = vec![0usize; seconds];
    for t in &times {
        let n = usize::try_from(t.duration_since(first).as_secs())?;
        if n < seconds {
            bins[n] += 1;
        }
    }
    let mut most = 0;
    let mut low = 0;
    for (high, t) in times.iter().enumerate() {
        while t.duration_since(times[low]) >= Duration::from_secs(1) {
            low += 1;
        }
        most = most.max(high + 1 - low);
    }
    let steady = &bins[1..];
    let (least, busiest) = (steady.iter().min().copied().unwrap_or(0), steady.iter().max().copied().unwrap_or(0));
    let mean = steady.iter().sum::<usize>() as f64 / steady.len().max(1) as f64;
    println!("starts per second: {bins:?}");
    println!(
        "first second {}; seconds 2..{seconds}: least {least}, most {busiest}, mean {mean:.1} (within ±10%: {}); most in any one second (sliding): {most} (rate + burst: 200)",
        bins[0],
        (90..=110).contains(&least) && (90..=110).contains(&busiest)
    );
    for (stop, worker) in workers {
        let _ = stop.send(());
        let _ = worker.await;
    }
    // What is left in `sms` is purged so that a demo worker does not send it.
    let raw = jobs_core::plumbing::connect(&examples::amqp_config()?, "rate-check").await?;
    let channel = raw.open_channel(None).await?;
    let _ = channel.queue_purge(jobs_core::plumbing::amqprs::channel::QueuePurgeArguments::new(queue)).await;
    let _ = channel.close().await;
    jobs_core::plumbing::close_connection(raw).await;
    Ok(())
}
