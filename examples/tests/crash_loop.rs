//! A job that kills its worker process comes back; after `amqp.max_crashes`
//! returns it goes to `<queue>.dead`, while the jobs behind it run.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use examples::{chaos::Abort, Task};
use jobs_core::plumbing::{header_str, header_u64, headers};
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_classic_queues_a_job_that_aborts_its_worker_is_dead_after_max_crashes_and_others_run() {
    crash_loop("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_quorum_queues_a_job_that_aborts_its_worker_is_dead_after_max_crashes_and_others_run() {
    crash_loop("quorum").await;
}

async fn crash_loop(queue_type: &str) {
    let queue = unique(&format!("crash-loop-{queue_type}"));
    let _cleanup = Cleanup::queues(&[&queue]);
    let dead = format!("{queue}.dead");
    let raw = raw_connection().await;
    let mut amqp = amqp_config();
    amqp.queue_type = if queue_type == "quorum" { jobs_core::QueueType::Quorum } else { jobs_core::QueueType::Classic };
    let client = Client::new(amqp);
    let on = || EnqueueOptions::new().queue(&queue);
    let crash_id = client.enqueue_with(&Abort { note: "boom".into() }, on()).await.unwrap();
    for n in 0..5 {
        client.enqueue_with(&Task { message: format!("after-crash-{n}") }, on()).await.unwrap();
    }

    // Play systemd's Restart=always: start a worker again whenever one dies.
    let mut output = String::new();
    let mut starts = 0;
    let start = Instant::now();
    loop {
        let done = output.matches("] Done 'after-crash-").count();
        let dead_count = try_counts(&raw, &dead).await.map(|c| c.0).unwrap_or(0);
        if dead_count == 1 && done == 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "no end to the crash loop after {starts} starts:\n{output}");
        starts += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args([
                "--queues",
                &queue,
                "--extra-queues",
                &queue,
                "--id",
                &format!("crash-{starts}"),
                "--grace-period",
                "1s",
            ])
            .env("JOBS__AMQP__URL", amqp_url())
            .env("JOBS__AMQP__MAX_CRASHES", "2")
            .env("JOBS__AMQP__QUEUE_TYPE", queue_type)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it work until it dies or everything is settled, then stop it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let settled = try_counts(&raw, &dead).await.map(|c| c.0) == Some(1)
                && try_counts(&raw, &queue).await.map(|c| c.0) == Some(0);
            if settled || Instant::now() > deadline {
                let _ = Command::new("kill").arg("-15").arg(child.id().to_string()).status();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut text = String::new();
        child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
        output.push_str(&text);
    }

    let aborts = output.matches("aborting the process for 'boom'").count();
    assert_eq!(aborts, 3, "ran once and after each of 2 returns, then dead:\n{output}");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(crash_id.as_str()));
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("crashed"));
    assert_eq!(header_u64(&props, headers::CRASHES), Some(2));
    assert!(header_str(&props, headers::ERROR).unwrap().contains("came back unacked 3 times"));
    // Every other job was acked: the last worker stopped and nothing came back.
    assert_acked(&raw, &queue).await;
}
