//! The job types: runs, failure rate, duration percentiles.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::{page, render, PageCtx, Range, RangeQuery};
use crate::dashboard::{now_ms, Dashboard};
use crate::extract::{Base, Params};
use crate::format::bound;
use crate::security::Csrf;

struct TypeView {
    job_type: String,
    runs: u64,
    failed: u64,
    failure_rate: String,
    interrupted: u64,
    /// "2 of at most 3 running (3 slots held)", or "-".
    limit: String,
    /// "100/s (burst 100), kept by w1", "5/s per customer_id ...", or "-".
    rate: String,
    /// Jobs held back by the rate.
    rate_limited: u64,
    /// Enqueues refused as duplicates of a unique job.
    duplicates: u64,
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
    /// "1,234 unique keys held now, kept by w1", or none.
    unique: Option<String>,
}

pub(crate) async fn types(
    State(dashboard): State<Arc<Dashboard>>,
    base: Base,
    Extension(csrf): Extension<Csrf>,
    Params(query): Params<RangeQuery>,
) -> Response {
    let since = now_ms().saturating_sub(query.range.millis());
    let unique = dashboard.history().unique_keys(now_ms()).map(|(keys, worker)| {
        format!(
            "{} unique key{} held now, kept by {worker}",
            crate::format::count(keys),
            if keys == 1 { "" } else { "s" }
        )
    });
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
            interrupted: t.interrupted,
            rate: t.rate.map_or_else(
                || "-".into(),
                |r| {
                    let per = r.key.map(|k| format!(" per {k}")).unwrap_or_default();
                    let by = r.leader.map_or_else(|| "no live keeper".to_owned(), |w| format!("kept by {w}"));
                    format!("{}{per} (burst {}), {by}", r.rate, r.burst)
                },
            ),
            rate_limited: t.rate_limited,
            duplicates: t.duplicates,
            limit: t.limit.map_or_else(
                || "-".into(),
                |l| format!("{} of at most {} running ({} slots held)", l.running, l.max_running, l.slots),
            ),
        })
        .collect();
    render(&Types {
        page: page(&dashboard, base, "jobs", &csrf),
        range: query.range.name(),
        ranges: Range::ALL,
        types,
        unique,
    })
}
