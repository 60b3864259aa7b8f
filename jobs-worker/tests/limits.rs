//! Global concurrency limits on a live broker: `max_running = 3` on four
//! workers at concurrency 4 never runs more than 3 at once (recorded by the
//! jobs: start and end times), and uses all 3; a worker whose link goes
//! silent while it holds the slots (as a killed host's does) loses them to
//! the others within its heartbeat time, its jobs come back and run, and
//! another queue keeps moving throughout.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

/// A run: (tag, worker, start, end once it ended).
type Run = (String, String, Instant, Option<Instant>);

static RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());

/// Notes its run from start to end (or to its drop).
struct Noted(usize);

impl Drop for Noted {
    fn drop(&mut self) {
        RUNS.lock().unwrap()[self.0].3 = Some(Instant::now());
    }
}

/// At most 3 at once across the vhost; `millis` of work.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "limits-test-charge", max_running = 3)]
struct LimitedCharge {
    tag: String,
    millis: u64,
}

impl Perform for LimitedCharge {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let n = {
            let mut runs = RUNS.lock().unwrap();
            runs.push((self.tag.clone(), ctx.worker().to_owned(), Instant::now(), None));
            runs.len() - 1
        };
        let _noted = Noted(n);
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(())
    }
}

/// Unlimited, on another queue.
#[derive(Debug, Serialize, Deserialize, Job)]
struct FreeChore {
    tag: String,
}

impl Perform for FreeChore {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        RUNS.lock().unwrap().push((self.tag.clone(), ctx.worker().to_owned(), Instant::now(), Some(Instant::now())));
        Ok(())
    }
}

/// The most runs of `tag` at once (of workers `only`, if given).
fn most_at_once(tag: &str, only: Option<&[&str]>) -> usize {
    let runs = RUNS.lock().unwrap();
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for (t, worker, start, end) in runs.iter() {
        if t != tag || only.is_some_and(|o| !o.contains(&worker.as_str())) {
            continue;
        }
        edges.push((*start, 1));
        edges.push((end.unwrap_or_else(Instant::now), -1));
    }
    // Ends before starts at the same instant.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap()
}

fn ended(tag: &str) -> usize {
    RUNS.lock().unwrap().iter().filter(|(t, _, _, end)| t == tag && end.is_some()).count()
}

fn config(queues: &[&str], id: &str) -> WorkerConfig {
    worker_config(queues, 4, id, Duration::from_secs(5))
}

