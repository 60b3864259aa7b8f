//! # jobs-web
//!
//! The dashboard of jobs-core: live workers and the jobs they run, queues,
//! throughput history that survives restarts, job types with their duration
//! percentiles, dead jobs with retry and delete (one, or all of a queue or
//! a type, each confirmed), and the schedules the scheduler's leader fires,
//! with Run now (confirmed). Everything it shows comes from the broker: the
//! workers' heartbeats on the stream `jobs.events`, queue counts over AMQP and
//! the management API, and `<queue>.dead`. It links no app job types, so one
//! dashboard serves every app of a vhost.
//!
//! Run the `jobs-web` binary, or mount the router in an app:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let dashboard = jobs_web::Dashboard::new(jobs_core::AmqpConfig::load()?, jobs_web::WebConfig::default())?;
//! dashboard.start(); // reads heartbeats, polls queues
//! let app = axum::Router::new().nest("/jobs", dashboard.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Modules: `config` ([`Settings`], [`WebConfig`]), `dashboard` ([`Dashboard`]:
//! state and the tasks that feed it), `history` (what heartbeats tell, kept
//! bounded), `dead` (reading dead-letter queues, one walk at a time),
//! `actions` (retry or delete many, in the background, with progress),
//! `walks` (who walks a dead queue now: reads, or one action), `runs` (what
//! recent Run nows enqueued),
//! `chart` (SVG), `pages` (HTML, a file per family), `api` (JSON), `extract`
//! (request parts), `format` (how values are written), `refusal` (error
//! answers, HTML or JSON), `security` (authentication, CSRF, headers), `routes`.

mod actions;
mod api;
mod chart;
mod config;
mod dashboard;
mod dead;
mod extract;
mod format;
mod history;
mod pages;
mod refusal;
mod routes;
mod runs;
mod security;
mod walks;

pub use config::{Auth, Secret, Settings, WebConfig};
pub use dashboard::Dashboard;

#[doc(hidden)]
pub mod __bench {
    //! For the dashboard's benchmark: a made-up history, and the overview rendered from it.
    pub use crate::routes::render_overview;

    /// Takes in a beat, as the reader does.
    pub fn add_beat(dashboard: &crate::Dashboard, offset: u64, beat: jobs_core::plumbing::events::Heartbeat) {
        dashboard.history().add(offset, beat);
    }

    /// Sets the queue table, as the poller does: (name, ready, unacked, consumers, dead, rate in, rate out).
    pub fn set_queues(
        dashboard: &crate::Dashboard,
        rows: impl IntoIterator<Item = (String, u64, u64, u64, u64, f64, f64)>,
    ) {
        let rows = rows
            .into_iter()
            .map(|(name, ready, unacked, consumers, dead, rate_in, rate_out)| crate::dashboard::QueueRow {
                name,
                ready: Some(ready),
                unacked: Some(unacked),
                consumers: Some(consumers),
                dead: Some(dead),
                rate_in: Some(rate_in),
                rate_out: Some(rate_out),
                max_priority: None,
                shard_of: None,
                held_by: None,
            })
            .collect();
        *dashboard.queues.write().unwrap_or_else(|e| e.into_inner()) = rows;
    }
}
