//! Unique jobs on a live broker: 50 enqueues of one key at once give one
//! new job and 49 duplicates naming it; once it ran the key is free; a job
//! that went dead gives its key back, `dead retry` takes it again, and
//! leaves it dead (said) while another job holds it, unless forced; the
//! next keeper holds the keys the last one granted; a window holds past the
//! job's end; garbage sent to the keeper changes nothing. (kill -9 of a
//! worker mid-job: `examples/tests/flow_control.rs`; the keeper's node lost
//! on a cluster: `examples/tests/cluster_failover.rs`.)
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jobs_core::{Client, DeadFilter, DeadLetters, EnqueueOptions, Error, Job, JobContext, JobError, JobId, Perform};
use jobs_test::*;
use jobs_worker::WorkerConfig;
use serde::{Deserialize, Serialize};

/// Runs: (tag, account).
static RUNS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

fn runs(tag: &str) -> usize {
    RUNS.lock().unwrap().iter().filter(|r| r.0 == tag).count()
}

/// One per account while queued or running; fails its first run when `fail_first`.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "uniques-test-sync", unique_for = "10m", unique_key = "account", max_attempts = 1)]
struct SyncAccount {
    account: u64,
    tag: String,
    fail_first: bool,
}

impl Perform for SyncAccount {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let first = runs(&self.tag) == 0;
        RUNS.lock().unwrap().push((self.tag.clone(), self.account));
        if self.fail_first && first {
            return Err(JobError::fatal("the first run fails"));
        }
        Ok(())
    }
}

/// Unique for 8 s after its enqueue, however soon it ends.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "uniques-test-digest", unique_for = "8s", unique_until = "window")]
struct Digest {
    user: u64,
    tag: String,
}

impl Perform for Digest {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        RUNS.lock().unwrap().push((self.tag.clone(), self.user));
        Ok(())
    }
}

fn config(queues: &[&str], id: &str) -> WorkerConfig {
    worker_config(queues, 4, id, Duration::from_secs(5))
}

/// A worker of no job queue of these tests: it keeps the unique keys.
const IDLE: &str = "uniques-test-idle";

fn sync(account: u64, tag: &str) -> SyncAccount {
    SyncAccount { account, tag: tag.into(), fail_first: false }
}

