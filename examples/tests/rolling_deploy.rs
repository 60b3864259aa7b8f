//! A rolling deploy: the new app version enqueues a job type that the old
//! workers (`worker_v1`) do not know. They retry it (kind `unknown_type`, the
//! default backoff, one WARN line per type per minute); it is not dead; once a
//! new worker (`worker_v2`) runs and the old one stops, each job runs once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::rollout::{Resize, Thumbnail};
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

/// The value of the metric line that starts with `series` and has every label in `labels`.
fn metric(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{series}{{")) && labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_type_only_newer_workers_know_waits_for_them_and_runs_once() {
    let queue = unique("rollout");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let port = spare_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let flags = |id: &'static str| vec!["--queues", &queue, "--extra-queues", &queue, "--id", id];
    let mut old_flags = flags("v1");
    old_flags.extend(["--metrics-addr", &metrics_addr]);
    let v1 = Process::start("v1", env!("CARGO_BIN_EXE_worker_v1"), &old_flags);
    wait_for_consumers(&raw, &queue, 1).await;

    let on = || EnqueueOptions::new().queue(&queue);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(client.enqueue_with(&Thumbnail { image: format!("img-{n}") }, on()).await.unwrap());
    }
    client.enqueue_with(&Resize { image: "known".into() }, on()).await.unwrap();
    v1.wait_line("ran Resize known", Duration::from_secs(20)).await;

    let retried = || metric(&http_get(port, "/metrics").1, "jobs_retried_total", &["job=\"Thumbnail\""]);
    wait_until("v1 to retry the three new jobs", Duration::from_secs(20), || async { retried() == Some(3.0) }).await;
    let metrics = http_get(port, "/metrics").1;
    let failed = metric(&metrics, "jobs_failed_total", &["job=\"Thumbnail\"", "kind=\"unknown_type\""]);
    assert_eq!(failed, Some(3.0), "{metrics}");
    assert_eq!(metric(&metrics, "jobs_dead_total", &["job=\"Thumbnail\""]), None, "none dead: {metrics}");
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "not dead");
    // Waiting in the broker's delay cascade: neither ready in the queue nor held by v1.
    let management = jobs_core::plumbing::Management::new(&amqp_config());
    wait_until("the three out of the queue and out of v1", Duration::from_secs(20), || async {
        management.queue(&queue).await.is_some_and(|q| (q.ready, q.unacked) == (0, 0))
    })
    .await;
    assert_eq!(v1.count("no job type of this name in this worker"), 1, "one WARN line for the type: {:?}", v1.lines());

    // The deploy: a new worker starts, the old one stops.
    let v2 = Process::start("v2", env!("CARGO_BIN_EXE_worker_v2"), &flags("v2"));
    wait_for_consumers(&raw, &queue, 2).await;
    v1.stop().await;

    // After the default backoff of a first attempt (16-36 s) each runs on v2, once.
    wait_until("v2 to run the three", Duration::from_secs(60), || async { v2.count("ran Thumbnail") >= 3 }).await;
    for id in &ids {
        let runs = v2.count(&format!("(job {id}, attempt 2)"));
        assert_eq!(runs, 1, "job {id} ran {runs} times on its second attempt: {:?}", v2.lines());
    }
    assert_eq!(v2.count("ran Thumbnail"), 3, "no job twice: {:?}", v2.lines());
    v2.stop().await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0);
    assert_acked(&raw, &queue).await;
}

#[test]
fn a_queue_no_job_type_uses_stops_the_worker_at_start_naming_it_and_the_types() {
    let (ok, out) = run(env!("CARGO_BIN_EXE_worker_v2"), &["--queues", "rolout"]);
    assert!(!ok, "a typo must not make an idle worker: {out}");
    assert!(out.contains("`rolout`"), "names the queue: {out}");
    assert!(out.contains("Resize → rollout") && out.contains("Thumbnail → rollout"), "names the types: {out}");
    assert_eq!(out.lines().filter(|l| l.contains("error")).count(), 1, "one error: {out}");

    let (ok, out) = run(env!("CARGO_BIN_EXE_worker_v2"), &["--queues", "rolout", "--extra-queues", "rolout", "--help"]);
    assert!(ok && out.contains("--extra-queues"), "{out}");
}
