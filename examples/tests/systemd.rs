//! The worker speaks sd_notify: this test plays systemd's side on a unix
//! datagram socket. READY once consuming, WATCHDOG only while connected,
//! STATUS with jobs done, STOPPING at shutdown.
#![allow(clippy::unwrap_used)]

#[path = "../../jobs-worker/tests/common/mod.rs"]
mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use examples::Task;
use jobs_core::{Client, EnqueueOptions};

/// systemd's end: collects every notification with the time it came.
fn listen(path: &std::path::Path) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let _ = std::fs::remove_file(path);
    let socket = UnixDatagram::bind(path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            sink.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    });
    got
}

fn count(got: &Mutex<Vec<(Instant, String)>>, what: &str, since: Instant) -> usize {
    got.lock().unwrap().iter().filter(|(t, m)| *t >= since && m == what).count()
}

fn has(got: &Mutex<Vec<(Instant, String)>>, part: &str) -> bool {
    got.lock().unwrap().iter().any(|(_, m)| m.contains(part))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_notifies_systemd_and_pings_the_watchdog_only_while_connected() {
    let node = TestNode::start("systemd");
    let url = node.url();
    let queue = "systemd-notify";
    let path = std::env::temp_dir().join(format!("jobs-notify-{}.sock", std::process::id()));
    let got = listen(&path);
    let mut worker = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["--queues", queue, "--grace-period", "10s"])
        .env("JOBS__AMQP__URL", &url)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    wait_until("READY=1", Duration::from_secs(20), || async { has(&got, "READY=1") }).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pings = count(&got, "WATCHDOG=1", t);
    assert!(pings >= 4, "pings every 0.2 s while connected: {pings} in 1.5 s");

    let client = Client::new(config_for(&url));
    client.enqueue_with(&Task { message: "notify".into() }, EnqueueOptions::new().queue(queue)).await.unwrap();
    wait_until("STATUS with one job done", Duration::from_secs(10), || async { has(&got, "1 jobs done") }).await;
    client.close().await;

    // The broker goes away: the pings stop (systemd would restart the worker), the status says why.
    node.ctl(&["stop_app"]);
    wait_until("STATUS reconnecting", Duration::from_secs(10), || async { has(&got, "reconnecting") }).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&got, "WATCHDOG=1", t), 0, "no pings while the broker is down");
    node.ctl(&["start_app"]);
    let t = Instant::now();
    wait_until("pings again after reconnecting", Duration::from_secs(30), || async {
        count(&got, "WATCHDOG=1", t) > 0
    })
    .await;

    Command::new("kill").arg("-15").arg(worker.id().to_string()).status().unwrap();
    let status = worker.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(has(&got, "STOPPING=1"));
    assert_eq!(got.lock().unwrap().iter().filter(|(_, m)| m == "READY=1").count(), 1, "READY once");
    let _ = std::fs::remove_file(&path);
}
