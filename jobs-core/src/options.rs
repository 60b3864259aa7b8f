//! Per-call settings of an enqueue.

use std::time::{Duration, SystemTime};

use crate::JobId;

/// Per-call settings of an enqueue.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EnqueueOptions {
    /// Send to this queue instead of the job type's own.
    pub queue: Option<String>,
    /// Use this job id instead of a new one (for producers that dedupe).
    pub id: Option<JobId>,
    /// Run no earlier than this long from now (whole seconds, rounded up).
    pub delay: Option<Duration>,
    /// Run no earlier than this time (overrides `delay`).
    pub at: Option<SystemTime>,
    /// For jobs routed through a direct or topic exchange: the routing key.
    pub routing_key: Option<String>,
    /// Unique by this key (within the job type) instead of the type's own
    /// (its fields, or its `unique_key` field).
    pub unique_key: Option<String>,
    /// Unique for this long at most, instead of the type's `unique_for`.
    pub unique_for: Option<Duration>,
    /// Not run if not started by then (instead of the type's `expires_in`).
    pub expires_at: Option<SystemTime>,
    /// Its priority, 0 to 9 (9 first), instead of the type's `priority`.
    pub priority: Option<u8>,
}

impl EnqueueOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the job to `queue` instead of the job type's own.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Gives the job this id.
    pub fn id(mut self, id: JobId) -> Self {
        self.id = Some(id);
        self
    }

    /// Runs the job no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Runs the job no earlier than `at`.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Routes the job with `key` (direct and topic exchanges: `warning`, `kern.critical`).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Makes the job unique by `key` within its type: while a job of the type
    /// with this key is queued, delayed or running, another enqueue of one
    /// returns [`Error::Duplicate`](crate::Error::Duplicate). The type needs a
    /// `unique_for` (or give one with [`EnqueueOptions::unique_for`]).
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Makes the job unique for at most `window` (a day at most), or for this
    /// long instead of its type's `unique_for`.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.unique_for = Some(window);
        self
    }

    /// The job is not run if it has not started by `at`: it goes to
    /// `<queue>.dead` as `expired` (instead of the type's `expires_in`).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The deadline a job enqueued now carries: these options', else its
    /// type's `expires_in` from now (a span past what a clock holds is none).
    pub(crate) fn deadline(&self, type_expires_in: Option<Duration>) -> Option<SystemTime> {
        self.expires_at.or_else(|| type_expires_in.and_then(|within| SystemTime::now().checked_add(within)))
    }

    /// The job is not run if it has not started within `within` from now.
    pub fn expires_in(mut self, within: Duration) -> Self {
        // A span past what a clock holds is no deadline.
        self.expires_at = SystemTime::now().checked_add(within);
        self
    }

    /// Runs the job before those of lower priority waiting in its queue:
    /// 0 (the default) to 9. Its queue must take priorities (its job types
    /// say `#[job(priorities)]`; classic queues only), or the enqueue is
    /// refused with [`Error::Priority`](crate::Error::Priority).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The delay asked for, if any: until `at` (zero once it is past), else `delay`.
    pub(crate) fn resolved_delay(&self) -> Option<Duration> {
        match self.at {
            Some(at) => Some(at.duration_since(SystemTime::now()).unwrap_or_default()),
            None => self.delay,
        }
    }
}
