//! Broker settings and layered config loading:
//! defaults < file (`jobs.toml`, `--config`, `JOBS_CONFIG`) < environment
//! (`JOBS__AMQP__URL`) < command-line overrides.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use amqprs::connection::OpenConnectionArguments;
use serde::{de::DeserializeOwned, Deserialize};

use crate::topology::{QueueType, Topology};
use crate::Error;

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
    /// A message that says what is wrong, without echoing the URL (it may hold a password).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "amqp" | "amqps" => {}
            other => return Err(format!("scheme `{other}` is not amqp:// or amqps://")),
        }
        match url.host_str() {
            Some(h) if !h.is_empty() => {}
            _ => return Err("the URL has no host".into()),
        }
        if url.query().is_some() {
            return Err("query parameters are not supported; use the config keys instead".into());
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

fn decode(part: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "the URL has a part that is not UTF-8".to_owned())
}

impl TryFrom<String> for BrokerUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        BrokerUrl::parse(&text)
    }
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

/// How to reach RabbitMQ (config section `[amqp]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL (`amqp.url`), default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: BrokerUrl,
    /// How long an enqueue waits for the broker's confirm (`amqp.confirm_timeout`, default `30s`).
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// AMQP heartbeat in seconds (`amqp.heartbeat`, default 30; 0 turns it off).
    pub heartbeat: u16,
    /// More brokers of the same cluster (`amqp.fallback_urls`), tried in turn
    /// after `url` when connecting and reconnecting.
    pub fallback_urls: Vec<BrokerUrl>,
    /// How long connecting may keep retrying, at start and after a lost
    /// connection, before an enqueue fails (`amqp.reconnect_timeout`, default `30s`).
    #[serde(with = "humantime_serde")]
    pub reconnect_timeout: Duration,
    /// Read the broker password from this file instead of the URL
    /// (`amqp.password_file`; a trailing newline is ignored). Keeps it off the
    /// command line and out of the environment.
    pub password_file: Option<PathBuf>,
    /// Port of the broker's management HTTP API on the `amqp.url` host
    /// (`amqp.management_port`, default 15672): `worker queues` reads unacked counts there.
    pub management_port: u16,
    /// TLS settings for `amqps://` URLs (`[amqp.tls]`).
    pub tls: TlsConfig,
    /// How long [`Respond::call`](crate::Respond::call) waits for an answer (`amqp.call_timeout`, default `30s`).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Queue type of job, dead and delay queues (`amqp.queue_type`: `classic`
    /// (default) or `quorum`). Client and workers must agree.
    pub queue_type: QueueType,
    /// How long the stream of worker heartbeats keeps them (`amqp.events_max_age`,
    /// default `7d`): the history the dashboard can show. Workers and
    /// dashboards of a vhost must agree (it is an argument of the stream).
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// The largest message body an enqueue sends, in bytes
    /// (`amqp.max_message_size`, default 128 MiB, RabbitMQ's own default
    /// limit); a larger job is [`Error::TooLarge`] at once, not sent.
    pub max_message_size: usize,
    /// How many times a job may come back unacked (its worker died, or lost
    /// the broker while it ran) before it is dead-lettered (`amqp.max_crashes`,
    /// default 3). Counted by the worker on both queue types; quorum queues get
    /// a `x-delivery-limit` of 100 as a backstop (so this must be below 100).
    pub max_crashes: u32,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: BrokerUrl::default(),
            confirm_timeout: Duration::from_secs(30),
            heartbeat: 30,
            fallback_urls: Vec::new(),
            reconnect_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
            password_file: None,
            management_port: 15672,
            tls: TlsConfig::default(),
            queue_type: QueueType::Classic,
            max_message_size: 128 << 20,
            events_max_age: Duration::from_secs(7 * 86400),
            max_crashes: 3,
        }
    }
}

impl AmqpConfig {
    /// The default settings with another URL.
    ///
    /// # Errors
    /// [`Error::Config`] naming `amqp.url` when the URL is not valid.
    pub fn with_url(url: &str) -> Result<Self, Error> {
        let url = BrokerUrl::parse(url).map_err(|message| Error::Config { key: "amqp.url".into(), message })?;
        Ok(AmqpConfig { url, ..AmqpConfig::default() })
    }

    /// The `[amqp]` section of the layered config: defaults < file
    /// (`$JOBS_CONFIG`, else `./jobs.toml` if present) < `JOBS__AMQP__...`
    /// environment variables. The same layers the worker reads, so an app that
    /// only enqueues needs only this crate. Other sections are left to their readers.
    ///
    /// ```no_run
    /// let amqp = jobs_core::AmqpConfig::load()?;
    /// println!("broker: {}", amqp.url); // the password shows as ***
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn load() -> Result<Self, Error> {
        Self::load_from(&ConfigSource::default())
    }

