//! The scheduler: every worker with schedules stands for the leadership
//! `jobs.scheduler` (a [`Leader`]: the broker makes one consumer active), and
//! the one that leads fires the schedules at their ticks. A firing enqueues
//! the schedule's job under an id made from the schedule's name and the
//! tick's instant, so a tick fired twice carries one id.
//!
//! Each fired tick is recorded in the stream `jobs.schedule.ticks`
//! ([`crate::ticks`]) after its job is confirmed. A new leader reads the last
//! recorded tick of each schedule and applies its catch-up policy to the
//! ticks that came since: none (`skip`), the latest once (`last`), or each
//! (`all`, at most `scheduler.max_catch_up`). The one window where a tick
//! fires twice: the leader dies after the job's confirm and before the
//! tick's record; the repeat carries the same id.
//!
//! A leader whose link went silent fires nothing: it acts only while the
//! broker answered it on the leadership's link within the [`fence`], a
//! third of the heartbeat timeout after which the broker gives up on the
//! link and makes another leader. A tick whose connection went before its
//! confirm goes again on a new connection only while this worker still
//! holds the leadership: a deposed leader's late tick would be a second
//! firing.
//!
//! While it leads, the leader also answers Run now requests
//! (`jobs.scheduler.run`): it enqueues a schedule's job once under a fresh
//! id and answers with that id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jobs_core::plumbing::amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicNackArguments, BasicQosArguments, Channel, ConsumerMessage,
};
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::events::{ScheduleBeat, SchedulerBeat};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{
    declare_run_schedule_queue, decode, enqueue_encoded, enqueue_encoded_while, Destination, Hold, Leader, Message,
    ReplyStatus, RunSchedule, RUN_SCHEDULE_QUEUE,
};
use jobs_core::{report, AmqpConfig, Client, FailureKind, JobId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::definitions::{self, Fnv};
use crate::leadership::{self, Acting};
use crate::schedule::{CatchUp, Resolved};
use crate::ticks::{Record, Ticks, SNAPSHOT_EVERY};
use crate::SchedulerConfig;

/// The leadership of the schedulers of a vhost.
pub(crate) const LEADERSHIP: Leader = Leader::new("jobs.scheduler");
/// How often the leader renews its hold: well within the broker's 30-minute `consumer_timeout`.
const RENEW: Duration = Duration::from_secs(5 * 60);
/// A leader with at most this many schedules lists them in every beat.
const LIST_ALWAYS: usize = 50;
/// A leader with more lists them in a beat at most this often.
const LIST_EVERY: Duration = Duration::from_secs(60);
/// How long a failed firing waits before it is tried again (same tick, same id).
const FIRE_AGAIN: Duration = Duration::from_secs(1);
/// How often a leader tries again to take Run now requests after it could not.
const REQUESTS_AGAIN: Duration = Duration::from_secs(5);

/// The id of the job fired for `schedule`'s tick at `tick`: the same for a
/// tick fired twice. `<64-bit FNV-1a of the name, hex>-<tick, Unix seconds>`.
pub(crate) fn tick_id(schedule: &str, tick: Timestamp) -> JobId {
    JobId::from(format!("{}-{}", Fnv::new().write(schedule.as_bytes()).hex(), tick.as_second()).as_str())
}

/// A worker's schedules and what its scheduler knows now, shared with its
/// heartbeats.
pub(crate) struct Status {
    pub(crate) schedules: Vec<Resolved>,
    /// Each schedule's name and definition digest.
    pub(crate) digests: Vec<(String, String)>,
    /// The digest of them all.
    pub(crate) digest: String,
    max_catch_up: usize,
    /// Whether the firing side leads, the fence open.
    acting: Acting,
    /// Per schedule: the last tick fired, and how late.
    fired: Mutex<Vec<Option<Fired>>>,
    /// When the leader's beats last listed the schedules.
    listed: Mutex<Option<std::time::Instant>>,
}

/// A fired tick, and how late it fired (unknown for one read from the record).
type Fired = (Timestamp, Option<SignedDuration>);

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status").field("schedules", &self.schedules.len()).field("digest", &self.digest).finish()
    }
}

