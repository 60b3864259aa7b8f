//! The routes, their assets embedded in the binary.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::dashboard::Dashboard;
use crate::refusal::Refusal;
use crate::{api, pages, security};

const CSS: &str = include_str!("../assets/app.css");
const LIVE_JS: &str = include_str!("../assets/live.js");

impl Dashboard {
    /// The dashboard's routes: pages, `/api/...`, assets. Mount it at the
    /// root or under a prefix (`Router::nest("/jobs", ..)`): links follow.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(pages::overview::overview))
            .route("/queues/{queue}/{action}", post(pages::overview::queue_action))
            .route("/workers", get(pages::workers::workers))
            .route("/jobs/{id}/cancel", post(pages::workers::cancel_job))
            .route("/jobs", get(pages::types::types))
            .route("/dead", get(pages::dead::dead_queues))
            .route("/dead/{queue}", get(pages::dead::dead_list))
            .route("/dead/{queue}/job/{id}", get(pages::dead::dead_job))
            .route("/dead/{queue}/job/{id}/{action}", post(pages::dead::dead_job_action))
            .route("/dead/{queue}/bulk", get(pages::bulk::bulk_confirm).post(pages::bulk::bulk_do))
            .route("/dead/{queue}/actions/{id}", get(pages::bulk::action_page))
            .route("/batches", get(pages::batches::batches))
            .route("/schedules", get(pages::schedules::schedules))
            .route("/schedules/{name}/run", get(pages::schedules::run_confirm).post(pages::schedules::run_do))
            .route("/schedules/{name}/runs/{id}", get(pages::schedules::run_page))
            .route("/api/overview", get(api::overview))
            .route("/api/workers", get(api::workers))
            .route("/api/running/{id}", get(api::running))
            .route("/api/jobs", get(api::types))
            .route("/api/queues", get(api::queues))
            .route("/api/dead/{queue}", get(api::dead))
            .route("/api/dead/{queue}/{id}", get(api::dead_job))
            .route("/api/actions/{id}", get(api::action))
            .route("/api/schedules", get(api::schedules))
            .route("/api/batches", get(pages::batches::api))
            .route("/assets/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }))
            .route(
                "/assets/live.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], LIVE_JS) }),
            )
            .route("/healthz", get(healthz))
            .fallback(|uri: axum::http::Uri| async move {
                Refusal::for_path(uri.path(), axum::http::StatusCode::NOT_FOUND, "no such page").into_response()
            })
            .layer(axum::middleware::from_fn_with_state(self.clone(), security::guard))
            .with_state(self.clone())
    }
}

async fn healthz(axum::extract::State(dashboard): axum::extract::State<Arc<Dashboard>>) -> impl IntoResponse {
    let status = dashboard.broker_status();
    let code = if status.connected { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (code, if status.connected { "ok\n".to_owned() } else { format!("{}\n", status.error.unwrap_or_default()) })
}

/// The overview page as of `now_ms`, rendered (for the benchmark).
pub fn render_overview(dashboard: &Dashboard, now_ms: u64) -> String {
    use askama::Template;
    let csrf = security::Csrf("0".repeat(32));
    pages::overview::overview_page(dashboard, crate::extract::Base(String::new()), &csrf, pages::Range::Week, now_ms)
        .render()
        .unwrap_or_default()
}
