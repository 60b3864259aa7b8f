//! Tutorial 3's `receive_logs`: prints every log line broadcast while it runs.

use examples::tutorials::Log;
use jobs_worker::Subscription;

fn main() -> std::process::ExitCode {
    let subscription = match Subscription::of::<Log>() {
        Ok(subscription) => subscription,
        Err(err) => {
            eprintln!("{err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    examples::receive(Vec::new(), vec![subscription])
}
