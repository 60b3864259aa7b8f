//! Bulk loads: a batch of any size succeeds while the broker keeps
//! confirming (the confirm timeout is a silence, not a total), through
//! `enqueue_many` and `enqueue_iter`; and a batch cut mid-way, with no broker
//! to go on with, says exactly which jobs are confirmed: each of them is
//! stored, every stored job is confirmed or listed as unconfirmed, and none
//! past the point where sending stopped was sent.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jobs_core::{Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "test.batches")]
struct Row {
    n: usize,
}

impl Perform for Row {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// The rows stored in `queue`, taken off it (by a consumer: `basic.get`
/// one by one gives up on a broker busy writing a large queue to disk).
async fn stored_rows(raw: &jobs_test::amqprs::connection::Connection, queue: &str) -> Vec<usize> {
    use jobs_test::amqprs::channel::BasicConsumeArguments;
    let (ready, _) = counts(raw, queue).await;
    let channel = raw.open_channel(None).await.unwrap();
    let args = BasicConsumeArguments::new(queue, "stored-rows").auto_ack(true).finish();
    let (_, mut rx) = channel.basic_consume_rx(args).await.unwrap();
    let mut rows = Vec::with_capacity(ready as usize);
    while rows.len() < ready as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {ready} rows read, then nothing for 30 s", rows.len()))
            .expect("the reading channel stays open");
        rows.push(rmp_serde::from_slice::<Row>(&message.content.unwrap_or_default()).unwrap().n);
    }
    let _ = channel.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_outlasts_its_confirm_timeout_succeeds_while_confirms_come() {
    let queue = unique("batch-long");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = amqp_config();
    config.confirm_timeout = Duration::from_secs(1);
    let client = Client::new(config);
    let options = EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Row { n: usize::MAX }, options.clone()).await.unwrap(); // connected, declared

    const N: usize = 100_000;
    let rows: Vec<Row> = (0..N).map(|n| Row { n }).collect();
    let started = Instant::now();
    let ids = client.enqueue_many_with(&rows, options.clone()).await.expect("every job confirmed");
    let took = started.elapsed();
    assert_eq!(ids.len(), N);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), N, "an id each");
    let started = Instant::now();
    let count = client.enqueue_iter_with((N..2 * N).map(|n| Row { n }), options).await.expect("every job confirmed");
    let took_iter = started.elapsed();
    assert_eq!(count, N);
    // What makes the test: each batch ran longer than one confirm timeout.
    assert!(took > Duration::from_secs(1) && took_iter > Duration::from_secs(1), "{took:?}, {took_iter:?}");
    println!("{N} jobs: enqueue_many {took:?}, enqueue_iter {took_iter:?}");

    let mut stored = stored_rows(&raw, &queue).await;
    stored.sort_unstable();
    let expected: Vec<usize> = (0..2 * N).chain([usize::MAX]).collect();
    assert_eq!(stored.len(), expected.len(), "stored once each");
    assert!(stored == expected, "every row stored once");
}

