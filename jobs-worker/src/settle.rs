//! Carrying out the policy's [`Decision`] for a delivery. Exactly one of: ack
//! (done); publish a copy (retry, crash-counted requeue, or dead letter), wait
//! for its confirm, then ack; or give the delivery back (what
//! [`policy::unstored`] says when the copy is not stored). Never ack first.
//! Nothing here decides: the copies are built by `jobs_core`'s one message
//! builder and sent where its `Destination` says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs_core::plumbing::amqprs::channel::{BasicAckArguments, BasicRejectArguments};
use jobs_core::plumbing::amqprs::FieldValue;
use jobs_core::plumbing::topology::Topology;
use jobs_core::plumbing::{headers, Destination, Failure, Message, Publisher};
use jobs_core::FailureKind;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::activity::Activity;
use crate::batch_outcomes::Outcomes;
use crate::delivery::Delivery;
use crate::policy::{self, Decision, Reply, Unstored};
use crate::returns::Returns;
use crate::uniques::Releases;

/// What a worker needs to settle deliveries on one connection.
#[derive(Debug)]
pub(crate) struct Settler {
    pub(crate) publisher: Publisher,
    pub(crate) worker: Arc<str>,
    pub(crate) host: String,
    pub(crate) topology: Topology,
    /// Job types this worker does not know, and when each was last warned about.
    pub(crate) unknown: Arc<Throttle>,
    /// Where failures, retries and dead letters are counted.
    pub(crate) activity: Arc<Activity>,
    /// Cancelled when the settling channel is gone: the session ends, as no
    /// copy can be stored on it any more.
    pub(crate) broken: CancellationToken,
    /// The worker's: cancelled when a graceful stop's grace period is over.
    /// Running jobs are dropped then and handed back, and nothing waits any
    /// more for a copy the broker did not store.
    pub(crate) interrupt: CancellationToken,
    /// Runs the broker's consumer_timeout ended: recorded here, told to every worker.
    pub(crate) returns: Arc<Returns>,
    /// Where a batch's jobs' outcomes are recorded before their ack.
    pub(crate) outcomes: Outcomes,
    /// Where a unique job's key goes back as it ends (none in tests without a worker).
    pub(crate) releases: Option<Releases>,
}

