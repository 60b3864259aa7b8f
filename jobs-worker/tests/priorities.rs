//! Priorities and weighted queues on a live broker: 10 urgent jobs sent
//! after 1,000 others start within the next few on a worker at prefetch 1;
//! weights 6:3:1 over 10,000 jobs on a busy worker give starts within ±10%
//! of the shares, and a queue alone with work takes the whole concurrency
//! (the others' shares are lent); a priority where the queue takes none is
//! refused at enqueue, a queue made without priorities is named with its
//! migration, and quorum mode refuses priorities at start, pointing at
//! weighted queues; deliveries held waiting for a turn go back to their
//! queue unstarted at a stop. In a file of its own: quorum workers of other test
//! files would refuse these types.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform, QueueType};
use jobs_test::amqprs::channel::QueueDeclareArguments;
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

const MIXED: &str = "priorities-test-mixed";

/// The tags of the jobs of `MIXED`, in the order they started.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// An everyday job of a queue with priorities (its own default: none, 0).
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-mixed", priorities)]
struct Report {
    tag: String,
}

impl Perform for Report {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED.lock().unwrap().push(self.tag);
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(())
    }
}

/// Urgent by default: priority 9.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-mixed", priority = 9)]
struct Alert {
    tag: String,
}

impl Perform for Alert {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED.lock().unwrap().push(self.tag);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_jobs_start_within_the_next_few_of_a_thousand_waiting() {
    let _cleanup = Cleanup::queues(&[MIXED]);
    let client = Client::new(amqp_config());
    let raw = raw_connection().await;
    delete_queues(&raw, &[MIXED]).await;
    let low: Vec<Report> = (0..1_000).map(|n| Report { tag: format!("low-{n}") }).collect();
    client.enqueue_many(&low).await.unwrap();
    // One job at a time: the worker has one delivery running, and takes the
    // next only when it has settled it.
    let config = worker_config(&[MIXED], 1, "priorities-test-mixed-worker", Duration::from_secs(5));
    let worker = spawn_built(builder().job::<Report>().job::<Alert>().config(config).build().unwrap());
    wait_until("the worker to be 100 jobs in", Duration::from_secs(60), || async {
        STARTED.lock().unwrap().len() >= 100
    })
    .await;
    for n in 0..5 {
        client.enqueue(&Alert { tag: format!("high-{n}") }).await.unwrap();
        let tag = format!("high-{}", n + 5);
        client.enqueue_with(&Report { tag }, EnqueueOptions::new().priority(9)).await.unwrap();
    }
    let before = STARTED.lock().unwrap().len();
    wait_until("the urgent jobs to run", Duration::from_secs(60), || async {
        STARTED.lock().unwrap().iter().filter(|t| t.starts_with("high-")).count() == 10
    })
    .await;
    let started = STARTED.lock().unwrap().clone();
    let last_high = started.iter().rposition(|t| t.starts_with("high-")).unwrap();
    // Started after the last urgent one was confirmed: at most the one
    // delivered then, and the one running, before the urgent ten.
    let low_between = started[before..=last_high].iter().filter(|t| t.starts_with("low-")).count();
    println!("{before} low jobs had started when the 10 urgent ones were in; {low_between} low ones started between");
    assert!(low_between <= 2, "{low_between} low jobs started between the urgent ones' enqueue and their start");
    assert!(started.len() < 900, "the low jobs were not all run first ({} had started)", started.len());
    worker.stop().await.unwrap();
}

const CRITICAL: &str = "priorities-test-critical";
const DEFAULT: &str = "priorities-test-default";
const LOW: &str = "priorities-test-low";

/// The queues of the `Share` jobs, in the order they started.
static SHARES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Sent to one of the three weighted queues; says which.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-default")]
struct Share {
    queue: String,
    millis: u64,
}

impl Perform for Share {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_RUNNING.fetch_max(now, Ordering::SeqCst);
        SHARES.lock().unwrap().push(self.queue);
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A worker of these tests' types only (`Plain` would be refused beside
/// `Alert`), on the shared broker.
fn builder() -> jobs_worker::WorkerBuilder {
    jobs_worker::Worker::builder().amqp(amqp_config())
}

fn weighted(id: &str) -> WorkerConfig {
    let mut config = worker_config(&[CRITICAL, DEFAULT, LOW], 10, id, Duration::from_secs(5));
    config.extra_queues = vec![CRITICAL.to_owned(), LOW.to_owned()];
    config.queue_weights =
        [(CRITICAL, 6), (DEFAULT, 3), (LOW, 1)].into_iter().map(|(q, w)| (q.to_owned(), w)).collect();
    config
}

async fn fill(client: &Client, queue: &str, n: usize, millis: u64) {
    let jobs: Vec<Share> = (0..n).map(|_| Share { queue: queue.to_owned(), millis }).collect();
    client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(queue)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_a_busy_worker_and_an_idle_queue_lends_its_share() {
    let queues = [CRITICAL, DEFAULT, LOW];
    let _cleanup = Cleanup::queues(&queues);
    let client = Client::new(amqp_config());
    let raw = raw_connection().await;
    delete_queues(&raw, &queues).await;

    // Alone with work, `low` (weight 1 of 10) runs ten at once.
    fill(&client, LOW, 40, 300).await;
    let port = spare_port();
    let mut config = weighted("priorities-test-lending");
    config.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let worker = spawn_built(builder().job::<Share>().config(config).build().unwrap());
    let series = format!("jobs_queue_weight_running{{queue=\"{LOW}\"}} 10");
    wait_until("the metrics to say low runs 10", Duration::from_secs(30), || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http_get(port, "/metrics").1.lines().any(|l| l == series)
    })
    .await;
    wait_until("the lone queue's jobs to run", Duration::from_secs(60), || async {
        SHARES.lock().unwrap().len() == 40 && RUNNING.load(Ordering::SeqCst) == 0
    })
    .await;
    let most = MOST_RUNNING.load(Ordering::SeqCst);
    assert_eq!(most, 10, "a queue alone with work borrows the idle queues' shares");
    worker.stop().await.unwrap();
    SHARES.lock().unwrap().clear();

    // 10,000 jobs in the shares' proportion: every queue has work until
    // near the end, and starts follow 6:3:1.
    let plan = [(CRITICAL, 6_000, 0.6), (DEFAULT, 3_000, 0.3), (LOW, 1_000, 0.1)];
    for (queue, n, _) in plan {
        fill(&client, queue, n, 5).await;
    }
    MOST_RUNNING.store(0, Ordering::SeqCst);
    let worker = spawn_built(builder().job::<Share>().config(weighted("priorities-test-weights")).build().unwrap());
    wait_until("the 10,000 jobs to run", Duration::from_secs(240), || async { SHARES.lock().unwrap().len() == 10_000 })
        .await;
    worker.stop().await.unwrap();
    // Ten turns shared by the three queues, not ten each.
    assert_eq!(MOST_RUNNING.load(Ordering::SeqCst), 10, "at most the concurrency runs across the weighted queues");
    // The first 9,000 starts: all three queues still had work then.
    let shares = SHARES.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for queue in &shares[..9_000] {
        *counts.entry(queue.as_str()).or_default() += 1;
    }
    println!("starts in the first 9,000: {counts:?}");
    for (queue, _, share) in plan {
        let expected = 9_000.0 * share;
        let got = counts.get(queue).copied().unwrap_or(0) as f64;
        assert!((got - expected).abs() <= expected * 0.1, "{queue}: {got} starts of 9,000, expected {expected} ± 10%");
    }
}

#[tokio::test]
async fn a_priority_where_the_queue_takes_none_is_refused_at_enqueue() {
    let queue = unique("priorities-none");
    let _cleanup = Cleanup::queues(&[&queue]);
    let client = Client::new(amqp_config());
    let share = Share { queue: queue.clone(), millis: 0 };
    let err = client.enqueue_with(&share, EnqueueOptions::new().queue(&queue).priority(5)).await.unwrap_err();
    assert!(matches!(&err, Error::Priority { job, .. } if job == Share::NAME), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("takes no priorities") && text.contains("#[job(priorities)]"), "{text}");
    let err = client.enqueue_with(&Report { tag: "x".into() }, EnqueueOptions::new().priority(10)).await.unwrap_err();
    assert!(err.to_string().contains("from 0 to 9"), "{err}");
    let raw = raw_connection().await;
    assert_eq!(try_counts(&raw, &queue).await, None, "nothing was sent, nothing declared");
}

/// Of a queue made before its types took priorities.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-migrated", priorities)]
struct Migrated {}

impl Perform for Migrated {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_queue_made_without_priorities_is_named_with_its_migration() {
    let queue = Migrated::QUEUE;
    let _cleanup = Cleanup::queues(&[queue]);
    let raw = raw_connection().await;
    delete_queues(&raw, &[queue]).await;
    let channel = raw.open_channel(None).await.unwrap();
    channel.queue_declare(QueueDeclareArguments::durable_client_named(queue)).await.unwrap();
    let err = Client::new(amqp_config()).enqueue(&Migrated {}).await.unwrap_err();
    assert!(matches!(&err, Error::TopologyMismatch { name, .. } if name == queue), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("x-max-priority") && text.contains("adding or removing priorities"), "{text}");
}

#[tokio::test]
async fn quorum_mode_refuses_priorities_at_start_and_points_at_weighted_queues() {
    let mut amqp = amqp_config();
    amqp.queue_type = QueueType::Quorum;
    let err = jobs_worker::Worker::builder()
        .job::<Report>()
        .job::<Migrated>()
        .amqp(amqp.clone())
        .config(WorkerConfig::default())
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("quorum") && err.contains("worker.queue_weights"), "{err}");
    assert!(err.contains(Report::NAME) && err.contains(Migrated::NAME), "one error names every type: {err}");
    // A producer in quorum mode is refused the same way at enqueue.
    let err = Client::new(amqp).enqueue(&Alert { tag: "x".into() }).await.unwrap_err();
    assert!(matches!(err, Error::Priority { .. }) && err.to_string().contains("queue_weights"), "{err}");
}

#[tokio::test]
async fn types_sharing_a_queue_must_agree_on_priorities() {
    // `Alert` says `priority = 9` (so priorities); `Plain` shares its queue without.
    let err = jobs_worker::Worker::builder()
        .job::<Alert>()
        .job::<Plain>()
        .amqp(amqp_config())
        .config(WorkerConfig::default())
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains(MIXED) && err.contains(Alert::NAME) && err.contains(Plain::NAME), "{err}");
}

/// On `MIXED` without saying priorities: refused beside `Alert`.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-mixed")]
struct Plain {}

impl Perform for Plain {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

const HELD_A: &str = "priorities-test-held-a";
const HELD_B: &str = "priorities-test-held-b";

/// Starts of the `Held` jobs.
static HELD_STARTS: AtomicUsize = AtomicUsize::new(0);

/// 300 ms of work.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "priorities-test-held-a")]
struct Held {}

impl Perform for Held {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        HELD_STARTS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_for_a_turn_go_back_unstarted_at_a_stop() {
    let queues = [HELD_A, HELD_B];
    let _cleanup = Cleanup::queues(&queues);
    let client = Client::new(amqp_config());
    let raw = raw_connection().await;
    delete_queues(&raw, &queues).await;
    for queue in queues {
        let jobs: Vec<Held> = (0..20).map(|_| Held {}).collect();
        client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(queue)).await.unwrap();
    }
    // Two turns for two queues each consumed at prefetch 2: two run, two wait.
    let mut config = worker_config(&queues, 2, "priorities-test-held", Duration::from_secs(10));
    config.extra_queues = vec![HELD_B.to_owned()];
    config.queue_weights = queues.iter().map(|q| (q.to_string(), 1)).collect();
    let worker = spawn_built(builder().job::<Held>().config(config).build().unwrap());
    wait_until("two jobs to start", Duration::from_secs(30), || async { HELD_STARTS.load(Ordering::SeqCst) >= 2 })
        .await;
    wait_until("four delivered", Duration::from_secs(30), || async {
        let (a, b) = (counts(&raw, HELD_A).await.0, counts(&raw, HELD_B).await.0);
        a + b <= 36
    })
    .await;
    worker.stop().await.unwrap();
    let started = HELD_STARTS.load(Ordering::SeqCst) as u32;
    let (a, b) = (counts(&raw, HELD_A).await.0, counts(&raw, HELD_B).await.0);
    assert_eq!(a + b + started, 40, "each job ran or is back in its queue ({a} + {b} queued, {started} started)");
    // Those that waited went back as they were: not interrupted runs.
    let channel = raw.open_channel(None).await.unwrap();
    for queue in queues {
        while let Some((props, _)) = get(&channel, queue).await {
            let interrupted = jobs_core::plumbing::header_u64(&props, "x-interrupted");
            assert_eq!(interrupted, None, "a job that never started is not an interrupted run");
        }
    }
    let _ = channel.close().await;
}
