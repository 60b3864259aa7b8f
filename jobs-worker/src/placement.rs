//! Where a job's `perform` runs, so that the worker's link to the broker
//! never waits for job code to yield:
//!
//! - a `#[job(blocking)]` type on a thread of the jobs' runtime's blocking
//!   pool, at most `worker.blocking_threads` at once;
//! - any other type on the jobs' runtime (the app's), its outcome awaited on
//!   the link's thread (`link.rs`), which goes on reading and writing the
//!   connection meanwhile;
//! - a type that has shown itself quick, on the link's thread itself, in the
//!   task of its delivery: a hand-over between threads costs two wake-ups per
//!   job, a third of a no-op job's time (`bench --only link`). Quick means:
//!   [`PROBATION`] runs on the jobs' runtime in which no poll of it held its
//!   thread for [`QUICK_POLL`] or longer. One poll that long, anywhere, sends
//!   the type back to the jobs' runtime for good.
//!
//! A poll that holds its thread for [`BLOCKED_POLL`] is blocking code in an
//! async `perform`: the worker says so once per type, at WARN, with what to
//! use instead. The job's timeout is kept on the link's side: a job that never
//! yields is still settled as timed out (its thread cannot be stopped, and
//! runs on).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use jobs_core::plumbing::Registration;
use jobs_core::JobError;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Runs on the jobs' runtime before a type may run on the link's thread.
pub(crate) const PROBATION: u32 = 100;
/// A poll this long or longer keeps (or sends) a type off the link's thread.
pub(crate) const QUICK_POLL: Duration = Duration::from_millis(1);
/// A poll this long is blocking code in an async `perform`.
pub(crate) const BLOCKED_POLL: Duration = Duration::from_secs(1);

/// Slow polls on the link's thread that send a type back: at least this
/// many, and at least one run in [`SLOW_SHARE`]. A single slow poll is as
/// often the thread being descheduled on a busy machine as the job's code.
const SLOW_POLLS: u64 = 3;
/// See [`SLOW_POLLS`].
const SLOW_SHARE: u64 = 100;

/// What one job type has shown of itself.
#[derive(Debug, Default)]
pub(crate) struct Conduct {
    /// Runs in a row off the link's thread with every poll under [`QUICK_POLL`].
    quick_runs: AtomicU32,
    /// Sent back from the link's thread: never on it again.
    slow: AtomicBool,
    /// Runs on the link's thread, and polls there of [`QUICK_POLL`] or longer.
    link_runs: AtomicU64,
    link_slow: AtomicU64,
    /// Warned about blocking its thread.
    warned: AtomicBool,
}

impl Conduct {
    fn on_link(&self) -> bool {
        !self.slow.load(Ordering::Relaxed) && self.quick_runs.load(Ordering::Relaxed) >= PROBATION
    }

    /// A poll of the type on the link's thread held it for `held`.
    fn polled(&self, name: &str, held: Duration, on_link: bool) {
        if held < QUICK_POLL {
            return;
        }
        if held >= BLOCKED_POLL {
            self.slow.store(true, Ordering::Relaxed);
            self.blocked(name, held, on_link);
            return;
        }
        let slow = self.link_slow.fetch_add(1, Ordering::Relaxed) + 1;
        if slow >= SLOW_POLLS && slow * SLOW_SHARE >= self.link_runs.load(Ordering::Relaxed) {
            self.slow.store(true, Ordering::Relaxed);
        }
    }

    /// A run off the link's thread ended: quick (every poll under
    /// [`QUICK_POLL`], returned) counts towards the probation, anything else starts it again.
    fn ran_off_link(&self, quick: bool) {
        if quick {
            self.quick_runs.fetch_add(1, Ordering::Relaxed);
        } else {
            self.quick_runs.store(0, Ordering::Relaxed);
        }
    }