impl Status {
    pub(crate) fn new(schedules: Vec<Resolved>, config: &SchedulerConfig) -> Self {
        let digests: Vec<(String, String)> =
            schedules.iter().map(|s| (s.name.clone(), definitions::digest(s))).collect();
        let digest = definitions::digest_all(digests.iter().map(|(n, d)| (n.as_str(), d.as_str())));
        Status {
            fired: Mutex::new(vec![None; schedules.len()]),
            schedules,
            digests,
            digest,
            max_catch_up: config.max_catch_up,
            acting: Acting::new("jobs_scheduler_leader"),
            listed: Mutex::new(None),
        }
    }

    /// Whether this worker leads the scheduler (and acts as leader) now.
    pub(crate) fn leading(&self) -> bool {
        self.acting.acts()
    }

    fn lead(&self, leading: bool) {
        *self.listed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.acting.lead(leading);
    }

    /// Whether the next beat lists the schedules: each beat with a few of
    /// them, at most each [`LIST_EVERY`] with many (a beat stays small).
    fn lists_now(&self) -> bool {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let due = self.schedules.len() <= LIST_ALWAYS || listed.map_or(true, |at| at.elapsed() >= LIST_EVERY);
        if due {
            *listed = Some(std::time::Instant::now());
        }
        due
    }

    fn fired_at(&self, n: usize, tick: Timestamp, lateness: Option<SignedDuration>) {
        if let Some(slot) = self.fired.lock().unwrap_or_else(|e| e.into_inner()).get_mut(n) {
            *slot = Some((tick, lateness));
        }
    }

    /// What the next heartbeat says of the scheduler: the schedules
    /// themselves only in the leader's (with many, once a minute).
    pub(crate) fn beat(&self) -> SchedulerBeat {
        let leading = self.leading();
        let schedules = if leading && self.lists_now() {
            let fired = self.fired.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let now = Timestamp::now();
            let ms = |t: Timestamp| u64::try_from(t.as_millisecond()).unwrap_or(0);
            self.schedules
                .iter()
                .zip(&self.digests)
                .zip(fired)
                .map(|((s, (_, digest)), fired)| ScheduleBeat {
                    name: s.name.clone(),
                    cron: s.cron_text.clone(),
                    time_zone: s.time_zone_name.clone(),
                    job_type: s.registration.name().to_owned(),
                    catch_up: s.catch_up.as_str().to_owned(),
                    enabled: s.enabled,
                    digest: digest.clone(),
                    last_fired_ms: fired.map(|(tick, _)| ms(tick)),
                    last_lateness_ms: fired
                        .and_then(|(_, late)| late)
                        .map(|late| u64::try_from(late.as_millis()).unwrap_or(0)),
                    next_ms: if s.enabled { next_ticks(s, now, 3).into_iter().map(ms).collect() } else { Vec::new() },
                })
                .collect()
        } else {
            Vec::new()
        };
        SchedulerBeat { leading, digest: self.digest.clone(), schedules }
    }
}

/// The next `n` ticks of `schedule` after `now`.
pub(crate) fn next_ticks(schedule: &Resolved, now: Timestamp, n: usize) -> Vec<Timestamp> {
    schedule.cron.between(&schedule.time_zone, now, Timestamp::MAX, n)
}

/// Stands for the leadership and fires the schedules while leading, until
/// `stopping` is cancelled (the worker stops: the running firing ends, then
/// the leadership goes to another) or this is dropped.
pub(crate) async fn run(
    amqp: AmqpConfig,
    worker: String,
    status: Arc<Status>,
    client: Client,
    stopping: CancellationToken,
) {
    status.lead(false); // the gauge shown from the start
    let mut tasks = JoinSet::new(); // aborted when this is dropped
    let (records, recorded) = mpsc::unbounded_channel();
    tasks.spawn(crate::ticks::recorder(Ticks::new(amqp.clone(), format!("{worker}:schedule-ticks")), recorded));
    tasks.spawn(definitions::watch(amqp.clone(), worker.clone(), status.clone()));
    let fenced = {
        let status = status.clone();
        move |fenced| status.acting.fence(fenced)
    };
    let reads = Ticks::new(amqp.clone(), format!("{worker}:schedule-reads"));
    let role = (LEADERSHIP, "scheduler", RENEW);
    leadership::serve(&amqp, &worker.clone(), role, fenced, |hold, fence| {
        Firing { status, client, reads, records, hold, fence, worker, known: HashMap::new() }.run(stopping)
    })
    .await;
}

