//! The publish window: jobs published in batches through a window of
//! unconfirmed messages, the one publish path of every enqueue (a single job
//! is a batch of one). (Workflow batches, with callbacks, are another thing.)
//!
//! A batch encodes each job as it goes out, keeps at most [`WINDOW`] messages
//! waiting for their confirms, and forgets each one once confirmed, so its
//! memory is the window's, not the batch's: a million jobs take what four
//! thousand do. Its confirm timeout is a silence, not a total: it passes when
//! the channel hears no confirm for `amqp.confirm_timeout`, however long the
//! batch runs. A message whose connection went before its confirm is sent
//! again on a new one (it may be stored twice: at-least-once), while the
//! broker can be reached again within `amqp.reconnect_timeout` of the loss.
//! Any other failure stops the batch; [`BatchIncomplete`] then says which jobs
//! are confirmed, which are not, and where sending stopped.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

use crate::confirm::{Outcome, Outgoing, Sent};
use crate::destination::Destination;
use crate::message::Message;
use crate::session::Session;
use crate::{codec, Client, Error, Job, JobId};

/// Messages a batch keeps waiting for their confirms at most.
pub(crate) const WINDOW: usize = 4096;
/// Messages handed to the sending task at once.
const CHUNK: usize = 256;

/// A batch that stopped before every job in it was confirmed
/// ([`Error::BatchIncomplete`]): which jobs are stored, which may be, and
/// where sending stopped, so that a caller sends again only those.
///
/// Jobs are numbered by their place in the batch, from 0. Every job before
/// [`taken`](Self::taken) that is not listed in
/// [`unconfirmed`](Self::unconfirmed) is confirmed: stored. Each job listed
/// there was sent (or refused before sending: see `error`), and the broker's
/// answer did not come: it may be stored or not. No job from `taken` on was
/// sent.
///
/// ```no_run
/// # use jobs_core::{Client, Error, Job, JobContext, JobError, Perform};
/// # #[derive(Clone, serde::Serialize, serde::Deserialize, Job)]
/// # struct Email { to: String }
/// # impl Perform for Email {
/// #     async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) }
/// # }
/// # async fn load(client: &Client, jobs: Vec<Email>) -> Result<(), Error> {
/// match client.enqueue_many(&jobs).await {
///     Ok(ids) => println!("{} stored", ids.len()),
///     Err(Error::BatchIncomplete(stopped)) => {
///         println!("{} stored, then: {}", stopped.confirmed(), stopped.error);
///         // Send again what may be missing: unconfirmed jobs (each may be
///         // stored twice then), and every job from `taken` on.
///         let again: Vec<Email> = stopped
///             .unconfirmed_indices()
///             .chain(stopped.taken..jobs.len())
///             .map(|i| jobs[i].clone())
///             .collect();
///         client.enqueue_many(&again).await?;
///     }
///     // Nothing was sent (a connection that never came, a bad option).
///     Err(other) => return Err(other),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchIncomplete {
    /// Jobs taken from the batch: `0..taken`. None from here on was sent.
    pub taken: usize,
    /// Jobs before `taken` whose confirm did not come (their place in the
    /// batch and id), in order: each may be stored or not.
    pub unconfirmed: Vec<(usize, JobId)>,
    /// Why the batch stopped.
    pub error: Error,
}

impl BatchIncomplete {
    /// How many jobs are confirmed: stored.
    pub fn confirmed(&self) -> usize {
        self.taken - self.unconfirmed.len()
    }

    /// Whether job `index` of the batch is confirmed.
    pub fn is_confirmed(&self, index: usize) -> bool {
        index < self.taken && self.unconfirmed.binary_search_by_key(&index, |(i, _)| *i).is_err()
    }

    /// The places of the unconfirmed jobs, in order.
    pub fn unconfirmed_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.unconfirmed.iter().map(|(i, _)| *i)
    }
}

impl fmt::Display for BatchIncomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a batch stopped after {} of its jobs: {} confirmed, {} not confirmed (each may be stored), none after job {} sent: {}",
            self.taken,
            self.confirmed(),
            self.unconfirmed.len(),
            self.taken,
            self.error
        )
    }
}

impl std::error::Error for BatchIncomplete {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Where a batch's messages come from.
pub(crate) trait Source {
    /// The next job: its id, and its message or why it has none; `None` at the end.
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)>;

    /// Job `index` again, to send it again after a lost connection; `None`
    /// when the source cannot make it again (an iterator): then the batch
    /// keeps a copy of each message until it is confirmed.
    fn again(&mut self, index: usize) -> Option<Outgoing>;
}

/// One message (an enqueue, a call).
pub(crate) struct One<'a> {
    pub(crate) message: &'a Message,
    pub(crate) destination: &'a Destination,
    pub(crate) done: bool,
}

