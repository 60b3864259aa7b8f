//! Run now's outcomes: what a confirmed Run now enqueued, kept for the page
//! the browser is sent to after the POST (so that a reload shows it again
//! and runs nothing), the last [`KEPT`] of them.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Run now outcomes remembered.
pub(crate) const KEPT: usize = 50;

/// One Run now the scheduler's leader answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    /// Its number on this dashboard (from 1).
    pub(crate) id: u64,
    /// The schedule.
    pub(crate) schedule: String,
    /// The id of the job the leader enqueued.
    pub(crate) job: String,
    /// When the answer came (ms since the epoch).
    pub(crate) at_ms: u64,
}

/// The recent Run now outcomes of a dashboard.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    kept: Mutex<(u64, VecDeque<Run>)>,
}

impl Runs {
    /// Keeps what a Run now of `schedule` enqueued; its number.
    pub(crate) fn add(&self, schedule: &str, job: &str, at_ms: u64) -> u64 {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.0 += 1;
        let id = kept.0;
        kept.1.push_back(Run { id, schedule: schedule.to_owned(), job: job.to_owned(), at_ms });
        while kept.1.len() > KEPT {
            kept.1.pop_front();
        }
        id
    }

    /// The Run now numbered `id`, while kept.
    pub(crate) fn get(&self, id: u64) -> Option<Run> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.1.iter().find(|r| r.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_runs_are_kept_by_number() {
        let runs = Runs::default();
        let first = runs.add("nightly", "job-1", 5);
        assert_eq!(first, 1);
        assert_eq!(runs.get(1).map(|r| (r.schedule, r.job, r.at_ms)), Some(("nightly".into(), "job-1".into(), 5)));
        for n in 0..KEPT as u64 {
            runs.add("hourly", &format!("job-{n}"), n);
        }
        assert_eq!(runs.get(1), None, "the oldest went");
        assert_eq!(runs.get(KEPT as u64 + 1).map(|r| r.job), Some(format!("job-{}", KEPT - 1)));
        assert_eq!(runs.get(0), None);
    }
}
