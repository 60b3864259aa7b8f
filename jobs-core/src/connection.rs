//! Opening connections, with logging callbacks and retries.

use std::time::Duration;

use amqprs::callbacks::ConnectionCallback;
use amqprs::connection::Connection;
use amqprs::Close;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::Cause;
use crate::{AmqpConfig, Error};

/// How long a close waits for the broker's answer (a close-ok, a consumer's
/// cancel-ok). amqprs waits for answers without end, and a broker busy (say,
/// electing a queue leader) or a silent network must not hold a stop up.
pub const BROKER_ANSWER: Duration = Duration::from_secs(5);

/// Closes `connection`, waiting at most [`BROKER_ANSWER`] for the broker's
/// close-ok (a WARN when it does not come; the socket is dropped anyway).
pub async fn close_connection(connection: Connection) {
    let name = connection.connection_name().to_owned();
    if tokio::time::timeout(BROKER_ANSWER, connection.close()).await.is_err() {
        warn!(connection = name, timeout = ?BROKER_ANSWER, "the broker did not answer the connection's close; dropping it");
    }
}

/// Opens a connection named `name` (shown in the management UI) to the first
/// broker of `config.urls()` that answers. One try each; see [`connect_with_retry`].
///
/// # Errors
/// [`Error::Connect`] with the last URL tried (password hidden) and the cause.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, Error> {
    let mut last = None;
    let password = config.file_password()?;
    for url in config.urls() {
        let mut args = url.connection_args(name, config.heartbeat, password.as_deref());
        if url.is_tls() {
            args.tls_adaptor(config.tls_adaptor(url)?);
        }
        match Connection::open(&args).await {
            Ok(connection) => {
                connection
                    .register_callback(LogConnection)
                    .await
                    .map_err(Error::amqp("connection.register_callback"))?;
                info!(url = %url, connection = name, "connected to RabbitMQ");
                return Ok(connection);
            }
            Err(source) => last = Some(Error::Connect { url: url.redacted(), source: Cause::new(source) }),
        }
    }
    Err(last.unwrap_or_else(|| Error::Config { key: "amqp.url".into(), message: "no broker URL".into() }))
}

/// [`connect`], retried with capped exponential backoff (0.1 s doubling to 5 s)
/// until `deadline` has passed.
///
/// # Errors
/// The last [`Error::Connect`] once the deadline has passed.
pub async fn connect_with_retry(config: &AmqpConfig, name: &str, deadline: Instant) -> Result<Connection, Error> {
    let mut pause = Duration::from_millis(100);
    loop {
        match connect(config, name).await {
            Ok(connection) => return Ok(connection),
            Err(err) if Instant::now() + pause >= deadline => return Err(err),
            Err(err) => {
                warn!(error = %crate::error::report(&err), retry_in = ?pause, "cannot reach RabbitMQ; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Logs what the broker says about the connection.
struct LogConnection;

#[async_trait::async_trait]
impl ConnectionCallback for LogConnection {
    async fn close(&mut self, connection: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        warn!(connection = connection.connection_name(), reason = %close, "RabbitMQ closed the connection");
        Ok(())
    }

    async fn blocked(&mut self, connection: &Connection, reason: String) {
        warn!(connection = connection.connection_name(), %reason, "RabbitMQ blocked publishing (resource alarm)");
    }

    async fn unblocked(&mut self, connection: &Connection) {
        info!(connection = connection.connection_name(), "RabbitMQ unblocked publishing");
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}
