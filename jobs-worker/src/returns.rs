//! Runs that the broker's `consumer_timeout` ended, remembered by every
//! worker. When a delivery stays unacknowledged past its `consumer_timeout`
//! the broker closes the consumer's channel and hands the job out again: to
//! whichever worker, as a plain return (it cannot say why). The worker whose
//! channel closed cancels the job and appends a record to the journal
//! `jobs.returns`; every worker follows that journal, and a returned job it
//! has a record of is counted as a crash that names the timeout (its requeued
//! copy carries `x-consumer-timeout`), so that it ends dead once with a
//! reason that says what to change, not as a mystery crash.
//!
//! What is not promised: a job handed out again before the record reached
//! the worker that takes it is counted as a plain crash that once (the later
//! returns, and its dead reason, name the timeout).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use jobs_core::plumbing::amqprs::connection::Connection;
use jobs_core::plumbing::events::epoch_ms;
use jobs_core::plumbing::{Journal, Publisher, StartAt};
use jobs_core::JobId;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The journal of returns: a day of them.
pub(crate) const JOURNAL: Journal = Journal::new("jobs.returns", Duration::from_secs(86_400));

/// The kind of its records.
const KIND: &str = "ConsumerTimeout";

/// Records kept in memory, the newest.
const KEPT: usize = 10_000;

/// One run the broker's `consumer_timeout` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) job_id: String,
    pub(crate) queue: String,
    /// The broker's timeout, as its close said (0: it did not say).
    pub(crate) timeout_ms: u64,
    pub(crate) worker: String,
    pub(crate) at_ms: u64,
}

/// What this worker knows of such returns.
#[derive(Debug, Default)]
pub(crate) struct Returns {
    /// Job id → (the timeout, when), the newest [`KEPT`].
    jobs: Mutex<HashMap<JobId, (u64, u64)>>,
    /// The offset after the last record read: where a new session goes on.
    next: Mutex<Option<u64>>,
    /// The largest timeout a close told of (ms): the broker's value, learned.
    learned_ms: AtomicU64,
    /// The largest one said already (see [`Returns::news`]).
    told_ms: AtomicU64,
}

impl Returns {
    /// The broker's timeout that ended a run of job `id`, if a record says so.
    pub(crate) fn timeout_of(&self, id: &JobId) -> Option<u64> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(|(timeout, _)| *timeout)
    }

    fn note(&self, record: &Record) {
        let id = JobId::from(record.job_id.as_str());
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.len() >= KEPT && !jobs.contains_key(&id) {
            if let Some(oldest) = jobs.iter().min_by_key(|(_, (_, at))| *at).map(|(id, _)| id.clone()) {
                jobs.remove(&oldest);
            }
        }
        jobs.insert(id, (record.timeout_ms, record.at_ms));
    }

    /// The broker's `consumer_timeout`, once, when a close (here or at
    /// another worker) told of a larger one than before.
    pub(crate) fn news(&self) -> Option<Duration> {
        let learned = self.learned_ms.load(Ordering::Relaxed);
        (learned > self.told_ms.fetch_max(learned, Ordering::Relaxed)).then(|| Duration::from_millis(learned))
    }

    /// Notes a run of `job_id` on `queue` that a `consumer_timeout` of
    /// `timeout` ended, here and in the journal for the other workers.
    pub(crate) async fn record(
        &self,
        publisher: &Publisher,
        job_id: &JobId,
        queue: &str,
        timeout: Duration,
        worker: &str,
    ) {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let record = Record {
            job_id: job_id.to_string(),
            queue: queue.to_owned(),
            timeout_ms,
            worker: worker.to_owned(),
            at_ms: epoch_ms(SystemTime::now()),
        };
        self.note(&record);
        match rmp_serde::to_vec_named(&record) {
            Ok(body) => {
                if let Err(err) = JOURNAL.append(publisher, KIND, body).await {
                    debug!(error = %jobs_core::report(&err), "the return was not recorded for the other workers");
                }
            }
            Err(err) => debug!(error = %err, "the return was not encoded"),
        }
        self.learned_ms.fetch_max(timeout_ms, Ordering::Relaxed);
    }

    /// Reads the journal on `connection` until `halt` or the connection goes:
    /// at the start of a worker the last day of it, then from where the last
    /// session stopped.
    pub(crate) async fn follow(&self, connection: &Connection, halt: CancellationToken) {
        let next = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        let start = match next {
            Some(offset) => StartAt::Offset(offset),
            None => StartAt::Time(SystemTime::now() - Duration::from_secs(86_400)),
        };
        let mut reader = match JOURNAL.read(connection, start).await {
            Ok(reader) => reader,
            Err(err) => return debug!(error = %jobs_core::report(&err), "cannot follow jobs.returns"),
        };
        loop {
            tokio::select! {
                _ = halt.cancelled() => break,
                record = reader.next() => match record {
                    Some((offset, kind, body)) => {
                        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(offset.saturating_add(1));
                        if kind.as_deref() != Some(KIND) {
                            continue;
                        }
                        if let Ok(record) = rmp_serde::from_slice::<Record>(&body) {
                            self.note(&record);
                            self.learned_ms.fetch_max(record.timeout_ms, Ordering::Relaxed);
                        }
                    }
                    None => break,
                },
            }
        }
        reader.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, at_ms: u64) -> Record {
        Record { job_id: id.into(), queue: "q".into(), timeout_ms: 5000, worker: "w".into(), at_ms }
    }

    #[test]
    fn the_newest_records_are_kept() {
        let returns = Returns::default();
        for n in 0..(KEPT as u64 + 5) {
            returns.note(&record(&format!("job-{n}"), n));
        }
        assert_eq!(returns.jobs.lock().unwrap().len(), KEPT);
        assert_eq!(returns.timeout_of(&JobId::from("job-0")), None, "the oldest went");
        assert_eq!(returns.timeout_of(&JobId::from(format!("job-{}", KEPT + 4).as_str())), Some(5000));
        returns.learned_ms.store(5000, Ordering::Relaxed);
        assert_eq!(returns.news(), Some(Duration::from_secs(5)));
        assert_eq!(returns.news(), None, "said once");
        let encoded = rmp_serde::to_vec_named(&record("a", 1)).unwrap();
        assert_eq!(rmp_serde::from_slice::<Record>(&encoded).unwrap(), record("a", 1));
    }
}
