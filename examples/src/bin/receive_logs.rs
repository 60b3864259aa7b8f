//! Tutorial 3's `receive_logs`: prints every log line broadcast while it runs.

use clap::Parser;
use examples::tutorials::Log;

/// Prints every log line broadcast (tutorial 3) while it runs.
#[derive(Parser)]
struct Args {}

fn main() -> std::process::ExitCode {
    let Args {} = Args::parse();
    examples::receive_from::<Log>(Vec::new())
}
