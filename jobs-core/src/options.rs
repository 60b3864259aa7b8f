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

    /// The delay asked for, if any: until `at` (zero once it is past), else `delay`.
    pub(crate) fn resolved_delay(&self) -> Option<Duration> {
        match self.at {
            Some(at) => Some(at.duration_since(SystemTime::now()).unwrap_or_default()),
            None => self.delay,
        }
    }
}
