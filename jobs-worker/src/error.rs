//! The worker's errors.

/// What stops a worker, or keeps it from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Config, connection or declaration failed.
    #[error(transparent)]
    Core(#[from] jobs_core::Error),
    /// No queue to consume: none configured and no job type linked into the binary.
    #[error("no queues to consume: set `worker.queues`, or link job types (`#[derive(Job)]`) into the worker binary")]
    NoQueues,
    /// Two linked job types share a name, so messages could not be told apart.
    #[error("two job types are both named `{0}`; give one another name with `#[job(name = \"...\")]`")]
    DuplicateJobName(&'static str),
    /// The connection to the broker was lost (the consumer stream ended).
    #[error("lost the connection to RabbitMQ while consuming `{queue}`")]
    ConnectionLost {
        /// The queue whose consumer stopped.
        queue: String,
    },
    /// The metrics listener could not be set up.
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    /// Logging could not be set up.
    #[error("cannot set up logging: {0}")]
    Logging(String),
}
