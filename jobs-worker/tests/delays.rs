//! Delayed and scheduled jobs: never early, at most about a second late; a long
//! delay does not hold back a short one. (That delays survive a broker
//! restart: `delays_restart.rs`.)
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime};

use jobs_core::EnqueueOptions;
use jobs_test::*;

#[path = "support/later.rs"]
mod later;
use later::{started, Later};

#[tokio::test]
async fn a_delayed_job_starts_after_its_time_never_before_and_holds_no_worker() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("delay", Duration::from_secs(5)).await;
    let on = || EnqueueOptions::new().queue(&queue);

    let t0 = Instant::now();
    let tag_in = format!("{queue}-in");
    client.enqueue_with(&Later { tag: tag_in.clone() }, on().delay(Duration::from_secs(3))).await.unwrap();
    let tag_at = format!("{queue}-at");
    let at = SystemTime::now() + Duration::from_millis(2500);
    client.enqueue_with(&Later { tag: tag_at.clone() }, on().at(at)).await.unwrap();
    // Not in the job queue, nor in the worker: at prefetch 1 a worker holding
    // one would take no other job, and the one enqueued after them runs first.
    let now = format!("{queue}-now");
    client.enqueue_with(&Later { tag: now.clone() }, on()).await.unwrap();
    wait_until("the job enqueued after the delayed ones", Duration::from_secs(10), || async {
        started(&now).is_some()
    })
    .await;
    assert!(started(&tag_at).is_none() && started(&tag_in).is_none(), "it ran first, while they wait in the broker");

    wait_until("both delayed jobs", Duration::from_secs(15), || async {
        started(&tag_in).is_some() && started(&tag_at).is_some()
    })
    .await;
    let after_in = started(&tag_in).unwrap() - t0;
    assert!(after_in >= Duration::from_secs(3), "started early: {after_in:?}");
    // Due at 3 s (whole seconds already); 2 s of room for a loaded machine.
    assert!(after_in < Duration::from_secs(5), "started late: {after_in:?}");
    let at_late = SystemTime::now().duration_since(at).unwrap() - (Instant::now() - started(&tag_at).unwrap());
    // Rounded up to whole seconds from the enqueue (up to 1 s after `at`), then 2 s of room.
    assert!(at_late < Duration::from_secs(3), "enqueue_at job late by {at_late:?}");
    assert!(started(&tag_at).unwrap() - t0 >= Duration::from_millis(2500), "enqueue_at job early");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}

#[tokio::test]
async fn a_job_delayed_an_hour_does_not_hold_back_one_delayed_two_seconds() {
    let Fixture { queue, client, worker: running, cleanup: _cleanup, .. } =
        Fixture::start("hol", Duration::from_secs(5)).await;
    let on = || EnqueueOptions::new().queue(&queue);
    let t0 = Instant::now();
    let long = format!("{queue}-hour");
    let short = format!("{queue}-2s");
    // Enqueued first: in one queue with per-message TTLs it would sit at the head
    // and hold the short one back for an hour.
    client.enqueue_with(&Later { tag: long.clone() }, on().delay(Duration::from_secs(3600))).await.unwrap();
    client.enqueue_with(&Later { tag: short.clone() }, on().delay(Duration::from_secs(2))).await.unwrap();
    wait_until("the 2 s job", Duration::from_secs(10), || async { started(&short).is_some() }).await;
    let after = started(&short).unwrap() - t0;
    assert!(after >= Duration::from_secs(2) && after < Duration::from_secs(4), "{after:?}");
    assert!(started(&long).is_none());
    running.stop().await.unwrap();
    // The hour-long job is dropped when it comes due: its queue is gone by then.
}
