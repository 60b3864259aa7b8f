//! The scheduler: every worker with schedules stands for the leadership
//! `jobs.scheduler` (a [`Leader`]: the broker makes one consumer active), and
//! the one that leads fires the schedules at their ticks. A firing enqueues
//! the schedule's job under an id made from the schedule's name and the
//! tick's instant, so a tick fired twice carries one id.
//!
//! Each fired tick is recorded in the stream `jobs.schedule.ticks` after its
//! job is confirmed. A new leader reads the last recorded tick of each
//! schedule and applies its catch-up policy to the ticks that came since:
//! none (`skip`), the latest once (`last`), or each (`all`, at most
//! [`MAX_CATCH_UP`]). The one window where a tick fires twice: the leader dies
//! after the job's confirm and before the tick's record; the repeat carries
//! the same id.
//!
//! Not yet: the fence that stops a leader whose link went silent before the
//! broker makes another active, and re-recording last ticks older than the
//! stream's retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect, enqueue_encoded, Journal, Leader, Publisher, StartAt};
use jobs_core::{report, AmqpConfig, Client, EnqueueOptions, JobId};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::schedule::{CatchUp, Resolved};

/// The record of fired ticks.
pub(crate) const TICKS: Journal = Journal::new("jobs.schedule.ticks", TICKS_MAX_AGE);
/// The most missed ticks one schedule fires on catching up (`catch_up = "all"`).
pub(crate) const MAX_CATCH_UP: usize = 100;
/// How long the stream may stay quiet before its reading is taken as complete.
const READ_QUIET: Duration = Duration::from_secs(1);

/// One fired tick, as recorded.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TickRecord {
    schedule: String,
    /// Unix seconds.
    tick: i64,
}

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
    let records = Records { amqp: amqp.clone(), worker: worker.clone(), link: None };
    let firing = tokio::spawn(fire_while_leading(schedules, client, records, leading, worker.clone()));
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

/// The record's connection, opened when first needed and again after a failure.
struct Records {
    amqp: AmqpConfig,
    worker: String,
    link: Option<(Connection, Publisher)>,
}

impl Records {
    async fn open(&mut self) -> Result<&(Connection, Publisher), jobs_core::Error> {
        if self.link.as_ref().is_some_and(|(c, p)| c.is_open() && p.is_open()) {
            return Ok(self.link.as_ref().expect("just checked"));
        }
        let connection = connect(&self.amqp, &format!("{}:schedule-ticks", self.worker)).await?;
        let declarer = Declarer::open(&connection).await?;
        TICKS.declare(&declarer).await?;
        declarer.close().await;
        let publisher = Publisher::open(&connection, self.amqp.confirm_timeout).await?;
        Ok(self.link.insert((connection, publisher)))
    }

    /// Records a fired tick (after its job was confirmed).
    async fn record(&mut self, schedule: &str, tick: Timestamp) {
        let body = match rmp_serde::to_vec_named(&TickRecord { schedule: schedule.into(), tick: tick.as_second() }) {
            Ok(body) => body,
            Err(_) => return,
        };
        for _ in 0..2 {
            let appended = match self.open().await {
                Ok((_, publisher)) => TICKS.append(publisher, "tick", body.clone()).await,
                Err(err) => Err(err),
            };
            match appended {
                Ok(()) => return,
                Err(err) => {
                    warn!(schedule, tick = %tick, error = %report(&err), "a fired tick could not be recorded");
                    self.link = None;
                }
            }
        }
    }

    /// The last recorded tick of each schedule.
    async fn last_ticks(&mut self) -> Result<HashMap<String, Timestamp>, jobs_core::Error> {
        let (connection, _) = self.open().await?;
        let since = std::time::SystemTime::now() - TICKS_MAX_AGE;
        let mut reader = TICKS.read(connection, StartAt::Time(since)).await?;
        let mut last: HashMap<String, Timestamp> = HashMap::new();
        while let Ok(Some((_, _, body))) = tokio::time::timeout(READ_QUIET, reader.next()).await {
            let Ok(record) = rmp_serde::from_slice::<TickRecord>(&body) else { continue };
            let Ok(tick) = Timestamp::from_second(record.tick) else { continue };
            let entry = last.entry(record.schedule).or_insert(tick);
            *entry = (*entry).max(tick);
        }
        reader.close().await;
        Ok(last)
    }
}

const TICKS_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

/// The ticks to fire on catching up, oldest first: those of `schedule` after
/// `last` up to `now`, as its policy says.
pub(crate) fn catch_up(schedule: &Resolved, last: Timestamp, now: Timestamp) -> Vec<Timestamp> {
    match schedule.catch_up {
        CatchUp::Skip => Vec::new(),
        CatchUp::Last => {
            // The latest missed tick, looked for in growing windows back from
            // now, each walked to its end in chunks (walking every missed tick
            // from `last` with one bound would stop at the bound, not at now).
            const CHUNK: usize = 3_600;
            let hour = SignedDuration::from_hours(1);
            for back in [hour, hour * 24, hour * 24 * 32, hour * 24 * 400, hour * 24 * 366 * 9] {
                let start = now.checked_sub(back).map_or(last, |from| from.max(last));
                let (mut from, mut latest) = (start, None);
                loop {
                    let chunk = schedule.cron.between(&schedule.time_zone, from, now, CHUNK);
                    if let Some(tick) = chunk.last() {
                        (from, latest) = (*tick, Some(*tick));
                    }
                    if chunk.len() < CHUNK {
                        break;
                    }
                }
                if latest.is_some() || start == last {
                    return latest.into_iter().collect();
                }
            }
            Vec::new()
        }
        CatchUp::All => schedule.cron.between(&schedule.time_zone, last, now, MAX_CATCH_UP),
    }
}

