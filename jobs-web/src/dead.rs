//! The dashboard's reads and single actions on dead-letter queues, on one
//! connection that every page shares (walks of different queues go on side
//! by side on it), made again when it was lost. Each takes a [`Reading`] of
//! its queue: proof that no other walk of that queue runs.

use std::sync::Arc;

use jobs_core::{DeadFilter, DeadLetters, DeadPage, DeadQuery, Found, Progress};

use crate::actions::Reading;
use crate::dashboard::Dashboard;

/// Runs `$call` with `$dead` the connection for dead jobs (made when there
/// is none), once more on a new one when it failed because that one was
/// lost (a refusal, a queue that does not exist, is the answer).
macro_rules! with_dead {
    ($dashboard:expr, |$dead:ident| $call:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let shared = $dashboard.dead_letters().await?;
            let $dead = &*shared;
            let done = $call.await;
            match done {
                Err(err) if tries < 2 && !shared.is_open() => {
                    tracing::debug!(error = %jobs_core::report(&err), "dead-job connection lost; once more on a new one");
                    $dashboard.lost_dead_letters(shared).await;
                }
                done => break done,
            }
        }
    }};
}

impl Dashboard {
    /// The connection for dead jobs: the one open, or a new one (one connect at a time).
    async fn dead_letters(&self) -> Result<Arc<DeadLetters>, jobs_core::Error> {
        let open = || self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(dead) = open() {
            return Ok(dead);
        }
        let _one = self.dead_connecting.lock().await;
        if let Some(dead) = open() {
            return Ok(dead);
        }
        let dead = Arc::new(DeadLetters::connect(&self.amqp).await?);
        *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = Some(dead.clone());
        Ok(dead)
    }

    /// Forgets `lost`, if it is still the connection for dead jobs, and closes it.
    async fn lost_dead_letters(&self, lost: Arc<DeadLetters>) {
        {
            let mut slot = self.dead.lock().unwrap_or_else(|e| e.into_inner());
            if slot.as_ref().is_some_and(|open| Arc::ptr_eq(open, &lost)) {
                slot.take();
            }
        }
        lost.close().await;
    }

    /// How many dead jobs `queue` has: the broker's count.
    pub(crate) async fn dead_count(&self, queue: &str) -> Result<u64, jobs_core::Error> {
        with_dead!(self, |dead| dead.count(queue))
    }

    /// A page of the dead jobs of the queue read.
    pub(crate) async fn dead_page(
        &self,
        reading: &Reading<'_>,
        query: &DeadQuery,
    ) -> Result<DeadPage, jobs_core::Error> {
        with_dead!(self, |dead| dead.page(reading.queue(), query))
    }

    /// The dead job with id `id`, with its payload, reading at most `budget` jobs.
    pub(crate) async fn dead_find(
        &self,
        reading: &Reading<'_>,
        id: &str,
        budget: u64,
    ) -> Result<Found, jobs_core::Error> {
        with_dead!(self, |dead| dead.find(reading.queue(), id, budget))
    }

    /// Retries (`retry`) or deletes the dead jobs `filter` takes (one, by id:
    /// the pages' buttons).
    pub(crate) async fn dead_act(
        &self,
        reading: &Reading<'_>,
        filter: &DeadFilter,
        retry: bool,
    ) -> Result<Progress, jobs_core::Error> {
        if retry {
            with_dead!(self, |dead| dead.retry(reading.queue(), filter))
        } else {
            with_dead!(self, |dead| dead.purge(reading.queue(), filter))
        }
    }
}
