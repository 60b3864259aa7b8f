//! Jobs that outlast the broker's `consumer_timeout`, on a node of its own
//! whose timeout is 3 s, checked every 0.5 s (`channel_tick_interval`): the
//! worker notices the close when it comes and says so once, at ERROR, with
//! the job, how long it ran and the broker's value; it cancels the job (it
//! never runs twice at once, and never to its end); the job comes back
//! counted as a crash that names the timeout, and after `amqp.max_crashes` it
//! is dead once with a reason that says `consumer_timeout` and the value, as
//! `worker dead list` shows.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

const LONG: &str = "outlasts the broker....................";

/// `ran_for=3.52s` (a `Duration` as `Debug` writes it) from a log line, in seconds.
fn ran_for(line: &str) -> Option<f64> {
    let rest = line.split("ran_for=").nth(1)?;
    let value = rest.split_whitespace().next()?;
    let number = |unit: &str| value.strip_suffix(unit).and_then(|n| n.parse::<f64>().ok());
    number("ms").map(|ms| ms / 1000.0).or_else(|| number("s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_brokers_consumer_timeout_ends_is_cancelled_counted_and_dead_once_with_the_reason() {
    let node = TestNode::start_advanced(
        "consumer-timeout",
        "consumer_timeout = 3000",
        "[{rabbit, [{channel_tick_interval, 500}]}].",
    );
    let url = node.url();
    let queue = "long-jobs";
    let raw = raw_connection_to(&url).await;
    let env = [("JOBS__AMQP__URL", url.as_str()), ("JOBS__AMQP__MAX_CRASHES", "2")];
    let args = ["--queues", queue, "--extra-queues", queue, "--id", "ct-worker"];
    let worker = Process::start_with("ct-worker", env!("CARGO_BIN_EXE_worker"), &args, &env);
    wait_for_consumers(&raw, queue, 1).await;
    let id = Client::new(config_for(&url))
        .enqueue_with(&Task { message: LONG.into() }, EnqueueOptions::new().queue(queue))
        .await
        .unwrap();

    wait_until("the job dead", Duration::from_secs(90), || async {
        try_counts(&raw, &format!("{queue}.dead")).await.map(|c| c.0) == Some(1)
    })
    .await;
    let lines = worker.stop().await;
    println!("{}", lines.join("\n"));
    let received: Vec<usize> =
        lines.iter().enumerate().filter(|(_, l)| l.contains(&format!("(job {id})"))).map(|(n, _)| n).collect();
    let ended: Vec<(usize, &String)> =
        lines.iter().enumerate().filter(|(_, l)| l.contains("consumer_timeout ended the job")).collect();
    // Three runs (the first, and two requeued after a crash each), each ended by the broker, then dead unrun.
    assert_eq!(received.len(), 3, "runs: {lines:#?}");
    assert_eq!(ended.len(), 3, "one ERROR a run: {lines:#?}");
    for ((run, (at, line)), next) in received.iter().zip(&ended).zip(received.iter().skip(1).map(Some).chain([None])) {
        assert!(line.contains("ERROR") && line.contains("consumer_timeout=3000 ms"), "{line}");
        assert!(line.contains(id.as_str()), "names the job: {line}");
        // The close came within the broker's check after 3 s; the job (40 s) was cancelled there.
        let ran = ran_for(line).unwrap_or_else(|| panic!("how long it ran: {line}"));
        assert!((2.5..15.0).contains(&ran), "ran {ran} s: {line}");
        assert!(at > run, "ended after it started");
        if let Some(next) = next {
            assert!(at < next, "the next run only after this one was cancelled: {lines:#?}");
        }
    }
    assert!(!lines.iter().any(|l| l.contains(&format!("Done '{LONG}'"))), "never ran to its end");
    let requeued: Vec<&String> =
        lines.iter().filter(|l| l.contains("the broker's consumer_timeout ended its run; requeued")).collect();
    assert_eq!(requeued.len(), 2, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("job timeout is not below the broker's consumer_timeout")),
        "the types it outlasts: {lines:#?}"
    );

    // Dead once, with the reason; `worker dead list` shows it.
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_worker"), &["dead", "list", queue]);
    assert!(ok, "{out}");
    assert!(out.contains(id.as_str()) && out.contains("crashed"), "{out}");
    assert!(out.contains("consumer_timeout (3000 ms) ended its runs"), "{out}");
    assert_eq!(try_counts(&raw, queue).await.map(|c| c.0), Some(0), "nothing left in the queue");
}
