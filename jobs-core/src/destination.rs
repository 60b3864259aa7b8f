//! Where a message goes: one resolution of a job type and its
//! [`EnqueueOptions`] into the exchange, routing key and what must be declared
//! first, and the same for every copy the framework sends (a retry through
//! the delay cascade, a dead letter, a crash requeue, a revived dead job, an
//! answer, a heartbeat). Every way of enqueueing (one job, a batch, a call,
//! the process-wide shortcuts, the admin command) and the testing mode's
//! recorder go through it, so they accept and refuse the same things and send
//! a job to the same place; a delay is routed in one place, [`Destination::to_queue`].

use std::time::Duration;

use crate::topology::{self, ExchangeKind, Topology};
use crate::{EnqueueOptions, Error, Job, Route};

/// What must exist on the broker before a publish can be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Declare {
    /// The job queue and `<queue>.dead`; with `delayed`, the delay cascade and
    /// the queue's binding to its delivery exchange too.
    /// With `shards` above 0, the queue's shard queues too (an ordered type's).
    Queue { queue: String, delayed: bool, shards: u16 },
    /// The exchange and `<exchange>.dead`.
    Exchange { name: String, kind: ExchangeKind },
    /// A journal's stream (the record of batches).
    Journal(crate::journal::Journal),
    /// Nothing: what the message goes to exists already (a worker's copies go
    /// where it declared at start; a reply queue is the broker's own).
    Nothing,
}

/// Where one message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The exchange to publish to (`""`: the default exchange).
    pub(crate) exchange: String,
    /// The routing key.
    pub(crate) routing_key: String,
    /// What to declare before publishing.
    pub(crate) declare: Declare,
    /// The delay asked for, rounded up to whole seconds as the cascade holds it.
    pub(crate) delay: Option<Duration>,
    /// The job's priority (0–9), for a queue that takes priorities.
    pub(crate) priority: Option<u8>,
    /// An ordered type's: each job goes to its key's shard of the queue the
    /// routing key names ([`Destination::routing_key_of`]).
    pub(crate) ordered: Option<crate::Ordered>,
}

/// What a job type says about where its jobs go: its name, queue and route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobRoute<'a> {
    /// The job type's name.
    pub(crate) name: &'a str,
    /// Its queue.
    pub(crate) queue: &'a str,
    /// Its route.
    pub(crate) route: Route,
    /// Its default priority (`#[job(priority = 7)]`).
    pub(crate) priority: Option<u8>,
    /// Its key and shards (`#[job(ordered_by = "..")]`).
    pub(crate) ordered: Option<crate::Ordered>,
}

impl JobRoute<'static> {
    /// Job type `J`'s.
    pub(crate) fn of<J: Job>() -> Self {
        JobRoute {
            name: J::NAME,
            queue: J::QUEUE,
            route: J::ROUTE,
            priority: J::PRIORITY,
            ordered: crate::Ordered::of::<J>(),
        }
    }

    /// The registered type's.
    pub(crate) fn registered(registration: &'static crate::plumbing::Registration) -> Self {
        JobRoute {
            name: registration.name(),
            queue: registration.queue(),
            route: registration.route(),
            priority: registration.priority(),
            ordered: registration.ordered(),
        }
    }
}

/// Whether job `job` may go to `queue` with `priority`: 0 to 9, to a classic
/// queue that takes priorities.
fn check_priority(job: &str, queue: &str, priority: u8, topology: Topology) -> Result<(), Error> {
    let refuse = |reason: String| Err(Error::Priority { job: job.to_owned(), reason });
    if priority > topology::MAX_PRIORITY {
        return refuse(format!(
            "priority {priority}: a priority is from 0 to {} (the highest runs first)",
            topology::MAX_PRIORITY
        ));
    }
    if topology.queue_type() == topology::QueueType::Quorum {
        return refuse(format!(
            "priority {priority}: RabbitMQ 3.10 quorum queues (amqp.queue_type = \"quorum\") have no priorities; give urgent jobs a queue of their own and weigh it (worker.queue_weights, docs/job-control.md)"
        ));
    }
    if !crate::registry::queue_has_priorities(queue) {
        return refuse(format!(
            "priority {priority}: queue `{queue}` takes no priorities; mark its job types #[job(priorities)] (docs/job-control.md)"
        ));
    }
    Ok(())
}

impl Destination {
    /// Resolves job type `J` with `options` in `topology`.
    ///
    /// # Errors
    /// As [`Destination::resolve_for`].
    pub(crate) fn resolve<J: Job>(options: &EnqueueOptions, topology: Topology) -> Result<Self, Error> {
        Self::resolve_for(JobRoute::of::<J>(), options, topology)
    }

