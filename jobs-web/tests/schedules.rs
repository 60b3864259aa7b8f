//! The Schedules page and Run now over HTTP, against the real broker, with a
//! worker of the test's own that has schedules, on a vhost of the test's own
//! (the scheduler's leadership is one per vhost): the dashboard shows it as
//! the leader, on the Workers page too, with its schedules and their last
//! runs; Run now, confirmed with the CSRF token, enqueues the schedule's job
//! once under a fresh id that the page names and the worker then runs; a
//! GET, a POST without the token or from another origin, and a read-only
//! dashboard run nothing; a schedule the leader does not have and a
//! scheduler without a leader are refused in words.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;
#[path = "support/scheduled.rs"]
mod scheduled;
use scheduled::spawn_scheduled;

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_web::WebConfig;
use jobs_worker::Schedule;
use serde::{Deserialize, Serialize};

/// (schedule, job id) of each run.
static RAN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
struct Chore {
    schedule: String,
}

impl Perform for Chore {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        RAN.lock().unwrap().push((self.schedule, ctx.job_id().to_string()));
        Ok(())
    }
}

/// The ids of the jobs of `schedule` that ran.
fn ran(schedule: &str) -> Vec<String> {
    RAN.lock().unwrap().iter().filter(|(s, _)| s == schedule).map(|(_, id)| id.clone()).collect()
}

/// Every second: it shows a last run soon. Once a year: only Run now runs its job.
const OFTEN: &str = "every-second";
const RARELY: &str = "new-year";

/// The test's two schedules, to `queue`.
fn both(queue: &str) -> [Schedule; 2] {
    [
        Schedule::new(OFTEN, "* * * * * *", Chore { schedule: OFTEN.into() }).queue(queue),
        Schedule::new(RARELY, "0 0 1 1 *", Chore { schedule: RARELY.into() }).queue(queue).time_zone("Europe/Berlin"),
    ]
}

