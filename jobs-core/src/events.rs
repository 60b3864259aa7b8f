//! Worker heartbeats: what each worker publishes every
//! `worker.heartbeat_interval` to the RabbitMQ stream `jobs.events`, and what
//! the dashboard reads back. A stream keeps them (`amqp.events_max_age`, 7
//! days by default) and reading does not remove them, so a dashboard that
//! starts reads the window it shows again: its charts survive its restarts
//! and the broker's. Nothing is published per job: a beat carries the counts
//! since the one before.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalReader};

/// The stream of heartbeats.
pub const EVENTS_STREAM: &str = "jobs.events";

/// Upper bounds, in seconds, of the job duration buckets a beat counts in
/// (the last bucket counts the rest): the Prometheus histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

/// The bucket of a duration of `seconds`: an index into [`DURATION_BUCKETS`],
/// or its length for longer ones.
pub fn duration_bucket(seconds: f64) -> usize {
    DURATION_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(DURATION_BUCKETS.len())
}

/// `at` in milliseconds since the Unix epoch, as beats carry times.
pub fn epoch_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    epoch_ms(std::time::SystemTime::now())
}

/// One worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's id (`worker.id`, `host:pid:n` by default).
    pub worker: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The version of `jobs-worker` it runs.
    pub version: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When this beat was sent, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The interval between its beats, milliseconds.
    pub interval_ms: u64,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// The exchanges it subscribes to.
    #[serde(default)]
    pub exchanges: Vec<String>,
    /// Jobs run at once per queue.
    pub concurrency: u16,
    /// Set on its last beat, sent as it stops.
    pub stopping: bool,
    /// The jobs running as the beat was sent.
    pub running: Vec<RunningJob>,
    /// What happened since the last beat, per job type.
    pub counts: Vec<TypeCounts>,
    /// Its part in the scheduler, when it has schedules (beats of workers
    /// before this field have none).
    #[serde(default)]
    pub scheduler: Option<SchedulerBeat>,
    /// Its part in aggregating batches (beats of workers before this field have none).
    #[serde(default)]
    pub batches: Option<BatchesBeat>,
    /// The global limits of the job types it runs, and its share of them.
    #[serde(default)]
    pub limits: Vec<LimitBeat>,
    /// The rate limits of the job types it runs (beats of workers before this field have none).
    #[serde(default)]
    pub rates: Vec<RateBeat>,
    /// The unique keys held, when this worker keeps them (beats of workers
    /// before this field have none).
    #[serde(default)]
    pub unique_keys: Option<u64>,
    /// Its weighted queues (`worker.queue_weights`) and their use now (beats
    /// of workers before this field have none).
    #[serde(default)]
    pub weights: Vec<WeightBeat>,
}

/// A weighted queue of a worker: its share of the worker's concurrency and its use now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightBeat {
    /// The queue.
    pub queue: String,
    /// Its weight.
    pub weight: u16,
    /// Its jobs running now.
    pub running: u16,
    /// Its deliveries waiting for a turn now.
    pub waiting: u32,
    /// Its jobs started since the worker started.
    pub started: u64,
}

/// A rate limit of a job type, as one worker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateBeat {
    /// The job type.
    pub job: String,
    /// Its rate, as written (`100/s`).
    pub rate: String,
    /// How many may start at once after a quiet spell.
    pub burst: u32,
    /// The field each of whose values has the rate, if any.
    #[serde(default)]
    pub key: Option<String>,
    /// This worker keeps the rate now (it leads the type's limiter).
    pub leading: bool,
}

/// A global limit (`max_running`) of a job type, as one worker holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitBeat {
    /// The job type.
    pub job: String,
    /// At most this many run at once across the vhost.
    pub max_running: u16,
    /// The slots this worker holds.
    pub slots: u16,
    /// Its jobs of the type running now.
    pub running: u16,
}

/// What a worker says of batches in its beats: whether it aggregates them,
/// and, in the aggregator's beats, the open and recent batches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchesBeat {
    /// It aggregates the batches now.
    pub leading: bool,
    /// Batches with members still running, or dead ones not retried to
    /// success (the newest [`MAX_LISTED`](BatchesBeat::MAX_LISTED)), newest first.
    pub open: Vec<BatchBeat>,
    /// Batches that ended lately (every member succeeded), newest first.
    pub recent: Vec<BatchBeat>,
    /// Open batches in all (more than listed, when over the limit).
    pub open_total: u64,
}

impl BatchesBeat {
    /// Open batches a beat lists at most.
    pub const MAX_LISTED: usize = 100;
}

/// A batch's dead job: its id, and the queue whose `.dead` holds it (empty: unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDeadJob {
    /// The job id.
    pub id: String,
    /// Its queue.
    pub queue: String,
}

