//! Expiry on a live broker: a job not started by its deadline is not run and
//! is dead as `expired` (one with time left runs); a retry that would come
//! after the deadline is dead at once; a call whose caller gave up is not
//! run by a worker started after it (nor answered).
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use jobs_core::{Client, DeadLetters, EnqueueOptions, Error, Job, JobContext, JobError, Perform, Respond};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

/// The tags of the jobs that ran.
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn ran(tag: &str) -> usize {
    RAN.lock().unwrap().iter().filter(|t| *t == tag).count()
}

/// Worth an hour after its enqueue; fails when `fail`.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "expiry-test-report", expires_in = "1h")]
struct Report {
    tag: String,
    fail: bool,
}

impl Perform for Report {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        RAN.lock().unwrap().push(self.tag.clone());
        if self.fail {
            return Err(JobError::msg("the report service is down"));
        }
        Ok(())
    }
}

/// A call.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "expiry-test-quote", rpc)]
struct Quote {
    tag: String,
}

impl Respond for Quote {
    type Output = u64;

    async fn respond(self, _ctx: JobContext) -> Result<u64, JobError> {
        RAN.lock().unwrap().push(self.tag);
        Ok(42)
    }
}

fn config(queues: &[&str], id: &str) -> WorkerConfig {
    worker_config(queues, 2, id, Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_is_dead_as_expired_and_one_with_time_left_runs() {
    let vhost = TestVhost::create("expiry-backlog").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let (late, fresh, typed) = (unique("late"), unique("fresh"), unique("typed"));
    // A backlog: its deadline passed while it waited (a second ago).
    let past = EnqueueOptions::new().expires_at(SystemTime::now() - Duration::from_secs(1));
    let late_id = client.enqueue_with(&Report { tag: late.clone(), fail: false }, past).await.unwrap();
    let within = EnqueueOptions::new().expires_in(Duration::from_secs(3600));
    client.enqueue_with(&Report { tag: fresh.clone(), fail: false }, within).await.unwrap();
    client.enqueue(&Report { tag: typed.clone(), fail: false }).await.unwrap(); // the type's hour
                                                                                // The type's hour is on the message: one sent to a queue no worker reads, looked at.
    let peek = unique("expiry-peek");
    client
        .enqueue_with(&Report { tag: unique("peek"), fail: false }, EnqueueOptions::new().queue(&peek))
        .await
        .unwrap();
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &peek).await.expect("the message");
    let at = jobs_core::plumbing::header_u64(&props, "x-expires-at").expect("x-expires-at");
    let in_an_hour = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
    assert!(at.abs_diff(in_an_hour) < 60_000, "{at} vs {in_an_hour}");
    let _ = channel.close().await;
    let port = spare_port();
    let mut worker_config = config(&[Report::QUEUE], "expiry-backlog");
    worker_config.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let worker = spawn_with(config_for(&url), worker_config);
    let dead = format!("{}.dead", Report::QUEUE);
    wait_until("the late one dead", Duration::from_secs(30), || async {
        try_counts(&raw, &dead).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    wait_until("the others ran", Duration::from_secs(30), || async { ran(&fresh) == 1 && ran(&typed) == 1 }).await;
    assert_eq!(ran(&late), 0, "a job past its deadline is not run");
    let letters = DeadLetters::connect(&config_for(&url)).await.unwrap();
    let listed = letters.list(Report::QUEUE, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].error_kind.as_deref()), (late_id.as_str(), Some("expired")));
    // `dead retry` gives it its chance: its first life's deadline goes.
    let retried = letters.retry(Report::QUEUE, &jobs_core::DeadFilter::id(late_id.to_string())).await.unwrap();
    assert_eq!(retried.acted, 1);
    wait_until("the retried one ran", Duration::from_secs(30), || async { ran(&late) == 1 }).await;
    letters.close().await;
    // (The recorder is the process's: another test here expires a Report too.)
    let metrics = http_get(port, "/metrics").1;
    let expired: f64 = metrics
        .lines()
        .find(|l| l.starts_with("jobs_failed_total{job=\"Report\",kind=\"expired\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(expired >= 1.0, "{metrics}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_would_come_after_the_deadline_is_dead_at_once() {
    let vhost = TestVhost::create("expiry-retry").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let worker = spawn_with(config_for(&url), config(&[Report::QUEUE], "expiry-retry"));
    wait_for_consumers(&raw, Report::QUEUE, 1).await;
    let client = Client::new(config_for(&url));
    let tag = unique("retry");
    // Its first retry would be 16 s or more after the failure (attempt⁴ + 15 s): past its 10 s.
    let options = EnqueueOptions::new().expires_in(Duration::from_secs(10));
    let started = Instant::now();
    client.enqueue_with(&Report { tag: tag.clone(), fail: true }, options).await.unwrap();
    let dead = format!("{}.dead", Report::QUEUE);
    wait_until("dead at once", Duration::from_secs(8), || async {
        try_counts(&raw, &dead).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    println!("dead {:?} after its enqueue", started.elapsed());
    assert_eq!(ran(&tag), 1, "one run, no retry");
    let letters = DeadLetters::connect(&config_for(&url)).await.unwrap();
    let listed = letters.list(Report::QUEUE, 10).await.unwrap();
    assert_eq!(listed[0].error_kind.as_deref(), Some("expired"), "{listed:?}");
    letters.close().await;
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_gave_up_is_not_run_by_a_worker_started_after_it() {
    let vhost = TestVhost::create("expiry-call").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let tag = unique("call");
    // No worker yet: the call times out, its request waits in the queue.
    let gave_up = client.call_with(&Quote { tag: tag.clone() }, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(gave_up, Error::CallTimeout { .. }), "{gave_up}");
    assert_eq!(counts(&raw, Quote::QUEUE).await.0, 1, "the request waits");
    let worker = spawn_with(config_for(&url), config(&[Quote::QUEUE], "expiry-call"));
    let dead = format!("{}.dead", Quote::QUEUE);
    wait_until("the request dead, as expired", Duration::from_secs(30), || async {
        try_counts(&raw, &dead).await.is_some_and(|c| c.0 == 1)
    })
    .await;
    assert_eq!(ran(&tag), 0, "not run for a caller long gone");
    // A call with time left is answered.
    let answered = client.call_with(&Quote { tag: unique("call-ok") }, Duration::from_secs(20)).await.unwrap();
    assert_eq!(answered, 42);
    worker.stop().await.unwrap();
}

/// Milliseconds since the epoch.
fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueues_and_batch_members_carry_their_deadline() {
    let vhost = TestVhost::create("expiry-bulk").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let channel = raw.open_channel(None).await.unwrap();
    let deadline_of = |props: &jobs_test::amqprs::BasicProperties| {
        jobs_core::plumbing::header_u64(props, "x-expires-at").expect("x-expires-at")
    };
    let report = |tag: &str| Report { tag: unique(tag), fail: false };
    // enqueue_many with a deadline given: on every job.
    let past = SystemTime::now() - Duration::from_secs(1);
    let many = unique("expiry-many");
    let jobs = [report("many"), report("many")];
    client.enqueue_many_with(&jobs, EnqueueOptions::new().queue(&many).expires_at(past)).await.unwrap();
    for _ in 0..2 {
        let (props, _) = get(&channel, &many).await.expect("a bulk job");
        assert_eq!(deadline_of(&props), epoch_ms(past), "the options' deadline");
    }
    // enqueue_iter and a batch's jobs: the type's hour from the call.
    let hour = epoch_ms(SystemTime::now()) + 3_600_000;
    let iter = unique("expiry-iter");
    client.enqueue_iter_with([report("iter")], EnqueueOptions::new().queue(&iter)).await.unwrap();
    let (props, _) = get(&channel, &iter).await.expect("an iter job");
    assert!(deadline_of(&props).abs_diff(hour) < 60_000, "the type's hour");
    client.enqueue_batch(jobs_core::Batch::new().job(&report("batch"))).await.unwrap();
    let (props, _) = get(&channel, Report::QUEUE).await.expect("a batch's job");
    assert!(deadline_of(&props).abs_diff(hour) < 60_000, "a batch's job: the type's hour");
    // Bulk jobs past their deadline are dead as expired, not run.
    client
        .enqueue_many_with(&[report("late-bulk"), report("late-bulk")], EnqueueOptions::new().expires_at(past))
        .await
        .unwrap();
    let worker = spawn_with(config_for(&url), config(&[Report::QUEUE], "expiry-bulk"));
    let dead = format!("{}.dead", Report::QUEUE);
    wait_until("the late bulk jobs dead", Duration::from_secs(30), || async {
        try_counts(&raw, &dead).await.is_some_and(|c| c.0 == 2)
    })
    .await;
    let letters = DeadLetters::connect(&config_for(&url)).await.unwrap();
    let listed = letters.list(Report::QUEUE, 10).await.unwrap();
    assert!(listed.iter().all(|j| j.error_kind.as_deref() == Some("expired")), "{listed:?}");
    letters.close().await;
    let _ = channel.close().await;
    worker.stop().await.unwrap();
}
