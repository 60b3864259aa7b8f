//! The aggregating worker's leadership link cut silently (its connections
//! go through a relay that stops carrying that link only): past its fence it
//! fires nothing, another worker takes the lead once the broker gives up on
//! the link, and every batch's callbacks run once: none twice, none lost,
//! for a batch that ended before the cut and one that ended while no one led.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::prelude::*;
use jobs_core::Batch;
use jobs_test::*;
use jobs_worker::{Worker, WorkerConfig};

static FIRED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn fired(id: &str) -> usize {
    FIRED.lock().unwrap().iter().filter(|f| f.starts_with(id)).count()
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "batch-fence")]
struct Work;

impl Perform for Work {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "batch-fence")]
struct Callback;

impl Perform for Callback {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        FIRED.lock().unwrap().push(ctx.job_id().to_string());
        Ok(())
    }
}

fn start(amqp: jobs_core::AmqpConfig, by: &str) -> tokio::sync::oneshot::Sender<()> {
    init_logs();
    let config = WorkerConfig { id: Some(format!("bfence-{by}")), concurrency: 4, ..WorkerConfig::default() };
    let worker = Worker::builder().job::<Work>().job::<Callback>().amqp(amqp).config(config).build().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    stop
}

fn batch(n: usize) -> Batch {
    let jobs: Vec<Work> = (0..n).map(|_| Work).collect();
    Batch::new().on_complete(&Callback).on_success(&Callback).jobs(&jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_whose_link_goes_silent_fires_no_callback_twice_and_loses_none() {
    let vhost = TestVhost::create("batch-fence").await;
    let url = vhost.url();
    let relay = Relay::start().await;
    let relayed = format!("{}/{}", relay.url.rsplit_once('/').unwrap().0, percent_encode(&vhost.name));
    let mut silent = config_for(&relayed);
    silent.heartbeat = 6;
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));

    // The first worker alone: it aggregates, and a batch ends under it.
    let first = start(silent, "a");
    wait_for_consumers(&raw, "batch-fence", 1).await;
    let before = client.enqueue_batch(batch(50)).await.unwrap();
    wait_until("the first batch's callbacks", Duration::from_secs(30), || async { fired(before.as_str()) == 2 }).await;
    let second = start(config_for(&url), "b");
    wait_for_consumers(&raw, "batch-fence", 2).await;

    assert_eq!(relay.cut_named("bfence-a:batch aggregator"), 1, "the first's leadership link, alone");
    // Deliberate: past the first's fence (2 s, a third of its 6 s heartbeat)
    // and before the broker gives up on its link: no worker may fire now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = client.enqueue_batch(batch(50)).await.unwrap();
    wait_until("the second batch's callbacks, from the new aggregator", Duration::from_secs(60), || async {
        fired(during.as_str()) >= 2
    })
    .await;
    // Deliberate: a few seconds for a repeated callback to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fired(before.as_str()), 2, "the first batch's callbacks ran once each: {:?}", FIRED.lock().unwrap());
    assert_eq!(fired(during.as_str()), 2, "the second batch's callbacks ran once each: {:?}", FIRED.lock().unwrap());
    let _ = first.send(());
    let _ = second.send(());
    drop(relay);
}
