//! The HTML pages: overview, workers, job types, dead jobs (per queue, one
//! job, and the confirmed actions on them). Server-rendered from templates
//! checked at compile time; they work without JavaScript.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use jobs_core::{DeadFilter, DeadJob};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::chart;
use crate::dashboard::{now_ms, BrokerStatus, Dashboard, QueueRow};
use crate::history::{Summary, WorkerRow, WorkerStatus};
use crate::security::{csrf_ok, Csrf};

/// What a path segment or query value keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a path segment or query value for a link.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// The path the dashboard is mounted under (`""` at the root), for links.
#[derive(Debug, Clone)]
pub(crate) struct Base(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let original = parts.extensions.get::<axum::extract::OriginalUri>().map(|o| o.0.path().to_owned());
        let inner = parts.uri.path();
        let base = original.as_deref().and_then(|o| o.strip_suffix(inner)).unwrap_or("");
        Ok(Base(base.trim_end_matches('/').to_owned()))
    }
}

/// Query parameters; a bad one is a 400 page, never a panic.
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad query parameters: {}", e.body_text())))
    }
}

/// Why a request is refused: a status and a sentence, shown as the error page.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_page(self.status, &self.message).into_response()
    }
}

/// A page that says what went wrong, with its status.
pub(crate) fn error_page(status: StatusCode, message: &str) -> (StatusCode, Html<String>) {
    #[derive(Template)]
    #[template(path = "error.html")]
    struct ErrorPage<'a> {
        status: String,
        message: &'a str,
    }
    let page = ErrorPage { status: status.to_string(), message };
    (status, Html(page.render().unwrap_or_else(|_| message.to_owned())))
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            error_page(StatusCode::INTERNAL_SERVER_ERROR, &format!("the page did not render: {err}")).into_response()
        }
    }
}

/// What every page shows around its content.
pub(crate) struct PageCtx {
    pub(crate) base: String,
    pub(crate) section: &'static str,
    pub(crate) broker: BrokerStatus,
    pub(crate) broker_error: String,
    pub(crate) broker_url: String,
    pub(crate) read_only: bool,
    pub(crate) csrf: String,
    pub(crate) now: String,
}

fn page(dashboard: &Dashboard, base: Base, section: &'static str, csrf: &Csrf) -> PageCtx {
    let broker = dashboard.broker_status();
    PageCtx {
        base: base.0,
        section,
        broker_error: broker.error.clone().unwrap_or_else(|| "connecting".into()),
        broker,
        broker_url: dashboard.amqp.url.redacted(),
        read_only: dashboard.web.read_only,
        csrf: csrf.0.clone(),
        now: time(now_ms()),
    }
}

/// A time as `2026-11-25 19:11:53 UTC`.
pub(crate) fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', " UTC")
}

/// A span as `3m 12s` (whole seconds).
pub(crate) fn span(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

/// The spans the charts and tables show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum Range {
    #[serde(rename = "1h")]
    Hour,
    #[default]
    #[serde(rename = "6h")]
    SixHours,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
}

