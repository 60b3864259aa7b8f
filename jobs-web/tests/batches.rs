//! The Batches page over HTTP, with a worker of the test's own on a vhost of
//! the test's own (one aggregator per vhost): it names the aggregating
//! worker, shows an open batch with its progress, counts and callbacks, links
//! its dead job to that job's dead-job page, and `/api/batches` says the same;
//! once the dead job is retried to success, the batch is among those that ended.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;

use std::time::Duration;

use jobs_core::{Batch, Client, DeadFilter, DeadLetters, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_web::WebConfig;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

static BAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "web-batches", max_attempts = 1)]
struct Letter {
    n: u32,
}

impl Perform for Letter {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if self.n == 2 && BAD.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(JobError::fatal("no such address"));
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "web-batches")]
struct Summary;

impl Perform for Summary {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batches_page_shows_progress_and_links_dead_jobs() {
    let vhost = TestVhost::create("web-batches").await;
    let amqp = config_for(&vhost.url());
    let raw = raw_connection_to(&vhost.url()).await;
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_secs(1),
        ..worker_config(&["web-batches"], 4, "web-batches-worker", Duration::from_secs(5))
    };
    let worker = spawn_with(amqp.clone(), config);
    wait_for_consumers(&raw, "web-batches", 1).await;
    let port = serve(amqp.clone(), WebConfig::default(), "").await.port;
    let api = || {
        let (status, body) = http_get(port, "/api/batches");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };

    let letters: Vec<Letter> = (0..5).map(|n| Letter { n }).collect();
    let batch = Batch::new().description("Letters to Santa").on_complete(&Summary).on_success(&Summary).jobs(&letters);
    let id = Client::new(amqp.clone()).enqueue_batch(batch).await.unwrap();
    wait_until("the batch complete, one dead", Duration::from_secs(60), || async {
        api()["open"]
            .as_array()
            .is_some_and(|open| open.iter().any(|b| b["id"] == id.as_str() && b["dead"] == 1 && b["succeeded"] == 4))
    })
    .await;
    let state = api();
    assert_eq!(state["aggregator"], "web-batches-worker");
    let open = state["open"].as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap().clone();
    assert_eq!(open["fired"], serde_json::json!(["complete"]), "{open}");
    let dead_id = open["dead_jobs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(open["dead_jobs"][0]["queue"], "web-batches");

    let (status, page) = http_get(port, "/batches");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("aggregated by <span id=\"aggregator\">web-batches-worker</span>"), "{page}");
    assert!(page.contains("Letters to Santa") && page.contains("<progress value=\"5\" max=\"5\">"), "{page}");
    assert!(page.contains(">complete</td>"), "the state: {page}");
    let link = format!("/dead/web-batches/job/{dead_id}");
    assert!(page.contains(&format!("<a href=\"{link}\">")), "the dead job is linked: {page}");
    let (status, dead_page) = http_get(port, &link);
    assert_eq!(status, 200, "the link opens its dead job: {dead_page}");

    // Retried to success: the batch ends, and is listed as ended.
    BAD.store(false, std::sync::atomic::Ordering::SeqCst);
    let dead = DeadLetters::connect(&amqp).await.unwrap();
    assert_eq!(dead.retry("web-batches", &DeadFilter::id(dead_id)).await.unwrap().acted, 1);
    wait_until("the batch among those ended", Duration::from_secs(60), || async {
        api()["recent"].as_array().is_some_and(|recent| recent.iter().any(|b| b["id"] == id.as_str()))
    })
    .await;
    let (_, page) = http_get(port, "/batches");
    assert!(page.contains("no open batch"), "{page}");
    dead.close().await;
    worker.stop().await.unwrap();
}
