//! Dead jobs: the dead-letter queues, the jobs of one (paged, filtered,
//! either end first), one job with its arguments, and its Retry and Delete.
//!
//! A queue is read by walking it (see `jobs_core::DeadLetters`): the count is
//! the broker's, a page of the oldest costs reading up to it, and what needs
//! the whole queue (the newest first, a filter's matches) reads at most
//! [`READ_BUDGET`] jobs and says so when it stopped short.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::{DeadFilter, DeadJob, DeadPage, DeadQuery, Found, Order};
use serde::Deserialize;

use super::{may_act, page, queue_name, render, CsrfForm, PageCtx, QueueView};
use crate::actions::{Action, Reading, Scope};
use crate::dashboard::Dashboard;
use crate::extract::{Base, Params};
use crate::format::{count, encode, secs_to_time, show};
use crate::refusal::Refusal;
use crate::security::Csrf;

/// Dead jobs on one page (and in one answer of the API).
pub(crate) const PER_PAGE: usize = 50;
/// The most dead jobs one page view reads.
pub(crate) const READ_BUDGET: u64 = 100_000;
/// How deep the newest first pages go.
pub(crate) const NEWEST_PAGES: u64 = 200;

#[derive(Template)]
#[template(path = "dead_queues.html")]
struct DeadQueues {
    page: PageCtx,
    queues: Vec<QueueView>,
}

pub(crate) async fn dead_queues(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
) -> Response {
    let queues = dashboard.queue_rows().iter().map(QueueView::from).collect();
    render(&DeadQueues { page: page(&dashboard, base, "dead", &csrf), queues })
}

/// The query of a listing: `?page=2&order=newest&type=Mail&q=timeout`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    pub(crate) page: Option<u64>,
    #[serde(default)]
    pub(crate) order: ListOrder,
    #[serde(default, rename = "type")]
    pub(crate) job_type: Option<String>,
    #[serde(default)]
    pub(crate) q: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ListOrder {
    /// The queue's own order: a page costs reading up to it.
    #[default]
    Oldest,
    Newest,
}

impl ListOrder {
    fn name(self) -> &'static str {
        match self {
            ListOrder::Oldest => "oldest",
            ListOrder::Newest => "newest",
        }
    }
}

impl ListQuery {
    pub(crate) fn scope(&self) -> Scope {
        Scope::of(self.job_type.as_deref(), self.q.as_deref())
    }
}

/// A page of a listing, and what the pages around it are.
pub(crate) struct Listing {
    pub(crate) page: DeadPage,
    pub(crate) page_no: u64,
    /// How many pages, when known (every match counted).
    pub(crate) pages: Option<u64>,
    /// Matches: every dead job without a filter, else those counted.
    pub(crate) matches: u64,
}

/// Reads the page the query asks for; a 400 for a page past the last.
pub(crate) async fn listing(
    dashboard: &Dashboard,
    reading: &Reading<'_>,
    query: &ListQuery,
) -> Result<Listing, Refusal> {
    let page_no = query.page.unwrap_or(1);
    if page_no == 0 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "pages count from 1"));
    }
    let past = |pages: u64| {
        Refusal::new(StatusCode::BAD_REQUEST, format!("page {page_no} does not exist (1 to {})", count(pages)))
    };
    // The newest first keeps every job up to its page in memory: so many pages, no more.
    if query.order == ListOrder::Newest && page_no > NEWEST_PAGES {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the newest first goes {NEWEST_PAGES} pages deep at most: page through the oldest first (the queue's own order) to go further"
            ),
        ));
    }
    let filter = query.scope().filter();
    let all = filter.is_all();
    if all {
        // The broker's count says how many pages there are: none read past it.
        let total = dashboard.dead_count(reading.queue()).await.map_err(|e| Refusal::broker(&e))?;
        let pages = pages_of(total);
        if page_no > pages {
            return Err(past(pages));
        }
    }
    let order = match query.order {
        ListOrder::Oldest => Order::Oldest,
        ListOrder::Newest => Order::Newest,
    };
    let mut dead_query =
        DeadQuery::new(PER_PAGE).filter(filter).order(order).skip((page_no - 1).saturating_mul(PER_PAGE as u64));
    // The oldest first without a filter reaches every job, at the cost of
    // reading up to its page; what needs the whole queue reads within the budget.
    if !all || order == Order::Newest {
        dead_query = dead_query.budget(READ_BUDGET);
    }
    if !all {
        dead_query = dead_query.counting();
    }
    let page = dashboard.dead_page(reading, &dead_query).await.map_err(|e| Refusal::broker(&e))?;
    let matches = if all { page.total } else { page.matched };
    let pages = (all || page.complete).then(|| pages_of(matches));
    if let Some(pages) = pages.filter(|pages| page_no > *pages) {
        return Err(past(pages));
    }
    if page_no > 1 && page.jobs.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("page {page_no} does not exist")));
    }
    Ok(Listing { page, page_no, pages, matches })
}

