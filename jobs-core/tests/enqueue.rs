//! Durable, confirmed enqueue against the live broker: what lands in the queue,
//! and every way the broker can say no.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use jobs_core::plumbing::{connect, job_properties, Outgoing, Publisher};
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Error, Job, JobContext, JobError, JobId, Perform};
use jobs_test::amqprs::channel::QueueDeclareArguments;
use jobs_test::amqprs::{FieldTable, FieldValue};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Job)]
#[job(queue = "emails", name = "EmailJob")]
struct Email {
    to: String,
    subject: String,
}

impl Perform for Email {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn email(n: usize) -> Email {
    Email { to: format!("user{n}@example.com"), subject: "hi".into() }
}

#[tokio::test]
async fn an_enqueued_job_is_a_persistent_typed_message_in_a_durable_queue() {
    let queue = unique("enqueue");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::connect(amqp_config()).await.unwrap();
    let id = client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap();

    let channel = raw.open_channel(None).await.unwrap();
    // Declaring it durable again succeeds only if it is durable.
    channel.queue_declare(QueueDeclareArguments::durable_client_named(&queue)).await.expect("queue is durable");
    let (props, body) = get(&channel, &queue).await.expect("the job is in its queue");
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
    assert_eq!(props.message_type().map(String::as_str), Some("EmailJob"));
    assert_eq!(props.delivery_mode(), Some(2), "persistent");
    assert!(props.timestamp().unwrap() > 1_700_000_000);
    // A first attempt goes without `x-attempt` (missing means 1) and without a
    // content type (msgpack is the only format): smaller messages, faster broker.
    assert_eq!((props.headers(), props.content_type()), (None, None));
    assert_eq!(jobs_core::plumbing::decode::<Email>(&body).unwrap(), email(1));
    let named: serde_json::Value = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(named["to"], "user1@example.com", "fields are encoded by name");
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await, (0, 0), "the dead-letter queue is declared too");
}

#[tokio::test]
async fn concurrent_enqueues_on_one_client_are_all_confirmed_and_stored() {
    let queue = unique("concurrent");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let mut tasks = Vec::new();
    for n in 0..500 {
        let (client, queue) = (client.clone(), queue.clone());
        tasks.push(tokio::spawn(
            async move { client.enqueue_with(&email(n), EnqueueOptions::new().queue(queue)).await },
        ));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 500);
    assert_eq!(counts(&raw, &queue).await.0, 500);
}

#[tokio::test]
async fn enqueue_many_stores_every_job_and_returns_their_ids_in_order() {
    let raw = raw_connection().await;
    let queue = unique("many");
    let _cleanup = Cleanup::queues(&[&queue]);
    let channel = raw.open_channel(None).await.unwrap();
    let client = Client::new(amqp_config());
    let jobs: Vec<Email> = (0..300).map(email).collect();
    let ids = client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(&queue)).await.unwrap();
    assert_eq!(ids.len(), 300);
    assert_eq!(counts(&raw, &queue).await.0, 300);
    for (n, id) in ids.iter().enumerate().take(5) {
        let (props, body) = get(&channel, &queue).await.unwrap();
        assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
        assert_eq!(jobs_core::plumbing::decode::<Email>(&body).unwrap(), email(n), "order kept");
    }
}

fn message(id: &str, exchange: &str, routing_key: &str) -> Outgoing {
    let id = JobId::from(id);
    Outgoing {
        properties: job_properties("EmailJob", &id, 1),
        body: jobs_core::plumbing::encode(&email(0)).unwrap(),
        id,
        exchange: exchange.into(),
        routing_key: routing_key.into(),
    }
}

#[tokio::test]
async fn a_message_no_queue_takes_is_unroutable_not_silently_dropped() {
    let connection = connect(&amqp_config(), "test-unroutable").await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    let err = publisher.publish(message("lost-1", "", &unique("nowhere"))).await.unwrap_err();
    assert!(matches!(&err, Error::Unroutable { id, .. } if id.as_str() == "lost-1"), "{err:?}");
    // The channel stays usable: a routable message right after is confirmed.
    let queue = unique("after-unroutable");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    raw.open_channel(None)
        .await
        .unwrap()
        .queue_declare(QueueDeclareArguments::durable_client_named(&queue))
        .await
        .unwrap();
    publisher.publish(message("found-1", "", &queue)).await.unwrap();
}

