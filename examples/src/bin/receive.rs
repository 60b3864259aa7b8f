//! Tutorial 1's `receive`: prints each job from queue `hello` (`--queue` to use another).

use clap::Parser;

/// Prints each Hello job (tutorial 1) until SIGTERM or Ctrl-C.
#[derive(Parser)]
struct Args {
    /// The queue to take them from.
    #[arg(long, default_value = "hello")]
    queue: String,
}

fn main() -> std::process::ExitCode {
    examples::receive(vec![Args::parse().queue], Vec::new())
}
