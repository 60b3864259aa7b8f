//! What happens to a delivery, decided in one place by pure functions: run
//! it or settle it unrun ([`screen`]), how to settle it once it ran
//! ([`decide`], from the facts the dispatcher reports), and what to do when a
//! copy cannot be stored ([`unstored`]). `settle.rs` only carries a
//! [`Decision`] out; nothing here touches the broker.
//!
//! The rules, each a row of the table tests below:
//! - a body over `worker.max_message_size` is dead (`bad_message`), unread;
//! - a message whose `content_type` is set to anything but
//!   `application/msgpack`, or that has no `type` or no `message_id`, is dead
//!   (`bad_message`);
//! - on a queue, a delivery that came back unacked (its worker died, or lost
//!   the broker while holding it) is put at the end of its queue with its
//!   crash count raised, and is dead (`crashed`) once it came back more than
//!   `amqp.max_crashes` times (on classic and quorum queues alike; see
//!   `docs/delivery-guarantees.md` for what counts);
//! - a job that returned `Ok` is acked; a call gets its answer first; a
//!   chain's step (an `x-chain` header) publishes the next step with what it
//!   handed on, waits for its confirm, then acks; a step whose output is too
//!   large to hand on is dead (`fatal`); an `x-chain` header that does not
//!   decode is dead unrun (`bad_message`);
//! - a job that returned an error is retried after its type's backoff (or the
//!   delay it asked for with `retry_after`) while attempts are left, else
//!   dead (`failed`); an error marked `fatal` is dead at once (`fatal`);
//! - a panic (`panicked`) and a timeout (`timeout`) are failed attempts like
//!   an error, retried on the job type's backoff;
//! - a job type this worker does not know fails with `unknown_type` and is
//!   retried on the default schedule (25 attempts, the default backoff), so
//!   that a worker that knows it runs it;
//! - a body that does not decode as its type is dead at once (`undecodable`);
//! - subscription jobs (a worker's own, transient queue) are never retried:
//!   a retry could not find its way back; their failures go to `<exchange>.dead`;
//! - a call (`reply_to` set) gets its failure as the answer and is not
//!   retried; a call that cannot run at all is answered and dead;
//! - a copy (retry, dead letter, crash requeue) that the broker refused (a
//!   nack, a return) is published again after a pause, 1 s doubling to 30 s,
//!   for about 2½ minutes, the delivery held (so the job does not run again
//!   meanwhile); then the delivery goes back to its queue, and comes back
//!   counted as a crash. A copy that may be stored after all (no confirm in
//!   time, the channel closed, an alarm) is not published again (that could
//!   store it twice): the delivery goes back at once;
//! - a returned job that a record (or its `x-consumer-timeout` header) says
//!   the broker's `consumer_timeout` took back is counted like a crash, and
//!   its requeued copy and dead reason name that timeout;
//! - a run whose channel the broker closed (its `consumer_timeout`, say) is
//!   dropped and left: the broker hands the job out again;
//! - a run that a graceful stop's grace period ended (the worker drops it) is
//!   handed back: a copy at the end of its queue, the same attempt and crash
//!   count, `x-interrupted` raised, confirmed, then acked; not a failure and
//!   not a crash (a copy not stored then gives the delivery back at once,
//!   which does count as a crash). A subscription's job is left unacked.
//!
//! In an ordered type's shard (`#[job(ordered_by)]`, a single-active-consumer
//! quorum queue), no copy of a job may go to the tail, where the key's later
//! jobs would pass it:
//! - a delivery that came back unacked runs again where it is (the broker
//!   keeps returns at the head); its returns are the broker's count
//!   (`x-delivery-count`), which also counts returns that are no crash (a
//!   stop's, a pause's), so it is dead (`crashed`) past `amqp.max_crashes`
//!   + [`SHARD_RETURNS`];
//! - a failed attempt is retried in place: the delivery is held, its shard
//!   waits (at most a minute per wait, [`MAX_HOLD`]), and it runs again as
//!   the next attempt; a retry whose wait and a whole run (the type's
//!   timeout) would not fit, with the time it has been held, in the
//!   broker's `consumer_timeout` (`worker.consumer_timeout`) is dead now.
//!   This is the one place a delivery is held unacked while time passes;
//! - a rate-limited return (`JobError::rate_limited`) is a failed attempt
//!   there, retried in place after the wait it asked for;
//! - a run a graceful stop ended, or a wait in place a stop cut short, is
//!   left: it goes back to the head of its shard as its consumer closes its
//!   channel (the broker counts that return; see `shard.rs` for why a
//!   shard's consumer is never cancelled while it holds a job).

use std::time::Duration;

use jobs_core::plumbing::{NextStep, ReplyStatus, CONTENT_TYPE};
use jobs_core::{FailureKind, JobError, Retry, RATE_LIMITED_RUNS};

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

/// What the dispatcher found when it ran a delivery: facts, no decisions.
#[derive(Debug)]
pub(crate) enum Ran {
    /// `perform` returned `Ok`; an RPC job's encoded answer.
    Returned { reply: Option<Vec<u8>> },
    /// `perform` returned this error.
    Errored { error: JobError, schedule: Schedule },
    /// `perform` panicked with this message.
    Panicked { message: String, schedule: Schedule },
    /// `perform` ran past its type's timeout and was dropped.
    TimedOut { after: Duration, schedule: Schedule },
    /// No job type of the message's name is linked into this worker.
    UnknownType,
    /// The body does not decode as the job type: the decoder's words.
    Undecodable { error: String },
    /// A graceful stop's grace period ended while `perform` ran (for `after`):
    /// it was dropped, unfinished.
    Interrupted { after: Duration },
    /// The broker closed the delivery's channel while `perform` ran (for
    /// `after`), saying `reason` (because of its `consumer_timeout`, when
    /// `timeout` is set): it was dropped, and the broker hands the job out again.
    Abandoned { after: Duration, reason: String, timeout: Option<Duration> },
    /// Someone cancelled the job (`by`): before it came up, or while it ran
    /// (`running`), when it did not end within its grace and was dropped (`dropped`).
    Cancelled { by: String, running: bool, dropped: bool },
    /// A job of a limited type (`max_running`) that came from a queue not
    /// its type's own: it runs only from there (where the slots set the prefetch).
    Elsewhere { queue: String },
    /// A job of a rate-limited type over its rate (its key's, with
    /// `rate_key`): it did not run, and waits `delay` for its turn.
    OverRate { delay: Duration },
    /// Not started by its expiry (`x-expires-at`), `late` past it: not run.
    Expired { late: Duration },
    /// It waited (for a weighted queue's turn, a rate's token, a limit's
    /// slot) and never started: a stop, its consumer's end or its queue's
    /// pause came first, or it waited too long (the broker's
    /// `consumer_timeout` runs for a held delivery).
    NotStarted,
}

