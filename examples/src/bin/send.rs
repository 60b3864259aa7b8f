//! Tutorial 1's `send`: one "Hello World!" job to queue `hello` (`--queue` to use another).

use clap::Parser;
use examples::tutorials::Hello;
use jobs_core::EnqueueOptions;

/// Sends one Hello job (tutorial 1), confirmed by the broker.
#[derive(Parser)]
struct Args {
    /// The queue to send to.
    #[arg(long, default_value = "hello")]
    queue: String,
    /// The message [default: Hello World!].
    message: Vec<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let message = if args.message.is_empty() { "Hello World!".to_owned() } else { args.message.join(" ") };
    let options = EnqueueOptions::new().queue(args.queue);
    examples::send(&Hello { message: message.clone() }, options, &format!("'{message}'")).await
}
