//! Tutorial 4's `emit_log_direct`: `emit_log_direct error "Run. Run. Or it will explode."`.
//! With no receiver bound for the severity it says so (unroutable) and exits 1.

use clap::Parser;
use examples::tutorials::DirectLog;
use jobs_core::EnqueueOptions;

/// Sends one log line routed by its severity (tutorial 4).
#[derive(Parser)]
struct Args {
    /// The severity, the routing key.
    #[arg(default_value = "info")]
    severity: String,
    /// The line [default: Hello World!].
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Args { severity, message } = Args::parse();
    let message = if message.is_empty() { "Hello World!".to_owned() } else { message.join(" ") };
    let job = DirectLog { severity: severity.clone(), message: message.clone() };
    examples::send(&job, EnqueueOptions::new().routing_key(&severity), &format!("{severity}:{message}")).await
}
