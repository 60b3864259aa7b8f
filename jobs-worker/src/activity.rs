//! What the worker's jobs do, counted in one place: the Prometheus series
//! and the counts its heartbeats carry (since the last beat), and the jobs
//! running now. On the hot path only atomics, and with heartbeats on one
//! short lock per job to note it running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jobs_core::plumbing::events::{duration_bucket, epoch_ms, RunningJob, TypeCounts, DURATION_BUCKETS};
use jobs_core::plumbing::ProgressCell;
use jobs_core::{FailureKind, JobId};

/// Counts of one job type since the last beat.
#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: [AtomicU64; FailureKind::ALL.len()],
    retried: AtomicU64,
    dead: AtomicU64,
    interrupted: AtomicU64,
    rate_limited: AtomicU64,
    duplicates: AtomicU64,
    durations: [AtomicU64; DURATION_BUCKETS.len() + 1],
}

impl Counters {
    /// Takes the counts, leaving zeros.
    fn take(&self, job_type: &str) -> TypeCounts {
        let take = |n: &AtomicU64| n.swap(0, Ordering::Relaxed);
        let failed = FailureKind::ALL
            .iter()
            .zip(&self.failed)
            .filter_map(|(kind, n)| Some((kind.as_str().to_owned(), take(n))).filter(|(_, n)| *n > 0))
            .collect();
        TypeCounts {
            job_type: job_type.to_owned(),
            started: take(&self.started),
            succeeded: take(&self.succeeded),
            failed,
            retried: take(&self.retried),
            dead: take(&self.dead),
            interrupted: take(&self.interrupted),
            rate_limited: take(&self.rate_limited),
            duplicates: take(&self.duplicates),
            durations: self.durations.iter().map(take).collect(),
        }
    }
}

/// A job running now.
#[derive(Debug)]
struct Running {
    id: JobId,
    job_type: &'static str,
    queue: Arc<str>,
    attempt: u32,
    started_at: SystemTime,
    /// What it says of its progress.
    progress: Arc<ProgressCell>,
}

/// How many names of job types the worker does not have are counted apart.
const MAX_OTHERS: usize = 100;
/// Where the names past [`MAX_OTHERS`] are counted.
const OTHER: &str = "(other)";

/// The worker's job accounting.
#[derive(Debug)]
pub(crate) struct Activity {
    /// The worker's job types, known at start: counted without a lock.
    types: HashMap<&'static str, Counters>,
    /// Names no job type of the worker has (unknown types, untyped messages).
    others: Mutex<HashMap<String, Counters>>,
    /// Jobs running now, when heartbeats tell them.
    running: Option<Mutex<HashMap<u64, Running>>>,
    next: AtomicU64,
}

/// A job noted as running; ends its note when dropped.
#[derive(Debug)]
pub(crate) struct RunningGuard<'a> {
    activity: &'a Activity,
    key: u64,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        metrics::gauge!("jobs_running").decrement(1.0);
        if let Some(running) = &self.activity.running {
            running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
        }
    }
}

impl Activity {
    /// Accounting for these job types; `track_running` when heartbeats tell the running jobs.
    pub(crate) fn new(types: impl IntoIterator<Item = &'static str>, track_running: bool) -> Self {
        Activity {
            types: types.into_iter().map(|name| (name, Counters::default())).collect(),
            others: Mutex::default(),
            running: track_running.then(Mutex::default),
            next: AtomicU64::new(0),
        }
    }

    fn counters<R>(&self, job_type: &str, f: impl FnOnce(&Counters) -> R) -> R {
        match self.types.get(job_type) {
            Some(counters) => f(counters),
            None => {
                let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
                // Names come from messages: past a hundred, count them together.
                let name = if others.len() < MAX_OTHERS || others.contains_key(job_type) { job_type } else { OTHER };
                f(others.entry(name.to_owned()).or_default())
            }
        }
    }