/// One batch, as the aggregator knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchBeat {
    /// Its id.
    pub id: String,
    /// Its description.
    pub description: Option<String>,
    /// When it was enqueued, Unix milliseconds (0: unknown).
    pub at_ms: u64,
    /// Members in all (child jobs included).
    pub total: u64,
    /// Members that succeeded.
    pub succeeded: u64,
    /// Members dead.
    pub dead: u64,
    /// The dead members (the first 20 by id): their ids and queues.
    pub dead_jobs: Vec<BatchDeadJob>,
    /// Every member is recorded.
    pub sealed: bool,
    /// Callbacks fired: `complete`, `success`.
    pub fired: Vec<String>,
    /// Callbacks due and not fired yet (enqueueing, or failing to).
    pub pending: Vec<String>,
    /// The callbacks' job types.
    pub on_complete: Option<String>,
    /// The callbacks' job types.
    pub on_success: Option<String>,
}

/// What a worker with schedules says of them in its beats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerBeat {
    /// It leads the scheduler (and fires the schedules) now.
    pub leading: bool,
    /// A digest of its schedule definitions (16 hex digits): workers whose
    /// digests differ were given other schedules (a rolling deploy).
    pub digest: String,
    /// Its schedules, in the leader's beats only (empty in the others').
    pub schedules: Vec<ScheduleBeat>,
}

/// One schedule, as the leader fires it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleBeat {
    /// Its name.
    pub name: String,
    /// Its cron expression, as given.
    pub cron: String,
    /// Its time zone, as given.
    pub time_zone: String,
    /// Its job type.
    pub job_type: String,
    /// `skip`, `last` or `all`.
    pub catch_up: String,
    /// Whether it fires.
    pub enabled: bool,
    /// A digest of its definition (16 hex digits).
    pub digest: String,
    /// The instant of the last tick fired, milliseconds since the Unix epoch.
    pub last_fired_ms: Option<u64>,
    /// How late that tick fired (fire time minus the tick's instant), milliseconds.
    pub last_lateness_ms: Option<u64>,
    /// The next three ticks, milliseconds since the Unix epoch.
    pub next_ms: Vec<u64>,
}

/// A job running in a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningJob {
    /// The job id.
    pub id: String,
    /// The job type.
    pub job_type: String,
    /// The queue it came from.
    pub queue: String,
    /// Which attempt.
    pub attempt: u32,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The fraction done it said last (`ctx.progress`), 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f32>,
    /// The text it said with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_text: Option<String>,
}

/// What happened to the jobs of one type between two beats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCounts {
    /// The job type.
    pub job_type: String,
    /// Attempts started.
    pub started: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Failed attempts (and messages that could not run), by failure kind.
    pub failed: BTreeMap<String, u64>,
    /// Retries scheduled.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Runs a graceful stop ended, handed back to their queue (beats of
    /// workers before this field have none).
    #[serde(default)]
    pub interrupted: u64,
    /// Jobs held back by a rate limit: sent to wait (over their type's or
    /// key's rate, or `JobError::rate_limited`), or waiting longer than a
    /// token's interval for their turn (beats of workers before this field have none).
    #[serde(default)]
    pub rate_limited: u64,
    /// Enqueues refused as duplicates of a unique job, counted by the worker
    /// that keeps the unique keys (beats of workers before this field have none).
    #[serde(default)]
    pub duplicates: u64,
    /// Attempt durations, counted per [`DURATION_BUCKETS`] bucket (one more for the rest).
    pub durations: Vec<u64>,
}

impl TypeCounts {
    /// Failed attempts of every kind.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.started == 0
            && self.succeeded == 0
            && self.failed.is_empty()
            && self.retried == 0
            && self.dead == 0
            && self.interrupted == 0
            && self.rate_limited == 0
            && self.duplicates == 0
    }
}

impl Heartbeat {
    /// The beat as a message body (MessagePack with field names).
    ///
    /// # Errors
    /// When serde refuses it (it does not).
    pub fn encode(&self) -> Result<Vec<u8>, crate::Error> {
        rmp_serde::to_vec_named(self)
            .map_err(|source| crate::Error::Encode { job: "Heartbeat", source: crate::Cause::new(source) })
    }

    /// A beat from a message body; `None` when it is not one.
    pub fn decode(body: &[u8]) -> Option<Self> {
        rmp_serde::from_slice(body).ok()
    }

    /// The interval between the worker's beats.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Whether it was sent within three of its intervals (at least a second
    /// each) before `now_ms`: its worker still beats.
    pub fn beating_at(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.sent_at_ms) <= 3 * self.interval_ms.max(1000)
    }

    /// Whether its worker, of which it is the latest beat, is live at
    /// `now_ms`: it beats and did not say it stops.
    pub fn live_at(&self, now_ms: u64) -> bool {
        !self.stopping && self.beating_at(now_ms)
    }
}

pub use crate::journal::{max_age_argument, StartAt};

/// The stream of heartbeats as a journal, keeping beats for `max_age` (`amqp.events_max_age`).
pub const fn journal(max_age: Duration) -> Journal {
    Journal::new(EVENTS_STREAM, max_age)
}

/// A reader of the stream of heartbeats, on a channel of its own.
#[derive(Debug)]
pub struct EventReader(JournalReader);

