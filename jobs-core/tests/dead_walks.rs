//! Walks of a dead queue that others disturb: a reader that takes the jobs a
//! purge has not reached yet leaves the purge to end early and say how many
//! it did not reach (they stay dead); a dead queue deleted under a walk ends
//! it with an error that names the queue, rather than a count that lies.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{BasicConsumeArguments, BasicQosArguments, QueueDeleteArguments};
use jobs_core::plumbing::{Destination, Message, Publisher};
use jobs_core::{DeadFilter, DeadLetters, Error, JobId};
use jobs_test::*;

const N: usize = 3_000;

/// A job queue `queue` with `N` dead jobs.
async fn dead_jobs(queue: &str) -> jobs_core::plumbing::amqprs::connection::Connection {
    let raw = raw_connection().await;
    let declarer = jobs_core::plumbing::topology::Declarer::open(&raw).await.unwrap();
    amqp_config().topology().declare_job_queue(&declarer, queue).await.unwrap();
    let publisher = Publisher::open(&raw, Duration::from_secs(30)).await.unwrap();
    let dead = Destination::dead(queue);
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let messages = chunk
            .iter()
            .map(|n| {
                Message::job("Mail", JobId::from(format!("walk-{n:05}").as_str()), vec![0x80]).into_outgoing(&dead)
            })
            .collect();
        for result in publisher.publish_many(messages).await.unwrap() {
            result.unwrap();
        }
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_whose_jobs_another_reader_takes_ends_early_and_says_so() {
    let queue = unique("walk-early");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = dead_jobs(&queue).await;
    let dead_queue = format!("{queue}.dead");

    // Another reader, started once the purge has read its first batch: it
    // holds every job still in the queue (the purge's first window aside).
    let (start, started) = mpsc::channel::<()>();
    let (took, taken) = mpsc::channel::<()>();
    let other = raw_connection().await;
    let reader = {
        let dead_queue = dead_queue.clone();
        let raw = raw.clone();
        tokio::spawn(async move {
            let channel = other.open_channel(None).await.unwrap();
            tokio::task::spawn_blocking(move || started.recv()).await.unwrap().unwrap();
            channel.basic_qos(BasicQosArguments::new(0, 10_000, false)).await.unwrap();
            let (_, mut rx) =
                channel.basic_consume_rx(BasicConsumeArguments::new(&dead_queue, "other-reader")).await.unwrap();
            // Held until the test ends: the purge must not wait for them forever.
            while rx.recv().await.is_some() {
                // Between bursts: is any left ready?
                if rx.is_empty() && try_counts(&raw, &dead_queue).await.map(|c| c.0) == Some(0) {
                    let _ = took.send(());
                }
            }
            drop(channel);
            other
        })
    };
    let dead = DeadLetters::connect(&amqp_config()).await.unwrap();
    let mut first = true;
    let done = dead
        .purge_with(&queue, &DeadFilter::all(), |progress| {
            if first && progress.acted > 0 {
                first = false;
                start.send(()).unwrap();
                // Until the other reader holds every job left ready.
                tokio::task::block_in_place(|| taken.recv_timeout(Duration::from_secs(30))).unwrap();
            }
        })
        .await
        .unwrap();
    assert_eq!(done.total, N as u64);
    assert!(done.acted > 0 && done.acted < N as u64, "{done:?}");
    assert_eq!(done.scanned, done.acted, "every one read was deleted: {done:?}");
    assert_eq!(done.not_reached, N as u64 - done.acted, "the rest were held by the other reader: {done:?}");
    dead.close().await;
    reader.abort();
    // The other reader's jobs go back when it goes: they stay dead.
    wait_until("the held jobs back in dead", Duration::from_secs(30), || async {
        try_counts(&raw, &dead_queue).await.map(|c| c.0) == Some((N as u64 - done.acted) as u32)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_queue_deleted_under_a_walk_ends_it_with_an_error() {
    let queue = unique("walk-deleted");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = dead_jobs(&queue).await;
    let dead_queue = format!("{queue}.dead");
    let dead = DeadLetters::connect(&amqp_config()).await.unwrap();
    let channel = raw.open_channel(None).await.unwrap();
    let mut deleted = false;
    let (delete, deletes) = mpsc::channel::<()>();
    let (gone, went) = mpsc::channel::<()>();
    let deleter = {
        let dead_queue = dead_queue.clone();
        tokio::spawn(async move {
            tokio::task::spawn_blocking(move || deletes.recv()).await.unwrap().unwrap();
            channel.queue_delete(QueueDeleteArguments::new(&dead_queue)).await.unwrap();
            gone.send(()).unwrap();
        })
    };
    let purged = dead
        .purge_with(&queue, &DeadFilter::all(), |progress| {
            if !deleted && progress.acted > 0 {
                deleted = true;
                delete.send(()).unwrap();
                tokio::task::block_in_place(|| went.recv_timeout(Duration::from_secs(30))).unwrap();
            }
        })
        .await;
    deleter.await.unwrap();
    match purged {
        Err(Error::QueueRead { queue: named, reason }) => {
            assert_eq!(named, dead_queue, "{reason}");
        }
        other => panic!("a walk of a deleted queue must end with QueueRead: {other:?}"),
    }
    dead.close().await;
}
