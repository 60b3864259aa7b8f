//! A broadcast job that fails in a subscribed worker is not retried (its queue
//! is the worker's own) and goes to `<exchange>.dead`, once, with the reason.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::plumbing::{header_str, headers};
use jobs_core::{Client, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_worker::{Subscription, WorkerConfig};
use serde::{Deserialize, Serialize};

const EXCHANGE: &str = "test.broadcast.fails";

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(exchange = "test.broadcast.fails")]
struct Announce {
    text: String,
}

static RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Announce {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        RUNS.lock().unwrap().push(self.text.clone());
        Err(JobError::msg(format!("cannot announce {}", self.text)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_broadcast_goes_to_the_exchange_dead_queue_once() {
    let _cleanup = Cleanup::queues(&[]).exchanges(&[EXCHANGE]);
    let raw = raw_connection().await;
    let config = WorkerConfig {
        subscriptions: vec![Subscription::of::<Announce>().unwrap()],
        id: Some("broadcast-worker".into()),
        ..WorkerConfig::default()
    };
    let running = spawn_with(amqp_config(), config);
    let client = Client::new(amqp_config());
    let dead = format!("{EXCHANGE}.dead");
    wait_until("the subscription to be bound", Duration::from_secs(20), || async {
        client.enqueue(&Announce { text: "hello".into() }).await.is_ok()
    })
    .await;

    wait_until("the failure in the exchange's dead queue", Duration::from_secs(20), || async {
        try_counts(&raw, &dead).await.map(|c| c.0) == Some(1)
    })
    .await;
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("failed"));
    assert_eq!(header_str(&props, headers::ERROR), Some("cannot announce hello"));
    assert_eq!(header_str(&props, headers::QUEUE), Some(EXCHANGE), "dead-lettered under its exchange");
    running.stop().await.unwrap();
    assert_eq!(RUNS.lock().unwrap().as_slice(), ["hello"], "run once: not retried");
    assert!(get(&channel, &dead).await.is_none(), "dead once");
}
