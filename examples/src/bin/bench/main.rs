//! Speed, measured: each row done by the framework and by raw amqprs doing the
//! same AMQP work, in the same run, with the ratio.
//!
//! `cargo run --release -p examples --bin bench` (`--help` lists the options:
//! `--quick` for a smoke run, `--rounds N`, `--only` some parts, `--drain-at`
//! prefetch counts). Each ratio is the median of the rounds' ratios, and
//! every round's ratio is printed too.
//! Needs the README's broker (`bash deploy/rabbitmq.sh`); uses queues `bench.*`
//! and deletes them.

mod ordered;
mod priorities;
mod progress;
mod raw;
mod schedules;
mod uniques;
mod workflows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobs_core::plumbing::amqprs::channel::QueueDeleteArguments;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::{queue_counts, Declarer};
use jobs_core::QueueType;
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

/// A no-op job carrying the time it was enqueued.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "bench.noop")]
struct Noop {
    sent_micros: u64,
}

static PERFORMED: AtomicU64 = AtomicU64::new(0);
/// How many jobs the running drain waits for, when the first one started, and
/// who to wake at the last: no polling loop competes with the worker.
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);
static DRAINED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static RECORD_LATENCY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Perform for Noop {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if RECORD_LATENCY.load(Ordering::Relaxed) {
            let latency = now_micros().saturating_sub(self.sent_micros);
            LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).push(latency);
        }
        performed();
        Ok(())
    }
}

/// Counts a drained job: the first starts the clock, the last wakes the drain.
fn performed() {
    let done = PERFORMED.fetch_add(1, Ordering::Relaxed) + 1;
    if done == 1 {
        FIRST.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
    }
    if done == TARGET.load(Ordering::Relaxed) {
        DRAINED.notify_one();
    }
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The parts of the benchmark, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Enqueue: sequential awaited, 64 and 512 concurrent callers, batches of 1000.
    Enqueue,
    /// Drain 20,000 no-op jobs at prefetch 1 and at the best concurrency.
    Drain,
    /// Drain at prefetch 1 with heartbeats on and off.
    Heartbeats,
    /// Drain at prefetch 1 and at the best concurrency with the broker link on
    /// a thread of its own (the default) and on the jobs' runtime.
    Link,
    /// Bulk loads: 10,000 and 1,000,000 jobs in one `enqueue_many` and one
    /// `enqueue_iter` call, each in a process of its own (rate, peak RSS).
    Bulk,
    /// Enqueue-to-start latency at a steady 1,000 jobs/s.
    Latency,
    /// A worker process's memory, idle and while draining.
    Memory,
    /// The scheduler: lateness of fired ticks (three workers, a schedule
    /// every second, two minutes) beside raw amqprs on a timer; a leader of
    /// 1,000 schedules, its CPU share and memory beside a worker with none.
    Schedules,
    /// A global concurrency limit: drain at concurrency 50 with `max_running
    /// = 50` on the type beside the same drain unlimited.
    Limits,
    /// Drain at concurrency 50 with a rate that never binds (1,000,000/s,
    /// burst 50,000) ÷ unlimited: what taking a token per job costs.
    Rates,
    /// Unique jobs beside plain enqueues: enqueue latency with `unique_for`
    /// vs without (16 concurrent), filling the keeper with 100,000 keys, and
    /// a keeper change with them held.
    Unique,
    /// Priorities beside plain (classic): sequential enqueues with
    /// priorities 0-9, and draining a queue with priorities at prefetch 1
    /// and 300; a weighted queue beside unweighted at concurrency 50 (both).
    Priorities,
    /// An ordered type (16 shards, 1,000 keys) drained by three workers
    /// beside an unordered queue drained by three at concurrency 16.
    Ordered,
    /// One job making 1,000,000 `ctx.progress` calls beside the same loop
    /// without them (classic).
    Progress,
    /// Workflows beside plain jobs: a batch's jobs vs plain jobs (concurrency
    /// 50 and prefetch 1), chains of 3 vs 3 plain jobs, and a batch's last
    /// job to its callback's start.
    Workflows,
}

struct Sizes {
    sequential: u64,
    concurrent: u64,
    batch: u64,
    drain: u64,
    latency_secs: u64,
    rate: u64,
    /// The bulk rows' two sizes.
    bulk: [u64; 2],
}

/// Rows in first-seen order; each holds every round's numbers.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Row)>,
}

