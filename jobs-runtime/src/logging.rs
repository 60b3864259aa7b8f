//! Logging with tracing-subscriber: `RUST_LOG` (or `log.filter`), text or JSON, to stderr.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// `[log]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (`log.format`, default `text`).
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (`log.filter`, default `info`); `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, filter: "info".into() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for journald and log shippers.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The filter (`RUST_LOG` or `log.filter`) does not parse.
    #[error("bad log filter `{filter}`")]
    Filter {
        /// The filter.
        filter: String,
        /// Why.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber is set already.
    #[error("cannot install the log subscriber")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.filter`.
///
/// # Errors
/// [`LoggingError`] when the filter does not parse or a subscriber is already set.
pub fn init_logging(config: &LogConfig) -> Result<(), LoggingError> {
    let env_filter = filter(std::env::var("RUST_LOG").ok(), config)?;
    // Colours only for a terminal: a pipe, a file or the journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    result.map_err(LoggingError::Install)
}

/// The filter: `rust_log` (the variable's value) when set and not empty, else `log.filter`.
fn filter(rust_log: Option<String>, config: &LogConfig) -> Result<EnvFilter, LoggingError> {
    let filter = rust_log.filter(|value| !value.is_empty()).unwrap_or_else(|| config.filter.clone());
    EnvFilter::try_new(&filter).map_err(|source| LoggingError::Filter { filter, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_keeps_its_cause() {
        let config = LogConfig { filter: "[".into(), ..LogConfig::default() };
        let err = filter(None, &config).unwrap_err();
        assert!(matches!(&err, LoggingError::Filter { filter, .. } if filter == "["), "{err:?}");
        assert!(std::error::Error::source(&err).is_some(), "the parse error is kept");
        // RUST_LOG wins when set; empty is not set.
        assert!(filter(Some("debug".into()), &config).is_ok());
        assert!(filter(Some(String::new()), &config).is_err());
        let bad_env = filter(Some("[[".into()), &LogConfig::default()).unwrap_err();
        assert!(bad_env.to_string().contains("`[[`"), "names the filter: {bad_env}");
    }
}
