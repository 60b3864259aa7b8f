//! The broker's management HTTP API (the `rabbitmq_management` plugin, which
//! `deploy/rabbitmq.sh` enables), for what AMQP does not tell: unacked counts,
//! message rates. A few plain HTTP/1.0 requests on the `amqp.url` host at
//! `amqp.management_port`, with the URL's user; every call is bounded and
//! answers `None` (or an error) when the API does not answer.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AmqpConfig;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of one queue, as the management API last sampled them (every 5 s
/// by default: they lag behind the queue).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages waiting.
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u64,
    /// The queue's own `consumer_timeout` (RabbitMQ 3.12 and later: its
    /// `x-consumer-timeout` argument, or a policy's `consumer-timeout`), if set.
    pub consumer_timeout: Option<std::time::Duration>,
}

/// Who holds a shard: the worker of a consumer tag `<worker>:<queue>` (the
/// whole tag when it is not a worker's).
pub fn tag_worker<'a>(tag: &'a str, queue: &str) -> &'a str {
    tag.strip_suffix(queue).and_then(|t| t.strip_suffix(':')).unwrap_or(tag)
}

/// Why a request to the management API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementError {
    /// It could not be reached or the exchange broke off.
    #[error("management API at {at}")]
    Io {
        /// Host and port.
        at: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{method} {path}: no answer in {after:?}")]
    Timeout {
        /// The method.
        method: &'static str,
        /// The path.
        path: String,
        /// How long it waited.
        after: Duration,
    },
    /// An answer that is not a success.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// The method.
        method: &'static str,
        /// The path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// What the API said.
        body: String,
    },
    /// A success that is not JSON.
    #[error("GET {path}: the answer is not JSON")]
    NotJson {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of the management API of the broker of an [`AmqpConfig`].
#[derive(Clone)]
pub struct Management {
    host: String,
    port: u16,
    vhost: String,
    authorization: String,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management").field("host", &self.host).field("port", &self.port).finish()
    }
}

impl Management {
    /// The API of `amqp.url`'s host, as its user (the password stays in memory only).
    pub fn new(amqp: &AmqpConfig) -> Self {
        use base64::Engine;
        let (host, _) = amqp.url.host_port();
        let (user, url_password) = amqp.url.credentials();
        let password = amqp.file_password().ok().flatten().unwrap_or(url_password);
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Management {
            host,
            port: amqp.management_port,
            vhost: amqp.url.vhost(),
            authorization: format!("Basic {token}"),
        }
    }

    /// The vhost of `amqp.url`.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The stats of `queue` in the URL's vhost; `None` when the API does not
    /// answer or knows no such queue.
    pub async fn queue(&self, queue: &str) -> Option<QueueStats> {
        let value =
            self.get(&format!("/api/queues/{}/{}", percent_encode(&self.vhost), percent_encode(queue))).await.ok()?;
        let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        value.get("name")?;
        let own = value.pointer("/arguments/x-consumer-timeout").and_then(Value::as_u64);
        let policy = value.pointer("/effective_policy_definition/consumer-timeout").and_then(Value::as_u64);
        Some(QueueStats {
            ready: n("messages_ready"),
            unacked: n("messages_unacknowledged"),
            consumers: n("consumers"),
            consumer_timeout: own.or(policy).map(std::time::Duration::from_millis),
        })
    }

    /// The active consumers of the vhost's single-active-consumer queues (an
    /// ordered type's shards): each queue with its active consumer's tag
    /// (`<worker>:<queue>` for a worker's, [`tag_worker`]). From the
    /// consumers' list, which is current (a queue's own stats lag seconds).
    ///
    /// # Errors
    /// As [`Management::get`].
    pub async fn active_consumers(&self) -> Result<Vec<(String, String)>, ManagementError> {
        let consumers = self.get(&format!("/api/consumers/{}", percent_encode(&self.vhost))).await?;
        let consumers = consumers.as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(consumers
            .iter()
            .filter(|c| c["active"] == true && c["activity_status"] == "single_active")
            .filter_map(|c| Some((c["queue"]["name"].as_str()?.to_owned(), c["consumer_tag"].as_str()?.to_owned())))
            .collect())
    }

    /// Every queue of the URL's vhost, as the API lists them (name, type,
    /// counts, `message_stats` rates).
    ///
    /// # Errors
    /// As [`Management::get`].
    pub async fn queues(&self) -> Result<Value, ManagementError> {
        self.get(&format!("/api/queues/{}", percent_encode(&self.vhost))).await
    }

    /// `GET path`: the JSON answer.
    ///
    /// # Errors
    /// [`ManagementError`] when the answer is not a 2xx with JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ManagementError> {
        let body = self.request("GET", path, None, &[]).await?;
        serde_json::from_str(&body).map_err(|source| ManagementError::NotJson { path: path.to_owned(), source })
    }

    /// `PUT path` with a JSON body.
    ///
    /// # Errors
    /// [`ManagementError`] when the answer is not a 2xx.
    pub async fn put(&self, path: &str, body: &Value) -> Result<(), ManagementError> {
        self.request("PUT", path, Some(body.to_string()), &[]).await.map(drop)
    }

    /// `DELETE path`; a 404 counts as done.
    ///
    /// # Errors
    /// [`ManagementError`] when the answer is neither a 2xx nor a 404.
    pub async fn delete(&self, path: &str) -> Result<(), ManagementError> {
        self.request("DELETE", path, None, &[404]).await.map(drop)
    }

    /// One request; the body of a 2xx answer (or of a status in `also_fine`).
    async fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
        also_fine: &[u16],
    ) -> Result<String, ManagementError> {
        let at = format!("{}:{}", self.host, self.port);
        let io = |source| ManagementError::Io { at: at.clone(), source };
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(io)?;
            let body = body.unwrap_or_default();
            // HTTP/1.0: a plain body, no chunking, the server closes when done.
            let request = format!(
                "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.host,
                self.authorization,
                body.len()
            );
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.map_err(io)?;
            let text = String::from_utf8_lossy(&response);
            let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            if (200..300).contains(&status) || also_fine.contains(&status) {
                Ok(body)
            } else {
                Err(ManagementError::Status { method, path: path.to_owned(), status, body: body.trim().to_owned() })
            }
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| ManagementError::Timeout {
            method,
            path: path.to_owned(),
            after: TIMEOUT,
        })?
    }
}

/// What a path segment keeps as it is: letters, digits and `-._~`
/// (RFC 3986's unreserved characters); the vhost `/` becomes `%2F`.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a URL path segment or query value (the vhost `/` is
/// `%2F`): every byte but letters, digits and `-._~`.
pub fn percent_encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("jobs-test.1_x~"), "jobs-test.1_x~");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn the_password_is_not_in_debug() {
        let amqp = AmqpConfig::with_url("amqp://ann:topsecret@h:5672/v").unwrap();
        let m = Management::new(&amqp);
        assert!(!format!("{m:?}").contains("topsecret") && !format!("{m:?}").contains("Basic"));
        assert_eq!(m.vhost(), "v");
    }
}
