//! The worker's heartbeat: every `worker.heartbeat_interval` (5 s; `0s` turns
//! it off) a beat to the stream `jobs.events` with who the worker is, the jobs
//! it runs now and what its jobs did since the last beat; a last one, marked
//! `stopping`, as it stops. Published on the connection of the session that
//! runs (none while it reconnects), apart from the jobs: a beat never holds
//! one up. A beat lost with its connection loses the counts it carried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jobs_core::plumbing::events::{self, epoch_ms, Heartbeat};
use tracing::debug;

use crate::activity::Activity;
use crate::consumer::Shared;
use crate::scheduler::Status;

/// The session consuming now, if any: where beats go.
pub(crate) type Current = Arc<Mutex<Option<Arc<Shared>>>>;

/// What every beat of this worker says about it.
#[derive(Debug)]
pub(crate) struct Beats {
    pub(crate) worker: String,
    pub(crate) queues: Vec<String>,
    pub(crate) exchanges: Vec<String>,
    pub(crate) concurrency: u16,
    pub(crate) interval: Duration,
    pub(crate) activity: Arc<Activity>,
    pub(crate) started_at: SystemTime,
    /// The scheduler's state, set when the worker has schedules.
    pub(crate) scheduler: std::sync::OnceLock<Arc<Status>>,
    /// The batch aggregator's state.
    pub(crate) batches: std::sync::OnceLock<Arc<crate::batches::Status>>,
    /// The gates of the limited types whose queues it consumes.
    pub(crate) limits: Vec<Arc<crate::limits::Gate>>,
    /// The rates of the rate-limited types whose queues it consumes.
    pub(crate) rates: Vec<Arc<crate::rates::RateLimit>>,
    /// The unique keeper's state.
    pub(crate) uniques: std::sync::OnceLock<Arc<crate::uniques::Status>>,
    /// The turns of its weighted queues.
    pub(crate) weights: Option<crate::weights::Weights>,
}

impl Beats {
    /// The next beat: the counts since the last one.
    pub(crate) fn make(&self, stopping: bool) -> Heartbeat {
        let (running, counts) = self.activity.take();
        Heartbeat {
            worker: self.worker.clone(),
            host: jobs_core::plumbing::hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: epoch_ms(self.started_at),
            sent_at_ms: epoch_ms(SystemTime::now()),
            interval_ms: self.interval.as_millis() as u64,
            queues: self.queues.clone(),
            exchanges: self.exchanges.clone(),
            concurrency: self.concurrency,
            stopping,
            running,
            counts,
            scheduler: self.scheduler.get().map(|status| status.beat()),
            batches: self.batches.get().map(|status| status.beat()),
            limits: self.limits.iter().map(|gate| gate.beat()).collect(),
            rates: self.rates.iter().map(|rate| rate.beat()).collect(),
            unique_keys: self.uniques.get().and_then(|status| status.keys()),
            weights: self.weights.as_ref().map(|w| w.beat()).unwrap_or_default(),
        }
    }

    /// Publishes `beat` on `shared`'s channel and waits for its confirm.
    pub(crate) async fn send(&self, shared: &Shared, beat: &Heartbeat) {
        let body = match beat.encode() {
            Ok(body) => body,
            Err(err) => return debug!(error = %err, "heartbeat not encoded"),
        };
        // The age matters only to a declare.
        let journal = events::journal(Duration::ZERO);
        if let Err(err) = journal.append(&shared.settler.publisher, "Heartbeat", body).await {
            debug!(error = %jobs_core::report(&err), "heartbeat not sent");
        }
    }
}

/// Sends a beat every interval to the current session, until aborted.
pub(crate) async fn run(beats: Arc<Beats>, current: Current) {
    let mut tick = tokio::time::interval(beats.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let shared = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // No session: the counts wait for the next beat that has one.
        if let Some(shared) = shared {
            let beat = beats.make(false);
            beats.send(&shared, &beat).await;
        }
    }
}
