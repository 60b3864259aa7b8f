//! Tutorial 6's `rpc_server`: answers `Fib` calls from `rpc_queue`.

use clap::Parser;
use examples::tutorials::Fib;
use jobs_core::Job;

/// Answers Fibonacci calls (tutorial 6) until SIGTERM or Ctrl-C.
#[derive(Parser)]
struct Args {}

fn main() -> std::process::ExitCode {
    let Args {} = Args::parse();
    examples::receive(vec![Fib::QUEUE.to_owned()], Vec::new())
}
