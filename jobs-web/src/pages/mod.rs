//! The HTML pages, one family a file: `overview`, `workers`, `types` (job
//! types), `dead` (dead-letter queues, their jobs, one job and its buttons),
//! `bulk` (retry or delete many, confirmed, with their progress),
//! `schedules` (the scheduler's leader, its schedules, Run now).
//! Server-rendered from templates checked at compile time; they work without
//! JavaScript. What every page shares is here.

use askama::Template;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::dashboard::{now_ms, BrokerStatus, Dashboard, QueueRow};
use crate::extract::Base;
use crate::format::{show, time};
use crate::refusal::{error_page, Refusal};
use crate::security::{csrf_ok, Csrf};

pub(crate) mod batches;
pub(crate) mod bulk;
pub(crate) mod dead;
pub(crate) mod overview;
pub(crate) mod schedules;
pub(crate) mod types;
pub(crate) mod workers;

pub(crate) fn render(template: &impl Template) -> Response {
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
    /// Reload the page after this many seconds (a running action's progress).
    pub(crate) refresh: Option<u32>,
}

pub(crate) fn page(dashboard: &Dashboard, base: Base, section: &'static str, csrf: &Csrf) -> PageCtx {
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
        refresh: None,
    }
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

/// A queue row, as shown.
pub(crate) struct QueueView {
    pub(crate) name: String,
    pub(crate) ready: String,
    pub(crate) unacked: String,
    pub(crate) consumers: String,
    pub(crate) dead: String,
    pub(crate) rate_in: String,
    pub(crate) rate_out: String,
    /// "paused by … since …", "running", or "-" while `jobs.control` cannot be read.
    pub(crate) state: String,
    /// Paused now: its button resumes it.
    pub(crate) paused: bool,
    /// "priorities 0-9" for a queue that takes them.
    pub(crate) priorities: Option<String>,
    /// For an ordered type's shard: "shard of ledger, run by w1" (paused with its queue).
    pub(crate) shard: Option<String>,
}

impl QueueView {
    /// The dashboard's queues, each with its state.
    pub(crate) fn all(dashboard: &Dashboard) -> Vec<QueueView> {
        dashboard
            .queue_states()
            .iter()
            .map(|q| {
                let mut view = QueueView::from(&q.row);
                if view.shard.is_some() {
                    // Paused and resumed with its queue.
                    return view;
                }
                match (q.paused, &q.paused_by, q.paused_at_ms) {
                    (Some(true), Some(by), Some(at_ms)) => {
                        view.paused = true;
                        view.state = format!("paused by {by} since {}", time(at_ms));
                    }
                    (Some(_), ..) => view.state = "running".into(),
                    (None, ..) => {}
                }
                view
            })
            .collect()
    }
}

impl From<&QueueRow> for QueueView {
    fn from(q: &QueueRow) -> Self {
        QueueView {
            state: "-".into(),
            paused: false,
            priorities: q.max_priority.map(|max| format!("priorities 0-{max}")),
            shard: q.shard_of.as_ref().map(|base| match &q.held_by {
                Some(worker) => format!("shard of {base}, run by {worker}"),
                None => format!("shard of {base}, no consumer"),
            }),
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

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

pub(crate) fn read_only() -> Refusal {
    Refusal::new(StatusCode::FORBIDDEN, "this dashboard is read-only")
}

/// Refuses a POST that changes things when read-only, or without the CSRF token.
pub(crate) fn may_act(dashboard: &Dashboard, headers: &HeaderMap, token: &str) -> Result<(), Refusal> {
    if dashboard.web.read_only {
        return Err(read_only());
    }
    if !csrf_ok(headers, token) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page and try again"));
    }
    Ok(())
}

/// A queue name from a path, checked.
pub(crate) fn queue_name(queue: &str) -> Result<(), Refusal> {
    jobs_core::plumbing::topology::validate_queue_name(queue)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
}