    /// [`AmqpConfig::load`] from other sources (a given file, overrides).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn load_from(source: &ConfigSource) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Sections {
            #[serde(default)]
            amqp: AmqpConfig,
        }
        let sections: Sections = load_config(source)?;
        sections.amqp.validate()?;
        Ok(sections.amqp)
    }

    /// The broker URLs to try, in order.
    pub fn urls(&self) -> impl Iterator<Item = &BrokerUrl> {
        std::iter::once(&self.url).chain(&self.fallback_urls)
    }

    /// The topology these settings ask for.
    pub fn topology(&self) -> Topology {
        Topology::new(self.queue_type, DELIVERY_LIMIT).with_events_max_age(self.events_max_age)
    }

    /// Checks values that serde cannot.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.confirm_timeout.is_zero() {
            return Err(Error::Config { key: "amqp.confirm_timeout".into(), message: "must be more than 0".into() });
        }
        if self.max_crashes >= DELIVERY_LIMIT {
            let message = format!("must be below {DELIVERY_LIMIT}, the quorum queues' delivery limit");
            return Err(Error::Config { key: "amqp.max_crashes".into(), message });
        }
        Ok(())
    }
}

/// The `x-delivery-limit` of quorum job queues: a backstop well above
/// `amqp.max_crashes` (which must be below it). The worker counts returns
/// itself (`x-crashes`), on both queue types, and puts a returned job back as
/// a new message, so the broker's own count stays low; it only acts when a job
/// keeps coming back without a worker getting as far as counting it. A
/// constant, so that changing `amqp.max_crashes` needs no queue migration.
pub(crate) const DELIVERY_LIMIT: u32 = 100;

/// TLS settings (`[amqp.tls]`), used for `amqps://` URLs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate (`amqp.tls.ca_file`);
    /// default: the Mozilla roots built in.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that ask for one (`amqp.tls.cert_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (`amqp.tls.key_file`).
    pub key_file: Option<PathBuf>,
}

impl AmqpConfig {
    /// The password from `amqp.password_file`, if set.
    pub(crate) fn file_password(&self) -> Result<Option<String>, Error> {
        let Some(path) = &self.password_file else { return Ok(None) };
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            key: "amqp.password_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
    }

    /// The TLS adaptor for an `amqps://` URL.
    pub(crate) fn tls_adaptor(&self, url: &BrokerUrl) -> Result<amqprs::tls::TlsAdaptor, Error> {
        use rustls_pki_types::pem::PemObject;
        let bad = |key: &str, message: String| Error::Config { key: key.into(), message };
        // rustls needs a process-wide crypto provider; install ring's once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let domain = url.host_port().0;
        let tls = &self.tls;
        if let Some(ca) = &tls.ca_file {
            rustls_pki_types::CertificateDer::pem_file_iter(ca)
                .map_err(|e| bad("amqp.tls.ca_file", format!("cannot read {}: {e}", ca.display())))?
                .next()
                .ok_or_else(|| bad("amqp.tls.ca_file", format!("{} holds no PEM certificate", ca.display())))?
                .map_err(|e| bad("amqp.tls.ca_file", format!("{}: {e}", ca.display())))?;
        }
        let adaptor = match (&tls.cert_file, &tls.key_file) {
            (None, None) => amqprs::tls::TlsAdaptor::without_client_auth(tls.ca_file.as_deref(), domain),
            (Some(cert), Some(key)) => {
                // amqprs panics on a bad key: check it first.
                rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad("amqp.tls.key_file", format!("{}: {e}", key.display())))?;
                amqprs::tls::TlsAdaptor::with_client_auth(tls.ca_file.as_deref(), cert, key, domain)
            }
            _ => return Err(bad("amqp.tls", "cert_file and key_file go together".into())),
        };
        adaptor.map_err(|e| bad("amqp.tls", e.to_string()))
    }
}

/// Where layered config comes from, lowest precedence first: the type's defaults,
/// a TOML file, `JOBS__SECTION__KEY` environment variables, then overrides.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    /// An explicit file (must exist). When `None`: `$JOBS_CONFIG` (must exist),
    /// else `./jobs.toml` if present.
    pub file: Option<PathBuf>,
    /// Dotted keys set last, from command-line flags (`worker.concurrency`).
    pub overrides: Vec<(String, config::Value)>,
    /// Environment variable prefix (default `JOBS`).
    pub env_prefix: Option<String>,
}

impl ConfigSource {
    /// Adds an override, to be applied after every other source.
    pub fn set(mut self, key: &str, value: impl Into<config::Value>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }
}

