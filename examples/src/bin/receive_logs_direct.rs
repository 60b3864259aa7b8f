//! Tutorial 4's `receive_logs_direct`: `receive_logs_direct warning error` prints
//! the log lines of those severities.

use examples::tutorials::DirectLog;
use jobs_core::topology::{ExchangeKind, Route};
use jobs_core::Job;

fn main() -> std::process::ExitCode {
    let keys: Vec<String> = std::env::args().skip(1).collect();
    if keys.is_empty() {
        eprintln!("Usage: receive_logs_direct [info] [warning] [error]");
        return std::process::ExitCode::FAILURE;
    }
    let Route::Exchange { name, .. } = DirectLog::ROUTE else { return std::process::ExitCode::FAILURE };
    let subscription = jobs_worker::Subscription { exchange: name.into(), kind: ExchangeKind::Direct, keys };
    examples::receive(Vec::new(), vec![subscription])
}
