//! A worker with schedules in the test's process (as `jobs_test::spawn_with`
//! starts one without), stopped by the test.

use std::time::Duration;

use jobs_worker::{Schedule, Worker, WorkerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running worker with schedules.
pub(crate) struct Scheduled {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), jobs_worker::Error>>,
}

/// Starts a worker of every linked job type on `config`'s queues, firing `schedules`.
pub(crate) fn spawn_scheduled(
    amqp: jobs_core::AmqpConfig,
    config: WorkerConfig,
    schedules: impl IntoIterator<Item = Schedule>,
) -> Scheduled {
    jobs_test::init_logs();
    // The test's queues are its own: every linked job type may be sent there.
    let config = WorkerConfig { extra_queues: config.queues.clone(), ..config };
    let mut builder = Worker::builder().linked_jobs().amqp(amqp).config(config);
    for schedule in schedules {
        builder = builder.schedule(schedule);
    }
    let worker = builder.build().expect("a worker with schedules");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    Scheduled { stop: Some(tx), handle }
}

impl Scheduled {
    /// Asks the worker to stop and waits (bounded) for it.
    pub(crate) async fn stop(mut self) -> Result<(), jobs_worker::Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the worker did not stop within 60 s")
            .expect("the worker task panicked")
    }
}