impl Source for One<'_> {
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)> {
        if std::mem::replace(&mut self.done, true) {
            return None;
        }
        let outgoing = self.message.to(self.destination);
        Some((outgoing.id.clone(), Ok(outgoing)))
    }

    fn again(&mut self, _index: usize) -> Option<Outgoing> {
        Some(self.message.to(self.destination))
    }
}

/// One message that goes again on a new connection only while `may_go_again`
/// says so (a scheduler's tick: only while its worker still leads).
pub(crate) struct Guarded<'a> {
    pub(crate) one: One<'a>,
    pub(crate) may_go_again: &'a (dyn Fn() -> bool + Sync),
}

impl Source for Guarded<'_> {
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)> {
        self.one.next()
    }

    fn again(&mut self, index: usize) -> Option<Outgoing> {
        if (self.may_go_again)() {
            self.one.again(index)
        } else {
            None
        }
    }
}

/// The jobs of a slice, under ids made for them, encoded as they go out.
pub(crate) struct Slice<'a, J> {
    pub(crate) jobs: &'a [J],
    pub(crate) ids: &'a [JobId],
    pub(crate) destination: &'a Destination,
    pub(crate) at: usize,
    /// The deadline every job carries, if any.
    pub(crate) expires_at: Option<SystemTime>,
}

/// Job `J`'s message, with `expires_at` when given.
fn made<J: Job>(job: &J, id: JobId, expires_at: Option<SystemTime>, to: &Destination) -> Result<Outgoing, Error> {
    Ok(Message::job(J::NAME, id, codec::encode(job)?).deadline(expires_at).into_outgoing(to))
}

impl<J: Job> Slice<'_, J> {
    fn make(&self, index: usize) -> Option<Result<Outgoing, Error>> {
        let (job, id) = (self.jobs.get(index)?, self.ids.get(index)?);
        Some(made(job, id.clone(), self.expires_at, self.destination))
    }
}

impl<J: Job> Source for Slice<'_, J> {
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)> {
        let made = self.make(self.at)?;
        let id = self.ids[self.at].clone();
        self.at += 1;
        Some((id, made))
    }

    fn again(&mut self, index: usize) -> Option<Outgoing> {
        self.make(index).and_then(Result::ok)
    }
}

/// Messages made already, each with its destination (a batch's jobs, of many types).
pub(crate) struct Prepared<'a> {
    pub(crate) messages: &'a [Message],
    pub(crate) destinations: &'a [Destination],
    pub(crate) at: usize,
}

impl Source for Prepared<'_> {
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)> {
        let outgoing = self.again(self.at)?;
        self.at += 1;
        Some((outgoing.id.clone(), Ok(outgoing)))
    }

    fn again(&mut self, index: usize) -> Option<Outgoing> {
        Some(self.messages.get(index)?.to(self.destinations.get(index)?))
    }
}

/// The jobs of an iterator, each under a new id.
pub(crate) struct Iter<'a, I> {
    pub(crate) jobs: I,
    pub(crate) destination: &'a Destination,
    /// The deadline every job carries, if any.
    pub(crate) expires_at: Option<SystemTime>,
}

impl<J: Job, I: Iterator<Item = J>> Source for Iter<'_, I> {
    fn next(&mut self) -> Option<(JobId, Result<Outgoing, Error>)> {
        let job = self.jobs.next()?;
        let id = JobId::new();
        let made = made(&job, id.clone(), self.expires_at, self.destination);
        Some((id, made))
    }

    fn again(&mut self, _index: usize) -> Option<Outgoing> {
        None
    }
}

/// How a publish that did not confirm everything ended.
#[derive(Debug)]
pub(crate) struct Stopped {
    taken: usize,
    unconfirmed: Vec<(usize, JobId)>,
    error: Error,
}

impl Stopped {
    fn before_any(error: Error) -> Self {
        Stopped { taken: 0, unconfirmed: Vec::new(), error }
    }

    /// The error of one message's publish.
    pub(crate) fn into_error(self) -> Error {
        self.error
    }

    /// The error of a batch: as it is when no job was taken (nothing was
    /// sent: the whole batch may go again), else [`Error::BatchIncomplete`].
    pub(crate) fn into_batch_error(mut self) -> Error {
        if self.taken == 0 {
            return self.error;
        }
        self.unconfirmed.sort_by_key(|(i, _)| *i);
        self.unconfirmed.dedup_by_key(|(i, _)| *i);
        Error::BatchIncomplete(Box::new(BatchIncomplete {
            taken: self.taken,
            unconfirmed: self.unconfirmed,
            error: self.error,
        }))
    }
}

