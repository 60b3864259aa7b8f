//! Jobs that block their thread, as a team's app does with a synchronous
//! library or `std::thread::sleep` in an async `perform`:
//!
//! - two such jobs, each blocking 12 s (six AMQP heartbeat intervals of 2 s),
//!   on a worker with `-n 2` and two runtime threads: the link to the broker
//!   runs on a thread of its own, so the connection stays up, each job runs
//!   once and finishes, and the worker says once, at WARN, which type blocked
//!   and to mark it `#[job(blocking)]`;
//! - a `#[job(blocking)]` job runs on a thread of the blocking pool: on a
//!   worker with one runtime thread an async job still runs beside it, and
//!   its timeout (3 s) settles it as timed out while its thread runs out (8 s).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::chaos::{Block, Crunch};
use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

fn worker(queue: &str, id: &str, runtime_threads: &str) -> Process {
    let args = ["--queues", queue, "--extra-queues", queue, "-n", "2", "--id", id];
    let env = [("JOBS__AMQP__HEARTBEAT", "2"), ("TOKIO_WORKER_THREADS", runtime_threads)];
    Process::start_with(id, env!("CARGO_BIN_EXE_worker"), &args, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_blocking_every_runtime_thread_keep_the_connection_run_once_and_are_named() {
    let queue = unique("blocking");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let worker = worker(&queue, "block-worker", "2");
    wait_for_consumers(&raw, &queue, 1).await;
    let client = Client::new(amqp_config());
    let mut ids = Vec::new();
    for note in ["first", "second"] {
        let job = Block { note: note.into(), secs: 12 };
        ids.push(client.enqueue_with(&job, EnqueueOptions::new().queue(&queue)).await.unwrap());
    }
    for note in ["first", "second"] {
        worker.wait_line(&format!("unblocked '{note}'"), Duration::from_secs(60)).await;
    }
    let lines = worker.stop().await;
    for id in &ids {
        let runs = lines.iter().filter(|l| l.contains("blocking 12 s") && l.contains(id.as_str())).count();
        assert_eq!(runs, 1, "job {id} ran once: {lines:#?}");
    }
    assert!(!lines.iter().any(|l| l.contains("lost the broker")), "the connection stayed up: {lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("crashes=")), "no crash counted: {lines:#?}");
    let warned: Vec<&String> = lines.iter().filter(|l| l.contains("blocked a thread of the jobs' runtime")).collect();
    assert_eq!(warned.len(), 1, "said once: {lines:#?}");
    assert!(warned[0].contains("WARN") && warned[0].contains("Block"), "{}", warned[0]);
    assert!(warned[0].contains("#[job(blocking)]"), "what to use instead: {}", warned[0]);
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "none dead");
    assert_acked(&raw, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_job_runs_beside_async_jobs_and_its_timeout_settles_it() {
    let queue = unique("crunch");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let worker = worker(&queue, "crunch-worker", "1");
    wait_for_consumers(&raw, &queue, 1).await;
    let client = Client::new(amqp_config());
    let options = EnqueueOptions::new().queue(&queue);
    let id = client.enqueue_with(&Crunch { note: "crunch".into(), secs: 8 }, options.clone()).await.unwrap();
    worker.wait_line("crunching 8 s for 'crunch'", Duration::from_secs(30)).await;
    client.enqueue_with(&Task { message: "beside.".into() }, options).await.unwrap();
    worker.wait_line("Done 'beside.'", Duration::from_secs(30)).await;
    assert!(!worker.has("crunched 'crunch'"), "the async job ran while the blocking one still ran");

    // Dead as timed out after its 3 s, before its thread ran out.
    let dead = format!("{queue}.dead");
    wait_until("the blocking job dead", Duration::from_secs(30), || async {
        try_counts(&raw, &dead).await.map(|c| c.0) == Some(1)
    })
    .await;
    assert!(!worker.has("crunched 'crunch'"), "settled before its thread ran out");
    worker.wait_line("crunched 'crunch'", Duration::from_secs(30)).await;
    let lines = worker.stop().await;
    assert_eq!(lines.iter().filter(|l| l.contains("crunching 8 s")).count(), 1, "one run: {lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("blocked a thread")), "no WARN for a declared type: {lines:#?}");
    let (ok, out) = run(env!("CARGO_BIN_EXE_worker"), &["dead", "list", &queue]);
    assert!(ok, "{out}");
    assert!(out.contains(id.as_str()) && out.contains("timeout"), "{out}");
    assert_acked(&raw, &queue).await;
}

/// A deploy while blocking jobs hold every thread of the app's runtime: the
/// stop signal is heard on the link's thread, the grace period runs, both
/// jobs are handed back (not crashes) and the process exits long before their
/// code would have returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_jobs_block_every_runtime_thread_hands_them_back_in_time() {
    let queue = unique("blocking-stop");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let args = ["--queues", &queue, "--extra-queues", &queue, "-n", "2", "--grace-period", "2s", "--id", "block-stop"];
    let env = [("TOKIO_WORKER_THREADS", "2")];
    let mut worker = Process::start_with("block-stop", env!("CARGO_BIN_EXE_worker"), &args, &env);
    wait_for_consumers(&raw, &queue, 1).await;
    let client = Client::new(amqp_config());
    for note in ["one", "two"] {
        let job = Block { note: note.into(), secs: 60 };
        client.enqueue_with(&job, EnqueueOptions::new().queue(&queue)).await.unwrap();
    }
    for note in ["one", "two"] {
        worker.wait_line(&format!("for '{note}'"), Duration::from_secs(30)).await;
    }
    worker.signal(15);
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    let lines = worker.lines();
    assert_eq!(status.code(), Some(0), "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("handed back to its queue")).count(), 2, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("unblocked")), "the stop came long before the code returned");
    // Both copies wait in the queue for the next worker, as interrupted runs.
    wait_until("both handed back", Duration::from_secs(20), || async { counts(&raw, &queue).await == (2, 0) }).await;
}