/// The ticks to fire on catching up, oldest first: those of `schedule` after
/// `last` up to `now`, as its policy says (`all`: at most `max`).
pub(crate) fn catch_up(schedule: &Resolved, last: Timestamp, now: Timestamp, max: usize) -> Vec<Timestamp> {
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
        CatchUp::All => schedule.cron.between(&schedule.time_zone, last, now, max),
    }
}

/// Why a lead ended.
enum Ended {
    /// The leadership went to another (or its connection closed), or was won again since.
    Lost,
    /// The broker has not answered within the fence.
    Silent,
    /// The worker stops.
    Gone,
}

/// The firing side: waits to lead, then fires until it no longer holds.
struct Firing {
    status: Arc<Status>,
    client: Client,
    /// Readings of the record, and Run now requests and answers.
    reads: Ticks,
    records: mpsc::UnboundedSender<Record>,
    hold: watch::Receiver<Hold>,
    fence: Duration,
    worker: String,
    /// The last tick this worker fired or read of each schedule, kept across
    /// its leads: a record not appended yet does not make it fire a tick
    /// again when it leads again.
    known: HashMap<String, Timestamp>,
}

impl Firing {
    async fn run(mut self, stopping: CancellationToken) {
        loop {
            let Some(term) = leadership::next_term(&mut self.hold, self.fence, &stopping).await else { return };
            self.status.lead(true);
            // The queue of Run-now requests is declared before this worker
            // says it leads: a request sent once it has said so is routed.
            let mut requests = self.open_requests().await;
            info!(worker = %self.worker, schedules = self.status.schedules.len(), "this worker leads the scheduler");
            let ended = self.lead(term, &mut requests, &stopping).await;
            self.status.lead(false);
            if let Some(requests) = requests {
                requests.close().await;
            }
            match ended {
                Ended::Lost => info!(worker = %self.worker, "this worker no longer leads the scheduler"),
                // Said by `watch_fence` as the fence closed.
                Ended::Silent => {}
                Ended::Gone => return,
            }
        }
    }

    /// Why the lead of `term` ends now, if it does.
    fn ended(&self, term: u64) -> Option<Ended> {
        let hold = *self.hold.borrow();
        if !hold.leading || hold.term != term {
            Some(Ended::Lost)
        } else if !hold.holds(self.fence) {
            Some(Ended::Silent)
        } else {
            None
        }
    }

    /// Catches up, then fires each tick as it comes, until the lead ends.
    async fn lead(&mut self, term: u64, requests: &mut Option<Requests>, stopping: &CancellationToken) -> Ended {
        let mut last = std::mem::take(&mut self.known);
        match self.reads.last_ticks().await {
            Ok(recorded) => {
                for (name, tick) in recorded {
                    let entry = last.entry(name).or_insert(tick);
                    *entry = (*entry).max(tick);
                }
            }
            Err(err) => {
                warn!(error = %report(&err), "the record of fired ticks cannot be read: no catch-up this time")
            }
        }
        let ended = self.fire_from(term, &mut last, requests, stopping).await;
        self.known = last;
        ended
    }

