//! The dashboard's history survives restarts: a new dashboard reads the
//! heartbeat stream back from the start of its window, so its chart still has
//! the earlier minutes; and when the broker's app stops and starts, the
//! dashboard reconnects by itself and reads on from where it stopped.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;

use std::time::Duration;

use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_web::WebConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Tick;

impl Perform for Tick {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn succeeded_last_hour(port: u16) -> u64 {
    let body = http_get(port, "/api/overview?range=1h").1;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["last_hour"]["succeeded"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_survives_a_dashboard_restart_and_the_dashboard_a_broker_restart() {
    let node = TestNode::start("web-restarts");
    let url = node.url();
    let queue = "ticks";
    let mut config = worker_config(&[queue], 1, "ticks-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(300);
    let running = spawn_with(config_for(&url), config);
    let client = jobs_core::Client::new(config_for(&url));
    for _ in 0..20 {
        client.enqueue_with(&Tick, EnqueueOptions::new().queue(queue)).await.unwrap();
    }

    let served = serve(config_for(&url), WebConfig::default(), "").await;
    let first = served.port;
    wait_until("the first dashboard to count the 20", Duration::from_secs(30), || async {
        succeeded_last_hour(first) == 20
    })
    .await;
    served.tasks.iter().for_each(|t| t.abort());

    // A new dashboard: the earlier minutes are read back from the stream.
    let second = serve(config_for(&url), WebConfig::default(), "").await.port;
    wait_until("the new dashboard to show the earlier 20", Duration::from_secs(30), || async {
        succeeded_last_hour(second) == 20
    })
    .await;

    // The broker's app stops: the dashboard says so, and comes back by itself.
    node.ctl(&["stop_app"]);
    wait_until("the dashboard to notice", Duration::from_secs(30), || async { http_get(second, "/healthz").0 == 503 })
        .await;
    let page = http_get(second, "/").1;
    assert!(page.contains("broker:") && !page.contains("broker connected"), "the page says the broker is away");
    node.ctl(&["start_app"]);
    wait_until("the dashboard to reconnect", Duration::from_secs(60), || async {
        http_get(second, "/healthz").0 == 200
    })
    .await;
    for _ in 0..5 {
        client.enqueue_with(&Tick, EnqueueOptions::new().queue(queue)).await.unwrap();
    }
    wait_until("new beats counted once, old ones not twice", Duration::from_secs(60), || async {
        succeeded_last_hour(second) == 25
    })
    .await;
    // And still once after more beats have been read (a reader that went back
    // over the stream would add them again now).
    let last_beat = || {
        let body = http_get(second, "/api/workers").1;
        let workers: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        workers
            .as_array()
            .and_then(|w| w.iter().find(|w| w["id"] == "ticks-worker"))
            .and_then(|w| w["last_beat_ms"].as_u64())
    };
    let seen = last_beat().expect("the worker on the dashboard");
    wait_until("five more beats read", Duration::from_secs(30), || async {
        last_beat().is_some_and(|at| at >= seen + 5 * 300)
    })
    .await;
    assert_eq!(succeeded_last_hour(second), 25, "counted once after further beats too");
    running.stop().await.unwrap();
}
