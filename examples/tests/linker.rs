//! Job registration that a linker cannot drop. `tests/lto-app` is an app
//! outside the workspace (its jobs in its library, its workers beside it),
//! built here in release with fat LTO and 16 codegen units. A worker that
//! names its job types (`main_with(jobs![..])`) serves them; so does one that
//! relies on the link-time registry while it names its jobs crate; one that
//! does not name it serves nothing and says so at start.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jobs_core::plumbing::{job_properties, Outgoing, Publisher};
use jobs_core::JobId;
use jobs_test::*;

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/lto-app")
}

/// Builds the app in release (its profile: fat LTO, 16 codegen units); the path of its binaries.
fn build_app() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lto-app");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(app_dir().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building tests/lto-app failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let profile = std::fs::read_to_string(app_dir().join("Cargo.toml")).unwrap();
    assert!(profile.contains("lto = \"fat\"") && profile.contains("codegen-units = 16"), "the app's release profile");
    target.join("release")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ways_of_registering_serve_every_job_in_a_fat_lto_release_build() {
    let bin = build_app();
    // The app's queue has a fixed name: on a vhost of its own, gone with it.
    let vhost = TestVhost::create("lto-app").await;
    let (url, queue) = (vhost.url(), "lto-app");
    let raw = raw_connection_to(&url).await;
    let connection = jobs_core::plumbing::connect(&config_for(&url), "linker-test").await.unwrap();
    let publisher = Publisher::open(&connection, Duration::from_secs(10)).await.unwrap();
    let declarer = jobs_core::plumbing::topology::Declarer::open(&connection).await.unwrap();
    amqp_config().topology().declare_job_queue(&declarer, queue).await.unwrap();

    for (worker, n) in [("worker-explicit", 1), ("worker-linked", 2)] {
        let env = [("JOBS__AMQP__URL", url.as_str())];
        let running = Process::start_with(worker, bin.join(worker).to_str().unwrap(), &["--id", worker], &env);
        wait_for_consumers(&raw, queue, 1).await;
        for job in ["LtoMail", "LtoReport"] {
            let id = JobId::new();
            let body = rmp_serde::to_vec_named(&serde_json::json!({ "n": n })).unwrap();
            let properties = job_properties(job, &id, 1);
            let message = Outgoing { id, exchange: String::new(), routing_key: queue.into(), properties, body };
            publisher.publish(message).await.unwrap();
        }
        for job in ["LtoMail", "LtoReport"] {
            running.wait_line(&format!("ran {job} {n} on {worker}"), Duration::from_secs(20)).await;
        }
        running.stop().await;
        assert_eq!(counts(&raw, &format!("{queue}.dead")).await.0, 0, "{worker}: nothing dead");
    }

    let (ok, out) = run_on(&url, bin.join("worker-unnamed").to_str().unwrap(), &[]);
    assert!(!ok && out.contains("no queues to consume"), "a jobs crate nothing names is not linked: {out}");
    jobs_core::plumbing::close_connection(connection).await;
}

/// An app outside the workspace that adds the `[patch.crates-io]` lines of
/// `docs/configuration.md` hears of a wrong password as `LoginRefused`, at
/// once (without them: a reset connection after about 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_the_patch_lines_hears_a_wrong_password_as_login_refused() {
    let bin = build_app();
    let user = TestUser::create("outside-app", ".*", ".*", ".*").await;
    let started = std::time::Instant::now();
    let out = Command::new(bin.join("login-check"))
        .env("JOBS__AMQP__URL", user.url_with("not-the-password"))
        .env("JOBS__AMQP__RECONNECT_TIMEOUT", "20s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("login refused: true"), "{text}");
    assert!(text.contains(&format!("RabbitMQ refused the login of user `{}`", user.name)), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "at once: {:?}", started.elapsed());
    let right = Command::new(bin.join("login-check")).env("JOBS__AMQP__URL", user.url()).output().unwrap();
    assert!(right.status.success(), "the right password connects: {}", String::from_utf8_lossy(&right.stdout));
}
