//! Opening connections, with logging callbacks and retries.

use std::sync::Arc;
use std::time::Duration;

use amqprs::callbacks::ConnectionCallback;
use amqprs::connection::Connection;
use amqprs::Close;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::refusal::connect_error;
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

/// What the broker told a connection about itself: whether it blocks
/// publishers now (a memory or disk alarm), and why.
#[derive(Debug, Default)]
pub struct ConnectionState {
    blocked: std::sync::Mutex<Option<String>>,
}

impl ConnectionState {
    /// The broker's reason while it blocks this connection's publishes.
    pub fn blocked(&self) -> Option<String> {
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_blocked(&self, reason: Option<String>) {
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// Opens a connection named `name` (shown in the management UI) to the first
/// broker of `config.urls()` that answers. One try each; see [`connect_watched_with_retry`].
///
/// # Errors
/// [`Error::LoginRefused`], [`Error::NoVhost`], [`Error::AccessRefused`] when
/// the broker says so; else [`Error::Connect`] with the last URL tried
/// (password hidden) and the cause.
pub async fn connect(config: &AmqpConfig, name: &str) -> Result<Connection, Error> {
    connect_watched(config, name, Arc::default()).await
}

/// [`connect`], keeping what the broker says about the connection (blocked
/// publishers) in `state`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_watched(
    config: &AmqpConfig,
    name: &str,
    state: Arc<ConnectionState>,
) -> Result<Connection, Error> {
    let mut last = None;
    let password = config.file_password()?;
    for url in config.urls() {
        let mut args = url.connection_args(name, config.heartbeat, password.as_deref());
        if url.is_tls() {
            args.tls_adaptor(config.tls.adaptor(url)?);
        }
        match Connection::open(&args).await {
            Ok(connection) => {
                connection
                    .register_callback(LogConnection { state: state.clone() })
                    .await
                    .map_err(Error::amqp("connection.register_callback"))?;
                state.set_blocked(None);
                info!(url = %url, connection = name, "connected to RabbitMQ");
                return Ok(connection);
            }
            Err(source) => {
                let err = connect_error(url, source);
                // A refusal of this user or vhost is the same at every node of a cluster.
                if err.is_permanent() {
                    return Err(err);
                }
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Config { key: "amqp.url".into(), message: "no broker URL".into() }))
}

/// [`connect_watched`], retried with capped exponential backoff (0.1 s
/// doubling to 5 s) until `deadline` has passed. A refusal that trying again
/// cannot change ([`Error::is_permanent`]: a wrong password, no such vhost)
/// returns at once.
///
/// # Errors
/// The last [`Error::Connect`] once the deadline has passed; a permanent error at once.
pub async fn connect_watched_with_retry(
    config: &AmqpConfig,
    name: &str,
    state: Arc<ConnectionState>,
    deadline: Instant,
) -> Result<Connection, Error> {
    let mut pause = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = true;
    loop {
        match connect_watched(config, name, state.clone()).await {
            Ok(connection) => return Ok(connection),
            Err(err) if err.is_permanent() || Instant::now() + pause.peek() >= deadline => return Err(err),
            Err(err) => {
                let retry_in = pause.peek();
                if first {
                    warn!(error = %crate::error::report(&err), ?retry_in, hint = start_hint(config), "cannot reach RabbitMQ; retrying");
                } else {
                    warn!(error = %crate::error::report(&err), ?retry_in, "cannot reach RabbitMQ; retrying");
                }
                first = false;
                pause.wait().await;
            }
        }
    }
}

/// What to do when no broker answers: for a broker on this machine, how to start one.
pub(crate) fn start_hint(config: &AmqpConfig) -> &'static str {
    let (host, _) = config.url.host_port();
    if matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]") {
        "is RabbitMQ running here? `bash deploy/rabbitmq.sh` installs and starts it"
    } else {
        "is RabbitMQ running there, and is amqp.url right?"
    }
}

/// Logs what the broker says about the connection, and keeps its blocked state.
struct LogConnection {
    state: Arc<ConnectionState>,
}

#[async_trait::async_trait]
impl ConnectionCallback for LogConnection {
    async fn close(&mut self, connection: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        warn!(connection = connection.connection_name(), reason = %close, "RabbitMQ closed the connection");
        Ok(())
    }

    async fn blocked(&mut self, connection: &Connection, reason: String) {
        warn!(connection = connection.connection_name(), %reason, "RabbitMQ is blocking publishers (a resource alarm on the broker): publishes wait until it clears");
        self.state.set_blocked(Some(reason));
    }

    async fn unblocked(&mut self, connection: &Connection) {
        info!(connection = connection.connection_name(), "RabbitMQ unblocked publishers");
        self.state.set_blocked(None);
    }

    async fn secret_updated(&mut self, _connection: &Connection) {}
}
