//! Version 1 of the rolling-deploy example's worker: knows only
//! [`examples::rollout::Resize`]; jobs of newer types are retried, not dead.

fn main() -> std::process::ExitCode {
    jobs_worker::main_with(jobs_worker::jobs![examples::rollout::Resize])
}
