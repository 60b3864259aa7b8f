//! The broker URL: `amqp://user:password@host:port/vhost`, checked, its
//! password hidden in every `Debug` and `Display`.

use std::fmt;

use amqprs::connection::OpenConnectionArguments;
use serde::Deserialize;

/// A validated `amqp://` URL. Its `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BrokerUrl {
    url: url::Url,
}

impl BrokerUrl {
    /// Parses and checks an AMQP URL: `amqp://user:password@host:port/vhost`.
    ///
    /// # Errors
    /// [`UrlError`], saying what is wrong without echoing the URL (it may hold a password).
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url = url::Url::parse(text).map_err(UrlError::NotAUrl)?;
        match url.scheme() {
            "amqp" | "amqps" => {}
            other => return Err(UrlError::Scheme(other.to_owned())),
        }
        match url.host_str() {
            Some(h) if !h.is_empty() => {}
            _ => return Err(UrlError::NoHost),
        }
        if url.query().is_some() {
            return Err(UrlError::Query);
        }
        decode(url.username())?;
        decode(url.password().unwrap_or(""))?;
        decode(url.path())?;
        Ok(BrokerUrl { url })
    }

    /// The URL with the password replaced by `***`, safe for logs.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            // Only fails for URLs that cannot have a password, which ours can.
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }

    /// User and password (percent-decoded; `guest` when absent), for the
    /// management API. Never log them.
    pub fn credentials(&self) -> (String, String) {
        let user = decode(self.url.username()).unwrap_or_default();
        let user = if user.is_empty() { "guest".to_owned() } else { user };
        (user, decode(self.url.password().unwrap_or("guest")).unwrap_or_default())
    }

    /// The virtual host (`/` when the URL names none).
    pub fn vhost(&self) -> String {
        match self.url.path() {
            "" | "/" => "/".to_owned(),
            path => decode(&path[1..]).unwrap_or_default(),
        }
    }

    /// Whether this is an `amqps://` (TLS) URL.
    pub fn is_tls(&self) -> bool {
        self.url.scheme() == "amqps"
    }

    /// Host and port, for messages.
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.is_tls() { 5671 } else { 5672 };
        (self.url.host_str().unwrap_or("").to_owned(), self.url.port().unwrap_or(default))
    }

    /// Connection arguments for amqprs; `password` replaces the URL's when given.
    pub(crate) fn connection_args(
        &self,
        name: &str,
        heartbeat: u16,
        password: Option<&str>,
    ) -> OpenConnectionArguments {
        let (host, port) = self.host_port();
        let (user, url_password) = self.credentials();
        let password = password.map(str::to_owned).unwrap_or(url_password);
        OpenConnectionArguments::new(&host, port, &user, &password)
            .virtual_host(&self.vhost())
            .connection_name(name)
            .heartbeat(heartbeat)
            .finish()
    }
}

fn decode(part: &str) -> Result<String, UrlError> {
    percent_encoding::percent_decode_str(part).decode_utf8().map(|c| c.into_owned()).map_err(|_| UrlError::NotUtf8)
}

impl TryFrom<String> for BrokerUrl {
    type Error = UrlError;
    fn try_from(text: String) -> Result<Self, UrlError> {
        BrokerUrl::parse(&text)
    }
}

/// What is wrong with a broker URL. It never repeats the URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// It does not parse as a URL.
    #[error("not a URL ({0})")]
    NotAUrl(url::ParseError),
    /// Its scheme is not `amqp` or `amqps`.
    #[error("scheme `{0}` is not amqp:// or amqps://")]
    Scheme(String),
    /// It names no host.
    #[error("the URL has no host")]
    NoHost,
    /// It has query parameters (settings are config keys instead).
    #[error("query parameters are not supported; use the config keys instead")]
    Query,
    /// A part of it percent-decodes to bytes that are not UTF-8.
    #[error("the URL has a part that is not UTF-8")]
    NotUtf8,
}

impl Default for BrokerUrl {
    fn default() -> Self {
        BrokerUrl { url: url::Url::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap_or_else(|_| unreachable!()) }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parses_credentials_vhost_and_hides_the_password() {
        let url = BrokerUrl::parse("amqp://ann:s%40cret@broker.example:5673/prod").unwrap();
        let args = url.connection_args("t", 10, None);
        assert_eq!(args.get_host(), "broker.example");
        assert_eq!(args.get_port(), 5673);
        assert_eq!(args.get_virtual_host(), "prod");
        let expected = amqprs::security::SecurityCredentials::new_plain("ann", "s@cret");
        assert!(args.get_credentials() == &expected, "user and percent-decoded password");
        assert!(!format!("{url} {url:?}").contains("cret"));
        assert!(url.to_string().contains("***"));
    }

    #[test]
    fn default_url_is_the_local_broker_and_root_vhost() {
        let args = BrokerUrl::default().connection_args("t", 10, None);
        assert_eq!((args.get_host(), args.get_port(), args.get_virtual_host()), ("127.0.0.1", 5672, "/"));
    }

    #[test]
    fn bad_urls_say_why_without_echoing_the_password() {
        for (text, why) in [
            ("http://a:topsecret@h/", UrlError::Scheme("http".into())),
            ("amqp://a:topsecret@h/?heartbeat", UrlError::Query),
            ("amqp://a:%ff@h/", UrlError::NotUtf8),
        ] {
            let err = BrokerUrl::parse(text).unwrap_err();
            assert_eq!(err, why, "{text}");
            assert!(!err.to_string().contains("topsecret"));
        }
        for hostless in ["amqps://a:topsecret@/", "amqp://a:topsecret@/"] {
            let err = BrokerUrl::parse(hostless).unwrap_err();
            assert!(err.to_string().contains("host") && !err.to_string().contains("topsecret"), "{err}");
        }
        let err = BrokerUrl::parse("nonsense").unwrap_err();
        assert!(matches!(err, UrlError::NotAUrl(_)) && err.to_string().starts_with("not a URL"), "{err}");
    }
}
