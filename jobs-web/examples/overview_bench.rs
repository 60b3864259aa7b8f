//! How fast the overview renders with a large history, and how much memory
//! that history takes: 50 queues, 100 workers, 7 days of their heartbeats at
//! 5 s (12 million beats), made up in memory, taken in as the reader does.
//!
//! `cargo run --release -p jobs-web --example overview_bench` (no broker needed).

use std::time::{Duration, Instant};

use jobs_core::plumbing::events::{Heartbeat, RunningJob, TypeCounts, DURATION_BUCKETS};
use jobs_web::__bench::{add_beat, render_overview, set_queues};
use jobs_web::{Dashboard, WebConfig};

const WORKERS: u64 = 100;
const QUEUES: usize = 50;
const DAYS: u64 = 7;
const BEAT_MS: u64 = 5_000;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let dashboard = Dashboard::new(jobs_core::AmqpConfig::default(), WebConfig::default())?;
    let rss_before = rss_mb();
    let beats_per_worker = DAYS * 86_400_000 / BEAT_MS;
    let started = Instant::now();
    let mut offset = 0;
    for step in 0..beats_per_worker {
        let at = now - DAYS * 86_400_000 + step * BEAT_MS;
        for w in 0..WORKERS {
            let job_type = format!("Job{}", (w + step) % 20);
            let mut durations = vec![0; DURATION_BUCKETS.len() + 1];
            durations[(step % 8) as usize] = 10;
            let beat = Heartbeat {
                worker: format!("host-{}:{}:0", w / 4, 1000 + w),
                host: format!("host-{}", w / 4),
                pid: 1000 + w as u32,
                version: "0.1.0".into(),
                started_at_ms: now - DAYS * 86_400_000,
                sent_at_ms: at,
                interval_ms: BEAT_MS,
                queues: vec![format!("queue-{}", w as usize % QUEUES)],
                exchanges: vec![],
                concurrency: 4,
                stopping: false,
                running: vec![RunningJob {
                    id: format!("{step:024x}"),
                    job_type: job_type.clone(),
                    queue: format!("queue-{}", w as usize % QUEUES),
                    attempt: 1,
                    started_at_ms: at - 1000,
                    progress: Some(0.5),
                    progress_text: Some("half way".into()),
                }],
                counts: vec![TypeCounts {
                    job_type,
                    started: 10,
                    succeeded: 9,
                    failed: [("failed".to_string(), 1)].into(),
                    retried: 1,
                    dead: 0,
                    interrupted: 0,
                    rate_limited: 0,
                    duplicates: 0,
                    durations,
                }],
                scheduler: None,
                batches: None,
                limits: vec![],
                rates: vec![],
                unique_keys: None,
                weights: vec![],
            };
            add_beat(&dashboard, offset, beat);
            offset += 1;
        }
    }
    let fill = started.elapsed();
    set_queues(
        &dashboard,
        (0..QUEUES).map(|q| (format!("queue-{q}"), q as u64 * 10, 4, 2, q as u64, 120.5, 119.0)).collect::<Vec<_>>(),
    );
    let rss_after = rss_mb();
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..50 {
        let t = Instant::now();
        bytes = render_overview(&dashboard, now).len();
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "history: {WORKERS} workers, {QUEUES} queues, {DAYS} days of beats every {} s: {offset} beats taken in {:.1} s",
        BEAT_MS / 1000,
        fill.as_secs_f64()
    );
    println!(
        "overview (7 days), 50 renders: median {:.2} ms, max {:.2} ms, {bytes} bytes",
        ms(times[25]),
        ms(times[49])
    );
    println!("dashboard RSS: {rss_before:.1} MB before the history, {rss_after:.1} MB with it");
    Ok(())
}
