//! Delayed jobs wait in durable queues: they survive a restart of the broker.
//! A test binary of its own, so that restarting a node does not slow the
//! timing tests of `delays.rs` beside it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

#[path = "support/later.rs"]
mod later;
use later::{started, Later};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_survive_a_broker_restart() {
    let node = TestNode::start("delays");
    let url = node.url();
    let queue = "delayed-restart";
    let client = Client::new(config_for(&url));
    let t0 = Instant::now();
    for n in 0..5 {
        let options = EnqueueOptions::new().queue(queue).delay(Duration::from_secs(20));
        client.enqueue_with(&Later { tag: format!("restart-{n}") }, options).await.unwrap();
    }
    client.close().await;
    node.restart();
    assert!(t0.elapsed() < Duration::from_secs(19), "the restart took too long for this test: {:?}", t0.elapsed());
    let running = spawn_worker(&url, &[queue], 1, "restart-worker", Duration::from_secs(5));
    wait_until("all five delayed jobs", Duration::from_secs(40), || async {
        (0..5).all(|n| started(&format!("restart-{n}")).is_some())
    })
    .await;
    for n in 0..5 {
        let after = started(&format!("restart-{n}")).unwrap() - t0;
        assert!(after >= Duration::from_secs(20), "job {n} early: {after:?}");
    }
    running.stop().await.unwrap();
}