/// Loads a typed config from the layered sources.
///
/// # Errors
/// [`Error::Config`] naming the first key that is missing or wrong.
pub fn load_config<T: DeserializeOwned>(source: &ConfigSource) -> Result<T, Error> {
    let prefix = source.env_prefix.clone().unwrap_or_else(|| "JOBS".to_owned());
    let mut builder = config::Config::builder();
    let explicit = source.file.clone().or_else(|| std::env::var_os(format!("{prefix}_CONFIG")).map(PathBuf::from));
    match explicit {
        Some(path) => {
            if !path.exists() {
                return Err(Error::Config {
                    key: "config".into(),
                    message: format!("file {} does not exist", path.display()),
                });
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        None => {
            builder = builder.add_source(config::File::new("jobs.toml", config::FileFormat::Toml).required(false));
        }
    }
    builder = builder.add_source(
        config::Environment::with_prefix(&prefix)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("worker.queues")
            .with_list_parse_key("worker.extra_queues")
            .with_list_parse_key("amqp.fallback_urls")
            .try_parsing(true),
    );
    for (key, value) in &source.overrides {
        builder = builder.set_override(key.as_str(), value.clone()).map_err(config_error)?;
    }
    builder.build().and_then(|c| c.try_deserialize()).map_err(config_error)
}

fn config_error(err: config::ConfigError) -> Error {
    use config::ConfigError as E;
    match err {
        E::Type { key, unexpected, expected, .. } => Error::Config {
            key: key.unwrap_or_else(|| "config".into()),
            message: format!("expected {expected}, found {unexpected}"),
        },
        E::At { error, key, .. } => {
            let inner = config_error(*error);
            match (key, inner) {
                (Some(key), Error::Config { key: inner_key, message }) if inner_key == "config" => {
                    Error::Config { key, message }
                }
                (_, inner) => inner,
            }
        }
        E::NotFound(key) => Error::Config { key, message: "missing".into() },
        E::FileParse { uri, cause } => Error::Config {
            key: "config".into(),
            message: format!("cannot parse {}: {cause}", uri.unwrap_or_else(|| "file".into())),
        },
        other => Error::Config { key: "config".into(), message: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        amqp: AmqpConfig,
        #[serde(default)]
        n: u16,
    }

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
            ("http://a:topsecret@h/", "scheme"),
            ("amqps://a:topsecret@/", "host"),
            ("amqp://a:topsecret@/", "host"),
            ("amqp://a:topsecret@h/?heartbeat", "query"),
            ("nonsense", "not a URL"),
        ] {
            let err = BrokerUrl::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("topsecret"));
        }
    }

    #[test]
    fn layers_override_in_order_and_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("jobs-core-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "n = 3\n[amqp]\nurl = \"amqp://u:pw@filehost/\"\n").unwrap();
        let source =
            ConfigSource { file: Some(file.clone()), env_prefix: Some("JOBSTEST1".into()), ..Default::default() };
        let s: Settings = load_config(&source).unwrap();
        assert_eq!((s.n, s.amqp.url.host_port().0.as_str()), (3, "filehost"));
        let s: Settings = load_config(&source.clone().set("n", 9)).unwrap();
        assert_eq!(s.n, 9);

        std::fs::write(&file, "n = \"many\"\n").unwrap();
        match load_config::<Settings>(&source) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "n"),
            other => panic!("expected a config error, got {other:?}"),
        }
        std::fs::write(&file, "[amqp]\nurl = \"amqp://u:topsecret@/\"\n").unwrap();
        let err = load_config::<Settings>(&source).unwrap_err().to_string();
        assert!(err.contains("amqp.url") && err.contains("host") && !err.contains("topsecret"), "{err}");
        std::fs::write(&file, "[amqp]\nconfirm_timeout = \"soon\"\n").unwrap();
        let err = load_config::<Settings>(&source).unwrap_err().to_string();
        assert!(err.contains("amqp.confirm_timeout"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_amqp_section_loads_alone_beside_other_sections() {
        let file = std::env::temp_dir().join(format!("jobs-core-amqp-{}.toml", std::process::id()));
        std::fs::write(&file, "[amqp]\nheartbeat = 7\n[worker]\nconcurrency = 3\n[log]\nformat = \"json\"\n").unwrap();
        let source =
            ConfigSource { file: Some(file.clone()), env_prefix: Some("JOBSTEST2".into()), ..Default::default() };
        assert_eq!(AmqpConfig::load_from(&source).unwrap().heartbeat, 7);
        std::fs::write(&file, "[amqp]\nconfirm_timeout = \"0s\"\n").unwrap();
        let err = AmqpConfig::load_from(&source).unwrap_err().to_string();
        assert!(err.contains("amqp.confirm_timeout"), "{err}");
        std::fs::write(&file, "[amqp]\nheartbeats = 7\n").unwrap();
        let err = AmqpConfig::load_from(&source).unwrap_err().to_string();
        assert!(err.contains("heartbeats"), "{err}");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let source = ConfigSource { file: Some("/nonexistent/jobs.toml".into()), ..Default::default() };
        let err = load_config::<Settings>(&source).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