    /// [`Firing::lead`] from the last ticks of `last`, which it keeps up to date.
    async fn fire_from(
        &mut self,
        term: u64,
        last: &mut HashMap<String, Timestamp>,
        requests: &mut Option<Requests>,
        stopping: &CancellationToken,
    ) -> Ended {
        let status = self.status.clone();
        let schedules = &status.schedules;
        let now = Timestamp::now();
        for (n, schedule) in schedules.iter().enumerate() {
            let Some(&since) = last.get(&schedule.name) else { continue };
            status.fired_at(n, since, None);
            if !schedule.enabled {
                continue;
            }
            let missed = catch_up(schedule, since, now, status.max_catch_up);
            if !missed.is_empty() {
                info!(schedule = %schedule.name, last_fired = %since, firing = missed.len(), "catching up on missed ticks");
            }
            for tick in missed {
                if let Some(ended) = self.ended(term) {
                    return ended;
                }
                if stopping.is_cancelled() {
                    return Ended::Gone;
                }
                if self.fire(n, tick, term).await {
                    last.insert(schedule.name.clone(), tick);
                }
            }
        }
        self.snapshot(last);
        let mut upcoming: Vec<Option<Timestamp>> = schedules
            .iter()
            .map(|s| {
                let after = last.get(&s.name).map_or(now, |l| now.max(*l));
                s.enabled.then(|| s.cron.next_after(&s.time_zone, after)).flatten()
            })
            .collect();
        let start = tokio::time::Instant::now();
        let mut snapshots = tokio::time::interval_at(start + SNAPSHOT_EVERY, SNAPSHOT_EVERY);
        let mut reopen = tokio::time::interval_at(start, REQUESTS_AGAIN);
        let mut not_before = start;
        loop {
            let next = upcoming.iter().enumerate().filter_map(|(n, t)| t.map(|t| (t, n))).min();
            let wait = match next {
                Some((tick, _)) => tick.duration_since(Timestamp::now()).try_into().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(24 * 3600),
            };
            let wake = (tokio::time::Instant::now() + wait.min(Duration::from_secs(24 * 3600))).max(not_before);
            let fence_closes = self.hold.borrow().heard.map_or(wake, |heard| heard + self.fence);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = tokio::time::sleep_until(fence_closes) => {}
                changed = self.hold.changed() => {
                    if changed.is_err() {
                        return Ended::Gone;
                    }
                }
                _ = stopping.cancelled() => return Ended::Gone,
                request = next_request(requests) => {
                    if let Some(ended) = self.ended(term) {
                        request.close().await;
                        return ended;
                    }
                    self.answer(request).await;
                    continue;
                }
                _ = snapshots.tick() => self.snapshot(last),
                _ = reopen.tick(), if requests.is_none() => {
                    *requests = self.open_requests().await;
                    continue;
                }
            }
            if let Some(ended) = self.ended(term) {
                return ended;
            }
            let Some((tick, n)) = next else { continue };
            if Timestamp::now() < tick || tokio::time::Instant::now() < not_before {
                continue;
            }
            let schedule = &schedules[n];
            if self.fire(n, tick, term).await {
                last.insert(schedule.name.clone(), tick);
                upcoming[n] = schedule.cron.next_after(&schedule.time_zone, tick);
            } else {
                // The same tick again (same id) while this lead holds.
                not_before = tokio::time::Instant::now() + FIRE_AGAIN;
            }
        }
    }

    /// Appends a snapshot of the last ticks of the schedules this worker defines.
    fn snapshot(&self, last: &HashMap<String, Timestamp>) {
        let ticks: Vec<(String, Timestamp)> = self
            .status
            .schedules
            .iter()
            .filter_map(|s| last.get(&s.name).map(|tick| (s.name.clone(), *tick)))
            .collect();
        if !ticks.is_empty() {
            let _ = self.records.send(Record::Snapshot(ticks));
        }
    }

    async fn open_requests(&mut self) -> Option<Requests> {
        let opened = match self.reads.open().await {
            Ok((connection, _)) => Requests::open(connection).await,
            Err(err) => Err(err),
        };
        match opened {
            Ok(requests) => Some(requests),
            Err(err) => {
                warn!(error = %report(&err), retry_in = ?REQUESTS_AGAIN, "Run now requests cannot be taken for now");
                self.reads.reset();
                None
            }
        }
    }

    /// Enqueues the tick's job, unless this worker no longer holds the lead
    /// of `term`, and has it recorded; whether the broker confirmed it.
    async fn fire(&self, n: usize, tick: Timestamp, term: u64) -> bool {
        if self.ended(term).is_some() {
            return false;
        }
        let schedule = &self.status.schedules[n];
        let id = tick_id(&schedule.name, tick);
        let (hold, fence) = (self.hold.clone(), self.fence);
        let still_holds = move || hold.borrow().holds_in(term, fence);
        let options = schedule.options().id(id.clone());
        let fired =
            enqueue_encoded_while(&self.client, schedule.registration, schedule.body.clone(), options, &still_holds)
                .await;
        match fired {
            Ok(_) => {
                // How late the tick's job was stored: its confirm's time minus the tick's instant.
                let lateness = Timestamp::now().duration_since(tick);
                let _ = self.records.send(Record::Tick(schedule.name.clone(), tick));
                metrics::counter!("jobs_schedule_fired_total", "schedule" => schedule.name.clone()).increment(1);
                metrics::histogram!("jobs_schedule_lateness_seconds").record(lateness.as_secs_f64().max(0.0));
                self.status.fired_at(n, tick, Some(lateness));
                info!(
                    schedule = %schedule.name,
                    tick = %tick,
                    time_zone = %schedule.time_zone_name,
                    job.id = %id,
                    lateness_ms = lateness.as_secs_f64() * 1000.0,
                    "fired"
                );
                true
            }
            // A unique job whose key another job holds (the last tick's, still
            // queued or running): this tick is skipped, not fired again.
            Err(jobs_core::Error::Duplicate { existing }) => {
                let _ = self.records.send(Record::Tick(schedule.name.clone(), tick));
                self.status.fired_at(n, tick, None);
                info!(schedule = %schedule.name, tick = %tick, holder = %existing, "a tick skipped: its unique job's key is held by another job, queued or running");
                true
            }
            Err(err) if self.ended(term).is_some() => {
                warn!(
                    schedule = %schedule.name,
                    tick = %tick,
                    error = %report(&err),
                    "a tick's job was not confirmed and is not sent again: this worker no longer holds the scheduler (the next leader catches up)"
                );
                false
            }
            Err(err) => {
                warn!(schedule = %schedule.name, tick = %tick, error = %report(&err), retry_in = ?FIRE_AGAIN, "a tick could not be fired; firing it again");
                false
            }
        }
    }

    /// Answers a Run now request: enqueues the schedule's job once, under
    /// the request's own id (fresh, and the same if the request comes again).
    async fn answer(&mut self, request: Request) {
        let props = request.message.basic_properties.clone();
        let body = request.message.content.as_deref().unwrap_or_default();
        let id = props.as_ref().and_then(|p| p.message_id()).map(|id| JobId::from(id.as_str()));
        let outcome: Result<JobId, String> = match (decode::<RunSchedule>(body), id) {
            (Err(err), _) => Err(format!("not a Run now request: {err}")),
            (Ok(_), None) => Err("a Run now request needs a message id".into()),
            (Ok(run), Some(id)) => self.run_now(&run.schedule, id).await,
        };
        let reply_to = props.as_ref().and_then(|p| p.reply_to().map(ToString::to_string));
        let correlation = props.as_ref().and_then(|p| p.correlation_id().map(ToString::to_string));
        if let (Some(reply_to), Some(correlation)) = (reply_to, correlation) {
            let (status, body) = match &outcome {
                Ok(id) => (ReplyStatus::Ok, rmp_serde::to_vec_named(id.as_str())),
                Err(reason) => (ReplyStatus::Failed(FailureKind::Fatal), rmp_serde::to_vec_named(reason)),
            };
            if let Ok(body) = body {
                let answer = Message::answer(JobId::new(), &correlation, status, body);
                let sent = match self.reads.open().await {
                    Ok((_, publisher)) => publisher.publish(answer.to(&Destination::direct(&reply_to))).await,
                    Err(err) => Err(err),
                };
                // The broker may call an answer to a direct reply-to
                // unroutable when its caller is gone; the channel stays.
                if let Err(err) = sent {
                    debug!(error = %report(&err), "a Run now answer was not taken");
                }
            }
        }
        request.ack().await;
    }

    async fn run_now(&self, name: &str, id: JobId) -> Result<JobId, String> {
        let Some(schedule) = self.status.schedules.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = self.status.schedules.iter().map(|s| s.name.as_str()).collect();
            return Err(format!("no schedule `{name}` on the leader {}; it has: {}", self.worker, names.join(", ")));
        };
        let options = schedule.options().id(id);
        match enqueue_encoded(&self.client, schedule.registration, schedule.body.clone(), options).await {
            Ok(id) => {
                info!(schedule = %schedule.name, job.id = %id, "run now");
                Ok(id)
            }
            Err(err) => Err(format!("the job could not be enqueued: {}", report(&err))),
        }
    }
}