async fn slot_cleanup(raw: &jobs_core::plumbing::amqprs::connection::Connection) {
    let slots: Vec<String> = (0..3).map(|n| format!("jobs.limit.LimitedCharge.{n}")).collect();
    delete_queues(raw, &slots.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_holds_across_four_workers_and_a_silent_workers_slots_come_back() {
    let queue = LimitedCharge::QUEUE;
    let other = unique("limits-free");
    let _cleanup = Cleanup::queues(&[queue, &other]);
    let raw = raw_connection().await;
    slot_cleanup(&raw).await;
    let client = Client::new(amqp_config());

    // A worker that does not consume the limited type's queue takes none of its slots.
    let bystander = spawn_with(amqp_config(), config(&[&other], "limits-bystander"));
    wait_for_consumers(&raw, &other, 1).await;
    // A worker whose link can be silenced starts next: it is the first
    // consumer of every slot queue, so it holds all three.
    let relay = Relay::start().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 1;
    let doomed = spawn_with(amqp, config(&[queue, &other], "limits-doomed"));
    wait_for_consumers(&raw, "jobs.limit.LimitedCharge.2", 1).await;
    let mut workers: Vec<(String, RunningWorker)> = (0..3)
        .map(|n| {
            let id = format!("limits-{n}");
            let worker = spawn_with(amqp_config(), config(&[queue, &other], &id));
            (id, worker)
        })
        .collect();
    wait_for_consumers(&raw, &other, 5).await;
    wait_for_consumers(&raw, "jobs.limit.LimitedCharge.2", 4).await;

    // Phase 1: 30 jobs of 300 ms on four workers of concurrency 4.
    let tag = unique("phase-1");
    for _ in 0..30 {
        client.enqueue(&LimitedCharge { tag: tag.clone(), millis: 300 }).await.unwrap();
    }
    wait_until("30 limited jobs to run", Duration::from_secs(60), || async { ended(&tag) == 30 }).await;
    assert_eq!(most_at_once(&tag, None), 3, "never more than 3 at once, and the 3 used");

    // Phase 2: long jobs on the doomed worker's slots; its link goes silent.
    let tag = unique("phase-2");
    for _ in 0..12 {
        client.enqueue(&LimitedCharge { tag: tag.clone(), millis: 1_500 }).await.unwrap();
    }
    wait_until("three long jobs running", Duration::from_secs(20), || async {
        RUNS.lock().unwrap().iter().filter(|(t, _, _, end)| *t == tag && end.is_none()).count() == 3
    })
    .await;
    let cut_at = Instant::now();
    relay.cut();
    let free_tag = unique("free");
    let moving = {
        let (client, free_tag, other) = (client.clone(), free_tag.clone(), other.clone());
        tokio::spawn(async move {
            for _ in 0..40 {
                client
                    .enqueue_with(&FreeChore { tag: free_tag.clone() }, EnqueueOptions::new().queue(&other))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let survivors = ["limits-0", "limits-1", "limits-2"];
    wait_until("a surviving worker to start a limited job after the cut", Duration::from_secs(20), || async {
        RUNS.lock()
            .unwrap()
            .iter()
            .any(|(t, w, start, _)| *t == tag && survivors.contains(&w.as_str()) && *start > cut_at)
    })
    .await;
    let back_in = cut_at.elapsed();
    moving.await.unwrap();
    // Every job runs to its end: the doomed worker's come back (its link
    // went silent: the broker returns them), and run elsewhere or later.
    wait_until("every long job to have run to its end", Duration::from_secs(90), || async {
        let runs = RUNS.lock().unwrap();
        let whole = runs
            .iter()
            .filter(|(t, _, start, end)| {
                *t == tag && end.is_some_and(|e| e.duration_since(*start) >= Duration::from_millis(1_500))
            })
            .count();
        whole >= 12
    })
    .await;
    assert!(most_at_once(&tag, Some(&survivors)) <= 3, "the survivors never ran more than 3 at once");
    wait_until("the other queue's jobs all ran", Duration::from_secs(20), || async { ended(&free_tag) == 40 }).await;
    println!("slots came back to the other workers {back_in:?} after the link went silent (heartbeat 1 s)");
    assert!(back_in < Duration::from_secs(15), "{back_in:?}");

    // Phase 3: the worker holding the slots stops (a deploy) while its jobs
    // run: it keeps the slots until they have ended, so no one runs more.
    let tag = unique("phase-3");
    for _ in 0..6 {
        client.enqueue(&LimitedCharge { tag: tag.clone(), millis: 2_000 }).await.unwrap();
    }
    wait_until("three phase-3 jobs running", Duration::from_secs(20), || async {
        RUNS.lock().unwrap().iter().filter(|(t, _, _, end)| *t == tag && end.is_none()).count() == 3
    })
    .await;
    let holder = RUNS.lock().unwrap().iter().find(|(t, _, _, end)| *t == tag && end.is_none()).unwrap().1.clone();
    // The silent worker reconnected at the end of every slot's line: a survivor holds them.
    let n = workers.iter().position(|(id, _)| *id == holder).unwrap_or_else(|| panic!("{holder} holds the slots"));
    let (_, worker) = workers.remove(n);
    worker.stop().await.unwrap();
    println!("stopped {holder} while it ran three limited jobs");
    wait_until("the six phase-3 jobs to run", Duration::from_secs(60), || async { ended(&tag) == 6 }).await;
    assert!(most_at_once(&tag, None) <= 3, "a stopping worker's slots are not taken while its jobs run");

    assert!(!RUNS.lock().unwrap().iter().any(|(t, w, ..)| t.starts_with("test.phase") && w == "limits-bystander"));
    bystander.stop().await.unwrap();
    doomed.stop().await.unwrap();
    for (_, worker) in workers {
        worker.stop().await.unwrap();
    }
    slot_cleanup(&raw).await;
}

/// Beside `FreeChore` on the queue `default`.
#[derive(Debug, Serialize, Deserialize, Job)]
struct OtherChore {}

impl Perform for OtherChore {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// Blocking work, on a queue of its own.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "limits-test-blocking", blocking)]
struct BlockingChore {}

impl Perform for BlockingChore {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn refusal(limit: jobs_worker::LimitConfig) -> String {
    let settings = jobs_worker::Settings { limits: vec![limit], ..Default::default() };
    jobs_worker::Worker::builder().linked_jobs().settings(settings).build().unwrap_err().to_string()
}

#[test]
fn limits_the_worker_cannot_keep_are_refused_at_start_naming_what_is_wrong() {
    let limit = |job: &str, max_running| jobs_worker::LimitConfig {
        job: job.into(),
        max_running: Some(max_running),
        ..Default::default()
    };
    // A limited type's jobs waiting for a slot would hold its queue's other types back.
    let text = refusal(limit("FreeChore", 2));
    assert!(text.contains("`FreeChore`") && text.contains("`default`") && text.contains("OtherChore"), "{text}");
    let text = refusal(limit("NoSuchJob", 2));
    assert!(text.contains("limits.0.job") && text.contains("NoSuchJob") && text.contains("LimitedCharge"), "{text}");
    assert!(refusal(limit("LimitedCharge", 0)).contains("limits.0.max_running"));
    // A blocking run past its timeout keeps its thread: its slot could not be given back.
    let text = refusal(limit("BlockingChore", 2));
    assert!(text.contains("`BlockingChore`") && text.contains("blocking"), "{text}");
}

/// The broker's `consumer_timeout` (3 s on a node of its own) would take a
/// held token back and hand it to another worker while jobs still run here:
/// the holder renews its tokens, so over four times that timeout every
/// limited job runs on the worker that took the slots first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_slots_outlive_the_brokers_consumer_timeout() {
    let node = TestNode::start_advanced(
        "limits-consumer-timeout",
        "consumer_timeout = 3000",
        "[{rabbit, [{channel_tick_interval, 500}]}].",
    );
    let url = node.url();
    let raw = raw_connection_to(&url).await;
    let queue = LimitedCharge::QUEUE;
    let timeout = |id: &str| WorkerConfig { consumer_timeout: Duration::from_secs(3), ..config(&[queue], id) };
    let first = spawn_with(config_for(&url), timeout("limits-holder"));
    wait_for_consumers(&raw, "jobs.limit.LimitedCharge.2", 1).await;
    let second = spawn_with(config_for(&url), timeout("limits-standby"));
    wait_for_consumers(&raw, "jobs.limit.LimitedCharge.2", 2).await;
    let client = Client::new(config_for(&url));
    let tag = unique("renewed");
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(13) {
        client.enqueue(&LimitedCharge { tag: tag.clone(), millis: 400 }).await.unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until("every limited job to run to its end", Duration::from_secs(60), || async { ended(&tag) == sent }).await;
    let runs = RUNS.lock().unwrap().clone();
    let workers: std::collections::BTreeSet<&str> =
        runs.iter().filter(|(t, ..)| *t == tag).map(|(_, w, ..)| w.as_str()).collect();
    assert!(sent > 50, "{sent}");
    assert_eq!(workers.into_iter().collect::<Vec<_>>(), ["limits-holder"], "the slots never moved");
    assert!(most_at_once(&tag, None) <= 3);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

/// A limited job sent to another queue (`EnqueueOptions::queue`) is moved
/// to its type's own queue (where the slots set the prefetch) and runs there.
#[tokio::test]
async fn a_limited_job_sent_to_another_queue_is_moved_to_its_own_and_runs_there() {
    let vhost = TestVhost::create("limits-elsewhere").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let queue = unique("limits-elsewhere");
    let elsewhere = spawn_with(config_for(&url), config(&[&queue], "limits-elsewhere"));
    wait_for_consumers(&raw, &queue, 1).await;
    let tag = unique("elsewhere");
    let client = Client::new(config_for(&url));
    for _ in 0..5 {
        client
            .enqueue_with(&LimitedCharge { tag: tag.clone(), millis: 100 }, EnqueueOptions::new().queue(&queue))
            .await
            .unwrap();
    }
    wait_until("the five moved to the type's own queue", Duration::from_secs(20), || async {
        try_counts(&raw, LimitedCharge::QUEUE).await.map(|c| c.0) == Some(5)
    })
    .await;
    assert_eq!(ended(&tag), 0, "not run from another queue");
    assert_eq!(try_counts(&raw, "jobs.limit.LimitedCharge.0").await, None, "and its worker took no slot");
    let own = spawn_with(config_for(&url), config(&[LimitedCharge::QUEUE], "limits-own"));
    wait_until("the moved jobs to run from their own queue", Duration::from_secs(30), || async { ended(&tag) == 5 })
        .await;
    assert!(most_at_once(&tag, None) <= 3);
    elsewhere.stop().await.unwrap();
    own.stop().await.unwrap();
}