/// The CSRF cookie a page sets, as a `Cookie` header value and the token.
fn csrf(response: &HttpResponse) -> (String, String) {
    let cookie = response.header("set-cookie").expect("a CSRF cookie").split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    (cookie, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_its_schedules_and_run_now_enqueue_once_and_only_when_confirmed() {
    let vhost = TestVhost::create("web-schedules").await;
    let amqp = config_for(&vhost.url());
    let queue = unique("web-schedules");
    let worker_id = format!("{queue}-worker");
    // Every second: it shows a last run soon. Once a year: only Run now runs its job.
    let (often, rarely) = (OFTEN, RARELY);
    let mut config = worker_config(&[&queue], 1, &worker_id, Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(300);
    let worker = spawn_scheduled(amqp.clone(), config, both(&queue));
    let port = serve(amqp.clone(), WebConfig::default(), "").await.port;
    let api = |path: &str| {
        let (status, body) = http_get(port, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let schedule = |state: &serde_json::Value, name: &str| {
        state["schedules"].as_array().and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
    };
    wait_until("the worker leading, its schedule fired, on /api/schedules", Duration::from_secs(60), || async {
        let state = api("/api/schedules");
        state["leader"] == worker_id.as_str()
            && schedule(&state, often).is_some_and(|s| s["last_fired_ms"].as_u64().is_some())
    })
    .await;
    let state = api("/api/schedules");
    assert_eq!(state["differing"], serde_json::json!([]), "{state}");
    let every = schedule(&state, often).unwrap();
    assert_eq!(
        (&every["cron"], &every["time_zone"], &every["job_type"], &every["catch_up"], &every["enabled"]),
        (&"* * * * * *".into(), &"UTC".into(), &"Chore".into(), &"last".into(), &true.into()),
        "{every}"
    );
    assert!(every["last_lateness_ms"].as_u64().is_some(), "{every}");
    let next = every["next_ms"].as_array().unwrap();
    assert_eq!(next.len(), 3, "{every}");
    assert!(next.windows(2).all(|w| w[0].as_u64() < w[1].as_u64()), "the next three, in order: {every}");
    let yearly = schedule(&state, rarely).unwrap();
    assert!(yearly["last_fired_ms"].is_null() && yearly["time_zone"] == "Europe/Berlin", "{yearly}");
    wait_until("the every-second job to run", Duration::from_secs(20), || async { !ran(often).is_empty() }).await;

    // The pages: the leader marked, the schedules with their Run now.
    let page = http_request(port, "GET", "/schedules", &[], None);
    assert_eq!(page.status, 200, "{}", page.body);
    for expect in [
        format!("<span id=\"leader\">{worker_id}</span>"),
        format!("<tr data-schedule=\"{often}\">"),
        "<code>0 0 1 1 *</code>".into(),
        format!("href=\"/schedules/{rarely}/run\">Run now"),
        " ago)".into(),
        ">Schedules</a>".into(),
    ] {
        assert!(page.body.contains(&expect), "/schedules shows {expect}: {}", page.body);
    }
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let workers = http_request(port, "GET", "/workers", &[], None);
    assert!(
        workers.body.contains(&format!("<td>{worker_id} <a class=\"pill leader\"")),
        "the leader marked: {}",
        workers.body
    );
    let listed = api("/api/workers");
    let me = listed.as_array().unwrap().iter().find(|w| w["id"] == worker_id.as_str()).unwrap().clone();
    assert_eq!(me["scheduler_leader"], true, "{me}");

    // Nothing runs without the confirmed POST: the GET asks, a POST without
    // the cookie's token or from another origin is refused.
    let run = format!("/schedules/{rarely}/run");
    let confirm = http_request(port, "GET", &run, &[], None);
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(
        confirm.body.contains(&format!("Run <code>{rarely}</code> now?")) && confirm.body.contains("name=\"csrf\""),
        "{}",
        confirm.body
    );
    let (cookie, token) = csrf(&confirm);
    assert!(confirm.body.contains(&format!("value=\"{token}\"")), "the form carries the cookie's token");
    assert_eq!(http_request(port, "POST", &run, &[], Some("csrf=0123")).status, 403, "no cookie");
    let other = http_request(port, "POST", &run, &[("Cookie", &cookie)], Some(&format!("csrf={}", "f".repeat(32))));
    assert_eq!(other.status, 403, "a token not the cookie's: {}", other.body);
    assert_eq!(http_request(port, "POST", &run, &[("Cookie", &cookie)], Some("")).status, 403, "no token");
    let cross = http_request(
        port,
        "POST",
        &run,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        Some(&format!("csrf={token}")),
    );
    assert_eq!(cross.status, 403, "another origin");
    // A read-only dashboard offers no Run now and takes none.
    let ro_port = serve(amqp.clone(), WebConfig { read_only: true, ..WebConfig::default() }, "").await.port;
    wait_until("the read-only dashboard to see the leader", Duration::from_secs(30), || async {
        http_get(ro_port, "/api/schedules").1.contains(&format!("\"leader\":\"{worker_id}\""))
    })
    .await;
    let ro_page = http_request(ro_port, "GET", "/schedules", &[], None);
    assert!(ro_page.body.contains(rarely) && !ro_page.body.contains("Run now…"), "{}", ro_page.body);
    assert_eq!(http_request(ro_port, "GET", &run, &[], None).status, 403);
    let (ro_cookie, ro_token) = csrf(&ro_page);
    let ro_post = http_request(ro_port, "POST", &run, &[("Cookie", &ro_cookie)], Some(&format!("csrf={ro_token}")));
    assert_eq!(ro_post.status, 403, "{}", ro_post.body);

    // Confirmed: the leader enqueues it once, the page names the job, the worker runs it.
    let done = http_request(port, "POST", &run, &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(done.status, 303, "{}", done.body);
    let outcome = done.header("location").expect("the outcome's page").to_owned();
    assert!(outcome.starts_with(&format!("/schedules/{rarely}/runs/")), "{outcome}");
    let shown = http_request(port, "GET", &outcome, &[], None);
    assert_eq!(shown.status, 200, "{}", shown.body);
    let said = format!("<h2 id=\"done\">Enqueued {rarely} now as job ");
    let at = shown.body.find(&said).unwrap_or_else(|| panic!("the page names the job: {}", shown.body));
    let job = shown.body[at + said.len()..].split('<').next().unwrap().trim().to_owned();
    assert!(!job.is_empty(), "{}", shown.body);
    wait_until("the job Run now enqueued to run", Duration::from_secs(20), || async { ran(rarely).contains(&job) })
        .await;
    // The refused requests, sent before it, would have run before it: none did.
    assert_eq!(ran(rarely), std::slice::from_ref(&job), "only the confirmed Run now ran");
    // The outcome's page again (a reload) runs nothing more; an unknown one is a 404.
    assert!(http_request(port, "GET", &outcome, &[], None).body.contains(&job));
    assert_eq!(http_get(port, &format!("/schedules/{rarely}/runs/999")).0, 404);
    assert_eq!(http_get(port, &format!("/schedules/{often}/runs/1")).0, 404, "a run of another schedule");

    // A schedule the leader does not have: its reason, in words.
    let unknown =
        http_request(port, "POST", "/schedules/no-such/run", &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(unknown.status, 502, "{}", unknown.body);
    assert!(unknown.body.contains("leader did not run no-such: "), "{}", unknown.body);
    let bad = http_request(port, "GET", "/schedules/%0A/run", &[], None);
    assert_eq!(bad.status, 400, "{}", bad.body);

    // The worker stops: no leader, said plainly, and Run now says no leader answered.
    worker.stop().await.unwrap();
    wait_until("no leader on /api/schedules", Duration::from_secs(30), || async {
        api("/api/schedules")["leader"].is_null()
    })
    .await;
    let page = http_request(port, "GET", "/schedules", &[], None);
    assert!(page.body.contains("No worker leads the scheduler: no worker with schedules is running."), "{}", page.body);
    let started = std::time::Instant::now();
    let unanswered = http_request(port, "POST", &run, &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(unanswered.status, 504, "{}", unanswered.body);
    assert!(unanswered.body.contains("no leader of the scheduler answered within 10s"), "{}", unanswered.body);
    assert!(started.elapsed() < Duration::from_secs(20), "answered after the timeout, not later");
    // A leader again: the request expired with its caller, so it does not run now.
    let config = worker_config(&[&queue], 1, &worker_id, Duration::from_secs(5));
    let again = spawn_scheduled(amqp.clone(), config, both(&queue));
    let before = ran(often).len();
    wait_until("the new leader's ticks", Duration::from_secs(30), || async { ran(often).len() >= before + 3 }).await;
    assert_eq!(ran(rarely), [job], "the unanswered Run now never ran");
    again.stop().await.unwrap();
}
