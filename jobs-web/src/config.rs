//! The dashboard's settings: `[amqp]`, `[web]` and `[log]`, from the same
//! layers as the worker's (`jobs.toml`, `JOBS__WEB__ADDR`, flags).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jobs_core::{load_config, AmqpConfig, ConfigSource};
use jobs_runtime::LogConfig;
use serde::Deserialize;

/// Everything the dashboard reads from config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    /// `[amqp]`: the broker, as the workers reach it.
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// `[web]`: where and how the dashboard listens.
    #[serde(default)]
    pub web: WebConfig,
    /// `[log]`: log format and filter.
    #[serde(default)]
    pub log: LogConfig,
}

impl Settings {
    /// Loads and checks the layered config.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] naming the first bad key.
    pub fn load(source: &ConfigSource) -> Result<Self, jobs_core::Error> {
        let settings: Settings = load_config(source)?;
        settings.amqp.validate()?;
        settings.web.validate()?;
        Ok(settings)
    }
}

/// A secret from config: never shown (`***` in `Debug`).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret, for comparing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `[web]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Where to listen (`web.addr`, `--addr`; default `127.0.0.1:9180`). Any
    /// address but loopback needs authentication configured.
    pub addr: SocketAddr,
    /// A bearer token (`web.token`, best from the environment: `JOBS__WEB__TOKEN`).
    pub token: Option<Secret>,
    /// A file holding the bearer token (`web.token_file`).
    pub token_file: Option<PathBuf>,
    /// The user of basic authentication (`web.username`), with `web.password`
    /// or `web.password_file`.
    pub username: Option<String>,
    /// The password of basic authentication (`web.password`, best from `JOBS__WEB__PASSWORD`).
    pub password: Option<Secret>,
    /// A file holding the password (`web.password_file`).
    pub password_file: Option<PathBuf>,
    /// Show, but change nothing: no retry or delete (`web.read_only`, `--read-only`).
    pub read_only: bool,
    /// How much history the dashboard keeps and reads back at start
    /// (`web.window`, default `7d`; at most `amqp.events_max_age`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Without authentication, the `Host` names requests may use besides
    /// `localhost` and loopback addresses (`web.allowed_hosts`): a name of
    /// yours that a proxy on this host forwards. Other names are refused, so
    /// that a web page cannot reach the dashboard by pointing its own name at
    /// 127.0.0.1 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9180)),
            token: None,
            token_file: None,
            username: None,
            password: None,
            password_file: None,
            read_only: false,
            window: Duration::from_secs(7 * 86400),
            allowed_hosts: Vec::new(),
        }
    }
}

/// How requests must authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No authentication: only on a loopback address.
    None,
    /// `Authorization: Bearer <token>`.
    Token(Secret),
    /// `Authorization: Basic` with this user and password.
    Basic(String, Secret),
}

impl WebConfig {
    /// Checks values that serde cannot.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] naming the key.
    pub fn validate(&self) -> Result<(), jobs_core::Error> {
        let bad = |key: &str, message: &str| jobs_core::Error::Config { key: key.into(), message: message.into() };
        if self.window < Duration::from_secs(600) {
            return Err(bad("web.window", "must be at least 10m"));
        }
        if self.username.is_some() != (self.password.is_some() || self.password_file.is_some()) {
            return Err(bad(
                "web.username",
                "basic authentication needs web.username and web.password (or web.password_file)",
            ));
        }
        Ok(())
    }

    /// The authentication these settings ask for, secrets read from their files.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] when a secret file cannot be read or is empty.
    pub fn auth(&self) -> Result<Auth, jobs_core::Error> {
        let read = |key: &str, path: &PathBuf| {
            let text = std::fs::read_to_string(path).map_err(|e| jobs_core::Error::Config {
                key: key.into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let secret = text.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                return Err(jobs_core::Error::Config {
                    key: key.into(),
                    message: format!("{} is empty", path.display()),
                });
            }
            Ok(Secret::from(secret))
        };
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(read("web.token_file", path)?),
            (None, None) => None,
        };
        if let Some(token) = token.filter(|t| !t.expose().is_empty()) {
            return Ok(Auth::Token(token));
        }
        match (&self.username, &self.password, &self.password_file) {
            (Some(user), Some(password), _) => Ok(Auth::Basic(user.clone(), password.clone())),
            (Some(user), None, Some(path)) => Ok(Auth::Basic(user.clone(), read("web.password_file", path)?)),
            _ => Ok(Auth::None),
        }
    }

    /// The authentication to use on `addr`.
    ///
    /// # Errors
    /// [`jobs_core::Error::Config`] when `addr` is not loopback and no
    /// authentication is configured: the dashboard refuses to start.
    pub fn auth_for_listening(&self) -> Result<Auth, jobs_core::Error> {
        let auth = self.auth()?;
        if auth == Auth::None && !self.addr.ip().is_loopback() {
            return Err(jobs_core::Error::Config {
                key: "web.addr".into(),
                message: format!(
                    "refusing to listen on {} without authentication: anyone who reaches it could retry and delete jobs; \
                     set web.token_file (or JOBS__WEB__TOKEN), or web.username and web.password_file, or listen on 127.0.0.1",
                    self.addr
                ),
            });
        }
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_authentication() {
        let open = WebConfig { addr: "0.0.0.0:9180".parse().unwrap(), ..WebConfig::default() };
        let err = open.auth_for_listening().unwrap_err().to_string();
        assert!(err.contains("web.addr") && err.contains("without authentication"), "{err}");
        assert_eq!(WebConfig::default().auth_for_listening().unwrap(), Auth::None);
        let with_token = WebConfig { token: Some("t0k".into()), ..open.clone() };
        assert_eq!(with_token.auth_for_listening().unwrap(), Auth::Token("t0k".into()));
        let basic = WebConfig { username: Some("ops".into()), password: Some("pw".into()), ..open };
        assert_eq!(basic.auth_for_listening().unwrap(), Auth::Basic("ops".into(), "pw".into()));
        assert_eq!(format!("{:?}", Secret::from("pw")), "***");
    }

    #[test]
    fn a_user_without_a_password_names_the_key() {
        let half = WebConfig { username: Some("ops".into()), ..WebConfig::default() };
        assert!(half.validate().unwrap_err().to_string().contains("web.username"));
    }
}
