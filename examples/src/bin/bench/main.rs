//! Speed, measured: each row done by the framework and by raw amqprs doing the
//! same AMQP work, in the same run, with the ratio.
//!
//! `cargo run --release -p examples --bin bench` (add `--quick` for a smoke run).
//! Needs the README's broker (`bash deploy/rabbitmq.sh`); uses queues `bench.*`
//! and deletes them.

mod raw;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobs_core::amqprs::channel::QueueDeleteArguments;
use jobs_core::amqprs::connection::Connection;
use jobs_core::topology::{queue_counts, QueueType, Topology};
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Job, JobContext, JobError, Perform, Publisher};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

/// A no-op job carrying the time it was enqueued.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "bench.noop")]
struct Noop {
    sent_micros: u64,
}

static PERFORMED: AtomicU64 = AtomicU64::new(0);
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static RECORD_LATENCY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Perform for Noop {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if RECORD_LATENCY.load(Ordering::Relaxed) {
            let latency = now_micros().saturating_sub(self.sent_micros);
            LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).push(latency);
        }
        PERFORMED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

struct Sizes {
    sequential: u64,
    concurrent: u64,
    batch: u64,
    drain: u64,
    latency_secs: u64,
    rate: u64,
}

/// Rows in first-seen order; each holds every round's numbers.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Row)>,
}

