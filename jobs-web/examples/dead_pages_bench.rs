//! What a dead-job page view costs as a dead queue grows: 10,000, 100,000
//! and 1,000,000 dead jobs in `<queue>.dead`, each page asked over HTTP of a
//! dashboard in this process (the time a browser waits, less the network),
//! and Retry all of the whole queue; the process's peak memory after each.
//!
//! `AMQP_URL=amqp://guest:guest@127.0.0.1:5672/<vhost> cargo run --release -p jobs-web --example dead_pages_bench [-- 10000,100000]`
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use jobs_core::plumbing::{Destination, Message, Publisher};
use jobs_core::JobId;
use jobs_test::*;
use jobs_web::{Dashboard, WebConfig};

fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The median of `runs` times of `f`, in milliseconds.
fn timed(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .map(|a| a.split(',').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let raw = raw_connection().await;
    let dashboard = Dashboard::new(amqp_config(), WebConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = dashboard.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("RSS at start: {:.1} MB", rss_mb("VmRSS"));
    println!(
        "| dead jobs | count + page 1 (oldest) | last page | newest page 1 | type filter | open the last job | Retry all | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let queue = unique("dead-bench");
        // Gone also when a step fails: a million dead jobs left behind weigh on the broker.
        let cleanup = Cleanup::queues(&[&queue]);
        let declarer = jobs_core::plumbing::topology::Declarer::open(&raw).await.unwrap();
        amqp_config().topology().declare_job_queue(&declarer, &queue).await.unwrap();
        let publisher = Publisher::open(&raw, Duration::from_secs(60)).await.unwrap();
        let dead = Destination::dead(&queue);
        // {"to": "ann@example.com", "n": 42} in MessagePack.
        let body = [&[0x82, 0xa2, b't', b'o', 0xaf][..], b"ann@example.com", &[0xa1, b'n', 0x2a]].concat();
        for start in (0..n).step_by(10_000) {
            let messages = (start..(start + 10_000).min(n))
                .map(|i| {
                    let id = JobId::from(format!("dead-{i:07}").as_str());
                    let kind = if i % 10 == 0 { "Late" } else { "Report" };
                    Message::job(kind, id, body.clone()).into_outgoing(&dead)
                })
                .collect();
            for result in publisher.publish_many(messages).await.unwrap() {
                result.unwrap();
            }
        }
        let answers = move |path: String, expected: u16| {
            move || {
                let (status, body) = http_get(port, &path);
                assert_eq!(status, expected, "{path}: {body}");
            }
        };
        let get = move |path: String| answers(path, 200);
        // A job past the first 100,000 is not looked for (the page says so and names the CLI).
        let past_budget = n > 100_000;
        let last_page = n.div_ceil(50);
        let (q, runs) = (queue.clone(), if n >= 1_000_000 { 1 } else { 3 });
        let (first, last, newest, filter, open);
        (first, last, newest, filter, open) = tokio::task::spawn_blocking(move || {
            (
                timed(5, get(format!("/dead/{q}"))),
                timed(runs, get(format!("/dead/{q}?page={last_page}"))),
                timed(runs, get(format!("/dead/{q}?order=newest"))),
                timed(runs, get(format!("/dead/{q}?type=Late"))),
                timed(runs, answers(format!("/api/dead/{q}/dead-{:07}", n - 1), if past_budget { 404 } else { 200 })),
            )
        })
        .await
        .unwrap();
        let dead_letters = jobs_core::DeadLetters::connect(&amqp_config()).await.unwrap();
        let t = Instant::now();
        let retried = dead_letters.retry(&queue, &jobs_core::DeadFilter::all()).await.unwrap();
        let rate = retried.acted as f64 / t.elapsed().as_secs_f64();
        assert_eq!(retried.acted, n as u64, "{retried:?}");
        dead_letters.close().await;
        let open_note = if past_budget { " (404 after the first 100,000)" } else { "" };
        println!(
            "| {n} | {first:.0} ms | {last:.0} ms | {newest:.0} ms | {filter:.0} ms | {open:.0} ms{open_note} | {rate:.0} jobs/s | {:.0} MB |",
            rss_mb("VmHWM")
        );
        drop(cleanup);
    }
}
