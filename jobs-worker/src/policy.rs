//! What happens to a delivery, decided in one place by pure functions: run it
//! or settle it unrun ([`screen`]), and once it ran, how to settle it
//! ([`decide`]). `settle.rs` only carries the decision out; nothing here
//! touches the broker.
//!
//! The rules:
//! - a body over `worker.max_message_size` is dead (`bad_message`), unread;
//! - on a queue, a delivery that came back unacked (its worker died, or lost
//!   the broker while holding it) is put at the end of its queue with its
//!   crash count raised, and is dead (`crashed`) once it came back more than
//!   `amqp.max_crashes` times (on classic and quorum queues alike; see
//!   `docs/delivery-guarantees.md` for what counts);
//! - a job that succeeded is acked; a call gets its answer first;
//! - a failed attempt is retried after its backoff (or the delay the job
//!   asked for) while attempts are left, else dead; `fatal` is dead at once;
//!   a job type this worker does not know fails with `unknown_type` and is
//!   retried on the default schedule, so that a worker that knows it runs it;
//! - a message that cannot be run (`bad_message`, `undecodable`) is dead at once;
//! - subscription jobs (a worker's own, transient queue) are never retried:
//!   a retry could not find its way back; their failures go to `<exchange>.dead`;
//! - a call (`reply_to` set) gets its failure as the answer and is not retried.

use std::time::Duration;

use jobs_core::{FailureKind, Retry};

use crate::delivery::Meta;

/// How many attempts a job type gets and how long it waits between them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: fn(u32) -> Duration,
}

impl Schedule {
    /// The schedule of a job type the worker does not know: the defaults of `#[derive(Job)]`.
    pub(crate) const DEFAULT: Schedule =
        Schedule { max_attempts: jobs_core::plumbing::DEFAULT_MAX_ATTEMPTS, backoff: jobs_core::backoff::exponential };
}

/// How one run of a delivery ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// `perform` returned `Ok`; an RPC job's encoded answer.
    Done { reply: Option<Vec<u8>> },
    /// The attempt failed (or its type is unknown here); it may be retried.
    Failed { kind: FailureKind, error: String, retry: Retry, schedule: Schedule },
    /// The message cannot be run at all.
    Rejected { kind: FailureKind, reason: String },
}

/// Where the delivery was consumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// A durable job queue.
    Queue,
    /// A subscription's queue: this worker's own, gone with it.
    Subscription,
}

/// The worker's limits that the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
    pub(crate) max_crashes: u32,
}

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settlement {
    /// An answer to send to the caller first (RPC).
    pub(crate) reply: Option<Reply>,
    /// Then this.
    pub(crate) action: Action,
    /// The kind of failure, when the delivery failed (for metrics and logs).
    pub(crate) failure: Option<FailureKind>,
}

/// A call's answer: `ok` and the output, or the failure's kind and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: &'static str,
    pub(crate) body: Vec<u8>,
}

/// What happens to the delivery itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Done: ack.
    Ack,
    /// Publish attempt `attempt` to run after `delay`, wait for its confirm, ack.
    Retry { kind: FailureKind, error: String, attempt: u32, delay: Duration },
    /// Publish a copy to `<queue>.dead` with the reason, wait for its confirm, ack.
    Dead { kind: FailureKind, reason: String },
    /// Publish a copy at the end of its queue with `x-crashes = crashes`, wait, ack.
    Requeue { crashes: u64 },
}

/// Before running: `Some` settles the delivery unrun.
pub(crate) fn screen(meta: &Meta<'_>, home: Home, limits: &Limits) -> Option<Settlement> {
    if meta.size > limits.max_message_size {
        let reason =
            format!("body of {} bytes is over worker.max_message_size ({} bytes)", meta.size, limits.max_message_size);
        return Some(failed(None, FailureKind::BadMessage, Action::Dead { kind: FailureKind::BadMessage, reason }));
    }
    if meta.redelivered && home == Home::Queue {
        let crashes = meta.crashes + 1;
        if crashes > u64::from(limits.max_crashes) {
            let reason = format!(
                "came back unacked {crashes} times (amqp.max_crashes = {}): it kills its worker, or its workers kept losing the broker",
                limits.max_crashes
            );
            return Some(failed(None, FailureKind::Crashed, Action::Dead { kind: FailureKind::Crashed, reason }));
        }
        return Some(Settlement { reply: None, action: Action::Requeue { crashes }, failure: None });
    }
    None
}

