//! Reading a queue without taking its messages: a walk. A queue has no
//! "look": a message is read by holding it unacked, and a held message goes
//! back to its place when its channel closes. A walk consumes with a prefetch
//! window on one channel; when the window is full of messages it keeps (a
//! listing keeps them all, a filtered action the ones it does not take), it
//! opens the next channel for the next window, so that it reads on past any
//! window with memory bounded by one window, in the queue's order. What it
//! acks (a retried or deleted dead job) is gone; everything else returns when
//! the walk ends.
//!
//! A walk reads the messages the queue held when it began (its ready count
//! then), and ends early when the queue has none left to give (another reader
//! holds or took them). Two walks of one queue at the same time see each
//! other's held messages as gone.

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

/// The windows (channels) a walk is sized for: a queue of `n` messages gets
/// windows of `n / WINDOWS` (at least 2,000).
const WINDOWS: u64 = 1000;

/// The most channels one walk opens: RabbitMQ allows 2047 on a connection,
/// and a queue that grew while it was read needs a few more than it was sized for.
const MAX_CHANNELS: usize = 2000;

/// One message read by a walk.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Its place in the queue as the walk read it, from 0.
    pub(crate) index: u64,
    pub(crate) props: BasicProperties,
    pub(crate) body: Vec<u8>,
    /// The window (channel) it is held on, and its delivery tag there.
    window: usize,
    tag: u64,
}

/// A window: a channel consuming the queue, and how many messages it holds.
struct Window {
    channel: Channel,
    held: u32,
    forward: tokio::task::JoinHandle<()>,
}

/// A walk over one queue.
pub(crate) struct Walk {
    connection: Connection,
    queue: String,
    /// Messages one window holds.
    size: u16,
    /// Ready messages when the walk began: it reads no more than these.
    total: u64,
    seen: u64,
    windows: Vec<Window>,
    tx: mpsc::Sender<(usize, ConsumerMessage)>,
    rx: mpsc::Receiver<(usize, ConsumerMessage)>,
}

impl Walk {
    /// Starts walking `queue`.
    ///
    /// # Errors
    /// [`Error::Refused`] when the queue does not exist (the broker closes a
    /// channel for it); [`Error::Amqp`] when the broker fails.
    pub(crate) async fn start(connection: &Connection, queue: &str) -> Result<Self, Error> {
        let total = u64::from(ready(connection, queue).await?);
        // Windows of at least 2,000 messages, larger for long queues, so that
        // one walk fits in the channels a connection may open.
        let size = total.div_ceil(WINDOWS).clamp(2_000, u64::from(u16::MAX)) as u16;
        let (tx, rx) = mpsc::channel(256);
        Ok(Walk {
            connection: connection.clone(),
            queue: queue.to_owned(),
            size,
            total,
            seen: 0,
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

    /// The next message, in the queue's order (for a walk that acks as it
    /// goes, in the order the broker hands them out); `None` once every
    /// message the queue held at the start was read, or it has none left.
    ///
    /// # Errors
    /// When a channel cannot be opened or closes under the walk.
    pub(crate) async fn next(&mut self) -> Result<Option<Seen>, Error> {
        if self.seen >= self.total {
            return Ok(None);
        }
        loop {
            if self.windows.last().map_or(true, |w| w.held >= u32::from(self.size)) {
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
                    return Ok(Some(Seen { index, props, body, window, tag: deliver.delivery_tag() }));
                }
                Ok(None) => return Err(Error::Closed { id: Default::default(), reason: "walk ended".into() }),
                Err(_) => {
                    // Nothing came: are there messages left for us at all?
                    if ready(&self.connection, &self.queue).await? == 0 {
                        return Ok(None);
                    }
                    if self.windows.iter().any(|w| w.forward.is_finished()) {
                        return Err(Error::Closed {
                            id: Default::default(),
                            reason: format!("a channel reading `{}` closed", self.queue),
                        });
                    }
                }
            }
        }
    }

    /// Takes `seen` out of the queue for good.
    ///
    /// # Errors
    /// When the channel it is held on is gone (then it is back in the queue).
    pub(crate) async fn ack(&mut self, seen: &Seen) -> Result<(), Error> {
        let window = &mut self.windows[seen.window];
        window.channel.basic_ack(BasicAckArguments::new(seen.tag, false)).await.map_err(Error::amqp("basic.ack"))?;
        window.held -= 1;
        Ok(())
    }

    /// Ends the walk: every message read and not acked goes back to its place.
    pub(crate) async fn finish(self) {
        for window in self.windows {
            let _ = window.channel.close().await;
            window.forward.abort();
        }
    }

    async fn open_window(&mut self) -> Result<(), Error> {
        if self.windows.len() >= MAX_CHANNELS {
            return Err(Error::Unsupported("a walk over more messages than its channels can hold"));
        }
        let channel = self.connection.open_channel(None).await.map_err(Error::amqp("channel.open"))?;
        let watch = ChannelWatch::on(&channel).await?;
        let qos = BasicQosArguments::new(0, self.size, false);
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
        self.windows.push(Window { channel, held: 0, forward });
        Ok(())
    }
}

/// Ready messages of `queue`, by a passive declare on a channel of its own.
///
/// # Errors
/// [`Error::Refused`] naming the queue when it does not exist.
pub(crate) async fn ready(connection: &Connection, queue: &str) -> Result<u32, Error> {
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
