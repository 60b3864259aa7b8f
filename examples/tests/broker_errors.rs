//! Broker errors a newcomer can act on, tried as a new user would: a wrong
//! password, a vhost that does not exist, a missing permission, no broker at
//! all, a message the broker refuses for good, a broker that blocks
//! publishers. Users and permissions are made by the test on the test broker;
//! the size limit and the alarm on a node of the test's own.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use examples::chaos::Fail;
use examples::Task;
use jobs_core::{AmqpConfig, Client, EnqueueOptions, Error};
use jobs_test::*;

/// Runs the tutorial's worker with `url` until it exits (bounded): (exit code, output, seconds).
async fn worker_exit(url: &str, args: &[&str]) -> (Option<i32>, String, f64) {
    let started = Instant::now();
    let mut worker = Process::start_with("worker", env!("CARGO_BIN_EXE_worker"), args, &[("JOBS__AMQP__URL", url)]);
    let status = worker.wait_exit(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the last lines
    (status.code(), worker.lines().join("\n"), started.elapsed().as_secs_f64())
}

fn client(url: &str) -> Client {
    let mut config = AmqpConfig::with_url(url).unwrap();
    config.reconnect_timeout = Duration::from_secs(30);
    Client::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named_and_stops_a_starting_worker_within_seconds() {
    let user = TestUser::create("login", ".*", ".*", ".*").await;
    let wrong = user.url_with("not-the-password-42");

    let (code, out, secs) = worker_exit(&wrong, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(secs < 10.0, "took {secs:.1} s");
    let expected =
        format!("RabbitMQ refused the login of user `{}` at 127.0.0.1:5672: wrong user or password?", user.name);
    assert!(out.contains(&expected), "{out}");
    assert!(!out.contains("not-the-password-42"), "the password in the output: {out}");

    let started = Instant::now();
    let err = client(&wrong).enqueue(&Task { message: "x".into() }).await.unwrap_err();
    assert!(matches!(err, Error::LoginRefused { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "not after the reconnect timeout: {:?}", started.elapsed());
    client(&user.url()).enqueue(&Task { message: "right".into() }).await.expect("the right password works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_that_does_not_exist_is_named_and_stops_a_starting_worker() {
    let url = format!("{}/jobs-no-such-vhost", amqp_url().rsplit_once('/').unwrap().0);
    let (code, out, secs) = worker_exit(&url, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(secs < 10.0, "took {secs:.1} s");
    assert!(out.contains("vhost `jobs-no-such-vhost` does not exist on 127.0.0.1:5672 (amqp.url)"), "{out}");
    assert!(!out.contains("MethodHeader"), "no amqprs debug dump: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_names_the_resource_and_the_permission() {
    let queue = unique("perm");
    let _cleanup = Cleanup::queues(&[&queue]);
    let on = || EnqueueOptions::new().queue(&queue);
    let vhost = jobs_core::BrokerUrl::parse(&amqp_url()).unwrap().vhost();

    let cannot_configure = TestUser::create("noconf", "^$", ".*", ".*").await;
    let err = client(&cannot_configure.url()).enqueue_with(&Task { message: "x".into() }, on()).await.unwrap_err();
    let expected = format!(
        "RabbitMQ refused user `{}` the `configure` permission on queue `{queue}` in vhost `{vhost}`",
        cannot_configure.name
    );
    assert_eq!(err.to_string(), expected);

    // Someone else declares the queue; this user may not publish to the default exchange.
    client(&amqp_url()).enqueue_with(&Task { message: "declares".into() }, on()).await.unwrap();
    let cannot_write = TestUser::create("nowrite", ".*", "^$", ".*").await;
    let started = Instant::now();
    let err = client(&cannot_write.url()).enqueue_with(&Task { message: "x".into() }, on()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "refused at once: {:?}", started.elapsed());
    assert!(
        err.to_string().contains("the `write` permission on exchange `amq.default (the default exchange)`"),
        "{err}"
    );

    // It may read the delay cascade (declaring a queue that dead-letters needs `read`), not the job queue.
    let cannot_read = TestUser::create("noread", ".*", ".*", "^jobs\\.delay\\.").await;
    let args = ["--queues", &queue, "--extra-queues", &queue];
    let (code, out, _) = worker_exit(&cannot_read.url(), &args).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("the `read` permission on queue `{queue}`")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_broker_at_the_first_start_the_first_warning_says_where_and_how_to_start_one() {
    let worker = Process::start_with(
        "worker",
        env!("CARGO_BIN_EXE_worker"),
        &[],
        &[("JOBS__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
    );
    worker.wait_line("cannot reach RabbitMQ", Duration::from_secs(10)).await;
    let first = worker.lines().into_iter().find(|l| l.contains("cannot reach RabbitMQ")).unwrap();
    assert!(first.contains("127.0.0.1:1") && first.contains("bash deploy/rabbitmq.sh"), "{first}");
    assert!(!worker.has("worker stopped"), "it keeps trying: {:?}", worker.lines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_for_good_fails_at_once_and_one_over_our_limit_is_not_sent() {
    let node = TestNode::start_with("maxsize", "max_message_size = 1048576");
    let queue = "refused";
    let mut config = AmqpConfig::with_url(&node.url()).unwrap();
    config.reconnect_timeout = Duration::from_secs(30);
    let client = Client::new(config.clone());
    let on = || EnqueueOptions::new().queue(queue);
    client.enqueue_with(&Task { message: "small".into() }, on()).await.unwrap();

    let started = Instant::now();
    let big = Task { message: "x".repeat(2 << 20) };
    let err = client.enqueue_with(&big, on()).await.unwrap_err();
    assert!(matches!(err, Error::MessageRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than configured max size 1048576"), "the broker's words: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not sent again until the reconnect timeout: {:?}",
        started.elapsed()
    );
    client.enqueue_with(&Task { message: "after".into() }, on()).await.expect("the client goes on");

    config.max_message_size = 1000;
    let limited = Client::new(config);
    let err = limited.enqueue_with(&Task { message: "y".repeat(2000) }, on()).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }), "{err:?}");
    let raw = raw_connection_to(&node.url()).await;
    assert_eq!(counts(&raw, queue).await.0, 2, "small and after; neither large one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_blocks_publishers_says_so_in_the_error_the_log_and_healthz() {
    let node = TestNode::start("alarm");
    let port = spare_port();
    let metrics = format!("127.0.0.1:{port}");
    let worker = Process::start_with(
        "worker",
        env!("CARGO_BIN_EXE_worker"),
        &["--queues", "chaos", "--metrics-addr", &metrics],
        &[("JOBS__AMQP__URL", &node.url())],
    );
    let raw = raw_connection_to(&node.url()).await;
    wait_for_consumers(&raw, "chaos", 1).await;
    let mut config = AmqpConfig::with_url(&node.url()).unwrap();
    config.confirm_timeout = Duration::from_secs(2);
    let client = Client::new(config);
    // Delayed: it reaches the worker through the broker's own cascade, while the alarm is on.
    client
        .enqueue_with(&Fail { note: "during the alarm".into() }, EnqueueOptions::new().delay(Duration::from_secs(2)))
        .await
        .unwrap();

    node.ctl(&["set_vm_memory_high_watermark", "0"]);
    let err = client.enqueue(&Task { message: "blocked".into() }).await.unwrap_err();
    assert!(matches!(err, Error::Blocked { .. }), "{err:?}");
    assert!(err.to_string().contains("blocking publishers (low on memory)"), "{err}");

    // The failed job's retry is a publish: the worker's connection is blocked too.
    worker.wait_line("failing 'during the alarm' (attempt 1)", Duration::from_secs(20)).await;
    worker.wait_line("a resource alarm on the broker", Duration::from_secs(20)).await;
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(
        (code, body.trim()),
        (200, "degraded: RabbitMQ is blocking publishers (low on memory): retries and dead letters wait")
    );

    node.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    worker.wait_line("RabbitMQ unblocked publishers", Duration::from_secs(20)).await;
    worker.wait_line("failing 'during the alarm' (attempt 2)", Duration::from_secs(20)).await;
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".into()));
    assert_eq!(worker.count("a resource alarm on the broker"), 1, "one line for the block: {:?}", worker.lines());
    assert_eq!(worker.count("RabbitMQ unblocked publishers"), 1, "one for the unblock");
    worker.stop().await;
}