    /// An attempt of `job_type` starts.
    pub(crate) fn started(
        &self,
        job_type: &'static str,
        id: &JobId,
        queue: &Arc<str>,
        attempt: u32,
        progress: &Arc<ProgressCell>,
    ) -> RunningGuard<'_> {
        metrics::counter!("jobs_started_total", "job" => job_type).increment(1);
        metrics::gauge!("jobs_running").increment(1.0);
        self.counters(job_type, |c| c.started.fetch_add(1, Ordering::Relaxed));
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(running) = &self.running {
            let job = Running {
                id: id.clone(),
                job_type,
                queue: queue.clone(),
                attempt,
                started_at: SystemTime::now(),
                progress: progress.clone(),
            };
            running.lock().unwrap_or_else(|e| e.into_inner()).insert(key, job);
        }
        RunningGuard { activity: self, key }
    }

    /// An attempt of `job_type` ended after `elapsed`, successfully or not.
    pub(crate) fn ended(&self, job_type: &'static str, elapsed: Duration, succeeded: bool) {
        metrics::histogram!("job_duration_seconds", "job" => job_type).record(elapsed.as_secs_f64());
        if succeeded {
            metrics::counter!("jobs_succeeded_total", "job" => job_type).increment(1);
        }
        let bucket = duration_bucket(elapsed.as_secs_f64());
        self.counters(job_type, |c| {
            c.durations[bucket].fetch_add(1, Ordering::Relaxed);
            if succeeded {
                c.succeeded.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// A delivery of `job_type` failed (or could not run), of `kind`.
    pub(crate) fn failed(&self, job_type: &str, kind: FailureKind) {
        metrics::counter!("jobs_failed_total", "job" => job_type.to_owned(), "kind" => kind.as_str()).increment(1);
        let index = FailureKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.counters(job_type, |c| c.failed[index].fetch_add(1, Ordering::Relaxed));
    }

    /// A retry of `job_type` was scheduled.
    pub(crate) fn retried(&self, job_type: &str) {
        metrics::counter!("jobs_retried_total", "job" => job_type.to_owned()).increment(1);
        self.counters(job_type, |c| c.retried.fetch_add(1, Ordering::Relaxed));
    }

    /// A job of `job_type` went to dead, of `kind`.
    pub(crate) fn dead(&self, job_type: &str, kind: FailureKind) {
        metrics::counter!("jobs_dead_total", "job" => job_type.to_owned(), "kind" => kind.as_str()).increment(1);
        self.counters(job_type, |c| c.dead.fetch_add(1, Ordering::Relaxed));
    }

    /// A run of `job_type` that a graceful stop ended was handed back.
    pub(crate) fn interrupted(&self, job_type: &str) {
        metrics::counter!("jobs_interrupted_total", "job" => job_type.to_owned()).increment(1);
        self.counters(job_type, |c| c.interrupted.fetch_add(1, Ordering::Relaxed));
    }

    /// A job of `job_type` was held back by a rate limit.
    pub(crate) fn rate_limited(&self, job_type: &str) {
        metrics::counter!("jobs_rate_limited_total", "job" => job_type.to_owned()).increment(1);
        self.counters(job_type, |c| c.rate_limited.fetch_add(1, Ordering::Relaxed));
    }

    /// An enqueue of `job_type` was a duplicate (this worker keeps the unique keys).
    pub(crate) fn duplicate(&self, job_type: &str) {
        // Names come from producers: past a hundred unknown ones, one series for the rest.
        let known = self.types.contains_key(job_type) || {
            let others = self.others.lock().unwrap_or_else(|e| e.into_inner());
            others.len() < MAX_OTHERS || others.contains_key(job_type)
        };
        let label = if known { job_type } else { OTHER };
        metrics::counter!("jobs_unique_duplicates_total", "job" => label.to_owned()).increment(1);
        self.counters(job_type, |c| c.duplicates.fetch_add(1, Ordering::Relaxed));
    }

    /// The jobs running now, and the counts since the last call (which start again at 0).
    pub(crate) fn take(&self) -> (Vec<RunningJob>, Vec<TypeCounts>) {
        let running = self.running.as_ref().map_or_else(Vec::new, |running| {
            let running = running.lock().unwrap_or_else(|e| e.into_inner());
            let mut jobs: Vec<RunningJob> = running
                .values()
                .map(|r| {
                    let (progress, progress_text) = r.progress.get().unzip();
                    RunningJob {
                        id: r.id.to_string(),
                        job_type: r.job_type.to_owned(),
                        queue: r.queue.to_string(),
                        attempt: r.attempt,
                        started_at_ms: epoch_ms(r.started_at),
                        progress,
                        progress_text,
                    }
                })
                .collect();
            jobs.sort_by_key(|j| j.started_at_ms);
            jobs
        });
        let mut counts: Vec<TypeCounts> = self.types.iter().map(|(name, c)| c.take(name)).collect();
        counts.extend(self.others.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(name, c)| c.take(name)));
        counts.retain(|c| !c.is_empty());
        counts.sort_by(|a, b| a.job_type.cmp(&b.job_type));
        (running, counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_running_jobs_listed_until_they_end() {
        let activity = Activity::new(["Mail"], true);
        let queue: Arc<str> = "emails".into();
        let progress = Arc::new(ProgressCell::default());
        let guard = activity.started("Mail", &JobId::from("a"), &queue, 2, &progress);
        progress.set(0.5, "half");
        activity.ended("Mail", Duration::from_millis(30), true);
        activity.failed("Gone", FailureKind::UnknownType);
        activity.retried("Gone");
        let (running, counts) = activity.take();
        assert_eq!(running.len(), 1);
        assert_eq!((running[0].id.as_str(), running[0].queue.as_str(), running[0].attempt), ("a", "emails", 2));
        assert_eq!((running[0].progress, running[0].progress_text.as_deref()), (Some(0.5), Some("half")));
        assert_eq!(counts.len(), 2);
        let gone = &counts[0];
        assert_eq!((gone.job_type.as_str(), gone.retried, gone.failed.get("unknown_type")), ("Gone", 1, Some(&1)));
        let mail = &counts[1];
        assert_eq!((mail.started, mail.succeeded, mail.durations[duration_bucket(0.03)]), (1, 1, 1));
        drop(guard);
        let (running, counts) = activity.take();
        assert!(running.is_empty() && counts.is_empty(), "taken: {counts:?}");
    }

    #[test]
    fn names_from_messages_past_a_hundred_are_counted_together() {
        let activity = Activity::new(["Mail"], false);
        for n in 0..150 {
            activity.retried(&format!("Bogus{n}"));
        }
        activity.retried("Bogus0");
        let (_, counts) = activity.take();
        assert_eq!(counts.len(), MAX_OTHERS + 1);
        let other = counts.iter().find(|c| c.job_type == OTHER).map(|c| c.retried);
        assert_eq!(other, Some(50));
        assert_eq!(counts.iter().find(|c| c.job_type == "Bogus0").map(|c| c.retried), Some(2));
    }
}
