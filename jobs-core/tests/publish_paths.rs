//! Every way of enqueueing goes one path: a matrix of path (one job, a batch,
//! the shortcuts on the job type, a call) × route (queue, queue + delay,
//! fanout, direct, topic), each run against the broker and against the
//! testing mode's recorder. Both must give the same answer: the same place
//! (queue or exchange, routing key, delay) or the same refusal.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform, Respond, TestClient};
use jobs_test::amqprs::channel::{
    BasicGetArguments, Channel, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
};
use jobs_test::*;
use serde::{Deserialize, Serialize};

const QUEUE: &str = "test.paths.queue";

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "test.paths.queue")]
struct ToQueue {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(exchange = "test.paths.fanout")]
struct Fanout {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(exchange = "test.paths.direct", exchange_type = "direct")]
struct Direct {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(exchange = "test.paths.topic", exchange_type = "topic")]
struct Topic {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "test.paths.rpc", rpc)]
struct Double {
    n: u32,
}

macro_rules! noop_perform {
    ($($t:ty),*) => {$(
        impl Perform for $t {
            async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
                Ok(())
            }
        }
    )*};
}
noop_perform!(ToQueue, Fanout, Direct, Topic);

impl Respond for Double {
    type Output = u32;
    async fn respond(self, _ctx: JobContext) -> Result<u32, JobError> {
        Ok(self.n * 2)
    }
}

/// Where a job ended up, or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Stored: its queue (or exchange), routing key (exchange routes), delay.
    Placed { target: String, routing_key: Option<String>, delay: Option<Duration>, count: usize },
    /// Refused with this error variant.
    Refused(&'static str),
}

fn refused(err: &Error) -> Answer {
    Answer::Refused(match err {
        // A batch that sent its jobs and heard the refusal: every job of it refused alike.
        Error::BatchIncomplete(stopped) if stopped.confirmed() == 0 => return refused(&stopped.error),
        Error::Unsupported(_) => "Unsupported",
        Error::Unroutable { .. } => "Unroutable",
        Error::InvalidName { .. } => "InvalidName",
        other => panic!("unexpected error {other:?}"),
    })
}

#[derive(Debug, Clone, Copy)]
enum Path {
    /// `client.enqueue_with(&job, options)`.
    One,
    /// `client.enqueue_many_with(&[job, job], options)`.
    Many,
    /// `job.enqueue()`, `enqueue_in`, `enqueue_routed` inside `Client::scope`.
    Shortcut,
}

/// How each path sends a job of type `J` with `options`; the number of jobs sent.
async fn send<J: Job + Clone>(client: &Client, path: Path, job: J, options: EnqueueOptions) -> Result<usize, Error> {
    match path {
        Path::One => client.enqueue_with(&job, options).await.map(|_| 1),
        Path::Many => client.enqueue_many_with(&[job.clone(), job], options).await.map(|ids| ids.len()),
        Path::Shortcut => {
            let sent = async {
                match (&options.routing_key, options.delay) {
                    (Some(key), None) => job.enqueue_routed(key).await,
                    (None, Some(delay)) => job.enqueue_in(delay).await,
                    (None, None) => job.enqueue().await,
                    _ => panic!("no shortcut takes a key and a delay"),
                }
            };
            client.clone().scope(sent).await.map(|_| 1)
        }
    }
}

/// The recorder's answer for what `send` recorded.
fn recorded(test: &TestClient, sent: Result<usize, Error>) -> Answer {
    match sent {
        Err(err) => refused(&err),
        Ok(count) => {
            let jobs = test.enqueued();
            test.clear();
            assert_eq!(jobs.len(), count);
            Answer::Placed {
                target: jobs[0].queue.clone(),
                routing_key: jobs[0].routing_key.clone(),
                delay: jobs[0].delay,
                count,
            }
        }
    }
}

/// The job number of a sentinel, sent after each case's jobs the same way.
const SENTINEL: u32 = 999;

