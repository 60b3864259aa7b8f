//! Tutorials 1, 3, 4 and 5 as binaries, against the live broker: hello world,
//! broadcast to every running worker, routing by key, routing by pattern.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_test::*;

const READY: &str = "worker ready";
const T: Duration = Duration::from_secs(20);

fn tag(what: &str) -> String {
    unique(what).replace('.', "-")
}

#[tokio::test]
async fn hello_world_send_and_receive() {
    let queue = unique("hello");
    let _cleanup = Cleanup::queues(&[&queue]);
    drop(raw_connection().await); // fails clearly when no broker answers
    let receiver = Process::start("receive", env!("CARGO_BIN_EXE_receive"), &["--queue", &queue]);
    receiver.wait_line(READY, T).await;
    assert!(receiver.has(" [*] Waiting for messages. To exit press CTRL+C"));
    let (ok, out) = run(env!("CARGO_BIN_EXE_send"), &["--queue", &queue]);
    assert!(ok && out.contains(" [x] Sent 'Hello World!'"), "{out}");
    receiver.wait_line(" [x] Received Hello World!", T).await;
    receiver.stop().await;
}

#[tokio::test]
async fn publish_subscribe_reaches_every_running_receiver() {
    // The tutorial's exchange `logs` is a fixed name: a vhost of the test's own.
    let vhost = TestVhost::create("pubsub").await;
    let url = vhost.url();
    let on = [("JOBS__AMQP__URL", url.as_str())];
    let a = Process::start_with("receive_logs A", env!("CARGO_BIN_EXE_receive_logs"), &[], &on);
    let b = Process::start_with("receive_logs B", env!("CARGO_BIN_EXE_receive_logs"), &[], &on);
    a.wait_line(READY, T).await;
    b.wait_line(READY, T).await;
    let line = format!("info: {}", tag("broadcast"));
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log"), &[&line]);
    assert!(ok && out.contains(&format!(" [x] Sent {line}")), "{out}");
    a.wait_line(&format!(" [x] {line}"), T).await;
    b.wait_line(&format!(" [x] {line}"), T).await;
    a.stop().await;
    // Only running workers get broadcasts: with B gone and A stopped, none is bound.
    b.stop().await;
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log"), &["nobody listens"]);
    assert!(!ok && out.contains("unroutable"), "{out}");
}

#[tokio::test]
async fn routing_delivers_by_severity_and_reports_unroutable_keys() {
    let vhost = TestVhost::create("routing").await;
    let url = vhost.url();
    let on = [("JOBS__AMQP__URL", url.as_str())];
    let errors = Process::start_with("errors", env!("CARGO_BIN_EXE_receive_logs_direct"), &["error"], &on);
    let severities = ["info", "warning", "error"];
    let all = Process::start_with("all", env!("CARGO_BIN_EXE_receive_logs_direct"), &severities, &on);
    errors.wait_line(READY, T).await;
    all.wait_line(READY, T).await;
    let (warning, error) = (tag("disk almost full"), tag("Run. Run. Or it will explode."));
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_direct"), &["warning", &warning]);
    assert!(ok, "{out}");
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_direct"), &["error", &error]);
    assert!(ok && out.contains(&format!(" [x] Sent error:{error}")), "{out}");
    all.wait_line(&format!(" [x] warning:{warning}"), T).await;
    all.wait_line(&format!(" [x] error:{error}"), T).await;
    errors.wait_line(&format!(" [x] error:{error}"), T).await;
    assert!(!errors.has(&warning), "the error-only receiver got a warning");
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_direct"), &["debug", "no one binds debug"]);
    assert!(!ok && out.contains("unroutable") && out.contains("`debug`"), "{out}");
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_receive_logs_direct"), &[]);
    assert!(!ok && out.contains("Usage: receive_logs_direct"), "{out}");
    errors.stop().await;
    all.stop().await;
}