async fn fire_while_leading(
    schedules: Arc<Vec<Resolved>>,
    client: Client,
    mut records: Records,
    mut leading: watch::Receiver<bool>,
    worker: String,
) {
    loop {
        if leading.wait_for(|leads| *leads).await.is_err() {
            return;
        }
        info!(worker = %worker, schedules = schedules.len(), "this worker leads the scheduler");
        let last = match records.last_ticks().await {
            Ok(last) => last,
            Err(err) => {
                warn!(error = %report(&err), "the record of fired ticks cannot be read: no catch-up this time");
                HashMap::new()
            }
        };
        let now = Timestamp::now();
        let mut after: Vec<Timestamp> = vec![now; schedules.len()];
        for (n, schedule) in schedules.iter().enumerate() {
            let Some(&since) = last.get(&schedule.name) else { continue };
            if !schedule.enabled {
                continue;
            }
            let missed = catch_up(schedule, since, now);
            if !missed.is_empty() {
                info!(schedule = %schedule.name, last_fired = %since, firing = missed.len(), "catching up on missed ticks");
            }
            for tick in missed {
                if !*leading.borrow() {
                    break;
                }
                fire(&client, schedule, tick).await;
                records.record(&schedule.name, tick).await;
            }
            after[n] = now.max(since);
        }
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
            if fire(&client, &schedules[n], tick).await {
                records.record(&schedules[n].name, tick).await;
            }
        }
    }
}

/// Enqueues the tick's job; whether the broker confirmed it.
async fn fire(client: &Client, schedule: &Resolved, tick: Timestamp) -> bool {
    let id = tick_id(&schedule.name, tick);
    let mut options = EnqueueOptions::new().id(id.clone());
    if let Some(queue) = &schedule.queue {
        options = options.queue(queue);
    }
    let lateness = Timestamp::now().duration_since(tick);
    match enqueue_encoded(client, schedule.registration, schedule.body.clone(), options).await {
        Ok(_) => {
            info!(
                schedule = %schedule.name,
                tick = %tick,
                time_zone = %schedule.time_zone_name,
                job.id = %id,
                lateness = ?lateness,
                "fired"
            );
            true
        }
        Err(err) => {
            warn!(schedule = %schedule.name, tick = %tick, error = %report(&err), "a tick could not be fired");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_catches_up_the_latest_missed_tick_however_long_the_downtime() {
        #[derive(serde::Serialize, serde::Deserialize, jobs_core::Job)]
        struct Tick {}
        impl jobs_core::Perform for Tick {
            async fn perform(self, _: jobs_core::JobContext) -> Result<(), jobs_core::JobError> {
                Ok(())
            }
        }
        let types = [<Tick as jobs_core::Job>::__registration().expect("derived")];
        let schedule = |cron: &str, catch_up: &str| {
            let toml = format!("name = \"t\"\ncron = \"{cron}\"\njob = \"Tick\"\ncatch_up = \"{catch_up}\"");
            let config: crate::ScheduleConfig = toml::from_str(&toml).unwrap();
            crate::schedule::resolve(&[], &[config], &types).unwrap().remove(0)
        };
        let ts = |t: &str| t.parse::<Timestamp>().unwrap();
        let now = ts("2026-12-03T12:00:00.5Z");
        // Every second for two days: the latest is the last whole second, past any bound.
        let every_second = schedule("* * * * * *", "last");
        assert_eq!(catch_up(&every_second, ts("2026-12-01T12:00:00Z"), now), [ts("2026-12-03T12:00:00Z")]);
        // Every second in the early hours only: the latest is at 05:59:59, hours before now.
        let early = schedule("* * 0-5 * * *", "last");
        assert_eq!(catch_up(&early, ts("2026-12-01T12:00:00Z"), now), [ts("2026-12-03T05:59:59Z")]);
        assert!(catch_up(&early, ts("2026-12-03T06:00:00Z"), now).is_empty(), "none since the last");
        assert_eq!(catch_up(&schedule("* * * * * *", "all"), ts("2026-12-03T11:00:00Z"), now).len(), MAX_CATCH_UP);
        assert!(catch_up(&schedule("* * * * * *", "skip"), ts("2026-12-03T11:00:00Z"), now).is_empty());
    }

    #[test]
    fn a_ticks_id_is_its_schedule_and_instant() {
        let tick: Timestamp = "2026-12-01T03:00:00Z".parse().unwrap();
        assert_eq!(tick_id("nightly", tick), tick_id("nightly", tick), "one id for a tick fired twice");
        assert_ne!(tick_id("nightly", tick), tick_id("hourly", tick));
        assert!(tick_id("nightly", tick).as_str().ends_with(&format!("-{}", tick.as_second())));
    }
}