/// The broker's answer: find the messages where they landed. `watch` is the
/// queue bound to an exchange route (with the case's key), or the job queue.
/// Read until the sentinel sent after them the same way: exactly `count`
/// came before it, so no extra copy was stored.
async fn delivered(channel: &Channel, sent: Result<usize, Error>, watch: &str, routed: bool) -> Answer {
    let count = match sent {
        Err(err) => return refused(&err),
        Ok(count) => count,
    };
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} of {count} jobs, and no sentinel, in {watch}",
            got.len()
        );
        let args = BasicGetArguments::new(watch).no_ack(true).finish();
        match channel.basic_get(args).await.unwrap() {
            Some((get_ok, _, body)) => {
                let job: serde_json::Value = rmp_serde::from_slice(&body).unwrap();
                if job["n"] == SENTINEL {
                    break;
                }
                got.push((get_ok.exchange().to_owned(), get_ok.routing_key().to_owned()));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(got.len(), count, "{watch}: exactly the jobs sent came before the sentinel, no extra copy");
    let (exchange, key) = got[0].clone();
    if routed {
        return Answer::Placed { target: exchange, routing_key: Some(key), delay: None, count };
    }
    // Through the delay cascade the key is the delay's 28 bits, then the queue.
    let delay = exchange.starts_with("jobs.delay.").then(|| {
        let bits: String = key.split('.').take(28).collect();
        Duration::from_secs(u64::from_str_radix(&bits, 2).unwrap())
    });
    Answer::Placed { target: watch.to_owned(), routing_key: None, delay, count }
}

/// A queue of the test's own, bound to `exchange` with `key`.
async fn watch(channel: &Channel, exchange: &str, kind: &str, key: &str) -> String {
    let declare = ExchangeDeclareArguments::new(exchange, kind).durable(true).finish();
    channel.exchange_declare(declare).await.unwrap();
    let (queue, _, _) = channel.queue_declare(QueueDeclareArguments::exclusive_server_named()).await.unwrap().unwrap();
    channel.queue_bind(QueueBindArguments::new(&queue, exchange, key)).await.unwrap();
    queue
}

fn placed(target: &str, routing_key: Option<&str>, delay: Option<u64>, count: usize) -> Answer {
    Answer::Placed {
        target: target.into(),
        routing_key: routing_key.map(Into::into),
        delay: delay.map(Duration::from_secs),
        count,
    }
}

#[tokio::test]
async fn every_path_and_route_gives_the_same_answer_on_the_broker_and_in_the_testing_mode() {
    // Fixed names (the job types' own): on a vhost of its own, gone with it.
    let vhost = TestVhost::create("paths").await;
    let raw = raw_connection_to(&vhost.url()).await;
    let channel = raw.open_channel(None).await.unwrap();
    let fanout = watch(&channel, "test.paths.fanout", "fanout", "").await;
    let direct = watch(&channel, "test.paths.direct", "direct", "warning").await;
    let topic = watch(&channel, "test.paths.topic", "topic", "kern.*").await;
    let client = Client::new(config_for(&vhost.url()));
    let test = TestClient::new();
    let secs = Duration::from_secs;
    let mut rows = 0;
    for path in [Path::One, Path::Many, Path::Shortcut] {
        let n = if matches!(path, Path::Many) { 2 } else { 1 };
        macro_rules! case {
            ($what:expr, $job:ident $n:expr, $options:expr, $watch:expr, $routed:expr, $expected:expr) => {{
                let sent = send(&client, path, $job { n: $n }, $options.clone()).await;
                if sent.is_ok() {
                    // After the case's jobs, the same way: the last to come.
                    client.enqueue_with(&$job { n: SENTINEL }, $options.clone()).await.unwrap();
                }
                let broker = delivered(&channel, sent, $watch, $routed).await;
                let recorder = recorded(&test, send(&test.client(), path, $job { n: $n }, $options).await);
                assert_eq!(broker, $expected, "{path:?} × {}: the broker", $what);
                assert_eq!(recorder, $expected, "{path:?} × {}: the testing mode", $what);
                rows += 1;
            }};
        }
        let plain = EnqueueOptions::new;
        case!("queue", ToQueue 1, plain(), QUEUE, false, placed(QUEUE, None, None, n));
        case!("queue + delay", ToQueue 2, plain().delay(secs(1)), QUEUE, false, placed(QUEUE, None, Some(1), n));
        case!("fanout", Fanout 3, plain(), &fanout, true, placed("test.paths.fanout", Some(""), None, n));
        let key = plain().routing_key("warning");
        case!("direct", Direct 4, key, &direct, true, placed("test.paths.direct", Some("warning"), None, n));
        let key = plain().routing_key("kern.critical");
        case!("topic", Topic 5, key, &topic, true, placed("test.paths.topic", Some("kern.critical"), None, n));
        // Options that do not fit the route are refused alike everywhere.
        let refusal = Answer::Refused("Unsupported");
        case!("fanout + delay", Fanout 6, plain().delay(secs(5)), &fanout, true, refusal.clone());
        case!("queue + routing key", ToQueue 7, plain().routing_key("k"), QUEUE, false, refusal.clone());
    }
    // Options the shortcuts cannot express.
    for path in [Path::One, Path::Many] {
        let on_queue = EnqueueOptions::new().queue("test.paths.other");
        let broker = send(&client, path, Direct { n: 8 }, on_queue.clone()).await;
        let recorder = send(&test.client(), path, Direct { n: 8 }, on_queue).await;
        assert_eq!(refused(&broker.unwrap_err()), Answer::Refused("Unsupported"), "{path:?}: queue for a routed job");
        assert_eq!(refused(&recorder.unwrap_err()), Answer::Refused("Unsupported"));
        let bad = EnqueueOptions::new().queue("amq.nope");
        assert_eq!(
            refused(&send(&client, path, ToQueue { n: 9 }, bad.clone()).await.unwrap_err()),
            Answer::Refused("InvalidName")
        );
        assert_eq!(
            refused(&send(&test.client(), path, ToQueue { n: 9 }, bad).await.unwrap_err()),
            Answer::Refused("InvalidName")
        );
    }
    let with_id = EnqueueOptions::new().id("one-id".into());
    let batch = [ToQueue { n: 10 }, ToQueue { n: 11 }];
    assert!(matches!(client.enqueue_many_with(&batch, with_id.clone()).await, Err(Error::Unsupported(_))));
    assert!(matches!(test.client().enqueue_many_with(&batch, with_id).await, Err(Error::Unsupported(_))));
    // No queue bound for a key: unroutable on the broker; the recorder knows no
    // bindings and records it (its documented answer).
    let nobody = client.enqueue_with(&Direct { n: 12 }, EnqueueOptions::new().routing_key("nobody")).await;
    assert_eq!(refused(&nobody.unwrap_err()), Answer::Refused("Unroutable"));
    let recorded_anyway =
        test.client().enqueue_with(&Direct { n: 12 }, EnqueueOptions::new().routing_key("nobody")).await;
    assert!(recorded_anyway.is_ok(), "the test client records what the broker would return");
    assert_eq!(rows, 21);
}

#[tokio::test]
async fn a_call_goes_the_same_path_on_the_broker_and_in_the_testing_mode() {
    let vhost = TestVhost::create("paths-rpc").await;
    let raw = raw_connection_to(&vhost.url()).await;
    let worker = spawn_worker(&vhost.url(), &["test.paths.rpc"], 1, "paths-rpc", Duration::from_secs(5));
    wait_for_consumers(&raw, "test.paths.rpc", 1).await;
    let client = Client::new(config_for(&vhost.url()));
    assert_eq!(client.call(&Double { n: 21 }).await.unwrap(), 42);
    let test = TestClient::new();
    assert_eq!(test.client().call(&Double { n: 21 }).await.unwrap(), 42);
    let scoped = client.clone().scope(async { Double { n: 4 }.call().await }).await.unwrap();
    assert_eq!(scoped, 8, "the shortcut on the scoped client");
    worker.stop().await.unwrap();
}