enum Row {
    /// Throughput per round: (framework, raw) in jobs/s.
    Rate(Vec<(f64, f64)>),
    /// Latencies (µs) per round: framework, raw.
    Latency(Vec<(Vec<u64>, Vec<u64>)>),
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
        if let Row::Latency(rounds) = self.row(what, || Row::Latency(Vec::new())) {
            rounds.push((ours.to_vec(), raw.to_vec()));
        }
    }

    fn note(&mut self, what: &str, value: f64, unit: &'static str, note: &'static str) {
        if let Row::Note(v, _, _) = self.row(what, || Row::Note(Vec::new(), unit, note)) {
            v.push(value);
        }
    }

    fn print(&self, rounds: usize) {
        println!("\nMedians of {rounds} round(s); latency quantiles over all rounds' jobs; each ratio the median of the rounds' ratios.\n");
        println!("| row | framework | raw amqprs | ratio |\n|---|---:|---:|---:|");
        let mut per_round = Vec::new();
        for (what, row) in &self.rows {
            match row {
                Row::Rate(v) => {
                    let a = median(v.iter().map(|x| x.0).collect());
                    let b = median(v.iter().map(|x| x.1).collect());
                    let ratios: Vec<f64> = v.iter().map(|(a, b)| a / b).collect();
                    println!("| {what} | {a:.0} /s | {b:.0} /s | {:.2} |", median(ratios.clone()));
                    per_round.push((what.clone(), ratios));
                }
                Row::Latency(v) => {
                    let a: Vec<u64> = v.iter().flat_map(|r| r.0.iter().copied()).collect();
                    let b: Vec<u64> = v.iter().flat_map(|r| r.1.iter().copied()).collect();
                    for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
                        let (x, y) = (quantile(&a, p), quantile(&b, p));
                        let ratios: Vec<f64> = v.iter().map(|(a, b)| quantile(a, p) / quantile(b, p)).collect();
                        println!("| {what}, {label} | {x:.2} ms | {y:.2} ms | {:.2} |", median(ratios.clone()));
                        per_round.push((format!("{what}, {label}"), ratios));
                    }
                }
                Row::Note(v, unit, note) => {
                    println!("| {what} | {:.1} {unit} | - | - ({note}) |", median(v.clone()));
                }
            }
        }
        if rounds > 1 {
            println!("\nEach round's ratio (framework ÷ raw):\n");
            println!("| row | {} |", (1..=rounds).map(|r| format!("round {r}")).collect::<Vec<_>>().join(" | "));
            println!("|---|{}", "---:|".repeat(rounds));
            for (what, ratios) in per_round {
                let cells: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                println!("| {what} | {} |", cells.join(" | "));
            }
        }
    }
}

/// Empties `queue` and `<queue>.dead` and declares them as the framework does
/// (the same topology code), so both sides of a row use the same queues.
async fn declare(connection: &Connection, queue: &str, kind: QueueType) {
    delete(connection, queue).await;
    let declarer = Declarer::open(connection).await.expect("channel");
    let amqp = AmqpConfig { queue_type: kind, ..AmqpConfig::default() };
    amqp.topology().declare_job_queue(&declarer, queue).await.expect("declare");
    declarer.close().await;
}

async fn delete(connection: &Connection, queue: &str) {
    let channel = connection.open_channel(None).await.expect("channel");
    for name in [queue.to_owned(), format!("{queue}.dead")] {
        let _ = channel.queue_delete(QueueDeleteArguments::new(&name)).await;
    }
    let _ = channel.close().await;
}

/// How the raw side of a concurrent-enqueue row publishes.
#[derive(Clone, Copy)]
enum RawMode {
    /// Every message sent before waiting for any confirm.
    Pipelined,
    /// At most this many unconfirmed at a time.
    Window(u64),
    /// Pipelined, each message with the framework's properties.
    JobProperties,
}

/// Publishes `n` messages to a fresh `queue` with raw amqprs; returns the time
/// until the last confirm.
async fn raw_publish(connection: &Connection, queue: &str, kind: QueueType, n: u64, mode: RawMode) -> Duration {
    declare(connection, queue, kind).await;
    let mut raw = raw::RawPublisher::open(connection).await;
    if let RawMode::JobProperties = mode {
        raw = raw.with_job_properties(Noop::NAME);
    }
    let t = Instant::now();
    for _ in 0..n {
        raw.publish(queue, body()).await;
        if let RawMode::Window(window) = mode {
            raw.wait_window(window).await;
        }
    }
    raw.wait_confirms().await;
    t.elapsed()
}

fn body() -> Vec<u8> {
    jobs_core::plumbing::encode(&Noop { sent_micros: now_micros() }).expect("encode")
}

