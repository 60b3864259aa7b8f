//! Publisher confirms: a channel in confirm mode and a tracker from each
//! publish's sequence number to the task waiting for the broker's answer.
//!
//! The broker numbers publishes on a confirm channel 1, 2, 3… in the order their
//! frames arrive. We take the next number and hand the publish to amqprs in
//! one task, so numbers follow wire order; callers wait for their confirm
//! apart from it, so concurrent publishes pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, Channel, ConfirmSelectArguments};
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::connection::ConnectionState;
use crate::refusal::{access_refused, Closure};
use crate::{Error, JobId};

/// How the broker settled one publish.
#[derive(Debug)]
pub(crate) enum Outcome {
    Confirmed,
    Nacked,
    /// `basic.return`, then ack: the exchange and routing key no queue matched.
    Returned {
        exchange: String,
        routing_key: String,
    },
    Closed(Arc<ClosedBy>),
}

/// Why a publishing channel is gone.
#[derive(Debug)]
pub(crate) struct ClosedBy {
    reason: String,
    /// What the broker said, when it closed the channel itself.
    closure: Option<Closure>,
}

struct Waiter {
    id: JobId,
    /// Counts the answers its batch heard: a batch's confirm timeout is this standing still.
    heard: Option<Arc<AtomicU64>>,
    /// Set by `basic.return`: where the broker found no queue.
    returned: Option<(String, String)>,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    /// The sequence number the next publish gets.
    next_seq: u64,
    pending: BTreeMap<u64, Waiter>,
    /// Set once the channel is gone; later publishes fail at once.
    closed: Option<Arc<ClosedBy>>,
}

#[derive(Default)]
struct Tracker {
    state: Mutex<State>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the map consistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, tag: u64, multiple: bool, acked: bool) {
        let settled: Vec<Waiter> = {
            let mut state = self.lock();
            if multiple {
                let rest = state.pending.split_off(&(tag + 1));
                std::mem::replace(&mut state.pending, rest).into_values().collect()
            } else {
                state.pending.remove(&tag).into_iter().collect()
            }
        };
        for waiter in settled {
            if let Some(heard) = &waiter.heard {
                heard.fetch_add(1, Ordering::Relaxed);
            }
            let outcome = match (acked, waiter.returned) {
                (true, None) => Outcome::Confirmed,
                (true, Some((exchange, routing_key))) => Outcome::Returned { exchange, routing_key },
                (false, _) => Outcome::Nacked,
            };
            // The waiter may have timed out and gone: nothing to tell.
            let _ = waiter.tx.send(outcome);
        }
    }

    fn returned(&self, message_id: Option<&String>, exchange: &str, routing_key: &str) {
        let mut state = self.lock();
        let found = message_id.and_then(|id| state.pending.values_mut().find(|w| w.id.as_str() == id.as_str()));
        match found {
            Some(waiter) => waiter.returned = Some((exchange.to_owned(), routing_key.to_owned())),
            None => {
                warn!(message_id = ?message_id, "a returned message matches no pending publish")
            }
        }
    }

    fn close(&self, reason: &str, closure: Option<Closure>) {
        let (reason, pending) = {
            let mut state = self.lock();
            // The first reason stays: it is the cause, later ones are its echoes.
            let closed = ClosedBy { reason: reason.to_owned(), closure };
            let reason = state.closed.get_or_insert_with(|| Arc::new(closed)).clone();
            (reason, std::mem::take(&mut state.pending))
        };
        for waiter in pending.into_values() {
            let _ = waiter.tx.send(Outcome::Closed(reason.clone()));
        }
    }
}

/// The channel callback: feeds acks, nacks, returns and closes into the tracker.
/// amqprs drops it when the channel's dispatcher ends (channel or connection
/// gone), which fails every waiter still pending.
struct Callback(Arc<Tracker>);

impl Drop for Callback {
    fn drop(&mut self) {
        self.0.close("channel closed", None);
    }
}

