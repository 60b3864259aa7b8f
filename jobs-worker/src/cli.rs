//! The worker's command line. Flags override config file and environment.

use std::path::PathBuf;

use clap::Parser;
use jobs_core::ConfigSource;

/// Runs the background jobs linked into this binary.
///
/// Config comes from, lowest first: defaults, the file (`--config`, `$JOBS_CONFIG`
/// or `./jobs.toml`), `JOBS__SECTION__KEY` environment variables (for example
/// `JOBS__AMQP__URL`), then these flags.
#[derive(Debug, Clone, Default, Parser)]
#[command(version)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Queues to consume, comma-separated [default: every queue of the linked job types].
    #[arg(long, short = 'q', value_delimiter = ',', value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Jobs run at once per queue, and the prefetch [default: 1].
    #[arg(long, short = 'n')]
    pub concurrency: Option<u16>,
    /// How long a stop waits for running jobs, such as `30s` or `2m` [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub grace_period: Option<String>,
    /// This worker's id in logs [default: host:pid:n].
    #[arg(long)]
    pub id: Option<String>,
    /// Log format: `text` or `json` [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl Cli {
    /// The layered config source these flags describe.
    pub fn config_source(&self) -> ConfigSource {
        let mut source = ConfigSource { file: self.config.clone(), ..ConfigSource::default() };
        if !self.queues.is_empty() {
            source = source.set("worker.queues", self.queues.clone());
        }
        if let Some(n) = self.concurrency {
            source = source.set("worker.concurrency", n);
        }
        if let Some(grace) = &self.grace_period {
            source = source.set("worker.grace_period", grace.clone());
        }
        if let Some(id) = &self.id {
            source = source.set("worker.id", id.clone());
        }
        if let Some(format) = &self.log_format {
            source = source.set("log.format", format.clone());
        }
        source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Settings};

    #[test]
    fn flags_override_the_file() {
        let path = std::env::temp_dir().join(format!("jobs-cli-{}.toml", std::process::id()));
        std::fs::write(&path, "[worker]\nconcurrency = 2\nqueues = [\"file\"]\n").unwrap();
        let cli =
            Cli::parse_from(["w", "--config", path.to_str().unwrap(), "-q", "a,b", "-n", "8", "--grace-period", "3s"]);
        let s = Settings::load(&cli.config_source()).unwrap();
        assert_eq!((s.worker.queues, s.worker.concurrency), (vec!["a".to_string(), "b".to_string()], 8));
        assert_eq!(s.worker.grace_period, std::time::Duration::from_secs(3));

        let cli = Cli::parse_from(["w", "--config", path.to_str().unwrap(), "--log-format", "yaml"]);
        match Settings::load(&cli.config_source()) {
            Err(Error::Core(jobs_core::Error::Config { key, .. })) => assert_eq!(key, "log.format"),
            other => panic!("expected a config error, got {other:?}"),
        }
        std::fs::remove_file(path).unwrap();
    }
}
