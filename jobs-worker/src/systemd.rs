//! The sd_notify protocol, when the worker runs under systemd (`NOTIFY_SOCKET`
//! set): `READY=1` once consuming, `WATCHDOG=1` at half of `WATCHDOG_USEC` only
//! while the broker connection is up and the runtime turns, `STATUS=` with jobs
//! done and running, `STOPPING=1` at shutdown. A few lines over a unix datagram
//! socket; no libsystemd.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::plumbing::ConnectionState;
use tracing::debug;

/// What the worker tells systemd, and what the watchdog and `/healthz` check.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Connected and consuming.
    pub(crate) consuming: AtomicBool,
    /// Jobs settled (acked, retried or dead) since start.
    pub(crate) done: AtomicU64,
    /// What the broker says about the connection (blocked publishers).
    pub(crate) connection: Arc<ConnectionState>,
    /// Queues and exchanges not set up yet, with why.
    pub(crate) pending: std::sync::Mutex<Vec<String>>,
    /// The broker did not answer a consumer's cancel as the worker stopped:
    /// nothing more is waited for from it.
    pub(crate) silent: AtomicBool,
}

impl Health {
    /// What keeps the worker from working fully while it consumes, if anything.
    pub(crate) fn degraded(&self) -> Option<String> {
        let mut troubles = Vec::new();
        if let Some(blocked) = self.connection.blocked() {
            troubles.push(format!("RabbitMQ is blocking publishers ({blocked}): retries and dead letters wait"));
        }
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            troubles.push(format!("not set up yet: {}", pending.join(", ")));
        }
        (!troubles.is_empty()).then(|| troubles.join("; "))
    }
}

/// A connection to systemd's notify socket, if there is one.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    path: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub(crate) fn from_env() -> Option<Self> {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty())?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, path })
    }

    /// Sends one notification; failures are logged at debug and otherwise ignored.
    pub(crate) fn notify(&self, state: &str) {
        let sent = match self.path.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|addr| self.socket.send_to_addr(state.as_bytes(), &addr))
            }
            _ => self.socket.send_to(state.as_bytes(), &self.path),
        };
        if let Err(err) = sent {
            debug!(error = %err, state, "sd_notify failed");
        }
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), halved; `None` when off.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog while healthy and refreshes `STATUS=`; runs until dropped.
pub(crate) async fn watchdog(
    notifier: std::sync::Arc<Notifier>,
    health: std::sync::Arc<Health>,
    running: impl Fn() -> usize,
) {
    let every = watchdog_interval().unwrap_or(Duration::from_secs(5));
    let pings = watchdog_interval().is_some();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let consuming = health.consuming.load(Ordering::Relaxed);
        let done = health.done.load(Ordering::Relaxed);
        let state = if consuming { "consuming" } else { "reconnecting to RabbitMQ" };
        let degraded = health.degraded().map(|why| format!("; degraded: {why}")).unwrap_or_default();
        notifier.notify(&format!("STATUS={state}; {done} jobs done, {} running{degraded}", running()));
        if pings && consuming {
            notifier.notify("WATCHDOG=1");
        }
    }
}
