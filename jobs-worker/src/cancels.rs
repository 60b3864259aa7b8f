//! Cancelling a job (`worker cancel <id>`, the dashboard's Cancel button),
//! as this worker applies it. A cancel is a record in `jobs.control`, which
//! every worker follows (`pauses.rs` reads it and hands cancels here). What a
//! worker does with one, under one lock with the jobs it runs:
//!
//! - the job runs here: its context is told (`ctx.is_cancelled()`,
//!   `ctx.cancelled()`), and if it has not ended after `worker.cancel_grace`
//!   it is dropped; either way it is dead-lettered as `cancelled`;
//! - it does not: the cancel is kept (for `worker.cancel_retention`, at most
//!   [`MAX_PENDING`] of them, the oldest dropped first), and the job is
//!   dead-lettered unrun when it comes up from its queue or its delay.
//!
//! Nothing indexes queued jobs (browsing a queue would requeue its
//! messages), so a cancel waits for its job to come up. The worker that
//! dead-letters it says so in `jobs.control` (`Cancelled`), and every worker
//! forgets the cancel then: `worker dead retry` runs the job again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use jobs_core::JobId;
use tokio_util::sync::CancellationToken;

/// The most cancels kept for jobs not seen yet; past it the oldest is dropped.
pub(crate) const MAX_PENDING: usize = 100_000;

/// Who cancelled a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) by: String,
    pub(crate) at_ms: u64,
}

/// A job running here.
#[derive(Debug)]
struct Slot {
    id: JobId,
    /// What its context watches.
    cancel: CancellationToken,
    /// What drops it (a child of its delivery's end).
    kill: CancellationToken,
    /// Who cancelled it, once someone has.
    by: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Cancels of jobs not running here, by id.
    pending: HashMap<String, Request>,
    /// The pending ids in the order they came (with their time), for
    /// retention and the cap; an id cancelled again is in it twice, the entry
    /// that does not match `pending` being skipped.
    order: VecDeque<(u64, String)>,
    /// The jobs running here, by a number of their own (a job id can run
    /// twice at once: a copy a producer sent twice).
    running: HashMap<u64, Slot>,
    next: u64,
}

/// The worker's cancels and the jobs they can reach.
#[derive(Debug)]
pub(crate) struct Cancels {
    state: Mutex<State>,
    grace: Duration,
    retention_ms: u64,
}

/// A run of a job here: its tokens, and its place among the running until dropped.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    cancels: &'a Cancels,
    key: u64,
    /// For the job's context.
    pub(crate) cancel: CancellationToken,
    /// For the placement: ends the run (a stop, the channel closing, or a
    /// cancel's grace running out).
    pub(crate) kill: CancellationToken,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.cancels.lock().running.remove(&self.key);
        // Ends a grace timer, if one waits.
        self.kill.cancel();
    }
}

impl Run<'_> {
    /// Who cancelled the job while it ran, if anyone did.
    pub(crate) fn cancelled_by(&self) -> Option<String> {
        if !self.cancel.is_cancelled() {
            return None;
        }
        self.cancels.lock().running.get(&self.key).and_then(|slot| slot.by.clone())
    }
}

