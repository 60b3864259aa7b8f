//! Tutorial 3's `emit_log`: broadcasts one log line to every running `receive_logs`.

use examples::tutorials::Log;
use jobs_core::EnqueueOptions;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() { "info: Hello World!".to_owned() } else { args.join(" ") };
    examples::send(&Log { message: message.clone() }, EnqueueOptions::new(), &message).await
}