impl Settler {
    /// Carries out `decision` for `d`.
    /// Whether the delivery was settled as decided (its copy stored, then
    /// acked); `false` when it was left, given back, or its channel is gone.
    pub(crate) async fn settle(&self, d: &Delivery<'_>, decision: Decision) -> bool {
        if let (Some(reply), Some(reply_to)) = (decision.reply(), d.meta.reply_to) {
            self.reply(d, reply_to, reply).await;
        }
        if let Some(kind) = decision.failure() {
            self.activity.failed(d.name(), kind);
        }
        // A batch's job that ended: its outcome is recorded before its ack.
        let outcome = d.meta.batch.and_then(|batch| Some((batch, decision.batch_outcome()?)));
        let (message, destination, what) = match &decision {
            Decision::Ack { .. } | Decision::Answer { .. } => {
                if self.recorded(d, outcome).await {
                    // Its key goes back only once it is acked: a job whose ack
                    // failed runs again, and holds its key meanwhile.
                    if self.ack(d).await {
                        self.release(d);
                    }
                    return true;
                }
                return false;
            }
            Decision::Continue { next } => (next.message(), next.destination(), "chain's next step"),
            Decision::Leave => return false,
            // Nothing to publish: the consumer holds it and runs it again.
            Decision::Hold { kind, error, attempt, delay } => {
                self.activity.retried(d.name());
                info!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = attempt - 1, %kind, reason = error, retry_in = ?delay, "job failed; retried in place (an ordered type's shard waits for it)");
                return false;
            }
            Decision::Abandon { after, reason, timeout } => {
                self.abandoned(d, *after, reason, *timeout).await;
                return false;
            }
            Decision::HandBack { interrupted, .. } => {
                let interrupted = i64::try_from(*interrupted).unwrap_or(i64::MAX);
                let message = self.copy(d).header(headers::INTERRUPTED, FieldValue::l(interrupted));
                (message, Destination::direct(d.queue), "hand-back")
            }
            Decision::Unstarted => (self.copy(d), Destination::direct(d.queue), "hand-back of a job not started"),
            Decision::Move { queue } => (self.copy(d), Destination::direct(queue), "move to its own queue or shard"),
            Decision::Wait { delay, rate_limited } => {
                let mut message = self.copy(d);
                if let Some(n) = rate_limited {
                    message =
                        message.header(headers::RATE_LIMITED, FieldValue::l(i64::try_from(*n).unwrap_or(i64::MAX)));
                }
                match Destination::to_queue(self.topology, d.queue, Some(*delay)) {
                    Ok(destination) => (message, destination, "wait for its rate"),
                    Err(err) => {
                        self.give_back(d, "wait for its rate", &err).await;
                        return false;
                    }
                }
            }
            Decision::Retry { kind, error, attempt, delay } => {
                let message = self.copy(d).failure(&self.failure(*kind, error)).attempt(*attempt);
                match Destination::to_queue(self.topology, d.queue, Some(*delay)) {
                    Ok(destination) => (message, destination, "retry"),
                    // The worker checked its queue names at start: not seen, but not a panic either.
                    Err(err) => {
                        self.give_back(d, "retry", &err).await;
                        return false;
                    }
                }
            }
            Decision::Dead { kind, reason, attempt, .. } => {
                // The attempt it ended on, said even for a first attempt (which goes without).
                let mut message = self.copy(d).failure(&self.failure(*kind, reason)).attempt(*attempt);
                // Its last word on how far it got stays with it.
                if let Some((done, text)) = d.progress.get() {
                    let per_mille = (f64::from(done) * 1000.0).round() as i64;
                    message = message
                        .header(headers::PROGRESS, FieldValue::l(per_mille))
                        .header(headers::PROGRESS_TEXT, FieldValue::from(text.as_str()));
                }
                (message, Destination::dead(d.queue), "dead-lettered")
            }
            Decision::Requeue { crashes, consumer_timeout } => {
                let crashes = i64::try_from(*crashes).unwrap_or(i64::MAX);
                let mut message = self.copy(d).header(headers::CRASHES, FieldValue::l(crashes));
                if let Some(ms) = consumer_timeout {
                    message = message
                        .header(headers::CONSUMER_TIMEOUT, FieldValue::l(i64::try_from(*ms).unwrap_or(i64::MAX)));
                }
                (message, Destination::direct(d.queue), "crash requeue")
            }
        };
        // A dead job is not queued: its key is free once it is acked (`dead retry` takes it again).
        let release = matches!(decision, Decision::Dead { .. });
        if !self.forward(d, message, &destination, what, outcome, release).await {
            return false;
        }
        match decision {
            Decision::Retry { kind, error, attempt, delay } => {
                self.activity.retried(d.name());
                let failed = attempt - 1;
                if kind == FailureKind::UnknownType {
                    if self.unknown.first_in_a_minute(d.name()) {
                        warn!(queue = d.queue, job.name = d.name(), "no job type of this name in this worker: retrying such jobs with the default backoff, so that a worker that knows the type runs them (a newer deploy?); this line comes at most once a minute per type");
                    }
                    debug!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = failed, retry_in = ?delay, "unknown job type; retry scheduled");
                } else {
                    info!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = failed, %kind, reason = error, retry_in = ?delay, "job failed; retry scheduled");
                }
            }
            Decision::Dead { kind, reason, .. } => {
                self.activity.dead(d.name(), kind);
                warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), %kind, reason, "dead-lettered");
            }
            Decision::Requeue { crashes, consumer_timeout: None } => {
                warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), crashes, "job came back unacked (its worker died or lost the broker); requeued");
            }
            Decision::Requeue { crashes, consumer_timeout: Some(ms) } => {
                warn!(queue = d.queue, job.id = %d.id(), job.name = d.name(), crashes, consumer_timeout = %policy::timeout_words(ms), "job came back: the broker's consumer_timeout ended its run; requeued, counted as a crash");
            }
            Decision::Continue { next } => {
                debug!(queue = d.queue, job.id = %d.id(), job.name = d.name(), next.id = %next.id, next.name = next.name, next.queue = next.queue, "chain step done; its next step is enqueued");
            }
            Decision::Wait { delay, rate_limited } => {
                if rate_limited.is_some() {
                    // Said by the job itself: counted here (the worker's own waits at the dispatch).
                    self.activity.rate_limited(d.name());
                }
                debug!(queue = d.queue, job.id = %d.id(), job.name = d.name(), wait = ?delay, ?rate_limited, "over a rate: waits for its turn in the delay cascade");
            }
            Decision::Move { queue } => {
                debug!(from = d.queue, to = queue, job.id = %d.id(), job.name = d.name(), "moved to its own queue (a limited type's, where its slots are) or its key's shard (an ordered type's)");
            }
            Decision::HandBack { interrupted, after } => {
                self.activity.interrupted(d.name());
                info!(queue = d.queue, job.id = %d.id(), job.name = d.name(), attempt = d.meta.attempt, interrupted, ran_for = ?after, "the grace period ended before the job did: handed back to its queue, to run again from the start on the next worker (not counted as a failure or a crash)");
            }
            Decision::Unstarted => {
                debug!(queue = d.queue, job.id = %d.id(), job.name = d.name(), "a job that waited and did not start is back in its queue");
            }
            Decision::Ack { .. }
            | Decision::Answer { .. }
            | Decision::Hold { .. }
            | Decision::Leave
            | Decision::Abandon { .. } => {}
        }
        true
    }

    /// Gives a unique job's key back (it ended and was acked: done, or dead).
    fn release(&self, d: &Delivery<'_>) {
        if let (Some((key, token)), Some(releases)) = (d.meta.unique, &self.releases) {
            releases.release(key, token, d.id());
        }
    }

    /// The broker closed the channel of a running job, which was dropped:
    /// nothing to settle (the broker hands it out again). Said once, at
    /// ERROR, with what to change; a `consumer_timeout` is recorded for every worker.
    async fn abandoned(&self, d: &Delivery<'_>, after: Duration, reason: &str, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return error!(queue = d.queue, job.id = %d.id(), job.name = d.name(), ran_for = ?after, reason, "the broker closed the channel of a running job; the job was cancelled (the broker hands it out again, counted as a crash)");
        };
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        error!(
            queue = d.queue,
            job.id = %d.id(),
            job.name = d.name(),
            ran_for = ?after,
            consumer_timeout = %policy::timeout_words(ms),
            "the broker's consumer_timeout ended the job: it ran longer than the broker lets a delivery go unacknowledged, so the broker closed its channel and hands it out again; the job was cancelled here (it never runs twice at once), and comes back counted as a crash. Fix: raise consumer_timeout above the longest job timeout (rabbitmq.conf `consumer_timeout = <ms>`; per queue from RabbitMQ 3.12: the `x-consumer-timeout` argument or a `consumer-timeout` policy), or make the job shorter"
        );
        self.returns.record(&self.publisher, d.id(), d.queue, timeout, &self.worker).await;
    }

    /// A copy of the delivery, saying where it came from.
    fn copy(&self, d: &Delivery<'_>) -> Message {
        Message::copy(d.props, d.body.to_vec(), d.id().clone()).origin(d.origin)
    }

    fn failure<'a>(&'a self, kind: FailureKind, reason: &'a str) -> Failure<'a> {
        Failure { kind, reason, worker: &self.worker, host: &self.host }
    }

    /// Acks a delivery whose job is done (its copy stored, if any); whether
    /// the ack went. A shard's consumer that is leaving is cancelled first.
    async fn ack(&self, d: &Delivery<'_>) -> bool {
        if let Some(leaving) = d.leaving {
            leaving.before_ack(d.channel).await;
        }
        match d.channel.basic_ack(BasicAckArguments::new(d.tag, false)).await {
            Ok(()) => true,
            Err(err) => {
                // The channel is gone: the broker hands the job out again (at-least-once).
                error!(error = %err, "could not ack a settled job; it will be delivered again");
                false
            }
        }
    }

    /// Sends a call's answer to its caller (direct reply-to). A caller that gave
    /// up is no error: its answer is dropped.
    async fn reply(&self, d: &Delivery<'_>, reply_to: &str, reply: &Reply) {
        let id = d.id();
        let correlation = d.props.correlation_id().map_or(id.as_str(), String::as_str);
        let answer = Message::answer(id.clone(), correlation, reply.status, reply.body.clone());
        if let Err(err) = self.publisher.publish(answer.into_outgoing(&Destination::direct(reply_to))).await {
            debug!(job.id = %id, error = %err, "the caller is gone; answer dropped");
        }
    }

    /// Records a batch's job's outcome (`(batch, succeeded)`), when it has
    /// one, the delivery held: tried again after 1, 2, 4 and 8 s (a stream
    /// electing its leader), then the delivery is given back (it runs again,
    /// and its outcome is recorded then). Returns whether it may be acked.
    async fn recorded(&self, d: &Delivery<'_>, outcome: Option<(&str, bool)>) -> bool {
        const TRIES: u32 = 5;
        let Some((batch, ok)) = outcome else { return true };
        let mut tries = 0;
        loop {
            let reason = match self.outcomes.record(batch, d.id(), ok, d.queue).await {
                Ok(()) => return true,
                Err(reason) => reason,
            };
            tries += 1;
            if tries >= TRIES || self.interrupt.is_cancelled() || !d.channel.is_open() {
                let err = jobs_core::Error::QueueRead { queue: jobs_core::BATCHES.name().into(), reason };
                self.give_back(d, "batch outcome", &err).await;
                return false;
            }
            let pause = Duration::from_secs(1 << (tries - 1));
            warn!(queue = d.queue, job.id = %d.id(), batch, error = %reason, retry_in = ?pause, "the batch's record did not store this job's outcome; recording it again (the job is held meanwhile)");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.interrupt.cancelled() => {}
            }
        }
    }

    /// Publishes the copy, waits for the confirm, records a batch's job's
    /// outcome, then acks. A copy not stored is published again as the
    /// policy says, the delivery held, and at last the delivery is given
    /// back. Returns whether it was stored (and its outcome recorded).
    /// `release`: a unique job's key goes back once the delivery is acked.
    async fn forward(
        &self,
        d: &Delivery<'_>,
        message: Message,
        destination: &Destination,
        what: &str,
        outcome: Option<(&str, bool)>,
        release: bool,
    ) -> bool {
        let outgoing = message.into_outgoing(destination);
        let mut tries = 0;
        loop {
            let err = match self.publisher.publish(outgoing.clone()).await {
                Ok(()) => {
                    if !self.recorded(d, outcome).await {
                        return false;
                    }
                    if self.ack(d).await && release {
                        self.release(d);
                    }
                    return true;
                }
                Err(err) => err,
            };
            tries += 1;
            if !self.publisher.is_open() {
                // Every copy of this session would fail now: end the session.
                self.broken.cancel();
            }
            // Only a copy the broker said it did not store is sent again.
            let said_no = matches!(err, jobs_core::Error::Nacked { .. } | jobs_core::Error::Unroutable { .. });
            let refused = said_no && self.publisher.is_open() && d.channel.is_open();
            match policy::unstored(tries, refused, self.interrupt.is_cancelled()) {
                Unstored::Again { pause } => {
                    warn!(queue = d.queue, job.id = %d.id(), error = %jobs_core::report(&err), what, retry_in = ?pause, tries, "the broker did not store the job's copy; publishing it again (the job is held meanwhile)");
                    // A stop's end waits for nothing: the delivery goes back then.
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.interrupt.cancelled() => {}
                    }
                }
                Unstored::GiveBack => {
                    self.give_back(d, what, &err).await;
                    return false;
                }
            }
        }
    }

    /// The copy of a decision was not stored: the delivery goes back to its
    /// queue, and will come back counted as a crash.
    async fn give_back(&self, d: &Delivery<'_>, what: &str, err: &jobs_core::Error) {
        error!(queue = d.queue, job.id = %d.id(), error = %jobs_core::report(err), what, "could not store the job's copy; returning it to its queue");
        if let Err(err) = d.channel.basic_reject(BasicRejectArguments::new(d.tag, true)).await {
            error!(error = %err, "could not return the job; the broker will when the channel closes");
        }
    }
}