    fn blocked(&self, name: &str, held: Duration, on_link: bool) {
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let whose = if on_link { "the worker's link to the broker" } else { "a thread of the jobs' runtime" };
        warn!(
            job.name = name,
            held = ?held,
            "job type {name} blocked {whose} for {held:?} in one poll: blocking code in an async `perform` (a synchronous library, CPU-heavy work, std::thread::sleep) keeps other jobs from running on that thread; mark the type #[job(blocking)], or move the blocking part into tokio::task::spawn_blocking. Said once per type"
        );
    }
}

/// What a run of `perform` gave, as it came back from wherever it ran.
pub(crate) enum Outcome {
    /// It returned (the reply of an RPC job, or its error).
    Returned(Result<Option<Vec<u8>>, JobError>),
    /// It panicked, with this message.
    Panicked(String),
    /// Its timeout passed first (it was dropped, or, blocking, left to run out).
    TimedOut,
    /// `end` was cancelled first (it was dropped, or, blocking, left to run out).
    Ended,
}

/// Polls in progress off the link's thread, watched for blocking code.
#[derive(Debug, Default)]
struct Polls {
    next: AtomicU64,
    /// Run → (job type, when its current poll began: nanoseconds after `epoch`, 0 between polls).
    running: Mutex<HashMap<u64, (&'static str, Arc<AtomicU64>)>>,
}

/// Where jobs run.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The jobs' runtime, when the link has a thread of its own; else jobs run where the link does.
    jobs: Option<Handle>,
    /// The runtime whose blocking pool `#[job(blocking)]` runs use (the app's), with or without a link thread.
    pool: Option<Handle>,
    blocking: Arc<Semaphore>,
    conduct: HashMap<&'static str, Conduct>,
    polls: Polls,
    epoch: Instant,
}