enum Row {
    /// Throughput per round: (framework, raw) in jobs/s.
    Rate(Vec<(f64, f64)>),
    /// Latencies (µs) of every round: framework, raw.
    Latency(Vec<u64>, Vec<u64>),
    /// A figure of the framework alone.
    Note(Vec<f64>, &'static str, &'static str),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn quantile(v: &[u64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

impl Table {
    fn row(&mut self, what: &str, new: impl FnOnce() -> Row) -> &mut Row {
        let at = match self.rows.iter().position(|r| r.0 == what) {
            Some(at) => at,
            None => {
                self.rows.push((what.to_owned(), new()));
                self.rows.len() - 1
            }
        };
        &mut self.rows[at].1
    }

    fn rate(&mut self, what: &str, n: u64, ours: Duration, raw: Duration) {
        let (a, b) = (n as f64 / ours.as_secs_f64(), n as f64 / raw.as_secs_f64());
        println!("  {what}: framework {a:.0}/s, raw {b:.0}/s");
        if let Row::Rate(v) = self.row(what, || Row::Rate(Vec::new())) {
            v.push((a, b));
        }
    }

    fn latency(&mut self, what: &str, ours: &[u64], raw: &[u64]) {
        println!("  {what}: p99 framework {:.2} ms, raw {:.2} ms", quantile(ours, 0.99), quantile(raw, 0.99));
        if let Row::Latency(a, b) = self.row(what, || Row::Latency(Vec::new(), Vec::new())) {
            a.extend_from_slice(ours);
            b.extend_from_slice(raw);
        }
    }

    fn note(&mut self, what: &str, value: f64, unit: &'static str, note: &'static str) {
        if let Row::Note(v, _, _) = self.row(what, || Row::Note(Vec::new(), unit, note)) {
            v.push(value);
        }
    }

    fn print(&self, rounds: usize) {
        println!("\nMedians of {rounds} round(s); latency quantiles over all rounds' jobs.\n");
        println!("| row | framework | raw amqprs | ratio |\n|---|---:|---:|---:|");
        for (what, row) in &self.rows {
            match row {
                Row::Rate(v) => {
                    let a = median(v.iter().map(|x| x.0).collect());
                    let b = median(v.iter().map(|x| x.1).collect());
                    println!("| {what} | {a:.0} /s | {b:.0} /s | {:.2} |", a / b);
                }
                Row::Latency(a, b) => {
                    for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
                        let (x, y) = (quantile(a, p), quantile(b, p));
                        println!("| {what}, {label} | {x:.2} ms | {y:.2} ms | {:.2} |", x / y);
                    }
                }
                Row::Note(v, unit, note) => {
                    println!("| {what} | {:.1} {unit} | - | - ({note}) |", median(v.clone()));
                }
            }
        }
    }
}

/// Empties `queue` and `<queue>.dead` and declares them as the framework does
/// (the same topology code), so both sides of a row use the same queues.
async fn declare(connection: &Connection, queue: &str, kind: QueueType) {
    delete(connection, queue).await;
    let publisher = Publisher::open(connection, Duration::from_secs(30)).await.expect("channel");
    Topology::new(kind, 3).declare_job_queue(&publisher, queue).await.expect("declare");
    publisher.close().await;
}

async fn delete(connection: &Connection, queue: &str) {
    let channel = connection.open_channel(None).await.expect("channel");
    for name in [queue.to_owned(), format!("{queue}.dead")] {
        let _ = channel.queue_delete(QueueDeleteArguments::new(&name)).await;
    }
    let _ = channel.close().await;
}

fn body() -> Vec<u8> {
    jobs_core::encode(&Noop { sent_micros: now_micros() }).expect("encode")
}

/// Fills `queue` with `n` job messages (64 concurrent enqueuers).
async fn fill(client: &Client, queue: &str, n: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (client, queue) = (client.clone(), queue.to_owned());
        let per = n / 64 + u64::from(w < n % 64);
        tasks.spawn(async move {
            for i in 0..per {
                client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(&queue)).await.expect("fill");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn framework_drain(amqp: &AmqpConfig, queue: &str, n: u64, concurrency: u16) -> Duration {
    PERFORMED.store(0, Ordering::SeqCst);
    let config = WorkerConfig { queues: vec![queue.to_owned()], concurrency, ..WorkerConfig::default() };
    let worker = Worker::new(amqp.clone(), config).expect("worker");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    let mut start = None;
    loop {
        let done = PERFORMED.load(Ordering::Relaxed);
        if done > 0 {
            start.get_or_insert_with(Instant::now);
        }
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    let _ = tx.send(());
    let _ = handle.await;
    elapsed
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        return serve(args.get(2).cloned().unwrap_or_default()).await;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).and_then(|r| r.parse().ok()).ok_or("--rounds takes a number")?,
        None if quick => 1,
        None => 3,
    };
    let sizes = if quick {
        Sizes { sequential: 200, concurrent: 2000, batch: 2000, drain: 2000, latency_secs: 2, rate: 200 }
    } else {
        Sizes { sequential: 3000, concurrent: 20000, batch: 20000, drain: 20000, latency_secs: 10, rate: 1000 }
    };
    let amqp = examples::amqp_config()?;
    let connection = jobs_core::connect(&amqp, "bench-raw").await?;
    let mut table = Table::default();

    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        for kind in [QueueType::Classic, QueueType::Quorum] {
            let label = if kind == QueueType::Classic { "classic" } else { "quorum" };
            println!("{label} queues:");
            let mut amqp = amqp.clone();
            amqp.queue_type = kind;
            let queue = format!("bench.{label}");
            let client = Client::new(amqp.clone());

            // Enqueue, sequential: each confirmed before the next.
            declare(&connection, &queue, kind).await;
            let t = Instant::now();
            for i in 0..sizes.sequential {
                client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(&queue)).await?;
            }
            let ours = t.elapsed();
            declare(&connection, &queue, kind).await;
            let mut raw = raw::RawPublisher::open(&connection).await;
            let t = Instant::now();
            for _ in 0..sizes.sequential {
                raw.publish(&queue, body()).await;
                raw.wait_confirms().await;
            }
            table.rate(&format!("{label}: enqueue, sequential awaited"), sizes.sequential, ours, t.elapsed());

            // Enqueue, N concurrent enqueuers on one client vs raw pipelined confirmed publishing.
            let mut by_width = Vec::new();
            for width in [64u64, 512] {
                declare(&connection, &queue, kind).await;
                let t = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..width {
                    let (client, queue) = (client.clone(), queue.clone());
                    let per = sizes.concurrent / width + u64::from(w < sizes.concurrent % width);
                    tasks.push(tokio::spawn(async move {
                        for i in 0..per {
                            client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(&queue)).await?;
                        }
                        Ok::<_, jobs_core::Error>(())
                    }));
                }
                for task in tasks {
                    task.await??;
                }
                by_width.push(t.elapsed());
            }
            let ours = by_width[0];
            declare(&connection, &queue, kind).await;
            let mut raw = raw::RawPublisher::open(&connection).await;
            let t = Instant::now();
            for _ in 0..sizes.concurrent {
                raw.publish(&queue, body()).await;
            }
            raw.wait_confirms().await;
            let pipelined = t.elapsed();
            table.rate(&format!("{label}: enqueue, 64 concurrent (raw: pipelined)"), sizes.concurrent, ours, pipelined);
            table.rate(
                &format!("{label}: enqueue, 512 concurrent (raw: pipelined)"),
                sizes.concurrent,
                by_width[1],
                pipelined,
            );
            // The same raw publishing held to 64 unconfirmed at a time, as 64 awaiting enqueuers are.
            declare(&connection, &queue, kind).await;
            let mut raw = raw::RawPublisher::open(&connection).await;
            let t = Instant::now();
            for _ in 0..sizes.concurrent {
                raw.publish(&queue, body()).await;
                raw.wait_window(64).await;
            }
            raw.wait_confirms().await;
            table.rate(
                &format!("{label}: enqueue, 64 concurrent (raw: 64 in flight)"),
                sizes.concurrent,
                ours,
                t.elapsed(),
            );

            // Batch: enqueue_many of 1000 at a time vs raw pipelined in batches of 1000.
            let batch_queue =
                if kind == QueueType::Classic { Noop::QUEUE.to_owned() } else { format!("{}.q", Noop::QUEUE) };
            if kind == QueueType::Classic {
                declare(&connection, &batch_queue, kind).await;
                let jobs: Vec<Noop> = (0..1000).map(|i| Noop { sent_micros: i }).collect();
                let t = Instant::now();
                for _ in 0..sizes.batch / 1000 {
                    client.enqueue_many(&jobs).await?;
                }
                let ours = t.elapsed();
                declare(&connection, &batch_queue, kind).await;
                let mut raw = raw::RawPublisher::open(&connection).await;
                let t = Instant::now();
                for _ in 0..sizes.batch / 1000 {
                    for _ in 0..1000 {
                        raw.publish(&batch_queue, body()).await;
                    }
                    raw.wait_confirms().await;
                }
                table.rate(&format!("{label}: enqueue_many, batches of 1000"), sizes.batch, ours, t.elapsed());
                delete(&connection, &batch_queue).await;
            }

            // Drain at prefetch 1 and at the best setting.
            for (prefetch, what) in
                [(1u16, "drain, prefetch 1"), (100, "drain, prefetch 100 (framework: concurrency 100)")]
            {
                declare(&connection, &queue, kind).await;
                fill(&client, &queue, sizes.drain).await;
                let ours = framework_drain(&amqp, &queue, sizes.drain, prefetch).await;
                declare(&connection, &queue, kind).await;
                fill(&client, &queue, sizes.drain).await;
                let raw_time = raw::drain(&connection, &queue, prefetch, sizes.drain, |_| {}).await;
                table.rate(&format!("{label}: {what}"), sizes.drain, ours, raw_time);
            }

            // End-to-end latency at a fixed offered load, prefetch 1.
            if kind == QueueType::Classic {
                declare(&connection, &queue, kind).await;
                let n = sizes.rate * sizes.latency_secs;
                LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).clear();
                RECORD_LATENCY.store(true, Ordering::SeqCst);
                let drain = tokio::spawn(framework_drain_owned(amqp.clone(), queue.clone(), n));
                wait_consumers(&connection, &queue).await;
                offer_load(sizes.rate, n, |_| {
                    let (client, queue) = (client.clone(), queue.clone());
                    tokio::spawn(async move {
                        let _ = client
                            .enqueue_with(&Noop { sent_micros: now_micros() }, EnqueueOptions::new().queue(&queue))
                            .await;
                    });
                })
                .await;
                drain.await?;
                RECORD_LATENCY.store(false, Ordering::SeqCst);
                let ours = std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|e| e.into_inner()));

                declare(&connection, &queue, kind).await;
                let raw_latencies = std::sync::Arc::new(Mutex::new(Vec::new()));
                let consumer = {
                    let (connection, queue, lat) = (connection.clone(), queue.clone(), raw_latencies.clone());
                    tokio::spawn(async move {
                        raw::drain(&connection, &queue, 1, n, |body| {
                            if let Ok(job) = jobs_core::decode::<Noop>(body) {
                                lat.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(now_micros().saturating_sub(job.sent_micros));
                            }
                        })
                        .await
                    })
                };
                wait_consumers(&connection, &queue).await;
                let publisher =
                    std::sync::Arc::new(tokio::sync::Mutex::new(raw::RawPublisher::open(&connection).await));
                offer_load(sizes.rate, n, |_| {
                    let (publisher, queue) = (publisher.clone(), queue.clone());
                    tokio::spawn(async move {
                        publisher.lock().await.publish(&queue, body()).await;
                    });
                })
                .await;
                consumer.await?;
                let raw_lat = raw_latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
                table.latency(&format!("{label}: latency at {}/s, prefetch 1", sizes.rate), &ours, &raw_lat);
            }
            delete(&connection, &queue).await;
            client.close().await;
        }

        // Worker process memory.
        let (idle, peak) = worker_rss(&amqp, sizes.drain).await?;
        table.note("worker RSS, idle", idle, "MB", "a worker process, VmRSS once consuming");
        table.note("worker RSS, draining", peak, "MB", "VmHWM after draining the drain count at prefetch 1");
    }
    let _ = connection.close().await;
    table.print(rounds);
    Ok(())
}

