//! Tutorial 5's `emit_log_topic`: `emit_log_topic kern.critical "A critical kernel error"`.
//! With no receiver's pattern matching the key it says so (unroutable) and exits 1.

use clap::Parser;
use examples::tutorials::TopicLog;
use jobs_core::EnqueueOptions;

/// Sends one log line routed by `<facility>.<severity>` (tutorial 5).
#[derive(Parser)]
struct Args {
    /// The routing key, such as `kern.critical`.
    #[arg(default_value = "anonymous.info")]
    key: String,
    /// The line [default: Hello World!].
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Args { key, message } = Args::parse();
    let message = if message.is_empty() { "Hello World!".to_owned() } else { message.join(" ") };
    let job = TopicLog { key: key.clone(), message: message.clone() };
    examples::send(&job, EnqueueOptions::new().routing_key(&key), &format!("{key}:{message}")).await
}