impl Range {
    pub(crate) const ALL: [&'static str; 4] = ["1h", "6h", "24h", "7d"];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::SixHours => "6h",
            Range::Day => "24h",
            Range::Week => "7d",
        }
    }

    pub(crate) fn millis(self) -> u64 {
        match self {
            Range::Hour => 3_600_000,
            Range::SixHours => 6 * 3_600_000,
            Range::Day => 24 * 3_600_000,
            Range::Week => 7 * 24 * 3_600_000,
        }
    }

    /// Chart points: one a minute for an hour, then coarser (about 360 at most).
    fn points(self) -> (usize, &'static str) {
        match self {
            Range::Hour => (60, "minute"),
            Range::SixHours => (360, "minute"),
            Range::Day => (288, "5 minutes"),
            Range::Week => (336, "30 minutes"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    #[serde(default)]
    pub(crate) range: Range,
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A queue row, as shown.
pub(crate) struct QueueView {
    name: String,
    ready: String,
    unacked: String,
    consumers: String,
    dead: String,
    rate_in: String,
    rate_out: String,
}

impl From<&QueueRow> for QueueView {
    fn from(q: &QueueRow) -> Self {
        QueueView {
            name: q.name.clone(),
            ready: show(q.ready),
            unacked: show(q.unacked),
            consumers: show(q.consumers),
            dead: show(q.dead),
            rate_in: show(q.rate_in.map(|r| format!("{r:.1}"))),
            rate_out: show(q.rate_out.map(|r| format!("{r:.1}"))),
        }
    }
}

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
    let rows = dashboard.history().workers(now);
    let live = rows.iter().filter(|w| w.status == WorkerStatus::Live).count();
    let workers = rows.iter().map(|w| WorkerView::of(w, now)).collect();
    render(&Workers { page: page(&dashboard, base, "workers", &csrf), live, workers })
}

struct TypeView {
    job_type: String,
    runs: u64,
    failed: u64,
    failure_rate: String,
    p50: String,
    p95: String,
    p99: String,
}

#[derive(Template)]
#[template(path = "types.html")]
struct Types {
    page: PageCtx,
    range: &'static str,
    ranges: [&'static str; 4],
    types: Vec<TypeView>,
}

fn bound(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s < 1.0 => format!("≤ {} ms", (s * 1000.0).round()),
        Some(s) => format!("≤ {s} s"),
        None => "> 30 min".into(),
    }
}

pub(crate) async fn types(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Params(query): Params<RangeQuery>,
) -> Response {
    let since = now_ms().saturating_sub(query.range.millis());
    let types = dashboard
        .history()
        .types(since)
        .into_iter()
        .map(|t| TypeView {
            failure_rate: format!("{:.1}%", t.failure_rate * 100.0),
            p50: if t.runs == 0 { "-".into() } else { bound(t.p50) },
            p95: if t.runs == 0 { "-".into() } else { bound(t.p95) },
            p99: if t.runs == 0 { "-".into() } else { bound(t.p99) },
            job_type: t.job_type,
            runs: t.runs,
            failed: t.failed,
        })
        .collect();
    render(&Types { page: page(&dashboard, base, "jobs", &csrf), range: query.range.name(), ranges: Range::ALL, types })
}

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

/// Dead jobs read at most for one listing.
pub(crate) const DEAD_LIMIT: usize = 10_000;
/// Dead jobs on one page (and in one answer of the API).
pub(crate) const PER_PAGE: usize = 50;

/// How many pages `jobs` dead jobs fill (one, when there are none).
pub(crate) fn page_count(jobs: usize) -> usize {
    jobs.div_ceil(PER_PAGE).max(1)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadQuery {
    #[serde(default)]
    pub(crate) page: Option<usize>,
    #[serde(default)]
    pub(crate) order: Order,
    #[serde(default, rename = "type")]
    pub(crate) job_type: Option<String>,
    #[serde(default)]
    pub(crate) q: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Order {
    #[default]
    Newest,
    Oldest,
}

/// A queue name from a path, checked.
pub(crate) fn queue_name(queue: &str) -> Result<(), Refusal> {
    jobs_core::plumbing::topology::validate_queue_name(queue)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The dead jobs of `queue` that the query's filters keep, in its order; a
/// 400 for a name no queue can have.
pub(crate) async fn dead_jobs(
    dashboard: &Dashboard,
    queue: &str,
    query: &DeadQuery,
) -> Result<(Vec<DeadJob>, bool), Refusal> {
    queue_name(queue)?;
    let mut jobs = dashboard.list_dead(queue, DEAD_LIMIT).await.map_err(broker_refusal)?;
    let capped = jobs.len() >= DEAD_LIMIT;
    if let Some(t) = query.job_type.as_deref().filter(|t| !t.is_empty()) {
        jobs.retain(|j| j.job_type.as_deref() == Some(t));
    }
    if let Some(text) = query.q.as_deref().filter(|t| !t.is_empty()) {
        let text = text.to_lowercase();
        jobs.retain(|j| j.error.as_deref().unwrap_or("").to_lowercase().contains(&text));
    }
    if query.order == Order::Newest {
        jobs.reverse();
    }
    Ok((jobs, capped))
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
    total: usize,
    capped: bool,
    filter_type: String,
    filter_text: String,
    order: &'static str,
    jobs: Vec<DeadRow>,
    page_no: usize,
    pages: usize,
    prev: String,
    next: String,
}

fn secs_to_time(secs: Option<u64>) -> String {
    show(secs.map(|s| time(s * 1000)))
}

pub(crate) async fn dead_list(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path(queue): Path<String>,
    Params(query): Params<DeadQuery>,
) -> Result<Response, Refusal> {
    let (jobs, capped) = dead_jobs(&dashboard, &queue, &query).await?;
    let pages = page_count(jobs.len());
    let page_no = query.page.unwrap_or(1);
    if page_no == 0 || page_no > pages {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, format!("page {page_no} does not exist (1 to {pages})")));
    }
    let order = if query.order == Order::Newest { "newest" } else { "oldest" };
    let filter_type = query.job_type.clone().unwrap_or_default();
    let filter_text = query.q.clone().unwrap_or_default();
    let link = |n: usize| {
        let mut url = format!("{}/dead/{}?page={n}&order={order}", base.0, encode(&queue));
        if !filter_type.is_empty() {
            url.push_str(&format!("&type={}", encode(&filter_type)));
        }
        if !filter_text.is_empty() {
            url.push_str(&format!("&q={}", encode(&filter_text)));
        }
        url
    };
    let (prev, next) = (link(page_no.saturating_sub(1).max(1)), link(page_no + 1));
    let rows = jobs
        .iter()
        .skip((page_no - 1) * PER_PAGE)
        .take(PER_PAGE)
        .map(|j| DeadRow {
            id: j.id.clone(),
            job_type: show(j.job_type.as_deref()),
            attempt: show(j.attempt),
            kind: show(j.error_kind.as_deref()),
            error: show(j.error.as_deref()),
            failed_at: secs_to_time(j.failed_at),
        })
        .collect();
    Ok(render(&DeadList {
        page: page(&dashboard, base, "dead", &csrf),
        total: jobs.len(),
        capped,
        queue,
        filter_type,
        filter_text,
        order,
        jobs: rows,
        page_no,
        pages,
        prev,
        next,
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
    args: String,
}

pub(crate) async fn dead_job(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let (jobs, _) = dead_jobs(&dashboard, &queue, &DeadQuery::default()).await?;
    let Some(job) = jobs.into_iter().find(|j| j.id == id) else {
        return Err(Refusal::new(StatusCode::NOT_FOUND, NO_SUCH_JOB));
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
        args: serde_json::to_string_pretty(&job.payload).unwrap_or_default(),
        queue,
        job,
    }))
}

const NO_SUCH_JOB: &str = "no dead job has that id (retried or deleted already?)";

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

fn read_only() -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, "this dashboard is read-only")
}

/// Refuses a POST that changes things when read-only, or without the CSRF token.
fn may_act(dashboard: &Dashboard, headers: &HeaderMap, token: &str) -> Result<(), Refusal> {
    if dashboard.web.read_only {
        return Err(read_only());
    }
    if !csrf_ok(headers, token) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page and try again"));
    }
    Ok(())
}

#[derive(Template)]
#[template(path = "done.html")]
struct Done {
    page: PageCtx,
    message: String,
    queue: String,
    back: String,
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
    match dashboard.act_on_dead(&queue, &DeadFilter::Id(id), retry).await.map_err(broker_refusal)? {
        0 => Err(Refusal::new(StatusCode::NOT_FOUND, NO_SUCH_JOB)),
        _ => Ok(Redirect::to(&format!("{}/dead/{}", base.0, encode(&queue))).into_response()),
    }
}

/// A broker error, as the page that says it.
fn broker_refusal(err: jobs_core::Error) -> Refusal {
    Refusal::new(StatusCode::BAD_GATEWAY, jobs_core::report(&err))
}

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
    count: usize,
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
    let filter = DeadQuery { job_type: query.job_type.clone(), ..DeadQuery::default() };
    let count = dead_jobs(&dashboard, &queue, &filter).await?.0.len();
    Ok(render(&Confirm {
        page: page(&dashboard, base, "dead", &csrf),
        queue,
        action: query.action.name(),
        verb: query.action.verb(),
        job_type: query.job_type.unwrap_or_default(),
        count,
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

/// A confirmed bulk action: retries or deletes every dead job of the queue (or of a type in it).
pub(crate) async fn bulk_do(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Form(form): Form<BulkForm>,
) -> Result<Response, Refusal> {
    queue_name(&queue)?;
    may_act(&dashboard, &headers, &form.csrf)?;
    let filter = if form.job_type.is_empty() { DeadFilter::All } else { DeadFilter::Type(form.job_type.clone()) };
    let n = dashboard.act_on_dead(&queue, &filter, form.action == BulkAction::Retry).await.map_err(broker_refusal)?;
    let what = if form.action == BulkAction::Retry { "Retried" } else { "Deleted" };
    let of_type = if form.job_type.is_empty() { String::new() } else { format!(" of type {}", form.job_type) };
    let message = format!("{what} {n} dead job{}{of_type} in {queue}", if n == 1 { "" } else { "s" });
    let back = format!("{}/dead/{}", base.0, encode(&queue));
    Ok(render(&Done { page: page(&dashboard, base, "dead", &csrf), message, queue, back }))
}
