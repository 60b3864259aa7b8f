//! Graceful stop: a running job finishes and is acked; one that outlasts the
//! grace period is handed back to its queue (not a crash); a broker that no
//! longer answers does not hold a stop up.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::{header_u64, headers};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Slow {
    tag: String,
    millis: u64,
}

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Slow {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        EVENTS.lock().unwrap().push(format!("{}:start", self.tag));
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        EVENTS.lock().unwrap().push(format!("{}:end", self.tag));
        Ok(())
    }
}

fn has(event: &str) -> bool {
    EVENTS.lock().unwrap().iter().any(|e| e == event)
}

#[tokio::test]
async fn a_stop_lets_the_running_job_finish_and_ack() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("stop", Duration::from_secs(20)).await;
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Slow { tag: "graceful".into(), millis: 1500 }, on()).await.unwrap();
    client.enqueue_with(&Slow { tag: "waiting".into(), millis: 10 }, on()).await.unwrap();
    wait_until("the job to start", Duration::from_secs(10), || async { has("graceful:start") }).await;

    running.stop().await.expect("a normal stop is Ok");
    assert!(has("graceful:end"), "the running job finished before the worker stopped");
    assert!(!has("waiting:start"), "no new job was taken after the stop");
    assert_eq!(counts(&raw, &queue).await, (1, 0), "the finished job was acked; the waiting one is still queued");
}

#[tokio::test]
async fn a_job_outlasting_the_grace_period_is_handed_back_not_counted_as_a_crash() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("grace", Duration::from_millis(300)).await;
    let id = client
        .enqueue_with(&Slow { tag: "too-long".into(), millis: 30_000 }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    wait_until("the job to start", Duration::from_secs(10), || async { has("too-long:start") }).await;

    let asked = Instant::now();
    running.stop().await.expect("a stop after the grace period is still Ok");
    assert!(asked.elapsed() < Duration::from_secs(10), "the grace period and a hand-back: {:?}", asked.elapsed());
    assert!(!has("too-long:end"), "dropped at the end of the grace period");
    // Handed back: a copy at the end of the queue, the same attempt, one interruption, no crash.
    assert_eq!(counts(&raw, &queue).await, (1, 0), "back in the queue, acked (the stop waited for the hand-back)");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &queue).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
    assert_eq!(header_u64(&props, headers::INTERRUPTED), Some(1));
    assert_eq!(header_u64(&props, headers::CRASHES), None, "not a crash");
    assert_eq!(jobs_core::plumbing::message_attempt(&props), 1, "the same attempt");
}

#[tokio::test]
async fn a_broker_that_stops_answering_does_not_hold_a_stop_up() {
    let relay = Relay::start().await;
    let Fixture { worker: running, cleanup: _cleanup, .. } =
        Fixture::start_with(config_for(&relay.url), "silent", Duration::from_secs(1)).await;

    relay.cut();
    let asked = Instant::now();
    // Without bounds on the broker's answers the stop waits for a cancel-ok
    // (and then a close-ok) that never come.
    let stopped = tokio::time::timeout(Duration::from_secs(30), running.stop()).await;
    assert!(stopped.is_ok(), "the worker did not stop within 30 s of a silent broker");
    stopped.unwrap().expect("a stop is Ok even when the broker does not answer");
    // The README: a stop takes at most the grace period (1 s here) + 10 s; 2 s of room.
    assert!(asked.elapsed() < Duration::from_secs(13), "stopped {:?} after the broker went silent", asked.elapsed());
    drop(relay); // closes the relayed connections; the broker drops the consumer
}
