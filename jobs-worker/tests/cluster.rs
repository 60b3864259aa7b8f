//! Scaling out on a RabbitMQ cluster with quorum queues: thousands of jobs while
//! one node stops (not the one the workers use), comes back, and then the one
//! they use stops too. Every job runs at least once; duplicates are counted.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
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

struct Cluster {
    dir: String,
    prefix: String,
}

impl Cluster {
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/cluster.sh"))
            .args(args)
            .env("CLUSTER_PREFIX", &self.prefix)
            .output()
            .unwrap();
        assert!(out.status.success(), "cluster.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn ctl(&self, node: u32, args: &[&str]) {
        let name = format!("{}{node}@localhost", self.prefix);
        let out = Command::new("rabbitmqctl").arg("-n").arg(&name).args(args).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?} on {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script(&["stop", &self.dir]);
    }
}

fn runs() -> HashMap<u32, u32> {
    RUNS.lock().unwrap().clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_jobs_survive_nodes_stopping_with_none_lost() {
    let base = 15000 + (std::process::id() % 20000) as u16;
    let cluster = Cluster {
        dir: format!("/tmp/jobs-cluster-{}", std::process::id()),
        prefix: format!("jobs-t{}-", std::process::id()),
    };
    let urls: Vec<String> =
        cluster.script(&["start", &cluster.dir, &base.to_string()]).lines().map(str::to_owned).collect();
    assert_eq!(urls.len(), 3);
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
    tokio::time::sleep(Duration::from_secs(2)).await;
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
