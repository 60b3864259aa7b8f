//! The dashboard's reads and single actions on dead-letter queues: one
//! connection, one walk at a time, made again once if it was lost. Each
//! takes a [`Reading`] of its queue: proof that no bulk action walks it.

use jobs_core::{DeadFilter, DeadLetters, DeadPage, DeadQuery, Found, Progress};

use crate::actions::Reading;
use crate::dashboard::Dashboard;

/// Runs `$call` with `$dead` the connection for dead jobs (made when there
/// is none), once more on a new one when it failed on one lost.
macro_rules! with_dead {
    ($dashboard:expr, |$dead:ident| $call:expr) => {{
        let mut slot = $dashboard.dead.lock().await;
        let mut tries = 0;
        loop {
            tries += 1;
            let $dead = match slot.as_ref() {
                Some(dead) => dead,
                None => &*slot.insert(DeadLetters::connect(&$dashboard.amqp).await?),
            };
            let done = $call.await;
            match done {
                Err(err) if tries < 2 && !err.is_permanent() => {
                    if let Some(lost) = slot.take() {
                        lost.close().await;
                    }
                    tracing::debug!(error = %jobs_core::report(&err), "dead-job connection lost; once more on a new one");
                }
                done => break done,
            }
        }
    }};
}

impl Dashboard {
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
