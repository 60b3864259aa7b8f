//! A failed or returned delivery is acked only after its copy (a retry, a
//! dead letter, a crash requeue) is confirmed. The link between worker and
//! broker breaks right at the copy's publish: whatever the worker sent before
//! it (an ack, if it acked first) arrives, the copy does not. Acking first
//! would lose the job; the worker must instead leave it unacked, so the broker
//! hands it out again. It may run twice; it is never lost.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::{header_str, headers};
use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

/// Each test's relay (its publish trap, and the cut of its links), by job tag.
static RELAYS: Mutex<Vec<(String, Arc<Relay>)>> = Mutex::new(Vec::new());
static RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn relay_of(tag: &str) -> Arc<Relay> {
    RELAYS.lock().unwrap().iter().find(|(t, _)| t == tag).map(|(_, r)| r.clone()).unwrap()
}

/// Notes a run of `tag`; whether it is its first.
fn first_run(tag: &str) -> bool {
    let mut runs = RUNS.lock().unwrap();
    runs.push(tag.to_owned());
    runs.iter().filter(|t| *t == tag).count() == 1
}

fn runs_of(tag: &str) -> usize {
    RUNS.lock().unwrap().iter().filter(|t| *t == tag).count()
}

/// Fails for good; its first run arms the trap for its dead copy.
#[derive(Debug, Serialize, Deserialize, Job)]
struct Refuses {
    tag: String,
}

impl Perform for Refuses {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if first_run(&self.tag) {
            relay_of(&self.tag).publish_trap().store(true, Ordering::SeqCst);
        }
        Err(JobError::fatal("bad input"))
    }
}

/// Fails once, asking for a retry; its first run arms the trap for that retry copy.
#[derive(Debug, Serialize, Deserialize, Job)]
struct RetriesOnce {
    tag: String,
}

impl Perform for RetriesOnce {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if first_run(&self.tag) {
            relay_of(&self.tag).publish_trap().store(true, Ordering::SeqCst);
            return Err(JobError::retry_after("try again", Duration::from_secs(1)));
        }
        Ok(())
    }
}

/// Its first run silences the worker's link (so the job comes back unacked,
/// a return the next worker session requeues) and arms the trap for that
/// requeue copy, the next publish.
#[derive(Debug, Serialize, Deserialize, Job)]
struct CutsTheLink {
    tag: String,
}

impl Perform for CutsTheLink {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if first_run(&self.tag) {
            let relay = relay_of(&self.tag);
            relay.publish_trap().store(true, Ordering::SeqCst);
            relay.cut();
        }
        Ok(())
    }
}

struct Setup {
    queue: String,
    raw: jobs_test::amqprs::connection::Connection,
    client: Client,
    relay: Arc<Relay>,
    worker: RunningWorker,
    _cleanup: Cleanup,
}

/// A worker on a queue of its own, linked through a relay, that publishes
/// nothing but settling copies (no heartbeats), with a 1 s AMQP heartbeat.
async fn setup(name: &str) -> Setup {
    let relay = Arc::new(Relay::start().await);
    let queue = unique(name);
    RELAYS.lock().unwrap().push((queue.clone(), relay.clone()));
    let cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 1;
    let mut config = worker_config(&[&queue], 1, &format!("{name}-worker"), Duration::from_secs(5));
    config.heartbeat_interval = Duration::ZERO;
    let worker = spawn_with(amqp, config);
    wait_for_consumers(&raw, &queue, 1).await;
    Setup { queue, raw, client: Client::new(amqp_config()), relay, worker, _cleanup: cleanup }
}

fn trap_went_off(relay: &Relay) -> bool {
    !relay.publish_trap().load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_at_the_dead_copy_loses_no_job() {
    let Setup { queue, raw, client, relay, worker, _cleanup } = setup("settle-dead").await;
    let dead = format!("{queue}.dead");
    let id = client.enqueue_with(&Refuses { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();

    wait_until("the job in dead", Duration::from_secs(30), || async { counts(&raw, &dead).await.0 == 1 }).await;
    assert!(trap_went_off(&relay), "the trap went off");
    let runs = runs_of(&queue);
    assert!(runs >= 2, "the first dead copy was lost with the link, so the job ran again: {runs} runs");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("fatal"));
    assert!(get(&channel, &dead).await.is_none(), "dead once");
    worker.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_at_the_retry_copy_loses_no_job() {
    let Setup { queue, raw, client, relay, worker, _cleanup } = setup("settle-retry").await;
    client.enqueue_with(&RetriesOnce { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();

    // The retry copy went with the link; the delivery, never acked, came back and ran again.
    wait_until("the job's second run", Duration::from_secs(30), || async { runs_of(&queue) >= 2 }).await;
    assert!(trap_went_off(&relay), "the trap went off at the retry copy");
    worker.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "not dead");
    assert_eq!(runs_of(&queue), 2, "ran again once, then done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_at_the_crash_requeue_copy_loses_no_job() {
    let Setup { queue, raw, client, relay, worker, _cleanup } = setup("settle-requeue").await;
    client.enqueue_with(&CutsTheLink { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();

    // Run 1's ack went into the silenced link: the job came back unacked, its
    // requeue copy was lost with the next link, it came back again, and the
    // copy stored then ran.
    wait_until("the job's second run", Duration::from_secs(60), || async { runs_of(&queue) >= 2 }).await;
    assert!(trap_went_off(&relay), "the trap went off at the requeue copy");
    assert!(
        relay.connections() >= 3,
        "a link for run 1, one lost at the requeue, one that stored it: {}",
        relay.connections()
    );
    worker.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "not dead");
    assert_eq!(runs_of(&queue), 2, "ran twice: the lost ack's return, once");
}