#[async_trait::async_trait]
impl ChannelCallback for Callback {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        warn!(reason = %close, "RabbitMQ closed the publishing channel");
        self.0.close(&close.to_string(), Some(Closure::of_channel(&close)));
        Ok(())
    }

    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &Channel, _active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.0.settle(ack.delivery_tag(), ack.mutiple(), true);
    }

    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        self.0.settle(nack.delivery_tag(), nack.multiple(), false);
    }

    async fn publish_return(&mut self, _channel: &Channel, ret: Return, props: BasicProperties, _content: Vec<u8>) {
        self.0.returned(props.message_id(), ret.exchange(), ret.routing_key());
    }
}

/// One message to publish: where to, its properties (with `message_id` set) and body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message's id; must equal the `message_id` property.
    pub id: JobId,
    /// The exchange ("" for the default exchange).
    pub exchange: String,
    /// The routing key (for the default exchange: the queue).
    pub routing_key: String,
    /// AMQP properties.
    pub properties: BasicProperties,
    /// The body.
    pub body: Vec<u8>,
}

/// A channel in confirm mode whose publishes return only once confirmed.
///
/// Every publish is `mandatory`: a message no queue takes is an error
/// ([`Error::Unroutable`]), not a silent drop.
pub struct Publisher {
    channel: Channel,
    tracker: Arc<Tracker>,
    /// Whether the connection is blocked, when known.
    connection_state: Option<Arc<ConnectionState>>,
    /// To the task that numbers publishes and hands them to amqprs, in order.
    sender: mpsc::UnboundedSender<Vec<Queued>>,
    timeout: Duration,
}