impl EventReader {
    /// Starts reading [`EVENTS_STREAM`] at `start` (it must exist: workers and
    /// the dashboard declare it with [`Topology::declare_events`](crate::plumbing::topology::Topology::declare_events)).
    /// Reading removes nothing: every reader sees every beat.
    ///
    /// # Errors
    /// When the channel cannot be opened or the consume is refused.
    pub async fn open(connection: &amqprs::connection::Connection, start: StartAt) -> Result<Self, crate::Error> {
        // The age matters only to a declare.
        journal(Duration::ZERO).read(connection, start).await.map(EventReader)
    }

    /// The next beat and its offset in the stream; `None` when the channel
    /// closed. Records that are not beats are skipped.
    pub async fn next(&mut self) -> Option<(u64, Heartbeat)> {
        loop {
            let (offset, _, body) = self.0.next().await?;
            if let Some(beat) = Heartbeat::decode(&body) {
                return Some((offset, beat));
            }
        }
    }

    /// Stops reading.
    pub async fn close(self) {
        self.0.close().await;
    }

    /// The beats sent since `since`, oldest first, read until the stream
    /// stays quiet for `quiet` (for a command or a benchmark that looks at a
    /// recent window once; a reader that follows the stream uses [`EventReader::next`]).
    ///
    /// # Errors
    /// As [`EventReader::open`].
    pub async fn recent(
        connection: &amqprs::connection::Connection,
        since: std::time::SystemTime,
        quiet: Duration,
    ) -> Result<Vec<Heartbeat>, crate::Error> {
        let mut reader = EventReader::open(connection, StartAt::Time(since)).await?;
        let mut beats = Vec::new();
        while let Ok(Some((_, beat))) = tokio::time::timeout(quiet, reader.next()).await {
            beats.push(beat);
        }
        reader.close().await;
        Ok(beats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket() {
        assert_eq!(duration_bucket(0.0005), 0);
        assert_eq!(duration_bucket(0.001), 0);
        assert_eq!(duration_bucket(0.002), 1);
        assert_eq!(duration_bucket(2.0), 7);
        assert_eq!(duration_bucket(4000.0), DURATION_BUCKETS.len());
    }

    #[test]
    fn a_beat_survives_the_wire() {
        let beat = Heartbeat {
            worker: "h:1:0".into(),
            host: "h".into(),
            pid: 1,
            version: "0.1.0".into(),
            started_at_ms: 1,
            sent_at_ms: 2,
            interval_ms: 5000,
            queues: vec!["emails".into()],
            exchanges: vec![],
            concurrency: 1,
            stopping: false,
            running: vec![RunningJob {
                id: "a".into(),
                job_type: "EmailJob".into(),
                queue: "emails".into(),
                attempt: 1,
                started_at_ms: 1,
                progress: Some(0.25),
                progress_text: Some("a quarter".into()),
            }],
            counts: vec![TypeCounts {
                job_type: "EmailJob".into(),
                started: 3,
                succeeded: 2,
                failed: [("failed".to_string(), 1)].into(),
                retried: 1,
                dead: 0,
                interrupted: 1,
                rate_limited: 2,
                duplicates: 4,
                durations: vec![0; 13],
            }],
            scheduler: Some(SchedulerBeat {
                leading: true,
                digest: "0123456789abcdef".into(),
                schedules: vec![ScheduleBeat { name: "nightly".into(), next_ms: vec![1, 2, 3], ..Default::default() }],
            }),
            batches: Some(BatchesBeat {
                leading: true,
                open: vec![BatchBeat { id: "b".into(), total: 3, ..Default::default() }],
                recent: vec![],
                open_total: 1,
            }),
            limits: vec![LimitBeat { job: "ChargeCard".into(), max_running: 3, slots: 2, running: 1 }],
            rates: vec![RateBeat {
                job: "ChargeCard".into(),
                rate: "100/s".into(),
                burst: 100,
                key: None,
                leading: true,
            }],
            unique_keys: Some(7),
            weights: vec![],
        };
        assert_eq!(Heartbeat::decode(&beat.encode().unwrap()), Some(beat.clone()));
        // A beat of a worker from before `interrupted` decodes, with none.
        let old = encoded_without_interrupted(&beat);
        assert_eq!(Heartbeat::decode(&old).map(|b| b.counts[0].interrupted), Some(0));
        assert_eq!(Heartbeat::decode(&old).map(|b| b.scheduler), Some(None), "nor a scheduler");
        assert_eq!(Heartbeat::decode(&old).map(|b| b.limits), Some(vec![]), "nor limits");
        assert_eq!(Heartbeat::decode(b"\xc1 not a beat"), None);
        assert_eq!(max_age_argument(Duration::from_secs(7 * 86400)), "604800s");
    }

    /// The beat encoded as a worker without the `interrupted` count wrote it.
    fn encoded_without_interrupted(beat: &Heartbeat) -> Vec<u8> {
        let mut value = serde_json::to_value(beat).unwrap();
        value["counts"][0].as_object_mut().unwrap().remove("interrupted");
        value.as_object_mut().unwrap().remove("scheduler");
        value.as_object_mut().unwrap().remove("batches");
        value.as_object_mut().unwrap().remove("limits");
        rmp_serde::to_vec_named(&value).unwrap()
    }
}
