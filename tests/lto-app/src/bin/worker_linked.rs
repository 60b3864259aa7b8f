//! The worker relying on the link-time registry, its jobs crate named only
//! through a constant (what the README once advised).
use jobs_core::Job;

fn main() -> std::process::ExitCode {
    let _ = lto_app::jobs::mail::LtoMail::NAME;
    jobs_worker::main()
}
