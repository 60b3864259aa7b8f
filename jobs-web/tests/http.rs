//! Every page and API route of the dashboard over HTTP, against the real
//! broker, with a worker beating and a dead job; and the security rules: no
//! authentication on a public address refuses to start, a POST without the
//! CSRF token is refused, a read-only dashboard changes nothing, bad query
//! parameters are a 400 page, the broker password is on no page.
#![allow(clippy::unwrap_used)]

#[path = "support/serve.rs"]
mod serve;
use serve::serve;

use std::time::Duration;

use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use jobs_web::WebConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 1)]
struct Report {
    ok: bool,
}

impl Perform for Report {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        if self.ok {
            Ok(())
        } else {
            Err(JobError::fatal("the printer is on fire"))
        }
    }
}

/// The CSRF cookie a page sets, as a `Cookie` header value and the token.
fn csrf(response: &HttpResponse) -> (String, String) {
    let cookie = response.header("set-cookie").expect("a CSRF cookie").split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    (cookie, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_show_the_worker_its_queue_and_its_dead_job_and_actions_are_guarded() {
    let user = TestUser::create("web", ".*", ".*", ".*").await;
    let amqp = config_for(&user.url());
    let queue = unique("web");
    let _cleanup = Cleanup::queues(&[&queue]);
    let mut config = worker_config(&[&queue], 1, &format!("{queue}-worker"), Duration::from_secs(5));
    config.heartbeat_interval = Duration::from_millis(300);
    let running = spawn_with(amqp.clone(), config);
    let port = serve(amqp.clone(), WebConfig::default(), "").await.port;
    let client = jobs_core::Client::new(amqp.clone());
    let on = || EnqueueOptions::new().queue(&queue);
    let api = |path: &str| serde_json::from_str::<serde_json::Value>(&http_get(port, path).1).unwrap();
    wait_until("the worker live on the dashboard", Duration::from_secs(30), || async {
        let workers = api("/api/workers");
        workers
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["id"] == format!("{queue}-worker") && w["status"] == "live"))
    })
    .await;
    // The stream is read in order: with this worker's beat in, so are those of
    // earlier runs on this vhost (`deploy/test.sh` makes a fresh one; a reused
    // one has `Report` runs of its own). Count from what is there.
    let report_counts = || {
        let types = api("/api/jobs?range=1h");
        let row = types.as_array().and_then(|t| t.iter().find(|t| t["job_type"] == "Report").cloned());
        row.map_or((0, 0), |t| (t["runs"].as_u64().unwrap_or(0), t["failed"].as_u64().unwrap_or(0)))
    };
    let (runs_before, failed_before) = report_counts();
    client.enqueue_with(&Report { ok: true }, on()).await.unwrap();
    let dead_id = client.enqueue_with(&Report { ok: false }, on()).await.unwrap();
    wait_until("the queue's dead job on the dashboard", Duration::from_secs(30), || async {
        let queues = api("/api/queues");
        let row = queues.as_array().and_then(|q| q.iter().find(|r| r["name"] == queue.as_str()).cloned());
        row.is_some_and(|r| r["dead"] == 1 && r["consumers"] == 1)
    })
    .await;
    wait_until("the two runs counted, one failed", Duration::from_secs(10), || async {
        report_counts() == (runs_before + 2, failed_before + 1)
    })
    .await;
    let failure_rate = format!("{:.1}%", (failed_before + 1) as f64 * 100.0 / (runs_before + 2) as f64);

    // Every page, with its security headers.
    for (path, expect) in [
        ("/", queue.as_str()),
        ("/?range=7d", "Throughput"),
        ("/workers", &format!("{queue}-worker")),
        ("/jobs", "Report"),
        ("/jobs?range=1h", failure_rate.as_str()),
        ("/dead", queue.as_str()),
        (&format!("/dead/{queue}"), dead_id.as_str()),
        (&format!("/dead/{queue}?order=oldest&type=Report&q=printer"), dead_id.as_str()),
        (&format!("/dead/{queue}/job/{dead_id}"), "the printer is on fire"),
        (&format!("/dead/{queue}/bulk?action=delete"), "Delete 1 dead job"),
    ] {
        let page = http_request(port, "GET", path, &[], None);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(expect), "{path} shows {expect}: {}", page.body);
        assert!(!page.body.contains(&user.password), "{path} shows the broker password");
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!page.body.contains("<script>"), "{path}: no inline script");
        for (header, value) in [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(page.header(header), Some(value), "{path}: {header}");
        }
    }
    // The API's answers carry them too, and its refusals are JSON.
    let refused = http_request(port, "GET", "/api/dead/amq.nope", &[], None);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.header("content-type").is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        refused.header("content-type")
    );
    assert!(serde_json::from_str::<serde_json::Value>(&refused.body).unwrap()["error"]
        .as_str()
        .is_some_and(|e| e.contains("amq.")));
    assert_eq!(refused.header("x-content-type-options"), Some("nosniff"));
    let missing = http_request(port, "GET", "/api/no-such-thing", &[], None);
    assert_eq!(missing.status, 404);
    assert!(missing.body.starts_with('{'), "a JSON 404 under /api: {}", missing.body);
    let bad_query = http_request(port, "GET", "/api/jobs?range=forever", &[], None);
    assert_eq!(bad_query.status, 400);
    assert!(bad_query.body.contains("\"error\""), "{}", bad_query.body);
    let job = api(&format!("/api/dead/{queue}/{dead_id}"));
    assert_eq!((job["job_type"].as_str(), job["error_kind"].as_str()), (Some("Report"), Some("fatal")));
    assert_eq!(job["payload"]["ok"], false, "arguments decoded from MessagePack without the type");
    assert_eq!(api(&format!("/api/dead/{queue}"))["total"], 1);
    let overview = api("/api/overview?range=1h");
    assert!(overview["last_hour"]["succeeded"].as_u64() >= Some(1) && overview["live_workers"].as_u64() >= Some(1));
    for path in ["/assets/app.css", "/assets/live.js", "/healthz"] {
        assert_eq!(http_get(port, path).0, 200, "{path}");
    }

    // Bad input: a 400 page, not a panic.
    for path in [
        "/?range=2y",
        &format!("/dead/{queue}?page=abc"),
        &format!("/dead/{queue}?page=0"),
        "/dead/amq.nope",
        "/?bogus=1",
    ] {
        let page = http_request(port, "GET", path, &[], None);
        assert_eq!(page.status, 400, "{path}: {}", page.body);
    }
    assert_eq!(http_get(port, "/no/such/page").0, 404);

    // Actions: a POST needs the token of its cookie.
    let retry = format!("/dead/{queue}/job/{dead_id}/retry");
    let refused = http_request(port, "POST", &retry, &[], Some("csrf=0123"));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let page = http_request(port, "GET", &format!("/dead/{queue}"), &[], None);
    let (cookie, token) = csrf(&page);
    let other = http_request(port, "POST", &retry, &[("Cookie", &cookie)], Some(&format!("csrf={}", "f".repeat(32))));
    assert_eq!(other.status, 403, "a token not the cookie's");
    let cross = http_request(
        port,
        "POST",
        &retry,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        Some(&format!("csrf={token}")),
    );
    assert_eq!(cross.status, 403, "another origin");
    assert_eq!(api(&format!("/api/dead/{queue}"))["total"], 1, "nothing was done");
    let done = http_request(port, "POST", &retry, &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some(format!("/dead/{queue}").as_str()));
    // Retried: it runs again (and fails again, so it comes back dead, as a new attempt).
    wait_until("the retried job dead again", Duration::from_secs(20), || async {
        api(&format!("/api/dead/{queue}/{dead_id}"))["attempt"] == 1 && api(&format!("/api/dead/{queue}"))["total"] == 1
    })
    .await;
    let bulk = http_request(
        port,
        "POST",
        &format!("/dead/{queue}/bulk"),
        &[("Cookie", &cookie)],
        Some(&format!("csrf={token}&action=delete&type=Report")),
    );
    assert_eq!(bulk.status, 303, "{}", bulk.body);
    let progress = bulk.header("location").expect("the action's page").to_owned();
    assert!(progress.starts_with(&format!("/dead/{queue}/actions/")), "{progress}");
    wait_until("the bulk delete to end", Duration::from_secs(20), || async {
        http_request(port, "GET", &progress, &[], None).body.contains("Deleted 1 dead job of type Report")
    })
    .await;
    assert_eq!(api(&format!("/api/dead/{queue}"))["total"], 0);
    // An action id that is not a number: a 404 like any unknown one, JSON under /api.
    let (status, body) = http_get(port, "/api/actions/not-a-number");
    assert_eq!(status, 404, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(), "{body}");
    assert_eq!(http_get(port, &format!("/dead/{queue}/actions/x1")).0, 404);
    // A page past the last is refused from the broker's count.
    let (status, body) = http_get(port, &format!("/api/dead/{queue}?page=2"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("page 2 does not exist (1 to 1)"), "{body}");
    let (status, body) = http_get(port, &format!("/api/dead/{queue}?order=newest&page=201"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("200 pages deep"), "{body}");

    // An id with characters that mean something in a URL: links percent-encode it.
    let odd = jobs_core::JobId::from("odd/id?x y#1");
    client.enqueue_with(&Report { ok: false }, on().id(odd.clone())).await.unwrap();
    wait_until("the odd dead job", Duration::from_secs(20), || async {
        api(&format!("/api/dead/{queue}"))["total"] == 1
    })
    .await;
    let list = http_request(port, "GET", &format!("/dead/{queue}"), &[], None);
    let link = format!("/dead/{queue}/job/odd%2Fid%3Fx%20y%231");
    assert!(list.body.contains(&format!("href=\"{link}\"")), "{}", list.body);
    let page = http_request(port, "GET", &link, &[], None);
    assert!(page.status == 200 && page.body.contains("odd/id?x y#1"), "{}: {}", page.status, page.body);
    let deleted =
        http_request(port, "POST", &format!("{link}/delete"), &[("Cookie", &cookie)], Some(&format!("csrf={token}")));
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert_eq!(api(&format!("/api/dead/{queue}"))["total"], 0);

    // Read-only, and mounted under a prefix: links follow it; no action is offered or taken.
    let read_only = WebConfig { read_only: true, ..WebConfig::default() };
    let ro_port = serve(amqp.clone(), read_only, "/jobs").await.port;
    client.enqueue_with(&Report { ok: false }, on()).await.unwrap();
    wait_until("the new dead job", Duration::from_secs(20), || async {
        http_get(ro_port, &format!("/jobs/api/dead/{queue}")).1.contains("\"total\":1")
    })
    .await;
    let page = http_request(ro_port, "GET", &format!("/jobs/dead/{queue}"), &[], None);
    assert!(page.body.contains("read-only") && !page.body.contains(">Retry<"), "{}", page.body);
    assert!(page.body.contains("href=\"/jobs/workers\""), "links under the prefix");
    let (cookie, token) = csrf(&page);
    let bulk = http_request(
        ro_port,
        "POST",
        &format!("/jobs/dead/{queue}/bulk"),
        &[("Cookie", &cookie)],
        Some(&format!("csrf={token}&action=delete")),
    );
    assert_eq!(bulk.status, 403);
    assert_eq!(http_request(ro_port, "GET", &format!("/jobs/dead/{queue}/bulk?action=retry"), &[], None).status, 403);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_when_configured_and_never_on_a_public_address_without_it() {
    // The binary refuses a public address without authentication.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobs-web"))
        .args(["--addr", "0.0.0.0:0"])
        .env("JOBS__AMQP__URL", amqp_url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refusing to listen on 0.0.0.0:0 without authentication"), "{text}");

    // Without authentication, only loopback names are answered: a page whose
    // own name points at 127.0.0.1 (DNS rebinding) is refused.
    let open = WebConfig { allowed_hosts: vec!["jobs.internal".into()], ..WebConfig::default() };
    let open_port = serve(amqp_config(), open, "").await.port;
    assert_eq!(http_request(open_port, "GET", "/", &[], None).status, 200);
    assert_eq!(http_request(open_port, "GET", "/", &[("Host", &format!("localhost:{open_port}"))], None).status, 200);
    let rebound =
        http_request(open_port, "GET", "/api/workers", &[("Host", &format!("evil.example:{open_port}"))], None);
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let said: serde_json::Value = serde_json::from_str(&rebound.body).expect("JSON under /api");
    assert!(said["error"].as_str().unwrap().contains("web.allowed_hosts"), "{}", rebound.body);
    assert_eq!(rebound.header("x-frame-options"), Some("DENY"), "refusals carry the headers too");
    assert_eq!(http_request(open_port, "GET", "/", &[("Host", "jobs.internal")], None).status, 200);

    let web = WebConfig { token: Some("t0ken-for-tests".into()), ..WebConfig::default() };
    let port = serve(amqp_config(), web, "").await.port;
    // With authentication, any name (a proxy's, a load balancer's) is answered.
    assert_eq!(
        http_request(
            port,
            "GET",
            "/",
            &[("Host", "jobs.example.com"), ("Authorization", "Bearer t0ken-for-tests")],
            None
        )
        .status,
        200
    );
    let denied = http_request(port, "GET", "/", &[], None);
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Basic realm=\"jobs\""));
    assert!(denied.header("content-security-policy").is_some(), "refusals carry the headers too");
    let denied_api = http_request(port, "GET", "/api/workers", &[], None);
    assert_eq!(denied_api.status, 401);
    let said: serde_json::Value = serde_json::from_str(&denied_api.body).expect("JSON under /api");
    assert_eq!(said["error"], "authentication required");
    assert_eq!(http_request(port, "GET", "/", &[("Authorization", "Bearer nope")], None).status, 401);
    assert_eq!(http_request(port, "GET", "/", &[("Authorization", "Bearer t0ken-for-tests")], None).status, 200);
    // A browser sends it as the password of basic authentication.
    assert_eq!(
        http_request(port, "GET", "/workers", &[("Authorization", "Basic b3BzOnQwa2VuLWZvci10ZXN0cw==")], None).status,
        200
    );
}
