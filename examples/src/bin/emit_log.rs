//! Tutorial 3's `emit_log`: broadcasts one log line to every running `receive_logs`.

use clap::Parser;
use examples::tutorials::Log;
use jobs_core::EnqueueOptions;

/// Broadcasts one log line (tutorial 3) to every running `receive_logs`.
#[derive(Parser)]
struct Args {
    /// The line [default: info: Hello World!].
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let message = if args.message.is_empty() { "info: Hello World!".to_owned() } else { args.message.join(" ") };
    examples::send(&Log { message: message.clone() }, EnqueueOptions::new(), &message).await
}
