//! The worker's link to the broker, on a thread of its own: a small runtime
//! where the connection's reading and writing (and so its AMQP heartbeats),
//! the worker's heartbeats to `jobs.events`, the systemd watchdog and the
//! metrics listener run, apart from the runtime the jobs run on. A job that
//! blocks its thread (a synchronous library, `std::thread::sleep`, CPU work)
//! can stall the jobs' runtime, but not the link: the broker does not drop
//! the connection, and the jobs' deliveries stay the worker's.
//!
//! With `worker.link_thread = false` the link runs on the app's runtime, as
//! everything else.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::Error;

/// Where the link runs.
#[derive(Debug)]
pub(crate) struct Link {
    handle: Handle,
    /// Ends the link's thread when dropped (the thread's runtime then drops its tasks).
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Link {
    /// A thread of its own (`own`), or the current runtime.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be made.
    pub(crate) fn start(own: bool) -> std::io::Result<Self> {
        if !own {
            return Ok(Link { handle: Handle::current(), _stop: None });
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name("jobs-link".into()).spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
        Ok(Link { handle, _stop: Some(stop) })
    }

    /// Runs `future` on the link.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `future` on the link and waits for it (what it spawns stays there).
    pub(crate) async fn run<F, T>(&self, future: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn(future).await {
            Ok(output) => output,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(Error::ConnectionLost { reason: format!("the link's thread went away: {join}") }),
        }
    }
}

/// A runtime on a thread of its own for the process-wide client's connection
/// (jobs enqueueing jobs): its reading and writing go on while jobs stall the
/// app's runtime, and it outlives any one worker. `None` when the thread
/// cannot be made (the client then does its IO where it is used).
pub(crate) fn client_io() -> Option<Handle> {
    static IO: OnceLock<Option<Handle>> = OnceLock::new();
    IO.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("jobs-client-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .ok()?;
        Some(handle)
    })
    .clone()
}
