//! Heartbeats: a worker tells the stream `jobs.events` who it is, the job it
//! runs and what its jobs did since the last beat; its last beat says it stopped.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use jobs_core::plumbing::events::{EventReader, Heartbeat, StartAt};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 1)]
struct Beat {
    ms: u64,
    fail: bool,
}

impl Perform for Beat {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if self.fail {
            return Err(JobError::msg("no"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_tell_the_worker_its_running_job_its_counts_and_its_stop() {
    let queue = unique("beats");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let since = SystemTime::now();
    let mut config = worker_config(&[&queue], 1, &format!("{queue}-worker"), Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(300);
    let running = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;
    let client = jobs_core::Client::new(amqp_config());
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Beat { ms: 0, fail: false }, on()).await.unwrap();
    client.enqueue_with(&Beat { ms: 0, fail: true }, on()).await.unwrap();
    let slow = client.enqueue_with(&Beat { ms: 1500, fail: false }, on()).await.unwrap();

    let mut reader = EventReader::open(&raw, StartAt::Time(since - Duration::from_secs(1))).await.unwrap();
    let worker = format!("{queue}-worker");
    let mut beats: Vec<Heartbeat> = Vec::new();
    let mut saw_running = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !saw_running {
        let (_, beat) = tokio::time::timeout_at(deadline, reader.next()).await.expect("beats come").unwrap();
        if beat.worker != worker {
            continue; // other tests' workers
        }
        saw_running = beat.running.iter().any(|j| j.id == slow.as_str() && j.queue == queue && j.job_type == "Beat");
        beats.push(beat);
    }
    let first = &beats[0];
    assert_eq!((first.queues.as_slice(), first.interval_ms, first.stopping), (&[queue.clone()][..], 300, false));
    assert_eq!(first.pid, std::process::id());

    running.stop().await.unwrap();
    loop {
        let (_, beat) = tokio::time::timeout_at(deadline, reader.next()).await.expect("the last beat").unwrap();
        if beat.worker == worker {
            let stopping = beat.stopping;
            beats.push(beat);
            if stopping {
                break;
            }
        }
    }
    let last = beats.last().unwrap();
    assert!(last.running.is_empty(), "nothing runs after the stop");
    // Summed over the beats: each event counted once, in some beat.
    let sum = |f: &dyn Fn(&jobs_core::plumbing::events::TypeCounts) -> u64| -> u64 {
        beats.iter().flat_map(|b| &b.counts).filter(|c| c.job_type == "Beat").map(f).sum()
    };
    assert_eq!(sum(&|c| c.started), 3);
    assert_eq!(sum(&|c| c.succeeded), 2);
    assert_eq!(sum(&|c| c.failed.get("failed").copied().unwrap_or(0)), 1);
    assert_eq!(sum(&|c| c.dead), 1);
    assert_eq!(sum(&|c| c.durations.iter().sum()), 3);
    reader.close().await;
}
