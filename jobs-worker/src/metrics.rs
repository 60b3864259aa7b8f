//! Metrics and health over HTTP (`worker.metrics_addr` / `--metrics-addr`):
//! `GET /metrics` is Prometheus text, `GET /healthz` answers 200 only while the
//! worker is connected and consuming (503 otherwise).
//!
//! Series: `jobs_started_total{job}`, `jobs_succeeded_total{job}`,
//! `jobs_failed_total{job,kind}`, `jobs_retried_total{job}`, `jobs_dead_total{job,kind}`,
//! `job_duration_seconds{job}` (histogram), `jobs_running`, `broker_connected`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::systemd::Health;
use crate::Error;

/// Seconds buckets for job durations.
const BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

/// Installs the Prometheus recorder (once per process) and serves `/metrics`
/// and `/healthz` on `addr` until the returned task is aborted.
pub(crate) async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<tokio::task::JoinHandle<()>, Error> {
    let handle = recorder()?;
    let listener =
        TcpListener::bind(addr).await.map_err(|e| Error::Metrics(format!("cannot listen on {addr}: {e}")))?;
    info!(%addr, "metrics and health on http://{addr}/metrics and /healthz");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            let (handle, health) = (handle.clone(), health.clone());
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let n = match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request)).await {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let line = String::from_utf8_lossy(&request[..n]);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let consuming = health.consuming.load(Ordering::Relaxed);
                let (status, kind, body) = match path {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", handle.render()),
                    "/healthz" if consuming => ("200 OK", "text/plain", "ok\n".to_owned()),
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

fn recorder() -> Result<PrometheusHandle, Error> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("job_duration_seconds".into()), BUCKETS)
        .map_err(|e| Error::Metrics(e.to_string()))?
        .install_recorder()
        .map_err(|e| Error::Metrics(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}
