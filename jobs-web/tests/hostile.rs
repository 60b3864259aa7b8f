//! Messages any producer with write access can send, through a live worker to
//! the dashboard: bodies that are no job (nested 200,000 deep, lengths of
//! 4 GB in a few bytes, text that is not UTF-8, 2 MB of nothing...) are
//! dead-lettered by the worker and shown by the dashboard as "cannot be
//! shown: <reason>" on every dead page, while it keeps answering; and a
//! message without a `message_id` has one id, made once: the same in the
//! worker's log line, in `<queue>.dead` and on the dashboard.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::job_properties;
use jobs_core::{Job, JobContext, JobError, JobId, Perform};
use jobs_test::amqprs::channel::BasicPublishArguments;
use jobs_test::amqprs::BasicProperties;
use jobs_test::*;
use jobs_web::WebConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Parcel {
    weight: u32,
}

impl Perform for Parcel {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// Log lines of this test process, as the worker writes them.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Bodies that are not a `Parcel`, and why the dashboard cannot show each.
fn hostile() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let nested = [vec![0x91u8; 200_000], vec![0xc0]].concat();
    let big_array = vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
    let big_text = vec![0xdb, 0xff, 0xff, 0xff, 0xf0, b'a', b'b'];
    let big_map = vec![0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01];
    let not_utf8 = vec![0x81, 0xa6, b'w', b'e', b'i', b'g', b'h', b't', 0xa2, 0xff, 0xfe];
    let ext = vec![0x81, 0xa6, b'w', b'e', b'i', b'g', b'h', b't', 0xd6, 0x07, 1, 2, 3, 4];
    let nothing = vec![0xc0; 2 << 20];
    let many = [vec![0xdd, 0x00, 0x02, 0x00, 0x00], vec![0x01; 0x20000]].concat();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    vec![
        ("nested 200,000 deep", nested, Some("cannot be shown: it nests deeper than 128 levels")),
        ("an array of 4 G items", big_array, Some("cannot be shown: not MessagePack: a length longer than the body")),
        ("a string of 4 GB", big_text, Some("cannot be shown: not MessagePack: a length longer than the body")),
        ("a map of 2 G entries", big_map, Some("cannot be shown: not MessagePack: a length longer than the body")),
        ("text that is not UTF-8", not_utf8, None),
        ("an ext value", ext, None),
        ("2 MB of nil", nothing, Some("cannot be shown: the body is 2097152 bytes, over the 1048576 shown")),
        ("131,072 values", many, Some("cannot be shown: it holds more than 100000 values")),
        ("garbage", garbage, Some("cannot be shown")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_reach_every_dead_page_as_cannot_be_shown_and_ids_are_made_once() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();
    let queue = unique("hostile");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let running = spawn_with(amqp_config(), worker_config(&[&queue], 1, "hostile-worker", Duration::from_secs(5)));
    wait_for_consumers(&raw, &queue, 1).await;
    let port = serve(amqp_config(), WebConfig::default(), "").await.port;

    let channel = raw.open_channel(None).await.unwrap();
    let bodies = hostile();
    let mut ids = Vec::new();
    for (what, body, _) in &bodies {
        let id = JobId::from(*what);
        channel
            .basic_publish(job_properties(Parcel::NAME, &id, 1), body.clone(), BasicPublishArguments::new("", &queue))
            .await
            .unwrap();
        ids.push(id);
    }
    // No message_id: bad, and dead under an id made for it once.
    let props = BasicProperties::default().with_message_type(Parcel::NAME).with_persistence(true).finish();
    let body = jobs_core::plumbing::encode(&Parcel { weight: 3 }).unwrap();
    channel.basic_publish(props, body, BasicPublishArguments::new("", &queue)).await.unwrap();
    let dead = format!("{queue}.dead");
    wait_until("every hostile message dead", Duration::from_secs(30), || async {
        try_counts(&raw, &dead).await.map(|c| c.0) == Some(bodies.len() as u32 + 1)
    })
    .await;

    let api = |path: &str| {
        let (status, body) = http_get(port, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let listed = api(&format!("/api/dead/{queue}"));
    assert_eq!(listed["total"], bodies.len() + 1);
    let page = http_get(port, &format!("/dead/{queue}"));
    assert_eq!(page.0, 200, "{}", page.1);
    let newest = http_get(port, &format!("/dead/{queue}?order=newest&q=decode"));
    assert_eq!(newest.0, 200, "{}", newest.1);
    for ((what, _, why), id) in bodies.iter().zip(&ids) {
        let job = api(&format!("/api/dead/{queue}/{}", id.as_str().replace(' ', "%20").replace(',', "%2C")));
        assert_eq!(job["error_kind"], "undecodable", "{what}: {job}");
        match why {
            Some(why) => {
                assert!(job["payload"].is_null(), "{what}");
                assert!(job["payload_error"].as_str().is_some_and(|e| e.starts_with(why)), "{what}: {job}");
            }
            None => assert!(job["payload_error"].is_null() && job["payload"].is_object(), "{what}: {job}"),
        }
        let link = format!("/dead/{queue}/job/{}", id.as_str().replace(' ', "%20").replace(',', "%2C"));
        let (status, html) = http_get(port, &link);
        assert_eq!(status, 200, "{what}: {html}");
        if let Some(why) = why {
            assert!(html.contains(why), "{what}: the page says why it shows no arguments");
        }
    }

    // The message without an id: one id in the log line, the dead queue and on the dashboard.
    let without: Vec<serde_json::Value> =
        listed["jobs"].as_array().unwrap().iter().filter(|j| j["error_kind"] == "bad_message").cloned().collect();
    assert_eq!(without.len(), 1, "{listed}");
    let made = without[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(made.len(), 24, "an id was made: {made}");
    let reason = without[0]["error"].as_str().unwrap();
    assert!(reason.contains("no `message_id`"), "{reason}");
    let log = lines.text();
    let line = log
        .lines()
        .find(|l| l.contains("dead-lettered") && l.contains("bad_message"))
        .unwrap_or_else(|| panic!("no WARN line: {log}"));
    assert!(line.contains(&format!("job.id={made}")), "the log names the same id: {line}");
    let in_queue = DeadLettersProbe::ids(&dead).await;
    assert!(in_queue.contains(&made), "{in_queue:?}");
    assert_eq!(log.lines().filter(|l| l.contains("dead-lettered")).count(), bodies.len() + 1, "one WARN line each");

    // Still answering: the dashboard and the worker.
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert!(!running.is_finished(), "the worker is up");
    running.stop().await.unwrap();
}

/// Reads the ids in a dead queue as a raw client would (and puts them back).
struct DeadLettersProbe;

impl DeadLettersProbe {
    async fn ids(dead: &str) -> Vec<String> {
        let raw = raw_connection().await;
        let channel = raw.open_channel(None).await.unwrap();
        let mut ids = Vec::new();
        let args = || jobs_test::amqprs::channel::BasicGetArguments::new(dead);
        while let Some((_, props, _)) = channel.basic_get(args()).await.unwrap() {
            ids.push(props.message_id().cloned().unwrap_or_default());
        }
        let _ = channel.close().await;
        ids
    }
}
