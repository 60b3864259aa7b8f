//! Promises of the docs, each proven (a broker that keeps refusing a setup:
//! `examples/tests/setup_refused.rs`): a copy the broker nacks while the link
//! is up is published again, the job held, and stored once it can be; a stop while the worker reconnects still gives a running job its
//! grace period; `<queue>.dead` has no expiry, length limit or TTL.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::Management;
use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform, QueueType};
use jobs_test::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn event(what: String) {
    EVENTS.lock().unwrap().push(what);
}

fn count(what: &str) -> usize {
    EVENTS.lock().unwrap().iter().filter(|e| *e == what).count()
}

#[derive(Debug, Serialize, Deserialize, Job)]
struct Note {
    tag: String,
    millis: u64,
    fail: bool,
}

impl Perform for Note {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        event(format!("{}:start", self.tag));
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        event(format!("{}:end", self.tag));
        if self.fail {
            return Err(JobError::fatal("refused on purpose"));
        }
        Ok(())
    }
}

fn management() -> Management {
    Management::new(&amqp_config())
}

fn encode(text: &str) -> String {
    percent_encode(text)
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

/// A dead copy the broker nacks (its dead queue refuses publishes, by a
/// policy) while the link is up: the worker holds the delivery (unacked) and
/// publishes the copy again, pausing longer each time, and once the broker
/// takes copies the job is dead once, with its own failure, having run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_nacked_while_the_link_is_up_is_held_and_stored_later() {
    let queue = unique("nacked");
    let _cleanup = Cleanup::queues(&[&queue]);
    let dead = format!("{queue}.dead");
    let raw = raw_connection().await;
    let mut config = worker_config(&[&queue], 1, "nacked-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::ZERO;
    let running = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;
    let vhost = management().vhost().to_owned();
    let policy = format!("/api/policies/{}/{}", encode(&vhost), encode(&queue));
    let refuse = json!({
        "pattern": format!("^{}$", regex_escape(&dead)),
        "definition": { "max-length": 0, "overflow": "reject-publish" },
        "apply-to": "queues",
        "priority": 10,
    });
    management().put(&policy, &refuse).await.unwrap();
    wait_until("the policy on the dead queue", Duration::from_secs(20), || async {
        let path = format!("/api/queues/{}/{}", encode(&vhost), encode(&dead));
        management().get(&path).await.is_ok_and(|q| q["policy"] == queue.as_str())
    })
    .await;

    let tag = format!("{queue}-refused");
    let id = Client::new(amqp_config())
        .enqueue_with(&Note { tag: tag.clone(), millis: 0, fail: true }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    wait_until("the run whose dead copy is nacked", Duration::from_secs(30), || async {
        count(&format!("{tag}:end")) == 1
    })
    .await;
    // The broker's view: the job held by the worker (unacked), nothing stored in dead.
    let path = format!("/api/queues/{}/{}", encode(&vhost), encode(&queue));
    wait_until("the broker to show the job held", Duration::from_secs(30), || async {
        management().get(&path).await.is_ok_and(|q| q["messages_unacknowledged"] == 1)
    })
    .await;
    assert_eq!(counts(&raw, &dead).await.0, 0, "nothing stored in dead while it refuses");
    assert_eq!(count(&format!("{tag}:end")), 1, "held, not run again");
    assert!(!running.is_finished(), "the worker goes on");

    management().delete(&policy).await.unwrap();
    wait_until("the job dead once the broker takes copies", Duration::from_secs(60), || async {
        counts(&raw, &dead).await.0 == 1
    })
    .await;
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
    assert_eq!(count(&format!("{tag}:end")), 1, "it ran once");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
    let kind = jobs_core::plumbing::header_str(&props, jobs_core::plumbing::headers::ERROR_KIND);
    assert_eq!(kind, Some("fatal"), "its own failure, not a crash");
    let error = jobs_core::plumbing::header_str(&props, jobs_core::plumbing::headers::ERROR).unwrap_or("");
    assert!(error.contains("refused on purpose"), "{error}");
    assert!(get(&channel, &dead).await.is_none(), "dead once");
}

/// A stop that comes while the worker has lost the broker and is trying to
/// reconnect still waits (up to the grace period) for the job that runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_reconnecting_gives_the_running_job_its_grace_period() {
    let relay = Relay::start().await;
    let queue = unique("stop-reconnecting");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 1;
    let config = worker_config(&[&queue], 1, "reconnecting-worker", Duration::from_secs(20));
    let running = spawn_with(amqp, config);
    wait_for_consumers(&raw, &queue, 1).await;
    let tag = format!("{queue}-long");
    let job = Note { tag: tag.clone(), millis: 4000, fail: false };
    Client::new(amqp_config()).enqueue_with(&job, EnqueueOptions::new().queue(&queue)).await.unwrap();
    wait_until("the job to start", Duration::from_secs(10), || async { count(&format!("{tag}:start")) == 1 }).await;

    drop(relay); // the link goes, and no broker answers the worker's reconnects
    wait_until("the broker to see the worker gone", Duration::from_secs(20), || async {
        try_counts(&raw, &queue).await.is_some_and(|c| c.1 == 0)
    })
    .await;
    let asked = Instant::now();
    running.stop().await.unwrap();
    assert_eq!(count(&format!("{tag}:end")), 1, "the job ran to its end before the worker stopped");
    assert!(asked.elapsed() < Duration::from_secs(20), "within the grace period: {:?}", asked.elapsed());
}

/// Dead jobs stay until someone acts: `<queue>.dead` is declared with no
/// message TTL, no expiry and no length limit, on both queue types.
#[tokio::test]
async fn dead_queues_have_no_ttl_expiry_or_limit() {
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        let queue = unique("dead-forever");
        let _cleanup = Cleanup::queues(&[&queue]);
        let raw = raw_connection().await;
        let mut amqp = amqp_config();
        amqp.queue_type = queue_type;
        let declarer = jobs_core::plumbing::topology::Declarer::open(&raw).await.unwrap();
        amqp.topology().declare_job_queue(&declarer, &queue).await.unwrap();
        let path = format!("/api/queues/{}/{}", encode(management().vhost()), encode(&format!("{queue}.dead")));
        let dead = management().get(&path).await.unwrap();
        let arguments = dead["arguments"].as_object().cloned().unwrap_or_default();
        for limit in ["x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-dead-letter-exchange"] {
            assert!(!arguments.contains_key(limit), "{queue_type:?}: {limit} on the dead queue: {arguments:?}");
        }
        assert_eq!(dead["durable"], true, "{queue_type:?}");
        assert_eq!(dead["auto_delete"], false, "{queue_type:?}");
    }
}
