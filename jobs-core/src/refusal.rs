//! What the broker refuses, and why: the reply code and text of a
//! `connection.close` or `channel.close`, read from amqprs's errors and close
//! frames, made into errors that say what to do (a wrong password, a vhost
//! that does not exist, a permission missing, a message too large).

use crate::{BrokerUrl, Error};

/// A close sent by the broker: its reply code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The AMQP reply code (403 `ACCESS_REFUSED`, 404 `NOT_FOUND`, 406
    /// `PRECONDITION_FAILED`, 530 `NOT_ALLOWED`...).
    pub code: u16,
    /// The broker's words.
    pub text: String,
}

impl Closure {
    /// When the broker closed a consumer's channel because a delivery on it
    /// stayed unacknowledged past its `consumer_timeout`: that timeout, when
    /// its words say it (RabbitMQ 3.10 and later: "delivery acknowledgement on
    /// channel 1 timed out. Timeout value used: 1800000 ms. ..."), or zero.
    pub fn consumer_timeout(&self) -> Option<std::time::Duration> {
        if self.code != 406 || !self.text.contains("acknowledgement") || !self.text.contains("timed out") {
            return None;
        }
        let used = self.text.split("Timeout value used:").nth(1).map(str::trim_start);
        let millis = used.and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok());
        Some(std::time::Duration::from_millis(millis.unwrap_or(0)))
    }

    /// From a channel close frame.
    pub(crate) fn of_channel(close: &amqprs::CloseChannel) -> Self {
        Closure { code: close.reply_code(), text: close.reply_text().to_owned() }
    }

    /// From the text amqprs makes of a close it received, such as
    /// `Close { reply_code: 530, reply_text: ShortStr(43, "NOT_ALLOWED - vhost x not found"), ... }`.
    pub fn parse(text: &str) -> Option<Self> {
        let code = text.split("reply_code: ").nth(1)?;
        let code: u16 = code[..code.find(|c: char| !c.is_ascii_digit())?].parse().ok()?;
        let rest = text.split("reply_text: ").nth(1)?;
        let start = rest.find('"')? + 1;
        let end = rest[start..].find("\")").map(|e| start + e).unwrap_or(rest.len());
        Some(Closure { code, text: rest[start..end].replace("\\\"", "\"") })
    }
}

impl std::fmt::Display for Closure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, self.code)
    }
}

/// The error of a `Connection::open` to `url` that failed with `source`.
pub(crate) fn connect_error(url: &BrokerUrl, source: amqprs::error::Error) -> Error {
    let (host, port) = url.host_port();
    let at = format!("{host}:{port}");
    let (user, _) = url.credentials();
    match Closure::parse(&source.to_string()) {
        Some(Closure { code: 403, .. }) => Error::LoginRefused { user, at },
        Some(Closure { code: 530, text }) if text.contains("not found") => Error::NoVhost { vhost: url.vhost(), at },
        Some(Closure { code: 530, text }) => Error::AccessRefused {
            user,
            permission: "`access`",
            resource: format!("vhost `{}`", url.vhost()),
            detail: text,
        },
        _ => Error::Connect { url: url.redacted(), source: crate::Cause::new(source) },
    }
}

/// The error of operation `op` on `name`, refused by the broker with `closure`.
pub(crate) fn channel_error(op: &'static str, name: &str, closure: &Closure) -> Error {
    match closure.code {
        403 => access_refused(op, closure),
        406 if op.contains(".declare") => {
            let migration = if closure.text.contains("x-max-priority") {
                "a queue's priorities are set when it is made: if the types of the queue are to take priorities, mark them all #[job(priorities)] in every binary that sends to it or runs it, then drain the queue and delete it (the next declare makes it anew), or give the types a new queue (docs/job-control.md: adding or removing priorities)"
            } else {
                "delete it or change the config (docs/deployment.md: switching between classic and quorum queues)"
            };
            Error::TopologyMismatch { name: name.to_owned(), detail: closure.text.clone(), migration }
        }
        _ => Error::Refused { op, name: name.to_owned(), detail: closure.to_string() },
    }
}

