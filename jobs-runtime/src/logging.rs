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
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => value,
        _ => config.filter.clone(),
    };
    let env_filter =
        EnvFilter::try_new(&filter).map_err(|source| LoggingError::Filter { filter: filter.clone(), source })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter).with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    result.map_err(LoggingError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_keeps_its_cause() {
        let config = LogConfig { filter: "[".into(), ..LogConfig::default() };
        // RUST_LOG wins when set; the test's own filter is the one checked only without it.
        if std::env::var_os("RUST_LOG").is_none() {
            let err = init_logging(&config).unwrap_err();
            assert!(matches!(err, LoggingError::Filter { .. }), "{err:?}");
            assert!(std::error::Error::source(&err).is_some(), "the parse error is kept");
        }
    }
}