/// Pages for `matches` jobs (one, empty, for none).
fn pages_of(matches: u64) -> u64 {
    matches.div_ceil(PER_PAGE as u64).max(1)
}

/// A read of `queue`, or the 409 that says a bulk action walks it now.
/// (Once the read of it under way, if any, has ended.)
pub(crate) async fn read<'a>(dashboard: &'a Dashboard, queue: &str) -> Result<Reading<'a>, Refusal> {
    queue_name(queue)?;
    dashboard.walks.read(queue).await.map_err(|action| busy(&action))
}

/// The 409 of a request that would walk a queue while `action` does.
pub(crate) fn busy(action: &Action) -> Refusal {
    Refusal::new(
        StatusCode::CONFLICT,
        format!(
            "a {} of dead jobs runs on {} now (action {}): try again when it has ended",
            if action.retry { "retry" } else { "delete" },
            action.queue,
            action.id
        ),
    )
}

struct DeadRow {
    id: String,
    job_type: String,
    attempt: String,
    kind: String,
    error: String,
    failed_at: String,
}

#[derive(Template)]
#[template(path = "dead_list.html")]
struct DeadList {
    page: PageCtx,
    queue: String,
    /// Dead jobs in the queue: the broker's count.
    total: String,
    /// Matches of the filter, as far as read ("at least" when not every job was).
    matches: String,
    filtered: bool,
    /// When not every job was read: how many were, and the budget.
    partial: Option<(String, String)>,
    filter_type: String,
    filter_text: String,
    /// The filter's parameters for the bulk links ("&type=..&q=..", encoded).
    bulk_args: String,
    order: &'static str,
    jobs: Vec<DeadRow>,
    page_no: u64,
    pages: String,
    has_next: bool,
    prev: String,
    next: String,
    /// A retry or delete of many running on this queue now.
    action: Option<ActionLink>,
}

/// A running action, linked.
pub(crate) struct ActionLink {
    pub(crate) href: String,
    pub(crate) text: String,
}

impl ActionLink {
    pub(crate) fn of(base: &str, action: &Action) -> Self {
        let state = action.state();
        let verb = if action.retry { "Retrying" } else { "Deleting" };
        ActionLink {
            href: format!("{base}/dead/{}/actions/{}", encode(&action.queue), action.id),
            text: format!(
                "{verb} dead jobs of {}: {} of {} read, {} done",
                action.queue,
                count(state.progress.scanned),
                count(state.progress.total),
                count(state.progress.acted)
            ),
        }
    }
}

pub(crate) async fn dead_list(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path(queue): Path<String>,
    Params(query): Params<ListQuery>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    let order = query.order.name();
    let filter_type = query.job_type.clone().unwrap_or_default();
    let filter_text = query.q.clone().unwrap_or_default();
    let filtered = !filter_type.is_empty() || !filter_text.is_empty();
    let ctx = page(&dashboard, base.clone(), "dead", &csrf);
    // A walk of the queue now would see the action's held jobs as gone: show its progress instead.
    let reading = match dashboard.walks.read(&queue).await {
        Ok(reading) => reading,
        Err(action) => {
            let mut ctx = ctx;
            ctx.refresh = Some(2);
            return Ok(render(&DeadList {
                page: ctx,
                action: Some(ActionLink::of(&base.0, &action)),
                total: count(action.state().progress.total),
                matches: String::new(),
                filtered,
                partial: None,
                filter_type,
                filter_text,
                bulk_args: String::new(),
                order,
                jobs: Vec::new(),
                page_no: 1,
                pages: "1".into(),
                has_next: false,
                prev: String::new(),
                next: String::new(),
                queue,
            }));
        }
    };
    let listing = listing(&dashboard, &reading, &query).await?;
    drop(reading);
    let mut bulk_args = String::new();
    if !filter_type.is_empty() {
        bulk_args.push_str(&format!("&type={}", encode(&filter_type)));
    }
    if !filter_text.is_empty() {
        bulk_args.push_str(&format!("&q={}", encode(&filter_text)));
    }
    let link = |n: u64| format!("{}/dead/{}?page={n}&order={order}{bulk_args}", base.0, encode(&queue));
    let page_no = listing.page_no;
    let (prev, next) = (link(page_no.saturating_sub(1).max(1)), link(page_no + 1));
    let has_next = match listing.pages {
        Some(pages) => page_no < pages,
        None => listing.page.jobs.len() == PER_PAGE,
    };
    let rows = listing
        .page
        .jobs
        .iter()
        .map(|j| DeadRow {
            id: j.id.clone(),
            job_type: show(j.job_type.as_deref()),
            attempt: show(j.attempt),
            kind: show(j.error_kind.as_deref()),
            error: show(j.error.as_deref()),
            failed_at: secs_to_time(j.failed_at),
        })
        .collect();
    // Only what needs the whole queue can stop short: a filter's count, the newest first.
    let partial = (!listing.page.complete && (filtered || query.order == ListOrder::Newest))
        .then(|| (count(listing.page.scanned), count(READ_BUDGET)));
    let matches = if listing.page.complete || !filtered {
        count(listing.matches)
    } else {
        format!("at least {}", count(listing.matches))
    };
    Ok(render(&DeadList {
        page: ctx,
        total: count(listing.page.total),
        matches,
        filtered,
        partial,
        filter_type,
        filter_text,
        bulk_args,
        order,
        jobs: rows,
        page_no,
        pages: listing.pages.map_or_else(|| "?".into(), count),
        has_next,
        prev,
        next,
        action: None,
        queue,
    }))
}