/// Enqueues `job` until it is new (its key was given back), at most `within`.
async fn enqueue_when_free<J: Job>(client: &Client, job: &J, within: Duration) -> JobId {
    let deadline = Instant::now() + within;
    loop {
        match client.enqueue(job).await {
            Ok(id) => return id,
            Err(Error::Duplicate { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{} not free within {within:?}: {other:?}", J::NAME),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_enqueues_of_one_key_give_one_job_and_the_key_is_free_once_it_ran() {
    let vhost = TestVhost::create("uniques-fifty").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let tag = unique("fifty");

    // No worker has ever kept the keys of this vhost: said at once.
    let refused = client.enqueue(&sync(1, &tag)).await.unwrap_err();
    assert!(matches!(&refused, Error::Unique { reason, .. } if reason.contains("start a worker")), "{refused}");

    let port = spare_port();
    let mut idle = config(&[IDLE], "uniques-fifty-keeper");
    idle.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let keeper = spawn_with(config_for(&url), idle);
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (client, tag) = (client.clone(), tag.clone());
        // Other fields differ: the key is the account.
        tasks.spawn(async move { client.enqueue(&SyncAccount { account: 1, tag, fail_first: n % 2 == 0 }).await });
    }
    let mut new = Vec::new();
    let mut existing = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(id) => new.push(id),
            Err(Error::Duplicate { existing: id }) => existing.push(id),
            Err(other) => panic!("neither new nor a duplicate: {other}"),
        }
    }
    assert_eq!((new.len(), existing.len()), (1, 49), "one new, 49 duplicates");
    assert!(existing.iter().all(|id| *id == new[0]), "each duplicate names the holder");
    assert_eq!(counts(&raw, SyncAccount::QUEUE).await.0, 1, "one job published");
    // Another key is its own.
    let other = client.enqueue(&sync(2, &tag)).await.unwrap();
    // A key given at the enqueue, within the type.
    let keyed = EnqueueOptions::new().unique_key("custom");
    let custom = client.enqueue_with(&sync(3, &tag), keyed.clone()).await.unwrap();
    let again = client.enqueue_with(&sync(4, &tag), keyed).await.unwrap_err();
    assert!(matches!(&again, Error::Duplicate { existing } if *existing == custom), "{again}");

    let worker = spawn_with(config_for(&url), config(&[SyncAccount::QUEUE], "uniques-fifty-worker"));
    wait_until("the three jobs ran", Duration::from_secs(30), || async { runs(&tag) >= 3 }).await;
    wait_until("acked", Duration::from_secs(10), || async {
        try_counts(&raw, SyncAccount::QUEUE).await == Some((0, 1))
    })
    .await;
    // Its key comes back as it ends (one went dead: its first run failed, max_attempts 1).
    let after = enqueue_when_free(&client, &sync(1, &tag), Duration::from_secs(10)).await;
    assert!(after != new[0] && after != other);
    let metrics = http_get(port, "/metrics").1;
    let duplicates: f64 = metrics
        .lines()
        .find(|l| l.starts_with("jobs_unique_duplicates_total{job=\"SyncAccount\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(duplicates >= 50.0, "49 + the custom key's one, counted by the keeper: {duplicates}\n{metrics}");
    // (Gauges are the process's: two workers here share them.)
    assert!(metrics.contains("jobs_unique_keeper_leader ") && metrics.contains("jobs_unique_keys "), "{metrics}");
    worker.stop().await.unwrap();
    keeper.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_gives_its_key_back_and_dead_retry_takes_it_again_unless_another_holds_it() {
    let vhost = TestVhost::create("uniques-dead").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let queue = SyncAccount::QUEUE;
    let dead_queue = format!("{queue}.dead");
    let keeper = spawn_with(config_for(&url), config(&[IDLE], "uniques-dead-keeper"));
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    let dead = DeadLetters::connect(&config_for(&url)).await.unwrap();

    // A goes dead: its key is free again, and a retry of A takes it back.
    let tag_a = unique("dead-a");
    let a = client.enqueue(&SyncAccount { account: 1, tag: tag_a.clone(), fail_first: true }).await.unwrap();
    let worker = spawn_with(config_for(&url), config(&[queue], "uniques-dead-worker"));
    wait_until("A dead", Duration::from_secs(30), || async { try_counts(&raw, &dead_queue).await == Some((1, 0)) })
        .await;
    worker.stop().await.unwrap();
    let done = dead.retry(queue, &DeadFilter::id(a.to_string())).await.unwrap();
    assert_eq!((done.acted, done.held), (1, 0), "{done:?}");
    let held = client.enqueue(&sync(1, &unique("dead-b"))).await.unwrap_err();
    assert!(matches!(&held, Error::Duplicate { existing } if *existing == a), "the retried A holds its key: {held}");

    // A runs again and succeeds; its key is free then.
    let worker = spawn_with(config_for(&url), config(&[queue], "uniques-dead-worker-2"));
    wait_until("A ran again", Duration::from_secs(30), || async { runs(&tag_a) >= 2 }).await;
    let tag_b = unique("dead-b");
    enqueue_when_free(&client, &sync(1, &tag_b), Duration::from_secs(10)).await;
    wait_until("B ran", Duration::from_secs(30), || async { runs(&tag_b) >= 1 }).await;

    // C goes dead, then D takes the key while no worker runs: a retry of C says so and leaves it dead.
    let tag_c = unique("dead-c");
    let c = client.enqueue(&SyncAccount { account: 2, tag: tag_c.clone(), fail_first: true }).await.unwrap();
    wait_until("C dead", Duration::from_secs(30), || async { try_counts(&raw, &dead_queue).await == Some((1, 0)) })
        .await;
    worker.stop().await.unwrap();
    let tag_d = unique("dead-d");
    let d = enqueue_when_free(&client, &sync(2, &tag_d), Duration::from_secs(10)).await;
    let done = dead.retry(queue, &DeadFilter::id(c.to_string())).await.unwrap();
    assert_eq!((done.acted, done.held), (0, 1), "{done:?}");
    let said = done.first_held.unwrap();
    assert!(said.contains(d.as_str()) && said.contains(c.as_str()), "{said}");
    assert_eq!(counts(&raw, &dead_queue).await.0, 1, "C stays dead");
    let forced = dead.retry(queue, &DeadFilter::id(c.to_string()).force()).await.unwrap();
    assert_eq!((forced.acted, forced.held), (1, 0), "--force retries it anyway: {forced:?}");
    let worker = spawn_with(config_for(&url), config(&[queue], "uniques-dead-worker-3"));
    wait_until("C and D ran", Duration::from_secs(30), || async { runs(&tag_c) >= 2 && runs(&tag_d) >= 1 }).await;
    dead.close().await;
    worker.stop().await.unwrap();
    keeper.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_keeper_holds_the_keys_and_a_window_holds_past_the_end() {
    let vhost = TestVhost::create("uniques-keeper").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let client = Client::new(config_for(&url));
    let first = spawn_with(config_for(&url), config(&[IDLE], "uniques-keeper-1"));
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    let tag = unique("keeper");
    // Queued, not run (no worker takes its queue): it holds its key.
    let held = client.enqueue(&sync(7, &tag)).await.unwrap();
    let second = spawn_with(config_for(&url), config(&[Digest::QUEUE], "uniques-keeper-2"));
    first.stop().await.unwrap();
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    // The second worker keeps the keys now, read back from the stream.
    let again = client.enqueue(&sync(7, &tag)).await.unwrap_err();
    assert!(matches!(&again, Error::Duplicate { existing } if *existing == held), "{again}");

    // A window: held for its 8 s, though the job ran at once.
    let tag = unique("window");
    let enqueued = Instant::now();
    client.enqueue(&Digest { user: 1, tag: tag.clone() }).await.unwrap();
    wait_until("the digest ran", Duration::from_secs(30), || async { runs(&tag) >= 1 }).await;
    wait_until("the digest acked", Duration::from_secs(10), || async {
        try_counts(&raw, Digest::QUEUE).await == Some((0, 1))
    })
    .await;
    let during = client.enqueue(&Digest { user: 1, tag: tag.clone() }).await;
    let ended_within_window = enqueued.elapsed() < Duration::from_millis(7_500);
    println!("the digest ran and was acked {:?} after its enqueue", enqueued.elapsed());
    assert!(ended_within_window, "a loaded machine: the digest took most of its window to run");
    assert!(matches!(&during, Err(Error::Duplicate { .. })), "held after its end, within its window: {during:?}");
    enqueue_when_free(&client, &Digest { user: 1, tag: tag.clone() }, Duration::from_secs(20)).await;
    assert!(enqueued.elapsed() >= Duration::from_millis(7_900), "held for its window: {:?}", enqueued.elapsed());
    second.stop().await.unwrap();
}

#[test]
fn a_bulk_enqueue_or_a_batch_of_unique_jobs_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(config_for(&amqp_url()));
    let refused = rt.block_on(client.enqueue_many(&[sync(1, "bulk")])).unwrap_err();
    assert!(matches!(refused, Error::Unsupported(text) if text.contains("unique")));
    let batch = jobs_core::Batch::new().job(&sync(1, "batch"));
    let refused = rt.block_on(client.enqueue_batch(batch)).unwrap_err();
    assert!(matches!(refused, Error::Unsupported(text) if text.contains("unique")), "a batch's member");
}

/// The worker whose connection consumes the keeper's asks now, if any.
async fn keeper_of(url: &str) -> Option<String> {
    let management = jobs_core::plumbing::Management::new(&config_for(url));
    let vhost = jobs_core::plumbing::percent_encode(management.vhost());
    let queue = management.get(&format!("/api/queues/{vhost}/jobs.unique.ask")).await.ok()?;
    let address = queue["consumer_details"][0]["channel_details"]["connection_name"].as_str()?;
    let path = format!("/api/connections/{}", jobs_core::plumbing::percent_encode(address));
    let connection = management.get(&path).await.ok()?;
    let name = connection["client_properties"]["connection_name"].as_str()?;
    name.strip_suffix(":unique").map(str::to_owned)
}

/// `url` with its vhost put in `relay`'s URL.
fn through(relay: &Relay, url: &str) -> String {
    let (base, _) = relay.url.rsplit_once('/').unwrap();
    let (_, vhost) = url.rsplit_once('/').unwrap();
    format!("{base}/{vhost}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_change_of_keeper_no_second_job_gets_a_held_key() {
    let vhost = TestVhost::create("uniques-fence").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let relay = Relay::start().await;
    let mut amqp = config_for(&through(&relay, &url));
    amqp.heartbeat = 1;
    let ids = ["uniques-fence-a", "uniques-fence-b"];
    let workers: Vec<RunningWorker> = ids.iter().map(|id| spawn_with(amqp.clone(), config(&[IDLE], id))).collect();
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    let client = Client::new(config_for(&url));
    let tag = unique("fence");
    let held = client.enqueue(&sync(5, &tag)).await.unwrap();
    wait_until("the keeper named", Duration::from_secs(30), || async { keeper_of(&url).await.is_some() }).await;
    let keeper = keeper_of(&url).await.expect("a keeper");
    // Its leadership's link goes silent (as a host's that froze), its working link goes on:
    // the keeper must stop answering (its fence) before the broker hands the leadership on.
    assert_eq!(relay.cut_named(&format!("{keeper}:unique keeper")), 1);
    let cut_at = Instant::now();
    let (mut slips, mut duplicates, mut unanswered) = (0, 0, 0);
    let mut new_keeper = None;
    while cut_at.elapsed() < Duration::from_secs(20) {
        match client.enqueue(&sync(5, &tag)).await {
            Ok(_) => slips += 1,
            Err(Error::Duplicate { existing }) => {
                assert_eq!(existing, held);
                duplicates += 1;
            }
            Err(Error::Unique { .. }) => unanswered += 1,
            Err(other) => panic!("{other}"),
        }
        if new_keeper.is_none() {
            new_keeper = keeper_of(&url).await.filter(|k| *k != keeper).map(|k| (k, cut_at.elapsed()));
        }
        if new_keeper.as_ref().is_some_and(|(_, at)| cut_at.elapsed() > *at + Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("through the change of keeper: {duplicates} duplicates, {unanswered} unanswered, {slips} slipped through; the next keeper after {new_keeper:?}");
    let (next, _) = new_keeper.expect("another worker keeps the keys");
    assert_ne!(next, keeper);
    assert_eq!(slips, 0, "no second job got the held key");
    assert!(duplicates > 0);
    for worker in workers {
        worker.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sent_to_the_keeper_and_forged_into_its_stream_changes_nothing() {
    use jobs_test::amqprs::channel::BasicPublishArguments;
    use jobs_test::amqprs::BasicProperties;
    let vhost = TestVhost::create("uniques-garbage").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let keeper = spawn_with(config_for(&url), config(&[IDLE], "uniques-garbage-keeper"));
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    let client = Client::new(config_for(&url));
    let tag = unique("garbage");
    let held = client.enqueue(&sync(1, &tag)).await.unwrap();

    let channel = raw.open_channel(None).await.unwrap();
    let to = |queue: &str| BasicPublishArguments::new("", queue);
    let asks = [
        (BasicProperties::default(), b"not msgpack".to_vec()),
        (BasicProperties::default().with_reply_to("nowhere").with_correlation_id("x").finish(), vec![0xc1]),
        // A well-formed ask with a huge key and a huge id.
        (
            BasicProperties::default().with_reply_to("nowhere").with_correlation_id("y").finish(),
            rmp_serde::to_vec(&jobs_core::plumbing::unique::UniqueAsk {
                key: "k".repeat(1 << 20),
                id: "i".repeat(1 << 16),
                job: "SyncAccount".into(),
                for_ms: u64::MAX,
                token: "t".into(),
            })
            .unwrap(),
        ),
    ];
    for (props, body) in asks {
        channel.basic_publish(props, body, to("jobs.unique.ask")).await.unwrap();
    }
    // Forged records: garbage of the records' kind, and a release of the held key by another hold.
    let kind = BasicProperties::default().with_message_type(jobs_core::plumbing::unique::UNIQUE_KIND).finish();
    let forged = jobs_core::plumbing::unique::encode_records(&[jobs_core::plumbing::unique::UniqueRecord::Release {
        key: "SyncAccount:1".into(),
        id: held.to_string(),
        token: "forged".into(),
    }])
    .unwrap();
    for body in [b"\xff\xfe garbage".to_vec(), forged] {
        channel.basic_publish(kind.clone(), body, to("jobs.unique")).await.unwrap();
    }
    let _ = channel.close().await;

    // The keeper still answers, and the held key is held still, also once the
    // forged records are read (the keeper reads its stream within milliseconds:
    // 2 s of asks, each answered after it).
    client.enqueue(&sync(2, &tag)).await.unwrap();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        let again = client.enqueue(&sync(1, &tag)).await.unwrap_err();
        assert!(matches!(&again, Error::Duplicate { existing } if *existing == held), "{again}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    keeper.stop().await.unwrap();
}
