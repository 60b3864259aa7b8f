//! Retry all and Delete all: a confirmation that says how many, then the
//! action in the background and a page with its progress (it reloads itself
//! until the action ends, then says what was done).

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::{DeadFilter, DeadQuery};
use serde::Deserialize;

use super::dead::{busy, READ_BUDGET};
use super::{may_act, page, queue_name, read_only, render, PageCtx};
use crate::dashboard::Dashboard;
use crate::extract::{Base, Params};
use crate::format::{count, encode, span};
use crate::refusal::Refusal;
use crate::security::Csrf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkQuery {
    action: BulkAction,
    #[serde(default, rename = "type")]
    job_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BulkAction {
    Retry,
    Delete,
}

impl BulkAction {
    fn name(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Delete => "delete",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            BulkAction::Retry => "Retry",
            BulkAction::Delete => "Delete",
        }
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct Confirm {
    page: PageCtx,
    queue: String,
    action: &'static str,
    verb: &'static str,
    job_type: String,
    /// How many it takes: exact, or "at least" when a type's count read only part of the queue.
    count: String,
    plural: bool,
}

/// The confirmation of a bulk action: how many it would touch.
pub(crate) async fn bulk_confirm(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path(queue): Path<String>,
    Params(query): Params<BulkQuery>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    if dashboard.web.read_only {
        return Err(read_only());
    }
    busy(&dashboard, &queue)?;
    let job_type = query.job_type.clone().filter(|t| !t.is_empty());
    let (n, exact) = match &job_type {
        None => (dashboard.dead_page(&queue, &DeadQuery::new(0)).await.map_err(|e| Refusal::broker(&e))?.total, true),
        Some(t) => {
            let counting = DeadQuery::new(0).filter(DeadFilter::of_type(t)).budget(READ_BUDGET).counting();
            let page = dashboard.dead_page(&queue, &counting).await.map_err(|e| Refusal::broker(&e))?;
            (page.matched, page.complete)
        }
    };
    let shown = if exact { count(n) } else { format!("at least {}", count(n)) };
    Ok(render(&Confirm {
        page: page(&dashboard, base, "dead", &csrf),
        queue,
        action: query.action.name(),
        verb: query.action.verb(),
        job_type: job_type.unwrap_or_default(),
        count: shown,
        plural: n != 1 || !exact,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct BulkForm {
    #[serde(default)]
    csrf: String,
    action: BulkAction,
    #[serde(default, rename = "type")]
    job_type: String,
}

/// A confirmed bulk action: starts retrying or deleting every dead job of the
/// queue (or of a type in it), and sends the browser to its progress.
pub(crate) async fn bulk_do(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Form(form): Form<BulkForm>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let job_type = Some(form.job_type.clone()).filter(|t| !t.is_empty());
    // One per queue: a second one goes to the page of the one running.
    let started = dashboard.actions.start(&dashboard.amqp, &queue, job_type, form.action == BulkAction::Retry);
    let action = started.unwrap_or_else(|running| running);
    // A small one ends at once: wait a moment, so that the next page says what was done.
    for _ in 0..20 {
        if !action.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to = format!("{}/dead/{}/actions/{}", base.0, encode(&queue), action.id);
    Ok(Redirect::to(&to).into_response())
}

#[derive(Template)]
#[template(path = "action.html")]
struct ActionPage {
    page: PageCtx,
    queue: String,
    running: bool,
    message: String,
    detail: String,
    back: String,
}

/// A bulk action's progress, or what it did.
pub(crate) async fn action_page(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path((queue, id)): Path<(String, u64)>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    let Some(action) = dashboard.actions.get(id).filter(|a| a.queue == queue) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "no such action (the dashboard keeps the last 50)"));
    };
    let state = action.state();
    let (done, doing) = if action.retry { ("Retried", "Retrying") } else { ("Deleted", "Deleting") };
    let of_type = action.job_type.as_ref().map_or_else(String::new, |t| format!(" of type {t}"));
    let jobs = |n: u64| format!("{} dead job{}", count(n), if n == 1 { "" } else { "s" });
    let took = span(state.ended_ms.unwrap_or_else(crate::dashboard::now_ms).saturating_sub(action.started_ms));
    let (message, detail) = match &state.outcome {
        None => (
            format!("{doing} the dead jobs{of_type} of {queue}…"),
            format!(
                "{} of {} read, {} {} so far ({took}); this page reloads until it is done",
                count(state.progress.scanned),
                count(state.progress.total),
                count(state.progress.acted),
                done.to_lowercase()
            ),
        ),
        Some(Ok(n)) => (format!("{done} {}{of_type} in {queue}", jobs(*n)), format!("in {took}")),
        Some(Err(why)) => (
            format!("{done} {}{of_type} in {queue}, then stopped", jobs(state.progress.acted)),
            format!("{why}; the rest stay dead"),
        ),
    };
    let mut ctx = page(&dashboard, base.clone(), "dead", &csrf);
    let running = state.outcome.is_none();
    if running {
        ctx.refresh = Some(1);
    }
    let back = format!("{}/dead/{}", base.0, encode(&queue));
    Ok(render(&ActionPage { page: ctx, queue, running, message, detail, back }))
}
