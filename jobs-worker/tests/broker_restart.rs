//! A worker and an enqueuing client ride through a broker restart: every job
//! enqueued before, during and after it runs (at least once); a queue paused
//! before the restart stays paused after it; a rate is kept again after it,
//! and not exceeded through it. A binary of its
//! own, so that the node's restart does not slow the timing tests beside it.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Numbered {
    n: u32,
}

static RAN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

impl Perform for Numbered {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        RAN.lock().unwrap().push(self.n);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_client_ride_through_a_broker_restart() {
    let node = std::sync::Arc::new(TestNode::start("reconnect"));
    let url = node.url();
    let queue = "reconnect";
    let mut config = config_for(&url);
    config.reconnect_timeout = Duration::from_secs(60);
    config.heartbeat = 5;
    let client = Client::new(config);
    let running = spawn_worker(&url, &[queue], 4, "reconnect-worker", Duration::from_secs(5));

    let restarter = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(2));
            node.restart();
        })
    };
    // Enqueue steadily through the restart; each enqueue returns only once confirmed.
    let mut sent = 0u32;
    while !restarter.is_finished() || sent < 300 {
        client
            .enqueue_with(&Numbered { n: sent }, EnqueueOptions::new().queue(queue))
            .await
            .expect("enqueue rides through");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    restarter.await.unwrap();
    wait_until("every job to run", Duration::from_secs(60), || async {
        RAN.lock().unwrap().iter().collect::<HashSet<_>>().len() == sent as usize
    })
    .await;
    let ran = RAN.lock().unwrap().clone();
    let distinct: HashSet<_> = ran.iter().collect();
    assert_eq!(distinct.len(), sent as usize, "none lost");
    println!(
        "{sent} jobs enqueued across a broker restart; {} runs, {} duplicates",
        ran.len(),
        ran.len() - distinct.len()
    );
    running.stop().await.unwrap();
}

/// The tags of the `Tagged` jobs that ran.
static TAGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
struct Tagged {
    tag: String,
}

impl Perform for Tagged {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        TAGS.lock().unwrap().push(self.tag);
        Ok(())
    }
}

fn ran(tag: &str) -> bool {
    TAGS.lock().unwrap().iter().any(|t| t == tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_stays_paused_through_a_broker_restart() {
    let node = std::sync::Arc::new(TestNode::start("pause-restart"));
    let url = node.url();
    let (held, free) = ("pause-restart-held", "pause-restart-free");
    let mut config = config_for(&url);
    config.reconnect_timeout = Duration::from_secs(60);
    let client = Client::new(config);
    let at_ms = jobs_core::plumbing::events::now_ms();
    let pause = jobs_core::ControlCommand::Pause { queue: held.into(), by: "restart-test".into(), at_ms };
    client.control(&pause).await.unwrap();
    let running = spawn_worker(&url, &[held, free], 2, "pause-restart-worker", Duration::from_secs(5));
    let raw = raw_connection_to(&url).await;
    wait_for_consumers(&raw, free, 1).await;
    assert_eq!(try_counts(&raw, held).await.map(|c| c.1), Some(0), "paused before the worker started");
    drop(raw);

    let restart = node.clone();
    tokio::task::spawn_blocking(move || restart.restart()).await.unwrap();
    // The worker reconnects and consumes `free` only; a worker started after
    // the restart reads the pause from the stream the broker kept.
    let raw = raw_connection_to(&url).await;
    let second = spawn_worker(&url, &[held, free], 2, "pause-restart-worker-2", Duration::from_secs(5));
    wait_for_consumers(&raw, free, 2).await;
    let on = |queue: &str| EnqueueOptions::new().queue(queue);
    client.enqueue_with(&Tagged { tag: "held".into() }, on(held)).await.unwrap();
    client.enqueue_with(&Tagged { tag: "free".into() }, on(free)).await.unwrap();
    wait_until("the job of the running queue to run", Duration::from_secs(30), || async { ran("free") }).await;
    // A deliberate absence: 2 s more in which the paused queue's job must not run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ran("held"), "a job of the paused queue ran after the broker restart");
    assert_eq!(try_counts(&raw, held).await, Some((1, 0)), "its job waits, with no consumer");

    let at_ms = jobs_core::plumbing::events::now_ms();
    let resume = jobs_core::ControlCommand::Resume { queue: held.into(), by: "restart-test".into(), at_ms };
    client.control(&resume).await.unwrap();
    wait_until("the held job to run after the resume", Duration::from_secs(30), || async { ran("held") }).await;
    running.stop().await.unwrap();
    second.stop().await.unwrap();
}

/// Start times of the `RestartTick` jobs.
static TICKS: Mutex<Vec<std::time::Instant>> = Mutex::new(Vec::new());

/// At most 20 a second across the vhost.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "restart-rated", rate = "20/s")]
struct RestartTick {
    n: u32,
}

impl Perform for RestartTick {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        TICKS.lock().unwrap().push(std::time::Instant::now());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_is_kept_again_after_a_broker_restart_and_never_exceeded() {
    let node = std::sync::Arc::new(TestNode::start("rate-restart"));
    let url = node.url();
    let mut config = config_for(&url);
    config.reconnect_timeout = Duration::from_secs(60);
    let workers: Vec<_> = (0..2)
        .map(|n| {
            let worker = worker_config(&[RestartTick::QUEUE], 4, &format!("rate-restart-{n}"), Duration::from_secs(5));
            spawn_with(config.clone(), worker)
        })
        .collect();
    let raw = raw_connection_to(&url).await;
    wait_for_consumers(&raw, RestartTick::QUEUE, 2).await;
    drop(raw);
    let client = Client::new(config);
    let jobs: Vec<RestartTick> = (0..300).map(|n| RestartTick { n }).collect();
    client.enqueue_many(&jobs).await.unwrap();
    wait_until("60 starts", Duration::from_secs(30), || async { TICKS.lock().unwrap().len() >= 60 }).await;
    let restart = node.clone();
    tokio::task::spawn_blocking(move || restart.restart()).await.unwrap();
    let back = std::time::Instant::now();
    wait_until("300 starts", Duration::from_secs(90), || async { TICKS.lock().unwrap().len() >= 300 }).await;
    let mut ticks = TICKS.lock().unwrap().clone();
    ticks.sort();
    let (mut most, mut low) = (0, 0);
    for (high, t) in ticks.iter().enumerate() {
        while t.duration_since(ticks[low]) >= Duration::from_secs(1) {
            low += 1;
        }
        most = most.max(high + 1 - low);
    }
    let first_after = ticks.iter().find(|t| **t > back).map(|t| t.duration_since(back));
    println!(
        "most starts in any second through the restart: {most}; first start after the broker was back: {first_after:?}"
    );
    assert!(most <= 20 + 20 + 2 * 2, "never above rate + burst (+ each worker's token prefetch): {most}");
    assert!(first_after.is_some_and(|d| d < Duration::from_secs(30)), "the rate is kept again: {first_after:?}");
    for worker in workers {
        worker.stop().await.unwrap();
    }
}
