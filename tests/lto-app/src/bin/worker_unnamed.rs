//! The worker relying on the link-time registry without naming its jobs crate:
//! a dependency nothing names is not linked at all, so it serves no job type.

fn main() -> std::process::ExitCode {
    jobs_worker::main()
}