/// Enqueues `n` no-op jobs to `queue` from `width` concurrent enqueuers on one client.
async fn enqueue_concurrently(
    client: &Client,
    queue: &str,
    n: u64,
    width: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..width {
        let (client, queue) = (client.clone(), queue.to_owned());
        let per = n / width + u64::from(w < n % width);
        tasks.spawn(async move {
            for i in 0..per {
                client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(&queue)).await?;
            }
            Ok::<_, jobs_core::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Fills `queue` with `n` job messages (64 concurrent enqueuers).
async fn fill(client: &Client, queue: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    enqueue_concurrently(client, queue, n, 64).await
}

async fn framework_drain(amqp: &AmqpConfig, queue: &str, n: u64, concurrency: u16) -> Duration {
    framework_drain_with(amqp, queue, n, WorkerConfig { concurrency, ..WorkerConfig::default() }).await
}

/// [`framework_drain`] with the worker settings of `config` (its queues set here).
async fn framework_drain_with(amqp: &AmqpConfig, queue: &str, n: u64, config: WorkerConfig) -> Duration {
    framework_drain_limited(amqp, queue, n, config, Vec::new()).await
}

/// [`framework_drain_with`] under `[[limits]]` of `limits`.
async fn framework_drain_limited(
    amqp: &AmqpConfig,
    queue: &str,
    n: u64,
    config: WorkerConfig,
    limits: Vec<jobs_worker::LimitConfig>,
) -> Duration {
    let config = WorkerConfig { queues: vec![queue.to_owned()], ..config };
    let settings = jobs_worker::Settings { amqp: amqp.clone(), worker: config, limits, ..Default::default() };
    run_drain(Worker::builder().job::<Noop>().queue(queue).settings(settings).build().expect("worker"), n).await
}

/// Runs `worker` until it performed `n` jobs: the time from the first start.
async fn run_drain(worker: Worker, n: u64) -> Duration {
    run_drain_all(vec![worker], n).await
}

/// [`run_drain`] with several workers at once.
async fn run_drain_all(workers: Vec<Worker>, n: u64) -> Duration {
    PERFORMED.store(0, Ordering::SeqCst);
    TARGET.store(n, Ordering::SeqCst);
    *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|worker| {
            let mut rx = stop.subscribe();
            tokio::spawn(worker.run(async move {
                let _ = rx.recv().await;
            }))
        })
        .collect();
    DRAINED.notified().await;
    let elapsed = FIRST.lock().unwrap_or_else(|e| e.into_inner()).map(|s| s.elapsed()).unwrap_or_default();
    let _ = stop.send(());
    for handle in handles {
        let _ = handle.await;
    }
    elapsed
}

/// Speed, measured: each row done by the framework and by raw amqprs doing
/// the same AMQP work, in the same run, with the ratio. Needs a broker
/// (`bash deploy/rabbitmq.sh`); uses queues `bench.*` and deletes them.
#[derive(Debug, clap::Parser)]
#[command(name = "bench")]
struct Cli {
    /// Small counts and one round: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Rounds; medians are reported [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,
    /// Only these parts, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// Drain at these prefetch counts too, besides 1 (e.g. 10,100,300) [default: the best setting].
    #[arg(long, value_delimiter = ',', value_parser = prefetch)]
    drain_at: Vec<u16>,
    /// Classic queues of these storage versions, each in turn (e.g. 1,2), set
    /// by a `queue-version` policy on the bench's queues; quorum rows are left
    /// out then [default: classic queues as the broker makes them, and quorum].
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=2))]
    classic_versions: Vec<u8>,
    #[command(subcommand)]
    serve: Option<Child>,
}

#[derive(Debug, clap::Subcommand)]
enum Child {
    /// A plain framework worker on QUEUE, for the memory rows.
    #[command(hide = true)]
    Serve { queue: String },
    /// A framework worker on QUEUE firing COUNT schedules, for the scheduler rows.
    #[command(hide = true)]
    Schedules { queue: String, count: usize },
    /// Enqueues N jobs to QUEUE in one call of FORM (enqueue_many, enqueue_iter, or raw
    /// amqprs through the same window), then prints the seconds it took and its peak RSS in kB.
    #[command(hide = true)]
    Bulk {
        queue: String,
        form: String,
        n: u64,
        #[arg(long)]
        quorum: bool,
    },
}

fn prefetch(text: &str) -> Result<u16, String> {
    text.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "--drain-at takes a list of prefetch counts such as 10,100,300".into())
}

/// What the command line asks for.
struct Options {
    rounds: usize,
    /// Parts to run (all when empty).
    only: Vec<Part>,
    /// Prefetch counts to drain at besides 1 (the best setting when empty).
    drain_at: Vec<u16>,
    /// Classic queue versions to compare (none: the broker's, and quorum).
    classic_versions: Vec<u8>,
    sizes: Sizes,
    /// A smoke run (`--quick`).
    quick: bool,
}