impl Placement {
    /// Jobs of these types on `jobs` (none: where the link runs), at most
    /// `blocking_threads` blocking ones at once.
    pub(crate) fn new<'a>(
        types: impl IntoIterator<Item = &'a Registration>,
        jobs: Option<Handle>,
        pool: Option<Handle>,
        blocking_threads: usize,
    ) -> Self {
        Placement {
            jobs,
            pool,
            blocking: Arc::new(Semaphore::new(blocking_threads.max(1))),
            conduct: types.into_iter().map(|r| (r.name(), Conduct::default())).collect(),
            polls: Polls::default(),
            epoch: Instant::now(),
        }
    }

    /// Runs `future`, a run of `registration`, where it belongs, within its
    /// timeout, until `end` is cancelled.
    pub(crate) async fn run<F>(&self, registration: &Registration, future: F, end: &CancellationToken) -> Outcome
    where
        F: Future<Output = Result<Option<Vec<u8>>, JobError>> + Send + Unpin + 'static,
    {
        let name = registration.name();
        let conduct = self.conduct.get(name);
        let timeout = registration.timeout();
        if registration.blocking() {
            if let Some(pool) = self.pool.as_ref().or(self.jobs.as_ref()) {
                return self.run_blocking(pool, future, timeout, end).await;
            }
        }
        let jobs = match &self.jobs {
            Some(jobs) if !conduct.is_some_and(Conduct::on_link) => jobs,
            // On the link's thread (or, without one, where everything runs): in this task.
            _ => {
                let timed = Timed { inner: CatchUnwind(future), conduct, name, enter: self.jobs.as_ref(), clock: None };
                let outcome = tokio::select! {
                    biased;
                    result = tokio::time::timeout(timeout, timed) => match result {
                        Ok(Ok(returned)) => Outcome::Returned(returned),
                        Ok(Err(panic)) => Outcome::Panicked(panic_message(panic)),
                        Err(_) => Outcome::TimedOut,
                    },
                    _ = end.cancelled() => Outcome::Ended,
                };
                if let Some(conduct) = conduct {
                    conduct.link_runs.fetch_add(1, Ordering::Relaxed);
                    // A run on the link that panicked or outlasted its timeout goes back to the jobs' runtime.
                    if matches!(outcome, Outcome::Panicked(_) | Outcome::TimedOut) {
                        conduct.slow.store(true, Ordering::Relaxed);
                    }
                }
                return outcome;
            }
        };
        // On the jobs' runtime, watched; the link's side keeps the time.
        let clock = Arc::new(AtomicU64::new(0));
        let key = self.polls.next.fetch_add(1, Ordering::Relaxed);
        self.polls.running.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (name, clock.clone()));
        let quick = Arc::new(AtomicBool::new(true));
        let timed = Timed {
            inner: CatchUnwind(future),
            conduct: None,
            name,
            enter: None,
            clock: Some(Watched { clock, epoch: self.epoch, quick: quick.clone() }),
        };
        let mut task = jobs.spawn(timed);
        let outcome = tokio::select! {
            biased;
            joined = tokio::time::timeout(timeout, &mut task) => match joined {
                Ok(Ok(Ok(returned))) => Outcome::Returned(returned),
                Ok(Ok(Err(panic))) => Outcome::Panicked(panic_message(panic)),
                Ok(Err(join)) => Outcome::Panicked(format!("its task failed: {join}")),
                Err(_) => Outcome::TimedOut,
            },
            _ = end.cancelled() => Outcome::Ended,
        };
        // Dropped where it runs (at its next await: a poll that never returns cannot be stopped).
        task.abort();
        self.polls.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        if let Some(conduct) = conduct {
            conduct.ran_off_link(quick.load(Ordering::Relaxed) && matches!(outcome, Outcome::Returned(_)));
        }
        outcome
    }

    /// A `#[job(blocking)]` run, on a thread of the blocking pool.
    async fn run_blocking<F>(&self, jobs: &Handle, future: F, timeout: Duration, end: &CancellationToken) -> Outcome
    where
        F: Future<Output = Result<Option<Vec<u8>>, JobError>> + Send + Unpin + 'static,
    {
        // Waiting for a thread does not count towards the run's timeout, but
        // is bounded by it: threads held by runs past their timeout can fill the pool.
        let permit = tokio::select! {
            permit = tokio::time::timeout(timeout, self.blocking.clone().acquire_owned()) => match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Outcome::Panicked("the blocking pool is closed".into()),
                Err(_) => {
                    warn!(
                        waited = ?timeout,
                        "no thread for a #[job(blocking)] run came free within its timeout: every one of worker.blocking_threads is held, by runs or by runs past their timeout whose code goes on; raise worker.blocking_threads or make the blocking code return"
                    );
                    return Outcome::TimedOut;
                }
            },
            _ = end.cancelled() => return Outcome::Ended,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let handle = jobs.clone();
        let task = jobs.spawn_blocking(move || {
            // Held until the thread is free again, also past the timeout.
            let _permit = permit;
            handle.block_on(CatchUnwind(future))
        });
        tokio::select! {
            biased;
            joined = tokio::time::timeout_at(deadline, task) => match joined {
                Ok(Ok(Ok(returned))) => Outcome::Returned(returned),
                Ok(Ok(Err(panic))) => Outcome::Panicked(panic_message(panic)),
                Ok(Err(join)) => Outcome::Panicked(format!("its thread failed: {join}")),
                Err(_) => Outcome::TimedOut,
            },
            _ = end.cancelled() => Outcome::Ended,
        }
    }

    /// Says, once per type, when a poll off the link's thread has held its
    /// thread for [`BLOCKED_POLL`] (while it still does). Runs until dropped, on the link.
    pub(crate) async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let blocked: Vec<(&'static str, Duration)> = {
                let running = self.polls.running.lock().unwrap_or_else(|e| e.into_inner());
                running
                    .values()
                    .filter_map(|(name, clock)| {
                        let since = clock.load(Ordering::Relaxed);
                        let held = Duration::from_nanos(now.saturating_sub(since));
                        (since != 0 && held >= BLOCKED_POLL).then_some((*name, held))
                    })
                    .collect()
            };
            for (name, held) in blocked {
                if let Some(conduct) = self.conduct.get(name) {
                    conduct.slow.store(true, Ordering::Relaxed);
                    conduct.blocked(name, held, false);
                }
            }
        }
    }
}

