//! Reading a queue without taking its messages: a walk. A queue has no
//! "look": a message is read by holding it unacked, and a held message goes
//! back to its place when its channel closes. A walk consumes with a prefetch
//! window on one channel; when the window is full of messages it keeps (a
//! listing keeps them all, a filtered action the ones it does not take), it
//! opens the next channel for the next window, so that it reads on past any
//! window, in the queue's order. What it acks (a retried or deleted dead job)
//! is gone; everything else returns when the walk ends.
//!
//! Memory is one window: the first is as large as the reader asks for (a
//! page and one more, at most 64 messages), the next ones twice as large
//! each, up to 65,535 messages, and no larger than 64 MiB of bodies as the
//! bodies read so far average (a window of bodies much larger than those
//! before them can hold more).
//!
//! A walk reads the messages the queue held when it began (its ready count
//! then), and ends early when the queue has none left to give for two
//! seconds (another reader holds or took them): it says so
//! ([`Walk::ended_early`]). One that the broker gives nothing for 30 s
//! while the queue says it has messages ready ends with an error. Two walks of one queue at the same time see each
//! other's held messages as gone. A channel of the walk that closes under it
//! (the broker's doing) returns what it held, and the walk ends with an error
//! rather than read those again.

use std::time::Duration;

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel, ConsumerMessage, QueueDeclareArguments,
};
use amqprs::connection::Connection;
use amqprs::BasicProperties;
use tokio::sync::mpsc;

use crate::refusal::ChannelWatch;
use crate::Error;

/// How long a walk waits for the next message before it asks the broker
/// whether the queue has any left to give.
const IDLE: Duration = Duration::from_millis(500);

/// How many idle waits in a row, with nothing left to give, end a walk early:
/// messages on their way to it arrive well within that.
const IDLE_ENDS: u32 = 4;

/// How many idle waits in a row end a walk with an error although the queue
/// says it has messages ready: the broker gives them to another consumer (one
/// of a higher priority, a single active one) and none to the walk.
const STALLED: u32 = 60;

/// The largest first window: bodies are not known yet (a dead queue holds
/// bodies over the worker's size limit too), so it stays small until the
/// bodies read say how large the next may be.
const FIRST_WINDOW: u64 = 64;

/// The largest window.
const MAX_WINDOW: u16 = u16::MAX;

/// The bodies one window may hold, as far as the average body read tells.
const WINDOW_BYTES: u64 = 64 << 20;

/// The most channels one walk opens (RabbitMQ allows 2047 on a connection).
const MAX_CHANNELS: usize = 2000;

/// One message read by a walk.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Its place in the queue as the walk read it, from 0.
    pub(crate) index: u64,
    pub(crate) props: BasicProperties,
    pub(crate) body: Vec<u8>,
    /// Where it is held: for [`Walk::ack`].
    pub(crate) held: Held,
}

/// Where a message a walk read is held: its window (channel) and delivery tag there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    window: usize,
    tag: u64,
}

/// A window: a channel consuming the queue, and how many messages it holds.
struct Window {
    channel: Channel,
    size: u16,
    held: u32,
    forward: tokio::task::JoinHandle<()>,
}

/// A walk over one queue.
pub(crate) struct Walk {
    connection: Connection,
    queue: String,
    /// The size of the next window to open.
    next_size: u16,
    /// Ready messages when the walk began: it reads no more than these.
    total: u64,
    seen: u64,
    bytes: u64,
    ended_early: bool,
    windows: Vec<Window>,
    tx: mpsc::Sender<(usize, ConsumerMessage)>,
    rx: mpsc::Receiver<(usize, ConsumerMessage)>,
}

impl Walk {
    /// Starts walking `queue`, with a first window of `first` messages (what
    /// the reader needs first: a page and one more).
    ///
    /// # Errors
    /// [`Error::Refused`] when the queue does not exist (the broker closes a
    /// channel for it); [`Error::Amqp`] when the broker fails.
    pub(crate) async fn start(connection: &Connection, queue: &str, first: u64) -> Result<Self, Error> {
        let total = u64::from(ready(connection, queue).await?);
        let (tx, rx) = mpsc::channel(256);
        Ok(Walk {
            connection: connection.clone(),
            queue: queue.to_owned(),
            next_size: u16::try_from(first.clamp(16, FIRST_WINDOW)).unwrap_or(16),
            total,
            seen: 0,
            bytes: 0,
            ended_early: false,
            windows: Vec::new(),
            tx,
            rx,
        })
    }

    /// Ready messages in the queue when the walk began.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Messages read so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether it ended before reading every message the queue held at its
    /// start, because the queue had none left to give (another reader).
    pub(crate) fn ended_early(&self) -> bool {
        self.ended_early
    }