/// A message waiting for its confirm.
struct Flight {
    index: usize,
    /// Kept to send it again when the source cannot make it again.
    copy: Option<Outgoing>,
    sent: Sent,
    rx: oneshot::Receiver<Outcome>,
}

/// A message to send again on a new connection: its place, its id, and a copy when kept.
type Again = (usize, JobId, Option<Outgoing>);

/// What one session of a batch did.
#[derive(Default)]
struct Round {
    /// Messages whose connection went before their confirm.
    again: VecDeque<Again>,
    confirmed: usize,
    /// Why the connection went, when it did.
    lost: Option<Error>,
}

impl Client {
    /// Publishes the messages of `source` to `destination` through a window
    /// of unconfirmed messages and waits for every confirm: the one publish
    /// path of every enqueue. Declares what the destination needs first (once
    /// per connection), and runs `setup` on each session before its publishes
    /// (a call starts listening for its answer there). Returns how many jobs
    /// were confirmed (or how it stopped), and what the last session's setup gave.
    pub(crate) async fn publish_source<T, Fut>(
        &self,
        destination: &Destination,
        mut setup: impl FnMut(Arc<Session>) -> Fut,
        source: &mut impl Source,
        keep_copies: bool,
    ) -> (Result<usize, Stopped>, Option<T>)
    where
        Fut: Future<Output = Result<T, Error>>,
    {
        let config = self.config();
        let mut deadline = Instant::now() + config.reconnect_timeout;
        let mut batch = Batch {
            limit: config.max_message_size,
            keep_copies,
            heard: Arc::default(),
            taken: 0,
            exhausted: false,
            unconfirmed: Vec::new(),
            failure: None,
            again: VecDeque::new(),
        };
        let mut last = None;
        loop {
            let session = match self.session(deadline).await {
                Ok(session) => session,
                Err(error) => return (Err(batch.stop_before_session(error)), last),
            };
            let prepared = match session.prepare(config, &destination.declare).await {
                Ok(()) => setup(session.clone()).await,
                Err(err) => Err(err),
            };
            match prepared {
                Ok(ready) => last = Some(ready),
                Err(error) => return (Err(batch.stop_before_session(error)), last),
            }
            let mut round = batch.round(&session, source).await;
            if batch.failure.is_none() && round.lost.is_none() && batch.exhausted {
                return (Ok(batch.taken), last);
            }
            if let Some(closed) = round.lost.take() {
                self.drop_session(&session);
                if round.confirmed > 0 {
                    // Progress on the lost connection: the time to reconnect starts again.
                    deadline = Instant::now() + config.reconnect_timeout;
                }
                if Instant::now() < deadline {
                    if batch.failure.is_none() {
                        warn!(
                            again = round.again.len(),
                            reason = %crate::report(&closed),
                            "the connection went before the broker confirmed some messages; publishing them again on a new one (where the sender allows)"
                        );
                    }
                } else {
                    batch.failure.get_or_insert(closed);
                }
            }
            // Sent again in the batch's order.
            batch.again.extend(round.again);
            batch.again.make_contiguous().sort_by_key(|(index, _, _)| *index);
            if let Some(error) = batch.failure.take() {
                return (Err(batch.stop_before_session(error)), last);
            }
        }
    }
}

/// A batch's state across sessions.
struct Batch {
    limit: usize,
    keep_copies: bool,
    /// Answers the batch heard: its confirm timeout is this standing still.
    heard: Arc<AtomicU64>,
    /// Jobs taken from the source.
    taken: usize,
    exhausted: bool,
    unconfirmed: Vec<(usize, JobId)>,
    failure: Option<Error>,
    /// Sent on a connection that went: to send again first.
    again: VecDeque<Again>,
}

impl Batch {
    /// The end of a batch that failed, or could not get a session: what was
    /// sent on a lost connection is unknown, and nothing after it was sent.
    fn stop_before_session(&mut self, error: Error) -> Stopped {
        if self.taken == 0 {
            return Stopped::before_any(error);
        }
        let mut unconfirmed = std::mem::take(&mut self.unconfirmed);
        unconfirmed.extend(self.again.drain(..).map(|(index, id, _)| (index, id)));
        Stopped { taken: self.taken, unconfirmed, error }
    }