#[tokio::test]
async fn topics_deliver_by_pattern() {
    let vhost = TestVhost::create("topics").await;
    let url = vhost.url();
    let on = [("JOBS__AMQP__URL", url.as_str())];
    let kern = Process::start_with("kern.*", env!("CARGO_BIN_EXE_receive_logs_topic"), &["kern.*"], &on);
    let critical = Process::start_with("*.critical", env!("CARGO_BIN_EXE_receive_logs_topic"), &["*.critical"], &on);
    kern.wait_line(READY, T).await;
    critical.wait_line(READY, T).await;
    let text = tag("A critical kernel error");
    for key in ["kern.critical", "kern.info", "app.critical"] {
        let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_topic"), &[key, &text]);
        assert!(ok, "{key}: {out}");
    }
    kern.wait_line(&format!(" [x] kern.critical:{text}"), T).await;
    kern.wait_line(&format!(" [x] kern.info:{text}"), T).await;
    critical.wait_line(&format!(" [x] kern.critical:{text}"), T).await;
    critical.wait_line(&format!(" [x] app.critical:{text}"), T).await;
    // A later message both patterns match: once it is in, anything wrongly
    // routed before it would be in too (one publisher at a time, in order).
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_topic"), &["kern.critical", "sentinel"]);
    assert!(ok, "{out}");
    kern.wait_line(" [x] kern.critical:sentinel", T).await;
    critical.wait_line(" [x] kern.critical:sentinel", T).await;
    assert!(!kern.has(&format!("app.critical:{text}")));
    assert!(!critical.has(&format!("kern.info:{text}")));
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_emit_log_topic"), &["app.info", &text]);
    assert!(!ok && out.contains("unroutable"), "{out}");
    kern.stop().await;
    critical.stop().await;
}

#[tokio::test]
async fn rpc_client_gets_its_answer_from_rpc_server() {
    let vhost = TestVhost::create("rpc").await;
    let url = vhost.url();
    let server =
        Process::start_with("rpc_server", env!("CARGO_BIN_EXE_rpc_server"), &[], &[("JOBS__AMQP__URL", url.as_str())]);
    server.wait_line(READY, T).await;
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_rpc_client"), &["30"]);
    assert!(ok, "{out}");
    assert!(out.contains(" [x] Requesting fib(30)") && out.contains(" [.] Got 832040"), "{out}");
    server.wait_line(" [.] fib(30)", T).await;
    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_rpc_client"), &["100"]);
    assert!(!ok && out.contains("does not fit in 64 bits"), "the worker's error reaches the caller: {out}");
    server.stop().await;
}

/// Every tutorial binary answers `--help` with its usage, and does nothing
/// else: `manager --help` enqueues no job whose message is `--help`.
#[tokio::test]
async fn every_tutorial_binary_answers_help_with_usage() {
    let vhost = TestVhost::create("help").await;
    let url = vhost.url();
    for (name, binary) in [
        ("send", env!("CARGO_BIN_EXE_send")),
        ("receive", env!("CARGO_BIN_EXE_receive")),
        ("manager", env!("CARGO_BIN_EXE_manager")),
        ("worker", env!("CARGO_BIN_EXE_worker")),
        ("emit_log", env!("CARGO_BIN_EXE_emit_log")),
        ("receive_logs", env!("CARGO_BIN_EXE_receive_logs")),
        ("emit_log_direct", env!("CARGO_BIN_EXE_emit_log_direct")),
        ("receive_logs_direct", env!("CARGO_BIN_EXE_receive_logs_direct")),
        ("emit_log_topic", env!("CARGO_BIN_EXE_emit_log_topic")),
        ("receive_logs_topic", env!("CARGO_BIN_EXE_receive_logs_topic")),
        ("rpc_client", env!("CARGO_BIN_EXE_rpc_client")),
        ("rpc_server", env!("CARGO_BIN_EXE_rpc_server")),
        ("worker_v1", env!("CARGO_BIN_EXE_worker_v1")),
        ("worker_v2", env!("CARGO_BIN_EXE_worker_v2")),
    ] {
        let (ok, out) = run_on(&url, binary, &["--help"]);
        assert!(ok && out.contains(&format!("Usage: {name}")), "{name} --help: {out}");
        assert!(!out.contains("Sent") && !out.contains("Waiting for messages"), "{name} did something: {out}");
    }
    let raw = raw_connection_to(&url).await;
    assert_eq!(try_counts(&raw, "task_queue").await, None, "no job was enqueued: the queue was never declared");
}
