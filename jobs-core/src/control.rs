//! What people tell every worker of a vhost to do, kept in the journal
//! `jobs.control`: pausing and resuming a queue (`worker queues pause
//! emails`), cancelling a job (`worker cancel <id>`), and what workers say
//! back about a cancel. Every worker reads the journal from its start when
//! it starts (to a mark it appends first, so it knows it has read all), then
//! follows it: a queue paused there is not consumed by any worker until it is
//! resumed, through worker and broker restarts; a cancelled job is ended by
//! the worker running it, or by the one it comes up to later.
//!
//! The journal keeps a year of records in small segments; a worker that
//! finds a queue paused for more than [`PAUSE_REFRESH`] appends the pause
//! again, so a long pause outlives the retention.

use std::collections::BTreeMap;
use std::time::Duration;

use amqprs::connection::Connection;
use serde::{Deserialize, Serialize};

use crate::confirm::Publisher;
use crate::destination::{Declare, Destination};
use crate::journal::{Journal, JournalReader, StartAt};
use crate::message::Message;
use crate::{Client, Error, JobId};

/// The control journal.
pub const CONTROL: Journal =
    Journal::new("jobs.control", Duration::from_secs(365 * 86_400)).with_segment_bytes(1 << 20);

/// The kind (message type) of a control record.
pub const CONTROL_KIND: &str = "control";

/// The kind of a reader's mark (what it reads to).
const MARK_KIND: &str = "mark";

/// The longest wait for the next record while reading to the mark.
const READ_QUIET: Duration = Duration::from_secs(30);

/// A pause older than this is appended again by the workers that see it.
pub const PAUSE_REFRESH: Duration = Duration::from_secs(30 * 86_400);

