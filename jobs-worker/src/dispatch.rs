//! From a delivery to an [`Outcome`]: find the job type, decode, run `perform`
//! under the job type's timeout, inside a span, catching a panic as a failure.
//! What then happens to the delivery is the policy's decision (`policy.rs`).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jobs_core::plumbing::{Registration, CONTENT_TYPE};
use jobs_core::{ExchangeKind, FailureKind, JobContext, JobId, Retry, Route};
use tracing::{debug, info_span, warn, Instrument};

use crate::activity::Activity;
use crate::delivery::Meta;
use crate::policy::{Outcome, Schedule};
use crate::{Error, Subscription};

/// The job types this worker runs, by name.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    table: HashMap<&'static str, &'static Registration>,
}

impl Dispatcher {
    /// The given job types.
    ///
    /// # Errors
    /// [`Error::DuplicateJobName`] when two types share a name.
    pub(crate) fn new(registrations: impl IntoIterator<Item = &'static Registration>) -> Result<Self, Error> {
        let mut table: HashMap<&'static str, &'static Registration> = HashMap::new();
        for registration in registrations {
            match table.insert(registration.name(), registration) {
                // The same type listed twice (explicitly and by the linker) is
                // one type: its registration is one static.
                Some(before) if !std::ptr::eq(before, registration) => {
                    return Err(Error::DuplicateJobName(registration.name()))
                }
                _ => {}
            }
        }
        Ok(Dispatcher { table })
    }

    /// The job types, sorted by name.
    pub(crate) fn types(&self) -> Vec<&'static Registration> {
        let mut types: Vec<_> = self.table.values().copied().collect();
        types.sort_by_key(|r| r.name());
        types
    }

    /// The queues of the queue-routed job types, sorted, without repeats.
    pub(crate) fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> =
            self.table.values().filter(|r| r.route() == Route::Queue).map(|r| r.queue().to_owned()).collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// A subscription to each fanout exchange of the job types.
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
        meta: &Meta<'_>,
        body: &[u8],
        queue: &Arc<str>,
        worker: &Arc<str>,
        activity: &Activity,
    ) -> Outcome {
        if let Some(content_type) = meta.content_type {
            if content_type != CONTENT_TYPE {
                return reject(
                    FailureKind::BadMessage,
                    format!("content type `{content_type}` is not `{CONTENT_TYPE}`"),
                );
            }
        }
        let Some(name) = meta.name else {
            return reject(FailureKind::BadMessage, "the message has no `type` property naming its job type".into());
        };
        let Some(id) = meta.id else {
            return reject(FailureKind::BadMessage, "the message has no `message_id` (job id)".into());
        };
        let Some(registration) = self.table.get(name) else {
            // A rolling deploy: a newer worker may know it. Retry on the default schedule.
            return Outcome::Failed {
                kind: FailureKind::UnknownType,
                error: format!("no job type `{name}` in this worker"),
                retry: Retry::Backoff,
                schedule: Schedule::DEFAULT,
            };
        };
        let job_id = JobId::from(id);
        let ctx = JobContext::new(job_id.clone(), registration.name(), queue.clone(), meta.attempt, worker.clone())
            .with_enqueued_at(meta.enqueued_at);
        let future = match registration.prepare(body, ctx) {
            Ok(future) => future,
            Err(err) => return reject(FailureKind::Undecodable, format!("body does not decode as `{name}`: {err}")),
        };
        let span = info_span!("job", job.name = name, job.id = id, job.attempt = meta.attempt, queue = &**queue);
        let started = std::time::Instant::now();
        debug!(parent: &span, "job started");
        // Run in this (already per-delivery) task: a second spawn per job cost a
        // cross-thread wake-up on the drain's hot path. Panics are caught here.
        let running = CatchUnwind(future.instrument(span.clone()));
        // The registration's name is `'static`: labels without an allocation per job.
        let job = registration.name();
        let noted = activity.started(job, &job_id, queue, meta.attempt);
        let result = tokio::time::timeout(registration.timeout(), running).await;
        activity.ended(job, started.elapsed(), matches!(result, Ok(Ok(Ok(_)))));
        drop(noted);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (kind, error, retry) = match result {
            Ok(Ok(Ok(reply))) => {
                debug!(parent: &span, elapsed_ms, "job done");
                return Outcome::Done { reply };
            }
            Ok(Ok(Err(err))) => {
                let kind = if err.retry() == Retry::Never { FailureKind::Fatal } else { FailureKind::Failed };
                (kind, err.to_string(), err.retry())
            }
            Ok(Err(panic)) => (FailureKind::Panicked, panic_message(panic), Retry::Backoff),
            // Dropping the future cancels the job.
            Err(_) => (FailureKind::Timeout, format!("timed out after {:?}", registration.timeout()), Retry::Backoff),
        };
        debug!(parent: &span, elapsed_ms, %kind, %error, "job failed");
        let schedule = Schedule { max_attempts: registration.max_attempts(), backoff: registration.backoff_fn() };
        Outcome::Failed { kind, error, retry, schedule }
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

fn reject(kind: FailureKind, reason: String) -> Outcome {
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

    #[test]
    fn panic_messages_are_kept() {
        assert_eq!(panic_message(Box::new("boom")), "panicked: boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "panicked: bang");
        assert_eq!(panic_message(Box::new(7)), "panicked");
    }
}
