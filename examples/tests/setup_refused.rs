//! A broker that keeps refusing a worker's setup takes no jobs and counts no
//! crashes: the permission to declare one of its queues is taken away after
//! it started, and its connection closed. Every setup after that is refused
//! (the worker says so and tries again, pausing longer each time), and it
//! consumes nothing meanwhile, not even from its other queue, so no job is
//! handed out and dropped (which would come back counted as a crash). With
//! the permission back it runs each job once.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::Task;
use jobs_core::plumbing::{header_u64, headers, Management};
use jobs_core::{Client, EnqueueOptions};
use jobs_test::amqprs::channel::BasicGetArguments;
use jobs_test::*;
use serde_json::json;

fn encode(text: &str) -> String {
    percent_encode(text)
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_string() } else { format!("\\{c}") }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_keeps_refusing_a_setup_takes_no_jobs_and_counts_no_crashes() {
    let (open, refused) = (unique("setup-open"), unique("setup-refused"));
    let _cleanup = Cleanup::queues(&[&open, &refused]);
    let user = TestUser::create("setup", ".*", ".*", ".*").await;
    let raw = raw_connection().await;
    let queues = format!("{open},{refused}");
    let worker = Process::start_with(
        "setup",
        env!("CARGO_BIN_EXE_worker"),
        &["--queues", &queues, "--extra-queues", &queues, "--id", "setup-worker"],
        &[("JOBS__AMQP__URL", &user.url())],
    );
    wait_for_consumers(&raw, &open, 1).await;
    wait_for_consumers(&raw, &refused, 1).await;

    // `configure` on one queue taken away, and the worker's connection closed.
    let management = Management::new(&amqp_config());
    let permissions = format!("/api/permissions/{}/{}", encode(management.vhost()), encode(&user.name));
    let rules = json!({ "configure": format!("^(?!{}).*", regex_escape(&refused)), "write": ".*", "read": ".*" });
    management.put(&permissions, &rules).await.unwrap();
    let of_user = || async {
        let listed = management.get("/api/connections").await.unwrap_or_default();
        let names = listed.as_array().map(|all| {
            all.iter()
                .filter(|c| c["user"] == user.name.as_str())
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        });
        names.unwrap_or_default()
    };
    wait_until("the worker's connection in the management API", Duration::from_secs(20), || async {
        !of_user().await.is_empty()
    })
    .await;
    for name in of_user().await {
        management.delete(&format!("/api/connections/{}", encode(&name))).await.unwrap();
    }
    wait_until("the worker to stop consuming", Duration::from_secs(20), || async {
        try_counts(&raw, &open).await.is_some_and(|c| c.1 == 0)
    })
    .await;
    // Messages without dots: a task takes a second per dot.
    let tag = open.replace('.', "-");
    let client = Client::new(amqp_config());
    for n in 0..5 {
        let task = Task { message: format!("{tag}-{n}") };
        client.enqueue_with(&task, EnqueueOptions::new().queue(&open)).await.unwrap();
    }
    wait_until("three refused setups", Duration::from_secs(60), || async {
        worker.count("cannot set up consuming; retrying") >= 3
    })
    .await;
    assert!(worker.has("the `configure` permission on queue"), "it says which permission: {:?}", worker.lines());
    assert_eq!(counts(&raw, &open).await, (5, 0), "all five ready, no consumer: none taken");
    assert!(!worker.has(&format!("Received '{tag}-")), "none ran");
    let channel = raw.open_channel(None).await.unwrap();
    for _ in 0..5 {
        let (get_ok, props, _) = channel.basic_get(BasicGetArguments::new(&open)).await.unwrap().unwrap();
        assert!(!get_ok.redelivered(), "never handed out before");
        assert_eq!(header_u64(&props, headers::CRASHES), None, "no crash counted");
    }
    let _ = channel.close().await; // the five go back, as they were

    management.put(&permissions, &json!({ "configure": ".*", "write": ".*", "read": ".*" })).await.unwrap();
    wait_until("each job to run once the setup works", Duration::from_secs(60), || async {
        (0..5).all(|n| worker.count(&format!("Done '{tag}-{n}'")) == 1)
    })
    .await;
    assert!(worker.is_running_now(), "it never exited");
    worker.stop().await;
    assert_acked(&raw, &open).await;
    assert_eq!(counts(&raw, &format!("{open}.dead")).await.0, 0, "none dead");
}
