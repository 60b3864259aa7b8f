//! Jobs survive a broker restart: enqueued, the node stopped and booted again,
//! then run. Uses a RabbitMQ node of the test's own, so other tests go on.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Durable {
    n: u32,
}

static DONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

impl Perform for Durable {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        DONE.lock().unwrap().push(self.n);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_before_a_broker_restart_are_run_after_it() {
    let node = TestNode::start("durability");
    let url = node.url();
    let queue = "durability";
    let client = Client::new(config_for(&url));
    let jobs: Vec<Durable> = (0..20).map(|n| Durable { n }).collect();
    client.enqueue_many(&jobs[..10]).await.expect("enqueue_many");
    for job in &jobs[10..] {
        client.enqueue_with(job, EnqueueOptions::new().queue(queue)).await.expect("enqueue");
    }
    client.close().await;

    node.restart();

    let raw = raw_connection_to(&url).await;
    assert_eq!(counts(&raw, queue).await.0, 10, "the durable queue kept its persistent messages");
    assert_eq!(counts(&raw, Durable::QUEUE).await.0, 10);
    let running = spawn_worker(&url, &[queue, Durable::QUEUE], 1, "durability-worker", Duration::from_secs(5));
    wait_until("all 20 jobs to run", Duration::from_secs(30), || async { DONE.lock().unwrap().len() == 20 }).await;
    running.stop().await.unwrap();
    let mut done = DONE.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, (0..20).collect::<Vec<_>>());
}
