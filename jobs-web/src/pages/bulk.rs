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
use jobs_core::DeadQuery;
use serde::Deserialize;

use super::dead::{read, READ_BUDGET};
use super::{may_act, page, queue_name, read_only, render, PageCtx};
use crate::actions::Scope;
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
    /// Text the error contains.
    #[serde(default)]
    q: Option<String>,
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
    text: String,
    /// What it takes, in words (" of type Mail").
    scope: String,
    /// How many it takes: exact, or "at least" when a filter's count read only part of the queue.
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
    let scope = Scope::of(query.job_type.as_deref(), query.q.as_deref());
    let reading = read(&dashboard, &queue).await?;
    let (n, exact) = if scope.is_all() {
        (dashboard.dead_count(&queue).await.map_err(|e| Refusal::broker(&e))?, true)
    } else {
        let counting = DeadQuery::new(0).filter(scope.filter()).budget(READ_BUDGET).counting();
        let page = dashboard.dead_page(&reading, &counting).await.map_err(|e| Refusal::broker(&e))?;
        (page.matched, page.complete)
    };
    drop(reading);
    let shown = if exact { count(n) } else { format!("at least {}", count(n)) };
    Ok(render(&Confirm {
        page: page(&dashboard, base, "dead", &csrf),
        queue,
        action: query.action.name(),
        verb: query.action.verb(),
        scope: scope.words(),
        job_type: scope.job_type.unwrap_or_default(),
        text: scope.text.unwrap_or_default(),
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
    #[serde(default)]
    q: String,
}

/// A confirmed bulk action: starts retrying or deleting the dead jobs of the
/// queue (all, or those of a type or an error text), and sends the browser
/// to its progress.
pub(crate) async fn bulk_do(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Form(form): Form<BulkForm>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let scope = Scope::of(Some(&form.job_type), Some(&form.q));
    // One per queue: a second one goes to the page of the one running.
    let started =
        dashboard.actions.start(&dashboard.walks, &dashboard.amqp, &queue, scope, form.action == BulkAction::Retry);
    let action = started.unwrap_or_else(|running| running);
    // A small one ends at once: wait a moment, so that the next page says what was done.
    action.ended_within(Duration::from_secs(1)).await;
    let to = format!("{}/dead/{}/actions/{}", base.0, encode(&queue), action.id);
    Ok(Redirect::to(&to).into_response())
}

/// What an action did, or how far it is (a bulk action's, a Run now's).
#[derive(Template)]
#[template(path = "action.html")]
pub(crate) struct ActionPage {
    pub(crate) page: PageCtx,
    pub(crate) running: bool,
    pub(crate) message: String,
    pub(crate) detail: String,
    /// The link back, and its text.
    pub(crate) back: String,
    pub(crate) back_text: String,
}

/// An action's id from the path: a number, else a 404.
pub(crate) fn action_id(id: &str) -> Result<u64, Refusal> {
    id.parse().map_err(|_| Refusal::new(StatusCode::NOT_FOUND, "no such action (action ids are numbers)"))
}

/// A bulk action's progress, or what it did.
pub(crate) async fn action_page(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    let id = action_id(&id)?;
    let Some(action) = dashboard.actions.get(id).filter(|a| a.queue == queue) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "no such action (the dashboard keeps the last 50)"));
    };
    let state = action.state();
    let progress = &state.progress;
    let (done, doing) = if action.retry { ("Retried", "Retrying") } else { ("Deleted", "Deleting") };
    let scope = action.scope.words();
    let jobs = |n: u64| format!("{} dead job{}", count(n), if n == 1 { "" } else { "s" });
    let took = span(state.ended_ms.unwrap_or_else(crate::dashboard::now_ms).saturating_sub(action.started_ms));
    // What stays dead, and why.
    let mut stayed = Vec::new();
    if progress.failed > 0 {
        let why = progress.first_failure.as_deref().unwrap_or("refused");
        stayed.push(format!("{} stay dead: the broker refused their copies (the first: {why})", jobs(progress.failed)));
    }
    if progress.held > 0 {
        let first = progress.first_held.as_deref().unwrap_or("");
        stayed.push(format!(
            "{} stay dead: another job holds their unique key (the first: {first}); `worker dead retry --force` runs them anyway",
            jobs(progress.held)
        ));
    }
    if progress.not_reached > 0 {
        stayed.push(format!("{} not reached (another reader held them): run it again", jobs(progress.not_reached)));
    }
    let (message, detail) = match &state.outcome {
        None => (
            format!("{doing} the dead jobs{scope} of {queue}…"),
            format!(
                "{} of {} read, {} {} so far ({took}); this page reloads until it is done",
                count(progress.scanned),
                count(progress.total),
                count(progress.acted),
                done.to_lowercase()
            ),
        ),
        Some(Ok(())) => {
            stayed.insert(0, format!("in {took}"));
            (format!("{done} {}{scope} in {queue}", jobs(progress.acted)), stayed.join("; "))
        }
        Some(Err(why)) => (
            format!("{done} {}{scope} in {queue}, then stopped", jobs(progress.acted)),
            format!("{why}; the rest stay dead"),
        ),
    };
    let mut ctx = page(&dashboard, base.clone(), "dead", &csrf);
    let running = state.outcome.is_none();
    if running {
        ctx.refresh = Some(1);
    }
    let back = format!("{}/dead/{}", base.0, encode(&queue));
    let back_text = format!("Back to the dead jobs of {queue}");
    Ok(render(&ActionPage { page: ctx, running, message, detail, back, back_text }))
}
