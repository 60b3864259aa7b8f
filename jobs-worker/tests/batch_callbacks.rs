//! Batches on a live broker, each test on a vhost of its own (one
//! aggregator per vhost): a batch whose jobs partly go dead runs `complete`
//! and not `success`, and retrying the dead ones to success runs `success`,
//! once; child jobs added from inside a batch job hold the batch open until
//! they end; an empty batch completes at once; a callback learns its batch's
//! counts and the ids of its dead jobs.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::prelude::*;
use jobs_core::{Batch, DeadFilter, DeadLetters};
use jobs_test::*;

/// Callbacks run: (test, outcome).
static CALLBACKS: Mutex<Vec<(String, jobs_core::BatchOutcome, String)>> = Mutex::new(Vec::new());
/// Jobs run: (test, n).
static RAN: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
/// Jobs that fail while listed: (test, n).
static FAILING: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
/// Children held back while listed: test.
static HELD: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn callbacks(test: &str) -> Vec<(jobs_core::BatchOutcome, String)> {
    CALLBACKS.lock().unwrap().iter().filter(|(t, ..)| t == test).map(|(_, o, id)| (o.clone(), id.clone())).collect()
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "batch-test-items", max_attempts = 1)]
struct Item {
    test: String,
    n: u32,
    children: u32,
}

impl Perform for Item {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        for _ in 0..self.children {
            ctx.add_to_batch(&Child { test: self.test.clone() }).await?;
        }
        RAN.lock().unwrap().push((self.test.clone(), self.n));
        if FAILING.lock().unwrap().contains(&(self.test.clone(), self.n)) {
            return Err(JobError::fatal(format!("item {} is bad", self.n)));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "batch-test-items")]
struct Child {
    test: String,
}

impl Perform for Child {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        assert!(ctx.batch_id().is_some(), "a child is in its parent's batch");
        if HELD.lock().unwrap().contains(&self.test) {
            return Err(JobError::retry_after("held back by the test", Duration::from_secs(1)));
        }
        RAN.lock().unwrap().push((self.test, 1000));
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "batch-test-callbacks")]
struct Done {
    test: String,
}

impl Perform for Done {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let outcome = ctx.batch_outcome().cloned().ok_or_else(|| JobError::fatal("no outcome"))?;
        CALLBACKS.lock().unwrap().push((self.test, outcome, ctx.job_id().to_string()));
        Ok(())
    }
}

const QUEUES: [&str; 2] = ["batch-test-items", "batch-test-callbacks"];

async fn start(vhost: &TestVhost, name: &str) -> (RunningWorker, jobs_core::plumbing::amqprs::connection::Connection) {
    let raw = raw_connection_to(&vhost.url()).await;
    let worker = spawn_with(
        config_for(&vhost.url()),
        worker_config(&QUEUES, 8, &format!("{name}-worker"), Duration::from_secs(5)),
    );
    for queue in QUEUES {
        wait_for_consumers(&raw, queue, 1).await;
    }
    (worker, raw)
}

fn items(test: &str, n: u32) -> Vec<Item> {
    (0..n).map(|n| Item { test: test.into(), n, children: 0 }).collect()
}

#[tokio::test]
async fn a_partly_dead_batch_completes_then_succeeds_once_its_dead_are_retried() {
    let vhost = TestVhost::create("batch-dead").await;
    let (worker, _raw) = start(&vhost, "batch-dead").await;
    FAILING.lock().unwrap().extend([("dead".to_string(), 3), ("dead".to_string(), 7)]);
    let client = Client::new(config_for(&vhost.url()));
    let batch = Batch::new()
        .description("July invoices")
        .on_complete(&Done { test: "dead".into() })
        .on_success(&Done { test: "dead".into() })
        .jobs(&items("dead", 20));
    let id = client.enqueue_batch(batch).await.unwrap();
    wait_until("complete", Duration::from_secs(60), || async { !callbacks("dead").is_empty() }).await;
    let (complete, callback_id) = callbacks("dead").remove(0);
    assert_eq!(callback_id, format!("{id}-complete"));
    assert_eq!(
        (complete.callback.as_str(), complete.total, complete.succeeded, complete.dead),
        ("complete", 20, 18, 2)
    );
    assert_eq!(complete.description.as_deref(), Some("July invoices"));
    assert_eq!(complete.dead_ids.len(), 2);
    let ran: HashSet<u32> = RAN.lock().unwrap().iter().filter(|(t, _)| t == "dead").map(|(_, n)| *n).collect();
    assert_eq!(ran.len(), 20, "complete came after every job ended");

    // Retried to success: `success` runs, once, and `complete` not again.
    FAILING.lock().unwrap().clear();
    let dead = DeadLetters::connect(&config_for(&vhost.url())).await.unwrap();
    assert_eq!(dead.retry("batch-test-items", &DeadFilter::all()).await.unwrap().acted, 2);
    wait_until("success", Duration::from_secs(60), || async { callbacks("dead").len() >= 2 }).await;
    let (success, callback_id) = callbacks("dead").remove(1);
    assert_eq!(callback_id, format!("{id}-success"));
    assert_eq!((success.callback.as_str(), success.succeeded, success.dead), ("success", 20, 0));
    // Deliberate: a second for a repeated callback to show (absence has no event to wait on).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(callbacks("dead").len(), 2, "each callback ran once");
    dead.close().await;
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn child_jobs_hold_their_batch_open_until_they_end() {
    let vhost = TestVhost::create("batch-children").await;
    let (worker, _raw) = start(&vhost, "batch-children").await;
    HELD.lock().unwrap().push("children".into());
    let client = Client::new(config_for(&vhost.url()));
    let parents: Vec<Item> = (0..5).map(|n| Item { test: "children".into(), n, children: 2 }).collect();
    let batch = Batch::new().on_complete(&Done { test: "children".into() }).jobs(&parents);
    client.enqueue_batch(batch).await.unwrap();
    wait_until("every parent ran", Duration::from_secs(30), || async {
        RAN.lock().unwrap().iter().filter(|(t, n)| t == "children" && *n < 1000).count() == 5
    })
    .await;
    // Deliberate: the parents are done and their ten children held back (retrying);
    // two seconds for an early `complete` to show (absence has no event to wait on).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(callbacks("children").is_empty(), "complete waits for the children");
    HELD.lock().unwrap().clear();
    wait_until("complete", Duration::from_secs(60), || async { !callbacks("children").is_empty() }).await;
    let (outcome, _) = callbacks("children").remove(0);
    assert_eq!((outcome.total, outcome.succeeded), (15, 15), "five parents and their ten children");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_batch_completes_at_once() {
    let vhost = TestVhost::create("batch-empty").await;
    let (worker, _raw) = start(&vhost, "batch-empty").await;
    let client = Client::new(config_for(&vhost.url()));
    let batch = Batch::new().on_complete(&Done { test: "empty".into() }).on_success(&Done { test: "empty".into() });
    let id = client.enqueue_batch(batch).await.unwrap();
    wait_until("both callbacks", Duration::from_secs(30), || async { callbacks("empty").len() == 2 }).await;
    let mut ids: Vec<String> = callbacks("empty").into_iter().map(|(_, id)| id).collect();
    ids.sort();
    assert_eq!(ids, [format!("{id}-complete"), format!("{id}-success")]);
    assert!(callbacks("empty").iter().all(|(o, _)| o.total == 0));
    worker.stop().await.unwrap();
}
