//! JSON for every page, under `/api/...`, for scripts: the same data the
//! pages show, read from the same state; refusals are JSON too
//! (`{"error": ...}` with the status).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::actions::ActionView;
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::Params;
use crate::history::WorkerStatus;
use crate::pages::bulk::action_id;
use crate::pages::dead::{find, listing, read, ListQuery, PER_PAGE};
use crate::pages::{schedules, RangeQuery};
use crate::refusal::Refusal;

pub(crate) async fn overview(State(dashboard): State<Arc<Dashboard>>, Params(query): Params<RangeQuery>) -> Response {
    let now = now_ms();
    let history = dashboard.history();
    let series: Vec<_> = history
        .series(now.saturating_sub(query.range.millis()), now, 360)
        .into_iter()
        .map(|(at_ms, m)| json!({ "at_ms": at_ms, "succeeded": m.succeeded, "failed": m.failed }))
        .collect();
    let summary = history.summary(now);
    let body = json!({
        "last_hour": summary.last_hour,
        "last_day": summary.last_day,
        "live_workers": summary.live_workers,
        "range": query.range.name(),
        "series": series,
        "queues": dashboard.queue_states(),
        "broker": dashboard.broker_status(),
    });
    Json(body).into_response()
}

pub(crate) async fn workers(State(dashboard): State<Arc<Dashboard>>) -> Response {
    Json(schedules::workers(&dashboard, now_ms())).into_response()
}

/// The scheduler's leader (its id, or null), the schedules of its latest
/// beat, and the live workers whose schedule definitions differ from its.
pub(crate) async fn schedules(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let rows = dashboard.history().workers(now_ms());
    let state = schedules::leadership(&rows);
    let body = json!({
        "leader": state.leader.map(|w| &w.id),
        "schedules": state.schedules().iter().map(schedules::ScheduleRow::of).collect::<Vec<_>>(),
        "differing": state.differing,
    });
    Json(body).into_response()
}

pub(crate) async fn types(State(dashboard): State<Arc<Dashboard>>, Params(query): Params<RangeQuery>) -> Response {
    Json(dashboard.history().types(now_ms().saturating_sub(query.range.millis()))).into_response()
}

pub(crate) async fn queues(State(dashboard): State<Arc<Dashboard>>) -> Response {
    Json(dashboard.queue_states()).into_response()
}

pub(crate) async fn dead(
    State(dashboard): State<Arc<Dashboard>>,
    Path(queue): Path<String>,
    Params(query): Params<ListQuery>,
) -> Result<Response, Refusal> {
    let reading = read(&dashboard, &queue).await.map_err(Refusal::json)?;
    let listing = listing(&dashboard, &reading, &query).await.map_err(Refusal::json)?;
    drop(reading);
    let page = &listing.page;
    let body = json!({
        "queue": queue,
        "total": page.total,
        "matches": listing.matches,
        "complete": page.complete,
        "scanned": page.scanned,
        "page": listing.page_no,
        "pages": listing.pages,
        "per_page": PER_PAGE,
        "jobs": page.jobs,
    });
    Ok(Json(body).into_response())
}

pub(crate) async fn dead_job(
    State(dashboard): State<Arc<Dashboard>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let reading = read(&dashboard, &queue).await.map_err(Refusal::json)?;
    let job = find(&dashboard, &reading, &id).await.map_err(Refusal::json)?;
    Ok(Json(job).into_response())
}

/// A running job's progress by its id, for app code that shows it to its
/// users: the job as its worker's last heartbeat said (`progress`,
/// `progress_text`, `started_at_ms`, ...), with `worker` and the beat's
/// time, `reported_at_ms`; 404 when no live worker runs it.
pub(crate) async fn running(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let workers = dashboard.history().workers(now_ms());
    let found = workers.iter().filter(|w| w.status == WorkerStatus::Live).find_map(|w| {
        let job = w.running.iter().find(|j| j.id == id)?;
        Some(json!({
            "id": job.id, "job_type": job.job_type, "queue": job.queue, "attempt": job.attempt,
            "started_at_ms": job.started_at_ms, "progress": job.progress, "progress_text": job.progress_text,
            "worker": w.id, "reported_at_ms": w.last_beat_ms,
        }))
    });
    match found {
        Some(body) => Ok(Json(body).into_response()),
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "no live worker runs a job of that id now (it has not started, it ended, or its worker's last heartbeat is older than the window)",
        )
        .json()),
    }
}

pub(crate) async fn action(
    State(dashboard): State<Arc<Dashboard>>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let id = action_id(&id).map_err(Refusal::json)?;
    match dashboard.actions.get(id) {
        Some(action) => Ok(Json(ActionView::of(&action)).into_response()),
        None => Err(Refusal::new(StatusCode::NOT_FOUND, "no such action").json()),
    }
}
