//! From a delivery to what happened when it ran ([`Ran`]): find the job type,
//! decode, run `perform` under the job type's timeout, inside a span, catching
//! a panic. Facts only: what then happens to the delivery is the policy's
//! decision (`policy.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobs_core::plumbing::Registration;
use jobs_core::{ExchangeKind, JobContext, Route};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::activity::Activity;
use crate::delivery::Meta;
use crate::limits::{Gate, Gates};
use crate::placement::{Outcome, Placement};
use crate::policy::{Home, Ran, Schedule};
use crate::rates::{Admit, RateLimit};
use crate::{Error, Subscription};

/// The job types this worker runs, by name.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    table: HashMap<&'static str, &'static Registration>,
    /// The limited types' slots (`max_running`).
    gates: Gates,
    /// The rate-limited types' rates.
    rates: HashMap<&'static str, Arc<RateLimit>>,
    /// The turns of the weighted queues (`worker.queue_weights`).
    weights: Option<crate::weights::Weights>,
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
        Ok(Dispatcher { table, gates: Gates::new(), rates: HashMap::new(), weights: None })
    }

    /// With the global limits of the types: their `#[job(max_running)]`,
    /// `#[job(rate, burst, rate_key)]`, and over them `[[limits]]`.
    ///
    /// # Errors
    /// A `[[limits]]` entry naming no type of the worker, or a bad value
    /// (named `limits.<n>.<key>`); [`Error::SharedLimitedQueue`] when a
    /// limited type's queue is another type's too.
    pub(crate) fn with_limits(
        mut self,
        limits: &[crate::LimitConfig],
        consumer_timeout: Duration,
    ) -> Result<Self, Error> {
        let mut max: HashMap<&'static str, u16> =
            self.table.values().filter_map(|r| r.max_running().map(|n| (r.name(), n))).collect();
        let mut rates: HashMap<&'static str, (jobs_core::Rate, Option<u32>, Option<&'static str>)> = self
            .table
            .values()
            .filter_map(|r| r.rate().map(|rate| (r.name(), (rate, r.burst(), r.rate_key()))))
            .collect();
        for (n, limit) in limits.iter().enumerate() {
            let bad = |key: &str, message: String| {
                Error::Core(jobs_core::Error::Config { key: format!("limits.{n}.{key}"), message })
            };
            let Some(registration) = self.table.get(limit.job.as_str()) else {
                let known: Vec<&str> = self.types().iter().map(|r| r.name()).collect();
                return Err(bad(
                    "job",
                    format!("no job type `{}` in this worker (it has: {})", limit.job, known.join(", ")),
                ));
            };
            let name = registration.name();
            if limit.max_running.is_none() && limit.rate.is_none() && limit.burst.is_none() && limit.rate_key.is_none()
            {
                return Err(bad(
                    "max_running",
                    "set max_running, rate, or both (remove the entry for no limit)".into(),
                ));
            }
            if let Some(n) = limit.max_running {
                if n == 0 {
                    return Err(bad("max_running", "must be at least 1 (remove the entry for no limit)".into()));
                }
                max.insert(name, n);
            }
            // Each key given here over the derive's; the others stay the derive's.
            let derived = rates.get(name).copied();
            let rate = match &limit.rate {
                Some(text) => Some(jobs_core::Rate::parse(text).map_err(|message| bad("rate", message))?),
                None => derived.map(|(rate, _, _)| rate),
            };
            let Some(rate) = rate else {
                let key = if limit.burst.is_some() { "burst" } else { "rate_key" };
                if limit.burst.is_some() || limit.rate_key.is_some() {
                    return Err(bad(
                        key,
                        format!("needs a rate (`rate = \"100/s\"` here, or `#[job(rate)]` on `{name}`)"),
                    ));
                }
                continue;
            };
            if limit.burst == Some(0) {
                return Err(bad("burst", "must be at least 1 (leave it out for the rate's count)".into()));
            }
            let burst = limit.burst.or(derived.and_then(|(_, burst, _)| burst));
            let key = match limit.rate_key.as_deref() {
                Some(field) => {
                    let fields = registration.fields();
                    if !fields.is_empty() && !fields.contains(&field) {
                        return Err(bad(
                            "rate_key",
                            format!("`{name}` has no field `{field}` (it has: {})", fields.join(", ")),
                        ));
                    }
                    // Leaked once per entry at start: the key lives as long as the worker.
                    Some(&*Box::leak(field.to_owned().into_boxed_str()))
                }
                None => derived.and_then(|(_, _, key)| key),
            };
            rates.insert(name, (rate, burst, key));
        }
        let mut limited: Vec<&'static str> = max.keys().chain(rates.keys()).copied().collect();
        limited.sort_unstable();
        limited.dedup();
        for &name in &limited {
            let registration = self.table[name];
            let refuse = |message: String| Err(Error::Core(jobs_core::Error::Config { key: "limits".into(), message }));
            if registration.ordered().is_some() {
                return refuse(format!("`{name}` is #[job(ordered_by)]: it runs one job per shard at a time already, and a limit's or a rate's wait would let the key's later jobs pass (docs/job-control.md)"));
            }
            if let Some(&limit) = max.get(name) {
                if registration.blocking() {
                    return refuse(format!("`{name}` is #[job(blocking)]: a blocking run past its timeout keeps its thread, so its slot could not be given back; limit it with a non-blocking type, or drop max_running"));
                }
                if crate::limits::slot_queue(name, limit - 1).len() > 255 {
                    return refuse(format!(
                        "`{name}` is too long a name for its slot queues (jobs.limit.<name>.<n>, at most 255 bytes)"
                    ));
                }
            }
            if rates.contains_key(name) && crate::rates::leader_queue(name).len() > 255 {
                return refuse(format!(
                    "`{name}` is too long a name for its rate queues (jobs.rate.<name>.leader, at most 255 bytes)"
                ));
            }
            if registration.route() != Route::Queue {
                return refuse(format!(
                    "`{name}` goes through an exchange (every subscriber runs it): only a queue's jobs can be limited"
                ));
            }
            let mut sharing: Vec<&str> = self
                .table
                .values()
                .filter(|r| r.queue() == registration.queue() && r.name() != name)
                .map(|r| r.name())
                .collect();
            if !sharing.is_empty() {
                sharing.sort_unstable();
                return Err(Error::SharedLimitedQueue {
                    queue: registration.queue().to_owned(),
                    limited: name,
                    others: sharing.join(", "),
                });
            }
            if let Some(&limit) = max.get(name) {
                self.gates.insert(name, Arc::new(Gate::new(name, limit)));
            }
            if let Some(&(rate, burst, key)) = rates.get(name) {
                let burst = burst.unwrap_or(rate.count());
                self.rates.insert(name, Arc::new(RateLimit::new(name, (rate, burst, key), consumer_timeout)));
            }
        }
        Ok(self)
    }

    /// Refuses job types that say `#[job(priorities)]` on quorum queues
    /// (RabbitMQ 3.10's have none), and types sharing a queue that disagree
    /// on priorities (the queue is declared one way).
    ///
    /// # Errors
    /// [`Error::QuorumPriorities`], [`Error::MixedPriorities`].
    pub(crate) fn check_priorities(self, queue_type: jobs_core::QueueType) -> Result<Self, Error> {
        let types = self.types();
        let with: Vec<&str> = types.iter().filter(|r| r.priorities()).map(|r| r.name()).collect();
        if with.is_empty() {
            return Ok(self);
        }
        if queue_type == jobs_core::QueueType::Quorum {
            return Err(Error::QuorumPriorities { types: with.join(", ") });
        }
        for queue in self.queues() {
            let on: Vec<&Registration> =
                types.iter().copied().filter(|r| r.route() == Route::Queue && r.queue() == queue).collect();
            let (with, without): (Vec<&Registration>, Vec<&Registration>) = on.iter().partition(|r| r.priorities());
            if !with.is_empty() && !without.is_empty() {
                let names = |list: &[&Registration]| list.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ");
                return Err(Error::MixedPriorities { queue, with: names(&with), without: names(&without) });
            }
        }
        Ok(self)
    }

    /// With `weights` sharing `concurrency` turns between their queues, a
    /// delivery waiting for one `max_wait` at most.
    pub(crate) fn with_weights(mut self, weights: &[(String, u16)], concurrency: u16, max_wait: Duration) -> Self {
        if !weights.is_empty() {
            self.weights = Some(crate::weights::Weights::new(weights, concurrency, max_wait));
        }
        self
    }

    /// The turns of the weighted queues, if any.
    pub(crate) fn weights(&self) -> Option<&crate::weights::Weights> {
        self.weights.as_ref()
    }

    /// The rate-limited types' limits.
    pub(crate) fn rates(&self) -> &HashMap<&'static str, Arc<RateLimit>> {
        &self.rates
    }

    /// The rate limit of the type whose own queue is `queue`.
    pub(crate) fn rate_of_queue(&self, queue: &str) -> Option<&Arc<RateLimit>> {
        self.rates.iter().find(|(name, _)| self.table[*name].queue() == queue).map(|(_, rate)| rate)
    }

    /// The limited types' gates.
    pub(crate) fn gates(&self) -> &Gates {
        &self.gates
    }

    /// The own queues of the limited types (by `max_running` or a rate).
    pub(crate) fn limited_queues(&self) -> Vec<&'static str> {
        let mut queues: Vec<&'static str> =
            self.gates.keys().chain(self.rates.keys()).map(|name| self.table[name].queue()).collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }

    /// The gate of the limited type whose own queue is `queue`.
    pub(crate) fn gate_of_queue(&self, queue: &str) -> Option<&Arc<Gate>> {
        self.gates.iter().find(|(name, _)| self.table[*name].queue() == queue).map(|(_, gate)| gate)
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

    /// The timeout of job type `name`, if this worker knows it.
    pub(crate) fn timeout_of(&self, name: &str) -> Option<Duration> {
        self.table.get(name).map(|r| r.timeout())
    }

    /// The queues of ordered types, each with what its types say of its
    /// shards (types sharing a queue agree, [`Dispatcher::check_ordered`]).
    pub(crate) fn shards(&self) -> Vec<(String, jobs_core::Ordered)> {
        let mut shards: Vec<(String, jobs_core::Ordered)> =
            self.table.values().filter_map(|r| Some((r.queue().to_owned(), r.ordered()?))).collect();
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        shards.dedup_by(|a, b| a.0 == b.0);
        shards
    }

    /// Refuses ordered types sharing a queue with different shard counts
    /// (a queue's shards are declared once, and keys must hash alike).
    ///
    /// # Errors
    /// [`Error::MixedShards`]; [`Error::BadOrdered`] for a shard count out of
    /// range, a blocking type, or one routed through an exchange.
    pub(crate) fn check_ordered(self) -> Result<Self, Error> {
        for registration in self.table.values() {
            let Some(ordered) = registration.ordered() else { continue };
            let job = registration.name();
            if let Err(reason) = ordered.check() {
                return Err(Error::BadOrdered { job, reason });
            }
            if registration.blocking() {
                return Err(Error::BadOrdered {
                    job,
                    reason: "it blocks its thread (#[job(blocking)]): such a run cannot be dropped when its shard must go to another worker",
                });
            }
            if registration.route() != Route::Queue {
                return Err(Error::BadOrdered { job, reason: "only a queue's jobs keep an order" });
            }
        }
        for (queue, _) in self.shards() {
            let mut on: Vec<(&str, u16)> = self
                .table
                .values()
                .filter(|r| r.queue() == queue)
                .filter_map(|r| Some((r.name(), r.ordered()?.shards)))
                .collect();
            on.sort_unstable();
            if on.iter().any(|(_, n)| *n != on[0].1) {
                let types = on.iter().map(|(name, n)| format!("{name} (shards = {n})")).collect::<Vec<_>>().join(", ");
                return Err(Error::MixedShards { queue, types });
            }
        }
        Ok(self)
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
    /// channel first (RabbitMQ's `consumer_timeout`); only those of `queue`, when given.
    pub(crate) fn check_timeouts(&self, consumer_timeout: Duration, queue: Option<&str>) {
        for registration in self.table.values().filter(|r| queue.map_or(true, |q| r.queue() == q)) {
            if registration.timeout() >= consumer_timeout {
                warn!(
                    job.name = registration.name(),
                    timeout = ?registration.timeout(),
                    ?consumer_timeout,
                    "job timeout is not below the broker's consumer_timeout: a run that long makes the broker close the channel and hand the job out again (the worker cancels it then); raise consumer_timeout above it, or lower the job's timeout"
                );
            }
        }
    }

    /// Decodes and runs one delivery of job type `name` at `place`, and says what happened.
    pub(crate) async fn run(&self, name: &str, meta: &Meta<'_>, body: &[u8], place: Place<'_>) -> Ran {
        let Place { queue, worker, activity, end, placement, client, cancels, progress, waiting, home } = place;
        // Worth nothing past its deadline: not run (before any turn or slot is taken).
        if let Some(late) = meta.expired(jobs_core::plumbing::events::now_ms()) {
            return Ran::Expired { late };
        }
        let registration = self.table.get(name);
        // An ordered type's job runs only from its key's shard: one from
        // elsewhere (a revived dead job, a delayed one come due, a producer
        // that does not shard) joins its key's line there.
        if let (Some(ordered), true) = (registration.and_then(|r| r.ordered()), home != Home::Shard) {
            let queue = registration.map_or(&**queue, |r| r.queue());
            return Ran::Elsewhere { queue: ordered.shard_queue(queue, body) };
        }
        // A weighted queue's delivery waits for its turn first (a turn is
        // this worker's own; a rate's token or a slot is every worker's).
        // A shard's jobs have a consumer of their own, and take no turn.
        let weights = self.weights.as_ref().filter(|_| home != Home::Shard);
        let _turn = match weights {
            Some(weights) => match weights.turn(queue, end, waiting).await {
                // Given while its consumer ended: it does not start now.
                Ok(_) if waiting.is_cancelled() => return Ran::NotStarted,
                Ok(turn) => turn,
                Err(()) => return Ran::NotStarted,
            },
            None => None,
        };
        let gate = self.gates.get(name);
        let rate = self.rates.get(name);
        if let (true, Some(registration)) = (gate.is_some() || rate.is_some(), registration) {
            if **queue != *registration.queue() {
                // Only its own queue's prefetch follows the slots held.
                return Ran::Elsewhere { queue: registration.queue().to_owned() };
            }
        }
        // Its turn first, then a slot (a slot is not held idle waiting for a turn).
        if let Some(rate) = rate {
            match rate.admit(body, end).await {
                Admit::Go { held_back } => {
                    if held_back {
                        activity.rate_limited(name);
                    }
                }
                Admit::Wait(delay) => {
                    activity.rate_limited(name);
                    return Ran::OverRate { delay };
                }
                Admit::Stopped => return Ran::Interrupted { after: Duration::ZERO },
            }
        }
        // Taken before the slot: a loss of the slots after this ends the run.
        let lost = gate.map(|gate| gate.lost());
        // A limited type starts once a slot it holds is free; the wait is in
        // no attempt's time. Ended by a stop, or the slots lost, meanwhile: handed back.
        let _slot = match (gate, &lost) {
            (Some(gate), Some(lost)) => tokio::select! {
                entry = gate.enter() => Some(entry),
                _ = end.cancelled() => return Ran::Interrupted { after: Duration::ZERO },
                _ = lost.cancelled() => return Ran::Interrupted { after: Duration::ZERO },
            },
            _ => None,
        };
        // Its deadline passed while it waited for its turn or a slot: not run.
        if let Some(late) = meta.expired(jobs_core::plumbing::events::now_ms()) {
            return Ran::Expired { late };
        }
        // Cancelled before it came up (or while it waited for a slot): not run.
        let run = match cancels.start(&meta.id, end, jobs_core::plumbing::events::now_ms()) {
            Ok(run) => run,
            Err(request) => return Ran::Cancelled { by: request.by, running: false, dropped: false },
        };
        let Some(registration) = registration else {
            return Ran::UnknownType;
        };
        if let Some(lost) = lost {
            // Losing the slots under it ends the run: handed back.
            let kill = run.kill.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = lost.cancelled() => kill.cancel(),
                    _ = kill.cancelled() => {}
                }
            });
        }
        let ctx = JobContext::new(meta.id.clone(), registration.name(), queue.clone(), meta.attempt, worker.clone())
            .with_cancel(run.cancel.clone())
            .with_enqueued_at(meta.enqueued_at)
            .with_interrupted_runs(u32::try_from(meta.interrupted).unwrap_or(u32::MAX));
        let ctx = match &meta.chain {
            Some(Ok(chain)) => ctx.with_chain(chain.place(), meta.input.clone()),
            _ => ctx,
        };
        // A callback's outcome a producer mangled is none: the callback still runs.
        let outcome = meta.batch_outcome.as_deref().and_then(|bytes| jobs_core::plumbing::decode(bytes).ok());
        let ctx = ctx.with_batch(meta.batch.map(str::to_owned), outcome).with_progress(progress.clone());
        let future = match registration.prepare(body, ctx) {
            Ok(future) => future,
            Err(err) => return Ran::Undecodable { error: err.to_string() },
        };
        let span = info_span!("job", job.name = name, job.id = %meta.id, job.attempt = meta.attempt, queue = &**queue);
        let started = std::time::Instant::now();
        debug!(parent: &span, "job started");
        let future = match client {
            Some(client) => Box::pin(client.clone().scope(future)),
            None => future,
        };
        let future = future.instrument(span.clone());
        // The registration's name is `'static`: labels without an allocation per job.
        let job = registration.name();
        let noted = activity.started(job, &meta.id, queue, meta.attempt, progress);
        // Where it runs is the placement's to say; a stop's end, the
        // delivery's channel closing, or a cancel's grace running out ends it too.
        let outcome = placement.run(registration, future, &run.kill).await;
        let cancelled = run.cancelled_by();
        if let Outcome::Ended = outcome {
            drop(noted);
            debug!(parent: &span, elapsed_ms = started.elapsed().as_millis() as u64, "job ended early");
            return match cancelled {
                // Dropped after its grace, or by a stop while it was being cancelled.
                Some(by) => Ran::Cancelled { by, running: true, dropped: true },
                None => Ran::Interrupted { after: started.elapsed() },
            };
        }
        activity.ended(job, started.elapsed(), matches!(outcome, Outcome::Returned(Ok(_))) && cancelled.is_none());
        drop(noted);
        if let Some(by) = cancelled {
            // Whatever it returned: what it did is not what was asked for.
            debug!(parent: &span, by, "job cancelled while it ran");
            return Ran::Cancelled { by, running: true, dropped: false };
        }
        drop(run);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let schedule = Schedule { max_attempts: registration.max_attempts(), backoff: registration.backoff_fn() };
        let ran = match outcome {
            Outcome::Returned(Ok(reply)) => Ran::Returned { reply },
            Outcome::Returned(Err(error)) => Ran::Errored { error, schedule },
            Outcome::Panicked(message) => Ran::Panicked { message, schedule },
            // Dropped (or, blocking, left to run out).
            Outcome::TimedOut | Outcome::Ended => Ran::TimedOut { after: registration.timeout(), schedule },
        };
        debug!(parent: &span, elapsed_ms, returned = matches!(ran, Ran::Returned { .. }), "job ended");
        ran
    }
}

