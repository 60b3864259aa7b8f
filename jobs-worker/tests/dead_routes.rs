//! A dead broadcast or routed job is retried through its exchange, with its
//! routing key, to the workers subscribed now (a fanout, a direct and a topic
//! type); with no one subscribed the retry says the job is unroutable and it
//! stays dead.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, DeadFilter, DeadLetters, EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_worker::{Subscription, WorkerConfig};
use serde::{Deserialize, Serialize};

const FANOUT: &str = "test.dead-routes.fanout";
const DIRECT: &str = "test.dead-routes.direct";
const TOPIC: &str = "test.dead-routes.topic";

static FAIL: AtomicBool = AtomicBool::new(true);
static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn run(what: &str) -> Result<(), JobError> {
    if FAIL.load(Ordering::SeqCst) {
        return Err(JobError::fatal(format!("{what} fails while FAIL is set")));
    }
    DONE.lock().unwrap().push(what.to_owned());
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(exchange = "test.dead-routes.fanout")]
struct Shout {
    text: String,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(exchange = "test.dead-routes.direct", exchange_type = "direct")]
struct Alert {
    text: String,
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(exchange = "test.dead-routes.topic", exchange_type = "topic")]
struct Event {
    text: String,
}

impl Perform for Shout {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        run(&format!("shout {}", self.text))
    }
}

impl Perform for Alert {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        run(&format!("alert {}", self.text))
    }
}

impl Perform for Event {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        run(&format!("event {}", self.text))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_routed_jobs_go_back_through_their_exchange_with_their_key() {
    // The job types' exchanges have fixed names: on a vhost of its own, gone with it.
    let vhost = TestVhost::create("dead-routes").await;
    let url = vhost.url();
    let amqp = config_for(&url);
    let raw = raw_connection_to(&url).await;
    let config = WorkerConfig {
        subscriptions: vec![
            Subscription::of::<Shout>().unwrap(),
            Subscription::of::<Alert>().unwrap().with_keys(["error"]),
            Subscription::of::<Event>().unwrap().with_keys(["kern.*"]),
        ],
        id: Some("dead-routes-worker".into()),
        ..WorkerConfig::default()
    };
    let running = spawn_with(amqp.clone(), config);
    let client = Client::new(amqp.clone());
    let routed = |key: &str| EnqueueOptions::new().routing_key(key);
    // Each is sent until its subscription is bound (unroutable before): the first one taken is the job.
    wait_until("the fanout subscription to be bound", Duration::from_secs(20), || async {
        client.enqueue(&Shout { text: "a".into() }).await.is_ok()
    })
    .await;
    wait_until("the direct subscription to be bound", Duration::from_secs(20), || async {
        client.enqueue_with(&Alert { text: "b".into() }, routed("error")).await.is_ok()
    })
    .await;
    wait_until("the topic subscription to be bound", Duration::from_secs(20), || async {
        client.enqueue_with(&Event { text: "c".into() }, routed("kern.critical")).await.is_ok()
    })
    .await;
    for exchange in [FANOUT, DIRECT, TOPIC] {
        wait_until(&format!("the failure in {exchange}.dead"), Duration::from_secs(20), || async {
            try_counts(&raw, &format!("{exchange}.dead")).await.map(|c| c.0) == Some(1)
        })
        .await;
    }

    let dead = DeadLetters::connect(&amqp).await.unwrap();
    for (exchange, key) in [(FANOUT, ""), (DIRECT, "error"), (TOPIC, "kern.critical")] {
        let listed = dead.list(exchange, 10).await.unwrap();
        assert_eq!(listed.len(), 1, "{exchange}");
        let job = &listed[0];
        assert_eq!((job.exchange.as_deref(), job.routing_key.as_deref()), (Some(exchange), Some(key)), "{exchange}");
        assert_eq!(job.queue.as_deref(), Some(exchange), "dead-lettered under its exchange");
        assert_eq!(dead.count(exchange).await.unwrap(), 1, "listing leaves it dead");
    }

    // Retried through each exchange, with its key: the subscribed worker runs each, once.
    FAIL.store(false, Ordering::SeqCst);
    for exchange in [FANOUT, DIRECT, TOPIC] {
        let done = dead.retry(exchange, &DeadFilter::all()).await.unwrap();
        assert_eq!((done.acted, done.failed, done.not_reached), (1, 0, 0), "{exchange}: {done:?}");
    }
    wait_until("the three retried jobs to run", Duration::from_secs(20), || async { DONE.lock().unwrap().len() == 3 })
        .await;
    let mut done = DONE.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, ["alert b", "event c", "shout a"]);
    for exchange in [FANOUT, DIRECT, TOPIC] {
        assert_eq!(dead.count(exchange).await.unwrap(), 0, "{exchange}.dead is empty");
    }

    // With no worker subscribed, a retry finds no queue for the job: it says so, and the job stays dead.
    FAIL.store(true, Ordering::SeqCst);
    client.enqueue(&Shout { text: "d".into() }).await.unwrap();
    wait_until("the new failure", Duration::from_secs(20), || async { dead.count(FANOUT).await.unwrap() == 1 }).await;
    running.stop().await.unwrap();
    wait_until("the subscription queue to go with its worker", Duration::from_secs(20), || async {
        client.enqueue(&Shout { text: "probe".into() }).await.is_err()
    })
    .await;
    let done = dead.retry(FANOUT, &DeadFilter::all()).await.unwrap();
    assert_eq!((done.acted, done.failed), (0, 1), "{done:?}");
    let why = done.first_failure.unwrap_or_default();
    assert!(why.contains("unroutable") && why.contains(FANOUT), "{why}");
    assert_eq!(dead.count(FANOUT).await.unwrap(), 1, "still dead, nothing lost");

    // The exchange itself deleted: the broker closes the channel at the copy;
    // it stays dead, and the same connection retries other jobs on a new one.
    let channel = raw.open_channel(None).await.unwrap();
    channel.exchange_delete(jobs_test::amqprs::channel::ExchangeDeleteArguments::new(FANOUT)).await.unwrap();
    let done = dead.retry(FANOUT, &DeadFilter::all()).await.unwrap();
    assert_eq!((done.acted, done.failed), (0, 1), "{done:?}");
    let why = done.first_failure.unwrap_or_default();
    assert!(why.contains("no exchange"), "{why}");
    assert_eq!(dead.count(FANOUT).await.unwrap(), 1, "still dead");
    let declarer = jobs_core::plumbing::topology::Declarer::open(&raw).await.unwrap();
    amqp.topology().declare_job_queue(&declarer, "test.dead-routes.after").await.unwrap();
    let after = jobs_core::plumbing::Message::job("Shout", jobs_core::JobId::new(), vec![0x80]);
    let publisher = jobs_core::plumbing::Publisher::open(&raw, Duration::from_secs(10)).await.unwrap();
    publisher
        .publish(after.into_outgoing(&jobs_core::plumbing::Destination::dead("test.dead-routes.after")))
        .await
        .unwrap();
    let done = dead.retry("test.dead-routes.after", &DeadFilter::all()).await.unwrap();
    assert_eq!((done.acted, done.failed), (1, 0), "a new channel for copies: {done:?}");
    dead.close().await;
}
