//! A leader: one process at a time among any number, chosen by the broker.
//! The coordination primitive of "a leader" (`design.md`): a quorum queue
//! with `x-single-active-consumer`, which every candidate consumes; the broker
//! delivers to one consumer at a time and makes another active when that
//! one's channel or connection goes. No clocks compared between hosts.
//!
//! A consumer is not told that it became the active one, so the queue holds
//! a token: receiving one means "you lead", and the leader keeps it unacked
//! while it leads. Every candidate publishes a token when it starts and the
//! leader acks each one beyond the one it holds, so a token always exists and
//! extras vanish. A held delivery must not outlive the broker's
//! `consumer_timeout` (the broker would close the channel): the leader renews
//! its hold well within it, publishing a fresh token first and acking the old
//! one when the fresh one comes, never the other way round (a leader dying
//! in between would leave no token).
//!
//! A leader whose link went silent still holds the token as far as it knows,
//! until its connection is given up on (about two missed heartbeats, on both
//! sides); the broker makes another active at about that time. So a
//! candidate also asks the broker a question every probe interval on the
//! leadership's channel and keeps when the last answered one was sent: a
//! [`Hold`] whose answer is older than a fence well under the heartbeat
//! timeout is not to be acted on ([`Hold::holds`]). Each time a candidate
//! gets the token its hold's `term` grows, so that code acting for one lead
//! can tell a lead lost and won again from one held all along.

use std::time::Duration;

use tokio::time::Instant;

use amqprs::channel::{BasicAckArguments, BasicConsumeArguments, BasicQosArguments};
use amqprs::connection::Connection;
use amqprs::{FieldTable, FieldValue};
use tokio::sync::watch;

use crate::codec::set_header;
use crate::confirm::Publisher;
use crate::destination::Destination;
use crate::message::Message;
use crate::refusal::ChannelWatch;
use crate::topology::{declare_queue, Declarer};
use crate::{Error, JobId};

/// Returns of a token before a quorum queue would drop it: explicit, as the
/// default changes between broker versions (none before 4.0, 20 after).
const TOKEN_DELIVERY_LIMIT: i64 = 1_000_000;

/// The longest a candidate waits between two questions to the broker on its
/// leadership's channel (to know that its link carries frames both ways).
pub const LEADER_PROBE: Duration = Duration::from_secs(1);

/// What a candidate knows of its standing: whether it holds the token, and
/// when the broker last answered it on the leadership's channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    /// It holds the token.
    pub leading: bool,
    /// When the last question the broker answered was asked.
    pub heard: Option<Instant>,
    /// How many times this candidate got the token so far.
    pub term: u64,
}

impl Hold {
    /// Whether it leads and heard the broker within `fence`: only then may it act as leader.
    pub fn holds(&self, fence: Duration) -> bool {
        self.leading && self.heard.is_some_and(|at| at.elapsed() < fence)
    }

    /// [`Hold::holds`], in the lead of `term` (not a later one).
    pub fn holds_in(&self, term: u64, fence: Duration) -> bool {
        self.term == term && self.holds(fence)
    }
}

/// A leadership and the queue its token lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    name: &'static str,
}

impl Leader {
    /// The leadership whose token lives in queue `name` (`jobs.scheduler`).
    pub const fn new(name: &'static str) -> Self {
        Leader { name }
    }

    /// Its queue's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Declares its queue (idempotent): quorum, single active consumer.
    ///
    /// # Errors
    /// When the broker refuses it (a queue of that name with other arguments).
    pub async fn declare(&self, on: &Declarer) -> Result<(), Error> {
        let mut args = FieldTable::new();
        set_header(&mut args, "x-queue-type", FieldValue::from("quorum"));
        set_header(&mut args, "x-single-active-consumer", FieldValue::t(true));
        set_header(&mut args, "x-delivery-limit", FieldValue::l(TOKEN_DELIVERY_LIMIT));
        declare_queue(on, self.name, args).await
    }

    async fn token(&self, publisher: &Publisher) -> Result<(), Error> {
        let message = Message::job("token", JobId::new(), Vec::new());
        publisher.publish(message.into_outgoing(&Destination::direct(self.name))).await
    }

    /// Stands for leader on `connection` until its channel closes: sets
    /// `hold.leading` while this candidate holds the token, renewing the hold
    /// every `renew_every` (well within the broker's `consumer_timeout`), and
    /// `hold.heard` at each answer to a probe, one every `probe_every` (at most
    /// [`LEADER_PROBE`]). Publishes its token on
    /// `publisher`. Returns when the channel or connection goes (leading is
    /// then false); the caller stands again on a new connection.
    ///
    /// # Errors
    /// Why it stopped standing: the queue cannot be consumed, a token cannot
    /// be published, or the channel went.
    pub async fn campaign(
        &self,
        connection: &Connection,
        publisher: &Publisher,
        renew_every: Duration,
        probe_every: Duration,
        hold: &watch::Sender<Hold>,
    ) -> Result<(), Error> {
        let result = self.stand(connection, publisher, renew_every, probe_every.min(LEADER_PROBE), hold).await;
        hold.send_modify(|h| (h.leading, h.heard) = (false, None));
        result
    }

    async fn stand(
        &self,
        connection: &Connection,
        publisher: &Publisher,
        renew_every: Duration,
        probe_every: Duration,
        hold: &watch::Sender<Hold>,
    ) -> Result<(), Error> {
        let channel = connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        // Room for the held token and the extras that come to be acked.
        let qos = BasicQosArguments::new(0, 16, false);
        channel.basic_qos(qos.clone()).await.map_err(|e| watch.error("basic.qos", self.name, e))?;
        let args = BasicConsumeArguments::new(self.name, "").manual_ack(true).finish();
        let (_, mut rx) =
            channel.basic_consume_rx(args).await.map_err(|e| watch.error("basic.consume", self.name, e))?;
        self.token(publisher).await?;
        let mut held: Option<u64> = None;
        let mut renewing = false;
        let mut renew = tokio::time::interval(renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut probe = tokio::time::interval(probe_every);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        hold.send_modify(|h| h.heard = Some(Instant::now()));
        loop {
            tokio::select! {
                message = rx.recv() => {
                    let Some(message) = message else {
                        return Err(Error::QueueRead { queue: self.name.into(), reason: "its channel closed".into() });
                    };
                    let Some(deliver) = message.deliver else { continue };
                    let tag = deliver.delivery_tag();
                    let ack = match held {
                        None => {
                            held = Some(tag);
                            hold.send_modify(|h| (h.leading, h.heard, h.term) = (true, Some(Instant::now()), h.term + 1));
                            None
                        }
                        // The fresh token came: hold it, let the old one go.
                        Some(old) if renewing => {
                            held = Some(tag);
                            renewing = false;
                            Some(old)
                        }
                        // An extra token (a candidate that started): gone.
                        Some(_) => Some(tag),
                    };
                    if let Some(tag) = ack {
                        channel
                            .basic_ack(BasicAckArguments::new(tag, false))
                            .await
                            .map_err(|e| watch.error("basic.ack", self.name, e))?;
                    }
                }
                _ = renew.tick(), if held.is_some() && !renewing => {
                    renewing = true;
                    self.token(publisher).await?;
                }
                _ = probe.tick() => {
                    // A round trip (qos-ok): frames went both ways since it was
                    // asked. On a silent link it waits until the connection is
                    // given up on.
                    let asked = Instant::now();
                    channel.basic_qos(qos.clone()).await.map_err(|e| watch.error("basic.qos", self.name, e))?;
                    hold.send_modify(|h| h.heard = Some(asked));
                }
            }
        }
    }
}
