//! What the dashboard knows, built from the workers' heartbeats alone and
//! kept bounded: per-minute totals over the window, per-hour histograms per
//! job type, and the last beat of each worker (at most [`MAX_WORKERS`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jobs_core::plumbing::events::{Heartbeat, RunningJob, SchedulerBeat, TypeCounts, DURATION_BUCKETS};
use serde::Serialize;

/// Workers remembered at most; the longest unseen go first.
pub(crate) const MAX_WORKERS: usize = 1000;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// Jobs that ended in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Minute {
    /// Attempts that succeeded.
    pub(crate) succeeded: u64,
    /// Attempts that failed, and messages that could not run.
    pub(crate) failed: u64,
}

/// One job type in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TypeHour {
    succeeded: u64,
    failed: u64,
    interrupted: u64,
    rate_limited: u64,
    duplicates: u64,
    durations: [u64; DURATION_BUCKETS.len() + 1],
}

impl TypeHour {
    fn add(&mut self, other: &TypeHour) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.interrupted += other.interrupted;
        self.rate_limited += other.rate_limited;
        self.duplicates += other.duplicates;
        for (slot, n) in self.durations.iter_mut().zip(&other.durations) {
            *slot += n;
        }
    }

    fn of(counts: &TypeCounts) -> Self {
        let mut durations = [0; DURATION_BUCKETS.len() + 1];
        for (slot, n) in durations.iter_mut().zip(&counts.durations) {
            *slot = *n;
        }
        TypeHour {
            succeeded: counts.succeeded,
            failed: counts.failed_total(),
            interrupted: counts.interrupted,
            rate_limited: counts.rate_limited,
            duplicates: counts.duplicates,
            durations,
        }
    }
}

/// Everything the pages show that comes from beats.
#[derive(Debug)]
pub(crate) struct History {
    window: Duration,
    minutes: BTreeMap<u64, Minute>,
    hours: BTreeMap<u64, HashMap<String, TypeHour>>,
    /// The last beat of each worker.
    workers: HashMap<String, Heartbeat>,
    /// The stream offset of the last beat read.
    pub(crate) last_offset: Option<u64>,
}

/// How a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkerStatus {
    /// It beat within three of its intervals.
    Live,
    /// Its last beat said it stopped.
    Stopped,
    /// It stopped beating without saying so (killed, or cut off).
    Vanished,
}

/// A worker, for the workers page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerRow {
    /// Its id.
    pub(crate) id: String,
    /// Its host.
    pub(crate) host: String,
    /// Its process id.
    pub(crate) pid: u32,
    /// The version of `jobs-worker` it runs.
    pub(crate) version: String,
    /// Live, stopped, vanished.
    pub(crate) status: WorkerStatus,
    /// When it started (ms since the epoch).
    pub(crate) started_at_ms: u64,
    /// Its last beat (ms since the epoch).
    pub(crate) last_beat_ms: u64,
    /// The queues it consumes.
    pub(crate) queues: Vec<String>,
    /// The exchanges it subscribes to.
    pub(crate) exchanges: Vec<String>,
    /// Jobs at once per queue.
    pub(crate) concurrency: u16,
    /// The jobs it ran at its last beat (none unless live).
    pub(crate) running: Vec<RunningJob>,
    /// Its part in the scheduler at its last beat, when it has schedules
    /// (shown on the schedules page, not in `/api/workers`).
    #[serde(skip)]
    pub(crate) scheduler: Option<SchedulerBeat>,
    /// It leads the scheduler: set by `pages::schedules::mark_leader` (the
    /// choice needs every worker's beat).
    pub(crate) scheduler_leader: bool,
    /// Its part in aggregating batches at its last beat (shown on the
    /// batches page, not in `/api/workers`).
    #[serde(skip)]
    pub(crate) batches: Option<jobs_core::plumbing::events::BatchesBeat>,
    /// Its weighted queues at its last beat (`worker.queue_weights`).
    pub(crate) weights: Vec<jobs_core::plumbing::events::WeightBeat>,
}

/// What the overview leads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Summary {
    /// Jobs that ended in the last hour.
    pub(crate) last_hour: Minute,
    /// Jobs that ended in the last day.
    pub(crate) last_day: Minute,
    /// Workers that beat within three of their intervals.
    pub(crate) live_workers: usize,
}

