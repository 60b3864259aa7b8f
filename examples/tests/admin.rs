//! `worker queues` and `worker enqueue <job-type> --json`, with their exit codes.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use examples::Task;
use jobs_core::Job;
use jobs_test::amqprs::channel::{BasicAckArguments, BasicConsumeArguments};
use jobs_test::*;

fn worker(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_worker")).args(args).env("JOBS__AMQP__URL", url).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `worker queues --json` row of `queue`.
fn row(url: &str, queue: &str) -> serde_json::Value {
    let (code, out, err) = worker(url, &["queues", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.into_iter().find(|r| r["queue"] == queue).unwrap_or_else(|| panic!("no row for {queue}: {out}"))
}

#[tokio::test]
async fn enqueue_by_json_and_list_queues_with_their_numbers() {
    // `worker queues` lists the job types' own queues (`task_queue`): a vhost of the test's own.
    let vhost = TestVhost::create("admin").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 15672)).is_ok(),
        "the broker's management API does not answer on 127.0.0.1:15672 (unacked counts come from it); \
         `bash deploy/rabbitmq.sh` enables the plugin"
    );
    let text = unique("from-json");
    let (code, out, err) = worker(&url, &["enqueue", "Task", "--json", &format!(r#"{{"message":"{text}"}}"#)]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 24, "prints the job id: {out}");
    let client = jobs_core::Client::new(config_for(&url));
    for n in 0..2 {
        client.enqueue(&Task { message: format!("more {n}") }).await.unwrap();
    }
    let channel = raw.open_channel(None).await.unwrap();
    for n in 0..2 {
        let body = jobs_core::plumbing::encode(&Task { message: format!("dead {n}") }).unwrap();
        let props = jobs_core::plumbing::job_properties("Task", &jobs_core::JobId::new(), 1);
        let args = jobs_test::amqprs::channel::BasicPublishArguments::new("", &format!("{}.dead", Task::QUEUE));
        channel.basic_publish(props, body, args).await.unwrap();
    }
    wait_until("three ready, two dead, nothing held", Duration::from_secs(20), || async {
        let row = row(&url, Task::QUEUE);
        (row["ready"].as_u64(), row["dead"].as_u64(), row["consumers"].as_u64(), row["unacked"].as_u64())
            == (Some(3), Some(2), Some(0), Some(0))
    })
    .await;

    // Take the three and hold them unacked; ours is among them.
    let args = BasicConsumeArguments::new(Task::QUEUE, "admin-test").manual_ack(true).finish();
    let (_, mut rx) = channel.basic_consume_rx(args).await.unwrap();
    let mut held = Vec::new();
    while held.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        let (props, body) = (message.basic_properties.unwrap(), message.content.unwrap());
        held.push(message.deliver.unwrap().delivery_tag());
        if jobs_core::plumbing::decode::<Task>(&body).unwrap().message == text {
            assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
            assert_eq!(props.message_type().map(String::as_str), Some("Task"));
        }
    }
    // The management API counts them as unacked (its statistics refresh every few seconds).
    wait_until("`worker queues` to show the three held as unacked", Duration::from_secs(20), || async {
        let row = row(&url, Task::QUEUE);
        (row["ready"].as_u64(), row["unacked"].as_u64(), row["consumers"].as_u64(), row["dead"].as_u64())
            == (Some(0), Some(3), Some(1), Some(2))
    })
    .await;
    let (code, table, _) = worker(&url, &["queues"]);
    assert_eq!(code, Some(0));
    // A unique type's queue says so.
    assert_eq!(row(&url, "reindex")["unique"], serde_json::json!(["RebuildIndex for 30m by index"]));
    assert!(
        table.lines().any(|l| l.starts_with("reindex") && l.contains("unique: RebuildIndex for 30m by index")),
        "{table}"
    );
    assert!(table.lines().next().unwrap().contains("unacked") && table.contains(Task::QUEUE), "{table}");
    // `worker queues pause|resume`: the record in jobs.control, shown with who paused it.
    let (code, out, err) = worker(&url, &["queues", "pause", Task::QUEUE]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("paused {}", Task::QUEUE)), "{out}");
    let paused = row(&url, Task::QUEUE);
    assert_eq!(paused["paused"], true, "{paused}");
    assert!(paused["paused_by"].as_str().is_some_and(|by| by.contains('@')), "{paused}");
    let (_, table, _) = worker(&url, &["queues"]);
    assert!(table.lines().any(|l| l.starts_with(Task::QUEUE) && l.contains("paused by")), "{table}");
    let (code, _, err) = worker(&url, &["queues", "resume", Task::QUEUE]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(row(&url, Task::QUEUE)["paused"], false);
    for tag in held {
        channel.basic_ack(BasicAckArguments::new(tag, false)).await.unwrap();
    }
    let _ = channel.close().await;

    let (code, _, err) = worker(&url, &["enqueue", "NoSuchJob", "--json", "{}"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no job type `NoSuchJob`") && err.contains("Task"), "{err}");
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"msg": 1}"#]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not fit job type `Task`"), "{err}");
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", "{not json"]);
    assert_eq!((code, err.contains("not JSON")), (Some(2), true), "{err}");
    // Task's queue takes no priorities: bad input, nothing sent.
    let (code, _, err) = worker(&url, &["enqueue", "Task", "--json", r#"{"message":"p"}"#, "--priority", "5"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("takes no priorities"), "{err}");
    assert_eq!(row(&url, Task::QUEUE)["priorities"], false);
}

#[tokio::test]
async fn cancel_says_whether_the_job_runs_or_waits_and_the_job_ends_dead_as_cancelled() {
    let url = amqp_url();
    let queue = unique("admin-cancel");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let client = jobs_core::Client::new(amqp_config());
    let on = || jobs_core::EnqueueOptions::new().queue(&queue);
    // Not running: recorded, and applied when it comes up.
    let waiting = client.enqueue_with(&Task { message: "waits.".into() }, on()).await.unwrap();
    let (code, out, err) = worker(&url, &["cancel", waiting.as_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("recorded the cancel of {waiting}: no worker runs it now")), "{out}");
    let args = ["--queues", &queue, "--extra-queues", &queue, "--id", "cancel-admin-worker"];
    let daemon = Process::start_with("cancel-admin", env!("CARGO_BIN_EXE_worker"), &args, &[]);
    wait_for_consumers(&raw, &queue, 1).await;
    wait_until("the waiting job dead-lettered unrun", Duration::from_secs(20), || async {
        counts(&raw, &format!("{queue}.dead")).await.0 == 1
    })
    .await;
    assert!(!daemon.has("Received 'waits.'"), "it never ran");
    // Running: the worker says so; the tutorial's task watches its context and stops.
    let running = client.enqueue_with(&Task { message: "runs long..........".into() }, on()).await.unwrap();
    daemon.wait_line("Received 'runs long", Duration::from_secs(20)).await;
    let (code, out, err) = worker(&url, &["cancel", running.as_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("cancelling {running}: it runs on cancel-admin-worker")), "{out}");
    assert!(out.contains(&format!("cancelled {running} while it ran, on cancel-admin-worker")), "{out}");
    daemon.wait_line("Cancelled 'runs long", Duration::from_secs(5)).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 2);
    let letters = jobs_core::DeadLetters::connect(&amqp_config()).await.unwrap();
    let dead = letters.list(&queue, 10).await.unwrap();
    assert!(dead.iter().all(|j| j.error_kind.as_deref() == Some("cancelled")), "{dead:?}");
    let lines = daemon.stop().await;
    assert!(!lines.iter().any(|l| l.contains("Done 'runs long")), "{lines:?}");
}
