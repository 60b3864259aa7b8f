//! `worker queues` and `worker enqueue <job-type> --json`, with their exit codes.
#![allow(clippy::unwrap_used)]

#[path = "../../jobs-worker/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::*;
use examples::Task;
use jobs_core::Job;

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
    let text = unique("from-json");
    let (code, out, err) = worker(&["enqueue", "Task", "--json", &format!(r#"{{"message":"{text}"}}"#)]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 36, "prints the job id: {out}");

    let (code, out, err) = worker(&["queues", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let row = rows.iter().find(|r| r["queue"] == Task::QUEUE).unwrap_or_else(|| panic!("{out}"));
    assert!(row["ready"].as_u64().unwrap() >= 1 && row["dead"].is_u64(), "{row}");
    let (code, table, _) = worker(&["queues"]);
    assert_eq!(code, Some(0));
    assert!(table.lines().next().unwrap().contains("consumers") && table.contains(Task::QUEUE), "{table}");

    // Take our job back out: it is a Task with the given fields and the printed id.
    let channel = raw.open_channel(None).await.unwrap();
    let mut found = false;
    while let Some((props, body)) = get(&channel, Task::QUEUE).await {
        let task: Task = jobs_core::decode(&body).unwrap();
        if task.message == text {
            assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
            assert_eq!(props.message_type().map(String::as_str), Some("Task"));
            found = true;
        }
    }
    assert!(found);

    let (code, _, err) = worker(&["enqueue", "NoSuchJob", "--json", "{}"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no job type `NoSuchJob`") && err.contains("Task"), "{err}");
    let (code, _, err) = worker(&["enqueue", "Task", "--json", r#"{"msg": 1}"#]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not fit job type `Task`"), "{err}");
    let (code, _, err) = worker(&["enqueue", "Task", "--json", "{not json"]);
    assert_eq!((code, err.contains("not JSON")), (Some(2), true), "{err}");
}