/// Where the delivery was consumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// A durable job queue.
    Queue,
    /// A subscription's queue: this worker's own, gone with it.
    Subscription,
    /// An ordered type's shard: failures retry in place, nothing goes to its tail.
    Shard,
}

/// Returns a shard's job may have beyond `amqp.max_crashes`: the broker's
/// count there also counts those that are no crash (a stop's or a pause's).
pub(crate) const SHARD_RETURNS: u64 = 5;

/// Room left in the broker's `consumer_timeout` for settling a job retried
/// in place after its last run (a dead copy's confirm, publishing it again).
pub(crate) const HOLD_MARGIN: Duration = Duration::from_secs(180);

/// The longest one wait of a retry in place, in an ordered type's shard.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(60);

/// The worker's limits that the rules read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
    pub(crate) max_crashes: u32,
    /// The broker's `consumer_timeout` (`worker.consumer_timeout`): a shard's
    /// delivery retried in place must be settled within it.
    pub(crate) consumer_timeout: Duration,
}

/// A call's answer: its status and body (the output, or the error's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: ReplyStatus,
    pub(crate) body: Vec<u8>,
}

/// What to do with a delivery, and so what is counted: one shape for both.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Done: ack (a call gets its answer first).
    Ack { reply: Option<Reply> },
    /// A chain's step is done: publish the next step, wait for its confirm, ack.
    Continue { next: Box<NextStep> },
    /// A call failed: its failure is its answer, then ack (calls are not retried).
    Answer { kind: FailureKind, reply: Reply },
    /// Publish attempt `attempt` to run after `delay`, wait for its confirm, ack.
    Retry { kind: FailureKind, error: String, attempt: u32, delay: Duration },
    /// In a shard: hold the delivery for `delay`, then run it again as
    /// attempt `attempt` (nothing is published; its shard waits).
    Hold { kind: FailureKind, error: String, attempt: u32, delay: Duration },
    /// Publish a copy to `<queue>.dead` with the reason, saying it ended on
    /// attempt `attempt`, wait for its confirm, ack (a call that could not run
    /// gets its failure as the answer first).
    Dead { kind: FailureKind, reason: String, attempt: u32, reply: Option<Reply> },
    /// Publish a copy at the end of its queue with `x-crashes = crashes` (and
    /// `x-consumer-timeout`, when a run of it was ended by that), wait, ack.
    Requeue { crashes: u64, consumer_timeout: Option<u64> },
    /// A run a graceful stop ended: publish a copy at the end of its queue,
    /// same attempt and crash count, with `x-interrupted = interrupted`, wait
    /// for its confirm, ack. Not a failure, not a crash.
    HandBack { interrupted: u64, after: Duration },
    /// A job that never started (it waited for a turn, a token or a slot):
    /// publish a copy, as it is, at the end of its queue, wait for its
    /// confirm, ack. Not a failure, not an interrupted run.
    Unstarted,
    /// A limited type's job from another queue: publish a copy (as it is) to
    /// the type's own `queue`, wait for its confirm, ack. Not a failure.
    Move { queue: String },
    /// Over a rate: publish a copy through the delay cascade to come back
    /// after `delay` to its queue, as the same attempt (with
    /// `x-rate-limited = n` when it said so itself, `rate_limited: Some(n)`),
    /// wait for its confirm, ack. Not a failure.
    Wait { delay: Duration, rate_limited: Option<u64> },
    /// Nothing can be done with it: leave it unacked (it goes back to its
    /// queue, or with a subscription's queue, when the connection closes).
    Leave,
    /// The broker took the delivery back (it closed its channel): nothing to
    /// settle. Say so, and, for its `consumer_timeout`, tell every worker.
    Abandon { after: Duration, reason: String, timeout: Option<Duration> },
}

impl Decision {
    /// The kind of failure counted for this delivery (`jobs_failed_total`), if it failed.
    pub(crate) fn failure(&self) -> Option<FailureKind> {
        match self {
            Decision::Ack { .. }
            | Decision::Continue { .. }
            | Decision::Requeue { .. }
            | Decision::HandBack { .. }
            | Decision::Unstarted
            | Decision::Move { .. }
            | Decision::Wait { .. }
            | Decision::Leave
            | Decision::Abandon { .. } => None,
            Decision::Answer { kind, .. }
            | Decision::Retry { kind, .. }
            | Decision::Hold { kind, .. }
            | Decision::Dead { kind, .. } => Some(*kind),
        }
    }

    /// A batch's job's outcome, when this decision ends the job: `true`
    /// (succeeded) or `false` (dead); `None` when the job comes back.
    pub(crate) fn batch_outcome(&self) -> Option<bool> {
        match self {
            Decision::Ack { .. } | Decision::Continue { .. } => Some(true),
            Decision::Dead { .. } | Decision::Answer { .. } => Some(false),
            Decision::Retry { .. }
            | Decision::Hold { .. }
            | Decision::Requeue { .. }
            | Decision::HandBack { .. }
            | Decision::Unstarted
            | Decision::Move { .. }
            | Decision::Wait { .. }
            | Decision::Leave
            | Decision::Abandon { .. } => None,
        }
    }

