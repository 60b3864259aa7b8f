//! Fair dispatch at prefetch 1: a worker busy with a long job takes no short
//! job meanwhile; the other worker runs them.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Sleep {
    name: String,
    millis: u64,
}

/// (job name, worker, start, end)
static RUNS: Mutex<Vec<(String, String, Instant, Instant)>> = Mutex::new(Vec::new());

impl Perform for Sleep {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        RUNS.lock().unwrap().push((self.name, ctx.worker().to_owned(), start, Instant::now()));
        Ok(())
    }
}

#[tokio::test]
async fn the_worker_holding_a_long_job_takes_no_short_job_meanwhile() {
    let queue = unique("fair");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let a = spawn_worker(&amqp_url(), &[&queue], 1, "fair-A", Duration::from_secs(10));
    let b = spawn_worker(&amqp_url(), &[&queue], 1, "fair-B", Duration::from_secs(10));
    wait_for_consumers(&raw, &queue, 2).await;

    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Sleep { name: "long".into(), millis: 3000 }, on()).await.unwrap();
    for i in 0..8 {
        client.enqueue_with(&Sleep { name: format!("short{i}"), millis: 100 }, on()).await.unwrap();
    }
    wait_until("all nine jobs to finish", Duration::from_secs(30), || async { RUNS.lock().unwrap().len() == 9 }).await;

    let runs = RUNS.lock().unwrap().clone();
    let long = runs.iter().find(|r| r.0 == "long").unwrap();
    let during_long: Vec<_> = runs.iter().filter(|r| r.0 != "long" && r.2 < long.3).collect();
    assert!(!during_long.is_empty(), "short jobs ran while the long one did");
    for short in &during_long {
        assert_ne!(short.1, long.1, "{} started on {} while it ran the long job", short.0, long.1);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