/// A message waiting for the sending task, and where its outcome goes.
type Queued = (Outgoing, oneshot::Sender<Outcome>, Option<Arc<AtomicU64>>);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("channel", &self.channel.channel_id()).finish()
    }
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    ///
    /// # Errors
    /// [`Error::Amqp`] when the channel cannot be opened or set up.
    pub async fn open(connection: &Connection, timeout: Duration) -> Result<Self, Error> {
        let channel = connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let tracker = Arc::new(Tracker { state: Mutex::new(State { next_seq: 1, ..State::default() }) });
        channel.register_callback(Callback(tracker.clone())).await.map_err(Error::amqp("channel.register_callback"))?;
        channel.confirm_select(ConfirmSelectArguments::new(false)).await.map_err(Error::amqp("confirm.select"))?;
        let (sender, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(channel.clone(), tracker.clone(), queue));
        Ok(Publisher { channel, tracker, connection_state: None, sender, timeout })
    }

    /// Reads the connection's state (blocked publishers) from `state`, so that
    /// a confirm that does not come while the broker blocks publishers is
    /// [`Error::Blocked`], not a plain timeout.
    #[must_use]
    pub fn watching(mut self, state: Arc<ConnectionState>) -> Self {
        self.connection_state = Some(state);
        self
    }

    /// The underlying channel (for declarations).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether the channel can still publish.
    pub fn is_open(&self) -> bool {
        self.channel.is_open() && self.tracker.lock().closed.is_none()
    }

    /// Publishes one message and waits for the broker's confirm, at most
    /// `amqp.confirm_timeout`.
    ///
    /// # Errors
    /// [`Error::Nacked`], [`Error::Unroutable`], [`Error::Closed`] or
    /// [`Error::ConfirmTimeout`]: in every case the caller must treat the
    /// message as not stored.
    pub async fn publish(&self, message: Outgoing) -> Result<(), Error> {
        let sent = Sent::of(&message);
        let rx = self.send_all(vec![message], None).await?.pop();
        match rx {
            Some(rx) => self.wait(sent, rx, None).await,
            None => Ok(()),
        }
    }

    /// Publishes many messages back to back, then waits for all their confirms.
    /// Returns one result per message, in order. The confirm timeout is a
    /// silence: it passes when no confirm of the batch comes for that long,
    /// however long the whole batch takes; the messages still unanswered then
    /// fail with it at once.
    ///
    /// # Errors
    /// The outer error when the channel fails before every message was handed
    /// over ([`Error::Closed`]), or a message cannot be sent at all
    /// ([`Error::InvalidName`]): then none was sent.
    pub async fn publish_many(&self, messages: Vec<Outgoing>) -> Result<Vec<Result<(), Error>>, Error> {
        let sent: Vec<Sent> = messages.iter().map(Sent::of).collect();
        let heard = Arc::new(AtomicU64::new(0));
        let receivers = self.send_all(messages, Some(heard.clone())).await?;
        let mut results = Vec::with_capacity(receivers.len());
        let mut silent = false;
        for (sent, mut rx) in sent.into_iter().zip(receivers) {
            let result = if silent {
                let id = sent.id.clone();
                self.answered(&sent, &mut rx).unwrap_or_else(|| Err(self.timeout_error(id)))
            } else {
                self.wait(sent, rx, Some(&heard)).await
            };
            silent |= matches!(result, Err(Error::ConfirmTimeout { .. } | Error::Blocked { .. }));
            results.push(result);
        }
        if silent {
            self.forget_abandoned();
        }
        Ok(results)
    }

    /// Queues the messages for the sending task. One task sends, so sequence
    /// numbers follow wire order without a lock that concurrent enqueuers
    /// would queue on (that lock convoy halved concurrent enqueue throughput).
    /// `heard` counts the answers to them (a batch's progress).
    pub(crate) async fn send_all(
        &self,
        messages: Vec<Outgoing>,
        heard: Option<Arc<AtomicU64>>,
    ) -> Result<Vec<oneshot::Receiver<Outcome>>, Error> {
        let mut batch = Vec::with_capacity(messages.len());
        let mut receivers = Vec::with_capacity(messages.len());
        for message in messages {
            validate_name(&message.exchange)?;
            validate_name(&message.routing_key)?;
            validate_name(message.id.as_str())?;
            let (tx, rx) = oneshot::channel();
            batch.push((message, tx, heard.clone()));
            receivers.push(rx);
        }
        if let Err(mpsc::error::SendError(batch)) = self.sender.send(batch) {
            let id = batch.into_iter().next().map(|(m, _, _)| m.id).unwrap_or_default();
            return Err(Error::Closed { id, reason: "publisher stopped".into() });
        }
        Ok(receivers)
    }

    /// Waits for the broker's answer to one publish: at most
    /// `amqp.confirm_timeout`, or, with the batch's `heard` count, until the
    /// batch has heard no answer for that long.
    pub(crate) async fn wait(
        &self,
        sent: Sent,
        mut rx: oneshot::Receiver<Outcome>,
        heard: Option<&AtomicU64>,
    ) -> Result<(), Error> {
        loop {
            let before = heard.map(|h| h.load(Ordering::Relaxed));
            match tokio::time::timeout(self.timeout, &mut rx).await {
                Ok(outcome) => return sent.outcome(outcome),
                Err(_) if before.is_some() && before != heard.map(|h| h.load(Ordering::Relaxed)) => continue,
                Err(_) => {
                    drop(rx);
                    self.forget_abandoned();
                    return Err(self.timeout_error(sent.id));
                }
            }
        }
    }

    /// The answer to a publish if it has come, without waiting; `None` if not yet.
    pub(crate) fn answered(&self, sent: &Sent, rx: &mut oneshot::Receiver<Outcome>) -> Option<Result<(), Error>> {
        match rx.try_recv() {
            Ok(outcome) => Some(sent.clone().outcome(Ok::<_, ()>(outcome))),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(sent.clone().outcome(Err(()))),
        }
    }

    /// Forgets every waiter whose receiver is gone (its caller gave up), so
    /// that answers that never come hold nothing (ids need not be unique, receivers are).
    pub(crate) fn forget_abandoned(&self) {
        self.tracker.lock().pending.retain(|_, w| !w.tx.is_closed());
    }

    /// The error of a confirm that did not come in time.
    pub(crate) fn timeout_error(&self, id: JobId) -> Error {
        match self.connection_state.as_ref().and_then(|s| s.blocked()) {
            Some(reason) => Error::Blocked { id, reason, after: self.timeout },
            None => Error::ConfirmTimeout { id, after: self.timeout },
        }
    }

    /// Closes the channel.
    pub async fn close(self) {
        let _ = self.channel.close().await;
    }
}

