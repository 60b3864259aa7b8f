//! Answers to calls: consumed from RabbitMQ's direct reply-to on the channel
//! that published the calls, and handed to the caller waiting for each, by id.

use std::collections::HashMap;
use std::sync::Arc;

use amqprs::channel::{BasicConsumeArguments, Channel};
use tracing::debug;

use crate::{Error, JobId};

/// RabbitMQ's pseudo-queue for answers on the caller's own channel.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

type Reply = (amqprs::BasicProperties, Vec<u8>);
type Waiting = HashMap<String, tokio::sync::oneshot::Sender<Reply>>;

/// Callers waiting for answers, by job id.
#[derive(Default)]
pub(crate) struct Replies {
    waiting: std::sync::Mutex<Waiting>,
}

impl Replies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn expect(&self, id: &JobId) -> tokio::sync::oneshot::Receiver<Reply> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().insert(id.to_string(), tx);
        rx
    }

    pub(crate) fn forget(&self, id: &JobId) {
        self.lock().remove(id.as_str());
    }
}

impl Replies {
    /// Starts consuming answers on `channel` (a publisher's: direct reply-to
    /// answers on the channel that published the call).
    pub(crate) async fn start(channel: &Channel) -> Result<Arc<Replies>, Error> {
        let args = BasicConsumeArguments::new(DIRECT_REPLY_TO, "").manual_ack(false).finish();
        let (_, mut rx) =
            channel.basic_consume_rx(args).await.map_err(Error::amqp("basic.consume (direct reply-to)"))?;
        let replies = Arc::new(Replies::default());
        let waiting = replies.clone();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let (Some(props), Some(body)) = (message.basic_properties, message.content) else { continue };
                let waiter = props.correlation_id().and_then(|id| waiting.lock().remove(id.as_str()));
                match waiter {
                    Some(tx) => {
                        let _ = tx.send((props, body));
                    }
                    None => {
                        debug!(correlation_id = ?props.correlation_id(), "answer to a call nobody waits for; dropped")
                    }
                }
            }
            // The channel is gone: dropping the senders fails every waiting call.
            waiting.lock().clear();
        });
        Ok(replies)
    }
}
