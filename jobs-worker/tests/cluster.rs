//! Scaling out on a RabbitMQ cluster with quorum queues: thousands of jobs while
//! one node stops (not the one the workers use), comes back, and then the one
//! they use stops too. Every job runs at least once; duplicates are counted.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::QueueType;
use jobs_core::{BrokerUrl, Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Counted {
    n: u32,
}

static RUNS: Mutex<Option<HashMap<u32, u32>>> = Mutex::new(None);

impl Perform for Counted {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        *RUNS.lock().unwrap().get_or_insert_with(HashMap::new).entry(self.n).or_default() += 1;
        Ok(())
    }
}

fn runs() -> HashMap<u32, u32> {
    RUNS.lock().unwrap().clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_jobs_survive_nodes_stopping_with_none_lost() {
    let cluster = TestCluster::start();
    let urls = cluster.urls.clone();
    let mut amqp = config_for(&urls[0]);
    amqp.fallback_urls = urls[1..].iter().map(|u| BrokerUrl::parse(u).unwrap()).collect();
    amqp.queue_type = QueueType::Quorum;
    amqp.reconnect_timeout = Duration::from_secs(90);
    amqp.heartbeat = 5;
    let queue = "cluster-jobs";
    let client = Client::new(amqp.clone());
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let config = WorkerConfig {
                queues: vec![queue.into()],
                concurrency: 10,
                id: Some(format!("cluster-{i}")),
                ..Default::default()
            };
            spawn_with(amqp.clone(), config)
        })
        .collect();

    let total = 3000u32;
    let mut sent = 0u32;
    let mut enqueue_until = |until: u32| {
        let client = client.clone();
        let from = sent;
        sent = until;
        async move {
            for n in from..until {
                client
                    .enqueue_with(&Counted { n }, EnqueueOptions::new().queue(queue))
                    .await
                    .expect("enqueue through failover");
            }
        }
    };
    enqueue_until(1000).await;
    cluster.ctl(3, &["stop_app"]); // a node the workers are not connected to
    enqueue_until(2000).await;
    cluster.ctl(3, &["start_app"]);
    cluster.wait_running(1, 3); // rejoined
    cluster.ctl(1, &["stop_app"]); // the node everyone is connected to
    enqueue_until(total).await;

    wait_until("every job to run", Duration::from_secs(120), || async { runs().len() == total as usize }).await;
    let runs = runs();
    let duplicates: u32 = runs.values().map(|n| n - 1).sum();
    println!("cluster: {total} jobs, every one ran; {duplicates} ran more than once");
    assert!((0..total).all(|n| runs.contains_key(&n)), "none lost");
    for worker in workers {
        worker.stop().await.unwrap();
    }
}