impl Options {
    fn of(cli: Cli) -> Self {
        let sizes = if cli.quick {
            let bulk = [2_000, 20_000];
            Sizes { sequential: 200, concurrent: 2000, batch: 2000, drain: 2000, latency_secs: 2, rate: 200, bulk }
        } else {
            let bulk = [10_000, 1_000_000];
            Sizes {
                sequential: 3000,
                concurrent: 20000,
                batch: 20000,
                drain: 20000,
                latency_secs: 10,
                rate: 1000,
                bulk,
            }
        };
        let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 });
        let quick = cli.quick;
        Options { rounds, only: cli.only, drain_at: cli.drain_at, classic_versions: cli.classic_versions, sizes, quick }
    }

    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = <Cli as clap::Parser>::parse();
    match cli.serve {
        Some(Child::Serve { queue }) => return serve(queue).await,
        Some(Child::Schedules { queue, count }) => return schedules::child(queue, count).await,
        Some(Child::Bulk { queue, form, n, quorum }) => return bulk_child(&queue, &form, n, quorum).await,
        None => {}
    }
    let options = Options::of(cli);
    let amqp = examples::amqp_config()?;
    let connection = jobs_core::plumbing::connect(&amqp, "bench-raw").await?;
    let mut table = Table::default();
    for round in 1..=options.rounds {
        println!("round {round} of {}", options.rounds);
        let kinds: Vec<(QueueType, Option<u8>)> = if options.classic_versions.is_empty() {
            vec![(QueueType::Classic, None), (QueueType::Quorum, None)]
        } else {
            options.classic_versions.iter().map(|v| (QueueType::Classic, Some(*v))).collect()
        };
        for (kind, version) in kinds {
            let policy = match version {
                Some(version) => Some(QueueVersion::set(&amqp, version).await?),
                None => None,
            };
            let mut rows = Rows::new(&connection, &amqp, kind, &options.sizes);
            if let Some(version) = version {
                rows.label = if version == 1 { "classic v1" } else { "classic v2" };
            }
            println!("{} queues:", rows.label);
            if options.runs(Part::Enqueue) {
                rows.enqueue(&mut table).await?;
            }
            if options.runs(Part::Drain) {
                rows.drain(&mut table, &options.drain_at).await?;
            }
            if options.runs(Part::Link) {
                rows.link(&mut table, round).await?;
            }
            if options.runs(Part::Limits) {
                rows.limits(&mut table, round).await?;
            }
            if options.runs(Part::Rates) {
                rows.rates(&mut table, round).await?;
            }
            if options.runs(Part::Unique) {
                let keys = if options.quick { 10_000 } else { 100_000 };
                let amqp = AmqpConfig { queue_type: kind, ..amqp.clone() };
                uniques::rows(&connection, &amqp, &mut table, rows.label, (options.sizes.sequential, keys)).await?;
            }
            if options.runs(Part::Priorities) {
                let amqp = AmqpConfig { queue_type: kind, ..amqp.clone() };
                let sizes = (options.sizes.sequential, options.sizes.drain);
                priorities::rows(&connection, &amqp, &mut table, rows.label, sizes, round).await?;
            }
            if options.runs(Part::Ordered) {
                let amqp = AmqpConfig { queue_type: kind, ..amqp.clone() };
                ordered::rows(&connection, &amqp, &mut table, rows.label, options.sizes.drain, round).await?;
            }
            if options.runs(Part::Progress) && kind == QueueType::Classic {
                let calls = if options.quick { 100_000 } else { 1_000_000 };
                let amqp = AmqpConfig { queue_type: kind, ..amqp.clone() };
                progress::rows(&connection, &amqp, &mut table, rows.label, calls).await?;
            }
            if options.runs(Part::Heartbeats) {
                rows.heartbeats(&mut table, round).await?;
            }
            if options.runs(Part::Bulk) {
                rows.bulk(&mut table).await?;
            }
            if options.runs(Part::Latency) {
                rows.latency(&mut table).await?;
            }
            rows.finish().await;
            if let Some(policy) = policy {
                policy.clear().await;
            }
        }
        if options.runs(Part::Memory) {
            let (idle, peak) = worker_rss(&amqp, options.sizes.drain).await?;
            table.note("worker RSS, idle", idle, "MB", "a worker process, VmRSS once consuming");
            table.note("worker RSS, draining", peak, "MB", "VmHWM after draining the drain count at prefetch 1");
        }
        if options.runs(Part::Workflows) {
            println!("workflows (the right-hand column: the same jobs as plain jobs):");
            let (n, n1, batches) = if options.quick { (2_000, 500, 5) } else { (options.sizes.drain, 5_000, 50) };
            workflows::rows(&connection, &amqp, &mut table, n, n1, batches).await?;
        }
        if options.runs(Part::Schedules) {
            let secs = if options.quick { 10 } else { 120 };
            println!("scheduler: lateness over {secs} s, three workers");
            let (ours, raw) = schedules::lateness(&amqp, secs).await?;
            table.latency("fired tick lateness (1 s schedule, 3 workers)", &ours, &raw);
            let ([(leader_cpu, leader_rss), (idle_cpu, idle_rss)], beat) =
                schedules::load(&amqp, 1000, secs.min(60)).await?;
            table.note("largest beat, leader of 1,000 schedules", beat, "kB", "lists them once a minute");
            table.note("CPU, leader of 1,000 schedules", leader_cpu, "%", "of one core, ~17 firings/s");
            table.note("CPU, worker with no schedules", idle_cpu, "%", "of one core, idle");
            table.note("RSS, leader of 1,000 schedules", leader_rss, "MB", "VmRSS");
            table.note("RSS, worker with no schedules", idle_rss, "MB", "VmRSS");
            let connection = jobs_core::plumbing::connect(&amqp, "bench-sched-cleanup").await?;
            for queue in [schedules::SINK, "bench.sched.0", "bench.sched.1", "bench.sched.2", "bench.sched.load"] {
                delete(&connection, queue).await;
            }
            let _ = connection.close().await;
        }
    }
    let _ = connection.close().await;
    table.print(options.rounds);
    Ok(())
}

