//! The record of fired ticks: the stream `jobs.schedule.ticks`, where the
//! leader appends each tick it fired once its job is confirmed, and where a
//! new leader reads the last tick of each schedule to catch up from.
//!
//! The stream keeps records [`MAX_AGE`] (7 days) in segments of
//! [`SEGMENT_BYTES`], so it stays small however often schedules fire; the
//! leader appends the last tick of every schedule again each
//! [`REFRESH`] (a day), so the last tick of a monthly schedule stays
//! readable whatever its age.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use jobs_core::backoff::Backoff;
use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{connect, Journal, Publisher, StartAt};
use jobs_core::{report, AmqpConfig};
use tracing::warn;

/// How long the stream keeps a record.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Its segments: records go by age a whole segment at a time.
pub(crate) const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// How often the leader appends every schedule's last tick again: well within [`MAX_AGE`].
pub(crate) const REFRESH: Duration = Duration::from_secs(86_400);
/// The stream.
pub(crate) const TICKS: Journal = Journal::new("jobs.schedule.ticks", MAX_AGE).with_segment_bytes(SEGMENT_BYTES);
/// How long the stream may stay quiet before its reading is taken as complete.
const READ_QUIET: Duration = Duration::from_secs(1);

/// One fired tick, as recorded.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct TickRecord {
    pub(crate) schedule: String,
    /// Unix seconds.
    pub(crate) tick: i64,
}

/// The record, on a connection of its own, opened when first needed and
/// again after a failure.
pub(crate) struct Ticks {
    amqp: AmqpConfig,
    worker: String,
    link: Option<(Connection, Publisher)>,
}

impl Ticks {
    pub(crate) fn new(amqp: AmqpConfig, worker: String) -> Self {
        Ticks { amqp, worker, link: None }
    }

    /// Its connection and publisher, opened (and the stream declared) if need be.
    pub(crate) async fn open(&mut self) -> Result<&(Connection, Publisher), jobs_core::Error> {
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

    /// Forgets the connection (after a failure on it): the next use opens another.
    pub(crate) fn reset(&mut self) {
        self.link = None;
    }

    /// Records a fired tick (after its job was confirmed), trying again on
    /// new connections while the broker can be reached again within
    /// `amqp.reconnect_timeout` (a tick left unrecorded is fired again by the
    /// next leader's catch-up).
    pub(crate) async fn record(&mut self, schedule: &str, tick: Timestamp) {
        let body = match rmp_serde::to_vec_named(&TickRecord { schedule: schedule.into(), tick: tick.as_second() }) {
            Ok(body) => body,
            Err(_) => return,
        };
        let deadline = tokio::time::Instant::now() + self.amqp.reconnect_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut warned = false;
        loop {
            let appended = match self.open().await {
                Ok((_, publisher)) => TICKS.append(publisher, "tick", body.clone()).await,
                Err(err) => Err(err),
            };
            let Err(err) = appended else { return };
            self.reset();
            if tokio::time::Instant::now() >= deadline {
                return warn!(schedule, tick = %tick, error = %report(&err), "a fired tick could not be recorded");
            }
            if !std::mem::replace(&mut warned, true) {
                warn!(schedule, tick = %tick, error = %report(&err), "a fired tick is not recorded yet; trying again");
            }
            backoff.wait().await;
        }
    }

    /// The last recorded tick of each schedule.
    pub(crate) async fn last_ticks(&mut self) -> Result<HashMap<String, Timestamp>, jobs_core::Error> {
        let (connection, _) = self.open().await?;
        let since = std::time::SystemTime::now() - MAX_AGE;
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
