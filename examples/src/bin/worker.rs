//! Tutorial 2's `worker`: runs [`examples::Task`]s from `task_queue`, one at a
//! time (prefetch 1), acking each when done. All `jobs_worker` flags apply
//! (`--help`); SIGTERM or Ctrl-C stops it after the running task.

fn main() -> std::process::ExitCode {
    jobs_worker::main_with(examples::jobs())
}
