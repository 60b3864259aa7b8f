//! Tutorial 3's `receive_logs`: prints every log line broadcast while it runs.

use examples::tutorials::Log;

fn main() -> std::process::ExitCode {
    examples::receive_from::<Log>(Vec::new())
}
