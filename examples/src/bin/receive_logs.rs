//! Tutorial 3's `receive_logs`: prints every log line broadcast while it runs.

use examples::tutorials::Log;
use jobs_core::topology::{ExchangeKind, Route};
use jobs_core::Job;

fn main() -> std::process::ExitCode {
    let Route::Exchange { name, .. } = Log::ROUTE else { return std::process::ExitCode::FAILURE };
    let subscription =
        jobs_worker::Subscription { exchange: name.into(), kind: ExchangeKind::Fanout, keys: Vec::new() };
    examples::receive(Vec::new(), vec![subscription])
}
