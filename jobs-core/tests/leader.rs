//! A leader chosen by the broker: of three candidates on connections of
//! their own, exactly one leads, and goes on leading through renewals of its
//! hold (extra tokens are acked, none piles up); when its connection goes,
//! another leads within seconds, and still exactly one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{connect, Leader, Publisher};
use jobs_test::*;
use tokio::sync::watch;

/// One candidate: its connection, and whether it leads.
struct Candidate {
    connection: jobs_core::plumbing::amqprs::connection::Connection,
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn candidate(leader: Leader, n: usize) -> Candidate {
    let connection = connect(&amqp_config(), &format!("leader-test-{n}")).await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    let (tx, leading) = watch::channel(false);
    let task = tokio::spawn({
        let connection = connection.clone();
        async move {
            let _ = leader.campaign(&connection, &publisher, Duration::from_millis(300), &tx).await;
        }
    });
    Candidate { connection, leading, task }
}

fn leaders(candidates: &[Candidate]) -> Vec<usize> {
    candidates.iter().enumerate().filter(|(_, c)| *c.leading.borrow()).map(|(n, _)| n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_candidate_leads_through_renewals_and_another_takes_over_when_it_goes() {
    let name: &'static str = Box::leak(unique("test.leader").into_boxed_str());
    let _cleanup = Cleanup::queues(&[name]);
    let leader = Leader::new(name);
    let raw = raw_connection().await;
    let declarer = Declarer::open(&raw).await.unwrap();
    leader.declare(&declarer).await.unwrap();
    declarer.close().await;

    let mut candidates = Vec::new();
    for n in 0..3 {
        candidates.push(candidate(leader, n).await);
    }
    wait_until("one leader", Duration::from_secs(15), || async { leaders(&candidates).len() == 1 }).await;
    let first = leaders(&candidates)[0];
    // Through several renewals (every 0.3 s) and the extra tokens of three
    // starts: the same one leads, alone, and no token waits in the queue.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    while tokio::time::Instant::now() < until {
        ticks.tick().await;
        assert_eq!(leaders(&candidates), [first], "exactly the first leader, all along");
    }
    // (The broker counts only the active consumer of a single-active-consumer queue.)
    wait_until("no token waiting", Duration::from_secs(10), || async { counts(&raw, name).await == (0, 1) }).await;

    // Each renewal let the old token go: one held, whatever the number of renewals.
    let management = jobs_core::plumbing::Management::new(&amqp_config());
    wait_until("the management API to show one held token", Duration::from_secs(20), || async {
        management.queue(name).await.is_some_and(|q| q.unacked == 1 && q.ready == 0)
    })
    .await;

    // The leader's connection goes: another leads, alone.
    let gone = candidates.remove(first);
    gone.connection.close().await.unwrap();
    gone.task.await.unwrap();
    wait_until("a new leader", Duration::from_secs(15), || async { leaders(&candidates).len() == 1 }).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        ticks.tick().await;
        assert_eq!(leaders(&candidates).len(), 1, "exactly one leader after the takeover");
    }
    assert_eq!(counts(&raw, name).await, (0, 1), "the token held, none waiting");
    for candidate in candidates {
        candidate.task.abort();
        let _ = candidate.connection.close().await;
    }
}
