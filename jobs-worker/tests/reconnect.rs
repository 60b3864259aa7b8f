//! A connection that goes silent without closing is noticed by its heartbeat,
//! within the time the docs state; after a reconnect the worker declares its
//! queues again. (A whole broker restart: `broker_restart.rs`.)
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Marker {
    tag: String,
}

static MARKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Marker {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        MARKED.lock().unwrap().push(self.tag);
        Ok(())
    }
}

/// A half-open connection (a network that drops everything, a hung broker)
/// closes nothing, so only the heartbeat can tell: the worker notices, connects
/// again, and runs the job the broker handed to the dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_noticed_by_its_heartbeat_and_the_worker_reconnects() {
    let relay = Relay::start().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 1;
    let Fixture { queue, client, worker: running, cleanup: _cleanup, .. } =
        Fixture::start_with(amqp, "half-open", Duration::from_secs(5)).await;

    relay.cut();
    let cut = std::time::Instant::now();
    client.enqueue_with(&Marker { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    wait_until("the job to run on a new connection", Duration::from_secs(30), || async {
        MARKED.lock().unwrap().contains(&queue)
    })
    .await;
    // docs/deployment.md: at a 1 s heartbeat a silent link is noticed in about 2 s; the
    // rest is room for a loaded machine (5.3 s was seen with the whole suite running).
    assert!(cut.elapsed() < Duration::from_secs(10), "noticed and reconnected after {:?}", cut.elapsed());
    assert!(!running.is_finished(), "the worker is still running, not failed");
    running.stop().await.unwrap();
    drop(relay);
}

/// The queue goes while the worker is cut off (deleted by an operator, or
/// lost with a node): on its new connection the worker declares it again and
/// consumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_declared_again_after_a_reconnect() {
    let relay = Relay::start().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 1;
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start_with(amqp, "redeclare", Duration::from_secs(5)).await;

    relay.cut();
    let channel = raw.open_channel(None).await.unwrap();
    for name in [queue.clone(), format!("{queue}.dead")] {
        let deleted = channel.queue_delete(jobs_test::amqprs::channel::QueueDeleteArguments::new(&name)).await;
        deleted.expect("the queue is deleted while the worker is cut off");
    }
    assert_eq!(try_counts(&raw, &queue).await, None, "gone");
    wait_for_consumers(&raw, &queue, 1).await; // declared again, and consumed
    assert!(try_counts(&raw, &format!("{queue}.dead")).await.is_some(), "its dead-letter queue too");
    let tag = format!("{queue}-after");
    client.enqueue_with(&Marker { tag: tag.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    wait_until("the job on the declared-again queue", Duration::from_secs(20), || async {
        MARKED.lock().unwrap().contains(&tag)
    })
    .await;
    running.stop().await.unwrap();
}
