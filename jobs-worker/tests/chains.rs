//! Chains on a live broker: steps run in order, each handing a value to the
//! next; the next step is stored before the step is acked; a step that went
//! dead keeps the rest of its chain, and retrying it continues to the end;
//! a chain too large for its headers is refused at enqueue; garbage in the
//! chain's headers is a dead reason, not a stalled worker.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::BasicPublishArguments;
use jobs_core::plumbing::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_core::plumbing::{header_str, headers, set_header, ChainHeader};
use jobs_core::prelude::*;
use jobs_core::{DeadFilter, DeadLetters};
use jobs_test::*;

/// What the last steps saw: (test, text).
static SEEN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn seen(test: &str) -> Vec<String> {
    SEEN.lock().unwrap().iter().filter(|(t, _)| t == test).map(|(_, s)| s.clone()).collect()
}

// The three-step chain: a word, then its length, then the length doubled, printed.
#[derive(Serialize, Deserialize, Job)]
#[job(step, queue = "chains-test-words")]
struct Word {
    word: String,
}

impl Step for Word {
    type Input = ();
    type Output = String;
    async fn run(self, (): (), _ctx: JobContext) -> Result<String, JobError> {
        Ok(self.word.to_uppercase())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(step, queue = "chains-test-lengths")]
struct Length {
    test: String,
}

/// Set: `Length` fails fatally for the test "dead-retry" while set.
static FAIL_LENGTH: AtomicBool = AtomicBool::new(true);

impl Step for Length {
    type Input = String;
    type Output = (String, usize);
    async fn run(self, word: String, ctx: JobContext) -> Result<(String, usize), JobError> {
        if self.test == "dead-retry" && FAIL_LENGTH.load(Ordering::SeqCst) {
            return Err(JobError::fatal("the length service is down"));
        }
        let place = ctx.chain().ok_or_else(|| JobError::fatal("not run as a chain's step"))?;
        assert_eq!((place.step, place.of), (2, 3));
        Ok((word.clone(), word.len()))
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(step, queue = "chains-test-prints")]
struct Print {
    test: String,
}

impl Step for Print {
    type Input = (String, usize);
    type Output = ();
    async fn run(self, (word, n): (String, usize), _ctx: JobContext) -> Result<(), JobError> {
        SEEN.lock().unwrap().push((self.test, format!("{word}:{}", n * 2)));
        Ok(())
    }
}

const QUEUES: [&str; 3] = ["chains-test-words", "chains-test-lengths", "chains-test-prints"];

async fn worker(name: &str) -> (RunningWorker, Cleanup, jobs_core::plumbing::amqprs::connection::Connection) {
    let cleanup = Cleanup::queues(&QUEUES);
    let raw = raw_connection().await;
    let worker =
        spawn_with(amqp_config(), worker_config(&QUEUES, 4, &format!("{name}-worker"), Duration::from_secs(5)));
    for queue in QUEUES {
        wait_for_consumers(&raw, queue, 1).await;
    }
    (worker, cleanup, raw)
}

/// Both tests share the three queues (their job types name them): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_chain_runs_its_steps_in_order_handing_values_along() {
    let _one = SERIAL.lock().await;
    let (worker, _cleanup, raw) = worker("chains-order").await;
    let client = Client::new(amqp_config());
    let chain = chain![Word { word: "cat".into() }, Length { test: "order".into() }, Print { test: "order".into() }];
    let ids = client.enqueue_chain(chain).await.unwrap();
    assert_eq!(ids.len(), 3);
    wait_until("the last step", Duration::from_secs(30), || async { !seen("order").is_empty() }).await;
    assert_eq!(seen("order"), ["CAT:6"]);
    worker.stop().await.unwrap();
    for queue in QUEUES {
        assert_acked(&raw, queue).await;
    }
}

#[tokio::test]
async fn a_dead_step_keeps_the_rest_of_its_chain_and_a_retry_runs_it_to_the_end() {
    let _one = SERIAL.lock().await;
    let (worker, _cleanup, raw) = worker("chains-dead").await;
    FAIL_LENGTH.store(true, Ordering::SeqCst);
    let client = Client::new(amqp_config());
    let chain = chain![
        Word { word: "horse".into() },
        Length { test: "dead-retry".into() },
        Print { test: "dead-retry".into() }
    ];
    let ids = client.enqueue_chain(chain).await.unwrap();
    let dead_queue = "chains-test-lengths.dead";
    wait_until("step 2 dead", Duration::from_secs(30), || async { counts(&raw, dead_queue).await.0 == 1 }).await;
    let dead = DeadLetters::connect(&amqp_config()).await.unwrap();
    let listed = dead.list("chains-test-lengths", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ids[1].as_str(), "the step's id, given at enqueue");
    assert_eq!(listed[0].error_kind.as_deref(), Some("fatal"));
    let place = listed[0].chain.clone().expect("the dead step keeps its chain");
    assert_eq!(
        (place.chain.as_str(), place.step, place.of, place.next.as_slice()),
        (ids[0].as_str(), 2, 3, &["Print".to_owned()][..])
    );
    assert!(seen("dead-retry").is_empty(), "the chain stopped at the dead step");

    FAIL_LENGTH.store(false, Ordering::SeqCst);
    let retried = dead.retry("chains-test-lengths", &DeadFilter::all()).await.unwrap();
    assert_eq!(retried.acted, 1);
    wait_until("the chain's end", Duration::from_secs(30), || async { !seen("dead-retry").is_empty() }).await;
    assert_eq!(seen("dead-retry"), ["HORSE:10"], "the retried step still had its input, and handed on");
    dead.close().await;
    worker.stop().await.unwrap();
}

// A chain too large for its headers is refused before anything is sent.
#[derive(Serialize, Deserialize, Job)]
#[job(queue = "chains-test-large")]
struct Large {
    blob: String,
}

impl Perform for Large {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_chain_too_large_for_its_headers_is_refused_at_enqueue() {
    let _cleanup = Cleanup::queues(&["chains-test-large"]);
    let raw = raw_connection().await;
    let client = Client::new(amqp_config());
    let blob = "x".repeat(30 << 10);
    let chain = chain![Large { blob: "small".into() }, Large { blob: blob.clone() }, Large { blob }];
    let err = client.enqueue_chain(chain).await.unwrap_err();
    assert!(matches!(err, Error::ChainTooLarge { steps: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("over the 49152"), "{err}");
    assert_eq!(try_counts(&raw, "chains-test-large").await.map(|c| c.0).unwrap_or(0), 0, "nothing sent");
}

/// A producer's garbage in `x-chain`, and an input the step cannot take:
/// each is dead with its reason, and the worker goes on.
#[tokio::test]
async fn garbage_in_a_chains_headers_is_a_dead_reason() {
    let queue = unique("chains-garbage");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let worker =
        spawn_with(amqp_config(), worker_config(&[&queue], 1, "chains-garbage-worker", Duration::from_secs(5)));
    wait_for_consumers(&raw, &queue, 1).await;
    let channel = raw.open_channel(None).await.unwrap();
    let send = |id: &str, header: &str, value: FieldValue| {
        let mut table = FieldTable::new();
        set_header(&mut table, header, value);
        let props =
            BasicProperties::default().with_message_type("Length").with_message_id(id).with_headers(table).finish();
        let body = rmp_serde::to_vec_named(&Length { test: "garbage".into() }).unwrap();
        let channel = &channel;
        let queue = queue.clone();
        async move { channel.basic_publish(props, body, BasicPublishArguments::new("", &queue)).await.unwrap() }
    };
    send("g1", headers::CHAIN, FieldValue::from("not a chain")).await;
    // A well-formed chain (step 2 of 2), its input an integer where `Length` takes a String.
    let rest = ChainHeader::decode(&header_of_second_step()).unwrap();
    assert_eq!(rest.place().step, 2);
    let mut table = FieldTable::new();
    set_header(&mut table, headers::CHAIN, bytes(header_of_second_step()));
    set_header(&mut table, headers::CHAIN_INPUT, bytes(rmp_serde::to_vec(&7u32).unwrap()));
    let props =
        BasicProperties::default().with_message_type("Length").with_message_id("g2").with_headers(table).finish();
    let body = rmp_serde::to_vec_named(&Length { test: "garbage".into() }).unwrap();
    channel.basic_publish(props, body, BasicPublishArguments::new("", &queue)).await.unwrap();
    let dead_queue = format!("{queue}.dead");
    wait_until("both dead", Duration::from_secs(30), || async { counts(&raw, &dead_queue).await.0 == 2 }).await;
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let (props, _) = get(&channel, &dead_queue).await.unwrap();
        reasons.push((
            props.message_id().cloned().unwrap(),
            header_str(&props, headers::ERROR_KIND).unwrap().to_owned(),
            header_str(&props, headers::ERROR).unwrap().to_owned(),
        ));
    }
    reasons.sort();
    assert_eq!((reasons[0].0.as_str(), reasons[0].1.as_str()), ("g1", "bad_message"));
    assert!(reasons[0].2.contains("`x-chain` header does not decode"), "{}", reasons[0].2);
    assert_eq!((reasons[1].0.as_str(), reasons[1].1.as_str()), ("g2", "undecodable"));
    assert!(
        reasons[1].2.contains(
            "input the chain's step before handed on does not decode as `Length`'s input `alloc::string::String`"
        ),
        "{}",
        reasons[1].2
    );
    assert!(!worker.is_finished(), "the worker goes on");
    worker.stop().await.unwrap();
}

/// The `x-chain` header of a chain's second and last step, as
/// `docs/workflows.md` specifies it: the chain's id, the step's place from
/// 0, the steps in all, and the steps after it (none).
fn header_of_second_step() -> Vec<u8> {
    #[derive(Serialize)]
    struct Rest {
        chain: &'static str,
        at: u32,
        of: u32,
        steps: Vec<()>,
    }
    rmp_serde::to_vec_named(&Rest { chain: "c1", at: 1, of: 2, steps: vec![] }).unwrap()
}

fn bytes(value: Vec<u8>) -> FieldValue {
    FieldValue::x(value.try_into().unwrap())
}
