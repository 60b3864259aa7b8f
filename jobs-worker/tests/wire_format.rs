//! A job made by another client exactly as `docs/wire-format.md` describes,
//! with raw AMQP and a MessagePack body written by hand, runs: now, on a later
//! attempt, and delayed through the cascade as the page spells it.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobs_core::{Job, JobContext, JobError, Perform};
use jobs_test::amqprs::channel::BasicPublishArguments;
use jobs_test::amqprs::{BasicProperties, FieldTable, FieldValue};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(name = "SendInvoice")]
struct Invoice {
    customer: String,
    cents: u64,
    #[serde(default)]
    note: Option<String>,
}

/// (id, customer, cents, note, attempt, when)
type Run = (String, String, u64, Option<String>, u32, Instant);
static RUNS: Mutex<Vec<Run>> = Mutex::new(Vec::new());

impl Perform for Invoice {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let run = (ctx.job_id().to_string(), self.customer, self.cents, self.note, ctx.attempt(), Instant::now());
        RUNS.lock().unwrap().push(run);
        Ok(())
    }
}

/// The body as another language's msgpack library writes a map: fixmap of 2,
/// then "customer" (fixstr) → fixstr, "cents" → uint16.
fn body(customer: &str, cents: u16) -> Vec<u8> {
    let mut b = vec![0x82, 0xa8];
    b.extend_from_slice(b"customer");
    b.push(0xa0 | customer.len() as u8);
    b.extend_from_slice(customer.as_bytes());
    b.push(0xa5);
    b.extend_from_slice(b"cents");
    b.push(0xcd);
    b.extend_from_slice(&cents.to_be_bytes());
    b
}

fn properties(id: &str, attempt: Option<i64>) -> BasicProperties {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut p = BasicProperties::default();
    p.with_message_type("SendInvoice")
        .with_message_id(id)
        .with_content_type("application/msgpack")
        .with_delivery_mode(2)
        .with_timestamp(now);
    if let Some(attempt) = attempt {
        let mut headers = FieldTable::new();
        headers.insert("x-attempt".try_into().unwrap(), FieldValue::l(attempt));
        p.with_headers(headers);
    }
    p.finish()
}

fn run_of(id: &str) -> Option<Run> {
    RUNS.lock().unwrap().iter().find(|r| r.0 == id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_written_by_another_client_as_the_wire_format_says_runs() {
    let Fixture { queue, raw, worker: running, cleanup: _cleanup, .. } =
        Fixture::start("wire", Duration::from_secs(5)).await;
    let channel = raw.open_channel(None).await.unwrap();
    let publish = |props, body, exchange: String, key: String| {
        let channel = channel.clone();
        async move {
            let mut args = BasicPublishArguments::new(&exchange, &key);
            args.mandatory(true);
            channel.basic_publish(props, body, args).await.unwrap();
        }
    };

    // Now, to the default exchange with the queue as routing key.
    publish(properties("wire-now", None), body("ann", 1250), String::new(), queue.clone()).await;
    // A later attempt: `x-attempt` says which.
    publish(properties("wire-third", Some(3)), body("bob", 99), String::new(), queue.clone()).await;
    // Delayed 3 s: the highest set bit of 3 is 1, so exchange jobs.delay.01, and
    // the routing key is the 28 bits of 3, each followed by a dot, then the queue.
    let bits: String = (0..28).rev().map(|bit| if 3u32 & (1 << bit) != 0 { "1." } else { "0." }).collect();
    let sent = Instant::now();
    publish(properties("wire-later", None), body("cy", 7), "jobs.delay.01".into(), format!("{bits}{queue}")).await;

    wait_until("the three jobs", Duration::from_secs(20), || async {
        ["wire-now", "wire-third", "wire-later"].iter().all(|id| run_of(id).is_some())
    })
    .await;
    let now = run_of("wire-now").unwrap();
    assert_eq!(
        (now.1.as_str(), now.2, now.3, now.4),
        ("ann", 1250, None, 1),
        "fields by name, a missing optional one is None"
    );
    let third = run_of("wire-third").unwrap();
    assert_eq!((third.1.as_str(), third.2, third.4), ("bob", 99, 3));
    let later = run_of("wire-later").unwrap();
    let after = later.5 - sent;
    assert!(after >= Duration::from_secs(3) && after < Duration::from_secs(5), "delayed 3 s: ran after {after:?}");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
    assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0);
}
