//! JSON for every page, under `/api/...`, for scripts: the same data the
//! pages show, read from the same state.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::dashboard::{now_ms, Dashboard};
use crate::pages::{dead_jobs, page_count, DeadQuery, Params, RangeQuery, Refusal, PER_PAGE};

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
        "queues": dashboard.queue_rows(),
        "broker": dashboard.broker_status(),
    });
    Json(body).into_response()
}

pub(crate) async fn workers(State(dashboard): State<Arc<Dashboard>>) -> Response {
    Json(dashboard.history().workers(now_ms())).into_response()
}

pub(crate) async fn types(State(dashboard): State<Arc<Dashboard>>, Params(query): Params<RangeQuery>) -> Response {
    Json(dashboard.history().types(now_ms().saturating_sub(query.range.millis()))).into_response()
}

pub(crate) async fn queues(State(dashboard): State<Arc<Dashboard>>) -> Response {
    Json(dashboard.queue_rows()).into_response()
}

pub(crate) async fn dead(
    State(dashboard): State<Arc<Dashboard>>,
    Path(queue): Path<String>,
    Params(query): Params<DeadQuery>,
) -> Result<Response, Refusal> {
    let (jobs, capped) = dead_jobs(&dashboard, &queue, &query).await?;
    let pages = page_count(jobs.len());
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<_> = jobs.iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect();
    let body =
        json!({ "queue": queue, "total": jobs.len(), "capped": capped, "page": page, "pages": pages, "jobs": shown });
    Ok(Json(body).into_response())
}

pub(crate) async fn dead_job(
    State(dashboard): State<Arc<Dashboard>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let (jobs, _) = dead_jobs(&dashboard, &queue, &DeadQuery::default()).await?;
    Ok(match jobs.into_iter().find(|j| j.id == id) {
        Some(job) => Json(job).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "error": "no dead job has that id" }))).into_response(),
    })
}
