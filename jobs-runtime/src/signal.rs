//! Stop signals.

use tracing::{info, warn};

/// Resolves on the first SIGTERM or SIGINT; afterwards, a second one ends the
/// process at once (exit code 130), leaving running jobs unacked for the broker
/// to hand out again.
pub async fn stop_signal() {
    wait_for_signal().await;
    info!("stop signal received: finishing running jobs (send another to stop at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second stop signal: stopping now; unfinished jobs go back to the queue");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
