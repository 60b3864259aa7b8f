//! `examples/periodic/run.sh`, the periodic-jobs example, on a vhost of its
//! own: three workers run the config schedule of `examples/periodic/jobs.toml`,
//! one leads, a kill -9 hands the lead to another, Run now runs once, and
//! every tick ran once (at most the tick of the kill twice).
#![allow(clippy::unwrap_used)]

use jobs_test::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_example_fires_its_config_schedule_through_a_kill_9() {
    let vhost = TestVhost::create("periodic-example").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/periodic/run.sh");
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .env("JOBS__AMQP__URL", vhost.url())
        .env("WORKER_BIN", env!("CARGO_BIN_EXE_worker"))
        .env("RUN_SECONDS", "5")
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), out).await.expect("the example ends").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("leader: periodic-"), "worker schedules names the leader: {text}");
    assert!(text.contains("tick ") && text.contains("*/2 * * * * *"), "{text}");
    assert!(text.contains("periodic: run now enqueued job "), "{text}");
    let fired: usize = text
        .split("the leaders fired ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(fired >= 4, "ticks fired through the kill: {text}");
    assert!(text.contains("every tick ran once"), "{text}");
}