/// Where a job runs: its queue, its worker, where it is counted, and what
/// ends it early (a stop's grace period, the broker closing its channel).
#[derive(Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) queue: &'a Arc<str>,
    pub(crate) worker: &'a Arc<str>,
    pub(crate) activity: &'a Activity,
    pub(crate) end: &'a CancellationToken,
    pub(crate) placement: &'a Placement,
    /// The client the job enqueues on (scoped around it).
    pub(crate) client: Option<&'a jobs_core::Client>,
    /// The cancels this worker knows, and its running jobs they can reach.
    pub(crate) cancels: &'a crate::cancels::Cancels,
    /// Where the job says its progress.
    pub(crate) progress: &'a Arc<jobs_core::plumbing::ProgressCell>,
    /// What it was consumed from (an ordered type's job runs only from its shard).
    pub(crate) home: Home,
    /// Cancelled when its consumer ends or its queue is paused: a delivery
    /// still waiting to start then does not.
    pub(crate) waiting: &'a CancellationToken,
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs_core::{Job, Rate};

    #[derive(serde::Serialize, serde::Deserialize, jobs_core::Job)]
    #[job(queue = "dispatch_test_keyed", rate = "5/s", burst = 2, rate_key = "account")]
    struct Keyed {
        account: u64,
    }

    impl jobs_core::Perform for Keyed {
        async fn perform(self, _ctx: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {
            Ok(())
        }
    }

    fn rate_of(limit: crate::LimitConfig) -> Result<(Rate, u32, Option<&'static str>, Duration), String> {
        let registration = Keyed::__registration().unwrap();
        let dispatcher = Dispatcher::new([registration]).unwrap();
        let dispatcher = dispatcher.with_limits(&[limit], Duration::from_secs(90)).map_err(|e| e.to_string())?;
        let rate = &dispatcher.rates()["Keyed"];
        Ok((rate.rate, rate.burst, rate.key, rate.token_wait()))
    }

    #[test]
    fn a_limits_entry_replaces_only_the_keys_it_gives() {
        let entry = |rate: Option<&str>, burst, rate_key: Option<&str>| crate::LimitConfig {
            job: "Keyed".into(),
            rate: rate.map(str::to_owned),
            burst,
            rate_key: rate_key.map(str::to_owned),
            ..Default::default()
        };
        let per_second = |n| Rate::new(n, Duration::from_secs(1));
        let waits = Duration::from_secs(30);
        assert_eq!(
            rate_of(entry(Some("10/s"), None, None)),
            Ok((per_second(10), 2, Some("account"), waits)),
            "the derive's burst and key stay; a token is waited for a third of consumer_timeout at most"
        );
        assert_eq!(rate_of(entry(None, Some(7), None)), Ok((per_second(5), 7, Some("account"), waits)));
        let text = rate_of(entry(None, None, Some("acount"))).unwrap_err();
        assert!(text.contains("limits.0.rate_key") && text.contains("account"), "{text}");
    }
}
