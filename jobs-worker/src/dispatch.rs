//! From a delivery to an outcome: find the job type, decode, run `perform` in a
//! task of its own (so a panic is a failure, not a crash) under the job type's
//! timeout, inside a span; decide whether a failure is retried.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jobs_core::amqprs::BasicProperties;
use jobs_core::{registrations, FailureKind, JobContext, JobId, Registration, CONTENT_TYPE};
use tracing::{debug, info_span, warn, Instrument};

use jobs_core::topology::{ExchangeKind, Route};

use crate::{Error, Subscription};

/// How one delivery ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `perform` returned `Ok`: ack (after answering, for an RPC job).
    Done { reply: Option<Vec<u8>> },
    /// `perform` failed, panicked or timed out: retry after `retry_in`, or
    /// dead-letter when it is `None` (final failure or no attempts left).
    Failed { kind: &'static str, error: String, retry_in: Option<Duration> },
    /// The message cannot be run at all: dead-letter with the reason.
    Rejected { kind: &'static str, reason: String },
}

/// The job types this worker runs, by name.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    table: HashMap<&'static str, &'static Registration>,
}

/// What the dispatcher knows of a delivery before it runs.
pub(crate) struct Meta<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) id: Option<&'a str>,
    pub(crate) attempt: u32,
    /// From the `timestamp` property (seconds since the epoch).
    pub(crate) enqueued_at: Option<std::time::SystemTime>,
}

impl<'a> Meta<'a> {
    pub(crate) fn of(props: &'a BasicProperties) -> Self {
        let enqueued_at = props.timestamp().map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        Meta {
            name: props.message_type().map(String::as_str),
            id: props.message_id().map(String::as_str),
            attempt: jobs_core::message_attempt(props),
            enqueued_at,
        }
    }
}

impl Dispatcher {
    /// Every job type linked into the binary.
    pub(crate) fn from_registry() -> Result<Self, Error> {
        let mut table = HashMap::new();
        for registration in registrations() {
            if table.insert(registration.name(), registration).is_some() {
                return Err(Error::DuplicateJobName(registration.name()));
            }
        }
        Ok(Dispatcher { table })
    }

