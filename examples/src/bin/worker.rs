//! Tutorial 2's `worker`: runs [`examples::Task`]s from `task_queue`, one at a
//! time (prefetch 1), acking each when done. All `jobs_worker` flags apply
//! (`--help`); SIGTERM or Ctrl-C stops it after the running task.

fn main() -> std::process::ExitCode {
    // Naming the app's jobs crate keeps the linker from dropping its job types.
    tracing::debug!(jobs = ?examples::job_names(), "linked job types");
    jobs_worker::main()
}
