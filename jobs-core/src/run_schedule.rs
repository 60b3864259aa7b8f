//! "Run now": a request that the scheduler's leader enqueue a schedule's job
//! once, now, under a fresh id (not a tick's), answered with that id. A call
//! (tutorial 6) to the queue `jobs.scheduler.run`, which only the leader
//! consumes while it leads: it links the job types and holds the
//! definitions. The dashboard's Run now and `worker schedules run <name>`
//! send it.

use std::time::Duration;

use amqprs::{FieldTable, FieldValue};
use serde::{Deserialize, Serialize};

use crate::codec::set_header;
use crate::destination::Destination;
use crate::topology::{declare_queue, Declarer};
use crate::{Client, Error, Job, JobId};

/// The queue of Run now requests: classic, durable, with no dead-lettering
/// (a request its caller gave up on expires and is gone). Declared by the
/// workers with schedules; a caller only publishes to it.
pub const RUN_SCHEDULE_QUEUE: &str = "jobs.scheduler.run";

/// Declares [`RUN_SCHEDULE_QUEUE`] (idempotent).
///
/// # Errors
/// When the broker refuses it.
pub async fn declare_run_schedule_queue(on: &Declarer) -> Result<(), Error> {
    let mut args = FieldTable::new();
    set_header(&mut args, "x-queue-type", FieldValue::from("classic"));
    declare_queue(on, RUN_SCHEDULE_QUEUE, args).await
}

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

/// Asks the scheduler's leader on `client`'s vhost to run `schedule` now;
/// the id of the job it enqueued. The request expires with `timeout`: when
/// no leader answered by then, none runs it later.
///
/// # Errors
/// [`Error::CallTimeout`] when no leader answered within `timeout` (no
/// worker with schedules runs), [`Error::Unroutable`] when no worker with
/// schedules ever ran on the vhost (the queue does not exist),
/// [`Error::CallFailed`] with the leader's reason (no schedule of that
/// name), or as [`Client::call`].
pub async fn run_schedule(client: &Client, schedule: &str, timeout: Duration) -> Result<JobId, Error> {
    // Straight to the queue (not declared by callers), and dropped unread
    // once the caller gave up: a leader that starts later does not run it.
    let request = RunSchedule { schedule: schedule.to_owned() };
    let id: String = client.call_expiring(&request, timeout, Destination::direct(RUN_SCHEDULE_QUEUE)).await?;
    Ok(JobId::from(id.as_str()))
}