/// A `queue-version` policy on the bench's queues (`bench.*`) of the vhost:
/// classic queues declared while it holds, and those that exist, use that
/// storage version (the framework declares no `x-queue-version`).
struct QueueVersion {
    management: jobs_core::plumbing::Management,
    path: String,
}

impl QueueVersion {
    async fn set(amqp: &AmqpConfig, version: u8) -> Result<Self, Box<dyn std::error::Error>> {
        let management = jobs_core::plumbing::Management::new(amqp);
        let vhost = jobs_core::plumbing::percent_encode(management.vhost());
        let path = format!("/api/policies/{vhost}/bench-queue-version");
        let body = serde_json::json!({
            "pattern": "^bench\\.",
            "apply-to": "queues",
            "definition": { "queue-version": version },
        });
        management
            .put(&path, &body)
            .await
            .map_err(|e| format!("setting the queue-version policy (management API): {e}"))?;
        Ok(QueueVersion { management, path })
    }

    async fn clear(self) {
        let _ = self.management.delete(&self.path).await;
    }
}

/// The rows of one queue type, each measured for the framework and for raw amqprs.
struct Rows<'a> {
    connection: &'a Connection,
    amqp: AmqpConfig,
    kind: QueueType,
    label: &'static str,
    queue: String,
    client: Client,
    sizes: &'a Sizes,
}

impl<'a> Rows<'a> {
    fn new(connection: &'a Connection, amqp: &AmqpConfig, kind: QueueType, sizes: &'a Sizes) -> Self {
        let label = if kind == QueueType::Classic { "classic" } else { "quorum" };
        let amqp = AmqpConfig { queue_type: kind, ..amqp.clone() };
        let client = Client::new(amqp.clone());
        Rows { connection, amqp, kind, label, queue: format!("bench.{label}"), client, sizes }
    }

    /// Enqueue: sequential awaited, 64 and 512 concurrent enqueuers, and batches.
    async fn enqueue(&self, table: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
        let label = self.label;
        declare(self.connection, &self.queue, self.kind).await;
        let t = Instant::now();
        for i in 0..self.sizes.sequential {
            self.client.enqueue_with(&Noop { sent_micros: i }, EnqueueOptions::new().queue(&self.queue)).await?;
        }
        let ours = t.elapsed();
        let raw = raw_publish(self.connection, &self.queue, self.kind, self.sizes.sequential, RawMode::Window(1)).await;
        table.rate(&format!("{label}: enqueue, sequential awaited"), self.sizes.sequential, ours, raw);

        // Enqueue, N concurrent enqueuers on one client vs raw pipelined confirmed publishing.
        let mut by_width = Vec::new();
        for width in [64u64, 512] {
            declare(self.connection, &self.queue, self.kind).await;
            let t = Instant::now();
            enqueue_concurrently(&self.client, &self.queue, self.sizes.concurrent, width).await?;
            by_width.push(t.elapsed());
        }
        let ours = by_width[0];
        let pipelined =
            raw_publish(self.connection, &self.queue, self.kind, self.sizes.concurrent, RawMode::Pipelined).await;
        let (n, ours_512) = (self.sizes.concurrent, by_width[1]);
        let rows = [
            ("64 concurrent (raw: pipelined)", ours, pipelined),
            ("512 concurrent (raw: pipelined)", ours_512, pipelined),
            // Raw publishing held to as many unconfirmed messages as there are awaiting enqueuers.
            (
                "64 concurrent (raw: 64 in flight)",
                ours,
                raw_publish(self.connection, &self.queue, self.kind, n, RawMode::Window(64)).await,
            ),
            (
                "512 concurrent (raw: 512 in flight)",
                ours_512,
                raw_publish(self.connection, &self.queue, self.kind, n, RawMode::Window(512)).await,
            ),
            // Raw pipelining of the framework's own messages (its properties, not only delivery_mode):
            // what the bigger message costs the broker, apart from the framework's code.
            (
                "512 concurrent (raw: pipelined, same messages)",
                ours_512,
                raw_publish(self.connection, &self.queue, self.kind, n, RawMode::JobProperties).await,
            ),
        ];
        for (what, ours, raw) in rows {
            table.rate(&format!("{label}: enqueue, {what}"), self.sizes.concurrent, ours, raw);
        }

        // Batch: enqueue_many of 1000 at a time vs raw pipelined in batches of 1000.
        let batch_queue = Noop::QUEUE;
        {
            declare(self.connection, batch_queue, self.kind).await;
            let jobs: Vec<Noop> = (0..1000).map(|i| Noop { sent_micros: i }).collect();
            let t = Instant::now();
            for _ in 0..self.sizes.batch / 1000 {
                self.client.enqueue_many(&jobs).await?;
            }
            let ours = t.elapsed();
            declare(self.connection, batch_queue, self.kind).await;
            let mut raw = raw::RawPublisher::open(self.connection).await;
            let t = Instant::now();
            for _ in 0..self.sizes.batch / 1000 {
                for _ in 0..1000 {
                    raw.publish(batch_queue, body()).await;
                }
                raw.wait_confirms().await;
            }
            table.rate(&format!("{label}: enqueue_many, batches of 1000"), self.sizes.batch, ours, t.elapsed());
            delete(self.connection, batch_queue).await;
        }
        Ok(())
    }

