//! The fence of a silent leader. Its connections go through a relay, which
//! silences its leadership's link only, while the client it fires through
//! stays up: without the fence it would fire on until that link is given
//! up on (6 to 12 s at a 6 s heartbeat) while another leads. With it, it
//! fires no tick later than a fence (2 s) after the cut, and the new leader
//! fires none of the ticks it fired.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::{Job, JobContext, JobError, Perform};
use jobs_test::amqprs::channel::BasicConsumeArguments;
use jobs_test::*;
use jobs_worker::{CatchUp, Schedule, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "fence.work")]
struct FenceTick {
    by: String,
}

impl Perform for FenceTick {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

const SINK: &str = "fence.sink";

fn start(amqp: jobs_core::AmqpConfig, by: &str, catch_up: CatchUp) -> tokio::sync::oneshot::Sender<()> {
    let schedule =
        Schedule::new("fence-tick", "* * * * * *", FenceTick { by: by.into() }).queue(SINK).catch_up(catch_up);
    let config = WorkerConfig { id: Some(format!("fence-{by}")), ..WorkerConfig::default() };
    let worker = Worker::builder().job::<FenceTick>().amqp(amqp).config(config).schedule(schedule).build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    stop
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_link_goes_silent_fires_nothing_past_its_fence_while_its_client_is_up() {
    let vhost = TestVhost::create("fence").await;
    let url = vhost.url();
    let relay = Relay::start().await;
    let relayed = format!("{}/{}", relay.url.rsplit_once('/').unwrap().0, percent_encode(&vhost.name));
    let mut silent = config_for(&relayed);
    silent.heartbeat = 6;

    // Every tick in the sink: its second → who fired it.
    let fired: Arc<Mutex<BTreeMap<i64, Vec<String>>>> = Arc::default();
    let raw = raw_connection_to(&url).await;
    let first = start(silent, "a", CatchUp::Last);
    wait_until("the first leader's ticks", Duration::from_secs(30), || async {
        try_counts(&raw, SINK).await.is_some_and(|(ready, _)| ready >= 3)
    })
    .await;
    let channel = raw.open_channel(None).await.unwrap();
    let (_, mut rx) =
        channel.basic_consume_rx(BasicConsumeArguments::new(SINK, "fence-test").auto_ack(true).finish()).await.unwrap();
    let reading = tokio::spawn({
        let fired = fired.clone();
        async move {
            while let Some(message) = rx.recv().await {
                let id = message.basic_properties.as_ref().and_then(|p| p.message_id()).unwrap().clone();
                let tick: FenceTick = jobs_core::plumbing::decode(message.content.as_deref().unwrap()).unwrap();
                let second: i64 = id.rsplit('-').next().unwrap().parse().unwrap();
                fired.lock().unwrap().entry(second).or_default().push(tick.by);
            }
        }
    });
    // The second stands by (it fires only what comes after it leads: skip).
    let second = start(config_for(&url), "b", CatchUp::Skip);
    wait_for_consumers(&raw, FenceTick::QUEUE, 2).await;

    assert_eq!(relay.cut_named("fence-a:scheduler"), 1, "the first's leadership link, alone");
    let cut = now_seconds();
    wait_until("three ticks from the second", Duration::from_secs(60), || async {
        fired.lock().unwrap().values().flatten().filter(|by| *by == "b").count() >= 3
    })
    .await;
    let fired = fired.lock().unwrap().clone();
    let by_first: Vec<i64> = fired.iter().filter(|(_, by)| by.iter().any(|b| b == "a")).map(|(t, _)| *t).collect();
    let fence = 2.0; // a third of the 6 s heartbeat
    assert!(
        by_first.iter().all(|t| (*t as f64) <= cut + fence + 0.5),
        "the silent leader fired nothing past its fence ({cut:.1} + {fence} s): {by_first:?}"
    );
    let both: Vec<(&i64, &Vec<String>)> = fired.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(both.is_empty(), "no tick fired twice, by one or both: {both:?}");
    let _ = first.send(());
    let _ = second.send(());
    reading.abort();
    drop(relay);
}
