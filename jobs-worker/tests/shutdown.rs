//! Graceful stop: a running job finishes and is acked; one that outlasts the
//! grace period is left unacked and goes back to the queue; a broker that no
//! longer answers does not hold a stop up.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/worker.rs"]
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use worker::Fixture;

#[derive(Debug, Serialize, Deserialize, Job)]
struct Slow {
    tag: String,
    millis: u64,
}

static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Slow {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        EVENTS.lock().unwrap().push(format!("{}:start", self.tag));
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        EVENTS.lock().unwrap().push(format!("{}:end", self.tag));
        Ok(())
    }
}

fn has(event: &str) -> bool {
    EVENTS.lock().unwrap().iter().any(|e| e == event)
}

#[tokio::test]
async fn a_stop_lets_the_running_job_finish_and_ack() {
    let Fixture { queue, raw, client, worker: running } = Fixture::start("stop", Duration::from_secs(20)).await;
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Slow { tag: "graceful".into(), millis: 1500 }, on()).await.unwrap();
    client.enqueue_with(&Slow { tag: "waiting".into(), millis: 10 }, on()).await.unwrap();
    wait_until("the job to start", Duration::from_secs(10), || async { has("graceful:start") }).await;

    running.stop().await.expect("a normal stop is Ok");
    assert!(has("graceful:end"), "the running job finished before the worker stopped");
    assert!(!has("waiting:start"), "no new job was taken after the stop");
    assert_eq!(counts(&raw, &queue).await, (1, 0), "the finished job was acked; the waiting one is still queued");
    delete_queues(&raw, &[&queue]).await;
}

#[tokio::test]
async fn a_job_outlasting_the_grace_period_goes_back_to_the_queue() {
    let Fixture { queue, raw, client, worker: running } = Fixture::start("grace", Duration::from_millis(300)).await;
    client
        .enqueue_with(&Slow { tag: "too-long".into(), millis: 30_000 }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    wait_until("the job to start", Duration::from_secs(10), || async { has("too-long:start") }).await;

    running.stop().await.expect("a stop after the grace period is still Ok");
    wait_until("the unfinished job to be back in the queue", Duration::from_secs(10), || async {
        counts(&raw, &queue).await == (1, 0)
    })
    .await;
    assert!(!has("too-long:end"));
    delete_queues(&raw, &[&queue]).await;
}

/// A TCP relay to the broker that can go silent: it keeps every connection
/// open but passes no more bytes either way, like a broker (or a network) that
/// stops answering without closing anything.
struct Relay {
    url: String,
    silent: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Self {
        let broker = jobs_core::BrokerUrl::parse(&amqp_url()).unwrap();
        let (host, port) = broker.host_port();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_port = listener.local_addr().unwrap().port();
        let url = amqp_url().replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{relay_port}"), 1);
        assert_ne!(url, amqp_url(), "AMQP_URL must name its port for the relay to stand in");
        let silent = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let silent = silent.clone();
            async move {
                let mut pipes = JoinSet::new(); // aborted with the task
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect((host.as_str(), port)).await else { continue };
                    let ((client_rx, client_tx), (server_rx, server_tx)) = (client.into_split(), server.into_split());
                    pipes.spawn(pipe(client_rx, server_tx, silent.clone()));
                    pipes.spawn(pipe(server_rx, client_tx, silent.clone()));
                }
            }
        });
        Relay { url, silent, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes until the relay goes silent; then holds the connection open, passing nothing.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, silent: Arc<AtomicBool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            return std::future::pending().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_broker_that_stops_answering_does_not_hold_a_stop_up() {
    let relay = Relay::start().await;
    let queue = unique("silent");
    let raw = raw_connection().await;
    let grace = Duration::from_secs(1);
    let running = worker::spawn_worker(&relay.url, &[&queue], 1, "silent-worker", grace);
    wait_for_consumers(&raw, &queue, 1).await;

    relay.silent.store(true, Ordering::SeqCst);
    let asked = Instant::now();
    // Without bounds on the broker's answers the stop waits for a cancel-ok
    // (and then a close-ok) that never come.
    let stopped = tokio::time::timeout(Duration::from_secs(30), running.stop()).await;
    assert!(stopped.is_ok(), "the worker did not stop within 30 s of a silent broker");
    stopped.unwrap().expect("a stop is Ok even when the broker does not answer");
    println!("stopped {:?} after the broker went silent", asked.elapsed());
    drop(relay); // closes the relayed connections; the broker drops the consumer
    delete_queues(&raw, &[&queue]).await;
}
