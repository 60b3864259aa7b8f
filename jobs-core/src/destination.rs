//! Where a job goes: one resolution of a job type and its [`EnqueueOptions`]
//! into the exchange, routing key and what must be declared first. Every way
//! of enqueueing (one job, a batch, a call, the process-wide shortcuts) and the
//! testing mode's recorder go through it, so they accept and refuse the same
//! things and send a job to the same place.

use std::time::Duration;

use crate::topology::{self, ExchangeKind, Topology};
use crate::{EnqueueOptions, Error, Job, Route};

/// What must exist on the broker before a publish can be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Declare {
    /// The job queue and `<queue>.dead`; with `delayed`, the delay cascade and
    /// the queue's binding to its delivery exchange too.
    Queue { queue: String, delayed: bool },
    /// The exchange and `<exchange>.dead`.
    Exchange { name: &'static str, kind: ExchangeKind },
}

/// Where one job message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The exchange to publish to (`""`: the default exchange).
    pub(crate) exchange: String,
    /// The routing key.
    pub(crate) routing_key: String,
    /// What to declare before publishing.
    pub(crate) declare: Declare,
    /// The delay asked for, rounded up to whole seconds as the cascade holds it.
    pub(crate) delay: Option<Duration>,
}

impl Destination {
    /// Resolves job type `J` with `options` in `topology`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for options that do not apply to the job type's
    /// route (a routing key for a queue-routed type; a queue or a delay for an
    /// exchange-routed one); [`Error::InvalidName`] for a queue the broker
    /// cannot take.
    pub(crate) fn resolve<J: Job>(options: &EnqueueOptions, topology: Topology) -> Result<Self, Error> {
        match J::ROUTE {
            Route::Queue => {
                if options.routing_key.is_some() {
                    return Err(Error::Unsupported(
                        "a routing key is for jobs routed through an exchange; this job type goes to a queue (use EnqueueOptions::queue)",
                    ));
                }
                let queue = options.queue.as_deref().unwrap_or(J::QUEUE);
                topology::validate_queue_name(queue)?;
                let delay = options.resolved_delay().filter(|d| !d.is_zero());
                let (exchange, routing_key) = delay
                    .and_then(|delay| topology.delay_route(delay, queue))
                    .unwrap_or_else(|| (String::new(), queue.to_owned()));
                Ok(Destination {
                    exchange,
                    routing_key,
                    declare: Declare::Queue { queue: queue.to_owned(), delayed: delay.is_some() },
                    delay: delay.map(topology::whole_seconds),
                })
            }
            Route::Exchange { name, kind } => {
                if options.queue.is_some() || options.delay.is_some() || options.at.is_some() {
                    return Err(Error::Unsupported(
                        "queue overrides and delays are for jobs that go to a queue; this job type goes through an exchange to the workers subscribed now",
                    ));
                }
                Ok(Destination {
                    exchange: name.to_owned(),
                    routing_key: options.routing_key.clone().unwrap_or_default(),
                    declare: Declare::Exchange { name, kind },
                    delay: None,
                })
            }
        }
    }

    /// The queue a queue-routed job waits in, or the exchange of a routed one.
    pub(crate) fn target(&self) -> &str {
        match &self.declare {
            Declare::Queue { queue, .. } => queue,
            Declare::Exchange { name, .. } => name,
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
        assert_eq!(d.declare, Declare::Queue { queue: "dest_mail".into(), delayed: false });

        let options = EnqueueOptions::new().queue("other").delay(Duration::from_millis(1500));
        let d = Destination::resolve::<Mail>(&options, classic()).unwrap();
        assert_eq!(d.exchange, "jobs.delay.01");
        assert!(d.routing_key.ends_with(".1.0.other"), "{}", d.routing_key);
        assert_eq!((d.target(), d.delay), ("other", Some(Duration::from_secs(2))));
        assert_eq!(d.declare, Declare::Queue { queue: "other".into(), delayed: true });

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
        assert_eq!(d.declare, Declare::Exchange { name: "dest_logs", kind: ExchangeKind::Topic });
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