    /// Resolves a job type's route with `options` in `topology`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for options that do not apply to the job type's
    /// route (a routing key for a queue-routed type; a queue or a delay for an
    /// exchange-routed one); [`Error::InvalidName`] for a queue the broker
    /// cannot take.
    pub(crate) fn resolve_for(job: JobRoute<'_>, options: &EnqueueOptions, topology: Topology) -> Result<Self, Error> {
        match job.route {
            Route::Queue => {
                if options.routing_key.is_some() {
                    return Err(Error::Unsupported(
                        "a routing key is for jobs routed through an exchange; this job type goes to a queue (use EnqueueOptions::queue)",
                    ));
                }
                if job.ordered.is_some() && options.queue.as_deref().is_some_and(|q| q != job.queue) {
                    return Err(Error::Unsupported(
                        "another queue for an ordered type (#[job(ordered_by)]): its jobs keep their order in its own queue's shards",
                    ));
                }
                if let Some(Err(why)) = job.ordered.map(|o| o.check()) {
                    return Err(Error::Unsupported(why));
                }
                if job.ordered.is_some() && options.priority.is_some_and(|p| p > 0) {
                    return Err(Error::Unsupported(
                        "a priority for an ordered type (#[job(ordered_by)]): it would pass the key's earlier jobs",
                    ));
                }
                let queue = options.queue.as_deref().unwrap_or(job.queue);
                let mut destination = Destination::to_queue(topology, queue, options.resolved_delay())?;
                destination.declare = Declare::Queue {
                    queue: queue.to_owned(),
                    delayed: destination.delay.is_some(),
                    shards: job.ordered.map_or(0, |o| o.shards),
                };
                // Now: to its key's shard. Delayed: to the queue when due,
                // whose worker moves it to its shard (it joins its key's line then).
                destination.ordered = job.ordered.filter(|_| destination.delay.is_none());
                destination.priority = match options.priority.or(job.priority) {
                    // The default: fine on any queue, and sent as none where none are taken.
                    Some(0)
                        if topology.queue_type() == topology::QueueType::Quorum
                            || !crate::registry::queue_has_priorities(queue) =>
                    {
                        None
                    }
                    Some(priority) => {
                        check_priority(job.name, queue, priority, topology)?;
                        Some(priority)
                    }
                    None => None,
                };
                Ok(destination)
            }
            Route::Exchange { name, kind } => {
                if options.queue.is_some() || options.delay.is_some() || options.at.is_some() {
                    return Err(Error::Unsupported(
                        "queue overrides and delays are for jobs that go to a queue; this job type goes through an exchange to the workers subscribed now",
                    ));
                }
                if options.priority.is_some() {
                    return Err(Error::Unsupported(
                        "a priority is for jobs that wait in a queue; this job type goes through an exchange to the workers subscribed now",
                    ));
                }
                Ok(Destination {
                    exchange: name.to_owned(),
                    routing_key: options.routing_key.clone().unwrap_or_default(),
                    declare: Declare::Exchange { name: name.to_owned(), kind },
                    delay: None,
                    priority: None,
                    ordered: None,
                })
            }
        }
    }

    /// Job queue `queue`, now or after `delay` (through the delay cascade of
    /// `topology`; a zero delay is none); declares nothing.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a queue the broker cannot take.
    pub fn to_queue(topology: Topology, queue: &str, delay: Option<Duration>) -> Result<Self, Error> {
        topology::validate_queue_name(queue)?;
        let delay = delay.filter(|d| !d.is_zero());
        let (exchange, routing_key) = delay
            .and_then(|delay| topology.delay_route(delay, queue))
            .unwrap_or_else(|| (String::new(), queue.to_owned()));
        Ok(Destination {
            exchange,
            routing_key,
            declare: Declare::Nothing,
            delay: delay.map(topology::whole_seconds),
            priority: None,
            ordered: None,
        })
    }

    /// Queue `queue` by the default exchange, now: a dead-letter queue, a
    /// stream, a caller's reply queue. Declares nothing.
    pub fn direct(queue: &str) -> Self {
        Destination {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            declare: Declare::Nothing,
            delay: None,
            priority: None,
            ordered: None,
        }
    }

    /// The dead-letter queue of `queue` (`<queue>.dead`).
    pub fn dead(queue: &str) -> Self {
        Destination::direct(&topology::dead_queue(queue))
    }

    /// Exchange `name` with `routing_key` (a revived broadcast or routed
    /// job); declares nothing: the exchange the job came from exists.
    pub fn exchange(name: &str, routing_key: &str) -> Self {
        Destination {
            exchange: name.to_owned(),
            routing_key: routing_key.to_owned(),
            declare: Declare::Nothing,
            delay: None,
            priority: None,
            ordered: None,
        }
    }

    /// The routing key of the job encoded in `body`: its key's shard for an
    /// ordered type's job, else the destination's.
    pub(crate) fn routing_key_of(&self, body: &[u8]) -> String {
        match &self.ordered {
            Some(ordered) => ordered.shard_queue(&self.routing_key, body),
            None => self.routing_key.clone(),
        }
    }

    /// The queue a queue-routed job waits in, or the exchange of a routed one.
    pub(crate) fn target(&self) -> &str {
        match &self.declare {
            Declare::Queue { queue, .. } => queue,
            Declare::Exchange { name, .. } => name,
            Declare::Journal(journal) => journal.name(),
            Declare::Nothing if self.exchange.is_empty() => &self.routing_key,
            Declare::Nothing => &self.exchange,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueType;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, crate::Job)]
    #[job(queue = "dest_mail")]
    struct Mail;