/// Run now requests, consumed while this worker leads.
struct Requests {
    channel: Channel,
    rx: mpsc::UnboundedReceiver<ConsumerMessage>,
}

/// One request, with what acks it.
struct Request {
    channel: Channel,
    message: ConsumerMessage,
}

impl Request {
    async fn ack(self) {
        if let Some(deliver) = &self.message.deliver {
            let _ = self.channel.basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false)).await;
        }
    }

    /// Gives it back unanswered, for the next leader.
    async fn close(self) {
        if let Some(deliver) = &self.message.deliver {
            let args = BasicNackArguments::new(deliver.delivery_tag(), false, true);
            let _ = self.channel.basic_nack(args).await;
        }
    }
}

impl Requests {
    async fn open(connection: &Connection) -> Result<Self, jobs_core::Error> {
        let declarer = Declarer::open(connection).await?;
        declare_run_schedule_queue(&declarer).await?;
        declarer.close().await;
        let channel = connection.open_channel(None).await.map_err(jobs_core::plumbing::amqp_error("channel.open"))?;
        channel
            .basic_qos(BasicQosArguments::new(0, 1, false))
            .await
            .map_err(jobs_core::plumbing::amqp_error("basic.qos"))?;
        let args = BasicConsumeArguments::new(RUN_SCHEDULE_QUEUE, "").manual_ack(true).finish();
        let (_, rx) = channel.basic_consume_rx(args).await.map_err(jobs_core::plumbing::amqp_error("basic.consume"))?;
        Ok(Requests { channel, rx })
    }

