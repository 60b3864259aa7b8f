//! Retry all and Delete all: long actions on a dead-letter queue, run in the
//! background on a connection of their own, with their progress kept for the
//! page that shows it. One at a time per queue, and no page reads of the
//! queue while one runs (see `walks.rs`); the last [`KEPT`] are remembered
//! after they end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jobs_core::{AmqpConfig, DeadFilter, DeadLetters, Progress};
use serde::Serialize;
use tokio::sync::watch;

use crate::walks;

/// Who walks each dead queue, an action known by itself.
pub(crate) type Walks = walks::Walks<Arc<Action>>;
/// A read of a dead queue, with no action on it.
pub(crate) type Reading<'a> = walks::Reading<'a, Arc<Action>>;

/// Actions remembered after they end.
pub(crate) const KEPT: usize = 50;

/// Which dead jobs of a queue an action takes: those of a type, those whose
/// error has a text, both, or (neither) all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) job_type: Option<String>,
    pub(crate) text: Option<String>,
}

impl Scope {
    /// The scope of a form's or a query's fields (empty: not set).
    pub(crate) fn of(job_type: Option<&str>, text: Option<&str>) -> Self {
        let set = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        Scope { job_type: set(job_type), text: set(text) }
    }

    pub(crate) fn filter(&self) -> DeadFilter {
        let mut filter = DeadFilter::all();
        if let Some(t) = &self.job_type {
            filter = filter.with_type(t);
        }
        if let Some(text) = &self.text {
            filter = filter.with_text(text);
        }
        filter
    }

    pub(crate) fn is_all(&self) -> bool {
        self.job_type.is_none() && self.text.is_none()
    }

    /// What it takes, in words: "" for all, else " of type Mail whose error contains "timeout"".
    pub(crate) fn words(&self) -> String {
        let mut words = String::new();
        if let Some(t) = &self.job_type {
            words.push_str(&format!(" of type {t}"));
        }
        if let Some(text) = &self.text {
            words.push_str(&format!(" whose error contains \"{text}\""));
        }
        words
    }
}

/// One retry or delete of many dead jobs.
#[derive(Debug)]
pub(crate) struct Action {
    pub(crate) id: u64,
    pub(crate) queue: String,
    pub(crate) retry: bool,
    pub(crate) scope: Scope,
    pub(crate) started_ms: u64,
    state: Mutex<State>,
    /// `true` once it has ended.
    ended: watch::Sender<bool>,
}

/// How far an action is.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub(crate) progress: Progress,
    /// Set when it ended: `Err` with why it stopped before the end.
    pub(crate) outcome: Option<Result<(), String>>,
    pub(crate) ended_ms: Option<u64>,
}

impl Action {
    pub(crate) fn new(id: u64, queue: &str, retry: bool, scope: Scope) -> Self {
        Action {
            id,
            queue: queue.to_owned(),
            retry,
            scope,
            started_ms: now_ms(),
            state: Mutex::default(),
            ended: watch::Sender::new(false),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn running(&self) -> bool {
        self.state().outcome.is_none()
    }

    fn end(&self, outcome: Result<(), String>) {
        self.update(|state| {
            state.outcome = Some(outcome);
            state.ended_ms = Some(now_ms());
        });
        self.ended.send_replace(true);
    }

    /// Waits until it has ended, at most `wait`; whether it has.
    pub(crate) async fn ended_within(&self, wait: std::time::Duration) -> bool {
        let mut ended = self.ended.subscribe();
        let ended = tokio::time::timeout(wait, ended.wait_for(|ended| *ended)).await;
        ended.is_ok()
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

    /// Starts retrying (`retry`) or deleting the dead jobs of `queue` that
    /// `scope` takes, on a connection of its own to the broker of `amqp`,
    /// once the reads of the queue under way have ended; `Err` with the
    /// running one when one runs on the queue.
    pub(crate) fn start(
        &self,
        walks: &Arc<Walks>,
        amqp: &AmqpConfig,
        queue: &str,
        scope: Scope,
        retry: bool,
    ) -> Result<Arc<Action>, Arc<Action>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let action = Arc::new(Action::new(id, queue, retry, scope));
        let holding = walks.claim(queue, &action)?;
        {
            let mut all = self.all();
            all.insert(id, action.clone());
            // Forget the oldest that ended, past the ones kept.
            let ended: Vec<u64> = all.iter().filter(|(_, a)| !a.running()).map(|(id, _)| *id).collect();
            for id in ended.iter().take(ended.len().saturating_sub(KEPT)) {
                all.remove(id);
            }
        }
        let (amqp, running) = (amqp.clone(), action.clone());
        let task = tokio::spawn(async move {
            holding.reads_ended().await;
            let outcome = run(&amqp, &running).await;
            // The queue is free for reads before the action says it ended.
            drop(holding);
            outcome
        });
        // Its end is set whatever happens to the task: a panic too.
        let watched = action.clone();
        tokio::spawn(async move {
            let outcome = match task.await {
                Ok(outcome) => outcome.map_err(|e| jobs_core::report(&e)),
                Err(e) => Err(format!("the action stopped: {e}")),
            };
            watched.end(outcome);
        });
        Ok(action)
    }
}

async fn run(amqp: &AmqpConfig, action: &Action) -> Result<(), jobs_core::Error> {
    let filter = action.scope.filter();
    let dead = DeadLetters::connect(amqp).await?;
    let progress = |p: &Progress| action.update(|state| state.progress = p.clone());
    let done = if action.retry {
        dead.retry_with(&action.queue, &filter, progress).await
    } else {
        dead.purge_with(&action.queue, &filter, progress).await
    };
    dead.close().await;
    action.update(|state| state.progress = done.as_ref().map_or_else(|_| state.progress.clone(), Clone::clone));
    done.map(drop)
}

/// Milliseconds since the Unix epoch.
use jobs_core::plumbing::events::now_ms;

/// An action as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ActionView {
    id: u64,
    queue: String,
    action: &'static str,
    job_type: Option<String>,
    text: Option<String>,
    started_ms: u64,
    running: bool,
    /// Dead jobs in the queue when it began.
    total: u64,
    scanned: u64,
    /// Retried or deleted.
    done: u64,
    /// Taken but refused by the broker: still dead.
    failed: u64,
    first_failure: Option<String>,
    /// Unique jobs left dead: another job holds their key.
    held: u64,
    first_held: Option<String>,
    /// Not read (another reader held them): still dead.
    not_reached: u64,
    error: Option<String>,
    ended_ms: Option<u64>,
}

impl ActionView {
    pub(crate) fn of(action: &Action) -> Self {
        let state = action.state();
        let progress = state.progress;
        ActionView {
            id: action.id,
            queue: action.queue.clone(),
            action: if action.retry { "retry" } else { "delete" },
            job_type: action.scope.job_type.clone(),
            text: action.scope.text.clone(),
            started_ms: action.started_ms,
            running: state.outcome.is_none(),
            total: progress.total,
            scanned: progress.scanned,
            done: progress.acted,
            failed: progress.failed,
            first_failure: progress.first_failure,
            held: progress.held,
            first_held: progress.first_held,
            not_reached: progress.not_reached,
            error: state.outcome.and_then(Result::err),
            ended_ms: state.ended_ms,
        }
    }
}
