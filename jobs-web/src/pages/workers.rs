//! The workers: live, stopped and vanished, the jobs they run now (each
//! with a Cancel button), and which one leads the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::ControlCommand;

use super::{may_act, page, render, CsrfForm, PageCtx};
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::Base;
use crate::format::{span, time};
use crate::history::{WorkerRow, WorkerStatus};
use crate::refusal::Refusal;
use crate::security::Csrf;

/// A running job, as shown.
struct RunningView {
    id: String,
    job_type: String,
    queue: String,
    attempt: u32,
    elapsed: String,
    /// Who cancelled it, while it is not dead-lettered yet.
    cancelled_by: Option<String>,
    /// What it said of its progress (`ctx.progress`).
    progress: Option<ProgressView>,
}

/// A running job's progress, as shown: a bar and the text.
struct ProgressView {
    /// 0 to 1, for the bar.
    value: f32,
    /// "42%".
    percent: String,
    text: String,
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
    /// Its weighted queues: "critical ×6: 4 running, 12 waiting (1,230 started)".
    weights: Vec<String>,
}

impl WorkerView {
    fn of(w: &WorkerRow, now: u64, dashboard: &Dashboard) -> Self {
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
            weights: w
                .weights
                .iter()
                .map(|q| {
                    format!(
                        "{} ×{}: {} running, {} waiting ({} started)",
                        q.queue, q.weight, q.running, q.waiting, q.started
                    )
                })
                .collect(),
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
                    cancelled_by: dashboard.cancelled_by(&j.id),
                    progress: j.progress.map(|value| ProgressView {
                        value,
                        percent: format!("{:.0}%", value * 100.0),
                        text: j.progress_text.clone().unwrap_or_default(),
                    }),
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
    let workers = rows.iter().map(|w| WorkerView::of(w, now, &dashboard)).collect();
    render(&Workers { page: page(&dashboard, base, "workers", &csrf), live, workers })
}

/// Cancel of a job (a POST with the CSRF token): appended to `jobs.control`,
/// confirmed; the worker running it tells its context, drops it after
/// `worker.cancel_grace`, and dead-letters it as `cancelled`. Back to the
/// workers page, once the dashboard has read the cancel back (up to 2 s).
pub(crate) async fn cancel_job(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "a job id is 1 to 255 bytes, without control characters"));
    }
    may_act(&dashboard, &headers, &form.csrf)?;
    let by = format!("dashboard@{}", jobs_core::plumbing::hostname());
    dashboard.client.control(&ControlCommand::cancel(&id, by)).await.map_err(|e| Refusal::broker(&e))?;
    tracing::info!(job.id = id, "job cancelled from the dashboard");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) && dashboard.cancelled_by(&id).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Redirect::to(&format!("{}/workers", base.0)).into_response())
}
