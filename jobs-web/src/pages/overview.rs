//! The overview: totals, the throughput chart, the queues with their
//! Pause and Resume buttons.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::ControlCommand;

use super::{may_act, page, queue_name, render, CsrfForm, PageCtx, QueueView, Range, RangeQuery};
use crate::chart;
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::{Base, Params};
use crate::format::time;
use crate::history::Summary;
use crate::refusal::Refusal;
use crate::security::Csrf;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    page: PageCtx,
    summary: Summary,
    step: &'static str,
    range: &'static str,
    ranges: [&'static str; 4],
    chart: String,
    queues: Vec<QueueView>,
}

pub(crate) async fn overview(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Params(query): Params<RangeQuery>,
) -> Response {
    render(&overview_page(&dashboard, base, &csrf, query.range, now_ms()))
}

/// The overview as of `now` (also what the benchmark renders).
pub(crate) fn overview_page(dashboard: &Dashboard, base: Base, csrf: &Csrf, range: Range, now: u64) -> impl Template {
    let (points, step) = range.points();
    let (summary, series) = {
        let history = dashboard.history();
        (history.summary(now), history.series(now.saturating_sub(range.millis()), now, points))
    };
    let label = |ms: u64| time(ms).chars().skip(5).take(11).collect::<String>();
    Overview {
        page: page(dashboard, base, "overview", csrf),
        summary,
        step,
        range: range.name(),
        ranges: Range::ALL,
        chart: chart::throughput(&series, label),
        queues: QueueView::all(dashboard),
    }
}

/// Pause or Resume of a queue (a POST with the CSRF token): appended to
/// `jobs.control`, confirmed, which every worker follows within a second or
/// two; back to the overview, which shows the state once the dashboard has
/// read it back.
pub(crate) async fn queue_action(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path((queue, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let by = format!("dashboard@{}", jobs_core::plumbing::hostname());
    let (command, wanted) = match action.as_str() {
        "pause" => (ControlCommand::pause(&queue, by), true),
        "resume" => (ControlCommand::resume(&queue, by), false),
        _ => return Err(Refusal::new(StatusCode::NOT_FOUND, "no such action: pause or resume")),
    };
    dashboard.client.control(&command).await.map_err(|e| Refusal::broker(&e))?;
    tracing::info!(queue, action, "queue {action}d from the dashboard");
    // Shown once read back from the journal: wait for it briefly.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(2)
        && dashboard.paused().is_some_and(|p| p.is_paused(&queue) != wanted)
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(Redirect::to(&format!("{}/", base.0)).into_response())
}
