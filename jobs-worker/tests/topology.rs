//! Queue types: quorum queues work end to end; a queue that exists with other
//! arguments is one clear error naming it and the argument; oversized messages
//! are dead-lettered unread.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::{header_str, headers};
use jobs_core::QueueType;
use jobs_core::{Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform};
use jobs_test::amqprs::channel::QueueDeclareArguments;
use jobs_test::amqprs::{FieldTable, FieldValue};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 2, backoff = one_second)]
struct Q {
    tag: String,
    fail: bool,
    padding: Vec<u8>,
}

fn one_second(_: u32) -> Duration {
    Duration::from_secs(1)
}

static RUNS: Mutex<Vec<(String, u32, Instant)>> = Mutex::new(Vec::new());

impl Perform for Q {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        RUNS.lock().unwrap().push((self.tag, ctx.attempt(), Instant::now()));
        if self.fail {
            return Err(JobError::msg("no"));
        }
        Ok(())
    }
}

fn runs(tag: &str) -> Vec<u32> {
    RUNS.lock().unwrap().iter().filter(|r| r.0 == tag).map(|r| r.1).collect()
}

fn job(tag: &str, fail: bool) -> Q {
    Q { tag: tag.into(), fail, padding: Vec::new() }
}

#[tokio::test]
async fn quorum_queues_run_delay_retry_and_dead_letter_jobs() {
    let queue = unique("quorum");
    let _cleanup = Cleanup::queues(&[&queue]);
    let dead = format!("{queue}.dead");
    let raw = raw_connection().await;
    let mut amqp = amqp_config();
    amqp.queue_type = QueueType::Quorum;
    let client = Client::new(amqp.clone());
    let config =
        WorkerConfig { queues: vec![queue.clone()], id: Some("quorum-worker".into()), ..WorkerConfig::default() };
    let running = spawn_with(amqp, config);
    wait_for_consumers(&raw, &queue, 1).await;

    let on = || EnqueueOptions::new().queue(&queue);
    let ok = format!("{queue}-ok");
    let failing = format!("{queue}-fail");
    let t0 = Instant::now();
    client.enqueue_with(&job(&ok, false), on().delay(Duration::from_secs(1))).await.unwrap();
    client.enqueue_with(&job(&failing, true), on()).await.unwrap();
    wait_until("the delayed job and the dead one", Duration::from_secs(20), || async {
        runs(&ok).len() == 1 && try_counts(&raw, &dead).await.map(|c| c.0) == Some(1)
    })
    .await;
    assert!(RUNS.lock().unwrap().iter().find(|r| r.0 == ok).unwrap().2 - t0 >= Duration::from_secs(1));
    assert_eq!(runs(&failing), [1, 2], "retried once through the quorum delay cascade, then dead");
    let channel = raw.open_channel(None).await.unwrap();
    // Declaring it again as quorum succeeds only if it is one.
    let mut args = FieldTable::new();
    jobs_core::plumbing::set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
    let mut declare = QueueDeclareArguments::durable_client_named(&dead);
    declare.arguments(args);
    channel.queue_declare(declare).await.expect("the dead queue is a quorum queue");
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("failed"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_queue_that_exists_with_other_arguments_is_one_clear_error() {
    let queue = unique("mismatch");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut args = FieldTable::new();
    jobs_core::plumbing::set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
    let mut declare = QueueDeclareArguments::durable_client_named(&queue);
    declare.arguments(args);
    raw.open_channel(None).await.unwrap().queue_declare(declare).await.unwrap();

    let client = Client::new(amqp_config());
    let err = client.enqueue_with(&job("x", false), EnqueueOptions::new().queue(&queue)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(&err, Error::TopologyMismatch { name, .. } if *name == queue), "{err:?}");
    assert!(text.contains(&queue) && text.contains("x-queue-type"), "{text}");

    let config = WorkerConfig { queues: vec![queue.clone()], ..WorkerConfig::default() };
    let worker =
        jobs_worker::Worker::builder().linked_jobs().queue(&queue).amqp(amqp_config()).config(config).build().unwrap();
    let err =
        tokio::time::timeout(Duration::from_secs(20), worker.run(std::future::pending())).await.expect("fails fast");
    let text = err.unwrap_err().to_string();
    assert!(text.contains(&queue) && text.contains("x-queue-type"), "{text}");
}

/// A vhost switched from classic to quorum queues: the worker names every
/// queue to migrate in one error, not one per start.
#[tokio::test]
async fn switching_to_quorum_names_every_queue_to_migrate() {
    let (a, b) = (unique("migrate-a"), unique("migrate-b"));
    let _cleanup = Cleanup::queues(&[&a, &b]);
    let raw = raw_connection().await;
    let channel = raw.open_channel(None).await.unwrap();
    for name in [&a, &b] {
        channel.queue_declare(QueueDeclareArguments::durable_client_named(name)).await.unwrap();
        // classic
    }
    let mut amqp = amqp_config();
    amqp.queue_type = QueueType::Quorum;
    let config = WorkerConfig { queues: vec![a.clone(), b.clone()], ..WorkerConfig::default() };
    let worker =
        jobs_worker::Worker::builder().linked_jobs().queue(&a).queue(&b).amqp(amqp).config(config).build().unwrap();
    let err =
        tokio::time::timeout(Duration::from_secs(20), worker.run(std::future::pending())).await.expect("fails fast");
    let text = err.unwrap_err().to_string();
    assert!(text.starts_with("2 queues or exchanges cannot be set up"), "{text}");
    assert!(
        text.contains(&format!("`{a}`")) && text.contains(&format!("`{b}`")) && text.contains("inequivalent arg"),
        "{text}"
    );
}

#[tokio::test]
async fn an_oversized_message_is_dead_lettered_unread() {
    let queue = unique("oversize");
    let _cleanup = Cleanup::queues(&[&queue]);
    let dead = format!("{queue}.dead");
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let config = WorkerConfig {
        queues: vec![queue.clone()],
        max_message_size: 1024,
        id: Some("small".into()),
        ..WorkerConfig::default()
    };
    let running = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;
    let big = format!("{queue}-big");
    let small = format!("{queue}-small");
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Q { tag: big.clone(), fail: false, padding: vec![7; 4096] }, on()).await.unwrap();
    client.enqueue_with(&job(&small, false), on()).await.unwrap();
    wait_until("the small job", Duration::from_secs(10), || async { runs(&small).len() == 1 }).await;
    wait_until("the big one in dead", Duration::from_secs(10), || async { counts(&raw, &dead).await.0 == 1 }).await;
    assert!(runs(&big).is_empty());
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("bad_message"));
    assert!(header_str(&props, headers::ERROR).unwrap().contains("max_message_size"));
    running.stop().await.unwrap();
}
