//! A worker and an enqueuing client ride through a broker restart: every job
//! enqueued before, during and after it runs (at least once). A binary of its
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
