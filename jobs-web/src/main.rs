//! `jobs-web`: the dashboard as a daemon. `jobs-web --addr 127.0.0.1:9180`;
//! config from `jobs.toml`, `JOBS__WEB__...`, `JOBS__AMQP__...` and flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jobs_core::ConfigSource;
use jobs_runtime::Threads;
use jobs_web::{Dashboard, Settings};

/// Serves the jobs dashboard: workers, queues, throughput, dead jobs.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:9180]; any other address than
    /// loopback needs authentication (web.token_file, or web.username and web.password_file).
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// Show, but change nothing.
    #[arg(long)]
    read_only: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    jobs_runtime::run(Threads::Multi, "jobs-web", async { run(cli).await.map(|()| ExitCode::SUCCESS) })
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut source = ConfigSource { file: cli.config, ..ConfigSource::default() };
    if let Some(addr) = cli.addr {
        source = source.set("web.addr", addr);
    }
    if cli.read_only {
        source = source.set("web.read_only", true);
    }
    let settings = Settings::load(&source)?;
    settings.web.auth_for_listening()?;
    jobs_runtime::init_logging(&settings.log)?;
    let addr = settings.web.addr;
    let dashboard = Dashboard::new(settings.amqp, settings.web)?;
    let tasks = dashboard.start();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "dashboard on http://{addr}/");
    axum::serve(listener, dashboard.router()).with_graceful_shutdown(jobs_runtime::stop_signal()).await?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}
