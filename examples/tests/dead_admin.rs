//! Dead jobs: the library call and the `worker dead` command list, retry
//! (attempts reset) and purge them.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use examples::Task;
use jobs_core::plumbing::{header_str, header_u64, headers, job_properties, set_header};
use jobs_core::{DeadFilter, DeadLetters, JobId};
use jobs_test::amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
use jobs_test::amqprs::FieldValue;
use jobs_test::*;

fn worker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_worker")).args(args).env("JOBS__AMQP__URL", amqp_url()).output().unwrap()
}

#[tokio::test]
async fn dead_jobs_are_listed_retried_and_purged() {
    let queue = unique("dead-admin");
    let _cleanup = Cleanup::queues(&[&queue]);
    let dead = format!("{queue}.dead");
    let raw = raw_connection().await;
    let channel = raw.open_channel(None).await.unwrap();
    for name in [&queue, &dead] {
        channel.queue_declare(QueueDeclareArguments::durable_client_named(name)).await.unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..3u32 {
        let id = JobId::new();
        let mut props = job_properties("Task", &id, 5);
        let mut table = props.headers().cloned().unwrap();
        set_header(&mut table, headers::ERROR, FieldValue::from(format!("smtp said no {n}")));
        set_header(&mut table, headers::ERROR_KIND, FieldValue::from("failed"));
        set_header(&mut table, headers::QUEUE, FieldValue::from(queue.as_str()));
        props.with_headers(table);
        let body = jobs_core::plumbing::encode(&Task { message: format!("dead {n}") }).unwrap();
        channel.basic_publish(props, body, BasicPublishArguments::new("", &dead)).await.unwrap();
        ids.push(id.to_string());
    }
    wait_until("three dead jobs", std::time::Duration::from_secs(5), || async { counts(&raw, &dead).await.0 == 3 })
        .await;

    let admin = DeadLetters::connect(&amqp_config()).await.unwrap();
    let listed = admin.list(&queue, 10).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids, "oldest first");
    assert_eq!(listed[1].error.as_deref(), Some("smtp said no 1"));
    assert_eq!(listed[1].attempt, Some(5));
    assert_eq!(listed[1].payload["message"], "dead 1");
    assert_eq!(admin.list(&queue, 2).await.unwrap().len(), 2);
    wait_until("listing leaves them dead", std::time::Duration::from_secs(5), || async {
        counts(&raw, &dead).await.0 == 3
    })
    .await;

    let out = worker(&["dead", "list", &queue, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], ids[0].as_str());
    assert_eq!(lines[0]["error_kind"], "failed");

    let out = worker(&["dead", "show", &queue, "--id", &ids[2]]);
    assert!(out.status.success(), "{out:?}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (shown["error"].as_str(), shown["payload"]["message"].as_str()),
        (Some("smtp said no 2"), Some("dead 2"))
    );
    assert_eq!(worker(&["dead", "show", &queue, "--id", "nope"]).status.code(), Some(2));

    let out = worker(&["dead", "retry", &queue, "--id", &ids[1]]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "retried 1 dead job(s)");
    let out = worker(&["dead", "retry", &queue, "--id", "no-such-job"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = worker(&["dead", "retry", &queue]);
    assert_eq!(out.status.code(), Some(2), "clap: one of --id, --type, --all is required: {out:?}");

    let (props, body) = get(&channel, &queue).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(ids[1].as_str()));
    assert_eq!(header_u64(&props, headers::ATTEMPT), Some(1), "attempts reset");
    assert_eq!(header_str(&props, headers::ERROR), None);
    assert_eq!(jobs_core::plumbing::decode::<Task>(&body).unwrap().message, "dead 1");
    wait_until("two left dead", std::time::Duration::from_secs(5), || async { counts(&raw, &dead).await.0 == 2 }).await;

    let none = admin.purge(&queue, &DeadFilter::of_type("Other")).await.unwrap();
    assert_eq!((none.total, none.scanned, none.acted), (2, 2, 0), "{none:?}");
    let out = worker(&["dead", "purge", &queue, "--type", "Task"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "purged 2 dead job(s)");
    wait_until("none left dead", std::time::Duration::from_secs(5), || async { counts(&raw, &dead).await.0 == 0 })
        .await;
    admin.close().await;
}

/// A job the broker dead-lettered itself (a quorum queue's delivery limit)
/// carries none of the worker's headers: `dead list` shows the broker's reason.
#[tokio::test]
async fn a_job_the_broker_dead_lettered_shows_the_brokers_reason() {
    let queue = unique("delivery-limit");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut amqp = amqp_config();
    amqp.queue_type = jobs_core::QueueType::Quorum;
    let declarer = jobs_core::plumbing::topology::Declarer::open(&raw).await.unwrap();
    amqp.topology().declare_job_queue(&declarer, &queue).await.unwrap();
    let channel = raw.open_channel(None).await.unwrap();
    let body = jobs_core::plumbing::encode(&Task { message: "returned".into() }).unwrap();
    let id = JobId::new();
    channel.basic_publish(job_properties("Task", &id, 1), body, BasicPublishArguments::new("", &queue)).await.unwrap();
    // Handed out and returned unacked over and over, past the queue's delivery limit (100).
    let dead = format!("{queue}.dead");
    let mut returns = 0;
    while try_counts(&raw, &dead).await.map(|c| c.0) != Some(1) {
        assert!(returns < 200, "still not dead-lettered after {returns} returns");
        let get = jobs_test::amqprs::channel::BasicGetArguments::new(&queue);
        if let Some((get_ok, _, _)) = channel.basic_get(get).await.unwrap() {
            let reject = jobs_test::amqprs::channel::BasicRejectArguments::new(get_ok.delivery_tag(), true);
            channel.basic_reject(reject).await.unwrap();
            returns += 1;
        }
    }
    assert!(returns > 100, "returned {returns} times");
    let out = worker(&["dead", "list", &queue, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["error_kind"], "delivery_limit");
    let error = listed["error"].as_str().unwrap();
    assert!(error.contains("dead-lettered by RabbitMQ") && error.contains("x-delivery-limit"), "{error}");
}