/// Remembers when each name was last reported, to say a thing at most once a
/// minute per name (a rolling deploy can bring thousands of jobs of a type
/// the old workers do not know).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// Whether `name` was not reported in the last minute; if so, it is now.
    pub(crate) fn first_in_a_minute(&self, name: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(name) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                // Names come from messages: forget those said over a minute ago
                // before the map grows past a thousand.
                if last.len() >= 1000 {
                    last.retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
                }
                last.insert(name.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_name_is_reported_at_most_once_a_minute() {
        let throttle = Throttle::default();
        assert!(throttle.first_in_a_minute("NewJob"));
        assert!(!throttle.first_in_a_minute("NewJob"));
        assert!(throttle.first_in_a_minute("OtherJob"), "per name");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!throttle.first_in_a_minute("NewJob"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(throttle.first_in_a_minute("NewJob"));
        assert!(!throttle.first_in_a_minute("NewJob"));
    }

    #[tokio::test(start_paused = true)]
    async fn names_said_over_a_minute_ago_are_forgotten_past_a_thousand() {
        let throttle = Throttle::default();
        for n in 0..1000 {
            assert!(throttle.first_in_a_minute(&format!("Bogus{n}")));
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(throttle.first_in_a_minute("Another"));
        assert_eq!(throttle.last.lock().unwrap().len(), 1, "the stale names went");
        assert!(!throttle.first_in_a_minute("Another"));
    }
}