/// The operation name of declaring a queue with a dead-letter exchange.
pub(crate) const DECLARE_DEAD_LETTERING: &str = "queue.declare (dead-lettering)";

/// `ACCESS_REFUSED - access to queue 'q' in vhost 'v' refused for user 'u'`:
/// which permission `op` needed on what, and who lacked it.
pub(crate) fn access_refused(op: &'static str, closure: &Closure) -> Error {
    let quoted = |after: &str| {
        let rest = closure.text.split(after).nth(1)?;
        let rest = rest.strip_prefix('\'')?;
        Some(rest[..rest.find('\'')?].to_owned())
    };
    let (kind, name) = ["queue", "exchange", "topic"]
        .iter()
        .find_map(|kind| quoted(&format!("access to {kind} ")).map(|name| (*kind, name)))
        .unwrap_or(("resource", "?".to_owned()));
    let permission = match (op, kind) {
        // Declaring a queue that dead-letters also needs `read` on it (and
        // `write` on its dead-letter exchange); the broker does not say which.
        (DECLARE_DEAD_LETTERING, _) => "`configure` or `read`",
        ("queue.declare" | "exchange.declare" | "queue.delete" | "exchange.delete", _) => "`configure`",
        ("basic.publish", _) | ("queue.bind", "queue") | ("exchange.bind", "exchange") => "`write`",
        ("basic.consume" | "basic.get" | "queue.purge", _) | ("queue.bind", _) => "`read`",
        _ => "`access`",
    };
    let name =
        if kind == "exchange" && name == "amq.default" { "amq.default (the default exchange)".into() } else { name };
    let vhost = quoted("in vhost ").unwrap_or_default();
    Error::AccessRefused {
        user: quoted("for user ").unwrap_or_default(),
        permission,
        resource: format!("{kind} `{name}` in vhost `{vhost}`"),
        detail: closure.text.clone(),
    }
}

/// Keeps what the broker says when it closes a channel, so that a call on
/// it that fails can say why ([`ChannelWatch::error`]). amqprs only reports
/// "channel closed" to the caller; the reason comes to the channel's callback.
#[derive(Debug, Default)]
pub struct ChannelWatch {
    closure: std::sync::Mutex<Option<Closure>>,
    /// Told when the broker closes the channel.
    closed: tokio::sync::Notify,
}

impl ChannelWatch {
    /// Watches `channel` (registers its callback).
    ///
    /// # Errors
    /// [`Error::Amqp`] when the callback cannot be registered (the channel is gone).
    pub async fn on(channel: &amqprs::channel::Channel) -> Result<std::sync::Arc<Self>, Error> {
        let watch = std::sync::Arc::new(ChannelWatch::default());
        channel
            .register_callback(WatchCallback(watch.clone()))
            .await
            .map_err(Error::amqp("channel.register_callback"))?;
        Ok(watch)
    }

    /// What the broker said when it closed the channel, if it did.
    pub fn closure(&self) -> Option<Closure> {
        self.closure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the broker closes the channel, and says what it said.
    /// (A connection that goes with the network closes no channel this way.)
    pub async fn closed(&self) -> Closure {
        loop {
            let told = self.closed.notified();
            tokio::pin!(told);
            // Registered before the check: a close in between still wakes it.
            told.as_mut().enable();
            if let Some(closure) = self.closure() {
                return closure;
            }
            told.await;
        }
    }

    /// The error of `op` on `name` that failed with `source`: the broker's
    /// refusal when it closed the channel, else the amqprs error.
    pub fn error(&self, op: &'static str, name: &str, source: amqprs::error::Error) -> Error {
        match self.closure() {
            Some(closure) => channel_error(op, name, &closure),
            None => Error::amqp(op)(source),
        }
    }
}

struct WatchCallback(std::sync::Arc<ChannelWatch>);

#[async_trait::async_trait]
impl amqprs::callbacks::ChannelCallback for WatchCallback {
    async fn close(
        &mut self,
        _channel: &amqprs::channel::Channel,
        close: amqprs::CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        *self.0.closure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Closure::of_channel(&close));
        self.0.closed.notify_waiters();
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _cancel: amqprs::Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _channel: &amqprs::channel::Channel, _active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(true)
    }

