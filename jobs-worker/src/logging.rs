//! Logging with tracing-subscriber: `RUST_LOG` (or `log.filter`), text or JSON.

use tracing_subscriber::EnvFilter;

use crate::{Error, LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.filter`.
///
/// # Errors
/// [`Error::Logging`] when the filter does not parse or a subscriber is already set.
pub fn init_logging(config: &LogConfig) -> Result<(), Error> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(value),
        _ => EnvFilter::try_new(&config.filter),
    }
    .map_err(|e| Error::Logging(format!("bad log filter: {e}")))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    result.map_err(|e| Error::Logging(e.to_string()))
}
