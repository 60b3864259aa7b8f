//! Retries: attempts counted and spaced by the job type's backoff, then dead;
//! a final failure goes straight to dead; a job over its timeout is retried.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::plumbing::{header_str, header_u64, headers};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

/// (tag, attempt, when)
static ATTEMPTS: Mutex<Vec<(String, u32, Instant)>> = Mutex::new(Vec::new());

fn attempts_of(tag: &str) -> Vec<(u32, Instant)> {
    ATTEMPTS.lock().unwrap().iter().filter(|a| a.0 == tag).map(|a| (a.1, a.2)).collect()
}

fn record(tag: &str, ctx: &JobContext) {
    ATTEMPTS.lock().unwrap().push((tag.to_owned(), ctx.attempt(), Instant::now()));
}

fn one_then_two_seconds(attempt: u32) -> Duration {
    Duration::from_secs(u64::from(attempt))
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 3, backoff = one_then_two_seconds)]
struct AlwaysFails {
    tag: String,
    fatal: bool,
}

impl Perform for AlwaysFails {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        record(&self.tag, &ctx);
        if self.fatal {
            return Err(JobError::fatal(format!("bad input on attempt {}", ctx.attempt())));
        }
        Err(JobError::msg(format!("failure {}", ctx.attempt())))
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 3, timeout = "500ms", backoff = one_then_two_seconds)]
struct SlowFirst {
    tag: String,
}

impl Perform for SlowFirst {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        record(&self.tag, &ctx);
        if ctx.attempt() == 1 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        record(&format!("{}:done", self.tag), &ctx);
        Ok(())
    }
}

/// Set when a `Hangs` job's future is dropped.
static DROPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct DropFlag(String);

impl Drop for DropFlag {
    fn drop(&mut self) {
        DROPPED.lock().unwrap().push(std::mem::take(&mut self.0));
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 1, timeout = "300ms")]
struct Hangs {
    tag: String,
}

impl Perform for Hangs {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        record(&self.tag, &ctx);
        let _flag = DropFlag(self.tag.clone());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        record(&format!("{}:done", self.tag), &ctx);
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 2)]
struct RateLimited {
    tag: String,
}

impl Perform for RateLimited {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        record(&self.tag, &ctx);
        if ctx.attempt() == 1 {
            return Err(JobError::retry_after("429 Too Many Requests", Duration::from_secs(2)));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_job_is_retried_with_its_backoff_then_dead_with_its_history() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("retries", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");
    let id = client
        .enqueue_with(&AlwaysFails { tag: queue.clone(), fatal: false }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();

    wait_until("the job in dead", Duration::from_secs(30), || async { counts(&raw, &dead).await.0 == 1 }).await;
    let attempts = attempts_of(&queue);
    assert_eq!(attempts.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3], "three attempts, counted");
    let gap1 = attempts[1].1 - attempts[0].1;
    let gap2 = attempts[2].1 - attempts[1].1;
    // Backoff 1 s then 2 s, whole seconds through the delay queues: never
    // early; 2 s of room above for a loaded machine.
    assert!(gap1 >= Duration::from_secs(1) && gap1 < Duration::from_secs(3), "first retry after {gap1:?}");
    assert!(gap2 >= Duration::from_secs(2) && gap2 < Duration::from_secs(4), "second retry after {gap2:?}");

    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()), "the same job id throughout");
    assert_eq!(header_u64(&props, headers::ATTEMPT), Some(3));
    assert_eq!(header_str(&props, headers::ERROR), Some("failure 3"));
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("failed"));
    let first = header_u64(&props, headers::FIRST_FAILED_AT).unwrap();
    let last = header_u64(&props, headers::FAILED_AT).unwrap();
    assert!(last >= first + 2, "first failure {first}, last {last}");
    assert_eq!(header_str(&props, headers::HOST), Some(jobs_core::plumbing::hostname().as_str()));
    assert!(props.headers().unwrap().get(&"x-death".try_into().unwrap()).is_none(), "no broker history copied");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await; // each failed delivery was acked once its copy was stored
}

#[tokio::test]
async fn a_final_failure_goes_straight_to_dead() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("fatal", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");
    client
        .enqueue_with(&AlwaysFails { tag: queue.clone(), fatal: true }, EnqueueOptions::new().queue(&queue))
        .await
        .unwrap();
    wait_until("the job in dead", Duration::from_secs(10), || async { counts(&raw, &dead).await.0 == 1 }).await;
    assert_eq!(attempts_of(&queue).len(), 1, "no retry");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("fatal"));
    assert_eq!(header_str(&props, headers::ERROR), Some("bad input on attempt 1"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_job_over_its_timeout_is_cancelled_and_retried() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("timeout", Duration::from_secs(5)).await;
    client.enqueue_with(&SlowFirst { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    let done = format!("{queue}:done");
    wait_until("the retry to finish", Duration::from_secs(20), || async { !attempts_of(&done).is_empty() }).await;
    let attempts = attempts_of(&queue);
    assert_eq!(attempts.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(attempts_of(&done).iter().map(|a| a.0).collect::<Vec<_>>(), [2], "the first attempt never finished");
    let gap = attempts[1].1 - attempts[0].1;
    assert!(gap >= Duration::from_millis(1500), "timeout (0.5 s) then backoff (1 s): {gap:?}");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0);
}

#[tokio::test]
async fn a_job_over_its_timeout_is_cancelled_its_future_dropped_and_its_kind_is_timeout() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("hangs", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");
    client.enqueue_with(&Hangs { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    wait_until("the job in dead", Duration::from_secs(20), || async { counts(&raw, &dead).await.0 == 1 }).await;
    let started = attempts_of(&queue)[0].1;
    assert!(DROPPED.lock().unwrap().contains(&queue), "the job's future was dropped, not left running");
    assert!(attempts_of(&format!("{queue}:done")).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300), "not before its timeout");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("timeout"));
    assert_eq!(header_str(&props, headers::ERROR), Some("timed out after 300ms"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn retry_after_uses_the_delay_the_job_asked_for() {
    let Fixture { queue, client, worker: running, cleanup: _cleanup, .. } =
        Fixture::start("retry-after", Duration::from_secs(5)).await;
    client.enqueue_with(&RateLimited { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    wait_until("the second attempt", Duration::from_secs(20), || async { attempts_of(&queue).len() == 2 }).await;
    let attempts = attempts_of(&queue);
    let gap = attempts[1].1 - attempts[0].1;
    assert!(gap >= Duration::from_secs(2) && gap < Duration::from_secs(4), "{gap:?}");
    running.stop().await.unwrap();
}
