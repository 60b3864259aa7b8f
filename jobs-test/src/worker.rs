//! Running an in-process worker in a test, stopped by the test.

use std::time::Duration;

use jobs_worker::{Worker, WorkerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How most worker tests start: a queue of their own, a raw connection to look
/// at it, a client, and one worker (prefetch 1, id `<name>-worker`) consuming it.
#[allow(missing_debug_implementations)] // amqprs connections have no Debug
pub struct Fixture {
    pub queue: String,
    pub raw: jobs_core::plumbing::amqprs::connection::Connection,
    pub client: jobs_core::Client,
    pub worker: RunningWorker,
    /// Deletes the queue at the end of the test, on every path.
    pub cleanup: crate::Cleanup,
}

impl Fixture {
    /// Starts the worker and waits (bounded) until it consumes.
    pub async fn start(name: &str, grace: Duration) -> Self {
        Self::start_with(crate::amqp_config(), name, grace).await
    }

    /// [`Fixture::start`] with the worker connecting by `amqp` (through a
    /// relay, with another heartbeat); the raw connection and the client go
    /// to the broker directly.
    pub async fn start_with(amqp: jobs_core::AmqpConfig, name: &str, grace: Duration) -> Self {
        let queue = crate::unique(name);
        let cleanup = crate::Cleanup::queues(&[&queue]);
        let raw = crate::raw_connection().await;
        let client = jobs_core::Client::new(crate::amqp_config());
        let worker = spawn_with(amqp, worker_config(&[&queue], 1, &format!("{name}-worker"), grace));
        crate::wait_for_consumers(&raw, &queue, 1).await;
        Fixture { queue, raw, client, worker, cleanup }
    }
}

#[derive(Debug)]
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), jobs_worker::Error>>,
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn spawn_worker(url: &str, queues: &[&str], concurrency: u16, id: &str, grace: Duration) -> RunningWorker {
    spawn_with(crate::config_for(url), worker_config(queues, concurrency, id, grace))
}

/// A worker on `queues` at prefetch `concurrency`, named `id`, that stops within `grace`.
pub fn worker_config(queues: &[&str], concurrency: u16, id: &str, grace: Duration) -> WorkerConfig {
    WorkerConfig {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        concurrency,
        grace_period: grace,
        id: Some(id.to_owned()),
        ..WorkerConfig::default()
    }
}

pub fn spawn_with(amqp: jobs_core::AmqpConfig, config: WorkerConfig) -> RunningWorker {
    init_logs();
    // The tests' queues are their own: every linked job type may be sent there.
    let config = WorkerConfig { extra_queues: config.queues.clone(), ..config };
    spawn_built(Worker::builder().linked_jobs().amqp(amqp).config(config).build().expect("worker config"))
}

/// Runs `worker` until stopped.
pub fn spawn_built(worker: Worker) -> RunningWorker {
    init_logs();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    RunningWorker { stop: Some(tx), handle }
}

impl RunningWorker {
    /// Asks the worker to stop and waits (bounded) for `run` to return.
    pub async fn stop(mut self) -> Result<(), jobs_worker::Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker did not stop within 60 s")
            .expect("worker task panicked")
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}