    /// The answer the caller gets first, for a call.
    pub(crate) fn reply(&self) -> Option<&Reply> {
        match self {
            Decision::Ack { reply } | Decision::Dead { reply, .. } => reply.as_ref(),
            Decision::Answer { reply, .. } => Some(reply),
            Decision::Retry { .. }
            | Decision::Hold { .. }
            | Decision::Continue { .. }
            | Decision::Requeue { .. }
            | Decision::HandBack { .. }
            | Decision::Unstarted
            | Decision::Move { .. }
            | Decision::Wait { .. }
            | Decision::Leave
            | Decision::Abandon { .. } => None,
        }
    }
}

/// What to do when the copy a decision publishes is not stored (nacked,
/// refused, or its channel went before the confirm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstored {
    /// Publish it again after `pause`, the delivery still held.
    Again { pause: Duration },
    /// Give the delivery back to its queue (reject, requeue): its return
    /// counts as a crash.
    GiveBack,
}

/// How many times a copy is published again before its delivery is given
/// back: pauses of 1, 2, 4, 8, 16 s and then 30 s four times, about 2½ minutes in all.
const COPY_TRIES: u32 = 10;

/// Before running: the job type's name to run, or the decision that settles
/// the delivery unrun.
pub(crate) fn screen<'a>(meta: &Meta<'a>, home: Home, limits: &Limits) -> Result<&'a str, Decision> {
    let bad = |reason: String| Err(dead(meta, FailureKind::BadMessage, reason));
    if meta.size > limits.max_message_size {
        return bad(format!(
            "body of {} bytes is over worker.max_message_size ({} bytes)",
            meta.size, limits.max_message_size
        ));
    }
    if let Some(content_type) = meta.content_type.filter(|t| *t != CONTENT_TYPE) {
        return bad(format!("content type `{content_type}` is not `{CONTENT_TYPE}`"));
    }
    let Some(name) = meta.name else {
        return bad("the message has no `type` property naming its job type".into());
    };
    if !meta.has_id {
        return bad("the message has no `message_id` (job id)".into());
    }
    if let Some(Err(reason)) = &meta.chain {
        return bad(format!("{reason}: the rest of its chain cannot run"));
    }
    if meta.redelivered && home == Home::Queue {
        let crashes = meta.crashes.saturating_add(1);
        if crashes > u64::from(limits.max_crashes) {
            let max = limits.max_crashes;
            let reason = match meta.consumer_timeout {
                Some(ms) => format!(
                    "came back unacked {crashes} times (amqp.max_crashes = {max}): the broker's consumer_timeout ({}) ended its runs; raise consumer_timeout above the job's timeout (rabbitmq.conf; per queue from RabbitMQ 3.12), or make the job shorter",
                    timeout_words(ms)
                ),
                None => format!(
                    "came back unacked {crashes} times (amqp.max_crashes = {max}): it kills its worker, or its workers kept losing the broker"
                ),
            };
            return Err(dead(meta, FailureKind::Crashed, reason));
        }
        return Err(Decision::Requeue { crashes, consumer_timeout: meta.consumer_timeout });
    }
    if meta.redelivered && home == Home::Shard {
        // Still at the head of its key's line: it runs again here, counted
        // by the broker (a copy would go to the tail).
        let returns = meta.delivery_count.max(1);
        if returns > u64::from(limits.max_crashes) + SHARD_RETURNS {
            let max = limits.max_crashes;
            let reason = format!(
                "came back unacked {returns} times (amqp.max_crashes = {max}, and {SHARD_RETURNS} more in an ordered type's shard, where a stop's or a pause's return counts too): it kills its worker, or its workers kept losing the broker"
            );
            return Err(dead(meta, FailureKind::Crashed, reason));
        }
    }
    Ok(name)
}

