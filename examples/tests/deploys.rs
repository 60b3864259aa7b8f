//! Deploys while a long job runs, as a rolling deploy with a short grace
//! period does them: four graceful restarts (SIGTERM, `--grace-period 2s`) in
//! the middle of a 12-second `Task` hand it back each time; it is never dead,
//! and the fifth worker runs it to the end, once, knowing of the four
//! interrupted runs. A `kill -9` in the middle of the same job still counts
//! one crash.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

const LONG: &str = "a long job............";

fn worker(queue: &str, id: &str) -> Process {
    let args = ["--queues", queue, "--extra-queues", queue, "--grace-period", "2s", "--id", id];
    Process::start(id, env!("CARGO_BIN_EXE_worker"), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_graceful_restarts_during_a_long_job_hand_it_back_and_the_fifth_worker_finishes_it() {
    let queue = unique("deploys");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let first = worker(&queue, "deploy-0");
    wait_for_consumers(&raw, &queue, 1).await;
    let id = Client::new(amqp_config())
        .enqueue_with(&Task { message: LONG.into() }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    let received = format!("(job {id})");
    let mut running = Some(first);
    for n in 1..=4 {
        let mut old = running.take().unwrap();
        old.wait_line(&received, Duration::from_secs(30)).await;
        if n > 1 {
            let again = format!("after {} interrupted run", n - 1);
            assert!(old.has(&again), "{}: {again}: {:?}", old.name, old.lines());
        }
        // The deploy: the new worker first, then the old one stopped in the middle of the job.
        let new = worker(&queue, &format!("deploy-{n}"));
        wait_for_consumers(&raw, &queue, 2).await;
        old.signal(15);
        let status = old.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(0), "{}: {:?}", old.name, old.lines());
        assert!(old.has("handed back to its queue"), "{}: {:?}", old.name, old.lines());
        assert!(!old.has(&format!("Done '{LONG}'")), "{}: the stop came in the middle", old.name);
        running = Some(new);
    }
    let last = running.take().unwrap();
    last.wait_line(&format!("Done '{LONG}'"), Duration::from_secs(60)).await;
    assert!(last.has("after 4 interrupted runs"), "{:?}", last.lines());
    let lines = last.stop().await;
    assert_eq!(lines.iter().filter(|l| l.contains(&format!("Done '{LONG}'"))).count(), 1, "once");
    assert!(!lines.iter().any(|l| l.contains("crashes=")), "no crash counted: {lines:?}");
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "never dead");
    assert_acked(&raw, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_the_long_job_still_counts_one_crash() {
    let queue = unique("deploy-kill");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut victim = worker(&queue, "kill-0");
    wait_for_consumers(&raw, &queue, 1).await;
    let id = Client::new(amqp_config())
        .enqueue_with(&Task { message: "short but killed...".into() }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    victim.wait_line(&format!("(job {id})"), Duration::from_secs(30)).await;
    victim.signal(9);
    victim.wait_exit(Duration::from_secs(10)).await;
    let next = worker(&queue, "kill-1");
    next.wait_line("Done 'short but killed...'", Duration::from_secs(60)).await;
    let lines = next.stop().await;
    assert!(lines.iter().any(|l| l.contains("requeued") && l.contains("crashes=1")), "one crash: {lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("interrupted run")), "a crash is no interruption: {lines:?}");
    assert_acked(&raw, &queue).await;
}
