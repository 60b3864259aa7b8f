//! The dashboard's reads and single actions on dead-letter queues: one
//! connection, one walk at a time (two walks of one queue would each see the
//! other's held jobs as gone), made again once if it was lost.

use jobs_core::{DeadFilter, DeadJob, DeadLetters, DeadPage, DeadQuery};

use crate::dashboard::Dashboard;

/// What to do on a dead-letter queue.
#[derive(Clone, Copy)]
enum Op<'a> {
    Page(&'a str, &'a DeadQuery),
    Find(&'a str, &'a str),
    Act(&'a str, &'a DeadFilter, bool),
}

/// What it gave.
enum Done {
    Page(DeadPage),
    Job(Option<Box<DeadJob>>),
    Count(usize),
}

impl Dashboard {
    /// A page of the dead jobs of `queue`.
    pub(crate) async fn dead_page(&self, queue: &str, query: &DeadQuery) -> Result<DeadPage, jobs_core::Error> {
        match self.dead_op(Op::Page(queue, query)).await? {
            Done::Page(page) => Ok(page),
            _ => Err(jobs_core::Error::Unsupported("a dead-job operation gave another answer")),
        }
    }

    /// The dead job of `queue` with id `id`, with its payload.
    pub(crate) async fn dead_find(&self, queue: &str, id: &str) -> Result<Option<DeadJob>, jobs_core::Error> {
        match self.dead_op(Op::Find(queue, id)).await? {
            Done::Job(job) => Ok(job.map(|job| *job)),
            _ => Err(jobs_core::Error::Unsupported("a dead-job operation gave another answer")),
        }
    }

    /// Retries (`retry`) or deletes the dead jobs of `queue` that `filter`
    /// takes (one, by id: the pages' buttons); how many.
    pub(crate) async fn dead_act(
        &self,
        queue: &str,
        filter: &DeadFilter,
        retry: bool,
    ) -> Result<usize, jobs_core::Error> {
        match self.dead_op(Op::Act(queue, filter, retry)).await? {
            Done::Count(n) => Ok(n),
            _ => Err(jobs_core::Error::Unsupported("a dead-job operation gave another answer")),
        }
    }

    /// Runs `op` on the connection for dead jobs, made again once if it was lost.
    async fn dead_op(&self, op: Op<'_>) -> Result<Done, jobs_core::Error> {
        let mut slot = self.dead.lock().await;
        let mut last = None;
        for _ in 0..2 {
            if slot.is_none() {
                *slot = Some(DeadLetters::connect(&self.amqp).await?);
            }
            let Some(dead) = slot.as_ref() else { continue };
            let done = match op {
                Op::Page(queue, query) => dead.page(queue, query).await.map(Done::Page),
                Op::Find(queue, id) => dead.find(queue, id).await.map(|job| Done::Job(job.map(Box::new))),
                Op::Act(queue, filter, true) => dead.retry(queue, filter).await.map(Done::Count),
                Op::Act(queue, filter, false) => dead.purge(queue, filter).await.map(Done::Count),
            };
            match done {
                Ok(done) => return Ok(done),
                Err(err) if err.is_permanent() => return Err(err),
                Err(err) => {
                    if let Some(dead) = slot.take() {
                        dead.close().await;
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or(jobs_core::Error::Unsupported("no connection for dead jobs")))
    }
}