/// After running: how to settle.
pub(crate) fn decide(outcome: Outcome, meta: &Meta<'_>, home: Home) -> Settlement {
    let call = meta.reply_to.is_some();
    match outcome {
        Outcome::Done { reply } => Settlement {
            reply: reply.filter(|_| call).map(|body| Reply { status: "ok", body }),
            action: Action::Ack,
            failure: None,
        },
        Outcome::Failed { kind, error, .. } if call => {
            // A call's failure is its answer; the caller decides what next.
            failed(Some(answer(kind, &error)), kind, Action::Ack)
        }
        Outcome::Failed { kind, error, retry, schedule } => {
            let delay = match home {
                Home::Subscription => None,
                Home::Queue => next_delay(retry, meta.attempt, schedule),
            };
            let action = match delay {
                Some(delay) => Action::Retry { kind, error, attempt: meta.attempt.saturating_add(1), delay },
                None => Action::Dead { kind, reason: error },
            };
            failed(None, kind, action)
        }
        Outcome::Rejected { kind, reason } => {
            let reply = call.then(|| answer(kind, &reason));
            failed(reply, kind, Action::Dead { kind, reason })
        }
    }
}

/// When to retry after failed attempt `attempt`, if at all.
fn next_delay(retry: Retry, attempt: u32, schedule: Schedule) -> Option<Duration> {
    if attempt >= schedule.max_attempts.max(1) {
        return None;
    }
    match retry {
        Retry::After(delay) => Some(delay),
        Retry::Never => None,
        _ => Some((schedule.backoff)(attempt)),
    }
}

fn failed(reply: Option<Reply>, kind: FailureKind, action: Action) -> Settlement {
    Settlement { reply, action, failure: Some(kind) }
}