    /// Bulk loads in one call, each run in a process of its own so that its
    /// peak RSS is its own: the framework's two forms, each beside raw amqprs
    /// publishing the same messages through the same window of 4,096.
    async fn bulk(&self, table: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
        let (label, queue) = (self.label, "bench.bulk");
        for n in self.sizes.bulk {
            for form in ["enqueue_many", "enqueue_iter"] {
                declare(self.connection, queue, self.kind).await;
                let (ours, ours_kb) = bulk_run(queue, form, n, self.kind).await?;
                declare(self.connection, queue, self.kind).await;
                let (raw, raw_kb) = bulk_run(queue, "raw", n, self.kind).await?;
                table.rate(&format!("{label}: {form}, {n} jobs in one call"), n, ours, raw);
                table.note(&format!("{label}: {form}, {n} jobs, peak RSS"), ours_kb / 1024.0, "MB", "VmHWM");
                table.note(&format!("{label}: raw, {n} messages, peak RSS"), raw_kb / 1024.0, "MB", "VmHWM");
            }
        }
        delete(self.connection, queue).await;
        Ok(())
    }

    /// Drain at prefetch 1 and at the best setting (or at `drain_at`).
    async fn drain(&self, table: &mut Table, drain_at: &[u16]) -> Result<(), Box<dyn std::error::Error>> {
        let label = self.label;
        // The best setting for no-op jobs, from a sweep of 10 to 1,000 (README, Speed).
        let best: u16 = if self.kind == QueueType::Classic { 300 } else { 1000 };
        let mut drains = vec![(1, "drain, prefetch 1".to_owned())];
        for &at in if drain_at.is_empty() { std::slice::from_ref(&best) } else { drain_at } {
            drains.push((at, format!("drain, prefetch {at} (framework: concurrency {at})")));
        }
        for (prefetch, what) in drains {
            declare(self.connection, &self.queue, self.kind).await;
            fill(&self.client, &self.queue, self.sizes.drain).await?;
            let ours = framework_drain(&self.amqp, &self.queue, self.sizes.drain, prefetch).await;
            declare(self.connection, &self.queue, self.kind).await;
            fill(&self.client, &self.queue, self.sizes.drain).await?;
            let raw_time = raw::drain(self.connection, &self.queue, prefetch, self.sizes.drain, |_| {}).await;
            table.rate(&format!("{label}: {what}"), self.sizes.drain, ours, raw_time);
        }
        Ok(())
    }

    /// Drain at prefetch 1 with heartbeats (the default, every 5 s: running
    /// jobs noted, counts kept, a beat to the stream) against none, both the
    /// framework, in the same round; which goes first alternates by round.
    async fn heartbeats(&self, table: &mut Table, round: usize) -> Result<(), Box<dyn std::error::Error>> {
        let what = format!("{}: drain, prefetch 1, heartbeats on (framework column) ÷ off (raw column)", self.label);
        let (on, off) = (Duration::from_secs(5), Duration::ZERO);
        let order = if round % 2 == 0 { [on, off] } else { [off, on] };
        let mut times = [Duration::ZERO; 2];
        for interval in order {
            declare(self.connection, &self.queue, self.kind).await;
            fill(&self.client, &self.queue, self.sizes.drain).await?;
            let config = WorkerConfig { heartbeat_interval: interval, ..WorkerConfig::default() };
            let time = framework_drain_with(&self.amqp, &self.queue, self.sizes.drain, config).await;
            times[usize::from(interval.is_zero())] = time;
        }
        table.rate(&what, self.sizes.drain, times[0], times[1]);
        Ok(())
    }

