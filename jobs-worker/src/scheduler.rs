//! The scheduler: every worker with schedules stands for the leadership
//! `jobs.scheduler` (a [`Leader`]: the broker makes one consumer active), and
//! the one that leads fires the schedules at their ticks. A firing enqueues
//! the schedule's job under an id made from the schedule's name and the
//! tick's instant, so a tick fired twice carries one id.
//!
//! Not yet: the record of fired ticks and the catch-up after downtime (a new
//! leader fires from now on), and the fence that stops a leader whose link went
//! silent before the broker makes another active.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jobs_core::backoff::Backoff;
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, enqueue_encoded, Leader, Publisher};
use jobs_core::{report, AmqpConfig, Client, EnqueueOptions, JobId};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::schedule::Resolved;

/// The leadership of the schedulers of a vhost.
pub(crate) const LEADERSHIP: Leader = Leader::new("jobs.scheduler");
/// How often the leader renews its hold: well within the broker's 30-minute `consumer_timeout`.
const RENEW: Duration = Duration::from_secs(5 * 60);

/// The id of the job fired for `schedule`'s tick at `tick`: the same for a
/// tick fired twice. `<64-bit FNV-1a of the name, hex>-<tick, Unix seconds>`.
pub(crate) fn tick_id(schedule: &str, tick: Timestamp) -> JobId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schedule.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    JobId::from(format!("{hash:016x}-{}", tick.as_second()).as_str())
}

/// Stands for the leadership and fires `schedules` while leading, until dropped.
pub(crate) async fn run(amqp: AmqpConfig, worker: String, schedules: Arc<Vec<Resolved>>, client: Client) {
    let (tx, leading) = watch::channel(false);
    let firing = tokio::spawn(fire_while_leading(schedules, client, leading, worker.clone()));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match stand(&amqp, &worker, &tx).await {
            Ok(()) => {}
            Err(err) => warn!(error = %report(&err), "the scheduler lost its link to the broker; standing again"),
        }
        backoff.wait().await;
        if firing.is_finished() {
            return;
        }
    }
}

async fn stand(amqp: &AmqpConfig, worker: &str, leading: &watch::Sender<bool>) -> Result<(), jobs_core::Error> {
    let connection = connect(amqp, &format!("{worker}:scheduler")).await?;
    let result = async {
        let declarer = Declarer::open(&connection).await?;
        LEADERSHIP.declare(&declarer).await?;
        declarer.close().await;
        let publisher = Publisher::open(&connection, amqp.confirm_timeout).await?;
        LEADERSHIP.campaign(&connection, &publisher, RENEW, leading).await
    }
    .await;
    close_connection(connection).await;
    result
}

async fn fire_while_leading(
    schedules: Arc<Vec<Resolved>>,
    client: Client,
    mut leading: watch::Receiver<bool>,
    worker: String,
) {
    loop {
        if leading.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        info!(worker = %worker, schedules = schedules.len(), "this worker leads the scheduler");
        // From now on: ticks missed before this worker led are not fired (no catch-up yet).
        let mut after: Vec<Timestamp> = vec![Timestamp::now(); schedules.len()];
        loop {
            let next = schedules
                .iter()
                .enumerate()
                .filter(|(_, s)| s.enabled)
                .filter_map(|(n, s)| s.cron.next_after(&s.time_zone, after[n]).map(|tick| (tick, n)))
                .min();
            let wait = match next {
                Some((tick, _)) => tick.duration_since(Timestamp::now()).try_into().unwrap_or(Duration::ZERO),
                None => Duration::MAX,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_secs(24 * 3600))) => {}
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if !*leading.borrow() {
                info!(worker = %worker, "this worker no longer leads the scheduler");
                break;
            }
            let Some((tick, n)) = next else { continue };
            if Timestamp::now() < tick {
                continue;
            }
            after[n] = tick;
            fire(&client, &schedules[n], tick).await;
        }
    }
}

async fn fire(client: &Client, schedule: &Resolved, tick: Timestamp) {
    let id = tick_id(&schedule.name, tick);
    let mut options = EnqueueOptions::new().id(id.clone());
    if let Some(queue) = &schedule.queue {
        options = options.queue(queue);
    }
    let lateness = Timestamp::now().duration_since(tick);
    match enqueue_encoded(client, schedule.registration, schedule.body.clone(), options).await {
        Ok(_) => info!(
            schedule = %schedule.name,
            tick = %tick,
            time_zone = %schedule.time_zone_name,
            job.id = %id,
            lateness = ?lateness,
            "fired"
        ),
        Err(err) => warn!(schedule = %schedule.name, tick = %tick, error = %report(&err), "a tick could not be fired"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticks_id_is_its_schedule_and_instant() {
        let tick: Timestamp = "2026-12-01T03:00:00Z".parse().unwrap();
        assert_eq!(tick_id("nightly", tick), tick_id("nightly", tick), "one id for a tick fired twice");
        assert_ne!(tick_id("nightly", tick), tick_id("hourly", tick));
        assert!(tick_id("nightly", tick).as_str().ends_with(&format!("-{}", tick.as_second())));
    }
}
