//! Cancelling jobs on a live broker (`jobs.control`): a running job that
//! checks its context stops and one that ignores it is dropped after
//! `worker.cancel_grace`; a queued job (cancelled before its worker started)
//! and a delayed one (cancelled while it waits) are dead-lettered unrun when
//! they come up. Each ends in `<queue>.dead` as `cancelled`, and a `dead
//! retry` of it runs.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::{Client, ControlCommand, DeadFilter, DeadLetters, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

/// Per tag: runs started, runs that saw the cancel, runs that ended by themselves.
static RUNS: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());

fn noted(tag: &str, what: &str) -> usize {
    RUNS.lock().unwrap().iter().filter(|(t, w)| t == tag && *w == what).count()
}

fn note(tag: &str, what: &'static str) {
    RUNS.lock().unwrap().push((tag.to_owned(), what));
}

/// Runs for `millis` on its first run (quickly after), noting its start;
/// `checks`: it watches its context and returns when cancelled.
#[derive(Debug, Serialize, Deserialize, Job)]
struct Long {
    tag: String,
    millis: u64,
    checks: bool,
}

impl Perform for Long {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let first = noted(&self.tag, "started") == 0;
        note(&self.tag, "started");
        let millis = if first { self.millis } else { 10 };
        let work = tokio::time::sleep(Duration::from_millis(millis));
        if self.checks {
            tokio::select! {
                _ = ctx.cancelled() => {
                    assert!(ctx.is_cancelled());
                    note(&self.tag, "saw the cancel");
                    // What it returns does not matter: a cancelled job is dead.
                    return Ok(());
                }
                _ = work => {}
            }
        } else {
            work.await;
        }
        note(&self.tag, "ended");
        Ok(())
    }
}

fn config(queue: &str, id: &str, grace: Duration) -> WorkerConfig {
    WorkerConfig { cancel_grace: grace, ..worker_config(&[queue], 2, id, Duration::from_secs(5)) }
}

async fn cancel(client: &Client, id: &jobs_core::JobId) {
    client.control(&ControlCommand::cancel(id.as_str(), "cancel-test")).await.unwrap();
}

/// The dead jobs of `queue`, by id: (kind, reason); they stay dead.
async fn dead(letters: &DeadLetters, queue: &str) -> HashMap<String, (String, String)> {
    let jobs = letters.list(queue, 100).await.unwrap();
    jobs.into_iter().map(|j| (j.id, (j.error_kind.unwrap_or_default(), j.error.unwrap_or_default()))).collect()
}

#[tokio::test]
async fn a_running_job_is_told_and_stops_or_is_dropped_after_its_grace_and_a_dead_retry_runs_it() {
    let queue = unique("cancel-run");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let grace = Duration::from_secs(2);
    let worker = spawn_with(amqp_config(), config(&queue, "cancel-run-worker", grace));
    wait_for_consumers(&raw, &queue, 1).await;
    let (checks, ignores, other) = (unique("checks"), unique("ignores"), unique("other"));
    let on = || EnqueueOptions::new().queue(&queue);
    let long = |tag: &str, checks: bool| Long { tag: tag.to_owned(), millis: 60_000, checks };
    let checking = client.enqueue_with(&long(&checks, true), on()).await.unwrap();
    let ignoring = client.enqueue_with(&long(&ignores, false), on()).await.unwrap();
    wait_until("both long jobs running", Duration::from_secs(20), || async {
        noted(&checks, "started") == 1 && noted(&ignores, "started") == 1
    })
    .await;

    let asked = Instant::now();
    cancel(&client, &checking).await;
    cancel(&client, &ignoring).await;
    wait_until("the job that checks to see the cancel", Duration::from_secs(10), || async {
        noted(&checks, "saw the cancel") == 1
    })
    .await;
    wait_until("both dead-lettered", Duration::from_secs(30), || async {
        counts(&raw, &format!("{queue}.dead")).await.0 == 2
    })
    .await;
    assert!(asked.elapsed() >= grace, "the job that ignores it had its grace ({:?})", asked.elapsed());
    let letters = DeadLetters::connect(&amqp_config()).await.unwrap();
    let dead = dead(&letters, &queue).await;
    let (kind, reason) = &dead[checking.as_str()];
    assert_eq!(kind, "cancelled");
    assert_eq!(reason, "cancelled by cancel-test while it ran");
    let (kind, reason) = &dead[ignoring.as_str()];
    assert_eq!(kind, "cancelled");
    assert!(reason.contains("dropped: it did not end within worker.cancel_grace"), "{reason}");
    assert_eq!(noted(&ignores, "ended"), 0, "dropped before its work was done");

    // The worker goes on, and a dead retry runs them (the cancels are spent).
    let third = client.enqueue_with(&Long { tag: other.clone(), millis: 10, checks: false }, on()).await.unwrap();
    wait_until("another job to run", Duration::from_secs(20), || async { noted(&other, "ended") == 1 }).await;
    assert!(!dead.contains_key(third.as_str()));
    letters.retry(&queue, &DeadFilter::all()).await.unwrap();
    wait_until("both retried to their end", Duration::from_secs(30), || async {
        noted(&checks, "ended") == 1 && noted(&ignores, "ended") == 1
    })
    .await;
    worker.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}

#[tokio::test]
async fn a_queued_and_a_delayed_job_are_dead_lettered_unrun_when_they_come_up() {
    let queue = unique("cancel-wait");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let (queued, delayed, free) = (unique("queued"), unique("delayed"), unique("free"));
    let on = || EnqueueOptions::new().queue(&queue);
    let quick = |tag: &str| Long { tag: tag.to_owned(), millis: 10, checks: false };
    // Cancelled before any worker runs: the worker reads it at start.
    let queued_id = client.enqueue_with(&quick(&queued), on()).await.unwrap();
    cancel(&client, &queued_id).await;
    let free_id = client.enqueue_with(&quick(&free), on()).await.unwrap();
    let worker = spawn_with(amqp_config(), config(&queue, "cancel-wait-worker", Duration::from_secs(10)));
    wait_for_consumers(&raw, &queue, 1).await;
    // Cancelled while it waits in the delay cascade: the worker follows it.
    let delayed_id = client.enqueue_with(&quick(&delayed), on().delay(Duration::from_secs(3))).await.unwrap();
    cancel(&client, &delayed_id).await;
    wait_until("the free job to run", Duration::from_secs(20), || async { noted(&free, "ended") == 1 }).await;
    wait_until("both cancelled jobs dead-lettered", Duration::from_secs(30), || async {
        counts(&raw, &format!("{queue}.dead")).await.0 == 2
    })
    .await;
    let letters = DeadLetters::connect(&amqp_config()).await.unwrap();
    let dead = dead(&letters, &queue).await;
    for id in [&queued_id, &delayed_id] {
        let (kind, reason) = &dead[id.as_str()];
        assert_eq!((kind.as_str(), reason.as_str()), ("cancelled", "cancelled by cancel-test before it ran"));
    }
    assert!(!dead.contains_key(free_id.as_str()));
    assert_eq!(noted(&queued, "started") + noted(&delayed, "started"), 0, "neither ran");
    worker.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}
