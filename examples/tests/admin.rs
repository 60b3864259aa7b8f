//! `worker queues` and `worker enqueue <job-type> --json`, with their exit codes.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use examples::Task;
use jobs_core::Job;
use jobs_test::amqprs::channel::{BasicAckArguments, BasicConsumeArguments};
use jobs_test::*;

fn worker(args: &[&str]) -> (Option<i32>, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_worker")).args(args).env("JOBS__AMQP__URL", amqp_url()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn enqueue_by_json_and_list_queues() {
    let raw = raw_connection().await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 15672)).is_ok(),
        "the broker's management API does not answer on 127.0.0.1:15672 (unacked counts come from it); \
         `bash deploy/rabbitmq.sh` enables the plugin"
    );
    let text = unique("from-json");
    let (code, out, err) = worker(&["enqueue", "Task", "--json", &format!(r#"{{"message":"{text}"}}"#)]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 24, "prints the job id: {out}");

    // Take the jobs of task_queue and hold them unacked: ours is among them.
    let channel = raw.open_channel(None).await.unwrap();
    let args = BasicConsumeArguments::new(Task::QUEUE, "admin-test").manual_ack(true).finish();
    let (_, mut rx) = channel.basic_consume_rx(args).await.unwrap();
    let mut held = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.unwrap().unwrap();
        let (props, body) = (message.basic_properties.unwrap(), message.content.unwrap());
        held.push(message.deliver.unwrap().delivery_tag());
        if jobs_core::plumbing::decode::<Task>(&body).unwrap().message == text {
            assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
            assert_eq!(props.message_type().map(String::as_str), Some("Task"));
            break;
        }
    }

    // The management API counts them as unacked (its statistics refresh every few seconds).
    let unacked_seen = || async {
        let (code, out, _) = worker(&["queues", "--json"]);
        assert_eq!(code, Some(0));
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let row = rows.iter().find(|r| r["queue"] == Task::QUEUE).cloned().unwrap();
        row["unacked"].as_u64() == Some(held.len() as u64)
            && row["consumers"].as_u64() == Some(1)
            && row["dead"].is_u64()
    };
    wait_until("`worker queues` to show the held jobs as unacked", Duration::from_secs(20), unacked_seen).await;
    let (code, table, _) = worker(&["queues"]);
    assert_eq!(code, Some(0));
    assert!(table.lines().next().unwrap().contains("unacked") && table.contains(Task::QUEUE), "{table}");
    for tag in held {
        channel.basic_ack(BasicAckArguments::new(tag, false)).await.unwrap();
    }
    let _ = channel.close().await;

    let (code, _, err) = worker(&["enqueue", "NoSuchJob", "--json", "{}"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no job type `NoSuchJob`") && err.contains("Task"), "{err}");
    let (code, _, err) = worker(&["enqueue", "Task", "--json", r#"{"msg": 1}"#]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not fit job type `Task`"), "{err}");
    let (code, _, err) = worker(&["enqueue", "Task", "--json", "{not json"]);
    assert_eq!((code, err.contains("not JSON")), (Some(2), true), "{err}");
}