/// The clock of a poll off the link's thread.
struct Watched {
    clock: Arc<AtomicU64>,
    epoch: Instant,
    /// Cleared by a poll of [`QUICK_POLL`] or longer.
    quick: Arc<AtomicBool>,
}

/// Times each poll of a job: a long one moves its type off the link's thread.
struct Timed<'a, F> {
    inner: F,
    /// On the link's thread: the type's conduct, told of a long poll at once.
    conduct: Option<&'a Conduct>,
    name: &'static str,
    /// On the link's thread: the jobs' runtime, entered for each poll, so that
    /// what the job spawns (and its timers and sockets) lives there, as it did
    /// before the type came to the link.
    enter: Option<&'a Handle>,
    /// Off it: where the watcher sees the poll begin, and what the link's side reads after.
    clock: Option<Watched>,
}

impl<F: Future + Unpin> Future for Timed<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let began = Instant::now();
        if let Some(watched) = &self.clock {
            let since = u64::try_from(began.duration_since(watched.epoch).as_nanos()).unwrap_or(u64::MAX).max(1);
            watched.clock.store(since, Ordering::Relaxed);
        }
        let polled = {
            let _entered = self.enter.map(Handle::enter);
            Pin::new(&mut self.inner).poll(cx)
        };
        let held = began.elapsed();
        if let Some(watched) = &self.clock {
            watched.clock.store(0, Ordering::Relaxed);
            if held >= QUICK_POLL {
                watched.quick.store(false, Ordering::Relaxed);
            }
        }
        if let Some(conduct) = self.conduct {
            // Entering the jobs' runtime is what a poll on the link's own thread does.
            conduct.polled(self.name, held, self.enter.is_some());
        }
        polled
    }
}

/// Polls a future, turning a panic in it into an `Err` with the panic's payload.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message, when it has one.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(no message)".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_kept() {
        assert_eq!(panic_message(Box::new("boom")), "boom");
        assert_eq!(panic_message(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_message(Box::new(7)), "(no message)");
    }

    #[test]
    fn a_type_earns_the_link_and_loses_it_for_good() {
        let conduct = Conduct::default();
        for _ in 0..PROBATION {
            assert!(!conduct.on_link());
            conduct.quick_runs.fetch_add(1, Ordering::Relaxed);
        }
        assert!(conduct.on_link(), "quick for its probation");
        conduct.polled("J", Duration::from_micros(200), true);
        assert!(conduct.on_link(), "a quick poll keeps it");
        // A slow poll now and then (the thread descheduled) keeps it.
        conduct.link_runs.store(10_000, Ordering::Relaxed);
        for _ in 0..SLOW_POLLS {
            conduct.polled("J", Duration::from_millis(3), true);
        }
        assert!(conduct.on_link(), "3 slow polls in 10,000 runs");
        // Slow polls in one run out of a hundred send it back, for good.
        conduct.link_runs.store(10_300, Ordering::Relaxed);
        for _ in 0..100 {
            conduct.polled("J", Duration::from_millis(3), true);
        }
        assert!(!conduct.on_link(), "slow in one run of a hundred");
        conduct.quick_runs.fetch_add(PROBATION, Ordering::Relaxed);
        assert!(!conduct.on_link(), "for good");
    }

    #[test]
    fn a_slow_run_in_probation_starts_it_again_and_a_blocking_poll_ends_it() {
        let conduct = Conduct::default();
        for _ in 0..PROBATION - 1 {
            conduct.ran_off_link(true);
        }
        conduct.ran_off_link(false);
        assert!(!conduct.on_link(), "probation starts again");
        for _ in 0..PROBATION {
            conduct.ran_off_link(true);
        }
        assert!(conduct.on_link());
        conduct.polled("J", BLOCKED_POLL, true);
        assert!(!conduct.on_link(), "a poll that blocks a second sends it back at once");
    }
}
