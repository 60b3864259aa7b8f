//! Tutorial 4's `receive_logs_direct`: `receive_logs_direct warning error` prints
//! the log lines of those severities.

use clap::Parser;
use examples::tutorials::DirectLog;

/// Prints the log lines of the given severities (tutorial 4) while it runs.
#[derive(Parser)]
struct Args {
    /// Severities to bind: info, warning, error.
    #[arg(required = true)]
    severity: Vec<String>,
}

fn main() -> std::process::ExitCode {
    examples::receive_from::<DirectLog>(Args::parse().severity)
}
