//! Metrics and health over HTTP (`worker.metrics_addr` / `--metrics-addr`):
//! `GET /metrics` is Prometheus text, `GET /healthz` answers 200 only while the
//! worker is connected and consuming (503 otherwise).
//!
//! Series: `jobs_started_total{job}`, `jobs_succeeded_total{job}`,
//! `jobs_failed_total{job,kind}`, `jobs_retried_total{job}`, `jobs_dead_total{job,kind}`,
//! `job_duration_seconds{job}` (histogram), `jobs_running`, `broker_connected`;
//! with schedules: `jobs_schedule_fired_total{schedule}`,
//! `jobs_schedule_lateness_seconds` (histogram: fire time minus the tick's
//! instant), `jobs_scheduler_leader` (1 on the leader);
//! `jobs_queue_paused{queue}` (1 while `worker queues pause` holds the queue);
//! with `worker.queue_weights`: `jobs_queue_weight_running{queue}` (its jobs
//! running on this worker) and `jobs_queue_weight_waiting{queue}` (its
//! deliveries held here waiting for a turn); with ordered types
//! (`#[job(ordered_by)]`): `jobs_shard_holds{queue}` (its shards held here by
//! a failed job waiting to retry in place: their keys wait too).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::events::DURATION_BUCKETS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::systemd::Health;
use crate::Error;

/// Installs the Prometheus recorder (once per process) and serves `/metrics`
/// and `/healthz` on `addr` until the returned task is aborted.
pub(crate) async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<tokio::task::JoinHandle<()>, Error> {
    let handle = recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Metrics { what: format!("cannot listen on {addr}"), source: e.into() })?;
    info!(%addr, "metrics and health on http://{addr}/metrics and /healthz");
    Ok(tokio::spawn(async move {
        let mut pause = ACCEPT_PAUSE;
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => {
                    pause.reset();
                    stream
                }
                Err(err) => {
                    // Out of file descriptors, say: wait instead of spinning on the error.
                    if pause == ACCEPT_PAUSE {
                        warn!(error = %err, retry_in = ?pause.peek(), "the metrics listener cannot accept connections; pausing");
                    }
                    pause.wait().await;
                    continue;
                }
            };
            let (handle, health) = (handle.clone(), health.clone());
            tokio::spawn(async move {
                let Ok(Some(head)) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut stream)).await
                else {
                    return;
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let consuming = health.consuming.load(Ordering::Relaxed);
                let (status, kind, body) = match path {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
                    "/healthz" if consuming => match health.degraded() {
                        // Still working: 200, so that nothing restarts it; the body says what is wrong.
                        Some(why) => ("200 OK", "text/plain", format!("degraded: {why}\n")),
                        None => ("200 OK", "text/plain", "ok\n".to_owned()),
                    },
                    "/healthz" => ("503 Service Unavailable", "text/plain", "not connected to RabbitMQ\n".to_owned()),
                    _ => ("404 Not Found", "text/plain", "try /metrics or /healthz\n".to_owned()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(err) = stream.write_all(response.as_bytes()).await {
                    warn!(error = %err, "metrics response failed");
                }
            });
        }
    }))
}

/// How long to wait after a failed `accept`: 10 ms, doubling to 1 s while it keeps failing.
const ACCEPT_PAUSE: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));

/// Reads a request's head (request line and headers), however the client
/// splits it into writes; `None` when the client goes first or sends more than
/// 8 KiB. Reading all of it matters: closing with unread bytes resets the
/// connection, which can cut off the response (a client writing its request in
/// pieces got "broken pipe" from a first read that took only `GET `).
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() + n > 8192 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Upper bounds, in seconds, of the lateness buckets of fired ticks.
const LATENESS_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

fn recorder() -> Result<PrometheusHandle, Error> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("job_duration_seconds".into()), &DURATION_BUCKETS)
        .map_err(|e| Error::Metrics { what: "the duration buckets".into(), source: e.into() })?
        .set_buckets_for_metric(Matcher::Full("jobs_schedule_lateness_seconds".into()), &LATENESS_BUCKETS)
        .map_err(|e| Error::Metrics { what: "the lateness buckets".into(), source: e.into() })?
        .install_recorder()
        .map_err(|e| Error::Metrics { what: "the Prometheus recorder".into(), source: e.into() })?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_to_a_second() {
        let mut pause = ACCEPT_PAUSE;
        let seen: Vec<u128> = (0..10).map(|_| pause.next().as_millis()).collect();
        assert_eq!(seen, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[tokio::test]
    async fn a_request_head_written_in_pieces_is_read_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(b"GET /hea").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            client.write_all(b"lthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            client
        });
        let head = read_head(&mut server).await.unwrap();
        assert_eq!(head.split_whitespace().nth(1), Some("/healthz"));
        drop(writer.await.unwrap());
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(client);
        assert_eq!(read_head(&mut server).await, None, "the client left before the end of the head");
    }
}
