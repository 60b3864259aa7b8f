//! One connection of the client: its confirm channel, the answers to calls
//! it waits for, and what it has declared.

use std::sync::Arc;

use amqprs::connection::Connection;

use crate::confirm::Publisher;
use crate::declared::Declared;
use crate::destination::Declare;
use crate::replies::Replies;
use crate::topology::Declarer;
use crate::{AmqpConfig, Error};

/// A live connection of a [`Client`](crate::Client).
pub(crate) struct Session {
    pub(crate) connection: Connection,
    pub(crate) publisher: Publisher,
    /// Answers to calls, consumed from direct reply-to on the publisher's channel.
    replies: tokio::sync::OnceCell<Arc<Replies>>,
    /// What this connection has declared, read without waiting on the hot path.
    declared: std::sync::RwLock<Declared>,
    /// The channel declarations go on (opened when first needed, again after
    /// a refusal closed it); held while declaring.
    declaring: tokio::sync::Mutex<Option<Declarer>>,
}

impl Session {
    pub(crate) fn new(connection: Connection, publisher: Publisher) -> Self {
        Session {
            connection,
            publisher,
            replies: Default::default(),
            declared: Default::default(),
            declaring: Default::default(),
        }
    }

    /// The answers to this connection's calls (their consumer starts on first use).
    pub(crate) async fn replies(&self) -> Result<Arc<Replies>, Error> {
        self.replies.get_or_try_init(|| Replies::start(self.publisher.channel())).await.cloned()
    }

    /// Whether it can still publish.
    pub(crate) fn is_open(&self) -> bool {
        self.connection.is_open() && self.publisher.is_open()
    }

    fn declared(&self) -> std::sync::RwLockReadGuard<'_, Declared> {
        self.declared.read().unwrap_or_else(|e| e.into_inner())
    }

    fn declared_mut(&self) -> std::sync::RwLockWriteGuard<'_, Declared> {
        self.declared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares each of `queues` (where a chain's later steps or a batch's
    /// members go), once per connection.
    pub(crate) async fn prepare_queues(&self, config: &AmqpConfig, queues: &[String]) -> Result<(), Error> {
        for queue in queues {
            self.prepare(config, &Declare::Queue { queue: queue.clone(), delayed: false, shards: 0 }).await?;
        }
        Ok(())
    }

    /// Declares what publishing to a destination needs, once per connection.
    pub(crate) async fn prepare(&self, config: &AmqpConfig, declare: &Declare) -> Result<(), Error> {
        if self.declared().ready(declare) {
            return Ok(());
        }
        let mut declaring = self.declaring.lock().await;
        let declarer = match declaring.take().filter(Declarer::is_open) {
            Some(declarer) => declarer,
            None => Declarer::open(&self.connection).await?,
        };
        let on = &declarer;
        let topology = config.topology();
        let declared = async {
            match declare {
                Declare::Nothing => {}
                Declare::Exchange { name, kind } => {
                    if !self.declared().exchanges.contains(name) {
                        topology.declare_exchange(on, name, *kind).await?;
                        self.declared_mut().exchanges.insert(name.clone());
                    }
                }
                Declare::Journal(journal) => {
                    if !self.declared().queues.contains(journal.name()) {
                        journal.declare(on).await?;
                        self.declared_mut().queues.insert(journal.name().to_owned());
                    }
                }
                Declare::Queue { queue, delayed, shards } => {
                    if !self.declared().queues.contains(queue) {
                        topology.declare_job_queue(on, queue).await?;
                        self.declared_mut().queues.insert(queue.clone());
                    }
                    let first = crate::names::shard_queue(queue, 0);
                    if *shards > 0 && !self.declared().queues.contains(&first) {
                        topology.declare_shards(on, queue, *shards).await?;
                        self.declared_mut().queues.insert(first);
                    }
                    if *delayed && !self.declared().delays {
                        topology.declare_delays(on).await?;
                        self.declared_mut().delays = true;
                    }
                    if *delayed && !self.declared().bound.contains(queue) {
                        topology.bind_delayed(on, queue).await?;
                        self.declared_mut().bound.insert(queue.clone());
                    }
                }
            }
            Ok::<(), Error>(())
        }
        .await;
        *declaring = Some(declarer);
        declared
    }
}