/// What a waiter needs to know of its message to say why it failed.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) id: JobId,
    exchange: String,
    size: usize,
}

impl Sent {
    pub(crate) fn of(message: &Outgoing) -> Self {
        Sent { id: message.id.clone(), exchange: message.exchange.clone(), size: message.body.len() }
    }

    /// The result the broker's answer gives (`Err`: the tracker went without one).
    fn outcome(self, answer: Result<Outcome, impl Sized>) -> Result<(), Error> {
        let Sent { id, exchange, size } = self;
        match answer {
            Ok(Outcome::Confirmed) => Ok(()),
            Ok(Outcome::Nacked) => Err(Error::Nacked { id }),
            Ok(Outcome::Returned { exchange, routing_key }) => Err(Error::Unroutable { id, exchange, routing_key }),
            Ok(Outcome::Closed(closed)) => Err(closed_error(id, &exchange, size, &closed)),
            Err(_) => Err(Error::Closed { id, reason: "confirm tracker dropped".into() }),
        }
    }
}

/// The error of a message whose channel closed before its confirm. The broker
/// closes a channel for one message's fault (a body over its size limit, a
/// publish the user may not make); that message, and those that share the
/// fault, are refused for good. The others on the channel were innocent
/// bystanders: [`Error::Closed`], which the client publishes again.
fn closed_error(id: JobId, exchange: &str, size: usize, closed: &ClosedBy) -> Error {
    let Some(closure) = &closed.closure else {
        return Error::Closed { id, reason: closed.reason.clone() };
    };
    let number_after = |words: &str| -> Option<usize> {
        let rest = closure.text.split(words).nth(1)?.trim_start();
        rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
    };
    if closure.code == 406 {
        if let Some(max) = number_after("configured max size") {
            if size > max {
                return Error::MessageRefused { id, detail: closure.text.clone() };
            }
        }
    }
    // A publish to an exchange that does not exist (deleted since it was
    // declared): every copy to it is refused alike.
    if closure.code == 404 && closure.text.contains(&format!("no exchange '{exchange}'")) {
        return Error::MessageRefused { id, detail: closure.text.clone() };
    }
    if closure.code == 403 {
        let target = if exchange.is_empty() { "amq.default" } else { exchange };
        if closure.text.contains(&format!("access to exchange '{target}'")) {
            return access_refused("basic.publish", closure);
        }
    }
    Error::Closed { id, reason: closure.to_string() }
}

/// Numbers each publish and hands it to amqprs, in arrival order.
async fn send_loop(channel: Channel, tracker: Arc<Tracker>, mut queue: mpsc::UnboundedReceiver<Vec<Queued>>) {
    while let Some(batch) = queue.recv().await {
        for (message, tx, heard) in batch {
            {
                let mut state = tracker.lock();
                if let Some(closed) = &state.closed {
                    let _ = tx.send(Outcome::Closed(closed.clone()));
                    continue;
                }
                let seq = state.next_seq;
                state.next_seq += 1;
                state.pending.insert(seq, Waiter { id: message.id.clone(), heard, returned: None, tx });
            }
            let mut args = BasicPublishArguments::new(&message.exchange, &message.routing_key);
            args.mandatory(true);
            if let Err(err) = channel.basic_publish(message.properties, message.body, args).await {
                // Fails this message's waiter (still pending) and every later one.
                tracker.close(&format!("publish failed: {err}"), None);
            }
        }
    }
}

