//! Enqueue, then perform: the payload arrives intact, the context is right, and
//! the delivery is acked.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    street: String,
    zip: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
#[job(queue = "roundtrip")]
struct Payload {
    text: String,
    numbers: Vec<i64>,
    address: Address,
    tags: BTreeMap<String, f64>,
    bytes: Vec<u8>,
    nothing: Option<String>,
}

/// (job, job id, attempt, queue, worker, enqueued at)
type Seen = (Payload, String, u32, String, String, Option<SystemTime>);

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

impl Perform for Payload {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let record = (
            self,
            ctx.job_id().to_string(),
            ctx.attempt(),
            ctx.queue().to_owned(),
            ctx.worker().to_owned(),
            ctx.enqueued_at(),
        );
        SEEN.lock().unwrap().push(record);
        Ok(())
    }
}

#[tokio::test]
async fn enqueued_job_is_performed_with_its_payload_intact() {
    let queue = unique("roundtrip");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let job = Payload {
        text: "héllo wörld ✓ \u{0}".into(),
        numbers: vec![i64::MIN, -1, 0, 1, i64::MAX],
        address: Address { street: "1 Main St".into(), zip: Some(12345) },
        tags: [("a".to_string(), 1.5), ("b".to_string(), -0.25)].into(),
        bytes: (0..=255).collect(),
        nothing: None,
    };
    let before = SystemTime::now();
    let id = client.enqueue_with(&job, EnqueueOptions::new().queue(&queue)).await.expect("enqueue");
    assert_eq!(counts(&raw, &queue).await.0, 1, "the job waits in its queue before a worker runs");

    let running = spawn_worker(&amqp_url(), &[&queue], 1, "roundtrip-worker", Duration::from_secs(5));
    wait_until("the job to be performed", Duration::from_secs(20), || async {
        SEEN.lock().unwrap().iter().any(|r| r.1 == id.as_str())
    })
    .await;
    let record = SEEN.lock().unwrap().iter().find(|r| r.1 == id.as_str()).cloned().unwrap();
    assert_eq!(record.0, job);
    assert_eq!((record.2, record.3.as_str(), record.4.as_str()), (1, queue.as_str(), "roundtrip-worker"));
    let enqueued_at = record.5.expect("enqueued_at from the message's timestamp");
    // Whole seconds: at most a second before the enqueue started, not after it ended.
    assert!(enqueued_at + Duration::from_secs(1) > before && enqueued_at <= SystemTime::now(), "{enqueued_at:?}");

    running.stop().await.expect("a normal stop is Ok");
    assert_acked(&raw, &queue).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0);
}

#[tokio::test]
async fn a_worker_with_no_explicit_queues_serves_its_job_types_queues() {
    let worker = jobs_worker::Worker::new(amqp_config(), jobs_worker::WorkerConfig::default()).unwrap();
    assert_eq!(worker.queues(), [Payload::QUEUE]);
}
