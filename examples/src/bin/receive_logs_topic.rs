//! Tutorial 5's `receive_logs_topic`: `receive_logs_topic "kern.*" "*.critical"`
//! prints the log lines whose key matches a pattern (`#` for all).

use examples::tutorials::TopicLog;

fn main() -> std::process::ExitCode {
    let keys: Vec<String> = std::env::args().skip(1).collect();
    if keys.is_empty() {
        eprintln!("Usage: receive_logs_topic [binding_key]...");
        return std::process::ExitCode::FAILURE;
    }
    examples::receive_from::<TopicLog>(keys)
}