    async fn publish_ack(&mut self, _channel: &amqprs::channel::Channel, _ack: amqprs::Ack) {}

    async fn publish_nack(&mut self, _channel: &amqprs::channel::Channel, _nack: amqprs::Nack) {}

    async fn publish_return(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _ret: amqprs::Return,
        _props: amqprs::BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_timeout_is_read_from_the_brokers_words() {
        let text = "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 10000 ms. This timeout value can be configured, see consumers doc guide to learn more";
        let closure = Closure { code: 406, text: text.into() };
        assert_eq!(closure.consumer_timeout(), Some(std::time::Duration::from_secs(10)));
        let unsaid = Closure { code: 406, text: "PRECONDITION_FAILED - delivery acknowledgement timed out".into() };
        assert_eq!(unsaid.consumer_timeout(), Some(std::time::Duration::ZERO), "a timeout, value unknown");
        let other = Closure { code: 406, text: "PRECONDITION_FAILED - unknown delivery tag 5".into() };
        assert_eq!(other.consumer_timeout(), None);
        assert_eq!(Closure { code: 404, text: text.into() }.consumer_timeout(), None);
    }

    #[test]
    fn closes_are_read_from_amqprs_text() {
        let text = r#"failed to open connection, reason: Close(MethodHeader { class_id: 10, method_id: 50 }, Close { reply_code: 530, reply_text: ShortStr(43, "NOT_ALLOWED - vhost no-such-vhost not found"), class_id: 10, method_id: 40 })"#;
        let closure = Closure::parse(text).unwrap();
        assert_eq!(closure, Closure { code: 530, text: "NOT_ALLOWED - vhost no-such-vhost not found".into() });
        assert_eq!(Closure::parse("network io error: Connection reset by peer"), None);
    }

    #[test]
    fn a_refused_login_and_a_missing_vhost_say_so() {
        let url = BrokerUrl::parse("amqp://nouser:secret@127.0.0.1:5672/nosuch").unwrap();
        let login = connect_error(
            &url,
            amqprs::error::Error::ConnectionOpenError(
                r#"failed to tune connection params, reason: Close(MethodHeader { class_id: 10, method_id: 50 }, Close { reply_code: 403, reply_text: ShortStr(108, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."), class_id: 0, method_id: 0 })"#.into(),
            ),
        );
        assert_eq!(
            login.to_string(),
            "RabbitMQ refused the login of user `nouser` at 127.0.0.1:5672: wrong user or password?"
        );
        let vhost = connect_error(
            &url,
            amqprs::error::Error::ConnectionOpenError(
                r#"reason: Close { reply_code: 530, reply_text: ShortStr(36, "NOT_ALLOWED - vhost nosuch not found"), class_id: 10, method_id: 40 }"#.into(),
            ),
        );
        assert_eq!(vhost.to_string(), "vhost `nosuch` does not exist on 127.0.0.1:5672 (amqp.url)");
        let other = connect_error(&url, amqprs::error::Error::NetworkError("Connection refused (os error 111)".into()));
        assert!(matches!(other, Error::Connect { .. }) && !format!("{other:?}").contains("secret"));
    }

    #[test]
    fn a_missing_permission_names_the_resource_and_the_permission() {
        let refused = |op, text: &str| access_refused(op, &Closure { code: 403, text: text.into() }).to_string();
        assert_eq!(
            refused("queue.declare", "ACCESS_REFUSED - access to queue 'emails' in vhost 'app' refused for user 'ann'"),
            "RabbitMQ refused user `ann` the `configure` permission on queue `emails` in vhost `app`"
        );
        assert!(refused(
            "basic.publish",
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'app' refused for user 'ann'"
        )
        .contains("the `write` permission on exchange `amq.default (the default exchange)`"));
        assert!(refused("basic.consume", "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'")
            .contains("the `read` permission on queue `q`"));
        assert!(refused(
            DECLARE_DEAD_LETTERING,
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
        )
        .contains("the `configure` or `read` permission on queue `q`"));
    }
}
