//! Config as operators give it: environment variables (lists as `a,b`),
//! `RUST_LOG` over `log.filter`, exit code 1 naming the key of a bad value,
//! and passwords that never reach a log line, in text or JSON.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_from_the_environment_as_comma_separated_values() {
    // Whether `task_queue` is consumed is asked: a vhost of the test's own.
    let vhost = TestVhost::create("env-lists").await;
    let url = vhost.url();
    let (a, b) = (unique("env-a"), unique("env-b"));
    let raw = raw_connection_to(&url).await;
    let list = format!("{a},{b}");
    let env = [
        ("JOBS__WORKER__QUEUES", list.as_str()),
        ("JOBS__WORKER__EXTRA_QUEUES", list.as_str()),
        ("JOBS__AMQP__URL", url.as_str()),
    ];
    let worker = Process::start_with("env", env!("CARGO_BIN_EXE_worker"), &[], &env);
    wait_for_consumers(&raw, &a, 1).await;
    wait_for_consumers(&raw, &b, 1).await;
    let others = try_counts(&raw, "task_queue").await.map_or(0, |(_, consumers)| consumers);
    assert_eq!(others, 0, "only the queues the environment named");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_wins_over_log_filter() {
    let queue = unique("rust-log");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let args = ["--queues", &queue, "--extra-queues", &queue];
    let quiet = Process::start_with(
        "quiet",
        env!("CARGO_BIN_EXE_worker"),
        &args,
        &[("JOBS__LOG__FILTER", "warn"), ("RUST_LOG", "")],
    );
    let loud = Process::start_with(
        "loud",
        env!("CARGO_BIN_EXE_worker"),
        &args,
        &[("JOBS__LOG__FILTER", "warn"), ("RUST_LOG", "debug")],
    );
    wait_for_consumers(&raw, &queue, 2).await;
    let client = Client::new(amqp_config());
    for n in 0..4 {
        client.enqueue_with(&Task { message: format!("log {n}") }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    }
    wait_until("the jobs done", Duration::from_secs(20), || async {
        quiet.count("] Done 'log") + loud.count("] Done 'log") == 4
    })
    .await;
    assert!(
        loud.has("DEBUG") && loud.has("worker ready"),
        "RUST_LOG=debug wins over log.filter=warn: {:?}",
        loud.lines()
    );
    assert!(!quiet.has("INFO") && !quiet.has("worker ready"), "log.filter=warn alone: {:?}", quiet.lines());
    quiet.stop().await;
    loud.stop().await;
}

#[test]
fn a_bad_value_exits_1_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("JOBS__AMQP__URL", amqp_url())
        .env("JOBS__WORKER__CONCURRENCY", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("invalid configuration `worker.concurrency`: must be at least 1"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("JOBS__AMQP__URL", "http://not-amqp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("`amqp.url`") && text.contains("scheme `http`"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_reaches_a_log_line() {
    let user = TestUser::create("pwlog", ".*", ".*", ".*").await;
    let queue = unique("pwlog");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let args = ["--queues", &queue, "--extra-queues", &queue];
    let url = user.url();
    let env = [("JOBS__AMQP__URL", url.as_str()), ("RUST_LOG", "debug")];
    let text = Process::start_with("text", env!("CARGO_BIN_EXE_worker"), &args, &env);
    let mut json_args = args.to_vec();
    json_args.extend(["--log-format", "json"]);
    let json = Process::start_with("json", env!("CARGO_BIN_EXE_worker"), &json_args, &env);
    wait_for_consumers(&raw, &queue, 2).await;
    // And a failing connection, whose errors carry the URL.
    let wrong = user.url_with(&format!("{}-x", user.password));
    let failing = Process::start_with(
        "failing",
        env!("CARGO_BIN_EXE_worker"),
        &args,
        &[("JOBS__AMQP__URL", &wrong), ("RUST_LOG", "debug")],
    );
    failing.wait_line("refused the login", Duration::from_secs(20)).await;
    text.wait_line("connected to RabbitMQ", Duration::from_secs(5)).await;
    json.wait_line("connected to RabbitMQ", Duration::from_secs(5)).await;
    for process in [&text, &json, &failing] {
        let lines = process.lines();
        if process.name != "failing" {
            let redacted = format!("{}:***@", user.name);
            assert!(lines.iter().any(|l| l.contains(&redacted)), "{}: the URL, redacted: {lines:?}", process.name);
        }
        let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(&user.password)).collect();
        assert!(leaked.is_empty(), "{}: the password in {leaked:?}", process.name);
    }
    text.stop().await;
    json.stop().await;
}

/// A job type whose timeout is not below the broker's `consumer_timeout`
/// (`worker.consumer_timeout`) is warned about at start, by name: a long run
/// would make the broker close the channel and hand the job out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_timeout_not_below_the_consumer_timeout_is_warned_about_at_start() {
    let queue = unique("timeouts");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let args = ["--queues", &queue, "--extra-queues", &queue];
    // The tutorials' Fib has a timeout of 60 s, Task the default 25 min.
    let env = [("JOBS__WORKER__CONSUMER_TIMEOUT", "60s"), ("RUST_LOG", "warn")];
    let worker = Process::start_with("timeouts", env!("CARGO_BIN_EXE_worker"), &args, &env);
    wait_for_consumers(&raw, &queue, 1).await;
    worker.wait_line("job timeout is not below the broker's consumer_timeout", Duration::from_secs(10)).await;
    let warned: Vec<String> =
        worker.lines().into_iter().filter(|l| l.contains("not below the broker's consumer_timeout")).collect();
    assert!(warned.iter().any(|l| l.contains("Fib") && l.contains("60s")), "{warned:?}");
    assert!(warned.iter().any(|l| l.contains("Task")), "25 min is not below 60 s either: {warned:?}");
    assert!(!warned.iter().any(|l| l.contains("Abort") && l.contains("Fail")), "one line each: {warned:?}");
    worker.stop().await;

    let fine = Process::start_with("fine", env!("CARGO_BIN_EXE_worker"), &args, &[("RUST_LOG", "warn")]);
    wait_for_consumers(&raw, &queue, 1).await;
    let lines = fine.stop().await;
    assert!(!lines.iter().any(|l| l.contains("consumer_timeout")), "below the default 30 min: no warning: {lines:?}");
}
