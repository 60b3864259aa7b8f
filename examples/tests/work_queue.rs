//! The tutorial's `worker` binary as a process: fair round robin, SIGTERM in the
//! middle of a job, and kill -9 in the middle of a job.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::Task;
use jobs_core::{Client, EnqueueOptions, JobId};
use jobs_test::*;

/// A `worker` process on `queue`.
fn worker(name: &str, queue: &str) -> Process {
    Process::start(
        name,
        env!("CARGO_BIN_EXE_worker"),
        &["--queues", queue, "--extra-queues", queue, "--id", name, "--grace-period", "30s"],
    )
}

async fn enqueue(client: &Client, queue: &str, message: &str) -> JobId {
    client.enqueue_with(&Task { message: message.into() }, EnqueueOptions::new().queue(queue)).await.expect("enqueue")
}

#[tokio::test]
async fn two_workers_and_four_tasks_give_two_tasks_to_each() {
    let queue = unique("round-robin");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let mut a = worker("rr-A", &queue);
    let mut b = worker("rr-B", &queue);
    wait_for_consumers(&raw, &queue, 2).await;
    for message in ["First.", "Second.", "Third.", "Fourth."] {
        enqueue(&client, &queue, message).await;
    }
    wait_until("four tasks done", Duration::from_secs(30), || async { a.count("] Done '") + b.count("] Done '") == 4 })
        .await;
    assert_eq!((a.count("] Done '"), b.count("] Done '")), (2, 2), "A: {:?}\nB: {:?}", a.lines(), b.lines());
    a.signal(15);
    b.signal(15);
    assert!(a.wait_exit(Duration::from_secs(20)).await.success());
    assert!(b.wait_exit(Duration::from_secs(20)).await.success());
    assert_acked(&raw, &queue).await;
}

#[tokio::test]
async fn sigterm_in_the_middle_of_a_job_lets_it_finish_then_exits_0() {
    let queue = unique("sigterm");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let mut worker = worker("term-W", &queue);
    wait_for_consumers(&raw, &queue, 1).await;
    enqueue(&client, &queue, "finish me..").await;
    worker.wait_line("Received 'finish me..'", Duration::from_secs(20)).await;

    worker.signal(15);
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}: {:?}", worker.lines());
    assert!(worker.has("Done 'finish me..'"), "the running job finished: {:?}", worker.lines());
    assert_acked(&raw, &queue).await; // it was acked before the exit
}

#[tokio::test]
async fn kill_9_in_the_middle_of_a_job_hands_it_to_another_worker() {
    let queue = unique("kill9");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let mut a = worker("kill-A", &queue);
    let mut b = worker("kill-B", &queue);
    wait_for_consumers(&raw, &queue, 2).await;
    let id = enqueue(&client, &queue, "survive me..").await;
    let received = format!("(job {id})");
    wait_until("a worker to take the job", Duration::from_secs(20), || async { a.has(&received) || b.has(&received) })
        .await;
    let (victim, other) = if a.has(&received) { (&mut a, &mut b) } else { (&mut b, &mut a) };

    victim.signal(9);
    let status = victim.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(!victim.has("Done 'survive me..'"));
    other.wait_line(&received, Duration::from_secs(30)).await;
    other.wait_line("Done 'survive me..'", Duration::from_secs(30)).await;
    other.signal(15);
    assert!(other.wait_exit(Duration::from_secs(20)).await.success());
    assert_acked(&raw, &queue).await;
}
