//! A leader chosen by the broker: of three candidates on connections of
//! their own, exactly one leads, and goes on leading through renewals of its
//! hold (extra tokens are acked, none piles up); when its connection goes,
//! another leads within seconds, and still exactly one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{connect, Hold, Leader, Publisher};
use jobs_test::*;
use tokio::sync::watch;

/// One candidate: its connection, and whether it leads.
struct Candidate {
    connection: jobs_core::plumbing::amqprs::connection::Connection,
    leading: watch::Receiver<Hold>,
    task: tokio::task::JoinHandle<()>,
}

async fn candidate(leader: Leader, n: usize) -> Candidate {
    candidate_on(leader, n, &amqp_config()).await
}

async fn candidate_on(leader: Leader, n: usize, amqp: &jobs_core::AmqpConfig) -> Candidate {
    let connection = connect(amqp, &format!("leader-test-{n}")).await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    let (tx, leading) = watch::channel(Hold::default());
    let task = tokio::spawn({
        let connection = connection.clone();
        async move {
            let _ = leader
                .campaign(&connection, &publisher, Duration::from_millis(300), Duration::from_millis(500), &tx)
                .await;
        }
    });
    Candidate { connection, leading, task }
}

/// A leadership of the test's own, declared: it, a raw connection, and its cleanup.
async fn declared(name: &str) -> (Leader, jobs_core::plumbing::amqprs::connection::Connection, Cleanup) {
    let name: &'static str = Box::leak(unique(name).into_boxed_str());
    let cleanup = Cleanup::queues(&[name]);
    let leader = Leader::new(name);
    let raw = raw_connection().await;
    let declarer = Declarer::open(&raw).await.unwrap();
    leader.declare(&declarer).await.unwrap();
    declarer.close().await;
    (leader, raw, cleanup)
}

fn leaders(candidates: &[Candidate]) -> Vec<usize> {
    candidates.iter().enumerate().filter(|(_, c)| c.leading.borrow().leading).map(|(n, _)| n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_candidate_leads_through_renewals_and_another_takes_over_when_it_goes() {
    let (leader, raw, _cleanup) = declared("test.leader").await;
    let name = leader.name();

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
    assert!(
        candidates[first].leading.borrow().holds(Duration::from_secs(5)),
        "the leader hears the broker each second"
    );
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
    // Closed now (an error here says it had closed already: gone either way).
    let _ = gone.connection.close().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_link_goes_silent_stops_holding_before_another_leads() {
    let (leader, _raw, _cleanup) = declared("test.leader-fence").await;
    // The first candidate leads through a relay, with heartbeats every 6 s:
    // the broker gives up on its link 6 to 12 s after it goes silent.
    let relay = Relay::start().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 6;
    let first = candidate_on(leader, 0, &amqp).await;
    wait_until("the first to lead", Duration::from_secs(15), || async { first.leading.borrow().leading }).await;
    let second = candidate(leader, 1).await;
    // A third of the heartbeat timeout, as the scheduler's; probes every half second.
    let fence = Duration::from_secs(2);
    wait_until("the second to stand by", Duration::from_secs(10), || async { second.leading.borrow().heard.is_some() })
        .await;
    wait_until("the first to hold", Duration::from_secs(10), || async { first.leading.borrow().holds(fence) }).await;
    assert!(!second.leading.borrow().leading);
    let term = first.leading.borrow().term;

    relay.cut();
    let cut = tokio::time::Instant::now();
    // Still leading as far as it knows, but no longer holding: it stops acting
    // within the fence and its probe, while the broker still counts it.
    wait_until("the silent leader to stop holding", Duration::from_secs(10), || async {
        !first.leading.borrow().holds(fence)
    })
    .await;
    let stopped = cut.elapsed();
    assert!(first.leading.borrow().leading, "it still thinks it holds the token");
    assert_eq!(first.leading.borrow().term, term, "the same lead");
    assert!(!second.leading.borrow().leading, "the broker has not made another active yet");
    wait_until("the second to lead", Duration::from_secs(60), || async { second.leading.borrow().leading }).await;
    let taken = cut.elapsed();
    assert!(stopped < taken, "the silent leader stopped ({stopped:?}) before the other led ({taken:?})");
    for candidate in [first, second] {
        candidate.task.abort();
        let _ = candidate.connection.close().await;
    }
}
