//! A batch of 10,000 jobs over three worker processes while one of them is
//! killed -9 twice and the aggregating worker once: `complete` and `success`
//! each run exactly once, with the right counts, and not before the last job
//! ended. On a vhost of the test's own (its own aggregator leadership).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use examples::workflows::{Invoice, Report};
use jobs_core::{Batch, Client};
use jobs_test::*;

const JOBS: u64 = 10_000;
const AGGREGATES: &str = "this worker aggregates the batches";

fn worker(url: &str, id: &str) -> Process {
    let args = ["--queues", "workflows", "--concurrency", "20", "--id", id];
    Process::start_with(id, env!("CARGO_BIN_EXE_worker"), &args, &[("JOBS__AMQP__URL", url), ("RUST_LOG", "info")])
}

/// The callback lines of every process so far: (kind, line).
fn callbacks(workers: &[Process], gone: &[Process]) -> Vec<(String, String)> {
    workers
        .iter()
        .chain(gone)
        .flat_map(|w| w.lines())
        .filter(|l| l.starts_with("batch ") && l.contains("total="))
        .map(|l| (if l.contains(" complete:") { "complete" } else { "success" }.to_owned(), l))
        .collect()
}

/// The invoices sent: (n, when, Unix ms).
fn sent(workers: &[Process], gone: &[Process]) -> Vec<(u64, u64)> {
    workers
        .iter()
        .chain(gone)
        .flat_map(|w| w.lines())
        .filter_map(|l| {
            let rest = l.strip_prefix("invoice ")?;
            let (n, at) = rest.split_once(" sent at ")?;
            Some((n.parse().ok()?, at.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_once_through_kills_of_its_workers_and_its_aggregator() {
    let vhost = TestVhost::create("batch-failover").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let mut workers: Vec<Process> = (0..3).map(|n| worker(&url, &format!("batch-w{n}"))).collect();
    let mut gone: Vec<Process> = Vec::new();
    wait_for_consumers(&raw, "workflows", 3).await;
    wait_until("an aggregator", Duration::from_secs(30), || async { workers.iter().any(|w| w.has(AGGREGATES)) }).await;

    let client = Client::new(config_for(&url));
    let invoices: Vec<Invoice> = (0..JOBS).map(|n| Invoice { n, millis: 20, fail: false }).collect();
    let batch = Batch::new().description("failover").on_complete(&Report).on_success(&Report).jobs(&invoices);
    let id = client.enqueue_batch(batch).await.unwrap();

    // One worker killed -9 twice (started again each time), then the aggregator.
    let kills = [(JOBS / 5, "batch-w0"), (JOBS * 2 / 5, "batch-w0"), (JOBS * 3 / 5, "")];
    for (spawned, (share, victim)) in (3..).zip(kills) {
        wait_until("progress", Duration::from_secs(120), || async {
            let done: std::collections::HashSet<u64> = sent(&workers, &gone).into_iter().map(|(n, _)| n).collect();
            done.len() as u64 >= share
        })
        .await;
        let at = if victim.is_empty() {
            // The aggregator: the last worker to say it aggregates (and still running).
            workers.iter().rposition(|w| w.has(AGGREGATES)).unwrap()
        } else {
            workers.iter().position(|w| w.name == victim).unwrap()
        };
        let mut dead = workers.remove(at);
        dead.signal(9);
        dead.wait_exit(Duration::from_secs(10)).await;
        gone.push(dead);
        let name = if victim.is_empty() { format!("batch-w{spawned}") } else { victim.to_owned() };
        workers.push(worker(&url, &name));
    }

    wait_until("complete and success", Duration::from_secs(240), || async { callbacks(&workers, &gone).len() >= 2 })
        .await;
    // Deliberate: a few seconds for a second firing to show (absence has no event to wait on).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fired = callbacks(&workers, &gone);
    assert_eq!(fired.iter().filter(|(k, _)| k == "complete").count(), 1, "complete once: {fired:?}");
    assert_eq!(fired.iter().filter(|(k, _)| k == "success").count(), 1, "success once: {fired:?}");
    for (_, line) in &fired {
        assert!(line.contains(&format!("batch {id} ")), "{line}");
        assert!(line.contains(&format!("total={JOBS} succeeded={JOBS} dead=0")), "right counts: {line}");
    }
    // Not before the last job ended: every invoice was sent before the callback ran.
    let sent = sent(&workers, &gone);
    let distinct: std::collections::HashSet<u64> = sent.iter().map(|(n, _)| *n).collect();
    assert_eq!(distinct.len() as u64, JOBS, "every invoice ran");
    let last_sent = sent.iter().map(|(_, at)| *at).max().unwrap();
    let complete_at: u64 = fired
        .iter()
        .find(|(k, _)| k == "complete")
        .and_then(|(_, l)| l.split(" at=").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(complete_at >= last_sent, "complete ran at {complete_at}, after the last invoice at {last_sent}");
    for worker in workers {
        worker.stop().await;
    }
}

/// `worker batches`: the open batch with its counts, dead ids and callbacks,
/// read from the record itself (a producer's garbage in it skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_batches_lists_a_batch_from_the_record() {
    use jobs_core::plumbing::amqprs::channel::BasicPublishArguments;
    use jobs_core::plumbing::amqprs::BasicProperties;

    let vhost = TestVhost::create("batch-cli").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    let running = worker(&url, "batch-cli-w");
    wait_for_consumers(&raw, "workflows", 1).await;
    let client = Client::new(config_for(&url));
    let invoices: Vec<Invoice> = (0..20).map(|n| Invoice { n, millis: 0, fail: n < 2 }).collect();
    let batch = Batch::new().description("cli invoices").on_complete(&Report).on_success(&Report).jobs(&invoices);
    let id = client.enqueue_batch(batch).await.unwrap();
    wait_until("complete", Duration::from_secs(60), || async { running.has(&format!("batch {id} complete:")) }).await;
    // A producer's garbage in the record.
    let channel = raw.open_channel(None).await.unwrap();
    let props = BasicProperties::default().with_message_type("outcomes").finish();
    channel.basic_publish(props, b"garbage".to_vec(), BasicPublishArguments::new("", "jobs.batches")).await.unwrap();

    let (ok, out) = run_on(&url, env!("CARGO_BIN_EXE_worker"), &["batches", "--json"]);
    assert!(ok, "{out}");
    let row: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the batch is listed: {out}"));
    assert_eq!(
        (row["state"].as_str(), row["total"].as_u64(), row["succeeded"].as_u64()),
        (Some("complete"), Some(20), Some(18)),
        "{row}"
    );
    assert_eq!(row["dead"], 2);
    assert_eq!(row["dead_ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(row["fired"], serde_json::json!(["complete"]), "success waits for the dead: {row}");
    assert_eq!(row["pending"], serde_json::json!([]), "{row}");
    assert_eq!(row["description"], "cli invoices");
    let (ok, table) = run_on(&url, env!("CARGO_BIN_EXE_worker"), &["batches"]);
    assert!(
        ok && table.contains(id.as_str()) && table.contains("complete") && table.contains("cli invoices"),
        "{table}"
    );
    running.stop().await;
}
