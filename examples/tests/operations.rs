//! The worker speaks sd_notify: this test plays systemd's side on a unix
//! datagram socket. READY once consuming, WATCHDOG only while connected,
//! STATUS with jobs done, STOPPING at shutdown. And its HTTP listener: /healthz
//! 200 only while connected, /metrics in Prometheus text.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use examples::Task;
use jobs_core::{Client, EnqueueOptions};
use jobs_test::*;

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
    let port = spare_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    // Killed when dropped, should the test fail half-way.
    let worker = Process::start_with(
        "worker",
        env!("CARGO_BIN_EXE_worker"),
        &["--queues", queue, "--extra-queues", queue, "--grace-period", "10s", "--metrics-addr", &metrics_addr],
        &[
            ("JOBS__AMQP__URL", &url),
            ("NOTIFY_SOCKET", &path.to_string_lossy()),
            ("WATCHDOG_USEC", "400000"),
            ("RUST_LOG", "warn"),
        ],
    );

    wait_until("READY=1", Duration::from_secs(20), || async { has(&got, "READY=1") }).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pings = count(&got, "WATCHDOG=1", t);
    assert!(pings >= 4, "pings every 0.2 s while connected: {pings} in 1.5 s");

    let client = Client::new(config_for(&url));
    client.enqueue_with(&Task { message: "notify".into() }, EnqueueOptions::new().queue(queue)).await.unwrap();
    wait_until("STATUS with one job done", Duration::from_secs(10), || async { has(&got, "1 jobs done") }).await;
    client.close().await;
    assert_eq!(http_get(port, "/healthz").0, 200);
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    for series in [
        "jobs_started_total{job=\"Task\"} 1",
        "jobs_succeeded_total{job=\"Task\"} 1",
        "job_duration_seconds_count{job=\"Task\"} 1",
        "jobs_running 0",
        "broker_connected 1",
    ] {
        assert!(metrics.contains(series), "no `{series}` in:\n{metrics}");
    }

    // The broker goes away: the pings stop (systemd would restart the worker), the status says why.
    node.ctl(&["stop_app"]);
    wait_until("STATUS reconnecting", Duration::from_secs(10), || async { has(&got, "reconnecting") }).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&got, "WATCHDOG=1", t), 0, "no pings while the broker is down");
    assert_eq!(http_get(port, "/healthz").0, 503);
    assert!(http_get(port, "/metrics").1.contains("broker_connected 0"));
    node.ctl(&["start_app"]);
    let t = Instant::now();
    wait_until("pings again after reconnecting", Duration::from_secs(30), || async {
        count(&got, "WATCHDOG=1", t) > 0
    })
    .await;

    worker.stop().await; // SIGTERM, then a clean exit
    assert!(has(&got, "STOPPING=1"));
    assert_eq!(got.lock().unwrap().iter().filter(|(_, m)| m == "READY=1").count(), 1, "READY once");
    let _ = std::fs::remove_file(&path);
}
