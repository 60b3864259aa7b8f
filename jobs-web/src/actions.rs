//! Retry all and Delete all: long actions on a dead-letter queue, run in the
//! background on a connection of their own, with their progress kept for the
//! page that shows it. One at a time per queue (a second walk of the queue
//! would see the first one's held jobs as gone); the last [`KEPT`] are
//! remembered after they end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jobs_core::{AmqpConfig, DeadFilter, DeadLetters, Progress};
use serde::Serialize;

/// Actions remembered after they end.
pub(crate) const KEPT: usize = 50;

/// One retry or delete of many dead jobs.
#[derive(Debug)]
pub(crate) struct Action {
    pub(crate) id: u64,
    pub(crate) queue: String,
    pub(crate) retry: bool,
    /// The job type it is limited to, if any.
    pub(crate) job_type: Option<String>,
    pub(crate) started_ms: u64,
    state: Mutex<State>,
}

/// How far an action is.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct State {
    pub(crate) progress: Progress,
    /// Set when it ended: how many it acted on, or why it stopped.
    pub(crate) outcome: Option<Result<u64, String>>,
    pub(crate) ended_ms: Option<u64>,
}

impl Action {
    pub(crate) fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn running(&self) -> bool {
        self.state().outcome.is_none()
    }
}

/// The actions of a dashboard.
#[derive(Debug, Default)]
pub(crate) struct Actions {
    next: AtomicU64,
    all: Mutex<BTreeMap<u64, Arc<Action>>>,
}

impl Actions {
    fn all(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Action>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The action with id `id`.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Action>> {
        self.all().get(&id).cloned()
    }

    /// The action running on `queue` now, if any.
    pub(crate) fn running_on(&self, queue: &str) -> Option<Arc<Action>> {
        self.all().values().find(|a| a.queue == queue && a.running()).cloned()
    }
}

impl Actions {
    /// Starts retrying (`retry`) or deleting every dead job of `queue` (of
    /// `job_type`, when given) on a connection of its own to the broker of
    /// `amqp`; `Err` with the running one when one runs on the queue.
    pub(crate) fn start(
        &self,
        amqp: &AmqpConfig,
        queue: &str,
        job_type: Option<String>,
        retry: bool,
    ) -> Result<Arc<Action>, Arc<Action>> {
        let action = {
            let mut all = self.all();
            if let Some(running) = all.values().find(|a| a.queue == queue && a.running()) {
                return Err(running.clone());
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let action = Arc::new(Action {
                id,
                queue: queue.to_owned(),
                retry,
                job_type,
                started_ms: now_ms(),
                state: Mutex::default(),
            });
            all.insert(id, action.clone());
            // Forget the oldest that ended, past the ones kept.
            let ended: Vec<u64> = all.iter().filter(|(_, a)| !a.running()).map(|(id, _)| *id).collect();
            for id in ended.iter().take(ended.len().saturating_sub(KEPT)) {
                all.remove(id);
            }
            action
        };
        let (amqp, running) = (amqp.clone(), action.clone());
        tokio::spawn(async move {
            let outcome = run(&amqp, &running).await;
            running.update(|state| {
                state.outcome = Some(outcome.map_err(|e| jobs_core::report(&e)));
                state.ended_ms = Some(now_ms());
            });
        });
        Ok(action)
    }
}

async fn run(amqp: &AmqpConfig, action: &Action) -> Result<u64, jobs_core::Error> {
    let filter = action.job_type.as_ref().map_or_else(DeadFilter::all, DeadFilter::of_type);
    let dead = DeadLetters::connect(amqp).await?;
    let progress = |p: Progress| action.update(|state| state.progress = p);
    let done = if action.retry {
        dead.retry_with(&action.queue, &filter, progress).await
    } else {
        dead.purge_with(&action.queue, &filter, progress).await
    };
    dead.close().await;
    done.map(|n| n as u64)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    jobs_core::plumbing::events::epoch_ms(std::time::SystemTime::now())
}

/// An action as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ActionView {
    id: u64,
    queue: String,
    action: &'static str,
    job_type: Option<String>,
    started_ms: u64,
    running: bool,
    total: u64,
    scanned: u64,
    done: u64,
    error: Option<String>,
    ended_ms: Option<u64>,
}

impl ActionView {
    pub(crate) fn of(action: &Action) -> Self {
        let state = action.state();
        let (done, error) = match &state.outcome {
            Some(Ok(n)) => (*n, None),
            Some(Err(e)) => (state.progress.acted, Some(e.clone())),
            None => (state.progress.acted, None),
        };
        ActionView {
            id: action.id,
            queue: action.queue.clone(),
            action: if action.retry { "retry" } else { "delete" },
            job_type: action.job_type.clone(),
            started_ms: action.started_ms,
            running: state.outcome.is_none(),
            total: state.progress.total,
            scanned: state.progress.scanned,
            done,
            error,
            ended_ms: state.ended_ms,
        }
    }
}
