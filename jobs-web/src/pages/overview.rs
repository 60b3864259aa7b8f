//! The overview: totals, the throughput chart, the queues.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::{page, render, PageCtx, QueueView, Range, RangeQuery};
use crate::chart;
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::{Base, Params};
use crate::format::time;
use crate::history::Summary;
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
        queues: dashboard.queue_rows().iter().map(QueueView::from).collect(),
    }
}
