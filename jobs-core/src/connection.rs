//! Opening connections, with logging callbacks.

use amqprs::callbacks::ConnectionCallback;
use amqprs::connection::Connection;
use amqprs::Close;
use tracing::{info, warn};

use crate::{AmqpConfig, Error};

/// Opens a connection to the broker named `name` (shown in the management UI).
///
/// # Errors
/// [`Error::Connect`] with the URL (password hidden) and the cause.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, Error> {
    let args = config.url.connection_args(name, config.heartbeat);
    let connection = Connection::open(&args)
        .await
        .map_err(|source| Error::Connect {
            url: config.url.redacted(),
            source,
        })?;
    connection
        .register_callback(LogConnection)
        .await
        .map_err(|source| Error::Amqp {
            op: "connection.register_callback",
            source,
        })?;
    info!(url = %config.url, connection = name, "connected to RabbitMQ");
    Ok(connection)
}

/// Logs what the broker says about the connection.
struct LogConnection;

#[async_trait::async_trait]
impl ConnectionCallback for LogConnection {
    async fn close(
        &mut self,
        connection: &Connection,
        close: Close,
    ) -> Result<(), amqprs::error::Error> {
        warn!(connection = connection.connection_name(), reason = %close, "RabbitMQ closed the connection");
        Ok(())
    }

    async fn blocked(&mut self, connection: &Connection, reason: String) {
        warn!(connection = connection.connection_name(), %reason, "RabbitMQ blocked publishing (resource alarm)");
    }

    async fn unblocked(&mut self, connection: &Connection) {
        info!(
            connection = connection.connection_name(),
            "RabbitMQ unblocked publishing"
        );
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}