fn answer(kind: FailureKind, error: &str) -> Reply {
    // A MessagePack string: what callers decode as the error's text.
    Reply { status: kind.as_str(), body: rmp_serde::to_vec(error).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn two_seconds(_: u32) -> Duration {
        secs(2)
    }

    const THREE: Schedule = Schedule { max_attempts: 3, backoff: two_seconds };

    fn meta(attempt: u32) -> Meta<'static> {
        Meta { name: Some("J"), id: Some("id"), attempt, size: 10, ..Meta::default() }
    }

    fn failure(kind: FailureKind, retry: Retry) -> Outcome {
        Outcome::Failed { kind, error: "boom".into(), retry, schedule: THREE }
    }

    fn retry(kind: FailureKind, attempt: u32, delay: Duration) -> Action {
        Action::Retry { kind, error: "boom".into(), attempt, delay }
    }

    fn dead(kind: FailureKind, reason: &str) -> Action {
        Action::Dead { kind, reason: reason.into() }
    }

    #[test]
    fn outcomes_on_a_queue() {
        use FailureKind::*;
        let cases: Vec<(&str, Outcome, u32, Action)> = vec![
            ("success", Outcome::Done { reply: None }, 1, Action::Ack),
            ("failure, attempts left", failure(Failed, Retry::Backoff), 1, retry(Failed, 2, secs(2))),
            ("failure on the last attempt", failure(Failed, Retry::Backoff), 3, dead(Failed, "boom")),
            ("retry_after", failure(Failed, Retry::After(secs(9))), 2, retry(Failed, 3, secs(9))),
            ("retry_after on the last attempt", failure(Failed, Retry::After(secs(9))), 3, dead(Failed, "boom")),
            ("fatal", failure(Fatal, Retry::Never), 1, dead(Fatal, "boom")),
            ("panic", failure(Panicked, Retry::Backoff), 2, retry(Panicked, 3, secs(2))),
            ("timeout", failure(Timeout, Retry::Backoff), 1, retry(Timeout, 2, secs(2))),
            ("unknown type", failure(UnknownType, Retry::Backoff), 1, retry(UnknownType, 2, secs(2))),
            ("undecodable", Outcome::Rejected { kind: Undecodable, reason: "bad".into() }, 1, dead(Undecodable, "bad")),
            (
                "bad message",
                Outcome::Rejected { kind: BadMessage, reason: "no id".into() },
                1,
                dead(BadMessage, "no id"),
            ),
        ];
        for (what, outcome, attempt, action) in cases {
            let expected_failure = match &outcome {
                Outcome::Done { .. } => None,
                Outcome::Failed { kind, .. } | Outcome::Rejected { kind, .. } => Some(*kind),
            };
            let settlement = decide(outcome, &meta(attempt), Home::Queue);
            assert_eq!(settlement.action, action, "{what}");
            assert_eq!(settlement.failure, expected_failure, "{what}");
            assert_eq!(settlement.reply, None, "{what}: not a call");
        }
    }

    #[test]
    fn unknown_types_follow_the_default_schedule() {
        let outcome = |attempt| {
            let outcome = Outcome::Failed {
                kind: FailureKind::UnknownType,
                error: "no type".into(),
                retry: Retry::Backoff,
                schedule: Schedule::DEFAULT,
            };
            decide(outcome, &meta(attempt), Home::Queue).action
        };
        match outcome(1) {
            Action::Retry { attempt: 2, delay, .. } => assert!((secs(16)..=secs(36)).contains(&delay), "{delay:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(outcome(24), Action::Retry { attempt: 25, .. }));
        assert_eq!(outcome(25), dead(FailureKind::UnknownType, "no type"));
    }

    #[test]
    fn subscription_jobs_are_never_retried() {
        let settlement = decide(failure(FailureKind::Failed, Retry::Backoff), &meta(1), Home::Subscription);
        assert_eq!(settlement.action, dead(FailureKind::Failed, "boom"));
    }

    #[test]
    fn calls_get_their_answer_and_are_not_retried() {
        let call = Meta { reply_to: Some("amq.rabbitmq.reply-to.x"), ..meta(1) };
        let ok = decide(Outcome::Done { reply: Some(vec![7]) }, &call, Home::Queue);
        assert_eq!((ok.reply, ok.action), (Some(Reply { status: "ok", body: vec![7] }), Action::Ack));

        let failed = decide(failure(FailureKind::Failed, Retry::Backoff), &call, Home::Queue);
        let text: String = rmp_serde::from_slice(&failed.reply.as_ref().unwrap().body).unwrap();
        assert_eq!((failed.reply.unwrap().status, text.as_str()), ("failed", "boom"));
        assert_eq!(failed.action, Action::Ack);

        let rejected =
            decide(Outcome::Rejected { kind: FailureKind::Undecodable, reason: "bad".into() }, &call, Home::Queue);
        assert_eq!(rejected.reply.unwrap().status, "undecodable");
        assert_eq!(rejected.action, dead(FailureKind::Undecodable, "bad"));

        let plain = decide(Outcome::Done { reply: Some(vec![7]) }, &meta(1), Home::Queue);
        assert_eq!(plain.reply, None, "an answer only goes to a caller");
    }

    #[test]
    fn screening_oversize_and_crash_returns() {
        let limits = Limits { max_message_size: 100, max_crashes: 3 };
        assert_eq!(screen(&meta(1), Home::Queue, &limits), None, "a fresh delivery runs");

        let big = Meta { size: 101, ..meta(1) };
        let settlement = screen(&big, Home::Queue, &limits).unwrap();
        assert!(
            matches!(settlement.action, Action::Dead { kind: FailureKind::BadMessage, ref reason } if reason.contains("101 bytes"))
        );

        let returned = |crashes| Meta { redelivered: true, crashes, ..meta(1) };
        assert_eq!(screen(&returned(0), Home::Queue, &limits).unwrap().action, Action::Requeue { crashes: 1 });
        assert_eq!(screen(&returned(2), Home::Queue, &limits).unwrap().action, Action::Requeue { crashes: 3 });
        let dead = screen(&returned(3), Home::Queue, &limits).unwrap();
        assert!(matches!(dead.action, Action::Dead { kind: FailureKind::Crashed, .. }), "{dead:?}");
        assert_eq!(dead.failure, Some(FailureKind::Crashed));

        assert_eq!(screen(&returned(5), Home::Subscription, &limits), None, "own queues count no crashes");
    }
}