    /// The next message to send: one to send again first, then the source's.
    fn next(&mut self, source: &mut impl Source) -> Option<(usize, Outgoing)> {
        if let Some((index, id, copy)) = self.again.pop_front() {
            match copy.or_else(|| source.again(index)) {
                Some(message) => return Some((index, message)),
                None => {
                    let reason = "a message to send again could not be made again".into();
                    self.failure.get_or_insert(Error::Closed { id: id.clone(), reason });
                    self.unconfirmed.push((index, id));
                    return None;
                }
            }
        }
        if self.exhausted {
            return None;
        }
        let Some((id, made)) = source.next() else {
            self.exhausted = true;
            return None;
        };
        let index = self.taken;
        self.taken += 1;
        let checked = made.and_then(|message| {
            // Refused here, not sent: a body over `amqp.max_message_size`.
            if message.body.len() > self.limit {
                let (id, size, limit) = (message.id, message.body.len(), self.limit);
                return Err(Error::TooLarge { id, size, limit });
            }
            crate::confirm::validate_name(&message.exchange)?;
            crate::confirm::validate_name(&message.routing_key)?;
            crate::confirm::validate_name(message.id.as_str())?;
            Ok(message)
        });
        match checked {
            Ok(message) => Some((index, message)),
            Err(error) => {
                self.unconfirmed.push((index, id));
                self.failure = Some(error);
                None
            }
        }
    }

    /// Sends on `session` until the source is done, the batch failed or the
    /// connection went, and waits for every confirm of what it sent.
    async fn round(&mut self, session: &Session, source: &mut impl Source) -> Round {
        let publisher = &session.publisher;
        let mut round = Round::default();
        let mut window: VecDeque<Flight> = VecDeque::new();
        // Once a confirm did not come in time, the rest are read without waiting.
        let mut silent = false;
        loop {
            // Send a chunk while the window has room for one.
            if self.failure.is_none() && round.lost.is_none() && window.len() + CHUNK <= WINDOW {
                let mut chunk = Vec::with_capacity(CHUNK);
                while chunk.len() < CHUNK {
                    match self.next(source) {
                        Some(next) => chunk.push(next),
                        None => break,
                    }
                }
                if !chunk.is_empty() {
                    let (places, messages): (Vec<(usize, Option<Outgoing>)>, Vec<Outgoing>) = chunk
                        .into_iter()
                        .map(|(index, message)| ((index, self.keep_copies.then(|| message.clone())), message))
                        .unzip();
                    let sents: Vec<Sent> = messages.iter().map(Sent::of).collect();
                    match publisher.send_all(messages, Some(self.heard.clone())).await {
                        Ok(receivers) => {
                            for (((index, copy), sent), rx) in places.into_iter().zip(sents).zip(receivers) {
                                window.push_back(Flight { index, copy, sent, rx });
                            }
                        }
                        // The publisher stopped before taking them: none sent; send them on a new connection.
                        Err(closed @ Error::Closed { .. }) => {
                            round.lost.get_or_insert(closed);
                            round.again.extend(places.into_iter().zip(sents).map(|((i, copy), s)| (i, s.id, copy)));
                        }
                        Err(error) => {
                            self.unconfirmed.extend(places.into_iter().zip(sents).map(|((i, _), s)| (i, s.id)));
                            self.failure.get_or_insert(error);
                        }
                    }
                    continue;
                }
            }
            let Some(mut flight) = window.pop_front() else { break };
            let result = if silent {
                let id = flight.sent.id.clone();
                publisher.answered(&flight.sent, &mut flight.rx).unwrap_or_else(|| Err(publisher.timeout_error(id)))
            } else {
                publisher.wait(flight.sent.clone(), flight.rx, Some(&self.heard)).await
            };
            match result {
                Ok(()) => round.confirmed += 1,
                // The connection went before the confirm: send again on a new one (if in time).
                Err(closed @ Error::Closed { .. }) if self.failure.is_none() => {
                    round.lost.get_or_insert(closed);
                    round.again.push_back((flight.index, flight.sent.id, flight.copy));
                }
                Err(error) => {
                    if matches!(error, Error::ConfirmTimeout { .. } | Error::Blocked { .. }) {
                        silent = true;
                    }
                    self.unconfirmed.push((flight.index, flight.sent.id));
                    self.failure.get_or_insert(error);
                }
            }
        }
        if silent {
            publisher.forget_abandoned();
        }
        round
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_message_goes_again_only_while_its_sender_allows() {
        let message = Message::job("Tick", JobId::from("abc-1"), Vec::new());
        let destination = Destination::direct("ticks");
        let allowed = std::sync::atomic::AtomicBool::new(true);
        let check = || allowed.load(std::sync::atomic::Ordering::SeqCst);
        let mut guarded =
            Guarded { one: One { message: &message, destination: &destination, done: false }, may_go_again: &check };
        let (id, first) = guarded.next().expect("one message");
        assert!(first.is_ok() && id.as_str() == "abc-1");
        assert!(guarded.next().is_none(), "one message only");
        assert!(guarded.again(0).is_some_and(|again| again.id.as_str() == "abc-1"), "again, the same id");
        allowed.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(guarded.again(0).is_none(), "not again once its sender no longer allows it");
    }
}
