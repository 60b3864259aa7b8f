//! Tutorial 5's `emit_log_topic`: `emit_log_topic kern.critical "A critical kernel error"`.
//! With no receiver's pattern matching the key it says so (unroutable) and exits 1.

use examples::tutorials::TopicLog;
use jobs_core::EnqueueOptions;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = args.first().cloned().unwrap_or_else(|| "anonymous.info".into());
    let message = if args.len() > 1 { args[1..].join(" ") } else { "Hello World!".to_owned() };
    let job = TopicLog { key: key.clone(), message: message.clone() };
    examples::send(&job, EnqueueOptions::new().routing_key(&key), &format!("{key}:{message}")).await
}
