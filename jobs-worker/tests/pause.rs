//! Pausing a queue on a live broker: every worker stops taking its jobs
//! (running ones finish) and takes them again on resume; a worker started
//! while the queue is paused starts with it paused; other queues go on.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::{Client, ControlCommand, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

/// (tag, when it started, when it ended).
static RUNS: Mutex<Vec<(String, Instant, Option<Instant>)>> = Mutex::new(Vec::new());

fn started(tag: &str) -> Vec<Instant> {
    RUNS.lock().unwrap().iter().filter(|(t, ..)| t == tag).map(|(_, at, _)| *at).collect()
}

fn ended(tag: &str) -> usize {
    RUNS.lock().unwrap().iter().filter(|(t, _, end)| t == tag && end.is_some()).count()
}

/// Takes `millis`, noting its start and end under `tag`.
#[derive(Debug, Serialize, Deserialize, Job)]
struct Paced {
    tag: String,
    millis: u64,
}

impl Perform for Paced {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let n = {
            let mut runs = RUNS.lock().unwrap();
            runs.push((self.tag.clone(), Instant::now(), None));
            runs.len() - 1
        };
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        RUNS.lock().unwrap()[n].2 = Some(Instant::now());
        Ok(())
    }
}

fn command(pause: bool, queue: &str) -> ControlCommand {
    let (queue, by, at_ms) = (queue.to_owned(), "pause-test".to_owned(), jobs_core::plumbing::events::now_ms());
    if pause {
        ControlCommand::Pause { queue, by, at_ms }
    } else {
        ControlCommand::Resume { queue, by, at_ms }
    }
}

/// One worker at prefetch 1 (its job runs in the consumer's own task), two at 2.
fn concurrency(n: usize) -> u16 {
    if n == 0 {
        1
    } else {
        2
    }
}

#[tokio::test]
async fn a_paused_queue_takes_no_job_on_any_worker_until_resumed_and_a_worker_started_meanwhile_starts_paused() {
    let (queue, other) = (unique("pause-q"), unique("pause-other"));
    let _cleanup = Cleanup::queues(&[&queue, &other]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let tag = queue.clone();
    let other_tag = other.clone();
    let grace = Duration::from_secs(10);
    let workers: Vec<RunningWorker> = (0..3)
        .map(|n| {
            spawn_with(amqp_config(), worker_config(&[&queue, &other], concurrency(n), &format!("pause-{n}"), grace))
        })
        .collect();
    wait_for_consumers(&raw, &queue, 3).await;
    wait_for_consumers(&raw, &other, 3).await;
    let on = |q: &str| EnqueueOptions::new().queue(q);
    for _ in 0..300 {
        client.enqueue_with(&Paced { tag: tag.clone(), millis: 50 }, on(&queue)).await.unwrap();
    }
    wait_until("some jobs of the queue to start", Duration::from_secs(20), || async { started(&tag).len() >= 6 }).await;

    client.control(&command(true, &queue)).await.unwrap();
    let paused_at = Instant::now();
    // Every worker cancels its consumer: the broker shows none within 2 s.
    wait_until("the paused queue's consumers to go", Duration::from_secs(10), || async {
        try_counts(&raw, &queue).await.is_some_and(|(_, consumers)| consumers == 0)
    })
    .await;
    assert!(paused_at.elapsed() < Duration::from_secs(2), "consumers gone only after {:?}", paused_at.elapsed());
    let quiet_from = paused_at + Duration::from_secs(2);
    // Running ones finish (each 50 ms), then nothing more starts: a deliberate
    // wait of 3 s in which no job of the queue may start, while the other queue moves.
    for _ in 0..20 {
        client.enqueue_with(&Paced { tag: other_tag.clone(), millis: 10 }, on(&other)).await.unwrap();
    }
    wait_until("the other queue's jobs to run meanwhile", Duration::from_secs(20), || async {
        ended(&other_tag) >= 20
    })
    .await;
    tokio::time::sleep_until((quiet_from + Duration::from_secs(3)).into()).await;
    let late: Vec<_> = started(&tag).into_iter().filter(|at| *at > quiet_from).collect();
    assert!(late.is_empty(), "{} job(s) of the paused queue started more than 2 s after the pause", late.len());
    let (ready, _) = counts(&raw, &queue).await;
    assert!(ready > 0, "the queue still holds its jobs");

    // Restart every worker while paused: they start paused.
    for worker in workers {
        worker.stop().await.unwrap();
    }
    let before = started(&tag).len();
    let workers: Vec<RunningWorker> = (0..3)
        .map(|n| {
            spawn_with(
                amqp_config(),
                worker_config(&[&queue, &other], concurrency(n), &format!("pause-again-{n}"), grace),
            )
        })
        .collect();
    wait_for_consumers(&raw, &other, 3).await;
    // Started, consuming the other queue: a deliberate 2 s in which the paused one must stay without consumers.
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(2) {
        let (_, consumers) = counts(&raw, &queue).await;
        assert_eq!(consumers, 0, "a worker started while the queue was paused consumes it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(started(&tag).len(), before, "a job of the paused queue started after the restart");

    client.control(&command(false, &queue)).await.unwrap();
    wait_for_consumers(&raw, &queue, 3).await;
    wait_until("every job of the queue to run after the resume", Duration::from_secs(60), || async {
        ended(&tag) >= 300
    })
    .await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    assert_acked(&raw, &queue).await;
}