/// After running: how to settle, from what the run did.
pub(crate) fn decide(ran: Ran, meta: &Meta<'_>, home: Home) -> Decision {
    let name = meta.name.unwrap_or("(none)");
    let (kind, error, retry, schedule) = match ran {
        Ran::Returned { reply } => {
            if let Some(Ok(chain)) = &meta.chain {
                // A step: what it returned is what it hands on.
                return match chain.next(reply) {
                    Ok(Some(next)) => Decision::Continue { next: Box::new(next) },
                    Ok(None) => Decision::Ack { reply: None },
                    Err(reason) => dead(meta, FailureKind::Fatal, reason),
                };
            }
            let reply = reply.filter(|_| meta.is_call()).map(|body| Reply { status: ReplyStatus::Ok, body });
            return Decision::Ack { reply };
        }
        Ran::Errored { error, schedule } => match error.retry() {
            // An outside service's limit: the same attempt waits, while
            // such returns are few; past them each is a failed attempt.
            Retry::RateLimited(delay) if meta.rate_limited < RATE_LIMITED_RUNS => {
                if !meta.is_call() && home == Home::Queue {
                    // (In a shard it is a failed attempt, retried in place below.)
                    // At least a second: a zero delay would be a busy loop through the queue.
                    let delay = delay.max(Duration::from_secs(1));
                    let wait = Decision::Wait { delay, rate_limited: Some(meta.rate_limited + 1) };
                    return past_expiry(meta, delay, &error.to_string()).unwrap_or(wait);
                }
                (FailureKind::Failed, error.to_string(), Retry::After(delay), schedule)
            }
            Retry::RateLimited(delay) => (
                FailureKind::Failed,
                format!("{error} ({RATE_LIMITED_RUNS} times, now counted as failed attempts)"),
                Retry::After(delay),
                schedule,
            ),
            Retry::Never => (FailureKind::Fatal, error.to_string(), Retry::Never, schedule),
            retry @ (Retry::Backoff | Retry::After(_)) => (FailureKind::Failed, error.to_string(), retry, schedule),
        },
        Ran::Panicked { message, schedule } => {
            (FailureKind::Panicked, format!("panicked: {message}"), Retry::Backoff, schedule)
        }
        Ran::TimedOut { after, schedule } => {
            (FailureKind::Timeout, format!("timed out after {after:?}"), Retry::Backoff, schedule)
        }
        // A rolling deploy: a newer worker may know it. Retry on the default schedule.
        Ran::UnknownType => (
            FailureKind::UnknownType,
            format!("no job type `{name}` in this worker"),
            Retry::Backoff,
            Schedule::DEFAULT,
        ),
        Ran::Undecodable { error } => return dead(meta, FailureKind::Undecodable, error),
        // Asked for: not retried; `dead retry` runs it again.
        Ran::Cancelled { by, running, dropped } => {
            let how = match (running, dropped) {
                (false, _) => "before it ran",
                (true, false) => "while it ran",
                (true, true) => "while it ran, and dropped: it did not end within worker.cancel_grace",
            };
            (FailureKind::Cancelled, format!("cancelled by {by} {how}"), Retry::Never, Schedule::DEFAULT)
        }
        // A stop is not the job's fault: the next worker runs it again, as the
        // same attempt (a call too: its caller still waits). A subscription's
        // queue goes with this worker: there is nowhere to hand it back to.
        Ran::Abandoned { after, reason, timeout } => return Decision::Abandon { after, reason, timeout },
        Ran::Elsewhere { queue } => return Decision::Move { queue },
        // Only from its type's own queue (a job from elsewhere is moved there first).
        Ran::OverRate { delay } => {
            return past_expiry(meta, delay, "waiting for its rate")
                .unwrap_or(Decision::Wait { delay, rate_limited: None })
        }
        // Worth nothing now: not run, and a call's caller is gone (no answer).
        Ran::Expired { late } => {
            let reason = format!("expired: not started by its deadline ({late:?} past it)");
            return Decision::Dead { kind: FailureKind::Expired, reason, attempt: meta.attempt, reply: None };
        }
        // Not run: back to its queue as it is (its consumer's channel is
        // open; the consumer leaves one whose channel closed).
        Ran::NotStarted => {
            return match home {
                Home::Queue => Decision::Unstarted,
                // A shard's goes back to its head with its channel's close.
                Home::Subscription | Home::Shard => Decision::Leave,
            };
        }
        Ran::Interrupted { after } => {
            return match home {
                Home::Queue => Decision::HandBack { interrupted: meta.interrupted.saturating_add(1), after },
                // A shard's goes back to its head with its channel's close.
                Home::Subscription | Home::Shard => Decision::Leave,
            };
        }
    };
    if meta.is_call() {
        // A call's failure is its answer; the caller decides what next.
        return Decision::Answer { kind, reply: answer(kind, &error) };
    }
    let delay = match home {
        Home::Subscription => None,
        Home::Queue => next_delay(retry, meta.attempt, schedule),
        Home::Shard => next_delay(retry, meta.attempt, schedule).map(|delay| delay.min(MAX_HOLD)),
    };
    let attempt = meta.attempt.saturating_add(1);
    match delay {
        Some(delay) => past_expiry(meta, delay, &error).unwrap_or(match home {
            Home::Shard => Decision::Hold { kind, error, attempt, delay },
            Home::Queue | Home::Subscription => Decision::Retry { kind, error, attempt, delay },
        }),
        None => Decision::Dead { kind, reason: error, attempt: meta.attempt, reply: None },
    }
}

/// A retry in place that might not be settled within the broker's
/// `consumer_timeout` is dead now: the time its delivery has been held
/// (`held`), its wait, a whole run (`run`, the type's timeout) and
/// [`HOLD_MARGIN`] must fit in it, or the broker would take the delivery
/// back (and its shard waited long enough); any other decision stands.
pub(crate) fn bound_hold(decision: Decision, held: Duration, run: Duration, consumer_timeout: Duration) -> Decision {
    match decision {
        Decision::Hold { kind, error, attempt, delay }
            if held.saturating_add(delay).saturating_add(run).saturating_add(HOLD_MARGIN) > consumer_timeout =>
        {
            Decision::Dead {
                kind,
                reason: format!(
                    "{error} (its retry in place, {delay:?} from now, and a run of up to {run:?} would hold its shard's delivery past worker.consumer_timeout, {consumer_timeout:?}, after {held:?} held)"
                ),
                attempt: attempt.saturating_sub(1).max(1),
                reply: None,
            }
        }
        decision => decision,
    }
}

/// Dead as `expired` now when a wait of `delay` would bring the job back
/// after its expiry (it would not run then); `why` (its error) is kept in the reason.
fn past_expiry(meta: &Meta<'_>, delay: Duration, why: &str) -> Option<Decision> {
    let at = meta.expires_at_ms?;
    let back =
        jobs_core::plumbing::events::now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
    (back > at).then(|| Decision::Dead {
        kind: FailureKind::Expired,
        reason: format!("expired: its next run, {delay:?} from now, would come after its deadline; it ended on: {why}"),
        attempt: meta.attempt,
        reply: None,
    })
}

/// When the copy of a decision was not stored, for the `tries`-th time.
/// `refused`: the broker said it did not store it (a nack, a return) and the
/// settling channel is still open; else (a timeout, a closed channel, an
/// alarm) it may be stored after all, and publishing it again could store it
/// twice. `stopping`: the worker is stopping (a hand-back), and waits for nothing.
pub(crate) fn unstored(tries: u32, refused: bool, stopping: bool) -> Unstored {
    if !refused || stopping || tries >= COPY_TRIES {
        return Unstored::GiveBack;
    }
    let pause = Duration::from_secs(1u64 << tries.saturating_sub(1).min(5)).min(Duration::from_secs(30));
    Unstored::Again { pause }
}

