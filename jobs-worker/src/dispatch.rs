//! From a delivery to an outcome: find the job type, decode, run `perform` in a
//! task of its own (so a panic is a failure, not a crash), inside a span.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use jobs_core::amqprs::BasicProperties;
use jobs_core::{
    header_u64, headers, registrations, FailureKind, JobContext, JobId, Registration, CONTENT_TYPE,
};
use tracing::{debug, info_span, Instrument};

use crate::Error;

/// How one delivery ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `perform` returned `Ok`: ack.
    Done,
    /// `perform` failed or panicked: dead-letter (retries come later).
    Failed { kind: &'static str, error: String },
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
}

impl<'a> Meta<'a> {
    pub(crate) fn of(props: &'a BasicProperties) -> Self {
        let attempt = header_u64(props, headers::ATTEMPT)
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1)
            .max(1);
        Meta {
            name: props.message_type().map(String::as_str),
            id: props.message_id().map(String::as_str),
            attempt,
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

    /// The queues of the linked job types, sorted, without repeats.
    pub(crate) fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.table.values().map(|r| r.queue().to_owned()).collect();
        queues.sort();
        queues.dedup();
        queues
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
                return reject(
                    "bad-message",
                    format!("content type `{content_type}` is not `{CONTENT_TYPE}`"),
                );
            }
        }
        let Some(name) = meta.name else {
            return reject(
                "unknown-type",
                "the message has no `type` property naming its job type".into(),
            );
        };
        let Some(registration) = self.table.get(name) else {
            return reject(
                "unknown-type",
                format!("no job type `{name}` is linked into this worker"),
            );
        };
        let Some(id) = meta.id else {
            return reject(
                "bad-message",
                "the message has no `message_id` (job id)".into(),
            );
        };
        let ctx = JobContext::new(
            JobId::from(id),
            registration.name(),
            queue.clone(),
            meta.attempt,
            worker.clone(),
        );
        let future = match registration.prepare(body, ctx) {
            Ok(future) => future,
            Err(err) => {
                return reject(
                    "undecodable",
                    format!("body does not decode as `{name}`: {err}"),
                )
            }
        };
        let span = info_span!(
            "job",
            job.name = name,
            job.id = id,
            job.attempt = meta.attempt,
            queue = &**queue
        );
        let started = std::time::Instant::now();
        debug!(parent: &span, "job started");
        let outcome = match tokio::spawn(future.instrument(span.clone())).await {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(err)) => {
                let kind = if err.kind() == FailureKind::Fatal {
                    "fatal"
                } else {
                    "failed"
                };
                Outcome::Failed {
                    kind,
                    error: err.to_string(),
                }
            }
            Err(join) if join.is_panic() => Outcome::Failed {
                kind: "panicked",
                error: panic_message(join.into_panic()),
            },
            Err(_) => Outcome::Failed {
                kind: "cancelled",
                error: "the job's task was cancelled".into(),
            },
        };
        debug!(parent: &span, elapsed_ms = started.elapsed().as_millis() as u64, ?outcome, "job finished");
        outcome
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

    #[test]
    fn panic_messages_are_kept() {
        assert_eq!(panic_message(Box::new("boom")), "panicked: boom");
        assert_eq!(
            panic_message(Box::new(String::from("bang"))),
            "panicked: bang"
        );
        assert_eq!(panic_message(Box::new(7)), "panicked");
    }

    #[test]
    fn attempt_defaults_to_one() {
        let props = BasicProperties::default();
        assert_eq!(Meta::of(&props).attempt, 1);
    }
}
