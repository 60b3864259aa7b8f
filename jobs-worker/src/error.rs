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
    /// A limited job type (`max_running`) shares its queue with other types:
    /// its jobs waiting for a slot would hold theirs back.
    #[error("job type `{limited}` has a global limit (max_running), and its queue `{queue}` is also the queue of {others}: a limited type needs a queue of its own (`#[job(queue = \"...\")]`), so that its jobs waiting for a slot hold no other type's")]
    SharedLimitedQueue {
        /// The queue.
        queue: String,
        /// The limited type.
        limited: &'static str,
        /// The other types there.
        others: String,
    },
    /// Job types say `#[job(priorities)]`, and the queues are quorum queues.
    #[error("job types {types} say #[job(priorities)], but amqp.queue_type is \"quorum\": RabbitMQ 3.10 quorum queues have no priorities. Give urgent jobs a queue of their own and weigh the queues instead (`--queue-weights critical=6,default=3,low=1`, or [worker.queue_weights]; docs/job-control.md), or use classic queues")]
    QuorumPriorities {
        /// The types, comma-separated.
        types: String,
    },
    /// An ordered type the worker cannot keep in order.
    #[error("job type `{job}` is #[job(ordered_by)]: {reason}")]
    BadOrdered {
        /// The type.
        job: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// Ordered types sharing a queue disagree on their shard count.
    #[error("queue `{queue}` is the queue of ordered types with different shard counts: {types}; a queue's keys spread over one set of shards, so give them one `shards`, or queues of their own")]
    MixedShards {
        /// The queue.
        queue: String,
        /// The types and their counts.
        types: String,
    },
    /// Types sharing a queue disagree on `#[job(priorities)]`.
    #[error("queue `{queue}` is the queue of {with}, which say #[job(priorities)], and of {without}, which do not: a queue takes priorities or not, so mark them all, or give them queues of their own")]
    MixedPriorities {
        /// The queue.
        queue: String,
        /// The types with priorities.
        with: String,
        /// The types without.
        without: String,
    },
    /// `worker.queues` names a queue that none of the worker's job types goes to.
    #[error("`worker.queues` names `{queue}`, which none of this worker's job types goes to ({served}); fix the name, or, if jobs are sent there with `EnqueueOptions::queue`, list it in `worker.extra_queues` (`--extra-queues`) or add it with `Worker::builder().queue(\"{queue}\")`")]
    UnknownQueue {
        /// The queue.
        queue: String,
        /// The worker's job types and where each goes.
        served: String,
    },
    /// `worker.queue_weights` names a queue that none of the worker's job types goes to.
    #[error("`worker.queue_weights.{queue}` names a queue that none of this worker's job types goes to ({served}); fix the name, or, if jobs are sent there with `EnqueueOptions::queue`, list it in `worker.extra_queues` (`--extra-queues`)")]
    UnknownWeightedQueue {
        /// The queue.
        queue: String,
        /// The worker's job types and where each goes.
        served: String,
    },
    /// A job type given to the worker has no registration: its `Job` impl was
    /// written by hand instead of derived.
    #[error("job type `{0}` has no registration: derive it with `#[derive(Job)]`")]
    Unregistered(&'static str),
    /// Two linked job types share a name, so messages could not be told apart.
    #[error("two job types are both named `{0}`; give one another name with `#[job(name = \"...\")]`")]
    DuplicateJobName(&'static str),
    /// The connection to the broker was lost.
    #[error("lost the connection to RabbitMQ: {reason}")]
    ConnectionLost {
        /// Why, as far as known (the consumer of a queue ended, a network failure).
        reason: String,
    },
    /// The broker closed the channel a queue was consumed on (its
    /// `consumer_timeout` for a delivery left unacknowledged, say); the
    /// connection lives on, and the queue is consumed again.
    #[error("the broker closed the channel consuming `{queue}`: {reason}")]
    ChannelClosed {
        /// The queue (for a subscription: its exchange).
        queue: String,
        /// The broker's words.
        reason: String,
    },
    /// Several queues or exchanges cannot be set up, for reasons trying again
    /// cannot fix: each is named (a switch of `amqp.queue_type` finds every
    /// queue to migrate at once).
    #[error("{}", setup_errors(.0))]
    Setup(Vec<Error>),
    /// The metrics listener could not be set up.
    #[error("cannot serve metrics: {what}")]
    Metrics {
        /// What failed (listening on an address, installing the recorder).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The thread the link to the broker runs on could not be started.
    #[error("cannot start the thread of the link to the broker")]
    LinkThread(#[source] std::io::Error),
    /// Logging could not be set up.
    #[error("cannot set up logging")]
    Logging(#[from] jobs_runtime::LoggingError),
}

impl Error {
    /// Whether trying again cannot help (see [`jobs_core::Error::is_permanent`]).
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Core(core) => core.is_permanent(),
            Error::Setup(_)
            | Error::UnknownQueue { .. }
            | Error::UnknownWeightedQueue { .. }
            | Error::Unregistered(_)
            | Error::NoQueues => true,
            Error::DuplicateJobName(_)
            | Error::SharedLimitedQueue { .. }
            | Error::QuorumPriorities { .. }
            | Error::MixedPriorities { .. }
            | Error::MixedShards { .. }
            | Error::BadOrdered { .. } => true,
            _ => false,
        }
    }
}

fn setup_errors(errors: &[Error]) -> String {
    let each: Vec<String> = errors.iter().map(|e| jobs_core::report(e)).collect();
    format!("{} queues or exchanges cannot be set up: {}", errors.len(), each.join("; "))
}
