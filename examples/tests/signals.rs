//! Stop signals, as systemd and a terminal send them: SIGINT stops gracefully
//! as SIGTERM does (the running job finishes and is acked, exit 0); a second
//! signal stops at once (exit 130), the unfinished job going back to the queue.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

async fn worker_with_a_running_job(name: &str, message: &str) -> (Process, String, Cleanup) {
    let queue = unique(name);
    let cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let worker = Process::start(name, env!("CARGO_BIN_EXE_worker"), &["--queues", &queue, "--extra-queues", &queue]);
    wait_for_consumers(&raw, &queue, 1).await;
    let client = Client::new(amqp_config());
    client.enqueue_with(&Task { message: message.into() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    worker.wait_line(&format!("Received '{message}'"), Duration::from_secs(20)).await;
    (worker, queue, cleanup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully_like_sigterm() {
    let (mut worker, queue, _cleanup) = worker_with_a_running_job("sigint", "finish me..").await;
    worker.signal(2);
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{:?}", worker.lines());
    assert!(worker.has("Done 'finish me..'"), "the running job finished: {:?}", worker.lines());
    assert_acked(&raw_connection().await, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_the_job_goes_back() {
    let (mut worker, queue, _cleanup) = worker_with_a_running_job("twice", "a long one............").await;
    worker.signal(15);
    worker.wait_line("stop signal received", Duration::from_secs(10)).await;
    let second = Instant::now();
    worker.signal(2);
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(second.elapsed() < Duration::from_secs(3), "stopped {:?} after the second signal", second.elapsed());
    assert_eq!(status.code(), Some(130), "{:?}", worker.lines());
    assert!(!worker.has("Done 'a long one"), "not finished");
    let raw = raw_connection().await;
    wait_until("the unfinished job back in its queue", Duration::from_secs(10), || async {
        counts(&raw, &queue).await == (1, 0)
    })
    .await;
}