/// amqprs panics on short strings (names, message ids) over 255 bytes; refuse them first.
pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    if name.len() > 255 {
        return Err(Error::InvalidName { name: name.to_owned(), reason: "longer than 255 bytes" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker_with(n: u64) -> (Arc<Tracker>, Vec<oneshot::Receiver<Outcome>>) {
        let tracker = Arc::new(Tracker::default());
        let mut rxs = Vec::new();
        for seq in 1..=n {
            let (tx, rx) = oneshot::channel();
            tracker
                .lock()
                .pending
                .insert(seq, Waiter { id: JobId::from(format!("m{seq}").as_str()), heard: None, returned: None, tx });
            rxs.push(rx);
        }
        (tracker, rxs)
    }

    #[test]
    fn multiple_ack_settles_every_tag_up_to_it() {
        let (tracker, mut rxs) = tracker_with(4);
        tracker.settle(3, true, true);
        for rx in rxs.iter_mut().take(3) {
            assert!(matches!(rx.try_recv(), Ok(Outcome::Confirmed)));
        }
        assert!(rxs[3].try_recv().is_err());
        tracker.settle(4, false, false);
        assert!(matches!(rxs[3].try_recv(), Ok(Outcome::Nacked)));
    }

    #[test]
    fn a_return_then_ack_is_unroutable() {
        let (tracker, mut rxs) = tracker_with(2);
        tracker.returned(Some(&"m2".to_string()), "", "nowhere");
        tracker.settle(2, true, true);
        assert!(matches!(rxs[0].try_recv(), Ok(Outcome::Confirmed)));
        assert!(matches!(rxs[1].try_recv(), Ok(Outcome::Returned { routing_key, .. }) if routing_key == "nowhere"));
    }

    #[test]
    fn dropping_the_callback_fails_every_waiter() {
        let (tracker, mut rxs) = tracker_with(2);
        drop(Callback(tracker.clone()));
        for rx in &mut rxs {
            assert!(matches!(rx.try_recv(), Ok(Outcome::Closed(_))));
        }
        assert!(tracker.lock().closed.is_some());
    }

    #[test]
    fn a_closed_channel_refuses_the_message_at_fault_and_frees_the_others() {
        let closed =
            |code, text: &str| ClosedBy { reason: text.into(), closure: Some(Closure { code, text: text.into() }) };
        let size = closed(406, "PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576");
        assert!(matches!(closed_error(JobId::from("big"), "", 2_097_152, &size), Error::MessageRefused { .. }));
        assert!(matches!(closed_error(JobId::from("small"), "", 100, &size), Error::Closed { .. }), "a bystander");
        let write = closed(403, "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'v' refused for user 'u'");
        assert!(matches!(
            closed_error(JobId::from("a"), "", 10, &write),
            Error::AccessRefused { permission: "`write`", .. }
        ));
        assert!(matches!(closed_error(JobId::from("b"), "logs", 10, &write), Error::Closed { .. }));
        let lost = ClosedBy { reason: "channel closed".into(), closure: None };
        assert!(matches!(closed_error(JobId::from("c"), "", 10, &lost), Error::Closed { .. }));
        let gone = closed(404, "NOT_FOUND - no exchange 'logs' in vhost 'v'");
        assert!(matches!(closed_error(JobId::from("d"), "logs", 10, &gone), Error::MessageRefused { .. }));
        assert!(matches!(closed_error(JobId::from("e"), "other", 10, &gone), Error::Closed { .. }), "a bystander");
    }

    #[test]
    fn long_names_are_refused_not_panicked_on() {
        assert!(validate_name(&"q".repeat(256)).is_err());
        assert!(validate_name(&"q".repeat(255)).is_ok());
    }
}