    /// Drain at prefetch 1 and at the best concurrency with the broker link on
    /// a thread of its own (the default) against on the jobs' runtime, both
    /// the framework, in the same round; which goes first alternates by round.
    async fn link(&self, table: &mut Table, round: usize) -> Result<(), Box<dyn std::error::Error>> {
        let best: u16 = if self.kind == QueueType::Classic { 300 } else { 1000 };
        for concurrency in [1, best] {
            let what = format!(
                "{}: drain, concurrency {concurrency}, link on its own thread (framework column) ÷ on the jobs' runtime (raw column)",
                self.label
            );
            let order = if round % 2 == 0 { [true, false] } else { [false, true] };
            let mut times = [Duration::ZERO; 2];
            for link_thread in order {
                declare(self.connection, &self.queue, self.kind).await;
                fill(&self.client, &self.queue, self.sizes.drain).await?;
                let config = WorkerConfig { concurrency, link_thread, ..WorkerConfig::default() };
                times[usize::from(!link_thread)] =
                    framework_drain_with(&self.amqp, &self.queue, self.sizes.drain, config).await;
            }
            table.rate(&what, self.sizes.drain, times[0], times[1]);
        }
        Ok(())
    }

    /// Drain at concurrency 50, the type limited to 50 running across the
    /// vhost (its slots held in `jobs.limit.Noop.*`) ÷ unlimited.
    async fn limits(&self, table: &mut Table, round: usize) -> Result<(), Box<dyn std::error::Error>> {
        let limit = jobs_worker::LimitConfig { job: Noop::NAME.into(), max_running: Some(50), ..Default::default() };
        let slots: Vec<String> = (0..50).map(|slot| format!("jobs.limit.Noop.{slot}")).collect();
        self.limited_drain(table, round, "max_running = 50", limit, &slots).await
    }

    /// Drain at concurrency 50 with a rate that never binds (each job takes
    /// a token from `jobs.rate.Noop`) ÷ unlimited.
    async fn rates(&self, table: &mut Table, round: usize) -> Result<(), Box<dyn std::error::Error>> {
        let limit = jobs_worker::LimitConfig {
            job: Noop::NAME.into(),
            rate: Some("1000000/s".into()),
            burst: Some(50_000),
            ..Default::default()
        };
        let queues = ["jobs.rate.Noop", "jobs.rate.Noop.leader", "jobs.rate.Noop.ask"].map(String::from);
        self.limited_drain(table, round, "rate = 1000000/s", limit, &queues).await
    }

    /// Drain at concurrency 50 with `limit` on the type (framework column) ÷
    /// unlimited (raw column), the order alternating by round; then deletes
    /// the type's queue and the limit's own queues `leftovers`.
    async fn limited_drain(
        &self,
        table: &mut Table,
        round: usize,
        name: &str,
        limit: jobs_worker::LimitConfig,
        leftovers: &[String],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let what = format!("{}: drain, concurrency 50, {name} (framework column) ÷ unlimited (raw column)", self.label);
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        let mut times = [Duration::ZERO; 2];
        // The type's own queue: a limited type's jobs run only from there.
        let queue = Noop::QUEUE;
        for limited in order {
            declare(self.connection, queue, self.kind).await;
            fill(&self.client, queue, self.sizes.drain).await?;
            let limits = if limited { vec![limit.clone()] } else { Vec::new() };
            let config = WorkerConfig { concurrency: 50, ..WorkerConfig::default() };
            times[usize::from(!limited)] =
                framework_drain_limited(&self.amqp, queue, self.sizes.drain, config, limits).await;
        }
        table.rate(&what, self.sizes.drain, times[0], times[1]);
        delete(self.connection, queue).await;
        let channel = self.connection.open_channel(None).await?;
        for leftover in leftovers {
            let _ = channel.queue_delete(QueueDeleteArguments::new(leftover)).await;
        }
        let _ = channel.close().await;
        Ok(())
    }

    /// End-to-end latency at a fixed offered load, prefetch 1.
    async fn latency(&self, table: &mut Table) -> Result<(), Box<dyn std::error::Error>> {
        let label = self.label;
        declare(self.connection, &self.queue, self.kind).await;
        let n = self.sizes.rate * self.sizes.latency_secs;
        LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).clear();
        RECORD_LATENCY.store(true, Ordering::SeqCst);
        let drain = tokio::spawn(framework_drain_owned(self.amqp.clone(), self.queue.clone(), n));
        wait_consumers(self.connection, &self.queue).await;
        offer_load(self.sizes.rate, n, |_| {
            let (client, queue) = (self.client.clone(), self.queue.clone());
            tokio::spawn(async move {
                let _ =
                    client.enqueue_with(&Noop { sent_micros: now_micros() }, EnqueueOptions::new().queue(&queue)).await;
            });
        })
        .await;
        drain.await?;
        RECORD_LATENCY.store(false, Ordering::SeqCst);
        let ours = std::mem::take(&mut *LATENCIES.lock().unwrap_or_else(|e| e.into_inner()));

