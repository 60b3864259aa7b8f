//! Tutorial 5's `receive_logs_topic`: `receive_logs_topic "kern.*" "*.critical"`
//! prints the log lines whose key matches a pattern (`#` for all).

use clap::Parser;
use examples::tutorials::TopicLog;

/// Prints the log lines whose key matches a pattern (tutorial 5) while it runs.
#[derive(Parser)]
struct Args {
    /// Patterns to bind, such as `kern.*`, `*.critical`, `#`.
    #[arg(required = true)]
    binding_key: Vec<String>,
}

fn main() -> std::process::ExitCode {
    examples::receive_from::<TopicLog>(Args::parse().binding_key)
}