#[derive(Template)]
#[template(path = "dead_job.html")]
struct DeadJobPage {
    page: PageCtx,
    queue: String,
    job: DeadJob,
    job_type: String,
    kind: String,
    error: String,
    attempt: String,
    first_failed: String,
    last_failed: String,
    worker: String,
    host: String,
    came_by: String,
    args: String,
}

pub(crate) const NO_SUCH_JOB: &str = "no dead job has that id (retried or deleted already?)";

pub(crate) async fn dead_job(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let reading = read(&dashboard, &queue).await?;
    let job = find(&dashboard, &reading, &id).await?;
    drop(reading);
    let args = match &job.payload_error {
        Some(why) => why.clone(),
        None => serde_json::to_string_pretty(&job.payload).unwrap_or_default(),
    };
    let came_by = match (&job.exchange, &job.routing_key) {
        (Some(exchange), Some(key)) if !key.is_empty() => format!("exchange {exchange}, routing key {key}"),
        (Some(exchange), _) => format!("exchange {exchange}"),
        _ => show(job.queue.as_deref().map(|q| format!("queue {q}"))),
    };
    Ok(render(&DeadJobPage {
        page: page(&dashboard, base, "dead", &csrf),
        job_type: show(job.job_type.as_deref()),
        kind: show(job.error_kind.as_deref()),
        error: show(job.error.as_deref()),
        attempt: show(job.attempt),
        first_failed: secs_to_time(job.first_failed_at),
        last_failed: secs_to_time(job.failed_at),
        worker: show(job.worker.as_deref()),
        host: show(job.host.as_deref()),
        came_by,
        args,
        queue,
        job,
    }))
}

/// The dead job of the queue read with id `id`; a 404 that says how far it
/// looked when it is not there.
pub(crate) async fn find(dashboard: &Dashboard, reading: &Reading<'_>, id: &str) -> Result<DeadJob, Refusal> {
    match dashboard.dead_find(reading, id, READ_BUDGET).await.map_err(|e| Refusal::broker(&e))? {
        Found::Job(job) => Ok(*job),
        Found::Missing { complete: false, scanned, total } => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no dead job has that id among the first {} of {} (a page reads at most {}): \
                 `worker dead show {} --id {id}` reads them all",
                count(scanned),
                count(total),
                count(READ_BUDGET),
                reading.queue()
            ),
        )),
        Found::Missing { .. } | _ => Err(Refusal::new(StatusCode::NOT_FOUND, NO_SUCH_JOB)),
    }
}

pub(crate) async fn dead_job_action(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    headers: HeaderMap,
    Path((queue, id, action)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let retry = match action.as_str() {
        "retry" => true,
        "delete" => false,
        _ => return Err(Refusal::new(StatusCode::NOT_FOUND, "no such action")),
    };
    let reading = read(&dashboard, &queue).await?;
    // One job: looked for as far as a page view reads, no further.
    let one = DeadFilter::id(id).among_first(READ_BUDGET);
    let done = dashboard.dead_act(&reading, &one, retry).await.map_err(|e| Refusal::broker(&e))?;
    drop(reading);
    if done.acted > 0 {
        return Ok(Redirect::to(&format!("{}/dead/{}", base.0, encode(&queue))).into_response());
    }
    if let Some(held) = done.first_held {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("not retried, it stays dead: {held}; `worker dead retry {queue} --id <id> --force` runs it anyway"),
        ));
    }
    Err(match done.first_failure {
        Some(why) => Refusal::new(StatusCode::BAD_GATEWAY, format!("the broker refused the copy: {why}")),
        None if done.not_reached > 0 => Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "another reader holds {} dead jobs of {queue} now (`worker dead` beside the dashboard?): try again when it is done",
                count(done.not_reached)
            ),
        ),
        None if done.scanned < done.total => Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no dead job has that id among the first {} of {} (a page reads at most {}): `worker dead {} {queue} --id <id>` reads them all",
                count(done.scanned),
                count(done.total),
                count(READ_BUDGET),
                if retry { "retry" } else { "purge" }
            ),
        ),
        None => Refusal::new(StatusCode::NOT_FOUND, NO_SUCH_JOB),
    })
}
