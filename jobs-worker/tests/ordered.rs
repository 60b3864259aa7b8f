//! One at a time per key, in order (`#[job(ordered_by)]`), on a live broker:
//! three workers and 50 keys × 40 jobs of random durations: per key, starts
//! follow the enqueue order and no two overlap, through a graceful stop of
//! the worker running the shards; different keys run at once. A failing job
//! retries in place and holds its shard (a key of the same shard waits)
//! and only its shard (a key of another runs); past its attempts it is dead
//! and the shard moves on. A job of the type that reaches the base queue
//! (`dead retry`, a delay) is moved to its key's shard. The bad
//! combinations are refused: the derive's in the ui tests, the worker's
//! here.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::shard_of_key;
use jobs_core::{Client, DeadLetters, EnqueueOptions, Error, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

const LEDGER: &str = "ordered-test-ledger";
const LEDGER_SHARDS: u16 = 8;

/// One run: key, sequence number, worker, start and end.
type Run = (u64, u32, String, Instant, Instant);

static RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// An entry of an account's ledger: entries of one account apply in order.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-ledger", ordered_by = "account", shards = 8)]
struct Entry {
    account: u64,
    seq: u32,
    millis: u64,
}

impl Perform for Entry {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_RUNNING.fetch_max(now, Ordering::SeqCst);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        RUNS.lock().unwrap().push((self.account, self.seq, ctx.worker().to_owned(), start, Instant::now()));
        Ok(())
    }
}

fn ledger_queues() -> Vec<String> {
    let mut queues: Vec<String> = (0..LEDGER_SHARDS).map(|n| format!("{LEDGER}.shard.{n}")).collect();
    queues.push(LEDGER.to_owned());
    queues
}