    /// The queues of the linked queue-routed job types, sorted, without repeats.
    pub(crate) fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> =
            self.table.values().filter(|r| r.route() == Route::Queue).map(|r| r.queue().to_owned()).collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// A subscription to each fanout exchange of the linked job types.
    pub(crate) fn broadcasts(&self) -> Vec<Subscription> {
        let mut subscriptions: Vec<Subscription> = self
            .table
            .values()
            .filter_map(|r| match r.route() {
                Route::Exchange { name, kind: ExchangeKind::Fanout } => {
                    Some(Subscription { exchange: name.to_owned(), kind: ExchangeKind::Fanout, keys: Vec::new() })
                }
                _ => None,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.exchange.cmp(&b.exchange));
        subscriptions.dedup();
        subscriptions
    }

    /// Warns about job types whose timeout would let the broker close the
    /// channel first (RabbitMQ's `consumer_timeout`).
    pub(crate) fn check_timeouts(&self, consumer_timeout: Duration) {
        for registration in self.table.values() {
            if registration.timeout() >= consumer_timeout {
                warn!(
                    job.name = registration.name(),
                    timeout = ?registration.timeout(),
                    ?consumer_timeout,
                    "job timeout is not below the broker's consumer_timeout: a long run makes the broker close the channel and hand the job out again"
                );
            }
        }
    }

    /// Decodes and runs one delivery.
    pub(crate) async fn run(
        &self,
        props: &BasicProperties,
        body: &[u8],
        queue: &Arc<str>,
        worker: &Arc<str>,
    ) -> Outcome {
        let meta = Meta::of(props);
        if let Some(content_type) = props.content_type() {
            if content_type != CONTENT_TYPE {
                return reject("bad-message", format!("content type `{content_type}` is not `{CONTENT_TYPE}`"));
            }
        }
        let Some(name) = meta.name else {
            return reject("unknown-type", "the message has no `type` property naming its job type".into());
        };
        let Some(registration) = self.table.get(name) else {
            return reject("unknown-type", format!("no job type `{name}` is linked into this worker"));
        };
        let Some(id) = meta.id.filter(|id| !id.is_empty()) else {
            return reject("bad-message", "the message has no `message_id` (job id)".into());
        };
        let ctx = JobContext::new(JobId::from(id), registration.name(), queue.clone(), meta.attempt, worker.clone())
            .with_enqueued_at(meta.enqueued_at);
        let future = match registration.prepare(body, ctx) {
            Ok(future) => future,
            Err(err) => return reject("undecodable", format!("body does not decode as `{name}`: {err}")),
        };
        let span = info_span!("job", job.name = name, job.id = id, job.attempt = meta.attempt, queue = &**queue);
        let started = std::time::Instant::now();
        debug!(parent: &span, "job started");
        // Run in this (already per-delivery) task: a second spawn per job cost a
        // cross-thread wake-up on the drain's hot path. Panics are caught here.
        let running = CatchUnwind(future.instrument(span.clone()));
        // The registration's name is `'static`: labels without an allocation per job.
        let job = registration.name();
        metrics::counter!("jobs_started_total", "job" => job).increment(1);
        let in_flight = metrics::gauge!("jobs_running");
        in_flight.increment(1.0);
        let (kind, error, failure) = match tokio::time::timeout(registration.timeout(), running).await {
            Ok(Ok(Ok(reply))) => {
                in_flight.decrement(1.0);
                record_duration(job, started);
                metrics::counter!("jobs_succeeded_total", "job" => job).increment(1);
                debug!(parent: &span, elapsed_ms = started.elapsed().as_millis() as u64, "job done");
                return Outcome::Done { reply };
            }
            Ok(Ok(Err(err))) => {
                let kind = if err.kind() == FailureKind::Fatal { "fatal" } else { "failed" };
                (kind, err.to_string(), err.kind())
            }
            Ok(Err(panic)) => ("panicked", panic_message(panic), FailureKind::Retry),
            // Dropping the future cancels the job.
            Err(_) => ("timeout", format!("timed out after {:?}", registration.timeout()), FailureKind::Retry),
        };
        in_flight.decrement(1.0);
        record_duration(job, started);
        metrics::counter!("jobs_failed_total", "job" => job, "kind" => kind).increment(1);
        let retry_in = retry_delay(registration, meta.attempt, failure);
        debug!(parent: &span, elapsed_ms = started.elapsed().as_millis() as u64, kind, %error, ?retry_in, "job failed");
        Outcome::Failed { kind, error, retry_in }
    }
}

fn record_duration(job: &'static str, started: std::time::Instant) {
    metrics::histogram!("job_duration_seconds", "job" => job).record(started.elapsed().as_secs_f64());
}

/// When to retry after failed attempt `attempt`, if at all.
fn retry_delay(registration: &Registration, attempt: u32, failure: FailureKind) -> Option<Duration> {
    if attempt >= registration.max_attempts() {
        return None;
    }
    match failure {
        FailureKind::Fatal => None,
        FailureKind::RetryAfter(delay) => Some(delay),
        _ => Some(registration.backoff(attempt)),
    }
}

/// Polls a future, turning a panic in it into an `Err` with the panic's payload.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn reject(kind: &'static str, reason: String) -> Outcome {
    Outcome::Rejected { kind, reason }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => format!("panicked: {text}"),
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => format!("panicked: {text}"),
            Err(_) => "panicked".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs_core::{Job, JobError, Perform};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, jobs_core::Job)]
    #[job(max_attempts = 3, backoff = two_seconds)]
    struct Three;

    fn two_seconds(_: u32) -> Duration {
        Duration::from_secs(2)
    }

    impl Perform for Three {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }

    #[test]
    fn retries_follow_attempts_backoff_and_failure_kind() {
        let r = jobs_core::find_registration(Three::NAME).unwrap();
        assert_eq!(retry_delay(r, 1, FailureKind::Retry), Some(Duration::from_secs(2)));
        assert_eq!(retry_delay(r, 2, FailureKind::RetryAfter(Duration::from_secs(9))), Some(Duration::from_secs(9)));
        assert_eq!(retry_delay(r, 3, FailureKind::Retry), None, "no attempts left");
        assert_eq!(retry_delay(r, 1, FailureKind::Fatal), None);
    }

    #[test]
    fn panic_messages_are_kept() {
        assert_eq!(panic_message(Box::new("boom")), "panicked: boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "panicked: bang");
        assert_eq!(panic_message(Box::new(7)), "panicked");
    }

    #[test]
    fn attempt_defaults_to_one() {
        let props = BasicProperties::default();
        assert_eq!(Meta::of(&props).attempt, 1);
    }
}
