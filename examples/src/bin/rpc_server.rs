//! Tutorial 6's `rpc_server`: answers `Fib` calls from `rpc_queue`.

use examples::tutorials::Fib;
use jobs_core::Job;

fn main() -> std::process::ExitCode {
    examples::receive(vec![Fib::QUEUE.to_owned()], Vec::new())
}
