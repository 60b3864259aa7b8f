//! The broker the tests use: its URL, raw connections, queue counts, names.

use std::error::Error as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{BasicGetArguments, Channel, QueueDeleteArguments};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::amqprs::BasicProperties;
use jobs_core::AmqpConfig;

use crate::wait_until;

/// The broker of the tests: `AMQP_URL`, which must name a vhost of the tests'
/// own (`bash deploy/test.sh` makes one per run and deletes it after), so that
/// no test touches a developer's queues and two runs do not collide.
pub fn amqp_url() -> String {
    let how = "run the tests with `bash deploy/test.sh` (it makes a vhost of their own), or set AMQP_URL \
               to a vhost for tests: AMQP_URL=amqp://guest:guest@127.0.0.1:5672/<vhost>";
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| panic!("AMQP_URL is not set: {how}"));
    let parsed = jobs_core::BrokerUrl::parse(&url).unwrap_or_else(|e| panic!("AMQP_URL: {e}"));
    assert_ne!(parsed.vhost(), "/", "AMQP_URL names the default vhost `/`, where apps live: {how}");
    url
}

pub fn amqp_config() -> AmqpConfig {
    config_for(&amqp_url())
}

pub fn config_for(url: &str) -> AmqpConfig {
    AmqpConfig::with_url(url).expect("AMQP_URL is not a valid amqp:// URL")
}

/// A queue name no other test (or run) uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("test.{name}.{}.{}.{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos)
}

/// A raw amqprs connection; fails the test, saying how to start a broker, when none answers.
pub async fn raw_connection_to(url: &str) -> Connection {
    match jobs_core::plumbing::connect(&config_for(url), "jobs-test").await {
        Ok(connection) => connection,
        Err(err) => panic!(
            "RabbitMQ is not reachable ({err}: {}). Start it with `bash deploy/rabbitmq.sh` \
             (or point AMQP_URL at one); these tests never skip.",
            err.source().map(|e| e.to_string()).unwrap_or_default()
        ),
    }
}

pub async fn raw_connection() -> Connection {
    raw_connection_to(&amqp_url()).await
}

/// Ready messages and consumers of `queue` (a passive declare on a channel of its own).
pub async fn counts(connection: &Connection, queue: &str) -> (u32, u32) {
    try_counts(connection, queue).await.unwrap_or_else(|| panic!("queue {queue} does not exist"))
}

/// As [`counts`], `None` when the queue does not exist (yet).
pub async fn try_counts(connection: &Connection, queue: &str) -> Option<(u32, u32)> {
    jobs_core::plumbing::topology::queue_counts(connection, queue).await
}

/// Takes one message from `queue` (auto-ack), if any.
pub async fn get(channel: &Channel, queue: &str) -> Option<(BasicProperties, Vec<u8>)> {
    let args = BasicGetArguments::new(queue).no_ack(true).finish();
    channel.basic_get(args).await.expect("basic.get").map(|(_, props, body)| (props, body))
}

/// Waits until `queue` has `n` consumers.
pub async fn wait_for_consumers(connection: &Connection, queue: &str, n: u32) {
    wait_until(&format!("{n} consumer(s) on {queue}"), Duration::from_secs(20), || async {
        try_counts(connection, queue).await.is_some_and(|c| c.1 >= n)
    })
    .await;
}

/// Proves that every delivery of `queue` was acked. Call it once its workers
/// stopped: with no consumer left, no channel holds a delivery (an unacked
/// one goes back to the queue when its channel closes), so an empty queue
/// means every job was acked. A ready count of 0 while a worker runs proves
/// nothing: an unacked job is not ready either.
pub async fn assert_acked(connection: &Connection, queue: &str) {
    wait_until(&format!("the consumers of {queue} to go"), Duration::from_secs(20), || async {
        try_counts(connection, queue).await.is_some_and(|(_, consumers)| consumers == 0)
    })
    .await;
    let (ready, _) = counts(connection, queue).await;
    assert_eq!(ready, 0, "{ready} deliveries of {queue} came back unacked once its workers stopped");
}

/// Deletes test queues and their dead-letter twins.
pub async fn delete_queues(connection: &Connection, queues: &[&str]) {
    let channel = connection.open_channel(None).await.expect("open channel");
    for queue in queues {
        for name in [queue.to_string(), format!("{queue}.dead")] {
            let _ = channel.queue_delete(QueueDeleteArguments::new(&name)).await;
        }
    }
    let _ = channel.close().await;
}
