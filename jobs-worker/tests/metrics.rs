//! The worker's Prometheus series move by exactly what happened: a success, a
//! failure then a success on retry, a fatal failure, an unreadable message.
//! A binary of its own: the metrics recorder is one per process.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::plumbing::job_properties;
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, JobId, Perform};
use jobs_test::amqprs::channel::BasicPublishArguments;
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct MetricsOk;

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(backoff = one_second)]
struct MetricsFlaky;

#[derive(Debug, Serialize, Deserialize, Job)]
struct MetricsFatal;

fn one_second(_: u32) -> Duration {
    Duration::from_secs(1)
}

impl Perform for MetricsOk {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

impl Perform for MetricsFlaky {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err(JobError::msg("first time unlucky"));
        }
        Ok(())
    }
}

impl Perform for MetricsFatal {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Err(JobError::fatal("never"))
    }
}

/// The value of the series `name` whose labels are exactly `labels`, 0 when absent.
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    metrics
        .lines()
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut got: Vec<String> =
                rest.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).map(str::to_owned).collect();
            got.sort();
            let mut want = wanted.clone();
            want.sort();
            (metric == name && got == want).then(|| number.parse().ok())?
        })
        .next()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_move_by_what_happened() {
    let queue = unique("metrics");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let port = spare_port();
    let mut config = worker_config(&[&queue], 1, "metrics-worker", Duration::from_secs(5));
    config.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let running = spawn_with(amqp_config(), config);
    wait_for_consumers(&raw, &queue, 1).await;

    let client = jobs_core::Client::new(amqp_config());
    let on = || EnqueueOptions::new().queue(&queue);
    client.enqueue_with(&MetricsOk, on()).await.unwrap();
    client.enqueue_with(&MetricsFlaky, on()).await.unwrap();
    client.enqueue_with(&MetricsFatal, on()).await.unwrap();
    let channel = raw.open_channel(None).await.unwrap();
    let props = job_properties(MetricsOk::NAME, &JobId::new(), 1);
    channel.basic_publish(props, b"\xc1 not msgpack".to_vec(), BasicPublishArguments::new("", &queue)).await.unwrap();

    let metrics = || http_get(port, "/metrics").1;
    wait_until("every job settled", Duration::from_secs(30), || async {
        let m = metrics();
        value(&m, "jobs_succeeded_total", &[("job", "MetricsFlaky")]) == 1.0
            && value(&m, "jobs_dead_total", &[("job", "MetricsOk"), ("kind", "undecodable")]) == 1.0
            && value(&m, "jobs_dead_total", &[("job", "MetricsFatal"), ("kind", "fatal")]) == 1.0
    })
    .await;
    let m = metrics();
    let expect = [
        ("jobs_started_total", vec![("job", "MetricsOk")], 1.0),
        ("jobs_started_total", vec![("job", "MetricsFlaky")], 2.0),
        ("jobs_started_total", vec![("job", "MetricsFatal")], 1.0),
        ("jobs_succeeded_total", vec![("job", "MetricsOk")], 1.0),
        ("jobs_succeeded_total", vec![("job", "MetricsFlaky")], 1.0),
        ("jobs_succeeded_total", vec![("job", "MetricsFatal")], 0.0),
        ("jobs_failed_total", vec![("job", "MetricsFlaky"), ("kind", "failed")], 1.0),
        ("jobs_failed_total", vec![("job", "MetricsFatal"), ("kind", "fatal")], 1.0),
        ("jobs_failed_total", vec![("job", "MetricsOk"), ("kind", "undecodable")], 1.0),
        ("jobs_retried_total", vec![("job", "MetricsFlaky")], 1.0),
        ("jobs_retried_total", vec![("job", "MetricsFatal")], 0.0),
        ("jobs_dead_total", vec![("job", "MetricsFatal"), ("kind", "fatal")], 1.0),
        ("jobs_dead_total", vec![("job", "MetricsOk"), ("kind", "undecodable")], 1.0),
        ("jobs_dead_total", vec![("job", "MetricsFlaky"), ("kind", "failed")], 0.0),
        ("job_duration_seconds_count", vec![("job", "MetricsFlaky")], 2.0),
        ("jobs_running", vec![], 0.0),
        ("broker_connected", vec![], 1.0),
    ];
    for (name, labels, wanted) in expect {
        assert_eq!(value(&m, name, &labels), wanted, "{name}{labels:?} in:\n{m}");
    }
    running.stop().await.unwrap();
}
