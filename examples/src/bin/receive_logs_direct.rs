//! Tutorial 4's `receive_logs_direct`: `receive_logs_direct warning error` prints
//! the log lines of those severities.

use examples::tutorials::DirectLog;

fn main() -> std::process::ExitCode {
    let keys: Vec<String> = std::env::args().skip(1).collect();
    if keys.is_empty() {
        eprintln!("Usage: receive_logs_direct [info] [warning] [error]");
        return std::process::ExitCode::FAILURE;
    }
    examples::receive_from::<DirectLog>(keys)
}