    #[derive(Serialize, Deserialize, crate::Job)]
    #[job(exchange = "dest_logs", exchange_type = "topic")]
    struct Topic;

    impl crate::Perform for Mail {
        async fn perform(self, _: crate::JobContext) -> Result<(), crate::JobError> {
            Ok(())
        }
    }

    impl crate::Perform for Topic {
        async fn perform(self, _: crate::JobContext) -> Result<(), crate::JobError> {
            Ok(())
        }
    }

    fn classic() -> Topology {
        Topology::new(QueueType::Classic, 3)
    }

    #[test]
    fn queue_jobs_go_to_their_queue_or_through_the_cascade() {
        let d = Destination::resolve::<Mail>(&EnqueueOptions::new(), classic()).unwrap();
        assert_eq!((d.exchange.as_str(), d.routing_key.as_str(), d.delay), ("", "dest_mail", None));
        assert_eq!(d.declare, Declare::Queue { queue: "dest_mail".into(), delayed: false, shards: 0 });

        let options = EnqueueOptions::new().queue("other").delay(Duration::from_millis(1500));
        let d = Destination::resolve::<Mail>(&options, classic()).unwrap();
        assert_eq!(d.exchange, "jobs.delay.01");
        assert!(d.routing_key.ends_with(".1.0.other"), "{}", d.routing_key);
        assert_eq!((d.target(), d.delay), ("other", Some(Duration::from_secs(2))));
        assert_eq!(d.declare, Declare::Queue { queue: "other".into(), delayed: true, shards: 0 });

        let quorum = Destination::resolve::<Mail>(&options, Topology::new(QueueType::Quorum, 3)).unwrap();
        assert_eq!(quorum.exchange, "jobs.delay.quorum.01");

        let past = EnqueueOptions::new().at(std::time::SystemTime::now() - Duration::from_secs(5));
        let d = Destination::resolve::<Mail>(&past, classic()).unwrap();
        assert_eq!((d.exchange.as_str(), d.delay), ("", None), "a time past runs now");
    }

    #[test]
    fn routed_jobs_go_to_their_exchange_with_the_key() {
        let d = Destination::resolve::<Topic>(&EnqueueOptions::new().routing_key("kern.critical"), classic()).unwrap();
        assert_eq!(
            (d.exchange.as_str(), d.routing_key.as_str(), d.target()),
            ("dest_logs", "kern.critical", "dest_logs")
        );
        assert_eq!(d.declare, Declare::Exchange { name: "dest_logs".into(), kind: ExchangeKind::Topic });
    }

    #[test]
    fn copies_go_to_queues_with_their_delay_routed_one_way() {
        let now = Destination::to_queue(classic(), "q", None).unwrap();
        assert_eq!((now.exchange.as_str(), now.routing_key.as_str(), now.delay), ("", "q", None));
        let zero = Destination::to_queue(classic(), "q", Some(Duration::ZERO)).unwrap();
        assert_eq!(zero, now, "a zero delay is none");
        let later = Destination::to_queue(classic(), "q", Some(Duration::from_millis(2500))).unwrap();
        assert_eq!((later.exchange.as_str(), later.delay), ("jobs.delay.01", Some(Duration::from_secs(3))));
        let by_type = Destination::resolve::<Mail>(
            &EnqueueOptions::new().queue("q").delay(Duration::from_millis(2500)),
            classic(),
        )
        .unwrap();
        assert_eq!((by_type.exchange, by_type.routing_key), (later.exchange, later.routing_key), "one delay route");
        assert_eq!(Destination::dead("q").routing_key, "q.dead");
        assert_eq!(Destination::dead("q").target(), "q.dead");
        let back = Destination::exchange("logs", "kern.critical");
        assert_eq!(
            (back.exchange.as_str(), back.routing_key.as_str(), back.target()),
            ("logs", "kern.critical", "logs")
        );
        assert!(matches!(Destination::to_queue(classic(), "amq.q", None), Err(Error::InvalidName { .. })));
    }

    #[test]
    fn options_that_do_not_fit_the_route_are_refused() {
        let refused = |r: Result<Destination, Error>| matches!(r, Err(Error::Unsupported(_)));
        assert!(refused(Destination::resolve::<Mail>(&EnqueueOptions::new().routing_key("k"), classic())));
        assert!(refused(Destination::resolve::<Topic>(&EnqueueOptions::new().queue("q"), classic())));
        assert!(refused(Destination::resolve::<Topic>(
            &EnqueueOptions::new().delay(Duration::from_secs(1)),
            classic()
        )));
        let at = EnqueueOptions::new().at(std::time::SystemTime::now());
        assert!(refused(Destination::resolve::<Topic>(&at, classic())));
        assert!(matches!(
            Destination::resolve::<Mail>(&EnqueueOptions::new().queue("amq.x"), classic()),
            Err(Error::InvalidName { .. })
        ));
    }
}
