//! Classic queues of storage version 2 (faster confirmed publishing, slower
//! at other things: see docs/benchmarks.md) are the broker's choice, never
//! an argument the framework declares, so a vhost of version 1 queues moves
//! over without a change of ours and keeps working: a `queue-version` policy
//! converts a queue in place while it holds jobs, and a broker restarted with
//! `classic_queue.default_version = 2` converts its existing queues at boot
//! and makes new ones version 2. The framework declares them as before
//! throughout, and every job runs once. On a node of the test's own.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "versioned-a")]
struct Versioned {
    n: u32,
}

static DONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

impl Perform for Versioned {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        DONE.lock().unwrap().push(self.n);
        Ok(())
    }
}

/// Moved by a policy, online.
const A: &str = Versioned::QUEUE;
/// Moved by the broker's default, at a restart.
const B: &str = "versioned-b";
/// Made after the restart.
const C: &str = "versioned-c";

async fn enqueue(url: &str, queue: &str, ns: std::ops::Range<u32>) {
    let client = Client::new(config_for(url));
    let jobs: Vec<Versioned> = ns.map(|n| Versioned { n }).collect();
    client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(queue)).await.expect("enqueue");
    client.close().await;
}

async fn run_until_done(url: &str, count: usize) {
    let worker = spawn_worker(url, &[A, B, C], 4, "version-worker", Duration::from_secs(5));
    wait_until(&format!("{count} jobs run"), Duration::from_secs(60), || async { DONE.lock().unwrap().len() == count })
        .await;
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_queues_move_to_version_2_by_policy_or_by_the_brokers_default_and_keep_working() {
    // RabbitMQ 3.10's own default: version 1.
    let mut node = TestNode::start("queue-version");
    let url = node.url();
    enqueue(&url, A, 0..10).await;
    enqueue(&url, B, 100..110).await;
    assert_eq!((node.queue_version(A), node.queue_version(B)), (Some(1), Some(1)), "made as version 1");

    // A policy moves a queue over in place, jobs and all, as docs/deployment.md says.
    node.ctl(&["set_policy", "--apply-to", "queues", "classic-v2", "^versioned-a$", r#"{"queue-version": 2}"#]);
    wait_until("queue a to move to version 2", Duration::from_secs(30), || async { node.queue_version(A) == Some(2) })
        .await;
    assert_eq!(node.queue_version(B), Some(1), "the policy's pattern only");
    enqueue(&url, A, 10..20).await; // declared as before: no argument to disagree on
    run_until_done(&url, 30).await;

    // The broker's default: at its next start it converts the rest, and makes new queues version 2.
    enqueue(&url, B, 110..120).await;
    node.restart_with("classic_queue.default_version = 2");
    assert_eq!(node.queue_version(B), Some(2), "converted at boot");
    enqueue(&url, B, 120..130).await;
    enqueue(&url, C, 200..210).await;
    assert_eq!(node.queue_version(C), Some(2), "a new queue is version 2");
    run_until_done(&url, 60).await;

    let mut done = DONE.lock().unwrap().clone();
    done.sort_unstable();
    let expected: Vec<u32> = (0..20).chain(100..130).chain(200..210).collect();
    assert_eq!(done, expected, "every job ran once, on both versions and through the move");
    let raw = raw_connection_to(&url).await;
    for queue in [A, B, C] {
        assert_acked(&raw, queue).await;
    }
}
