//! The record of fired ticks: the stream `jobs.schedule.ticks`, where the
//! leader appends each tick it fired once its job is confirmed, and where a
//! new leader reads the last tick of each schedule to catch up from.
//!
//! The stream keeps records [`MAX_AGE`] (7 days) in segments of
//! [`SEGMENT_BYTES`], so it stays small however often schedules fire. The
//! leader also appends a snapshot of every schedule's last tick as it
//! starts to lead and each [`SNAPSHOT_EVERY`] (an hour), so the last tick of
//! a monthly schedule stays readable whatever its age, and a new leader
//! reads back only the last two hours when it finds a snapshot there (the
//! whole stream when it does not).
//!
//! A reading is complete when it reaches a marker the reader appended
//! first; a reading that does not reach it is an error, never a partial
//! answer (which would make a catch-up fire ticks again).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::{queue_counts, Declarer};
use jobs_core::plumbing::{connect, Journal, Publisher, StartAt};
use jobs_core::{report, AmqpConfig, JobId};
use tokio::sync::mpsc;
use tracing::warn;

/// How long the stream keeps a record.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Its segments: records go by age a whole segment at a time.
pub(crate) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// How often the leader appends a snapshot of every schedule's last tick.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(3600);
/// How far back a new leader first looks for a snapshot.
const SNAPSHOT_WINDOW: Duration = Duration::from_secs(2 * 3600);
/// The longest a reading of the stream may take.
const READ_LIMIT: Duration = Duration::from_secs(120);
/// The stream.
pub(crate) const TICKS: Journal = Journal::new("jobs.schedule.ticks", MAX_AGE).with_segment_bytes(SEGMENT_BYTES);

/// One fired tick, as recorded (kind `tick`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct TickRecord {
    pub(crate) schedule: String,
    /// Unix seconds.
    pub(crate) tick: i64,
}

/// Every schedule's last tick, Unix seconds (kind `last`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    ticks: HashMap<String, i64>,
}

/// What the recorder appends.
#[derive(Debug)]
pub(crate) enum Record {
    Tick(String, Timestamp),
    Snapshot(Vec<(String, Timestamp)>),
}

/// The record on a connection of its own, opened when first needed and
/// again after a failure.
pub(crate) struct Ticks {
    amqp: AmqpConfig,
    name: String,
    link: Option<(Connection, Publisher)>,
    warned_declare: bool,
}

impl Ticks {
    /// The record, on a connection named `name`.
    pub(crate) fn new(amqp: AmqpConfig, name: String) -> Self {
        Ticks { amqp, name, link: None, warned_declare: false }
    }

    /// Its connection and publisher, opened (and the stream declared) if need be.
    pub(crate) async fn open(&mut self) -> Result<&(Connection, Publisher), jobs_core::Error> {
        if self.link.as_ref().is_some_and(|(c, p)| c.is_open() && p.is_open()) {
            return Ok(self.link.as_ref().expect("just checked"));
        }
        let connection = connect(&self.amqp, &self.name).await?;
        let declarer = Declarer::open(&connection).await?;
        if let Err(err) = TICKS.declare(&declarer).await {
            // Declared by an earlier build without its segment size: used as
            // it is (bounded by the broker's 500 MB segments), and said once.
            if queue_counts(&connection, TICKS.name()).await.is_none() {
                return Err(err);
            }
            if !std::mem::replace(&mut self.warned_declare, true) {
                warn!(
                    stream = TICKS.name(),
                    error = %report(&err),
                    "the stream of fired ticks has other arguments than this build's (delete it to let the leader declare it in 4 MB segments)"
                );
            }
        } else {
            declarer.close().await;
        }
        let publisher = Publisher::open(&connection, self.amqp.confirm_timeout).await?;
        Ok(self.link.insert((connection, publisher)))
    }

    /// Forgets the connection (after a failure on it): the next use opens another.
    pub(crate) fn reset(&mut self) {
        self.link = None;
    }

    async fn append(&mut self, kind: &str, body: &[u8]) -> Result<(), jobs_core::Error> {
        let appended = match self.open().await {
            Ok((_, publisher)) => TICKS.append(publisher, kind, body.to_vec()).await,
            Err(err) => Err(err),
        };
        if appended.is_err() {
            self.reset();
        }
        appended
    }

