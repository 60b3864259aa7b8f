//! Tutorial 4's `emit_log_direct`: `emit_log_direct error "Run. Run. Or it will explode."`.
//! With no receiver bound for the severity it says so (unroutable) and exits 1.

use examples::tutorials::DirectLog;
use jobs_core::EnqueueOptions;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let severity = args.first().cloned().unwrap_or_else(|| "info".into());
    let message = if args.len() > 1 { args[1..].join(" ") } else { "Hello World!".to_owned() };
    let job = DirectLog { severity: severity.clone(), message: message.clone() };
    examples::send(&job, EnqueueOptions::new().routing_key(&severity), &format!("{severity}:{message}")).await
}
