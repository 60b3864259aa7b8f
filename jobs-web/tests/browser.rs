//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (`chromium` and `chromium-driver` from the OS packages; `deploy/test.sh`
//! installs them). Two workers and the dashboard: the test sees both
//! workers and a job running on one of them, the queue's numbers and a dead
//! job; clicks Retry and sees the job run and leave the dead list; then
//! retries all. And a worker with schedules, on a vhost of its own: the
//! Schedules page shows it as the leader with its schedules; Run now,
//! confirmed, names the job it enqueued, which the worker runs; the Workers
//! page marks the leader. A queue paused by its button on the overview:
//! no worker consumes it and its job waits; Resume, and the job runs. A
//! unique type: its duplicates on the Job types page, and the keys held. A
//! queue with priorities says so on the overview; a worker's weighted
//! queues, their weights and use, on the Workers page. A job's progress
//! (`ctx.progress`) grows on the Workers page and in `/api/running/<id>`,
//! and stays on its dead job's page.
//! Screenshots of each page go to `target/screenshots/`.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;
#[path = "support/scheduled.rs"]
mod scheduled;
use scheduled::spawn_scheduled;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_web::WebConfig;
use jobs_worker::Schedule;
use serde::{Deserialize, Serialize};

/// One browser at a time: the tests of this file take turns.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keys whose first run failed: a job fails (fatally) the first time, then works.
static FAILED_ONCE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
struct Invoice {
    key: String,
    ms: u64,
}

impl Perform for Invoice {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let first = FAILED_ONCE.lock().unwrap().get_or_insert_with(HashSet::new).insert(self.key.clone());
        if first && self.key.starts_with("bad") {
            return Err(JobError::fatal(format!("invoice {} has no customer", self.key)));
        }
        DONE.lock().unwrap().push(self.key);
        Ok(())
    }
}

/// The ids of the `Chore` jobs that ran.
static CHORES: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
struct Chore {
    what: String,
}

impl Perform for Chore {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        CHORES.lock().unwrap().push(ctx.job_id().to_string());
        Ok(())
    }
}

/// The ids of the `Sleeper` jobs that saw their cancel.
static SAW_CANCEL: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs until cancelled (a minute at most).
#[derive(Debug, Serialize, Deserialize, Job)]
struct Sleeper {}

impl Perform for Sleeper {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        tokio::select! {
            _ = ctx.cancelled() => SAW_CANCEL.lock().unwrap().push(ctx.job_id().to_string()),
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        Ok(())
    }
}

/// chromedriver on a spare port, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn done(key: &str) -> bool {
    DONE.lock().unwrap().iter().any(|k| k == key)
}

async fn browser() -> (Client, Driver) {
    let port = spare_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver does not start ({e}): `bash deploy/test.sh` installs chromium and chromium-driver")
        });
    let driver = Driver(child);
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000"]
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
            Ok(client) => return (client, driver),
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no WebDriver session with chromium: {last:?}");
}

