//! "Run now": a request that the scheduler's leader enqueue a schedule's job
//! once, now, under a fresh id (not a tick's), answered with that id. A call
//! (tutorial 6) to the queue `jobs.scheduler.run`, which only the leader
//! consumes while it leads: it links the job types and holds the
//! definitions. The dashboard's Run now and `worker schedules run <name>`
//! send it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Client, Error, Job, JobContext, JobError, JobId, Respond};

/// The queue of Run now requests.
pub const RUN_SCHEDULE_QUEUE: &str = "jobs.scheduler.run";

/// A request older than this when the leader reads it is dropped unanswered:
/// its caller gave up long ago, and running it then would surprise.
pub const RUN_SCHEDULE_MAX_AGE: Duration = Duration::from_secs(60);

/// Asks the scheduler's leader to enqueue the job of the schedule named
/// `schedule` once, now, with a fresh id; answered with the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSchedule {
    /// The schedule's name.
    pub schedule: String,
}

impl Job for RunSchedule {
    const NAME: &'static str = "jobs.RunSchedule";
    const QUEUE: &'static str = RUN_SCHEDULE_QUEUE;
    const MAX_ATTEMPTS: u32 = 1;
}

impl Respond for RunSchedule {
    type Output = String;

    /// Only the scheduler's leader answers these, outside the job path; a
    /// worker given one as a job fails it.
    async fn respond(self, _ctx: JobContext) -> Result<String, JobError> {
        Err(JobError::fatal("only the scheduler's leader answers jobs.RunSchedule"))
    }
}

/// Asks the scheduler's leader on `client`'s vhost to run `schedule` now;
/// the id of the job it enqueued. The request expires with `timeout`: when
/// no leader answered by then, none runs it later.
///
/// # Errors
/// [`Error::CallTimeout`] when no leader answered within `timeout` (no
/// worker with schedules runs), [`Error::CallFailed`] with the leader's
/// reason (no schedule of that name), or as [`Client::call`].
pub async fn run_schedule(client: &Client, schedule: &str, timeout: Duration) -> Result<JobId, Error> {
    // Dropped unread once the caller gave up: a leader that starts later does not run it.
    let id = client.call_expiring(&RunSchedule { schedule: schedule.to_owned() }, timeout, true).await?;
    Ok(JobId::from(id.as_str()))
}
