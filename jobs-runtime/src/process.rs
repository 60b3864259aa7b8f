//! A daemon's `main`: the async runtime, the work, one line for an error, and the exit code.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// How long the end of the process waits for threads that job code still holds.
const SHUTDOWN: Duration = Duration::from_secs(1);

/// Which tokio runtime a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A thread per core: daemons.
    Multi,
    /// The calling thread: short commands.
    Current,
}

/// Runs `work` on a new runtime and turns its end into the exit code: its
/// own code when it succeeds; 1 when it fails, after one line that says why
/// with every cause (through the log, in its format, once logging is set up;
/// else plainly on stderr), naming `what` failed.
pub fn run<F, E>(threads: Threads, what: &str, work: F) -> ExitCode
where
    F: Future<Output = Result<ExitCode, E>>,
    E: Into<Box<dyn std::error::Error>>,
{
    let mut builder = match threads {
        Threads::Multi => tokio::runtime::Builder::new_multi_thread(),
        Threads::Current => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(work);
    // Threads still held by job code (a `#[job(blocking)]` run past its
    // timeout, a poll that never returns) hold no delivery any more once the
    // work has ended: the process does not wait for them.
    runtime.shutdown_timeout(SHUTDOWN);
    match result {
        Ok(code) => code,
        Err(err) => {
            let err: Box<dyn std::error::Error> = err.into();
            let text = jobs_core::report(&*err);
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = %text, "{what} stopped with an error");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_work_gives_the_exit_code() {
        assert_eq!(run(Threads::Current, "test", async { Ok::<_, Outer>(ExitCode::from(2)) }), ExitCode::from(2));
        let failed = run(Threads::Multi, "test", async { Err::<ExitCode, _>(Outer(std::io::Error::other("why"))) });
        assert_eq!(failed, ExitCode::FAILURE);
    }
}