    async fn close(self) {
        let _ = self.channel.close().await;
    }
}

/// The next request; never, when there is no consumer of them (or it closed).
async fn next_request(requests: &mut Option<Requests>) -> Request {
    if let Some(r) = requests.as_mut() {
        if let Some(message) = r.rx.recv().await {
            return Request { channel: r.channel.clone(), message };
        }
        warn!("Run now requests are no longer taken: their channel closed");
        *requests = None;
    }
    std::future::pending().await
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
        assert_eq!(catch_up(&every_second, ts("2026-12-01T12:00:00Z"), now, 100), [ts("2026-12-03T12:00:00Z")]);
        // Every second in the early hours only: the latest is at 05:59:59, hours before now.
        let early = schedule("* * 0-5 * * *", "last");
        assert_eq!(catch_up(&early, ts("2026-12-01T12:00:00Z"), now, 100), [ts("2026-12-03T05:59:59Z")]);
        assert!(catch_up(&early, ts("2026-12-03T06:00:00Z"), now, 100).is_empty(), "none since the last");
        let all = schedule("* * * * * *", "all");
        assert_eq!(catch_up(&all, ts("2026-12-03T11:00:00Z"), now, 100).len(), 100, "scheduler.max_catch_up");
        assert_eq!(catch_up(&all, ts("2026-12-03T11:00:00Z"), now, 7).len(), 7);
        assert_eq!(catch_up(&all, ts("2026-12-03T11:59:57Z"), now, 100).len(), 3, "each missed tick");
        assert!(catch_up(&schedule("* * * * * *", "skip"), ts("2026-12-03T11:00:00Z"), now, 100).is_empty());
    }

    #[test]
    fn a_ticks_id_is_its_schedule_and_instant() {
        let tick: Timestamp = "2026-12-01T03:00:00Z".parse().unwrap();
        assert_eq!(tick_id("nightly", tick), tick_id("nightly", tick), "one id for a tick fired twice");
        assert_ne!(tick_id("nightly", tick), tick_id("hourly", tick));
        assert!(tick_id("nightly", tick).as_str().ends_with(&format!("-{}", tick.as_second())));
        // The form of the ids ticks fired before this build carried: a repeat across a deploy keeps its id.
        assert_eq!(tick_id("nightly", tick).as_str(), format!("{}-{}", fnv1a("nightly"), tick.as_second()));
    }

    fn fnv1a(text: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}