/// A `consumer_timeout` in milliseconds, in words ("10000 ms"; 0: unknown).
pub(crate) fn timeout_words(ms: u64) -> String {
    if ms == 0 {
        "its value not said".into()
    } else {
        format!("{ms} ms")
    }
}

/// When to retry after failed attempt `attempt`, if at all.
fn next_delay(retry: Retry, attempt: u32, schedule: Schedule) -> Option<Duration> {
    if attempt >= schedule.max_attempts.max(1) {
        return None;
    }
    match retry {
        Retry::Backoff => Some((schedule.backoff)(attempt)),
        Retry::After(delay) => Some(delay),
        Retry::Never => None,
        // Past its free returns: a failed attempt, retried after its delay.
        Retry::RateLimited(delay) => Some(delay),
    }
}

/// Dead with `reason`, on the attempt it was on; a call hears why first.
fn dead(meta: &Meta<'_>, kind: FailureKind, reason: String) -> Decision {
    let reply = meta.is_call().then(|| answer(kind, &reason));
    Decision::Dead { kind, reason, attempt: meta.attempt, reply }
}

fn answer(kind: FailureKind, error: &str) -> Reply {
    // A MessagePack string: what callers decode as the error's text.
    Reply { status: ReplyStatus::Failed(kind), body: rmp_serde::to_vec(error).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs_core::plumbing::ChainHeader;
    use FailureKind::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn two_seconds(_: u32) -> Duration {
        secs(2)
    }

    const THREE: Schedule = Schedule { max_attempts: 3, backoff: two_seconds };
    const LIMITS: Limits =
        Limits { max_message_size: 100, max_crashes: 3, consumer_timeout: Duration::from_secs(1800) };

    fn meta(attempt: u32) -> Meta<'static> {
        Meta { name: Some("J"), has_id: true, attempt, size: 10, ..Meta::default() }
    }

    fn call(attempt: u32) -> Meta<'static> {
        Meta { reply_to: Some("amq.rabbitmq.reply-to.x"), ..meta(attempt) }
    }

    fn errored(error: JobError) -> Ran {
        Ran::Errored { error, schedule: THREE }
    }

    #[test]
    fn in_a_shard_nothing_goes_to_the_tail_failures_retry_in_place_and_returns_run_again() {
        let redelivered = |count: u64| Meta { redelivered: true, delivery_count: count, ..meta(1) };
        // Came back: runs again where it is, until the broker's count passes max_crashes.
        assert_eq!(screen(&redelivered(1), Home::Shard, &LIMITS), Ok("J"));
        assert_eq!(screen(&redelivered(3 + SHARD_RETURNS), Home::Shard, &LIMITS), Ok("J"));
        let dead = screen(&redelivered(4 + SHARD_RETURNS), Home::Shard, &LIMITS);
        assert!(matches!(dead, Err(Decision::Dead { kind: Crashed, .. })), "{dead:?}");
        // (On a queue the same return is a copy at the tail.)
        assert!(matches!(screen(&redelivered(1), Home::Queue, &LIMITS), Err(Decision::Requeue { crashes: 1, .. })));
        // A failed attempt waits in place, as the next attempt; at most a minute a wait.
        let hold = |attempt, delay| Decision::Hold { kind: Failed, error: "down".into(), attempt, delay };
        assert_eq!(decide(errored(JobError::msg("down")), &meta(1), Home::Shard), hold(2, secs(2)));
        let long = Ran::Errored { error: JobError::retry_after("down", secs(600)), schedule: THREE };
        assert_eq!(decide(long, &meta(1), Home::Shard), hold(2, MAX_HOLD));
        // Out of attempts: dead, and the shard moves on.
        assert_eq!(decide(errored(JobError::msg("down")), &meta(3), Home::Shard), dead_on(Failed, "down", 3));
        // A rate-limited return is a failed attempt there, in place.
        let limited = decide(errored(JobError::rate_limited(secs(5))), &meta(1), Home::Shard);
        assert!(matches!(limited, Decision::Hold { attempt: 2, delay, .. } if delay == secs(5)), "{limited:?}");
        // A stop's end of a run, a wait cut short: left, back to the head with the channel.
        assert_eq!(decide(Ran::Interrupted { after: secs(1) }, &meta(1), Home::Shard), Decision::Leave);
        assert_eq!(decide(Ran::NotStarted, &meta(1), Home::Shard), Decision::Leave);
        // Held, its wait and a whole run past the consumer_timeout: dead now, saying why.
        let bounded = bound_hold(hold(2, secs(60)), secs(100), secs(1500), secs(1800));
        assert!(
            matches!(&bounded, Decision::Dead { kind: Failed, attempt: 1, reason, .. } if reason.contains("worker.consumer_timeout")),
            "{bounded:?}"
        );
        assert_eq!(bound_hold(hold(2, secs(60)), secs(10), secs(1500), secs(1800)), hold(2, secs(60)));
    }

    #[test]
    fn a_job_past_its_deadline_or_whose_next_run_would_be_is_dead_as_expired() {
        let now = jobs_core::plumbing::events::now_ms();
        let expired = |decision: &Decision| matches!(decision, Decision::Dead { kind: Expired, reply: None, .. });
        // Past it as it came up; a call too, and no answer for a caller gone.
        assert!(expired(&decide(Ran::Expired { late: secs(3) }, &meta(1), Home::Queue)));
        assert!(expired(&decide(Ran::Expired { late: secs(3) }, &call(1), Home::Queue)));
        // A retry (two seconds, THREE's backoff) after a deadline a second away: dead now.
        let soon = Meta { expires_at_ms: Some(now + 1_000), ..meta(1) };
        assert!(expired(&decide(errored(JobError::msg("down")), &soon, Home::Queue)));
        // A rate-limit wait past it too.
        assert!(expired(&decide(errored(JobError::rate_limited(secs(5))), &soon, Home::Queue)));
        // With time left, the retry as always.
        let later = Meta { expires_at_ms: Some(now + 3_600_000), ..meta(1) };
        assert_eq!(decide(errored(JobError::msg("down")), &later, Home::Queue), retry(Failed, "down", 2, secs(2)));
    }

    fn retry(kind: FailureKind, error: &str, attempt: u32, delay: Duration) -> Decision {
        Decision::Retry { kind, error: error.into(), attempt, delay }
    }

    fn dead(kind: FailureKind, reason: &str) -> Decision {
        Decision::Dead { kind, reason: reason.into(), attempt: 1, reply: None }
    }

    fn dead_on(kind: FailureKind, reason: &str, attempt: u32) -> Decision {
        Decision::Dead { kind, reason: reason.into(), attempt, reply: None }
    }

    fn text_of(reply: &Reply) -> String {
        rmp_serde::from_slice(&reply.body).unwrap()
    }

    /// One row per rule after a run: what ran, on which attempt, and the decision.
    #[test]
    fn after_a_run_on_a_queue() {
        let cases: Vec<(&str, Ran, u32, Decision)> = vec![
            ("returned Ok: ack", Ran::Returned { reply: None }, 1, Decision::Ack { reply: None }),
            (
                "an error with attempts left: retry on the type's backoff",
                errored(JobError::msg("boom")),
                1,
                retry(Failed, "boom", 2, secs(2)),
            ),
            (
                "an error on the last attempt: dead, on that attempt",
                errored(JobError::msg("boom")),
                3,
                dead_on(Failed, "boom", 3),
            ),
            (
                "retry_after: its delay",
                errored(JobError::retry_after("slow down", secs(9))),
                2,
                retry(Failed, "slow down", 3, secs(9)),
            ),
            (
                "retry_after on the last attempt: dead",
                errored(JobError::retry_after("slow down", secs(9))),
                3,
                dead_on(Failed, "slow down", 3),
            ),
            ("fatal: dead at once", errored(JobError::fatal("bad address")), 1, dead(Fatal, "bad address")),
            (
                "a panic: retried on the type's backoff",
                Ran::Panicked { message: "oops".into(), schedule: THREE },
                2,
                retry(Panicked, "panicked: oops", 3, secs(2)),
            ),
            (
                "a panic on the last attempt: dead",
                Ran::Panicked { message: "oops".into(), schedule: THREE },
                3,
                dead_on(Panicked, "panicked: oops", 3),
            ),
            (
                "a timeout: retried on the type's backoff",
                Ran::TimedOut { after: secs(5), schedule: THREE },
                1,
                retry(Timeout, "timed out after 5s", 2, secs(2)),
            ),
            (
                "undecodable: dead at once",
                Ran::Undecodable { error: "missing field `to`".into() },
                1,
                dead(Undecodable, "missing field `to`"),
            ),
        ];
        for (rule, ran, attempt, expected) in cases {
            let decision = decide(ran, &meta(attempt), Home::Queue);
            assert_eq!(decision, expected, "{rule}");
            assert_eq!(decision.failure(), expected.failure(), "{rule}");
            assert_eq!(decision.reply(), None, "{rule}: not a call");
        }
    }

    #[test]
    fn a_rate_limited_job_waits_as_the_same_attempt_until_it_has_done_so_too_often() {
        let limited = || errored(JobError::rate_limited(secs(3)));
        let first = decide(limited(), &meta(2), Home::Queue);
        assert_eq!(first, Decision::Wait { delay: secs(3), rate_limited: Some(1) });
        assert_eq!((first.failure(), first.batch_outcome()), (None, None), "not a failure, not an outcome");
        let nineteen = Meta { rate_limited: RATE_LIMITED_RUNS - 1, ..meta(2) };
        assert_eq!(
            decide(limited(), &nineteen, Home::Queue),
            Decision::Wait { delay: secs(3), rate_limited: Some(RATE_LIMITED_RUNS) }
        );
        let twenty = Meta { rate_limited: RATE_LIMITED_RUNS, ..meta(2) };
        match decide(limited(), &twenty, Home::Queue) {
            Decision::Retry { kind: Failed, attempt: 3, delay, error } => {
                assert_eq!(delay, secs(3));
                assert!(error.contains("20 times"), "{error}");
            }
            other => panic!("past its free returns it is a failed attempt: {other:?}"),
        }
        let last = Meta { rate_limited: RATE_LIMITED_RUNS, ..meta(3) };
        assert!(matches!(decide(limited(), &last, Home::Queue), Decision::Dead { kind: Failed, .. }));
        // A call is answered (its caller decides); a job over its type's rate waits.
        assert!(matches!(decide(limited(), &call(1), Home::Queue), Decision::Answer { kind: Failed, .. }));
        let now = errored(JobError::rate_limited(Duration::ZERO));
        assert_eq!(
            decide(now, &meta(1), Home::Queue),
            Decision::Wait { delay: secs(1), rate_limited: Some(1) },
            "no busy loop"
        );
        let over = decide(Ran::OverRate { delay: secs(1) }, &meta(1), Home::Queue);
        assert_eq!(over, Decision::Wait { delay: secs(1), rate_limited: None });
    }

    #[test]
    fn what_is_counted_follows_from_the_decision() {
        assert_eq!(Decision::Ack { reply: None }.failure(), None);
        assert_eq!(
            Decision::Requeue { crashes: 1, consumer_timeout: None }.failure(),
            None,
            "a crash return is counted when it goes dead"
        );
        assert_eq!(retry(Timeout, "t", 2, secs(1)).failure(), Some(Timeout));
        assert_eq!(dead(Undecodable, "u").failure(), Some(Undecodable));
        let answer = Decision::Answer { kind: Panicked, reply: answer(Panicked, "p") };
        assert_eq!(answer.failure(), Some(Panicked), "a failed call is counted as failed");
    }

    #[test]
    fn unknown_types_follow_the_default_schedule() {
        let decision = |attempt| decide(Ran::UnknownType, &meta(attempt), Home::Queue);
        match decision(1) {
            Decision::Retry { kind: UnknownType, attempt: 2, delay, error } => {
                assert!((secs(16)..=secs(36)).contains(&delay), "{delay:?}");
                assert_eq!(error, "no job type `J` in this worker");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decision(24), Decision::Retry { attempt: 25, .. }));
        assert_eq!(decision(25), dead_on(UnknownType, "no job type `J` in this worker", 25), "the default 25 attempts");
    }

    #[test]
    fn subscription_jobs_are_never_retried() {
        let decision = decide(errored(JobError::msg("boom")), &meta(1), Home::Subscription);
        assert_eq!(decision, dead(Failed, "boom"));
        let unknown = decide(Ran::UnknownType, &meta(1), Home::Subscription);
        assert!(matches!(unknown, Decision::Dead { kind: UnknownType, .. }), "{unknown:?}");
    }

    #[test]
    fn calls_get_their_answer_and_are_not_retried() {
        let ok = decide(Ran::Returned { reply: Some(vec![7]) }, &call(1), Home::Queue);
        assert_eq!(ok, Decision::Ack { reply: Some(Reply { status: ReplyStatus::Ok, body: vec![7] }) });

        for (ran, kind) in [
            (errored(JobError::msg("boom")), Failed),
            (errored(JobError::fatal("boom")), Fatal),
            (Ran::Panicked { message: "boom".into(), schedule: THREE }, Panicked),
            (Ran::TimedOut { after: secs(1), schedule: THREE }, Timeout),
            (Ran::UnknownType, UnknownType),
        ] {
            match decide(ran, &call(1), Home::Queue) {
                Decision::Answer { kind: got, reply } => {
                    assert_eq!((got, reply.status), (kind, ReplyStatus::Failed(kind)));
                    assert!(!text_of(&reply).is_empty());
                }
                other => panic!("{kind}: {other:?}"),
            }
        }

        let undecodable = decide(Ran::Undecodable { error: "bad".into() }, &call(1), Home::Queue);
        assert!(matches!(undecodable, Decision::Dead { kind: Undecodable, .. }));
        assert_eq!(undecodable.reply().map(|r| r.status), Some(ReplyStatus::Failed(Undecodable)), "answered, and dead");

        let plain = decide(Ran::Returned { reply: Some(vec![7]) }, &meta(1), Home::Queue);
        assert_eq!(plain, Decision::Ack { reply: None }, "an answer only goes to a caller");
    }

    /// One row per rule before a run: the delivery's properties, and whether it runs.
    #[test]
    fn before_a_run() {
        let returned = |crashes| Meta { redelivered: true, crashes, ..meta(1) };
        let bad = |reason: &str| dead(BadMessage, reason);
        let cases: Vec<(&str, Meta<'static>, Home, Result<&str, Decision>)> = vec![
            ("a fresh delivery runs", meta(1), Home::Queue, Ok("J")),
            ("msgpack named runs", Meta { content_type: Some(CONTENT_TYPE), ..meta(1) }, Home::Queue, Ok("J")),
            (
                "oversize: bad, unread",
                Meta { size: 101, ..meta(1) },
                Home::Queue,
                Err(bad("body of 101 bytes is over worker.max_message_size (100 bytes)")),
            ),
            (
                "another content type: bad",
                Meta { content_type: Some("application/json"), ..meta(1) },
                Home::Queue,
                Err(bad("content type `application/json` is not `application/msgpack`")),
            ),
            (
                "no type: bad",
                Meta { name: None, ..meta(1) },
                Home::Queue,
                Err(bad("the message has no `type` property naming its job type")),
            ),
            (
                "no id: bad",
                Meta { has_id: false, ..meta(1) },
                Home::Queue,
                Err(bad("the message has no `message_id` (job id)")),
            ),
            (
                "a bad message that came back is still just bad",
                Meta { has_id: false, ..returned(0) },
                Home::Queue,
                Err(bad("the message has no `message_id` (job id)")),
            ),
            (
                "a first return: requeued, one crash",
                returned(0),
                Home::Queue,
                Err(Decision::Requeue { crashes: 1, consumer_timeout: None }),
            ),
            (
                "up to max_crashes: requeued",
                returned(2),
                Home::Queue,
                Err(Decision::Requeue { crashes: 3, consumer_timeout: None }),
            ),
            ("a subscription's own queue counts no crashes", returned(5), Home::Subscription, Ok("J")),
        ];
        for (rule, meta, home, expected) in cases {
            assert_eq!(screen(&meta, home, &LIMITS), expected, "{rule}");
        }
        match screen(&returned(3), Home::Queue, &LIMITS) {
            Err(Decision::Dead { kind: Crashed, reason, reply: None, .. }) => {
                assert!(reason.contains("came back unacked 4 times (amqp.max_crashes = 3)"), "{reason}")
            }
            other => panic!("past max_crashes: {other:?}"),
        }
        let bad_call = screen(&Meta { name: None, ..call(1) }, Home::Queue, &LIMITS).unwrap_err();
        assert_eq!(bad_call.reply().map(|r| r.status), Some(ReplyStatus::Failed(BadMessage)), "a bad call hears why");
    }

    #[test]
    fn a_copy_that_is_not_stored_is_tried_again_for_minutes_then_given_back() {
        let pauses: Vec<Unstored> = (1..=COPY_TRIES).map(|tries| unstored(tries, true, false)).collect();
        let expected: Vec<Unstored> = [1, 2, 4, 8, 16, 30, 30, 30, 30]
            .into_iter()
            .map(|s| Unstored::Again { pause: secs(s) })
            .chain([Unstored::GiveBack])
            .collect();
        assert_eq!(pauses, expected);
        let held: u64 = [1, 2, 4, 8, 16, 30, 30, 30, 30].iter().sum();
        assert!(held < 600, "held {held} s: well within the broker's consumer_timeout");
        assert_eq!(
            unstored(1, false, false),
            Unstored::GiveBack,
            "perhaps stored (a timeout, a closed channel): back at once"
        );
        assert_eq!(unstored(1, true, true), Unstored::GiveBack, "stopping: nothing is waited for");
    }

    /// A run a graceful stop ended is handed back, the same attempt, one more
    /// interruption; neither a failure nor a crash. A subscription's is left.
    #[test]
    fn an_interrupted_run_is_handed_back() {
        let interrupted = || Ran::Interrupted { after: secs(2) };
        let again = Meta { interrupted: 2, crashes: 1, ..meta(3) };
        let decision = decide(interrupted(), &again, Home::Queue);
        assert_eq!(decision, Decision::HandBack { interrupted: 3, after: secs(2) });
        assert_eq!((decision.failure(), decision.reply()), (None, None), "not counted as a failure");
        let call_back = decide(interrupted(), &call(1), Home::Queue);
        assert_eq!(call_back, Decision::HandBack { interrupted: 1, after: secs(2) }, "a call too");
        assert_eq!(decide(interrupted(), &meta(1), Home::Subscription), Decision::Leave);
        let far = Meta { interrupted: u64::MAX, ..meta(1) };
        let far_back = decide(interrupted(), &far, Home::Queue);
        assert_eq!(far_back, Decision::HandBack { interrupted: u64::MAX, after: secs(2) }, "no wrap");
    }

    /// A return the broker's consumer_timeout caused is counted like a crash,
    /// and says so on its copy and in its dead reason.
    #[test]
    fn a_return_by_consumer_timeout_is_named() {
        let timed_out = |crashes| Meta { redelivered: true, crashes, consumer_timeout: Some(10_000), ..meta(1) };
        assert_eq!(
            screen(&timed_out(0), Home::Queue, &LIMITS),
            Err(Decision::Requeue { crashes: 1, consumer_timeout: Some(10_000) })
        );
        match screen(&timed_out(3), Home::Queue, &LIMITS) {
            Err(Decision::Dead { kind: Crashed, reason, .. }) => {
                assert!(reason.contains("consumer_timeout (10000 ms) ended its runs"), "{reason}");
                assert!(reason.contains("came back unacked 4 times"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let closed = Ran::Abandoned { after: secs(62), reason: "timed out".into(), timeout: Some(secs(60)) };
        let decision = decide(closed, &meta(1), Home::Queue);
        assert!(matches!(decision, Decision::Abandon { timeout: Some(t), .. } if t == secs(60)), "{decision:?}");
        assert_eq!((decision.failure(), decision.reply()), (None, None), "counted when it comes back, not now");
    }

    #[test]
    fn a_crash_count_at_its_end_does_not_wrap() {
        let returned = Meta { redelivered: true, crashes: u64::MAX, ..meta(1) };
        assert!(matches!(screen(&returned, Home::Queue, &LIMITS), Err(Decision::Dead { kind: Crashed, .. })));
    }

    /// A chain's step, as `docs/workflows.md` specifies its `x-chain` header:
    /// step `at + 1` of `of`, with `after` steps (type names) still to run.
    fn step(at: u32, of: u32, after: &[&str]) -> Meta<'static> {
        #[derive(serde::Serialize)]
        struct Pending<'a> {
            name: &'a str,
            queue: &'a str,
            id: &'a str,
            body: Vec<u8>,
        }
        #[derive(serde::Serialize)]
        struct Rest<'a> {
            chain: &'a str,
            at: u32,
            of: u32,
            steps: Vec<Pending<'a>>,
        }
        let steps =
            after.iter().map(|name| Pending { name, queue: "next-q", id: "next-id", body: vec![0x80] }).collect();
        let bytes = rmp_serde::to_vec_named(&Rest { chain: "c", at, of, steps }).unwrap();
        Meta { chain: Some(ChainHeader::decode(&bytes)), ..meta(1) }
    }

    #[test]
    fn a_chains_step_hands_on_to_the_next_or_ends_it() {
        match decide(Ran::Returned { reply: Some(vec![0x07]) }, &step(0, 3, &["B", "C"]), Home::Queue) {
            Decision::Continue { next } => {
                assert_eq!((next.name.as_str(), next.queue.as_str(), next.id.as_str()), ("B", "next-q", "next-id"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(Ran::Returned { reply: None }, &step(2, 3, &[]), Home::Queue),
            Decision::Ack { reply: None },
            "the last step: done"
        );
        match decide(Ran::Returned { reply: Some(vec![0; 40_000]) }, &step(0, 2, &["B"]), Home::Queue) {
            Decision::Dead { kind: Fatal, reason, .. } => assert!(reason.contains("40000 bytes"), "{reason}"),
            other => panic!("an output too large to hand on: {other:?}"),
        }
        // A failed step is retried and goes dead as any job; its copies keep the chain's headers.
        assert_eq!(
            decide(errored(JobError::msg("boom")), &step(0, 2, &["B"]), Home::Queue),
            retry(Failed, "boom", 2, secs(2))
        );
    }

    #[test]
    fn a_chain_header_that_does_not_decode_is_dead_unrun() {
        let garbage = Meta { chain: Some(ChainHeader::decode(b"garbage")), ..meta(1) };
        match screen(&garbage, Home::Queue, &LIMITS) {
            Err(Decision::Dead { kind: BadMessage, reason, .. }) => {
                assert!(reason.contains("`x-chain` header does not decode"), "{reason}");
                assert!(reason.contains("the rest of its chain cannot run"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(screen(&step(0, 2, &["B"]), Home::Queue, &LIMITS), Ok("J"));
    }
}
