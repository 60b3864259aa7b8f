//! The worker as the README recommends: its job types named.
use lto_app::jobs::{mail::LtoMail, report::LtoReport};

fn main() -> std::process::ExitCode {
    jobs_worker::main_with(jobs_worker::jobs![LtoMail, LtoReport])
}