async fn framework_drain_owned(amqp: AmqpConfig, queue: String, n: u64) -> Duration {
    framework_drain(&amqp, &queue, n, 1).await
}

async fn wait_consumers(connection: &Connection, queue: &str) {
    for _ in 0..500 {
        if queue_counts(connection, queue).await.is_some_and(|(_, consumers)| consumers > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls `send` `n` times at `rate` per second.
async fn offer_load(rate: u64, n: u64, mut send: impl FnMut(u64)) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        tick.tick().await;
        send(i);
    }
}

/// Runs a framework worker process on `bench.rss` and measures its memory.
async fn worker_rss(amqp: &AmqpConfig, n: u64) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let queue = "bench.rss";
    let connection = jobs_core::connect(amqp, "bench-rss").await?;
    declare(&connection, queue, QueueType::Classic).await;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", queue])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    wait_consumers(&connection, queue).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = status_kb(pid, "VmRSS:")? / 1024.0;
    let client = Client::new(amqp.clone());
    fill(&client, queue, n).await;
    for _ in 0..6000 {
        if queue_counts(&connection, queue).await.map(|(ready, _)| ready) == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak = status_kb(pid, "VmHWM:")? / 1024.0;
    let _ = child.kill().await;
    client.close().await;
    delete(&connection, queue).await;
    let _ = connection.close().await;
    Ok((idle, peak))
}

fn status_kb(pid: u32, key: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).ok_or("no such line in /proc status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad line")?.parse()?)
}

/// `bench serve <queue>`: a plain framework worker, for the memory rows.
async fn serve(queue: String) -> Result<(), Box<dyn std::error::Error>> {
    let amqp = examples::amqp_config()?;
    let config = WorkerConfig { queues: vec![queue], ..WorkerConfig::default() };
    Worker::new(amqp, config)?.run(jobs_worker::stop_signal()).await?;
    Ok(())
}