    /// Appends `record`, trying again on new connections while the broker can
    /// be reached again within `amqp.reconnect_timeout` (a tick left
    /// unrecorded is fired again by the next leader's catch-up).
    async fn write(&mut self, record: &Record) {
        let (kind, body) = match record {
            Record::Tick(schedule, tick) => {
                ("tick", rmp_serde::to_vec_named(&TickRecord { schedule: schedule.clone(), tick: tick.as_second() }))
            }
            Record::Snapshot(ticks) => {
                let ticks = ticks.iter().map(|(name, tick)| (name.clone(), tick.as_second())).collect();
                ("last", rmp_serde::to_vec_named(&Snapshot { ticks }))
            }
        };
        let Ok(body) = body else { return };
        let deadline = tokio::time::Instant::now() + self.amqp.reconnect_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut warned = false;
        loop {
            let Err(err) = self.append(kind, &body).await else { return };
            if tokio::time::Instant::now() >= deadline {
                return warn!(record = ?record, error = %report(&err), "a fired tick could not be recorded");
            }
            if !std::mem::replace(&mut warned, true) {
                warn!(record = ?record, error = %report(&err), "a fired tick is not recorded yet; trying again");
            }
            backoff.wait().await;
        }
    }

    /// The last recorded tick of each schedule: from the last two hours when
    /// a snapshot is there, else from the whole stream.
    pub(crate) async fn last_ticks(&mut self) -> Result<HashMap<String, Timestamp>, jobs_core::Error> {
        let now = std::time::SystemTime::now();
        let (last, snapshot) = self.read_since(now - SNAPSHOT_WINDOW).await?;
        if snapshot {
            return Ok(last);
        }
        Ok(self.read_since(now - MAX_AGE).await?.0)
    }

    /// The last ticks recorded since `since`, and whether a snapshot was among them.
    async fn read_since(
        &mut self,
        since: std::time::SystemTime,
    ) -> Result<(HashMap<String, Timestamp>, bool), jobs_core::Error> {
        let mark = JobId::new();
        self.append("mark", mark.as_str().as_bytes()).await?;
        let (connection, _) = self.open().await?;
        let mut reader = TICKS.read(connection, StartAt::Time(since)).await?;
        let mut last: HashMap<String, Timestamp> = HashMap::new();
        let mut snapshot = false;
        let mut keep = |name: String, second: i64| {
            if let Ok(tick) = Timestamp::from_second(second) {
                let entry = last.entry(name).or_insert(tick);
                *entry = (*entry).max(tick);
            }
        };
        let read = tokio::time::timeout(READ_LIMIT, async {
            while let Some((_, kind, body)) = reader.next().await {
                match kind.as_deref() {
                    Some("mark") if body == mark.as_str().as_bytes() => return true,
                    Some("last") => {
                        if let Ok(found) = rmp_serde::from_slice::<Snapshot>(&body) {
                            snapshot = true;
                            found.ticks.into_iter().for_each(|(name, second)| keep(name, second));
                        }
                    }
                    Some("tick") => {
                        if let Ok(record) = rmp_serde::from_slice::<TickRecord>(&body) {
                            keep(record.schedule, record.tick);
                        }
                    }
                    _ => {}
                }
            }
            false
        })
        .await;
        reader.close().await;
        match read {
            Ok(true) => Ok((last, snapshot)),
            Ok(false) => Err(jobs_core::Error::QueueRead {
                queue: TICKS.name().into(),
                reason: "the stream's channel closed before the reading was complete".into(),
            }),
            Err(_) => Err(jobs_core::Error::QueueRead {
                queue: TICKS.name().into(),
                reason: format!("the reading did not complete within {READ_LIMIT:?}"),
            }),
        }
    }
}

/// Appends what it is given, in order, on a connection of its own, until the
/// sender goes: the firing side never waits for a record.
pub(crate) async fn recorder(mut ticks: Ticks, mut records: mpsc::UnboundedReceiver<Record>) {
    while let Some(record) = records.recv().await {
        ticks.write(&record).await;
    }
}