/// A job type over a span, for the job types page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TypeRow {
    /// The job type.
    pub(crate) job_type: String,
    /// Attempts that ended.
    pub(crate) runs: u64,
    /// Of which failed.
    pub(crate) failed: u64,
    /// Failed ÷ runs.
    pub(crate) failure_rate: f64,
    /// Runs a graceful stop ended, handed back (not counted in `runs`).
    pub(crate) interrupted: u64,
    /// Durations, as the upper bound in seconds of the bucket the percentile
    /// falls in (`None`: longer than the last bound).
    pub p50: Option<f64>,
    /// 95th percentile, likewise.
    pub p95: Option<f64>,
    /// 99th percentile, likewise.
    pub p99: Option<f64>,
    /// Its global limit and the use of it now, summed over the live workers'
    /// last beats; `None` for a type without one.
    pub(crate) limit: Option<LimitUse>,
    /// Jobs held back by its rate limit (sent to wait, or waiting past a token's interval).
    pub(crate) rate_limited: u64,
    /// Enqueues refused as duplicates of a unique job of the type.
    pub(crate) duplicates: u64,
    /// Its rate limit, as a live worker says it (`None`: none).
    pub(crate) rate: Option<RateUse>,
}

/// A rate limit, and who keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RateUse {
    /// As written: `100/s`.
    pub(crate) rate: String,
    /// How many may start at once after a quiet spell.
    pub(crate) burst: u32,
    /// The field each of whose values has the rate, if any.
    pub(crate) key: Option<String>,
    /// The worker that keeps it now, if a live one says so.
    pub(crate) leader: Option<String>,
}

/// A global limit and its use now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct LimitUse {
    /// At most this many at once across the vhost.
    pub(crate) max_running: u16,
    /// Running now.
    pub(crate) running: u64,
    /// Slots held by live workers.
    pub(crate) slots: u64,
}

impl History {
    /// An empty history keeping `window`.
    pub(crate) fn new(window: Duration) -> Self {
        History { window, minutes: BTreeMap::new(), hours: BTreeMap::new(), workers: HashMap::new(), last_offset: None }
    }

    /// Takes in a beat read at `offset` of the stream.
    pub(crate) fn add(&mut self, offset: u64, beat: Heartbeat) {
        self.last_offset = Some(offset);
        let at = beat.sent_at_ms;
        let minute = self.minutes.entry(at / MINUTE_MS).or_default();
        let hour = self.hours.entry(at / HOUR_MS).or_default();
        for counts in &beat.counts {
            let failed = counts.failed_total();
            minute.succeeded += counts.succeeded;
            minute.failed += failed;
            hour.entry(counts.job_type.clone()).or_default().add(&TypeHour::of(counts));
        }
        let newer = self.workers.get(&beat.worker).map_or(true, |last| last.sent_at_ms <= at);
        if newer {
            let mut beat = beat;
            // A leader with many schedules lists them once a minute: its beats
            // in between keep the last list it sent in this lead.
            if let (Some(new), Some(Some(old))) =
                (beat.scheduler.as_mut(), self.workers.get(&beat.worker).map(|b| b.scheduler.as_ref()))
            {
                if new.leading && old.leading && new.schedules.is_empty() && new.digest == old.digest {
                    new.schedules = old.schedules.clone();
                }
            }
            self.workers.insert(beat.worker.clone(), beat);
        }
        if self.workers.len() > MAX_WORKERS {
            if let Some(oldest) = self.workers.values().min_by_key(|b| b.sent_at_ms).map(|b| b.worker.clone()) {
                self.workers.remove(&oldest);
            }
        }
    }

