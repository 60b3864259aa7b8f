//! `worker enqueue` goes the client's one path: on a vhost where nothing was
//! declared, a queue type, a delayed one, and a fanout, a direct and a topic
//! type each reach their consumer; what the command declares is what the
//! client declares (the exchange of a routed type too).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use examples::tutorials::{DirectLog, TopicLog};
use examples::Task;
use jobs_core::Job;
use jobs_test::amqprs::channel::{
    BasicConsumeArguments, Channel, ConsumerMessage, ExchangeDeclareArguments, QueueBindArguments,
    QueueDeclareArguments,
};
use jobs_test::amqprs::connection::Connection;
use jobs_test::*;
use tokio::sync::mpsc::UnboundedReceiver;

/// Runs `worker <args>` against `url`: exit code, stdout, stderr.
fn worker(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_worker")).args(args).env("JOBS__AMQP__URL", url).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A consumer of a queue of the test's own bound to `exchange` with `key`,
/// on a channel of its own (kept open by the returned handle).
async fn bound(raw: &Connection, exchange: &str, key: &str) -> (Channel, UnboundedReceiver<ConsumerMessage>) {
    let channel = raw.open_channel(None).await.unwrap();
    let watch = jobs_core::plumbing::ChannelWatch::on(&channel).await.unwrap();
    let declared = channel.queue_declare(QueueDeclareArguments::exclusive_server_named()).await;
    let (queue, _, _) = declared.unwrap_or_else(|e| panic!("{e}: {:?}", watch.closure())).unwrap();
    let bind = channel.queue_bind(QueueBindArguments::new(&queue, exchange, key)).await;
    bind.unwrap_or_else(|e| panic!("bind {queue} to {exchange}: {e}: {:?}", watch.closure()));
    let (_, rx) = channel.basic_consume_rx(BasicConsumeArguments::new(&queue, "").finish()).await.unwrap();
    (channel, rx)
}

/// The next message of `rx` within 10 s: its type and body decoded as JSON.
async fn next(rx: &mut UnboundedReceiver<ConsumerMessage>, what: &str) -> (String, serde_json::Value) {
    let message = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing came within 10 s"))
        .unwrap();
    let props = message.basic_properties.unwrap();
    let body: serde_json::Value = rmp_serde::from_slice(&message.content.unwrap()).unwrap();
    (props.message_type().cloned().unwrap_or_default(), body)
}

#[tokio::test]
async fn every_route_kind_reaches_its_consumer_on_a_fresh_vhost() {
    let vhost = TestVhost::create("enqueue-cmd").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;

    // A queue type: the command declares the queue, a consumer started after it gets the job.
    let (code, out, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"message":"now"}"#]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim().len(), 24, "the job id: {out}");
    let channel = raw.open_channel(None).await.unwrap();
    let args = BasicConsumeArguments::new(Task::QUEUE, "").finish();
    let (_, mut tasks) = channel.basic_consume_rx(args).await.unwrap();
    assert_eq!(next(&mut tasks, "the queued task").await, ("Task".into(), serde_json::json!({ "message": "now" })));

    // Delayed: through the cascade the command declared, no earlier than asked.
    let sent = Instant::now();
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"message":"later"}"#, "--delay", "2s"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, body) = next(&mut tasks, "the delayed task").await;
    assert_eq!(body["message"], "later");
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_secs(2), "ran after {waited:?}, before its delay");

    // Routed types: the command declares their exchange (before, it did not, and
    // failed with NOT_FOUND on a fresh vhost); with no queue bound, no one takes it.
    let (code, _, err) = worker(&url, &["enqueue", "Log", "--json", r#"{"message":"to no one"}"#]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unroutable") && err.contains("`logs`"), "{err}");
    let check = raw.open_channel(None).await.unwrap();
    let exists = ExchangeDeclareArguments::new("logs", "fanout").passive(true).finish();
    check.exchange_declare(exists).await.expect("the command declared the exchange `logs`");

    let (_logs, mut logs) = bound(&raw, "logs", "").await;
    let (code, _, err) = worker(&url, &["enqueue", "Log", "--json", r#"{"message":"to all"}"#]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(next(&mut logs, "the broadcast").await, ("Log".into(), serde_json::json!({ "message": "to all" })));

    let (code, _, err) = worker(
        &url,
        &["enqueue", "DirectLog", "--json", r#"{"severity":"error","message":"e"}"#, "--routing-key", "error"],
    );
    assert_eq!(code, Some(1), "nothing bound yet: {err}");
    let (_errors, mut errors) = bound(&raw, "direct_logs", "error").await;
    let (code, _, err) = worker(
        &url,
        &["enqueue", "DirectLog", "--json", r#"{"severity":"error","message":"e"}"#, "--routing-key", "error"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (kind, body) = next(&mut errors, "the direct job").await;
    assert_eq!((kind.as_str(), body["severity"].as_str()), (DirectLog::NAME, Some("error")));

    let topic =
        ["enqueue", "TopicLog", "--json", r#"{"key":"kern.critical","message":"t"}"#, "--routing-key", "kern.critical"];
    let (code, _, err) = worker(&url, &topic);
    assert_eq!(code, Some(1), "nothing bound yet: {err}");
    let (_critical, mut critical) = bound(&raw, "topic_logs", "*.critical").await;
    let (code, _, err) = worker(&url, &topic);
    assert_eq!(code, Some(0), "{err}");
    let (kind, body) = next(&mut critical, "the topic job").await;
    assert_eq!((kind.as_str(), body["key"].as_str()), (TopicLog::NAME, Some("kern.critical")));

    // Options that do not fit the route are bad input (exit 2), as a bad type is.
    let (code, _, err) = worker(&url, &["enqueue", "Log", "--json", r#"{"message":"x"}"#, "--delay", "5s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("delays are for jobs that go to a queue"), "{err}");
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"message":"x"}"#, "--routing-key", "k"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"message":"x"}"#, "--delay", "soon"]);
    assert_eq!(code, Some(2), "a bad duration is a usage error: {err}");
    assert!(err.contains("--delay"), "{err}");
}