        declare(self.connection, &self.queue, self.kind).await;
        let raw_latencies = std::sync::Arc::new(Mutex::new(Vec::new()));
        let consumer = {
            let (connection, queue, lat) = (self.connection.clone(), self.queue.clone(), raw_latencies.clone());
            tokio::spawn(async move {
                raw::drain(&connection, &queue, 1, n, |body| {
                    if let Ok(job) = jobs_core::plumbing::decode::<Noop>(body) {
                        lat.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(now_micros().saturating_sub(job.sent_micros));
                    }
                })
                .await
            })
        };
        wait_consumers(self.connection, &self.queue).await;
        let publisher = std::sync::Arc::new(tokio::sync::Mutex::new(raw::RawPublisher::open(self.connection).await));
        offer_load(self.sizes.rate, n, |_| {
            let (publisher, queue) = (publisher.clone(), self.queue.clone());
            tokio::spawn(async move {
                publisher.lock().await.publish(&queue, body()).await;
            });
        })
        .await;
        consumer.await?;
        let raw_lat = raw_latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
        table.latency(&format!("{label}: latency at {}/s, prefetch 1", self.sizes.rate), &ours, &raw_lat);
        Ok(())
    }

    async fn finish(self) {
        delete(self.connection, &self.queue).await;
        self.client.close().await;
    }
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
    let connection = jobs_core::plumbing::connect(amqp, "bench-rss").await?;
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
    fill(&client, queue, n).await?;
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

/// Runs `bench bulk` in a process of its own; its time and peak RSS (kB).
async fn bulk_run(
    queue: &str,
    form: &str,
    n: u64,
    kind: QueueType,
) -> Result<(Duration, f64), Box<dyn std::error::Error>> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(["bulk", queue, form, &n.to_string()]).env("RUST_LOG", "warn").kill_on_drop(true);
    if kind == QueueType::Quorum {
        command.arg("--quorum");
    }
    let out = command.output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("bench bulk {form} {n} failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let mut words = text.split_whitespace();
    let secs: f64 = words.next().ok_or("no time")?.parse()?;
    let kb: f64 = words.next().ok_or("no RSS")?.parse()?;
    Ok((Duration::from_secs_f64(secs), kb))
}

/// `bench bulk`: one bulk load, then its time and peak RSS on stdout.
async fn bulk_child(queue: &str, form: &str, n: u64, quorum: bool) -> Result<(), Box<dyn std::error::Error>> {
    let kind = if quorum { QueueType::Quorum } else { QueueType::Classic };
    let amqp = AmqpConfig { queue_type: kind, ..examples::amqp_config()? };
    let options = EnqueueOptions::new().queue(queue);
    let client = Client::new(amqp.clone());
    let connection = jobs_core::plumbing::connect(&amqp, "bench-bulk").await?;
    let jobs = (0..n).map(|i| Noop { sent_micros: i });
    let t = Instant::now();
    match form {
        "enqueue_many" => {
            let jobs: Vec<Noop> = jobs.collect();
            let t = Instant::now();
            let ids = client.enqueue_many_with(&jobs, options).await?;
            let took = t.elapsed();
            assert_eq!(ids.len() as u64, n);
            println!("{} {}", took.as_secs_f64(), status_kb(std::process::id(), "VmHWM:")?);
            return Ok(());
        }
        "enqueue_iter" => {
            let count = client.enqueue_iter_with(jobs, options).await?;
            assert_eq!(count as u64, n);
        }
        _ => {
            let mut raw = raw::RawPublisher::open(&connection).await.with_job_properties(Noop::NAME);
            for i in jobs {
                raw.publish(queue, jobs_core::plumbing::encode(&i)?).await;
                raw.wait_window(4096).await;
            }
            raw.wait_confirms().await;
        }
    }
    println!("{} {}", t.elapsed().as_secs_f64(), status_kb(std::process::id(), "VmHWM:")?);
    Ok(())
}

pub(crate) fn status_kb(pid: u32, key: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(key)).ok_or("no such line in /proc status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad line")?.parse()?)
}

/// `bench serve <queue>`: a plain framework worker, for the memory rows.
async fn serve(queue: String) -> Result<(), Box<dyn std::error::Error>> {
    let amqp = examples::amqp_config()?;
    let config = WorkerConfig { queues: vec![queue.clone()], ..WorkerConfig::default() };
    let worker = Worker::builder().job::<Noop>().queue(queue).amqp(amqp).config(config).build()?;
    worker.run(jobs_worker::stop_signal()).await?;
    Ok(())
}
