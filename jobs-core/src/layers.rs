//! Layered config loading: defaults < file (`jobs.toml`, `--config`,
//! `JOBS_CONFIG`) < environment (`JOBS__AMQP__URL`) < command-line overrides.
//! A bad value is an [`Error::Config`] that names its key.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

use crate::Error;

/// Where layered config comes from, lowest precedence first: the type's defaults,
/// a TOML file, `JOBS__SECTION__KEY` environment variables, then overrides.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    /// An explicit file (must exist). When `None`: `$JOBS_CONFIG` (must exist),
    /// else `./jobs.toml` if present.
    pub file: Option<PathBuf>,
    /// Dotted keys set last, from command-line flags (`worker.concurrency`).
    pub overrides: Vec<(String, Override)>,
    /// Environment variable prefix (default `JOBS`).
    pub env_prefix: Option<String>,
}

impl ConfigSource {
    /// Adds an override, to be applied after every other source.
    pub fn set(mut self, key: &str, value: impl Into<Override>) -> Self {
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
        builder = builder.set_override(key.as_str(), config::Value::from(value.clone())).map_err(config_error)?;
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

/// A value set from the command line, over every other source: text (which
/// the key's type parses, as from a file: `"30s"`, `"127.0.0.1:9090"`), a
/// whole number, a yes or no, a list of text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Override {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// Yes or no.
    Boolean(bool),
    /// A list of text (queues).
    List(Vec<String>),
    /// A table of whole numbers by name (queue weights).
    Table(Vec<(String, i64)>),
}

impl From<&str> for Override {
    fn from(text: &str) -> Self {
        Override::Text(text.to_owned())
    }
}

impl From<String> for Override {
    fn from(text: String) -> Self {
        Override::Text(text)
    }
}

impl From<bool> for Override {
    fn from(yes: bool) -> Self {
        Override::Boolean(yes)
    }
}

impl From<i64> for Override {
    fn from(n: i64) -> Self {
        Override::Integer(n)
    }
}

impl From<u16> for Override {
    fn from(n: u16) -> Self {
        Override::Integer(i64::from(n))
    }
}

impl From<u32> for Override {
    fn from(n: u32) -> Self {
        Override::Integer(i64::from(n))
    }
}

impl From<Vec<String>> for Override {
    fn from(list: Vec<String>) -> Self {
        Override::List(list)
    }
}

impl From<Override> for config::Value {
    fn from(value: Override) -> Self {
        match value {
            Override::Text(text) => text.into(),
            Override::Integer(n) => n.into(),
            Override::Boolean(yes) => yes.into(),
            Override::List(list) => list.into(),
            Override::Table(table) => {
                let table: config::Map<String, config::Value> =
                    table.into_iter().map(|(name, n)| (name, config::Value::from(n))).collect();
                table.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AmqpConfig;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        amqp: AmqpConfig,
        #[serde(default)]
        n: u16,
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
        let s: Settings = load_config(&source.clone().set("n", 9u16)).unwrap();
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
    fn a_missing_explicit_file_is_an_error() {
        let source = ConfigSource { file: Some("/nonexistent/jobs.toml".into()), ..Default::default() };
        let err = load_config::<Settings>(&source).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