#[tokio::test]
async fn a_message_the_broker_refuses_is_a_nack_error() {
    let queue = unique("full");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut args = FieldTable::new();
    jobs_core::plumbing::set_header(&mut args, "x-max-length", FieldValue::l(0));
    jobs_core::plumbing::set_header(&mut args, "x-overflow", FieldValue::from("reject-publish"));
    let mut declare = QueueDeclareArguments::durable_client_named(&queue);
    declare.arguments(args);
    raw.open_channel(None).await.unwrap().queue_declare(declare).await.unwrap();

    let connection = connect(&amqp_config(), "test-nack").await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    let err = publisher.publish(message("refused-1", "", &queue)).await.unwrap_err();
    assert!(matches!(&err, Error::Nacked { id } if id.as_str() == "refused-1"), "{err:?}");
}

#[tokio::test]
async fn a_channel_closed_by_the_broker_fails_the_pending_publish_and_the_next() {
    let connection = connect(&amqp_config(), "test-closed").await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    // Publishing to a missing exchange makes the broker close the channel
    // (404): that message is refused for good, naming the exchange.
    let err = publisher.publish(message("gone-1", "no-such-exchange-for-jobs-tests", "x")).await.unwrap_err();
    match &err {
        Error::MessageRefused { id, detail } => {
            assert_eq!(id.as_str(), "gone-1");
            assert!(detail.contains("NOT_FOUND") && detail.contains("no-such-exchange-for-jobs-tests"), "{detail}");
        }
        other => panic!("expected MessageRefused, got {other:?}"),
    }
    let err = publisher.publish(message("gone-2", "", "x")).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");
    assert!(!publisher.is_open());
}

#[tokio::test]
async fn a_closed_connection_is_an_error_and_the_client_reconnects_on_next_use() {
    let queue = unique("reconnect");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap();

    let connection = connect(&amqp_config(), "test-closed-conn").await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    connection.clone().close().await.unwrap();
    let err = publisher.publish(message("after-close", "", &queue)).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. }), "{err:?}");

    client.close().await;
    client.enqueue_with(&email(2), EnqueueOptions::new().queue(&queue)).await.expect("a new connection on next use");
    assert_eq!(counts(&raw, &queue).await.0, 2);
}

/// A half-open connection (the network drops everything, nothing closes): the
/// publish gets no confirm, the heartbeat notices, and the client publishes it
/// again on a new connection, where it is confirmed.
#[tokio::test]
async fn an_enqueue_on_a_silent_connection_is_confirmed_on_a_new_one() {
    let relay = Relay::start().await;
    let queue = unique("half-open");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = config_for(&relay.url);
    config.heartbeat = 1;
    let client = Client::new(config);
    client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap();

    relay.cut();
    let job = email(2);
    let enqueue = client.enqueue_with(&job, EnqueueOptions::new().queue(&queue));
    let id = tokio::time::timeout(Duration::from_secs(30), enqueue)
        .await
        .expect("the enqueue did not return within 30 s of a silent connection")
        .expect("confirmed on a new connection");
    let channel = raw.open_channel(None).await.unwrap();
    let first = get(&channel, &queue).await.expect("the job before the cut");
    let second = get(&channel, &queue).await.expect("the job enqueued into the silence");
    assert_eq!(second.0.message_id().map(String::as_str), Some(id.as_str()));
    assert_eq!(jobs_core::plumbing::decode::<Email>(&first.1).unwrap(), email(1));
    assert!(get(&channel, &queue).await.is_none(), "the lost publish never reached the broker: no duplicate");
}

#[tokio::test]
async fn closing_a_client_whose_broker_went_silent_does_not_hang() {
    let relay = Relay::start().await;
    let queue = unique("silent-close");
    let _cleanup = Cleanup::queues(&[&queue]);
    let client = Client::new(config_for(&relay.url)); // heartbeat 30 s: it will not notice first
    client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap();
    relay.cut();
    let closed = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
    assert!(closed.is_ok(), "the close waited past 20 s for a close-ok that never comes");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_connect_error_after_the_reconnect_timeout_that_hides_the_password() {
    let mut config = AmqpConfig::with_url("amqp://guest:hunter2@127.0.0.1:1/%2f").unwrap();
    config.reconnect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let err = Client::new(config).enqueue(&email(1)).await.unwrap_err();
    let waited = started.elapsed();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1") && !text.contains("hunter2"), "{text}");
    // It tries until amqp.reconnect_timeout (2 s), then gives up; 2 s of room.
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(4), "gave up after {waited:?}");
}