/// A command to every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Take no more jobs from `queue` (running ones finish).
    Pause {
        /// The queue.
        queue: String,
        /// Who asked (a host and user, or a worker refreshing the pause).
        by: String,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
    /// Take jobs from `queue` again.
    Resume {
        /// The queue.
        queue: String,
        /// Who asked.
        by: String,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
    /// End the job `id`: the worker running it tells it (its context), and
    /// drops it after `worker.cancel_grace`; a worker it comes up to later
    /// (from its queue or its delay) dead-letters it unrun.
    Cancel {
        /// The job's id.
        id: String,
        /// Who asked.
        by: String,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
    /// A worker's word: the job `id` runs here and has been told to stop.
    Cancelling {
        /// The job's id.
        id: String,
        /// The worker running it.
        worker: String,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
    /// A worker's word: the job `id` is dead-lettered as cancelled (it was
    /// running, or came up after the cancel); the cancel is spent.
    Cancelled {
        /// The job's id.
        id: String,
        /// The worker that settled it.
        worker: String,
        /// Whether it was running when cancelled.
        running: bool,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
}

impl Command {
    /// Pause `queue`, asked by `by`, now.
    pub fn pause(queue: impl Into<String>, by: impl Into<String>) -> Self {
        Command::Pause { queue: queue.into(), by: by.into(), at_ms: crate::events::now_ms() }
    }

    /// Resume `queue`, asked by `by`, now.
    pub fn resume(queue: impl Into<String>, by: impl Into<String>) -> Self {
        Command::Resume { queue: queue.into(), by: by.into(), at_ms: crate::events::now_ms() }
    }

    /// Cancel the job `id`, asked by `by`, now.
    pub fn cancel(id: impl Into<String>, by: impl Into<String>) -> Self {
        Command::Cancel { id: id.into(), by: by.into(), at_ms: crate::events::now_ms() }
    }

    /// The record's body (MessagePack, named fields).
    ///
    /// # Errors
    /// Not seen: the fields are strings and numbers.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        rmp_serde::to_vec_named(self).map_err(|e| Error::Encode { job: "control record", source: crate::Cause::new(e) })
    }

    /// The command of a `jobs.control` record of kind `kind`; `None` for
    /// anything else (a reader's mark, a producer's garbage).
    pub fn of_record(kind: Option<&str>, body: &[u8]) -> Option<Command> {
        kind.filter(|k| *k == CONTROL_KIND).and_then(|_| rmp_serde::from_slice(body).ok())
    }
}

/// A paused queue: who paused it, and when (the newest pause).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Who asked.
    pub by: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// The queues paused now, folded from the commands in journal order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    queues: BTreeMap<String, Pause>,
}

impl Paused {
    /// Folds in one command; returns whether a queue's state changed.
    pub fn apply(&mut self, command: Command) -> bool {
        match command {
            Command::Pause { queue, by, at_ms } => self.queues.insert(queue, Pause { by, at_ms }).is_none(),
            Command::Resume { queue, .. } => self.queues.remove(&queue).is_some(),
            Command::Cancel { .. } | Command::Cancelling { .. } | Command::Cancelled { .. } => false,
        }
    }

    /// Whether `queue` is paused.
    pub fn is_paused(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    /// The paused queues, by name.
    pub fn queues(&self) -> &BTreeMap<String, Pause> {
        &self.queues
    }

    /// The paused queues whose pause was appended longer than [`PAUSE_REFRESH`] before `now_ms`.
    pub fn stale(&self, now_ms: u64) -> Vec<String> {
        let refresh = u64::try_from(PAUSE_REFRESH.as_millis()).unwrap_or(u64::MAX);
        self.queues.iter().filter(|(_, p)| now_ms.saturating_sub(p.at_ms) > refresh).map(|(q, _)| q.clone()).collect()
    }
}

/// Reads the control journal from its start up to a mark appended first:
/// the paused queues, and the reader that goes on past it (its next
/// records are the commands given from then on).
///
/// # Errors
/// The stream cannot be declared, appended to or read.
pub async fn read_paused(connection: &Connection, publisher: &Publisher) -> Result<(Paused, JournalReader), Error> {
    let mut paused = Paused::default();
    let reader = read_control(connection, publisher, |command| {
        paused.apply(command);
    })
    .await?;
    Ok((paused, reader))
}

/// Reads the control journal from its start up to a mark appended first,
/// giving `apply` each command in order, and returns the reader that goes on
/// past it.
///
/// # Errors
/// The stream cannot be declared, appended to or read.
pub async fn read_control(
    connection: &Connection,
    publisher: &Publisher,
    mut apply: impl FnMut(Command),
) -> Result<JournalReader, Error> {
    let declarer = crate::topology::Declarer::open(connection).await?;
    CONTROL.declare(&declarer).await?;
    declarer.close().await;
    let mark = JobId::new();
    CONTROL.append(publisher, MARK_KIND, mark.as_str().as_bytes().to_vec()).await?;
    let mut reader = CONTROL.read(connection, StartAt::Offset(0)).await?;
    loop {
        let lost = |reason: &str| Error::QueueRead { queue: CONTROL.name().into(), reason: reason.into() };
        let Ok(next) = tokio::time::timeout(READ_QUIET, reader.next()).await else {
            reader.close().await;
            return Err(lost("no record for 30 s before the reader's mark"));
        };
        let Some((_, kind, body)) = next else {
            return Err(lost("its channel closed while it was read"));
        };
        if kind.as_deref() == Some(MARK_KIND) && body == mark.as_str().as_bytes() {
            return Ok(reader);
        }
        if let Some(command) = Command::of_record(kind.as_deref(), &body) {
            apply(command);
        }
    }
}

impl Client {
    /// Appends `command` to the control journal (declared first, once per
    /// connection), confirmed: every worker follows it within a second or two.
    ///
    /// # Errors
    /// As [`Client::enqueue`]: the broker cannot be reached or did not confirm.
    pub async fn control(&self, command: &Command) -> Result<(), Error> {
        let body = command.encode()?;
        let message = Message::job(CONTROL_KIND, JobId::new(), body).transient();
        let destination = Destination { declare: Declare::Journal(CONTROL), ..Destination::direct(CONTROL.name()) };
        self.publish_one(&message, &destination, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(queue: &str, at_ms: u64) -> Command {
        Command::Pause { queue: queue.into(), by: "me".into(), at_ms }
    }

    #[test]
    fn the_newest_command_for_a_queue_wins_and_garbage_is_none() {
        let mut paused = Paused::default();
        assert!(paused.apply(pause("emails", 1)));
        assert!(!paused.apply(pause("emails", 2)), "paused again: no change");
        assert!(paused.is_paused("emails") && !paused.is_paused("images"));
        assert_eq!(paused.queues()["emails"].at_ms, 2, "the newest pause is kept");
        assert!(paused.apply(Command::Resume { queue: "emails".into(), by: "me".into(), at_ms: 3 }));
        assert!(!paused.is_paused("emails"));
        assert!(!paused.apply(Command::Resume { queue: "images".into(), by: "me".into(), at_ms: 4 }));
        let encoded = pause("q", 5).encode().unwrap();
        assert_eq!(Command::of_record(Some(CONTROL_KIND), &encoded), Some(pause("q", 5)));
        assert_eq!(Command::of_record(Some(MARK_KIND), &encoded), None, "not a command's kind");
        assert_eq!(Command::of_record(Some(CONTROL_KIND), b"\xff garbage"), None);
        assert!(!paused.apply(Command::cancel("job-1", "me")), "a cancel pauses nothing");
        let cancel = Command::cancel("job-1", "me").encode().unwrap();
        assert!(
            matches!(Command::of_record(Some(CONTROL_KIND), &cancel), Some(Command::Cancel { id, .. }) if id == "job-1")
        );
    }

    #[test]
    fn a_pause_older_than_the_refresh_is_stale() {
        let day = 86_400_000;
        let mut paused = Paused::default();
        paused.apply(pause("old", 0));
        paused.apply(pause("new", 29 * day));
        assert_eq!(paused.stale(31 * day), vec!["old".to_owned()]);
    }
}
