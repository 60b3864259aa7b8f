//! The workers: live, stopped and vanished, the jobs they run now, and
//! which one leads the scheduler.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::{page, render, PageCtx};
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::Base;
use crate::format::{span, time};
use crate::history::{WorkerRow, WorkerStatus};
use crate::security::Csrf;

/// A running job, as shown.
struct RunningView {
    id: String,
    job_type: String,
    queue: String,
    attempt: u32,
    elapsed: String,
}

/// A worker, as shown.
struct WorkerView {
    id: String,
    status: &'static str,
    host: String,
    pid: u32,
    version: String,
    queues: String,
    concurrency: u16,
    started: String,
    last_beat: String,
    /// It leads the scheduler (it fires the schedules).
    scheduler_leader: bool,
    running: Vec<RunningView>,
}

impl WorkerView {
    fn of(w: &WorkerRow, now: u64) -> Self {
        let mut queues = w.queues.clone();
        queues.extend(w.exchanges.iter().map(|e| format!("{e} (broadcast)")));
        WorkerView {
            id: w.id.clone(),
            status: match w.status {
                WorkerStatus::Live => "live",
                WorkerStatus::Stopped => "stopped",
                WorkerStatus::Vanished => "vanished",
            },
            host: w.host.clone(),
            pid: w.pid,
            version: w.version.clone(),
            queues: queues.join(", "),
            concurrency: w.concurrency,
            started: time(w.started_at_ms),
            last_beat: span(now.saturating_sub(w.last_beat_ms)),
            scheduler_leader: w.scheduler_leader,
            running: w
                .running
                .iter()
                .take(100)
                .map(|j| RunningView {
                    id: j.id.clone(),
                    job_type: j.job_type.clone(),
                    queue: j.queue.clone(),
                    attempt: j.attempt,
                    elapsed: span(now.saturating_sub(j.started_at_ms)),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "workers.html")]
struct Workers {
    page: PageCtx,
    live: usize,
    workers: Vec<WorkerView>,
}

pub(crate) async fn workers(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
) -> Response {
    let now = now_ms();
    let rows = super::schedules::workers(&dashboard, now);
    let live = rows.iter().filter(|w| w.status == WorkerStatus::Live).count();
    let workers = rows.iter().map(|w| WorkerView::of(w, now)).collect();
    render(&Workers { page: page(&dashboard, base, "workers", &csrf), live, workers })
}
