//! How to reach RabbitMQ: the `[amqp]` section ([`AmqpConfig`]), loaded from
//! the layers of `layers.rs`; its URL (`broker_url.rs`) and TLS (`tls.rs`)
//! have files of their own.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::topology::{QueueType, Topology};
use crate::{load_config, BrokerUrl, ConfigSource, Error, TlsConfig};

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
        let url =
            BrokerUrl::parse(url).map_err(|e| Error::Config { key: "amqp.url".into(), message: e.to_string() })?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
