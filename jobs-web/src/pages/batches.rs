//! The batches: the worker that aggregates them, the open ones (a progress
//! bar each, their dead jobs linked to their dead-job pages, the callbacks
//! fired and due) and those that ended lately. All of it from the
//! aggregator's latest beat: the live worker whose latest beat says it
//! aggregates (the newest of several, for the moment a handover takes).

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jobs_core::plumbing::batch_book::Counts;
use jobs_core::plumbing::events::{BatchBeat, BatchesBeat};

use super::{page, render, PageCtx};
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::Base;
use crate::format::{count, span, time};
use crate::history::{WorkerRow, WorkerStatus};
use crate::security::Csrf;

/// The aggregating worker among `rows` and its latest beat's batches.
pub(crate) fn aggregator(rows: &[WorkerRow]) -> Option<(&WorkerRow, &BatchesBeat)> {
    rows.iter()
        .filter(|w| w.status == WorkerStatus::Live)
        .filter_map(|w| Some((w, w.batches.as_ref().filter(|b| b.leading)?)))
        .max_by(|(a, _), (b, _)| {
            (a.last_beat_ms, a.started_at_ms, &a.id).cmp(&(b.last_beat_ms, b.started_at_ms, &b.id))
        })
}

/// A batch, as shown.
struct BatchView {
    id: String,
    description: String,
    state: &'static str,
    enqueued: String,
    total: String,
    succeeded: String,
    dead: String,
    /// Ended (succeeded or dead), for the progress bar.
    ended: u64,
    max: u64,
    /// `(id, link)`: a dead job and its dead-job page (empty when its queue is unknown).
    dead_jobs: Vec<(String, String)>,
    more_dead: u64,
    fired: String,
    pending: String,
    callbacks: String,
}

impl BatchView {
    fn of(b: &BatchBeat, base: &str, now: u64, open: bool) -> Self {
        let ended = b.succeeded + b.dead;
        let counts = Counts { total: b.total, succeeded: b.succeeded, dead: b.dead };
        let state = if open { counts.phase(b.sealed) } else { "succeeded" };
        let callbacks = [("complete", &b.on_complete), ("success", &b.on_success)]
            .iter()
            .filter_map(|(kind, job)| job.as_ref().map(|job| format!("{kind}: {job}")))
            .collect::<Vec<_>>()
            .join(", ");
        BatchView {
            id: b.id.clone(),
            description: b.description.clone().unwrap_or_default(),
            state,
            enqueued: if b.at_ms == 0 {
                "-".into()
            } else {
                format!("{} ({} ago)", time(b.at_ms), span(now.saturating_sub(b.at_ms)))
            },
            total: count(b.total),
            succeeded: count(b.succeeded),
            dead: count(b.dead),
            ended,
            max: b.total.max(1),
            dead_jobs: b
                .dead_jobs
                .iter()
                .map(|d| {
                    let link = if d.queue.is_empty() {
                        String::new()
                    } else {
                        format!("{base}/dead/{}/job/{}", crate::format::encode(&d.queue), crate::format::encode(&d.id))
                    };
                    (d.id.clone(), link)
                })
                .collect(),
            more_dead: b.dead.saturating_sub(b.dead_jobs.len() as u64),
            fired: if b.fired.is_empty() { "-".into() } else { b.fired.join(", ") },
            pending: b.pending.join(", "),
            callbacks: if callbacks.is_empty() { "none".into() } else { callbacks },
        }
    }
}

#[derive(Template)]
#[template(path = "batches.html")]
pub(crate) struct Batches {
    page: PageCtx,
    aggregator: Option<String>,
    open: Vec<BatchView>,
    recent: Vec<BatchView>,
    /// Open batches not listed (over the beat's limit).
    unlisted: u64,
}

pub(crate) async fn batches(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
) -> Response {
    let now = now_ms();
    let rows = dashboard.history().workers(now);
    let found = aggregator(&rows);
    let page = page(&dashboard, base, "batches", &csrf);
    let (open, recent, unlisted) = match found {
        Some((_, beat)) => (
            beat.open.iter().map(|b| BatchView::of(b, &page.base, now, true)).collect(),
            beat.recent.iter().map(|b| BatchView::of(b, &page.base, now, false)).collect(),
            beat.open_total.saturating_sub(beat.open.len() as u64),
        ),
        None => (Vec::new(), Vec::new(), 0),
    };
    render(&Batches { aggregator: found.map(|(w, _)| w.id.clone()), open, recent, unlisted, page })
}

/// `/api/batches`: the aggregator (its id, or null) and its latest beat's batches.
pub(crate) async fn api(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let rows = dashboard.history().workers(now_ms());
    let found = aggregator(&rows);
    let beat = found.map(|(_, b)| b.clone()).unwrap_or_default();
    Json(serde_json::json!({
        "aggregator": found.map(|(w, _)| &w.id),
        "open": beat.open,
        "recent": beat.recent,
        "open_total": beat.open_total,
    }))
    .into_response()
}
