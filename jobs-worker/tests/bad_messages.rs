//! Messages the worker cannot run, published with a raw AMQP client, go to
//! `<queue>.dead` with the reason, once each; good jobs after them run. (A job
//! type the worker does not know is retried instead: `examples/tests/rolling_deploy.rs`.)
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::plumbing::{header_str, headers};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::amqprs::channel::BasicPublishArguments;
use jobs_test::amqprs::BasicProperties;
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Greet {
    name: String,
    times: u32,
}

static GREETED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Greet {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        GREETED.lock().unwrap().push(self.name);
        Ok(())
    }
}

fn props(id: &str, kind: Option<&str>, content_type: Option<&str>) -> BasicProperties {
    let mut p = BasicProperties::default();
    p.with_message_id(id).with_persistence(true);
    if let Some(kind) = kind {
        p.with_message_type(kind);
    }
    if let Some(ct) = content_type {
        p.with_content_type(ct);
    }
    p.finish()
}

#[tokio::test]
async fn undecodable_unknown_and_malformed_messages_are_dead_lettered_with_the_reason() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("bad", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");

    let msgpack = Some("application/msgpack");
    let wrong_fields = rmp_serde::to_vec_named(&serde_json::json!({"name": 7})).unwrap();
    let good_body = rmp_serde::to_vec_named(&Greet { name: "x".into(), times: 1 }).unwrap();
    let cases: Vec<(&str, BasicProperties, Vec<u8>, &str, &str)> = vec![
        (
            "garbage",
            props("garbage", Some("Greet"), msgpack),
            b"\xc1\xc1 not msgpack".to_vec(),
            "undecodable",
            "does not decode as `Greet`",
        ),
        ("fields", props("fields", Some("Greet"), msgpack), wrong_fields, "undecodable", "does not decode as `Greet`"),
        ("untyped", props("untyped", None, msgpack), good_body.clone(), "bad_message", "no `type` property"),
        (
            "json",
            props("json", Some("Greet"), Some("application/json")),
            br#"{"name":"x","times":1}"#.to_vec(),
            "bad_message",
            "content type `application/json`",
        ),
        ("no-id", props("", Some("Greet"), msgpack), good_body.clone(), "bad_message", "no `message_id`"),
    ];
    let channel = raw.open_channel(None).await.unwrap();
    for (_, p, body, _, _) in &cases {
        let mut p = p.clone();
        if p.message_id().map(String::as_str) == Some("") {
            p = props_without_id();
        }
        channel.basic_publish(p, body.clone(), BasicPublishArguments::new("", &queue)).await.unwrap();
    }
    client
        .enqueue_with(&Greet { name: "after-bad".into(), times: 1 }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();

    wait_until("the good job after the bad ones", Duration::from_secs(20), || async {
        GREETED.lock().unwrap().contains(&"after-bad".to_string())
    })
    .await;
    wait_until("every bad message in dead", Duration::from_secs(10), || async {
        counts(&raw, &dead).await.0 == cases.len() as u32
    })
    .await;
    let mut got = Vec::new();
    while let Some((props, _)) = get(&channel, &dead).await {
        got.push((
            props.message_id().cloned(),
            header_str(&props, headers::ERROR_KIND).unwrap().to_owned(),
            header_str(&props, headers::ERROR).unwrap().to_owned(),
        ));
    }
    assert_eq!(got.len(), cases.len(), "each bad message dead-lettered exactly once: {got:?}");
    for (id, _, _, kind, reason) in &cases {
        let found = got.iter().find(|g| match g.0.as_deref() {
            Some(got_id) => got_id == *id || (*id == "no-id" && g.1 == "bad_message" && g.2.contains("message_id")),
            None => *id == "no-id",
        });
        let found = found.unwrap_or_else(|| panic!("{id} not in dead: {got:?}"));
        assert_eq!(found.1, *kind, "{id}");
        assert!(found.2.contains(reason), "{id}: {:?} does not contain {reason:?}", found.2);
    }
    assert!(!running.is_finished(), "the worker still runs");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}

fn props_without_id() -> BasicProperties {
    let mut p = BasicProperties::default();
    p.with_message_type("Greet").with_content_type("application/msgpack").with_persistence(true);
    p.finish()
}

/// A producer's properties that would undo a dead job do not reach its dead
/// copy: an `expiration` (the dead job would vanish), a planted `x-exchange`
/// (a retry would go to that exchange, not the job's queue), the broker's
/// `x-death` history. The copy keeps the job's id and type, and a retry
/// sends it back to its own queue.
#[tokio::test]
async fn a_producers_properties_that_would_undo_a_dead_job_stay_off_its_copy() {
    use jobs_test::amqprs::{FieldTable, FieldValue};
    let Fixture { queue, raw, client: _, worker: running, cleanup: _cleanup } =
        Fixture::start("planted", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");
    let mut headers_in = FieldTable::new();
    let text = |s: &str| FieldValue::S(s.to_owned().try_into().unwrap());
    headers_in.insert("x-exchange".try_into().unwrap(), text("amq.fanout"));
    headers_in.insert("x-routing-key".try_into().unwrap(), text("anything"));
    headers_in.insert("x-death".try_into().unwrap(), text("planted"));
    let mut p = props("planted-1", Some("Greet"), Some("application/msgpack"));
    p.with_expiration("60000").with_headers(headers_in);
    let channel = raw.open_channel(None).await.unwrap();
    channel.basic_publish(p, b"\xc1 garbage".to_vec(), BasicPublishArguments::new("", &queue)).await.unwrap();
    wait_until("the bad job in dead", Duration::from_secs(20), || async { counts(&raw, &dead).await.0 == 1 }).await;

    let dead_letters = jobs_core::DeadLetters::connect(&amqp_config()).await.unwrap();
    let listed = dead_letters.list(&queue, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].exchange.as_deref(), listed[0].queue.as_deref()), (None, Some(queue.as_str())), "{listed:?}");
    let (copy, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(copy.expiration(), None, "no expiry on a dead job");
    assert_eq!(copy.message_id().map(String::as_str), Some("planted-1"));
    assert_eq!(copy.message_type().map(String::as_str), Some("Greet"));
    for planted in ["x-exchange", "x-routing-key", "x-death"] {
        assert_eq!(header_str(&copy, planted), None, "{planted} dropped");
    }
    assert_eq!(header_str(&copy, headers::ERROR_KIND), Some("undecodable"));
    // Back in dead (the get took it): retried to its own queue, where it fails again.
    channel.basic_publish(copy, b"\xc1 garbage".to_vec(), BasicPublishArguments::new("", &dead)).await.unwrap();
    wait_until("the copy back in dead", Duration::from_secs(20), || async { counts(&raw, &dead).await.0 == 1 }).await;
    let done = dead_letters.retry(&queue, &jobs_core::DeadFilter::all()).await.unwrap();
    assert_eq!((done.acted, done.failed), (1, 0), "{done:?}");
    // The retry acked the one it read: what comes to dead now is the new copy.
    let again = Mutex::new(None);
    wait_until("the retried job through its queue and dead again", Duration::from_secs(20), || async {
        let got = get(&channel, &dead).await;
        let came = got.is_some();
        *again.lock().unwrap() = got;
        came
    })
    .await;
    let (again, _) = again.into_inner().unwrap().unwrap();
    assert_eq!(again.message_id().map(String::as_str), Some("planted-1"), "it went through its queue");
    assert_eq!(jobs_core::plumbing::header_u64(&again, headers::ATTEMPT), Some(1));
    dead_letters.close().await;
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}