/// Per key, the runs in the order they started: each key's sequence numbers
/// are 0, 1, 2…, and each started after the one before ended.
fn check_order(runs: &[Run], keys: u64, per_key: u32) {
    let mut by_key: HashMap<u64, Vec<&Run>> = HashMap::new();
    for run in runs {
        by_key.entry(run.0).or_default().push(run);
    }
    assert_eq!(by_key.len() as u64, keys, "every key ran");
    for (key, mut list) in by_key {
        list.sort_by_key(|run| run.3);
        let seqs: Vec<u32> = list.iter().map(|run| run.1).collect();
        assert_eq!(seqs, (0..per_key).collect::<Vec<_>>(), "key {key}: runs in enqueue order, each once");
        for pair in list.windows(2) {
            assert!(pair[1].3 >= pair[0].4, "key {key}: entry {} started before entry {} ended", pair[1].1, pair[0].1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_each_key_one_at_a_time_in_enqueue_order() {
    let queues = ledger_queues();
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let _cleanup = Cleanup::queues(&names);
    let raw = raw_connection().await;
    delete_queues(&raw, &names).await;
    let builder = || jobs_worker::Worker::builder().amqp(amqp_config()).job::<Entry>();
    let config = |id: &str| worker_config(&[LEDGER], 4, id, Duration::from_secs(30));
    // The first worker takes every shard (the first consumer of a
    // single-active-consumer queue is its active one); the others stand by.
    let first = spawn_built(builder().config(config("ordered-test-first")).build().unwrap());
    for n in 0..LEDGER_SHARDS {
        wait_for_consumers(&raw, &format!("{LEDGER}.shard.{n}"), 1).await;
    }
    let second = spawn_built(builder().config(config("ordered-test-second")).build().unwrap());
    let third = spawn_built(builder().config(config("ordered-test-third")).build().unwrap());
    // A passive declare counts a single-active-consumer queue's active
    // consumer only; the management API counts those standing by too.
    let management = jobs_core::plumbing::Management::new(&amqp_config());
    for n in 0..LEDGER_SHARDS {
        let shard = format!("{LEDGER}.shard.{n}");
        wait_until(&format!("three consumers of {shard}"), Duration::from_secs(60), || async {
            management.queue(&shard).await.is_some_and(|q| q.consumers >= 3)
        })
        .await;
    }
    // 50 accounts × 40 entries, enqueued entry by entry across the accounts,
    // each of 0 to 15 ms (a fixed pseudo-random sequence).
    let (keys, per_key) = (50u64, 40u32);
    let mut seed = 0x2545_f491_u64;
    let mut jobs = Vec::new();
    for seq in 0..per_key {
        for account in 0..keys {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            jobs.push(Entry { account, seq, millis: seed % 16 });
        }
    }
    let client = Client::new(amqp_config());
    client.enqueue_many(&jobs).await.unwrap();
    let total = (keys * u64::from(per_key)) as usize;
    wait_until("700 entries applied", Duration::from_secs(120), || async { RUNS.lock().unwrap().len() >= 700 }).await;
    // A rolling deploy of the worker running the shards: the next in line
    // takes each shard, its running entries finish first.
    first.stop().await.unwrap();
    wait_until("every entry applied", Duration::from_secs(180), || async { RUNS.lock().unwrap().len() >= total }).await;
    second.stop().await.unwrap();
    third.stop().await.unwrap();
    let runs = RUNS.lock().unwrap().clone();
    assert_eq!(runs.len(), total, "each entry ran once");
    check_order(&runs, keys, per_key);
    let mut workers: Vec<&str> = runs.iter().map(|run| run.2.as_str()).collect();
    workers.sort_unstable();
    workers.dedup();
    let most = MOST_RUNNING.load(Ordering::SeqCst);
    println!("{total} entries in order per key on {workers:?}; at most {most} ran at once");
    assert!(workers.len() >= 2, "the shards moved to another worker at the stop: {workers:?}");
    assert!(most > 1, "different keys run at once");
    assert!(most <= usize::from(LEDGER_SHARDS), "one job per shard at a time: {most} at once");
    for queue in &queues {
        assert_eq!(counts(&raw, queue).await.0, 0, "{queue} is empty");
    }
}

const FLAKY: &str = "ordered-test-flaky";

/// The runs of `Flaky` jobs: (key, seq, attempt, start).
static FLAKY_RUNS: Mutex<Vec<(String, u32, u32, Instant)>> = Mutex::new(Vec::new());

/// Fails its first `fails` attempts.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-flaky", ordered_by = "key", shards = 4, max_attempts = 3, backoff = one_second)]
struct Flaky {
    key: String,
    seq: u32,
    fails: u32,
}

fn one_second(_attempt: u32) -> Duration {
    Duration::from_secs(1)
}

impl Perform for Flaky {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        FLAKY_RUNS.lock().unwrap().push((self.key.clone(), self.seq, ctx.attempt(), Instant::now()));
        if ctx.attempt() <= self.fails {
            return Err(JobError::msg(format!("{} {} is not ready", self.key, self.seq)));
        }
        Ok(())
    }
}

/// Keys of `Flaky`'s shard `shard` of 4 (by the client's hash of the field's JSON text).
fn keys_in(shard: u16, n: usize, skip: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("key-{i}"))
        .filter(|k| k != skip && shard_of_key(format!("\"{k}\"").as_bytes(), 4) == shard)
        .take(n)
        .collect()
}

fn first_start(key: &str, seq: u32) -> Option<Instant> {
    FLAKY_RUNS.lock().unwrap().iter().filter(|r| r.0 == key && r.1 == seq).map(|r| r.3).min()
}

fn attempts(key: &str, seq: u32) -> Vec<u32> {
    FLAKY_RUNS.lock().unwrap().iter().filter(|r| r.0 == key && r.1 == seq).map(|r| r.2).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_holds_its_shard_and_only_its_shard() {
    let mut queues: Vec<String> = (0..4).map(|n| format!("{FLAKY}.shard.{n}")).collect();
    queues.push(FLAKY.to_owned());
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let _cleanup = Cleanup::queues(&names);
    let raw = raw_connection().await;
    delete_queues(&raw, &names).await;
    let slow = keys_in(0, 1, "")[0].clone();
    let neighbour = keys_in(0, 1, &slow)[0].clone();
    let other = keys_in(1, 1, "")[0].clone();
    let doomed = keys_in(2, 1, "")[0].clone();
    let client = Client::new(amqp_config());
    // `slow` fails twice (two seconds in place), then its next entry and
    // `neighbour` (same shard) wait; `other` (another shard) does not.
    client.enqueue(&Flaky { key: slow.clone(), seq: 0, fails: 2 }).await.unwrap();
    client.enqueue(&Flaky { key: slow.clone(), seq: 1, fails: 0 }).await.unwrap();
    client.enqueue(&Flaky { key: neighbour.clone(), seq: 0, fails: 0 }).await.unwrap();
    client.enqueue(&Flaky { key: other.clone(), seq: 0, fails: 0 }).await.unwrap();
    // `doomed` fails all three attempts: dead, and its shard moves on.
    client.enqueue(&Flaky { key: doomed.clone(), seq: 0, fails: 9 }).await.unwrap();
    client.enqueue(&Flaky { key: doomed.clone(), seq: 1, fails: 0 }).await.unwrap();
    let config = worker_config(&[FLAKY], 4, "ordered-test-flaky-worker", Duration::from_secs(5));
    let worker =
        spawn_built(jobs_worker::Worker::builder().amqp(amqp_config()).job::<Flaky>().config(config).build().unwrap());
    wait_until("every flaky job to settle", Duration::from_secs(60), || async {
        attempts(&slow, 1).len() == 1 && attempts(&neighbour, 0).len() == 1 && attempts(&doomed, 1).len() == 1
    })
    .await;
    assert_eq!(attempts(&slow, 0), vec![1, 2, 3], "retried in place, as attempts 2 and 3");
    assert_eq!(attempts(&doomed, 0), vec![1, 2, 3]);
    let slow_done = FLAKY_RUNS.lock().unwrap().iter().filter(|r| r.0 == slow && r.2 == 3).map(|r| r.3).max().unwrap();
    let held_for = slow_done - first_start(&slow, 0).unwrap();
    assert!(held_for >= Duration::from_millis(1_900), "two waits of a second in place: {held_for:?}");
    // Its shard waited for it: its next entry and its neighbour came after.
    assert!(first_start(&slow, 1).unwrap() >= slow_done, "the key's next entry waits for the retries");
    assert!(first_start(&neighbour, 0).unwrap() >= slow_done, "a key of the same shard waits too");
    // Another shard did not.
    assert!(first_start(&other, 0).unwrap() < slow_done, "a key of another shard runs meanwhile");
    // The doomed entry is dead after its third attempt, then its key's next ran.
    let dead = DeadLetters::connect(&amqp_config()).await.unwrap().list(FLAKY, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "one dead job: {dead:?}");
    assert!(dead[0].error.as_deref().unwrap_or("").contains(&format!("{doomed} 0 is not ready")), "{:?}", dead[0]);
    assert_eq!(dead[0].attempt, Some(3));
    assert!(first_start(&doomed, 1).unwrap() > first_start(&doomed, 0).unwrap());
    for queue in &queues[..4] {
        assert_eq!(counts(&raw, queue).await, (0, 1), "{queue}: empty, one consumer");
    }
    worker.stop().await.unwrap();
}

const ROUTED: &str = "ordered-test-routed";

static ROUTED_RUNS: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-routed", ordered_by = "doc", shards = 2)]
struct Edit {
    doc: u32,
}

impl Perform for Edit {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        ROUTED_RUNS.lock().unwrap().push((self.doc, ctx.queue().to_owned()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_reaches_the_base_queue_is_moved_to_its_shard_and_bad_options_are_refused() {
    let queues = [ROUTED, "ordered-test-routed.shard.0", "ordered-test-routed.shard.1"];
    let _cleanup = Cleanup::queues(&queues);
    let raw = raw_connection().await;
    delete_queues(&raw, &queues).await;
    let client = Client::new(amqp_config());
    // Refused at enqueue: another queue, a priority (nothing is sent).
    let refused = client.enqueue_with(&Edit { doc: 1 }, EnqueueOptions::new().queue("elsewhere")).await;
    assert!(matches!(&refused, Err(Error::Unsupported(why)) if why.contains("ordered")), "{refused:?}");
    let refused = client.enqueue_with(&Edit { doc: 1 }, EnqueueOptions::new().priority(5)).await;
    assert!(matches!(&refused, Err(Error::Unsupported(why)) if why.contains("ordered")), "{refused:?}");
    // A delayed job waits in the cascade and comes due to the base queue.
    client.enqueue_with(&Edit { doc: 7 }, EnqueueOptions::new().delay(Duration::from_secs(1))).await.unwrap();
    // One from a producer that does not shard: straight to the base queue.
    let message = jobs_core::plumbing::Message::job(
        Edit::NAME,
        Default::default(),
        jobs_core::plumbing::encode(&Edit { doc: 8 }).unwrap(),
    );
    let publisher = jobs_core::plumbing::Publisher::open(&raw, Duration::from_secs(5)).await.unwrap();
    publisher.publish(message.to(&jobs_core::plumbing::Destination::direct(ROUTED))).await.unwrap();
    // A batch's jobs go straight to their keys' shards.
    let edits: Vec<Edit> = (20..24).map(|doc| Edit { doc }).collect();
    client.enqueue_batch(jobs_core::Batch::new().jobs(&edits)).await.unwrap();
    let mut in_shards = 0;
    for shard in &queues[1..] {
        in_shards += counts(&raw, shard).await.0;
    }
    assert_eq!(in_shards, 4, "the batch's four jobs wait in the shards");
    let config = worker_config(&[ROUTED], 2, "ordered-test-routed-worker", Duration::from_secs(5));
    let worker =
        spawn_built(jobs_worker::Worker::builder().amqp(amqp_config()).job::<Edit>().config(config).build().unwrap());
    wait_until("the six edits to run", Duration::from_secs(30), || async { ROUTED_RUNS.lock().unwrap().len() == 6 })
        .await;
    let runs = ROUTED_RUNS.lock().unwrap().clone();
    // Each ran once, from its shard (ctx.queue() names the base queue).
    let mut docs: Vec<u32> = runs.iter().map(|(doc, _)| *doc).collect();
    docs.sort_unstable();
    assert_eq!(docs, vec![7, 8, 20, 21, 22, 23]);
    assert!(runs.iter().all(|(_, queue)| queue == ROUTED), "{runs:?}");
    for queue in queues {
        assert_eq!(counts(&raw, queue).await.0, 0, "{queue} is empty");
    }
    worker.stop().await.unwrap();
}

/// Another ordered type of the same queue with another shard count.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-ledger", ordered_by = "account", shards = 4)]
struct Refund {
    account: u64,
}

impl Perform for Refund {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[test]
fn ordered_types_sharing_a_queue_must_agree_on_shards_and_take_no_limits() {
    let built = jobs_worker::Worker::builder().amqp(amqp_config()).job::<Entry>().job::<Refund>().build();
    let error = built.unwrap_err().to_string();
    assert!(error.contains("Entry (shards = 8)") && error.contains("Refund (shards = 4)"), "{error}");
    let limit = jobs_worker::LimitConfig { job: "Entry".into(), max_running: Some(2), ..Default::default() };
    let settings = jobs_worker::Settings { limits: vec![limit], amqp: amqp_config(), ..Default::default() };
    let built = jobs_worker::Worker::builder().job::<Entry>().settings(settings).build();
    let error = built.unwrap_err().to_string();
    assert!(error.contains("ordered_by"), "{error}");
}

const STOPPED: &str = "ordered-test-stopped";

/// The runs of `Stubborn` jobs: (seq, attempt, start).
static STUBBORN_RUNS: Mutex<Vec<(u32, u32, Instant)>> = Mutex::new(Vec::new());

/// Fails its first `fails` attempts; one shard, so every job waits for the one before.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-stopped", ordered_by = "key", shards = 1, max_attempts = 5, backoff = five_seconds)]
struct Stubborn {
    key: String,
    seq: u32,
    fails: u32,
}

fn five_seconds(_attempt: u32) -> Duration {
    Duration::from_secs(5)
}

impl Perform for Stubborn {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        STUBBORN_RUNS.lock().unwrap().push((self.seq, ctx.attempt(), Instant::now()));
        if ctx.attempt() <= self.fails {
            return Err(JobError::msg("not yet"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_in_place_at_a_stop_goes_back_first_and_runs_before_its_keys_next() {
    let queues = [STOPPED, "ordered-test-stopped.shard.0"];
    let _cleanup = Cleanup::queues(&queues);
    let raw = raw_connection().await;
    delete_queues(&raw, &queues).await;
    let client = Client::new(amqp_config());
    client.enqueue(&Stubborn { key: "k".into(), seq: 0, fails: 1 }).await.unwrap();
    client.enqueue(&Stubborn { key: "k".into(), seq: 1, fails: 0 }).await.unwrap();
    let builder = || jobs_worker::Worker::builder().amqp(amqp_config()).job::<Stubborn>();
    let config = |id: &str| worker_config(&[STOPPED], 2, id, Duration::from_secs(30));
    let first = spawn_built(builder().config(config("ordered-test-stopped-first")).build().unwrap());
    wait_until("the first attempt to fail", Duration::from_secs(30), || async {
        !STUBBORN_RUNS.lock().unwrap().is_empty()
    })
    .await;
    // Stopped while the failed job waits 5 s in place: it goes back at once
    // (not after the wait, not to the tail), and the stop does not wait for it.
    let stopping = Instant::now();
    first.stop().await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(4), "the stop cut the wait short: {:?}", stopping.elapsed());
    wait_until("both jobs back in the shard", Duration::from_secs(10), || async {
        counts(&raw, "ordered-test-stopped.shard.0").await.0 == 2
    })
    .await;
    let second = spawn_built(builder().config(config("ordered-test-stopped-second")).build().unwrap());
    wait_until("the key's next job to run", Duration::from_secs(60), || async {
        STUBBORN_RUNS.lock().unwrap().iter().any(|r| r.0 == 1)
    })
    .await;
    second.stop().await.unwrap();
    let runs: Vec<(u32, u32)> = STUBBORN_RUNS.lock().unwrap().iter().map(|r| (r.0, r.1)).collect();
    // Its attempt count starts again from the header on the next worker
    // (attempt 1 again), and it runs to success before its key's next job.
    assert_eq!(runs, vec![(0, 1), (0, 1), (0, 2), (1, 1)], "in order, the held job first");
}

/// The runs of `Hot` jobs.
static HOT_RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());

/// Two keys only: each shard's next job is mostly of the same key.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-hot", ordered_by = "account", shards = 2)]
struct Hot {
    account: u64,
    seq: u32,
}

impl Perform for Hot {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(3)).await;
        HOT_RUNS.lock().unwrap().push((self.account, self.seq, ctx.worker().to_owned(), start, Instant::now()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_keep_their_order_through_rolling_stops_and_pauses() {
    let vhost = TestVhost::create("ordered-hot").await;
    let amqp = config_for(&vhost.url());
    let queue = "ordered-test-hot";
    let worker = |id: String| {
        let config = worker_config(&[queue], 2, &id, Duration::from_secs(30));
        spawn_built(jobs_worker::Worker::builder().amqp(amqp.clone()).job::<Hot>().config(config).build().unwrap())
    };
    let client = Client::new(amqp.clone());
    let (keys, per_key) = (2u64, 400u32);
    let jobs: Vec<Hot> = (0..per_key).flat_map(|seq| (0..keys).map(move |account| Hot { account, seq })).collect();
    client.enqueue_many(&jobs).await.unwrap();
    let mut running: Vec<_> = (0..3).map(|n| worker(format!("ordered-hot-{n}"))).collect();
    let total = (keys * u64::from(per_key)) as usize;
    // Rolling stops (each shard handed on while its next job is on its way)
    // and pauses (every worker lets go of the shards, then takes them again).
    let mut n = 3;
    let control = |pause: bool| {
        let (queue, by, at_ms) = (queue.to_owned(), "ordered-test".to_owned(), jobs_core::plumbing::events::now_ms());
        if pause {
            jobs_core::ControlCommand::Pause { queue, by, at_ms }
        } else {
            jobs_core::ControlCommand::Resume { queue, by, at_ms }
        }
    };
    while HOT_RUNS.lock().unwrap().len() < total {
        let done = HOT_RUNS.lock().unwrap().len();
        if n % 3 == 2 {
            client.control(&control(true)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.control(&control(false)).await.unwrap();
        } else {
            running.remove(0).stop().await.unwrap();
            running.push(worker(format!("ordered-hot-{n}")));
        }
        n += 1;
        wait_until("more entries to run", Duration::from_secs(60), || async {
            let now = HOT_RUNS.lock().unwrap().len();
            now >= total || now >= done + 40
        })
        .await;
    }
    for worker in running {
        worker.stop().await.unwrap();
    }
    let runs = HOT_RUNS.lock().unwrap().clone();
    println!("{} runs of {total} through {} stops and pauses", runs.len(), n - 3);
    assert_eq!(runs.len(), total, "each job ran once");
    check_order(&runs, keys, per_key);
}

/// The runs of `Ledger` jobs on their own broker node.
static NODE_RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "ordered-test-restart", ordered_by = "account", shards = 2)]
struct Ledger {
    account: u64,
    seq: u32,
}

impl Perform for Ledger {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        NODE_RUNS.lock().unwrap().push((self.account, self.seq, ctx.worker().to_owned(), start, Instant::now()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_keep_their_order_through_a_broker_restart() {
    let node = std::sync::Arc::new(TestNode::start("ordered-restart"));
    let mut amqp = config_for(&node.url());
    amqp.reconnect_timeout = Duration::from_secs(60);
    amqp.heartbeat = 5;
    let (keys, per_key) = (3u64, 60u32);
    let jobs: Vec<Ledger> =
        (0..per_key).flat_map(|seq| (0..keys).map(move |account| Ledger { account, seq })).collect();
    Client::new(amqp.clone()).enqueue_many(&jobs).await.unwrap();
    let config = worker_config(&["ordered-test-restart"], 2, "ordered-restart-worker", Duration::from_secs(5));
    let worker =
        spawn_built(jobs_worker::Worker::builder().amqp(amqp.clone()).job::<Ledger>().config(config).build().unwrap());
    wait_until("30 entries run", Duration::from_secs(60), || async { NODE_RUNS.lock().unwrap().len() >= 30 }).await;
    let restarter = node.clone();
    tokio::task::spawn_blocking(move || restarter.restart()).await.unwrap();
    let before = NODE_RUNS.lock().unwrap().len();
    assert!(before < (keys * u64::from(per_key)) as usize, "the restart came mid-run ({before} ran before it)");
    let distinct = || {
        let runs = NODE_RUNS.lock().unwrap();
        runs.iter().map(|r| (r.0, r.1)).collect::<std::collections::HashSet<_>>().len()
    };
    wait_until("every entry run after the restart", Duration::from_secs(120), || async {
        distinct() == (keys * u64::from(per_key)) as usize
    })
    .await;
    worker.stop().await.unwrap();
    let runs = NODE_RUNS.lock().unwrap().clone();
    println!(
        "{} runs of {} entries through a broker restart ({before} before it)",
        runs.len(),
        keys * u64::from(per_key)
    );
    // At least once: a run whose ack the restart lost runs again, right
    // after itself (it is still at the head of its shard), never after the
    // key's next; no two of a key at once.
    for account in 0..keys {
        let mut own: Vec<&Run> = runs.iter().filter(|r| r.0 == account).collect();
        own.sort_by_key(|r| r.3);
        let mut seqs: Vec<u32> = own.iter().map(|r| r.1).collect();
        seqs.dedup();
        assert_eq!(seqs, (0..per_key).collect::<Vec<_>>(), "account {account}: in order");
        for pair in own.windows(2) {
            assert!(
                pair[1].3 >= pair[0].4,
                "account {account}: entry {} started before entry {} ended",
                pair[1].1,
                pair[0].1
            );
        }
    }
}