    /// Forgets what is older than the window, as of `now_ms`.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        let from = now_ms.saturating_sub(self.window.as_millis() as u64);
        self.minutes = self.minutes.split_off(&(from / MINUTE_MS));
        self.hours = self.hours.split_off(&(from / HOUR_MS));
        self.workers.retain(|_, beat| beat.sent_at_ms >= from);
    }

    /// Jobs that ended since `since_ms`.
    pub(crate) fn totals(&self, since_ms: u64) -> Minute {
        self.minutes.range(since_ms / MINUTE_MS..).fold(Minute::default(), |sum, (_, m)| Minute {
            succeeded: sum.succeeded + m.succeeded,
            failed: sum.failed + m.failed,
        })
    }

    /// The last hour's and day's totals and the live workers, as of `now_ms`.
    pub(crate) fn summary(&self, now_ms: u64) -> Summary {
        Summary {
            last_hour: self.totals(now_ms.saturating_sub(HOUR_MS)),
            last_day: self.totals(now_ms.saturating_sub(24 * HOUR_MS)),
            live_workers: self.workers.values().filter(|b| status(b, now_ms) == WorkerStatus::Live).count(),
        }
    }

    /// The minutes from `from_ms` to `to_ms`, in `points` equal steps
    /// (summed): (step start ms, totals).
    pub(crate) fn series(&self, from_ms: u64, to_ms: u64, points: usize) -> Vec<(u64, Minute)> {
        let points = points.max(1) as u64;
        let first = from_ms / MINUTE_MS;
        let minutes = (to_ms / MINUTE_MS).saturating_sub(first) + 1;
        let per = minutes.div_ceil(points).max(1);
        let mut out: Vec<(u64, Minute)> =
            (0..minutes.div_ceil(per)).map(|i| ((first + i * per) * MINUTE_MS, Minute::default())).collect();
        for (minute, m) in self.minutes.range(first..=to_ms / MINUTE_MS) {
            let slot = &mut out[((minute - first) / per) as usize].1;
            slot.succeeded += m.succeeded;
            slot.failed += m.failed;
        }
        out
    }

    /// The job types with runs since `since_ms`, busiest first.
    pub(crate) fn types(&self, since_ms: u64) -> Vec<TypeRow> {
        let mut sums: HashMap<&str, TypeHour> = HashMap::new();
        for types in self.hours.range(since_ms / HOUR_MS..).map(|(_, types)| types) {
            for (name, t) in types {
                sums.entry(name).or_default().add(t);
            }
        }
        let mut limits: HashMap<&str, LimitUse> = HashMap::new();
        let now = crate::dashboard::now_ms();
        for beat in self.workers.values().filter(|beat| status(beat, now) == WorkerStatus::Live) {
            for limit in &beat.limits {
                let used = limits.entry(&limit.job).or_default();
                used.max_running = used.max_running.max(limit.max_running);
                used.running += u64::from(limit.running);
                used.slots += u64::from(limit.slots);
            }
        }
        let mut rates: HashMap<&str, RateUse> = HashMap::new();
        for beat in self.workers.values().filter(|beat| status(beat, now) == WorkerStatus::Live) {
            for rate in &beat.rates {
                let used = rates.entry(&rate.job).or_insert_with(|| RateUse {
                    rate: rate.rate.clone(),
                    burst: rate.burst,
                    key: rate.key.clone(),
                    leader: None,
                });
                if rate.leading {
                    used.leader = Some(beat.worker.clone());
                }
            }
        }
        for name in limits.keys().chain(rates.keys()) {
            sums.entry(name).or_default();
        }
        let mut rows: Vec<TypeRow> = sums
            .into_iter()
            .map(|(name, t)| {
                let runs = t.succeeded + t.failed;
                TypeRow {
                    limit: limits.get(name).cloned(),
                    rate: rates.get(name).cloned(),
                    rate_limited: t.rate_limited,
                    duplicates: t.duplicates,
                    job_type: name.to_owned(),
                    runs,
                    failed: t.failed,
                    failure_rate: if runs == 0 { 0.0 } else { t.failed as f64 / runs as f64 },
                    interrupted: t.interrupted,
                    p50: percentile(&t.durations, 0.50),
                    p95: percentile(&t.durations, 0.95),
                    p99: percentile(&t.durations, 0.99),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.job_type.cmp(&b.job_type)));
        rows
    }

    /// The unique keys held now, and the live worker that keeps them.
    pub(crate) fn unique_keys(&self, now_ms: u64) -> Option<(u64, String)> {
        self.workers
            .values()
            .filter(|beat| status(beat, now_ms) == WorkerStatus::Live)
            .find_map(|beat| beat.unique_keys.map(|keys| (keys, beat.worker.clone())))
    }

    /// The workers, live first, as of `now_ms`.
    pub(crate) fn workers(&self, now_ms: u64) -> Vec<WorkerRow> {
        let mut rows: Vec<WorkerRow> = self
            .workers
            .values()
            .map(|beat| {
                let status = status(beat, now_ms);
                WorkerRow {
                    id: beat.worker.clone(),
                    host: beat.host.clone(),
                    pid: beat.pid,
                    version: beat.version.clone(),
                    status,
                    started_at_ms: beat.started_at_ms,
                    last_beat_ms: beat.sent_at_ms,
                    queues: beat.queues.clone(),
                    exchanges: beat.exchanges.clone(),
                    concurrency: beat.concurrency,
                    running: if status == WorkerStatus::Live { beat.running.clone() } else { Vec::new() },
                    scheduler: beat.scheduler.clone(),
                    scheduler_leader: false,
                    batches: beat.batches.clone(),
                    weights: if status == WorkerStatus::Live { beat.weights.clone() } else { Vec::new() },
                }
            })
            .collect();
        rows.sort_by(|a, b| (a.status != WorkerStatus::Live, &a.id).cmp(&(b.status != WorkerStatus::Live, &b.id)));
        rows
    }

    /// The queues that workers seen in the window consume.
    pub(crate) fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.workers.values().flat_map(|b| b.queues.iter().cloned()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// How the worker of `beat`, its last, is doing as of `now_ms`.
fn status(beat: &Heartbeat, now_ms: u64) -> WorkerStatus {
    let late = !beat.beating_at(now_ms);
    match (beat.stopping, late) {
        (true, _) => WorkerStatus::Stopped,
        (false, true) => WorkerStatus::Vanished,
        (false, false) => WorkerStatus::Live,
    }
}

/// The upper bound of the duration bucket the `q` quantile falls in.
fn percentile(durations: &[u64], q: f64) -> Option<f64> {
    let total: u64 = durations.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in durations.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return DURATION_BUCKETS.get(i).copied();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(worker: &str, at_ms: u64, succeeded: u64, failed: u64, fast: u64, slow: u64) -> Heartbeat {
        let mut durations = vec![0; DURATION_BUCKETS.len() + 1];
        durations[1] = fast; // ≤ 5 ms
        durations[7] = slow; // ≤ 5 s
        Heartbeat {
            worker: worker.into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            started_at_ms: 0,
            sent_at_ms: at_ms,
            interval_ms: 5000,
            queues: vec![format!("{worker}-q")],
            exchanges: vec![],
            concurrency: 1,
            stopping: false,
            running: vec![],
            counts: vec![TypeCounts {
                job_type: "Mail".into(),
                started: succeeded + failed,
                succeeded,
                failed: [("failed".to_string(), failed)].into_iter().filter(|(_, n)| *n > 0).collect(),
                retried: 0,
                dead: 0,
                interrupted: failed / 2,
                rate_limited: failed,
                duplicates: failed,
                durations,
            }],
            scheduler: None,
            batches: None,
            limits: vec![],
            rates: vec![],
            unique_keys: None,
            weights: vec![],
        }
    }

    const DAY: u64 = 86_400_000;

    #[test]
    fn totals_series_and_types_sum_the_beats() {
        let mut h = History::new(Duration::from_secs(7 * 86400));
        let t0 = 100 * DAY;
        h.add(1, beat("a", t0, 90, 10, 95, 5));
        h.add(2, beat("b", t0 + 30_000, 5, 0, 5, 0));
        h.add(3, beat("a", t0 + 3 * MINUTE_MS, 1, 1, 2, 0));
        assert_eq!(h.totals(t0), Minute { succeeded: 96, failed: 11 });
        assert_eq!(h.totals(t0 + 2 * MINUTE_MS), Minute { succeeded: 1, failed: 1 });
        let series = h.series(t0, t0 + 3 * MINUTE_MS, 4);
        assert_eq!(series.len(), 4);
        assert_eq!(series[0].1, Minute { succeeded: 95, failed: 10 });
        assert_eq!(series[3], (t0 + 3 * MINUTE_MS, Minute { succeeded: 1, failed: 1 }));
        let coarse = h.series(t0, t0 + 3 * MINUTE_MS, 2);
        assert_eq!(coarse.iter().map(|p| p.1.succeeded).collect::<Vec<_>>(), [95, 1], "two minutes per point");
        let types = h.types(t0);
        assert_eq!(types.len(), 1);
        let mail = &types[0];
        assert_eq!((mail.runs, mail.failed, mail.interrupted), (107, 11, 5), "interrupted runs summed apart");
        assert_eq!(mail.rate_limited, 11, "rate-limited jobs summed");
        assert_eq!(mail.duplicates, 11, "duplicates summed");
        assert_eq!((mail.p50, mail.p95, mail.p99), (Some(0.005), Some(0.005), Some(5.0)));
        assert_eq!(h.last_offset, Some(3));
    }

    #[test]
    fn a_limit_sums_the_live_workers_use_and_shows_without_runs() {
        let mut h = History::new(Duration::from_secs(86400));
        let now = crate::dashboard::now_ms();
        let limited = |worker: &str, at_ms: u64, slots: u16, running: u16| {
            let mut b = beat(worker, at_ms, 0, 0, 0, 0);
            b.limits =
                vec![jobs_core::plumbing::events::LimitBeat { job: "Charge".into(), max_running: 3, slots, running }];
            b
        };
        h.add(1, limited("a", now, 2, 2));
        h.add(2, limited("b", now, 1, 0));
        h.add(3, limited("gone", now - 3_600_000, 3, 3));
        let types = h.types(now - 60_000);
        let charge = types.iter().find(|t| t.job_type == "Charge").unwrap();
        assert_eq!(
            charge.limit,
            Some(LimitUse { max_running: 3, running: 2, slots: 3 }),
            "a vanished worker is not counted"
        );
        assert_eq!(types.iter().find(|t| t.job_type == "Mail").unwrap().limit, None);
    }

    #[test]
    fn a_rate_shows_with_the_worker_that_keeps_it() {
        let mut h = History::new(Duration::from_secs(86400));
        let now = crate::dashboard::now_ms();
        let rated = |worker: &str, leading: bool| {
            let mut b = beat(worker, now, 0, 0, 0, 0);
            b.rates = vec![jobs_core::plumbing::events::RateBeat {
                job: "Charge".into(),
                rate: "5/s".into(),
                burst: 5,
                key: Some("customer_id".into()),
                leading,
            }];
            b
        };
        h.add(1, rated("a", false));
        h.add(2, rated("b", true));
        let types = h.types(now - 60_000);
        let charge = types.iter().find(|t| t.job_type == "Charge").unwrap();
        let rate = charge.rate.clone().unwrap();
        assert_eq!((rate.rate.as_str(), rate.burst, rate.key.as_deref()), ("5/s", 5, Some("customer_id")));
        assert_eq!(rate.leader.as_deref(), Some("b"));
    }

    #[test]
    fn workers_are_live_stopped_or_vanished_and_old_history_goes() {
        let mut h = History::new(Duration::from_secs(86400));
        let t0 = 100 * DAY;
        h.add(1, beat("live", t0, 1, 0, 1, 0));
        h.add(2, beat("gone", t0 - 60_000, 1, 0, 1, 0));
        let mut last = beat("done", t0, 0, 0, 0, 0);
        last.stopping = true;
        h.add(3, last);
        let rows = h.workers(t0 + 5_000);
        let status = |id: &str| rows.iter().find(|r| r.id == id).unwrap().status;
        assert_eq!(
            (status("live"), status("gone"), status("done")),
            (WorkerStatus::Live, WorkerStatus::Vanished, WorkerStatus::Stopped)
        );
        assert_eq!(rows[0].id, "live", "live first");
        assert_eq!(h.queues(), ["done-q", "gone-q", "live-q"]);
        h.prune(t0 + DAY + 2 * MINUTE_MS);
        assert!(h.workers(t0 + DAY).is_empty() && h.totals(0) == Minute::default(), "beyond the window");
    }

    #[test]
    fn the_worker_list_is_capped() {
        let mut h = History::new(Duration::from_secs(86400));
        for n in 0..(MAX_WORKERS as u64 + 10) {
            h.add(n, beat(&format!("w{n}"), 100 * DAY + n, 0, 0, 0, 0));
        }
        let rows = h.workers(100 * DAY);
        assert_eq!(rows.len(), MAX_WORKERS);
        assert!(!rows.iter().any(|r| r.id == "w0"), "the longest unseen went first");
    }
}