async fn screenshot(browser: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text(browser: &Client, css: &str) -> String {
    browser.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Waits, without reloading, until the element `css` holds `needle` (or, with `gone`, does not).
async fn wait_text(browser: &Client, css: &str, needle: &str, gone: bool, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let shown = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown.contains(needle) != gone {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{what}: {css} shows {shown:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_workers_a_running_job_queues_and_dead_jobs_and_retries_them() {
    let _turn = ONE_BROWSER.lock().await;
    let queue = unique("browser");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let workers: Vec<_> = ["web-worker-a", "web-worker-b"]
        .iter()
        .map(|id| {
            let mut config = worker_config(&[&queue], 1, &format!("{queue}-{id}"), Duration::from_secs(5));
            config.heartbeat_interval = Duration::from_millis(500);
            spawn_with(amqp_config(), config)
        })
        .collect();
    wait_for_consumers(&raw, &queue, 2).await;
    let port = serve(amqp_config(), WebConfig::default(), "").await.port;
    let base = format!("http://127.0.0.1:{port}");

    let client = jobs_core::Client::new(amqp_config());
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&Invoice { key: "bad-1".into(), ms: 0 }, on()).await.unwrap();
    let slow = client.enqueue_with(&Invoice { key: "slow".into(), ms: 8000 }, on()).await.unwrap();
    for n in 0..3 {
        client.enqueue_with(&Invoice { key: format!("bad-bulk-{n}"), ms: 0 }, on()).await.unwrap();
    }

    let (browser, _driver) = browser().await;
    // Workers: both, and the slow job running on one of them.
    browser.goto(&format!("{base}/workers")).await.unwrap();
    wait_text(&browser, "#workers", &slow.to_string(), false, "the running job").await;
    let table = text(&browser, "#workers").await;
    assert!(
        table.contains(&format!("{queue}-web-worker-a")) && table.contains(&format!("{queue}-web-worker-b")),
        "{table}"
    );
    assert!(table.matches("live").count() >= 2, "{table}");
    screenshot(&browser, "workers").await;

    // Overview: the queue's numbers (refreshed in place by the page's script).
    browser.goto(&format!("{base}/")).await.unwrap();
    let row = format!("tr[data-queue='{queue}']");
    wait_text(&browser, &row, " 4 ", false, "4 dead jobs in the queue row").await;
    let cells = text(&browser, &row).await;
    assert!(cells.starts_with(&queue), "{cells}");
    assert!(browser.find(Locator::Css("svg.chart path.succeeded")).await.is_ok(), "the chart is drawn");
    screenshot(&browser, "overview").await;
    browser.goto(&format!("{base}/jobs")).await.unwrap();
    wait_text(&browser, "#types", "Invoice", false, "the job type").await;
    screenshot(&browser, "job-types").await;

    // The slow job ends: the workers page drops it by itself, without a reload.
    browser.goto(&format!("{base}/workers")).await.unwrap();
    wait_text(&browser, "#workers", &slow.to_string(), true, "the finished job gone from the live page").await;

    // Dead jobs: one retried by its button; it runs and leaves the list.
    browser.goto(&format!("{base}/dead/{queue}")).await.unwrap();
    wait_text(&browser, "#dead-jobs", "has no customer", false, "the dead jobs").await;
    screenshot(&browser, "dead-jobs").await;
    let mut retry_button = None;
    for row in browser.find_all(Locator::Css("#dead-jobs tbody tr")).await.unwrap() {
        if row.text().await.unwrap().contains("invoice bad-1 ") {
            retry_button = Some(row.find(Locator::Css("button.retry")).await.unwrap());
        }
    }
    let retry_button = retry_button.expect("the row of bad-1, with its Retry button");
    retry_button.click().await.unwrap();
    wait_until("the retried job to run", Duration::from_secs(20), || async { done("bad-1") }).await;
    browser.goto(&format!("{base}/dead/{queue}")).await.unwrap();
    let listed = text(&browser, "#dead-jobs").await;
    assert!(!listed.contains("invoice bad-1 ") && listed.contains("bad-bulk-0"), "{listed}");

    // Retry all: confirmed, with how many it takes.
    browser.find(Locator::LinkText("Retry all…")).await.unwrap().click().await.unwrap();
    // A click does not wait for the page it loads: wait for what it shows.
    wait_text(&browser, "h2", "Retry 3 dead jobs", false, "the confirmation").await;
    screenshot(&browser, "confirm").await;
    browser.find(Locator::Css("#confirm button")).await.unwrap().click().await.unwrap();
    wait_text(&browser, "#done", "Retried 3 dead jobs", false, "how many were retried").await;
    wait_until("the three to run", Duration::from_secs(20), || async {
        (0..3).all(|n| done(&format!("bad-bulk-{n}")))
    })
    .await;
    browser.goto(&format!("{base}/dead/{queue}")).await.unwrap();
    wait_text(&browser, "#dead-jobs", "no dead job", false, "an empty dead list").await;
    screenshot(&browser, "dead-jobs-empty").await;

    browser.close().await.unwrap();
    for worker in workers {
        worker.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_the_scheduler_leader_and_its_schedules_and_runs_one_now() {
    let _turn = ONE_BROWSER.lock().await;
    // The scheduler's leadership is one per vhost: this test's own.
    let vhost = TestVhost::create("browser-schedules").await;
    let amqp = config_for(&vhost.url());
    let queue = unique("browser-schedules");
    let worker_id = format!("{queue}-worker");
    let mut config = worker_config(&[&queue], 1, &worker_id, Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    let worker = spawn_scheduled(
        amqp.clone(),
        config,
        [
            Schedule::new("cache-sweep", "*/2 * * * * *", Chore { what: "sweep".into() }).queue(&queue),
            Schedule::new("nightly-report", "0 3 * * *", Chore { what: "report".into() })
                .queue(&queue)
                .time_zone("Europe/Berlin"),
        ],
    );
    let port = serve(amqp.clone(), WebConfig::default(), "").await.port;
    let base = format!("http://127.0.0.1:{port}");
    let (browser, _driver) = browser().await;

    // The Schedules page (refreshed in place): the leader, both schedules,
    // the one every 2 s with its last run.
    browser.goto(&format!("{base}/schedules")).await.unwrap();
    wait_text(&browser, "#live", &worker_id, false, "the leader").await;
    assert_eq!(text(&browser, "#leader").await, worker_id);
    let sweep = "tr[data-schedule='cache-sweep']";
    wait_text(&browser, sweep, " ago)", false, "the last run of cache-sweep").await;
    let cells = text(&browser, sweep).await;
    assert!(cells.contains("*/2 * * * * *") && cells.contains("Chore") && cells.contains(" ms"), "{cells}");
    let nightly = "tr[data-schedule='nightly-report']";
    let cells = text(&browser, nightly).await;
    assert!(cells.contains("Europe/Berlin") && cells.contains("not yet"), "{cells}");
    screenshot(&browser, "schedules").await;

    // Run now: confirmed, then the id of the job it enqueued, which runs.
    browser.find(Locator::Css(&format!("{nightly} a.run"))).await.unwrap().click().await.unwrap();
    wait_text(&browser, "h2", "Run nightly-report now?", false, "the confirmation").await;
    screenshot(&browser, "run-now-confirm").await;
    browser.find(Locator::Css("#confirm button")).await.unwrap().click().await.unwrap();
    let said = "Enqueued nightly-report now as job ";
    wait_text(&browser, "#done", said, false, "the enqueued job's id").await;
    let job = text(&browser, "#done").await.trim_start_matches(said).trim().to_owned();
    assert!(!job.is_empty());
    screenshot(&browser, "run-now-done").await;
    wait_until("the job Run now enqueued to run", Duration::from_secs(20), || async {
        CHORES.lock().unwrap().contains(&job)
    })
    .await;

    // The Workers page marks the leader.
    browser.goto(&format!("{base}/workers")).await.unwrap();
    let row = format!("tr[data-worker='{worker_id}']");
    wait_text(&browser, &row, "scheduler leader", false, "the leader's badge").await;
    screenshot(&browser, "workers-scheduler-leader").await;

    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_follows_a_batch_retries_its_dead_job_and_sees_it_end() {
    let _turn = ONE_BROWSER.lock().await;
    // One aggregator per vhost: this test's own. Its jobs go to `default` there.
    let vhost = TestVhost::create("browser-batches").await;
    let amqp = config_for(&vhost.url());
    let mut config = worker_config(&["default"], 4, "browser-batches-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    let worker = spawn_with(amqp.clone(), config);
    let raw = raw_connection_to(&vhost.url()).await;
    wait_for_consumers(&raw, "default", 1).await;
    let port = serve(amqp.clone(), WebConfig::default(), "").await.port;
    let base = format!("http://127.0.0.1:{port}");
    let (browser, _driver) = browser().await;

    let key = format!("bad-{}", unique("batch"));
    let invoices = vec![
        Invoice { key: unique("good-batch"), ms: 10 },
        Invoice { key: key.clone(), ms: 10 },
        Invoice { key: unique("good-batch"), ms: 10 },
    ];
    let batch = jobs_core::Batch::new()
        .description("March invoices")
        .on_complete(&Chore { what: "report".into() })
        .jobs(&invoices);
    let id = jobs_core::Client::new(amqp.clone()).enqueue_batch(batch).await.unwrap();

    // The Batches page (refreshed in place): complete, one dead, linked.
    browser.goto(&format!("{base}/batches")).await.unwrap();
    let row = format!("tr[data-batch='{id}']");
    wait_text(&browser, &row, "complete", false, "the batch complete").await;
    let cells = text(&browser, &row).await;
    assert!(cells.contains("March invoices") && cells.contains("complete: Chore"), "{cells}");
    assert_eq!(text(&browser, "#aggregator").await, "browser-batches-worker");
    screenshot(&browser, "batches").await;
    let dead_row = format!("tr[data-batch-dead='{id}'] a");
    browser.find(Locator::Css(&dead_row)).await.unwrap().click().await.unwrap();
    wait_text(&browser, "h2", "Dead job", false, "the dead job's page").await;
    assert!(text(&browser, "dl.job").await.contains("has no customer"));

    // Retry it there: it succeeds, and the batch ends.
    browser.find(Locator::Css("button.retry")).await.unwrap().click().await.unwrap();
    wait_until("the retried job to run", Duration::from_secs(30), || async { done(&key) }).await;
    browser.goto(&format!("{base}/batches")).await.unwrap();
    wait_text(&browser, "#recent", &id.to_string(), false, "the batch among those ended").await;
    wait_text(&browser, "#batches", "no open batch", false, "no batch open").await;
    screenshot(&browser, "batches-ended").await;

    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_pauses_a_queue_and_resumes_it_from_the_overview() {
    let _turn = ONE_BROWSER.lock().await;
    let queue = unique("browser-pause");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = worker_config(&[&queue], 2, &format!("{queue}-worker"), Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    let worker = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;
    let port = serve(amqp_config(), WebConfig::default(), "").await.port;
    let base = format!("http://127.0.0.1:{port}");
    let (browser, _driver) = browser().await;

    // A POST without the page's CSRF token pauses nothing.
    let refused = http_request(port, "POST", &format!("/queues/{queue}/pause"), &[], Some("csrf=0123"));
    assert_eq!(refused.status, 403, "{}", refused.body);

    browser.goto(&format!("{base}/")).await.unwrap();
    let row = format!("tr[data-queue='{queue}']");
    wait_text(&browser, &row, "running", false, "the queue running, with its Pause button").await;
    assert!(!text(&browser, &row).await.contains("paused"), "the refused POST paused nothing");
    browser.find(Locator::Css(&format!("{row} button.pause"))).await.unwrap().click().await.unwrap();
    wait_text(&browser, &row, "paused by dashboard@", false, "the queue paused").await;
    screenshot(&browser, "overview-paused").await;
    // Every worker stops consuming it.
    wait_until("no consumer on the paused queue", Duration::from_secs(10), || async {
        try_counts(&raw, &queue).await.is_some_and(|c| c.1 == 0)
    })
    .await;
    let client = jobs_core::Client::new(amqp_config());
    let held = client.enqueue_with(&Chore { what: "held".into() }, EnqueueOptions::new().queue(&queue)).await.unwrap();
    // A deliberate absence: 3 s in which the paused queue's job must not run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!CHORES.lock().unwrap().contains(&held.to_string()), "a job of a paused queue ran");

    // The API says so too, with who paused it.
    let (status, body) = http_get(port, "/api/queues");
    assert_eq!(status, 200, "{body}");
    let queues: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = queues.as_array().unwrap().iter().find(|q| q["name"] == queue.as_str()).unwrap().clone();
    assert_eq!(entry["paused"], true, "{entry}");
    assert!(entry["paused_by"].as_str().unwrap().starts_with("dashboard@"), "{entry}");

    // Resume: the held job runs.
    browser.goto(&format!("{base}/")).await.unwrap();
    wait_text(&browser, &row, "paused by", false, "the paused row").await;
    browser.find(Locator::Css(&format!("{row} button.resume"))).await.unwrap().click().await.unwrap();
    wait_text(&browser, &row, "running", false, "the queue running again").await;
    wait_until("the held job to run after the resume", Duration::from_secs(20), || async {
        CHORES.lock().unwrap().contains(&held.to_string())
    })
    .await;
    screenshot(&browser, "overview-resumed").await;

    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cancels_a_running_job_from_the_workers_page() {
    let _turn = ONE_BROWSER.lock().await;
    let queue = unique("browser-cancel");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let mut config = worker_config(&[&queue], 1, &format!("{queue}-worker"), Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    let worker = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;
    let port = serve(amqp_config(), WebConfig::default(), "").await.port;
    let base = format!("http://127.0.0.1:{port}");
    let client = jobs_core::Client::new(amqp_config());
    let id = client.enqueue_with(&Sleeper {}, EnqueueOptions::new().queue(&queue)).await.unwrap();

    // A POST without the page's CSRF token cancels nothing.
    let refused = http_request(port, "POST", &format!("/jobs/{id}/cancel"), &[], Some("csrf=0123"));
    assert_eq!(refused.status, 403, "{}", refused.body);

    let (browser, _driver) = browser().await;
    browser.goto(&format!("{base}/workers")).await.unwrap();
    let row = format!("tr[data-job='{id}']");
    wait_text(&browser, "#workers", &id.to_string(), false, "the running job with its Cancel button").await;
    screenshot(&browser, "workers-cancel").await;
    assert!(SAW_CANCEL.lock().unwrap().is_empty(), "the refused POST cancelled nothing");
    browser.find(Locator::Css(&format!("{row} button.cancel"))).await.unwrap().click().await.unwrap();
    // The job sees it, stops, and is dead-lettered as cancelled; the page drops it.
    wait_until("the job to see its cancel", Duration::from_secs(10), || async {
        SAW_CANCEL.lock().unwrap().contains(&id.to_string())
    })
    .await;
    wait_text(&browser, "#workers", &id.to_string(), true, "the cancelled job gone from the live page").await;
    wait_until("the job dead-lettered", Duration::from_secs(10), || async {
        counts(&raw, &format!("{queue}.dead")).await.0 == 1
    })
    .await;
    let letters = jobs_core::DeadLetters::connect(&amqp_config()).await.unwrap();
    let dead = letters.list(&queue, 10).await.unwrap();
    assert_eq!(dead[0].error_kind.as_deref(), Some("cancelled"), "{dead:?}");
    assert!(dead[0].error.as_deref().unwrap_or("").starts_with("cancelled by dashboard@"), "{dead:?}");
    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

/// Unique per key for 10 minutes.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(unique_for = "10m")]
struct Digest {
    user: u64,
}

impl Perform for Digest {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_the_duplicates_of_a_unique_type_and_the_keys_held() {
    let _turn = ONE_BROWSER.lock().await;
    let vhost = TestVhost::create("web-unique").await;
    let url = vhost.url();
    let raw = raw_connection_to(&url).await;
    // A worker on another queue: it keeps the unique keys, and Digests wait.
    let mut config = worker_config(&["web-unique-other"], 1, "web-unique-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    let worker = spawn_with(config_for(&url), config);
    wait_for_consumers(&raw, "jobs.unique.ask", 1).await;
    let port = serve(config_for(&url), WebConfig::default(), "").await.port;
    let client = jobs_core::Client::new(config_for(&url));
    let held = client.enqueue(&Digest { user: 1 }).await.unwrap();
    client.enqueue(&Digest { user: 2 }).await.unwrap();
    for _ in 0..3 {
        let again = client.enqueue(&Digest { user: 1 }).await.unwrap_err();
        assert!(matches!(&again, jobs_core::Error::Duplicate { existing } if *existing == held), "{again}");
    }
    let (browser, _driver) = browser().await;
    browser.goto(&format!("http://127.0.0.1:{port}/jobs")).await.unwrap();
    wait_text(&browser, "tr[data-type='Digest']", "Digest", false, "the unique type's row").await;
    wait_text(&browser, "#unique", "2 unique keys held now, kept by web-unique-worker", false, "the keys held").await;
    // Columns: type, runs, failed, failure rate, interrupted, limit, rate, rate limited, duplicates.
    let cells: Vec<String> = {
        let row = browser.find(Locator::Css("tr[data-type='Digest']")).await.unwrap();
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.unwrap() {
            cells.push(cell.text().await.unwrap());
        }
        cells
    };
    assert_eq!(cells[8], "3", "three duplicates: {cells:?}");
    screenshot(&browser, "job-types-unique").await;
    let (status, body) = http_get(port, "/api/jobs?range=1h");
    assert_eq!(status, 200);
    let types: serde_json::Value = serde_json::from_str(&body).unwrap();
    let digest = types.as_array().unwrap().iter().find(|t| t["job_type"] == "Digest").unwrap().clone();
    assert_eq!(digest["duplicates"], 3, "{digest}");
    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

/// Let go of the `Urgent` jobs.
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Of a queue with priorities; runs until released (a minute at most).
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "web-urgent", priorities)]
struct Urgent {}

impl Perform for Urgent {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        tokio::select! {
            _ = RELEASE.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_a_queue_with_priorities_and_a_workers_weighted_queues() {
    let _turn = ONE_BROWSER.lock().await;
    let vhost = TestVhost::create("web-weights").await;
    let url = vhost.url();
    let mut config = worker_config(&["web-urgent", "web-bulk"], 4, "web-weights-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(500);
    config.queue_weights = [("web-urgent".to_owned(), 3), ("web-bulk".to_owned(), 1)].into_iter().collect();
    let worker = spawn_with(config_for(&url), config);
    let client = jobs_core::Client::new(config_for(&url));
    for n in 0..6u8 {
        client.enqueue_with(&Urgent {}, EnqueueOptions::new().priority(n)).await.unwrap();
    }
    let port = serve(config_for(&url), WebConfig::default(), "").await.port;
    let (browser, _driver) = browser().await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    wait_text(&browser, "tr[data-queue='web-urgent']", "priorities 0-9", false, "the queue's priorities").await;
    wait_text(&browser, "tr[data-queue='web-bulk']", "web-bulk", false, "the other queue").await;
    let bulk = text(&browser, "tr[data-queue='web-bulk']").await;
    assert!(!bulk.contains("priorities"), "a queue without priorities says none: {bulk}");
    // `web-bulk` is idle: `web-urgent` (3 of 4) borrows its share and runs 4.
    browser.goto(&format!("http://127.0.0.1:{port}/workers")).await.unwrap();
    let row = "tr[data-weights='web-weights-worker']";
    wait_text(&browser, row, "web-urgent ×3: 4 running", false, "the weighted queues").await;
    let shown = text(&browser, row).await;
    assert!(shown.contains("web-bulk ×1: 0 running") && shown.contains("concurrency of 4"), "{shown}");
    screenshot(&browser, "workers-weights").await;
    let (status, body) = http_get(port, "/api/workers");
    assert_eq!(status, 200);
    let workers: serde_json::Value = serde_json::from_str(&body).unwrap();
    let weights =
        workers.as_array().unwrap().iter().find(|w| w["id"] == "web-weights-worker").unwrap()["weights"].clone();
    let urgent = weights.as_array().unwrap().iter().find(|q| q["queue"] == "web-urgent").unwrap();
    assert_eq!((urgent["weight"].as_u64(), urgent["running"].as_u64()), (Some(3), Some(4)), "{weights}");
    browser.close().await.unwrap();
    RELEASE.notify_waiters();
    worker.stop().await.unwrap();
}

/// An ordered type: one note at a time per document.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "web-ordered", ordered_by = "doc", shards = 2)]
struct Note {
    doc: u32,
}

impl Perform for Note {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_an_ordered_types_shards_and_the_worker_running_each() {
    let _turn = ONE_BROWSER.lock().await;
    let vhost = TestVhost::create("web-ordered").await;
    let url = vhost.url();
    let worker =
        spawn_with(config_for(&url), worker_config(&["web-ordered"], 1, "web-ordered-worker", Duration::from_secs(5)));
    let client = jobs_core::Client::new(config_for(&url));
    client.enqueue(&Note { doc: 1 }).await.unwrap();
    let port = serve(config_for(&url), WebConfig::default(), "").await.port;
    let (browser, _driver) = browser().await;
    browser.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    for n in 0..2 {
        let row = format!("tr[data-queue='web-ordered.shard.{n}']");
        wait_text(&browser, &row, "shard of web-ordered, run by web-ordered-worker", false, "a shard and its worker")
            .await;
        // Paused with its queue: no button of its own.
        let buttons = browser.find_all(Locator::Css(&format!("{row} button"))).await.unwrap();
        assert!(buttons.is_empty(), "a shard has no pause button of its own");
    }
    let base = text(&browser, "tr[data-queue='web-ordered']").await;
    assert!(base.contains("Pause") && !base.contains("shard of"), "{base}");
    screenshot(&browser, "overview-shards").await;
    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}

/// Says its progress every 100 ms over `steps` steps, then fails for good.
#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "web-progress", max_attempts = 1)]
struct Resize {
    steps: u32,
}

impl Perform for Resize {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        for n in 1..=self.steps {
            ctx.progress(f64::from(n) / f64::from(self.steps), &format!("resized {n} of {}", self.steps));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(JobError::fatal("the disk is full"))
    }
}

/// The data-progress of the job's row on the page now, if shown.
async fn shown_progress(browser: &Client, id: &str) -> Option<f64> {
    let css = format!("tr[data-job='{id}'] .progress");
    let element = browser.find(Locator::Css(&css)).await.ok()?;
    element.attr("data-progress").await.ok()??.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_a_jobs_progress_and_sees_its_last_word_when_it_ends_dead() {
    let _turn = ONE_BROWSER.lock().await;
    let vhost = TestVhost::create("web-progress").await;
    let url = vhost.url();
    let mut config = worker_config(&["web-progress"], 1, "web-progress-worker", Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(200);
    let worker = spawn_with(config_for(&url), config);
    let port = serve(config_for(&url), WebConfig::default(), "").await.port;
    let (browser, _driver) = browser().await;
    let client = jobs_core::Client::new(config_for(&url));
    // 15 s: the page refreshes its live part every 5 s.
    let id = client.enqueue(&Resize { steps: 150 }).await.unwrap().to_string();

    // `/api/running/<id>`: values that grow, beat after beat.
    let mut seen: Vec<f64> = Vec::new();
    let start = std::time::Instant::now();
    while seen.len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(30), "the progress did not grow: {seen:?}");
        let (status, body) = http_get(port, &format!("/api/running/{id}"));
        if status == 200 {
            let job: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(job["worker"], "web-progress-worker", "{job}");
            let done = job["progress"].as_f64().unwrap();
            let text = job["progress_text"].as_str().unwrap();
            assert!(text.starts_with("resized ") && text.ends_with(" of 150"), "{job}");
            if seen.last().map_or(true, |last| done > *last) {
                seen.push(done);
            }
            assert!(seen.last().is_some_and(|last| done >= *last), "progress went back: {seen:?} then {done}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The Workers page: a bar that grows, and the text.
    browser.goto(&format!("http://127.0.0.1:{port}/workers")).await.unwrap();
    wait_text(&browser, &format!("tr[data-job='{id}']"), " of 150", false, "the job's progress text").await;
    let first = shown_progress(&browser, &id).await.unwrap();
    let mut later = first;
    let start = std::time::Instant::now();
    while later <= first {
        assert!(start.elapsed() < Duration::from_secs(20), "the bar stayed at {first}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        later = shown_progress(&browser, &id).await.unwrap_or(later);
    }
    screenshot(&browser, "workers-progress").await;

    // It ends dead: its last word stays with it.
    let raw = raw_connection_to(&url).await;
    wait_until("the job to be dead", Duration::from_secs(30), || async {
        try_counts(&raw, "web-progress.dead").await.is_some_and(|c| c.0 == 1)
    })
    .await;
    let letters = jobs_core::DeadLetters::connect(&config_for(&url)).await.unwrap();
    let dead = letters.list("web-progress", 10).await.unwrap();
    assert_eq!(
        (dead[0].progress, dead[0].progress_text.as_deref()),
        (Some(1.0), Some("resized 150 of 150")),
        "{dead:?}"
    );
    letters.close().await;
    wait_until("the api to say it runs no more", Duration::from_secs(10), || async {
        http_get(port, &format!("/api/running/{id}")).0 == 404
    })
    .await;
    browser.goto(&format!("http://127.0.0.1:{port}/dead/web-progress/job/{id}")).await.unwrap();
    wait_text(&browser, "#progress", "100% resized 150 of 150", false, "the dead job's last progress").await;
    browser.close().await.unwrap();
    worker.stop().await.unwrap();
}