    /// The next message, in the queue's order (for a walk that acks as it
    /// goes, in the order the broker hands them out); `None` once every
    /// message the queue held at the start was read, or it has none left.
    ///
    /// # Errors
    /// [`Error::QueueRead`] when a channel of the walk closed under it; as
    /// [`ready`] when the broker cannot be asked.
    pub(crate) async fn next(&mut self) -> Result<Option<Seen>, Error> {
        if self.seen >= self.total {
            return Ok(None);
        }
        let (mut idle, mut stalled) = (0, 0);
        loop {
            self.check_windows()?;
            if self.windows.last().map_or(true, |w| w.held >= u32::from(w.size)) {
                self.open_window().await?;
            }
            match tokio::time::timeout(IDLE, self.rx.recv()).await {
                Ok(Some((window, message))) => {
                    let (Some(deliver), Some(props), Some(body)) =
                        (message.deliver, message.basic_properties, message.content)
                    else {
                        continue;
                    };
                    self.windows[window].held += 1;
                    let index = self.seen;
                    self.seen += 1;
                    self.bytes += body.len() as u64;
                    return Ok(Some(Seen { index, props, body, held: Held { window, tag: deliver.delivery_tag() } }));
                }
                Ok(None) => return Err(self.failed("its readers stopped")),
                Err(_) => {
                    // A queue deleted under the walk cancels its consumers first: say that, not a 404.
                    self.check_windows()?;
                    // Nothing came: are there messages left for us at all?
                    let ready = match ready(&self.connection, &self.queue).await {
                        Ok(ready) => ready,
                        Err(Error::Refused { .. }) => return Err(self.failed("the queue is gone")),
                        Err(err) => return Err(err),
                    };
                    if ready > 0 {
                        idle = 0;
                        stalled += 1;
                        if stalled >= STALLED {
                            let why = format!(
                                "the broker gave it nothing for {}s although {ready} are ready (another consumer takes them)",
                                IDLE.as_secs_f64() * f64::from(STALLED)
                            );
                            return Err(self.failed(&why));
                        }
                        continue;
                    }
                    idle += 1;
                    if idle >= IDLE_ENDS {
                        self.ended_early = true;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// A window that closed gave back what it held: reading on would read those twice.
    fn check_windows(&self) -> Result<(), Error> {
        if self.windows.iter().any(|w| !w.channel.is_open() || w.forward.is_finished()) {
            return Err(self.failed("a channel reading it closed"));
        }
        Ok(())
    }

    /// Takes the message held at `held` out of the queue for good.
    ///
    /// # Errors
    /// When the channel it is held on is gone (then it is back in the queue).
    pub(crate) async fn ack(&mut self, held: Held) -> Result<(), Error> {
        let window = &mut self.windows[held.window];
        let acked = window.channel.basic_ack(BasicAckArguments::new(held.tag, false)).await;
        acked.map_err(Error::amqp("basic.ack"))?;
        window.held = window.held.saturating_sub(1);
        Ok(())
    }

    /// Ends the walk: every message read and not acked goes back to its place.
    pub(crate) async fn finish(self) {
        for window in self.windows {
            let _ = window.channel.close().await;
            window.forward.abort();
        }
    }

    fn failed(&self, reason: &str) -> Error {
        Error::QueueRead { queue: self.queue.clone(), reason: reason.to_owned() }
    }

    async fn open_window(&mut self) -> Result<(), Error> {
        if self.windows.len() >= MAX_CHANNELS {
            return Err(self.failed("more messages than the walk's channels can hold"));
        }
        let mut size = self.next_size;
        if let Some(average) = self.bytes.checked_div(self.seen) {
            let fits = (WINDOW_BYTES / average.max(1)).clamp(16, u64::from(MAX_WINDOW));
            size = size.min(u16::try_from(fits).unwrap_or(MAX_WINDOW));
        }
        self.next_size = size.saturating_mul(2);
        let channel = self.connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        let qos = BasicQosArguments::new(0, size, false);
        channel.basic_qos(qos).await.map_err(|e| watch.error("basic.qos", &self.queue, e))?;
        let args = BasicConsumeArguments::new(&self.queue, "").manual_ack(true).finish();
        let (_, mut rx) =
            channel.basic_consume_rx(args).await.map_err(|e| watch.error("basic.consume", &self.queue, e))?;
        let (number, tx) = (self.windows.len(), self.tx.clone());
        let forward = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if tx.send((number, message)).await.is_err() {
                    break;
                }
            }
        });
        self.windows.push(Window { channel, size, held: 0, forward });
        Ok(())
    }
}

/// Ready messages of `queue`, by a passive declare on a channel of its own.
///
/// # Errors
/// [`Error::Refused`] naming the queue when it does not exist.
pub(crate) async fn ready(connection: &Connection, queue: &str) -> Result<u32, Error> {
    // amqprs panics on a name over 255 bytes.
    if queue.len() > 255 {
        return Err(Error::InvalidName { name: queue.to_owned(), reason: "longer than 255 bytes" });
    }
    let channel = connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
    let watch = ChannelWatch::on(&channel).await?;
    let declared = channel.queue_declare(QueueDeclareArguments::new(queue).passive(true).finish()).await;
    let _ = channel.close().await;
    match declared {
        Ok(Some((_, ready, _))) => Ok(ready),
        Ok(None) => Err(Error::Refused { op: "queue.declare", name: queue.to_owned(), detail: "no answer".into() }),
        Err(source) => Err(watch.error("queue.declare", queue, source)),
    }
}
