//! A dead queue longer than one read of it used to be (10,000): the pages
//! tell the true count, reach the last job, open a job past the first 10,000,
//! count a filter's matches over the whole queue, and Retry all acts on every
//! one, in the background, with its count. A bulk action holds its queue
//! (reads wait their turn or are refused), takes only what its filter takes,
//! and one whose link goes silent ends with an error, the rest left dead.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;

use std::time::Duration;

use jobs_core::plumbing::amqprs::{FieldValue, LongStr};
use jobs_core::plumbing::Message;
use jobs_core::JobId;
use jobs_test::*;
use jobs_web::WebConfig;
use serve::{fill_dead, serve};

const DEAD: usize = 12_000;
const LATE: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_job_is_reached_counted_and_retried() {
    let queue = unique("dead-pages");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    fill_dead(&raw, &queue, DEAD, |n| {
        let kind = if n >= DEAD - LATE { "Late" } else { "Report" };
        Message::job(kind, JobId::from(format!("dead-{n:05}").as_str()), vec![0x80])
    })
    .await;

    let port = serve(amqp_config(), WebConfig::default(), "").await.port;
    let api = |path: &str| {
        let (status, body) = http_get(port, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };

    let first = api(&format!("/api/dead/{queue}"));
    assert_eq!((first["total"].as_u64(), first["pages"].as_u64()), (Some(DEAD as u64), Some(240)), "{first}");
    assert_eq!(first["jobs"][0]["id"], "dead-00000", "oldest first");
    assert!(first["scanned"].as_u64().unwrap() <= 50, "page 1 reads one page: {}", first["scanned"]);
    let last = api(&format!("/api/dead/{queue}?page=240"));
    assert_eq!(last["jobs"].as_array().unwrap().len(), 50);
    assert_eq!(last["jobs"][49]["id"], format!("dead-{:05}", DEAD - 1), "the last page reaches the last job");
    let html = http_get(port, &format!("/dead/{queue}?page=240")).1;
    assert!(html.contains("12,000 dead") && html.contains("page 240 of 240"), "{html}");
    let past = http_get(port, &format!("/dead/{queue}?page=241"));
    assert_eq!(past.0, 400, "{}", past.1);

    let job = api(&format!("/api/dead/{queue}/dead-11500"));
    assert_eq!((job["id"].as_str(), job["position"].as_u64()), (Some("dead-11500"), Some(11_500)));
    let (status, page) = http_get(port, &format!("/dead/{queue}/job/dead-11500"));
    assert_eq!(status, 200, "a job past the first 10,000 opens: {page}");

    let late = api(&format!("/api/dead/{queue}?type=Late"));
    assert_eq!(
        (late["matches"].as_u64(), late["complete"].as_bool()),
        (Some(LATE as u64), Some(true)),
        "{}",
        late["matches"]
    );
    assert_eq!(late["jobs"][0]["id"], format!("dead-{:05}", DEAD - LATE));
    let newest = api(&format!("/api/dead/{queue}?order=newest"));
    assert_eq!(newest["jobs"][0]["id"], format!("dead-{:05}", DEAD - 1), "newest first");
    assert_eq!(newest["complete"], true, "within the read budget");
    assert_eq!(api(&format!("/api/dead/{queue}"))["total"], DEAD as u64, "reading left every job dead");

    // Retry all: confirmed with the true count, run in the background, every one moved.
    let confirm = http_get(port, &format!("/dead/{queue}/bulk?action=retry"));
    assert!(confirm.1.contains("Retry 12,000 dead jobs"), "{}", confirm.1);
    let page = http_request(port, "GET", &format!("/dead/{queue}"), &[], None);
    let cookie = page.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let started = http_request(
        port,
        "POST",
        &format!("/dead/{queue}/bulk"),
        &[("Cookie", &cookie)],
        Some(&format!("csrf={token}&action=retry&type=")),
    );
    assert_eq!(started.status, 303, "{}", started.body);
    let progress = started.header("location").unwrap().to_owned();
    let id = progress.rsplit('/').next().unwrap().to_owned();
    wait_until("Retry all to end", Duration::from_secs(120), || async {
        http_get(port, &progress).1.contains("Retried 12,000 dead jobs")
    })
    .await;
    let action = api(&format!("/api/actions/{id}"));
    assert_eq!((action["done"].as_u64(), action["running"].as_bool()), (Some(DEAD as u64), Some(false)), "{action}");
    assert_eq!(try_counts(&raw, &format!("{queue}.dead")).await, Some((0, 0)), "none stays dead");
    assert_eq!(try_counts(&raw, &queue).await.map(|c| c.0), Some(DEAD as u32), "every one back in its queue");
}

/// Starts a bulk action with `form` (after the CSRF fields); the path of its progress page.
fn start_bulk(port: u16, queue: &str, form: &str) -> String {
    let page = http_request(port, "GET", &format!("/dead/{queue}/bulk?action=delete"), &[], None);
    let cookie = page.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let started = http_request(
        port,
        "POST",
        &format!("/dead/{queue}/bulk"),
        &[("Cookie", &cookie)],
        Some(&format!("csrf={token}&{form}")),
    );
    assert_eq!(started.status, 303, "{}", started.body);
    started.header("location").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_holds_its_queue_and_takes_only_what_its_filter_takes() {
    const N: usize = 4_000;
    let queue = unique("dead-bulk");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let error = |n: usize| if n % 2 == 0 { "Timeout talking to smtp" } else { "mailbox refused" };
    fill_dead(&raw, &queue, N, |n| {
        let text = FieldValue::S(LongStr::try_from(error(n).to_owned()).unwrap());
        Message::job("Mail", JobId::from(format!("bulk-{n:05}").as_str()), vec![0x80])
            .header(jobs_core::plumbing::headers::ERROR, text)
    })
    .await;
    // The dashboard reaches the broker through a relay that can go silent.
    let relay = Relay::start().await;
    let mut amqp = config_for(&relay.url);
    amqp.heartbeat = 2;
    let port = serve(amqp, WebConfig::default(), "").await.port;
    let api = |path: &str| {
        let (status, body) = http_get(port, path);
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|_| panic!("{path}: {body}")))
    };

    // A text filter: its matches counted, carried to the bulk links and the confirmation.
    let (status, timeouts) = api(&format!("/api/dead/{queue}?q=timeout"));
    assert_eq!(status, 200, "{timeouts}");
    assert_eq!((timeouts["matches"].as_u64(), timeouts["complete"].as_bool()), (Some(N as u64 / 2), Some(true)));
    let list = http_get(port, &format!("/dead/{queue}?q=timeout")).1;
    assert!(list.contains("bulk?action=delete&#38;q=timeout"), "{list}");
    let confirm = http_get(port, &format!("/dead/{queue}/bulk?action=delete&q=timeout")).1;
    assert!(
        confirm.contains("Delete 2,000 dead jobs whose error contains")
            && confirm.contains("name=\"q\" value=\"timeout\""),
        "{confirm}"
    );

    // The link goes silent partway through the deletes: the action stalls, and holds the queue meanwhile.
    relay.cut_after(20_000);
    let progress = start_bulk(port, &queue, "action=delete&q=timeout");
    let id = progress.rsplit('/').next().unwrap().to_owned();
    let (_, action) = api(&format!("/api/actions/{id}"));
    assert_eq!(action["running"], true, "stalled on the silent link: {action}");
    let (status, refused) = api(&format!("/api/dead/{queue}"));
    assert_eq!(status, 409, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains(&format!("(action {id})")), "{refused}");
    assert_eq!(api(&format!("/api/dead/{queue}/bulk-00001")).0, 409, "opening a job waits too");
    let page = http_get(port, &format!("/dead/{queue}"));
    assert_eq!(page.0, 200);
    assert!(page.1.contains("the list shows again when it has ended"), "{}", page.1);
    assert_eq!(start_bulk(port, &queue, "action=retry"), progress, "a second action goes to the running one");
    wait_until("the stalled action to end", Duration::from_secs(60), || async {
        api(&format!("/api/actions/{id}")).1["running"] == false
    })
    .await;
    let (_, action) = api(&format!("/api/actions/{id}"));
    assert!(action["error"].is_string(), "it says why it stopped: {action}");
    assert!(action["done"].as_u64().unwrap() < N as u64 / 2, "{action}");
    let stopped = http_get(port, &progress).1;
    assert!(stopped.contains("then stopped") && stopped.contains("the rest stay dead"), "{stopped}");

    // The queue reads again (on a new connection), and a run to the end takes the other timeouts, only those.
    wait_until("the jobs the silent link held back in the queue", Duration::from_secs(60), || async {
        let (status, all) = api(&format!("/api/dead/{queue}?q=refused"));
        status == 200 && all["matches"] == N as u64 / 2 && all["total"].as_u64() > Some(N as u64 / 2)
    })
    .await;
    let progress = start_bulk(port, &queue, "action=delete&q=timeout");
    wait_until("the second delete to end", Duration::from_secs(60), || async {
        http_get(port, &progress).1.contains("Deleted")
    })
    .await;
    let done = http_get(port, &progress).1;
    assert!(done.contains("whose error contains"), "{done}");
    let (_, left) = api(&format!("/api/dead/{queue}?q=timeout"));
    assert_eq!(left["matches"], 0, "{left}");
    assert_eq!(left["total"], N as u64 / 2, "every refused job stays dead: {left}");
    assert_eq!(try_counts(&raw, &format!("{queue}.dead")).await.map(|c| c.0), Some(N as u32 / 2));
}