/// The broker takes the message and says nothing (here a link that went
/// silent, with no heartbeat to notice it): `ConfirmTimeout` after
/// `amqp.confirm_timeout`, not a wait without end.
#[tokio::test]
async fn a_confirm_that_does_not_come_is_a_confirm_timeout() {
    let relay = Relay::start().await;
    let queue = unique("confirm-timeout");
    let _cleanup = Cleanup::queues(&[&queue]);
    let mut config = config_for(&relay.url);
    config.heartbeat = 0;
    config.confirm_timeout = Duration::from_secs(1);
    let client = Client::new(config);
    client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap(); // connected, declared
    relay.cut();
    let started = std::time::Instant::now();
    let err = client.enqueue_with(&email(2), EnqueueOptions::new().queue(&queue)).await.unwrap_err();
    assert!(matches!(err, Error::ConfirmTimeout { after, .. } if after == Duration::from_secs(1)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dead_first_url_falls_over_to_the_next() {
    let queue = unique("fallback");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = AmqpConfig::with_url("amqp://guest:guest@127.0.0.1:1/%2f").unwrap();
    config.fallback_urls = vec![jobs_core::BrokerUrl::parse(&amqp_url()).unwrap()];
    let client = Client::connect(config).await.expect("the second URL answers");
    client.enqueue_with(&email(1), EnqueueOptions::new().queue(&queue)).await.unwrap();
    assert_eq!(counts(&raw, &queue).await.0, 1);
}

/// The connection goes silent half-way through a batch: the jobs whose
/// confirm did not come are published again on a new connection. Every job
/// is stored at least once.
#[tokio::test]
async fn a_batch_cut_in_the_middle_is_confirmed_whole_on_a_new_connection() {
    let relay = Relay::start().await;
    let queue = unique("batch-cut");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = config_for(&relay.url);
    config.heartbeat = 1;
    let client = Client::new(config);
    client.enqueue_with(&email(0), EnqueueOptions::new().queue(&queue)).await.unwrap(); // connected, declared
    let jobs: Vec<Email> = (1..=2000).map(email).collect();
    assert_eq!((relay.cuts(), relay.connections()), (0, 1));
    relay.cut_after(40_000); // a few hundred publishes in
    let batch = client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(&queue));
    let ids = tokio::time::timeout(Duration::from_secs(60), batch)
        .await
        .expect("the batch did not end within 60 s")
        .expect("every job confirmed");
    assert_eq!(ids.len(), 2000);
    // The cut did happen, in the batch (2,000 publishes are far more than
    // 40,000 bytes), and the rest went on a new connection.
    assert_eq!(relay.cuts(), 1, "the relay cut the connection mid-batch");
    assert_eq!(relay.connections(), 2, "the client published the rest on a new connection");
    let stored = stored_ids(&raw, &queue).await;
    let missing: Vec<_> = ids.iter().filter(|id| !stored.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} jobs confirmed but not stored: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The same for a job routed through an exchange: published again, stored.
#[tokio::test]
async fn a_routed_enqueue_into_a_silent_connection_is_confirmed_on_a_new_one() {
    #[derive(Debug, Clone, Serialize, Deserialize, Job)]
    #[job(exchange = "test.cut.direct", exchange_type = "direct")]
    struct Alert {
        text: String,
    }
    impl Perform for Alert {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }

    let relay = Relay::start().await;
    let raw = raw_connection().await;
    let channel = raw.open_channel(None).await.unwrap();
    let declare =
        jobs_test::amqprs::channel::ExchangeDeclareArguments::new("test.cut.direct", "direct").durable(true).finish();
    channel.exchange_declare(declare).await.unwrap();
    let queue = unique("routed-cut");
    let _cleanup = Cleanup::queues(&[&queue]).exchanges(&["test.cut.direct"]);
    channel.queue_declare(QueueDeclareArguments::durable_client_named(&queue)).await.unwrap();
    let bind = jobs_test::amqprs::channel::QueueBindArguments::new(&queue, "test.cut.direct", "page");
    channel.queue_bind(bind).await.unwrap();
    let mut config = config_for(&relay.url);
    config.heartbeat = 1;
    let client = Client::new(config);
    let page = || EnqueueOptions::new().routing_key("page");
    client.enqueue_with(&Alert { text: "before".into() }, page()).await.unwrap();
    relay.cut();
    let alert = Alert { text: "into the silence".into() };
    let sent = client.enqueue_with(&alert, page());
    let id = tokio::time::timeout(Duration::from_secs(30), sent).await.expect("returned").expect("confirmed");
    let stored = stored_ids(&raw, &queue).await;
    assert!(stored.contains(id.as_str()), "routed job stored after the cut");
    assert_eq!(stored.len(), 2, "before and after: {stored:?}");
}

/// The ids of the messages in `queue` (taken off it).
async fn stored_ids(raw: &jobs_test::amqprs::connection::Connection, queue: &str) -> HashSet<String> {
    let channel = raw.open_channel(None).await.unwrap();
    let mut ids = HashSet::new();
    while let Some((props, _)) = get(&channel, queue).await {
        ids.insert(props.message_id().cloned().unwrap_or_default());
    }
    ids
}