impl Cancels {
    /// Running jobs are given `grace` to stop; cancels of others are kept for `retention`.
    pub(crate) fn new(grace: Duration, retention: Duration) -> Self {
        Cancels {
            state: Mutex::default(),
            grace,
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job `id` comes up to run, its run ended by `end`: the cancel
    /// asked for it, if there is one (it is not run; the cancel is spent
    /// here), else its run.
    pub(crate) fn start(&self, id: &JobId, end: &CancellationToken, now_ms: u64) -> Result<Run<'_>, Request> {
        let mut state = self.lock();
        if !state.pending.is_empty() {
            if let Some(request) = state.pending.remove(id.as_str()) {
                if now_ms.saturating_sub(request.at_ms) <= self.retention_ms {
                    return Err(request);
                }
            }
        }
        let key = state.next;
        state.next = state.next.wrapping_add(1);
        let (cancel, kill) = (CancellationToken::new(), end.child_token());
        let slot = Slot { id: id.clone(), cancel: cancel.clone(), kill: kill.clone(), by: None };
        state.running.insert(key, slot);
        drop(state);
        Ok(Run { cancels: self, key, cancel, kill })
    }

    /// Someone cancelled the job `id`: when it runs here, tells it and drops
    /// it after the grace (returns `true`; call on a runtime); and keeps the
    /// cancel for when it comes up (again), until it is spent. A cancel older
    /// than the retention is ignored.
    pub(crate) fn cancel(&self, id: String, request: Request, now_ms: u64) -> bool {
        if now_ms.saturating_sub(request.at_ms) > self.retention_ms {
            return false;
        }
        let mut state = self.lock();
        let mut found = false;
        for slot in state.running.values_mut().filter(|slot| slot.id.as_str() == id) {
            found = true;
            if slot.by.is_some() {
                continue;
            }
            slot.by = Some(request.by.clone());
            slot.cancel.cancel();
            let (kill, grace) = (slot.kill.clone(), self.grace);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(grace) => kill.cancel(),
                    // It ended by itself.
                    _ = kill.cancelled() => {}
                }
            });
        }
        // Kept either way: a run here may still come back (its channel
        // closed under it) and must be cancelled when it comes up again.
        state.order.push_back((request.at_ms, id.clone()));
        state.pending.insert(id, request);
        self.expire(&mut state, now_ms);
        found
    }

    /// A worker dead-lettered the job `id` as cancelled: its cancel is spent.
    pub(crate) fn spent(&self, id: &str) {
        let mut state = self.lock();
        state.pending.remove(id);
        if state.pending.is_empty() {
            state.order.clear();
        }
    }

    /// Drops cancels past the retention, and the oldest past [`MAX_PENDING`].
    fn expire(&self, state: &mut State, now_ms: u64) {
        while let Some((at_ms, id)) = state.order.front() {
            let over = state.pending.len() > MAX_PENDING || state.order.len() > 2 * MAX_PENDING;
            if !over && now_ms.saturating_sub(*at_ms) <= self.retention_ms {
                break;
            }
            if state.pending.get(id).is_some_and(|r| r.at_ms == *at_ms) {
                state.pending.remove(id);
            }
            state.order.pop_front();
        }
    }

    /// How many cancels wait for their jobs.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn request(at_ms: u64) -> Request {
        Request { by: "me".into(), at_ms }
    }

    fn cancels() -> Cancels {
        Cancels::new(Duration::from_secs(10), Duration::from_secs(7 * 86_400))
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_job_is_told_then_dropped_after_the_grace() {
        let cancels = cancels();
        let end = CancellationToken::new();
        let id = JobId::from("job-1");
        let run = cancels.start(&id, &end, 0).unwrap();
        assert!(run.cancelled_by().is_none());
        assert!(cancels.cancel("job-1".into(), request(0), 0), "it runs here");
        assert!(run.cancel.is_cancelled(), "its context is told at once");
        assert_eq!(run.cancelled_by().as_deref(), Some("me"));
        assert!(!run.kill.is_cancelled(), "and it has its grace");
        tokio::time::sleep(Duration::from_millis(9_900)).await;
        assert!(!run.kill.is_cancelled());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(run.kill.is_cancelled(), "dropped after the grace");
        assert!(!end.is_cancelled(), "the delivery's end is not touched");
        drop(run);
        assert_eq!(cancels.pending(), 1, "kept until spent, in case the run comes back");
        cancels.spent("job-1");
        assert_eq!(cancels.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_not_running_is_cancelled_when_it_comes_up_once() {
        let cancels = cancels();
        let end = CancellationToken::new();
        assert!(!cancels.cancel("job-2".into(), request(5), 5));
        assert_eq!(cancels.pending(), 1);
        let other = cancels.start(&JobId::from("job-3"), &end, 6).unwrap();
        assert!(!other.cancel.is_cancelled(), "other jobs run");
        assert_eq!(cancels.start(&JobId::from("job-2"), &end, 6).unwrap_err(), request(5));
        assert!(cancels.start(&JobId::from("job-2"), &end, 7).is_ok(), "the cancel is spent: a retry runs");
    }

    #[tokio::test(start_paused = true)]
    async fn cancels_expire_after_the_retention_and_past_the_cap() {
        let cancels = cancels();
        let end = CancellationToken::new();
        assert!(!cancels.cancel("old".into(), request(0), 8 * DAY), "older than the retention when read");
        assert_eq!(cancels.pending(), 0);
        cancels.cancel("kept".into(), request(DAY), DAY);
        assert!(cancels.start(&JobId::from("kept"), &end, 9 * DAY).is_ok(), "expired by the time it comes up");
        for n in 0..MAX_PENDING + 10 {
            cancels.cancel(format!("job-{n}"), request(DAY), DAY);
        }
        assert_eq!(cancels.pending(), MAX_PENDING, "capped");
        assert!(cancels.start(&JobId::from("job-0"), &end, DAY).is_ok(), "the oldest went first");
        assert!(cancels.start(&JobId::from("job-10"), &end, DAY).is_err());
        cancels.spent("job-11");
        assert!(cancels.start(&JobId::from("job-11"), &end, DAY).is_ok(), "spent elsewhere");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_ends_before_its_grace_ends_its_timer() {
        let cancels = cancels();
        let end = CancellationToken::new();
        let run = cancels.start(&JobId::from("job-4"), &end, 0).unwrap();
        cancels.cancel("job-4".into(), request(0), 0);
        let kill = run.kill.clone();
        drop(run);
        assert!(kill.is_cancelled(), "the timer's token is done");
        assert!(!cancels.cancel("job-4".into(), request(1), 1), "no longer running");
    }
}
