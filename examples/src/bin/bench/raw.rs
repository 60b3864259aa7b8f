//! The same AMQP work done with raw amqprs: the baseline of every row.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs_core::plumbing::amqprs::callbacks::ChannelCallback;
use jobs_core::plumbing::amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel, ConfirmSelectArguments,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio::sync::Notify;

/// Counts confirms (acks with `multiple`) and wakes waiters.
#[derive(Default)]
pub(crate) struct Confirms {
    acked: AtomicU64,
    notify: Notify,
}

struct Cb(Arc<Confirms>);

#[async_trait::async_trait]
impl ChannelCallback for Cb {
    async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<(), jobs_core::plumbing::amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), jobs_core::plumbing::amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, _: bool) -> Result<bool, jobs_core::plumbing::amqprs::error::Error> {
        Ok(true)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.acked.fetch_max(ack.delivery_tag(), Ordering::AcqRel);
        self.0.notify.notify_waiters();
    }
    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// A confirm-mode channel publishing persistent messages to one queue.
pub(crate) struct RawPublisher {
    channel: Channel,
    confirms: Arc<Confirms>,
    sent: u64,
    /// The properties of every message: persistent only, or the framework's full set.
    properties: BasicProperties,
}

impl RawPublisher {
    pub(crate) async fn open(connection: &Connection) -> Self {
        let channel = connection.open_channel(None).await.expect("channel");
        let confirms = Arc::new(Confirms::default());
        channel.register_callback(Cb(confirms.clone())).await.expect("callback");
        channel.confirm_select(ConfirmSelectArguments::new(false)).await.expect("confirm.select");
        let properties = BasicProperties::default().with_persistence(true).finish();
        RawPublisher { channel, confirms, sent: 0, properties }
    }

    /// Sends the properties the framework puts on a first attempt of job type
    /// `name` (type, id, timestamp, `delivery_mode`) instead of `delivery_mode` alone.
    pub(crate) fn with_job_properties(mut self, name: &str) -> Self {
        self.properties = jobs_core::plumbing::job_properties(name, &jobs_core::JobId::default(), 1);
        self
    }

    pub(crate) async fn publish(&mut self, queue: &str, body: Vec<u8>) {
        let mut args = BasicPublishArguments::new("", queue);
        args.mandatory(true);
        self.channel.basic_publish(self.properties.clone(), body, args).await.expect("publish");
        self.sent += 1;
    }

    /// Waits until at most `window` messages are unconfirmed.
    pub(crate) async fn wait_window(&self, window: u64) {
        loop {
            let notified = self.confirms.notify.notified();
            if self.sent.saturating_sub(self.confirms.acked.load(Ordering::Acquire)) < window {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits until every message sent so far is confirmed.
    pub(crate) async fn wait_confirms(&self) {
        loop {
            let notified = self.confirms.notify.notified();
            if self.confirms.acked.load(Ordering::Acquire) >= self.sent {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// Consumes `queue` with manual acks until `n` messages are acked; calls
/// `on_message` with each body first. Returns the elapsed time from the first delivery.
pub(crate) async fn drain(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    n: u64,
    mut on_message: impl FnMut(&[u8]),
) -> Duration {
    let channel = connection.open_channel(None).await.expect("channel");
    channel.basic_qos(BasicQosArguments::new(0, prefetch, false)).await.expect("qos");
    let args = BasicConsumeArguments::new(queue, "raw-bench").manual_ack(true).finish();
    let (_, mut rx) = channel.basic_consume_rx(args).await.expect("consume");
    let mut start = None;
    let mut done = 0;
    while done < n {
        let message = rx.recv().await.expect("consumer stream");
        start.get_or_insert_with(Instant::now);
        if let Some(body) = &message.content {
            on_message(body);
        }
        let tag = message.deliver.map(|d| d.delivery_tag()).unwrap_or_default();
        channel.basic_ack(BasicAckArguments::new(tag, false)).await.expect("ack");
        done += 1;
    }
    let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
    let _ = channel.close().await;
    elapsed
}