/// Cuts the connection of a client `bytes` into a batch of `n` jobs, with no
/// broker to reach after it, and checks what the batch's error says against
/// what the queue holds.
async fn cut_batch(iter: bool) {
    let relay = Relay::start().await;
    let queue = unique(if iter { "batch-cut-iter" } else { "batch-cut-many" });
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = config_for(&relay.url);
    config.heartbeat = 1;
    config.reconnect_timeout = Duration::from_secs(3);
    let client = Client::new(config);
    let options = EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Row { n: usize::MAX }, options.clone()).await.unwrap(); // connected, declared
    relay.refuse_new();
    // About 13,000 publishes in: past the window (4,096), so the first thousands were confirmed.
    relay.cut_after(2_000_000);

    const N: usize = 40_000;
    let rows = (0..N).map(|n| Row { n });
    let result = if iter {
        client.enqueue_iter_with(rows, options).await.map(|_| ())
    } else {
        client.enqueue_many_with(&rows.collect::<Vec<_>>(), options).await.map(|_| ())
    };
    let stopped = match result {
        Err(Error::BatchIncomplete(stopped)) => stopped,
        other => panic!("a batch cut with no broker after it ends incomplete: {other:?}"),
    };
    println!("{stopped}");
    assert_eq!(relay.cuts(), 1, "the relay cut the connection mid-batch");
    assert!(stopped.taken > 0 && stopped.taken < N, "stopped part-way: {stopped}");
    assert!(stopped.confirmed() > 0, "some confirmed before the cut: {stopped}");
    assert!(!stopped.unconfirmed.is_empty(), "the cut left some unconfirmed: {stopped}");
    assert!(stopped.unconfirmed.len() <= 4096 + 256, "at most the window unconfirmed: {stopped}");
    assert!(stopped.unconfirmed.windows(2).all(|w| w[0].0 < w[1].0), "in order, once each");
    assert!(
        matches!(stopped.error, Error::Closed { .. } | Error::Connect { .. }),
        "stopped by the lost connection: {:?}",
        stopped.error
    );

    let stored: Vec<usize> = stored_rows(&raw, &queue).await.into_iter().filter(|&n| n != usize::MAX).collect();
    let set: HashSet<usize> = stored.iter().copied().collect();
    assert_eq!(set.len(), stored.len(), "none stored twice (nothing was sent again)");
    for &n in &stored {
        assert!(n < stopped.taken, "job {n} stored, but sending stopped at {}", stopped.taken);
        let listed = stopped.unconfirmed.iter().any(|(i, _)| *i == n);
        assert!(stopped.is_confirmed(n) || listed, "job {n} stored but neither confirmed nor listed");
    }
    let missing: Vec<usize> = (0..stopped.taken).filter(|&i| stopped.is_confirmed(i) && !set.contains(&i)).collect();
    assert!(missing.is_empty(), "confirmed but not stored: {:?}", &missing[..missing.len().min(10)]);
    for (i, id) in &stopped.unconfirmed {
        assert!(!id.as_str().is_empty(), "job {i} listed with its id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_enqueue_many_reports_exactly_the_confirmed_part() {
    cut_batch(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_enqueue_iter_reports_exactly_the_confirmed_part() {
    cut_batch(true).await;
}

/// A batch that runs longer than `amqp.reconnect_timeout` and loses its
/// connection late (half-open: noticed by the heartbeat) sends the
/// unconfirmed jobs again on a new connection and succeeds: the time to
/// reconnect counts from the loss, not from the batch's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_late_in_a_long_batch_is_ridden_through() {
    let relay = Relay::start().await;
    let queue = unique("batch-late-cut");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = config_for(&relay.url);
    config.heartbeat = 1;
    config.reconnect_timeout = Duration::from_secs(1);
    let client = Client::new(config);
    let options = EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Row { n: usize::MAX }, options.clone()).await.unwrap(); // connected, declared

    const N: usize = 100_000;
    relay.cut_after(10_000_000); // about two thirds in
    let started = Instant::now();
    let cut_at = {
        let cuts = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (watch, relay_cuts) = (cuts.clone(), relay.cuts_counter());
        tokio::spawn(async move {
            while relay_cuts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            *watch.lock().unwrap() = Some(started.elapsed());
        });
        cuts
    };
    let count =
        tokio::time::timeout(Duration::from_secs(120), client.enqueue_iter_with((0..N).map(|n| Row { n }), options))
            .await
            .expect("the batch ends")
            .expect("every job confirmed, across the cut");
    assert_eq!(count, N);
    let cut_at = cut_at.lock().unwrap().expect("the relay cut the connection mid-batch");
    assert!(
        cut_at > Duration::from_secs(1),
        "the cut came later than one reconnect_timeout into the batch: {cut_at:?}"
    );
    assert_eq!(relay.connections(), 2, "the rest went on a new connection");
    let stored: HashSet<usize> = stored_rows(&raw, &queue).await.into_iter().collect();
    let missing: Vec<usize> = (0..N).filter(|n| !stored.contains(n)).collect();
    assert!(missing.is_empty(), "confirmed but not stored: {:?}", &missing[..missing.len().min(10)]);
}
